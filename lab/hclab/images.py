"""Container images for lab VMs, made here: the lab reaches no image registry.

LAB INFRASTRUCTURE. Two images, written as one OCI archive that the lab image's
``hclab-images.service`` loads into containerd (``ctr -n k8s.io images import``) when a VM boots:

    registry.k8s.io/pause:3.10.1   the pod sandbox (vm/pause.c, built static with the host's gcc)
    hclab.io/busybox:1             busybox (static, from the image root's busybox-static) as
                                   /bin/busybox, with the usual applet links (sh, sleep, cat, ...)

Images are reproducible: fixed mtimes and owners, so a rebuild gives the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.hclab import LabError

HERE = Path(__file__).resolve().parent
PAUSE_SOURCE = HERE / "vm" / "pause.c"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
BUSYBOX_IMAGE = "hclab.io/busybox:1"
BUSYBOX_APPLETS = ("sh", "sleep", "cat", "echo", "ls", "date", "tail", "head", "wc", "true", "false", "seq", "env")
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Image:
    """A one-layer image: files (path in the image -> bytes, mode) and symlinks, and its command."""

    name: str
    entrypoint: list[str]
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def layer(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({str(Path(p).parent) for p in [*self.files, *self.links]} - {"."})
            for directory in dirs:
                info = tarfile.TarInfo(directory)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for path, (data, mode) in sorted(self.files.items()):
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
            for path, target in sorted(self.links.items()):
                info = tarfile.TarInfo(path)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(info)
        return out.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def write_archive(images: list[Image], dest: Path) -> Path:
    """One OCI archive (image layout in a tar) holding ``images``, named by io.containerd.image.name."""
    blobs: dict[str, bytes] = {}
    manifests = []
    for image in images:
        layer = image.layer()
        layer_desc = {"mediaType": MEDIA_LAYER, **_blob(blobs, layer)}
        config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": image.entrypoint},
                  "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
        config_desc = {"mediaType": MEDIA_CONFIG, **_blob(blobs, json.dumps(config, sort_keys=True).encode())}
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc, "layers": [layer_desc]}
        manifests.append({"mediaType": MEDIA_MANIFEST, **_blob(blobs, json.dumps(manifest, sort_keys=True).encode()),
                          "annotations": {"io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[1]}})
    index = {"schemaVersion": 2, "manifests": manifests}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as tar:
        entries = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), "index.json": json.dumps(index, sort_keys=True).encode()}
        entries.update({f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in sorted(blobs.items())})
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


def build_pause(workdir: Path) -> bytes:
    out = workdir / "pause"
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(PAUSE_SOURCE)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"building the pause binary failed (gcc and a static libc are needed: apt install gcc libc6-dev): {done.stderr}")
    return out.read_bytes()


def lab_images(image_root: Path, workdir: Path) -> list[Image]:
    busybox = image_root / "usr/bin/busybox"
    if not busybox.is_file():
        raise LabError(f"{busybox} is missing: the lab image needs the busybox-static package")
    pause = Image(PAUSE_IMAGE, ["/pause"], files={"pause": (build_pause(workdir), 0o755)})
    box = Image(BUSYBOX_IMAGE, ["/bin/sh"], files={"bin/busybox": (busybox.read_bytes(), 0o755)},
                links={f"bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS})
    box.files["tmp/.keep"] = (b"", 0o644)
    return [pause, box]
