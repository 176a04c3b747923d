# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: what was backed up, where, and which backup is the latest complete one.

Layout in the bucket (``prefix`` defaults to ``catalog``)::

    <prefix>/<cluster>/<node>/entries/<entry_id>.json   complete, verified entries
    <prefix>/<cluster>/<node>/tmp/<entry_id>.json       entries being written
    <prefix>/<cluster>/<node>/latest.json               pointer to the latest entry

Cluster-wide backups are filed under a scope instead of a node: a name starting with an
underscore, which no Kubernetes node can have (node names are DNS subdomains). Each producer
has its own scope so each has its own latest entry: ``_etcd`` (etcd snapshots), ``_velero``
(Velero backups), ``_images`` (worker images); ``_cluster`` when none is given.

Writing is ordered so that a reader never sees a half-made backup as the latest one: the
entry goes to a temporary key, is read back and checked against its sha256, is copied to
its final key and checked again, and only then does ``latest.json`` move to it. A failure at
any step leaves ``latest.json`` as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import secrets
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

SCHEMA_VERSION = 1
CLUSTER_SCOPE = "_cluster"
# Kinds of data an entry can name. Fixed so that a typo is an error, not a silent new kind.
DATA_KINDS = ("resources", "etcd_snapshot", "local_data", "workload_state", "image")
# An abandoned temporary entry (its writer died) is removed once it is this old.
STALE_TMP_SECONDS = 3600

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SCOPE_RE = re.compile(r"^_[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_AGE_RE = re.compile(r"^(\d+)\s*([smhdw]?)$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, field: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise MigrationError(
            "%s %r is not an ISO 8601 time" % (field, text),
            "write it like 2026-11-25T19:15:00Z",
        ) from None
    if when.tzinfo is None:
        raise MigrationError(
            "%s %r has no time zone" % (field, text), "add Z (UTC) or an offset such as +00:00"
        )
    return when.astimezone(dt.timezone.utc)


def parse_age(value: t.Union[str, int, None], field: str = "max_age") -> int | None:
    """Seconds in an age such as ``3600``, ``90m``, ``12h``, ``7d`` or ``2w``."""
    if value is None or value == "":
        return None
    match = _AGE_RE.match(str(value).strip())
    if not match:
        raise MigrationError(
            "%s %r is not an age" % (field, value), "write a number with s, m, h, d or w, like 7d"
        )
    return int(match.group(1)) * _AGE_UNITS[match.group(2)]


def new_entry_id(created_at: dt.datetime) -> str:
    """Ids sort by time, so the newest entry is the last key of a listing."""
    return "%s-%s" % (created_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), secrets.token_hex(3))


