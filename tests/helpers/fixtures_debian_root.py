"""Pytest plugin: the cached Debian trixie root (criu 4.1, etcd, restic) as a fixture.

Listed in ``pytest_plugins`` of tests/conftest.py, or loaded with
``-p tests.helpers.fixtures_debian_root``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.hclab.debian_root import ensure_debian_root

_build_error: Exception | None = None


@pytest.fixture(scope="session")
def debian_root() -> Path:
    """Path of the cached trixie root, built on first use (about 30 s, 340 MB).

    A failed build raises: tests that need the root error out instead of being skipped,
    so CI notices a broken mirror or a missing capability.
    """
    global _build_error
    if _build_error is not None:  # pytest retries a failed session fixture for every test
        raise _build_error
    try:
        return ensure_debian_root()
    except Exception as error:
        _build_error = error
        raise
