# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hcm-velero-catalog: record the newest completed Velero backups of the cluster in the backup catalog.

Run by the hcm-velero-catalog systemd timer (role hybridcloud.migration.velero_catalog) on one
host of the site. Velero has no hook that runs when a backup completes, so each run reads the
Backup objects Velero stored beside its tarballs, picks the newest Completed backup of each
schedule, hashes the tarballs and writes the ``_velero`` catalog entry (unless the latest entry
names those backups already), then prunes entries of expired backups. It needs S3 access only.

Standard library only; the role ships it as one zipapp with the collection's catalog code.
"""

from __future__ import annotations

import logging
import os
import sys
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils import velero_catalog
from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_runtime import agent_main, load_settings, single_run
from ansible_collections.hybridcloud.migration.plugins.module_utils.catalog_store import CatalogStore
from ansible_collections.hybridcloud.migration.plugins.module_utils.s3_client import S3Settings, make_stdlib_s3_client

log = logging.getLogger("hcm-velero-catalog")
REQUIRED_SETTINGS = {"": ("cluster", "s3", "work_dir"), "s3": ("bucket", "access_key", "secret_key")}


def run(settings: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    s3 = settings["s3"]
    s3_settings = S3Settings.from_params(s3, environ={})
    client = make_stdlib_s3_client(s3_settings)
    store = CatalogStore(client, s3_settings, s3["bucket"], settings.get("catalog_prefix", "catalog"))
    retention = settings.get("retention") or {}
    os.makedirs(settings["work_dir"], mode=0o700, exist_ok=True)
    with single_run(os.path.join(settings["work_dir"], ".velero-catalog.lock")):
        result = velero_catalog.sync(
            store, settings["cluster"], client, settings.get("velero_bucket") or s3["bucket"],
            settings.get("velero_prefix", "velero"), settings.get("schedules") or (),
            keep_last=retention.get("keep_last"), max_age=retention.get("max_age"),
        )
    for warning in result["warnings"]:
        log.warning("%s", warning)
    log.info("Velero backups named by the catalog: %s; pruned %d entries", ", ".join(result["recorded"]), len(result["pruned"]))
    return result


def main(argv: t.Sequence[str] | None = None) -> int:
    return agent_main(
        "hcm-velero-catalog", __doc__.split("\n\n", 1)[0], "/etc/hybridcloud-migration/hcm-velero-catalog.json",
        lambda path: run(load_settings(path, REQUIRED_SETTINGS, "velero_catalog")), argv,
    )


if __name__ == "__main__":
    sys.exit(main())
