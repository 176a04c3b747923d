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
    pods), leaving out DaemonSets, static pods and workloads still running elsewhere (each with the reason); the objects they
    depend on (namespaces, CRDs, ServiceAccounts and RBAC, ConfigMaps, Secrets, PVCs and PVs, Services, NetworkPolicies,
    PodDisruptionBudgets, HPAs); the transforms (server-set fields stripped, local PVs re-homed to O(target_node), pins to the
    dead node dropped, storage class, image registry and namespace maps, workloads held at 0 replicas); the stages in
    dependency order, the scale-up and the local data and checkpoints to restore."
  - Saves the plan as JSON under C(<plans_prefix>/<cluster>/<run_id>/plan.json). A re-run with the same O(run_id) returns the
    saved plan unchanged (so an interrupted migration resumes with the plan it started with) unless O(replan=true).
  - Refuses when there is no complete backup, and when a backup is older than O(max_backup_age) unless O(accept_old_backup=true).
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
  move_partial:
    description:
      - Also move Deployments, ReplicaSets, Jobs and CronJobs that still run pods on other nodes, scaled to what the failed node ran.
        StatefulSets never move partially.
    type: bool
    default: false
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
  register: migration

- name: Show what moves
  ansible.builtin.debug:
    msg: "{{ migration.summary }}"
"""

RETURN = r"""
plan:
  description: The plan (see the collection's docs for its format); C(stages) hold the manifests in apply order.
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
summary:
  description: Counts at a glance.
  returned: success
  type: dict
  sample: {"selected": 5, "workloads": 3, "skipped": 2, "objects": 21, "local_data": 1, "workload_state": 1, "warnings": 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import plan_migration, summarize_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import DEFAULT_EXCLUDED_NAMESPACES
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client


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
        move_partial=dict(type="bool", default=False),
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
        result = plan_migration(
            store, params["cluster"], params["failed_node"], options,
            plans_prefix=params["plans_prefix"], max_backup_age=params["max_backup_age"],
            accept_old_backup=params["accept_old_backup"], require_node_backup=params["require_node_backup"],
            replan=params["replan"], check_mode=module.check_mode,
        )
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    for warning in result["plan"].get("warnings", []):
        module.warn(warning)
    module.exit_json(summary=summarize_plan(result["plan"]), **result)


if __name__ == "__main__":
    main()
