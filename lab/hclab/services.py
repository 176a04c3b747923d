"""The lab's real local services (S3, the EC2 API, etcd), each on a free loopback port.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. Every service is a child process in its own process
group, writes its output to a log file in its own work directory, is health-checked before it
is handed out, and can be stopped and restarted on the same port with the same data, so tests
can simulate an outage against the real program rather than a mock.

Used by the demo (demo/) and the tests' fixtures (tests/helpers/fixtures_services.py)::

    with S3Server() as s3:
        s3.create_bucket("my-bucket")
        s3.client().put_object(Bucket="my-bucket", Key="k", Body=b"v")
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "EtcdServer",
    "LocalService",
    "MotoServer",
    "S3Server",
    "ServiceError",
    "find_binary",
    "free_port",
]

_LOOPBACK = "127.0.0.1"
# Loopback health checks must never go through an HTTP proxy from the environment.
_URL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Services still running when the interpreter exits (e.g. a crashed test run).
_RUNNING: set[LocalService] = set()


class ServiceError(RuntimeError):
    """A local service could not be found, started or made healthy."""


def free_port(host: str = _LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, env_var: str | None = None, fallbacks: tuple[str, ...] = ()) -> str:
    """Locate an executable: ``$env_var``, next to ``sys.executable`` (the venv), PATH, fallbacks."""
    if env_var and os.environ.get(env_var):
        candidates = [os.environ[env_var]]  # an explicit choice: no silent fallback
    else:
        candidates = [str(Path(sys.executable).parent / name)]
        on_path = shutil.which(name)
        candidates += [on_path] if on_path else []
        candidates += fallbacks
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    hint = f" (or set {env_var})" if env_var else ""
    raise ServiceError(f"{name}: executable not found; tried {candidates}{hint}")


def http_request(
    method: str, url: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """Plain HTTP request without proxies; returns (status, body), also for 4xx/5xx."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with _URL_OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


