# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration report: what moved, how long each phase took (the RTO), how old each kind of
backup was (the RPO), what was skipped and why. JSON for machines, Markdown for people.

The headline says the outcome in one line; the tables follow in the order a person asks:
did it work, how long, how much was lost, what is left to do.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

REPORT_SCHEMA = 1
PHASES = ("plan", "provision", "join", "resources", "data", "state", "scale-up")
PHASE_STATUSES = ("ok", "failed", "skipped")
STATE_OUTCOMES = ("restored", "cold-start", "failed")
DATA_OUTCOMES = ("restored", "failed", "skipped")


def _time(value: t.Any, field: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MigrationError("%s %r is not an ISO 8601 time" % (field, value), "write it like 2026-11-25T19:15:00Z") from None
    if when.tzinfo is None:
        raise MigrationError("%s %r has no time zone" % (field, value), "add Z (UTC) or an offset")
    return when.astimezone(dt.timezone.utc)


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float | None) -> str:
    """``4m 12s``, ``1h 03m``, ``850ms``; an em dash for unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return "%dms" % round(seconds * 1000)
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "%dh %02dm" % (hours, minutes)
    if minutes:
        return "%dm %02ds" % (minutes, secs)
    return "%ds" % secs


def _phase(item: t.Mapping[str, t.Any], index: int) -> dict[str, t.Any]:
    where = "phases[%d]" % index
    name = item.get("name")
    if name not in PHASES:
        raise MigrationError("%s.name %r is not a phase" % (where, name), "use one of %s" % ", ".join(PHASES))
    status = item.get("status", "ok")
    if status not in PHASE_STATUSES:
        raise MigrationError("%s.status %r is unknown" % (where, status), "use one of %s" % ", ".join(PHASE_STATUSES))
    phase: dict[str, t.Any] = {"name": name, "status": status, "detail": str(item.get("detail") or "")}
    if status != "skipped":
        started, finished = _time(item.get("started_at"), where + ".started_at"), _time(item.get("finished_at"), where + ".finished_at")
        if finished < started:
            raise MigrationError("%s finished before it started" % where, "give started_at <= finished_at")
        phase.update(started_at=_iso(started), finished_at=_iso(finished), seconds=(finished - started).total_seconds())
    return phase


def _rpo(backups: t.Mapping[str, t.Any], failed_at: dt.datetime) -> dict[str, dict[str, t.Any]]:
    """Per kind of data: when the backup used was taken and how much time before the failure it misses."""
    rpo = {}
    for kind, taken in sorted(backups.items()):
        if not taken:
            rpo[kind] = {"taken_at": None, "seconds": None}
            continue
        when = _time(taken, "backups.%s" % kind)
        rpo[kind] = {"taken_at": _iso(when), "seconds": max(0.0, (failed_at - when).total_seconds())}
    return rpo


def build_report(
    *,
    run_id: str,
    failed_node: str,
    source_cluster: str,
    target_cluster: str,
    target_cloud: str,
    phases: t.Sequence[t.Mapping[str, t.Any]],
    plan: t.Mapping[str, t.Any] | None = None,
    backups: t.Mapping[str, t.Any] | None = None,
    data: t.Sequence[t.Mapping[str, t.Any]] = (),
    state: t.Sequence[t.Mapping[str, t.Any]] = (),
    failed_at: str | None = None,
    target_node: str = "",
    warnings: t.Sequence[str] = (),
) -> dict[str, t.Any]:
    """The report document. RTO counts from the failure (or the first phase) to the last phase's end."""
    checked = [_phase(p, i) for i, p in enumerate(phases)]
    timed = [p for p in checked if "seconds" in p]
    if not timed:
        raise MigrationError("No phase has a start and an end", "give at least the plan phase with started_at and finished_at")
    start = min(_time(p["started_at"], "started_at") for p in timed)
    end = max(_time(p["finished_at"], "finished_at") for p in timed)
    failure = _time(failed_at, "failed_at") if failed_at else start
    plan = plan or {}
    for item in state:
        if item.get("outcome") not in STATE_OUTCOMES:
            raise MigrationError("state item %r has outcome %r" % (item.get("name"), item.get("outcome")),
                                 "use one of %s" % ", ".join(STATE_OUTCOMES))
    for item in data:
        if item.get("outcome") not in DATA_OUTCOMES:
            raise MigrationError("data item %r has outcome %r" % (item.get("name"), item.get("outcome")),
                                 "use one of %s" % ", ".join(DATA_OUTCOMES))
    failed = [p["name"] for p in checked if p["status"] == "failed"]
    failed += ["data %s" % d["name"] for d in data if d["outcome"] == "failed"]
    failed += ["state %s" % s["name"] for s in state if s["outcome"] == "failed"]
    # A phase with no record did not run: after a failure that is expected; without one, the run
    # stopped somewhere nothing recorded it (a host gone), and it must not read as done.
    not_run = [name for name in PHASES if name not in {p["name"] for p in checked}]
    if not_run and not failed:
        failed += ["%s (not run)" % name for name in not_run]
    report = {
        "schema": REPORT_SCHEMA,
        "run_id": run_id,
        "failed_node": failed_node,
        "source_cluster": source_cluster,
        "target_cluster": target_cluster,
        "target_cloud": target_cloud,
        "target_node": target_node or plan.get("target_node", ""),
        "outcome": "failed" if failed else ("partial" if any(s["outcome"] == "cold-start" for s in state) else "succeeded"),
        "failures": failed,
        "not_run": not_run,
        "failed_at": _iso(failure),
        "started_at": _iso(start),
        "finished_at": _iso(end),
        "rto_seconds": (end - failure).total_seconds(),
        "migration_seconds": (end - start).total_seconds(),
        "phases": checked,
        "rpo": _rpo(backups or {}, failure),
        "workloads": [dict(w) for w in plan.get("selected", []) if w.get("kind") in _WORKLOAD_KINDS],
        "selected": [dict(s) for s in plan.get("selected", [])],
        "skipped": [dict(s) for s in plan.get("skipped", [])],
        "data": [dict(d) for d in data],
        "state": [dict(s) for s in state],
        "warnings": list(plan.get("warnings", [])) + list(warnings),
    }
    return report


