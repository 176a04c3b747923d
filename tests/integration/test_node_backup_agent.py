"""The node backup agent end to end, with real parts, and its faults.

Real: the lab's onprem cluster (kube-apiserver, controllers, a kwok node playing the pods), the
agent bundle run as its systemd unit runs it, restic 0.18 (Debian 13) with an S3 repository on
the real S3 server (rclone), the catalog written and read by the collection's own code, and
criu 4.1 dumping and restoring a real process in the Debian 13 root. The one stand-in is the
kubelet (tests/helpers/kubelet_standin.py): it serves only the checkpoint endpoint, over a real
``criu dump``, because nothing here can run a kubelet with a container runtime.

What a user would check is checked: the catalog's latest entry (read with the
backup_catalog_info module) names the PVC, the hostPath volume and the checkpoint; restic
gives back the very bytes; the checkpoint archive left the node; and the process, restored
with ``criu restore`` from the archive restic gives back, goes on counting from where it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import build_bundle
from lab.hclab.debian_root import run_in_root
from lab.hclab.pki import CertPair
from tests.helpers import node_agent
from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.kubelet_standin import COUNTER_LOG, KubeletStandin
from tests.helpers.node_agent import AGENT, Setup, grant_identity
from tests.helpers.wait import wait_until
from tests.integration.test_backup_catalog import info

pytestmark = pytest.mark.integration

CLUSTER = "onprem"
PASSWORD = "correct horse battery staple"
CHECKPOINT_ANNOTATION = "backup.hybridcloud.io/checkpoint"


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def random_tree(root: Path, files: dict[str, int]) -> Path:
    """Real files of random bytes (``relative path: size``)."""
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


# -- the node: what the API server knows about it, its data and its "kubelet" ----------------


@dataclass
class Node:
    """One kwok node of the lab's onprem cluster, with real local data and a kubelet stand-in."""

    name: str
    namespace: str
    api_server: str
    api_ca: Path
    api_client: CertPair
    local_pv: str
    local_dir: Path
    host_dir: Path
    kubelet: KubeletStandin
    kubelet_client: CertPair
    bundle: Path
    workdir: Path
    counter_pid: int = 0
    digests: dict[str, dict[str, str]] = field(default_factory=dict)


def _pod(name: str, namespace: str, node: str, volumes: list[dict[str, Any]], container: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": container, "image": "registry.example/hcm/%s:1.0" % container,
                            "volumeMounts": [{"name": v["name"], "mountPath": "/data/" + v["name"]} for v in volumes]}],
            "volumes": volumes,
        },
    }


def _running(core: Any, namespace: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, namespace, _request_timeout=10)
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Running" and bool(statuses) and all(s.state.running for s in statuses)


