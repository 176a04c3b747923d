"""The catalog's plain Python: entry building, validation, keys, ages and summaries."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

WHEN = dt.datetime(2026, 11, 25, 19, 15, 0, tzinfo=dt.timezone.utc)
SHA = "a" * 64


def artifact(**over):
    item = {"name": "default/data-db-0", "location": "s3://b/k", "size": 10, "sha256": SHA}
    item.update(over)
    return item


def test_build_entry_has_versioned_shape_and_time_ordered_id():
    entry = catalog.build_entry("onprem", "worker-1", {"local_data": [artifact()]}, created_at=WHEN)
    assert entry["schema_version"] == catalog.SCHEMA_VERSION == 1
    assert entry["id"].startswith("20261125T191500Z-") and len(entry["id"]) == 23
    assert entry["created_at"] == "2026-11-25T19:15:00Z"
    assert (entry["cluster"], entry["node"]) == ("onprem", "worker-1")
    assert entry["data"] == {"local_data": [artifact()]}
    later = catalog.build_entry("onprem", "worker-1", {"resources": []}, created_at=WHEN + dt.timedelta(seconds=1))
    assert later["id"] > entry["id"]


def test_cluster_wide_entries_use_a_name_no_node_can_have():
    entry = catalog.build_entry("onprem", None, {"etcd_snapshot": [artifact()]}, created_at=WHEN)
    assert entry["node"] == catalog.CLUSTER_SCOPE == "_cluster"
    with pytest.raises(MigrationError):
        catalog.check_name("_cluster", "node")


@pytest.mark.parametrize(
    "data, needle",
    [
        ({}, "data is empty"),
        ({"resourcez": []}, "data kind 'resourcez' is unknown"),
        ({"resources": {}}, "data.resources is not a list"),
        ({"resources": ["x"]}, "data.resources[0] is not a mapping"),
        ({"resources": [artifact(size=-1)]}, "data.resources[0].size -1 is not a byte count"),
        ({"resources": [artifact(size=True)]}, "is not a byte count"),
        ({"resources": [artifact(sha256="abc")]}, "data.resources[0].sha256 is not a sha256"),
        ({"resources": [artifact(location="")]}, "data.resources[0].location is missing"),
        ({"resources": [artifact(colour="red")]}, "unknown keys colour"),
        ({"resources": [artifact(created_at="yesterday")]}, "is not an ISO 8601 time"),
    ],
)
def test_malformed_data_names_the_field_and_the_fix(data, needle):
    with pytest.raises(MigrationError) as err:
        catalog.build_entry("onprem", "worker-1", data, created_at=WHEN)
    assert needle in err.value.message
    assert "Fix:" in err.value.message


def test_bad_names_and_ids_are_refused():
    with pytest.raises(MigrationError, match="cluster 'On Prem' is not a valid name"):
        catalog.build_entry("On Prem", "w", {"resources": []})
    with pytest.raises(MigrationError, match="entry_id 'latest' is not a catalog entry id"):
        catalog.build_entry("onprem", "w", {"resources": []}, entry_id="latest")


def test_validate_entry_rejects_other_schema_versions_and_missing_fields():
    entry = catalog.build_entry("onprem", "w1", {"resources": []}, created_at=WHEN)
    assert catalog.validate_entry(json.loads(catalog.canonical_json(entry))) == entry
    with pytest.raises(MigrationError, match="schema_version 2 is not supported"):
        catalog.validate_entry(dict(entry, schema_version=2))
    broken = dict(entry)
    del broken["data"]
    with pytest.raises(MigrationError, match="has no 'data'"):
        catalog.validate_entry(broken)


def test_canonical_json_is_stable_so_its_sha256_is_too():
    entry = catalog.build_entry("onprem", "w1", {"resources": [artifact()]}, created_at=WHEN)
    shuffled = dict(reversed(list(entry.items())))
    assert catalog.canonical_json(entry) == catalog.canonical_json(shuffled)
    assert catalog.sha256_hex(catalog.canonical_json(entry)) == catalog.sha256_hex(catalog.canonical_json(shuffled))


def test_keys_layout_and_entry_id_parsing():
    keys = catalog.CatalogKeys("catalog", "onprem", "worker-1")
    assert keys.entry("20261125T191500Z-abcdef") == "catalog/onprem/worker-1/entries/20261125T191500Z-abcdef.json"
    assert keys.tmp("20261125T191500Z-abcdef") == "catalog/onprem/worker-1/tmp/20261125T191500Z-abcdef.json"
    assert keys.latest == "catalog/onprem/worker-1/latest.json"
    assert keys.entry_id_of(keys.entry("20261125T191500Z-abcdef")) == "20261125T191500Z-abcdef"
    assert keys.entry_id_of(keys.tmp("20261125T191500Z-abcdef")) is None
    assert keys.entry_id_of("catalog/onprem/worker-1/entries/notes.txt") is None
    assert catalog.CatalogKeys("", "c", "n").latest == "c/n/latest.json"


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600), (None, None)])
def test_parse_age(text, seconds):
    assert catalog.parse_age(text) == seconds


def test_parse_age_and_time_errors_say_how_to_write_them():
    with pytest.raises(MigrationError, match="like 7d"):
        catalog.parse_age("a week")
    with pytest.raises(MigrationError, match="has no time zone"):
        catalog.parse_time("2026-11-25T19:15:00", "created_at")


def test_summary_reports_age_and_per_kind_recovery_point():
    entry = catalog.build_entry(
        "onprem",
        "w1",
        {
            "local_data": [artifact(size=100, created_at="2026-11-25T18:00:00Z"), artifact(size=5)],
            "workload_state": [],
        },
        created_at=WHEN,
    )
    summary = catalog.summarize(entry, WHEN + dt.timedelta(minutes=10))
    assert summary["age_seconds"] == 600
    assert summary["kinds"]["local_data"] == {
        "artifacts": 2,
        "bytes": 105,
        "oldest_at": "2026-11-25T18:00:00Z",
        "age_seconds": 5100,  # 18:00 to 19:25
    }
    assert summary["kinds"]["workload_state"]["artifacts"] == 0


def test_each_cluster_wide_producer_has_its_own_scope():
    assert catalog.build_entry("onprem", "_etcd", {"etcd_snapshot": []}, created_at=WHEN)["node"] == "_etcd"
    assert catalog.CatalogKeys("catalog", "onprem", "_velero").latest == "catalog/onprem/_velero/latest.json"
    for bad in ("_", "_Etcd", "__x", "_x_y"):
        with pytest.raises(MigrationError, match="is not a valid name"):
            catalog.check_node(bad)
