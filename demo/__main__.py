"""``python -m demo [--keep] [--workdir DIR]`` from the repository root: see demo/README.md."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from demo.run import main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description="A worker of the lab's onprem cluster dies; migrate.yml brings "
                                     "its workloads back on the cloud cluster, with their data and the counter's memory.")
    parser.add_argument("--workdir", type=Path, help="where the lab, servers, VMs and report live (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep everything up at the end, until Enter, and say how to look around")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hcm-demo-"))
    if args.workdir and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)  # the lab's keys and kubeconfigs live here while it runs
    sys.exit(main(workdir.resolve(), args.keep))
