"""The role restore_data: a real restic snapshot in the real S3 server, restored by the role on a Debian 13
root (the new node, reached with the chroot connection) into another path, byte for byte, verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lab.hclab.debian_root import make_instance
from tests.helpers.ansible_run import REPO, Run, run_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/restore_data.yml"
PASSWORD = "restic-password-never-logged"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def failures(run: Run, host: str) -> str:
    return "\n".join(str(r.get("msg", r)) for r in run.task_results(host) if r.get("failed"))


@pytest.fixture
def snapshot(tmp_path, s3_server, s3_bucket):
    """A restic snapshot of a data directory, as the node agent takes it (the same restic)."""
    node = make_instance(tmp_path / "new-node", ("python3", "restic"))
    restic = str(node / "usr/bin/restic")
    data = tmp_path / "old-node/mnt/disks/db"
    data.mkdir(parents=True)
    (data / "table.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (data / "sub").mkdir()
    (data / "sub/row.json").write_text('{"row": 1}\n')
    repository = f"s3:{s3_server.endpoint_url}/{s3_bucket}/restic/onprem"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
               AWS_DEFAULT_REGION=s3_server.region, RESTIC_PASSWORD=PASSWORD)
    subprocess.run([restic, "--repo", repository, "init"], env=env, check=True, capture_output=True)
    taken = subprocess.run([restic, "--repo", repository, "--json", "backup", str(data)], env=env, check=True, capture_output=True, text=True)
    summary = [json.loads(line) for line in taken.stdout.splitlines() if '"summary"' in line][-1]
    item = {"name": "shop/data-db-0", "location": f"restic:{repository}#{summary['snapshot_id']}", "target_path": "/mnt/disks/db",
            "details": {"source": "local-pv", "path": str(data)}}
    # The settings (with the secrets) in the inventory, as a site keeps them: not on any command line.
    settings = {"restore_data_items": [item], "restore_data_restic_password": PASSWORD, "restore_data_install_packages": False,
                "restore_data_s3_access_key": s3_server.access_key, "restore_data_s3_secret_key": s3_server.secret_key,
                "restore_data_s3_region": s3_server.region}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"new_nodes": {"hosts": {"cloud-worker-9": {
        "ansible_connection": "community.general.chroot", "ansible_host": str(node), "ansible_python_interpreter": "/usr/bin/python3"}},
        "vars": settings}}}}))
    inventory.chmod(0o600)
    return {"node": node, "data": data, "inventory": inventory, "item": item}


def restore(snapshot, **over) -> Run:
    return run_playbook(PLAYBOOK, inventory=snapshot["inventory"], extra_vars=over)


class CommandLines(threading.Thread):
    """Every process's command line, sampled until stopped (what ``ps`` would show anyone on the host)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass  # the process ended
            time.sleep(0.01)

    def __enter__(self) -> CommandLines:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.join()


def test_restores_the_bytes_into_the_rehomed_path_once(snapshot, s3_server):
    with CommandLines() as commands:
        first = restore(snapshot)
    assert first.returncode == 0, failures(first, "cloud-worker-9")
    ran = [line for line in commands.seen if "restic" in line and " restore " in line]
    assert ran, "the sampling saw restic run"
    ours = [line for line in commands.seen if not line.startswith(str(s3_server.argv[0]))]  # the lab's S3 server gets its key on its own
    assert [line for line in ours if s3_server.secret_key in line or PASSWORD in line] == [], "a secret on a command line"
    node = snapshot["node"]
    assert tree(node / "mnt/disks/db") == tree(snapshot["data"])
    assert not (node / "etc/hybridcloud-migration/restore-restic-password").exists()
    assert not (node / "etc/hybridcloud-migration/restore-s3-credentials").exists()
    assert PASSWORD not in first.output and s3_server.secret_key not in first.output
    [marker] = (node / "var/lib/hybridcloud-migration/restored").iterdir()
    assert json.loads(marker.read_text())["snapshot"] == snapshot["item"]["location"].rsplit("#", 1)[1]

    [noted] = [r for r in first.task_results("cloud-worker-9") if "restore_data_results" in r.get("ansible_facts", {})]
    [result] = noted["ansible_facts"]["restore_data_results"]
    assert result["outcome"] == "restored" and result["detail"] == "restored and verified" and result["bytes"] >= 2 * 1024 * 1024

    again = restore(snapshot)
    assert again.returncode == 0, failures(again, "cloud-worker-9")
    assert again.stats("cloud-worker-9")["changed"] == 0


def test_a_wrong_password_is_a_clear_error_and_nothing_is_recorded(snapshot):
    failed = restore(snapshot, restore_data_restic_password="not-the-password")
    assert failed.returncode != 0
    said = failures(failed, "cloud-worker-9")
    assert "Restoring shop/data-db-0" in said and "wrong password" in said, said
    assert not (snapshot["node"] / "var/lib/hybridcloud-migration/restored").exists() or not any(
        (snapshot["node"] / "var/lib/hybridcloud-migration/restored").iterdir())
    assert not (snapshot["node"] / "etc/hybridcloud-migration/restore-restic-password").exists()


def test_items_without_a_snapshot_are_refused(snapshot):
    bad = dict(snapshot["item"], location="s3://bucket/not-restic")
    failed = restore(snapshot, restore_data_items=[bad])
    assert failed.returncode != 0 and "restic:<repository>#<snapshot id>" in failed.output and "shop/data-db-0" in failed.output
