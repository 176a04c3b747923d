"""The demo site's own rules: it stands alone (no test code), its inventory parses, its checks judge right."""

from __future__ import annotations

import ast
import pathlib
import subprocess

import yaml

from lab.hclab import counter

REPO = pathlib.Path(__file__).resolve().parents[3]
DEMO = REPO / "demo"


def test_the_demo_imports_nothing_of_tests():
    imported = []
    for path in sorted(DEMO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            imported += [f"{path.relative_to(REPO)}: {name}" for name in names if name == "tests" or name.startswith("tests.")]
    assert imported == []


def test_the_inventory_names_the_groups_the_playbooks_use():
    hosts = yaml.safe_load((DEMO / "inventory/hosts.yml").read_text())["all"]
    assert set(hosts["children"]) == {"workers", "control_plane", "target_cloud", "lab_image", "hcm_new_nodes"}
    assert list(hosts["children"]["workers"]["hosts"]) == ["onprem-vm-1"]


def test_the_written_settings_file_is_not_in_git():
    assert "/demo/inventory/group_vars/all/lab.yml" in (REPO / ".gitignore").read_text().splitlines()


def test_the_shops_counter_is_the_labs_counter():
    """The demo's checks judge the counter by lab/hclab/counter.py's rule, which knows its script."""
    documents = yaml.safe_load((DEMO / "manifests/shop.yml").read_text())["items"]
    counter_deployment = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "counter")
    assert counter_deployment["spec"]["template"]["spec"]["containers"][0]["command"][-1] == counter.SCRIPT


def test_make_demo_without_go_stops_before_installing_anything_and_names_the_fix():
    checked = subprocess.run(["make", "-s", "demo-checks", "GO=/nonexistent/go"], cwd=REPO, capture_output=True, text=True, check=False)
    assert checked.returncode != 0
    assert "make demo: no Go toolchain (looked for /nonexistent/go)" in checked.stderr
    assert "Fix: install Go >= 1.26 or set GO=/path/to/go." in checked.stderr
