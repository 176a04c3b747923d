"""Waiting on a condition with a deadline, for tests (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.25) -> T:
    """Return ``check()``'s first truthy answer; fail naming ``what`` and the last answer after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not true after {timeout:.0f}s (last answer: {answer!r})")
        time.sleep(interval)
