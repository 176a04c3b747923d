"""A site whose worker dies, ready for playbooks/migrate.yml: used by its tests and benchmarks/bench_demo.py.

On the lab's ``onprem`` cluster: a web Deployment with its Service, ConfigMap and Secret, a
StatefulSet whose local PV lives on the worker that will fail, and a counter Deployment that
opts in to checkpoints. Backed up with the real pieces: the velero role and a real Velero server
(a backup of its schedule, recorded by velero_catalog), the node backup agent (the role's agent
and settings template, run as its timer runs it: restic snapshot of the local volume, criu
checkpoint of the counter through the kubelet stand-in of tests/helpers/kubelet_standin.py), and
the worker image of the ``cloud`` cluster recorded in its catalog (moto's AMI).
Then the worker fails. The inventory written for migrate.yml targets ``cloud`` through moto's
EC2 API; the new VM joins by itself (the lab's cloud watcher stands a node up behind the
instance) and its disk is a Debian 13 root reached with the chroot connection. (``make demo``
runs the same story on real nodes, from demo/.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import build_bundle
from lab.hclab.client import Lab
from lab.hclab.debian_root import ensure_debian_root, make_instance
from lab.hclab.services import MotoServer, S3Server
from lab.hclab.velero_server import VeleroServer
from tests.helpers import node_agent
from tests.helpers.ansible_run import REPO, run_module, run_playbook
from tests.helpers.kubelet_standin import COUNTER_LOG, KubeletStandin
from tests.helpers.velero import remove_namespace, remove_velero
from tests.helpers.wait import wait_until

NS = "demo-shop"
CHECKPOINT_ANNOTATION = "backup.hybridcloud.io/checkpoint"
RESTIC_PASSWORD = "demo-restic-password-never-logged"
TARGET_SITE = "lab-cloud"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
MIGRATION_ANNOTATIONS = "migration.hybridcloud.io/"


@dataclasses.dataclass
class Site:
    failed: str
    new_node: str
    bucket: str
    inventory: Path
    new_root: Path
    data: Path
    workdir: Path


def seed(lab: Lab, failed: str, data_path: str) -> None:
    """On ``failed``: a web Deployment with Service, ConfigMap and Secret; a StatefulSet with a local PV."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    api = lab.api("onprem")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "web-settings"}, "data": {"greeting": "hello from onprem"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "web-secret"}, "stringData": {"api-key": "demo-key"}})
    core.create_namespaced_service(NS, {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    core.create_persistent_volume({"metadata": {"name": f"{NS}-db"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
        "persistentVolumeReclaimPolicy": "Retain", "local": {"path": data_path}, "claimRef": {"namespace": NS, "name": "data-db-0"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [failed]}]}]}}}})
    web = {"name": "web", "image": "nginx:1.27", "envFrom": [{"configMapRef": {"name": "web-settings"}}, {"secretRef": {"name": "web-secret"}}]}
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": failed}, "containers": [web]}}}})
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
            {"name": "db", "image": "postgres:17", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "resources": {"requests": {"storage": "1Gi"}}}}]}})
    # In-memory state worth keeping: its count lives only in a shell variable (the kubelet stand-in runs it).
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "counter"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "counter"}},
        "template": {"metadata": {"labels": {"app": "counter"}, "annotations": {CHECKPOINT_ANNOTATION: "true"}}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": failed}, "containers": [{"name": "counter", "image": "registry.example/hcm/counter:1.0"}]}}}})
    wait_until("the demo pods to run on the node that will fail", lambda: (
        len(pods := core.list_namespaced_pod(NS).items) == 4
        and all(p.spec.node_name == failed and p.status.phase == "Running" for p in pods)), 120, interval=1)


@contextlib.contextmanager
def node_agent_backup(lab: Lab, s3_server: S3Server, bucket: str, restic: str, failed: str, workdir: Path,
                      namespace: str = NS, checkpoint_app: str | None = "counter") -> Iterator[str]:
    """The node backup agent's run on ``failed``, as its timer runs it: the local PVs and, optionally, a checkpoint.

    With ``checkpoint_app`` (the demo's counter), the kubelet's checkpoint API is
    tests/helpers/kubelet_standin.py (a real criu dump of that app's pod of ``namespace`` in the
    Debian 13 root); it stays up, the counter counting, until the context ends. With None the
    agent is set up as the role sets it up with checkpoints turned off: no kubelet is asked.
    Yields the agent's log.
    """
    api_client, remove_identity = node_agent.grant_identity(lab, "onprem", failed, workdir, uuid.uuid4().hex[:6])
    kubelet: Any = None
    try:
        if checkpoint_app is None:
            # The template leaves the kubelet out when checkpoints are off: these are never read.
            kubelet, kubelet_client = types.SimpleNamespace(base_url="", ca_file=""), types.SimpleNamespace(cert="", key="")
        else:
            from kubernetes import client  # pylint: disable=import-outside-toplevel

            pod = client.CoreV1Api(lab.api("onprem")).list_namespaced_pod(namespace, label_selector=f"app={checkpoint_app}").items[0].metadata.name
            kubelet = KubeletStandin(ensure_debian_root(), workdir / "kubelet", node_name=failed)
            kubelet.start()
            counter = kubelet.add_container(namespace, pod, checkpoint_app)
            wait_until("the counter to count", lambda: len(counter.read_file(COUNTER_LOG).split()) >= 3, 30)
            kubelet_client = kubelet.issue_client("node-backup", f"hcm-node-backup:{failed}")
        setup = node_agent.install(cluster="onprem", node_name=failed, api_server=lab.server("onprem"), api_ca=lab.ca_cert("onprem"),
                                   api_client=api_client, kubelet=kubelet, kubelet_client=kubelet_client, restic=restic, server=s3_server,
                                   bucket=bucket, where=workdir / "etc", password=RESTIC_PASSWORD, checkpoints=checkpoint_app is not None)
        ran = node_agent.run_agent(build_bundle(node_agent.AGENT, workdir / "bundle"), setup)
        if ran.returncode != 0:
            raise RuntimeError("the node backup agent failed:\n" + ran.stderr[-3000:])
        yield ran.stderr
    finally:
        remove_identity()
        if isinstance(kubelet, KubeletStandin):
            kubelet.stop()


def site_vars(lab: Lab, s3_server: S3Server, bucket: str, restic_password: str) -> dict[str, Any]:
    """The inventory's ``all`` vars of a migration from onprem: the catalog's storage, the source cluster."""
    return {"hcm_cluster_name": "onprem", "hcm_s3_endpoint_url": s3_server.endpoint_url, "hcm_s3_region": s3_server.region,
            "hcm_s3_bucket": bucket, "hcm_s3_access_key": s3_server.access_key, "hcm_s3_secret_key": s3_server.secret_key,
            "hcm_restic_password": restic_password, "hcm_backup_max_age": "1d", "hcm_source_kubeconfig": str(lab.kubeconfig("onprem"))}


def target_site_vars(lab: Lab, moto_server: MotoServer) -> dict[str, Any]:
    """The target site host's vars: the cloud cluster, reached through moto's EC2 API."""
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "hcm_target_cloud": "aws", "hcm_target_region": moto_server.region, "hcm_target_cluster_name": "cloud",
            "hcm_target_kubeconfig": str(lab.kubeconfig("cloud")), "provision_node_aws_endpoint_url": moto_server.endpoint_url,
            "provision_node_aws_access_key": "testing", "provision_node_aws_secret_key": "testing", "provision_node_aws_instance_type": "t3.large"}


