#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ordered_restore
short_description: Apply a migration plan to the target cluster stage by stage, then scale the workloads up
version_added: 0.1.0
description:
  - With O(state=present), applies the C(stages) of a migration plan (made by
    M(hybridcloud.migration.migration_plan)) to the target cluster, in order, with server-side
    apply under its own field manager. Inside a stage, Namespaces go first, then
    CustomResourceDefinitions, then the other objects, which are applied concurrently.
  - Before the next stage starts, it waits per kind. Namespace is C(Active). CustomResourceDefinition
    is C(Established) and served by API discovery. PersistentVolumeClaim is C(Bound), but only when
    it can bind now (pre-bound to a volume, or an C(Immediate) storage class); a C(WaitForFirstConsumer)
    claim binds once its pod is scheduled, after scale-up, so it is not waited for and a note says so.
    Deployment, StatefulSet, DaemonSet and ReplicaSet have C(status.observedGeneration) caught up
    (they are at 0 replicas here). Service has a cluster IP. Any other kind only has to exist.
  - Re-running is safe. Applying is idempotent, and each object is read just before it is applied
    and compared with the answer, so it is reported as C(created), C(updated) or C(unchanged), and
    a second run over an applied plan reports RV(changed=false). After a failure, what was applied
    stays applied and a re-run continues from there.
  - The first failure stops the run in its stage, with a message naming the object and the API
    server's reason; the results up to there are returned. The other objects of the stage are still
    applied, unless the API server cannot be reached; then they are not attempted.
  - With O(state=scaled), sets each workload of O(scale_up) (or of the plan's C(scale_up)) to its
    replicas, unsuspends CronJobs and Jobs, removes the C(migration.hybridcloud.io/replicas) and
    C(migration.hybridcloud.io/suspend) annotations, and waits until the pods are available.
    A later O(state=present) run leaves workloads scaled up this way at their replicas.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  state:
    description:
      - V(present) applies the plan's stages.
      - V(scaled) scales the restored workloads up, once their data and state are back.
    type: str
    choices: [present, scaled]
    default: present
  plan:
    description:
      - The plan, as returned by M(hybridcloud.migration.migration_plan) (a dictionary with C(stages)
        and C(scale_up)).
      - The data of any Secret a hand-made plan holds inline is masked in this module's
        C(invocation) output.
      - Mutually exclusive with O(plan_file) and O(stages).
    type: dict
  plan_file:
    description:
      - Path of the plan saved as JSON (or YAML) on the host the module runs on.
    type: path
  storage:
    description:
      - How to reach the S3-compatible storage that holds the plan's Velero backups, with the
        options of M(hybridcloud.migration.migration_plan) (C(endpoint_url), C(region),
        C(access_key), C(secret_key), ...).
      - A plan made by M(hybridcloud.migration.migration_plan) holds no Secret values, only each
        Secret's keys and the backups they are in (C(secret_data)). Just before applying, the module
        reads those Secrets from the backups (checking each tarball's sha256), and applies them
        with their values; the values appear in no result.
      - Needed only when the plan has C(secret_data); leave out for hand-written stages.
    type: dict
    suboptions:
      endpoint_url:
        description: URL of the storage; leave out for AWS S3.
        type: str
        aliases: [s3_url]
      region:
        description: Region of the bucket.
        type: str
        aliases: [aws_region]
      access_key:
        description: Access key id.
        type: str
        aliases: [aws_access_key_id]
      secret_key:
        description: Secret access key. Keep it in Ansible Vault.
        type: str
        aliases: [aws_secret_access_key]
      session_token:
        description: Session token for temporary credentials.
        type: str
      profile:
        description: Named profile from the AWS shared configuration files.
        type: str
      addressing_style:
        description: How the bucket goes into requests.
        type: str
        choices: [path, virtual, auto]
        default: path
      validate_certs:
        description: Check the storage server's TLS certificate.
        type: bool
        default: true
      ca_bundle:
        description: CA bundle to check the storage server's certificate with.
        type: path
      max_attempts:
        description: Tries per request.
        type: int
        default: 5
      connect_timeout:
        description: Seconds to wait for a connection to the storage server.
        type: float
        default: 10.0
      read_timeout:
        description: Seconds to wait for an answer from the storage server.
        type: float
        default: 60.0
      sse:
        description: Server-side encryption of objects written (this module only reads).
        type: str
        choices: [AES256, aws:kms]
      sse_kms_key_id:
        description: The KMS key for O(storage.sse=aws:kms).
        type: str
  stages:
    description:
      - The stages alone, a list of C(name) and C(objects) (full manifests), applied in this order.
    type: list
    elements: dict
  scale_up:
    description:
      - For O(state=scaled), the workloads to scale up; overrides the plan's C(scale_up).
      - Each item has C(kind), C(api_version) (defaults to V(apps/v1) or V(batch/v1) by kind),
        C(namespace), C(name) and C(replicas) (Deployment, StatefulSet, ReplicaSet,
        ReplicationController), or C(suspend) (CronJob, Job; default the original value kept in the
        C(migration.hybridcloud.io/suspend) annotation, else V(false)). Without C(replicas), the
        C(migration.hybridcloud.io/replicas) annotation gives the value.
    type: list
    elements: dict
  field_manager:
    description:
      - The server-side apply field manager. Scale-up uses this name with C(-scale-up) appended.
    type: str
    default: hybridcloud.migration
  force_conflicts:
    description:
      - Take over fields another field manager owns (server-side apply C(force)) in the objects
        this run applies. The plan is what the restore must produce; set V(false) to fail on such
        a conflict instead.
    type: bool
    default: true
  adopt:
    description:
      - What to do with an object of the plan that already exists in the target without this
        run's label C(migration.hybridcloud.io/run-id) (an object the target had before, or one
        another run created).
      - V(false) leaves it alone, as a conflict, in the result's C(conflicts) and C(objects)
        (action V(conflict)); it is not applied, the scale-up (O(state=scaled)) does not scale it,
        and C(migrate_back.yml), which deletes only objects with the run's label, never deletes it.
      - V(true) applies the plan over it and labels it, so it becomes the run's (and
        C(migrate_back.yml) deletes it).
      - Only plans whose objects carry the run's label (those of M(hybridcloud.migration.migration_plan))
        are checked; hand-written stages are applied as given.
    type: bool
    default: false
  wait:
    description:
      - Wait per kind before the next stage (and, with O(state=scaled), for the pods to be available).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for one stage's objects of a kind, unless O(kind_timeouts) sets that kind.
    type: int
    default: 300
  kind_timeouts:
    description:
      - "Seconds to wait per kind, for example C({PersistentVolumeClaim: 600, Deployment: 900})."
      - The key V(default) replaces O(wait_timeout).
      - V(0) does not wait for that kind (a note says so). Waiting for the observed generation of
        many Deployments takes about 0.2 seconds each on a kube-controller-manager with its default
        client rate limit; their availability is awaited at scale-up anyway.
    type: dict
    default: {}
  workers:
    description:
      - Objects applied at the same time (threads, each with its own connection to the API server).
    type: int
    default: 8
  request_timeout:
    description:
      - Seconds one request to the API server may take. Lost connections and C(429) or C(5xx)
        answers are tried 3 times, with backoff.
    type: int
    default: 30
