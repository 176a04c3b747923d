# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bundle an agent program and the collection's catalog code into one zipapp (PEP 441).

The backup agents run on nodes, which have Python but not boto3 or this collection, and they
must write the backup catalog exactly as the modules do. A zipapp holds the agent (as
``__main__.py``) and the standard-library part of module_utils in one file that any Python 3.9+
runs. The archive is reproducible (sorted entries, fixed timestamps): the same sources give the
same bytes, so copying it to nodes again changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import zipfile

PACKAGE = "ansible_collections/hybridcloud/migration/plugins/module_utils"
# The module_utils the agents import, and what those import. Standard library only.
MODULE_UTILS = ("errors.py", "catalog.py", "catalog_store.py", "s3_client.py", "s3_sigv4.py", "agent_runtime.py", "velero_catalog.py")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
_HERE = pathlib.Path(__file__).resolve().parent


def bundle_bytes(main: pathlib.Path) -> bytes:
    """The zipapp for agent ``main``, as bytes."""
    files = {"__main__.py": main.read_bytes()}
    parts = PACKAGE.split("/")
    for depth in range(1, len(parts) + 1):
        files["/".join(parts[:depth]) + "/__init__.py"] = b""
    for name in MODULE_UTILS:
        files["%s/%s" % (PACKAGE, name)] = (_HERE / name).read_bytes()
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def build_bundle(main: pathlib.Path, output_dir: pathlib.Path) -> pathlib.Path:
    """Write the zipapp under ``output_dir``, named by its content, and return its path."""
    data = bundle_bytes(main)
    output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = output_dir / ("%s-%s.pyz" % (main.stem, hashlib.sha256(data).hexdigest()[:16]))
    if not target.exists():
        tmp = target.with_name("%s.%d.tmp" % (target.name, os.getpid()))
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(target)
    return target
