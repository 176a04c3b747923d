"""The demo's migration end to end, split by phase: `make demo`'s site, migrated several times.

Each run is what `make demo` does after the lab is up: the site is seeded and backed up with
the real pieces (Velero, the node backup agent with its restic snapshot and criu checkpoint),
its worker fails, and `ansible-playbook playbooks/migrate.yml` moves it to the `cloud` cluster
through moto's EC2 API. The report of each run gives the time per phase; the table shows the
median (min-max) over the runs, the playbook's wall time, and the plan's size.

Baseline, measured in the same run: a plain boto3 download from the same S3 server of as many
bytes as the data phase restored (BRIEF's local-data target is >= 80 % of a plain download).
The resources phase is set against a `kubernetes.core.k8s` loop in bench_ordered_restore.py.
Run from the repository root (needs root, about 2 minutes per run plus the lab's start):

    .venv/bin/python -m benchmarks.bench_demo [--runs 3] [--no-record]

Results are appended to benchmarks/results.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".build" / "collections")]

from benchmarks.bench_checkpoint_upload import load_average, machine, publish  # noqa: E402  (needs the path above)
from lab.hclab.client import Lab  # noqa: E402
from lab.hclab.services import MotoServer, S3Server  # noqa: E402
from lab.hclab.velero_server import VeleroServer  # noqa: E402
from tests.helpers.ansible_run import ansible_env  # noqa: E402
from tests.helpers.migration_site import failed_site  # noqa: E402

PHASES = ("plan", "provision", "join", "resources", "data", "state", "scale-up")


def migrate_once(lab: Lab, s3_server: S3Server, moto_server: MotoServer, workdir: pathlib.Path, index: int) -> dict[str, Any]:
    velero = VeleroServer(workdir / "velero", lab.kubeconfig("onprem"))
    with failed_site(lab, s3_server, moto_server, velero, workdir / "site", f"cloud-bench-{index}") as site, \
            lab.cloud_watcher("cloud", moto_server.endpoint_url, region=moto_server.region):
        started = time.monotonic()
        ran = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), str(REPO / "playbooks/migrate.yml"),
                              "-i", str(site.inventory), "-e", json.dumps({"hcm_failed_node": site.failed, "hcm_new_node_name": site.new_node,
                                                                           "hcm_report_dir": str(workdir / "report")})],
                             cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if ran.returncode != 0:
            raise RuntimeError("migrate.yml failed:\n" + ran.stdout[-4000:])
        report = json.loads((workdir / "report/report.json").read_text())
        data_bytes = sum(int(d.get("bytes") or 0) for d in report["data"])
        return {"wall": wall, "report": report, "data_bytes": data_bytes,
                "plain_download": plain_download(s3_server, site.bucket, data_bytes)}


def plain_download(s3_server: S3Server, bucket: str, size: int) -> float:
    """Seconds for boto3 to download ``size`` random bytes from the same server (the baseline)."""
    client = s3_server.client()
    client.upload_fileobj(io.BytesIO(os.urandom(size)), bucket, "bench/plain.bin")
    started = time.monotonic()
    client.download_fileobj(bucket, "bench/plain.bin", io.BytesIO())
    return time.monotonic() - started


def spread(values: list[float]) -> str:
    return "%.2f (%.2f-%.2f)" % (statistics.median(values), min(values), max(values))


def table(runs: list[dict[str, Any]], load: str) -> str:
    def phase_seconds(run: dict[str, Any], name: str) -> float:
        return next((p["seconds"] for p in run["report"]["phases"] if p["name"] == name), 0.0)

    first = runs[0]["report"]
    lines = [
        "",
        "## Demo migration by phase, %s, %s" % (dt.date.today().isoformat(), platform.node()),
        "",
        "Machine: %s; 1-min load average %s. The lab (two kube-apiservers, kwok nodes), rclone S3 and moto_server on "
        "loopback; %d run(s) of `migrate.yml` over `make demo`'s site (moves: %s; %d workloads selected; %d checkpoint(s), "
        "started cold: the lab's new node has no CRI-O). The new VM is a moto instance the lab's cloud watcher stands a kwok "
        "node up behind (join method external). Seconds, median (min-max)."
        % (machine(), load, len(runs), ", ".join("%s/%s" % (w["kind"], w["name"]) for w in first["workloads"]),
           len(first["selected"]), len(first["state"])),
        "",
        "| phase | seconds |",
        "|---|---:|",
    ]
    lines += ["| %s | %s |" % (name, spread([phase_seconds(r, name) for r in runs])) for name in PHASES]
    lines += [
        "| **all phases (migration_seconds)** | %s |" % spread([r["report"]["migration_seconds"] for r in runs]),
        "| ansible-playbook wall time | %s |" % spread([r["wall"] for r in runs]),
        "| baseline: plain boto3 download of the data phase's bytes (%d bytes) | %s |"
        % (runs[0]["data_bytes"], spread([r["plain_download"] for r in runs])),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="migrations to time (default: 3)")
    parser.add_argument("--workdir", type=pathlib.Path, help="keep the lab's and servers' files there (default: a temporary folder)")
    parser.add_argument("--no-record", action="store_true", help="print the results only; do not append them to benchmarks/results.md")
    args = parser.parse_args()
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="hcm-bench-demo-") as tmp:
        workdir = args.workdir or pathlib.Path(tmp)
        lab = Lab(workdir / "lab")
        with S3Server(workdir / "s3") as s3_server, MotoServer(workdir / "moto") as moto_server:
            lab.up(onprem_nodes=2, cloud_nodes=2)
            try:
                runs = []
                for index in range(args.runs):
                    runs.append(migrate_once(lab, s3_server, moto_server, workdir / ("run-%d" % index), index))
                    print("run %d: %.1f s" % (index + 1, runs[-1]["wall"]), flush=True)
            finally:
                lab.down()
    text = table(runs, "%s at the start, %s at the end" % (load, load_average()))
    publish(text, record=not args.no_record)


if __name__ == "__main__":
    main()
