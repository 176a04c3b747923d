"""The local service fixtures behave like the real services a user relies on.

Needs rclone and moto_server (tests/requirements.txt) and etcd
(``apt-get install etcd-server etcd-client``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from lab.hclab.services import EtcdServer, MotoServer, S3Server, ServiceError, http_request
from tests.helpers.fault_proxy import FaultProxy, on
from tests.helpers.fixtures_services import S3ServerFactory

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
NO_RETRY: dict[str, Any] = {
    "retries": {"total_max_attempts": 1},
    "connect_timeout": 2,
    "read_timeout": 10,
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- S3 (rclone serve s3) ------------------------------------------------------


def test_s3_put_get_list_round_trip(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    body = os.urandom(256 * 1024) + b"end"
    s3.put_object(Bucket=s3_bucket, Key="runs/1/data.bin", Body=body)

    got = s3.get_object(Bucket=s3_bucket, Key="runs/1/data.bin")["Body"].read()
    assert got == body
    assert sha256(got) == sha256(body)

    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("runs/1/data.bin", len(body))]
    # Buckets are folders, objects are files: what the user would see on disk.
    assert (s3_server.data_dir / s3_bucket / "runs" / "1" / "data.bin").read_bytes() == body


def test_s3_multipart_upload_round_trips(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    parts: list[str] = []
    s3.meta.events.register("before-call.s3.UploadPart", lambda **kw: parts.append("part"))
    body = os.urandom(11 * MiB)

    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(body), s3_bucket, "big.bin", Config=config)

    assert len(parts) == 3  # 5 + 5 + 1 MiB: really multipart
    assert s3.head_object(Bucket=s3_bucket, Key="big.bin")["ContentLength"] == len(body)
    got = s3.get_object(Bucket=s3_bucket, Key="big.bin")["Body"].read()
    assert sha256(got) == sha256(body)


def test_s3_stop_is_an_outage_and_restart_serves_same_object(
    private_s3_server: S3ServerFactory,
) -> None:
    server = private_s3_server()
    bucket = server.create_bucket("outage-test")
    s3 = server.client(**NO_RETRY)
    s3.put_object(Bucket=bucket, Key="state.json", Body=b'{"ok": true}')
    endpoint = server.endpoint_url

    server.stop()
    server.stop()  # idempotent
    with pytest.raises(EndpointConnectionError):
        s3.get_object(Bucket=bucket, Key="state.json")

    server.restart()
    assert server.endpoint_url == endpoint
    assert s3.get_object(Bucket=bucket, Key="state.json")["Body"].read() == b'{"ok": true}'


def test_s3_server_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = S3Server(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(ServiceError, match="exited with code") as failed:
            server.start()
    assert "address already in use" in str(failed.value)  # rclone's own words, from its log
    assert not server.running


# -- moto ----------------------------------------------------------------------


def test_moto_ec2_regions_and_instances(moto_server: MotoServer) -> None:
    ec2 = moto_server.client("ec2")
    assert ec2.describe_regions()["Regions"]

    images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/*"]}])
    image_id = images["Images"][0]["ImageId"]
    run = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance_id = run["Instances"][0]["InstanceId"]

    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert [(i["InstanceId"], i["ImageId"]) for i in described] == [(instance_id, image_id)]
    assert described[0]["State"]["Name"] in {"pending", "running"}


def test_moto_iam_and_sts(moto_server: MotoServer) -> None:
    iam = moto_server.client("iam")
    name = f"migrator-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    assert iam.get_user(UserName=name)["User"]["UserName"] == name

    account = moto_server.client("sts").get_caller_identity()["Account"]
    assert len(account) == 12 and account.isdigit()


def test_moto_reset_forgets_resources(moto_server: MotoServer) -> None:
    iam = moto_server.client("iam")
    iam.create_user(UserName="to-be-forgotten")
    moto_server.reset()
    with pytest.raises(ClientError, match="NoSuchEntity"):
        iam.get_user(UserName="to-be-forgotten")


# -- etcd ----------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_etcd_fixture_is_healthy(etcd_server: EtcdServer) -> None:
    status, body = http_request("GET", f"{etcd_server.endpoint}/health")
    assert status == 200
    assert json.loads(body)["health"] == "true"


def test_etcd_put_get_over_http_gateway(etcd_server: EtcdServer) -> None:
    url = etcd_server.endpoint
    put = json.dumps({"key": b64("/hcm/gw"), "value": b64("via-http")}).encode()
    assert http_request("POST", f"{url}/v3/kv/put", put)[0] == 200

    status, body = http_request(
        "POST", f"{url}/v3/kv/range", json.dumps({"key": b64("/hcm/gw")}).encode()
    )
    assert status == 200
    assert base64.b64decode(json.loads(body)["kvs"][0]["value"]) == b"via-http"
    # The same key as etcdctl sees it.
    assert etcd_server.etcdctl("get", "/hcm/gw", "--print-value-only").stdout.strip() == "via-http"


def test_etcd_put_get_with_etcdctl(etcd_server: EtcdServer) -> None:
    assert etcd_server.etcdctl("put", "/hcm/ctl", "via-etcdctl").stdout.strip() == "OK"
    assert (
        etcd_server.etcdctl("get", "/hcm/ctl", "--print-value-only").stdout.strip() == "via-etcdctl"
    )


# -- fault proxy in front of a real S3 server --------------------------------------


def test_fault_proxy_passes_requests_through(s3_server: S3Server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="a/obj.txt", Body=b"through the proxy")

    with FaultProxy(s3_server.endpoint_url) as proxy:
        via_proxy = s3_server.client(endpoint_url=proxy.endpoint_url)
        # Signed for the proxy's Host: only works if Host is forwarded unchanged.
        got = via_proxy.get_object(Bucket=s3_bucket, Key="a/obj.txt")["Body"].read()
        via_proxy.put_object(Bucket=s3_bucket, Key="a/put.txt", Body=b"put via proxy")

    assert got == b"through the proxy"
    assert ("GET", f"/{s3_bucket}/a/obj.txt") in proxy.requests
    assert s3_server.client().get_object(Bucket=s3_bucket, Key="a/put.txt")["Body"].read() == (
        b"put via proxy"
    )


def test_fault_proxy_outage_on_put_latest_json(private_s3_server: S3ServerFactory) -> None:
    server = private_s3_server()
    bucket = server.create_bucket("fault-test")
    rules = [(on("PUT", "/latest.json"), server.stop)]

    with FaultProxy(server.endpoint_url, rules) as proxy:
        s3 = server.client(endpoint_url=proxy.endpoint_url, **NO_RETRY)
        s3.put_object(Bucket=bucket, Key="runs/7/part-0.json", Body=b"{}")
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=bucket, Key="runs/7/latest.json", Body=b'{"run": 7}')

    assert not server.running
    assert proxy.requests[-1] == ("PUT", f"/{bucket}/runs/7/latest.json")
    last = proxy.seen[-1]
    assert last.faulted and not last.forwarded

    server.restart()
    direct = server.client()
    with pytest.raises(ClientError) as missing:
        direct.head_object(Bucket=bucket, Key="runs/7/latest.json")
    assert missing.value.response["Error"]["Code"] in {"404", "NoSuchKey"}
    assert direct.get_object(Bucket=bucket, Key="runs/7/part-0.json")["Body"].read() == b"{}"