@pytest.fixture(scope="module")
def node(lab: Any, debian_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The kwok node's pods and volumes in the API server, its data on disk, its kubelet stand-in.

    In the API: a ``local`` PV pinned to the node and bound to PVC ``data-db-0``, a pod using
    it, a pod with a hostPath volume, and a pod that opts in to checkpoints; an identity of
    its own for the agent (a client certificate from the cluster's CA, a ClusterRole that may
    list pods and PVs, nothing more).
    """
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    workdir = tmp_path_factory.mktemp("node-backup")
    node_name = lab.nodes(CLUSTER)[-1]
    suffix = uuid.uuid4().hex[:6]
    namespace = f"hcm-node-backup-{suffix}"
    api = lab.api(CLUSTER)
    core = client.CoreV1Api(api)

    local_dir = random_tree(workdir / "disks" / "local-ssd-1", {"db/table.bin": 3 * 1024 * 1024 + 17, "db/wal/000001.log": 65536, "db/meta.json": 211})
    host_dir = random_tree(workdir / "srv" / "cache", {"blobs/a.bin": 512 * 1024, "blobs/b.bin": 1, "index": 4096})

    api_client, remove_identity = grant_identity(lab, CLUSTER, node_name, workdir, suffix)

    storage_class = f"hcm-local-{suffix}"
    pv_name = f"hcm-local-{suffix}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class, "volumeMode": "Filesystem", "local": {"path": str(local_dir)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}},
        },
    })
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-db-0", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class, "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
    core.create_namespaced_pod(namespace, _pod("db-0", namespace, node_name, [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}], "db"))
    host_path = {"name": "cache", "hostPath": {"path": str(host_dir), "type": "Directory"}}
    core.create_namespaced_pod(namespace, _pod("files-0", namespace, node_name, [host_path], "app"))
    core.create_namespaced_pod(namespace, _pod("counter-0", namespace, node_name, [], "counter", {CHECKPOINT_ANNOTATION: "true"}))

    kubelet = KubeletStandin(debian_root, workdir / "kubelet", node_name=node_name)
    kubelet.start()
    try:
        container = kubelet.add_container(namespace, "counter-0", "counter")
        kubelet_client = kubelet.issue_client("node-backup", f"hcm-node-backup:{node_name}")
        # The controllers bind the claim (the PV's claimRef is what the agent reads); kwok runs the pods.
        wait_until("PVC data-db-0 Bound", lambda: core.read_namespaced_persistent_volume_claim("data-db-0", namespace).status.phase == "Bound", 90)
        for pod in ("db-0", "files-0", "counter-0"):
            wait_until(f"pod {pod} Running on {node_name}", lambda pod=pod: _running(core, namespace, pod), 90)
        wait_until("the counter has counted", lambda: len(container.read_file(COUNTER_LOG).split()) >= 5, 30)
        yield Node(
            name=node_name, namespace=namespace, api_server=lab.server(CLUSTER), api_ca=lab.ca_cert(CLUSTER), api_client=api_client,
            local_pv=pv_name, local_dir=local_dir, host_dir=host_dir, kubelet=kubelet, kubelet_client=kubelet_client,
            bundle=build_bundle(AGENT, workdir / "bundle"), workdir=workdir, counter_pid=container.workload_pid,
            digests={"local": tree_digest(local_dir), "host": tree_digest(host_dir)},
        )
    finally:
        kubelet.stop()
        remove_identity()
        for delete in (lambda: core.delete_namespace(namespace), lambda: core.delete_persistent_volume(pv_name)):
            try:
                delete()
            except client.exceptions.ApiException as error:
                if error.status != 404:
                    raise


# -- the agent, configured as the role configures it --------------------------------------


def install(node: Node, debian_root: Path, server: Any, bucket: str, where: Path, **options: Any) -> Setup:
    """The agent of ``node`` installed as the role installs it (tests/helpers/node_agent.py)."""
    return node_agent.install(cluster=CLUSTER, node_name=node.name, api_server=node.api_server, api_ca=node.api_ca, api_client=node.api_client,
                              kubelet=node.kubelet, kubelet_client=node.kubelet_client, restic=options.pop("restic_binary", None)
                              or str(debian_root / "usr/bin/restic"), server=server, bucket=bucket, where=where, password=PASSWORD, **options)


def run_agent(node: Node, setup: Setup) -> subprocess.CompletedProcess[str]:
    return node_agent.run_agent(node.bundle, setup)


def restic(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([setup.restic, *args], env=setup.restic_env, capture_output=True, text=True, timeout=300, check=True)


def repository_locks(setup: Setup) -> list[str]:
    """Ids of the locks the repository holds now."""
    return restic(setup, "list", "locks", "--no-lock").stdout.split()


def snapshots(setup: Setup) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(restic(setup, "snapshots", "--json", "--no-lock").stdout) or []
    return found


def latest_entry(server: Any, bucket: str, node_name: str) -> dict[str, Any] | None:
    seen = info(server, bucket, cluster=CLUSTER, node=node_name)
    assert not seen.get("failed"), seen.run.output
    latest: dict[str, Any] | None = seen.get("latest")
    return latest


def entries_listed(server: Any, bucket: str, node_name: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=f"catalog/{CLUSTER}/{node_name}/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def named_snapshots(entry: dict[str, Any]) -> list[str]:
    """The snapshot ids a catalog entry names, one per item."""
    return [snapshot_id(item["location"]) for items in entry["data"].values() for item in items]


def snapshot_id(location: str) -> str:
    match = re.fullmatch(r"restic:(.+)#([0-9a-f]{64})", location)
    assert match, location
    return match.group(2)


@pytest.fixture(scope="module")
def first_run(node: Node, debian_root: Path, s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Setup, subprocess.CompletedProcess[str]]:
    """The node's first backup, into a bucket of its own on the session S3 server."""
    bucket = s3_server.create_bucket(f"node-backup-{uuid.uuid4().hex[:8]}")
    setup = install(node, debian_root, s3_server, bucket, tmp_path_factory.mktemp("agent-etc"))
    return setup, run_agent(node, setup)


# -- the must-show ------------------------------------------------------------------------


RESTORE_SCRIPT = r"""
set -eu
tar -C / -xf /tmp/archive/rootfs-diff.tar
echo "dumped=$(tr '\n' ' ' <"$LOG")"
if ! criu restore -D /tmp/archive/checkpoint -d -o /tmp/restore.log -v4; then
    echo "restore_failed=yes"; tail -n 40 /tmp/restore.log; exit 1
fi
[ -e "/proc/$PID" ] && echo "alive=yes" || echo "alive=no"
echo "session=$(cut -d' ' -f6 "/proc/$PID/stat")"
n=$(wc -l <"$LOG")
until [ "$(wc -l <"$LOG")" -ge $((n + 5)) ]; do sleep 0.05; done
echo "final=$(tr '\n' ' ' <"$LOG")"
"""


def test_one_run_backs_up_the_nodes_volumes_and_checkpoint_and_each_comes_back(node: Node, first_run: Any, s3_server: Any, debian_root: Path,
                                                                               tmp_path: Path) -> None:
    setup, result = first_run
    log = result.stderr
    assert result.returncode == 0, log
    assert "backup complete: catalog entry" in log, log

    # The catalog, as a user reads it: the latest entry names the PVC, the hostPath volume and the checkpoint.
    entry = latest_entry(s3_server, setup.bucket, node.name)
    assert entry is not None, log
    assert (entry["cluster"], entry["node"]) == (CLUSTER, node.name)
    local = {item["name"]: item for item in entry["data"]["local_data"]}
    # files-0 is a bare pod: its hostPath data is filed under the pod itself (a Deployment's, under the Deployment).
    pvc, host_path = f"{node.namespace}/data-db-0", f"{node.namespace}/pod/files-0/cache"
    assert set(local) >= {pvc, host_path}, sorted(local)
    assert local[pvc]["details"]["source"] == "local-pv" and local[pvc]["details"]["pv"] == node.local_pv
    assert local[pvc]["details"]["path"] == str(node.local_dir)
    assert local[host_path]["details"]["source"] == "host-path" and local[host_path]["details"]["path"] == str(node.host_dir)
    [checkpoint] = entry["data"]["workload_state"]
    assert checkpoint["name"] == f"{node.namespace}/counter-0/counter"
    assert re.fullmatch(r"checkpoint-counter-0_%s-counter-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)\.tar" % node.namespace,
                        checkpoint["details"]["archive"]), checkpoint
    for item in [local[pvc], local[host_path], checkpoint]:
        assert item["location"].startswith("restic:%s#" % setup.repository), item

    # The agent asked the kubelet exactly once, with its client certificate, and the archive left the node.
    asked = [r for r in node.kubelet.seen if r.path.startswith(f"/checkpoint/{node.namespace}/counter-0/")]
    assert [(r.method, r.path, r.user, r.status) for r in asked] == [
        ("POST", f"/checkpoint/{node.namespace}/counter-0/counter?timeout=60", f"hcm-node-backup:{node.name}", 200)]
    assert not list(node.kubelet.checkpoints_dir.iterdir()), "the checkpoint archive (every memory page) must not stay on the node"
    assert node.kubelet.containers[(node.namespace, "counter-0", "counter")].workload_running(), "a kubelet checkpoint leaves the container running"

    # restic gives back the very bytes.
    for item, source, key in [(local[pvc], node.local_dir, "local"), (local[host_path], node.host_dir, "host")]:
        target = tmp_path / ("restored-" + key)
        restic(setup, "restore", snapshot_id(item["location"]), "--target", str(target))
        assert tree_digest(target / source.relative_to("/")) == node.digests[key], item["name"]
    tags = {s["id"]: set(s.get("tags") or []) for s in snapshots(setup)}
    assert {"kind=local_data", "source=local-pv", f"ns={node.namespace}", "pvc=data-db-0", f"node={node.name}"} <= tags[snapshot_id(local[pvc]["location"])]
    assert {"kind=workload_state", "pod=counter-0", "container=counter"} <= tags[snapshot_id(checkpoint["location"])]
    assert {"kind=local_data", "source=host-path", f"ns={node.namespace}", "owner=pod/files-0", "volume=cache"} \
        == tags[snapshot_id(local[host_path]["location"])] - {"hcm", f"cluster={CLUSTER}", f"node={node.name}"}

    # The checkpoint: download it from restic, open it, restore the process in a fresh namespace.
    archive_path = node.kubelet.checkpoints_dir / checkpoint["details"]["archive"]
    archive = tmp_path / "checkpoint.tar"
    archive.write_bytes(subprocess.run([setup.restic, "dump", snapshot_id(checkpoint["location"]), str(archive_path)],
                                       env=setup.restic_env, capture_output=True, timeout=300, check=True).stdout)
    assert archive.stat().st_size == checkpoint["size"]
    opened = tmp_path / "archive"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(opened, filter="tar")
    assert {"config.dump", "spec.dump", "dump.log", "stats-dump", "rootfs-diff.tar", "checkpoint/pstree.img", "checkpoint/inventory.img"} <= set(names), names
    assert f"checkpoint/core-{node.counter_pid}.img" in names and any(n.startswith("checkpoint/pages-") for n in names), names
    spec = json.loads((opened / "spec.dump").read_text())
    assert spec["annotations"]["io.kubernetes.pod.name"] == "counter-0" and spec["annotations"]["io.kubernetes.container.name"] == "counter"
    assert json.loads((opened / "config.dump").read_text())["rootfsImageName"] == "registry.example/hcm/counter:1.0"

    restored = run_in_root(debian_root, ["sh", "-c", RESTORE_SCRIPT], binds={opened: "/tmp/archive"},
                           env={"LOG": COUNTER_LOG, "PID": str(node.counter_pid)}, timeout=120, check=False)
    out = dict(line.split("=", 1) for line in restored.stdout.splitlines() if "=" in line)
    context = f"rc={restored.returncode}\n{restored.stdout}\n{restored.stderr}"
    assert restored.returncode == 0 and "final" in out, context
    dumped = [int(x) for x in out["dumped"].split()]
    assert len(dumped) >= 5 and dumped == list(range(1, len(dumped) + 1)), context
    assert out["alive"] == "yes" and out["session"] == str(node.counter_pid), context
    final = [int(x) for x in out["final"].split()]
    assert final[: len(dumped)] == dumped, context
    resumed = final[len(dumped):]
    # It goes on from the value it held in memory at the checkpoint: dumped + 1, + 2, ... (a restart would write 1).
    assert len(resumed) >= 5 and resumed == list(range(dumped[-1] + 1, dumped[-1] + 1 + len(resumed))), context


def test_with_checkpoints_turned_off_the_kubelet_is_never_asked(node: Node, debian_root: Path, s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    setup = install(node, debian_root, s3_server, s3_bucket, tmp_path / "etc", checkpoints=False)
    assert "kubelet" not in setup.settings
    asked = len(node.kubelet.seen)
    result = run_agent(node, setup)
    assert result.returncode == 0, result.stderr
    assert len(node.kubelet.seen) == asked
    entry = latest_entry(s3_server, s3_bucket, node.name)
    assert entry is not None
    assert {f"{node.namespace}/data-db-0", f"{node.namespace}/pod/files-0/cache"} <= {i["name"] for i in entry["data"]["local_data"]}
    assert not entry["data"].get("workload_state")


# -- faults -------------------------------------------------------------------------------


def test_storage_dying_at_the_catalog_write_leaves_the_previous_entry_latest(node: Node, debian_root: Path, private_s3_server: Any,
                                                                             tmp_path: Path) -> None:
    server = private_s3_server()
    bucket = server.create_bucket("node-backup-outage")
    with FaultProxy(server.endpoint_url) as proxy:
        setup = install(node, debian_root, server, bucket, tmp_path / "etc", endpoint_url=proxy.endpoint_url, keep_last=1, max_age="")
        first = run_agent(node, setup)
        assert first.returncode == 0, first.stderr
        before = latest_entry(server, bucket, node.name)
        assert before is not None
        keys_before = entries_listed(server, bucket, node.name)

        # The storage goes away just as the second run writes its temporary catalog entry,
        # after restic stored everything.
        tmp_prefix = f"/{bucket}/catalog/{CLUSTER}/{node.name}/tmp/"
        proxy.add_rule(lambda method, path, headers: method == "PUT" and path.startswith(tmp_prefix), server.stop)
        second = run_agent(node, setup)
        assert [r for r in proxy.seen if r.faulted], "the outage never struck"
        assert second.returncode == 1, second.stderr
        assert "backup FAILED" in second.stderr and "writing the temporary catalog entry" in second.stderr, second.stderr
        assert f"the catalog's latest entry is unchanged (latest still names entry {before['id']})" in second.stderr, second.stderr
        assert "backup complete" not in second.stderr

        server.start()
        assert latest_entry(server, bucket, node.name) == before
        assert entries_listed(server, bucket, node.name) == keys_before

        # Once the storage is back, the next run completes and becomes the latest. Retention
        # (keep_last 1) leaves that one entry, and restic exactly the snapshots it names: the
        # first run's, and the second's that no entry ever named, are gone.
        third = run_agent(node, setup)
        assert third.returncode == 0, third.stderr
        after = latest_entry(server, bucket, node.name)
        assert after is not None and after["id"] > before["id"]
        assert entries_listed(server, bucket, node.name) == [
            f"catalog/{CLUSTER}/{node.name}/committed/{after['id']}.json", f"catalog/{CLUSTER}/{node.name}/entries/{after['id']}.json",
            f"catalog/{CLUSTER}/{node.name}/latest.json"]
        assert sorted(s["id"] for s in snapshots(setup)) == sorted(named_snapshots(after))


def test_a_wrong_restic_password_fails_clearly_and_changes_nothing(node: Node, first_run: Any, s3_server: Any, tmp_path: Path) -> None:
    setup, result = first_run
    assert result.returncode == 0, result.stderr
    before = latest_entry(s3_server, setup.bucket, node.name)
    count = len([s for s in snapshots(setup) if s["hostname"] == node.name])
    wrong = dict(setup.settings, restic=dict(setup.settings["restic"], password_file=str(tmp_path / "restic-password")))
    (tmp_path / "restic-password").write_text("not the password\n")
    config = tmp_path / "hcm-node-backup.json"
    config.write_text(json.dumps(wrong))
    failed = run_agent(node, Setup(config, tmp_path / "restic-password", setup.repository, setup.bucket, wrong, setup.restic_env, setup.restic))
    assert failed.returncode == 1, failed.stderr
    assert f"restic could not open {setup.repository} with the configured password" in failed.stderr, failed.stderr
    assert "node_backup_restic_password" in failed.stderr, failed.stderr  # the fix names the setting
    assert latest_entry(s3_server, setup.bucket, node.name) == before
    assert len([s for s in snapshots(setup) if s["hostname"] == node.name]) == count


def test_a_repository_another_run_holds_exclusively_fails_the_run_before_it_writes_anything(
        node: Node, first_run: Any, s3_server: Any, tmp_path: Path) -> None:
    """Another run prunes (an exclusive lock): this run stops at step 0, before a checkpoint or an upload."""
    setup, result = first_run
    assert result.returncode == 0, result.stderr
    before = latest_entry(s3_server, setup.bucket, node.name)
    assert before is not None
    snapshots_before = sorted(s["id"] for s in snapshots(setup))
    asked = len(node.kubelet.seen)
    # ``restic key passwd`` takes the exclusive lock (as prune, forget and check do), then reads
    # the new password: from a FIFO, it holds the lock until the test closes the FIFO.
    fifo = tmp_path / "new-password"
    os.mkfifo(fifo)
    holder = subprocess.Popen([setup.restic, "key", "passwd", "--new-password-file", str(fifo)], env=setup.restic_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the other run holds its exclusive lock", lambda: repository_locks(setup), 30)
        locked = run_agent(node, setup)
    finally:
        with open(fifo, "w", encoding="utf-8"):
            pass  # an empty new password: restic refuses it and changes nothing
        holder.wait(timeout=60)
    assert holder.returncode != 0 and "empty password" in (holder.stderr.read() if holder.stderr else ""), "the holder changed the password"
    assert locked.returncode == 1, locked.stderr
    assert (f"The restic repository {setup.repository} is locked by another run while opening the repository, before backing up anything "
            "(unable to create lock in backend: repository is already locked exclusively by PID") in locked.stderr, locked.stderr
    assert "restic unlock" in locked.stderr, locked.stderr
    assert "step 1" not in locked.stderr, locked.stderr
    assert len(node.kubelet.seen) == asked, "a checkpoint was taken by a run that could not store it"
    assert sorted(s["id"] for s in snapshots(setup)) == snapshots_before
    assert latest_entry(s3_server, setup.bucket, node.name) == before
    # No damage: the repository checks clean and the latest entry's data restores whole.
    restic(setup, "check")
    pvc = next(i for i in before["data"]["local_data"] if i["name"] == f"{node.namespace}/data-db-0")
    restic(setup, "restore", snapshot_id(pvc["location"]), "--target", str(tmp_path / "restored"))
    assert tree_digest(tmp_path / "restored" / node.local_dir.relative_to("/")) == node.digests["local"]


def test_another_node_backing_up_into_the_shared_repository_defers_retention_not_the_backup(
        node: Node, debian_root: Path, s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    """Nodes of a cluster share one repository: another node's backup (a shared lock) holds only retention back."""
    setup = install(node, debian_root, s3_server, s3_bucket, tmp_path / "etc", keep_last=1, max_age="", lock_wait="1s")
    first = run_agent(node, setup)
    assert first.returncode == 0, first.stderr
    before = latest_entry(s3_server, setup.bucket, node.name)
    assert before is not None
    ours_before = {s["id"] for s in snapshots(setup) if s["hostname"] == node.name}
    holder = subprocess.Popen([setup.restic, "backup", "--stdin", "--stdin-filename", "other.bin", "--host", "other-node",
                               "--tag", "hcm", "--tag", f"cluster={CLUSTER}", "--tag", "node=other-node"],
                              env=setup.restic_env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("the other node's backup holds its lock", lambda: repository_locks(setup), 30)
        deferred = run_agent(node, setup)
    finally:
        assert holder.stdin is not None
        holder.stdin.write(b"the other node's data\n")
        holder.stdin.close()
        holder.wait(timeout=60)
    assert deferred.returncode == 0, deferred.stderr
    assert "backup complete" in deferred.stderr, deferred.stderr
    assert "WARNING step 4: restic retention is left to the next run: The restic repository" in deferred.stderr, deferred.stderr
    assert "is locked by another run while applying retention (forgetting" in deferred.stderr, deferred.stderr
    latest = latest_entry(s3_server, setup.bucket, node.name)
    assert latest is not None and latest["id"] > before["id"]
    ours = {s["id"] for s in snapshots(setup) if s["hostname"] == node.name}
    assert ours == ours_before | set(named_snapshots(latest)), "snapshots were forgotten without the lock"

    # Once the other node is done, the next run catches up: this node keeps what its one entry
    # (keep_last 1) names; the other node's snapshot is not this node's to forget.
    caught_up = run_agent(node, setup)
    assert caught_up.returncode == 0, caught_up.stderr
    assert "step 4: forgot" in caught_up.stderr and "left to the next run" not in caught_up.stderr, caught_up.stderr
    latest = latest_entry(s3_server, setup.bucket, node.name)
    assert latest is not None
    everything = snapshots(setup)
    assert sorted(s["id"] for s in everything if s["hostname"] == node.name) == sorted(named_snapshots(latest))
    assert [s["paths"] for s in everything if s["hostname"] == "other-node"] == [["/other.bin"]]


RESTIC_FAILING_ON_CHECKPOINTS = """#!/bin/sh
# restic, except that backing up a checkpoint archive fails as an upload would.
for arg; do
    case "$arg" in
    */checkpoints/checkpoint-*.tar) echo "Fatal: unable to save snapshot: connection reset by peer" >&2; exit 1 ;;
    esac
done
exec %s "$@"
"""


def test_a_checkpoint_that_cannot_be_uploaded_is_deleted_all_the_same(node: Node, first_run: Any, debian_root: Path, s3_server: Any,
                                                                      tmp_path: Path) -> None:
    setup, result = first_run
    assert result.returncode == 0, result.stderr
    before = latest_entry(s3_server, setup.bucket, node.name)
    wrapper = tmp_path / "restic"
    wrapper.write_text(RESTIC_FAILING_ON_CHECKPOINTS % (debian_root / "usr/bin/restic"))
    wrapper.chmod(0o755)
    failing = install(node, debian_root, s3_server, setup.bucket, tmp_path / "etc", restic_binary=str(wrapper))
    answered = len(node.kubelet.seen)
    failed = run_agent(node, failing)
    assert failed.returncode == 1, failed.stderr
    assert "restic failed while backing up %s/checkpoint-counter-0_" % node.kubelet.checkpoints_dir in failed.stderr, failed.stderr
    assert "connection reset by peer" in failed.stderr, failed.stderr
    assert [r.status for r in node.kubelet.seen[answered:]] == [200], "the kubelet did checkpoint"
    assert not list(node.kubelet.checkpoints_dir.iterdir()), "an archive of every memory page stayed on the node"
    assert latest_entry(s3_server, setup.bucket, node.name) == before


def test_a_checkpoint_the_runtime_cannot_take_fails_the_run_naming_the_container(lab: Any, node: Node, first_run: Any, s3_server: Any) -> None:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    setup, result = first_run
    assert result.returncode == 0, result.stderr
    before = latest_entry(s3_server, setup.bucket, node.name)
    core = client.CoreV1Api(lab.api(CLUSTER))
    core.create_namespaced_pod(node.namespace, _pod("crashed-0", node.namespace, node.name, [], "worker", {CHECKPOINT_ANNOTATION: "worker"}))
    container = node.kubelet.add_container(node.namespace, "crashed-0", "worker")
    try:
        wait_until("pod crashed-0 Running", lambda: _running(core, node.namespace, "crashed-0"), 90)
        container.kill_workload()  # the API still says Running; criu finds no process to dump
        failed = run_agent(node, setup)
    finally:
        node.kubelet.remove_container(node.namespace, "crashed-0", "worker")
        core.delete_namespaced_pod("crashed-0", node.namespace, grace_period_seconds=0)
    assert failed.returncode == 1, failed.stderr
    assert f"POST {node.kubelet.base_url}/checkpoint/{node.namespace}/crashed-0/worker?timeout=60 answered 500" in failed.stderr, failed.stderr
    assert f"checkpointing of {node.namespace}/crashed-0/worker failed (criu dump exited" in failed.stderr, failed.stderr
    assert "read the kubelet's and the container runtime's logs" in failed.stderr, failed.stderr
    assert not list(node.kubelet.checkpoints_dir.iterdir())
    assert latest_entry(s3_server, setup.bucket, node.name) == before


# -- retention follows the catalog ----------------------------------------------------------


def test_restic_keeps_exactly_what_the_remaining_catalog_entries_name_and_each_of_them_restores(
        node: Node, debian_root: Path, s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    """keep_last 2, with failed runs between complete ones, and other snapshots in the shared repository.

    Failed runs store snapshots no entry names; while they fail, the latest entry must stay
    whole (retention used to run before the backup, by restic's own per-tag rules, and could
    forget what latest named). After the complete runs, restic holds exactly what the two
    remaining entries name, each restores its own run's bytes, and nobody else's snapshot went.
    """
    journal = tmp_path / "journal"  # an extra path whose content changes on every run
    setup = install(node, debian_root, s3_server, s3_bucket, tmp_path / "etc", keep_last=2, max_age="", extra_paths=(str(journal),))
    wrapper = tmp_path / "restic"
    wrapper.write_text(RESTIC_FAILING_ON_CHECKPOINTS % (debian_root / "usr/bin/restic"))
    wrapper.chmod(0o755)
    failing = install(node, debian_root, s3_server, s3_bucket, tmp_path / "etc-failing", keep_last=2, max_age="",
                      restic_binary=str(wrapper), extra_paths=(str(journal),))
    contents: dict[str, dict[str, str]] = {}  # entry id -> the journal as that run saw it

    def backup(run: int, config: Setup) -> subprocess.CompletedProcess[str]:
        journal.mkdir(exist_ok=True)
        (journal / "run.txt").write_text(f"run {run}\n")
        done = run_agent(node, config)
        entry = latest_entry(s3_server, s3_bucket, node.name)
        if done.returncode == 0 and entry is not None:
            contents[entry["id"]] = tree_digest(journal)
        return done

    assert backup(1, setup).returncode == 0
    first = latest_entry(s3_server, s3_bucket, node.name)
    assert first is not None
    # Snapshots that are not this node's hcm backups: another node's, and one a person took on this host.
    restic(setup, "backup", "--host", "other-node", "--tag", "hcm", "--tag", f"cluster={CLUSTER}", "--tag", "node=other-node", str(node.host_dir))
    restic(setup, "backup", "--host", node.name, "--tag", "by-hand", str(node.host_dir))
    foreign = {s["id"] for s in snapshots(setup) if s["hostname"] != node.name or "hcm" not in (s.get("tags") or [])}
    assert len(foreign) == 2

    for run in (2, 3, 4):
        failed = backup(run, failing)
        assert failed.returncode == 1 and "connection reset by peer" in failed.stderr, failed.stderr
    # Three runs stored local data and failed: latest still names the first run's snapshots, whole.
    assert latest_entry(s3_server, s3_bucket, node.name) == first
    assert set(named_snapshots(first)) <= {s["id"] for s in snapshots(setup)}
    assert_restores(node, setup, first, journal, contents[first["id"]], tmp_path / "restore-first")

    for run in (5, 6, 7):
        done = backup(run, setup)
        assert done.returncode == 0, done.stderr
    latest = latest_entry(s3_server, s3_bucket, node.name)
    assert latest is not None
    kept = [k.rsplit("/", 1)[1][: -len(".json")] for k in entries_listed(s3_server, s3_bucket, node.name) if "/entries/" in k]
    assert len(kept) == 2 and kept[-1] == latest["id"]
    entries = [json.loads(s3_server.client().get_object(Bucket=s3_bucket, Key=f"catalog/{CLUSTER}/{node.name}/entries/{entry_id}.json")["Body"].read())
               for entry_id in kept]
    named = {snap for entry in entries for snap in named_snapshots(entry)}
    now = snapshots(setup)
    assert {s["id"] for s in now if s["id"] not in foreign} == named, "restic must hold exactly what the two entries name"
    assert foreign <= {s["id"] for s in now}, "another node's or a person's snapshot was forgotten"
    assert "step 4: forgot" in done.stderr, done.stderr
    restic(setup, "check")
    for entry in entries:
        assert_restores(node, setup, entry, journal, contents[entry["id"]], tmp_path / f"restore-{entry['id']}")


def assert_restores(node: Node, setup: Setup, entry: dict[str, Any], journal: Path, journal_digest: dict[str, str], target: Path) -> None:
    """Every item of the entry comes back from restic: each directory byte for byte as that run saw it, the checkpoint archive whole."""
    expected = {str(node.local_dir): node.digests["local"], str(node.host_dir): node.digests["host"], str(journal): journal_digest}
    items = {item["details"]["path"]: item for item in entry["data"]["local_data"]}
    assert set(expected) <= set(items), sorted(items)
    for path, digest in expected.items():
        restic(setup, "restore", snapshot_id(items[path]["location"]), "--target", str(target))
        assert tree_digest(target / path.lstrip("/")) == digest, items[path]["name"]
    [checkpoint] = entry["data"]["workload_state"]
    archive = node.kubelet.checkpoints_dir / checkpoint["details"]["archive"]
    dumped = subprocess.run([setup.restic, "dump", snapshot_id(checkpoint["location"]), str(archive)], env=setup.restic_env,
                            capture_output=True, timeout=300, check=True).stdout
    assert len(dumped) == checkpoint["size"] and tarfile.is_tarfile(io.BytesIO(dumped)), checkpoint


# -- which CA verifies the kubelet ------------------------------------------------------------


def test_left_empty_the_kubelet_ca_follows_what_the_kubelet_serves(
        node: Node, debian_root: Path, s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    """kubeadm's default kubelet serves a self-signed certificate, kept with its CA in kubelet.crt;
    with serverTLSBootstrap it serves one the cluster CA signed (kubelet-server-current.pem)."""
    pki = tmp_path / "var/lib/kubelet/pki"
    pki.mkdir(parents=True)
    # The stand-in serves a certificate from its own CA: here that is the kubelet's self-signed chain.
    (pki / "kubelet.crt").write_bytes(node.kubelet.serving.cert_pem() + node.kubelet.ca.cert.read_bytes())
    (pki / "kubelet.key").write_bytes(node.kubelet.serving.key_pem())
    (pki / "kubelet.key").chmod(0o600)
    setup = install(node, debian_root, s3_server, s3_bucket, tmp_path / "etc", kubelet_ca_file="", kubelet_pki_dir=pki)
    assert setup.settings["kubelet"]["ca_file"] == "" and setup.settings["kubelet"]["pki_dir"] == str(pki)
    asked = len(node.kubelet.seen)
    done = run_agent(node, setup)
    assert done.returncode == 0, done.stderr
    assert f"the kubelet's certificate is verified with {pki / 'kubelet.crt'}" in done.stderr, done.stderr
    assert [r.status for r in node.kubelet.seen[asked:]] == [200]
    before = latest_entry(s3_server, s3_bucket, node.name)
    assert before is not None and len(before["data"]["workload_state"]) == 1

    # The kubelet now has a certificate the cluster signed (serverTLSBootstrap): the agent takes the
    # cluster CA, which does not verify what this kubelet serves, and says which setting to change.
    (pki / "kubelet-server-current.pem").write_bytes(node.api_client.cert.read_bytes() + node.api_client.key.read_bytes())
    failed = run_agent(node, setup)
    assert failed.returncode == 1, failed.stderr
    assert (f"The TLS certificate of {node.kubelet.base_url} did not verify against {node.api_ca} (the kubelet's CA, the cluster CA, "
            f"chosen because {pki / 'kubelet-server-current.pem'} exists") in failed.stderr, failed.stderr
    fix = failed.stderr.split("Fix: ", 1)[1]
    assert f"set node_backup_kubelet_ca_file to {pki / 'kubelet.crt'} when the kubelet serves the self-signed certificate" in fix, fix
    assert f"or to the cluster CA {node.api_ca} when the cluster signs its serving certificate (serverTLSBootstrap: true" in fix, fix
    assert "Traceback" not in failed.stderr
    assert len(node.kubelet.seen) == asked + 1, "the kubelet must not have been asked for a checkpoint over an unverified connection"
    assert latest_entry(s3_server, s3_bucket, node.name) == before


# -- the storage dying while restic uploads --------------------------------------------------


def test_storage_dying_while_restic_uploads_fails_the_run_within_the_retry_limit(node: Node, debian_root: Path, private_s3_server: Any,
                                                                                 tmp_path: Path) -> None:
    """restic alone would retry for 15 minutes; node_backup_restic_retry_limit (here 5 s) bounds it."""
    server = private_s3_server()
    bucket = server.create_bucket("node-backup-upload-outage")
    with FaultProxy(server.endpoint_url) as proxy:
        setup = install(node, debian_root, server, bucket, tmp_path / "etc", endpoint_url=proxy.endpoint_url, retry_limit="5s")
        first = run_agent(node, setup)
        assert first.returncode == 0, first.stderr
        before = latest_entry(server, bucket, node.name)
        assert before is not None
        # New data, so restic has a pack to upload; the storage dies as that upload starts.
        random_tree(tmp_path / "fresh", {"blob.bin": 2 * 1024 * 1024})
        fresh = install(node, debian_root, server, bucket, tmp_path / "etc-fresh", endpoint_url=proxy.endpoint_url, retry_limit="5s",
                        extra_paths=(str(tmp_path / "fresh"),))
        proxy.add_rule(lambda method, path, headers: method == "PUT" and f"/{bucket}/restic/{CLUSTER}/data/" in path, server.stop)
        asked = len(node.kubelet.seen)
        started = time.monotonic()
        dead = run_agent(node, fresh)
        took = time.monotonic() - started
        assert [r for r in proxy.seen if r.faulted], "the outage never struck"
        assert dead.returncode == 1, dead.stderr
        assert took < 60, f"the run took {took:.0f} s"
        assert "backup FAILED: restic gave up on the storage while backing up" in dead.stderr, dead.stderr
        assert "returned error, retrying after" in dead.stderr and "node_backup_restic_retry_limit" in dead.stderr, dead.stderr
        assert "step 3" not in dead.stderr and len(node.kubelet.seen) == asked, dead.stderr
        server.start()
        assert latest_entry(server, bucket, node.name) == before
