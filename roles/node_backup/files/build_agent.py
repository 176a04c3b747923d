#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bundle the node backup agent and the collection's catalog code into one zipapp.

The agent writes the backup catalog with the same code the modules use (module_utils), and
nodes need one standard-library-only file: a zipapp (PEP 441) holds both. The archive is
reproducible (sorted entries, fixed timestamps), so re-running the role copies nothing new.

    build_agent.py OUTPUT.pyz
"""

from __future__ import annotations

import pathlib
import sys
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
COLLECTION = HERE.parents[2]  # roles/node_backup/files -> the collection root
PACKAGE = "ansible_collections/hybridcloud/migration/plugins/module_utils"
# What the agent imports, and what those import: keep in step with hcm_node_backup.py.
MODULE_UTILS = ("errors.py", "catalog.py", "catalog_store.py", "s3_client.py", "s3_sigv4.py")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def build(output: pathlib.Path) -> None:
    files = {"__main__.py": (HERE / "hcm_node_backup.py").read_bytes()}
    parts = PACKAGE.split("/")
    for depth in range(1, len(parts) + 1):
        files["/".join(parts[:depth]) + "/__init__.py"] = b""
    for name in MODULE_UTILS:
        files["%s/%s" % (PACKAGE, name)] = (COLLECTION / "plugins" / "module_utils" / name).read_bytes()
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("wb") as raw:
        raw.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, files[name])
    tmp.chmod(0o755)
    tmp.replace(output)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_agent.py OUTPUT.pyz")
    build(pathlib.Path(sys.argv[1]))
