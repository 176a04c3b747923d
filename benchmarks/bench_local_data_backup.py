"""Local-data backup throughput: restic (the node agent's tool) beside a plain upload of the same bytes.

Both go to the same real S3 server (rclone serve s3 on loopback), in the same run, so the ratio
is what matters: BRIEF.md's target is a restore at >= 80 % of a plain S3 transfer; this measures
the backup side of it. Run from the repository root:

    .venv/bin/python -m benchmarks.bench_local_data_backup [--mib 512] [--runs 3]

Results are appended to benchmarks/results.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".build" / "collections")]

from lab.hclab.debian_root import ensure_debian_root  # noqa: E402  (needs the path above)
from lab.hclab.services import S3Server  # noqa: E402


def make_data(root: pathlib.Path, mib: int) -> int:
    """A PV-like tree: one large file and many small ones, incompressible."""
    (root / "small").mkdir(parents=True)
    big = mib * 1024 * 1024 * 3 // 4
    (root / "table.bin").write_bytes(os.urandom(big))
    small_total = mib * 1024 * 1024 - big
    for index in range(small_total // (64 * 1024)):
        (root / "small" / ("row-%05d.bin" % index)).write_bytes(os.urandom(64 * 1024))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def plain_upload(server: S3Server, bucket: str, root: pathlib.Path) -> float:
    client = server.client()
    started = time.perf_counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, "plain/%s" % path.relative_to(root))
    return time.perf_counter() - started


def restic_backup(restic: str, env: dict[str, str], root: pathlib.Path) -> float:
    started = time.perf_counter()
    subprocess.run([restic, "backup", "--quiet", "--host", "bench", str(root)], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    restic = str(ensure_debian_root() / "usr/bin/restic")
    plain, first, again = [], [], []
    with tempfile.TemporaryDirectory(prefix="hcm-bench-") as scratch:
        data = pathlib.Path(scratch) / "data"
        size = make_data(data, args.mib)
        with S3Server(pathlib.Path(scratch) / "s3") as server:
            for run in range(args.runs):
                bucket = server.create_bucket("bench-%d" % run)
                env = dict(os.environ, RESTIC_REPOSITORY="s3:%s/%s/restic" % (server.endpoint_url, bucket), RESTIC_PASSWORD="bench",
                           AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
                subprocess.run([restic, "init", "--quiet"], env=env, check=True)
                plain.append(plain_upload(server, bucket, data))
                first.append(restic_backup(restic, env, data))
                again.append(restic_backup(restic, env, data))
    mb = size / 1e6
    rows = [("plain S3 upload (boto3, baseline)", statistics.median(plain)),
            ("restic backup, first run", statistics.median(first)),
            ("restic backup, unchanged data", statistics.median(again))]
    lines = [
        "",
        "## Local-data backup, %s, %s" % (dt.date.today().isoformat(), platform.node()),
        "",
        "Machine: %s, %d CPUs, Python %s; %d MB (3/4 one file, 1/4 64 KiB files), median of %d runs, rclone S3 on loopback."
        % (platform.platform(), os.cpu_count() or 0, platform.python_version(), mb, args.runs),
        "",
        "| what | seconds | MB/s | vs plain upload |",
        "|---|---|---|---|",
    ]
    base = rows[0][1]
    lines += ["| %s | %.2f | %.0f | %.0f %% |" % (name, secs, mb / secs, 100 * base / secs) for name, secs in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(REPO / "benchmarks" / "results.md", "a", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
