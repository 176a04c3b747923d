# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The objects of a Velero backup tarball (``<backup>.tar.gz``), read without Velero.

Velero (backup format 1.x) writes one gzipped tar per backup::

    metadata/version                                          "1.1.0\\n"
    resources/<plural>[.<group>]/namespaces/<ns>/<name>.json  the object, in its preferred version
    resources/<plural>[.<group>]/cluster/<name>.json          the same for cluster-scoped objects
    resources/<plural>[.<group>]/<version>-preferredversion/namespaces/<ns>/<name>.json
    resources/<plural>[.<group>]/<version>-preferredversion/cluster/<name>.json
    resources/<plural>[.<group>]/<version>/...                other versions (EnableAPIGroupVersions only)

The unversioned path and the ``-preferredversion`` one hold the same object; this reader takes the
``-preferredversion`` copy when there is one and the unversioned one otherwise, and ignores the
other versions. The tarball is read as a stream (``tarfile`` ``r|*``): nothing goes to disk, each
member is parsed once, and an unversioned copy is kept as bytes only until its preferred copy
shows up. A member that is no Kubernetes object of this layout (the Velero plugins' extra files)
is counted, not parsed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import typing as t
import zlib

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

SUPPORTED_MAJOR = "1"
PREFERRED_SUFFIX = "-preferredversion"
# A Kubernetes object is at most ~1.5 MiB (etcd's request limit); anything much larger is no object.
MAX_MEMBER_BYTES = 32 * 1024 * 1024
# A cluster's backup is far below these; a small crafted tarball (a gzip bomb of many members)
# must not take the controller's memory: reading stops with an error past either.
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
MAX_MEMBERS = 2_000_000

Source = t.Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", t.BinaryIO, t.IO[bytes]]


@dataclasses.dataclass(frozen=True)
class ItemPath:
    """Where one object sits in the tarball."""

    resource: str  # "<plural>[.<group>]", as Velero names the folder
    version: str  # "" (unversioned copy), "v1-preferredversion", or another version folder
    namespace: str  # "" for cluster-scoped objects
    name: str

    @property
    def preferred(self) -> bool:
        return self.version.endswith(PREFERRED_SUFFIX)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.resource, self.namespace, self.name)


@dataclasses.dataclass
class VeleroTarball:
    """What a tarball holds: its format version and its objects, sorted by resource, namespace, name."""

    format_version: str
    objects: list[dict[str, t.Any]]
    resources: dict[str, int]  # "<plural>[.<group>]" -> number of objects
    ignored_members: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)


def parse_member_path(path: str) -> ItemPath | None:
    """The ``ItemPath`` of a member name, or None when the member is no object of the layout."""
    if path.startswith("./"):
        path = path[2:]
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "resources" or not parts[-1].endswith(".json") or not parts[1]:
        return None
    resource, rest = parts[1], parts[2:]
    version = ""
    if rest[0] not in ("namespaces", "cluster"):
        version, rest = rest[0], rest[1:]
    name = rest[-1][: -len(".json")]
    if not name:
        return None
    if len(rest) == 3 and rest[0] == "namespaces" and rest[1]:
        return ItemPath(resource, version, rest[1], name)
    if len(rest) == 2 and rest[0] == "cluster":
        return ItemPath(resource, version, "", name)
    return None


def read_tarball(source: Source, *, label: str = "the backup tarball", max_member_bytes: int = MAX_MEMBER_BYTES,
                 max_total_bytes: int = MAX_TOTAL_BYTES, max_members: int = MAX_MEMBERS) -> VeleroTarball:
    """Every object of a Velero backup tarball, in its preferred version.

    ``source`` is the tarball's bytes, a path, or a binary file object read front to back (an S3
    ``StreamingBody`` will do). ``label`` names it in errors (an ``s3://`` location, say).
    Raises ``MigrationError`` when it is no (complete) Velero tarball or a member is no JSON object.
    """
    limits = _Limits(max_member_bytes, max_total_bytes, max_members)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_stream(io.BytesIO(bytes(source)), label, limits)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as stream:
                return _read_stream(stream, label, limits)
        except OSError as err:
            raise MigrationError("Cannot read %s (%s): %s" % (label, os.fspath(source), err.strerror or err),
                                 "check the path and its permissions") from err
    return _read_stream(source, label, limits)


def read_objects(source: Source, *, label: str = "the backup tarball") -> list[dict[str, t.Any]]:
    """Just the objects of ``read_tarball``."""
    return read_tarball(source, label=label).objects


def _not_velero(label: str, detail: str) -> MigrationError:
    return MigrationError(
        "%s is not a Velero backup tarball: %s" % (label, detail),
        "give the <backup>.tar.gz that Velero stored under <prefix>/backups/<backup>/ of its storage location "
        "(not the -logs.gz, -resource-list.json.gz or velero-backup.json beside it)",
    )


@dataclasses.dataclass(frozen=True)
class _Limits:
    member_bytes: int
    total_bytes: int
    members: int


def _too_large(label: str, what: str) -> MigrationError:
    return MigrationError("%s is larger than a cluster's backup can be: %s" % (label, what),
                          "check that it is the Velero backup tarball the catalog recorded (its sha256 is checked first); "
                          "a genuine one this large needs read_tarball's limits raised")


