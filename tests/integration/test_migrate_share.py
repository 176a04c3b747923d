"""A dead node's share of spread workloads moves, and comes back: migrate.yml and migrate_back.yml in the lab.

The site (tests/helpers/spread_site.py) is placed by the lab's real kube-scheduler on kwok nodes:
web runs 2 of its 4 replicas on W1 and 2 on W2, db-0 on W1 and db-1 on W2 (local volumes), the
report Job's pod and a bare debug pod on W1; W1 dies. migrate.yml lets the source reschedule what
it can (W1 marked out of service, a short grace) and moves only what the source cannot run: 2 of
4 web replicas, ordinal 0 of db with its data, the report CronJob, the debug pod; the source keeps
the rest, its autoscaler split with the target's. migrate_back.yml gives the shares back. With
the source's API down, the plan takes the share from what the backup saw on the node, and
migrate.yml moves it without fencing the source (it says so).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lab.hclab.debian_root import make_instance
from lab.hclab.services import free_port
from tests.helpers.ansible_run import REPO, Run, run_module, run_playbook
from tests.helpers.migration_site import OUT_OF_SERVICE, TARGET_SITE, return_node_inventory
from tests.helpers.spread_site import NS, STORAGE_CLASS, SpreadSite, spread_site

pytestmark = pytest.mark.integration

NEW_NODE = "cloud-share-1"  # unique in the session's moto
SOURCE_DOWN_NODE = "cloud-share-2"  # the new node of the run with the source's API down
SOURCE_REPLICAS = "migration.hybridcloud.io/source-replicas"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def instances(moto_server: Any, states: tuple[str, ...] = ("pending", "running"), names: tuple[str, ...] = (NEW_NODE,)) -> list[str]:
    reservations = moto_server.client("ec2").describe_instances(Filters=[
        {"Name": "tag:Name", "Values": list(names)}, {"Name": "instance-state-name", "Values": list(states)}])["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


@pytest.fixture(scope="module")
def site(lab, s3_server, moto_server, velero_server, tmp_path_factory) -> Iterator[SpreadSite]:
    """The spread site backed up, W1 dead; the cloud watcher runs throughout (the new VM joins, then leaves with migrate_back)."""
    with lab.cloud_watcher("cloud", moto_server.endpoint_url):
        try:
            with spread_site(lab, s3_server, moto_server, velero_server, tmp_path_factory.mktemp("share"), NEW_NODE,
                             say=lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)) as prepared:
                yield prepared
        finally:  # migrate_back terminates it; if a test stopped before, the next module's watcher must not meet it
            left = instances(moto_server, names=(NEW_NODE, SOURCE_DOWN_NODE))
            if left:
                moto_server.client("ec2").terminate_instances(InstanceIds=left)


def migrate(site: SpreadSite, check: bool = False, inventory: Path | None = None, **extra: Any) -> Run:
    extra_vars = {"hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_report_dir": str(site.workdir / "report"), **extra}
    return run_playbook(REPO / "playbooks/migrate.yml", inventory=inventory or site.inventory, extra_vars=extra_vars, check=check)


def migrate_back(site: SpreadSite, **extra: Any) -> Run:
    run_id = json.loads((site.workdir / "report/report.json").read_text())["run_id"]  # migrate.yml's default: it names the failure
    extra_vars = {"hcm_migration_run_id": run_id, "hcm_report_dir": str(site.workdir / "report-back"), **extra}
    return run_playbook(REPO / "playbooks/migrate_back.yml", inventory=return_node_inventory(site), extra_vars=extra_vars)


def failures(run: Run) -> str:
    hosts = (TARGET_SITE, NEW_NODE, *[h for h in run.report.get("stats", {}) if h not in (TARGET_SITE, NEW_NODE)])
    found = "\n".join(f"{host}: {r.get('msg', r)}" for host in hosts for r in run.task_results(host) if r.get("failed"))
    return found or run.output[-3000:]


def pods(lab: Any, cluster: str, app: str) -> list[Any]:
    """The app's pods that are not being deleted."""
    return [p for p in client.CoreV1Api(lab.api(cluster)).list_namespaced_pod(NS, label_selector=f"app={app}").items
            if p.metadata.deletion_timestamp is None]


def ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def out_of_service(lab: Any, node: str) -> list[tuple[str, str, str]]:
    found = client.CoreV1Api(lab.api("onprem")).read_node(node).spec.taints or []
    return [(t.key, t.value, t.effect) for t in found if t.key == OUT_OF_SERVICE]


def hpa_bounds(lab: Any, cluster: str) -> tuple[int, int]:
    hpa = client.AutoscalingV2Api(lab.api(cluster)).read_namespaced_horizontal_pod_autoscaler("web", NS)
    return hpa.spec.min_replicas, hpa.spec.max_replicas


class Expect:
    """Every check of a test, and at the end the failed ones, all of them: one run says everything that differs."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def equal(self, what: str, get: Callable[[], Any], wanted: Any, within: float = 0.0) -> None:
        """``get()`` == ``wanted`` (or in it, a frozenset), at once or ``within`` seconds; an error (a 404: the object is missing) fails the check."""
        deadline = time.monotonic() + within
        while True:
            try:
                got = get()
            except client.exceptions.ApiException as error:  # the object is missing: a failed check, the next ones run
                got = f"ApiException {error.status} {error.reason}"
            except Exception as error:  # pylint: disable=broad-exception-caught  # likewise
                got = f"{type(error).__name__}: {str(error)[:300]}"
            if got in wanted if isinstance(wanted, frozenset) else got == wanted:
                return
            if time.monotonic() >= deadline:
                self.failed.append(f"{what}: got {got!r}, expected {wanted!r}")
                return
            time.sleep(1)

    def verify(self) -> None:
        assert not self.failed, f"{len(self.failed)} checks failed:\n" + "\n".join(f"- {line}" for line in self.failed)


def unreachable_kubeconfig(lab: Any, path: Path) -> Path:
    """The source's kubeconfig with its server moved to a port nobody listens on: the source's API is down."""
    path.write_text(re.sub(r"server: https://\S+", f"server: https://127.0.0.1:{free_port()}", lab.kubeconfig("onprem").read_text()))
    path.chmod(0o600)
    return path


def test_with_the_source_down_the_share_comes_from_the_backup(lab, site, s3_server, tmp_path):
    """First, while nothing has touched the site: the plan alone, in check mode, with the source's API unreachable."""
    gone = unreachable_kubeconfig(lab, tmp_path / "gone.kubeconfig")
    planned = run_module("migration_plan", {**site.s3, "cluster": "onprem", "failed_node": site.failed, "run_id": "share-source-down",
                                            "target_node": NEW_NODE, "source": {"kubeconfig": str(gone)}}, check=True)
    assert not planned.get("failed"), planned.get("msg")
    shares = {(s["kind"], s["name"]): s.get("share") or {} for s in planned["plan"]["selected"]}
    expect = Expect()
    expect.equal("web's share", lambda: {key: shares[("Deployment", "web")].get(key) for key in ("moves", "of", "basis")},
                 {"moves": 2, "of": 4, "basis": "backup"})
    expect.equal("db's share", lambda: {key: shares[("StatefulSet", "db")].get(key) for key in ("moves", "of", "basis", "ordinals")},
                 {"moves": 1, "of": 2, "basis": "backup", "ordinals": {"start": 0, "count": 1}})
    warnings = planned["plan"].get("warnings") or []
    expect.equal("a warning that the source did not answer",
                 lambda: any(re.search(r"(did|does) not answer", w) for w in warnings) or f"none among {warnings}", True)
    expect.equal("check mode saves nothing", lambda: s3_server.client().list_objects_v2(Bucket=site.bucket, Prefix="migrations/").get("KeyCount", 0), 0)
    expect.verify()


