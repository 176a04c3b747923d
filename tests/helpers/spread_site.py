"""A site whose workloads the scheduler spread over several workers, one of which dies: for the share tests.

On the lab's ``onprem`` cluster (W1, W2, W3 its kwok nodes, 8 CPUs allocatable each; W1 dies),
namespace ``spread-shop``, placed by the real kube-scheduler, not pinned by hand:

- Deployment ``web``: 4 replicas of 3 CPUs each, allowed on W1 and W2 only, spread by hostname
  (maxSkew 1, DoNotSchedule): 2 run on W1, 2 on W2, and no node has room for a third. With its
  Service, ConfigMap and Secret (envFrom), an HPA (2..8, CPU utilization) and a PDB (minAvailable 1).
- StatefulSet ``db``: 2 replicas (Parallel), 500m each, claims of StorageClass ``local-storage``
  bound to two local PVs: ``spread-shop-db-0`` on W1 (a directory of this host holding a few
  files, one of 2 MiB random bytes: what the node backup agent snapshots) and
  ``spread-shop-db-1`` on W2. So db-0 runs on W1 and db-1 on W2.
- Deployment ``cache``: 1 replica of 1 CPU pinned to W2 (a workload of a live node, which stays).
  It is what makes W1 the only node of the two with room for the report: W1 keeps 1.5 CPUs free,
  W2 0.5.
- CronJob ``report`` (03:00, never due during a test) whose pods need 1 CPU on W1 or W2, and the
  Job ``report-manual`` made from it as ``kubectl create job --from=cronjob/report`` makes it
  (owned by the CronJob), created once web and db run: the scheduler puts its pod on W1. Its pod
  asks kwok (annotation ``pod-complete.stage.kwok.x-k8s.io/delay``) to run an hour before completing.
- Pod ``debug``, bound to W1 by nodeName, no requests.

Backed up as tests/helpers/migration_site.py backs its site up (Velero and velero_catalog; the
node backup agent on W1, checkpoints off; the cloud's worker image recorded), then W1 fails.
Everything is put back on exit, the shared lab as it was found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.hclab.client import Lab
from lab.hclab.debian_root import make_instance
from lab.hclab.services import MotoServer, S3Server
from lab.hclab.velero_server import VeleroServer
from tests.helpers.ansible_run import run_module
from tests.helpers.migration_site import Site, free_node, migration_inventory, node_agent_backup, record_worker_image, velero_backup
from tests.helpers.velero import ignore_missing, remove_namespace, remove_velero
from tests.helpers.wait import wait_until

# kwok completes a Job's pod at once; this annotation of its pod-complete stage keeps it running.
KWOK_KEEP_RUNNING = "pod-complete.stage.kwok.x-k8s.io/delay"
NS = "spread-shop"
HOSTNAME = "kubernetes.io/hostname"
STORAGE_CLASS = "local-storage"
WEB_CPU, DB_CPU, CACHE_CPU, REPORT_CPU = "3", "500m", "1", "1"


@dataclasses.dataclass
class SpreadSite(Site):
    """``failed`` is W1; ``data`` the db-0 volume's directory (W1's disk). Also W2 and the storage's parameters."""

    kept: str = ""  # W2, the live node web and db share with W1
    kept_data: Path = Path()  # the db-1 volume's directory (W2's disk)
    s3: dict[str, str] = dataclasses.field(default_factory=dict)


def on_nodes(*nodes: str) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": list(nodes)}]}]}}}