def canonical_json(doc: t.Mapping[str, t.Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_name(value: t.Any, field: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise MigrationError(
            "%s %r is not a valid name" % (field, value),
            "use lowercase letters, digits, '-' and '.', as Kubernetes names do",
        )
    return value


def check_node(value: t.Any) -> str:
    """A node name, or a cluster-wide scope (``_etcd``, ...); None means ``_cluster``."""
    if value in (None, ""):
        return CLUSTER_SCOPE
    if isinstance(value, str) and _SCOPE_RE.match(value):
        return value
    return check_name(value, "node")


def _check_artifact(kind: str, index: int, item: t.Any) -> dict[str, t.Any]:
    where = "data.%s[%d]" % (kind, index)
    if not isinstance(item, dict):
        raise MigrationError("%s is not a mapping" % where, "give name, location and size")
    unknown = sorted(set(item) - {"name", "location", "size", "sha256", "created_at", "details"})
    if unknown:
        raise MigrationError(
            "%s has unknown keys %s" % (where, ", ".join(unknown)),
            "use only name, location, size, sha256, created_at and details",
        )
    for key in ("name", "location"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise MigrationError("%s.%s is missing or empty" % (where, key), "give a non-empty string")
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MigrationError("%s.size %r is not a byte count" % (where, size), "give an integer >= 0")
    if "sha256" in item and not (isinstance(item["sha256"], str) and _SHA256_RE.match(item["sha256"])):
        raise MigrationError(
            "%s.sha256 is not a sha256 hex digest" % where, "give 64 lowercase hex characters"
        )
    if "created_at" in item:
        parse_time(item["created_at"], where + ".created_at")
    if "details" in item and not isinstance(item["details"], dict):
        raise MigrationError("%s.details is not a mapping" % where, "give a mapping or leave it out")
    return dict(item)


def validate_data(data: t.Any) -> dict[str, list[dict[str, t.Any]]]:
    """Check the per-kind artifact lists of an entry and return a clean copy."""
    if not isinstance(data, dict) or not data:
        raise MigrationError(
            "data is empty or not a mapping",
            "give at least one of %s, each a list of artifacts" % ", ".join(DATA_KINDS),
        )
    clean: dict[str, list[dict[str, t.Any]]] = {}
    for kind, items in data.items():
        if kind not in DATA_KINDS:
            raise MigrationError(
                "data kind %r is unknown" % kind, "use one of %s" % ", ".join(DATA_KINDS)
            )
        if not isinstance(items, list):
            raise MigrationError("data.%s is not a list" % kind, "give a list of artifacts")
        clean[kind] = [_check_artifact(kind, i, item) for i, item in enumerate(items)]
    return clean


def build_entry(
    cluster: str,
    node: str | None,
    data: t.Any,
    created_at: dt.datetime | None = None,
    labels: t.Mapping[str, str] | None = None,
    entry_id: str | None = None,
) -> dict[str, t.Any]:
    """A new, validated catalog entry document."""
    created = created_at or utcnow()
    if entry_id is not None and not _ID_RE.match(entry_id):
        raise MigrationError(
            "entry_id %r is not a catalog entry id" % entry_id,
            "leave it out to get a new one, or reuse an id a previous run returned",
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "id": entry_id or new_entry_id(created),
        "cluster": check_name(cluster, "cluster"),
        "node": check_node(node),
        "created_at": format_time(created),
        "labels": {str(k): str(v) for k, v in (labels or {}).items()},
        "data": validate_data(data),
    }


def validate_entry(doc: t.Any) -> dict[str, t.Any]:
    """Check an entry read back from storage (or given whole by a user)."""
    if not isinstance(doc, dict):
        raise MigrationError("The catalog entry is not a JSON object", "write entries with backup_catalog")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MigrationError(
            "Catalog entry schema_version %r is not supported (this collection reads %d)"
            % (version, SCHEMA_VERSION),
            "upgrade hybridcloud.migration to a version that reads it",
        )
    for key in ("id", "cluster", "node", "created_at", "data"):
        if key not in doc:
            raise MigrationError("The catalog entry has no %r" % key, "write entries with backup_catalog")
    if not _ID_RE.match(str(doc["id"])):
        raise MigrationError("Catalog entry id %r is malformed" % doc["id"], "write entries with backup_catalog")
    parse_time(doc["created_at"], "created_at")
    validate_data(doc["data"])
    return doc


@dataclasses.dataclass(frozen=True)
class CatalogKeys:
    """Where one cluster/node's catalog lives in the bucket."""

    prefix: str
    cluster: str
    node: str

    @property
    def base(self) -> str:
        head = self.prefix.strip("/")
        return "%s/%s/%s/" % (head, self.cluster, self.node) if head else "%s/%s/" % (self.cluster, self.node)

    def entry(self, entry_id: str) -> str:
        return "%sentries/%s.json" % (self.base, entry_id)

    def tmp(self, entry_id: str) -> str:
        return "%stmp/%s.json" % (self.base, entry_id)

    @property
    def latest(self) -> str:
        return self.base + "latest.json"

    def committed(self, entry_id: str) -> str:
        """The record a writer leaves last, once its entry is whole and latest has been decided."""
        return "%scommitted/%s.json" % (self.base, entry_id)

    def entry_id_of(self, key: str, folder: str = "entries/") -> str | None:
        """The id in an entries/ (or ``folder``) key, or None for anything else."""
        name = key[len(self.base + folder):] if key.startswith(self.base + folder) else ""
        entry_id = name[: -len(".json")] if name.endswith(".json") else ""
        return entry_id if _ID_RE.match(entry_id) else None


def summarize(entry: t.Mapping[str, t.Any], now: dt.datetime) -> dict[str, t.Any]:
    """What a reader wants at a glance: when, how old, and what each data kind holds."""
    created = parse_time(entry["created_at"], "created_at")
    kinds = {}
    for kind, items in entry["data"].items():
        times = [parse_time(i["created_at"], "created_at") for i in items if "created_at" in i]
        oldest = min(times) if times else created
        kinds[kind] = {
            "artifacts": len(items),
            "bytes": sum(int(i["size"]) for i in items),
            "oldest_at": format_time(oldest),
            "age_seconds": max(0, int((now - oldest).total_seconds())),
        }
    return {
        "id": entry["id"],
        "cluster": entry["cluster"],
        "node": entry["node"],
        "created_at": entry["created_at"],
        "age_seconds": max(0, int((now - created).total_seconds())),
        "kinds": kinds,
    }