@pytest.mark.parametrize("options, problem", [
    ({"reschedule_grace": "soon"}, "reschedule_grace 'soon' is not an age"),
    ({"share_policy": {"StatefulSet/spread-shop/db": "half"}}, "share_policy StatefulSet/spread-shop/db: share policy 'half' does not exist"),
])
def test_bad_share_options_are_refused_before_anything_changes(lab, site, options, problem):
    refused = run_module("migration_plan", {**site.s3, "cluster": "onprem", "failed_node": site.failed, "run_id": "share-bad-input",
                                            "target_node": NEW_NODE, "source": {"kubeconfig": str(lab.kubeconfig("onprem"))}, **options})
    assert refused.get("failed") and problem in refused["msg"], refused.get("msg")
    assert out_of_service(lab, site.failed) == []  # the node was not marked out of service


def test_check_mode_shows_the_share_without_changing_anything(lab, site, moto_server):
    checked = migrate(site, check=True, hcm_storage_class_map={STORAGE_CLASS: "cloud-local"})
    assert checked.returncode == 0, failures(checked)
    planned = next(r for r in checked.task_results(TARGET_SITE) if "plan" in r and "stages" in r["plan"])["plan"]
    volumes = [o for stage in planned["stages"] for o in stage["objects"] if o["kind"] == "PersistentVolume"]
    assert [(v["metadata"]["name"], v["spec"]["storageClassName"]) for v in volumes] == [(f"{NS}-db-0", "cloud-local")]  # the map reached the plan
    assert "Moves: " in checked.output and "StatefulSet/db" in checked.output and "Deployment/web 2 of 4" in checked.output, checked.output[-3000:]
    assert out_of_service(lab, site.failed) == []
    assert instances(moto_server, ("pending", "running", "stopped", "shutting-down", "terminated")) == []
    assert NS not in [n.metadata.name for n in client.CoreV1Api(lab.api("cloud")).list_namespace().items]
    assert client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas == 4


