"""The lab's state file: what runs where, written as each process starts.

``<state dir>/state.json`` records per cluster its directory, ports, CIDRs, kubeconfig, nodes
and every process started (pid, start time, log, argv). ``status``, ``logs``, ``fail-node``
and ``down`` read it; ``up`` rewrites it after every step, so a crash part-way still leaves
``down`` the pids to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.hclab import LabError
from lab.hclab.process import ProcessRecord

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
TOOL = "hclab"
SCHEMA_VERSION = 1


@dataclass
class ClusterState:
    """One cluster: where it lives and what runs for it."""

    name: str
    directory: str
    server: str = ""
    kubeconfig: str = ""
    ca_cert: str = ""
    service_cidr: str = ""
    pod_cidr: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    etcd: dict[str, str] = field(default_factory=dict)  # endpoint, ca, cert, key (for etcdctl)
    nodes: list[str] = field(default_factory=list)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__ if key != "processes"}
        data["processes"] = {name: record.to_json() for name, record in self.processes.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data and key != "processes"}
        state = cls(**fields)
        state.processes = {name: ProcessRecord.from_json(record) for name, record in data.get("processes", {}).items()}
        return state


@dataclass
class LabState:
    """Everything the lab started, under one state directory."""

    directory: Path
    bin_dir: str = ""
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def records(self) -> list[ProcessRecord]:
        return [record for cluster in self.clusters.values() for record in cluster.processes.values()]

    def cluster(self, name: str) -> ClusterState:
        try:
            return self.clusters[name]
        except KeyError:
            raise LabError(f"no cluster {name!r} in the lab at {self.directory}; clusters: {', '.join(self.clusters) or 'none'}") from None

    def save(self) -> None:
        """Write the state atomically (threads bringing up clusters save concurrently)."""
        with self._lock:
            data = {
                "tool": TOOL,
                "schema_version": SCHEMA_VERSION,
                "state_dir": str(self.directory),
                "bin_dir": self.bin_dir,
                "clusters": {name: cluster.to_json() for name, cluster in self.clusters.items()},
            }
            tmp = self.path.with_name(f"{STATE_FILE}.tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self.path)

    @classmethod
    def load(cls, directory: Path) -> LabState | None:
        """The state in ``directory``, or None when there is no lab there."""
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise LabError(f"{path} is not valid JSON ({error}). Fix: stop its processes by hand, then remove {directory}") from error
        if data.get("tool") != TOOL:
            raise LabError(f"{path} was not written by hclab; not touching {directory}")
        state = cls(directory=directory, bin_dir=data.get("bin_dir", ""))
        state.clusters = {name: ClusterState.from_json(cluster) for name, cluster in data.get("clusters", {}).items()}
        return state


def require(directory: Path) -> LabState:
    state = LabState.load(directory)
    if state is None:
        raise LabError(f"no lab at {directory} (no {STATE_FILE}). Fix: run `python -m lab.hclab up` (or pass the --state-dir it used)")
    return state


@contextlib.contextmanager
def locked(directory: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the state directory's lock: one ``up``/``down``/``fail-node``/``add-node`` at a time.

    ``wait``: seconds to wait for another command to finish (node commands are short; the
    cloud watcher adds nodes while tests fail and restore others).
    """
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    with open(directory / LOCK_FILE, "a", encoding="utf-8") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(f"another hclab command is working on {directory}; wait for it to finish") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
