"""playbooks/migrate.yml from a real node to a real node: nothing on either worker is simulated.

The failed worker is a lab VM joined to ``onprem`` with kubeadm, running its pods in containerd,
backed up by Velero and by the node backup agent (its role over SSH; a checkpoint of the counter
through the VM's own kubelet; a restic snapshot of the local volume) - tests/helpers/real_site.py.
It powers off. migrate.yml then creates the instance through moto's EC2 API, where the lab's VM
cloud boots a VM from the same worker image; joins it with kubeadm over SSH (hcm_join_method
kubeadm); restores the resources with Velero, the local volume with restic over SSH and the
counter from its checkpoint with containerd, in that order; and scales up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.helpers.ansible_run import REPO, Run, run_playbook
from tests.helpers.lab_vms import assert_counts_on, failures, logged_numbers
from tests.helpers.real_site import DATA_PATH, NS, RESTIC_PASSWORD, RealSite, real_failed_site, sha256_of
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

NEW_NODE = "cloud-real-1"


def changed_tasks(run: Run) -> list[str]:
    return [f"{host}: {task['task']['name']}" for play in run.report.get("plays", []) for task in play.get("tasks", [])
            for host, result in task.get("hosts", {}).items() if result.get("changed")]


@pytest.fixture
def site(lab, s3_server, moto_server, velero_server, lab_worker_image, vm_ssh_key, tmp_path) -> Iterator[RealSite]:
    with real_failed_site(lab, s3_server, moto_server, velero_server, lab_worker_image, tmp_path, vm_ssh_key) as prepared:
        yield prepared


def test_a_dead_real_nodes_workloads_come_back_on_a_real_node_with_data_and_memory(lab, site, moto_server, s3_server, lab_worker_image,
                                                                                   vm_ssh_key, tmp_path):
    with lab.vm_cloud("cloud", moto_server.endpoint_url, image=lab_worker_image, disks=tmp_path / "vms", relay_ports=(s3_server.port,),
                      name_prefixes=(NEW_NODE,), region=moto_server.region) as cloud:
        try:
            ran = run_playbook(REPO / "playbooks/migrate.yml", inventory=site.inventory, extra_vars={
                "hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(tmp_path / "report")})
            assert ran.returncode == 0, failures(ran)
            assert RESTIC_PASSWORD not in ran.output
            report = json.loads((tmp_path / "report/report.json").read_text())
            assert report["outcome"] == "succeeded", report
            assert [(p["name"], p["status"]) for p in report["phases"]] == [
                (name, "ok") for name in ("plan", "provision", "join", "resources", "data", "state", "scale-up")]
            assert [s["outcome"] for s in report["state"]] == ["restored"], report["state"]

            core = client.CoreV1Api(lab.api("cloud"))
            node = core.read_node(NEW_NODE)
            assert node.status.node_info.container_runtime_version == "containerd://2.3.7"
            assert node.metadata.labels["hybridcloud.io/migrated-from"] == site.failed

            def running() -> bool:
                pods = core.list_namespaced_pod(NS).items
                return len(pods) == 2 and all(p.spec.node_name == NEW_NODE and p.status.phase == "Running" for p in pods)
            wait_until("the workloads to run on the new real node", running, 120, interval=1)
            # The local volume: the same bytes on the new node's disk, and the db pod sees them.
            new_vm = cloud.vm_named(NEW_NODE)
            assert sha256_of(vm_ssh_key, new_vm.address, DATA_PATH) == site.data
            assert set(core.read_namespaced_pod_log("db-0", NS).split()) == set(site.data)
            # The counter's memory: it goes on from its checkpointed value.
            counter = core.list_namespaced_pod(NS, label_selector="app=counter").items[0].metadata.name
            wait_until("the counter to count on", lambda: logged_numbers(core, counter, NS)[-1] > site.counted[1] + 2, 60)
            assert_counts_on(logged_numbers(core, counter, NS), *site.counted)

            # A second run finds everything done: the same VM, no second join, nothing changed.
            again = run_playbook(REPO / "playbooks/migrate.yml", inventory=site.inventory, extra_vars={
                "hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(tmp_path / "report")})
            assert again.returncode == 0, failures(again)
            assert again.stats("lab-cloud")["changed"] == 0 and again.stats(NEW_NODE)["changed"] == 0, changed_tasks(again)
            named = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
            assert sum(len(r["Instances"]) for r in named) == 1 and len(cloud.vms) == 1
        finally:
            instances = list(cloud.vms)
    if instances:
        moto_server.client("ec2").terminate_instances(InstanceIds=instances)
    core = client.CoreV1Api(lab.api("cloud"))
    if NEW_NODE in [n.metadata.name for n in core.list_node().items]:
        core.delete_node(NEW_NODE)
