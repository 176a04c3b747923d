# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hcm-node-backup: one backup run of a worker node's local data and workload state.

Run by the hcm-node-backup systemd timer (role hybridcloud.migration.node_backup). One run:

0. checks the storage and opens the restic repository; a repository another run holds
   exclusively (``restic prune``, ``forget``, ``check``) fails the run here, before it
   checkpoints or writes anything;
1. finds the node's local persistent data (``local`` PersistentVolumes pinned to this node,
   ``hostPath`` volumes of pods bound to it, configured extra paths) and backs each up with
   restic, tagged so the restore side can find it;
2. checkpoints the containers of pods that opt in with the annotation
   ``backup.hybridcloud.io/checkpoint`` through the kubelet checkpoint API, backs the archives
   up with restic and deletes them;
3. writes the node's catalog entry, last. A run that fails at any step writes no entry, so the
   catalog's latest entry stays the previous complete one;
4. applies retention: prunes the node's catalog entries (keep_last, max_age), then forgets
   the restic snapshots of this node that no remaining entry names, and prunes their data.
   restic follows the catalog, so every entry left restores whole, and a failed run's
   snapshots (named by no entry) go at the next complete run.

What each item is called (its catalog name) and how its restic snapshot is tagged; every
snapshot also has the host ``<node>`` and the tags ``hcm``, ``cluster=<cluster>``,
``node=<node>`` and ``kind=local_data`` or ``kind=workload_state``:

- a ``local`` PersistentVolume: ``<namespace>/<pvc>`` (``pv/<pv>`` when unbound); tags
  ``source=local-pv``, ``ns=``, ``pvc=``, ``pv=``;
- a ``hostPath`` volume: ``<namespace>/<owner kind>/<owner>/<volume>``, keyed by the pod's
  controlling owner, not the pod, so the name survives restarts and rollouts: a ReplicaSet's
  pod is filed under its Deployment (the ReplicaSet's name less the pod's
  ``pod-template-hash``), a StatefulSet's, Job's, ... under that owner, a bare pod under
  ``pod/<pod>``; kinds are lowercase (``shop/deployment/web/cache``); tags
  ``source=host-path``, ``ns=``, ``owner=<owner kind>/<owner>``, ``volume=``;
- an extra path: the path itself; tag ``source=extra-path``;
- a checkpoint: ``<namespace>/<pod>/<container>``; tags ``ns=``, ``pod=``, ``container=``.

Standard library only: nodes have Python, not boto3. The role ships it as one zipapp with the
collection's catalog code, so the catalog is written exactly as the modules write it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import selectors
import ssl
import subprocess
import sys
import time
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
# The Deployment controller names a ReplicaSet <deployment>-<hash> and labels its pods with the hash.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
# restic's documented exit codes (0.17+): no repository, lock held, wrong password.
RESTIC_NO_REPOSITORY, RESTIC_LOCKED, RESTIC_WRONG_PASSWORD = 10, 11, 12
# restic (0.17+) retries a failing storage request for up to 15 minutes, reporting each retry,
# and a request that succeeded after retrying, on stderr in these words.
RESTIC_RETRYING = "returned error, retrying after"
RESTIC_RECOVERED = "operation successful after"
# Once told to stop (SIGTERM), restic removes its lock, retrying while the storage is down; then SIGKILL.
RESTIC_STOP_GRACE = 10.0
DEFAULT_RETRY_LIMIT, DEFAULT_LOCK_WAIT = "5m", "2m"
# The kubelet's certificate directory (its --cert-dir) and the files there that tell which
# certificate it serves: kubeadm's default is a self-signed one the kubelet makes itself, kept
# with its own CA in kubelet.crt; with serverTLSBootstrap: true the cluster signs it, and the
# kubelet keeps it in kubelet-server-current.pem.
KUBELET_PKI_DIR = "/var/lib/kubelet/pki"
KUBELET_SELF_SIGNED_CERT = "kubelet.crt"
KUBELET_BOOTSTRAPPED_CERT = "kubelet-server-current.pem"


@dataclasses.dataclass(frozen=True)
class LocalData:
    """One directory of this node's local persistent data, with what it belongs to."""

    source: str  # local-pv, host-path or extra-path
    path: str
    name: str  # what the restore side looks it up by (see the module docstring)
    namespace: str = ""
    pvc: str = ""
    pv: str = ""
    owner: str = ""  # host-path: <kind>/<name> of the pod's controlling owner, pod/<pod> for a bare pod
    volume: str = ""
    pod: str = ""  # host-path: the pod this run read it from; recorded, not a tag (it changes on each restart)

    def tags(self) -> list[str]:
        pairs = [("source", self.source), ("ns", self.namespace), ("pvc", self.pvc), ("pv", self.pv), ("owner", self.owner), ("volume", self.volume)]
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


