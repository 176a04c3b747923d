"""Real worker nodes in the lab: VMs booted from the worker image, joined by kubeadm, running pods.

The worker image is the product's: playbooks/build_image.yml with a ``lab`` target runs
debootstrap and the worker_node role (containerd, runc, criu, kubelet/kubeadm built from the lab's
pin) through a chroot; lab/hclab/vm_image.py then adds what a cluster would bring (a CNI config,
the lab's images, since no registry is reachable). The lab's VM cloud (lab/hclab/vm_cloud.py)
boots a lab VM from it behind every instance moto runs: a network namespace at the instance's
private address, with sshd, containerd and the kubelet started from the image's own units.

provision_node creates the instance through the EC2 API and waits for SSH at that address;
join_node SSHes in and runs ``kubeadm join``; the kubelet registers by TLS bootstrap; pods run in
containerd with runc, their logs read through the API server from the kubelet.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lab.hclab.lab_vm import ssh
from tests.helpers.ansible_run import REPO, Run, run_module, run_playbook
from tests.helpers.lab_vms import (
    ROLE_PLAYBOOK, assert_counts_on, counter_deployment, counter_pod, failures, inventory, logged_numbers, node_backup_rights, unit_command,
)
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/provision_and_join.yml"
K8S_VERSION = "v1.37.2"
CONTAINERD_VERSION = "2.3.7"


RESTIC_PASSWORD = "lab-vm-restic-password-never-logged"
VM_NAMES = ("cloud-vm-", "cloud-a-", "cloud-b-")  # the tests' node names: the VM cloud boots only these


@pytest.fixture
def ssh_key(vm_ssh_key: Path) -> Path:
    return vm_ssh_key


@pytest.fixture
def backup_rights(lab) -> Iterator[None]:
    with node_backup_rights(lab.api("cloud")):
        yield


@pytest.fixture
def vm_cloud(lab, moto_server, s3_server, lab_worker_image, tmp_path) -> Iterator[Any]:
    # The VMs reach the storage server at its address, as nodes reach S3.
    with lab.vm_cloud("cloud", moto_server.endpoint_url, image=lab_worker_image, disks=tmp_path / "vms", relay_ports=(s3_server.port,),
                      name_prefixes=VM_NAMES, region=moto_server.region) as cloud:
        yield cloud
        instances = list(cloud.vms)
    # Leave the shared lab and moto as they were: the instances (a later cloud watcher would make
    # kwok nodes of running ones), the nodes they made, the test's namespaces.
    if instances:
        moto_server.client("ec2").terminate_instances(InstanceIds=instances)
    api = client.CoreV1Api(lab.api("cloud"))
    for node in api.list_node().items:
        if node.metadata.name.startswith(VM_NAMES):  # only this module's nodes: the lab is shared
            api.delete_node(node.metadata.name)
    for namespace in api.list_namespace(label_selector="hcm-test=lab-vm").items:
        api.delete_namespace(namespace.metadata.name)


def provision_and_join(lab, moto_server, ssh_key: Path, tmp_path: Path, name: str, run_id: str, **over: Any) -> Run:
    ec2 = moto_server.client("ec2")
    key_name = f"hclab-{run_id}"
    if not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_name]}])["KeyPairs"]:
        ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=ssh_key.with_suffix(".pub").read_bytes())
    extra = {
        "test_run_id": run_id, "join_node_kubeconfig": str(lab.kubeconfig("cloud")),
        # cgroup v1 here: the kubelet runs with failCgroupV1 false, kubeadm's check must be skipped
        "join_node_ignore_preflight_errors": ["SystemVerification"],
        "provision_node_cloud": "aws", "provision_node_region": moto_server.region, "provision_node_name": name,
        "provision_node_replaces": "onprem-worker-1", "provision_node_kubernetes_version": K8S_VERSION,
        "provision_node_image_id": moto_server.client("ec2").describe_images()["Images"][0]["ImageId"],
        "provision_node_aws_endpoint_url": moto_server.endpoint_url, "provision_node_aws_access_key": "testing",
        "provision_node_aws_secret_key": "testing", "provision_node_aws_instance_type": "t3.large",
        "provision_node_aws_key_name": key_name, "provision_node_address": "private", "provision_node_ssh_user": "root",
        "provision_node_ssh_timeout": 120, "provision_node_group": "hcm_new_nodes", **over}
    return run_playbook(PLAYBOOK, inventory=inventory(tmp_path / "inventory.json", ssh_key), extra_vars=extra)


def test_a_vm_of_the_target_cloud_is_joined_over_ssh_by_kubeadm_and_runs_pods(lab, moto_server, vm_cloud, ssh_key, tmp_path):
    run_id = uuid.uuid4().hex[:8]
    name = f"cloud-vm-{run_id}"
    run = provision_and_join(lab, moto_server, ssh_key, tmp_path, name, run_id)
    assert run.returncode == 0, run.output

    instance = next(i for r in moto_server.client("ec2").describe_instances(
        Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"] for i in r["Instances"])
    api = client.CoreV1Api(lab.api("cloud"))
    node = api.read_node(name)
    info = node.status.node_info
    # A real kubelet of the lab's pin with containerd, at the instance's address.
    assert info.kubelet_version == K8S_VERSION and info.container_runtime_version == f"containerd://{CONTAINERD_VERSION}"
    assert info.os_image.startswith("Debian GNU/Linux 13")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == instance["PrivateIpAddress"]
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.metadata.labels["hybridcloud.io/migrated-from"] == "onprem-worker-1"
    # TLS bootstrap: the kubelet's client certificate came from a CSR of the bootstrap token's user.
    csrs = client.CertificatesV1Api(lab.api("cloud")).list_certificate_signing_request().items
    secret = api.list_namespaced_secret("kube-system", label_selector=f"migration.hybridcloud.io/run-id={run_id}").items[0]
    token_id = base64.b64decode(secret.data["token-id"]).decode()
    assert any(c.spec.username == f"system:bootstrap:{token_id}" and c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
               and any(s.type == "Approved" for s in (c.status.conditions or [])) for c in csrs)
    # The token never stays on the node's disk.
    vm = vm_cloud.vm_named(name)
    assert not (vm.disk / "upper/etc/hybridcloud-migration/join-configuration.yml").exists()
    assert (vm.disk / "upper/etc/kubernetes/kubelet.conf").is_file()

    # A real pod: containerd + runc in the VM; its log read through the API server from the kubelet.
    api.create_namespaced_pod("default", counter_pod(f"counter-{run_id}", name))
    try:
        wait_until("the counter pod to run", lambda: api.read_namespaced_pod(f"counter-{run_id}", "default").status.phase == "Running", 60)
        wait_until("the counter to count to 3", lambda: len(logged_numbers(api, f"counter-{run_id}")) >= 3, 30)
        numbers = logged_numbers(api, f"counter-{run_id}")
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    finally:
        api.delete_namespaced_pod(f"counter-{run_id}", "default", grace_period_seconds=0)

    # The VM's systemctl and journalctl answer for its init, as a worker's tools expect of systemd.
    def on_vm(command: str) -> tuple[int, str]:
        ran = ssh(ssh_key, vm.address, command)
        return ran.returncode, (ran.stdout + ran.stderr).strip()

    assert on_vm("systemctl is-active kubelet.service") == (0, "active")
    assert on_vm("systemctl show -p ActiveState,LoadState --value containerd") == (0, "loaded\nactive")
    assert on_vm("systemctl show -p LoadState no-such.service") == (0, "LoadState=not-found")
    assert on_vm("printf '[Service]\\nType=oneshot\\nExecStart=/bin/sh -c \"echo probed\"\\n' > /etc/systemd/system/probe-ok.service"
                 " && printf '[Service]\\nType=oneshot\\nExecStart=/bin/false\\n' > /etc/systemd/system/probe-bad.service")[0] == 0
    assert on_vm("systemctl start probe-ok && journalctl --unit probe-ok.service --lines 5 --no-pager --output cat | head -1") == (0, "probed")
    assert on_vm("systemctl start probe-bad")[0] == 1 and on_vm("systemctl is-active probe-bad") == (3, "failed")

    # A second run finds the VM and the joined node: no new instance, no second join.
    again = provision_and_join(lab, moto_server, ssh_key, tmp_path, name, run_id)
    assert again.returncode == 0, again.output
    assert not [r for r in again.task_results(name) if r.get("changed")], again.output
    assert len([i for r in moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
                for i in r["Instances"] if i["State"]["Name"] == "running"]) == 1


def test_a_checkpoint_taken_through_one_vms_kubelet_is_restored_by_containerd_on_another(
        lab, moto_server, s3_server, s3_bucket, vm_cloud, ssh_key, backup_rights, tmp_path):
    run_id = uuid.uuid4().hex[:8]
    source, target = f"cloud-a-{run_id}", f"cloud-b-{run_id}"
    for name in (source, target):
        joined = provision_and_join(lab, moto_server, ssh_key, tmp_path, name, run_id)
        assert joined.returncode == 0, failures(joined)
    vm_a, vm_b = vm_cloud.vm_named(source), vm_cloud.vm_named(target)
    api, apps = client.CoreV1Api(lab.api("cloud")), client.AppsV1Api(lab.api("cloud"))
    namespace = f"state-{run_id}"
    api.create_namespace({"metadata": {"name": namespace, "labels": {"hcm-test": "lab-vm"}}})
    apps.create_namespaced_deployment(namespace, counter_deployment(source, {"backup.hybridcloud.io/checkpoint": "true"}))

    def counting() -> bool:
        pods = api.list_namespaced_pod(namespace, label_selector="app=counter").items
        return bool(pods) and pods[0].status.phase == "Running" and len(logged_numbers(api, pods[0].metadata.name, namespace)) >= 5
    wait_until("the counter to count to 5", counting, 90)
    source_pod = api.list_namespaced_pod(namespace, label_selector="app=counter").items[0].metadata.name

    # The node backup agent, installed on the source VM by its role over SSH and run as its timer runs
    # it: it checkpoints the counter through the VM's kubelet (the kubelet's own client certificate),
    # backs the archive up with restic and records it in the catalog.
    s3 = {"node_backup_s3_endpoint_url": s3_server.endpoint_url, "node_backup_s3_region": s3_server.region,
          "node_backup_s3_bucket": s3_bucket, "node_backup_s3_access_key": s3_server.access_key,
          "node_backup_s3_secret_key": s3_server.secret_key}
    installed = run_playbook(ROLE_PLAYBOOK, inventory=inventory(tmp_path / "source.json", ssh_key, {source: vm_a.address}), extra_vars={
        "test_role": "node_backup", "node_backup_cluster_name": "cloud", "node_backup_restic_password": RESTIC_PASSWORD,
        "node_backup_api_server": lab.server("cloud"), "node_backup_manage_service": False, "node_backup_install_packages": False, **s3})
    assert installed.returncode == 0, failures(installed)
    assert s3_server.secret_key not in installed.output and RESTIC_PASSWORD not in installed.output
    counted_before = logged_numbers(api, source_pod, namespace)[-1]
    backup = ssh(ssh_key, vm_a.address, unit_command(vm_a, "hcm-node-backup.service"))
    assert backup.returncode == 0, backup.stderr[-3000:]
    counted_after = logged_numbers(api, source_pod, namespace)[-1]
    assert "checkpointing " + f"{namespace}/{source_pod}/counter through the kubelet" in backup.stderr

    # The source node dies; the plan's item for the checkpoint, as migration_plan makes it.
    vm_a.stop()
    storage = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "access_key": s3_server.access_key,
               "secret_key": s3_server.secret_key}
    entry = run_module("backup_catalog_info", {"bucket": s3_bucket, "cluster": "cloud", "node": source, **storage})
    (artifact,) = entry["latest"]["data"]["workload_state"]
    workload = {"kind": "Deployment", "namespace": namespace, "name": "counter"}
    item = dict(artifact, target_node=target, workload=workload, container="counter", replicas=1)

    # restore_state on the target VM over SSH: restic -> buildah -> containerd's k8s.io store.
    restored = run_playbook(ROLE_PLAYBOOK, inventory=inventory(tmp_path / "target.json", ssh_key, {target: vm_b.address}), extra_vars={
        "test_role": "restore_state", "restore_state_items": [item], "restore_state_restic_password": RESTIC_PASSWORD,
        "restore_state_s3_access_key": s3_server.access_key, "restore_state_s3_secret_key": s3_server.secret_key,
        "restore_state_s3_region": s3_server.region, "restore_state_install_packages": False})
    assert restored.returncode == 0, failures(restored)
    assert s3_server.secret_key not in restored.output and RESTIC_PASSWORD not in restored.output
    image = f"localhost/hcm-checkpoint/{namespace}-{source_pod}-counter:{artifact['details']['snapshot_id'][:12]}"
    assert image in ssh(ssh_key, vm_b.address, "ctr -n k8s.io images ls -q").stdout

    # The workload on the target, pointed at the image as the state phase does: containerd restores it.
    apps.delete_namespaced_deployment("counter", namespace)
    restored_deployment = counter_deployment(target, {})
    restored_deployment["spec"]["template"]["spec"]["containers"][0].update({"image": image, "imagePullPolicy": "Never"})
    apps.create_namespaced_deployment(namespace, restored_deployment)

    def restored_pod() -> Any:
        pods = [p for p in api.list_namespaced_pod(namespace, label_selector="app=counter").items if p.spec.node_name == target]
        return pods[0] if pods and pods[0].status.phase == "Running" else None
    wait_until("the restored counter to run on the target VM", restored_pod, 90)
    pod = restored_pod().metadata.name
    wait_until("the restored counter to count on", lambda: logged_numbers(api, pod, namespace)[-1] > counted_after + 2, 30)
    assert_counts_on(logged_numbers(api, pod, namespace), counted_before, counted_after)
    events = api.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    assert not [e.message for e in events if e.type == "Warning"]
