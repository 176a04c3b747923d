"""A STAND-IN for the kubelet, for tests only: its checkpoint API, backed by a REAL criu dump.

Nothing on this machine can run a real kubelet with a container runtime (no Docker, no CRI-O,
cgroup v1), so this small HTTPS server stands in for the one kubelet endpoint the node backup
agent calls, and nothing else:

    POST /checkpoint/{namespace}/{pod}/{container}?timeout=S   ->   {"items": ["<archive path>"]}

What is real, and what is not:

- The "containers" are real processes in the Debian 13 root (lab/hclab/debian_root.py):
  one long-lived ``spawn_in_root`` session per container, so each one has its own mount and
  pid namespace. A small supervisor shell script is PID 1 there; it starts the workload (by
  default a counter whose count lives only in a shell variable) as a session leader with a
  PID of 1000 or more (free again in any fresh namespace at restore time), then waits for
  dump requests on a FIFO in a bind-mounted exchange directory.
- A checkpoint is a REAL ``criu dump --leave-running`` of that process tree, like CRI-O's
  (the kubelet's checkpoints are "forensic": CRI-O dumps with KeepRunning and the container
  goes on running). The files the container wrote under its "rootfs" paths are tarred by a
  criu ``post-dump`` action script, while the tasks are still frozen, so they match the
  memory images exactly (CRI-O pauses the container around the dump for the same reason).
- The archive is laid out like a CRI-O container checkpoint, named and placed as the kubelet
  names it: ``<checkpoints dir>/checkpoint-<pod>_<namespace>-<container>-<RFC3339>.tar``, an
  uncompressed tar, mode 0600, holding

      checkpoint/        the CRIU images (real)
      dump.log           criu's log (real)
      stats-dump         criu's dump statistics (real)
      rootfs-diff.tar    the container's written files (real content; see "minimal" below)
      config.dump        checkpointctl's ContainerConfig JSON (id, name, rootfsImage*, runtime, times)
      spec.dump          an OCI runtime spec JSON with CRI-O's io.kubernetes.* annotations

  Minimal, on purpose: ``spec.dump`` describes the stand-in's process, not a runc bundle
  (no capabilities, cgroups, seccomp or real mounts; ``root.path`` is the Debian root);
  ``config.dump``'s image fields name a made-up image; ``rootfs-diff.tar`` holds only the
  paths the test declares as the container's writable state (CRI-O computes the diff against
  the image layers); there is no ``deleted.files``, ``bind.mounts``, ``network.status`` or
  container log (CRI-O writes those only when there is something to put in them).
- TLS like a kubelet's: a serving certificate from this stand-in's own CA, and client
  certificates required for the checkpoint call. No certificate: 401 ``Unauthorized``; a
  certificate whose user is not allowed ``nodes/checkpoint create``: 403 with the kubelet's
  ``Forbidden (user=..., verb=create, resource=nodes, subresource(s)=[checkpoint])`` text.
  Unlike the kubelet (which answers 401), a certificate from another CA fails the TLS
  handshake here: Python's ssl cannot request a client certificate without verifying it.
- Errors like the kubelet's: unknown pod or container 404, unparsable timeout 404 (the
  kubelet's own choice), a failed or timed-out dump 500 ``checkpointing of ns/pod/c failed (...)``.

The product code must not know this exists: the agent is pointed at ``base_url`` with the CA
and a client certificate, as it would be at ``https://<node>:10250``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.hclab.debian_root import spawn_in_root
from lab.hclab.pki import Authority, CertPair, make_ca
from tests.helpers.serving_thread import ServingThread

LOOPBACK = "127.0.0.1"
# Inside each container's namespace: where the exchange directory is bound.
EXCHANGE = "/hcm-standin"
# The workload's first PID: high enough to be free in any fresh pid namespace at restore time.
WORKLOAD_MIN_PID = 1000

# The default workload: counts in a shell variable (memory only) and appends each value to a
# file in its rootfs. A restart would begin again at 1; a restore goes on from the dumped count.
# Its files live under /tmp, a tmpfs of the container's own session: nothing is written into
# the cached Debian root on disk.
COUNTER_DIR = "/tmp/counter"
COUNTER_LOG = COUNTER_DIR + "/count.log"
COUNTER_SCRIPT = """
mkdir -p %(dir)s
cd %(dir)s
i=0
while :; do
    i=$((i + 1))
    echo "$i" >>%(log)s
    sleep 0.1
