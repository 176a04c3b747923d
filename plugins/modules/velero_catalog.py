#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: velero_catalog
short_description: Record the newest completed Velero backups in the backup catalog
version_added: 0.1.0
description:
  - Reads the backups Velero stored in its backup storage location (C(<velero_prefix>/backups/<name>/velero-backup.json)),
    picks the newest V(Completed), unexpired backup of each schedule and records them as one catalog
    entry of the cluster, in scope C(_velero), with kind V(resources) and each tarball's size and sha256.
  - Velero has no hook that runs when a backup completes, so this module (and the timer the
    P(hybridcloud.migration.velero_catalog#role) role installs) looks at the storage itself. It needs no access
    to the Kubernetes API, only read access to Velero's prefix and write access to the catalog.
  - The entry's C(created_at), and each artifact's, is the backup's start time, so the catalog's age of
    the resources is their RPO. When the latest entry already names the same backups, nothing is written.
  - Then prunes old C(_velero) entries by O(keep_last) and O(max_age), and every entry naming a backup
    Velero has deleted since (its TTL passed). Never the latest entry, never Velero's own files.
  - Fails, writing nothing, when no named schedule has a usable backup; a schedule without one, or a newer
    backup that failed, is a warning.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  cluster:
    description:
      - Name of the cluster whose Velero made the backups, as used across the collection (for example V(onprem)).
    type: str
    required: true
  velero_bucket:
    description:
      - Bucket of Velero's backup storage location. Defaults to O(bucket), the catalog's.
    type: str
  velero_prefix:
    description:
      - Prefix of Velero's backup storage location in O(velero_bucket) (the role's C(velero_s3_prefix)).
    type: str
    default: velero
  schedules:
    description:
      - Names of the Velero schedules whose backups are recorded. Empty records every schedule found in the storage.
      - Backups made by hand, without a schedule, are never recorded.
    type: list
    elements: str
    default: []
  keep_last:
    description:
      - Keep at most this many C(_velero) entries (the newest ones).
    type: int
  max_age:
    description:
      - Delete C(_velero) entries older than this, for example V(7d), V(12h) or V(3600) (seconds).
    type: str
extends_documentation_fragment:
  - hybridcloud.migration.s3
  - hybridcloud.migration.catalog
attributes:
  check_mode:
    support: full
    description: Reads and hashes everything, reports the entry it would write and the entries it would prune, writes nothing.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.backup_catalog_info
"""

EXAMPLES = r"""
- name: Record the newest Velero backups of the site
  hybridcloud.migration.velero_catalog:
    endpoint_url: https://s3.backup.example.net
    bucket: dr-backups
    cluster: onprem
    schedules: [resources]
    keep_last: 48
    max_age: 7d
  register: velero_recorded

- name: Show what the catalog names now
  ansible.builtin.debug:
    msg: "{{ velero_recorded.recorded | join(', ') }} (entry {{ velero_recorded.entry_id }})"
"""

RETURN = r"""
recorded:
  description: Names of the Velero backups the latest C(_velero) entry names after this run.
  returned: success
  type: list
  elements: str
  sample: [resources-20261125020012]
entry_id:
  description: Id of the C(_velero) entry that names them (new, or the latest one when it named them already).
  returned: success
  type: str
  sample: 20261125T020012Z-3fa2c1
entry:
  description: The entry written (or that would be written in check mode).
  returned: when a new entry was written
  type: dict
latest_updated:
  description: Whether the latest pointer moved to a new entry.
  returned: success
  type: bool
missing_schedules:
  description: Named schedules with no Completed, unexpired backup yet.
  returned: success
  type: list
  elements: str
pruned:
  description: S3 keys of the catalog entries deleted (or that would be, in check mode).
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3_ARG_SPEC, S3Settings, make_s3_client
from ansible_collections.hybridcloud.migration.plugins.module_utils.velero_catalog import sync


def main() -> None:
    argument_spec = dict(
        S3_ARG_SPEC,
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="catalog"),
        cluster=dict(type="str", required=True),
        velero_bucket=dict(type="str"),
        velero_prefix=dict(type="str", default="velero"),
        schedules=dict(type="list", elements="str", default=[]),
        keep_last=dict(type="int"),
        max_age=dict(type="str"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        settings = S3Settings.from_params(params)
        client = make_s3_client(settings)
        result = sync(
            CatalogStore(client, settings, params["bucket"], params["prefix"]),
            params["cluster"],
            client,
            params["velero_bucket"] or params["bucket"],
            params["velero_prefix"],
            params["schedules"],
            keep_last=params["keep_last"],
            max_age=params["max_age"],
            check_mode=module.check_mode,
        )
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