def test_only_the_dead_nodes_share_moves(lab, site):
    ran = migrate(site, hcm_reschedule_grace=10)
    expect = Expect()
    expect.equal(f"migrate.yml's exit code ({failures(ran)[:2000] if ran.returncode else 'ok'})", lambda: ran.returncode, 0)
    onprem, cloud = lab.api("onprem"), lab.api("cloud")
    on_apps, on_batch, cloud_apps, cloud_batch = (client.AppsV1Api(onprem), client.BatchV1Api(onprem), client.AppsV1Api(cloud),
                                                  client.BatchV1Api(cloud))

    def running(cluster: str, app: str) -> list[tuple[str, str, str]]:
        return [(p.metadata.name, p.spec.node_name, p.status.phase) for p in pods(lab, cluster, app)]

    expect.equal("onprem: W1's out-of-service taint", lambda: out_of_service(lab, site.failed), [(OUT_OF_SERVICE, "nodeshutdown", "NoExecute")])
    expect.equal("onprem: web's replicas and recorded replicas", lambda: (
        (web := on_apps.read_namespaced_deployment("web", NS)).spec.replicas, (web.metadata.annotations or {}).get(SOURCE_REPLICAS)), (2, "4"))
    expect.equal("onprem: db's replicas and spec.ordinals.start", lambda: (
        (db := on_apps.read_namespaced_stateful_set("db", NS)).spec.replicas, db.spec.ordinals.start if db.spec.ordinals else None), (1, 1))
    expect.equal("onprem: the db pods", lambda: running("onprem", "db"), [("db-1", site.kept, "Running")], within=30)
    expect.equal("onprem: the HPA's bounds", lambda: hpa_bounds(lab, "onprem"), (1, 4))

    expect.equal("cloud: web's replicas", lambda: cloud_apps.read_namespaced_deployment("web", NS).spec.replicas, 2)
    expect.equal("cloud: ready web pods", lambda: len([p for p in pods(lab, "cloud", "web") if ready(p)]), 2, within=30)
    expect.equal("cloud: db's replicas and spec.ordinals.start", lambda: (
        (db := cloud_apps.read_namespaced_stateful_set("db", NS)).spec.replicas, db.spec.ordinals.start if db.spec.ordinals else 0), (1, 0))
    expect.equal("cloud: the db pods", lambda: running("cloud", "db"), [("db-0", NEW_NODE, "Running")], within=30)
    expect.equal("cloud: the db claims", lambda: sorted(c.metadata.name for c in client.CoreV1Api(cloud).list_namespaced_persistent_volume_claim(NS).items
                                                        if c.metadata.name.startswith("data-db-")), ["data-db-0"])
    expect.equal("cloud: db-0's data on the new node's disk", lambda: tree(site.new_root / str(site.data).lstrip("/")), tree(site.data))
    expect.equal("cloud: the debug pod", lambda: [phase for _name, _node, phase in running("cloud", "debug")], ["Running"], within=30)
    expect.equal("cloud: the HPA's bounds", lambda: hpa_bounds(lab, "cloud"), (1, 4))

    # Nothing runs twice: once the source has dropped the replacements it could not place, 4 web replicas in all.
    expect.equal("onprem: web pods once the source settled", lambda: len(pods(lab, "onprem", "web")), 2, within=30)
    expect.equal("ready web pods in onprem and in cloud", lambda: [
        len([p for p in pods(lab, cluster, "web") if ready(p)]) for cluster in ("onprem", "cloud")], [2, 2], within=30)
    expect.equal("db ordinals running in onprem and in cloud", lambda: [
        sorted(p.metadata.name for p in pods(lab, cluster, "db")) for cluster in ("onprem", "cloud")], [["db-1"], ["db-0"]])

    expect.equal("report.json's outcome", lambda: json.loads((site.workdir / "report/report.json").read_text())["outcome"],
                 frozenset({"succeeded", "partial"}))
    expect.equal("report.md says web moved 2 of 4", lambda: bool(re.search(
        r"Deployment\W+(?:spread-shop\W+)?web\b.*\b2 of 4\b", (site.workdir / "report/report.md").read_text())), True)

    # The report CronJob, whose Job's pod ran on W1 (see tests/helpers/spread_site.py: kwok has completed it by then).
    expect.equal("onprem: the CronJob suspended", lambda: on_batch.read_namespaced_cron_job("report", NS).spec.suspend, True)
    expect.equal("cloud: the CronJob present", lambda: cloud_batch.read_namespaced_cron_job("report", NS).metadata.name, "report")
    expect.verify()


def test_migrate_back_returns_the_shares(lab, site):
    lab.restore_node("onprem", site.failed)
    back = migrate_back(site, hcm_back_wait_timeout=90)
    expect = Expect()
    expect.equal(f"migrate_back.yml's exit code ({failures(back)[:2000] if back.returncode else 'ok'})", lambda: back.returncode, 0)

    onprem, cloud = lab.api("onprem"), lab.api("cloud")
    apps = client.AppsV1Api(onprem)
    expect.equal("onprem: web's replicas and available replicas", lambda: (
        (web := apps.read_namespaced_deployment("web", NS)).spec.replicas, web.status.available_replicas), (4, 4), within=30)
    expect.equal("onprem: db's replicas and spec.ordinals.start", lambda: (
        (db := apps.read_namespaced_stateful_set("db", NS)).spec.replicas, db.spec.ordinals.start if db.spec.ordinals else 0), (2, 0))
    expect.equal("onprem: the db pods", lambda: sorted((p.metadata.name, p.status.phase) for p in pods(lab, "onprem", "db")),
                 [("db-0", "Running"), ("db-1", "Running")], within=30)
    expect.equal("onprem: the CronJob not suspended", lambda: bool(client.BatchV1Api(onprem).read_namespaced_cron_job("report", NS).spec.suspend), False)
    expect.equal("onprem: the HPA's bounds", lambda: hpa_bounds(lab, "onprem"), (2, 8))
    expect.equal("onprem: W1's out-of-service taint", lambda: out_of_service(lab, site.failed), [])
    expect.equal("onprem: W1 schedulable", lambda: bool(client.CoreV1Api(onprem).read_node(site.failed).spec.unschedulable), False)
    expect.equal("onprem: the bare pod made again (the out-of-service taint had deleted it)", lambda: (
        client.CoreV1Api(onprem).read_namespaced_pod("debug", NS).status.phase), "Running", within=30)

    expect.equal("cloud: what is left of the share", lambda: (
        [d.metadata.name for d in client.AppsV1Api(cloud).list_namespaced_deployment(NS).items],
        [s.metadata.name for s in client.AppsV1Api(cloud).list_namespaced_stateful_set(NS).items],
        [c.metadata.name for c in client.BatchV1Api(cloud).list_namespaced_cron_job(NS).items],
        [p.metadata.name for p in client.CoreV1Api(cloud).list_namespaced_pod(NS).items]), ([], [], [], []), within=60)
    expect.verify()


