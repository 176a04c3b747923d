"""A real Velero server for the lab, run out of cluster as a host process, and its CLI.

The binaries come from ``make lab-build-velero`` (lab/build-velero.sh): ``.build/lab/velero/bin/velero``
and the AWS object-store plugin alone in ``.build/lab/velero/plugins/`` (``velero server --plugin-dir``
starts every executable in that folder as a plugin), or from ``$HCM_VELERO_DIR`` laid out the same way.

``VeleroServer`` runs ``velero server`` against a cluster's admin kubeconfig, in the namespace the
role ``velero`` installs into, with its metrics and profiler on free loopback ports and its temporary
files (the credentials files it writes for plugins) in its own work directory. It starts once the
namespace exists (the role creates it after the CRDs, as a Deployment would start after them): the
server refuses to start without its CRDs. The ``velero_server`` fixture yields one for the lab's
onprem cluster, not started; ``start_in_background()`` lets a test start it while the role runs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.hclab.cluster import api_client
from lab.hclab.pki import make_ca
from tests.helpers.fixtures_lab import Lab
from tests.helpers.services import LocalService, S3Server, ServiceError, free_port, http_request
from tests.helpers.wait import wait_until

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


class TlsS3Server(S3Server):
    """``rclone serve s3`` over https with a certificate of a private CA (``ca_file``), for CA-bundle tests."""

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        kwargs.setdefault("name", "rclone-s3-tls")
        super().__init__(workdir, **kwargs)
        authority = make_ca(self.workdir / "pki", "ca", "hcm test S3 CA")
        pair = authority.issue(self.workdir / "pki", "server", "127.0.0.1", server=True, ip_addresses=(self.host,))
        self.ca_file = authority.cert
        self.endpoint_url = f"https://{self.host}:{self.port}"
        self.argv += [f"--cert={pair.cert}", f"--key={pair.key}"]

    def client(self, endpoint_url: str | None = None, **config: Any) -> Any:
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        s3_config = {"addressing_style": "path", **config.pop("s3", {})}
        return boto3.client("s3", endpoint_url=endpoint_url or self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region, verify=str(self.ca_file),
                            config=Config(s3=s3_config, **config))


# -- cleaning up after a test, so the shared lab is left as it was ------------------------------

def client_core(lab: Lab, cluster: str) -> Any:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    return client.CoreV1Api(lab.api(cluster))


def client_ext(lab: Lab, cluster: str) -> Any:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    return client.ApiextensionsV1Api(lab.api(cluster))


def ignore_missing(delete: Any) -> None:
    from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

    try:
        delete()
    except ApiException as error:
        if error.status != 404:
            raise


def remove_namespace(lab: Any, name: str, cluster: str = "onprem") -> None:
    ignore_missing(lambda: client_core(lab, cluster).delete_namespace(name))


def remove_velero(lab: Any, cluster: str) -> None:
    """What the role created: the namespace (and all in it), the cluster role binding, the CRDs."""
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    remove_namespace(lab, "velero", cluster)
    ignore_missing(lambda: client.RbacAuthorizationV1Api(lab.api(cluster)).delete_cluster_role_binding("velero"))
    ignore_missing(lambda: client_ext(lab, cluster).delete_collection_custom_resource_definition(label_selector="component=velero"))
    # The namespace goes away asynchronously; the next install must not meet it Terminating.
    wait_until("namespace velero to be deleted", lambda: not [
        ns for ns in client_core(lab, cluster).list_namespace().items if ns.metadata.name == "velero"], 120, interval=1)


@pytest.fixture(scope="module")
def velero_server(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VeleroServer]:
    """A ``VeleroServer`` for the lab's onprem cluster, namespace ``velero``; not started (see the module doc)."""
    server = VeleroServer(tmp_path_factory.mktemp("velero-server"), lab.kubeconfig("onprem"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsS3Server]:
    """An https S3 server whose certificate only ``ca_file`` vouches for."""
    with TlsS3Server(tmp_path_factory.mktemp("s3-tls")) as server:
        yield server