done
""" % {"dir": COUNTER_DIR, "log": COUNTER_LOG}

# PID 1 of each container's namespace. $HCM_WORKLOAD is the workload (sh script); it runs as a
# session leader (criu dumps a session leader without --shell-job) with no descriptor from
# outside: stdio is the root's /dev/null, and it is started before the request FIFO is opened.
SUPERVISOR_SCRIPT = r"""
set -eu
x=/hcm-standin
echo $((WORKLOAD_MIN_PID - 1)) >/proc/sys/kernel/ns_last_pid
setsid sh -c 'echo $$ >/run/hcm-workload.pid; eval "$HCM_WORKLOAD"' </dev/null >/dev/null 2>&1 &
until [ -s /run/hcm-workload.pid ]; do sleep 0.02; done
pid=$(cat /run/hcm-workload.pid)
exec 3<>"$x/requests"
echo "$pid" >"$x/ready.tmp"
mv "$x/ready.tmp" "$x/ready"
while read -r id <&3; do
    d="$x/dumps/$id"
    mkdir -p "$d/checkpoint"
    rc=0
    HCM_ROOTFS_DIFF="$d/rootfs-diff.tar" criu dump -t "$pid" -D "$d/checkpoint" -W "$d" -o dump.log -v4 \
        --leave-running --action-script "$x/post-dump.sh" || rc=$?
    echo "$rc" >"$d/rc.tmp"
    mv "$d/rc.tmp" "$d/rc"
done
"""

# criu runs this at each action; at post-dump the tasks are dumped but still frozen.
POST_DUMP_SCRIPT = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
cd / && exec tar -cf "$HCM_ROOTFS_DIFF" $HCM_ROOTFS_PATHS
"""

CHECKPOINT_PATH = re.compile(r"^/checkpoint/([^/]+)/([^/]+)/([^/]+)$")


class StandinError(RuntimeError):
    """The stand-in could not start a container or serve."""


def rfc3339_now() -> str:
    """``time.Now().Format(time.RFC3339)`` as the kubelet writes it (local time, ``Z`` for UTC)."""
    now = dt.datetime.now().astimezone().replace(microsecond=0)
    text = now.isoformat()
    return text[:-6] + "Z" if now.utcoffset() == dt.timedelta(0) else text


@dataclass
class Container:
    """One container the stand-in serves: a supervisor session in the Debian root and its workload."""

    namespace: str
    pod: str
    name: str
    exchange: Path
    process: subprocess.Popen[str]
    workload_pid: int
    script: str
    rootfs_paths: tuple[str, ...]
    image: str
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    pod_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.pod, self.name)

    def init_pid(self) -> int:
        """Host PID of the namespace's PID 1 (the supervisor): unshare's only child."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        if not children:
            raise StandinError(f"container {self.key}: its namespace has no init (supervisor exited: {self.process.poll()})")
        return int(children[0])

    def read_file(self, path: str) -> bytes:
        """A file as the container sees it (through /proc/<init>/root)."""
        return Path(f"/proc/{self.init_pid()}/root{path}").read_bytes()

    def workload_running(self) -> bool:
        """The workload's PID is alive in the container's pid namespace."""
        try:
            return Path(f"/proc/{self.init_pid()}/root/proc/{self.workload_pid}/stat").is_file()
        except (OSError, StandinError):
            return False

    def kill_workload(self) -> None:
        """SIGKILL the workload only (the container "crashes"; its supervisor stays to answer)."""
        init = self.init_pid()
        for child in Path(f"/proc/{init}/task/{init}/children").read_text().split():
            status = Path(f"/proc/{child}/status").read_text()
            nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if nspids and nspids[-1] == str(self.workload_pid):
                os.kill(int(child), 9)
                return
        raise StandinError(f"container {self.key}: workload {self.workload_pid} not found")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL to unshare takes the whole namespace down (--kill-child)
        try:
            self.process.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ValueError):
            pass


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    user: str  # "" without a client certificate
    status: int


class KubeletStandin:
    """The kubelet checkpoint API over real criu dumps (see the module docstring)."""

    def __init__(self, debian_root: Path, workdir: Path, checkpoints_dir: Path | None = None, node_name: str = "worker-1") -> None:
        self.debian_root = Path(debian_root)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir else self.workdir / "var/lib/kubelet/checkpoints"
        self.node_name = node_name
        pki_dir = self.workdir / "pki"
        self.ca: Authority = make_ca(pki_dir, "kubelet-ca", f"hcm-kubelet-standin-ca@{node_name}")
        self.serving = self.ca.issue(pki_dir, "kubelet", f"{node_name}@kubelet-standin", server=True, dns_names=("localhost", node_name),
                                     ip_addresses=(LOOPBACK,))
        self.allowed_users: set[str] = set()
        self.containers: dict[tuple[str, str, str], Container] = {}
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._serving: ServingThread | None = None
        self.base_url = ""

    # -- certificates ---------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.ca.cert

    def issue_client(self, stem: str, user: str, groups: tuple[str, ...] = (), authorized: bool = True) -> CertPair:
        """A client certificate for ``user`` from the stand-in's CA; ``authorized``: may checkpoint."""
        pair = self.ca.issue(self.workdir / "pki" / "clients", stem, user, organizations=groups, client=True)
        if authorized:
            self.allowed_users.add(user)
        return pair

    # -- containers -----------------------------------------------------------------------
    def add_container(
        self,
        namespace: str,
        pod: str,
        name: str,
        script: str = COUNTER_SCRIPT,
        rootfs_paths: Sequence[str] = (COUNTER_DIR.lstrip("/"),),
        image: str = "registry.example/hcm/counter:1.0",
        timeout: float = 60.0,
    ) -> Container:
        """Start ``script`` as container ``namespace/pod/name`` in its own namespace session.

        ``rootfs_paths`` (relative to /) are what the container writes: they go into
        ``rootfs-diff.tar``. Call from a thread that outlives the container (PR_SET_PDEATHSIG).
        """
        key = (namespace, pod, name)
        if key in self.containers:
            raise StandinError(f"container {namespace}/{pod}/{name} is already running")
        exchange = self.workdir / "containers" / ("%s_%s_%s" % key)
        shutil.rmtree(exchange, ignore_errors=True)
        (exchange / "dumps").mkdir(parents=True)
        os.mkfifo(exchange / "requests", 0o600)
        (exchange / "post-dump.sh").write_text(POST_DUMP_SCRIPT)
        (exchange / "post-dump.sh").chmod(0o755)
        process = spawn_in_root(
            self.debian_root,
            ["sh", "-c", SUPERVISOR_SCRIPT],
            binds={exchange: EXCHANGE},
            env={"HCM_WORKLOAD": script, "HCM_ROOTFS_PATHS": " ".join(rootfs_paths), "WORKLOAD_MIN_PID": str(WORKLOAD_MIN_PID)},
        )
        deadline = time.monotonic() + timeout
        ready = exchange / "ready"
        while not ready.is_file():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                out, err = process.communicate(timeout=30)
                raise StandinError(f"container {namespace}/{pod}/{name} did not start (exit {process.returncode}):\n{out}\n{err}")
            time.sleep(0.05)
        container = Container(namespace, pod, name, exchange, process, int(ready.read_text()), script, tuple(rootfs_paths), image)
        self.containers[key] = container
        return container

    def remove_container(self, namespace: str, pod: str, name: str) -> None:
        container = self.containers.pop((namespace, pod, name), None)
        if container is not None:
            container.stop()

    # -- the checkpoint itself --------------------------------------------------------------
    def checkpoint(self, container: Container, timeout: float) -> Path:
        """criu dump (leave running), then the archive in the kubelet's place; its path."""
        with container.lock:
            request_id = uuid.uuid4().hex
            dump_dir = container.exchange / "dumps" / request_id
            # The supervisor holds the FIFO open for reading and writing, so this never blocks.
            fd = os.open(container.exchange / "requests", os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, (request_id + "\n").encode())
            finally:
                os.close(fd)
            deadline = time.monotonic() + timeout
            rc_file = dump_dir / "rc"
            while not rc_file.is_file():
                if container.process.poll() is not None:
                    raise StandinError(f"the container's supervisor exited ({container.process.returncode})")
                if time.monotonic() > deadline:
                    raise StandinError(f"criu dump did not finish within the {timeout:g} s timeout")
                time.sleep(0.05)
            rc = int(rc_file.read_text().strip() or "1")
            rc_file.unlink()
            if rc != 0:
                lines = _read_text(dump_dir / "dump.log").splitlines()
                errors = [line for line in lines if "Error (" in line or "Warn " in line] or lines[-5:]
                shutil.rmtree(dump_dir, ignore_errors=True)
                raise StandinError("criu dump exited %d: %s" % (rc, " / ".join(e.strip() for e in errors[-4:])))
            when = dt.datetime.now(dt.timezone.utc)
            _write_json(dump_dir / "config.dump", self._config_dump(container, when))
            _write_json(dump_dir / "spec.dump", self._spec_dump(container))
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            archive = self.checkpoints_dir / ("checkpoint-%s_%s-%s-%s.tar" % (container.pod, container.namespace, container.name, rfc3339_now()))
            partial = archive.with_name(archive.name + ".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # every memory page: root only
            with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in ("checkpoint", "config.dump", "spec.dump", "dump.log", "stats-dump", "rootfs-diff.tar"):
                    if (dump_dir / name).exists():
                        tar.add(dump_dir / name, arcname=name)
            os.replace(partial, archive)
            shutil.rmtree(dump_dir, ignore_errors=True)
            return archive

    def _config_dump(self, container: Container, when: dt.datetime) -> dict[str, Any]:
        """checkpointctl's ``ContainerConfig`` as CRI-O writes it (lib/metadata.go)."""
        image_ref = hashlib.sha256(container.image.encode()).hexdigest()
        return {
            "id": container.container_id,
            "name": "k8s_%s_%s_%s_%s_0" % (container.name, container.pod, container.namespace, container.pod_uid),
            "rootfsImage": container.image,
            "rootfsImageRef": image_ref,
            "rootfsImageName": container.image,
            "runtime": "crun",
            "createdTime": _go_time(container.created),
            "checkpointedTime": _go_time(when),
            "restoredTime": "0001-01-01T00:00:00Z",
            "restored": False,
        }

    def _spec_dump(self, container: Container) -> dict[str, Any]:
        """A minimal OCI runtime spec of the stand-in's process, with CRI-O's annotations."""
        return {
            "ociVersion": "1.2.0",
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh", "-c", container.script],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
            },
            "root": {"path": str(self.debian_root), "readonly": False},
            "hostname": container.pod,
            "annotations": {
                "io.container.manager": "cri-o",
                "io.kubernetes.container.name": container.name,
                "io.kubernetes.pod.name": container.pod,
                "io.kubernetes.pod.namespace": container.namespace,
                "io.kubernetes.pod.uid": container.pod_uid,
                "io.kubernetes.cri-o.ContainerID": container.container_id,
                "io.kubernetes.cri-o.Metadata": json.dumps({"name": container.name}),  # the CRI ContainerMetadata; checkpointctl reads it
                "io.kubernetes.cri-o.Created": container.created.strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC"),  # Go's Time.String()
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.Image": container.image,
                "io.kubernetes.cri-o.ImageName": container.image,
            },
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
        }

    # -- HTTPS ------------------------------------------------------------------------------
    @property
    def seen(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self._seen.append(request)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.serving.cert, self.serving.key)
        context.load_verify_locations(cafile=str(self.ca.cert))
        context.verify_mode = ssl.CERT_OPTIONAL  # like the kubelet: no certificate -> 401, not a failed handshake
        return context

    def start(self) -> None:
        if self._serving is not None:
            return
        server = _TlsServer((LOOPBACK, 0), self._handler_class(), self._tls_context())
        self.base_url = f"https://{LOOPBACK}:{server.server_address[1]}"
        self._serving = ServingThread(server, "kubelet-standin")

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()
        for key in list(self.containers):
            self.remove_container(*key)

    def __enter__(self) -> KubeletStandin:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "kubelet-standin"

            def _user(self) -> str:
                cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                for rdn in (cert or {}).get("subject", ()):
                    for key, value in rdn:
                        if key == "commonName":
                            return str(value)
                return ""

            def _answer(self, status: int, body: bytes, content_type: str, user: str) -> None:
                standin._record(SeenRequest(self.command, self.path, user, status))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _text(self, status: int, text: str, user: str) -> None:
                self._answer(status, text.encode(), "text/plain; charset=utf-8", user)

            def _json(self, status: int, document: Any, user: str) -> None:
                self._answer(status, json.dumps(document).encode(), "application/json", user)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                user = self._user()
                if not user:
                    self._text(401, "Unauthorized", user)
                    return
                url = urllib.parse.urlsplit(self.path)
                match = CHECKPOINT_PATH.match(url.path)
                if not match:
                    self._text(404, "404 page not found\n", user)  # the stand-in serves nothing else
                    return
                if self.command != "POST":
                    self._text(405, "405: Method Not Allowed", user)
                    return
                if user not in standin.allowed_users:
                    self._text(403, "Forbidden (user=%s, verb=create, resource=nodes, subresource(s)=[checkpoint])\n" % user, user)
                    return
                namespace, pod, name = (urllib.parse.unquote(part) for part in match.groups())
                if not any(key[:2] == (namespace, pod) for key in standin.containers):
                    self._text(404, "pod does not exist", user)
                    return
                container = standin.containers.get((namespace, pod, name))
                if container is None:
                    self._text(404, "container %s does not exist" % name, user)
                    return
                timeouts = urllib.parse.parse_qs(url.query).get("timeout") or []
                timeout = 60.0  # stands for CRI-O's default CRI timeout
                if timeouts:
                    try:
                        timeout = float(int(timeouts[-1]))
                    except ValueError:
                        self._text(404, "cannot parse value of timeout parameter", user)
                        return
                try:
                    archive = standin.checkpoint(container, timeout)
                except (StandinError, OSError) as error:
                    self._text(500, "checkpointing of %s/%s/%s failed (%s)" % (namespace, pod, name, error), user)
                    return
                self._json(200, {"items": [str(archive)]}, user)

            do_POST = do_GET = do_PUT = do_DELETE = _handle

            def handle(self) -> None:
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError):
                    return  # e.g. a client certificate from another CA: the handshake fails
                super().handle()

            def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
                pass  # ``seen`` is the record

        return Handler


class _TlsServer(http.server.ThreadingHTTPServer):
    """HTTPS; the handshake runs in the request's thread, so a slow client blocks no other."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler], context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


def _go_time(when: dt.datetime) -> str:
    """A time as Go's encoding/json writes a time.Time (RFC 3339 with nanoseconds)."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.chmod(0o600)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
