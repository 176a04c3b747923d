"""Bad input to the catalog modules: a clear error naming problem and fix, and nothing changed."""

from __future__ import annotations

import hashlib

import pytest

from tests.helpers.ansible_run import run_module
from tests.integration.test_backup_catalog import bucket_state, info, put_artifact, s3_args, write

pytestmark = pytest.mark.integration


def assert_refused(result, *needles):
    assert result.get("failed") is True, result
    for needle in needles:
        assert needle in result["msg"], result["msg"]
    assert "Fix:" in result["msg"], result["msg"]


def test_missing_bucket(s3_server):
    buckets_before = s3_server.client().list_buckets()["Buckets"]
    args = dict(s3_args(s3_server, "no-such-bucket"), cluster="onprem", node="worker-1", data={"resources": []})
    result = run_module("backup_catalog", args)
    assert_refused(result, "Bucket 'no-such-bucket' does not exist", "create the bucket")
    seen = run_module("backup_catalog_info", s3_args(s3_server, "no-such-bucket"))
    assert_refused(seen, "Bucket 'no-such-bucket' does not exist")
    assert s3_server.client().list_buckets()["Buckets"] == buckets_before


def test_wrong_credentials(s3_server, s3_bucket):
    write(s3_server, s3_bucket)
    before = bucket_state(s3_server, s3_bucket)
    args = dict(s3_args(s3_server, s3_bucket), secret_key="not-the-secret-key", cluster="onprem", node="worker-1", data={"resources": []})
    result = run_module("backup_catalog", args, verbosity=3)
    assert_refused(result, "refused the credentials", "check access_key/secret_key")
    assert "not-the-secret-key" not in result.run.output
    assert bucket_state(s3_server, s3_bucket) == before


@pytest.mark.parametrize(
    "data, needles",
    [
        ({"resourcez": []}, ["data kind 'resourcez' is unknown", "use one of resources"]),
        ({"resources": [{"name": "x", "location": "s3://b/k", "size": -5}]}, ["data.resources[0].size -5 is not a byte count"]),
        ({"local_data": [{"name": "x", "location": "s3://b/k", "size": 1, "sha256": "zz"}]}, ["data.local_data[0].sha256 is not a sha256"]),
        ({}, ["data is empty"]),
    ],
    ids=["unknown-kind", "negative-size", "bad-sha256", "empty"],
)
def test_malformed_entry(s3_server, s3_bucket, data, needles):
    write(s3_server, s3_bucket)
    before = bucket_state(s3_server, s3_bucket)
    result = write(s3_server, s3_bucket, data=data)
    assert_refused(result, *needles)
    assert bucket_state(s3_server, s3_bucket) == before


def test_bad_options(s3_server, s3_bucket):
    base = dict(s3_args(s3_server, s3_bucket), cluster="onprem", node="worker-1")
    result = run_module("backup_catalog", base)
    assert result["failed"] is True  # Ansible's own argument check words this one
    assert "state is present but all of the following are missing: data" in result["msg"]
    result = run_module("backup_catalog", dict(base, data={"resources": []}, created_at="yesterday"))
    assert_refused(result, "created_at 'yesterday' is not an ISO 8601 time")
    result = run_module("backup_catalog", dict(base, state="pruned", keep_last=0))
    assert_refused(result, "keep_last must be at least 1")
    result = run_module("backup_catalog", dict(base, cluster="On Prem", data={"resources": []}))
    assert_refused(result, "cluster 'On Prem' is not a valid name")
    assert bucket_state(s3_server, s3_bucket) == {}


def test_artifacts_that_are_missing_or_not_whole_are_not_recorded(s3_server, s3_bucket):
    good = put_artifact(s3_server, s3_bucket)
    write(s3_server, s3_bucket, data={"resources": [good]})
    before = bucket_state(s3_server, s3_bucket)

    missing = dict(good, location="s3://%s/velero/backups/gone/gone.tar.gz" % s3_bucket)
    result = write(s3_server, s3_bucket, data={"resources": [missing]})
    assert_refused(result, "resources artifact 'nightly.tar.gz'", "does not exist")

    short = dict(good, size=good["size"] + 1)
    result = write(s3_server, s3_bucket, data={"resources": [short]})
    assert_refused(result, "is %d bytes, the entry says %d" % (good["size"], good["size"] + 1))

    altered = dict(good, sha256=hashlib.sha256(b"something else").hexdigest())
    result = write(s3_server, s3_bucket, data={"resources": [altered]}, verify="size")
    assert result.get("failed") is not True  # size matches; the hash is only read with verify=sha256
    after_size_only = bucket_state(s3_server, s3_bucket)
    result = write(s3_server, s3_bucket, data={"resources": [altered]}, verify="sha256")
    assert_refused(result, "does not match its sha256")
    assert bucket_state(s3_server, s3_bucket) == after_size_only
    added = sorted(set(after_size_only) - set(before))  # exactly the one entry that was valid, and its commit record
    assert [key.split("/")[-2] for key in added] == ["committed", "entries"] and added[0].rsplit("/", 1)[1] == added[1].rsplit("/", 1)[1]


def test_secrets_never_reach_the_output(s3_server, s3_bucket):
    result = write(s3_server, s3_bucket)
    assert result["changed"] is True
    verbose = run_module(
        "backup_catalog_info", dict(s3_args(s3_server, s3_bucket), cluster="onprem", node="worker-1"), verbosity=4
    )
    for output in (result.run.output, verbose.run.output):
        assert s3_server.secret_key not in output


def test_a_damaged_entry_is_reported_on_its_node_and_a_new_backup_repairs_it(s3_server, s3_bucket):
    damaged = write(s3_server, s3_bucket, node="worker-1")
    healthy = write(s3_server, s3_bucket, node="worker-2")
    s3_server.client().put_object(Bucket=s3_bucket, Key=damaged["key"], Body=b'{"tampered": true}')

    seen = info(s3_server, s3_bucket, cluster="onprem")
    by_node = {n["node"]: n for n in seen["nodes"]}
    assert by_node["worker-1"]["latest"] is None
    assert "does not match the sha256 recorded for it" in by_node["worker-1"]["problem"]
    assert by_node["worker-2"]["latest"]["id"] == healthy["entry_id"]

    repaired = write(s3_server, s3_bucket, node="worker-1")
    assert repaired["latest_updated"] is True
    assert info(s3_server, s3_bucket, cluster="onprem", node="worker-1")["latest"]["id"] == repaired["entry_id"]
