"""playbooks/backup.yml on real Debian 13 roots standing in for a control-plane host and a worker.

The hosts are copies of the cached debootstrap root (python3, systemd) reached with the chroot
connection, as in the molecule scenarios; systemd does not run there, so timers are not started.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.ansible_run import REPO, run_playbook
from tests.helpers.debian_root import make_instance, run_in_root

pytestmark = pytest.mark.integration

PACKAGES = ("python3", "systemd")


@pytest.fixture
def site(tmp_path):
    hosts = {name: make_instance(tmp_path / name, PACKAGES) for name in ("cp-1", "worker-1")}
    for root in hosts.values():
        run_in_root(root, ["apt-get", "update", "-qq"], timeout=300)  # debootstrap leaves the lists empty
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "community.general.chroot",
                "ansible_python_interpreter": "/usr/bin/python3",
                "hcm_cluster_name": "onprem",
                "hcm_api_server": "https://10.10.0.10:6443",
                "hcm_s3_endpoint_url": "http://127.0.0.1:9000",
                "hcm_s3_region": "us-east-1",
                "hcm_s3_bucket": "dr-backups",
                "hcm_s3_access_key": "site-access-key",
                "hcm_s3_secret_key": "site-secret-key-never-logged",
                "hcm_restic_password": "site-restic-password-never-logged",
                "hcm_catalog_prefix": "catalog",
                "hcm_catalog_keep_last": 7,
                "hcm_catalog_max_age": "7d",
                "etcd_backup_manage_service": False,
                "node_backup_manage_service": False,
            },
            "children": {
                "control_plane": {"hosts": {"cp-1": {"ansible_host": str(hosts["cp-1"])}}},
                "workers": {"hosts": {"worker-1": {"ansible_host": str(hosts["worker-1"])}}},
            },
        }
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    yield path, hosts


def test_backup_playbook_sets_up_both_kinds_of_hosts_and_a_second_run_changes_nothing(site):
    inventory, hosts = site
    first = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory)
    assert first.returncode == 0, first.output[-3000:]
    assert first.stats("cp-1")["changed"] > 0 and first.stats("worker-1")["changed"] > 0
    for secret in ("site-secret-key-never-logged", "site-restic-password-never-logged"):
        assert secret not in first.output

    cp, worker = hosts["cp-1"], hosts["worker-1"]
    assert (cp / "usr/local/lib/hybridcloud-migration/hcm-etcd-backup.pyz").is_file()
    assert (cp / "etc/systemd/system/hcm-etcd-backup.timer").is_file()
    assert not (cp / "etc/systemd/system/hcm-node-backup.timer").exists()
    settings = json.loads((worker / "etc/hybridcloud-migration/hcm-node-backup.json").read_text())
    assert settings["node"] == "worker-1" and settings["api"]["base_url"] == "https://10.10.0.10:6443"
    assert settings["retention"] == {"keep_last": 7, "max_age": "7d"}
    assert (worker / "etc/hybridcloud-migration/restic-password").stat().st_mode & 0o777 == 0o600

    second = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory)
    assert second.returncode == 0, second.output[-3000:]
    assert second.stats("cp-1")["changed"] == 0 and second.stats("worker-1")["changed"] == 0

    checked = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory, check=True)
    assert checked.returncode == 0 and checked.stats("worker-1")["changed"] == 0
