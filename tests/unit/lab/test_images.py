"""The lab's OCI archives (lab/hclab/images.py): a valid image layout, the same bytes every time."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from lab.hclab import images


def read(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_archive_is_an_oci_layout_whose_blobs_match_their_digests_and_names_each_image(tmp_path: Path) -> None:
    image = images.Image("hclab.io/tool:1", ["/bin/tool"], files={"bin/tool": (b"#!/bin/sh\necho hi\n", 0o755)}, links={"bin/t": "tool"})
    files = read(images.write_archive([image], tmp_path / "a.tar"))
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "hclab.io/tool:1"
    manifest = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(fileobj=io.BytesIO(files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]])) as layer:
        members = {m.name: m for m in layer.getmembers()}
    assert members["bin/tool"].mode == 0o755 and members["bin/t"].issym() and members["bin/t"].linkname == "tool"


def test_the_same_images_give_the_same_bytes(tmp_path: Path) -> None:
    image = images.Image("hclab.io/x:1", ["/x"], files={"x": (b"x", 0o755)})
    first = images.write_archive([image], tmp_path / "1.tar").read_bytes()
    assert images.write_archive([image], tmp_path / "2.tar").read_bytes() == first
