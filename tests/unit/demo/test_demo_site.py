"""The demo site's own rules: it stands alone (no test code), its inventory parses, its checks judge right."""

from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

from demo.checks import _counts_on

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


@pytest.mark.parametrize("numbers, verdict", [
    ([500, 501, 502, 503, 504], True),  # went on from the checkpoint (taken at 500..502)
    ([470, 471, 500, 501, 502, 503, 504], True),  # the checkpointed log first, then on
    ([9000, 9001, 9002, 9003], False),  # a cold start: another random base
    ([500, 501, 502], False),  # stopped at the checkpoint: not counting on
    ([], False),
])
def test_the_counter_check_tells_a_restored_process_from_a_cold_start(numbers, verdict):
    assert _counts_on(numbers, 500, 502)[0] is verdict
