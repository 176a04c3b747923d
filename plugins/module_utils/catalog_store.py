# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading and writing the backup catalog in S3 (the layout is described in catalog.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import (
    S3Settings,
    is_missing,
    s3_errors,
)

VERIFY_MODES = ("none", "size", "sha256")


class CatalogContentError(MigrationError):
    """The catalog itself is damaged (as opposed to the storage being unreachable)."""


_CHUNK = 1024 * 1024


def split_s3_location(location: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://bucket/key`` location, None for other schemes."""
    if not location.startswith("s3://"):
        return None
    bucket, key = (location[len("s3://"):].split("/", 1) + [""])[:2]
    if not bucket or not key:
        raise MigrationError(
            "Location %r names no bucket or no key" % location, "write it as s3://bucket/path/to/object"
        )
    return bucket, key


class CatalogStore:
    """The catalog of one bucket and prefix, through one S3 client."""

    def __init__(self, client: t.Any, settings: S3Settings, bucket: str, prefix: str = "catalog") -> None:
        self.client = client
        self.settings = settings
        self.bucket = bucket
        self.prefix = prefix

    def keys(self, cluster: str, node: str | None) -> catalog.CatalogKeys:
        return catalog.CatalogKeys(self.prefix, cluster, catalog.check_node(node))

    def _errors(self, doing: str, consequence: str = "") -> t.ContextManager[None]:
        return s3_errors(self.settings, doing, self.bucket, consequence)

    # -- small S3 helpers -------------------------------------------------------------

    def _get(self, key: str, doing: str, consequence: str = "") -> bytes | None:
        with self._errors(doing, consequence):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception as err:
                if is_missing(err):
                    return None
                raise

    def _put(self, key: str, body: bytes, doing: str, consequence: str) -> None:
        with self._errors(doing, consequence):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **self.settings.write_args()
            )

    # Other documents kept beside the catalog (migration plans and reports) use the same helpers.
    def read_bytes(self, key: str, doing: str, consequence: str = "") -> bytes | None:
        """An object of this bucket, or None when it does not exist; S3 errors explained."""
        return self._get(key, doing, consequence)

    def write_json(self, key: str, doc: t.Mapping[str, t.Any], doing: str, consequence: str = "") -> None:
        self._put(key, catalog.canonical_json(doc), doing, consequence)

    def errors(self, doing: str, consequence: str = "") -> t.ContextManager[None]:
        """S3 errors inside the block become MigrationErrors saying what was being done."""
        return self._errors(doing, consequence)

    def _list(self, prefix: str, doing: str, delimiter: str = "") -> t.Iterator[dict[str, t.Any]]:
        """Pages of a listing (objects under Contents, folders under CommonPrefixes)."""
        kwargs: dict[str, t.Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        with self._errors(doing):
            yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    def check_bucket(self) -> None:
        """Fail early, with a clear message, when the bucket is missing or not ours to read."""
        with self._errors("checking bucket %r" % self.bucket):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as err:
                if catalog_code_is_404(err):
                    raise MigrationError(
                        "Bucket %r does not exist at %s" % (self.bucket, self.settings.endpoint_label),
                        "create the bucket or correct the bucket name",
                    ) from err
                raise

    # -- reading ----------------------------------------------------------------------

    def read_pointer(self, keys: catalog.CatalogKeys, strict: bool = True) -> dict[str, t.Any] | None:
        """The latest.json pointer; None when absent, or when unreadable and not ``strict``."""
        raw = self._get(keys.latest, "reading %s" % keys.latest)
        if raw is None:
            return None
        try:
            pointer = json.loads(raw)
            if not isinstance(pointer.get("entry_id"), str) or not isinstance(pointer.get("sha256"), str):
                raise ValueError("incomplete pointer")
        except (ValueError, AttributeError):
            if not strict:
                return None
            raise CatalogContentError(
                "%s is not a catalog pointer" % keys.latest,
                "run a backup again: the next complete entry rewrites it",
            ) from None
        return pointer

    def read_entry(self, keys: catalog.CatalogKeys, entry_id: str, sha256: str | None = None) -> dict[str, t.Any]:
        key = keys.entry(entry_id)
        raw = self._get(key, "reading catalog entry %s" % key)
        if raw is None:
            raise CatalogContentError(
                "Catalog entry %s is missing" % key,
                "run a backup again; if entries were deleted by hand, the next backup repairs latest",
            )
        if sha256 is not None and catalog.sha256_hex(raw) != sha256:
            raise CatalogContentError(
                "Catalog entry %s does not match the sha256 recorded for it" % key,
                "run a backup again to write a new verified entry",
            )
        try:
            return catalog.validate_entry(json.loads(raw))
        except ValueError:
            raise CatalogContentError("Catalog entry %s is not JSON" % key, "run a backup again") from None
        except MigrationError as err:
            raise CatalogContentError("%s: %s" % (key, err.problem), err.fix) from None

    def latest(self, cluster: str, node: str | None) -> dict[str, t.Any] | None:
        """The latest complete entry, verified against its recorded sha256, or None."""
        keys = self.keys(cluster, node)
        chosen = self.latest_id(keys)
        return None if chosen is None else self.read_entry(keys, *chosen)

    def latest_id(self, keys: catalog.CatalogKeys) -> tuple[str, str] | None:
        """(entry id, sha256) of the latest complete entry.

        Two writers of one scope can race (every control-plane host writes ``_etcd``; the timer
        and ``backup_now.yml`` write ``_velero``): each compares its entry with the pointer it
        read, so the one that writes the pointer last wins, older or not. So the pointer only
        breaks ties: a writer's last step is a commit record per entry, and the newest committed
        entry (ids start with their second) is latest; in one second, the one the pointer names.
        A write that failed before its commit record never becomes latest. A catalog without
        commit records (written before they existed) is read by its pointer alone.
        """
        pointer = self.read_pointer(keys)
        committed = self.committed_ids(keys)
        if not committed:
            return (pointer["entry_id"], pointer["sha256"]) if pointer else None
        second = committed[-1][:16]
        tied = [entry_id for entry_id in committed if entry_id[:16] == second]
        chosen = pointer["entry_id"] if pointer and pointer["entry_id"] in tied else tied[-1]
        if pointer and pointer["entry_id"] == chosen:
            return chosen, pointer["sha256"]
        record = self._get(keys.committed(chosen), "reading %s" % keys.committed(chosen))
        try:
            return chosen, str(json.loads(record or b"")["sha256"])
        except (ValueError, KeyError, TypeError):
            raise CatalogContentError("%s is not a commit record" % keys.committed(chosen), "run a backup again") from None

    def committed_ids(self, keys: catalog.CatalogKeys) -> list[str]:
        """Ids of the entries whose writers finished, oldest first."""
        found = []
        for page in self._list(keys.base + "committed/", "listing %scommitted/" % keys.base):
            for obj in page.get("Contents", []):
                entry_id = keys.entry_id_of(obj["Key"], "committed/")
                if entry_id:
                    found.append(entry_id)
        return sorted(found)

    def describe(
        self,
        cluster: str | None,
        node: str | None,
        include_entries: bool,
        max_age: int | None,
        now: dt.datetime,
    ) -> dict[str, t.Any]:
        """The latest complete entry (and optionally all entries) of each cluster/node.

        A damaged catalog of one node is reported on that node and does not hide the others;
        unreachable storage or refused credentials fail the whole call.
        """
        self.check_bucket()
        if cluster:
            catalog.check_name(cluster, "cluster")
        scopes = [(cluster, node)] if cluster and node else self.scopes(cluster)
        result: dict[str, t.Any] = {"nodes": []}
        for scope_cluster, scope_node in scopes:
            keys = self.keys(scope_cluster, scope_node)
            item: dict[str, t.Any] = {"cluster": keys.cluster, "node": keys.node, "latest": None}
            try:
                entry = self.latest(keys.cluster, keys.node)
            except CatalogContentError as err:
                entry, item["problem"] = None, err.message
            if entry is not None:
                item["latest"] = catalog.summarize(entry, now)
            if max_age is not None:
                item["stale"] = entry is None or item["latest"]["age_seconds"] > max_age
            if include_entries:
                item["entries"] = self.entry_ids(keys)
            result["nodes"].append(item)
            if cluster and node:
                result["latest"] = entry
        return result

    def entry_ids(self, keys: catalog.CatalogKeys) -> list[str]:
        """Ids of the complete entries, oldest first."""
        found = []
        for page in self._list(keys.base + "entries/", "listing %sentries/" % keys.base):
            for obj in page.get("Contents", []):
                entry_id = keys.entry_id_of(obj["Key"])
                if entry_id:
                    found.append(entry_id)
        return sorted(found)

    def scopes(self, cluster: str | None = None) -> list[tuple[str, str]]:
        """(cluster, node) pairs that have a catalog, optionally for one cluster."""
        head = self.prefix.strip("/") + "/" if self.prefix.strip("/") else ""
        clusters = [cluster] if cluster else self._folders(head)
        return [(c, n) for c in clusters for n in self._folders("%s%s/" % (head, c))]

    def _folders(self, prefix: str) -> list[str]:
        names = []
        for page in self._list(prefix, "listing %s" % (prefix or "the bucket"), delimiter="/"):
            names.extend(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(names)

    # -- verifying artifacts ----------------------------------------------------------

    def verify_artifacts(self, entry: t.Mapping[str, t.Any], mode: str) -> list[dict[str, t.Any]]:
        """Check that every s3:// artifact the entry names is there, whole.

        ``size`` compares the object's length; ``sha256`` also hashes its bytes. Other
        locations (restic snapshots, image ids) are verified by the tool that made them.
        """
        results = []
        for kind, items in entry["data"].items():
            for item in items:
                where = split_s3_location(item["location"])
                check = "not-s3" if where is None else mode
                if where is not None and mode != "none":
                    self._verify_object(kind, item, where[0], where[1], mode)
                results.append({"kind": kind, "name": item["name"], "location": item["location"], "check": check})
        return results

    def _verify_object(self, kind: str, item: t.Mapping[str, t.Any], bucket: str, key: str, mode: str) -> None:
        label = "%s artifact %r (%s)" % (kind, item["name"], item["location"])
        doing = "verifying " + label
        fix = "make the backup again; the catalog only records artifacts that are stored whole"
        with s3_errors(self.settings, doing, bucket, "nothing was written to the catalog"):
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except Exception as err:
                if catalog_code_is_404(err):
                    raise MigrationError("The %s does not exist" % label, fix) from err
                raise
            if int(head["ContentLength"]) != int(item["size"]):
                raise MigrationError(
                    "The %s is %d bytes, the entry says %d" % (label, head["ContentLength"], item["size"]), fix
                )
            if mode == "sha256" and "sha256" in item:
                digest = hashlib.sha256()
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    digest.update(chunk)
                if digest.hexdigest() != item["sha256"]:
                    raise MigrationError("The %s does not match its sha256" % label, fix)

    # -- writing ----------------------------------------------------------------------

    def record(
        self,
        cluster: str,
        node: str | None,
        data: t.Mapping[str, t.Any] | None,
        created_at: str | None = None,
        labels: t.Mapping[str, str] | None = None,
        entry_id: str | None = None,
        verify: str = "size",
        keep_last: int | None = None,
        max_age: t.Union[str, int, None] = None,
        check_mode: bool = False,
    ) -> dict[str, t.Any]:
        """Write an entry for ``data`` (unless it is None), then apply retention if asked."""
        now = catalog.utcnow()
        result: dict[str, t.Any] = {"changed": False, "pruned": []}
        if data is not None:
            entry = catalog.build_entry(
                cluster,
                node,
                data,
                created_at=catalog.parse_time(created_at, "created_at") if created_at else now,
                labels=labels,
                entry_id=entry_id,
            )
            result.update(self.write(entry, verify=verify, check_mode=check_mode), entry=entry)
        max_age_seconds = catalog.parse_age(max_age)
        if keep_last is not None or max_age_seconds is not None:
            keys = self.keys(catalog.check_name(cluster, "cluster"), node)
            result["pruned"] = self.prune(keys, keep_last, max_age_seconds, now, check_mode=check_mode)
            result["changed"] = result["changed"] or bool(result["pruned"])
        return result

    def write(self, entry: dict[str, t.Any], verify: str = "size", check_mode: bool = False) -> dict[str, t.Any]:
        """Write ``entry`` and make it the latest, in the order the module docstring gives.

        Returns what happened: ``changed``, the keys, the sha256, whether latest moved.
        Re-running with the id of an entry already written (same content) changes nothing.
        """
        keys = self.keys(entry["cluster"], entry["node"])
        entry_id = entry["id"]
        body = catalog.canonical_json(entry)
        digest = catalog.sha256_hex(body)
        result: dict[str, t.Any] = {
            "changed": False,
            "entry_id": entry_id,
            "key": keys.entry(entry_id),
            "sha256": digest,
            "latest_key": keys.latest,
            "latest_updated": False,
            "warnings": [],
        }
        self.check_bucket()
        result["verified_artifacts"] = self.verify_artifacts(entry, verify)
        pointer = self.read_pointer(keys, strict=False)
        previous = "latest still names entry %s" % pointer["entry_id"] if pointer else "there is no latest entry yet"
        consequence = "the catalog's latest entry is unchanged (%s)" % previous

        existing = self._get(keys.entry(entry_id), "reading %s" % keys.entry(entry_id), consequence)
        if existing is not None and catalog.sha256_hex(existing) != digest:
            raise MigrationError(
                "Catalog entry %s already exists with other content" % keys.entry(entry_id),
                "leave entry_id out to write a new entry",
            )
        if existing is None:
            result["changed"] = True
            if not check_mode:
                self._publish_entry(keys, entry_id, body, digest, consequence)

        # Strictly older only: two entries of the same second (Velero backups started together)
        # are ordered by when they are written, so the one written now becomes latest.
        if pointer and pointer.get("created_at", "") > entry["created_at"]:
            result["warnings"].append(
                "Entry %s is older than the latest entry %s, so latest was left on the newer one"
                % (entry_id, pointer["entry_id"])
            )
        elif not pointer or pointer["entry_id"] != entry_id or pointer["sha256"] != digest:
            result["changed"] = result["latest_updated"] = True
            if not check_mode:
                new_pointer = {
                    "schema_version": catalog.SCHEMA_VERSION,
                    "entry_id": entry_id,
                    "key": keys.entry(entry_id),
                    "sha256": digest,
                    "created_at": entry["created_at"],
                    "updated_at": catalog.format_time(catalog.utcnow()),
                }
                self._put(keys.latest, catalog.canonical_json(new_pointer),
                          "moving %s to entry %s" % (keys.latest, entry_id), consequence)
        if self._get(keys.committed(entry_id), "reading %s" % keys.committed(entry_id), consequence) is None:
            result["changed"] = True
            if not check_mode:
                record = {"schema_version": catalog.SCHEMA_VERSION, "entry_id": entry_id, "sha256": digest,
                          "created_at": entry["created_at"], "committed_at": catalog.format_time(catalog.utcnow())}
                self._put(keys.committed(entry_id), catalog.canonical_json(record),
                          "committing entry %s (%s)" % (entry_id, keys.committed(entry_id)), consequence)
        return result

    def _publish_entry(self, keys: catalog.CatalogKeys, entry_id: str, body: bytes, digest: str,
                       consequence: str) -> None:
        tmp_key, final_key = keys.tmp(entry_id), keys.entry(entry_id)
        self._put(tmp_key, body, "writing the temporary catalog entry %s" % tmp_key, consequence)
        self._check_copy(tmp_key, digest, consequence)
        with self._errors("copying %s to %s" % (tmp_key, final_key), consequence):
            self.client.copy_object(
                Bucket=self.bucket, Key=final_key, CopySource={"Bucket": self.bucket, "Key": tmp_key}, **self.settings.write_args()
            )
        self._check_copy(final_key, digest, consequence)
        with self._errors("removing the temporary entry %s" % tmp_key, consequence):
            self.client.delete_object(Bucket=self.bucket, Key=tmp_key)

    def _check_copy(self, key: str, digest: str, consequence: str) -> None:
        stored = self._get(key, "reading back %s" % key, consequence)
        if stored is None or catalog.sha256_hex(stored) != digest:
            raise MigrationError(
                "The catalog entry read back from %s is %s; %s"
                % (key, "missing" if stored is None else "not what was written", consequence),
                "check the storage server (it lost or altered a write), then run again",
            )

    # -- retention --------------------------------------------------------------------

    def prune(
        self,
        keys: catalog.CatalogKeys,
        keep_last: int | None,
        max_age: int | None,
        now: dt.datetime,
        check_mode: bool = False,
    ) -> list[str]:
        """Delete entries beyond the newest ``keep_last`` or older than ``max_age`` seconds.

        Only catalog entry documents (and abandoned temporary entries) are deleted, never
        the entry latest points at, and never the artifacts entries name: those belong to
        the tools that made them (Velero TTLs, restic forget).
        """
        if keep_last is not None and keep_last < 1:
            raise MigrationError("keep_last must be at least 1", "set keep_last to 1 or more, or leave it out")
        try:
            protected = (self.latest_id(keys) or (None, None))[0]
        except CatalogContentError:
            pointer = self.read_pointer(keys, strict=False)
            protected = pointer["entry_id"] if pointer else None
        newest_first = list(reversed(self.entry_ids(keys)))
        doomed = []
        for rank, entry_id in enumerate(newest_first):
            created = dt.datetime.strptime(entry_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
            too_many = keep_last is not None and rank >= keep_last
            too_old = max_age is not None and (now - created).total_seconds() > max_age
            if entry_id != protected and (too_many or too_old):
                doomed.append(keys.entry(entry_id))
        for page in self._list(keys.base + "tmp/", "listing %stmp/" % keys.base):
            for obj in page.get("Contents", []):
                if (now - obj["LastModified"]).total_seconds() > catalog.STALE_TMP_SECONDS:
                    doomed.append(obj["Key"])
        if doomed and not check_mode:
            self.delete_entries(keys, doomed, "deleting %d old catalog entries under %s" % (len(doomed), keys.base))
        return doomed

    def delete_entries(self, keys: catalog.CatalogKeys, doomed: t.Sequence[str], doing: str) -> None:
        """Delete entry keys (and temporary ones), each entry's commit record first: a reader never
        meets a commit record whose entry is gone."""
        commits = [keys.committed(entry_id) for entry_id in filter(None, map(keys.entry_id_of, doomed))]
        self.delete_keys(commits, doing + " (their commit records)")
        self.delete_keys(doomed, doing)

    def delete_keys(self, doomed: t.Sequence[str], doing: str) -> None:
        """Delete catalog keys in batches of 1,000 (the S3 limit); refusals are errors."""
        if not doomed:
            return
        with self._errors(doing):
            for start in range(0, len(doomed), 1000):
                batch = [{"Key": key} for key in doomed[start:start + 1000]]
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    raise MigrationError(
                        "The S3 server refused to delete %s" % answer["Errors"][0].get("Key"),
                        "check the credentials' delete permission on the catalog prefix",
                    )


def catalog_code_is_404(err: BaseException) -> bool:
    """HEAD requests carry no error body: a missing object or bucket is a bare 404."""
    response = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"} or status == 404
