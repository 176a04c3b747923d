# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A migration run as saved in S3: its plan, read back by run id (for moving the workloads back).

Only reads. ``migration_plan`` writes the plan under ``<plans_prefix>/<cluster>/<run_id>/plan.json``
when the run starts; reading it here never plans anew, so a wrong run id is refused instead of
turning into a new plan.
"""

from __future__ import annotations

import json
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import plan_key, summarize_plan


def parse_plan(raw: bytes, where: str, run_id: str) -> dict[str, t.Any]:
    """The saved plan document, checked to be the plan of ``run_id``."""
    try:
        plan = json.loads(raw)
    except ValueError as err:
        raise MigrationError("%s is not JSON: %s" % (where, err), "the plan was damaged; restore it from the bucket's versions") from err
    if not isinstance(plan, dict) or not isinstance(plan.get("selected"), list):
        raise MigrationError("%s is not a migration plan (no selected list)" % where, "check the run id and the plans prefix")
    if str(plan.get("run_id") or "") != run_id:
        raise MigrationError("%s is the plan of run %r, not %r" % (where, plan.get("run_id"), run_id), "check the run id")
    return plan


def read_plan(store: CatalogStore, plans_prefix: str, cluster: str, run_id: str) -> dict[str, t.Any]:
    """{plan, plan_key, summary} of a run, or a MigrationError saying where it was looked for."""
    catalog.check_name(cluster, "cluster")
    if not run_id:
        raise MigrationError("No run id given", "give the id of the migration run (hcm_migration_run_id)")
    key = plan_key(plans_prefix, cluster, run_id)
    raw = store.read_bytes(key, "reading the plan of run %s" % run_id)
    if raw is None:
        raise MigrationError(
            "Run %s of cluster %s has no plan at s3://%s/%s" % (run_id, cluster, store.bucket, key),
            "give the run id migrate.yml used (its report's title names it: <failed node>-to-<target cluster>-<when it failed>) and the source cluster's name",
        )
    plan = parse_plan(raw, "s3://%s/%s" % (store.bucket, key), run_id)
    return {"plan": plan, "plan_key": key, "summary": summarize_plan(plan)}
