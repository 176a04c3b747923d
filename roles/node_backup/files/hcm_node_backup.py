# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hcm-node-backup: one backup run of a worker node's local data and workload state.

Run by the hcm-node-backup systemd timer (role hybridcloud.migration.node_backup). One run:

1. finds the node's local persistent data (``local`` PersistentVolumes pinned to this node,
   ``hostPath`` volumes of pods bound to it, configured extra paths) and backs each up with
   restic, tagged so the restore side can find it;
2. checkpoints the containers of pods that opt in with the annotation
   ``backup.hybridcloud.io/checkpoint`` through the kubelet checkpoint API, backs the archives
   up with restic and deletes them;
3. writes the node's catalog entry, last. A run that fails at any step writes no entry, so the
   catalog's latest entry stays the previous complete one.

Standard library only: nodes have Python, not boto3. The role ships it as one zipapp with the
collection's catalog code, so the catalog is written exactly as the modules write it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import ssl
import subprocess
import sys
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_runtime import agent_main, load_settings, single_run
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_stdlib_s3_client

log = logging.getLogger("hcm-node-backup")

# Pods opt in to checkpoints with this annotation: "true" (every container) or a
# comma-separated list of container names.
CHECKPOINT_ANNOTATION = "backup.hybridcloud.io/checkpoint"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# restic's documented exit codes (0.17+): no repository, lock held, wrong password.
RESTIC_NO_REPOSITORY, RESTIC_LOCKED, RESTIC_WRONG_PASSWORD = 10, 11, 12


@dataclasses.dataclass(frozen=True)
class LocalData:
    """One directory of this node's local persistent data, with what it belongs to."""

    source: str  # local-pv, host-path or extra-path
    path: str
    name: str  # what the restore side looks it up by: <namespace>/<pvc>, <namespace>/<pod>/<volume> or the path
    namespace: str = ""
    pvc: str = ""
    pv: str = ""
    pod: str = ""
    volume: str = ""

    def tags(self) -> list[str]:
        pairs = [("source", self.source), ("ns", self.namespace), ("pvc", self.pvc), ("pv", self.pv), ("pod", self.pod), ("volume", self.volume)]
        return ["%s=%s" % (k, v) for k, v in pairs if v]


@dataclasses.dataclass(frozen=True)
class CheckpointTarget:
    namespace: str
    pod: str
    container: str

    @property
    def name(self) -> str:
        return "%s/%s/%s" % (self.namespace, self.pod, self.container)


# -- step 1 and 2: what to back up (plain functions over API objects, unit-tested) ----------


def _pinned_to(pv: t.Mapping[str, t.Any], node: str) -> bool:
    """True when the PV's required node affinity selects exactly this node by hostname."""
    terms = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and node in (expr.get("values") or []):
                return True
    return False


def _owned_by_daemonset(pod: t.Mapping[str, t.Any]) -> bool:
    return any(ref.get("kind") == "DaemonSet" for ref in pod["metadata"].get("ownerReferences") or [])


def _node_pods(node: str, pods: t.Iterable[t.Mapping[str, t.Any]]) -> list[t.Mapping[str, t.Any]]:
    """Pods bound to the node that migrate with it: not DaemonSet pods, not static (mirror) pods."""
    return [
        p for p in pods
        if (p.get("spec") or {}).get("nodeName") == node
        and not _owned_by_daemonset(p)
        and MIRROR_POD_ANNOTATION not in (p["metadata"].get("annotations") or {})
    ]


