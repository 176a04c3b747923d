#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_plan
short_description: Plan the migration of a failed node's workloads from its backups
version_added: 0.1.0
description:
  - Reads the source cluster's backup catalog, the latest complete Velero backup (scope C(_velero)) and the failed node's latest
    entry (local data, checkpoints), and streams the Velero tarballs straight from S3, checked against their recorded sha256,
    so the target cluster needs no Velero.
  - "Builds the plan: the pods bound to the node and their owners (ReplicaSet to Deployment, StatefulSet, Job to CronJob, bare
    pods), leaving out DaemonSets and static pods (each with the reason), and the share of each workload that moves (see
    O(share_policy)); the objects they
    depend on (namespaces, CRDs, ServiceAccounts and RBAC, ConfigMaps, Secrets, PVCs and PVs, Services, NetworkPolicies,
    PodDisruptionBudgets, HPAs); the transforms (server-set fields stripped, local PVs re-homed to O(target_node), pins to the
    dead node dropped, storage class, image registry and namespace maps, workloads held at 0 replicas); the stages in
    dependency order, the scale-up and the local data and checkpoints to restore."
  - The plan holds no Secret values. Each Secret of its stages keeps its metadata and type; its keys and the Velero backups that
    hold its values are listed under the plan's C(secret_data), and M(hybridcloud.migration.ordered_restore) reads the values
    from there just before applying. So neither this module's result, the tasks the plan is passed to, nor the saved plan show
    a Secret's values.
  - Saves the plan as JSON under C(<plans_prefix>/<cluster>/<run_id>/plan.json). A re-run with the same O(run_id) returns the
    saved plan unchanged (so an interrupted migration resumes with the plan it started with) unless O(replan=true).
  - Refuses when there is no complete backup, and when a backup is older than O(max_backup_age) unless O(accept_old_backup=true).
  - "The share: the scheduler spreads replicas over nodes, so the dead node usually ran only part of a workload. With O(source)
    and a source cluster that answers, the node is first marked out of service (the taint
    C(node.kubernetes.io/out-of-service=nodeshutdown:NoExecute) of Kubernetes' non-graceful node shutdown: its pods are
    force-deleted and replaced at once, instead of after the 300 s toleration), the source gets O(reschedule_grace) to place the
    replacements, and what it could not place is the share that moves: Deployment and ReplicaSet replicas, StatefulSet ordinals
    (a range at one end, through C(spec.ordinals.start)), Jobs and CronJobs whole. Without an answer, the share is what the backup
    saw on the node. Each C(selected) entry says in C(share) what moves, what stays and why; C(left_out) lists the related
    objects that do not move, with the reason."
  - In check mode nothing is tainted and nothing waited for; the share is estimated from the pods' state and the live nodes'
    free capacity (requests against allocatable, taints, node selectors and node affinity).
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  cluster:
    description: Name of the source cluster in the catalog.
    type: str
    required: true
  failed_node:
    description: Name of the failed node, as Kubernetes knew it.
    type: str
    required: true
  run_id:
    description:
      - Id of this migration (a label value; at most 63 letters, digits, C(-), C(_), C(.)). Objects the restore creates carry it.
      - Re-running with the same id resumes; a new id plans anew.
    type: str
    required: true
  target_node:
    description: Name of the new node; local PVs are re-homed to it and pods with hostPath data are pinned to it.
    type: str
    default: ""
  plans_prefix:
    description: Key prefix of saved plans in O(bucket).
    type: str
    default: migrations
  max_backup_age:
    description: Refuse backups older than this (for example V(1d), V(6h)); empty accepts any age.
    type: str
  accept_old_backup:
    description: Use backups older than O(max_backup_age) anyway; the plan warns.
    type: bool
    default: false
  require_node_backup:
    description: Refuse when the node has no complete backup of its local data and checkpoints (false moves the workloads without them).
    type: bool
    default: true
  replan:
    description: Build and save a new plan even when this run id has one.
    type: bool
    default: false
  share_policy:
    description:
      - What moves of a workload that had pods on the failed node, per kind (V(Deployment)) or per workload
        (V(StatefulSet/shop/db)); a workload's annotation C(migration.hybridcloud.io/share-policy) comes between the two.
      - V(share) (the default for every kind) moves the share the source cannot run; V(whole) moves every replica and the
        source keeps none; V(skip) moves nothing.
    type: dict
    default: {}
  source:
    description:
      - How to reach the source cluster's API server, with the names and C(K8S_AUTH_*) fallbacks of M(kubernetes.core.k8s).
      - When given and it answers, the shares are decided from the live source (see the description); when it does not answer,
        from the backup, with a warning. Leave it out when the source site is down.
      - It needs get and list on nodes, pods, Deployments, ReplicaSets, StatefulSets, Jobs and CronJobs, and patch on nodes.
    type: dict
    suboptions:
      kubeconfig:
        description: Path to the source cluster's kubeconfig, or the kubeconfig itself as a dictionary.
        type: raw
      context:
        description: Context of the kubeconfig to use.
        type: str
      host:
        description: URL of the API server, to use instead of a kubeconfig (with O(source.api_key) or O(source.client_cert)).
        type: str
      api_key:
        description: Bearer token for the API server.
        type: str
      validate_certs:
        description: Check the API server's certificate.
        type: bool
        aliases: [verify_ssl]
      ca_cert:
        description: CA certificate the API server's certificate must chain to.
        type: path
        aliases: [ssl_ca_cert]
      client_cert:
        description: Client certificate to authenticate with.
        type: path
        aliases: [cert_file]
      client_key:
        description: Key of O(source.client_cert).
        type: path
        aliases: [key_file]
  reschedule_grace:
    description: How long the source gets to place the dead node's replacement pods before what is left is the share (V(20s), V(1m)).
    type: str
    default: 20s
  out_of_service:
    description: Mark the failed node out of service in the source (only when it is not Ready). V(false) waits for the source as it is.
    type: bool
    default: true
  storage_class_map:
    description: Source storage class name to target storage class name.
    type: dict
    default: {}
  image_registry_map:
    description: Image prefix to its replacement (for example C(registry.onprem.example.net/) to C(123456789012.dkr.ecr.eu-central-1.amazonaws.com/)).
    type: dict
    default: {}
  namespace_map:
    description: Source namespace to target namespace; every reference is rewritten.
    type: dict
    default: {}
  include_custom:
    description: Custom resources to carry as well, as C(Kind.group/namespace/name) strings.
    type: list
    elements: str
    default: []
  exclude_namespaces:
    description: Namespaces whose workloads never move.
    type: list
    elements: str
    default: [kube-system, kube-public, kube-node-lease, velero]
  pin_host_path_pods:
    description: Pin pods whose hostPath data is restored to O(target_node).
    type: bool
    default: true
