# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hcm-etcd-backup: one verified etcd snapshot of the cluster, uploaded to S3 and recorded in the catalog.

Run by the hcm-etcd-backup systemd timer on control-plane hosts (role hybridcloud.migration.etcd_backup).
One run takes ``etcdctl snapshot save`` with the cluster's etcd client certificate, checks the
snapshot with ``etcdutl snapshot status``, uploads it with its sha256, writes the catalog entry
(scope ``_etcd``) last, then prunes old entries and the snapshots only they named.

Standard library only; the role ships it as one zipapp with the collection's catalog code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_runtime import agent_main, load_settings, single_run
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore, split_s3_location
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_stdlib_s3_client, s3_errors

log = logging.getLogger("hcm-etcd-backup")
SCOPE = "_etcd"
REQUIRED_SETTINGS = {
    "": ("cluster", "member", "etcd", "s3", "work_dir"),
    "etcd": ("endpoints", "cacert", "cert", "key"),
    "s3": ("bucket", "access_key", "secret_key"),
}


def _tool(settings: t.Mapping[str, t.Any], name: str) -> str:
    path = settings["etcd"].get(name) or shutil.which(name)
    if not path:
        raise MigrationError("%s is not installed on this host" % name, "install etcd's client tools (Debian: etcd-client)")
    return path


def take_snapshot(settings: t.Mapping[str, t.Any], target: str) -> dict[str, t.Any]:
    """``etcdctl snapshot save`` into ``target``, then its status (hash, revision, keys, size)."""
    etcd = settings["etcd"]
    partial = target + ".part"
    save = subprocess.run(
        [_tool(settings, "etcdctl"), "--endpoints", etcd["endpoints"], "--cacert", etcd["cacert"], "--cert", etcd["cert"],
         "--key", etcd["key"], "--command-timeout", "%ss" % etcd.get("timeout", 300), "snapshot", "save", partial],
        env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=False,
    )
    if save.returncode != 0:
        detail = (save.stderr.strip().splitlines() or ["exit %d" % save.returncode])[-1]
        raise MigrationError("etcdctl snapshot save from %s failed: %s" % (etcd["endpoints"], detail),
                             "check the endpoints and the client certificate (etcd_backup_cert/key/cacert)")
    os.replace(partial, target)
    # etcdutl reads the file offline; etcdctl's "snapshot status" is its deprecated twin (etcd 3.4).
    tool = etcd.get("etcdutl") or shutil.which("etcdutl")
    status_argv = [tool or _tool(settings, "etcdctl"), "snapshot", "status", target, "--write-out=json"]
    status = subprocess.run(status_argv, env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=False)
    try:
        parsed = json.loads(status.stdout)
    except ValueError:
        parsed = {}
    if status.returncode != 0 or not parsed.get("totalKey"):
        raise MigrationError("The snapshot %s does not pass `snapshot status`: %s" % (target, status.stderr.strip() or status.stdout.strip()),
                             "take the snapshot again; if it keeps failing, check etcd's health")
    return {"hash": parsed.get("hash"), "revision": parsed.get("revision"), "total_keys": parsed.get("totalKey"), "total_size": parsed.get("totalSize")}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(settings: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    cluster, member, s3 = settings["cluster"], settings["member"], settings["s3"]
    s3_settings = S3Settings.from_params(s3, environ={})
    client = make_stdlib_s3_client(s3_settings)
    store = CatalogStore(client, s3_settings, s3["bucket"], settings.get("catalog_prefix", "catalog"))
    prefix = settings.get("prefix", "etcd").strip("/")
    retention = settings.get("retention") or {}
    keep_last, max_age = retention.get("keep_last"), catalog.parse_age(retention.get("max_age"))
    os.makedirs(settings["work_dir"], mode=0o700, exist_ok=True)
    with single_run(os.path.join(settings["work_dir"], ".lock")):
        store.check_bucket()
        started = catalog.utcnow()
        name = "%s-%s.db" % (started.strftime("%Y%m%dT%H%M%SZ"), member)
        path = os.path.join(settings["work_dir"], name)
        try:
            log.info("step 1: taking the snapshot from %s", settings["etcd"]["endpoints"])
            status = take_snapshot(settings, path)
            size, sha256 = os.path.getsize(path), file_sha256(path)
            key = "%s/%s/%s" % (prefix, cluster, name)
            log.info("step 2: uploading %s (%d bytes, %d keys, revision %s) to s3://%s/%s",
                     name, size, status["total_keys"], status["revision"], s3["bucket"], key)
            with s3_errors(s3_settings, "uploading the snapshot to %s" % key, s3["bucket"], "the catalog's latest etcd entry is unchanged"):
                client.upload_file(path, s3["bucket"], key, sha256, **s3_settings.write_args())
        finally:
            for leftover in (path, path + ".part"):
                if os.path.exists(leftover):
                    os.remove(leftover)  # a snapshot holds every Secret of the cluster: keep no copy here
        artifact = {"name": name, "location": "s3://%s/%s" % (s3["bucket"], key), "size": size, "sha256": sha256,
                    "created_at": catalog.format_time(started), "details": dict(status, member=member)}
        entry = catalog.build_entry(cluster, SCOPE, {"etcd_snapshot": [artifact]}, created_at=started, labels={"tool": "hcm-etcd-backup"})
        log.info("step 3: writing the catalog entry")
        result = store.write(entry, verify="size")
        if keep_last or max_age:
            result["pruned"] = prune(store, cluster, keep_last, max_age)
        return result


def prune(store: CatalogStore, cluster: str, keep_last: int | None, max_age: int | None) -> list[str]:
    """Prune old entries, then delete the snapshots only those entries named."""
    keys = store.keys(cluster, SCOPE)
    now = catalog.utcnow()
    doomed = [k for k in store.prune(keys, keep_last, max_age, now, check_mode=True) if keys.entry_id_of(k)]
    snapshots = []
    for entry_key in doomed:
        entry = store.read_entry(keys, keys.entry_id_of(entry_key))
        snapshots += [split_s3_location(a["location"]) for a in entry["data"].get("etcd_snapshot", [])]
    pruned = store.prune(keys, keep_last, max_age, now)
    for bucket, key in filter(None, snapshots):
        with s3_errors(store.settings, "deleting the old snapshot %s" % key, bucket):
            store.client.delete_object(Bucket=bucket, Key=key)
    return pruned


def main(argv: t.Sequence[str] | None = None) -> int:
    return agent_main(
        "hcm-etcd-backup", __doc__.split("\n\n", 1)[0], "/etc/hybridcloud-migration/hcm-etcd-backup.json",
        lambda path: run(load_settings(path, REQUIRED_SETTINGS, "etcd_backup")), argv,
    )


if __name__ == "__main__":
    sys.exit(main())
