"""PID 1 of a lab VM: a small stand-in for systemd that runs the services the worker image enabled.

LAB INFRASTRUCTURE. A lab VM is a network namespace running the worker image's root
(lab/hclab/lab_vm.py); systemd itself can't be PID 1 there (it would take over the host's cgroup
hierarchies), so this does the part of its job a worker needs: every ``*.service`` linked in
``/etc/systemd/system/multi-user.target.wants`` (what ``systemctl enable`` made when the image was
built: ssh, containerd, kubelet) is started from its unit file and drop-ins, the way systemd reads
them: ``EnvironmentFile=`` (``-`` = optional, re-read at each start, so the kubelet picks up the
``kubeadm-flags.env`` that ``kubeadm join`` writes), ``Environment=``, ``ExecStartPre=``,
``ExecStart=`` (an empty one resets, as in kubeadm's drop-in), ``$VAR``/``${VAR}``,
``RuntimeDirectory=``, ``ConditionPathExists=``, ``Type=oneshot`` and ``Restart=`` with
``RestartSec=``. It keeps each service's state in /run/hclab/units, where the VM's systemctl
(vm/systemctl.py) reads it and asks for a stop or a restart. First it applies /etc/sysctl.d as systemd-sysctl would; it also reaps orphans, as
PID 1 must (containerd's shims are re-parented to it).

Each service's output goes to /var/log/hclab/<unit>.log in the VM. Stdlib only: it runs on the
image's own python3.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/run/systemd/system"), Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
WANTS = Path("/etc/systemd/system/multi-user.target.wants")
LOG_DIR = Path("/var/log/hclab")
# What the VM's systemctl (vm/systemctl.py) reads and writes: <unit>.state, .pid, .stopped.
STATE_DIR = Path("/run/hclab/units")
# Started first, in this order (systemd orders them by After=); the rest by name.
FIRST = ("ssh.service", "containerd.service", "kubelet.service")
RUNNABLE_TYPES = ("", "simple", "exec", "notify", "oneshot")
LIST_KEYS = ("EnvironmentFile", "Environment", "ExecStartPre", "ExecStart", "RuntimeDirectory", "ConditionPathExists")

# Exit codes of the children a supervisor waits for. The reaper records only pids in `watched`
# (orphans are just reaped); a fork registers its pid under the same lock, so no exit is missed.
watched: set[int] = set()
exits: dict[int, int] = {}
exited = threading.Condition()


def read_unit(name: str) -> dict[str, list[str]]:
    """The [Service] settings of ``name``: the first unit file found, then its drop-ins in name order."""
    files = [next((d / name for d in UNIT_DIRS if (d / name).is_file()), None)]
    dropins: dict[str, Path] = {}
    for directory in reversed(UNIT_DIRS):
        for conf in sorted((directory / f"{name}.d").glob("*.conf")):
            dropins[conf.name] = conf
    files += [dropins[key] for key in sorted(dropins)]
    settings: dict[str, list[str]] = {}
    for path in files:
        if path is None:
            continue
        section = ""
        for raw in path.read_text().replace("\\\n", " ").splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "Service" or "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            if key in LIST_KEYS and value:
                settings.setdefault(key, []).append(value)
            elif key in LIST_KEYS:
                settings[key] = []  # an empty assignment resets the list
            else:
                settings[key] = [value]
    return settings


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for value in settings.get("Environment", []):
        for pair in shlex.split(value):
            key, _sep, val = pair.partition("=")
            env[key] = val
    for value in settings.get("EnvironmentFile", []):
        optional, path = value.startswith("-"), Path(value.lstrip("-"))
        if not path.is_file():
            if optional:
                continue
            raise FileNotFoundError(f"EnvironmentFile {path} is missing")
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _sep, val = line.partition("=")
                env[key.strip()] = " ".join(shlex.split(val)) if val.strip()[:1] in "\"'" else val.strip()
    return env


def command(line: str, env: dict[str, str]) -> tuple[bool, list[str]]:
    """(failure ignored, argv) of an Exec line, with systemd's variable rules: a word that is only
    ``$VAR`` splits into words; ``${VAR}`` elsewhere is replaced in place."""
    ignore = line.startswith("-")
    argv: list[str] = []
    for word in shlex.split(line.lstrip("-@+!:")):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return ignore, argv


def spawn(argv: list[str], env: dict[str, str], log: Path) -> int:
    with exited:
        pid = os.fork()
        if pid:
            watched.add(pid)
            return pid
    if pid == 0:  # the child: its own session, output to the unit's log
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid  # not reached


def wait_for(pid: int) -> int:
    with exited:
        exited.wait_for(lambda: pid in exits)
        return exits.pop(pid)


def set_state(name: str, value: str, pid: int | None = None) -> None:
    (STATE_DIR / f"{name}.state").write_text(value + "\n")
    (STATE_DIR / f"{name}.pid").write_text(f"{pid or ''}\n")


def supervise(name: str) -> None:
    """Run one service until the VM stops, restarting it as its Restart= says (held while systemctl stopped it)."""
    log = LOG_DIR / f"{name}.log"
    oneshot = read_unit(name).get("Type", [""])[-1] == "oneshot"
    (STATE_DIR / f"{name}.supervised").write_text("")
    while True:
        while (STATE_DIR / f"{name}.stopped").exists():
            time.sleep(0.5)
        (STATE_DIR / f"{name}.restart").unlink(missing_ok=True)  # a start after a stop: done by getting here
        set_state(name, "activating")
        settings = read_unit(name)
        conditions = settings.get("ConditionPathExists", [])
        if any(Path(c.lstrip("!")).exists() == c.startswith("!") for c in conditions):
            (STATE_DIR / f"{name}.supervised").unlink(missing_ok=True)
            set_state(name, "inactive")
            return
        for directory in settings.get("RuntimeDirectory", []):
            for part in directory.split():
                Path("/run", part).mkdir(parents=True, exist_ok=True)
        status = 0
        try:
            env = environment(settings)
            for line in settings.get("ExecStartPre", []):
                ignore, argv = command(line, env)
                code = wait_for(spawn(argv, env, log))
                if code and not ignore:
                    status = code
                    break
            # A oneshot service may have several ExecStart= lines, run in turn; others have one.
            starts = settings.get("ExecStart", []) if settings.get("Type", [""])[-1] == "oneshot" else settings.get("ExecStart", [])[-1:]
            for line in starts if status == 0 else []:
                pid = spawn(command(line, env)[1], env, log)
                set_state(name, "activating" if oneshot else "active", pid)
                status = wait_for(pid)
                if status:
                    break
        except (OSError, ValueError) as err:
            with log.open("a") as out:
                out.write(f"hclab-init: {name}: {err}\n")
            status = 1
        with log.open("a") as out:
            out.write(f"hclab-init: {name} exited with {status}\n")
        stopped = (STATE_DIR / f"{name}.stopped").exists()
        set_state(name, "failed" if status and not stopped else "inactive")
        if stopped:
            continue  # systemctl stop: held at the top until systemctl start
        if (STATE_DIR / f"{name}.restart").exists():
            (STATE_DIR / f"{name}.restart").unlink()
            continue  # systemctl restart: at once, whatever Restart= says
        restart = settings.get("Restart", ["no"])[-1]
        if restart not in ("always", "on-failure") or (restart == "on-failure" and status == 0):
            (STATE_DIR / f"{name}.supervised").unlink(missing_ok=True)
            return
        # RestartSec=, cut short by systemctl restart or start.
        deadline = time.monotonic() + max(1.0, float(settings.get("RestartSec", ["1"])[-1].rstrip("s") or 1))
        while time.monotonic() < deadline and not (STATE_DIR / f"{name}.restart").exists():
            time.sleep(0.2)
        (STATE_DIR / f"{name}.restart").unlink(missing_ok=True)


def reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.5)
            continue
        with exited:
            if pid in watched:
                watched.discard(pid)
                exits[pid] = os.waitstatus_to_exitcode(status)
                exited.notify_all()


def main() -> int:
    # Forking from threads is safe here: the child only calls dup2 and exec.
    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # What systemd-sysctl does at boot: the image's /etc/sysctl.d (net.* keys are the VM's own).
    with (LOG_DIR / "sysctl.log").open("a") as out:
        subprocess.run(["sysctl", "--system"], stdout=out, stderr=out, check=False)
    signal.signal(signal.SIGTERM, lambda *_args: os._exit(0))
    enabled = sorted(p.name for p in WANTS.glob("*.service"))
    order = [u for u in FIRST if u in enabled] + [u for u in enabled if u not in FIRST]
    for name in order:
        settings = read_unit(name)
        if settings.get("Type", [""])[-1] not in RUNNABLE_TYPES:
            continue
        threading.Thread(target=supervise, args=(name,), name=name, daemon=True).start()
    print(f"hclab-init: started {', '.join(order)}", flush=True)
    reap()
    return 0


if __name__ == "__main__":
    sys.exit(main())
