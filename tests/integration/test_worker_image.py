"""The role worker_image: its Packer template checked by Packer itself and by an HCL2 parser, bad
settings refused with a clear message, and the catalog record provision_node's image lookup finds.

Packer and its amazon, openstack and ansible plugins are the real ones, built from Go modules by
lab/build-packer.sh (a no-op once built); `packer init` finds the plugins installed in
.build/lab/packer/plugins and downloads nothing. A real `packer build` needs a cloud that boots
the instance and lets Packer in over SSH, which moto cannot: the build's output, Packer's manifest,
is given here in the format Packer's manifest post-processor writes, and the recording goes to a
real S3 server (rclone serve s3), read back by provision_node's own image tasks.
The lab's image (debootstrap, worker_node through a chroot) is molecule/worker_image.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.helpers.ansible_run import REPO, Run, run_playbook

pytestmark = pytest.mark.integration

PACKER_DIR = REPO / ".build/lab/packer"
K8S = "1.37.2"

ROLE_PLAY = [{"name": "Run worker_image", "hosts": "localhost", "connection": "local", "gather_facts": False,
              "roles": [{"role": "hybridcloud.migration.worker_image"}]}]


@pytest.fixture(scope="module")
def packer() -> Path:
    """lab/build-packer.sh's Packer and plugins (built once per version, then only linked)."""
    subprocess.run(["bash", str(REPO / "lab/build-packer.sh")], check=True, timeout=3600)
    assert (PACKER_DIR / "bin/packer").is_file()
    return PACKER_DIR


def write_play(path: Path, plays: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def role_vars(packer_dir: Path, work_dir: Path, **over: Any) -> dict[str, Any]:
    return {
        "worker_image_kubernetes_version": K8S,
        "worker_image_target": "aws",
        "worker_image_aws_region": "eu-west-1",
        "worker_image_aws_copy_regions": ["eu-central-1"],
        "worker_image_work_dir": str(work_dir),
        "worker_image_packer_binary": str(packer_dir / "bin/packer"),
        "worker_image_packer_plugin_path": str(packer_dir / "plugins"),
        "worker_image_record": False,
        **over,
    }


def run_role(tmp: Path, variables: dict[str, Any]) -> Run:
    return run_playbook(write_play(tmp / "play.yml", ROLE_PLAY), extra_vars=variables)


def task(run: Run, name: str) -> dict[str, Any]:
    found = [r for r in run.task_results() if r["_task"].endswith(name)]
    assert found, f"no task {name!r} ran:\n{run.output}"
    return found[-1]


def task_on(run: Run, host: str, name: str) -> dict[str, Any]:
    found = [r for r in run.task_results(host) if r["_task"].endswith(name)]
    assert found, f"no task {name!r} ran on {host}:\n{run.output}"
    return found[-1]


def parse(path: Path) -> dict[str, Any]:
    """The template as python-hcl2 reads it, quotes stripped, comments left out."""
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, with_meta=False,
                                        explicit_blocks=False)
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=options)


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, Any]:
    """Labelled blocks of one kind (variable, source, provisioner...), by label."""
    found: dict[str, Any] = {}
    for block in parsed.get(kind, []):
        for label, body in block.items():
            if isinstance(body, dict) and len(body) == 1 and kind == "source":  # source "type" "name"
                (name, inner), = body.items()
                found[f"{label}.{name}"] = inner
            else:
                found[label] = body
    return found


