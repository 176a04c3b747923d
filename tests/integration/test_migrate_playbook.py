"""playbooks/migrate.yml end to end in the lab: a worker of `onprem` dies, its workloads come back on `cloud`.

Real parts: both lab clusters, the S3 server, Velero (the role's schedule, a real backup, recorded
by velero_catalog), a real restic snapshot of the StatefulSet's local volume, moto_server's EC2 API
as the target cloud. Stand-ins, both lab infrastructure: the lab's cloud watcher stands a kwok node
up behind the instance the playbook creates (a VM that joins by itself at boot: hcm_join_method
external), and the new node's disk is a Debian 13 root reached with the chroot connection (the
inventory says so: provision_node_address inventory).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.helpers.ansible_run import REPO, Run, run_module, run_playbook
from tests.helpers.debian_root import make_instance
from tests.helpers.velero import remove_namespace, remove_velero
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

NS = "demo-shop"
NEW_NODE = "cloud-migrated-1"  # unique in the session's moto (test_provision_node makes cloud-worker-N)
RESTIC_PASSWORD = "demo-restic-password-never-logged"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def seed(lab: Any, failed: str, data_path: str) -> None:
    """On `failed`: a web Deployment with Service, ConfigMap and Secret; a StatefulSet with a local PV."""
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
    pin = {"kubernetes.io/hostname": failed}
    web = {"name": "web", "image": "nginx:1.27", "envFrom": [{"configMapRef": {"name": "web-settings"}}, {"secretRef": {"name": "web-secret"}}]}
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"nodeSelector": pin, "containers": [web]}}}})
    apps.create_namespaced_stateful_set(NS, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
            {"name": "db", "image": "postgres:17", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "resources": {"requests": {"storage": "1Gi"}}}}]}})
    wait_until("the demo pods to run on the node that will fail", lambda: (
        len(pods := core.list_namespaced_pod(NS).items) == 3
        and all(p.spec.node_name == failed and p.status.phase == "Running" for p in pods)), 120, interval=1)


def node_backup(s3_server: Any, bucket: str, restic: str, data: Path, failed: str) -> None:
    """What the node agent records: a restic snapshot of the local PV, then the node's catalog entry."""
    repository = f"s3:{s3_server.endpoint_url}/{bucket}/restic/onprem"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
               AWS_DEFAULT_REGION=s3_server.region, RESTIC_PASSWORD=RESTIC_PASSWORD)
    subprocess.run([restic, "--repo", repository, "init"], env=env, check=True, capture_output=True)
    taken = subprocess.run([restic, "--repo", repository, "--json", "backup", "--host", failed, str(data)],
                           env=env, check=True, capture_output=True, text=True)
    summary = [json.loads(line) for line in taken.stdout.splitlines() if '"summary"' in line][-1]
    recorded = run_module("backup_catalog", {
        "endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "access_key": s3_server.access_key,
        "secret_key": s3_server.secret_key, "bucket": bucket, "cluster": "onprem", "node": failed, "data": {"local_data": [{
            "name": f"{NS}/data-db-0", "location": f"restic:{repository}#{summary['snapshot_id']}", "size": summary["total_bytes_processed"],
            "details": {"source": "local-pv", "path": str(data), "namespace": NS, "pvc": "data-db-0", "pv": f"{NS}-db",
                        "snapshot_id": summary["snapshot_id"]}}]}})
    assert not recorded.get("failed"), recorded.run.output


