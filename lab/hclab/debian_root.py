"""A cached Debian 13 (trixie) root for the lab and the tests, and commands run inside it.

The host is Debian 12, whose criu 3.17 cannot dump anything on this kernel (BRIEF section 4);
trixie ships criu 4.1, etcd 3.5 and restic 0.18. ``ensure_debian_root`` builds a minbase root
with those packages once (``debootstrap``) and caches it; ``run_in_root``/``spawn_in_root``
run a command inside it, each call in a new mount and pid namespace, so the command is PID 1
of its own little container: when it exits everything it started dies, and its mounts vanish
with the namespace, so nothing leaks onto the host or into the cached tree on disk.

Stdlib only, so the helper can be imported before any test dependency is installed.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

SUITE = "trixie"
# criu for checkpoints, etcd and restic for the backup tests; "mount" (priority required, so
# minbase has it anyway) provides the umount that enter_root.sh runs after pivot_root.
DEFAULT_PACKAGES: tuple[str, ...] = ("criu", "etcd-server", "etcd-client", "restic", "mount")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
ENTER_SCRIPT = Path(__file__).with_name("enter_root.sh")
# The environment a command sees inside the root, unless the caller adds to it.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
BUILD_TIMEOUT_S = 1800


def cache_base() -> Path:
    """``$HCM_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/hybridcloud-migration``."""
    if os.environ.get("HCM_CACHE_DIR"):
        return Path(os.environ["HCM_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hybridcloud-migration"


def root_name(packages: Sequence[str]) -> str:
    """Directory name of the root: the suite plus a short hash of suite and package set."""
    key = "\n".join([SUITE, *sorted(set(packages))])
    return f"debian-{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def host_debian_mirror() -> str:
    """The Debian archive URL the host's own apt sources use (the only one reachable here)."""
    if os.environ.get("HCM_DEBIAN_MIRROR"):
        return os.environ["HCM_DEBIAN_MIRROR"]
    uris: list[str] = []
    apt = Path("/etc/apt")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            if re.search(r"^Enabled:\s*no\s*$", stanza, re.M | re.I):
                continue
            for match in re.finditer(r"^URIs:\s*(.+)$", stanza, re.M):
                uris.extend(match.group(1).split())
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                # "deb [options] URI suite components"
                deb_line = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
                if deb_line:
                    uris.append(deb_line.group(1))
    # The main archive: a path ending in /debian (not debian-security, not a dated snapshot).
    for uri in uris:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return FALLBACK_MIRROR


def _ensure_debootstrap() -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = shutil.which("debootstrap")
    if not found:
        raise RuntimeError("debootstrap is still missing after apt-get install debootstrap")
    return found


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [p for p in points if (p + "/").startswith(prefix)]


def _remove_tree(path: Path) -> None:
    # Never rmtree through a mount point (debootstrap mounts /proc, /sys and may bind /dev).
    mounted = _mounts_under(path)
    if mounted:
        raise RuntimeError(f"refusing to delete {path}: still mounted: {mounted}")
    shutil.rmtree(path, ignore_errors=True)


def ensure_debian_root(
    cache_dir: Path | None = None, packages: Sequence[str] = DEFAULT_PACKAGES
) -> Path:
    """Return a trixie root with ``packages`` installed, building it once per package set.

    The build goes into a temporary sibling directory that is renamed into place only when
    debootstrap succeeded, so a failed or interrupted build never looks cached. A lock file
    serialises concurrent pytest processes: the second one waits, then reuses the result.
    """
    base = Path(cache_dir) if cache_dir is not None else cache_base()
    base.mkdir(parents=True, exist_ok=True)
    name = root_name(packages)
    final = base / name
    if (final / "usr/bin").is_dir():
        return final
    with open(base / f"{name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "usr/bin").is_dir():  # another process built it while we waited
            return final
        for stale in base.glob(f".{name}.build-*"):  # left by a killed build; we hold the lock
            _remove_tree(stale)
        debootstrap = _ensure_debootstrap()
        mirror = host_debian_mirror()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.build-", dir=base))
        tmp.chmod(0o755)
        cmd = [
            # Own mount namespace: the /proc, /sys (and maybe /dev) it mounts in the target die
            # with it. Own pid namespace: killing us (or the timeout) kills its whole tree.
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            debootstrap, "--variant=minbase", f"--include={','.join(sorted(set(packages)))}",
            SUITE, str(tmp), mirror,
        ]  # fmt: skip
        log.info("building %s: %s", final, " ".join(cmd))
        started = time.monotonic()
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
                preexec_fn=_die_with_parent,
            )
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
                debootstrap_log = tmp / "debootstrap/debootstrap.log"
                if debootstrap_log.is_file():
                    tail += "\n--- debootstrap.log ---\n" + debootstrap_log.read_text()[-4000:]
                raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{tail}")
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                _remove_tree(tmp)
        elapsed = time.monotonic() - started
        message = f"built Debian {SUITE} root {final} in {elapsed:.1f} s (mirror {mirror})"
        log.info(message)
        print(message, file=sys.stderr)
        return final