def test_with_the_source_down_migrate_moves_the_share_the_backup_saw(lab, site, moto_server, tmp_path):
    """Last, once migrate_back has given the shares back: migrate.yml again, its source's API unreachable.

    The share is what the backup saw on W1 (2 web replicas, db-0 with its data, the CronJob, the
    bare pod); nothing can be fenced, and the run says so; the source is left as it was.
    """
    new_root = make_instance(tmp_path / "new-node", ("python3", "restic"))
    document = json.loads(site.inventory.read_text())
    document["all"]["children"]["hcm_new_nodes"]["hosts"] = {SOURCE_DOWN_NODE: {
        **document["all"]["children"]["hcm_new_nodes"]["hosts"][NEW_NODE], "ansible_host": str(new_root)}}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(document))
    ran = migrate(site, inventory=inventory, hcm_new_node_name=SOURCE_DOWN_NODE, hcm_migration_run_id=f"{site.failed}-source-down",
                  hcm_source_kubeconfig=str(unreachable_kubeconfig(lab, tmp_path / "gone.kubeconfig")),
                  hcm_report_dir=str(tmp_path / "report"))
    expect = Expect()
    expect.equal(f"migrate.yml's exit code ({failures(ran)[:2000] if ran.returncode else 'ok'})", lambda: ran.returncode, 0)
    expect.equal("the run says the source was not fenced", lambda: "the source was NOT fenced" in ran.output, True)
    cloud_apps = client.AppsV1Api(lab.api("cloud"))
    expect.equal("cloud: web's replicas", lambda: cloud_apps.read_namespaced_deployment("web", NS).spec.replicas, 2)
    expect.equal("cloud: ready web pods", lambda: len([p for p in pods(lab, "cloud", "web") if ready(p)]), 2, within=30)
    expect.equal("cloud: db's replicas and spec.ordinals.start", lambda: (
        (db := cloud_apps.read_namespaced_stateful_set("db", NS)).spec.replicas, db.spec.ordinals.start if db.spec.ordinals else 0), (1, 0))
    expect.equal("cloud: the db pods", lambda: [(p.metadata.name, p.spec.node_name, p.status.phase) for p in pods(lab, "cloud", "db")],
                 [("db-0", SOURCE_DOWN_NODE, "Running")], within=30)
    expect.equal("cloud: db-0's data on the new node's disk", lambda: tree(new_root / str(site.data).lstrip("/")), tree(site.data))
    expect.equal("cloud: the CronJob present", lambda: client.BatchV1Api(lab.api("cloud")).read_namespaced_cron_job("report", NS).metadata.name,
                 "report")
    expect.equal("report.md says the shares came from the backup", lambda: "shares decided from backup" in (tmp_path / "report/report.md").read_text(),
                 True)
    expect.equal("onprem untouched: web's replicas", lambda: client.AppsV1Api(lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas, 4)
    expect.equal("onprem untouched: W1's out-of-service taint", lambda: out_of_service(lab, site.failed), [])
    expect.verify()