def local_pv(name: str, claim: str, path: Path, node: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
        "persistentVolumeReclaimPolicy": "Retain", "local": {"path": str(path)}, "claimRef": {"namespace": NS, "name": claim},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": [node]}]}]}}}}


def placement(core: Any) -> dict[str, tuple[str, str, str]]:
    """pod name -> (its app label, node, phase), in the namespace."""
    return {p.metadata.name: ((p.metadata.labels or {}).get("app", ""), p.spec.node_name or "", p.status.phase or "")
            for p in core.list_namespaced_pod(NS).items}


def seed(lab: Lab, w1: str, w2: str, data0: Path, data1: Path) -> None:
    """Everything but the report Job, which comes once the rest runs (see the module docstring)."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    api = lab.api("onprem")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "web-settings"}, "data": {"greeting": "hello from a spread onprem"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "web-secret"}, "stringData": {"api-key": "spread-key"}})
    core.create_namespaced_service(NS, {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    core.create_persistent_volume(local_pv(f"{NS}-db-0", "data-db-0", data0, w1))
    core.create_persistent_volume(local_pv(f"{NS}-db-1", "data-db-1", data1, w2))
    web = {"name": "web", "image": "nginx:1.27", "resources": {"requests": {"cpu": WEB_CPU}},
           "envFrom": [{"configMapRef": {"name": "web-settings"}}, {"secretRef": {"name": "web-secret"}}]}
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "web"}, "spec": {
        "replicas": 4, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "affinity": on_nodes(w1, w2), "containers": [web],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "DoNotSchedule",
                                           "labelSelector": {"matchLabels": {"app": "web"}}}]}}}})
    client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, {"metadata": {"name": "web"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 8,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}})
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(NS, {"metadata": {"name": "web"}, "spec": {
        "minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 2, "serviceName": "db", "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
            {"name": "db", "image": "postgres:17", "resources": {"requests": {"cpu": DB_CPU}},
             "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS, "resources": {"requests": {"storage": "1Gi"}}}}]}})
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "cache"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "cache"}},
        "template": {"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeSelector": {HOSTNAME: w2}, "containers": [
            {"name": "cache", "image": "redis:7", "resources": {"requests": {"cpu": CACHE_CPU}}}]}}}})
    client.BatchV1Api(api).create_namespaced_cron_job(NS, {"metadata": {"name": "report"}, "spec": {
        "schedule": "0 3 * * *", "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"metadata": {
            "labels": {"app": "report"}, "annotations": {KWOK_KEEP_RUNNING: "1h"}}, "spec": {
            "restartPolicy": "Never", "affinity": on_nodes(w1, w2),
            "containers": [{"name": "report", "image": "busybox:1.36", "command": ["sh", "-c", "echo report"],
                            "resources": {"requests": {"cpu": REPORT_CPU}}}]}}}}}})
    core.create_namespaced_pod(NS, {"metadata": {"name": "debug", "labels": {"app": "debug"}}, "spec": {
        "nodeName": w1, "containers": [{"name": "debug", "image": "busybox:1.36", "command": ["sleep", "infinity"]}]}})


def misplaced(found: dict[str, tuple[str, str, str]], w1: str, w2: str, report: bool = True) -> list[str]:
    """How ``placement()`` differs from where the scheduler must have put the pods ([] when it does not)."""
    apps: dict[str, list[tuple[str, str]]] = {}
    for app, node, phase in found.values():
        apps.setdefault(app, []).append((node, phase))
    wanted = {"web": [(w1, "Running")] * 2 + [(w2, "Running")] * 2, "cache": [(w2, "Running")], "debug": [(w1, "Running")]}
    wrong = [f"{app}: {sorted(apps.get(app, []))} (expected {where})" for app, where in wanted.items() if sorted(apps.get(app, [])) != where]
    for pod, node in (("db-0", w1), ("db-1", w2)):
        if found.get(pod, ("",))[1:] != (node, "Running"):
            wrong.append(f"{pod}: {found.get(pod, ('', 'absent'))[1:]} (expected Running on {node})")
    jobs = apps.get("report", [])  # running for the hour its kwok annotation asks, on W1
    if report and jobs != [(w1, "Running")]:
        wrong.append(f"report-manual: {jobs} (expected one pod Running on {w1})")
    return wrong


def wait_placed(core: Any, w1: str, w2: str, report: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while wrong := misplaced(placement(core), w1, w2, report):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler did not place the spread shop as the site needs, after {timeout:.0f}s: " + "; ".join(wrong))
        time.sleep(1)


def start_report(lab: Lab) -> None:
    """``kubectl create job report-manual --from=cronjob/report``: the CronJob's jobTemplate, owned by it."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    batch = client.BatchV1Api(lab.api("onprem"))
    cron = batch.read_namespaced_cron_job("report", NS)
    template = lab.api("onprem").sanitize_for_serialization(cron.spec.job_template)
    batch.create_namespaced_job(NS, {"metadata": {
        "name": "report-manual", "labels": template.get("metadata", {}).get("labels", {}),
        "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cron.metadata.uid,
                             "controller": True, "blockOwnerDeletion": True}]}, "spec": template["spec"]})


def check_backups(s3: dict[str, str], bucket: str, w1: str) -> None:
    """The catalog holds W1's entry with the db-0 volume, and the Velero backup."""
    node = run_module("backup_catalog_info", {**s3, "bucket": bucket, "cluster": "onprem", "node": w1})
    local = list(((node.get("latest") or {}).get("data") or {}).get("local_data") or [])
    if node.get("failed") or [item["details"].get("pv") for item in local] != [f"{NS}-db-0"]:
        raise RuntimeError(f"the catalog entry of {w1} is not what the agent should have written: {node.get('msg') or local}")
    velero = run_module("backup_catalog_info", {**s3, "bucket": bucket, "cluster": "onprem", "node": "_velero"})
    if velero.get("failed") or not ((velero.get("latest") or {}).get("data") or {}).get("resources"):
        raise RuntimeError(f"no Velero backup recorded: {velero.get('msg') or velero.get('latest')}")


