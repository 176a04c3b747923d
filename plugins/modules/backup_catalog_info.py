#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_catalog_info
short_description: Show the backup catalog, the latest complete backup per node and how old it is
version_added: 0.1.0
description:
  - Reads the backup catalog written by M(hybridcloud.migration.backup_catalog) from S3-compatible storage.
  - For each cluster and node (or the ones asked for) returns the latest complete entry, checked
    against the sha256 its pointer records, with its age and, per kind of data, the age of the
    oldest artifact (the recovery point).
  - With O(max_age), flags nodes whose latest backup is older (or missing) as stale.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  cluster:
    description:
      - Only this cluster. Leave out to list every cluster in the catalog.
    type: str
  node:
    description:
      - Only this node of O(cluster), or a cluster-wide scope such as V(_etcd) or V(_velero).
    type: str
  include_entries:
    description:
      - Also list the ids of every complete entry, oldest first.
    type: bool
    default: false
  max_age:
    description:
      - A latest entry older than this (for example V(1d), V(6h)) makes the node stale.
    type: str
extends_documentation_fragment:
  - hybridcloud.migration.s3
  - hybridcloud.migration.catalog
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.backup_catalog
"""

EXAMPLES = r"""
- name: Latest backup of the failed node
  hybridcloud.migration.backup_catalog_info:
    endpoint_url: https://s3.backup.example.net
    bucket: dr-backups
    cluster: onprem
    node: worker-3
  register: backup

- name: Refuse to migrate from a backup older than a day
  ansible.builtin.assert:
    that: backup.latest is not none and backup.latest.age_seconds < 86400
    fail_msg: "worker-3 has no backup younger than a day"

- name: Which nodes of every cluster have no fresh backup
  hybridcloud.migration.backup_catalog_info:
    bucket: dr-backups
    max_age: 6h
  register: catalog
"""

RETURN = r"""
nodes:
  description: One item per cluster and node found.
  returned: always
  type: list
  elements: dict
  contains:
    cluster:
      description: Cluster name.
      type: str
    node:
      description: Node name, or the scope of cluster-wide backups (V(_etcd), V(_velero), ...).
      type: str
    latest:
      description:
        - Summary of the latest complete entry (C(id), C(created_at), C(age_seconds), and
          C(kinds) with per kind C(artifacts), C(bytes), C(oldest_at), C(age_seconds)); null when there is none.
      type: dict
    problem:
      description: Why the latest entry could not be read, when it could not.
      type: str
    stale:
      description: True when O(max_age) is set and the latest entry is missing or older.
      type: bool
    entries:
      description: Ids of every complete entry, oldest first (with O(include_entries)).
      type: list
      elements: str
latest:
  description: The whole latest entry document, when O(cluster) and O(node) name one node.
  returned: when O(cluster) and O(node) are set
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import (
    S3_ARG_SPEC,
    S3Settings,
    make_s3_client,
)


def main() -> None:
    argument_spec = dict(
        S3_ARG_SPEC,
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="catalog"),
        cluster=dict(type="str"),
        node=dict(type="str"),
        include_entries=dict(type="bool", default=False),
        max_age=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_by={"node": "cluster"},
        supports_check_mode=True,
    )
    params = module.params
    try:
        settings = S3Settings.from_params(params)
        store = CatalogStore(make_s3_client(settings), settings, params["bucket"], params["prefix"])
        result = store.describe(
            cluster=params["cluster"],
            node=params["node"],
            include_entries=params["include_entries"],
            max_age=catalog.parse_age(params["max_age"]),
            now=catalog.utcnow(),
        )
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
