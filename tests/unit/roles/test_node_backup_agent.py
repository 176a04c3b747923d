"""The node backup agent's plain logic: which data and which containers a node backs up, what
each is called, which snapshots retention forgets, and which CA verifies the kubelet."""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest
import yaml

from tests.helpers.ansible_run import REPO

SPEC = importlib.util.spec_from_file_location("hcm_node_backup", REPO / "roles/node_backup/files/hcm_node_backup.py")
agent = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = agent  # dataclasses look their module up there
SPEC.loader.exec_module(agent)


def pod(name, node="worker-1", namespace="shop", volumes=(), annotations=None, owner=None, phase="Running", running=("app",),
        labels=None, owner_name="x", controller=True):
    meta = {"name": name, "namespace": namespace, "annotations": annotations or {}, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": owner_name, "uid": "u-" + owner_name, "controller": controller}]
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
        ("host-path", "/srv/cache", "shop/pod/web-1/cache"),
        ("local-pv", "/mnt/disks/a", "shop/data-db-0"),
    ]
    assert found[2].tags() == ["source=local-pv", "ns=shop", "pvc=data-db-0", "pv=pv-a"]
    assert found[1].tags() == ["source=host-path", "ns=shop", "owner=pod/web-1", "volume=cache"]
    assert found[0].tags() == ["source=extra-path"]


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


# -- hostPath data is filed under the pod's controlling owner -------------------------------


def deployment_pod(name, template_hash, volumes, deployment="web"):
    """A pod as the Deployment controller makes it: owned by ReplicaSet <deployment>-<hash>, labelled with the hash."""
    return pod(name, volumes=volumes, owner="ReplicaSet", owner_name="%s-%s" % (deployment, template_hash),
               labels={"app": deployment, "pod-template-hash": template_hash})


def test_a_deployments_host_path_keeps_its_name_and_tags_across_restarts_and_rollouts():
    """Each restart names the pod anew, a rollout makes a new ReplicaSet: the item stays deployment/web."""
    runs = [
        [deployment_pod("web-7d4b9c8f6d-x2x9k", "7d4b9c8f6d", [host_path("cache", "/srv/cache")])],
        [deployment_pod("web-7d4b9c8f6d-q8w7z", "7d4b9c8f6d", [host_path("cache", "/srv/cache")])],  # restarted
        [deployment_pod("web-5f6c7b8d9e-m3n4p", "5f6c7b8d9e", [host_path("cache", "/srv/cache")])],  # rolled out
    ]
    found = [agent.find_local_data("worker-1", pods, []) for pods in runs]
    assert {(d.name, tuple(d.tags())) for [d] in found} == {
        ("shop/deployment/web/cache", ("source=host-path", "ns=shop", "owner=deployment/web", "volume=cache")),
    }
    # The pod read each time is recorded (the catalog keeps it in details), never a tag.
    assert [d.pod for [d] in found] == ["web-7d4b9c8f6d-x2x9k", "web-7d4b9c8f6d-q8w7z", "web-5f6c7b8d9e-m3n4p"]
    assert not any(tag.startswith("pod=") for [d] in found for tag in d.tags())


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"owner": "StatefulSet", "owner_name": "db"}, ("statefulset", "db")),
        ({"owner": "Job", "owner_name": "report-28999"}, ("job", "report-28999")),
        ({}, ("pod", "p")),  # a bare pod is its own owner
        ({"owner": "Deployment", "owner_name": "odd"}, ("deployment", "odd")),
        # A ReplicaSet that no Deployment made (its name does not end in the pod's template hash) stays a ReplicaSet.
        ({"owner": "ReplicaSet", "owner_name": "standalone", "labels": {"pod-template-hash": "abc12"}}, ("replicaset", "standalone")),
        ({"owner": "ReplicaSet", "owner_name": "web-abc12"}, ("replicaset", "web-abc12")),  # no hash label
        ({"owner": "ReplicaSet", "owner_name": "abc12", "labels": {"pod-template-hash": "abc12"}}, ("replicaset", "abc12")),
        ({"owner": "ReplicaSet", "owner_name": "api-v2-6c9f", "labels": {"pod-template-hash": "6c9f"}}, ("deployment", "api-v2")),
        # Only the controlling owner counts: an owner that does not control the pod does not name its data.
        ({"owner": "StatefulSet", "owner_name": "db", "controller": False}, ("pod", "p")),
    ],
)
def test_data_owner(kwargs, expected):
    assert agent.data_owner(pod("p", **kwargs)) == expected