@contextlib.contextmanager
def spread_site(lab: Lab, s3_server: S3Server, moto_server: MotoServer, velero_server: VeleroServer, workdir: Path,
                new_node: str, say: Any = lambda text: None) -> Iterator[SpreadSite]:
    """The spread site backed up, W1 dead; everything put back on exit (W1 restored and freed, namespaces, PVs, class, Velero)."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    w1, w2 = lab.nodes("onprem")[:2]
    bucket = s3_server.create_bucket(f"spread-{uuid.uuid4().hex[:8]}")
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    new_root = make_instance(workdir / "new-node", ("python3", "restic"))
    data0, data1 = workdir / f"disk-{w1}/db-0", workdir / f"disk-{w2}/db-1"
    for data, version in ((data0, "17\n"), (data1, "17\n")):
        data.mkdir(parents=True)
        (data / "PG_VERSION").write_text(version)
    (data0 / "base.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (data0 / "postgresql.conf").write_text("max_connections = 50\n")
    (data0 / "pg_wal").mkdir()
    (data0 / "pg_wal/000000010000000000000001").write_bytes(os.urandom(64 * 1024))
    classes = {cluster: client.StorageV1Api(lab.api(cluster)) for cluster in ("onprem", "cloud")}
    had_class = {cluster: STORAGE_CLASS in [c.metadata.name for c in api.list_storage_class().items] for cluster, api in classes.items()}
    node_failed = False
    try:
        if not had_class["onprem"]:
            classes["onprem"].create_storage_class({"metadata": {"name": STORAGE_CLASS}, "provisioner": "kubernetes.io/no-provisioner",
                                                    "volumeBindingMode": "WaitForFirstConsumer"})
        say(f"onprem: the spread shop: web 2+2 on {w1} and {w2}, db-0 on {w1}, db-1 on {w2}, the scheduler places them")
        seed(lab, w1, w2, data0, data1)
        core = client.CoreV1Api(lab.api("onprem"))
        wait_placed(core, w1, w2, report=False, timeout=120)
        start_report(lab)  # now W1 is the only node of the two with room for it
        wait_placed(core, w1, w2, report=True, timeout=60)
        say("onprem: Velero (the role, a backup of its schedule, recorded), the node backup agent on W1, the worker image")
        velero_backup(lab, velero_server, s3, bucket, f"spread-{bucket[-8:]}")
        with node_agent_backup(lab, s3_server, bucket, str(new_root / "usr/bin/restic"), w1, workdir / "node-agent", namespace=NS, checkpoint_app=None):
            pass
        record_worker_image(moto_server, s3, bucket)
        check_backups(s3, bucket, w1)
        say(f"onprem: {w1} fails (its kubelet stops answering)")
        lab.fail_node("onprem", w1, wait=True)
        node_failed = True
        inventory = workdir / "inventory.json"
        inventory.write_text(json.dumps(migration_inventory(lab, s3_server, moto_server, bucket, new_node, new_root)))
        yield SpreadSite(w1, new_node, bucket, inventory, new_root, data0, workdir, kept=w2, kept_data=data1, s3={**s3, "bucket": bucket})
    finally:
        velero_server.stop()
        if node_failed:  # a test may have brought it back already (migrate_back)
            restored = lab.run("restore-node", "onprem", w1, "--wait", check=False)
            if restored.returncode != 0 and "nothing to restore" not in restored.stderr:
                raise RuntimeError(f"restoring {w1} failed: {restored.stdout}{restored.stderr}")
        free_node(lab, w1)
        for cluster in ("onprem", "cloud"):
            remove_namespace(lab, NS, cluster)
            for pv in (f"{NS}-db-0", f"{NS}-db-1"):
                ignore_missing(lambda cluster=cluster, pv=pv: client.CoreV1Api(lab.api(cluster)).delete_persistent_volume(pv))
        # Namespaces and released PVs go away asynchronously; the next site must not meet them.
        for cluster in ("onprem", "cloud"):
            core_api = client.CoreV1Api(lab.api(cluster))
            wait_until(f"namespace {NS} to be deleted in {cluster}", lambda core_api=core_api: NS not in [
                ns.metadata.name for ns in core_api.list_namespace().items], 120, interval=1)
            wait_until(f"the PVs of {NS} to be deleted in {cluster}", lambda core_api=core_api: not [
                pv.metadata.name for pv in core_api.list_persistent_volume().items if pv.metadata.name.startswith(f"{NS}-")], 60, interval=1)
        for cluster, api in classes.items():  # made here, or carried to the cloud by the migration
            if not had_class[cluster]:
                ignore_missing(lambda api=api: api.delete_storage_class(STORAGE_CLASS))
        remove_velero(lab, "onprem")
