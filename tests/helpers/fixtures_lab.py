"""pytest plugin: the lab's two real Kubernetes clusters (onprem, cloud) as fixtures.

``lab`` (session) runs ``python -m lab.hclab up`` once, as a user would, in a state directory
of its own, and ``down`` when the session ends. Tests get a ``Lab``: kubeconfig, API server,
CA and nodes per cluster, ``fail_node``/``restore_node``, ``add_node``/``remove_node``, an
ApiClient, the state file, and ``cloud_watcher`` (moto's EC2 instances join as nodes, see
``lab.hclab.cloud_watcher``). A test that fails a node of the shared lab must restore it
(``restore_node``) when done, and remove the nodes it added.
``lab_factory`` starts private labs for tests that stop them. When a test fails, the end of
each lab component's log is added to its report.

The binaries come from ``make lab-build`` (or ``$HCM_LAB_BIN``); without them the fixtures
fail with hclab's message naming the fix: they are never skipped.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from lab.hclab.client import Lab, LabCommandError
from lab.hclab.paths import REPO

__all__ = ["REPO", "Lab", "LabCommandError", "LabFactory", "lab", "lab_factory"]

_session_error: Exception | None = None


class LabFactory:
    """Starts private labs (their own state dir) for tests that stop or break them; all downed at teardown."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.labs: list[Lab] = []

    def __call__(self, onprem_nodes: int = 1, cloud_nodes: int = 1) -> Lab:
        lab = Lab(self._tmp.mktemp("hclab-private"))
        self.labs.append(lab)
        return lab.up(onprem_nodes, cloud_nodes)

    def down_all(self) -> None:
        for lab in self.labs:
            if lab.state_dir.exists():
                lab.down()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Both clusters, started once per session: onprem with 3 kwok nodes, cloud with 2."""
    global _session_error  # pylint: disable=global-statement
    if _session_error is not None:  # pytest would run a failed session fixture again for every test
        raise _session_error
    session_lab = Lab(tmp_path_factory.mktemp("hclab"))
    try:
        session_lab.up(onprem_nodes=3, cloud_nodes=2)
    except Exception as error:
        _session_error = error
        if session_lab.state_dir.exists():
            session_lab.run("down", "--keep-state", check=False)
        raise
    yield session_lab
    session_lab.down()


@pytest.fixture
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFactory]:
    """``lab_factory(onprem_nodes, cloud_nodes)`` starts a private lab; every one is downed at teardown."""
    factory = LabFactory(tmp_path_factory)
    yield factory
    factory.down_all()


def _labs_of(item: pytest.Item) -> list[Lab]:
    found: list[Lab] = []
    for value in (getattr(item, "funcargs", None) or {}).values():
        candidates = value.labs if isinstance(value, LabFactory) else [value]
        found.extend(candidate for candidate in candidates if isinstance(candidate, Lab) and candidate not in found)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for used in _labs_of(item):
            report.sections.extend(used.log_tails())
    return report
