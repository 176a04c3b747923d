#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bootstrap_token
short_description: Create or delete a kubeadm bootstrap token for joining a node, checked the way kubeadm join checks it
version_added: 0.1.0
description:
  - Creates a kubeadm bootstrap token through the cluster's API, as C(kubeadm token create) does
    it, without a shell on a control-plane host. The token is the Secret
    C(kube-system/bootstrap-token-<id>) of type C(bootstrap.kubernetes.io/token) with a random
    id (6 characters) and secret (16 characters) of C([a-z0-9]), an RFC 3339 C(expiration), the
    usages C(authentication) and C(signing), the groups O(groups) in C(auth-extra-groups) and a
    C(description).
  - A token lives at most one hour (O(ttl)); the API server's tokencleaner deletes it when it expires.
  - Returns the token, the CA certificate hash (C(sha256:<hex>) of the CA's SubjectPublicKeyInfo,
    read from the kubeconfig in C(kube-public/cluster-info), the value of
    C(kubeadm join --discovery-token-ca-cert-hash)) and the API server endpoint that cluster-info names.
  - With O(wait_for_signature), waits until the bootstrapsigner controller has signed
    C(kube-public/cluster-info) for the token (C(jws-kubeconfig-<id>), an HS256 detached JWS keyed
    by the token secret) and checks that signature as C(kubeadm join) does. With O(verify_discovery),
    it then reads cluster-info anonymously from the server it names, over TLS checked against the
    CA it publishes, exactly as a joining node's discovery does. A token created by a run that then
    fails these checks is deleted again.
  - With O(run_id), the token is labelled C(migration.hybridcloud.io/run-id) and a later run with
    the same O(run_id) reuses it (C(changed=false)) while it has at least O(reuse_min_ttl) left and
    the same O(groups); its secret is read back from the Secret.
  - O(state=absent) deletes the token named by O(token_id) or O(token), or every token of O(run_id).
  - The task result holds the token, so its display is hidden as with C(no_log=true) (the
    registered variable keeps every value). The token never appears in messages or errors.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  state:
    description:
      - V(present) creates a token (or reuses the one of O(run_id)); V(absent) deletes tokens.
    type: str
    choices: [present, absent]
    default: present
  run_id:
    description:
      - Identifies the tokens of one migration run (a Kubernetes label value, at most 63 characters).
      - With O(state=present), a still valid token of the run is reused instead of making a new one.
      - With O(state=absent) and neither O(token_id) nor O(token), every token of the run is deleted.
    type: str
  ttl:
    description:
      - How long the new token is valid, as seconds or a duration such as V(30m), V(1h) or V(1h0m0s).
      - At least V(1m), at most V(1h); longer is refused.
      - The expiration is computed from the API server's clock (its C(Date) header), by which tokens expire.
    type: str
    default: 1h
  reuse_min_ttl:
    description:
      - With O(run_id), reuse a token of the run only while it has at least this much time left;
        otherwise a new one is made. Must be shorter than O(ttl).
      - If not set, half of O(ttl).
    type: str
  description:
    description:
      - The token's human-readable description (C(kubeadm token list) shows it).
      - Defaults to a text naming this module and O(run_id).
    type: str
  groups:
    description:
      - Extra groups a node authenticating with the token gets (C(auth-extra-groups)). Each must
        match C(system:bootstrappers:[a-z0-9:-]*[a-z0-9]).
      - The default is the group kubeadm's RBAC rules for joining nodes are bound to.
    type: list
    elements: str
    default: ['system:bootstrappers:kubeadm:default-node-token']
  wait_for_signature:
    description:
      - Wait until C(kube-public/cluster-info) carries a valid signature for the token, as
        C(kubeadm join) waits for it, and fail after O(wait_timeout) seconds.
      - When false, the result's RV(signed) says whether it was signed already.
    type: bool
    default: true
  verify_discovery:
    description:
      - After the signature, read cluster-info anonymously from the server it names (TLS checked
        against its CA) and check it again, the way a joining node's discovery does. This needs
        anonymous read access to cluster-info, which C(kubeadm init) sets up.
      - Set it to false when this host cannot reach that server the way new nodes do.
      - Only with O(wait_for_signature).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the signature.
    type: int
    default: 60
  token_id:
    description:
      - With O(state=absent), the id of the token to delete (the 6 characters before the dot).
    type: str
  token:
    description:
      - With O(state=absent), the token to delete, as C(<id>.<secret>).
    type: str
extends_documentation_fragment:
  - hybridcloud.migration.kubernetes
attributes:
  check_mode:
    support: full
    description:
      - Reports the token it would create or reuse and the CA hash; creates and deletes nothing.
        The token itself is not returned in check mode.
  diff_mode:
    support: none
    description: Not supported.
notes:
  - The credentials need to get, list, create and delete Secrets in C(kube-system) and get
    ConfigMaps in C(kube-public).
  - Needs the bootstrapsigner and tokencleaner controllers of kube-controller-manager and the
    C(kube-public/cluster-info) ConfigMap, as C(kubeadm init) sets them up.
seealso:
  - name: kubeadm token
    description: The kubeadm command that manages the same tokens.
    link: https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-token/
  - name: Authenticating with bootstrap tokens
    description: The Secret format and the cluster-info signatures.
    link: https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/
"""

EXAMPLES = r"""
- name: A join token for this migration run
  hybridcloud.migration.bootstrap_token:
    kubeconfig: "{{ target_kubeconfig }}"
    run_id: "{{ migration_run_id }}"
    ttl: 30m
  register: join

- name: Join the new worker, pinning the cluster CA
  ansible.builtin.command:
    argv:
      - kubeadm
      - join
      - "{{ join.api_server_endpoint }}"
      - --token
      - "{{ join.token }}"
      - --discovery-token-ca-cert-hash
      - "{{ join.ca_cert_hash }}"
  no_log: true
  delegate_to: "{{ new_worker }}"
  changed_when: true

