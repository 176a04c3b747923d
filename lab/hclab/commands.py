"""What each hclab subcommand does, as functions (the CLI and the pytest fixtures call these)."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.hclab import LabError, kwok, paths
from lab.hclab.cluster import (
    NODE_MONITOR_GRACE_PERIOD,
    NODES_TIMEOUT,
    PORT_NAMES,
    Cluster,
    allocate_ports,
    api_client,
    check_node_name,
    default_specs,
    node_ready,
)
from lab.hclab.process import ProcessRecord, log_tail, processes_using, signal_record, start, start_time_of, stop_all, wait_for
from lab.hclab.state import LOCK_FILE, STATE_FILE, LabState, locked, require

Say = Callable[[str], None]

FAIL_NODE_TIMEOUT = 90.0
RESTORE_NODE_TIMEOUT = 90.0
# Node commands wait this long for another hclab command (e.g. the cloud watcher's add-node) to finish.
NODE_LOCK_WAIT = 60.0


def up(directory: Path, onprem_nodes: int, cloud_nodes: int, say: Say) -> LabState:
    """Start both clusters; on any failure stop everything started and raise (logs are kept)."""
    if onprem_nodes < 0 or cloud_nodes < 0:
        raise LabError("node counts cannot be negative")
    binaries = paths.all_binaries()
    with locked(directory):
        _claim(directory)
        lab = LabState(directory=directory, bin_dir=str(paths.bin_dir()))
        specs = default_specs(onprem_nodes, cloud_nodes)
        ports = allocate_ports(len(PORT_NAMES) * len(specs))
        clusters = []
        for index, spec in enumerate(specs):
            mine = ports[index * len(PORT_NAMES):(index + 1) * len(PORT_NAMES)]
            clusters.append(Cluster.new(spec, lab, dict(zip(PORT_NAMES, mine)), binaries, say))
        lab.save()
        try:
            with ThreadPoolExecutor(max_workers=len(clusters), thread_name_prefix="hclab-up") as pool:
                futures = [pool.submit(cluster.up) for cluster in clusters]
                errors = [(cluster.spec.name, future.exception()) for cluster, future in zip(clusters, futures)]
            failures = [(name, error) for name, error in errors if error is not None]
            if failures:
                message = "\n".join(f"{name}: {error}" for name, error in failures)
                first = failures[0][1]
                raise LabError(message) from first
        except BaseException:
            say("startup failed: stopping what was started")
            _stop_everything(lab, directory, say)
            lab.save()
            say(f"logs kept in {directory}/<cluster>/logs; `python -m lab.hclab down --state-dir {directory}` removes them")
            raise
        return lab


def _claim(directory: Path) -> None:
    """Make ``directory`` ready for a new lab: refuse a running lab or a folder that is not a lab's."""
    existing = LabState.load(directory)
    if existing is not None:
        running = [record.name for record in existing.records() if record.alive()]
        running += [f"pid {pid}" for pid, _argv in processes_using(directory, paths.REQUIRED_BINARIES)]
        if running:
            raise LabError(f"a lab is already running at {directory} ({', '.join(sorted(set(running)))}). Fix: `python -m lab.hclab down` first")
    else:
        others = [entry.name for entry in directory.iterdir() if entry.name != LOCK_FILE]
        if others:
            raise LabError(f"{directory} is not empty and holds no lab ({', '.join(sorted(others)[:5])}). Fix: choose an empty --state-dir")
    for entry in directory.iterdir():  # a stale lab whose processes are all gone
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


_SHUTDOWN_TIERS = (0, 1, 2)


def _tier(component: str) -> int:
    return {"kube-apiserver": 1, "etcd": 2}.get(component, 0)


def _strays(directory: Path) -> list[ProcessRecord]:
    """Lab programs still running with files of ``directory`` on their command line."""
    found = []
    for pid, argv in processes_using(directory, paths.REQUIRED_BINARIES):
        started = start_time_of(pid)
        if started is not None:
            found.append(ProcessRecord(name=Path(argv[0]).name, pid=pid, start_time=started, log="", argv=argv))
    return found


