"""The Kubernetes client factory builds kubernetes.core clients and explains bad settings."""

from __future__ import annotations

import base64

import pytest
import yaml

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import K8sSettings, make_k8s_client

# Any PEM block will do: no TLS handshake ever completes in these tests.
FAKE_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "onprem", "cluster": {"server": "https://127.0.0.1:16443", "certificate-authority-data": FAKE_CA}},
                    {"name": "cloud", "cluster": {"server": "https://127.0.0.2:26443", "certificate-authority-data": FAKE_CA}},
                ],
                "users": [{"name": "admin", "user": {"token": "onprem-token-value"}}],
                "contexts": [
                    {"name": "onprem", "context": {"cluster": "onprem", "user": "admin"}},
                    {"name": "cloud", "context": {"cluster": "cloud", "user": "admin"}},
                ],
                "current-context": "onprem",
            }
        )
    )
    path.chmod(0o600)
    return path


def failure(settings):
    with pytest.raises(MigrationError) as err:
        make_k8s_client(settings)
    return err.value


# Building a client asks the server for its version. No API server runs in unit tests (the lab
# brings real ones), so these tests read which server the factory chose from its refusal.
def test_kubeconfig_context_selects_the_cluster_to_reach(kubeconfig):
    default = failure(K8sSettings(kubeconfig=str(kubeconfig)))
    assert "Could not reach the Kubernetes API server" in default.problem
    assert "127.0.0.1" in default.problem and "16443" in default.problem
    cloud = failure(K8sSettings(kubeconfig=str(kubeconfig), context="cloud"))
    assert "127.0.0.2" in cloud.problem and "26443" in cloud.problem
    assert "check that the API server is up" in cloud.fix


def test_host_and_token_need_no_kubeconfig(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    err = failure(K8sSettings(host="https://127.0.0.3:36443/", api_key="t0ken", validate_certs=False))
    assert "API server https://127.0.0.3:36443/" in err.problem and "36443" in err.problem


def test_environment_is_read_like_kubernetes_core(monkeypatch, kubeconfig):
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("K8S_AUTH_CONTEXT", "cloud")
    assert "26443" in failure(K8sSettings()).problem


def test_missing_kubeconfig_and_unknown_context_are_explained(kubeconfig, tmp_path):
    with pytest.raises(MigrationError, match="kubeconfig file .*/absent does not exist"):
        make_k8s_client(K8sSettings(kubeconfig=str(tmp_path / "absent")))
    unknown = failure(K8sSettings(kubeconfig=str(kubeconfig), context="mars"))
    assert "context mars" in unknown.problem and "check the kubeconfig and context" in unknown.fix
    with pytest.raises(MigrationError, match="Only one of client_cert and client_key"):
        make_k8s_client(K8sSettings(host="https://h:6443", client_cert="/c.pem"))


def test_credentials_stay_out_of_repr_and_messages(kubeconfig):
    settings = K8sSettings(kubeconfig={"inline": True}, api_key="very-secret-token")
    assert "very-secret-token" not in repr(settings)
    assert "very-secret-token" not in settings.describe()
