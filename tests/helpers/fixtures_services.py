"""pytest plugin: real local services as fixtures, with their logs shown on failure.

Load it with ``pytest_plugins = ["tests.helpers.fixtures_services"]`` (or
``-p tests.helpers.fixtures_services``). Session fixtures are shared by all
tests, so a test that stops a server must use ``private_s3_server`` instead.
When a test fails, the last lines of the log of every service it used are
added to its report.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from lab.hclab.services import EtcdServer, LocalService, MotoServer, S3Server

LOG_TAIL_LINES = 80


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: starts real local services (rclone, moto, etcd)"
    )


class S3ServerFactory:
    """Starts private ``S3Server``s (own port and folder) for tests that stop or restart them."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.services: list[S3Server] = []

    def __call__(self, **kwargs: Any) -> S3Server:
        kwargs.setdefault("name", f"rclone-s3-private-{len(self.services)}")
        server = S3Server(self._tmp.mktemp("private-s3"), **kwargs)
        self.services.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        for server in self.services:
            server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Session-wide ``rclone serve s3``; use ``s3_bucket`` for an isolated bucket."""
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Session-wide ``moto_server`` (state is shared; call ``reset()`` if a test needs it empty)."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """Session-wide single-member etcd."""
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the session S3 server, named after the test; returns its name."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return s3_server.create_bucket(f"{stem or 't'}-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def private_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3ServerFactory]:
    """Factory: ``private_s3_server()`` starts an S3Server this test owns; stopped at teardown."""
    factory = S3ServerFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


def _services_of(item: pytest.Item) -> list[LocalService]:
    """The services among the fixtures this test used (directly or through other fixtures)."""
    found: list[LocalService] = []
    for value in (getattr(item, "funcargs", None) or {}).values():
        candidates = value.services if isinstance(value, S3ServerFactory) else [value]
        found.extend(s for s in candidates if isinstance(s, LocalService) and s not in found)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for service in _services_of(item):
            report.sections.append(
                (
                    f"{service.name} log (last {LOG_TAIL_LINES} lines of {service.log_path})",
                    service.log_tail(LOG_TAIL_LINES),
                )
            )
    return report
