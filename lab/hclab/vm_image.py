"""What the lab adds to a worker image root before lab VMs boot from it.

LAB INFRASTRUCTURE. The worker image itself is the product's (playbooks/build_image.yml with a
``lab`` target: debootstrap, then the worker_node role through a chroot). A real cluster then
brings its own pod network (a CNI DaemonSet writes /etc/cni/net.d) and pulls images from a
registry; the lab has neither, and its machine lacks one capability, so ``finish`` adds, to the
root and marked as the lab's:

    /etc/cni/net.d/10-hclab.conflist      a bridge network for pods (each VM has its own)
    /var/lib/hclab/images.tar             the lab's images (images.py), loaded at boot by
    hclab-images.service                  ``ctr -n k8s.io images import`` (enabled)
    /etc/containerd/conf.d/90-hclab.toml  ``restrict_oom_score_adj``: the kubelet asks for a
                                          -998 OOM score for pod sandboxes, which needs
                                          CAP_SYS_RESOURCE, and these machines' root lacks it

It is idempotent: a second call rewrites the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.hclab import LabError, images

CNI_CONFIG = {
    "cniVersion": "1.0.0",
    "name": "hclab",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "loopback"},
    ],
}
IMAGES_UNIT = """\
# The lab's: load the lab's container images (lab/hclab/images.py) once containerd answers.
[Unit]
Description=Load the lab's container images into containerd
After=containerd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'until ctr -n k8s.io version >/dev/null 2>&1; do sleep 0.5; done; ctr -n k8s.io images import --local /var/lib/hclab/images.tar'

[Install]
WantedBy=multi-user.target
"""
CONTAINERD_DROPIN = """\
# The lab's: these machines' root has no CAP_SYS_RESOURCE, so a pod sandbox's -998 OOM score
# cannot be set; containerd then keeps scores at or above its own.
version = 3
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
"""


def _write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    if not path.exists() or path.read_bytes() != text:
        path.write_bytes(text)
    path.chmod(mode)


def finish(root: Path, workdir: Path) -> Path:
    """Add the lab's parts to the worker image at ``root`` (see the module docstring)."""
    config = root / "etc/containerd/config.toml"
    if not config.is_file() or "conf.d" not in config.read_text():
        raise LabError(f"{config} is missing or imports no /etc/containerd/conf.d/*.toml: build the image with "
                       "worker_node_container_runtime=containerd (playbooks/build_image.yml, target lab)")
    _write(root / "etc/cni/net.d/10-hclab.conflist", json.dumps(CNI_CONFIG, indent=2) + "\n")
    archive = images.write_archive(images.lab_images(root, workdir), workdir / "images.tar")
    _write(root / "var/lib/hclab/images.tar", archive.read_bytes())
    _write(root / "etc/systemd/system/hclab-images.service", IMAGES_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants/hclab-images.service"
    if not wants.is_symlink():
        wants.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/etc/systemd/system/hclab-images.service", wants)
    _write(root / "etc/containerd/conf.d/90-hclab.toml", CONTAINERD_DROPIN)
    return root