extends_documentation_fragment:
  - hybridcloud.migration.s3
  - hybridcloud.migration.catalog
attributes:
  check_mode:
    support: full
    description: Builds and returns the plan (or the saved one) and saves nothing.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.ordered_restore
  - module: hybridcloud.migration.velero_catalog
"""

EXAMPLES = r"""
- name: Plan the evacuation of worker-3
  hybridcloud.migration.migration_plan:
    endpoint_url: https://s3.backup.example.net
    bucket: dr-backups
    cluster: onprem
    failed_node: worker-3
    run_id: worker-3-to-aws
    target_node: aws-worker-3
    max_backup_age: 1d
    image_registry_map:
      registry.onprem.example.net/: 123456789012.dkr.ecr.eu-central-1.amazonaws.com/
    source:
      kubeconfig: /etc/hybridcloud/onprem.kubeconfig
    reschedule_grace: 30s
    share_policy:
      StatefulSet/shop/ledger: skip
  register: migration

- name: Show what moves
  ansible.builtin.debug:
    msg: "{{ migration.summary }}"
"""

RETURN = r"""
plan:
  description:
    - The plan (see the collection's docs for its format); C(stages) hold the manifests in apply order.
    - Secrets are in C(stages) without their values; C(secret_data) names, per Secret, its keys and source, and the Velero
      backups (location and sha256) that hold the values.
  returned: success
  type: dict
plan_key:
  description: S3 key of the saved plan.
  returned: success
  type: str
  sample: migrations/onprem/worker-3-to-aws/plan.json
reused:
  description: Whether the plan saved earlier for this run id was returned.
  returned: success
  type: bool
moves:
  description: One line per moved workload, with its share (replicas or ordinals) and what stays in the source.
  returned: success
  type: list
  elements: str
  sample: ["Deployment/web 2 of 4 replicas (2 stay in the source)", "StatefulSet/db ordinal 0 of 2 (1 stays in the source)"]
summary:
  description: Counts at a glance.
  returned: success
  type: dict
  sample: {"selected": 5, "workloads": 3, "skipped": 2, "objects": 21, "local_data": 1, "workload_state": 1, "warnings": 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog import parse_age
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import describe_moves, plan_migration, summarize_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import DEFAULT_EXCLUDED_NAMESPACES
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import K8S_ARG_SPEC, K8sSettings
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client
from ansible_collections.hybridcloud.migration.plugins.module_utils.source_reschedule import RescheduleSettings, observe_source


def main() -> None:
    argument_spec = dict(
        S3_ARG_SPEC,
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="catalog"),
        cluster=dict(type="str", required=True),
        failed_node=dict(type="str", required=True),
        run_id=dict(type="str", required=True),
        target_node=dict(type="str", default=""),
        plans_prefix=dict(type="str", default="migrations"),
        max_backup_age=dict(type="str"),
        accept_old_backup=dict(type="bool", default=False),
        require_node_backup=dict(type="bool", default=True),
        replan=dict(type="bool", default=False),
        share_policy=dict(type="dict", default={}),
        source=dict(type="dict", options=K8S_ARG_SPEC),
        reschedule_grace=dict(type="str", default="20s"),
        out_of_service=dict(type="bool", default=True),
        storage_class_map=dict(type="dict", default={}),
        image_registry_map=dict(type="dict", default={}),
        namespace_map=dict(type="dict", default={}),
        include_custom=dict(type="list", elements="str", default=[]),
        exclude_namespaces=dict(type="list", elements="str", default=list(DEFAULT_EXCLUDED_NAMESPACES)),
        pin_host_path_pods=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        settings = S3Settings.from_params(params)
        store = CatalogStore(make_s3_client(settings), settings, params["bucket"], params["prefix"])
        options = PlanOptions.from_params(dict(params, source_cluster=params["cluster"]))
        grace = parse_age(params["reschedule_grace"], "reschedule_grace")
        observe = None
        if params["source"]:
            source = K8sSettings.from_params(params["source"])
            reschedule = RescheduleSettings(params["failed_node"], params["run_id"], params["out_of_service"], float(grace or 0),
                                            check_mode=module.check_mode)

            def observe(objects):
                return observe_source(source, reschedule, objects, options)
        result = plan_migration(
            store, params["cluster"], params["failed_node"], options,
            plans_prefix=params["plans_prefix"], max_backup_age=params["max_backup_age"],
            accept_old_backup=params["accept_old_backup"], require_node_backup=params["require_node_backup"],
            replan=params["replan"], check_mode=module.check_mode, observe=observe,
        )
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    for warning in result["plan"].get("warnings", []):
        module.warn(warning)
    module.exit_json(summary=summarize_plan(result["plan"]), moves=describe_moves(result["plan"]), **result)


if __name__ == "__main__":
    main()
