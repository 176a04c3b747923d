"""The migration report: RTO from the failure to the last phase, RPO per kind of data, a one-line outcome."""

from __future__ import annotations

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_report import build_report, headline, human_duration, render_markdown

PHASES = [
    {"name": "plan", "started_at": "2026-11-25T03:00:00Z", "finished_at": "2026-11-25T03:00:04Z"},
    {"name": "provision", "started_at": "2026-11-25T03:00:04Z", "finished_at": "2026-11-25T03:01:34Z", "detail": "i-0abc"},
    {"name": "join", "started_at": "2026-11-25T03:01:34Z", "finished_at": "2026-11-25T03:02:30Z"},
    {"name": "resources", "started_at": "2026-11-25T03:02:30Z", "finished_at": "2026-11-25T03:02:33Z"},
    {"name": "data", "started_at": "2026-11-25T03:02:33Z", "finished_at": "2026-11-25T03:03:00Z"},
    {"name": "state", "status": "skipped", "detail": "no checkpoint"},
    {"name": "scale-up", "started_at": "2026-11-25T03:03:00Z", "finished_at": "2026-11-25T03:03:20Z"},
]
PLAN = {
    "target_node": "aws-worker-3",
    "selected": [{"kind": "Namespace", "name": "shop"}, {"kind": "Deployment", "namespace": "shop", "name": "web", "reason": "owns pod web-1"},
                 {"kind": "StatefulSet", "namespace": "shop", "name": "db", "reason": "owns pod db-0"}],
    "skipped": [{"kind": "DaemonSet", "namespace": "kube-system", "name": "kube-proxy", "reason": "runs on every node"}],
    "warnings": ["StorageClass local-storage must exist in the target"],
}


def report(**over):
    args = dict(run_id="w3", failed_node="worker-3", source_cluster="onprem", target_cluster="aws-eu", target_cloud="aws",
                phases=PHASES, plan=PLAN, failed_at="2026-11-25T02:55:00Z",
                backups={"resources": "2026-11-25T02:00:00Z", "local_data": "2026-11-25T02:45:00Z", "workload_state": None},
                data=[{"name": "shop/data-db-0", "outcome": "restored", "bytes": 4096}],
                state=[{"name": "shop/web-1/web", "outcome": "cold-start", "reason": "the runtime cannot restore"}])
    args.update(over)
    return build_report(**args)


def test_rto_counts_from_the_failure_and_rpo_from_each_backup():
    doc = report()
    assert doc["rto_seconds"] == 8 * 60 + 20 and doc["migration_seconds"] == 3 * 60 + 20
    assert doc["rpo"]["resources"]["seconds"] == 55 * 60 and doc["rpo"]["local_data"]["seconds"] == 10 * 60
    assert doc["rpo"]["workload_state"] == {"taken_at": None, "seconds": None}
    assert [p["name"] for p in doc["workloads"]] == ["web", "db"]
    assert doc["outcome"] == "partial" and doc["target_node"] == "aws-worker-3"


def test_headline_says_it_all_in_one_line():
    line = headline(report())
    assert line.startswith("PARTIAL: 2 workloads of worker-3 (onprem) moved to aws-eu on aws node aws-worker-3 in 8m 20s (RTO)")
    assert "RPO local_data 10m 00s, resources 55m 00s, workload_state —" in line
    assert "1 started without their in-memory state" in line


def test_a_run_with_everything_back_says_succeeded():
    doc = report(state=[{"name": "shop/web-1/web", "outcome": "restored"}])
    assert doc["outcome"] == "succeeded" and headline(doc).startswith("SUCCEEDED: 2 workloads of worker-3 (onprem) moved to aws-eu")


def test_a_failed_phase_fails_the_outcome():
    phases = PHASES[:3] + [{"name": "resources", "status": "failed", "started_at": "2026-11-25T03:02:30Z",
                            "finished_at": "2026-11-25T03:02:40Z", "detail": "API server stopped"}]
    doc = report(phases=phases, state=[])
    assert doc["outcome"] == "failed" and doc["failures"] == ["resources"]
    assert headline(doc).startswith("FAILED:") and "failed: resources" in headline(doc)


def test_markdown_has_the_tables_a_person_reads():
    text = render_markdown(report())
    assert text.startswith("# Migration w3: partial\n\n**PARTIAL:")
    assert "| provision | ok | 1m 30s | i-0abc |" in text and "| state | skipped | — | no checkpoint |" in text
    assert "| DaemonSet | kube-system | kube-proxy | runs on every node |" in text
    assert "- StorageClass local-storage must exist in the target" in text


@pytest.mark.parametrize("phases, problem", [
    ([{"name": "teleport", "started_at": "2026-11-25T03:00:00Z", "finished_at": "2026-11-25T03:00:01Z"}], "is not a phase"),
    ([{"name": "plan", "started_at": "2026-11-25T03:00:05Z", "finished_at": "2026-11-25T03:00:01Z"}], "finished before it started"),
    ([{"name": "plan", "status": "skipped"}], "No phase has a start and an end"),
    ([{"name": "plan", "started_at": "yesterday", "finished_at": "2026-11-25T03:00:01Z"}], "is not an ISO 8601 time"),
])
def test_bad_phases_are_refused(phases, problem):
    with pytest.raises(MigrationError, match=problem):
        report(phases=phases)


def test_human_duration():
    assert [human_duration(s) for s in (None, 0.25, 5, 65, 3725)] == ["—", "250ms", "5s", "1m 05s", "1h 02m"]


def test_phases_that_did_not_run_are_named_and_never_read_as_succeeded():
    after_failure = report(phases=PHASES[:3] + [{"name": "resources", "status": "failed", "started_at": "2026-11-25T03:02:30Z",
                                                 "finished_at": "2026-11-25T03:02:31Z", "detail": "refused"}], state=[])
    assert after_failure["outcome"] == "failed" and after_failure["failures"] == ["resources"]
    assert after_failure["not_run"] == ["data", "state", "scale-up"]
    assert headline(after_failure).endswith("; failed: resources; not run: data, state, scale-up.")
    assert "| scale-up | not run |  | the run stopped before it |" in render_markdown(after_failure)

    unrecorded = report(phases=PHASES[:4], state=[])  # nothing failed, yet data, state and scale-up left no record
    assert unrecorded["outcome"] == "failed"
    assert unrecorded["failures"] == ["data (not run)", "state (not run)", "scale-up (not run)"]
    assert headline(unrecorded).endswith("; failed: data (not run), state (not run), scale-up (not run).")
