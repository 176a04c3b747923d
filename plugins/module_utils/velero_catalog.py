# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Velero's backups, recorded in the backup catalog (scope ``_velero``).

Velero writes each backup under ``<prefix>/backups/<name>/`` of its storage location: the Backup
object with its status (``velero-backup.json``), the resources (``<name>.tar.gz``), logs and lists.
Velero has no hook that runs when a backup completes, so the catalog learns of backups by
looking at the storage itself (no Kubernetes access needed, so this also works from a host of
the site): ``sync`` picks the newest Completed, unexpired backup of each schedule and records
them as one catalog entry with the tarballs' sizes and sha256. The entry's RPO is the oldest of
their start times: Velero reads the cluster from the start of a backup on.

Standard library only (node agents bundle it); the S3 client is boto3's or the stdlib SigV4 one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import is_missing, s3_errors

SCOPE = "_velero"
SCHEDULE_LABEL = "velero.io/schedule-name"
_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class VeleroBackup:
    """What the catalog needs of one Velero Backup object as stored beside its tarball."""

    name: str
    phase: str
    schedule: str
    started_at: str
    completed_at: str
    expires_at: str
    included_namespaces: tuple[str, ...]
    items_backed_up: int
    version: str

    @classmethod
    def from_object(cls, doc: t.Mapping[str, t.Any]) -> "VeleroBackup":
        meta, spec, status = doc.get("metadata") or {}, doc.get("spec") or {}, doc.get("status") or {}
        progress = status.get("progress") or {}
        return cls(
            name=str(meta.get("name", "")),
            phase=str(status.get("phase", "")),
            schedule=str((meta.get("labels") or {}).get(SCHEDULE_LABEL, "")),
            started_at=str(status.get("startTimestamp", "")),
            completed_at=str(status.get("completionTimestamp", "")),
            expires_at=str(status.get("expiration", "")),
            included_namespaces=tuple(spec.get("includedNamespaces") or ()),
            items_backed_up=int(progress.get("itemsBackedUp") or 0),
            version=str(status.get("version", "")),
        )

    def usable(self, now: dt.datetime) -> bool:
        """Completed, with both timestamps, and not past its TTL (Velero deletes it then)."""
        if self.phase != "Completed" or not self.started_at or not self.completed_at:
            return False
        return not self.expires_at or catalog.parse_time(self.expires_at, "expiration") > now


def backups_prefix(prefix: str) -> str:
    head = prefix.strip("/")
    return "%s/backups/" % head if head else "backups/"


