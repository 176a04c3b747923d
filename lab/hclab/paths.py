"""Where the lab finds its binaries and keeps its state."""

from __future__ import annotations

import os
from pathlib import Path

from lab.hclab import LabError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN_DIR = REPO / ".build" / "lab" / "bin"
DEFAULT_STATE_DIR = REPO / ".build" / "lab" / "state"

# Every program the lab runs, by the name it is called by. The Kubernetes components may be
# symlinks to one multi-call binary that dispatches on its argv[0]: they are run through the
# link, never through the resolved path.
KUBE_APISERVER = "kube-apiserver"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
KUBE_SCHEDULER = "kube-scheduler"
ETCD = "etcd"
KWOK = "kwok"
REQUIRED_BINARIES = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KWOK)


def bin_dir() -> Path:
    """``$HCM_LAB_BIN`` if set, else ``.build/lab/bin`` of this checkout (whatever the cwd)."""
    configured = os.environ.get("HCM_LAB_BIN")
    return Path(configured).expanduser().absolute() if configured else DEFAULT_BIN_DIR


def state_dir(given: str | None = None) -> Path:
    """The ``--state-dir`` given, else ``$HCM_LAB_STATE``, else ``.build/lab/state`` of this checkout."""
    chosen = given or os.environ.get("HCM_LAB_STATE")
    return Path(chosen).expanduser().absolute() if chosen else DEFAULT_STATE_DIR


def binary(name: str, directory: Path | None = None) -> Path:
    """The path of ``name`` in the lab's bin directory; a LabError naming the fix if missing."""
    where = directory or bin_dir()
    path = where / name
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        source = "$HCM_LAB_BIN" if os.environ.get("HCM_LAB_BIN") else "the lab's bin directory"
        raise LabError(
            f"{name} not found or not executable at {path} ({source}). "
            "Fix: run `make lab-build` in the repository root (it builds etcd, the Kubernetes "
            "components and kwok), or point HCM_LAB_BIN at a directory that holds them."
        )
    return path


def all_binaries(directory: Path | None = None) -> dict[str, Path]:
    """Every required binary, checked up front so ``up`` fails before starting anything."""
    missing = []
    found = {}
    for name in REQUIRED_BINARIES:
        try:
            found[name] = binary(name, directory)
        except LabError:
            missing.append(name)
    if missing:
        where = directory or bin_dir()
        raise LabError(
            f"missing lab binaries in {where}: {', '.join(missing)}. "
            "Fix: run `make lab-build` in the repository root, or set HCM_LAB_BIN to a directory "
            "that holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok."
        )
    return found