def test_host_paths_of_different_owners_and_volumes_are_told_apart():
    pods = [
        deployment_pod("web-1a2b3c-aaaaa", "1a2b3c", [host_path("cache", "/srv/web-cache"), host_path("logs", "/srv/web-logs")]),
        pod("db-0", volumes=[host_path("data", "/srv/db")], owner="StatefulSet", owner_name="db"),
        pod("debug", volumes=[host_path("scratch", "/srv/scratch")]),
    ]
    assert [(d.name, d.path) for d in agent.find_local_data("worker-1", pods, [])] == [
        ("shop/deployment/web/cache", "/srv/web-cache"),
        ("shop/deployment/web/logs", "/srv/web-logs"),
        ("shop/pod/debug/scratch", "/srv/scratch"),
        ("shop/statefulset/db/data", "/srv/db"),
    ]


# -- retention: restic keeps exactly what the remaining catalog entries name -----------------


def snap_id(n):
    return "%064x" % n


def entry_naming(*numbers):
    """A catalog entry as the agent writes it: each artifact names its snapshot in location and details."""
    items = [{"name": "item-%d" % n, "location": "restic:s3:http://s3/bucket/restic/onprem#%s" % snap_id(n), "size": 1,
              "details": {"snapshot_id": snap_id(n)}} for n in numbers]
    return {"data": {"local_data": items[:1], "workload_state": items[1:]}}


def test_the_snapshots_no_remaining_entry_names_are_forgotten_oldest_first():
    snapshots = [{"id": snap_id(n), "time": "2026-11-25T10:%02d:00Z" % n} for n in (5, 1, 2, 3, 4, 6)]
    entries = [entry_naming(3, 4), entry_naming(6)]
    assert agent.unnamed_snapshots(snapshots, entries) == [snap_id(1), snap_id(2), snap_id(5)]


def test_an_entry_naming_its_snapshot_under_another_spelling_of_the_repository_still_protects_it():
    entry = {"data": {"local_data": [{"name": "a", "location": "restic:s3:https://other.example/bucket/restic/onprem#%s" % snap_id(7), "size": 1}]}}
    assert agent.snapshot_ids(entry) == {snap_id(7)}
    assert agent.unnamed_snapshots([{"id": snap_id(7), "time": "t"}], [entry]) == []


def test_without_entries_naming_them_every_snapshot_of_the_node_goes():
    assert agent.unnamed_snapshots([{"id": snap_id(1), "time": "t"}], [{"data": {"local_data": []}}]) == [snap_id(1)]


# -- which CA verifies the kubelet ---------------------------------------------------------


@pytest.mark.parametrize(
    "files, configured, expected",
    [
        # kubeadm's default: the kubelet serves the self-signed certificate it keeps in kubelet.crt.
        (["kubelet.crt", "kubelet.key"], "", "pki/kubelet.crt"),
        # serverTLSBootstrap: the cluster signed the serving certificate (kubelet.crt may be left over from before).
        (["kubelet.crt", "kubelet.key", "kubelet-server-current.pem"], "", "cluster-ca.crt"),
        (["kubelet-server-current.pem"], "", "cluster-ca.crt"),
        ([], "", "cluster-ca.crt"),
        # What the setting names wins.
        (["kubelet.crt"], "/etc/custom/kubelet-ca.pem", "/etc/custom/kubelet-ca.pem"),
    ],
)
def test_the_kubelet_ca_follows_what_the_kubelet_serves(tmp_path, files, configured, expected):
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in files:
        (pki / name).write_text("PEM\n")
    ca_file, why = agent.kubelet_ca(configured, str(pki), str(tmp_path / "cluster-ca.crt"))
    assert ca_file == (expected if expected.startswith("/") else str(tmp_path / expected))
    assert why


def test_the_kubelet_client_names_the_setting_and_both_choices_for_a_certificate_that_does_not_verify(tmp_path):
    client = agent.kubelet_client({"base_url": "https://worker-1:10250", "ca_file": "", "pki_dir": str(tmp_path),
                                   "cert_file": "c", "key_file": "k", "checkpoint_timeout": 60}, "/etc/kubernetes/pki/ca.crt")
    assert client.ca_file == "/etc/kubernetes/pki/ca.crt" and client.timeout == 90
    assert "node_backup_kubelet_ca_file" in client.ca_fix
    assert str(tmp_path / "kubelet.crt") in client.ca_fix and "/etc/kubernetes/pki/ca.crt" in client.ca_fix
    assert "serverTLSBootstrap" in client.ca_fix