def _stop_everything(lab: LabState | None, directory: Path, say: Say) -> None:
    """Stop every recorded process, then any other lab program still using files of ``directory``."""
    records = lab.records() if lab else []
    # Clients first, then the API server, then etcd: a kube-apiserver whose etcd is gone
    # does not finish its graceful shutdown (it was seen still running 15 s after SIGTERM).
    for tier in _SHUTDOWN_TIERS:
        stop_all([record for record in records if _tier(record.name) == tier], say)
    strays = _strays(directory)
    if strays:
        say(f"stopping {len(strays)} process(es) not in the state file but using {directory}: {', '.join(str(r.pid) for r in strays)}")
        stop_all(strays, say)
    leftovers = [record for record in records + strays if record.alive()] + _strays(directory)
    if leftovers:
        raise LabError(f"could not stop: {', '.join(sorted({f'{r.name} (pid {r.pid})' for r in leftovers}))}")


def down(directory: Path, keep_state: bool, say: Say) -> None:
    """Stop everything the lab started (by pid), then remove its state unless ``keep_state``."""
    if not directory.exists():
        say(f"no lab at {directory}")
        return
    with locked(directory):
        lab = LabState.load(directory)
        if lab is None and not processes_using(directory, paths.REQUIRED_BINARIES):
            others = [entry.name for entry in directory.iterdir() if entry.name != LOCK_FILE]
            if others:
                raise LabError(f"{directory} holds no lab ({STATE_FILE} missing); not removing it")
            shutil.rmtree(directory)
            say(f"no lab at {directory}")
            return
        _stop_everything(lab, directory, say)
        if lab is not None:
            lab.save()
        if keep_state:
            say(f"stopped; state and logs kept in {directory}")
            return
        shutil.rmtree(directory)
        say(f"stopped; removed {directory}")


def _record(lab: LabState, cluster: str, node: str) -> ProcessRecord:
    state = lab.cluster(cluster)
    record = state.processes.get(f"kwok-{node}")
    if node not in state.nodes or record is None:
        raise LabError(f"{cluster} has no node {node!r}; its nodes: {', '.join(state.nodes) or 'none'}")
    return record


def _node_condition(lab: LabState, cluster: str, node: str) -> str:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    core = client.CoreV1Api(api_client(lab.cluster(cluster).kubeconfig))
    return node_ready(core.read_node(node, _request_timeout=5))


def fail_node(directory: Path, cluster: str, node: str, wait: bool, say: Say) -> None:
    """Kill the node's kwok with SIGKILL: no more lease renewals or status updates, like a dead host."""
    with locked(directory, NODE_LOCK_WAIT):
        lab = require(directory)
        record = _record(lab, cluster, node)
        if not record.alive():
            raise LabError(f"{cluster}/{node} is already down (kwok pid {record.pid} is not running). `restore-node` brings it back")
        signal_record(record, signal.SIGKILL)
        wait_for(f"kwok of {node} (pid {record.pid}) to die", lambda: not record.alive(), 10)
        record.killed = True
        lab.save()
    say(
        f"{cluster}/{node}: killed kwok pid {record.pid} (SIGKILL). Its lease stops; the node-lifecycle controller "
        f"marks it Ready=Unknown after --node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}; its pods stay bound to it."
    )
    if wait:
        started = time.monotonic()
        wait_for(f"{cluster}/{node} NotReady", lambda: _node_condition(lab, cluster, node) not in ("True", ""), FAIL_NODE_TIMEOUT, interval=0.5)
        say(f"{cluster}/{node}: Ready={_node_condition(lab, cluster, node)} after {time.monotonic() - started:.1f}s")


def restore_node(directory: Path, cluster: str, node: str, wait: bool, say: Say) -> None:
    """Start the node's kwok again (the host came back); it takes the lease over and the node turns Ready."""
    with locked(directory, NODE_LOCK_WAIT):
        lab = require(directory)
        state = lab.cluster(cluster)
        record = _record(lab, cluster, node)
        if record.alive():
            raise LabError(f"{cluster}/{node} is running (kwok pid {record.pid}); nothing to restore")
        workdir = Path(state.directory) / "kwok" / node
        fresh = start(record.name, record.argv, Path(record.log), cwd=Path(state.directory), env=kwok.environment(workdir), cluster=cluster)
        state.processes[record.name] = fresh
        lab.save()
    say(f"{cluster}/{node}: kwok started again (pid {fresh.pid})")
    if wait:
        started = time.monotonic()

        def died() -> str | None:
            return None if fresh.alive() else f"kwok of {node} exited; log {fresh.log}:\n{fresh.log_tail(30)}"

        wait_for(f"{cluster}/{node} Ready", lambda: _node_condition(lab, cluster, node) == "True", RESTORE_NODE_TIMEOUT, interval=0.5, failed=died)
        say(f"{cluster}/{node}: Ready after {time.monotonic() - started:.1f}s")


