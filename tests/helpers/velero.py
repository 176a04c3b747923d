"""Velero in the tests: the lab's Velero server as a fixture, an https S3 server, and clean-up.

``velero_server`` yields a ``VeleroServer`` (lab/hclab/velero_server.py) for the lab's onprem
cluster, not started; ``start_in_background()`` lets a test start it while the role runs.
``tls_s3_server`` is an S3 server over https with a private CA. ``remove_velero`` and
``remove_namespace`` leave the shared lab as a test found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.hclab.client import Lab
from lab.hclab.pki import make_ca
from lab.hclab.services import S3Server
from lab.hclab.velero_server import VeleroServer, velero_dir
from tests.helpers.wait import wait_until

__all__ = ["TlsS3Server", "VeleroServer", "ignore_missing", "remove_namespace", "remove_velero", "tls_s3_server", "velero_dir", "velero_server"]


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