extends_documentation_fragment:
  - hybridcloud.migration.kubernetes
attributes:
  check_mode:
    support: full
    description:
      - A server-side dry run (C(dryRun=All)) of every apply, so the result still says created,
        updated or unchanged. Objects in a namespace, or of a custom kind, that the plan creates
        first are reported as C(created) without a dry run. Nothing is waited for.
  diff_mode:
    support: none
    description: Not supported.
notes:
  - The identity needs get, list and patch on every kind of the plan, and get and list on
    StorageClasses (to tell which claims can bind now).
seealso:
  - module: hybridcloud.migration.migration_plan
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Restore the failed node's resources in the target cluster, in dependency order
  hybridcloud.migration.ordered_restore:
    kubeconfig: /etc/hybridcloud/target.kubeconfig
    plan_file: "/var/lib/hybridcloud/plans/{{ run_id }}.json"
  register: restored

- name: Restore from the plan migration_plan returned; its Secrets' values are read from the Velero backup
  hybridcloud.migration.ordered_restore:
    kubeconfig: /etc/hybridcloud/target.kubeconfig
    plan: "{{ planned.plan }}"
    storage:
      endpoint_url: https://s3.example.net:9000
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"

- name: Show how long each stage took
  ansible.builtin.debug:
    msg: "{{ restored.stages | map(attribute='name') | zip(restored.stages | map(attribute='seconds')) | list }}"

- name: After local data and checkpoints are back, scale the workloads up
  hybridcloud.migration.ordered_restore:
    kubeconfig: /etc/hybridcloud/target.kubeconfig
    plan_file: "/var/lib/hybridcloud/plans/{{ run_id }}.json"
    state: scaled
    kind_timeouts:
      StatefulSet: 900

- name: Apply two hand-written stages, waiting up to 10 minutes for claims to bind
  hybridcloud.migration.ordered_restore:
    stages:
      - name: namespaces
        objects:
          - {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
      - name: storage
        objects:
          - apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: data, namespace: shop}
            spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: shop-data}
    kind_timeouts:
      PersistentVolumeClaim: 600
"""

RETURN = r"""
changed:
  description: Whether any object was created or updated (O(state=present)) or scaled (O(state=scaled)).
  returned: always
  type: bool
run_id:
  description: The plan's run id (empty when only O(stages) were given).
  returned: when O(state=present)
  type: str
