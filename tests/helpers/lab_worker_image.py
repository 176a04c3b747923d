"""The lab's worker image, built the product's way, for the tests that boot lab VMs.

playbooks/build_image.yml (target ``lab``) applies the worker_node role, with containerd, to a
Debian 13 root through a chroot; lab/hclab/vm_image.py then adds the lab's pod network and images.
The root starts as a copy of a cached debootstrap root that already holds the Debian packages
(lab/hclab/debian_root.py), so the build spends its time on worker_node, not on downloads.

``HCM_TEST_WORKER_IMAGE=<dir>`` uses a root built before (by this function) instead: for working
on the VM tests without rebuilding it each time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

from lab.hclab import vm_image
from tests.helpers.ansible_run import REPO, run_playbook

K8S_VERSION = "v1.37.2"
HYPERKUBE = REPO / ".build/lab/bin/hyperkube"
CONTAINERD_BIN = REPO / ".build/lab/containerd/bin"
# worker_node's packages, and for a lab VM: sshd (Ansible reaches it) and busybox (the lab's images).
PACKAGES = ("python3", "python3-apt", "systemd", "openssh-server", "busybox-static", "criu", "runc", "restic", "buildah", "netavark",
            "containernetworking-plugins", "iptables", "conntrack", "socat", "ethtool", "kmod", "procps", "iproute2",
            "ca-certificates", "mount")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def worker_node_vars() -> dict[str, object]:
    """What build_image.yml passes to worker_node for the lab: binaries built from the lab's pins."""
    for needed, how in ((HYPERKUBE, "make lab-build"), (CONTAINERD_BIN / "containerd", "make lab-build-containerd")):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: run `{how}` first")
    return {
        "worker_node_kubernetes_source": "files",
        "worker_node_kubernetes_files": [{"name": "hyperkube", "src": str(HYPERKUBE), "sha256": _sha256(HYPERKUBE),
                                          "links": ["kubelet", "kubeadm", "kubectl"]}],
        "worker_node_container_runtime": "containerd",
        "worker_node_containerd_files": [{"name": name, "src": str(CONTAINERD_BIN / name), "sha256": _sha256(CONTAINERD_BIN / name)}
                                         for name in ("containerd", "containerd-shim-runc-v2", "ctr")],
        # The lab's kubelets use cgroupfs (no systemd manages cgroups in a lab VM).
        "worker_node_cgroup_driver": "cgroupfs",
        "worker_node_sandbox_image": "registry.k8s.io/pause:3.10.1",
    }


def build_lab_worker_image(workdir: Path) -> Path:
    prebuilt = os.environ.get("HCM_TEST_WORKER_IMAGE")
    if prebuilt:
        return Path(prebuilt)
    root = workdir / "root"
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "lab.hclab.debian_root", "instance", str(root),
                    *[f"--package={p}" for p in PACKAGES]], cwd=REPO, check=True, timeout=1800)
    inventory = workdir / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"target_cloud": {"hosts": {"lab-image": {
        "ansible_connection": "local", "hcm_target_cloud": "lab", "hcm_target_region": "loopback",
        "hcm_target_cluster_name": "cloud", "hcm_kubernetes_version": K8S_VERSION, "worker_image_record": False,
        "worker_image_lab_root": str(root), "worker_image_worker_node_vars": worker_node_vars()}}}}}}))
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    built = run_playbook(REPO / "playbooks/build_image.yml", inventory=inventory, env={"HOME": str(home)})
    if built.returncode != 0:
        raise RuntimeError("building the lab's worker image failed:\n" + built.output[-4000:])
    return vm_image.finish(root, workdir / "lab-parts")
