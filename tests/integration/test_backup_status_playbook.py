"""playbooks/backup_status.yml against a real S3 server: it names the workers without a fresh backup."""

from __future__ import annotations

import json

import pytest

from tests.helpers.ansible_run import REPO, run_playbook
from tests.integration.test_backup_catalog import write

pytestmark = pytest.mark.integration


@pytest.fixture
def site(tmp_path, s3_server, s3_bucket):
    """An inventory like inventories/example, pointing at the test S3 server."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text(
        json.dumps({"all": {"children": {"workers": {"hosts": {"worker-1": {}, "worker-2": {}}}}}})
    )
    settings = {
        "hcm_cluster_name": "onprem",
        "hcm_s3_endpoint_url": s3_server.endpoint_url,
        "hcm_s3_region": s3_server.region,
        "hcm_s3_bucket": s3_bucket,
        "hcm_s3_access_key": s3_server.access_key,
        "hcm_s3_secret_key": s3_server.secret_key,
        "hcm_backup_max_age": "1h",
    }
    (tmp_path / "group_vars" / "all.yml").write_text(json.dumps(settings))
    return tmp_path


def test_status_fails_naming_the_worker_without_a_fresh_backup_then_passes(site, s3_server, s3_bucket):
    playbook = REPO / "playbooks" / "backup_status.yml"
    write(s3_server, s3_bucket, node="worker-1")
    write(s3_server, s3_bucket, node="worker-2", created_at="2020-01-01T00:00:00Z")

    stale = run_playbook(playbook, inventory=site / "hosts.yml")
    assert stale.returncode != 0
    [failure] = [r for r in stale.task_results() if r.get("failed")]
    assert failure["_task"] == "Fail when a worker has no fresh backup"
    assert "for: worker-2." in failure["msg"]
    assert "worker-1" not in failure["msg"].split("for:")[1]
    assert s3_server.secret_key not in stale.output

    write(s3_server, s3_bucket, node="worker-2")
    fresh = run_playbook(playbook, inventory=site / "hosts.yml")
    assert fresh.returncode == 0, fresh.output
    assert fresh.stats()["changed"] == 0 and fresh.stats()["failures"] == 0