def add_node(directory: Path, cluster: str, node: str, labels: Mapping[str, str] | None, wait: bool, say: Say) -> bool:
    """One more kwok node in a running cluster, made as ``up`` makes its nodes; False if it runs already.

    A node the lab knows whose kwok is not running (fail-node) is an error: ``restore-node`` is
    what brings it back. ``wait``: until the Node is Ready with a pod CIDR.
    """
    check_node_name(node)
    with locked(directory, NODE_LOCK_WAIT):
        lab = require(directory)
        state = lab.cluster(cluster)
        if node in state.nodes:
            existing = state.processes.get(f"kwok-{node}")
            if existing is not None and existing.alive():
                say(f"{cluster}/{node}: already there (kwok pid {existing.pid}); nothing to do")
                return False
            raise LabError(
                f"{cluster}/{node} exists but its kwok is not running. Fix: `restore-node {cluster} {node}` brings it back, "
                f"or `remove-node {cluster} {node}` first"
            )
        target = Cluster.running(lab, cluster, say)
        record = target.add_node(node, labels)
    extra = f" with {', '.join(f'{key}={value}' for key, value in sorted((labels or {}).items()))}" if labels else ""
    say(f"{cluster}/{node}: added{extra}; kwok pid {record.pid}")
    if wait:
        started = time.monotonic()
        target.wait_nodes_ready([node], NODES_TIMEOUT)
        say(f"{cluster}/{node}: Ready after {time.monotonic() - started:.1f}s")
    return True


def remove_node(directory: Path, cluster: str, node: str, say: Say) -> bool:
    """Stop the node's kwok and delete its Node object (its pods are left to the pod GC); False if unknown."""
    with locked(directory, NODE_LOCK_WAIT):
        lab = require(directory)
        state = lab.cluster(cluster)
        if node not in state.nodes:
            say(f"{cluster} has no node {node!r}; nothing to remove (its nodes: {', '.join(state.nodes) or 'none'})")
            return False
        record = Cluster.running(lab, cluster, say).remove_node(node)
    say(f"{cluster}/{node}: removed (kwok{f' pid {record.pid}' if record else ''} stopped, Node deleted)")
    return True


def status(directory: Path) -> dict[str, Any]:
    """Per cluster: endpoints, kubeconfig, processes (alive or not) and nodes with their Ready condition."""
    lab = require(directory)
    report: dict[str, Any] = {"state_dir": str(directory), "clusters": {}}
    lock = threading.Lock()

    def describe(name: str) -> None:
        cluster = lab.clusters[name]
        processes = {
            component: {"pid": record.pid, "alive": record.alive(), "killed": record.killed, "endpoint": record.endpoint, "log": record.log}
            for component, record in cluster.processes.items()
        }
        entry: dict[str, Any] = {
            "server": cluster.server,
            "kubeconfig": cluster.kubeconfig,
            "ca_cert": cluster.ca_cert,
            "etcd": cluster.etcd,
            "ports": cluster.ports,
            "service_cidr": cluster.service_cidr,
            "pod_cidr": cluster.pod_cidr,
            "processes": processes,
            "nodes": {},
        }
        try:
            from kubernetes import client  # pylint: disable=import-outside-toplevel

            core = client.CoreV1Api(api_client(cluster.kubeconfig))
            for item in core.list_node(_request_timeout=5).items:
                entry["nodes"][item.metadata.name] = node_ready(item) or "(no Ready condition)"
        except Exception as error:  # pylint: disable=broad-exception-caught  # status reports, never fails
            entry["api_error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        with lock:
            report["clusters"][name] = entry

    with ThreadPoolExecutor(max_workers=max(1, len(lab.clusters))) as pool:
        list(pool.map(describe, lab.clusters))
    report["clusters"] = {name: report["clusters"][name] for name in lab.clusters}
    return report


def component_log(directory: Path, cluster: str, component: str, lines: int) -> str:
    """The end of one component's log (``lines`` <= 0: all of it)."""
    lab = require(directory)
    state = lab.cluster(cluster)
    record = state.processes.get(component) or state.processes.get(f"kwok-{component}")
    if record is None:
        raise LabError(f"{cluster} has no component {component!r}; components: {', '.join(state.processes)}")
    if lines <= 0:
        return Path(record.log).read_text(errors="replace")
    return log_tail(Path(record.log), lines)
