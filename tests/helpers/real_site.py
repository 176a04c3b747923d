"""A site whose worker is a real node (a lab VM), for migrate.yml onto another real node.

Like tests/helpers/migration_site.py, but nothing on the failed worker is simulated: it is a lab
VM booted from the lab's worker image and joined to ``onprem`` by join_node (real kubeadm join);
its pods run in containerd; the node backup agent is installed by the node_backup role over SSH
and run as its timer runs it, taking a restic snapshot of the local volume and a checkpoint of the
counter through the VM's own kubelet; Velero backs the namespace up. Then the VM powers off, and
the inventory written for migrate.yml joins the new node with kubeadm over SSH at the instance's
private address (hcm_join_method kubeadm), where the lab's VM cloud boots a VM from the same image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.hclab.client import Lab
from lab.hclab.lab_vm import LabVM
from lab.hclab.services import MotoServer, S3Server
from lab.hclab.velero_server import VeleroServer
from tests.helpers.ansible_run import REPO, run_playbook
from tests.helpers.lab_vms import BUSYBOX, COUNTER, ROLE_PLAYBOOK, failures, inventory, logged_numbers, node_backup_rights, ssh, ssh_vars, unit_command
from tests.helpers.migration_site import TARGET_SITE, record_worker_image, site_vars, target_site_vars, velero_backup
from tests.helpers.velero import remove_namespace, remove_velero
from tests.helpers.wait import wait_until

NS = "real-shop"
FAILED = "onprem-vm-1"
FAILED_ADDRESS = "10.99.0.11"
DATA_PATH = "/var/lib/real-shop/db"
RESTIC_PASSWORD = "real-site-restic-password-never-logged"
CHECKPOINT_ANNOTATION = "backup.hybridcloud.io/checkpoint"


@dataclasses.dataclass
class RealSite:
    failed: str
    bucket: str
    inventory: Path
    workdir: Path
    data: dict[str, str]  # file name -> sha256 of what the local volume held when it was backed up
    counted: tuple[int, int]  # the counter before and after its checkpoint was taken


def _seed(lab: Lab, ssh_key: Path) -> dict[str, str]:
    """On the failed VM: a counter (checkpointed) and a StatefulSet on a local PV holding real files."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    made = ssh(ssh_key, FAILED_ADDRESS, f"mkdir -p {DATA_PATH} && head -c 1048576 /dev/urandom > {DATA_PATH}/base.bin && "
                                        f"echo 17 > {DATA_PATH}/PG_VERSION && cd {DATA_PATH} && sha256sum base.bin PG_VERSION")
    assert made.returncode == 0, made.stderr
    data = {name: digest for digest, name in (line.split() for line in made.stdout.splitlines())}
    api = lab.api("onprem")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "settings"}, "data": {"greeting": "hello from a real node"}})
    core.create_persistent_volume({"metadata": {"name": f"{NS}-db"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
        "persistentVolumeReclaimPolicy": "Retain", "local": {"path": DATA_PATH}, "claimRef": {"namespace": NS, "name": "data-db-0"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [FAILED]}]}]}}}})
    busybox = {"image": BUSYBOX, "imagePullPolicy": "Never"}
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "db", **busybox, "command": ["/bin/sh", "-c", "ls /data; exec sleep 100000"],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "resources": {"requests": {"storage": "1Gi"}}}}]}})
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "counter"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "counter"}},
        "template": {"metadata": {"labels": {"app": "counter"}, "annotations": {CHECKPOINT_ANNOTATION: "true"}}, "spec": {
            "terminationGracePeriodSeconds": 1, "nodeSelector": {"kubernetes.io/hostname": FAILED},
            "containers": [{"name": "counter", **busybox, "command": ["/bin/sh", "-c", COUNTER]}]}}}})
    wait_until("the pods to run on the real node", lambda: (
        len(pods := core.list_namespaced_pod(NS).items) == 2
        and all(p.spec.node_name == FAILED and p.status.phase == "Running" for p in pods)), 120, interval=1)
    return data


def _join_onprem(lab: Lab, vm: LabVM, ssh_key: Path, workdir: Path) -> None:
    hosts = inventory(workdir / "onprem-inventory.json", ssh_key, {FAILED: vm.address})
    text = json.loads(hosts.read_text())
    text["all"]["children"]["new_nodes"] = text["all"]["children"].pop("hcm_new_nodes")
    hosts.write_text(json.dumps(text))
    joined = run_playbook(REPO / "tests/integration/playbooks/join_node.yml", inventory=hosts, extra_vars={
        "join_node_kubeconfig": str(lab.kubeconfig("onprem")), "test_run_id": uuid.uuid4().hex[:12],
        "join_node_ignore_preflight_errors": ["SystemVerification"], "join_node_name": FAILED})
    if joined.returncode != 0:
        raise RuntimeError("joining the onprem VM failed: " + failures(joined))


