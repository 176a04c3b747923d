"""The etcd backup agent against a real etcd 3.5 (Debian 13) with client TLS and the real S3 server.

Real data goes in first; the snapshot the agent uploads is restored into a fresh etcd, where the
data is found again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import build_bundle
from lab.hclab.services import EtcdServer
from tests.helpers.ansible_run import REPO
from tests.integration.test_backup_catalog import info

pytestmark = pytest.mark.integration

KEYS = {"/registry/secrets/shop/db-password-%03d" % i: os.urandom(24).hex() for i in range(300)}


@pytest.fixture
def etcd(debian_root, tmp_path):
    bins = debian_root / "usr/bin"
    with EtcdServer(tmp_path / "etcd", tls=True, binary=str(bins / "etcd"), etcdctl_binary=str(bins / "etcdctl")) as server:
        for key, value in KEYS.items():
            server.etcdctl("put", key, value)
        yield server


@pytest.fixture
def agent(tmp_path):
    return build_bundle(REPO / "roles/etcd_backup/files/hcm_etcd_backup.py", tmp_path / "bundle")


def settings(server, debian_root, s3_server, bucket, tmp_path, **over):
    values = {
        "cluster": "onprem",
        "member": "cp-1",
        "work_dir": str(tmp_path / "work"),
        "etcd": {"endpoints": server.endpoint, "cacert": server.ca_file, "cert": server.client_cert, "key": server.client_key,
                 "etcdctl": str(debian_root / "usr/bin/etcdctl"), "etcdutl": str(debian_root / "usr/bin/etcdutl")},
        "s3": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "bucket": bucket,
               "access_key": s3_server.access_key, "secret_key": s3_server.secret_key, "max_attempts": 2},
        "retention": {"keep_last": 2, "max_age": "7d"},
    }
    values.update(over)
    path = tmp_path / "hcm-etcd-backup.json"
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return path


def run_agent(agent, config):
    return subprocess.run(["/usr/bin/python3", "-I", str(agent), "--config", str(config)], capture_output=True, text=True, timeout=300, check=False)


def test_snapshot_is_uploaded_recorded_and_restores_the_data(etcd, agent, debian_root, s3_server, s3_bucket, tmp_path):
    done = run_agent(agent, settings(etcd, debian_root, s3_server, s3_bucket, tmp_path))
    assert done.returncode == 0, done.stderr
    assert "backup complete" in done.stderr
    assert not list((tmp_path / "work").glob("*.db*")), "no copy of the snapshot may stay on the host"

    latest = info(s3_server, s3_bucket, cluster="onprem", node="_etcd")["latest"]
    [snapshot] = latest["data"]["etcd_snapshot"]
    assert snapshot["details"]["total_keys"] >= len(KEYS) and snapshot["details"]["member"] == "cp-1"
    key = snapshot["location"].split("/", 3)[3]
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert len(body) == snapshot["size"] and hashlib.sha256(body).hexdigest() == snapshot["sha256"]

    downloaded = tmp_path / "restore.db"
    downloaded.write_bytes(body)
    restored_dir = tmp_path / "restored"
    subprocess.run([str(debian_root / "usr/bin/etcdutl"), "snapshot", "restore", str(downloaded), "--data-dir", str(restored_dir / "data")],
                   check=True, capture_output=True)
    fresh = EtcdServer(restored_dir, binary=str(debian_root / "usr/bin/etcd"), etcdctl_binary=str(debian_root / "usr/bin/etcdctl"))
    # Restoring rewrote the member's identity: the fresh member must start as a new one-node cluster.
    fresh.argv = [a for a in fresh.argv if not a.startswith(("--initial-cluster=", "--name="))] + [
        "--name=default", "--initial-cluster=default=%s" % fresh.peer_url]
    with fresh:
        found = fresh.etcdctl("get", "/registry/secrets/", "--prefix", "--write-out=json")
        kvs = json.loads(found.stdout)["kvs"]
        assert {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode() for kv in kvs} == KEYS


def test_retention_keeps_the_newest_snapshots_and_deletes_the_rest(etcd, agent, debian_root, s3_server, s3_bucket, tmp_path):
    config = settings(etcd, debian_root, s3_server, s3_bucket, tmp_path)
    for run in range(3):
        done = run_agent(agent, config)
        assert done.returncode == 0, done.stderr
        if run < 2:
            subprocess.run(["sleep", "1.1"], check=True)  # snapshot names carry the second
    entries = info(s3_server, s3_bucket, cluster="onprem", node="_etcd", include_entries=True)["nodes"][0]["entries"]
    assert len(entries) == 2
    stored = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="etcd/onprem/").get("Contents", [])]
    assert len(stored) == 2


def test_a_refused_certificate_fails_clearly_and_leaves_latest_alone(etcd, agent, debian_root, s3_server, s3_bucket, tmp_path):
    good = run_agent(agent, settings(etcd, debian_root, s3_server, s3_bucket, tmp_path))
    assert good.returncode == 0, good.stderr
    before = info(s3_server, s3_bucket, cluster="onprem", node="_etcd")["latest"]["id"]
    wrong = dict(json.loads((tmp_path / "hcm-etcd-backup.json").read_text())["etcd"], cert=etcd.ca_file, key=etcd.client_key)
    failed = run_agent(agent, settings(etcd, debian_root, s3_server, s3_bucket, tmp_path, etcd=wrong))
    assert failed.returncode == 1
    assert "backup FAILED: etcdctl snapshot save from %s failed" % etcd.endpoint in failed.stderr
    assert "Traceback" not in failed.stderr
    assert info(s3_server, s3_bucket, cluster="onprem", node="_etcd")["latest"]["id"] == before
