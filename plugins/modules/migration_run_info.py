#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_run_info
short_description: Read the saved plan of a migration run by its run id
version_added: 0.1.0
description:
  - Reads the plan M(hybridcloud.migration.migration_plan) saved for a run, under C(<plans_prefix>/<cluster>/<run_id>/plan.json),
    for example to move the workloads of that run back (C(playbooks/migrate_back.yml)).
  - Never plans anew; a run without a saved plan is refused, naming where the plan was looked for.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  bucket:
    description: Bucket of the catalog and the saved plans.
    type: str
    required: true
  cluster:
    description: Name of the source cluster of the run.
    type: str
    required: true
  run_id:
    description: Id of the migration run.
    type: str
    required: true
  plans_prefix:
    description: Key prefix of saved plans in O(bucket).
    type: str
    default: migrations
extends_documentation_fragment:
  - hybridcloud.migration.s3
attributes:
  check_mode:
    support: full
    description: Only reads.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.migration_plan
  - module: hybridcloud.migration.moved_workloads
"""

EXAMPLES = r"""
- name: The plan of the run that moved worker-3 to the cloud
  hybridcloud.migration.migration_run_info:
    endpoint_url: https://s3.backup.example.net
    bucket: dr-backups
    cluster: onprem
    run_id: worker-3-to-cloud
  register: run

- name: Show what it moved
  ansible.builtin.debug:
    msg: "{{ run.plan.selected | map(attribute='name') | list }} from {{ run.plan.failed_node }} to {{ run.plan.target_node }}"
"""

RETURN = r"""
plan:
  description: The saved plan (see migration_plan; C(failed_node), C(target_node), C(selected), C(stages), C(scale_up), C(local_data)).
  returned: success
  type: dict
plan_key:
  description: S3 key of the plan.
  returned: success
  type: str
  sample: migrations/onprem/worker-3-to-cloud/plan.json
summary:
  description: Counts at a glance (C(selected), C(workloads), C(skipped), C(objects), C(local_data), C(workload_state), C(warnings)).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_run import read_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client


def main() -> None:
    argument_spec = dict(
        S3_ARG_SPEC,
        bucket=dict(type="str", required=True),
        cluster=dict(type="str", required=True),
        run_id=dict(type="str", required=True),
        plans_prefix=dict(type="str", default="migrations"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        settings = S3Settings.from_params(params)
        store = CatalogStore(make_s3_client(settings), settings, params["bucket"])
        result = read_plan(store, params["plans_prefix"], params["cluster"], params["run_id"])
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