def data_owner(pod: t.Mapping[str, t.Any]) -> tuple[str, str]:
    """(lowercase kind, name) that a pod's hostPath data is filed under: stable across restarts.

    That is the pod's controlling owner (the ownerReference with ``controller: true``), except
    that a ReplicaSet's pod goes under the Deployment that made the ReplicaSet: its name less
    the ``-<pod-template-hash>`` the pod is labelled with (the agent cannot read ReplicaSets:
    the kubelet's identity it uses may not). A pod without a controller is its own owner.
    """
    meta = pod["metadata"]
    ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller") and r.get("kind") and r.get("name")), None)
    if ref is None:
        return "pod", meta["name"]
    kind, name = str(ref["kind"]), str(ref["name"])
    suffix = "-" + str((meta.get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL) or "")
    if kind == "ReplicaSet" and suffix != "-" and name.endswith(suffix) and len(name) > len(suffix):
        return "deployment", name[: -len(suffix)]
    return kind.lower(), name


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
        owner = "%s/%s" % data_owner(pod)
        for volume in pod["spec"].get("volumes") or []:
            path = (volume.get("hostPath") or {}).get("path")
            if path:
                name = "%s/%s/%s" % (meta["namespace"], owner, volume["name"])
                found.setdefault(path, LocalData("host-path", path, name, meta["namespace"], owner=owner, volume=volume["name"], pod=meta["name"]))
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
    ca_note: str = ""  # why ca_file is the CA, for messages
    ca_fix: str = "set the CA file that signed the server's certificate"  # when the server's certificate does not verify

    def _context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.load_cert_chain(self.cert_file, self.key_file)
        except OSError as err:  # ssl.SSLError is one
            raise MigrationError(
                "Cannot load the TLS files for %s (CA %s%s, certificate %s, key %s): %s"
                % (self.base_url, self.ca_file, " " + self.ca_note if self.ca_note else "", self.cert_file, self.key_file, err),
                "check that these files exist on this node and hold PEM certificates and the key; " + self.ca_fix,
            ) from err
        return context

    def request(self, method: str, path: str, query: t.Mapping[str, str] | None = None) -> t.Any:
        context = self._context()
        url = self.base_url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, context=context, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300].strip()
            raise MigrationError("%s %s answered %s: %s" % (method, url, err.code, detail), _http_fix(err.code, path)) from err
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise MigrationError(
                    "The TLS certificate of %s did not verify against %s%s: %s"
                    % (self.base_url, self.ca_file, " (%s)" % self.ca_note if self.ca_note else "", reason.verify_message or reason),
                    self.ca_fix,
                ) from err
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


def kubelet_ca(configured: str, pki_dir: str, cluster_ca: str) -> tuple[str, str]:
    """The CA file that verifies the kubelet's serving certificate, and why it is that one.

    ``configured`` (node_backup_kubelet_ca_file) wins. Empty means: the kubelet's own
    ``kubelet.crt`` when it serves that self-signed certificate (kubeadm's default: the file
    exists and ``kubelet-server-current.pem`` does not), else the cluster CA (serverTLSBootstrap).
    """
    if configured:
        return configured, "set by node_backup_kubelet_ca_file"
    self_signed = os.path.join(pki_dir, KUBELET_SELF_SIGNED_CERT)
    bootstrapped = os.path.join(pki_dir, KUBELET_BOOTSTRAPPED_CERT)
    if os.path.exists(bootstrapped):
        return cluster_ca, "the cluster CA, chosen because %s exists: the cluster signs the kubelet's certificate" % bootstrapped
    if os.path.isfile(self_signed):
        return self_signed, "chosen because the kubelet serves the self-signed certificate in it (%s does not exist)" % bootstrapped
    return cluster_ca, "the cluster CA, chosen because neither %s nor %s exists" % (self_signed, bootstrapped)


