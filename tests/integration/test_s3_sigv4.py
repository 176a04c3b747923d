"""The standard-library S3 client against a real S3 server, and the catalog written through it.

Nodes run the backup agent without boto3, so this client must write catalog entries that the
boto3-backed modules read, and read theirs.
"""

from __future__ import annotations

import hashlib
import os


import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_stdlib_s3_client
from tests.integration.test_backup_catalog import info, put_artifact, write

pytestmark = pytest.mark.integration

ODD_KEYS = ["plain/key.json", "with space/and+plus=eq.json", "ünïcode/päth ✓.bin", "a/b/c/deep~tilde_(paren).txt"]


def settings_for(server, **over):
    values = dict(endpoint_url=server.endpoint_url, access_key=server.access_key, secret_key=server.secret_key,
                  region=server.region, max_attempts=2, connect_timeout=2.0, read_timeout=10.0)
    values.update(over)
    return S3Settings(**values)


def test_objects_round_trip_with_boto3_on_the_other_side(s3_server, s3_bucket):
    client = make_stdlib_s3_client(settings_for(s3_server))
    boto = s3_server.client()
    for index, key in enumerate(ODD_KEYS):
        body = ("payload %d " % index).encode() * 1000
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
        assert boto.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == body
        assert client.head_object(Bucket=s3_bucket, Key=key)["ContentLength"] == len(body)
    boto.put_object(Bucket=s3_bucket, Key="from-boto3.bin", Body=b"\x00\x01binary")
    assert client.get_object(Bucket=s3_bucket, Key="from-boto3.bin")["Body"].read() == b"\x00\x01binary"

    pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix=""))
    listed = sorted(obj["Key"] for page in pages for obj in page["Contents"])
    assert listed == sorted(ODD_KEYS + ["from-boto3.bin"])
    folders = client.list_objects_v2(Bucket=s3_bucket, Prefix="a/", Delimiter="/")["CommonPrefixes"]
    assert folders == [{"Prefix": "a/b/"}]

    client.copy_object(Bucket=s3_bucket, Key="copy/of space.json", CopySource={"Bucket": s3_bucket, "Key": ODD_KEYS[1]})
    assert boto.get_object(Bucket=s3_bucket, Key="copy/of space.json")["Body"].read() == boto.get_object(Bucket=s3_bucket, Key=ODD_KEYS[1])["Body"].read()
    assert client.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": k} for k in ODD_KEYS], "Quiet": True}) == {}
    client.delete_object(Bucket=s3_bucket, Key="copy/of space.json")
    assert sorted(o["Key"] for o in boto.list_objects_v2(Bucket=s3_bucket)["Contents"]) == ["from-boto3.bin"]


def test_catalog_written_without_boto3_is_read_by_the_modules_and_back(s3_server, s3_bucket):
    settings = settings_for(s3_server)
    store = CatalogStore(make_stdlib_s3_client(settings), settings, s3_bucket)
    artifact = put_artifact(s3_server, s3_bucket)
    entry = catalog.build_entry("onprem", "worker-7", {"local_data": [artifact]})
    written = store.write(entry, verify="sha256")
    assert written["latest_updated"] is True

    seen = info(s3_server, s3_bucket, cluster="onprem", node="worker-7")
    assert seen["latest"] == entry

    newer = write(s3_server, s3_bucket, node="worker-7", data={"local_data": [artifact]})
    assert store.latest("onprem", "worker-7")["id"] == newer["entry_id"]
    assert store.prune(store.keys("onprem", "worker-7"), keep_last=1, max_age=None, now=catalog.utcnow()) == [
        "catalog/onprem/worker-7/entries/%s.json" % entry["id"]
    ]


