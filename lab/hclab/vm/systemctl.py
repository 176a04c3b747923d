"""``systemctl`` and ``journalctl`` of a lab VM: the part of them that talks to PID 1, for its init.

LAB INFRASTRUCTURE. A lab VM's PID 1 is lab/hclab/vm/init.py, not systemd, so the image's own
systemctl cannot operate ("System has not been booted with systemd"). vm/boot.sh copies this file
onto the VM's disk (never into the image), with /usr/local/sbin/systemctl and journalctl running
it (``python3 systemctl.py TOOL ARGS``); they come first on PATH, so what a worker's tools ask of systemd gets an answer from init.py:

- ``show``, ``is-active``, ``is-enabled``, ``status``: from the unit files and the state init.py
  keeps in /run/hclab/units (``<unit>.state``: activating, active, inactive or failed; ``.pid``);
- ``start``: a ``Type=oneshot`` service runs here and now, as systemd would run it (init.py's unit
  reader: EnvironmentFile=, ExecStartPre=, ExecStart=), its output appended to its log, and the
  exit says how it went; a supervised service stopped with ``stop`` starts again;
- ``stop``, ``restart``: a service init.py supervises is signalled (its supervisor holds a stopped
  one until ``start``, and starts a restarted one again at once);
- ``enable``/``disable`` (with ``--now``), ``daemon-reload``, ``reset-failed``;
- ``journalctl -u UNIT [-n N]``: the end of the unit's log, /var/log/hclab/<unit>.log.

Timers are not run (init.py has no clock for them): starting one is refused with that reason.
Stdlib only: it runs on the image's python3.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

INIT = Path("/run/hclab-init.py")
STATE_DIR = Path("/run/hclab/units")
LOG_DIR = Path("/var/log/hclab")
WANTS_DIR = Path("/etc/systemd/system")
REAL = {"systemctl": "/usr/bin/systemctl", "journalctl": "/usr/bin/journalctl"}


def init_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("hclab_init", INIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def unit_file(name: str) -> Path | None:
    return next((d / name for d in init_module().UNIT_DIRS if (d / name).is_file()), None)


def state(name: str) -> str:
    path = STATE_DIR / f"{name}.state"
    return path.read_text().strip() if path.is_file() else "inactive"


def set_state(name: str, value: str) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / f"{name}.state").write_text(value + "\n")


def wanted_by(name: str) -> list[Path]:
    """Where ``enable`` links the unit: its [Install] WantedBy= targets."""
    path = unit_file(name)
    targets: list[str] = []
    section = ""
    for line in (path.read_text().splitlines() if path else []):
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Install" and line.startswith("WantedBy="):
            targets += line.split("=", 1)[1].split()
    return [WANTS_DIR / f"{target}.wants" / name for target in targets]


def enabled(name: str) -> str:
    links = wanted_by(name)
    if not links:
        return "static" if unit_file(name) else "not-found"
    return "enabled" if any(link.is_symlink() for link in links) else "disabled"


def supervised_pid(name: str) -> int | None:
    path = STATE_DIR / f"{name}.pid"
    return int(path.read_text()) if path.is_file() and path.read_text().strip() else None


def show(name: str, wanted: list[str], values_only: bool) -> int:
    path = unit_file(name)
    settings = init_module().read_unit(name) if path else {}
    active = state(name) if path else "inactive"
    properties = {
        "Id": name, "Names": name, "LoadState": "loaded" if path else "not-found", "ActiveState": active,
        "SubState": {"active": "running", "activating": "start", "failed": "failed"}.get(active, "dead"),
        "UnitFileState": enabled(name) if path else "", "FragmentPath": str(path or ""), "Type": settings.get("Type", ["simple"])[-1],
        "Result": "exit-code" if active == "failed" else "success", "MainPID": str(supervised_pid(name) or 0),
    }
    for key, value in properties.items():
        if not wanted or key in wanted:
            print(value if values_only else f"{key}={value}")
    print()
    return 0


def run_oneshot(name: str) -> int:
    """Run a oneshot service now, the way init.py runs one at boot."""
    init = init_module()
    settings = init.read_unit(name)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    set_state(name, "activating")
    status = 0
    with (LOG_DIR / f"{name}.log").open("a") as log:
        try:
            env = init.environment(settings)
            steps = [(line, True) for line in settings.get("ExecStartPre", [])] + [(line, False) for line in settings.get("ExecStart", [])]
            for line, pre in steps:
                ignore, argv = init.command(line, env)
                code = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False).returncode
                if code and not (pre and ignore):
                    status = code
                    break
        except (OSError, ValueError) as err:
            log.write(f"systemctl (lab): {name}: {err}\n")
            status = 1
        log.write(f"systemctl (lab): {name} exited with {status}\n")
    set_state(name, "failed" if status else "inactive")
    if status:
        print(f"Job for {name} failed because the control process exited with error code.\n"
              f'See "journalctl -u {name}" for details.', file=sys.stderr)
        return 1
    return 0


def signal_supervised(name: str, stopped: bool) -> int:
    """Stop (held until start) or restart a service init.py supervises."""
    pid = supervised_pid(name)
    held, again = STATE_DIR / f"{name}.stopped", STATE_DIR / f"{name}.restart"
    if stopped:
        held.write_text("")
    else:
        held.unlink(missing_ok=True)
        again.write_text("")
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


def start(name: str) -> int:
    path = unit_file(name)
    if path is None:
        print(f"Failed to start {name}: Unit {name} not found.", file=sys.stderr)
        return 5
    if name.endswith(".timer"):
        print(f"Failed to start {name}: the lab VM's init runs no timers; start the service it triggers.", file=sys.stderr)
        return 1
    if init_module().read_unit(name).get("Type", [""])[-1] == "oneshot":
        return run_oneshot(name)
    if state(name) in ("active", "activating") and not (STATE_DIR / f"{name}.stopped").exists():
        return 0
    if (STATE_DIR / f"{name}.supervised").exists():  # stopped, or waiting out RestartSec=: now
        (STATE_DIR / f"{name}.stopped").unlink(missing_ok=True)
        (STATE_DIR / f"{name}.restart").write_text("")
        return 0
    print(f"Failed to start {name}: the lab VM's init starts long-running services at boot only.", file=sys.stderr)
    return 1


def enable(name: str, on: bool, now: bool) -> int:
    for link in wanted_by(name):
        if on and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(unit_file(name) or name)
        elif not on and link.is_symlink():
            link.unlink()
    if now:
        return start(name) if on else stop(name)
    return 0


def stop(name: str) -> int:
    if supervised_pid(name) or state(name) in ("active", "activating"):
        return signal_supervised(name, stopped=True)
    return 0


TAKES_VALUE = ("-p", "--property", "-t", "--type", "-n", "--lines", "-o", "--output", "-H", "--host", "-M", "--machine", "--state")


def systemctl(args: list[str]) -> int:
    words, wanted, index = [], [], 0
    while index < len(args):
        arg = args[index]
        if arg in TAKES_VALUE and index + 1 < len(args):
            if arg in ("-p", "--property"):
                wanted += args[index + 1].split(",")
            index += 1
        elif arg.startswith("--property="):
            wanted += arg.split("=", 1)[1].split(",")
        elif not arg.startswith("-"):
            words.append(arg)
        index += 1
    now = "--now" in args
    if not words:
        print("systemctl (lab): give a command", file=sys.stderr)
        return 1
    verb, units = words[0], [unit_name(u) for u in words[1:]]
    if verb in ("daemon-reload", "daemon-reexec", "reset-failed"):
        return 0
    if verb == "show":
        return max([show(u, wanted, "--value" in args) for u in units] or [0])
    if verb == "is-active":
        states = [state(u) for u in units]
        print("\n".join(states))
        return 0 if states and all(s == "active" for s in states) else 3
    if verb == "is-enabled":
        found = [enabled(u) for u in units]
        print("\n".join(found))
        return 0 if found and all(f in ("enabled", "static") for f in found) else 1
    if verb == "status":
        for u in units:
            print(f"{u} - {state(u)} ({enabled(u)})")
            print(journal(u, 10), end="")
        return 0 if units and all(state(u) == "active" for u in units) else 3
    if verb == "start":
        return max([start(u) for u in units] or [0])
    if verb == "stop":
        return max([stop(u) for u in units] or [0])
    if verb in ("restart", "try-restart", "reload-or-restart"):
        return max([signal_supervised(u, stopped=False) if supervised_pid(u) else start(u) for u in units] or [0])
    if verb in ("enable", "disable", "reenable"):
        return max([enable(u, verb != "disable", now) for u in units] or [0])
    print(f"systemctl (lab): '{verb}' is not something the lab VM's init does", file=sys.stderr)
    return 1


def journal(name: str, lines: int) -> str:
    path = LOG_DIR / f"{name}.log"
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]) if path.is_file() else ""


def journalctl(args: list[str]) -> int:
    units, lines, index = [], 100, 0
    while index < len(args):
        arg = args[index]
        if arg in ("-u", "--unit") and index + 1 < len(args):
            units.append(unit_name(args[index + 1]))
            index += 1
        elif arg.startswith("--unit="):
            units.append(unit_name(arg.split("=", 1)[1]))
        elif arg in ("-n", "--lines") and index + 1 < len(args):
            lines = int(args[index + 1])
            index += 1
        elif arg.startswith("--lines="):
            lines = int(arg.split("=", 1)[1])
        index += 1
    for name in units:
        print(journal(name, lines), end="")
    return 0


def main() -> int:
    tool, args = sys.argv[1], sys.argv[2:]
    if not INIT.exists():  # not under the lab's init (a chroot, say): the real tool
        os.execv(REAL[tool], [REAL[tool], *args])
    return journalctl(args) if tool == "journalctl" else systemctl(args)


if __name__ == "__main__":
    sys.exit(main())
