"""migrate.yml when the target's API server goes away in the middle of the restore, in the lab.

The same failed site as test_migrate_playbook.py (tests/helpers/migration_site.py), a run of its
own. The target cluster is reached through a TCP proxy (tests/helpers/tcp_proxy.py) that the test
cuts while the resources phase applies the plan: the run must fail naming the phase, write its
report, and tell how to continue; once the server is back, a re-run with the same run id completes
what was left, with no object twice and no second VM.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from tests.helpers.ansible_run import REPO, Run, run_playbook
from tests.helpers.migration_site import NS, TARGET_SITE, Site, failed_site
from tests.helpers.tcp_proxy import TcpProxy, proxy_to

pytestmark = pytest.mark.integration

NEW_NODE = "cloud-fault-1"  # unique in the session's moto
RUN_ID = "api-server-outage"
MIGRATED_FROM = "hybridcloud.io/migrated-from"


@pytest.fixture(scope="module")
def site(lab, s3_server, moto_server, velero_server, tmp_path_factory) -> Iterator[Site]:
    with failed_site(lab, s3_server, moto_server, velero_server, tmp_path_factory.mktemp("migrate-faults"), NEW_NODE) as prepared:
        yield prepared


def migrate(site: Site, kubeconfig: Path) -> Run:
    extra_vars = {"hcm_failed_node": site.failed, "hcm_new_node_name": NEW_NODE, "hcm_migration_run_id": RUN_ID,
                  "hcm_target_kubeconfig": str(kubeconfig), "hcm_report_dir": str(site.workdir / "report")}
    return run_playbook(REPO / "playbooks/migrate.yml", inventory=site.inventory, extra_vars=extra_vars)


def arm_when_joined(lab: Any, proxy: TcpProxy, after_bytes: int | None, marks: dict[str, int]) -> threading.Thread:
    """Once the join phase has labelled the node (the next play applies the plan), cut after ``after_bytes`` more."""
    def run() -> None:
        nodes = client.CoreV1Api(lab.api("cloud"))
        for event in watch.Watch().stream(nodes.list_node, field_selector=f"metadata.name={NEW_NODE}", timeout_seconds=600):
            if MIGRATED_FROM in (event["object"].metadata.labels or {}):
                marks["joined"] = proxy.sent
                if after_bytes is not None:
                    proxy.cut_after = proxy.sent + after_bytes
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def failures(run: Run) -> str:
    return "\n".join(f"{host}: {r.get('msg', r)}" for host in (TARGET_SITE, NEW_NODE) for r in run.task_results(host) if r.get("failed"))


def test_the_target_api_server_going_away_mid_restore_then_a_rerun_completes_without_duplicates(lab, site, moto_server, tmp_path):
    proxy = proxy_to(lab.server("cloud"))
    kubeconfig = proxy.kubeconfig_through(lab.kubeconfig("cloud"), tmp_path / "cloud-via-proxy.kubeconfig")
    core, apps = client.CoreV1Api(lab.api("cloud")), client.AppsV1Api(lab.api("cloud"))  # straight to the server
    marks: dict[str, int] = {}
    try:
        with lab.cloud_watcher("cloud", moto_server.endpoint_url):
            # The resources phase sends about 14 kB to the server for this plan (measured): the cut
            # comes after the namespace, before the workloads, whatever the machine's speed.
            arm_when_joined(lab, proxy, 5000, marks)
            broken = migrate(site, kubeconfig)
            assert "joined" in marks, "the join phase never labelled the node"
            assert broken.returncode != 0, "the run finished before the outage"
            assert f"-e hcm_migration_run_id={RUN_ID}: it continues where it stopped" in failures(broken)
            report = json.loads((site.workdir / "report/report.json").read_text())
            phases = {p["name"]: p for p in report["phases"]}
            assert report["outcome"] == "failed" and phases["resources"]["status"] == "failed", report["phases"]
            assert "could not reach the API server" in phases["resources"]["detail"], phases["resources"]
            assert "scale-up" not in phases or phases["scale-up"]["status"] != "ok"
            assert NS in [n.metadata.name for n in core.list_namespace().items], "the cut came before the restore began"
            assert [s.metadata.name for s in apps.list_namespaced_stateful_set(NS).items] == [], "the cut came after the workloads"

            proxy.start()  # the server is back, on the same address
            resumed = migrate(site, kubeconfig)
            assert resumed.returncode == 0, failures(resumed)
        report = json.loads((site.workdir / "report/report.json").read_text())
        assert report["outcome"] == "partial", report["phases"]  # the counter started without its memory
        assert [d.metadata.name for d in apps.list_namespaced_deployment(NS).items] == ["counter", "web"]
        assert [s.metadata.name for s in apps.list_namespaced_stateful_set(NS).items] == ["db"]
        assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2
        assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items if c.metadata.name != "kube-root-ca.crt"] == ["web-settings"]
        pv = core.read_persistent_volume(f"{NS}-db")
        assert pv.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values == [NEW_NODE]
        instances = moto_server.client("ec2").describe_instances(Filters=[{"Name": "tag:Name", "Values": [NEW_NODE]}])["Reservations"]
        assert sum(len(r["Instances"]) for r in instances) == 1
        assert (site.new_root / str(site.data).lstrip("/") / "PG_VERSION").read_text() == "17\n"
    finally:
        proxy.cut()