def test_errors_read_like_the_boto3_ones(s3_server, s3_bucket, private_s3_server):
    wrong = settings_for(s3_server, secret_key="not-the-secret-key")
    with pytest.raises(MigrationError, match=r"refused the credentials \(403\) while checking bucket"):
        CatalogStore(make_stdlib_s3_client(wrong), wrong, s3_bucket).check_bucket()  # HEAD answers carry no code
    with pytest.raises(MigrationError, match=r"refused the credentials \(SignatureDoesNotMatch\) while reading"):
        CatalogStore(make_stdlib_s3_client(wrong), wrong, s3_bucket).latest("onprem", "worker-1")
    right = settings_for(s3_server)
    with pytest.raises(MigrationError, match="Bucket 'no-such-bucket' does not exist"):
        CatalogStore(make_stdlib_s3_client(right), right, "no-such-bucket").check_bucket()

    server = private_s3_server()
    bucket = server.create_bucket("gone-soon")
    dying = settings_for(server)
    store = CatalogStore(make_stdlib_s3_client(dying), dying, bucket)
    server.stop()
    entry = catalog.build_entry("onprem", "worker-1", {"resources": []})
    with pytest.raises(MigrationError, match="Could not reach the S3 endpoint"):
        store.write(entry)


def test_missing_keys_are_refused_before_any_request():
    with pytest.raises(MigrationError, match="No S3 access key and secret key were given"):
        make_stdlib_s3_client(S3Settings(endpoint_url="http://127.0.0.1:9"))


def test_files_are_streamed_whole_and_their_sha256_signed(s3_server, s3_bucket, tmp_path):
    client = make_stdlib_s3_client(settings_for(s3_server))
    snapshot = tmp_path / "etcd.db"
    snapshot.write_bytes(os.urandom(12 * 1024 * 1024))
    digest = hashlib.sha256(snapshot.read_bytes()).hexdigest()
    client.upload_file(str(snapshot), s3_bucket, "etcd/onprem/snap.db", digest)
    assert hashlib.sha256(s3_server.client().get_object(Bucket=s3_bucket, Key="etcd/onprem/snap.db")["Body"].read()).hexdigest() == digest


def test_both_clients_have_every_object_they_write_encrypted_by_the_storage(moto_server, tmp_path):
    """moto keeps the server-side encryption each object was written with, as AWS S3 does (rclone ignores it)."""
    from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import make_s3_client

    s3 = moto_server.client("s3")
    bucket = "sse-" + os.urandom(4).hex()
    s3.create_bucket(Bucket=bucket)
    body = b"velero tarball stand-in\n" * 100
    s3.put_object(Bucket=bucket, Key="velero/backups/b1/b1.tar.gz", Body=body)
    artifact = {"name": "b1.tar.gz", "location": "s3://%s/velero/backups/b1/b1.tar.gz" % bucket, "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest()}
    for name, make, sse in (("boto3", make_s3_client, {"sse": "aws:kms", "sse_kms_key_id": "alias/hcm-backups"}),
                            ("stdlib", make_stdlib_s3_client, {"sse": "AES256"})):
        settings = S3Settings(endpoint_url=moto_server.endpoint_url, access_key="testing", secret_key="testing", region=moto_server.region, **sse)
        store = CatalogStore(make(settings), settings, bucket)
        entry = catalog.build_entry("onprem", "worker-" + name, {"resources": [artifact]})
        assert store.write(entry)["latest_updated"] is True
        keys = store.keys("onprem", "worker-" + name)
        for key in (keys.entry(entry["id"]), keys.latest, keys.committed(entry["id"])):
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head.get("ServerSideEncryption") == sse["sse"], (name, key, head)
            assert head.get("SSEKMSKeyId", "").endswith(sse.get("sse_kms_key_id", "")) if "sse_kms_key_id" in sse else "SSEKMSKeyId" not in head
        assert store.latest("onprem", "worker-" + name)["id"] == entry["id"]

    snapshot = tmp_path / "etcd.db"  # the etcd agent's upload, with the standard-library client
    snapshot.write_bytes(os.urandom(4096))
    settings = S3Settings(endpoint_url=moto_server.endpoint_url, access_key="testing", secret_key="testing", region=moto_server.region, sse="AES256")
    make_stdlib_s3_client(settings).upload_file(str(snapshot), bucket, "etcd/onprem/etcd.db", hashlib.sha256(snapshot.read_bytes()).hexdigest(),
                                                **settings.write_args())
    assert s3.head_object(Bucket=bucket, Key="etcd/onprem/etcd.db")["ServerSideEncryption"] == "AES256"
