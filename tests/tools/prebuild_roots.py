"""Build every Debian 13 root the test suite uses, ahead of the tests that need them.

``make test`` runs this in the background while the Go builds, lint, sanity and unit tests run:
debootstrap waits mostly on the network and the disk, the Go builds on the CPU, so on a cold
machine the roots cost little extra time instead of one after another inside the integration
tests. Each root is built once per package set and cached (lab/hclab/debian_root.py, which also
locks, so a test that needs a root still being built here waits for it). Ordered by first use.
"""

from __future__ import annotations

import sys
import time

from lab.hclab.debian_root import DEFAULT_PACKAGES, ensure_debian_root, root_name
from lab.hclab.worker_image import PACKAGES as WORKER_IMAGE_PACKAGES
from tests.integration.test_restore_state import CRIO_NODE_PACKAGES
from tests.integration.test_worker_node import BASE_PACKAGES, WORKER_PACKAGES

PACKAGE_SETS = (
    BASE_PACKAGES,  # test_backup_playbook, molecule's instances
    DEFAULT_PACKAGES,  # the etcd server, the kubelet stand-in
    ("python3", "restic"),  # the new node of the migrate tests
    ("python3",),  # test_join_node
    WORKER_IMAGE_PACKAGES,  # the lab's worker image (test_lab_vm, the demo)
    CRIO_NODE_PACKAGES,  # test_restore_state
    WORKER_PACKAGES,  # test_worker_node
)


def main() -> int:
    failed = 0
    for packages in PACKAGE_SETS:
        began = time.monotonic()
        try:
            root = ensure_debian_root(packages=packages)
        except (OSError, RuntimeError) as err:  # the test that needs it builds it again, and fails with the reason
            failed += 1
            print(f"{root_name(packages)} ({', '.join(packages)}): FAILED: {err}", flush=True)
            continue
        print(f"{root} ({', '.join(packages)}): ready after {time.monotonic() - began:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