class LocalService:
    """A real server process of the lab: start, health-check, stop, restart, logs.

    Subclasses set ``argv`` (and ``env`` if needed) in ``__init__`` with ports
    chosen once, so ``restart()`` comes back on the same port and data, and
    implement ``healthy()``. ``workdir`` holds the log and any data; it is a
    fresh temp dir unless given (pytest fixtures pass a ``tmp_path`` one).
    """

    startup_timeout: float = 30.0
    stop_timeout: float = 10.0

    def __init__(self, name: str, workdir: Path | str | None = None) -> None:
        self.name = name
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"hcm-{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self.argv: list[str] = []
        self.env: dict[str, str] = dict(os.environ)
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- to implement -------------------------------------------------
    def healthy(self) -> bool:
        """True once the service answers like a working instance. Must not raise."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Launch the process and wait until ``healthy()``; raise with the log tail if not."""
        if self.running:
            return
        self._mark(f"starting: {' '.join(self.argv)}")
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,  # own process group: stop() signals the whole group
            )
        _RUNNING.add(self)
        deadline = began + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise ServiceError(self._failure(f"exited with code {code} during startup"))
            if self.healthy():
                self.startup_seconds = time.monotonic() - began
                self._mark(f"healthy after {self.startup_seconds:.2f}s")
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(self._failure(f"not healthy after {self.startup_timeout:.0f}s"))
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the process group, wait, then SIGKILL. Idempotent; tests use it as an outage."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self._mark("stopping (SIGTERM)")
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._mark("still alive, SIGKILL")
                self._signal_group(process, signal.SIGKILL)
                process.wait(timeout=self.stop_timeout)
            self._mark(f"stopped (exit code {process.returncode})")
        _RUNNING.discard(self)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    # -- logs -----------------------------------------------------------
    def logs(self) -> str:
        """The whole log (this service's output plus ``=== hcm:`` harness markers)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the log, read from the end of the file."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 1024 * lines))  # ~1 KiB a line is plenty
                data = log.read()
        except FileNotFoundError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # -- context manager --------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} running={self.running} log={self.log_path}>"

    # -- internals --------------------------------------------------------
    def _mark(self, message: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"=== hcm: {time.strftime('%H:%M:%S')} {self.name} {message}\n")

    def _failure(self, what: str) -> str:
        return f"{self.name} {what}; log {self.log_path}, last lines:\n{self.log_tail(40)}"

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_RUNNING):
        service.stop()


class S3Server(LocalService):
    """``rclone serve s3`` over a local folder: a real S3 API (SigV4, multipart) on loopback.

    Buckets are the top-level folders of ``data_dir``; objects are plain files,
    so tests can look at them on disk; seed objects through the S3 API, since rclone's
    directory cache (default 5 min) may hide files written straight to disk. Turning the
    cache off (``--dir-cache-time=0s``) made PUTs into new folders hang for seconds at
    random (seen with rclone 1.75.2), so it stays on. Path-style addressing only.

    rclone does not check the region: it verifies the signature with whatever
    region the client signed for, so ``region`` is what clients should use.

    boto3 >= 1.36 adds CRC32 checksums to PUTs by default. Over plain http
    botocore sends them as an ``x-amz-checksum-crc32`` header (the aws-chunked
    trailer form is only used over https); rclone accepts that (it does not
    verify it), so clients need no special config. If a client must not send
    them (e.g. a server that refuses them), set
    ``botocore.config.Config(request_checksum_calculation="when_required",
    response_checksum_validation="when_required")``.

    Note rclone refuses unsigned ``x-amz-*`` headers: anything between client
    and server must forward headers (and ``Host``) unchanged.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        access_key: str = "hcm-test-access",
        secret_key: str = "hcm-test-secret-key",
        region: str = "us-east-1",
        port: int | None = None,
        name: str = "rclone-s3",
    ) -> None:
        super().__init__(name, workdir)
        if len(access_key) < 3 or len(secret_key) < 3:
            # rclone starts with them but answers every request InvalidAccessKeyId.
            raise ValueError("rclone rejects auth keys shorter than 3 characters")
        self.host = _LOOPBACK
        self.port = port or free_port(self.host)
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.argv = [
            find_binary("rclone", "HCM_RCLONE_BIN"),
            *("serve", "s3", str(self.data_dir)),
            f"--addr={self.host}:{self.port}",
            f"--auth-key={access_key},{secret_key}",
            "--config=/dev/null",  # no user rclone.conf, no "config not found" notice
            "--log-level=DEBUG",  # logs each bucket/object operation: what the server saw
        ]
        self._health_client: Any = None

    def client(self, endpoint_url: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client (path-style) with this server's keys; ``config`` goes to botocore Config.

        ``endpoint_url`` points it elsewhere, e.g. at a ``FaultProxy`` in front of this server.
        """
        import boto3
        from botocore.config import Config

        s3_config = {"addressing_style": "path", **config.pop("s3", {})}
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3=s3_config, **config),
        )

    def healthy(self) -> bool:
        """An authenticated ListBuckets succeeds (so the keys work, not just the port)."""
        if self._health_client is None:
            self._health_client = self.client(
                connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1}
            )
        try:
            self._health_client.list_buckets()
        except Exception:  # connection refused, auth error, ...: not healthy yet
            return False
        return True

    def create_bucket(self, name: str) -> str:
        """Create a bucket through the S3 API and return its name."""
        self.client().create_bucket(Bucket=name)
        return name


class MotoServer(LocalService):
    """``moto_server``: AWS APIs (EC2, IAM, STS, ...) answered from memory over real HTTP.

    Any credentials are accepted; ``client()`` uses dummy ones. State lives in
    the process, so ``restart()`` starts empty; ``reset()`` empties it in place.
    """

    startup_timeout = 60.0  # moto imports a lot before it listens

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        region: str = "us-east-1",
        port: int | None = None,
        name: str = "moto",
    ) -> None:
        super().__init__(name, workdir)
        self.host = _LOOPBACK
        self.port = port or free_port(self.host)
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.region = region
        self.access_key = "testing"
        self.secret_key = "testing"
        self.argv = [find_binary("moto_server"), "-H", self.host, "-p", str(self.port)]

    def healthy(self) -> bool:
        try:
            status = http_request("GET", f"{self.endpoint_url}/moto-api/")[0]
        except OSError:
            return False
        return status == 200

    def reset(self) -> None:
        """Forget every resource moto holds (all services, all regions)."""
        status, body = http_request("POST", f"{self.endpoint_url}/moto-api/reset", body=b"")
        if status != 200:
            raise ServiceError(f"moto reset answered {status}: {body[:200]!r}")

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this server with dummy credentials."""
        import boto3

        kwargs.setdefault("region_name", self.region)
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            **kwargs,
        )


