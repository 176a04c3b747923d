"""Which Velero backups the catalog records: the newest usable one of each schedule."""

from __future__ import annotations

import datetime as dt

from ansible_collections.hybridcloud.migration.plugins.module_utils.velero_catalog import (
    VeleroBackup,
    backups_prefix,
    newer_failures,
    pick_newest,
)

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def backup(name: str, schedule: str, hour: int, phase: str = "Completed", expires: str = "2026-12-02T00:00:00Z") -> VeleroBackup:
    return VeleroBackup.from_object({
        "metadata": {"name": name, "labels": {"velero.io/schedule-name": schedule} if schedule else {}},
        "spec": {"includedNamespaces": ["*"]},
        "status": {"phase": phase, "startTimestamp": "2026-11-25T%02d:00:00Z" % hour,
                   "completionTimestamp": "2026-11-25T%02d:01:00Z" % hour if phase == "Completed" else None,
                   "expiration": expires, "progress": {"itemsBackedUp": 42}, "version": 1},
    })


def test_newest_completed_backup_of_each_schedule():
    found = [backup("a-1", "a", 8), backup("a-2", "a", 10), backup("b-1", "b", 9), backup("a-3", "a", 11, "InProgress")]
    picks, missing = pick_newest(found, [], NOW)
    assert [b.name for b in picks] == ["a-2", "b-1"] and missing == []
    assert picks[0].items_backed_up == 42


def test_named_schedules_only_and_missing_ones_reported():
    found = [backup("a-1", "a", 8), backup("b-1", "b", 9, "PartiallyFailed")]
    picks, missing = pick_newest(found, ["b", "a", "c"], NOW)
    assert [b.name for b in picks] == ["a-1"] and missing == ["b", "c"]


def test_expired_and_hand_made_backups_are_never_picked():
    found = [backup("a-old", "a", 8, expires="2026-11-25T11:00:00Z"), backup("manual", "", 11)]
    assert pick_newest(found, [], NOW) == ([], ["a"])  # every schedule seen, none usable
    assert pick_newest(found, ["a"], NOW) == ([], ["a"])


def test_a_newer_failed_backup_is_a_warning():
    found = [backup("a-1", "a", 8), backup("a-2", "a", 9, "PartiallyFailed"), backup("a-0", "a", 7, "Failed")]
    picks, _missing = pick_newest(found, [], NOW)
    assert newer_failures(found, picks) == ["Velero backup a-2 (schedule a) is PartiallyFailed; the catalog names the older a-1"]


def test_backups_prefix():
    assert backups_prefix("velero") == backups_prefix("/velero/") == "velero/backups/"
    assert backups_prefix("") == "backups/"
