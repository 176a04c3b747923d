"""The demo site's machines: the lab's clusters and servers, its worker image and lab VMs.

What a real site has already (clusters, object storage, a cloud API, VMs) the lab provides on
loopback: ``LabSite.started`` brings up the lab's onprem and cloud clusters (lab/hclab), an S3
server, moto_server as the cloud's EC2 API and a Velero server process for onprem, and takes
them all down again on exit, with every lab VM it booted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab.hclab import LabError, vm_image
from lab.hclab.client import Lab
from lab.hclab.debian_root import cache_base
from lab.hclab.lab_vm import LabVM, file_digests
from lab.hclab.paths import bin_dir
from lab.hclab.services import MotoServer, S3Server
from lab.hclab.velero_server import VeleroServer, velero_dir
from lab.hclab.vm_cloud import VmCloud
from lab.hclab.worker_image import CONTAINERD_BIN, HYPERKUBE, seed_root, worker_node_vars

NS = "demo-shop"
ONPREM_VM = "onprem-vm-1"
ONPREM_VM_ADDRESS = "10.99.0.11"  # demo/inventory/hosts.yml
NEW_NODE = "cloud-onprem-vm-1"  # migrate.yml's default name for the node that replaces onprem-vm-1 on cloud
DATA_PATH = "/var/lib/demo-shop/db"
BUCKET = "demo-site"
SHOP_SECRET_VALUE = "demo-api-key"  # manifests/shop.yml, Secret web-credentials


@dataclass
class LabSite:
    workdir: Path
    lab: Lab
    s3: S3Server
    moto: MotoServer
    velero: VeleroServer
    ssh_key: Path
    say: Callable[[str], None]
    image: Path = field(default_factory=lambda: cache_base() / "demo/worker-image/root")
    onprem_vm: LabVM | None = None
    cloud: VmCloud | None = None
    restic_password: str = ""

    @staticmethod
    def preflight() -> None:
        """What the lab needs of this machine, each missing piece named with its fix."""
        if os.geteuid() != 0:
            raise LabError("the demo needs root: the lab's VMs are network, mount and pid namespaces. Fix: run `make demo` as root.")
        for needed, how in ((bin_dir() / "kube-apiserver", "make lab-build"), (HYPERKUBE, "make lab-build"),
                            (CONTAINERD_BIN / "containerd", "make lab-build-containerd")):
            if not needed.exists():
                raise LabError(f"{needed} is missing. Fix: run `{how}` (it builds it from Go modules; it needs Go) or `make demo`.")
        velero_dir()  # names its own fix
        for tool in ("ssh", "ssh-keygen", "rclone"):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, check=False).returncode != 0:
                raise LabError(f"{tool} is not installed. Fix: run `make deps` (it installs the Debian packages of bindep.txt).")

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path, say: Callable[[str], None]) -> Iterator[LabSite]:
        with contextlib.ExitStack() as stack:
            s3 = stack.enter_context(S3Server(workdir / "s3", secret_key=secrets.token_hex(16)))  # its own, so a leak would show
            moto = stack.enter_context(MotoServer(workdir / "moto"))
            say(f"S3 at {s3.endpoint_url}, EC2 (moto) at {moto.endpoint_url}")
            lab = Lab(workdir / "lab")
            stack.callback(lab.down)
            lab.up(onprem_nodes=1, cloud_nodes=1)
            say(f"onprem at {lab.server('onprem')} (kwok node {', '.join(lab.nodes('onprem'))}), cloud at {lab.server('cloud')}")
            s3.create_bucket(BUCKET)
            velero = VeleroServer(workdir / "velero", lab.kubeconfig("onprem"))
            stack.callback(velero.stop)
            key = workdir / "ssh/id_ed25519"
            key.parent.mkdir(parents=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hcm-demo", "-f", str(key)], check=True)
            moto.client("ec2").import_key_pair(KeyName="hcm-demo", PublicKeyMaterial=key.with_suffix(".pub").read_bytes())
            site = cls(workdir, lab, s3, moto, velero, key, say)
            stack.callback(site._power_off)
            yield site

    # -- the inventory's lab settings -------------------------------------------------------------
    def write_inventory_vars(self, path: Path, restic_password: str) -> None:
        """This run's endpoints, credentials and paths, where demo/inventory reads them (0600: it holds keys)."""
        self.restic_password = restic_password
        settings = {
            "hcm_s3_endpoint_url": self.s3.endpoint_url, "hcm_s3_region": self.s3.region, "hcm_s3_bucket": BUCKET,
            "hcm_s3_access_key": self.s3.access_key, "hcm_s3_secret_key": self.s3.secret_key, "hcm_restic_password": restic_password,
            "hcm_source_kubeconfig": str(self.lab.kubeconfig("onprem")), "hcm_api_server": self.lab.server("onprem"),
            "hcm_target_kubeconfig": str(self.lab.kubeconfig("cloud")), "hcm_target_region": self.moto.region,
            "provision_node_aws_endpoint_url": self.moto.endpoint_url, "provision_node_aws_access_key": "testing",
            "provision_node_aws_secret_key": "testing", "provision_node_aws_key_name": "hcm-demo",
            "demo_ssh_key": str(self.ssh_key),
            "worker_image_lab_root": str(self.image), "worker_image_worker_node_vars": worker_node_vars(),
            "hcm_image_work_dir": str(self.workdir / "image-build"),
        }
        header = "# Written by python -m demo for this run (the lab's endpoints and credentials); removed when it ends.\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(header + yaml.safe_dump(settings, sort_keys=False))
        os.chmod(path, 0o600)

    def secrets(self) -> dict[str, str]:
        """What must never show in output or in a plain object of the bucket: the run's restic
        password, the S3 secret key and the value of the shop's Secret (as given and in base64)."""
        return {"the restic password": self.restic_password, "the S3 secret key": self.s3.secret_key,
                "the shop's Secret web-credentials": SHOP_SECRET_VALUE,
                "the shop's Secret web-credentials (base64)": base64.b64encode(SHOP_SECRET_VALUE.encode()).decode()}

    def plain_objects(self) -> list[Path]:
        """The bucket's objects, but Velero's tarballs and logs (gzip): the catalog, plans, reports, restic's (encrypted) files."""
        return [path for path in sorted((self.s3.data_dir / BUCKET).rglob("*")) if path.is_file() and path.read_bytes()[:2] != b"\x1f\x8b"]

    # -- the worker image and the VMs -----------------------------------------------------------
    def seed_image(self) -> None:
        """The image's root starts as the cached Debian root with its packages (the role then skips debootstrap)."""
        fresh = not (self.image / "usr/bin/python3").exists()
        seed_root(self.image)
        self.say(f"the image's root: {self.image} ({'a copy of the cached Debian 13 root' if fresh else 'kept from an earlier run'})")

    def finish_image(self) -> None:
        vm_image.finish(self.image, self.workdir / "image-parts")
        self.say("the lab's parts added to the image: a pod network and the lab's container images")

    def boot_onprem_worker(self) -> None:
        api_port = int(self.lab.server("onprem").rsplit(":", 1)[1])
        self.onprem_vm = LabVM(ONPREM_VM, image=self.image, disk=self.workdir / f"vms/{ONPREM_VM}", address=ONPREM_VM_ADDRESS,
                               authorized_keys=self.ssh_key.with_suffix(".pub").read_text(), relay_ports=(api_port, self.s3.port))
        self.onprem_vm.start()
        self.say(f"waiting for {ONPREM_VM} to answer SSH at {ONPREM_VM_ADDRESS}")
        self.onprem_vm.wait_ssh()

    def data_digests(self) -> dict[str, str]:
        return file_digests(self.ssh_key, ONPREM_VM_ADDRESS, DATA_PATH)

    def counted(self, cluster: str = "onprem") -> int:
        """The counter's last number, from its log."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(self.lab.api(cluster))
        pod = core.list_namespaced_pod(NS, label_selector="app=counter").items[0].metadata.name
        return int(core.read_namespaced_pod_log(pod, NS, _request_timeout=10).split()[-1])

    def fail_onprem_worker(self) -> None:
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        assert self.onprem_vm is not None
        self.onprem_vm.stop()
        core = client.CoreV1Api(self.lab.api("onprem"))
        self.say(f"waiting for onprem to see {ONPREM_VM} NotReady (its kubelet stopped renewing its lease)")
        deadline = time.monotonic() + 120
        while [c.status for c in core.read_node(ONPREM_VM).status.conditions if c.type == "Ready"] == ["True"]:
            if time.monotonic() > deadline:
                raise LabError(f"{ONPREM_VM} still Ready 120 s after it powered off: see {self.lab.state_dir}/onprem/logs")
            time.sleep(2)
        self.say(f"{ONPREM_VM} is NotReady")

    @contextlib.contextmanager
    def vm_cloud(self) -> Iterator[VmCloud]:
        """The cloud boots a lab VM from the worker image behind each instance migrate.yml creates."""
        with self.lab.vm_cloud("cloud", self.moto.endpoint_url, image=self.image, disks=self.workdir / "vms", relay_ports=(self.s3.port,),
                               region=self.moto.region) as cloud:
            self.cloud = cloud
            try:
                yield cloud
            finally:
                self.cloud = None

    def new_node_address(self) -> str:
        assert self.cloud is not None
        return self.cloud.vm_named(NEW_NODE).address

    def how_to_look(self) -> list[str]:
        lines = [f"kubectl --kubeconfig {self.lab.kubeconfig(c)} get pods -n {NS} -o wide    # {c}" for c in ("onprem", "cloud")]
        if self.cloud is not None:
            lines.append(f"ssh -i {self.ssh_key} root@{self.new_node_address()}    # the new node, {NEW_NODE}")
        lines += [f"python -m lab.hclab status --state-dir {self.lab.state_dir}", f"the S3 bucket's files: {self.s3.data_dir}/{BUCKET}"]
        return lines

    def _power_off(self) -> None:
        if self.onprem_vm is not None:
            self.onprem_vm.remove()