@pytest.fixture(scope="module")
def rendered_aws(packer: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    tmp = tmp_path_factory.mktemp("worker-image-aws")
    run = run_role(tmp, role_vars(packer, tmp / "work"))
    assert run.returncode == 0, run.output
    return run, tmp


def test_packer_validates_the_rendered_template(rendered_aws: tuple[Run, Path], packer: Path) -> None:
    run, tmp = rendered_aws
    validate = task(run, "Validate the template with these variables (packer validate)")
    assert validate["rc"] == 0 and "The configuration is valid." in validate["stdout"], validate
    init = task(run, "Install the plugins the template requires (packer init)")
    assert init["rc"] == 0 and not init["changed"], init  # the built plugins satisfy required_plugins
    # What Packer itself sees installed: the three plugins at the versions lab/build-packer.sh built.
    installed = subprocess.run([str(packer / "bin/packer"), "plugins", "installed"], env={
        "PACKER_PLUGIN_PATH": str(packer / "plugins"), "CHECKPOINT_DISABLE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True).stdout
    for name in ("amazon", "openstack", "ansible"):
        assert f"github.com/hashicorp/{name}/packer-plugin-{name}_v" in installed, installed
    # Rendering and validating again changes nothing.
    again = run_role(tmp, role_vars(packer, tmp / "work"))
    assert again.returncode == 0, again.output
    assert again.stats()["changed"] == 0, [r["_task"] for r in again.task_results() if r.get("changed")]


def test_parser_reads_sources_typed_variables_and_the_provisioner(rendered_aws: tuple[Run, Path]) -> None:
    tmp = rendered_aws[1]
    parsed = parse(tmp / "work/worker.pkr.hcl")

    required = parsed["packer"][0]["required_plugins"][0]
    assert {name: spec["source"] for name, spec in required.items()} == {
        "amazon": "github.com/hashicorp/amazon", "openstack": "github.com/hashicorp/openstack",
        "ansible": "github.com/hashicorp/ansible"}

    sources = blocks(parsed, "source")
    assert set(sources) == {"amazon-ebs.worker", "openstack.worker"}
    assert sources["amazon-ebs.worker"]["region"] == "${var.aws_region}"
    assert sources["amazon-ebs.worker"]["ami_regions"] == "${var.aws_copy_regions}"
    assert sources["openstack.worker"]["flavor"] == "${var.openstack_flavor}"

    variables = blocks(parsed, "variable")
    assert all("type" in body for body in variables.values()), [n for n, b in variables.items() if "type" not in b]
    types = {name: body["type"] for name, body in variables.items()}
    assert types["kubernetes_version"] == "string"
    assert types["aws_copy_regions"] == "${list(string)}"
    assert types["openstack_networks"] == "${list(string)}"
    assert types["aws_volume_size"] == "number"
    assert types["tags"] == "${map(string)}"
    validated = {name for name, body in variables.items() if body.get("validation")}
    assert {"kubernetes_version", "image_name_prefix", "aws_region", "aws_copy_regions", "aws_source_ami",
            "aws_subnet_id", "aws_endpoint_url", "aws_volume_size", "openstack_networks", "manifest_path"} <= validated
    for name in validated:
        rule = variables[name]["validation"][0]
        assert f"var.{name}" in rule["condition"] and name in rule["error_message"], (name, rule)

    # Every variable has a value in worker.pkrvars.json, and only those.
    values = json.loads((tmp / "work/worker.pkrvars.json").read_text())
    assert set(values) <= set(variables), set(values) - set(variables)
    assert values["kubernetes_version"] == K8S and values["aws_copy_regions"] == ["eu-central-1"]

    build = parsed["build"][0]
    assert build["sources"] == ["source.amazon-ebs.worker"]
    provisioner = build["provisioner"][0]["ansible"]
    assert provisioner["playbook_file"] == "${var.playbook_file}"
    assert "@${var.playbook_vars_file}" in provisioner["extra_arguments"]
    manifest = build["post-processor"][0]["manifest"]
    assert manifest["output"] == "${var.manifest_path}"

    # The provisioner's playbook applies worker_node, never to a live kernel.
    playbook = yaml.safe_load(Path(values["playbook_file"]).read_text())
    assert playbook[0]["roles"] == [{"role": "hybridcloud.migration.worker_node"}]
    node_vars = json.loads(Path(values["playbook_vars_file"]).read_text())
    assert node_vars == {"worker_node_kubernetes_version": K8S, "worker_node_live": False}


def test_check_mode_reports_and_writes_nothing(packer: Path, tmp_path: Path) -> None:
    run = run_playbook(write_play(tmp_path / "play.yml", ROLE_PLAY), extra_vars=role_vars(packer, tmp_path / "work"), check=True)
    assert run.returncode == 0, run.output
    assert task(run, "Render the Packer template")["changed"]
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(("over", "message"), [
    ({"worker_image_kubernetes_version": "v1.37"}, "worker_image_kubernetes_version as X.Y.Z without a leading v (got 'v1.37')"),
    ({"worker_image_target": "gcp"}, "worker_image_target must be one of: aws, openstack, lab"),
    ({"worker_image_aws_copy_regions": ["moon-base"]}, "Every entry of aws_copy_regions must be an AWS region name"),
    ({"worker_image_aws_source_ami": "ami-xyz"}, "The aws_source_ami must be empty or an AMI id"),
    ({"worker_image_aws_volume_size": 4}, "The aws_volume_size must be between 8 and 16384 GiB"),
    ({"worker_image_aws_region": "Europe"}, "The aws_region must be an AWS region name such as eu-west-1"),
])
def test_bad_settings_are_refused_with_a_clear_message(packer: Path, tmp_path: Path, over: dict[str, Any], message: str) -> None:
    run = run_role(tmp_path, role_vars(packer, tmp_path / "work", **over))
    assert run.returncode != 0
    assert message in run.output, run.output
    assert "Build the image (packer build)" not in [r["_task"].split(" : ")[-1] for r in run.task_results() if not r.get("skipped")]


def test_openstack_is_validated_against_keystone(packer: Path, tmp_path: Path) -> None:
    """The openstack source logs in to Keystone while Packer validates: with none listening the role stops
    with Packer's reason; the template itself passes Packer's syntax check."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"lab": {"region_name": "RegionOne", "auth": {
        "auth_url": f"http://127.0.0.1:{port}/v3", "username": "u", "password": "p", "project_name": "p",
        "user_domain_name": "Default", "project_domain_name": "Default"}}}}))
    run = run_role(tmp_path, role_vars(packer, tmp_path / "work", worker_image_target="openstack",
                                       worker_image_openstack_region="RegionOne", worker_image_openstack_flavor="m1.small",
                                       worker_image_openstack_cloud="lab",
                                       worker_image_openstack_networks=["0b8bd9a6-3b33-4f2c-9d51-0a0c3f2c7e11"],
                                       worker_image_packer_environment={"OS_CLIENT_CONFIG_FILE": str(clouds)}))
    assert run.returncode != 0
    assert "packer validate refused" in run.output and f"127.0.0.1:{port}/v3/auth/tokens" in run.output, run.output
    template = tmp_path / "work/worker.pkr.hcl"
    assert parse(template)["build"][0]["sources"] == ["source.openstack.worker"]
    syntax = subprocess.run([str(packer / "bin/packer"), "validate", "-syntax-only", str(template)],
                            env={"PACKER_PLUGIN_PATH": str(packer / "plugins"), "CHECKPOINT_DISABLE": "1", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


def test_packer_build_launches_the_instance_on_the_ec2_api(packer: Path, moto_server, tmp_path: Path) -> None:
    """packer build against moto's EC2 API: the amazon-ebs plugin launches the build instance from the
    source AMI, then waits for SSH, which moto's instances never answer; the role stops with Packer's
    reason, and Packer has removed what it made (instance terminated, key pair gone)."""
    ec2 = moto_server.client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    run = run_role(tmp_path, role_vars(
        packer, tmp_path / "work", worker_image_aws_region=moto_server.region, worker_image_aws_copy_regions=[],
        worker_image_build=True, worker_image_ssh_timeout="15s", worker_image_aws_source_ami=ami,
        worker_image_aws_endpoint_url=moto_server.endpoint_url,
        worker_image_packer_environment={"AWS_ACCESS_KEY_ID": moto_server.access_key,
                                         "AWS_SECRET_ACCESS_KEY": moto_server.secret_key}))
    assert run.returncode != 0
    failure = task(run, "Stop with Packer's errors")["msg"]
    assert "packer build failed (exit 1)" in failure and "Timeout waiting for SSH" in failure, failure
    launched = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"] if i["InstanceId"] not in before]
    assert [(i["ImageId"], i["InstanceType"], i["State"]["Name"]) for i in launched] == [(ami, "t3.medium", "terminated")]
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("packer_")] == []
    assert not (tmp_path / "work/manifest.json").exists()


# -- the catalog --------------------------------------------------------------------------------

def manifest(run_uuid: str, artifact_id: str, build_time: int, version: str = f"v{K8S}") -> dict[str, Any]:
    """A manifest as Packer's manifest post-processor writes it (the template's custom_data)."""
    return {"builds": [{
        "name": "worker", "builder_type": "amazon-ebs", "build_time": build_time, "files": None,
        "artifact_id": artifact_id, "packer_run_uuid": run_uuid,
        "custom_data": {"kubernetes_version": version, "image_name": f"hcm-worker-k8s-{version[1:].replace('.', '-')}-{build_time}",
                        "aws_region": "eu-west-1", "openstack_region": "RegionOne"}}], "last_run_uuid": run_uuid}


def record_and_look_up(tmp: Path, catalog: dict[str, Any], built: dict[str, Any], region: str) -> Run:
    """The role's manifest and catalog steps, then provision_node's own image lookup."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    (work / "manifest.json").write_text(json.dumps(built))
    plays = [
        {"name": "Record", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
            {"name": "Read the manifest", "ansible.builtin.include_role": {
                "name": "hybridcloud.migration.worker_image", "tasks_from": "manifest.yml"}},
            {"name": "Record", "ansible.builtin.include_role": {
                "name": "hybridcloud.migration.worker_image", "tasks_from": "catalog.yml"}}],
         "vars": {"worker_image_target": "aws", "worker_image_work_dir": str(work), "worker_image_catalog": catalog}},
        {"name": "Look up", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
            {"name": "Find the image as migrate does", "ansible.builtin.include_role": {
                "name": "hybridcloud.migration.provision_node", "tasks_from": "image.yml"}},
            {"name": "Show the image found", "ansible.builtin.debug": {"var": "provision_node_image_found"}}],
         "vars": {"provision_node_cloud": "aws", "provision_node_region": region,
                  "provision_node_kubernetes_version": f"v{K8S}", "provision_node_catalog": catalog}},
    ]
    return run_playbook(write_play(tmp / "record.yml", plays))


