"""The agent bundle is reproducible and runs on a bare Python with no third-party packages."""

from __future__ import annotations

import subprocess
import zipfile

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import MODULE_UTILS, build_bundle
from tests.helpers.ansible_run import REPO

AGENT = REPO / "roles/node_backup/files/hcm_node_backup.py"


def test_same_sources_give_the_same_file(tmp_path):
    first = build_bundle(AGENT, tmp_path / "a")
    second = build_bundle(AGENT, tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o755
    names = zipfile.ZipFile(first).namelist()
    assert "__main__.py" in names
    assert all("ansible_collections/hybridcloud/migration/plugins/module_utils/" + m in names for m in MODULE_UTILS)


def test_bundle_runs_isolated_from_site_packages(tmp_path):
    bundle = build_bundle(AGENT, tmp_path)
    # -I: no site-packages, no user site, no PYTHONPATH: only the standard library and the bundle.
    shown = subprocess.run(["/usr/bin/python3", "-I", str(bundle), "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "hcm-node-backup" in shown.stdout
    missing = subprocess.run(["/usr/bin/python3", "-I", str(bundle), "--config", str(tmp_path / "absent.json")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "backup FAILED: Cannot read the agent settings" in missing.stderr and "Traceback" not in missing.stderr