def find_local_data(
    node: str,
    pods: t.Iterable[t.Mapping[str, t.Any]],
    pvs: t.Iterable[t.Mapping[str, t.Any]],
    extra_paths: t.Iterable[str] = (),
) -> list[LocalData]:
    """Every directory of local persistent data on ``node``, each once, in a stable order."""
    found: dict[str, LocalData] = {}
    for pv in pvs:
        local = (pv.get("spec") or {}).get("local") or {}
        if local.get("path") and _pinned_to(pv, node):
            claim = (pv.get("spec") or {}).get("claimRef") or {}
            namespace, pvc = claim.get("namespace", ""), claim.get("name", "")
            name = "%s/%s" % (namespace, pvc) if pvc else "pv/%s" % pv["metadata"]["name"]
            found.setdefault(local["path"], LocalData("local-pv", local["path"], name, namespace, pvc, pv["metadata"]["name"]))
    for pod in _node_pods(node, pods):
        meta = pod["metadata"]
        for volume in pod["spec"].get("volumes") or []:
            path = (volume.get("hostPath") or {}).get("path")
            if path:
                name = "%s/%s/%s" % (meta["namespace"], meta["name"], volume["name"])
                found.setdefault(path, LocalData("host-path", path, name, meta["namespace"], pod=meta["name"], volume=volume["name"]))
    for path in extra_paths:
        found.setdefault(path, LocalData("extra-path", path, path))
    return sorted(found.values(), key=lambda item: (item.source, item.name))


def find_checkpoint_targets(node: str, pods: t.Iterable[t.Mapping[str, t.Any]]) -> list[CheckpointTarget]:
    """Running containers of the node's pods that opted in with CHECKPOINT_ANNOTATION."""
    targets = []
    for pod in _node_pods(node, pods):
        wanted = ((pod["metadata"].get("annotations") or {}).get(CHECKPOINT_ANNOTATION) or "").strip()
        if not wanted or wanted.lower() == "false" or (pod.get("status") or {}).get("phase") != "Running":
            continue
        running = [c["name"] for c in (pod.get("status") or {}).get("containerStatuses") or [] if "running" in (c.get("state") or {})]
        names = running if wanted.lower() in ("true", "*") else [n.strip() for n in wanted.split(",") if n.strip() in running]
        targets.extend(CheckpointTarget(pod["metadata"]["namespace"], pod["metadata"]["name"], name) for name in sorted(names))
    return targets


# -- talking to the API server, the kubelet and restic --------------------------------------


@dataclasses.dataclass(frozen=True)
class TlsClient:
    """HTTPS with a client certificate: the API server or the kubelet, as this node."""

    base_url: str
    ca_file: str
    cert_file: str
    key_file: str
    timeout: float = 30.0

    def request(self, method: str, path: str, query: t.Mapping[str, str] | None = None) -> t.Any:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        url = self.base_url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, context=context, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300].strip()
            raise MigrationError("%s %s answered %s: %s" % (method, url, err.code, detail), _http_fix(err.code, path)) from err
        except (OSError, ValueError) as err:
            raise MigrationError("%s %s failed: %s" % (method, url, err), "check that the server is up and the certificate files exist") from err


def _http_fix(status: int, path: str) -> str:
    """What to do about an HTTP error from the API server or the kubelet."""
    checkpoint = "/checkpoint/" in path
    if status in (401, 403):
        return "check that this node's certificate may do this (RBAC: %s)" % ("nodes/checkpoint create" if checkpoint else "list pods and persistentvolumes")
    if checkpoint and status == 404:
        return "the pod or container is gone, or the kubelet's ContainerCheckpoint feature gate is off; run again, or turn the gate on"
    if checkpoint:
        return "read the kubelet's and the container runtime's logs (the runtime must have checkpoint/restore enabled and criu installed)"
    return "read the API server's answer above and its logs, then run again"