def migration_inventory(lab: Lab, s3_server: S3Server, moto_server: MotoServer, bucket: str, new_node: str, new_root: Path) -> dict[str, Any]:
    """migrate.yml's inventory: the site's vars, the target site through moto (the VM joins by itself), the new node's disk."""
    return {"all": {
        "vars": site_vars(lab, s3_server, bucket, RESTIC_PASSWORD),
        "children": {
            "target_cloud": {"hosts": {TARGET_SITE: {
                **target_site_vars(lab, moto_server), "hcm_join_method": "external",
                # Lab timing: the lab's scheduler answers in well under a second, and nothing adds capacity.
                "hcm_reschedule_grace": "5s",
                "provision_node_address": "inventory", "provision_node_ssh_wait": False}}},
            # How the controller reaches the new VM's disk here (see the module docstring).
            "hcm_new_nodes": {"hosts": {new_node: {
                "ansible_connection": "community.general.chroot", "ansible_host": str(new_root),
                "ansible_python_interpreter": "/usr/bin/python3", "restore_data_install_packages": False}}},
        }}}


def return_node_inventory(site: Site) -> Path:
    """migrate.yml's inventory plus the return node (the failed one), reached locally: migrate_back.yml's inventory."""
    document = json.loads(site.inventory.read_text())
    document["all"]["children"]["hcm_return_nodes"] = {"hosts": {site.failed: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False,
        "restore_data_install_packages": False, "restore_data_restic_binary": str(site.new_root / "usr/bin/restic"),
        "restore_data_state_dir": str(site.workdir / "return-node/restored"), "restore_data_config_dir": str(site.workdir / "return-node/etc")}}}
    path = site.workdir / "inventory-back.json"
    path.write_text(json.dumps(document))
    return path