def test_the_role_default_leaves_the_kubelet_ca_to_the_agent():
    defaults = yaml.safe_load((REPO / "roles/node_backup/defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles/node_backup/meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert defaults["node_backup_kubelet_ca_file"] == "" == specs["node_backup_kubelet_ca_file"]["default"]
    assert defaults["node_backup_kubelet_pki_dir"] == agent.KUBELET_PKI_DIR == specs["node_backup_kubelet_pki_dir"]["default"]
    for name in ("node_backup_restic_retry_limit", "node_backup_restic_lock_wait"):
        assert defaults[name] == specs[name]["default"]
    assert agent.DEFAULT_RETRY_LIMIT == defaults["node_backup_restic_retry_limit"]
    assert agent.DEFAULT_LOCK_WAIT == defaults["node_backup_restic_lock_wait"]


# -- restic is stopped when the storage stays dead --------------------------------------------

# Prints restic's retry report the way restic 0.18 does, as a storage that never comes back makes it.
RETRYING_FOREVER = r"""#!/bin/sh
trap 'echo "signal terminated received, cleaning up" >&2; echo terminated >"$0.out"; exit 1' TERM
echo '{"message_type":"status","percent_done":0.5}'
while :; do
    echo 'Save(<data/0c1a2b3c4d>) returned error, retrying after 312ms: client.PutObject: dial tcp 127.0.0.1:9000: connect: connection refused' >&2
    sleep 0.2
done
"""

# Retries now and then but recovers each time: restic is left alone.
RETRYING_AND_RECOVERING = r"""#!/bin/sh
for i in 1 2 3 4 5 6 7 8; do
    echo "Save(<data/$i>) returned error, retrying after 200ms: connection reset by peer" >&2
    sleep 0.3
    echo "Save(<data/$i>) operation successful after 1 retries" >&2
done
echo '{"message_type":"summary","snapshot_id":"abc"}'
"""


def restic_standin(tmp_path, script):
    path = tmp_path / "restic"
    path.write_text(script)
    path.chmod(0o755)
    return agent.Restic(str(path), "s3:http://127.0.0.1:9000/b/restic/c", str(tmp_path / "pw"), {}, host="worker-1", retry_limit=1)


def test_restic_retrying_past_the_limit_is_stopped_and_the_error_names_the_storage_failure(tmp_path):
    restic = restic_standin(tmp_path, RETRYING_FOREVER)
    started = time.monotonic()
    with pytest.raises(agent.MigrationError) as caught:
        restic.backup("/srv/data", ["hcm"])
    assert time.monotonic() - started < 10
    assert (tmp_path / "restic.out").read_text().strip() == "terminated", "restic was not given SIGTERM to remove its lock"
    message = caught.value.message
    assert "restic gave up on the storage while backing up /srv/data" in message
    assert "connect: connection refused" in message and "node_backup_restic_retry_limit" in message


def test_restic_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "RESTIC_STOP_GRACE", 1.0)
    restic = restic_standin(tmp_path, RETRYING_FOREVER.replace("exit 1' TERM", "' TERM"))
    started = time.monotonic()
    with pytest.raises(agent.MigrationError, match="restic gave up on the storage"):
        restic.backup("/srv/data", ["hcm"])
    assert time.monotonic() - started < 10


def test_retries_that_recover_do_not_stop_restic(tmp_path):
    restic = restic_standin(tmp_path, RETRYING_AND_RECOVERING)
    assert restic.backup("/srv/data", ["hcm"]) == {"message_type": "summary", "snapshot_id": "abc"}


def test_a_lock_error_in_json_mode_names_the_holder():
    stderr = ('{"message_type":"exit_error","code":11,"message":"unable to create lock in backend: repository is already locked '
              'exclusively by PID 23031 on vm by root (UID 0, GID 0)\\nlock was created at 2026-11-25 22:04:33 (3.5s ago)\\nstorage ID 77547c0e"}')
    restic = agent.Restic("restic", "s3:x", "pw", {}, host="worker-1")
    with pytest.raises(agent.ResticLocked) as caught:
        restic._check(11, stderr, "", "backing up /srv")
    assert "is locked by another run while backing up /srv (unable to create lock in backend: repository is already locked exclusively by PID 23031" \
        in caught.value.message
    assert "restic unlock" in caught.value.message


def test_an_entry_naming_a_short_id_protects_the_snapshots_it_could_mean():
    entry = {"data": {"local_data": [{"name": "a", "location": "restic:s3:x#%s" % snap_id(0xabc)[:8], "size": 1}]}}
    snapshots = [{"id": snap_id(0xabc), "time": "1"}, {"id": "f" * 64, "time": "2"}]
    assert agent.unnamed_snapshots(snapshots, [entry]) == ["f" * 64]
