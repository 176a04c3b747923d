"""playbooks/migrate.yml end to end in the lab: a worker of `onprem` dies, its workloads come back on `cloud`.

The site (tests/helpers/migration_site.py) is backed up with real
parts: both lab clusters, the S3 server, Velero (the role's schedule, a real backup, recorded by
velero_catalog), a real restic snapshot of the StatefulSet's local volume, moto_server's EC2 API as
the target cloud. Stand-ins, both lab infrastructure: the lab's cloud watcher stands a kwok node up
behind the instance the playbook creates (a VM that joins by itself at boot: hcm_join_method
external), and the new node's disk is a Debian 13 root reached with the chroot connection (the
inventory says so: provision_node_address inventory).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.helpers.ansible_run import REPO, Run, run_playbook
from tests.helpers.migration_site import NS, RESTIC_PASSWORD, TARGET_SITE, Site, failed_site
from tests.helpers.wait import wait_until

SECRET_VALUE = base64.b64encode(b"demo-key").decode()  # web-secret's api-key (tests/helpers/migration_site.py)

pytestmark = pytest.mark.integration

NEW_NODE = "cloud-migrated-1"  # unique in the session's moto (test_provision_node makes cloud-worker-N)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def site(lab, s3_server, moto_server, velero_server, tmp_path_factory) -> Iterator[Site]:
    """The source site backed up, its worker dead, and the inventory of the migration (tests/helpers/migration_site.py)."""
    with failed_site(lab, s3_server, moto_server, velero_server, tmp_path_factory.mktemp("migrate"), NEW_NODE) as prepared:
        yield prepared


def migrate(site: Site, check: bool = False, **extra: Any) -> Run:
    extra_vars = {"hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(site.workdir / "report"), **extra}
    return run_playbook(REPO / "playbooks/migrate.yml", inventory=site.inventory, extra_vars=extra_vars, check=check)


def failures(run: Run) -> str:
    return "\n".join(f"{host}: {r.get('msg', r)}" for host in (TARGET_SITE, NEW_NODE) for r in run.task_results(host) if r.get("failed"))


def test_check_mode_prints_the_plan_and_changes_nothing(lab, site, moto_server):
    checked = migrate(site, check=True)
    assert checked.returncode == 0, failures(checked)
    assert "Moves: " in checked.output and "StatefulSet/db" in checked.output and "Deployment/web" in checked.output
    reservations = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
    assert reservations == [] and NS not in [n.metadata.name for n in client.CoreV1Api(lab.api("cloud")).list_namespace().items]


def test_the_dead_nodes_workloads_come_back_on_the_cloud_with_their_data(lab, site, moto_server, s3_server):
    counter_pod = next(p.metadata.name for p in client.CoreV1Api(lab.api("onprem")).list_namespaced_pod(NS, label_selector="app=counter").items)
    with lab.cloud_watcher("cloud", moto_server.endpoint_url):
        first = migrate(site)
        assert first.returncode == 0, failures(first)
        fenced = client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS)  # never run twice: the source is fenced
        assert (fenced.spec.replicas, fenced.metadata.annotations["migration.hybridcloud.io/source-replicas"]) == (0, "2")
        assert client.CoreV1Api(lab.api("onprem")).read_node(site.failed).spec.unschedulable
        cloud = lab.api("cloud")
        core, apps = client.CoreV1Api(cloud), client.AppsV1Api(cloud)

        web = apps.read_namespaced_deployment("web", NS)
        assert web.spec.replicas == 2 and not (web.spec.template.spec.node_selector or {})
        assert core.read_namespaced_config_map("web-settings", NS).data == {"greeting": "hello from onprem"}
        assert core.read_namespaced_secret("web-secret", NS).data == {"api-key": SECRET_VALUE}, "its value, read back from the Velero backup"
        assert core.read_namespaced_service("web", NS).spec.selector == {"app": "web"}
        pv = core.read_persistent_volume(f"{NS}-db")
        assert pv.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values == [NEW_NODE]
        wait_until("the restored pods to run in the cloud", lambda: (
            len(pods := core.list_namespaced_pod(NS).items) == 4 and all(p.status.phase == "Running" for p in pods)), 120, interval=1)
        assert core.read_namespaced_pod("db-0", NS).spec.node_name == NEW_NODE
        labels = core.read_node(NEW_NODE).metadata.labels
        assert labels["hybridcloud.io/migrated-from"] == site.failed and labels["hybridcloud.io/source-cluster"] == "onprem"

        assert tree(site.new_root / str(site.data).lstrip("/")) == tree(site.data)
        assert RESTIC_PASSWORD not in first.output
        # The Secret's value is in the Velero tarball (gzip) only: not in the output, nor in any plain object of the bucket (plan.json, ...).
        assert "demo-key" not in first.output and SECRET_VALUE not in first.output
        plain = [path for path in (s3_server.data_dir / site.bucket).rglob("*") if path.is_file() and path.read_bytes()[:2] != b"\x1f\x8b"]
        assert any(path.name == "plan.json" for path in plain)
        assert [path for path in plain if b"demo-key" in path.read_bytes() or SECRET_VALUE.encode() in path.read_bytes()] == []

        report = json.loads((site.workdir / "report/report.json").read_text())
        assert report["outcome"] == "partial" and [p["name"] for p in report["phases"]] == [  # partial: the counter starts cold
            "plan", "provision", "join", "resources", "data", "state", "scale-up"]
        ready = [c for c in client.CoreV1Api(lab.api("onprem")).read_node(site.failed).status.conditions if c.type == "Ready"][0]
        assert report["failed_at"] == ready.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ"), "the RTO counts from the failure"
        assert report["rto_seconds"] > report["migration_seconds"]
        assert report["rpo"]["resources"]["taken_at"] and report["rpo"]["local_data"]["taken_at"] and report["rpo"]["workload_state"]["taken_at"]
        # The counter's checkpoint came with the plan; the lab's new node cannot restore it, and the report says so.
        assert [(s["name"], s["outcome"]) for s in report["state"]] == [(f"{NS}/{counter_pod}/counter", "cold-start")], report["state"]
        assert report["state"][0]["reason"]
        assert (site.workdir / "report/report.md").read_text().startswith("# Migration ")

        again = migrate(site)
        assert again.returncode == 0, failures(again)
        assert again.stats(TARGET_SITE)["changed"] == 0 and again.stats(NEW_NODE)["changed"] == 0
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