stages:
  description: One item per stage reached, in order.
  returned: when O(state=present)
  type: list
  elements: dict
  contains:
    name:
      description: Stage name.
      type: str
    objects:
      description: Objects in the stage.
      type: int
    created:
      description: Objects created.
      type: int
    updated:
      description: Objects changed.
      type: int
    unchanged:
      description: Objects already as the plan says.
      type: int
    conflicts:
      description: Objects left alone because the target had them without this run's label (see O(adopt)).
      type: int
    failed:
      description: Objects refused (the run stops at the first stage with one).
      type: int
    apply_seconds:
      description: Seconds spent reading and applying the stage's objects.
      type: float
    waited_seconds:
      description: Seconds spent waiting for them to be ready (see the per-kind rules).
      type: float
    seconds:
      description: Seconds for the whole stage.
      type: float
    notes:
      description: What was not waited for and why, per object.
      type: list
      elements: str
objects:
  description:
    - One item per object attempted, with C(stage), C(kind), C(api_version), C(namespace), C(name)
      and C(action); C(error) when it failed; C(note) when something about it is worth knowing.
    - O(state=present) actions are V(created), V(updated), V(unchanged), V(conflict) (see O(adopt)) or V(failed).
    - O(state=scaled) actions are V(scaled), V(unchanged), V(conflict) or V(failed), with C(replicas) or C(suspend)
      as set, their C(before) value and C(seconds) including the wait for the pods.
  returned: always
  type: list
  elements: dict
  sample:
    - {stage: network, kind: Service, api_version: v1, namespace: shop, name: web, action: created}
conflicts:
  description: The objects left alone because the target already had them without this run's label (see O(adopt)).
  returned: when O(state=present)
  type: list
  elements: str
  sample: ["ConfigMap shop/web-settings"]
totals:
  description:
    - Counts over every stage reached (C(objects), C(created), C(updated), C(unchanged), C(conflicts),
      C(failed), C(stages)), C(seconds), C(waited_seconds) and C(objects_per_second).
    - For O(state=scaled), C(objects), C(scaled), C(unchanged), C(conflicts), C(failed) and C(seconds).
  returned: always
  type: dict
notes:
  description: Every per-object note, as C(Kind namespace/name - note).
  returned: when O(state=present)
  type: list
  elements: str
failed_stage:
  description: The stage that failed.
  returned: on failure of O(state=present)
  type: str
failed_objects:
  description: The objects of that stage that failed, with their errors.
  returned: on failure of O(state=present)
  type: list
  elements: dict
pending_stages:
  description: The stages not reached because of the failure.
  returned: on failure of O(state=present)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils import ordered_restore as restore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import (
    K8S_ARG_SPEC,
    K8sSettings,
    make_k8s_client,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import fill_secret_values
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client


def main() -> None:
    argument_spec = dict(
        K8S_ARG_SPEC,
        state=dict(type="str", choices=["present", "scaled"], default="present"),
        plan=dict(type="dict"),
        plan_file=dict(type="path"),
        storage=dict(type="dict", options=S3_ARG_SPEC),
        stages=dict(type="list", elements="dict"),
        scale_up=dict(type="list", elements="dict"),
        field_manager=dict(type="str", default=restore.DEFAULT_FIELD_MANAGER),
        force_conflicts=dict(type="bool", default=True),
        adopt=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=restore.DEFAULT_WAIT_TIMEOUT),
        kind_timeouts=dict(type="dict", default={}),
        workers=dict(type="int", default=8),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("plan", "plan_file", "stages")],
        required_if=[
            ("state", "present", ("plan", "plan_file", "stages"), True),
            ("state", "scaled", ("plan", "plan_file", "scale_up"), True),
        ],
        supports_check_mode=True,
        no_log=True,  # no syslog line with the arguments: plans hold Secrets
    )
    params = module.params
    # What the task output shows of the arguments: the plan without the data of its Secrets.
    invocation = {"module_args": dict(params, plan=restore.masked(params["plan"]), stages=restore.masked(params["stages"]))}
    try:
        if params["workers"] < 1 or params["workers"] > 64:
            raise MigrationError("workers is %d" % params["workers"], "give a number of workers from 1 to 64")
        plan = restore.load_plan(params["plan"], params["plan_file"], params["stages"], params["scale_up"])
        if plan.secret_data and params["state"] == "present":
            storage = S3Settings.from_params(params["storage"] or {})
            values = fill_secret_values(make_s3_client(storage), storage, plan.secret_data,
                                        (manifest for stage in plan.stages for manifest in stage.objects))
            module.no_log_values.update(value for value in values if value)  # masked wherever they might show
        settings = restore.Settings(
            field_manager=params["field_manager"],
            force_conflicts=params["force_conflicts"],
            check_mode=module.check_mode,
            wait=params["wait"],
            wait_timeout=params["wait_timeout"],
            kind_timeouts=params["kind_timeouts"],
            workers=params["workers"],
            adopt=params["adopt"],
        )
        cluster = restore.Cluster(make_k8s_client(K8sSettings.from_params(params)), params["request_timeout"], params["workers"])
        if params["state"] == "scaled":
            result = restore.ScaleUp(cluster, settings).run(plan.scale_up, plan.stamped_run_id)
        else:
            result = restore.Restorer(cluster, settings).run(plan)
    except MigrationError as err:
        module.fail_json(invocation=invocation, **err.fail_json_kwargs())
    module.exit_json(invocation=invocation, **result)


if __name__ == "__main__":
    main()