def _backup(lab: Lab, vm: LabVM, s3_server: S3Server, bucket: str, ssh_key: Path, workdir: Path) -> tuple[int, int]:
    """The node backup agent on the VM (node_backup role over SSH, run as its timer runs it)."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    installed = run_playbook(ROLE_PLAYBOOK, inventory=inventory(workdir / "backup-inventory.json", ssh_key, {FAILED: vm.address}), extra_vars={
        "test_role": "node_backup", "node_backup_cluster_name": "onprem", "node_backup_restic_password": RESTIC_PASSWORD,
        "node_backup_api_server": lab.server("onprem"), "node_backup_manage_service": False, "node_backup_install_packages": False,
        "node_backup_s3_endpoint_url": s3_server.endpoint_url, "node_backup_s3_region": s3_server.region, "node_backup_s3_bucket": bucket,
        "node_backup_s3_access_key": s3_server.access_key, "node_backup_s3_secret_key": s3_server.secret_key})
    if installed.returncode != 0:
        raise RuntimeError("node_backup failed: " + failures(installed))
    core = client.CoreV1Api(lab.api("onprem"))
    pod = core.list_namespaced_pod(NS, label_selector="app=counter").items[0].metadata.name
    wait_until("the counter to count to 3", lambda: len(logged_numbers(core, pod, NS)) >= 3, 60)
    before = logged_numbers(core, pod, NS)[-1]
    with node_backup_rights(lab.api("onprem")):
        ran = ssh(ssh_key, vm.address, unit_command(vm, "hcm-node-backup.service"))
    if ran.returncode != 0 or "1 checkpoints" not in ran.stderr:
        raise RuntimeError("the node backup agent failed:\n" + ran.stderr[-3000:])
    return before, logged_numbers(core, pod, NS)[-1]


def _inventory(lab: Lab, s3_server: S3Server, moto_server: MotoServer, bucket: str, ssh_key: Path, key_name: str) -> dict[str, Any]:
    return {"all": {
        "vars": site_vars(lab, s3_server, bucket, RESTIC_PASSWORD),
        "children": {
            "target_cloud": {"hosts": {TARGET_SITE: {
                **target_site_vars(lab, moto_server), "hcm_join_method": "kubeadm", "provision_node_aws_key_name": key_name,
                "provision_node_address": "private", "provision_node_ssh_user": "root", "provision_node_ssh_timeout": 120}}},
            # The new VM is added by provision_node; these say how to reach it and what the lab needs.
            "hcm_new_nodes": {"vars": {**ssh_vars(ssh_key), "restore_data_install_packages": False,
                                       "restore_state_install_packages": False,
                                       "join_node_ignore_preflight_errors": ["SystemVerification"]}},
        }}}


@contextlib.contextmanager
def real_failed_site(lab: Lab, s3_server: S3Server, moto_server: MotoServer, velero_server: VeleroServer, image: Path, workdir: Path,
                     ssh_key: Path) -> Iterator[RealSite]:
    """The site on a real onprem node, backed up, the node powered off; everything put back on exit."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    bucket = s3_server.create_bucket(f"real-{uuid.uuid4().hex[:8]}")
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    api_port = int(lab.server("onprem").rsplit(":", 1)[1])
    vm = LabVM(FAILED, image=image, disk=workdir / "onprem-vm", address=FAILED_ADDRESS,
               authorized_keys=ssh_key.with_suffix(".pub").read_text(), relay_ports=(api_port, s3_server.port))
    try:
        vm.start()
        vm.wait_ssh()
        _join_onprem(lab, vm, ssh_key, workdir)
        data = _seed(lab, ssh_key)
        velero_backup(lab, velero_server, s3, bucket, f"real-{bucket[-8:]}")
        counted = _backup(lab, vm, s3_server, bucket, ssh_key, workdir)
        record_worker_image(moto_server, s3, bucket)
        vm.stop()  # the node dies: its kubelet stops, its pods' memory is gone
        core = client.CoreV1Api(lab.api("onprem"))
        wait_until(f"{FAILED} to be NotReady", lambda: [c.status for c in core.read_node(FAILED).status.conditions if c.type == "Ready"] != ["True"], 120)
        key_name = f"real-site-{bucket[-8:]}"
        moto_server.client("ec2").import_key_pair(KeyName=key_name, PublicKeyMaterial=ssh_key.with_suffix(".pub").read_bytes())
        hosts = workdir / "inventory.json"
        hosts.write_text(json.dumps(_inventory(lab, s3_server, moto_server, bucket, ssh_key, key_name)))
        yield RealSite(FAILED, bucket, hosts, workdir, data, counted)
    finally:
        velero_server.stop()
        vm.remove()
        for cluster in ("onprem", "cloud"):
            remove_namespace(lab, NS, cluster)
            core = client.CoreV1Api(lab.api(cluster))
            # Their nodes are powered off: no kubelet will confirm the pods are gone.
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_collection_namespaced_pod(NS, grace_period_seconds=0)
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_persistent_volume(f"{NS}-db")
        with contextlib.suppress(client.exceptions.ApiException):
            client.CoreV1Api(lab.api("onprem")).delete_node(FAILED)
        for cluster in ("onprem", "cloud"):
            wait_until(f"namespace {NS} to be deleted in {cluster}", lambda cluster=cluster: NS not in [
                ns.metadata.name for ns in client.CoreV1Api(lab.api(cluster)).list_namespace().items], 120, interval=1)
        remove_velero(lab, "onprem")


def sha256_of(ssh_key: Path, address: str, path: str) -> dict[str, str]:
    listed = ssh(ssh_key, address, f"cd {path} && sha256sum *")
    assert listed.returncode == 0, listed.stderr
    return {name: digest for digest, name in (line.split() for line in listed.stdout.splitlines())}
