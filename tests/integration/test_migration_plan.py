"""The module migration_plan against what the backups really hold: a real Velero backup of the lab's
onprem cluster (recorded by velero_catalog) and the failed node's catalog entry, read from the S3 server.

A StatefulSet with a local PV pinned to one node, and a Deployment pinned there by nodeSelector,
are what the failed node ran; a Deployment on another node must stay.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.helpers.ansible_run import REPO, ModuleResult, run_module, run_playbook
from tests.helpers.velero import remove_namespace, remove_velero
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

NS = "plan-shop"


def pod_nodes(core: Any) -> dict[str, str]:
    return {p.metadata.name: p.spec.node_name or "" for p in core.list_namespaced_pod(NS).items}


def seed(lab: Any, failed: str, other: str) -> None:
    """What ran on ``failed`` (and one Deployment on ``other``)."""
    api = lab.api("onprem")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "web-settings"}, "data": {"color": "blue"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "web-secret"}, "stringData": {"token": "not-real"}})
    core.create_namespaced_service(NS, {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    core.create_persistent_volume({
        "metadata": {"name": f"{NS}-db-data"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
                 "persistentVolumeReclaimPolicy": "Retain", "local": {"path": "/mnt/disks/db"},
                 "claimRef": {"namespace": NS, "name": "data-db-0"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [failed]}]}]}}},
    })

    def workload(name: str, node: str, **spec: Any) -> dict[str, Any]:
        labels = {"app": name}
        container = {"name": name, "image": "registry.onprem.example.net/shop/%s:1.0" % name,
                     "envFrom": [{"configMapRef": {"name": "web-settings"}}, {"secretRef": {"name": "web-secret"}}]}
        return {"metadata": {"name": name, "labels": labels}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [container]}},
            **spec}}

    apps.create_namespaced_deployment(NS, workload("web", failed))
    apps.create_namespaced_deployment(NS, workload("elsewhere", other))
    db = workload("db", failed, serviceName="db", volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "resources": {"requests": {"storage": "1Gi"}}}}])
    db["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/var/lib/db"}]
    apps.create_namespaced_stateful_set(NS, db)
    wait_until("every pod of plan-shop to run on its node", lambda: (
        sorted(pod_nodes(core).values()) == sorted([failed, failed, other])
        and all(p.status.phase == "Running" for p in core.list_namespaced_pod(NS).items)), 120, interval=1)


@pytest.fixture(scope="module")
def backed_up(lab, s3_server, velero_server):
    """Velero installed by the role, one backup of the `resources` schedule, recorded; the node's entry written."""
    failed, other = lab.nodes("onprem")[:2]
    bucket = s3_server.create_bucket(f"plan-{uuid.uuid4().hex[:8]}")
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
          "access_key": s3_server.access_key, "secret_key": s3_server.secret_key, "bucket": bucket}
    try:
        seed(lab, failed, other)
        velero_server.start_in_background()
        installed = run_playbook(REPO / "tests/integration/playbooks/velero.yml", extra_vars={
            "velero_kubeconfig": str(lab.kubeconfig("onprem")), "velero_deploy_server": False, "velero_s3_bucket": bucket,
            "velero_s3_endpoint_url": s3_server.endpoint_url, "velero_s3_region": s3_server.region,
            "velero_s3_access_key": s3_server.access_key, "velero_s3_secret_key": s3_server.secret_key,
            "velero_schedules": [{"name": "resources", "include_cluster_resources": True}]})
        assert installed.returncode == 0, installed.output[-3000:]
        velero_server.join_start()
        velero_server.cli("backup", "create", "plan-1", "--from-schedule", "resources", "--wait")
        recorded = run_module("velero_catalog", {**s3, "cluster": "onprem", "schedules": ["resources"]})
        assert not recorded.get("failed"), recorded.run.output
        node_entry = run_module("backup_catalog", {**s3, "cluster": "onprem", "node": failed, "data": {"local_data": [{
            "name": f"{NS}/data-db-0", "location": "restic:s3:http://s3.example/restic/onprem#4f1c2a9b", "size": 4096,
            "details": {"source": "local-pv", "path": "/mnt/disks/db", "namespace": NS, "pvc": "data-db-0", "pv": f"{NS}-db-data",
                        "snapshot_id": "4f1c2a9b"}}]}})
        assert not node_entry.get("failed"), node_entry.run.output
        yield {"s3": s3, "failed": failed, "other": other}
    finally:
        velero_server.stop()
        remove_namespace(lab, NS)
        client.CoreV1Api(lab.api("onprem")).delete_persistent_volume(f"{NS}-db-data")
        remove_velero(lab, "onprem")