@pytest.fixture(scope="module")
def site(lab, s3_server, moto_server, velero_server, tmp_path_factory):
    """The source site backed up, its worker dead, and the inventory of the migration."""
    tmp = tmp_path_factory.mktemp("migrate")
    failed = lab.nodes("onprem")[0]
    bucket = s3_server.create_bucket(f"site-{uuid.uuid4().hex[:8]}")
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
          "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    new_root = make_instance(tmp / "new-node", ("python3", "restic"))
    data = tmp / "old-node-disk/db"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("17\n")
    (data / "base.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    try:
        seed(lab, failed, str(data))
        velero_server.start_in_background()
        installed = run_playbook(REPO / "tests/integration/playbooks/velero.yml", extra_vars={
            "velero_kubeconfig": str(lab.kubeconfig("onprem")), "velero_deploy_server": False, "velero_s3_bucket": bucket,
            "velero_s3_endpoint_url": s3["endpoint_url"], "velero_s3_region": s3["region"], "velero_s3_access_key": s3["access_key"],
            "velero_s3_secret_key": s3["secret_key"], "velero_schedules": [{"name": "resources"}]})
        assert installed.returncode == 0, installed.output[-3000:]
        velero_server.join_start()
        velero_server.cli("backup", "create", "before-failure", "--from-schedule", "resources", "--wait")
        assert not run_module("velero_catalog", {**s3, "bucket": bucket, "cluster": "onprem"}).get("failed")
        node_backup(s3_server, bucket, str(new_root / "usr/bin/restic"), data, failed)
        image = moto_server.client("ec2").describe_images()["Images"][0]["ImageId"]
        assert not run_module("backup_catalog", {**s3, "bucket": bucket, "cluster": "cloud", "node": "_images", "data": {"image": [{
            "name": "aws/us-east-1/v1.37.2", "location": f"aws://us-east-1/{image}", "size": 0,
            "details": {"cloud": "aws", "region": "us-east-1", "image_id": image, "kubernetes_version": "v1.37.2"}}]}}).get("failed")
        lab.fail_node("onprem", failed, wait=True)

        inventory = tmp / "inventory.json"
        inventory.write_text(json.dumps({"all": {
            "vars": {"hcm_cluster_name": "onprem", "hcm_s3_endpoint_url": s3["endpoint_url"], "hcm_s3_region": s3["region"],
                     "hcm_s3_bucket": bucket, "hcm_s3_access_key": s3["access_key"], "hcm_s3_secret_key": s3["secret_key"],
                     "hcm_restic_password": RESTIC_PASSWORD, "hcm_backup_max_age": "1d",
                     "hcm_source_kubeconfig": str(lab.kubeconfig("onprem"))},
            "children": {
                "target_cloud": {"hosts": {"lab-cloud": {
                    "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    "hcm_target_cloud": "aws", "hcm_target_region": "us-east-1", "hcm_target_cluster_name": "cloud",
                    "hcm_target_kubeconfig": str(lab.kubeconfig("cloud")), "hcm_join_method": "external",
                    "provision_node_aws_endpoint_url": moto_server.endpoint_url, "provision_node_aws_access_key": "testing",
                    "provision_node_aws_secret_key": "testing", "provision_node_address": "inventory", "provision_node_ssh_wait": False,
                    "provision_node_aws_instance_type": "t3.large"}}},
                # How the controller reaches the new VM's disk here (see the module docstring).
                "hcm_new_nodes": {"hosts": {NEW_NODE: {
                    "ansible_connection": "community.general.chroot", "ansible_host": str(new_root),
                    "ansible_python_interpreter": "/usr/bin/python3", "restore_data_install_packages": False}}},
            }}}))
        yield {"failed": failed, "bucket": bucket, "inventory": inventory, "new_root": new_root, "data": data, "tmp": tmp}
    finally:
        velero_server.stop()
        lab.restore_node("onprem", failed)
        for cluster in ("onprem", "cloud"):
            remove_namespace(lab, NS, cluster)
        for cluster in ("onprem", "cloud"):
            try:
                client.CoreV1Api(lab.api(cluster)).delete_persistent_volume(f"{NS}-db")
            except client.exceptions.ApiException:
                pass
        remove_velero(lab, "onprem")


def migrate(site: dict[str, Any], check: bool = False, **extra: Any) -> Run:
    extra_vars = {"hcm_failed_node": site["failed"], "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(site["tmp"] / "report"), **extra}
    return run_playbook(REPO / "playbooks/migrate.yml", inventory=site["inventory"], extra_vars=extra_vars, check=check)


def failures(run: Run) -> str:
    return "\n".join(f"{host}: {r.get('msg', r)}" for host in ("lab-cloud", NEW_NODE) for r in run.task_results(host) if r.get("failed"))


def test_check_mode_prints_the_plan_and_changes_nothing(lab, site, moto_server):
    checked = migrate(site, check=True)
    assert checked.returncode == 0, failures(checked)
    assert "Moves: " in checked.output and "StatefulSet/db" in checked.output and "Deployment/web" in checked.output
    reservations = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
    assert reservations == [] and NS not in [n.metadata.name for n in client.CoreV1Api(lab.api("cloud")).list_namespace().items]


def test_the_dead_nodes_workloads_come_back_on_the_cloud_with_their_data(lab, site, moto_server):
    with lab.cloud_watcher("cloud", moto_server.endpoint_url):
        first = migrate(site)
        assert first.returncode == 0, failures(first)
        cloud = lab.api("cloud")
        core, apps = client.CoreV1Api(cloud), client.AppsV1Api(cloud)

        web = apps.read_namespaced_deployment("web", NS)
        assert web.spec.replicas == 2 and not (web.spec.template.spec.node_selector or {})
        assert core.read_namespaced_config_map("web-settings", NS).data == {"greeting": "hello from onprem"}
        assert core.read_namespaced_secret("web-secret", NS).data
        assert core.read_namespaced_service("web", NS).spec.selector == {"app": "web"}
        pv = core.read_persistent_volume(f"{NS}-db")
        assert pv.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values == [NEW_NODE]
        wait_until("the restored pods to run in the cloud", lambda: (
            len(pods := core.list_namespaced_pod(NS).items) == 3 and all(p.status.phase == "Running" for p in pods)), 120, interval=1)
        assert core.read_namespaced_pod("db-0", NS).spec.node_name == NEW_NODE
        labels = core.read_node(NEW_NODE).metadata.labels
        assert labels["hybridcloud.io/migrated-from"] == site["failed"] and labels["hybridcloud.io/source-cluster"] == "onprem"

        assert tree(site["new_root"] / str(site["data"]).lstrip("/")) == tree(site["data"])
        assert RESTIC_PASSWORD not in first.output

        report = json.loads((site["tmp"] / "report/report.json").read_text())
        assert report["outcome"] == "succeeded" and [p["name"] for p in report["phases"]] == [
            "plan", "provision", "join", "resources", "data", "state", "scale-up"]
        ready = [c for c in client.CoreV1Api(lab.api("onprem")).read_node(site["failed"]).status.conditions if c.type == "Ready"][0]
        assert report["failed_at"] == ready.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ"), "the RTO counts from the failure"
        assert report["rto_seconds"] > report["migration_seconds"]
        assert report["rpo"]["resources"]["taken_at"] and report["rpo"]["local_data"]["taken_at"]
        assert (site["tmp"] / "report/report.md").read_text().startswith("# Migration ")

        again = migrate(site)
        assert again.returncode == 0, failures(again)
        assert again.stats("lab-cloud")["changed"] == 0 and again.stats(NEW_NODE)["changed"] == 0
        instances = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
        assert sum(len(r["Instances"]) for r in instances) == 1


def test_unknown_node_is_refused_clearly(site):
    refused = migrate(site, hcm_failed_node="no-such-node", hcm_migration_run_id="unknown-node")
    assert refused.returncode != 0 and "Migration of no-such-node refused" in failures(refused)


def test_a_node_the_source_cluster_sees_ready_is_not_moved(lab, site, moto_server):
    alive = lab.nodes("onprem")[1]
    refused = migrate(site, hcm_failed_node=alive, hcm_migration_run_id="alive-node", hcm_new_node_name="cloud-migrated-2")
    assert refused.returncode != 0 and f"Node {alive} is Ready in cluster onprem" in failures(refused)
    assert moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": ["cloud-migrated-2"]}])["Reservations"] == []
