"""The role provision_node against moto_server's EC2 API: one VM per name, however often it runs.

moto answers the EC2 API over real HTTP (amazon.aws.ec2_instance talks to it with boto3); its
instances have addresses nothing listens on, so the SSH wait is switched off except in the test
of a failed provisioning, where it is what fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.ansible_run import REPO, Run, run_module, run_playbook

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/provision_node.yml"
K8S_VERSION = "v1.37.2"
SECRET_KEY = "moto-takes-any-secret-never-logged"


@pytest.fixture
def target(moto_server, s3_server, s3_bucket):
    """moto's first AMI, recorded as the worker image of the cluster `cloud` in the catalog."""
    ec2 = moto_server.client("ec2")
    image_id = ec2.describe_images()["Images"][0]["ImageId"]
    catalog = {"bucket": s3_bucket, "cluster": "cloud", "endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
               "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    recorded = run_module("backup_catalog", {**catalog, "node": "_images", "data": {"image": [
        {"name": f"aws/{moto_server.region}/old", "location": f"aws://{moto_server.region}/ami-00000000", "size": 0,
         "created_at": "2026-01-01T00:00:00Z",
         "details": {"cloud": "aws", "region": moto_server.region, "image_id": "ami-00000000", "kubernetes_version": "v1.36.0"}},
        {"name": f"aws/{moto_server.region}/{K8S_VERSION}", "location": f"aws://{moto_server.region}/{image_id}", "size": 0,
         "created_at": "2026-11-25T00:00:00Z",
         "details": {"cloud": "aws", "region": moto_server.region, "image_id": image_id, "kubernetes_version": K8S_VERSION}},
    ]}})
    assert not recorded.get("failed"), recorded.run.output
    yield {"image_id": image_id, "ec2": ec2, "vars": {
        "provision_node_cloud": "aws", "provision_node_region": moto_server.region, "provision_node_kubernetes_version": K8S_VERSION,
        "provision_node_aws_endpoint_url": moto_server.endpoint_url, "provision_node_aws_access_key": moto_server.access_key,
        "provision_node_aws_secret_key": SECRET_KEY, "provision_node_aws_instance_type": "t3.large",
        "provision_node_catalog": catalog, "provision_node_ssh_wait": False, "provision_node_replaces": "onprem-worker-1",
    }}
    # moto lives for the session: leave no running instance behind for later tests
    running = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "tag:hybridcloud.io/managed-by", "Values": ["hybridcloud.migration"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"] for i in r["Instances"]]
    if running:
        ec2.terminate_instances(InstanceIds=running)


def instances(ec2: Any, name: str) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def provision(target: dict[str, Any], **over: Any) -> Run:
    return run_playbook(PLAYBOOK, extra_vars={**target["vars"], **over})


def failures(run: Run) -> str:
    """The messages of the failed tasks, for assertion messages."""
    return "\n".join(str(r.get("msg", r)) for r in run.task_results() if r.get("failed"))


def test_creates_one_vm_from_the_catalogs_image_and_a_rerun_creates_none(target):
    first = provision(target, provision_node_name="cloud-worker-9")
    assert first.returncode == 0, failures(first)
    [vm] = instances(target["ec2"], "cloud-worker-9")
    assert vm["State"]["Name"] == "running" and vm["ImageId"] == target["image_id"] and vm["InstanceType"] == "t3.large"
    tags = {t["Key"]: t["Value"] for t in vm["Tags"]}
    assert tags["hybridcloud.io/replaces-node"] == "onprem-worker-1" and tags["hybridcloud.io/kubernetes-version"] == K8S_VERSION
    assert f"cloud-worker-9 at {vm['PrivateIpAddress']} ({vm['InstanceId']})" in first.output
    assert SECRET_KEY not in first.output

    again = provision(target, provision_node_name="cloud-worker-9")
    assert again.returncode == 0, failures(again)
    assert again.stats("localhost")["changed"] == 0
    assert [i["InstanceId"] for i in instances(target["ec2"], "cloud-worker-9")] == [vm["InstanceId"]]


def test_a_vm_that_never_answers_on_ssh_is_removed_and_the_error_says_so(target):
    failed = provision(target, provision_node_name="cloud-worker-8", provision_node_ssh_wait=True, provision_node_ssh_timeout=3)
    assert failed.returncode != 0
    assert "Provisioning cloud-worker-8 on aws failed at" in failed.output and "The VM this run created was removed" in failed.output
    assert [i["State"]["Name"] for i in instances(target["ec2"], "cloud-worker-8")] == ["terminated"]


def test_no_image_for_the_cloud_in_the_catalog_is_a_clear_error(target):
    failed = provision(target, provision_node_name="cloud-worker-7", provision_node_kubernetes_version="v9.9.9")
    assert failed.returncode != 0
    assert "names no worker image for aws us-east-1 and Kubernetes v9.9.9" in failed.output
    assert "aws/us-east-1/v1.37.2" in failed.output and "build_image.yml" in failed.output
    assert instances(target["ec2"], "cloud-worker-7") == []
