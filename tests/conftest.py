"""Shared pytest setup: make the collection importable and load the service fixtures.

Ansible imports a collection as ``ansible_collections.<namespace>.<name>``, so the checkout
is linked into such a tree under .build/ and that tree goes on sys.path. Tests then import
module_utils exactly as Ansible does, without Ansible running.
"""

from __future__ import annotations

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
COLLECTIONS_ROOT = REPO / ".build" / "collections"


def _link_collection() -> None:
    link = COLLECTIONS_ROOT / "ansible_collections" / "hybridcloud" / "migration"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name("migration.tmp-%d" % os.getpid())
        tmp.symlink_to(REPO, target_is_directory=True)
        os.replace(tmp, link)  # atomic: parallel pytest runs never see a half-made link
    if str(COLLECTIONS_ROOT) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS_ROOT))


_link_collection()

pytest_plugins = [
    "tests.helpers.fixtures_services",
    "tests.helpers.fixtures_debian_root",
    "tests.helpers.fixtures_lab",
    "tests.helpers.lab_vms",
    "tests.helpers.velero",
]