class Restic:
    """The restic command line against the node's S3 repository."""

    def __init__(self, binary: str, repository: str, password_file: str, env: t.Mapping[str, str], host: str) -> None:
        self.binary, self.repository, self.host = binary, repository, host
        self.env = dict(os.environ, RESTIC_REPOSITORY=repository, RESTIC_PASSWORD_FILE=password_file, **env)

    def _run(self, *args: str, doing: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return proc
        detail = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        if proc.returncode == RESTIC_LOCKED or "already locked" in proc.stderr:
            raise MigrationError(
                "The restic repository %s is locked by another run while %s (%s)" % (self.repository, doing, detail),
                "wait for the other backup to finish; if none runs, `restic unlock` removes the stale lock",
            )
        if proc.returncode == RESTIC_WRONG_PASSWORD or "wrong password" in proc.stderr:
            raise MigrationError(
                "restic could not open %s with the configured password while %s" % (self.repository, doing),
                "set the node_backup_restic_password this repository was created with (Ansible Vault)",
            )
        raise MigrationError("restic failed while %s: %s" % (doing, detail), "read the restic output above and the storage server's logs")

    def ensure_repository(self) -> None:
        """Create the repository on first use (restic says exit 10 when there is none)."""
        probe = subprocess.run([self.binary, "cat", "config"], env=self.env, capture_output=True, text=True, check=False)
        if probe.returncode == RESTIC_NO_REPOSITORY or "does not exist" in probe.stderr:
            log.info("creating restic repository %s", self.repository)
            self._run("init", doing="creating the repository")
        elif probe.returncode != 0:
            self._run("cat", "config", doing="opening the repository")

    def forget(self, tags: t.Sequence[str], keep_last: int | None, keep_within_seconds: int | None) -> None:
        """Drop this node's snapshots beyond the retention the catalog keeps, and prune their data.

        Retention applies per item (a PVC, a hostPath volume, a container), so snapshots are
        grouped by their tags, not by restic's default host+paths: each checkpoint archive has
        a new path (its name holds the time), so by path every checkpoint would be a group of
        its own, always its group's newest, and never forgotten.
        """
        args = ["forget", "--prune", "--host", self.host, "--tag", ",".join(tags), "--group-by", "host,tags"]
        if keep_last:
            args += ["--keep-last", str(keep_last)]
        if keep_within_seconds:
            args += ["--keep-within", restic_duration(keep_within_seconds)]
        self._run(*args, doing="applying retention")

    def backup(self, path: str, tags: t.Sequence[str]) -> dict[str, t.Any]:
        """Back ``path`` up; return restic's JSON summary (snapshot_id, total_bytes_processed, data_added, ...)."""
        args = ["backup", "--json", "--host", self.host, "--one-file-system"]
        for tag in tags:
            args += ["--tag", tag]
        proc = self._run(*args, path, doing="backing up %s" % path)
        summaries = [m for m in map(_json_or_none, proc.stdout.splitlines()) if m and m.get("message_type") == "summary"]
        if not summaries:
            raise MigrationError("restic printed no summary for %s" % path, "run the backup again; report this if it repeats")
        return summaries[-1]


def restic_duration(seconds: int) -> str:
    """restic's --keep-within wants days and hours (its "m" means months)."""
    days, hours = divmod(max(3600, seconds) // 3600, 24)
    return "%dd%dh" % (days, hours)


def _json_or_none(line: str) -> dict[str, t.Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- one run ------------------------------------------------------------------------------


def _artifact(name: str, repository: str, summary: t.Mapping[str, t.Any], when: dt.datetime, details: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {
        "name": name,
        "location": "restic:%s#%s" % (repository, summary["snapshot_id"]),
        "size": int(summary.get("total_bytes_processed", 0)),
        "created_at": catalog.format_time(when),
        "details": dict(details, snapshot_id=summary["snapshot_id"], data_added=int(summary.get("data_added", 0))),
    }


def run(config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """One backup run; returns the catalog write result. Raises MigrationError on any failure."""
    cluster, node = config["cluster"], config["node"]
    s3 = config["s3"]
    settings = S3Settings.from_params(s3, environ={})
    store = CatalogStore(make_stdlib_s3_client(settings), settings, s3["bucket"], config.get("catalog_prefix", "catalog"))
    restic_cfg = config["restic"]
    restic = Restic(
        restic_cfg.get("binary", "restic"),
        restic_cfg["repository"],
        restic_cfg["password_file"],
        {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"], "AWS_DEFAULT_REGION": settings.region},
        host=node,
    )
    base_tags = ["hcm", "cluster=%s" % cluster, "node=%s" % node]
    with single_run(config.get("lock_file", "/run/hcm-node-backup.lock")):
        log.info("step 0: checking the storage (bucket %s at %s)", s3["bucket"], settings.endpoint_label)
        store.check_bucket()
        restic.ensure_repository()
        retention = config.get("retention") or {}
        keep_last, max_age = retention.get("keep_last"), catalog.parse_age(retention.get("max_age"))
        if keep_last or max_age:
            # Before the backup, so a repository locked by another run fails this run before it writes anything.
            log.info("step 0: applying retention to this node's restic snapshots")
            restic.forget(base_tags, keep_last, max_age)
        api = TlsClient(**config["api"])
        pods = api.request("GET", "/api/v1/pods", {"fieldSelector": "spec.nodeName=%s" % node})["items"]
        pvs = api.request("GET", "/api/v1/persistentvolumes")["items"]

        local_data = []
        for item in find_local_data(node, pods, pvs, config.get("extra_paths", [])):
            if not os.path.exists(item.path):
                log.warning("step 1: %s (%s) does not exist on this node yet; nothing to back up", item.path, item.name)
                continue
            log.info("step 1: backing up %s (%s) from %s", item.name, item.source, item.path)
            when = catalog.utcnow()
            summary = restic.backup(item.path, base_tags + ["kind=local_data"] + item.tags())
            local_data.append(_artifact(item.name, restic.repository, summary, when, dict(dataclasses.asdict(item))))

        workload_state = []
        kubelet_cfg = dict(config.get("kubelet") or {})
        timeout = int(kubelet_cfg.pop("checkpoint_timeout", 60))
        targets = find_checkpoint_targets(node, pods) if kubelet_cfg else []
        # The kubelet answers only once the runtime has dumped the container, which may take up
        # to the checkpoint timeout: wait longer than that, or the archive it writes after we
        # gave up would stay on the node with nobody to delete it.
        kubelet = TlsClient(**dict({"timeout": timeout + 30.0}, **kubelet_cfg)) if kubelet_cfg else None
        for target in targets:
            log.info("step 2: checkpointing %s through the kubelet", target.name)
            when = catalog.utcnow()
            answer = kubelet.request("POST", "/checkpoint/%s/%s/%s" % (target.namespace, target.pod, target.container), {"timeout": str(timeout)})
            archive = (answer.get("items") or [None])[0]
            if not archive or not os.path.isfile(archive):
                raise MigrationError("The kubelet named no checkpoint archive for %s: %s" % (target.name, answer), "check the kubelet's log")
            tags = ["kind=workload_state", "ns=%s" % target.namespace, "pod=%s" % target.pod, "container=%s" % target.container]
            try:
                summary = restic.backup(archive, base_tags + tags)
            finally:
                # Stored or not, the archive goes: it holds every memory page of the container,
                # and a run that failed here must not leave one behind (each run makes a new one).
                os.remove(archive)
            workload_state.append(_artifact(target.name, restic.repository, summary, when, {
                "namespace": target.namespace, "pod": target.pod, "container": target.container, "archive": os.path.basename(archive),
            }))

        log.info("step 3: writing the catalog entry (%d local data, %d checkpoints)", len(local_data), len(workload_state))
        entry = catalog.build_entry(
            cluster, node, {"local_data": local_data, "workload_state": workload_state},
            labels={"tool": "hcm-node-backup", "restic_repository": restic.repository},
        )
        # restic verified what it stored; there are no s3:// artifacts for the catalog to check.
        result = store.write(entry, verify="none")
        if keep_last or max_age:
            result["pruned"] = store.prune(store.keys(cluster, node), keep_last, max_age, catalog.utcnow())
        return result


REQUIRED_SETTINGS = {
    "": ("cluster", "node", "s3", "restic", "api"),
    "s3": ("bucket", "access_key", "secret_key"),
    "restic": ("repository", "password_file"),
    "api": ("base_url", "ca_file", "cert_file", "key_file"),
}


def main(argv: t.Sequence[str] | None = None) -> int:
    return agent_main(
        "hcm-node-backup", __doc__.split("\n\n", 1)[0], "/etc/hybridcloud-migration/hcm-node-backup.json",
        lambda path: run(load_settings(path, REQUIRED_SETTINGS, "node_backup")), argv,
    )


if __name__ == "__main__":
    sys.exit(main())
