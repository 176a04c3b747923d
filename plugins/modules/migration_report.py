#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_report
short_description: Write the report of a migration (JSON and Markdown) with its RTO and RPO
version_added: 0.1.0
description:
  - "Builds the report of one migration run: the outcome in one line; per phase (plan, provision, join, resources, data,
    state, scale-up) its status and duration, which add up to the RTO counted from the node's failure; per kind of data the age
    of the backup used at the time of the failure, the RPO; what was moved, what was left out and why; local data and
    checkpoints restored, or started cold and why; warnings."
  - Writes C(report.json) and C(report.md) into O(dest) on the host it runs on, and with O(bucket) also uploads them beside the
    plan, under C(<plans_prefix>/<cluster>/<run_id>/).
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  run_id:
    description: Id of the migration run.
    type: str
    required: true
  cluster:
    description: Name of the source cluster.
    type: str
    required: true
  failed_node:
    description: Name of the failed node.
    type: str
    required: true
  target_cluster:
    description: Name of the target cluster.
    type: str
    required: true
  target_cloud:
    description: Target cloud (V(aws), V(openstack)).
    type: str
    required: true
  target_node:
    description: Name of the new node.
    type: str
    default: ""
  failed_at:
    description: When the node failed (ISO 8601); the RTO and RPO count from it. Defaults to the start of the first phase.
    type: str
  phases:
    description:
      - "The phases, each with C(name) (V(plan), V(provision), V(join), V(resources), V(data), V(state), V(scale-up)), C(status)
        (V(ok), V(failed), V(skipped)), C(started_at) and C(finished_at) (ISO 8601; not needed when skipped) and C(detail)."
    type: list
    elements: dict
    required: true
  plan:
    description: The plan from M(hybridcloud.migration.migration_plan) (what was selected, left out, and its warnings).
    type: dict
    default: {}
  backups:
    description: When each kind of data was taken (the plan's C(backups.taken_at)), for the RPO.
    type: dict
    default: {}
  data:
    description: Local data restored, each a C(name), C(outcome) (V(restored), V(failed), V(skipped)), C(bytes) and C(detail).
    type: list
    elements: dict
    default: []
  state:
    description: Checkpoints, each a C(name), C(outcome) (V(restored), V(cold-start), V(failed)) and C(reason).
    type: list
    elements: dict
    default: []
  warnings:
    description: Further warnings for the report.
    type: list
    elements: str
    default: []
  dest:
    description: Directory for C(report.json) and C(report.md) (created, mode 0750).
    type: path
    required: true
  bucket:
    description: Also upload the report to this bucket, beside the plan. Empty uploads nothing.
    type: str
    default: ""
  plans_prefix:
    description: Key prefix of plans and reports in O(bucket).
    type: str
    default: migrations
extends_documentation_fragment:
  - hybridcloud.migration.s3
attributes:
  check_mode:
    support: full
    description: Builds and returns the report; writes and uploads nothing.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.migration_plan
"""

EXAMPLES = r"""
- name: Write the report
  hybridcloud.migration.migration_report:
    run_id: worker-3-to-aws
    cluster: onprem
    failed_node: worker-3
    target_cluster: aws-eu-central-1
    target_cloud: aws
    target_node: aws-worker-3
    phases: "{{ hcm_phases }}"
    plan: "{{ migration.plan }}"
    backups: "{{ migration.plan.backups.taken_at }}"
    dest: "{{ playbook_dir }}/reports/worker-3-to-aws"
  register: report

- name: Say how it went
  ansible.builtin.debug:
    msg: "{{ report.headline }}"
"""

RETURN = r"""
headline:
  description: The outcome in one line.
  returned: success
  type: str
  sample: "SUCCEEDED: 3 workloads of worker-3 (onprem) moved to aws-eu-central-1 on aws node aws-worker-3 in 4m 12s (RTO); RPO resources 14m 02s."
report:
  description: The report document (what C(report.json) holds).
  returned: success
  type: dict
markdown:
  description: The report for people (what C(report.md) holds).
  returned: success
  type: str
files:
  description: Paths of the files written.
  returned: success
  type: list
  elements: str
keys:
  description: S3 keys of the uploaded files.
  returned: when O(bucket) is set
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_report import build_report, headline, render_markdown
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import plan_key
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client, s3_errors


def main() -> None:
    argument_spec = dict(
        S3_ARG_SPEC,
        run_id=dict(type="str", required=True),
        cluster=dict(type="str", required=True),
        failed_node=dict(type="str", required=True),
        target_cluster=dict(type="str", required=True),
        target_cloud=dict(type="str", required=True),
        target_node=dict(type="str", default=""),
        failed_at=dict(type="str"),
        phases=dict(type="list", elements="dict", required=True),
        plan=dict(type="dict", default={}),
        backups=dict(type="dict", default={}),
        data=dict(type="list", elements="dict", default=[]),
        state=dict(type="list", elements="dict", default=[]),
        warnings=dict(type="list", elements="str", default=[]),
        dest=dict(type="path", required=True),
        bucket=dict(type="str", default=""),
        plans_prefix=dict(type="str", default="migrations"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        report = build_report(
            run_id=params["run_id"], failed_node=params["failed_node"], source_cluster=params["cluster"],
            target_cluster=params["target_cluster"], target_cloud=params["target_cloud"], target_node=params["target_node"],
            phases=params["phases"], plan=params["plan"], backups=params["backups"], data=params["data"], state=params["state"],
            failed_at=params["failed_at"], warnings=params["warnings"],
        )
        markdown = render_markdown(report)
        documents = {"report.json": json.dumps(report, indent=2, sort_keys=True) + "\n", "report.md": markdown}
        files = [os.path.join(params["dest"], name) for name in documents]
        keys = []
        if params["bucket"]:
            base = plan_key(params["plans_prefix"], params["cluster"], params["run_id"]).rsplit("/", 1)[0]
            keys = ["%s/%s" % (base, name) for name in documents]
        if not module.check_mode:
            os.makedirs(params["dest"], mode=0o750, exist_ok=True)
            for path, body in zip(files, documents.values()):
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(body)
            if keys:
                settings = S3Settings.from_params(params)
                client = make_s3_client(settings)
                with s3_errors(settings, "uploading the report", params["bucket"], "the report files were written to %s" % params["dest"]):
                    for key, (name, body) in zip(keys, documents.items()):
                        content_type = "application/json" if name.endswith(".json") else "text/markdown; charset=utf-8"
                        client.put_object(Bucket=params["bucket"], Key=key, Body=body.encode("utf-8"), ContentType=content_type,
                                          **settings.write_args())
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    except OSError as err:
        module.fail_json(msg="Cannot write the report to %s: %s. Fix: choose a writable dest." % (params["dest"], err))
    module.exit_json(changed=not module.check_mode, headline=headline(report), report=report, markdown=markdown, files=files, keys=keys)


if __name__ == "__main__":
    main()
