# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secret values stay in the backup: the plan names each Secret's keys and where its values are.

A plan travels: it is returned by ``migration_plan``, passed to ``ordered_restore``,
``moved_workloads`` and ``migration_report`` as a task argument, saved as ``plan.json`` beside
the catalog and returned again by ``migration_run_info``. So the plan never holds a Secret's
values. ``withhold`` (when the plan is made) removes ``data`` and ``stringData`` from every
Secret of the plan's stages and records, under the plan's ``secret_data``, the Velero tarballs
they were read from (location and sha256) and, per Secret, its source name and its keys.
``fill`` (in ``ordered_restore``, just before applying) reads those Secrets back from the
tarballs, checks that they still have the recorded keys and puts the values into the manifests
in memory only. The values are then where they already were: in the Velero backup and in the
two clusters.
"""

from __future__ import annotations

import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

SECRET_KIND = "Secret"
VALUE_FIELDS = ("data", "stringData")


def _secrets(stages: t.Iterable[t.Mapping[str, t.Any]]) -> t.Iterator[dict[str, t.Any]]:
    for stage in stages:
        for manifest in stage.get("objects") or []:
            if manifest.get("kind") == SECRET_KIND and str(manifest.get("apiVersion")) == "v1":
                yield manifest


def _where(manifest: t.Mapping[str, t.Any]) -> tuple[str, str]:
    metadata = manifest.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def withhold(plan: dict[str, t.Any], resources: t.Sequence[t.Mapping[str, t.Any]], namespace_map: t.Mapping[str, str]) -> int:
    """Take the values of every Secret out of ``plan`` (in place); return how many Secrets held values.

    ``resources`` are the catalog's Velero artifacts the plan was read from (``location``,
    ``sha256``, ``name``, ``created_at``); ``namespace_map`` the plan's (source -> target), whose
    inverse names each Secret's source namespace (the plan refuses a map that makes two objects one).
    """
    source_of = {target: source for source, target in namespace_map.items()}
    withheld = []
    for manifest in _secrets(plan.get("stages") or []):
        keys = sorted({key for field in VALUE_FIELDS for key in (manifest.get(field) or {})})
        for field in VALUE_FIELDS:
            manifest.pop(field, None)
        if not keys:
            continue
        namespace, name = _where(manifest)
        withheld.append({"namespace": namespace, "name": name, "source_namespace": source_of.get(namespace, namespace), "keys": keys})
    if withheld:
        plan["secret_data"] = {
            "from": [{key: artifact.get(key) for key in ("name", "location", "sha256", "created_at")} for artifact in resources],
            "secrets": withheld,
        }
    return len(withheld)


def needed(plan: t.Mapping[str, t.Any]) -> bool:
    """Whether the plan's Secrets need their values read from the backup before they are applied."""
    return bool((plan.get("secret_data") or {}).get("secrets"))


def fill(manifests: t.Iterable[dict[str, t.Any]], secret_data: t.Mapping[str, t.Any],
         backup_objects: t.Iterable[t.Mapping[str, t.Any]]) -> int:
    """Put back (in place) the values of the Secrets ``secret_data`` names, from the backup's objects.

    Raises ``MigrationError`` when a Secret is not in the backup any more or lost one of its keys:
    applying it empty would break its workloads silently.
    """
    manifests = list(manifests)
    in_backup = {_where(obj): obj for obj in backup_objects if obj.get("kind") == SECRET_KIND}
    wanted = {(entry["namespace"], entry["name"]): entry for entry in secret_data.get("secrets") or []}
    filled = 0
    for manifest in manifests:
        entry = wanted.get(_where(manifest)) if manifest.get("kind") == SECRET_KIND else None
        if entry is None:
            continue
        source = in_backup.get((entry["source_namespace"], entry["name"]))
        backups = ", ".join(str(artifact.get("name")) for artifact in secret_data.get("from") or []) or "none recorded"
        if source is None:
            raise MigrationError(
                "Secret %s/%s is not in the Velero backup the plan was made from (%s)" % (entry["source_namespace"], entry["name"], backups),
                "make a new plan (migration_plan with replan=true) from the latest backups")
        values = {field: dict(source.get(field) or {}) for field in VALUE_FIELDS if source.get(field)}
        missing = sorted(set(entry["keys"]) - {key for field in values.values() for key in field})
        if missing:
            raise MigrationError(
                "Secret %s/%s in the Velero backup %s lacks the keys %s the plan names" % (
                    entry["source_namespace"], entry["name"], backups, ", ".join(missing)),
                "make a new plan (migration_plan with replan=true) from the latest backups")
        manifest.update(values)
        filled += 1
    if filled != len(wanted):
        absent = sorted("%s/%s" % key for key in set(wanted) - {_where(m) for m in manifests if m.get("kind") == SECRET_KIND})
        raise MigrationError("The plan's secret_data names Secrets its stages do not hold: %s" % ", ".join(absent),
                             "give the plan as migration_plan made it")
    return filled
