"""The role storage_access: a read-only IAM user (moto_server's IAM API) whose key lands in a Secret of
the lab's cloud cluster; a re-run changes nothing; revoking removes key, user and Secret.

moto stores IAM policies but S3 here is rclone's, which does not evaluate them: the test checks the
policy document the user gets, statement by statement. moto 5 does not implement
ListServiceSpecificCredentials, which amazon.aws.iam_user calls before deleting a user, so the
tests revoke with storage_access_delete_user false: keys and policy are deleted, the user stays.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.helpers.ansible_run import REPO, Run, run_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/storage_access.yml"
ADMIN_SECRET = "iam-admin-secret-never-logged"


def failures(run: Run) -> str:
    return "\n".join(str(r.get("msg", r)) for r in run.task_results() if r.get("failed"))


@pytest.fixture
def access(lab, moto_server):
    base = {
        "storage_access_name": "hcm-restore-cloud", "storage_access_bucket": "dr-backups",
        "storage_access_prefixes": ["catalog", "velero/", "restic/onprem"],
        "storage_access_s3_endpoint_url": "https://s3.backup.example.net", "storage_access_s3_region": "eu-central-1",
        "storage_access_aws_endpoint_url": moto_server.endpoint_url, "storage_access_aws_access_key": "admin",
        "storage_access_aws_secret_key": ADMIN_SECRET, "storage_access_kubeconfig": str(lab.kubeconfig("cloud")),
        "storage_access_delete_user": False,  # see the module docstring
    }
    yield lambda **over: run_playbook(PLAYBOOK, extra_vars={**base, **over}), moto_server.client("iam"), client.CoreV1Api(lab.api("cloud"))
    run_playbook(PLAYBOOK, extra_vars={**base, "storage_access_state": "absent"})


def secret_data(core: Any) -> dict[str, str]:
    found = core.read_namespaced_secret("hcm-backup-read", "kube-system")
    return {k: base64.b64decode(v).decode() for k, v in found.data.items()}


def test_grant_makes_a_read_only_user_and_hands_its_key_to_the_target_cluster(access):
    grant, iam, core = access
    first = grant()
    assert first.returncode == 0, failures(first)
    assert ADMIN_SECRET not in first.output

    policy = iam.get_user_policy(UserName="hcm-restore-cloud", PolicyName="hcm-backup-read")["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["ReadBackups"]["Action"] == ["s3:GetObject"]
    assert statements["ReadBackups"]["Resource"] == [
        "arn:aws:s3:::dr-backups/catalog/*", "arn:aws:s3:::dr-backups/velero/*", "arn:aws:s3:::dr-backups/restic/onprem/*"]
    assert statements["ListBackups"]["Condition"] == {"StringLike": {"s3:prefix": ["catalog/*", "velero/*", "restic/onprem/*"]}}
    assert {a for s in policy["Statement"] for a in s["Action"]} == {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}

    [key] = iam.list_access_keys(UserName="hcm-restore-cloud")["AccessKeyMetadata"]
    data = secret_data(core)
    assert data["access_key"] == key["AccessKeyId"] and len(data["secret_key"]) >= 20
    assert data["secret_key"] not in first.output
    assert {k: data[k] for k in ("endpoint_url", "region", "bucket")} == {
        "endpoint_url": "https://s3.backup.example.net", "region": "eu-central-1", "bucket": "dr-backups"}

    again = grant()
    assert again.returncode == 0, failures(again)
    assert again.stats()["changed"] == 0
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName="hcm-restore-cloud")["AccessKeyMetadata"]] == [key["AccessKeyId"]]


def test_revoke_removes_keys_policy_and_secret(access):
    grant, iam, core = access
    assert grant().returncode == 0
    revoked = grant(storage_access_state="absent")
    assert revoked.returncode == 0, failures(revoked)
    assert iam.list_access_keys(UserName="hcm-restore-cloud")["AccessKeyMetadata"] == []
    assert iam.list_user_policies(UserName="hcm-restore-cloud")["PolicyNames"] == []
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("hcm-backup-read", "kube-system")
    assert missing.value.status == 404
    again = grant(storage_access_state="absent")
    assert again.returncode == 0 and again.stats()["changed"] == 0, failures(again)


def test_secret_mode_hands_over_given_credentials_and_needs_them(access):
    grant, _iam, core = access
    missing = grant(storage_access_mode="secret")
    assert missing.returncode != 0 and "with mode secret, storage_access_credentials" in failures(missing)
    given = grant(storage_access_mode="secret", storage_access_credentials={"access_key": "rgw-reader", "secret_key": "rgw-read-secret-never-logged"})
    assert given.returncode == 0, failures(given)
    assert "rgw-read-secret-never-logged" not in given.output
    assert secret_data(core)["access_key"] == "rgw-reader"