_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob", "Job", "Pod", "ReplicaSet")


def share_moved(share: t.Optional[t.Mapping[str, t.Any]]) -> str:
    """What of a workload moved, for people: ``2 of 4``, ``ordinal 0 of 2``, ``all``."""
    if not share or not share.get("stays"):
        return "all"
    if share.get("ordinals"):
        first = int(share["ordinals"]["start"])
        last = first + int(share["ordinals"]["count"]) - 1
        return "ordinal%s %s of %s" % ("" if first == last else "s", first if first == last else "%d..%d" % (first, last), share.get("of"))
    if int(share.get("of") or 0) > 1:
        return "%s of %s" % (share.get("moves"), share.get("of"))
    return "all"


def share_stayed(share: t.Optional[t.Mapping[str, t.Any]]) -> str:
    if not share or not share.get("stays"):
        return "none"
    source = share.get("source") or {}
    text = "%s" % share["stays"]
    if source.get("ordinals_start") is not None and share.get("ordinals"):
        text += " (from ordinal %s)" % source["ordinals_start"]
    autoscaler = share.get("autoscaler") or {}
    if autoscaler.get("source"):
        text += "; autoscaler %s: %s..%s in the source, %s..%s in the target" % (
            autoscaler.get("name"), autoscaler["source"].get("minReplicas"), autoscaler["source"].get("maxReplicas"),
            autoscaler["target"].get("minReplicas"), autoscaler["target"].get("maxReplicas"))
    return text


def headline(report: t.Mapping[str, t.Any]) -> str:
    """One line: outcome, what moved where, RTO, worst RPO."""
    mark = {"succeeded": "SUCCEEDED", "partial": "PARTIAL", "failed": "FAILED"}[report["outcome"]]
    cold = sum(1 for s in report["state"] if s["outcome"] == "cold-start")
    rpos = ", ".join("%s %s" % (kind, human_duration(value["seconds"])) for kind, value in report["rpo"].items())
    line = "%s: %d workloads of %s (%s) moved to %s on %s%s in %s (RTO)" % (
        mark, len(report["workloads"]), report["failed_node"], report["source_cluster"], report["target_cluster"],
        report["target_cloud"], " node " + report["target_node"] if report["target_node"] else "",
        human_duration(report["rto_seconds"]),
    )
    if rpos:
        line += "; RPO %s" % rpos
    if cold:
        line += "; %d started without their in-memory state" % cold
    if report["failures"]:
        line += "; failed: %s" % ", ".join(report["failures"])
    not_run = [name for name in report.get("not_run", []) if "%s (not run)" % name not in report["failures"]]
    if not_run:
        line += "; not run: %s" % ", ".join(not_run)
    return line + "."


def _table(header: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]]) -> list[str]:
    def cell(value: t.Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| %s |" % " | ".join(header), "|%s|" % "|".join(["---"] * len(header))]
    lines += ["| %s |" % " | ".join(cell(v) for v in row) for row in rows]
    return lines


def render_markdown(report: t.Mapping[str, t.Any]) -> str:
    """The report for people: headline first, then phases, RPO, workloads, data, state, skipped, warnings."""
    lines = ["# Migration %s: %s" % (report["run_id"], report["outcome"]), "", "**%s**" % headline(report), ""]
    lines += ["Node %s failed at %s; migration ran %s – %s." % (
        report["failed_node"], report["failed_at"], report["started_at"], report["finished_at"]), ""]
    lines += ["## Time per phase (RTO %s)" % human_duration(report["rto_seconds"]), ""]
    lines += _table(["phase", "status", "time", "detail"],
                    [[p["name"], p["status"], human_duration(p.get("seconds")), p["detail"]] for p in report["phases"]]
                    + [[name, "not run", "", "the run stopped before it"] for name in report.get("not_run", [])])
    if report["rpo"]:
        lines += ["", "## Age of the backups used (RPO)", ""]
        lines += _table(["data", "taken at", "lost before the failure"],
                        ([kind, v["taken_at"] or "none", human_duration(v["seconds"])] for kind, v in report["rpo"].items()))
    if report["workloads"]:
        lines += ["", "## Workloads moved", ""]
        lines += _table(["kind", "namespace", "name", "moved", "stayed in the source", "why"],
                        ([w.get("kind"), w.get("namespace", ""), w.get("name"), share_moved(w.get("share")), share_stayed(w.get("share")),
                          (w.get("share") or {}).get("why") or w.get("reason", "")] for w in report["workloads"]))
    if report["data"]:
        lines += ["", "## Local data", ""]
        lines += _table(["data", "outcome", "bytes", "detail"],
                        ([d.get("name"), d["outcome"], d.get("bytes", ""), d.get("detail", "")] for d in report["data"]))
    if report["state"]:
        lines += ["", "## In-memory state (checkpoints)", ""]
        lines += _table(["container", "outcome", "why"],
                        ([s.get("name"), s["outcome"], s.get("reason", "")] for s in report["state"]))
    if report["skipped"]:
        lines += ["", "## Left out, and why", ""]
        lines += _table(["kind", "namespace", "name", "why"],
                        ([s.get("kind"), s.get("namespace", ""), s.get("name"), s.get("reason", "")] for s in report["skipped"]))
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + ["- %s" % w for w in report["warnings"]]
    return "\n".join(lines) + "\n"
