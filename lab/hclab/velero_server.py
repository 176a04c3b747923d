"""A real Velero server for the lab, run out of cluster as a host process, and its CLI.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. The binaries come from ``make lab-build-velero``
(lab/build-velero.sh): ``.build/lab/velero/bin/velero`` and the AWS object-store plugin alone in
``.build/lab/velero/plugins/`` (``velero server --plugin-dir`` starts every executable in that
folder as a plugin), or from ``$HCM_VELERO_DIR`` laid out the same way.

``VeleroServer`` runs ``velero server`` against a cluster's admin kubeconfig, in the namespace the
role ``velero`` installs into, with its metrics and profiler on free loopback ports and its temporary
files (the credentials files it writes for plugins) in its own work directory. It starts once the
namespace exists (the role creates it after the CRDs, as a Deployment would start after them): the
server refuses to start without its CRDs; ``start_in_background()`` starts it while the role runs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from lab.hclab.cluster import api_client
from lab.hclab.services import LocalService, ServiceError, free_port, http_request

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VELERO_DIR = REPO / ".build" / "lab" / "velero"
PLUGIN_NAME = "velero-plugin-for-aws"


def velero_dir() -> Path:
    """``$HCM_VELERO_DIR`` or ``.build/lab/velero``, checked: ``bin/velero`` and ``plugins/<plugin>``."""
    configured = os.environ.get("HCM_VELERO_DIR")
    where = Path(configured).expanduser().absolute() if configured else DEFAULT_VELERO_DIR
    for path in (where / "bin" / "velero", where / "plugins" / PLUGIN_NAME):
        if not (path.is_file() and os.access(path, os.X_OK)):
            source = "$HCM_VELERO_DIR" if configured else "the lab's Velero directory"
            raise ServiceError(
                f"{path} not found or not executable ({source}). Fix: run `make lab-build-velero` in the "
                "repository root (it builds velero and velero-plugin-for-aws from Go modules), or point "
                "HCM_VELERO_DIR at a directory with bin/velero and plugins/velero-plugin-for-aws."
            )
    return where


class VeleroServer(LocalService):
    """``velero server`` out of cluster: the real server, its controllers and the AWS plugin."""

    startup_timeout = 90.0

    def __init__(self, workdir: Path, kubeconfig: Path, namespace: str = "velero", *, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__("velero-server", workdir)
        home = velero_dir()
        self.velero = home / "bin" / "velero"
        self.plugin_dir = home / "plugins"
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.metrics_address = f"127.0.0.1:{free_port()}"
        self.argv = [
            str(self.velero),
            "server",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--plugin-dir={self.plugin_dir}",
            f"--metrics-address={self.metrics_address}",
            f"--profiler-address=127.0.0.1:{free_port()}",
            "--log-level=debug",
            "--store-validation-frequency=10s",
            *extra_args,
        ]
        self.env = self._velero_env()
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._cancelled = threading.Event()

    def _velero_env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "KUBECONFIG", "VELERO_"))}
        # Credentials files for plugins go to $TMPDIR/credentials; ~/.config/velero would add features.
        env.update(TMPDIR=str(self.workdir), HOME=str(self.workdir))
        return env

    def healthy(self) -> bool:
        try:
            status, _body = http_request("GET", f"http://{self.metrics_address}/metrics")
        except OSError:
            return False
        return status == 200

    # -- starting while the role runs -----------------------------------------------------------
    def wait_for_install(self, timeout: float = 300.0) -> None:
        """Wait until the namespace exists (the role creates it after every CRD is Established)."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(api_client(self.kubeconfig))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._cancelled.is_set():
            try:
                core.read_namespace(self.namespace)
                return
            except ApiException as error:
                if error.status != 404:
                    raise
            time.sleep(0.5)
        if self._cancelled.is_set():
            raise ServiceError("cancelled: the server was stopped before the role installed Velero")
        raise ServiceError(f"namespace {self.namespace} did not appear within {timeout:.0f}s: the role did not install Velero's CRDs")

    def start_when_installed(self, timeout: float = 300.0, attempts: int = 3) -> None:
        """``wait_for_install`` then ``start``; a start right after the CRDs may race the API's discovery: retried."""
        self.wait_for_install(timeout)
        for attempt in range(1, attempts + 1):
            try:
                self.start()
                return
            except ServiceError:
                if attempt == attempts:
                    raise
                time.sleep(2)

    def start_in_background(self, timeout: float = 300.0) -> None:
        def run() -> None:
            try:
                self.start_when_installed(timeout)
            except BaseException as error:  # pylint: disable=broad-exception-caught  # reported by join_start
                self._start_error = error

        self._starter = threading.Thread(target=run, name="velero-server-start", daemon=True)
        self._starter.start()

    def join_start(self, timeout: float = 120.0) -> None:
        """Wait for ``start_in_background``; raise what it raised."""
        if self._starter is not None:
            self._starter.join(timeout)
            if self._starter.is_alive():
                raise ServiceError(f"velero server still not started after waiting {timeout:.0f}s more")
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Also give up a start still waiting for the install."""
        if self._starter is not None and self._starter is not threading.current_thread():
            self._cancelled.set()  # start() itself calls stop() when a start fails: that is no cancel
            self._starter.join(timeout=self.startup_timeout)
        super().stop()

    # -- the CLI --------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``velero ARGS`` with this server's kubeconfig and namespace (the CLI only talks to the API server)."""
        argv = [str(self.velero), *args, f"--kubeconfig={self.kubeconfig}", f"--namespace={self.namespace}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc
