"""playbooks/backup.yml for a whole site: the lab's onprem cluster, and real Debian 13 roots standing
in for a control-plane host and a worker.

Velero goes into the lab cluster from the controller (its server runs as a host process, as in
test_velero.py); the hosts are copies of the cached debootstrap root (python3, systemd) reached
with the chroot connection, as in the molecule scenarios; systemd does not run there, so timers
are not started.
"""

from __future__ import annotations

import json
import sys

import pytest
from kubernetes import client

from lab.hclab.debian_root import make_instance, run_in_root
from tests.helpers.ansible_run import REPO, run_playbook
from tests.helpers.velero import remove_velero

pytestmark = pytest.mark.integration

PACKAGES = ("python3", "systemd")


@pytest.fixture
def site(tmp_path, lab, s3_server, velero_server):
    bucket = s3_server.create_bucket("site-backups")
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
                "hcm_s3_endpoint_url": s3_server.endpoint_url,
                "hcm_s3_region": s3_server.region,
                "hcm_s3_bucket": bucket,
                "hcm_s3_access_key": s3_server.access_key,
                "hcm_s3_secret_key": s3_server.secret_key,
                "hcm_source_kubeconfig": str(lab.kubeconfig("onprem")),
                "hcm_velero_prefix": "velero",
                "hcm_velero_schedules": [{"name": "resources", "schedule": "0 * * * *", "ttl": "168h0m0s"}],
                "hcm_velero_deploy_server": False,
                "hcm_restic_password": "site-restic-password-never-logged",
                "hcm_catalog_prefix": "catalog",
                "hcm_catalog_keep_last": 7,
                "hcm_catalog_max_age": "7d",
                "etcd_backup_manage_service": False,
                "node_backup_manage_service": False,
                "velero_catalog_manage_service": False,
            },
            "children": {
                "control_plane": {"hosts": {"cp-1": {"ansible_host": str(hosts["cp-1"])}}},
                "workers": {"hosts": {"worker-1": {"ansible_host": str(hosts["worker-1"])}}},
            },
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        }
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    velero_server.start_in_background()  # once the playbook has installed Velero's CRDs
    try:
        yield path, hosts
    finally:
        velero_server.stop()
        remove_velero(lab, "onprem")


def test_backup_playbook_sets_up_the_cluster_and_both_kinds_of_hosts_and_a_second_run_changes_nothing(site, lab, s3_server, velero_server):
    inventory, hosts = site
    first = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory)
    assert first.returncode == 0, f"{first.output[-3000:]}\nvelero server log:\n{velero_server.log_tail(30)}"
    velero_server.join_start()
    assert first.stats("cp-1")["changed"] > 0 and first.stats("worker-1")["changed"] > 0 and first.stats("localhost")["changed"] > 0
    for secret in (s3_server.secret_key, "site-restic-password-never-logged"):
        assert secret not in first.output

    custom = client.CustomObjectsApi(lab.api("onprem"))
    schedule = custom.get_namespaced_custom_object("velero.io", "v1", "velero", "schedules", "resources")
    assert schedule["spec"]["schedule"] == "0 * * * *" and schedule["spec"]["template"]["ttl"] == "168h0m0s"
    location = custom.get_namespaced_custom_object("velero.io", "v1", "velero", "backupstoragelocations", "default")
    assert location["status"]["phase"] == "Available" and location["spec"]["objectStorage"]["prefix"] == "velero"

    cp, worker = hosts["cp-1"], hosts["worker-1"]
    assert (cp / "usr/local/lib/hybridcloud-migration/hcm-etcd-backup.pyz").is_file()
    assert (cp / "etc/systemd/system/hcm-etcd-backup.timer").is_file()
    assert not (cp / "etc/systemd/system/hcm-node-backup.timer").exists()
    recorder = json.loads((cp / "etc/hybridcloud-migration/hcm-velero-catalog.json").read_text())
    assert recorder["schedules"] == ["resources"] and recorder["velero_prefix"] == "velero"
    assert (cp / "etc/systemd/system/hcm-velero-catalog.timer").is_file()
    assert not (worker / "etc/systemd/system/hcm-velero-catalog.timer").exists()
    settings = json.loads((worker / "etc/hybridcloud-migration/hcm-node-backup.json").read_text())
    assert settings["node"] == "worker-1" and settings["api"]["base_url"] == "https://10.10.0.10:6443"
    assert settings["retention"] == {"keep_last": 7, "max_age": "7d"}
    assert (worker / "etc/hybridcloud-migration/restic-password").stat().st_mode & 0o777 == 0o600

    second = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory)
    assert second.returncode == 0, second.output[-3000:]
    assert second.stats("cp-1")["changed"] == 0 and second.stats("worker-1")["changed"] == 0 and second.stats("localhost")["changed"] == 0

    checked = run_playbook(REPO / "playbooks" / "backup.yml", inventory=inventory, check=True)
    assert checked.returncode == 0 and checked.stats("worker-1")["changed"] == 0
