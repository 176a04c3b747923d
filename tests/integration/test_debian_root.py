"""The Debian trixie root: its criu works on this kernel and really checkpoints and restores.

Needs root, mount/pid namespaces and the Debian mirror (on the first run only); nothing here
is skipped when one of those is missing: the tests fail, so CI notices.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from lab.hclab.debian_root import run_in_root, spawn_in_root

pytestmark = pytest.mark.integration

# Runs as PID 1 of one namespace session: start the counter, dump it, restore it, read it.
# Dump and restore happen in the SAME pid namespace on purpose: the restored task gets its
# old PID back, which is free again only once the dumped one has been reaped (by us, its
# parent); a second run_in_root would have a fresh /tmp and a different /proc view. The
# counter leads its own session (setsid) and its stdio is /dev/null inside the root, so its
# process tree holds nothing criu would have to treat as external (no pytest pipes, no tty:
# hence no --shell-job). Its count lives in a shell variable; each tick appends it to a log,
# so a restart from 0 would show as "1" following the dumped value.
CHECKPOINT_SCRIPT = r"""
set -eu
mkdir -p /tmp/work
setsid sh -c 'echo $$ >/tmp/work/pid; i=0
    while :; do i=$((i + 1)); echo "$i" >>/tmp/work/log; sleep 0.1; done' \
    </dev/null >/dev/null 2>&1 &
until [ -s /tmp/work/pid ] && [ "$(cat /tmp/work/log 2>/dev/null | wc -l)" -ge 5 ]; do
    sleep 0.05
done
pid=$(cat /tmp/work/pid)
echo "pid=$pid"
echo "session=$(cut -d' ' -f6 /proc/$pid/stat)"
criu dump -t "$pid" -D /tmp/images -o dump.log -v4
echo "dump_rc=0"
wait "$pid" || true  # reap it: the zombie would keep the PID criu restore needs
[ -e "/proc/$pid" ] && echo "alive_after_dump=yes" || echo "alive_after_dump=no"
echo "dumped_log=$(tr '\n' ' ' </tmp/work/log)"
sleep 0.5  # a process that survived the dump would keep counting meanwhile
echo "log_after_pause=$(tr '\n' ' ' </tmp/work/log)"
criu restore -D /tmp/images -d -o restore.log -v4
echo "restore_rc=0"
[ -e "/proc/$pid" ] && echo "alive_after_restore=yes" || echo "alive_after_restore=no"
echo "restored_session=$(cut -d' ' -f6 /proc/$pid/stat)"
n=$(wc -l </tmp/work/log)
until [ "$(wc -l </tmp/work/log)" -ge $((n + 5)) ]; do sleep 0.05; done
echo "final_log=$(tr '\n' ' ' </tmp/work/log)"
kill -9 "-$pid"  # its process group; our exit (PID 1) would kill it anyway
"""


def _fields(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def _numbers(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def _criu_logs(images: Path) -> str:
    parts = []
    for name in ("dump.log", "restore.log"):
        path = images / name
        if path.is_file():
            parts.append(
                f"--- {name} (tail) ---\n" + "\n".join(path.read_text().splitlines()[-25:])
            )
    return "\n".join(parts)


def test_criu_version_and_check(debian_root: Path) -> None:
    version = run_in_root(debian_root, ["criu", "--version"], timeout=60)
    match = re.search(r"Version:\s*(\d+)\.(\d+)", version.stdout)
    assert match, version.stdout
    assert (int(match.group(1)), int(match.group(2))) >= (4, 1), version.stdout

    check = run_in_root(debian_root, ["criu", "check"], timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Looks good." in check.stdout, check.stdout + check.stderr


def test_checkpoint_and_restore_continues_counting(debian_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    result = run_in_root(
        debian_root,
        ["sh", "-c", CHECKPOINT_SCRIPT],
        binds={images: "/tmp/images"},
        timeout=120,
        check=False,
    )
    out = _fields(result.stdout)
    context = f"rc={result.returncode}\n{result.stdout}\n{result.stderr}\n{_criu_logs(images)}"
    assert result.returncode == 0 and "final_log" in out, context

    pid = out["pid"]
    assert out["session"] == pid, context  # setsid worked: it leads its own session
    assert out["alive_after_dump"] == "no", context
    dumped = _numbers(out["dumped_log"])
    assert dumped == list(range(1, len(dumped) + 1)) and len(dumped) >= 5, context
    assert _numbers(out["log_after_pause"]) == dumped, context  # nothing counted while dumped

    # The image is a real one: the task's core and memory pages are there.
    assert (images / f"core-{pid}.img").is_file(), sorted(p.name for p in images.iterdir())
    assert list(images.glob("pages-*.img")), sorted(p.name for p in images.iterdir())
    assert (images / "pstree.img").is_file()

    assert out["alive_after_restore"] == "yes", context
    assert out["restored_session"] == pid, context
    final = _numbers(out["final_log"])
    assert final[: len(dumped)] == dumped, context
    resumed = final[len(dumped) :]
    # Continues from the in-memory value: dumped + 1, + 2, ... (a restart would write 1).
    assert len(resumed) >= 5, context
    assert resumed == list(range(dumped[-1] + 1, dumped[-1] + 1 + len(resumed))), context


def test_namespace_is_private_and_dies_with_its_init(debian_root: Path) -> None:
    inside = run_in_root(debian_root, ["sh", "-c", "echo $$ /proc/[0-9]*"], timeout=60)
    # PID 1 of a fresh pid namespace, alone in a /proc of its own (the glob runs in sh itself).
    assert inside.stdout.split() == ["1", "/proc/1"], inside.stdout

    proc = spawn_in_root(debian_root, ["sh", "-c", "sleep 300 & exec sleep 301"])
    try:
        descendants: list[int] = []
        deadline = time.monotonic() + 30
        while len(descendants) < 2 and time.monotonic() < deadline:  # init (sleep 301), 300
            descendants = _descendants(proc.pid)
            time.sleep(0.05)
        assert len(descendants) >= 2, descendants
    finally:
        proc.kill()
        proc.wait(timeout=30)
    for pid in descendants:  # SIGKILL to unshare took down the whole pid namespace
        _wait_gone(pid)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(debian_root) not in mounts  # no mount leaked into the host's namespace


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        try:
            children = Path(f"/proc/{todo.pop()}/task").glob("*/children")
            kids = [int(c) for f in children for c in f.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        found += kids
        todo += kids
    return found


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return  # dead, only not yet reaped (its reaper is being torn down too)
        time.sleep(0.05)
    raise AssertionError(f"process {pid} survived its namespace")