def _read_stream(stream: t.Any, label: str, limits: _Limits) -> VeleroTarball:
    max_member_bytes = limits.member_bytes
    preferred: dict[tuple[str, str, str], dict[str, t.Any]] = {}
    unversioned: dict[tuple[str, str, str], tuple[ItemPath, bytes]] = {}
    format_version = ""
    seen_resources = False
    ignored = members = 0
    reader = _GunzipReader(stream)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:
            total = 0
            for member in archive:
                members += 1
                if members > limits.members:
                    raise _too_large(label, "more than %d members" % limits.members)
                if not member.isfile():
                    continue
                total += member.size
                if total > limits.total_bytes:
                    raise _too_large(label, "more than %d bytes unpacked" % limits.total_bytes)
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name == "metadata/version":
                    format_version = _read_member(archive, member, label, 4096).decode("utf-8", "replace").strip()
                    continue
                item = parse_member_path(name)
                if item is None:
                    ignored += 1
                    continue
                seen_resources = True
                if item.preferred:
                    preferred[item.key] = _parse_object(_read_member(archive, member, label, max_member_bytes), name, label)
                    unversioned.pop(item.key, None)
                elif not item.version:
                    if item.key not in preferred:
                        unversioned[item.key] = (item, _read_member(archive, member, label, max_member_bytes))
                else:
                    ignored += 1  # a non-preferred API version (EnableAPIGroupVersions): the preferred copy is there too
        reader.drain()  # the tar ends before the gzip stream does: its end and checksum still count
    except MigrationError:
        raise
    except (tarfile.ReadError, tarfile.CompressionError) as err:
        if not members:
            raise _not_velero(label, "not a (gzipped) tar archive (%s)" % err) from err
        raise _truncated(label, err) from err
    except (EOFError, zlib.error, tarfile.StreamError, OSError) as err:
        raise _truncated(label, err) from err
    for key, (item, body) in unversioned.items():
        if key not in preferred:
            preferred[key] = _parse_object(body, "resources/%s/%s" % (item.resource, _scope_path(item)), label)
    if not format_version and not seen_resources:
        raise _not_velero(label, "it has neither metadata/version nor resources/")
    warnings = []
    if not format_version:
        warnings.append("%s has no metadata/version; read it as backup format %s.x" % (label, SUPPORTED_MAJOR))
    elif format_version.split(".")[0] != SUPPORTED_MAJOR:
        warnings.append("%s has backup format %s; this reader knows format %s.x and may miss objects"
                        % (label, format_version, SUPPORTED_MAJOR))
    keys = sorted(preferred)
    resources: dict[str, int] = {}
    for key in keys:
        resources[key[0]] = resources.get(key[0], 0) + 1
    return VeleroTarball(format_version, [preferred[key] for key in keys], resources, ignored, warnings)


class _GunzipReader:
    """A binary stream that gunzips what it reads (when it starts like gzip) and checks the end.

    ``tarfile``'s own stream mode does not check gzip's CRC and length at the end, so a tarball
    cut short after its last member would pass; zlib checks both and tells when the stream ended.
    """

    _CHUNK = 64 * 1024
    _OUT = 1024 * 1024  # at most this much decompressed at once: a gzip bomb fills no memory

    def __init__(self, raw: t.Any) -> None:
        self.raw = raw
        self.buffer = bytearray()
        self.gzip: bool | None = None
        self.decompressor: t.Any = None
        self.pending = b""  # compressed input not decompressed yet
        self.done = False

    def _fill(self) -> None:
        """Add decompressed bytes to the buffer, or set ``done`` at the end of the input."""
        if not self.pending:
            chunk = self.raw.read(self._CHUNK)
            if self.gzip is None:
                self.gzip = chunk[:2] == b"\x1f\x8b"
                self.decompressor = zlib.decompressobj(31) if self.gzip else None
            if not chunk:
                if self.gzip and not self.decompressor.eof:
                    raise EOFError("the gzip stream ends before its end marker")
                self.done = True
                return
            if not self.gzip:
                self.buffer += chunk
                return
            self.pending = chunk
        if self.decompressor.eof:  # another gzip member follows (concatenated gzip)
            self.decompressor = zlib.decompressobj(31)
        self.buffer += self.decompressor.decompress(self.pending, self._OUT)
        self.pending = self.decompressor.unconsumed_tail or self.decompressor.unused_data

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.buffer) < size):
            self._fill()
        if size < 0:
            size = len(self.buffer)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def drain(self) -> None:
        while not self.done:
            self._fill()
            self.buffer.clear()


def _truncated(label: str, err: BaseException) -> MigrationError:
    return MigrationError(
        "%s is truncated or corrupt: %s" % (label, str(err) or type(err).__name__),
        "download it again; if it is damaged in the storage, use an older backup",
    )


def _scope_path(item: ItemPath) -> str:
    return ("namespaces/%s/%s.json" % (item.namespace, item.name)) if item.namespace else ("cluster/%s.json" % item.name)


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, label: str, limit: int) -> bytes:
    if member.size > limit:
        raise MigrationError(
            "%s member %s is %d bytes, more than any Kubernetes object (limit %d)" % (label, member.name, member.size, limit),
            "check that this is a Velero backup tarball; raise max_member_bytes only if it really is one",
        )
    handle = archive.extractfile(member)
    if handle is None:
        return b""
    data: bytes = handle.read()
    if len(data) != member.size:
        raise EOFError("member %s ends after %d of %d bytes" % (member.name, len(data), member.size))
    return data


def _parse_object(body: bytes, member: str, label: str) -> dict[str, t.Any]:
    try:
        obj = json.loads(body)
    except ValueError as err:
        raise MigrationError("%s member %s is not JSON: %s" % (label, member, err),
                             "the backup is damaged: use another backup") from err
    if not isinstance(obj, dict) or not obj.get("kind") or not isinstance(obj.get("metadata"), dict):
        raise MigrationError("%s member %s is not a Kubernetes object (no kind or metadata)" % (label, member),
                             "the backup is damaged: use another backup")
    return obj