def list_backups(client: t.Any, settings: t.Any, bucket: str, prefix: str) -> list[VeleroBackup]:
    """Every backup Velero stored under ``prefix``, oldest start first (unreadable ones skipped)."""
    folder = backups_prefix(prefix)
    names: list[str] = []
    with s3_errors(settings, "listing Velero's backups under s3://%s/%s" % (bucket, folder), bucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
            names.extend(p["Prefix"][len(folder):].rstrip("/") for p in page.get("CommonPrefixes", []))
    found = []
    for name in names:
        key = "%s%s/velero-backup.json" % (folder, name)
        with s3_errors(settings, "reading %s" % key, bucket):
            try:
                raw = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as err:  # pylint: disable=broad-exception-caught  # boto3 and SigV4 errors differ
                if is_missing(err):
                    continue  # a backup Velero is still writing, or half-deleted by its garbage collector
                raise
        try:
            found.append(VeleroBackup.from_object(json.loads(raw)))
        except (ValueError, TypeError):
            continue  # not a Backup object: not Velero's, so not ours to judge
    return sorted(found, key=lambda b: (b.started_at, b.name))


def pick_newest(
    backups: t.Sequence[VeleroBackup], schedules: t.Sequence[str], now: dt.datetime
) -> tuple[list[VeleroBackup], list[str]]:
    """The newest usable backup of each schedule (all schedules seen, when none are named).

    Returns the picks (sorted by schedule) and the named schedules that have no usable backup.
    Backups made without a schedule (``velero backup create`` by hand) are left out: a schedule
    is what keeps a resource backup fresh.
    """
    wanted = list(schedules) or sorted({b.schedule for b in backups if b.schedule})
    newest: dict[str, VeleroBackup] = {}
    for backup in backups:
        if backup.schedule in wanted and backup.usable(now):
            best = newest.get(backup.schedule)
            if best is None or (backup.completed_at, backup.name) > (best.completed_at, best.name):
                newest[backup.schedule] = backup
    missing = [name for name in wanted if name not in newest]
    return [newest[name] for name in sorted(newest)], missing


def newer_failures(backups: t.Sequence[VeleroBackup], picks: t.Sequence[VeleroBackup]) -> list[str]:
    """Backups of a picked schedule that ended worse than Completed after the pick started."""
    picked = {b.schedule: b for b in picks}
    return [
        "Velero backup %s (schedule %s) is %s; the catalog names the older %s" % (b.name, b.schedule, b.phase, picked[b.schedule].name)
        for b in backups
        if b.schedule in picked and b.phase in ("Failed", "PartiallyFailed", "FailedValidation")
        and b.started_at > picked[b.schedule].started_at
    ]


def tarball_artifact(client: t.Any, settings: t.Any, bucket: str, prefix: str, backup: VeleroBackup) -> dict[str, t.Any]:
    """The catalog artifact of one backup's tarball: size and sha256 of the stored bytes."""
    key = "%s%s/%s.tar.gz" % (backups_prefix(prefix), backup.name, backup.name)
    digest, size = hashlib.sha256(), 0
    with s3_errors(settings, "reading the Velero tarball %s" % key, bucket, "nothing was written to the catalog"):
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as err:  # pylint: disable=broad-exception-caught
            if is_missing(err):
                raise MigrationError(
                    "Velero backup %s is Completed but its tarball s3://%s/%s is missing" % (backup.name, bucket, key),
                    "check that nothing else deletes from Velero's prefix; the next scheduled backup will be recorded instead",
                ) from err
            raise
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    details = {
        "schedule": backup.schedule,
        "phase": backup.phase,
        "completed_at": backup.completed_at,
        "items_backed_up": backup.items_backed_up,
        "velero_version": backup.version,
        "backup_object": "s3://%s/%s%s/velero-backup.json" % (bucket, backups_prefix(prefix), backup.name),
    }
    if backup.expires_at:
        details["expires_at"] = backup.expires_at
    if backup.included_namespaces:
        details["included_namespaces"] = list(backup.included_namespaces)
    return {
        "name": backup.name,
        "location": "s3://%s/%s" % (bucket, key),
        "size": size,
        "sha256": digest.hexdigest(),
        "created_at": catalog.format_time(catalog.parse_time(backup.started_at, "startTimestamp")),
        "details": details,
    }


def recorded_names(entry: t.Mapping[str, t.Any] | None) -> list[str]:
    return sorted(item["name"] for item in (entry or {}).get("data", {}).get("resources", []))


def sync(
    store: CatalogStore,
    cluster: str,
    velero_client: t.Any,
    velero_bucket: str,
    velero_prefix: str = "velero",
    schedules: t.Sequence[str] = (),
    keep_last: int | None = None,
    max_age: t.Union[str, int, None] = None,
    check_mode: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, t.Any]:
    """Record the newest Completed backup of each schedule, unless the latest entry names them already.

    Then prunes: by ``keep_last``/``max_age``, and every entry naming a backup Velero has since
    deleted (its TTL passed), never the latest. Fails, changing nothing, when no schedule has a
    usable backup.
    """
    now = now or catalog.utcnow()
    catalog.check_name(cluster, "cluster")
    store.check_bucket()
    backups = list_backups(velero_client, store.settings, velero_bucket, velero_prefix)
    picks, missing = pick_newest(backups, schedules, now)
    where = "s3://%s/%s" % (velero_bucket, backups_prefix(velero_prefix))
    if not picks:
        raise MigrationError(
            "No Completed, unexpired Velero backup of %s under %s (%d backups there)"
            % ("schedule " + ", ".join(schedules) if schedules else "any schedule", where, len(backups)),
            "check that the velero role ran and the backup storage location is Available, then wait for a "
            "scheduled backup or run playbooks/backup_now.yml; check velero_s3_prefix if backups are elsewhere",
        )
    result: dict[str, t.Any] = {
        "changed": False,
        "recorded": [b.name for b in picks],
        "missing_schedules": missing,
        "warnings": newer_failures(backups, picks) + [
            "Velero schedule %s has no Completed, unexpired backup under %s yet" % (name, where) for name in missing
        ],
        "entry_id": None,
        "latest_updated": False,
        "pruned": [],
    }
    keys = store.keys(cluster, SCOPE)
    latest = store.latest(cluster, SCOPE)
    if latest is not None and recorded_names(latest) == sorted(result["recorded"]):
        result["entry_id"] = latest["id"]
    else:
        artifacts = [tarball_artifact(velero_client, store.settings, velero_bucket, velero_prefix, b) for b in picks]
        oldest = min(catalog.parse_time(a["created_at"], "created_at") for a in artifacts)
        entry = catalog.build_entry(cluster, SCOPE, {"resources": artifacts}, created_at=oldest, labels={"tool": "velero"})
        written = store.write(entry, verify="size", check_mode=check_mode)
        result["warnings"] += written["warnings"]
        result.update(changed=written["changed"], entry_id=entry["id"], latest_updated=written["latest_updated"], entry=entry)
    result["pruned"] = prune(store, keys, {b.name for b in backups}, keep_last, catalog.parse_age(max_age), now, check_mode)
    result["changed"] = result["changed"] or bool(result["pruned"])
    return result


def prune(
    store: CatalogStore,
    keys: catalog.CatalogKeys,
    existing: t.Collection[str],
    keep_last: int | None,
    max_age: int | None,
    now: dt.datetime,
    check_mode: bool,
) -> list[str]:
    """Retention, plus the entries that name a backup Velero no longer has (never latest's)."""
    pruned = store.prune(keys, keep_last, max_age, now, check_mode=check_mode)
    latest = store.latest_id(keys)
    gone = []
    for entry_id in store.entry_ids(keys):
        key = keys.entry(entry_id)
        if key in pruned or (latest and latest[0] == entry_id):
            continue
        try:
            names = recorded_names(store.read_entry(keys, entry_id))
        except MigrationError:
            continue  # a damaged entry is backup_catalog_info's to report
        if any(name not in existing for name in names):
            gone.append(key)
    if gone and not check_mode:
        store.delete_entries(keys, gone, "deleting %d catalog entries whose Velero backups expired" % len(gone))
    return pruned + gone
