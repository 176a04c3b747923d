#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_catalog
short_description: Record a verified backup in the catalog and apply retention
version_added: 0.1.0
description:
  - Writes one catalog entry for a cluster and node into S3-compatible storage. An entry is a
    versioned JSON document naming, per kind of data, every artifact of one backup with its
    location, size and sha256.
  - The entry is written under a temporary key, read back and checked, copied to its final key
    and checked again; only then does the C(latest.json) pointer move to it. A failure at any
    step leaves the latest entry as it was, and the error says which step failed.
  - Before writing, every C(s3://) artifact the entry names is checked to exist at its size
    (or sha256, see O(verify)), so the catalog never names a half-uploaded backup.
  - With O(keep_last) or O(max_age), old entries of the same cluster and node are pruned after
    the write. Only entry documents are deleted, never the entry latest points at, and never
    the backed-up data itself.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  cluster:
    description:
      - Name of the cluster the backup belongs to, as used across the collection (for example V(onprem)).
    type: str
    required: true
  node:
    description:
      - Kubernetes node the backup belongs to.
      - For cluster-wide backups give a scope instead, a name starting with an underscore, such as
        V(_etcd) (etcd snapshots), V(_velero) (Velero backups) or V(_images) (worker images).
        Left out, it is V(_cluster).
    type: str
  state:
    description:
      - V(present) writes an entry from O(data) (then prunes, if asked).
      - V(pruned) only applies retention (O(keep_last), O(max_age)).
    type: str
    choices: [present, pruned]
    default: present
  data:
    description:
      - What the backup stored, by kind of data. Keys are V(resources), V(etcd_snapshot),
        V(local_data), V(workload_state) and V(image); each value is a list of artifacts.
      - "An artifact is a mapping with C(name), C(location) (for example C(s3://bucket/key), or
        C(restic:<repository>#<snapshot>)), C(size) in bytes, and optionally C(sha256),
        C(created_at) (ISO 8601, when that piece was taken; its age is the RPO) and C(details)."
      - Required when O(state=present).
    type: dict
  created_at:
    description:
      - When the backup was taken, ISO 8601 with a time zone. Defaults to now.
    type: str
  labels:
    description:
      - Free-form string labels stored with the entry (for example the tool and its version).
    type: dict
    default: {}
  entry_id:
    description:
      - Id of the entry. Leave out to get a new one (time-ordered). Give an id a previous run
        returned to re-run a write safely; the same content changes nothing.
    type: str
  verify:
    description:
      - How the C(s3://) artifacts are checked before the entry is written.
      - V(size) compares each object's length; V(sha256) also downloads and hashes it; V(none) skips the check.
    type: str
    choices: [none, size, sha256]
    default: size
  keep_last:
    description:
      - Keep at most this many entries for the cluster and node (the newest ones).
    type: int
  max_age:
    description:
      - Delete entries older than this, for example V(7d), V(12h), V(90m) or V(3600) (seconds).
    type: str
extends_documentation_fragment:
  - hybridcloud.migration.s3
  - hybridcloud.migration.catalog
attributes:
  check_mode:
    support: full
    description: Validates and verifies everything, reports what would be written or pruned, writes nothing.
  diff_mode:
    support: none
    description: Not supported.
seealso:
  - module: hybridcloud.migration.backup_catalog_info
"""

EXAMPLES = r"""
- name: Record tonight's node backup
  hybridcloud.migration.backup_catalog:
    endpoint_url: https://s3.backup.example.net
    bucket: dr-backups
    cluster: onprem
    node: worker-3
    data:
      local_data:
        - name: default/data-postgres-0
          location: restic:s3:https://s3.backup.example.net/dr-backups/restic#4f1c2a9b
          size: 734003200
          created_at: "2026-11-25T02:00:11Z"
      workload_state:
        - name: default/redis-0/redis
          location: s3://dr-backups/checkpoints/onprem/worker-3/redis-0.tar
          size: 52428800
          sha256: 9f2b5c0e3f7d8f3c3a4b6a1e0d7c2b9a8f6e5d4c3b2a1908f7e6d5c4b3a29181
    keep_last: 14
    max_age: 7d

- name: Apply retention only
  hybridcloud.migration.backup_catalog:
    bucket: dr-backups
    cluster: onprem
    node: worker-3
    state: pruned
    keep_last: 7
"""

RETURN = r"""
entry:
  description: The entry document written (or that would be written in check mode).
  returned: when O(state=present)
  type: dict
  sample: {"schema_version": 1, "id": "20261125T020011Z-3fa2c1", "cluster": "onprem", "node": "worker-3",
           "created_at": "2026-11-25T02:00:11Z", "labels": {}, "data": {"local_data": []}}
entry_id:
  description: Id of the entry.
  returned: when O(state=present)
  type: str
  sample: 20261125T020011Z-3fa2c1
key:
  description: S3 key of the entry.
  returned: when O(state=present)
  type: str
  sample: catalog/onprem/worker-3/entries/20261125T020011Z-3fa2c1.json
sha256:
  description: sha256 of the entry document as stored; C(latest.json) records it too.
  returned: when O(state=present)
  type: str
latest_key:
  description: S3 key of the latest pointer of this cluster and node.
  returned: when O(state=present)
  type: str
latest_updated:
  description: Whether the latest pointer now names this entry (false when a newer entry already existed).
  returned: when O(state=present)
  type: bool
verified_artifacts:
  description: Each artifact and how it was checked (V(size), V(sha256), V(none), or V(not-s3) for locations the catalog cannot read).
  returned: when O(state=present)
  type: list
  elements: dict
pruned:
  description: S3 keys of the entries deleted by retention (or that would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore, VERIFY_MODES
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
        cluster=dict(type="str", required=True),
        node=dict(type="str"),
        state=dict(type="str", choices=["present", "pruned"], default="present"),
        data=dict(type="dict"),
        created_at=dict(type="str"),
        labels=dict(type="dict", default={}),
        entry_id=dict(type="str"),
        verify=dict(type="str", choices=list(VERIFY_MODES), default="size"),
        keep_last=dict(type="int"),
        max_age=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "present", ["data"]), ("state", "pruned", ["keep_last", "max_age"], True)],
        supports_check_mode=True,
    )
    params = module.params
    try:
        settings = S3Settings.from_params(params)
        store = CatalogStore(make_s3_client(settings), settings, params["bucket"], params["prefix"])
        result = store.record(
            cluster=params["cluster"],
            node=params["node"],
            data=params["data"] if params["state"] == "present" else None,
            created_at=params["created_at"],
            labels=params["labels"],
            entry_id=params["entry_id"],
            verify=params["verify"],
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
