"""The role velero against the lab's onprem cluster, with a real Velero server and the real S3 server.

The role installs Velero's CRDs, the credentials Secret, the BackupStorageLocation and Schedules
(``velero_deploy_server: false``: kwok nodes run no containers, so the real server, built from its
Go module by ``make lab-build-velero``, runs as a host process with the AWS plugin and the lab's
admin kubeconfig; it starts once the role has created the namespace, as the Deployment would).
Velero then writes real backups to the S3 server; the tests download the tarball with boto3 and
find in it the objects created before. The Deployment path is exercised on the cloud cluster,
whose kwok nodes make it Available, with images from a "mirror" registry.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import build_bundle
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_s3_client
from tests.helpers.ansible_run import REPO, Run, run_module, run_playbook
from tests.helpers.velero import ignore_missing, remove_namespace, remove_velero, velero_dir
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

PLAYBOOK = REPO / "tests/integration/playbooks/velero.yml"
MANIFEST = REPO / "roles/velero/files/manifests/velero-v1.18.3.yaml"
SHOP = "velero-shop"  # the test's workload namespace
EVERY_MINUTE = "shop-every-minute"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "velero")
REPORT_TASK = "Report the backup storage location"
# resources/<resource>/namespaces/<ns>/<name>.json, and the same under <resource>/<version>-preferredversion/
NAMESPACED_ITEM = re.compile(r"resources/[^/]+/(?:[^/]+-preferredversion/)?namespaces/([^/]+)/[^/]+\.json$")


def k8s(lab: Any, cluster: str = "onprem") -> Any:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    api = lab.api(cluster)
    return client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api), client.ApiextensionsV1Api(api)


def velero_objects(lab: Any, plural: str, cluster: str = "onprem", **kwargs: Any) -> list[dict[str, Any]]:
    custom = k8s(lab, cluster)[2]
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object("velero.io", "v1", "velero", plural, **kwargs)["items"]
    return items


def velero_object(lab: Any, plural: str, name: str, cluster: str = "onprem") -> dict[str, Any]:
    obj: dict[str, Any] = k8s(lab, cluster)[2].get_namespaced_custom_object("velero.io", "v1", "velero", plural, name)
    return obj


def results(run: Run) -> list[dict[str, Any]]:
    """Task results with the role's prefix (``hybridcloud.migration.velero : ``) taken off their names."""
    return [dict(r, _task=r["_task"].split(" : ", 1)[-1]) for r in run.task_results()]


def report(run: Run) -> str:
    [result] = [r for r in results(run) if r["_task"] == REPORT_TASK]
    return str(result.get("msg", ""))


def changed_tasks(run: Run) -> list[str]:
    return [r["_task"] for r in results(run) if r.get("changed")]


