"""Reading Velero backup tarballs: the layout Velero 1.18 writes, streamed, and clear errors for anything else."""

from __future__ import annotations

import copy
import gzip
import io
import json
import pathlib
import tarfile

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import velero_tarball as reader
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from tests.unit.fixtures import cluster
from tests.unit.fixtures.velero import item_paths, members_for, tarball, velero_tarball


REAL_BACKUP = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "velero-1.18.3-lab-backup.tar.gz"


class OneWayStream(io.RawIOBase):
    """A stream that can only be read front to back, like an S3 StreamingBody."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return self._data.read(size)

    def seek(self, *args, **kwargs):
        raise io.UnsupportedOperation("seek")

    def tell(self):
        raise io.UnsupportedOperation("tell")


def key(obj):
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def test_reads_every_object_of_a_velero_tarball_once():
    objects = cluster.onprem()
    backup = reader.read_tarball(velero_tarball(objects))
    assert backup.format_version == "1.1.0"
    assert backup.warnings == []
    assert len(backup.objects) == len(objects)
    assert sorted(map(key, backup.objects)) == sorted(map(key, objects))
    assert {key(o): o for o in backup.objects} == {key(o): o for o in objects}
    assert backup.resources["deployments.apps"] == 4 and backup.resources["namespaces"] == 6
    assert backup.resources["databases.example.com"] == 1 and backup.resources["customresourcedefinitions.apiextensions.k8s.io"] == 2


def test_reads_a_backup_written_by_velero():
    """A real Velero v1.18.3 backup from the lab (see tests/unit/fixtures/README.md)."""
    with tarfile.open(REAL_BACKUP) as archive:
        members = [m.name for m in archive.getmembers()]
    backup = reader.read_tarball(OneWayStream(REAL_BACKUP.read_bytes()))
    assert backup.format_version == "1.1.0" and backup.warnings == [] and backup.ignored_members == 0
    assert len(members) == 1 + 2 * len(backup.objects) == 111  # metadata/version, then two copies of each object
    assert backup.resources["pods"] == 6 and backup.resources["statefulsets.apps"] == 1 and backup.resources["persistentvolumes"] == 1
    assert backup.resources["events"] == 21 and "nodes" not in backup.resources
    found = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in backup.objects}
    assert {("StatefulSet", "capture", "pg"), ("PersistentVolume", "", "capture-local-0"), ("Namespace", "", "capture"),
            ("Deployment", "velero-shop", "web"), ("Secret", "velero-shop", "db"), ("Pod", "capture", "debug")} <= found
    pod = next(o for o in backup.objects if o["kind"] == "Pod" and o["metadata"]["name"] == "pg-0")
    assert pod["apiVersion"] == "v1" and pod["spec"]["nodeName"] == "onprem-worker-1" and pod["metadata"]["managedFields"]
    # Each object is the one Velero wrote in its -preferredversion folder.
    with tarfile.open(REAL_BACKUP) as archive:
        written = json.load(archive.extractfile("resources/statefulsets.apps/v1-preferredversion/namespaces/capture/pg.json"))
    assert next(o for o in backup.objects if o["kind"] == "StatefulSet") == written


def test_layout_matches_what_velero_writes():
    """The paths the fixture writes are the ones test_velero.py finds in a real backup."""
    deployment = cluster.by_name(cluster.onprem(), "Deployment", "web")
    assert item_paths(deployment) == ["resources/deployments.apps/namespaces/shop/web.json",
                                      "resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json"]
    namespace = cluster.by_name(cluster.onprem(), "Namespace", "shop")
    assert item_paths(namespace)[0] == "resources/namespaces/cluster/shop.json"
    assert reader.parse_member_path("resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json") == \
        reader.ItemPath("deployments.apps", "v1-preferredversion", "shop", "web")
    assert reader.parse_member_path("./resources/namespaces/cluster/shop.json") == reader.ItemPath("namespaces", "", "", "shop")
    for other in ("metadata/version", "resources/pods/namespaces/shop/", "resources/pods/namespaces/a.json",
                  "resources/pods/v1/namespaces/x/y/z.json", "logs/backup.log", "resources/pods/cluster/.json"):
        assert reader.parse_member_path(other) is None, other


def test_preferred_version_copy_wins_whatever_the_order():
    config = cluster.obj("v1", "ConfigMap", "settings", "shop", data={"copy": "preferred"})
    legacy = copy.deepcopy(config)
    legacy["data"]["copy"] = "unversioned"
    beta = copy.deepcopy(config)
    beta["data"]["copy"] = "beta"
    plain, preferred = item_paths(config)
    other = "resources/configmaps/v1beta1/namespaces/shop/settings.json"
    for order in ([plain, preferred, other], [preferred, plain, other], [other, preferred, plain]):
        bodies = {plain: legacy, preferred: config, other: beta}
        data = tarball([("metadata/version", b"1.1.0\n")] + [(path, json.dumps(bodies[path]).encode()) for path in order])
        backup = reader.read_tarball(data)
        assert [o["data"]["copy"] for o in backup.objects] == ["preferred"], order
        assert backup.ignored_members == 1  # the v1beta1 copy (EnableAPIGroupVersions)


def test_backups_without_preferred_version_folders_are_read_too():
    config = cluster.obj("v1", "ConfigMap", "settings", "shop", data={"a": "b"})
    data = tarball([("metadata/version", b"1.0.0\n"), (item_paths(config)[0], json.dumps(config).encode())])
    assert reader.read_objects(data) == [config]


def test_streams_from_a_file_object_that_cannot_seek_and_from_a_path(tmp_path):
    objects = [cluster.obj("v1", "ConfigMap", f"config-{i:04d}", f"ns-{i % 7}", data={"value": "x" * (i % 50)}) for i in range(3000)]
    data = velero_tarball(objects)
    stream = OneWayStream(data)
    backup = reader.read_tarball(stream)
    assert len(backup.objects) == 3000 and stream.reads > 1
    assert [o["metadata"]["name"] for o in backup.objects if o["metadata"]["namespace"] == "ns-0"][:2] == ["config-0000", "config-0007"]
    path = tmp_path / "backup.tar.gz"
    path.write_bytes(data)
    assert len(reader.read_objects(path)) == 3000
    assert len(reader.read_objects(str(path))) == 3000


def test_long_names_and_an_uncompressed_tar():
    name = "a-very-long-name-" + "x" * 200
    config = cluster.obj("v1", "ConfigMap", name, "a-long-namespace-name-" + "y" * 40, data={})
    assert len(item_paths(config)[1]) > 255  # beyond ustar: a PAX header carries the path
    assert reader.read_objects(velero_tarball([config])) == [config]
    assert reader.read_objects(tarball(members_for([config]), compress=False)) == [config]


def test_unknown_format_version_is_a_warning_not_an_error():
    config = cluster.obj("v1", "ConfigMap", "settings", "shop")
    members = [("metadata/version", b"2.0.0\n")] + members_for([config])[1:]
    backup = reader.read_tarball(tarball(members), label="s3://dr/velero/backups/b1/b1.tar.gz")
    assert backup.objects == [config]
    assert backup.warnings == ["s3://dr/velero/backups/b1/b1.tar.gz has backup format 2.0.0; this reader knows format 1.x and may miss objects"]


@pytest.mark.parametrize("data, problem", [
    (b"", "is not a Velero backup tarball: not a (gzipped) tar archive"),
    (b"<html>Access Denied</html>" * 30, "is not a Velero backup tarball: not a (gzipped) tar archive"),
    (gzip.compress(b'{"level":"info","msg":"backup completed"}\n' * 40), "is not a Velero backup tarball: not a (gzipped) tar archive"),
    (tarball([("velero-backup.json", b"{}")]), "is not a Velero backup tarball: it has neither metadata/version nor resources/"),
])
def test_what_is_no_velero_tarball_is_refused_clearly(data, problem):
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(data, label="s3://dr/velero/backups/b1/b1.tar.gz")
    assert caught.value.problem.startswith("s3://dr/velero/backups/b1/b1.tar.gz " + problem)
    assert "<backup>.tar.gz" in caught.value.fix


@pytest.mark.parametrize("cut", [0.5, 0.9, -4, -1])
def test_a_truncated_tarball_is_refused_even_when_every_member_is_whole(cut):
    """Cutting the gzip trailer (CRC and length) leaves every member readable: the reader still notices."""
    objects = [cluster.obj("v1", "ConfigMap", f"c{i}", "shop", data={"v": str(i)}) for i in range(50)]
    data = velero_tarball(objects)
    end = int(len(data) * cut) if cut > 0 else len(data) + cut
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(data[:end])
    assert "is truncated or corrupt" in caught.value.problem
    assert "download it again" in caught.value.fix


def test_damaged_members_are_named():
    members = [("metadata/version", b"1.1.0\n"), ("resources/configmaps/v1-preferredversion/namespaces/shop/bad.json", b"{not json")]
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(tarball(members))
    assert "member resources/configmaps/v1-preferredversion/namespaces/shop/bad.json is not JSON" in caught.value.problem
    members = [("metadata/version", b"1.1.0\n"), ("resources/configmaps/namespaces/shop/list.json", b"[1, 2]")]
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(tarball(members))
    assert "resources/configmaps/namespaces/shop/list.json is not a Kubernetes object" in caught.value.problem


def test_a_member_larger_than_any_object_is_refused_before_it_is_read():
    body = json.dumps(cluster.obj("v1", "ConfigMap", "big", "shop", data={"v": "x" * 5000})).encode()
    data = tarball([("metadata/version", b"1.1.0\n"), ("resources/configmaps/namespaces/shop/big.json", body)])
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(data, max_member_bytes=1000)
    assert "more than any Kubernetes object" in caught.value.problem
    assert len(reader.read_objects(data)) == 1


def test_a_tarball_of_too_many_members_or_bytes_is_refused_as_it_is_read():
    """A small crafted archive (a gzip bomb of many members) stops at the limits, not in memory."""
    config = json.dumps(cluster.obj("v1", "ConfigMap", "c", "shop", data={"v": "x" * 2000})).encode()
    members = [("metadata/version", b"1.1.0\n")] + [("resources/configmaps/namespaces/shop/c%d.json" % i, config) for i in range(50)]
    data = tarball(members)
    assert len(data) < 20000 and len(reader.read_objects(data)) == 50
    with pytest.raises(MigrationError) as many:
        reader.read_tarball(data, label="s3://dr/b1.tar.gz", max_members=20)
    assert many.value.problem == "s3://dr/b1.tar.gz is larger than a cluster's backup can be: more than 20 members"
    assert "sha256 is checked first" in many.value.fix
    with pytest.raises(MigrationError, match="more than 50000 bytes unpacked"):
        reader.read_tarball(data, max_total_bytes=50000)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MigrationError) as caught:
        reader.read_tarball(tmp_path / "nope.tar.gz")
    assert "Cannot read the backup tarball" in caught.value.problem and "nope.tar.gz" in caught.value.problem