def plan(backed_up: dict[str, Any], check: bool = False, **over: Any) -> ModuleResult:
    args = {**backed_up["s3"], "cluster": "onprem", "failed_node": backed_up["failed"], "run_id": "plan-test",
            "target_node": "cloud-worker-9", "image_registry_map": {"registry.onprem.example.net/": "123.dkr.ecr.example/"}, **over}
    return run_module("migration_plan", args, check=check)


def objects(result: ModuleResult, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for s in result["plan"]["stages"] for o in s["objects"] if o["kind"] == kind}


def test_check_mode_prints_the_plan_and_saves_nothing(backed_up, s3_server):
    checked = plan(backed_up, check=True, run_id="plan-check")
    assert not checked.get("failed"), checked.get("msg")
    assert checked["summary"]["workloads"] == 2
    listing = s3_server.client().list_objects_v2(Bucket=backed_up["s3"]["bucket"], Prefix="migrations/")
    assert listing.get("KeyCount", 0) == 0


def test_plan_moves_what_ran_on_the_failed_node_rehomed_and_held_at_zero(backed_up, s3_server):
    result = plan(backed_up)
    assert not result.get("failed"), result.get("msg")
    selected = {(s["kind"], s["name"]) for s in result["plan"]["selected"]}
    assert {("Deployment", "web"), ("StatefulSet", "db")} <= selected and ("Deployment", "elsewhere") not in selected
    assert [s["name"] for s in result["plan"]["stages"]][0] == "namespaces"

    web = objects(result, "Deployment")["web"]
    assert web["spec"]["replicas"] == 0 and web["metadata"]["annotations"]["migration.hybridcloud.io/replicas"] == "1"
    assert "nodeSelector" not in web["spec"]["template"]["spec"]
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "123.dkr.ecr.example/shop/web:1.0"
    assert {"web-settings"} <= set(objects(result, "ConfigMap")) and "web-secret" in objects(result, "Secret")
    assert "clusterIP" not in objects(result, "Service")["web"]["spec"]
    pv = objects(result, "PersistentVolume")[f"{NS}-db-data"]
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["cloud-worker-9"]
    assert "uid" not in pv["spec"].get("claimRef", {}) and "status" not in pv
    [data] = result["plan"]["local_data"]
    assert data["persistent_volume"] == f"{NS}-db-data" and data["target_node"] == "cloud-worker-9"
    assert result["plan"]["backups"]["taken_at"]["resources"] and result["plan"]["backups"]["taken_at"]["local_data"]

    saved = s3_server.client().get_object(Bucket=backed_up["s3"]["bucket"], Key=result["plan_key"])["Body"].read()
    assert json.loads(saved)["run_id"] == "plan-test"
    again = plan(backed_up)
    assert not again["changed"] and again["reused"] and again["plan"] == json.loads(saved)


def test_refusals_name_the_problem(backed_up):
    unknown = plan(backed_up, run_id="plan-unknown", failed_node="no-such-node")
    assert unknown.get("failed") and "no-such-node" in unknown["msg"] and backed_up["failed"] in unknown["msg"]
    old = plan(backed_up, run_id="plan-old", max_backup_age="1s")
    assert old.get("failed") and "more than max_backup_age" in old["msg"] and "accept_old_backup" in old["msg"]
    accepted = plan(backed_up, run_id="plan-old", max_backup_age="1s", accept_old_backup=True)
    assert not accepted.get("failed") and any("accepted" in w for w in accepted["plan"]["warnings"])
    no_node = plan(backed_up, run_id="plan-other", failed_node=backed_up["other"])
    assert no_node.get("failed") and "no complete backup of node" in no_node["msg"]


def test_report_of_a_run_is_written_beside_its_plan(backed_up, s3_server, tmp_path):
    planned = plan(backed_up)
    at = planned["plan"]["created_at"]
    phases = [{"name": name, "started_at": at, "finished_at": at} for name in ("plan", "provision", "join", "resources", "data", "state", "scale-up")]
    written = run_module("migration_report", {
        **backed_up["s3"], "run_id": "plan-test", "cluster": "onprem", "failed_node": backed_up["failed"], "target_cluster": "cloud",
        "target_cloud": "aws", "phases": phases, "plan": planned["plan"], "backups": planned["plan"]["backups"]["taken_at"],
        "dest": str(tmp_path / "report")})
    assert not written.get("failed"), written.get("msg")
    assert written["headline"].startswith(f"SUCCEEDED: 2 workloads of {backed_up['failed']} (onprem) moved to cloud on aws node cloud-worker-9")
    assert (tmp_path / "report/report.md").read_text() == written["markdown"]
    assert json.loads((tmp_path / "report/report.json").read_text())["rpo"]["resources"]["taken_at"]
    uploaded = s3_server.client().get_object(Bucket=backed_up["s3"]["bucket"], Key="migrations/onprem/plan-test/report.md")
    assert uploaded["Body"].read().decode() == written["markdown"]