def _check_inner_path(root: Path, inner: str) -> None:
    # enter_root.sh creates bind targets with host tools before pivot_root; a symlink in the
    # root (e.g. /var/run -> /run) would then be resolved against the HOST tree.
    path = PurePosixPath(inner)
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"bind target must be an absolute path without '..': {inner!r}")
    current = root
    for part in path.parts[1:]:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"bind target {inner!r} crosses a symlink in the root: {current}")


def _enter_command(root: Path, argv: Sequence[str], binds: Mapping[Path, str] | None) -> list[str]:
    if os.geteuid() != 0:
        raise PermissionError("run_in_root needs root (mount and pid namespaces, mknod)")
    if not argv:
        raise ValueError("argv must not be empty")
    root = Path(root).resolve()
    cmd = [
        "unshare", "--mount", "--pid", "--fork",
        # If unshare dies (e.g. Popen.kill()), the namespace's init gets SIGKILL, and with it
        # every process of the pid namespace.
        "--kill-child",
        "/bin/sh", str(ENTER_SCRIPT), str(root),
    ]  # fmt: skip
    for host, inner in (binds or {}).items():
        _check_inner_path(root, inner)
        cmd += ["--bind", str(Path(host).resolve()), inner]
    return [*cmd, "--", *argv]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed, unshare gets
    # SIGKILL too, and --kill-child passes it on to the namespace. (Linux: PR_SET_PDEATHSIG.)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def run_in_root(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``root`` in a new mount+pid namespace and wait for it.

    ``binds`` maps host paths to paths inside the root (bind mounts for this call only; /tmp
    and /run are fresh tmpfs per call, so targets there leave no trace, while a missing target
    elsewhere is created as an empty directory or file in the cached root);
    ``env`` is added to a minimal environment (PATH, HOME, LANG). On timeout the whole
    namespace is killed and ``subprocess.TimeoutExpired`` is raised.
    """
    return subprocess.run(
        _enter_command(root, argv, binds),
        env={**BASE_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=check,
        preexec_fn=_die_with_parent,
    )


def spawn_in_root(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``argv`` like ``run_in_root`` but return at once (for daemons).

    Stop it with ``proc.kill()`` then ``proc.wait()``: unshare blocks SIGTERM while it waits
    for its child, and SIGKILL on unshare takes the whole namespace down (--kill-child).
    The Popen must be created and stopped from a thread that outlives it (PR_SET_PDEATHSIG
    follows the creating thread).
    """
    return subprocess.Popen(
        _enter_command(root, argv, binds),
        env={**BASE_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        preexec_fn=_die_with_parent,
    )


def make_instance(dest: Path, packages: Sequence[str]) -> Path:
    """A private, writable copy of the cached root for ``packages`` (a molecule instance)."""
    source = ensure_debian_root(packages=packages)
    if dest.exists():
        _remove_tree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(dest)], check=True)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """``instance DEST [--package P]...`` makes a copy to test roles in; ``remove DEST`` deletes one."""
    import argparse  # pylint: disable=import-outside-toplevel  # only the command line needs it

    parser = argparse.ArgumentParser(prog="python -m lab.hclab.debian_root", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    instance = sub.add_parser("instance", help="copy the cached root (built on first use) to DEST")
    instance.add_argument("dest", type=Path)
    instance.add_argument("--package", action="append", default=[], help="packages the root must have (repeat)")
    remove = sub.add_parser("remove", help="delete an instance made by 'instance'")
    remove.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "instance":
        print(make_instance(args.dest, args.package or DEFAULT_PACKAGES))
    elif args.dest.exists():
        _remove_tree(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