class EtcdServer(LocalService):
    """A single-member etcd (Debian ``etcd-server``) with its data in ``workdir``.

    A real etcd for code that stores state or locks in it; ``restart()`` keeps
    the data dir, so keys survive an outage like they would in production.
    The binary is ``$HCM_ETCD_BIN``, else ``etcd`` on PATH / ``/usr/bin/etcd``.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        name: str = "etcd",
        tls: bool = False,
        binary: str | None = None,
        etcdctl_binary: str | None = None,
    ) -> None:
        super().__init__(name, workdir)
        self.host = _LOOPBACK
        self.client_port = client_port or free_port(self.host)
        self.peer_port = peer_port or free_port(self.host)
        self.tls = tls
        self.endpoint = f"{'https' if tls else 'http'}://{self.host}:{self.client_port}"
        self._etcdctl = etcdctl_binary
        self.peer_url = f"http://{self.host}:{self.peer_port}"
        self.data_dir = self.workdir / "data"
        etcd = binary or _find_debian_binary("etcd", "HCM_ETCD_BIN")
        self.argv = [
            etcd,
            f"--name={name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={name}={self.peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=hcm-test-{self.client_port}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if tls:
            self._make_certificates()
        # etcd refuses to start when an ETCD_* variable shadows a flag.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}

    def _make_certificates(self) -> None:
        """Client TLS as kubeadm sets etcd up: a CA, a serving cert, and client certs required."""
        from lab.hclab.pki import make_ca  # pylint: disable=import-outside-toplevel  # only TLS members need it

        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        authority = make_ca(pki, "ca", "etcd-ca")
        server = authority.issue(pki, "server", "etcd-server", server=True, client=True, ip_addresses=(self.host,))
        client = authority.issue(pki, "client", "etcd-client", client=True)
        self.ca_file, self.client_cert, self.client_key = str(authority.cert), str(client.cert), str(client.key)
        self.argv += [f"--cert-file={server.cert}", f"--key-file={server.key}", f"--trusted-ca-file={authority.cert}", "--client-cert-auth"]

    def healthy(self) -> bool:
        if self.tls:
            return self.etcdctl("endpoint", "health", check=False).returncode == 0
        try:
            status, body = http_request("GET", f"{self.endpoint}/health")
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError):
            return False

    def etcdctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` (API v3) against this member; ``$HCM_ETCDCTL_BIN`` overrides."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
        env["ETCDCTL_API"] = "3"
        argv = [self._etcdctl or _find_debian_binary("etcdctl", "HCM_ETCDCTL_BIN"), "--endpoints", self.endpoint]
        if self.tls:
            argv += ["--cacert", self.ca_file, "--cert", self.client_cert, "--key", self.client_key]
        return subprocess.run(
            [*argv, *args], env=env, capture_output=True, text=True, timeout=30, check=check
        )


def _find_debian_binary(name: str, env_var: str) -> str:
    try:
        return find_binary(name, env_var, fallbacks=(f"/usr/bin/{name}",))
    except ServiceError as err:
        raise ServiceError(
            f"{err}; install it with: apt-get install -y etcd-server etcd-client"
        ) from None