def free_node(lab: Lab, node: str) -> None:
    """What a migration leaves on a node of the source: the out-of-service taint, its annotations, the cordon."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    core = client.CoreV1Api(lab.api("onprem"))
    for attempt in range(10):
        found = core.read_node(node)
        annotations = found.metadata.annotations or {}
        taints = [t for t in found.spec.taints or [] if t.key != OUT_OF_SERVICE]
        if len(taints) == len(found.spec.taints or []) and not found.spec.unschedulable and not [
                key for key in annotations if key.startswith(MIGRATION_ANNOTATIONS)]:
            return
        found.spec.taints = taints or None
        found.spec.unschedulable = None
        found.metadata.annotations = {key: value for key, value in annotations.items() if not key.startswith(MIGRATION_ANNOTATIONS)}
        try:
            core.replace_node(node, found)  # guarded by the resourceVersion read: the node controllers write taints too
            return
        except client.exceptions.ApiException as error:
            if error.status != 409 or attempt == 9:
                raise
            time.sleep(0.5)


def velero_backup(lab: Lab, velero_server: VeleroServer, s3: dict[str, str], bucket: str, name: str) -> None:
    """Velero on onprem (the velero role, then the server), a backup of its schedule, recorded by velero_catalog."""
    velero_server.start_in_background()
    installed = run_playbook(REPO / "tests/integration/playbooks/velero.yml", extra_vars={
        "velero_kubeconfig": str(lab.kubeconfig("onprem")), "velero_deploy_server": False, "velero_s3_bucket": bucket,
        "velero_s3_endpoint_url": s3["endpoint_url"], "velero_s3_region": s3["region"], "velero_s3_access_key": s3["access_key"],
        "velero_s3_secret_key": s3["secret_key"], "velero_schedules": [{"name": "resources"}]})
    if installed.returncode != 0:
        raise RuntimeError(installed.output[-3000:])
    velero_server.join_start()
    velero_server.cli("backup", "create", name, "--from-schedule", "resources", "--wait")
    if run_module("velero_catalog", {**s3, "bucket": bucket, "cluster": "onprem"}).get("failed"):
        raise RuntimeError("velero_catalog failed")


def record_worker_image(moto_server: MotoServer, s3: dict[str, str], bucket: str) -> None:
    """moto's first AMI, recorded as the worker image of the cluster ``cloud`` (what build_image.yml records)."""
    image = moto_server.client("ec2").describe_images()["Images"][0]["ImageId"]
    if run_module("backup_catalog", {**s3, "bucket": bucket, "cluster": "cloud", "node": "_images", "data": {"image": [{
            "name": f"aws/{moto_server.region}/v1.37.2", "location": f"aws://{moto_server.region}/{image}", "size": 0,
            "details": {"cloud": "aws", "region": moto_server.region, "image_id": image, "kubernetes_version": "v1.37.2"}}]}}).get("failed"):
        raise RuntimeError("recording the worker image failed")


@contextlib.contextmanager
def failed_site(lab: Lab, s3_server: S3Server, moto_server: MotoServer, velero_server: VeleroServer, workdir: Path,
                new_node: str, say: Any = lambda text: None) -> Iterator[Site]:
    """The site backed up, its first onprem worker dead; everything put back on exit."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    failed = lab.nodes("onprem")[0]
    bucket = s3_server.create_bucket(f"site-{uuid.uuid4().hex[:8]}")
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    new_root = make_instance(workdir / "new-node", ("python3", "restic"))
    data = workdir / "old-node-disk/db"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("17\n")
    (data / "base.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    node_failed = False
    try:
        say(f"onprem: deploying the demo shop on {failed}")
        seed(lab, failed, str(data))
        say("onprem: installing Velero with the velero role, then a backup of its schedule, recorded in the catalog")
        velero_backup(lab, velero_server, s3, bucket, f"before-failure-{bucket[-8:]}")
        say(f"onprem: the node backup agent on {failed}: a restic snapshot of its local volume and a checkpoint of the counter")
        with node_agent_backup(lab, s3_server, bucket, str(new_root / "usr/bin/restic"), failed, workdir / "node-agent"):
            pass  # the counter (its memory) dies with the node
        record_worker_image(moto_server, s3, bucket)
        say(f"onprem: {failed} fails (its kubelet stops answering)")
        lab.fail_node("onprem", failed, wait=True)
        node_failed = True
        inventory = workdir / "inventory.json"
        inventory.write_text(json.dumps(migration_inventory(lab, s3_server, moto_server, bucket, new_node, new_root)))
        yield Site(failed, new_node, bucket, inventory, new_root, data, workdir)
    finally:
        velero_server.stop()
        if node_failed:  # a test may have brought it back already (migrate_back)
            restored = lab.run("restore-node", "onprem", failed, "--wait", check=False)
            if restored.returncode != 0 and "nothing to restore" not in restored.stderr:
                raise RuntimeError(f"restoring {failed} failed: {restored.stdout}{restored.stderr}")
        # migrate.yml marked the node out of service and fenced the source (its workloads go with the namespace below).
        free_node(lab, failed)
        for cluster in ("onprem", "cloud"):
            remove_namespace(lab, NS, cluster)
            try:
                client.CoreV1Api(lab.api(cluster)).delete_persistent_volume(f"{NS}-db")
            except client.exceptions.ApiException:
                pass
        # Namespaces go away asynchronously; the next site must not meet this one Terminating.
        for cluster in ("onprem", "cloud"):
            wait_until(f"namespace {NS} to be deleted in {cluster}", lambda cluster=cluster: NS not in [
                ns.metadata.name for ns in client.CoreV1Api(lab.api(cluster)).list_namespace().items], 120, interval=1)
        remove_velero(lab, "onprem")
