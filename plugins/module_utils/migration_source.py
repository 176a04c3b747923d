# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a migration starts: the failed node's backups in S3, and the plan saved beside them.

``plan_migration`` reads the catalog (the latest ``_velero`` entry for the resources, the failed
node's latest entry for its local data and checkpoints), refuses backups that are missing or
older than allowed, streams the Velero tarballs straight from S3 (so the target cluster needs no
Velero) checking them against the sha256 the catalog recorded, builds the plan and saves it under
``<plans_prefix>/<cluster>/<run_id>/plan.json``. A re-run with the same run id returns the saved
plan unchanged, so a migration that stopped half-way resumes with the plan it started with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore, split_s3_location
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.live import LiveState
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.node_backup import attach_node_backup
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan import secret_data
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.stages import build_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, is_missing
from ansible_collections.hybridcloud.migration.plugins.module_utils.velero_catalog import SCOPE as VELERO_SCOPE
from ansible_collections.hybridcloud.migration.plugins.module_utils.velero_tarball import read_tarball


class _HashingReader:
    """A stream that hashes what passes through it (the tarball is read once, checked at the end)."""

    def __init__(self, body: t.Any) -> None:
        self._body = body
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._body.read(size)
        self.digest.update(chunk)
        self.size += len(chunk)
        return t.cast(bytes, chunk)


def plan_key(prefix: str, cluster: str, run_id: str) -> str:
    head = prefix.strip("/")
    return "%s/%s/%s/plan.json" % (head, cluster, run_id) if head else "%s/%s/plan.json" % (cluster, run_id)


def _age(entry: t.Mapping[str, t.Any], now: dt.datetime) -> float:
    return (now - catalog.parse_time(entry["created_at"], "created_at")).total_seconds()


def check_freshness(
    what: str, entry: t.Mapping[str, t.Any], max_age: int | None, accept_old: bool, now: dt.datetime
) -> list[str]:
    """Refuse (or, when accepted, warn about) a backup older than ``max_age`` seconds."""
    age = _age(entry, now)
    if max_age is None or age <= max_age:
        return []
    problem = "The latest %s backup (entry %s, taken %s) is %s old, more than max_backup_age %s" % (
        what, entry["id"], entry["created_at"], _human(age), _human(max_age))
    if not accept_old:
        raise MigrationError(problem, "restore from it anyway with accept_old_backup=true, or raise max_backup_age; "
                                      "check with playbooks/backup_status.yml why backups stopped")
    return [problem + "; accepted (accept_old_backup)"]


def _human(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return "%dd %dh" % (days, hours) if days else ("%dh %dm" % (hours, minutes) if hours else "%dm %ds" % (minutes, rest % 60))


def read_velero_objects(store: CatalogStore, entry: t.Mapping[str, t.Any]) -> tuple[list[dict[str, t.Any]], list[str]]:
    """Every object of the entry's Velero tarballs (newer backups win for the same object), and reader warnings."""
    merged: dict[tuple[str, str, str, str], dict[str, t.Any]] = {}
    warnings: list[str] = []
    for artifact in sorted(entry["data"].get("resources", []), key=lambda a: a.get("created_at", "")):
        where = split_s3_location(artifact["location"])
        if where is None:
            raise MigrationError("Resource backup %s is not in S3 (%s)" % (artifact["name"], artifact["location"]),
                                 "record Velero backups with the velero_catalog module or role")
        bucket, key = where
        label = "Velero backup %s (s3://%s/%s)" % (artifact["name"], bucket, key)
        # Into a temporary file first, hashed on the way: only the tarball the catalog recorded is parsed.
        with tempfile.TemporaryFile(prefix="hcm-velero-") as copy:
            with store.errors("reading %s" % label):
                try:
                    body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
                except Exception as err:  # pylint: disable=broad-exception-caught  # boto3 and SigV4 errors differ
                    if is_missing(err):
                        raise MigrationError("%s is gone from the storage" % label,
                                             "Velero deleted it (TTL) after it was recorded; run playbooks/backup_now.yml on the "
                                             "source if it still runs, or pick an older catalog entry") from err
                    raise
                reader = _HashingReader(body)
                for chunk in iter(lambda: reader.read(1024 * 1024), b""):
                    copy.write(chunk)
            if artifact.get("sha256") and reader.digest.hexdigest() != artifact["sha256"]:
                raise MigrationError("%s does not match the sha256 the catalog recorded" % label,
                                     "the tarball changed or is damaged; record the backups again (velero_catalog) and re-run")
            copy.seek(0)
            tarball = read_tarball(copy, label=label)
        warnings.extend(tarball.warnings)
        for obj in tarball.objects:
            meta = obj.get("metadata") or {}
            api_version = str(obj.get("apiVersion", ""))
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            merged[(group, str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))] = obj
    return list(merged.values()), warnings


def plan_migration(
    store: CatalogStore,
    cluster: str,
    failed_node: str,
    options: PlanOptions,
    *,
    plans_prefix: str = "migrations",
    max_backup_age: t.Union[str, int, None] = None,
    accept_old_backup: bool = False,
    require_node_backup: bool = True,
    replan: bool = False,
    check_mode: bool = False,
    now: dt.datetime | None = None,
    observe: t.Optional[t.Callable[[list[dict[str, t.Any]]], tuple[t.Optional[LiveState], str]]] = None,
) -> dict[str, t.Any]:
    """The plan of this run: the saved one, or a new one built from the latest backups (then saved).

    ``observe(objects)`` asks the live source cluster (``source_reschedule.observe_source``); it
    runs once the backups and the options are found good, so bad input changes nothing.
    """
    now = now or catalog.utcnow()
    catalog.check_name(cluster, "cluster")
    store.check_bucket()
    key = plan_key(plans_prefix, cluster, options.run_id)
    if not replan:
        saved = store.read_bytes(key, "reading the saved plan %s" % key)
        if saved is not None:
            plan = json.loads(saved)
            if plan.get("failed_node") != failed_node:
                raise MigrationError("Run %s already has a plan for node %s, not %s" % (options.run_id, plan.get("failed_node"), failed_node),
                                     "use another run_id for this node")
            return {"changed": False, "plan": plan, "plan_key": key, "reused": True}

    velero_entry = store.latest(cluster, VELERO_SCOPE)
    if velero_entry is None:
        raise MigrationError(
            "The catalog of cluster %s has no complete Velero backup (scope %s), so the node's resources cannot be restored"
            % (cluster, VELERO_SCOPE),
            "install the backups with playbooks/backup.yml and check them with playbooks/backup_status.yml",
        )
    node_entry = store.latest(cluster, failed_node)
    max_age = catalog.parse_age(max_backup_age, "max_backup_age")
    warnings = check_freshness("resources", velero_entry, max_age, accept_old_backup, now)
    if node_entry is None:
        problem = "The catalog of cluster %s has no complete backup of node %s (local data, checkpoints)" % (cluster, failed_node)
        if require_node_backup:
            raise MigrationError(problem, "check the node name (known nodes: %s); or set require_node_backup=false to move "
                                          "the workloads without their local data and state" % (", ".join(
                                              n for c, n in store.scopes(cluster) if not n.startswith("_")) or "none"))
        warnings.append(problem + ": its workloads start with empty local volumes and no in-memory state")
    else:
        warnings += check_freshness("local data of %s" % failed_node, node_entry, max_age, accept_old_backup, now)

    objects, reader_warnings = read_velero_objects(store, velero_entry)
    options.validate()
    live = None
    if observe is not None:
        live, problem = observe(objects)
        if problem:
            warnings.append(problem)
    plan = attach_node_backup(build_plan(objects, failed_node, options, live), node_entry)
    plan["warnings"] = list(plan.get("warnings", [])) + warnings + reader_warnings
    plan["backups"] = backups_used(velero_entry, node_entry)
    secret_data.withhold(plan, velero_entry["data"].get("resources", []), options.namespace_map)
    if not check_mode:
        store.write_json(key, plan, "saving the plan to %s" % key, "nothing was restored yet; run again")
    return {"changed": True, "plan": plan, "plan_key": key, "reused": False}


def fill_secret_values(client: t.Any, settings: S3Settings, plan_secret_data: t.Mapping[str, t.Any],
                       manifests: t.Iterable[dict[str, t.Any]]) -> list[str]:
    """Put the values of the plan's Secrets back into ``manifests`` (in memory), from the Velero
    tarballs the plan was made from; return the values (the caller keeps them out of its output)."""
    artifacts = list(plan_secret_data.get("from") or [])
    where = split_s3_location(str(artifacts[0].get("location") or "")) if artifacts else None
    if where is None:
        raise MigrationError("The plan's secret_data names no Velero backup in S3 to read its Secrets from",
                             "give the plan as migration_plan made it, or make a new one (replan=true)")
    store = CatalogStore(client, settings, where[0])
    objects, _warnings = read_velero_objects(store, {"data": {"resources": artifacts}})
    manifests = list(manifests)
    secret_data.fill(manifests, plan_secret_data, objects)
    return [str(value) for manifest in manifests if manifest.get("kind") == secret_data.SECRET_KIND
            for field in secret_data.VALUE_FIELDS for value in (manifest.get(field) or {}).values()]


def backups_used(velero_entry: t.Mapping[str, t.Any], node_entry: t.Mapping[str, t.Any] | None) -> dict[str, t.Any]:
    """Per kind of data, when its oldest artifact was taken (the RPO counts from there), and the entries used."""
    now = catalog.utcnow()
    kinds = dict(catalog.summarize(node_entry, now)["kinds"]) if node_entry else {}
    kinds.update(catalog.summarize(velero_entry, now)["kinds"])
    return {
        "taken_at": {kind: kinds.get(kind, {}).get("oldest_at") for kind in ("resources", "local_data", "workload_state")},
        "entries": {"resources": velero_entry["id"], "node": node_entry["id"] if node_entry else None},
    }


def summarize_plan(plan: t.Mapping[str, t.Any]) -> dict[str, int]:
    """Counts a person reads first."""
    workload_kinds = {"Deployment", "StatefulSet", "CronJob", "Job", "ReplicaSet", "Pod"}
    return {
        "selected": len(plan.get("selected", [])),
        "workloads": sum(1 for s in plan.get("selected", []) if s.get("kind") in workload_kinds),
        "skipped": len(plan.get("skipped", [])),
        "objects": sum(len(stage.get("objects", [])) for stage in plan.get("stages", [])),
        "local_data": len(plan.get("local_data", [])),
        "workload_state": len(plan.get("workload_state", [])),
        "warnings": len(plan.get("warnings", [])),
    }


def describe_moves(plan: t.Mapping[str, t.Any]) -> list[str]:
    """One line per moved workload: what moves of it and what stays in the source."""
    lines = []
    for item in plan.get("selected") or []:
        share = item.get("share") or {}
        line = "%s/%s" % (item.get("kind"), item.get("name"))
        if not share.get("stays"):
            lines.append(line)
            continue
        if share.get("ordinals"):
            ordinals = share["ordinals"]
            first, last = ordinals["start"], ordinals["start"] + ordinals["count"] - 1
            line += " ordinal%s %s of %d" % ("" if first == last else "s", first if first == last else "%d..%d" % (first, last), share["of"])
        elif int(share.get("of") or 0) > 1:
            line += " %d of %d replicas" % (share["moves"], share["of"])
        lines.append(line + " (%d stay%s in the source)" % (share["stays"], "s" if share["stays"] == 1 else ""))
    return lines
