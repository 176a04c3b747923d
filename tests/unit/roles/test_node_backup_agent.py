"""The node backup agent's plain logic: which data and which containers a node backs up."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.helpers.ansible_run import REPO

SPEC = importlib.util.spec_from_file_location("hcm_node_backup", REPO / "roles/node_backup/files/hcm_node_backup.py")
agent = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = agent  # dataclasses look their module up there
SPEC.loader.exec_module(agent)


def pod(name, node="worker-1", namespace="shop", volumes=(), annotations=None, owner=None, phase="Running", running=("app",)):
    meta = {"name": name, "namespace": namespace, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x"}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "volumes": list(volumes)},
        "status": {"phase": phase, "containerStatuses": [{"name": c, "state": {"running": {}}} for c in running]},
    }


def local_pv(name, path, node, claim=("shop", "data-db-0")):
    return {
        "metadata": {"name": name},
        "spec": {
            "local": {"path": path},
            "claimRef": {"namespace": claim[0], "name": claim[1]} if claim else None,
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
            ]}},
        },
    }


def host_path(name, path):
    return {"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}}


def test_local_pvs_pinned_to_this_node_and_host_paths_of_its_pods():
    pods = [
        pod("web-1", volumes=[host_path("cache", "/srv/cache"), {"name": "cfg", "configMap": {"name": "c"}}]),
        pod("web-2", node="worker-2", volumes=[host_path("cache", "/srv/other-node")]),
    ]
    pvs = [local_pv("pv-a", "/mnt/disks/a", "worker-1"), local_pv("pv-b", "/mnt/disks/b", "worker-2"), {"metadata": {"name": "nfs"}, "spec": {"nfs": {}}}]
    found = agent.find_local_data("worker-1", pods, pvs, extra_paths=["/var/lib/app-extra"])
    assert [(d.source, d.path, d.name) for d in found] == [
        ("extra-path", "/var/lib/app-extra", "/var/lib/app-extra"),
        ("host-path", "/srv/cache", "shop/web-1/cache"),
        ("local-pv", "/mnt/disks/a", "shop/data-db-0"),
    ]
    assert found[2].tags() == ["source=local-pv", "ns=shop", "pvc=data-db-0", "pv=pv-a"]
    assert found[1].tags() == ["source=host-path", "ns=shop", "pod=web-1", "volume=cache"]


def test_daemonset_and_static_pods_do_not_migrate_so_their_host_paths_are_not_backed_up():
    pods = [
        pod("fluentd-x", volumes=[host_path("logs", "/var/log")], owner="DaemonSet"),
        pod("etcd-worker-1", namespace="kube-system", volumes=[host_path("data", "/var/lib/etcd")],
            annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("db-0", volumes=[host_path("data", "/srv/db")], owner="StatefulSet"),
    ]
    assert [d.path for d in agent.find_local_data("worker-1", pods, [])] == ["/srv/db"]


def test_a_path_shared_by_several_pods_is_backed_up_once():
    pods = [pod("a", volumes=[host_path("v", "/srv/shared")]), pod("b", volumes=[host_path("w", "/srv/shared")])]
    assert len(agent.find_local_data("worker-1", pods, [local_pv("p", "/srv/shared", "worker-1")])) == 1


@pytest.mark.parametrize(
    "annotation, running, expected",
    [
        ("true", ("app", "sidecar"), ["app", "sidecar"]),
        ("sidecar", ("app", "sidecar"), ["sidecar"]),
        ("app, gone", ("app",), ["app"]),
        ("false", ("app",), []),
        (None, ("app",), []),
    ],
)
def test_checkpoint_targets_follow_the_annotation(annotation, running, expected):
    annotations = {agent.CHECKPOINT_ANNOTATION: annotation} if annotation else {}
    targets = agent.find_checkpoint_targets("worker-1", [pod("redis-0", annotations=annotations, running=running)])
    assert [t.container for t in targets] == expected
    assert all(t.name == "shop/redis-0/%s" % t.container for t in targets)


def test_only_running_pods_of_this_node_are_checkpointed():
    opted = {agent.CHECKPOINT_ANNOTATION: "true"}
    pods = [pod("p1", annotations=opted, phase="Pending"), pod("p2", node="worker-2", annotations=opted), pod("p3", annotations=opted)]
    assert [t.pod for t in agent.find_checkpoint_targets("worker-1", pods)] == ["p3"]
