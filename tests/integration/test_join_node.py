"""The role join_node: the lab's own kubeadm (built from the same pin as its control plane) joins a
Debian 13 root to the lab's cloud cluster with a token from bootstrap_token, CA pinned.

The root is reached with the chroot connection and shares the host's network, so kubeadm's
discovery really fetches cluster-info from the lab API server and checks its JWS signature and CA
against the pin. The root has no container runtime or kubelet (the worker_node role brings them),
so kubeadm runs with --dry-run and every preflight check ignored: discovery is real, writing is not,
and the Node steps are skipped.
"""

from __future__ import annotations

import base64
import json
import shutil
import uuid

import pytest
from kubernetes import client

from lab.hclab.debian_root import make_instance
from tests.helpers.ansible_run import REPO, Run, run_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/join_node.yml"
KUBEADM = REPO / ".build/lab/bin/hyperkube"  # multi-call: it is kubeadm when called so


def failures(run: Run, host: str) -> str:
    return "\n".join(str(r.get("msg", r)) for r in run.task_results(host) if r.get("failed"))


@pytest.fixture
def new_node(tmp_path, lab):
    root = make_instance(tmp_path / "root", ("python3",))
    shutil.copy2(KUBEADM, root / "usr/bin/kubeadm")
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"new_nodes": {"hosts": {"cloud-worker-5": {
        "ansible_connection": "community.general.chroot", "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3"}}}}}}))
    return root, inventory


def join(lab, inventory, run_id: str = "", **over) -> Run:
    extra = {"join_node_kubeconfig": str(lab.kubeconfig("cloud")), "test_run_id": run_id or uuid.uuid4().hex[:12],
             "join_node_dry_run": True, "join_node_ignore_preflight_errors": ["all"], **over}
    return run_playbook(PLAYBOOK, inventory=inventory, extra_vars=extra)


def token_of_run(lab, run_id: str) -> str:
    """The token bootstrap_token made for ``run_id``, read from its Secret (the play never shows it)."""
    secrets = client.CoreV1Api(lab.api("cloud")).list_namespaced_secret(
        "kube-system", label_selector=f"migration.hybridcloud.io/run-id={run_id}").items
    data = secrets[0].data
    return "%s.%s" % (base64.b64decode(data["token-id"]).decode(), base64.b64decode(data["token-secret"]).decode())


def test_kubeadm_discovers_the_cluster_with_the_pinned_ca_and_leaves_no_token_on_disk(lab, new_node):
    root, inventory = new_node
    run_id = uuid.uuid4().hex[:12]
    run = join(lab, inventory, run_id)
    assert run.returncode == 0, failures(run, "cloud-worker-5") or run.output[-3000:]
    token = token_of_run(lab, run_id)
    assert token.split(".")[1] not in run.output
    [joined] = [r for r in run.task_results("cloud-worker-5") if r.get("cmd") and "join" in r["cmd"]]
    said = joined["stdout"] + joined["stderr"]
    assert "Cluster info signature and contents are valid" in said, said[-2000:]
    assert not (root / "etc/hybridcloud-migration/join-configuration.yml").exists()
    assert not (root / "etc/kubernetes/kubelet.conf").exists(), "a dry run wrote the kubelet's kubeconfig"


def test_a_wrong_ca_hash_is_refused_and_says_how_to_fix_it(lab, new_node):
    root, inventory = new_node
    run = join(lab, inventory, test_ca_cert_hash="sha256:" + "0" * 64, join_node_timeout=20)
    assert run.returncode != 0
    said = failures(run, "cloud-worker-5")
    assert "kubeadm join of cloud-worker-5 to" in said and "CA hash mismatch" in said, said
    assert not (root / "etc/hybridcloud-migration/join-configuration.yml").exists()


def test_bad_settings_are_refused_before_anything_runs(lab, new_node):
    _root, inventory = new_node
    run = join(lab, inventory, join_node_api_server_endpoint="https://no-port")
    assert run.returncode != 0
    assert "join_node_api_server_endpoint as host:port" in run.output
