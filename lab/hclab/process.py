"""Processes the lab starts: launch detached with a log file, check, wait for, and stop by pid.

A process is known by its pid *and* its start time (``/proc/<pid>/stat`` field 22), so a pid
the kernel has since given to another program is never signalled. A zombie counts as dead:
the lab's components outlive the ``up`` command that started them, so once killed they wait
for PID 1 to reap them (on these VMs it does so only every few seconds).
"""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lab.hclab import LabError

T = TypeVar("T")

STOP_TIMEOUT = 15.0


@dataclass
class ProcessRecord:
    """One started component, as kept in the state file."""

    name: str
    pid: int
    start_time: int
    log: str
    argv: list[str] = field(default_factory=list)
    endpoint: str = ""
    killed: bool = False  # set by fail-node: the lab killed it on purpose
    cluster: str = ""

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.name}" if self.cluster else self.name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_time)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(Path(self.log), lines)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0]); None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_time_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, start_time: int) -> bool:
    """True when ``pid`` is the process started at ``start_time`` and it is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == start_time


def process_group_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def start(
    name: str, argv: Sequence[str], log: Path, *, cwd: Path, env: Mapping[str, str] | None = None, endpoint: str = "", cluster: str = ""
) -> ProcessRecord:
    """Start ``argv`` in its own session (it outlives the caller) with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        handle.write(f"=== hclab: {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        handle.flush()
        try:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with  # it must outlive us
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # its own session and process group, no terminal
                close_fds=True,
            )
        except OSError as error:
            raise LabError(f"{name}: cannot run {argv[0]}: {error}") from error
    started = start_time_of(proc.pid)
    if started is None:  # it died already and was reaped? Popen has not waited: still a zombie
        started = -1
    # Popen's finalizer would warn that the child still runs; the lab tracks it by pid instead.
    proc.returncode = 0
    return ProcessRecord(name=name, pid=proc.pid, start_time=started, log=str(log), argv=list(argv), endpoint=endpoint, cluster=cluster)


def signal_record(record: ProcessRecord, sig: signal.Signals) -> bool:
    """Send ``sig`` to the record's process group if its leader is still that process."""
    if not record.alive():
        return False
    try:
        if process_group_of(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_all(records: Sequence[ProcessRecord], say: Callable[[str], None], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every live record, wait up to ``timeout``, then SIGKILL the rest and wait again."""
    for record in records:
        if signal_record(record, signal.SIGTERM):
            say(f"{record.label}: SIGTERM pid {record.pid}")
    deadline = time.monotonic() + timeout
    while any(record.alive() for record in records) and time.monotonic() < deadline:
        time.sleep(0.05)
    for record in records:
        if signal_record(record, signal.SIGKILL):
            say(f"{record.label}: still running {timeout:.0f}s after SIGTERM, SIGKILL pid {record.pid}")
    deadline = time.monotonic() + timeout
    while any(record.alive() for record in records) and time.monotonic() < deadline:
        time.sleep(0.05)


def _ancestors() -> set[int]:
    """This process and its ancestors (a shell or ``timeout`` may carry the state dir in its argv)."""
    found = set()
    pid = os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        fields = _stat_fields(pid)
        pid = int(fields[1]) if fields else 0
    return found


def processes_using(directory: Path, programs: Sequence[str]) -> list[tuple[int, list[str]]]:
    """Live processes running one of ``programs`` (by name) with an argument inside ``directory``.

    Every lab component is given its certificates, kubeconfig or data dir under the state
    directory, so this finds any component the state file does not know about (for example
    one started by an ``up`` that was killed before it could record it).
    """
    prefix = str(directory).rstrip("/") + "/"
    skip = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            argv = [part.decode(errors="replace") for part in (entry / "cmdline").read_bytes().split(b"\0") if part]
        except OSError:
            continue
        if not argv or Path(argv[0]).name not in programs:
            continue
        if any(arg.startswith(prefix) or ("=" + prefix) in arg for arg in argv[1:]):
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                found.append((int(entry.name), argv))
    return found


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, read from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 2048 * lines))
            data = handle.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.25,
    failed: Callable[[], str | None] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something other than None/False; LabError after ``timeout``.

    ``failed`` is asked on every round whether waiting is pointless (a process died); its
    answer becomes the error. ``detail`` adds to a timeout's error (the end of a log).
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = check()
        except Exception as error:  # pylint: disable=broad-exception-caught  # retried until the deadline
            result = None
            last_error = f"{type(error).__name__}: {error}"
        if result is not None and result is not False:
            return result
        problem = failed() if failed else None
        if problem:
            raise LabError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            message = f"{what}: not done after {timeout:.0f}s" + (f" (last error: {last_error})" if last_error else "")
            raise LabError(message + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def tls_context(ca: Path, client_cert: Path | None = None, client_key: Path | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts only ``ca`` (and presents a client certificate if given)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if client_cert and client_key:
        context.load_cert_chain(str(client_cert), str(client_key))
    return context


def https_get(host: str, port: int, path: str, context: ssl.SSLContext, timeout: float = 3.0) -> tuple[int, str]:
    """GET over TLS straight to host:port (no proxy from the environment); (status, body)."""
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()