def seed_workload(lab: Any) -> None:
    """A Deployment, a ConfigMap and a Secret in SHOP: what the backups must hold."""
    core, apps, _custom, _ext = k8s(lab)
    core.create_namespace({"metadata": {"name": SHOP}})
    core.create_namespaced_config_map(SHOP, {"metadata": {"name": "settings"}, "data": {"color": "blue", "size": "XL"}})
    core.create_namespaced_secret(SHOP, {"metadata": {"name": "db"}, "stringData": {"password": "not-a-real-one"}})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(SHOP, {
        "metadata": {"name": "web", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
    })


@dataclass
class Install:
    bucket: str
    extra_vars: dict[str, Any]
    fresh_check: Run
    fresh_check_left: list[str]
    first: Run

    def vars(self, **over: Any) -> dict[str, Any]:
        return {**self.extra_vars, **over}


def installed_velero_kinds(lab: Any, cluster: str = "onprem") -> list[str]:
    core, _apps, _custom, ext = k8s(lab, cluster)
    found = [crd.metadata.name for crd in ext.list_custom_resource_definition(label_selector="component=velero").items]
    found += [f"namespace/{ns.metadata.name}" for ns in core.list_namespace().items if ns.metadata.name == "velero"]
    return found


@pytest.fixture(scope="module")
def velero_install(lab, s3_server, velero_server):
    """Check mode on the fresh cluster, then the real run while the Velero server starts."""
    bucket = s3_server.create_bucket(f"velero-{uuid.uuid4().hex[:8]}")
    seed_workload(lab)
    extra_vars = {
        "velero_kubeconfig": str(lab.kubeconfig("onprem")),
        "velero_deploy_server": False,
        "velero_s3_bucket": bucket,
        "velero_s3_endpoint_url": s3_server.endpoint_url,
        "velero_s3_region": s3_server.region,
        "velero_s3_access_key": s3_server.access_key,
        "velero_s3_secret_key": s3_server.secret_key,
        "velero_bsl_wait_timeout": 120,
        "velero_schedules": [
            {"name": "resources"},  # the role's defaults: hourly, every namespace but the system ones
            {"name": EVERY_MINUTE, "schedule": "* * * * *", "ttl": "2h0m0s", "included_namespaces": [SHOP],
             "labels": {"hcm-test": "every-minute"}},
            {"name": "web-only", "paused": True, "label_selector": {"matchLabels": {"app": "web"}},
             "included_resources": ["deployments.apps", "configmaps"], "include_cluster_resources": False,
             "backup_extra": {"csiSnapshotTimeout": "5m0s"}},
        ],
    }
    try:
        fresh_check = run_playbook(PLAYBOOK, extra_vars=extra_vars, check=True)
        fresh_check_left = installed_velero_kinds(lab)
        velero_server.start_in_background()
        first = run_playbook(PLAYBOOK, extra_vars=extra_vars)
        if first.returncode != 0:
            raise AssertionError(f"the role failed:\n{first.output}\nvelero server log:\n{velero_server.log_tail(40)}")
        velero_server.join_start()
        yield Install(bucket, extra_vars, fresh_check, fresh_check_left, first)
    finally:  # leave the shared lab as it was
        velero_server.stop()
        remove_namespace(lab, SHOP)
        remove_velero(lab, "onprem")


def wait_for_backup(lab: Any, velero_server: Any, timeout: float, **selector: Any) -> dict[str, Any]:
    """The first backup matching ``selector`` to finish; fails on a failed backup, with its logs."""
    deadline = time.monotonic() + timeout
    while True:
        for backup in velero_objects(lab, "backups", **selector):
            phase = backup.get("status", {}).get("phase", "")
            if phase == "Completed":
                return backup
            if phase in ("Failed", "PartiallyFailed", "FailedValidation"):
                name = backup["metadata"]["name"]
                logs = velero_server.cli("backup", "logs", name, check=False)
                raise AssertionError(f"backup {name} is {phase}: {backup.get('status')}\n{logs.stdout}{logs.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no completed backup for {selector} within {timeout:.0f}s: {velero_objects(lab, 'backups')}")
        time.sleep(2)


def tarball(s3_server: Any, bucket: str, name: str, prefix: str = "velero") -> dict[str, bytes]:
    """The members of ``<prefix>/backups/<name>/<name>.tar.gz``, downloaded with boto3."""
    key = f"{prefix}/backups/{name}/{name}.tar.gz"
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {member.name: archive.extractfile(member).read() for member in archive.getmembers() if member.isfile()}


# -- install, report, idempotence, check mode --------------------------------------------------

def test_check_mode_on_a_fresh_cluster_creates_nothing(velero_install):
    run = velero_install.fresh_check
    assert run.returncode == 0, run.output
    assert velero_install.fresh_check_left == [], "check mode created objects"
    notes = [r.get("msg", "") for r in results(run) if r["_task"] == "Explain what check mode skipped"]
    assert notes and "do not exist yet" in notes[0]


def test_role_installs_velero_and_reports_the_location_available(lab, velero_install, s3_server):
    run = velero_install.first
    assert run.returncode == 0, run.output
    assert f"backup storage location velero/default (s3://{velero_install.bucket}/velero at {s3_server.endpoint_url}) is Available" in report(run)
    assert s3_server.secret_key not in run.output

    bsl = velero_object(lab, "backupstoragelocations", "default")
    assert bsl["status"]["phase"] == "Available"
    assert bsl["spec"]["provider"] == "aws" and bsl["spec"]["default"] is True
    assert bsl["spec"]["objectStorage"] == {"bucket": velero_install.bucket, "prefix": "velero"}
    assert bsl["spec"]["config"] == {"region": s3_server.region, "s3ForcePathStyle": "true", "s3Url": s3_server.endpoint_url}
    assert bsl["spec"]["credential"] == {"name": "velero-s3-credentials", "key": "cloud"}

    core, apps, _custom, ext = k8s(lab)
    secret = core.read_namespaced_secret("velero-s3-credentials", "velero")
    credentials = base64.b64decode(secret.data["cloud"]).decode()
    assert credentials == f"[default]\naws_access_key_id={s3_server.access_key}\naws_secret_access_key={s3_server.secret_key}\n"
    assert {crd.metadata.name for crd in ext.list_custom_resource_definition(label_selector="component=velero").items} >= {
        "backups.velero.io", "backupstoragelocations.velero.io", "schedules.velero.io", "restores.velero.io"}
    assert apps.list_namespaced_deployment("velero").items == [], "velero_deploy_server: false must create no Deployment"

    schedules = {s["metadata"]["name"]: s for s in velero_objects(lab, "schedules")}
    assert set(schedules) == {"resources", EVERY_MINUTE, "web-only"}
    default = schedules["resources"]["spec"]
    assert default["schedule"] == "0 * * * *" and default["template"]["ttl"] == "168h0m0s"
    assert default["template"]["includedNamespaces"] == ["*"]
    assert default["template"]["excludedNamespaces"] == list(SYSTEM_NAMESPACES)
    assert default["template"]["includeClusterResources"] is True, "the migration needs ClusterRoles, CRDs and PVs"
    assert schedules[EVERY_MINUTE]["status"]["phase"] == "Enabled"
    web_only = schedules["web-only"]["spec"]
    assert web_only["paused"] is True and web_only["template"]["labelSelector"] == {"matchLabels": {"app": "web"}}
    assert web_only["template"]["includedResources"] == ["deployments.apps", "configmaps"]
    assert web_only["template"]["includeClusterResources"] is False and web_only["template"]["csiSnapshotTimeout"] == "5m0s"


def test_second_run_changes_nothing(velero_install):
    run = run_playbook(PLAYBOOK, extra_vars=velero_install.extra_vars)
    assert run.returncode == 0, run.output
    assert run.stats()["changed"] == 0, changed_tasks(run)
    assert "is Available" in report(run)


def test_check_mode_changes_nothing(lab, velero_install):
    def state() -> dict[str, Any]:
        specs = {f"{plural}/{o['metadata']['name']}": o["spec"] for plural in ("schedules", "backupstoragelocations")
                 for o in velero_objects(lab, plural)}
        secret = k8s(lab)[0].read_namespaced_secret("velero-s3-credentials", "velero")
        return dict(specs, secret=secret.metadata.resource_version)

    before = state()
    schedules = [dict(s, schedule="30 2 * * *") if s["name"] == "resources" else s for s in velero_install.extra_vars["velero_schedules"]]
    changes = velero_install.vars(velero_schedules=schedules, velero_s3_region="eu-central-1", velero_s3_secret_key="another-secret-key")
    run = run_playbook(PLAYBOOK, extra_vars=changes, check=True)
    assert run.returncode == 0, run.output
    assert {"Apply the schedules", "Apply the backup storage location", "Store the S3 credentials for Velero"} <= set(changed_tasks(run))
    assert state() == before
    assert "another-secret-key" not in run.output


# -- real backups --------------------------------------------------------------------------------

def test_backup_from_the_default_schedule_has_the_workload_and_no_system_namespace(lab, velero_install, velero_server, s3_server):
    name = f"now-{uuid.uuid4().hex[:6]}"
    created = velero_server.cli("backup", "create", name, "--from-schedule", "resources", "--wait")
    assert "Completed" in created.stdout, created.stdout
    backup = velero_object(lab, "backups", name)
    assert backup["status"]["phase"] == "Completed" and backup["metadata"]["labels"]["velero.io/schedule-name"] == "resources"

    members = tarball(s3_server, velero_install.bucket, name)
    assert members["metadata/version"].strip() == b"1.1.0"
    deployment = json.loads(members[f"resources/deployments.apps/namespaces/{SHOP}/web.json"])
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    configmap = json.loads(members[f"resources/configmaps/namespaces/{SHOP}/settings.json"])
    assert configmap["data"] == {"color": "blue", "size": "XL"}
    assert f"resources/secrets/namespaces/{SHOP}/db.json" in members
    pods = [json.loads(body) for path, body in members.items() if path.startswith(f"resources/pods/namespaces/{SHOP}/")]
    assert len(pods) == 2 and all(pod["spec"]["nodeName"] in lab.nodes("onprem") for pod in pods)
    assert f"resources/namespaces/cluster/{SHOP}.json" in members
    for system in SYSTEM_NAMESPACES:
        assert not [path for path in members if f"/namespaces/{system}/" in path or path.endswith(f"/cluster/{system}.json")], system

    # What sits beside the tarball: the backup object and its resource list.
    stored = s3_server.client().get_object(Bucket=velero_install.bucket, Key=f"velero/backups/{name}/velero-backup.json")["Body"].read()
    assert json.loads(stored)["metadata"]["name"] == name
    listing = s3_server.client().get_object(Bucket=velero_install.bucket, Key=f"velero/backups/{name}/{name}-resource-list.json.gz")
    resource_list = json.loads(gzip.decompress(listing["Body"].read()))
    assert f"{SHOP}/web" in resource_list["apps/v1/Deployment"] and f"{SHOP}/settings" in resource_list["v1/ConfigMap"]


# -- TLS with a private CA: the CA bundle goes to caCert -----------------------------------------

def test_location_behind_a_private_ca_needs_the_ca_bundle(lab, velero_install, tls_s3_server):
    bucket = tls_s3_server.create_bucket(f"velero-tls-{uuid.uuid4().hex[:6]}")
    tls = velero_install.vars(
        velero_bsl_name="tls", velero_bsl_default=False, velero_credentials_secret="tls-credentials",
        velero_s3_bucket=bucket, velero_s3_endpoint_url=tls_s3_server.endpoint_url,
        velero_schedules=[], velero_schedules_prune=False, velero_bsl_wait_timeout=20,
    )
    try:
        unknown_ca = run_playbook(PLAYBOOK, extra_vars=tls)
        assert unknown_ca.returncode != 0
        assert "backup storage location velero/tls is Unavailable after 20 s" in unknown_ca.output
        assert "certificate signed by unknown authority" in unknown_ca.output and "velero_s3_ca_bundle" in unknown_ca.output

        with_ca = run_playbook(PLAYBOOK, extra_vars=dict(tls, velero_s3_ca_bundle=str(tls_s3_server.ca_file), velero_bsl_wait_timeout=60))
        assert with_ca.returncode == 0, with_ca.output
        assert "velero/tls" in report(with_ca) and "is Available" in report(with_ca)
        bsl = velero_object(lab, "backupstoragelocations", "tls")
        assert base64.b64decode(bsl["spec"]["objectStorage"]["caCert"]) == Path(tls_s3_server.ca_file).read_bytes()
        assert velero_object(lab, "schedules", "resources"), "velero_schedules_prune: false keeps the other schedules"
    finally:
        core, _apps, custom, _ext = k8s(lab)
        ignore_missing(lambda: custom.delete_namespaced_custom_object("velero.io", "v1", "velero", "backupstoragelocations", "tls"))
        ignore_missing(lambda: core.delete_namespaced_secret("tls-credentials", "velero"))


# -- the in-cluster server, with images from a mirror ---------------------------------------------

def test_server_deployment_uses_the_sites_images(lab, s3_server):
    """velero_deploy_server on the cloud cluster: kwok makes the Deployment Available; nothing validates the location."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    mirror = "registry.example.net/mirror"
    deploy_vars = {
        "velero_kubeconfig": str(lab.kubeconfig("cloud")),
        "velero_image": f"{mirror}/velero:v1.18.3",
        "velero_plugin_aws_image": f"{mirror}/velero-plugin-for-aws:v1.14.3",
        "velero_s3_bucket": "not-validated",
        "velero_s3_endpoint_url": s3_server.endpoint_url,
        "velero_s3_access_key": s3_server.access_key,
        "velero_s3_secret_key": s3_server.secret_key,
        "velero_bsl_wait": False,
        "velero_schedules": [],
    }
    try:
        run = run_playbook(PLAYBOOK, extra_vars=deploy_vars)
        assert run.returncode == 0, run.output
        assert "is not validated yet" in report(run)
        _core, apps, _custom, _ext = k8s(lab, "cloud")
        deployment = apps.read_namespaced_deployment("velero", "velero")
        assert deployment.status.available_replicas == 1
        spec = deployment.spec.template.spec
        assert [c.image for c in spec.containers] == [f"{mirror}/velero:v1.18.3"]
        assert [c.image for c in spec.init_containers] == [f"{mirror}/velero-plugin-for-aws:v1.14.3"]
        assert spec.service_account_name == "velero"
        binding = client.RbacAuthorizationV1Api(lab.api("cloud")).read_cluster_role_binding("velero")
        assert binding.role_ref.name == "cluster-admin" and binding.subjects[0].namespace == "velero"

        again = run_playbook(PLAYBOOK, extra_vars=deploy_vars)
        assert again.returncode == 0 and again.stats()["changed"] == 0, changed_tasks(again)
    finally:
        remove_velero(lab, "cloud")


# -- the catalog: Velero's backups recorded under _velero -------------------------------------------

def catalog_store(s3_server: Any, bucket: str) -> CatalogStore:
    settings = S3Settings.from_params({"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                                       "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}, environ={})
    return CatalogStore(make_s3_client(settings), settings, bucket)


def site_vars(lab: Any, s3_server: Any, bucket: str) -> dict[str, Any]:
    """The inventory variables of a site whose source cluster is the lab's onprem."""
    return {
        "hcm_cluster_name": "onprem", "hcm_source_kubeconfig": str(lab.kubeconfig("onprem")),
        "hcm_s3_endpoint_url": s3_server.endpoint_url, "hcm_s3_region": s3_server.region, "hcm_s3_bucket": bucket,
        "hcm_s3_access_key": s3_server.access_key, "hcm_s3_secret_key": s3_server.secret_key,
        "hcm_velero_schedules": [{"name": "resources"}], "hcm_backup_max_age": "1h", "hcm_catalog_keep_last": 10,
    }


def run_velero_catalog_agent(s3_server: Any, bucket: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The agent the role velero_catalog installs, as its systemd service runs it (settings file, zipapp)."""
    bundle = build_bundle(REPO / "roles/velero_catalog/files/hcm_velero_catalog.py", tmp_path / "bundle")
    settings = tmp_path / "hcm-velero-catalog.json"
    settings.write_text(json.dumps({
        "cluster": "onprem", "work_dir": str(tmp_path / "work"), "schedules": ["resources"], "velero_prefix": "velero",
        "s3": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "bucket": bucket,
               "access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        "retention": {"keep_last": 10, "max_age": "7d"},
    }))
    return subprocess.run([sys.executable, str(bundle), "--config", str(settings)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_backup_now_backs_up_each_schedule_and_records_it_in_the_catalog(lab, velero_install, velero_server, s3_server, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    run = run_playbook(REPO / "playbooks/backup_now.yml", inventory=inventory,
                       extra_vars=site_vars(lab, s3_server, velero_install.bucket))
    assert run.returncode == 0, f"{run.output}\nvelero server log:\n{velero_server.log_tail(30)}"

    made = [b for b in velero_objects(lab, "backups", label_selector="velero.io/schedule-name=resources")
            if "-now-" in b["metadata"]["name"]]
    assert len(made) == 1 and made[0]["status"]["phase"] == "Completed", made
    backup = made[0]
    assert backup["spec"]["excludedNamespaces"] == velero_object(lab, "schedules", "resources")["spec"]["template"]["excludedNamespaces"]

    entry = catalog_store(s3_server, velero_install.bucket).latest("onprem", "_velero")
    assert entry is not None, "backup_now recorded nothing"
    [artifact] = entry["data"]["resources"]
    name = backup["metadata"]["name"]
    key = f"velero/backups/{name}/{name}.tar.gz"
    stored = s3_server.client().get_object(Bucket=velero_install.bucket, Key=key)["Body"].read()
    assert artifact["name"] == name and artifact["location"] == f"s3://{velero_install.bucket}/{key}"
    assert artifact["size"] == len(stored) and artifact["sha256"] == hashlib.sha256(stored).hexdigest()
    started = backup["status"]["startTimestamp"]
    assert artifact["created_at"] == entry["created_at"] == started, "the RPO must count from the backup's start"
    assert artifact["details"]["schedule"] == "resources" and artifact["details"]["completed_at"] == backup["status"]["completionTimestamp"]
    assert f"resources/deployments.apps/namespaces/{SHOP}/web.json" in tarball(s3_server, velero_install.bucket, name)

    again = run_module("velero_catalog", {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                                          "access_key": s3_server.access_key, "secret_key": s3_server.secret_key,
                                          "bucket": velero_install.bucket, "cluster": "onprem", "schedules": ["resources"]})
    assert not again.get("failed"), again.run.output
    assert not again["changed"] and again["entry_id"] == entry["id"] and again["recorded"] == [name]


def test_agent_records_newer_backups_and_drops_entries_of_deleted_ones(lab, velero_install, velero_server, s3_server, tmp_path):
    bucket = velero_install.bucket
    store = catalog_store(s3_server, bucket)
    names = [f"agent-{index}-{uuid.uuid4().hex[:6]}" for index in (1, 2)]
    entries = []
    for name in names:
        velero_server.cli("backup", "create", name, "--from-schedule", "resources", "--wait")
        ran = run_velero_catalog_agent(s3_server, bucket, tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert "latest: moved" in ran.stderr, ran.stderr
        entries.append(store.latest("onprem", "_velero"))
        assert [a["name"] for a in entries[-1]["data"]["resources"]] == [name]

    ran = run_velero_catalog_agent(s3_server, bucket, tmp_path)
    assert ran.returncode == 0 and "latest: unchanged" in ran.stderr, ran.stderr

    # Velero deletes the older backup (as its TTL would): its catalog entry goes, the latest stays.
    velero_server.cli("backup", "delete", names[0], "--confirm")
    listing = s3_server.client().list_objects_v2
    wait_until(f"Velero to delete backup {names[0]} from the storage",
               lambda: not listing(Bucket=bucket, Prefix=f"velero/backups/{names[0]}/").get("Contents"), 90, interval=1)
    ran = run_velero_catalog_agent(s3_server, bucket, tmp_path)
    assert ran.returncode == 0, ran.stderr
    keys = store.keys("onprem", "_velero")
    assert entries[0]["id"] not in store.entry_ids(keys) and entries[1]["id"] in store.entry_ids(keys)
    assert store.latest("onprem", "_velero")["id"] == entries[1]["id"]


def test_velero_catalog_refuses_when_no_schedule_has_a_backup(velero_install, s3_server):
    before = catalog_store(s3_server, velero_install.bucket).latest("onprem", "_velero")
    result = run_module("velero_catalog", {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                                           "access_key": s3_server.access_key, "secret_key": s3_server.secret_key,
                                           "bucket": velero_install.bucket, "cluster": "onprem", "schedules": ["web-only"]})
    assert result.get("failed") and "No Completed, unexpired Velero backup of schedule web-only" in result["msg"], result
    assert "backup_now" in result["fix"]
    assert catalog_store(s3_server, velero_install.bucket).latest("onprem", "_velero") == before


# -- the shipped manifest ----------------------------------------------------------------------------

def test_shipped_manifest_is_what_the_pinned_velero_renders():
    """files/manifests/velero-v1.18.3.yaml is exactly render-install-manifest.sh's output with the lab's velero."""
    velero = velero_dir() / "bin" / "velero"
    rendered = subprocess.run(
        ["bash", str(REPO / "roles/velero/files/render-install-manifest.sh"), str(velero), "velero/velero-plugin-for-aws:v1.14.3"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert rendered == MANIFEST.read_text(), "re-render the manifest with roles/velero/files/render-install-manifest.sh"


# -- last, so that the minutes the tests above take count toward its first run ------------------------

def test_a_schedule_makes_backups_on_its_own(lab, velero_install, velero_server, s3_server):
    """The every-minute schedule fires by itself (the first run comes at the first minute after its creation)."""
    backup = wait_for_backup(lab, velero_server, 180, label_selector=f"velero.io/schedule-name={EVERY_MINUTE}")
    name = backup["metadata"]["name"]
    assert name.startswith(EVERY_MINUTE + "-") and backup["metadata"]["labels"]["hcm-test"] == "every-minute"
    assert backup["spec"]["ttl"] == "2h0m0s" and backup["spec"]["includedNamespaces"] == [SHOP]

    members = tarball(s3_server, velero_install.bucket, name)
    assert f"resources/deployments.apps/namespaces/{SHOP}/web.json" in members
    assert f"resources/configmaps/namespaces/{SHOP}/settings.json" in members
    namespaced = {match.group(1) for match in map(NAMESPACED_ITEM.match, members) if match}
    assert namespaced == {SHOP}
