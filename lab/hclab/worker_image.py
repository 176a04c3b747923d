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
from pathlib import Path

from lab.hclab.debian_root import make_instance
from lab.hclab.paths import REPO

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


def seed_root(root: Path) -> Path:
    """The image's root, a copy of the cached Debian 13 root with PACKAGES, unless it is there already."""
    if (root / "usr/bin/python3").exists():
        return root
    return make_instance(root, PACKAGES)
