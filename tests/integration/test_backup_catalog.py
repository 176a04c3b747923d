"""The backup catalog modules, run by ansible against a real S3 server (rclone serve s3)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from tests.helpers.ansible_run import run_module
from tests.helpers.fault_proxy import FaultProxy, on

pytestmark = pytest.mark.integration

ARTIFACT_BYTES = b"velero backup tarball stand-in bytes\n" * 1000


def s3_args(server, bucket, endpoint_url=None):
    return {
        "endpoint_url": endpoint_url or server.endpoint_url,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "bucket": bucket,
        "max_attempts": 2,
        "connect_timeout": 2,
        "read_timeout": 10,
    }


def put_artifact(server, bucket, key="velero/backups/nightly/nightly.tar.gz", body=ARTIFACT_BYTES):
    server.client().put_object(Bucket=bucket, Key=key, Body=body)
    return {
        "name": key.rsplit("/", 1)[-1],
        "location": "s3://%s/%s" % (bucket, key),
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def bucket_state(server, bucket):
    """Every key with its bytes: what a user would diff to see what changed."""
    client = server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def write(server, bucket, node="worker-1", data=None, check=False, endpoint_url=None, **extra):
    args = dict(s3_args(server, bucket, endpoint_url), cluster="onprem", node=node, **extra)
    args["data"] = data if data is not None else {"resources": [put_artifact(server, bucket)]}
    return run_module("backup_catalog", args, check=check)


def info(server, bucket, **extra):
    return run_module("backup_catalog_info", dict(s3_args(server, bucket), **extra))


def test_written_entry_is_stored_verified_and_named_latest(s3_server, s3_bucket):
    result = write(s3_server, s3_bucket, labels={"tool": "velero"})
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True and result["latest_updated"] is True
    stored = bucket_state(s3_server, s3_bucket)
    entry_key = "catalog/onprem/worker-1/entries/%s.json" % result["entry_id"]
    assert result["key"] == entry_key
    assert json.loads(stored[entry_key]) == result["entry"]
    assert hashlib.sha256(stored[entry_key]).hexdigest() == result["sha256"]
    pointer = json.loads(stored["catalog/onprem/worker-1/latest.json"])
    assert (pointer["entry_id"], pointer["sha256"]) == (result["entry_id"], result["sha256"])
    assert not [k for k in stored if "/tmp/" in k], "the temporary entry must be gone"
    assert result["verified_artifacts"] == [
        {"kind": "resources", "name": "nightly.tar.gz", "location": "s3://%s/velero/backups/nightly/nightly.tar.gz" % s3_bucket, "check": "size"}
    ]

    seen = info(s3_server, s3_bucket, cluster="onprem", node="worker-1")
    assert seen["latest"] == result["entry"]
    [node] = seen["nodes"]
    assert node["latest"]["id"] == result["entry_id"]
    assert node["latest"]["kinds"]["resources"]["bytes"] == len(ARTIFACT_BYTES)
    assert 0 <= node["latest"]["age_seconds"] < 120


def test_latest_moves_to_the_newest_entry_and_listing_finds_every_node(s3_server, s3_bucket):
    first = write(s3_server, s3_bucket)
    second = write(s3_server, s3_bucket)
    other = write(s3_server, s3_bucket, node="worker-2")
    cluster_wide = write(s3_server, s3_bucket, node=None)
    assert second["entry_id"] > first["entry_id"]

    seen = info(s3_server, s3_bucket, include_entries=True)
    by_node = {(n["cluster"], n["node"]): n for n in seen["nodes"]}
    assert set(by_node) == {("onprem", "worker-1"), ("onprem", "worker-2"), ("onprem", "_cluster")}
    assert by_node[("onprem", "worker-1")]["latest"]["id"] == second["entry_id"]
    assert by_node[("onprem", "worker-1")]["entries"] == [first["entry_id"], second["entry_id"]]
    assert by_node[("onprem", "worker-2")]["latest"]["id"] == other["entry_id"]
    assert by_node[("onprem", "_cluster")]["latest"]["id"] == cluster_wide["entry_id"]


def test_an_older_backup_written_late_does_not_replace_latest(s3_server, s3_bucket):
    newer = write(s3_server, s3_bucket)
    older = write(s3_server, s3_bucket, created_at="2020-01-01T00:00:00Z")
    assert older["changed"] is True and older["latest_updated"] is False
    assert "older than the latest entry" in older.run.output
    seen = info(s3_server, s3_bucket, cluster="onprem", node="worker-1", include_entries=True)
    assert seen["nodes"][0]["latest"]["id"] == newer["entry_id"]
    assert seen["nodes"][0]["entries"] == [older["entry_id"], newer["entry_id"]]


def test_of_two_entries_made_in_the_same_second_the_one_written_last_is_latest(s3_server, s3_bucket):
    """Velero backups started in one second share created_at; the random id suffix must not pick the latest."""
    same_second = "2026-11-25T02:00:00Z"
    written = [write(s3_server, s3_bucket, created_at=same_second) for attempt in range(3)]
    for result in written:
        assert result["changed"] is True and result["latest_updated"] is True, result.run.output
    seen = info(s3_server, s3_bucket, cluster="onprem", node="worker-1")
    assert seen["nodes"][0]["latest"]["id"] == written[-1]["entry_id"]


def test_racing_writers_never_move_latest_back(s3_server, s3_bucket):
    """Writer A (the newer backup) and writer B (an older one) of one scope, interleaved at every step:
    both read no pointer; A writes all the way; B publishes its entry, moves the pointer back to it and commits."""
    from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
    from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
    from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_s3_client

    settings = S3Settings(endpoint_url=s3_server.endpoint_url, access_key=s3_server.access_key, secret_key=s3_server.secret_key,
                          region=s3_server.region)
    store = CatalogStore(make_s3_client(settings), settings, s3_bucket)
    artifact = {"resources": [put_artifact(s3_server, s3_bucket)]}
    older = catalog.build_entry("onprem", "_etcd", artifact, created_at=catalog.parse_time("2026-12-01T02:00:00Z", "t"))
    newer = catalog.build_entry("onprem", "_etcd", artifact, created_at=catalog.parse_time("2026-12-01T03:00:00Z", "t"))
    keys = store.keys("onprem", "_etcd")
    assert store.read_pointer(keys) is None  # what B read before it wrote: no latest yet, so it will move it

    assert store.write(newer)["latest_updated"] is True  # A, all the way
    body = catalog.canonical_json(older)
    digest = catalog.sha256_hex(body)
    store._publish_entry(keys, older["id"], body, digest, "")  # B's steps, from the pointer it read
    assert store.latest("onprem", "_etcd")["id"] == newer["id"], "B's entry is whole, not committed"
    store.write_json(keys.latest, {"schema_version": 1, "entry_id": older["id"], "key": keys.entry(older["id"]), "sha256": digest,
                                   "created_at": older["created_at"]}, "B moves latest")
    assert json.loads(bucket_state(s3_server, s3_bucket)[keys.latest])["entry_id"] == older["id"], "the pointer went back"
    assert store.latest("onprem", "_etcd")["id"] == newer["id"], "a pointer that went back does not make latest go back"
    store.write_json(keys.committed(older["id"]), {"schema_version": 1, "entry_id": older["id"], "sha256": digest,
                                                   "created_at": older["created_at"]}, "B commits")
    assert store.committed_ids(keys) == [older["id"], newer["id"]]
    seen = info(s3_server, s3_bucket, cluster="onprem", node="_etcd")
    assert seen["nodes"][0]["latest"]["id"] == newer["id"] and seen["latest"]["id"] == newer["id"]
    # The next writer of the scope puts the pointer right again (it is newer than the one named).
    assert write(s3_server, s3_bucket, node="_etcd")["latest_updated"] is True


def test_check_mode_reports_the_change_and_writes_nothing(s3_server, s3_bucket):
    data = {"resources": [put_artifact(s3_server, s3_bucket)]}
    before = bucket_state(s3_server, s3_bucket)
    result = write(s3_server, s3_bucket, data=data, check=True)
    assert result["changed"] is True and result["latest_updated"] is True
    assert bucket_state(s3_server, s3_bucket) == before


def test_rerun_with_the_same_entry_changes_nothing(s3_server, s3_bucket):
    data = {"resources": [put_artifact(s3_server, s3_bucket)]}
    first = write(s3_server, s3_bucket, data=data, created_at="2026-11-25T01:00:00Z")
    before = bucket_state(s3_server, s3_bucket)
    again = write(s3_server, s3_bucket, data=data, created_at="2026-11-25T01:00:00Z", entry_id=first["entry_id"])
    assert again["changed"] is False, again
    assert bucket_state(s3_server, s3_bucket) == before
    clash = write(s3_server, s3_bucket, data={"resources": []}, created_at="2026-11-25T01:00:00Z", entry_id=first["entry_id"])
    assert clash["failed"] is True and "already exists with other content" in clash["msg"]
    assert bucket_state(s3_server, s3_bucket) == before


def test_retention_prunes_old_entries_only(s3_server, s3_bucket):
    data = {"resources": [put_artifact(s3_server, s3_bucket)]}
    now = dt.datetime.now(dt.timezone.utc)
    ids = []
    for days_ago in (40, 30, 20, 2, 1):
        when = (now - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = write(s3_server, s3_bucket, data=data, created_at=when)
        ids.append(result["entry_id"])
    # Another node's entries are never touched by this node's retention.
    untouched = write(s3_server, s3_bucket, node="worker-2", data=data, created_at="2020-01-01T00:00:00Z")

    planned = run_module(
        "backup_catalog",
        dict(s3_args(s3_server, s3_bucket), cluster="onprem", node="worker-1", state="pruned", keep_last=4, max_age="25d"),
        check=True,
    )
    assert planned["changed"] is True and len(planned["pruned"]) == 2
    pruned = run_module(
        "backup_catalog",
        dict(s3_args(s3_server, s3_bucket), cluster="onprem", node="worker-1", state="pruned", keep_last=4, max_age="25d"),
    )
    assert pruned["pruned"] == planned["pruned"] == [
        "catalog/onprem/worker-1/entries/%s.json" % ids[1],  # older than 25 days
        "catalog/onprem/worker-1/entries/%s.json" % ids[0],  # beyond the newest 4, and old
    ]
    seen = info(s3_server, s3_bucket, include_entries=True)
    by_node = {n["node"]: n for n in seen["nodes"]}
    assert by_node["worker-1"]["entries"] == ids[2:]
    assert by_node["worker-2"]["entries"] == [untouched["entry_id"]]
    # The artifacts the entries named are the producers' to delete, not the catalog's.
    assert "velero/backups/nightly/nightly.tar.gz" in bucket_state(s3_server, s3_bucket)

    # The entry latest points at survives any retention, even when it is too old.
    old_only = run_module(
        "backup_catalog",
        dict(s3_args(s3_server, s3_bucket), cluster="onprem", node="worker-2", state="pruned", keep_last=1, max_age="1d"),
    )
    assert old_only["changed"] is False and old_only["pruned"] == []


@pytest.mark.parametrize(
    "stop_when, step",
    [
        (lambda m, p, h: m == "PUT" and "/tmp/" in p, "writing the temporary catalog entry"),
        (lambda m, p, h: m == "PUT" and "x-amz-copy-source" in {k.lower() for k in h}, "copying"),
        (on("PUT", "/latest.json"), "moving catalog/onprem/worker-1/latest.json to entry"),
    ],
    ids=["during-temporary-write", "during-copy", "during-latest-update"],
)
def test_storage_dying_mid_write_leaves_latest_on_the_previous_entry(private_s3_server, stop_when, step):
    server = private_s3_server()
    bucket = server.create_bucket("dr-backups")
    previous = write(server, bucket)
    assert previous["latest_updated"] is True

    with FaultProxy(server.endpoint_url, rules=[(stop_when, server.stop)]) as proxy:
        failed = write(server, bucket, data={"resources": [previous["entry"]["data"]["resources"][0]]}, endpoint_url=proxy.endpoint_url)
        assert any(seen.faulted for seen in proxy.seen), "the fault never struck: %s" % proxy.requests

    assert failed["failed"] is True
    assert "Could not reach the S3 endpoint" in failed["msg"]
    assert step in failed["msg"]
    assert "latest entry is unchanged (latest still names entry %s)" % previous["entry_id"] in failed["msg"]

    server.restart()
    seen = info(server, bucket, cluster="onprem", node="worker-1")
    assert seen["latest"] == previous["entry"]
    # Re-running after the outage succeeds and moves latest on.
    retried = write(server, bucket, data={"resources": [previous["entry"]["data"]["resources"][0]]})
    assert retried["latest_updated"] is True
    assert info(server, bucket, cluster="onprem", node="worker-1")["latest"]["id"] == retried["entry_id"]
