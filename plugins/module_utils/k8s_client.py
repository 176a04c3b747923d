# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes client factory shared by every module that talks to a cluster's API server.

The client itself comes from kubernetes.core (get_api_client: kubeconfig, context, host,
token or client certificate, the K8S_AUTH_* environment variables, a cached lazy discovery),
so our modules authenticate exactly as kubernetes.core.k8s does. What this file adds is the
narrower option set our modules document and failures phrased as MigrationError.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException

    HAS_KUBERNETES_CORE = True
except ImportError:  # pragma: no cover - reported by make_k8s_client()
    HAS_KUBERNETES_CORE = False

try:
    import kubernetes.client.exceptions
    import urllib3.exceptions

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover
    HAS_KUBERNETES = False

# Ansible argument spec matching doc_fragments/kubernetes.py. The names (and the K8S_AUTH_*
# environment variables kubernetes.core reads when an option is not given) are kubernetes.core's.
K8S_ARG_SPEC: dict[str, dict[str, t.Any]] = dict(
    kubeconfig=dict(type="raw", no_log=True),
    context=dict(type="str"),
    host=dict(type="str"),
    api_key=dict(type="str", no_log=True),
    validate_certs=dict(type="bool", aliases=["verify_ssl"]),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"]),
    client_cert=dict(type="path", aliases=["cert_file"]),
    client_key=dict(type="path", aliases=["key_file"]),
)


@dataclasses.dataclass(frozen=True)
class K8sSettings:
    """How to reach one cluster's API server. Unset fields fall back to K8S_AUTH_* and ~/.kube/config."""

    kubeconfig: t.Union[str, dict, None] = dataclasses.field(default=None, repr=False)
    context: str | None = None
    host: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    validate_certs: bool | None = None
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "K8sSettings":
        return cls(**{field.name: params.get(field.name) for field in dataclasses.fields(cls)})

    def describe(self) -> str:
        """Where the client points, for messages (never a credential)."""
        if self.host:
            return "API server %s" % self.host
        source = self.kubeconfig if isinstance(self.kubeconfig, str) else (
            "an inline kubeconfig" if self.kubeconfig else os.environ.get("K8S_AUTH_KUBECONFIG", "~/.kube/config")
        )
        return "kubeconfig %s%s" % (source, " context %s" % self.context if self.context else "")


def make_k8s_client(settings: K8sSettings) -> t.Any:
    """A kubernetes.core K8SClient (``.client`` is the dynamic client, ``.configuration`` the config).

    Building it asks the API server for its version, so an unreachable server or refused
    credentials fail here, with a message, rather than in the middle of a restore.
    """
    if not HAS_KUBERNETES or not HAS_KUBERNETES_CORE:
        raise MigrationError(
            "The Python library kubernetes or the collection kubernetes.core is missing where this module runs",
            "pip install -r requirements.txt and ansible-galaxy collection install -r requirements.yml",
        )
    if isinstance(settings.kubeconfig, str) and not os.path.isfile(os.path.expanduser(settings.kubeconfig)):
        raise MigrationError(
            "The kubeconfig file %s does not exist" % settings.kubeconfig,
            "give the path of the target cluster's kubeconfig (or host and api_key)",
        )
    if bool(settings.client_cert) != bool(settings.client_key):
        raise MigrationError("Only one of client_cert and client_key is set", "give both, or neither")
    options = {key: value for key, value in dataclasses.asdict(settings).items() if value is not None}
    try:
        return get_api_client(**options)
    except urllib3.exceptions.HTTPError as err:
        raise MigrationError(
            "Could not reach the Kubernetes API server (from %s): %s" % (settings.describe(), err),
            "check that the API server is up and that the kubeconfig or host points at it",
        ) from err
    except kubernetes.client.exceptions.ApiException as err:
        raise MigrationError(
            "The Kubernetes API server (from %s) answered %s %s" % (settings.describe(), err.status, err.reason),
            "check the credentials in the kubeconfig (or api_key / client_cert) and their RBAC permissions",
        ) from err
    except (CoreException, ValueError, OSError) as err:
        raise MigrationError(
            "Could not build a Kubernetes client from %s: %s" % (settings.describe(), err),
            "check the kubeconfig and context (or host, api_key and ca_cert), or the K8S_AUTH_* variables",
        ) from err