- name: Delete the run's tokens once the node has joined
  hybridcloud.migration.bootstrap_token:
    kubeconfig: "{{ target_kubeconfig }}"
    state: absent
    run_id: "{{ migration_run_id }}"
"""

RETURN = r"""
token:
  description:
    - The bootstrap token, C(<id>.<secret>), for C(kubeadm join --token).
    - Not returned in check mode. The task's displayed result is hidden because of it.
  returned: when O(state=present), outside check mode
  type: str
token_id:
  description: The token's id (public; C(kubeadm token list) shows it). Null in check mode when a token would be created.
  returned: when O(state=present)
  type: str
  sample: 8qtx0c
secret_name:
  description: Name of the token's Secret in C(kube-system).
  returned: when O(state=present) and a token exists
  type: str
  sample: bootstrap-token-8qtx0c
expiration:
  description: When the token expires (RFC 3339, UTC).
  returned: when O(state=present)
  type: str
  sample: "2026-11-25T20:15:00Z"
expires_in:
  description: Seconds the token had left when the module ran, by the API server's clock.
  returned: when O(state=present) and a token exists
  type: int
reused:
  description: True when a token of O(run_id) was reused rather than created.
  returned: when O(state=present)
  type: bool
ca_cert_hash:
  description:
    - C(sha256:<hex>) of the SubjectPublicKeyInfo of the CA certificate published in
      C(kube-public/cluster-info), for C(--discovery-token-ca-cert-hash) or a JoinConfiguration's C(caCertHashes).
  returned: when O(state=present)
  type: str
  sample: sha256:2f6b1c0a27f0e9b6f9c4d5a1e7c3b8a9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5
ca_cert_hashes:
  description: The hash of every certificate in the published CA bundle (usually one, the same as RV(ca_cert_hash)).
  returned: when O(state=present)
  type: list
  elements: str
server:
  description: The API server URL that cluster-info publishes.
  returned: when O(state=present)
  type: str
  sample: https://10.0.0.10:6443
api_server_endpoint:
  description: The same server as C(host:port), as C(kubeadm join) and a JoinConfiguration's C(apiServerEndpoint) take it.
  returned: when O(state=present)
  type: str
  sample: 10.0.0.10:6443
signed:
  description: Whether cluster-info carries a valid signature for the token (always true with O(wait_for_signature) outside check mode).
  returned: when O(state=present)
  type: bool
discovery_verified:
  description: Whether cluster-info was read anonymously from RV(server) and checked as a joining node does (O(verify_discovery)).
  returned: when O(state=present)
  type: bool
run_id:
  description: The O(run_id) given.
  returned: when O(state=present)
  type: str
deleted:
  description: Ids of the tokens deleted (in check mode, that would be deleted).
  returned: when O(state=absent)
  type: list
  elements: str
msg:
  description: What was done, in a sentence.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils import bootstrap_token as bt
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import (
    K8S_ARG_SPEC,
    K8sSettings,
    make_k8s_client,
)


def present_request(params: dict, run_id: str | None) -> bt.PresentRequest:
    if params["token_id"] or params["token"]:
        raise MigrationError(
            "token_id and token are for state=absent; state=present always draws a new random token",
            "leave them out, and use run_id to reuse a run's token",
        )
    ttl = bt.parse_duration(params["ttl"], "ttl")
    reuse_min_ttl = ttl // 2 if params["reuse_min_ttl"] is None else bt.parse_duration(params["reuse_min_ttl"], "reuse_min_ttl")
    bt.check_ttl(ttl, reuse_min_ttl)
    if params["wait_timeout"] < 1:
        raise MigrationError("wait_timeout %d is not a positive number of seconds" % params["wait_timeout"], "give at least 1")
    return bt.PresentRequest(
        ttl=ttl,
        reuse_min_ttl=reuse_min_ttl,
        groups=tuple(bt.check_groups(params["groups"])),
        description=params["description"] if params["description"] is not None else bt.default_description(run_id),
        run_id=run_id,
        wait_for_signature=params["wait_for_signature"],
        verify_discovery=params["verify_discovery"],
        wait_timeout=params["wait_timeout"],
    )


def connect(params: dict) -> bt.BootstrapTokens:
    settings = K8sSettings.from_params(params)
    return bt.BootstrapTokens(make_k8s_client(settings).client.client, settings.describe())


def run(params: dict, check_mode: bool) -> dict:
    """Options are checked before the cluster is asked anything."""
    run_id = bt.check_run_id(params["run_id"]) if params["run_id"] is not None else None
    if params["state"] == "present":
        request = present_request(params, run_id)
        return bt.ensure_present(connect(params), request, check_mode)
    token_id = bt.parse_token(params["token"]).id if params["token"] else params["token_id"]
    if token_id is not None:
        bt.check_token_id(token_id)
    return bt.ensure_absent(connect(params), token_id, run_id, check_mode)


def main() -> None:
    argument_spec = dict(
        K8S_ARG_SPEC,
        state=dict(type="str", choices=["present", "absent"], default="present"),
        run_id=dict(type="str"),
        ttl=dict(type="str", default="1h"),
        reuse_min_ttl=dict(type="str"),
        description=dict(type="str"),
        groups=dict(type="list", elements="str", default=[bt.DEFAULT_GROUP]),
        wait_for_signature=dict(type="bool", default=True),
        verify_discovery=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=60),
        token_id=dict(type="str", no_log=False),
        token=dict(type="str", no_log=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("token_id", "token")],
        required_if=[("state", "absent", ("token_id", "token", "run_id"), True)],
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
