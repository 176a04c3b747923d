"""Tools for tests on lab VMs (real worker nodes: lab/hclab/lab_vm.py), and their session fixtures.

``lab_worker_image``: the lab's worker image, built once per session by build_image.yml
(tests/helpers/lab_worker_image.py). ``vm_ssh_key``: a key pair for root on the VMs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.hclab import counter
from tests.helpers.ansible_run import REPO, Run
from tests.helpers.lab_worker_image import build_lab_worker_image

BUSYBOX = "hclab.io/busybox:1"
ROLE_PLAYBOOK = REPO / "tests/integration/playbooks/role_on_new_nodes.yml"
NODE_BACKUP_RBAC = "hcm-test-node-backup"
COUNTER = counter.SCRIPT


@pytest.fixture(scope="session")
def lab_worker_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's worker image, built once per session by build_image.yml (target lab)."""
    return build_lab_worker_image(tmp_path_factory.mktemp("worker-image"))


@pytest.fixture(scope="session")
def vm_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("vm-ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hclab-test", "-f", str(key)], check=True)
    return key


def inventory(path: Path, ssh_key: Path, nodes: dict[str, str] | None = None) -> Path:
    """The controller, and the group hcm_new_nodes reached over SSH with ``ssh_key`` (``nodes``: name -> address)."""
    path.write_text(json.dumps({"all": {"children": {"hcm_new_nodes": {
        "hosts": {name: {"ansible_host": address, "ansible_user": "root"} for name, address in (nodes or {}).items()},
        "vars": ssh_vars(ssh_key)}},
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": str(REPO / ".venv/bin/python")}}}}))
    return path


def ssh_vars(ssh_key: Path) -> dict[str, str]:
    """How Ansible reaches a lab VM (its host key is new at each boot)."""
    return {"ansible_ssh_private_key_file": str(ssh_key), "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}


def unit_command(vm: Any, unit: str) -> str:
    """The ExecStart= of a unit a role installed in the VM (what its timer would run)."""
    text = (vm.disk / "upper/etc/systemd/system" / unit).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")][-1]


def failures(run: Run) -> str:
    """The failed tasks of every host, with their messages (for assertion messages)."""
    found = [f"{host} {task['task']['name']}: {result.get('msg', '')} {result.get('stderr', '')}"[:2000]
             for play in run.report.get("plays", []) for task in play.get("tasks", [])
             for host, result in task.get("hosts", {}).items() if result.get("failed")]
    return "\n".join(found) or run.output[-3000:]


def counter_pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "counter"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "counter", "image": BUSYBOX, "imagePullPolicy": "Never", "command": ["/bin/sh", "-c", COUNTER]}]}}


def counter_deployment(node: str, annotations: dict[str, str]) -> dict[str, Any]:
    pod = counter_pod("counter", node)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "counter"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "counter"}},
                     "template": {"metadata": {"labels": {"app": "counter"}, "annotations": annotations},
                                  "spec": {**{k: v for k, v in pod["spec"].items() if k != "nodeName"},
                                           "nodeSelector": {"kubernetes.io/hostname": node}}}}}


def logged_numbers(api: Any, pod: str, namespace: str = "default") -> list[int]:
    return [int(x) for x in api.read_namespaced_pod_log(pod, namespace, _request_timeout=10).split()]


def assert_counts_on(numbers: list[int], counted_before: int, counted_after: int) -> None:
    """The restored process goes on from its checkpointed value (lab/hclab/counter.py)."""
    passed, detail = counter.continues_from(numbers, counted_before, counted_after)
    assert passed, (detail, numbers)


@contextlib.contextmanager
def node_backup_rights(api_client: Any) -> Iterator[None]:
    """What node_backup's documentation asks of a site: its nodes may list pods and PVs and create nodes/checkpoint."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NODE_BACKUP_RBAC},
                              "rules": [{"apiGroups": [""], "resources": ["pods", "persistentvolumes"], "verbs": ["list"]},
                                        {"apiGroups": [""], "resources": ["nodes/checkpoint"], "verbs": ["create"]}]})
    rbac.create_cluster_role_binding({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NODE_BACKUP_RBAC},
                                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NODE_BACKUP_RBAC},
                                      "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]})
    try:
        yield
    finally:
        rbac.delete_cluster_role_binding(NODE_BACKUP_RBAC)
        rbac.delete_cluster_role(NODE_BACKUP_RBAC)
