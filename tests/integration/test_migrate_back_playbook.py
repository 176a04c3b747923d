"""Fencing (migrate.yml) and playbooks/migrate_back.yml end to end in the lab.

The site of tests/helpers/migration_site.py (real clusters, S3, Velero, restic, moto's EC2) fails
and migrate.yml moves its workloads to ``cloud``: the source cluster answers, so they are fenced
there (0 replicas, replicas recorded, node cordoned). While they run on ``cloud``, their data
changes on the new node (a Debian 13 root reached with the chroot connection). Then the node
comes back and migrate_back.yml moves them home: the data written on the target is restored
byte for byte at the original path of the return node (here: the controller's copy of the old
node's disk, reached with the local connection), the source runs them again at their original
replicas, and the target loses the copies, their local volume, the node and the VM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.helpers.ansible_run import REPO, Run, run_playbook
from tests.helpers.migration_site import NS, RESTIC_PASSWORD, TARGET_SITE, Site, failed_site, return_node_inventory
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

NEW_NODE = "cloud-moved-back-1"  # unique in the session's moto
SOURCE_REPLICAS = "migration.hybridcloud.io/source-replicas"
MOVED_TO = "migration.hybridcloud.io/moved-to"
CORDONED_BY = "migration.hybridcloud.io/cordoned-by"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def migrated(lab, s3_server, moto_server, velero_server, tmp_path_factory) -> Iterator[Site]:
    """The site failed and migrated to cloud by migrate.yml, the cloud watcher running throughout."""
    with failed_site(lab, s3_server, moto_server, velero_server, tmp_path_factory.mktemp("migrate-back"), NEW_NODE) as site, \
            lab.cloud_watcher("cloud", moto_server.endpoint_url):
        ran = run_playbook(REPO / "playbooks/migrate.yml", inventory=site.inventory, extra_vars={
            "hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(site.workdir / "report")})
        assert ran.returncode == 0, failures(ran)
        yield site


def run_id(site: Site) -> str:
    """migrate.yml's default run id names the failure (the node's Ready transition); its report says it."""
    found = json.loads((site.workdir / "report/report.json").read_text())["run_id"]
    assert found.startswith(f"{site.failed}-to-cloud-") and found[-1] == "z", found
    return found


def migrate_back(site: Site, check: bool = False, **extra: Any) -> Run:
    extra_vars = {"hcm_migration_run_id": run_id(site), "hcm_report_dir": str(site.workdir / "report-back"), **extra}
    return run_playbook(REPO / "playbooks/migrate_back.yml", inventory=return_node_inventory(site), extra_vars=extra_vars, check=check)


def failures(run: Run) -> str:
    hosts = (TARGET_SITE, NEW_NODE, *[h for h in run.report.get("stats", {}) if h not in (TARGET_SITE, NEW_NODE)])
    found = "\n".join(f"{host}: {r.get('msg', r)}" for host in hosts for r in run.task_results(host) if r.get("failed"))
    return found or run.output[-3000:]


def instance_states(moto_server) -> list[str]:
    reservations = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
    return [i["State"]["Name"] for r in reservations for i in r["Instances"]]


def test_migrate_fences_the_source_workloads_and_cordons_the_node(lab, migrated):
    apps, core = client.AppsV1Api(lab.api("onprem")), client.CoreV1Api(lab.api("onprem"))
    web, db = apps.read_namespaced_deployment("web", NS), apps.read_namespaced_stateful_set("db", NS)
    assert (web.spec.replicas, web.metadata.annotations[SOURCE_REPLICAS]) == (0, "2")
    assert (db.spec.replicas, db.metadata.annotations[SOURCE_REPLICAS]) == (0, "1")
    assert web.metadata.annotations[MOVED_TO] == f"cloud/{run_id(migrated)}"
    node = core.read_node(migrated.failed)
    assert node.spec.unschedulable and node.metadata.annotations[CORDONED_BY] == f"cloud/{run_id(migrated)}"
    assert client.AppsV1Api(lab.api("cloud")).read_namespaced_deployment("web", NS).spec.replicas == 2


def test_moving_back_to_a_node_that_is_not_ready_is_refused_and_changes_nothing(lab, migrated, moto_server):
    refused = migrate_back(migrated)
    assert refused.returncode != 0
    assert f"Moving back run {run_id(migrated)} refused, nothing was changed: node {migrated.failed} is not Ready" in failures(refused)
    assert client.AppsV1Api(lab.api("cloud")).read_namespaced_deployment("web", NS).spec.replicas == 2
    assert client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas == 0
    assert instance_states(moto_server) == ["running"]


def test_moving_back_while_the_source_does_not_answer_is_refused(lab, migrated, tmp_path):
    gone = tmp_path / "gone.kubeconfig"
    gone.write_text(re.sub(r"server: https://[^\s]+", "server: https://127.0.0.1:1", lab.kubeconfig("onprem").read_text()))
    refused = migrate_back(migrated, hcm_source_kubeconfig=str(gone))
    assert refused.returncode != 0 and "nothing was changed: the source cluster onprem does not answer" in failures(refused)
    assert client.AppsV1Api(lab.api("cloud")).read_namespaced_deployment("web", NS).spec.replicas == 2


def test_an_unknown_run_is_refused(migrated):
    refused = migrate_back(migrated, hcm_migration_run_id="no-such-run")
    assert refused.returncode != 0 and "Moving back run no-such-run refused: Run no-such-run of cluster onprem has no plan" in failures(refused)


def test_the_workloads_come_home_with_the_data_written_on_the_target(lab, migrated, moto_server):
    site = migrated
    lab.restore_node("onprem", site.failed)
    on_target = site.new_root / str(site.data).lstrip("/")
    (on_target / "written-on-cloud.txt").write_text("orders taken while on the cloud\n")
    (on_target / "PG_VERSION").write_text("17.1\n")
    (on_target / "base.bin").unlink()
    (on_target / "wal").mkdir()
    (on_target / "wal/000001").write_bytes(os.urandom(256 * 1024))
    expected = tree(on_target)
    assert expected != tree(site.data)

    checked = migrate_back(site, check=True)
    assert checked.returncode == 0, failures(checked)
    assert "Moves back: " in checked.output and "Deployment/web" in checked.output and "StatefulSet/db" in checked.output
    assert client.AppsV1Api(lab.api("cloud")).read_namespaced_deployment("web", NS).spec.replicas == 2
    assert client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas == 0
    assert instance_states(moto_server) == ["running"] and "base.bin" in tree(site.data)

    # A run that fails half-way (the return node cannot read the backups) leaves the workloads stopped on both sides ...
    half = migrate_back(site, hcm_restore_s3_secret_key="not-the-secret")
    assert half.returncode != 0 and "Restoring demo-shop/data-db-0" in failures(half)
    assert json.loads((site.workdir / "report-back/report.json").read_text())["outcome"] == "failed"
    assert client.AppsV1Api(lab.api("cloud")).read_namespaced_deployment("web", NS).spec.replicas == 0
    assert client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas == 0
    assert instance_states(moto_server) == ["running"]

    # ... and the next run continues from there.
    back = migrate_back(site)
    assert back.returncode == 0, failures(back)
    assert RESTIC_PASSWORD not in back.output

    assert tree(site.data) == expected, "the return node's path holds exactly what the target had"
    assert (Path(f"{site.data}.hcm-before-{run_id(site)}") / "base.bin").exists(), "the data from before the failure is kept aside"

    onprem = lab.api("onprem")
    apps, core = client.AppsV1Api(onprem), client.CoreV1Api(onprem)
    web, db = apps.read_namespaced_deployment("web", NS), apps.read_namespaced_stateful_set("db", NS)
    assert (web.spec.replicas, web.status.available_replicas, db.spec.replicas, db.status.ready_replicas) == (2, 2, 1, 1)
    assert SOURCE_REPLICAS not in (web.metadata.annotations or {}) and MOVED_TO not in (db.metadata.annotations or {})
    node = core.read_node(site.failed)
    assert not node.spec.unschedulable and CORDONED_BY not in (node.metadata.annotations or {})
    assert {p.spec.node_name for p in core.list_namespaced_pod(NS).items} == {site.failed}

    cloud = lab.api("cloud")
    assert [d.metadata.name for d in client.AppsV1Api(cloud).list_namespaced_deployment(NS).items] == []
    assert [s.metadata.name for s in client.AppsV1Api(cloud).list_namespaced_stateful_set(NS).items] == []
    assert f"{NS}-db" not in [pv.metadata.name for pv in client.CoreV1Api(cloud).list_persistent_volume().items]
    assert client.CoreV1Api(cloud).read_namespaced_config_map("web-settings", NS).data, "shared objects stay"
    assert instance_states(moto_server) == ["terminated"]
    wait_until("the new node to leave the cloud cluster", lambda: NEW_NODE not in [
        n.metadata.name for n in client.CoreV1Api(cloud).list_node().items], 60, interval=1)

    report = json.loads((site.workdir / "report-back/report.json").read_text())
    assert report["outcome"] == "succeeded"
    assert [p["name"] for p in report["phases"]] == ["fence", "quiesce", "data", "release", "cleanup"]
    assert all(p["status"] == "ok" for p in report["phases"]) and report["rto_seconds"] > 0
    assert [d["outcome"] for d in report["data"]] == ["restored"]
    assert (site.workdir / "report-back/report.md").read_text().startswith(f"# Move-back {run_id(site)}: succeeded")

    again = migrate_back(site)
    assert again.returncode == 0, failures(again)
    assert "moved back already" in again.output
    assert {host: stats["changed"] for host, stats in again.report["stats"].items()} == {host: 0 for host in again.report["stats"]}
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2