def kubelet_client(settings: t.Mapping[str, t.Any], cluster_ca: str) -> TlsClient:
    """The kubelet's API, verified with the CA ``kubelet_ca`` picks."""
    pki_dir = settings.get("pki_dir") or KUBELET_PKI_DIR
    ca_file, why = kubelet_ca(settings.get("ca_file") or "", pki_dir, cluster_ca)
    fix = (
        "set node_backup_kubelet_ca_file to %s when the kubelet serves the self-signed certificate it made itself "
        "(kubeadm's default), or to the cluster CA %s when the cluster signs its serving certificate (serverTLSBootstrap: true, "
        "kept in %s); left empty, it is chosen between those two by which files node_backup_kubelet_pki_dir holds. "
        "If the certificate names another host, point node_backup_kubelet_url at a name it holds"
        % (os.path.join(pki_dir, KUBELET_SELF_SIGNED_CERT), cluster_ca, os.path.join(pki_dir, KUBELET_BOOTSTRAPPED_CERT))
    )
    # The kubelet answers only once the runtime has dumped the container, which may take up
    # to the checkpoint timeout: wait longer than that, or the archive it writes after we
    # gave up would stay on the node with nobody to delete it.
    timeout = int(settings.get("checkpoint_timeout", 60)) + 30.0
    return TlsClient(settings["base_url"], ca_file, settings["cert_file"], settings["key_file"], timeout, "the kubelet's CA, " + why, fix)


class ResticLocked(MigrationError):
    """Another restic process holds a lock that conflicts with the one restic needed."""


