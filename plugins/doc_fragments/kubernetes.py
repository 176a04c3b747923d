# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the Kubernetes client factory (plugins/module_utils/k8s_client.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to the cluster's kubeconfig, or the kubeconfig itself as a dictionary.
      - If not set, E(K8S_AUTH_KUBECONFIG) is read, then C(~/.kube/config) (or the in-cluster
        service account, when running in a pod).
    type: raw
  context:
    description:
      - Context of the kubeconfig to use. If not set, E(K8S_AUTH_CONTEXT) is read, then the
        kubeconfig's current context.
    type: str
  host:
    description:
      - URL of the API server, for example V(https://10.0.0.10:6443), to use instead of a kubeconfig
        (with O(api_key) or O(client_cert)). If not set, E(K8S_AUTH_HOST) is read.
    type: str
  api_key:
    description:
      - Bearer token for the API server. If not set, E(K8S_AUTH_API_KEY) is read.
    type: str
  validate_certs:
    description:
      - Check the API server's certificate. If not set, E(K8S_AUTH_VERIFY_SSL) is read; the default is to check.
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description:
      - CA certificate the API server's certificate must chain to. If not set, E(K8S_AUTH_SSL_CA_CERT) is read.
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description:
      - Client certificate to authenticate with. If not set, E(K8S_AUTH_CERT_FILE) is read.
    type: path
    aliases: [cert_file]
  client_key:
    description:
      - Key of O(client_cert). If not set, E(K8S_AUTH_KEY_FILE) is read.
    type: path
    aliases: [key_file]
requirements:
  - kubernetes >= 31.0.0
  - the kubernetes.core collection
notes:
  - The same options and environment variables as M(kubernetes.core.k8s), so an existing setup works unchanged.
  - Kubeconfigs and tokens never appear in task output; keep kubeconfig files mode 0600.
"""
