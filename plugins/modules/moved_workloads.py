#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: moved_workloads
short_description: Fence, release or remove the workloads a migration run moved, in one cluster
version_added: 0.1.0
description:
  - Works on the workloads of a migration plan (its C(selected) Deployments, StatefulSets, ReplicaSets, ReplicationControllers,
    CronJobs and Jobs) in one cluster, so that a workload never runs in two clusters at once.
  - With O(state=fenced), each workload records what it ran in the annotations C(migration.hybridcloud.io/source-replicas)
    (CronJobs and Jobs C(migration.hybridcloud.io/source-suspend)) and C(migration.hybridcloud.io/moved-to) (O(moved_to)),
    and is scaled down by the share that moved (its C(share) in the plan; to 0, or suspended, when it moved whole). A
    StatefulSet whose moved ordinals were at the bottom of its range gets C(spec.ordinals.start) past them
    (C(migration.hybridcloud.io/source-ordinals) records the old start), and the autoscaler of a workload that moved in part
    keeps its part of C(minReplicas) and C(maxReplicas) (C(migration.hybridcloud.io/source-autoscaler) records the old ones).
    The record is written once; a re-run never replaces it, and a workload found at what it keeps without a record gets the
    plan's replicas added. O(node) is cordoned, with the annotation C(migration.hybridcloud.io/cordoned-by), unless
    it was cordoned before. No NoExecute taint is added, since it would also evict the node's DaemonSet pods once the node is back.
    The cordon's own NoSchedule taint already keeps new pods off. With O(wait), waits until each workload is down to the pods
    the source keeps.
  - Bare pods have nothing to scale; fencing returns them with C(action=skipped) and the reason. Releasing makes a bare pod the
    source lost (the out-of-service taint deletes it) again from the plan's manifest, pinned to O(node) when the plan had pinned
    it to the new node (its hostPath data comes back there).
  - With O(state=released), O(node) is uncordoned when a migration (of O(moved_to)) cordoned it, and its out-of-service taint
    (C(node.kubernetes.io/out-of-service), added by M(hybridcloud.migration.migration_plan) with the run's id) is removed once the
    node is Ready; each workload fenced by
    O(moved_to) gets its recorded replicas (suspend, ordinals, autoscaler bounds) back and loses the annotations, and with O(wait) its pods are awaited.
  - With O(state=absent), the plan's workloads, PodDisruptionBudgets and HorizontalPodAutoscalers, and its local
    PersistentVolumes (C(local) or C(hostPath)) with their claims are deleted in that order and awaited. Only objects
    labelled C(migration.hybridcloud.io/run-id) with the plan's run id are deleted (what the restore of this run created).
    Namespaces, ConfigMaps, Secrets, Services, RBAC and network policies are kept, since other workloads may use them.
    RV(kept) lists them.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  plan:
    description: The plan of the run (M(hybridcloud.migration.migration_plan)'s C(plan), or the saved C(plan.json)).
    type: dict
    required: true
  state:
    description: What to make of the workloads in this cluster.
    type: str
    choices: [fenced, released, absent]
    default: fenced
  side:
    description:
      - Which cluster this is, for the names of the workloads. V(source) uses the namespaces they had in the failed node's
        cluster, and V(target) the namespaces they got there (the plan's C(namespace_map)).
    type: str
    choices: [source, target]
    default: source
  node:
    description: Node to cordon (O(state=fenced)) or uncordon (O(state=released)); empty leaves every node alone.
    type: str
    default: ""
  moved_to:
    description:
      - Where the workloads went, recorded in C(migration.hybridcloud.io/moved-to), for example V(cloud/worker-3-to-cloud).
      - O(state=released) only releases what this value fenced. Default the plan's run id.
    type: str
    default: ""
  wait:
    description:
      - Wait until the pods of fenced workloads are gone, released ones are available, removed objects are deleted.
      - Set V(false) when fencing workloads of a dead node, whose pods go only once the node is back.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for each workload or object.
    type: int
    default: 300
  request_timeout:
    description: Seconds one request to the API server may take (lost connections and C(429)/C(5xx) answers are tried 3 times).
    type: int
    default: 30
extends_documentation_fragment:
  - hybridcloud.migration.kubernetes
attributes:
  check_mode:
    support: full
    description: Every patch is a server-side dry run, nothing is deleted or awaited; the result says what would change.
  diff_mode:
    support: none
    description: Not supported.
notes:
  - The identity needs get and patch on the workloads and on Nodes, list on pods, and for O(state=absent) delete on the
    workloads, PodDisruptionBudgets, HorizontalPodAutoscalers, PersistentVolumeClaims and PersistentVolumes.
seealso:
  - module: hybridcloud.migration.migration_plan
  - module: hybridcloud.migration.ordered_restore
"""

EXAMPLES = r"""
- name: Fence the source cluster before the workloads start on the target (the node is dead, do not wait)
  hybridcloud.migration.moved_workloads:
    kubeconfig: /etc/hybridcloud/onprem.kubeconfig
    plan: "{{ migration.plan }}"
    node: worker-3
    moved_to: cloud/worker-3-to-cloud
    wait: false

- name: Stop the copies on the target and wait for their pods to go
  hybridcloud.migration.moved_workloads:
    kubeconfig: /etc/hybridcloud/cloud.kubeconfig
    plan: "{{ migration.plan }}"
    side: target
    moved_to: onprem/worker-3-to-cloud

- name: Let the source run them again, at the replicas they had
  hybridcloud.migration.moved_workloads:
    kubeconfig: /etc/hybridcloud/onprem.kubeconfig
    plan: "{{ migration.plan }}"
    state: released
    node: worker-3
    moved_to: cloud/worker-3-to-cloud

- name: Delete the copies and their local volumes from the target
  hybridcloud.migration.moved_workloads:
    kubeconfig: /etc/hybridcloud/cloud.kubeconfig
    plan: "{{ migration.plan }}"
    side: target
    state: absent
"""

RETURN = r"""
changed:
  description: Whether a workload or the node was patched, or an object deleted (or would be, in check mode).
  returned: always
  type: bool
run_id:
  description: The plan's run id.
  returned: always
  type: str
objects:
  description:
    - One item per workload (per object for O(state=absent)) with C(kind), C(api_version), C(namespace), C(name), C(action)
      and C(seconds); C(note) and C(error) when there is something to say.
    - Actions are V(fenced), V(released), V(deleted), V(unchanged), V(absent) (not in this cluster), V(skipped) (see C(note)),
      V(kept) (not made by this run) and V(failed).
    - Fenced and released workloads have C(before) (C(spec.replicas) or C(spec.suspend) as found) and C(replicas) or
      C(suspend) as set; fenced ones C(recorded), the value kept in the annotation.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: Deployment, api_version: apps/v1, namespace: shop, name: web, action: fenced, before: 2, replicas: 0, recorded: 2}
node:
  description: What happened to O(node), C(name), C(action) (V(cordoned), V(uncordoned), V(unchanged), V(absent), V(failed)), C(note).
  returned: when O(node) is set and O(state) is not V(absent)
  type: dict
kept:
  description: The plan's objects O(state=absent) leaves in the cluster (shared ones), as C(Kind namespace/name).
  returned: when O(state=absent)
  type: list
  elements: str
totals:
  description: How many objects got each action.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils import moved_workloads
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import (
    K8S_ARG_SPEC,
    K8sSettings,
    make_k8s_client,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.ordered_restore import Cluster, masked


def main() -> None:
    argument_spec = dict(
        K8S_ARG_SPEC,
        plan=dict(type="dict", required=True),
        state=dict(type="str", choices=list(moved_workloads.STATES), default="fenced"),
        side=dict(type="str", choices=list(moved_workloads.SIDES), default="source"),
        node=dict(type="str", default=""),
        moved_to=dict(type="str", default=""),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, no_log=True)  # plans hold Secrets
    params = module.params
    invocation = {"module_args": dict(params, plan=masked(params["plan"]))}
    try:
        cluster = Cluster(make_k8s_client(K8sSettings.from_params(params)), params["request_timeout"], 1)
        result = moved_workloads.run(
            cluster, params["plan"], params["state"], params["side"], params["node"], params["moved_to"],
            check_mode=module.check_mode, wait=params["wait"], wait_timeout=params["wait_timeout"],
        )
    except MigrationError as err:
        module.fail_json(invocation=invocation, **err.fail_json_kwargs())
    module.exit_json(invocation=invocation, **result)


if __name__ == "__main__":
    main()