def found_image(run: Run) -> str:
    return task(run, "Show the image found")["provision_node_image_found"]


def test_recorded_image_is_the_one_provision_node_picks(s3_server, s3_bucket, tmp_path: Path) -> None:
    catalog = {"bucket": s3_bucket, "cluster": "cloud", "endpoint_url": s3_server.endpoint_url,
               "region": s3_server.region, "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    first = manifest("run-1", "eu-west-1:ami-0aaaaaaaaaaaaaaa1,eu-central-1:ami-0ccccccccccccccc1", 1764100000)
    run = record_and_look_up(tmp_path, catalog, first, "eu-central-1")
    assert run.returncode == 0, run.output
    assert task(run, "Record the new images after the others")["changed"]
    assert found_image(run) == "ami-0ccccccccccccccc1"  # the copy's own id in the copy's region

    # The same manifest again: nothing new to record.
    again = record_and_look_up(tmp_path, catalog, first, "eu-west-1")
    assert again.returncode == 0, again.output
    assert task(again, "Record the new images after the others").get("skipped"), again.output
    assert found_image(again) == "ami-0aaaaaaaaaaaaaaa1"

    # A newer build (a new Packer run, the manifest keeps the old one) and an image of another
    # Kubernetes version: provision_node takes the newest of its version.
    newer = manifest("run-2", "eu-west-1:ami-0bbbbbbbbbbbbbbb2", 1764200000)
    newer["builds"].insert(0, first["builds"][0])
    other = manifest("run-3", "eu-west-1:ami-0ddddddddddddddd3", 1764300000, version="v1.36.4")
    assert record_and_look_up(tmp_path, catalog, newer, "eu-west-1").returncode == 0
    latest = record_and_look_up(tmp_path, catalog, other, "eu-west-1")
    assert latest.returncode == 0, latest.output
    assert found_image(latest) == "ami-0bbbbbbbbbbbbbbb2"

    # The entry as a reader of the catalog sees it: every image, oldest first, with its details.
    images = task(latest, "Read the target cluster's worker images from the catalog")["latest"]["data"]["image"]
    assert [a["name"] for a in images] == [
        "aws/eu-west-1/v1.37.2/ami-0aaaaaaaaaaaaaaa1", "aws/eu-central-1/v1.37.2/ami-0ccccccccccccccc1",
        "aws/eu-west-1/v1.37.2/ami-0bbbbbbbbbbbbbbb2", "aws/eu-west-1/v1.36.4/ami-0ddddddddddddddd3"]
    assert images[2]["details"] == {"cloud": "aws", "region": "eu-west-1", "image_id": "ami-0bbbbbbbbbbbbbbb2",
                                    "image_name": "hcm-worker-k8s-1-37-2-1764200000", "kubernetes_version": "v1.37.2",
                                    "recipe_sha256": ""}
    assert images[2]["created_at"] == "2025-11-26T23:33:20Z"


# -- the lab's image ----------------------------------------------------------------------------

def test_lab_image_is_built_through_a_chroot_and_recorded(s3_server, s3_bucket, tmp_path: Path) -> None:
    """build_image.yml for a lab target: worker_node runs into a Debian root, the root is recorded
    as the lab's image, and provision_node's lookup finds it; a second run changes nothing."""
    hyperkube = REPO / ".build/lab/bin/hyperkube"
    assert hyperkube.is_file(), "run `make lab-build` first (lab/build.sh builds the lab's Kubernetes)"
    # The root debootstrap would make (a copy of the cached one, so that this test spends its time on
    # worker_node; molecule/worker_image runs debootstrap itself).
    root = tmp_path / "image"
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "lab.hclab.debian_root", "instance", str(root),
                    "--package=python3", "--package=systemd"], cwd=REPO, check=True, timeout=1800)
    catalog = {"bucket": s3_bucket, "cluster": "lab", "endpoint_url": s3_server.endpoint_url,
               "region": s3_server.region, "access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"target_cloud": {"hosts": {"lab-1": {
        "ansible_connection": "local", "hcm_target_cloud": "lab", "hcm_target_region": "loopback",
        "hcm_target_cluster_name": "lab", "hcm_kubernetes_version": f"v{K8S}", "hcm_s3_bucket": s3_bucket,
        "hcm_s3_endpoint_url": s3_server.endpoint_url, "hcm_s3_region": s3_server.region,
        "hcm_s3_access_key": s3_server.access_key, "hcm_s3_secret_key": s3_server.secret_key,
        "worker_image_lab_root": str(root),
        "worker_image_worker_node_vars": {
            "worker_node_kubernetes_source": "files", "worker_node_crio_install": False,
            "worker_node_kubernetes_files": [{"name": "hyperkube", "src": str(hyperkube),
                                              "sha256": _sha256(hyperkube), "links": ["kubelet", "kubeadm", "kubectl"]}]},
    }}}}}}))
    home = tmp_path / "home"  # the playbook's work directory is under $HOME/.cache
    home.mkdir()
    env = {"HOME": str(home)}
    build = run_playbook(REPO / "playbooks/build_image.yml", inventory=inventory, env=env)
    assert build.returncode == 0, build.output
    assert s3_server.secret_key not in build.output
    assert task_on(build, "lab-1", "Apply worker_node to the root through a chroot").get("changed"), build.output
    kubelet = subprocess.run([str(REPO / ".venv/bin/python"), "-c",
                              "import sys; from lab.hclab.debian_root import run_in_root; "
                              "print(run_in_root(sys.argv[1], ['kubelet', '--version'], timeout=60).stdout)", str(root)],
                             cwd=REPO, capture_output=True, text=True, check=True)
    assert kubelet.stdout.strip() == f"Kubernetes v{K8S}"

    again = run_playbook(REPO / "playbooks/build_image.yml", inventory=inventory, env=env)
    assert again.returncode == 0, again.output
    assert again.stats("lab-1")["changed"] == 0, [r["_task"] for r in again.task_results("lab-1") if r.get("changed")]
    check = run_playbook(REPO / "playbooks/build_image.yml", inventory=inventory, env=env, check=True)
    assert check.returncode == 0 and check.stats("lab-1")["changed"] == 0, check.output

    plays = [{"name": "Look up", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "Find the image as migrate does", "ansible.builtin.include_role": {
            "name": "hybridcloud.migration.provision_node", "tasks_from": "image.yml"}},
        {"name": "Show the image found", "ansible.builtin.debug": {"var": "provision_node_image_found"}}],
        "vars": {"provision_node_cloud": "lab", "provision_node_region": "loopback",
                 "provision_node_kubernetes_version": f"v{K8S}", "provision_node_catalog": catalog}}]
    lookup = run_playbook(write_play(tmp_path / "lookup.yml", plays))
    assert lookup.returncode == 0, lookup.output
    assert found_image(lookup) == str(root)
    images = task(lookup, "Read the target cluster's worker images from the catalog")["latest"]["data"]["image"]
    assert [i["details"] for i in images] == [{"cloud": "lab", "region": "loopback", "image_id": str(root), "path": str(root),
                                               "kubernetes_version": f"v{K8S}"}]
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "lab.hclab.debian_root", "remove", str(root)], cwd=REPO, check=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