class Restic:
    """The restic command line against the node's S3 repository."""

    def __init__(self, binary: str, repository: str, password_file: str, env: t.Mapping[str, str], host: str,
                 retry_limit: int | None = None) -> None:
        self.binary, self.repository, self.host = binary, repository, host
        self.retry_limit = retry_limit
        self.env = dict(os.environ, RESTIC_REPOSITORY=repository, RESTIC_PASSWORD_FILE=password_file, **env)

    def _exec(self, args: t.Sequence[str]) -> tuple[int, str, str, str]:
        """Run restic: (exit code, stdout without progress lines, stderr, why the agent stopped it or "").

        restic retries a failing storage request for up to 15 minutes. When its retries have
        gone on for ``retry_limit`` seconds without one succeeding, the storage is taken for
        dead: restic is stopped (SIGTERM, so it can remove its lock; SIGKILL after a grace).
        """
        with subprocess.Popen([self.binary, *args], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            assert proc.stdout is not None and proc.stderr is not None  # both are pipes
            out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
            kept: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
            partial = {out_fd: b"", err_fd: b""}
            retrying_since: float | None = None
            last_retry, stopped, kill_at = "", "", 0.0
            with selectors.DefaultSelector() as selector:
                selector.register(out_fd, selectors.EVENT_READ)
                selector.register(err_fd, selectors.EVENT_READ)
                while selector.get_map():
                    for key, _events in selector.select(timeout=1.0):
                        chunk = os.read(key.fd, 65536)
                        if chunk:
                            lines = (partial[key.fd] + chunk).split(b"\n")
                            partial[key.fd] = lines.pop()
                        else:
                            selector.unregister(key.fd)
                            lines = [partial[key.fd]] if partial[key.fd] else []
                        for line in lines:
                            if key.fd == out_fd:
                                if b'"message_type":"status"' not in line:  # backup --json reports progress many times a second
                                    kept[out_fd].append(line)
                                continue
                            kept[err_fd].append(line)
                            text = line.decode("utf-8", "replace")
                            if RESTIC_RETRYING in text:
                                retrying_since, last_retry = retrying_since or time.monotonic(), text.strip()
                            elif RESTIC_RECOVERED in text:
                                retrying_since = None
                    now = time.monotonic()
                    if self.retry_limit and retrying_since is not None and not stopped and now - retrying_since > self.retry_limit:
                        stopped = "its requests kept failing for %d s (%s)" % (now - retrying_since, last_retry)
                        proc.terminate()
                        kill_at = now + RESTIC_STOP_GRACE
                    if kill_at and now > kill_at and proc.poll() is None:
                        proc.kill()
                        kill_at = 0.0
            code = proc.wait()
        out, err = (b"\n".join(kept[fd]).decode("utf-8", "replace") for fd in (out_fd, err_fd))
        return code, out, err, stopped

    def _run(self, *args: str, doing: str) -> str:
        """Run restic; its stdout, or a MigrationError naming what failed."""
        code, out, err, stopped = self._exec(args)
        self._check(code, err, stopped, doing)
        return out

    def _check(self, code: int, err: str, stopped: str, doing: str) -> None:
        if stopped:
            raise MigrationError(
                "restic gave up on the storage while %s: %s" % (doing, stopped),
                "check that the storage server is up and reachable from this node, then run again "
                "(node_backup_restic_retry_limit sets how long restic may retry)",
            )
        if code == 0:
            return
        lines = _restic_messages(err) or ["exit %d" % code]
        if code == RESTIC_LOCKED or "already locked" in err:
            holder = next((line for line in lines if "locked" in line), lines[-1])
            raise ResticLocked(
                "The restic repository %s is locked by another run while %s (%s)" % (self.repository, doing, holder),
                "wait for the other run to finish; if none runs, `restic unlock` removes the stale lock",
            )
        if code == RESTIC_WRONG_PASSWORD or "wrong password" in err:
            raise MigrationError(
                "restic could not open %s with the configured password while %s" % (self.repository, doing),
                "set the node_backup_restic_password this repository was created with (Ansible Vault)",
            )
        raise MigrationError("restic failed while %s: %s" % (doing, lines[-1]), "read the restic output above and the storage server's logs")

    def ensure_repository(self) -> None:
        """Open the repository, creating it on first use (restic says exit 10 when there is none).

        ``restic cat`` takes the shared lock ``restic backup`` takes, so a repository another run
        holds exclusively (prune, forget, check) fails here, before anything is checkpointed or
        written; other nodes' backups (shared locks too) do not stop this one.
        """
        doing = "opening the repository, before backing up anything"
        code, _out, err, stopped = self._exec(["cat", "config"])
        if not stopped and (code == RESTIC_NO_REPOSITORY or (code != RESTIC_LOCKED and "does not exist" in err)):
            log.info("creating restic repository %s", self.repository)
            self._run("init", doing="creating the repository")
            return
        self._check(code, err, stopped, doing)

    def snapshots(self, tags: t.Sequence[str]) -> list[dict[str, t.Any]]:
        """This host's snapshots that carry every one of ``tags`` (restic's JSON)."""
        out = self._run("snapshots", "--json", "--no-lock", "--host", self.host, "--tag", ",".join(tags), doing="listing this node's snapshots")
        found = json.loads(out or "[]") or []
        return [s for s in found if s.get("hostname") == self.host and set(tags) <= set(s.get("tags") or [])]

    def forget(self, snapshot_ids: t.Sequence[str], lock_wait: int | None) -> None:
        """Forget exactly these snapshots and prune the data only they used.

        Both need restic's exclusive lock: while other nodes back up into the same repository,
        wait up to ``lock_wait`` seconds for it.
        """
        args = ["forget", "--prune"] + (["--retry-lock", "%ds" % lock_wait] if lock_wait else [])
        self._run(*args, *snapshot_ids, doing="applying retention (forgetting %d snapshots of this node that no catalog entry names)" % len(snapshot_ids))

    def backup(self, path: str, tags: t.Sequence[str]) -> dict[str, t.Any]:
        """Back ``path`` up; return restic's JSON summary (snapshot_id, total_bytes_processed, data_added, ...)."""
        args = ["backup", "--json", "--host", self.host, "--one-file-system"]
        for tag in tags:
            args += ["--tag", tag]
        out = self._run(*args, path, doing="backing up %s" % path)
        summaries = [m for m in map(_json_or_none, out.splitlines()) if m and m.get("message_type") == "summary"]
        if not summaries:
            raise MigrationError("restic printed no summary for %s" % path, "run the backup again; report this if it repeats")
        return summaries[-1]


def _restic_messages(stderr: str) -> list[str]:
    """restic's error lines; with --json it writes its fatal error as an exit_error JSON line."""
    lines = []
    for line in stderr.splitlines():
        message = _json_or_none(line)
        if message is not None and message.get("message_type") == "exit_error":
            lines.extend(str(message.get("message", "")).splitlines())
        elif line.strip():
            lines.append(line.strip())
    return lines


def _json_or_none(line: str) -> dict[str, t.Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- retention: restic follows the catalog --------------------------------------------------


def snapshot_ids(entry: t.Mapping[str, t.Any]) -> set[str]:
    """The restic snapshots a catalog entry names (by id: the repository may be spelt otherwise since)."""
    found = set()
    for items in (entry.get("data") or {}).values():
        for item in items:
            location = str(item.get("location") or "")
            if location.startswith("restic:") and "#" in location:
                found.add(location.rsplit("#", 1)[1])
            snapshot = (item.get("details") or {}).get("snapshot_id")
            if isinstance(snapshot, str) and snapshot:
                found.add(snapshot)
    return found


def unnamed_snapshots(snapshots: t.Iterable[t.Mapping[str, t.Any]], entries: t.Iterable[t.Mapping[str, t.Any]]) -> list[str]:
    """Ids of the snapshots no entry names, oldest first (an entry naming a short id protects every snapshot it could mean)."""
    named: set[str] = set()
    for entry in entries:
        named |= snapshot_ids(entry)
    prefixes = tuple(n for n in named if len(n) < 64)
    return [s["id"] for s in sorted(snapshots, key=lambda s: (s.get("time", ""), s["id"]))
            if s["id"] not in named and not s["id"].startswith(prefixes)]


def restic_retention(store: CatalogStore, cluster: str, node: str, restic: Restic, tags: t.Sequence[str], lock_wait: int | None) -> list[str]:
    """Forget this node's snapshots (host and tags) that no remaining catalog entry names; prune their data.

    Runs after the catalog was pruned, so restic keeps exactly what the entries left name:
    every one of them restores whole, and what failed runs stored (named by no entry) goes.
    Other hosts' snapshots, and this host's without these tags, are never looked at.
    """
    keys = store.keys(cluster, node)
    entries = [store.read_entry(keys, entry_id) for entry_id in store.entry_ids(keys)]
    doomed = unnamed_snapshots(restic.snapshots(tags), entries)
    if doomed:
        restic.forget(doomed, lock_wait)
    return doomed


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
        retry_limit=catalog.parse_age(restic_cfg.get("retry_limit", DEFAULT_RETRY_LIMIT), "node_backup_restic_retry_limit"),
    )
    lock_wait = catalog.parse_age(restic_cfg.get("lock_wait", DEFAULT_LOCK_WAIT), "node_backup_restic_lock_wait")
    retention = config.get("retention") or {}
    keep_last, max_age = retention.get("keep_last"), catalog.parse_age(retention.get("max_age"))
    base_tags = ["hcm", "cluster=%s" % cluster, "node=%s" % node]
    api_cfg = config["api"]
    api = TlsClient(api_cfg["base_url"], api_cfg["ca_file"], api_cfg["cert_file"], api_cfg["key_file"],
                    ca_note="node_backup_api_ca_file", ca_fix="set node_backup_api_ca_file to the cluster CA (/etc/kubernetes/pki/ca.crt with kubeadm)")
    kubelet_cfg = config.get("kubelet") or {}
    kubelet = kubelet_client(kubelet_cfg, api_cfg["ca_file"]) if kubelet_cfg else None
    with single_run(config.get("lock_file", "/run/hcm-node-backup.lock")):
        log.info("step 0: checking the storage (bucket %s at %s) and the restic repository", s3["bucket"], settings.endpoint_label)
        store.check_bucket()
        restic.ensure_repository()
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
        targets = find_checkpoint_targets(node, pods) if kubelet else []
        if kubelet and targets:
            log.info("step 2: %d containers to checkpoint; the kubelet's certificate is verified with %s (%s)", len(targets), kubelet.ca_file, kubelet.ca_note)
        for target in targets:
            log.info("step 2: checkpointing %s through the kubelet", target.name)
            when = catalog.utcnow()
            answer = kubelet.request("POST", "/checkpoint/%s/%s/%s" % (target.namespace, target.pod, target.container),
                                     {"timeout": str(int(kubelet_cfg.get("checkpoint_timeout", 60)))})
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
            result["forgotten"] = _apply_restic_retention(store, cluster, node, restic, base_tags, lock_wait, entry["id"])
        return result


def _apply_restic_retention(store: CatalogStore, cluster: str, node: str, restic: Restic, tags: t.Sequence[str],
                            lock_wait: int | None, entry_id: str) -> list[str]:
    """Step 4. The entry is written: a lock another run holds defers retention to the next run."""
    try:
        forgotten = restic_retention(store, cluster, node, restic, tags, lock_wait)
    except ResticLocked as err:
        log.warning("step 4: restic retention is left to the next run: %s", err.message)
        return []
    except MigrationError as err:
        raise MigrationError(
            "The backup is complete (catalog entry %s is the latest), but restic retention failed: %s" % (entry_id, err.problem), err.fix,
        ) from err
    log.info("step 4: forgot %d restic snapshots of this node that no catalog entry names", len(forgotten))
    return forgotten


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
