"""Checkpoint + upload: seconds per GiB of process memory, restic beside a plain upload of the same archive.

A real process in the Debian 13 root (criu 4.1, restic 0.18; lab/hclab/debian_root.py), in
a mount and pid namespace of its own, allocates N MiB and then counts. The kubelet stand-in
(tests/helpers/kubelet_standin.py, the code the node agent's end-to-end test checkpoints with)
takes a REAL ``criu dump --leave-running`` of it and tars the images in CRI-O's checkpoint
archive layout; restic backs the archive up to the real S3 server (rclone serve s3 on
loopback), as the node agent does. Per run, in the same S3 server:

1. checkpoint: criu dump (its own wall time and the time the process stood frozen, from criu's
   log and stats-dump) and the tar around it;
2. baseline: a plain boto3 upload of the same archive bytes;
3. restic backup of the archive into a new repository;
4. after ``--pause`` seconds a second checkpoint of the same process, backed up again into the
   same repository: what deduplication saves.

Then the checkpoint restic gave back (``restic dump``) is restored with ``criu restore`` in a
fresh namespace, and the process must go on counting from its checkpointed value, so the
figures are for checkpoints that work.

The workload (perl, in the root): N MiB in 1 MiB strings, half bytes from /dev/urandom
(incompressible, like compressed or encrypted caches), half JSON-like text records with a
running id (compressible, but no two 1 MiB blocks alike); then it counts in a variable and
appends each value to a file every 0.1 s. Run from the repository root, as root:

    .venv/bin/python -m benchmarks.bench_checkpoint_upload [--sizes 256 1024] [--runs 3]

Results are appended to benchmarks/results.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".build" / "collections")]

from lab.hclab.debian_root import ensure_debian_root, run_in_root  # noqa: E402  (needs the path above)
from lab.hclab.services import S3Server  # noqa: E402
from tests.helpers.kubelet_standin import COUNTER_DIR, COUNTER_LOG, Container, KubeletStandin  # noqa: E402

# The workload, run as ``perl -e '<this>' MIB DIR`` (so: no single quote in it).
WORKLOAD_PERL = r"""
use strict; use warnings;
my ($mib, $dir) = @ARGV;
mkdir $dir;
my @mem;
open(my $random, "<", "/dev/urandom") or die "urandom: $!";
binmode $random;
for (1 .. int($mib / 2)) {
    my $block = "";
    read($random, $block, 1048576) == 1048576 or die "short read from /dev/urandom";
    push @mem, $block;
}
close $random;
my $id = 0;
for (1 .. $mib - int($mib / 2)) {
    my $text = "";
    while (length($text) < 1048576) {
        $id++;
        $text .= sprintf("{\"id\":%09d,\"user\":\"user-%05d\",\"state\":\"active\",\"plan\":\"standard\",\"quota_mb\":%d}\n",
                         $id, $id % 50000, 1024 * (1 + $id % 8));
    }
    push @mem, substr($text, 0, 1048576);
}
open(my $ready, ">", "$dir/ready") or die "ready: $!";
print $ready scalar(@mem), "\n";
close $ready;
my $i = 0;
while (1) {
    $i++;
    open(my $log, ">>", "$dir/count.log") or die "count.log: $!";
    print $log "$i\n";
    close $log;
    select(undef, undef, undef, 0.1);
}
"""

# Restores a checkpoint archive (opened at /tmp/archive) in a fresh namespace and watches the count.
RESTORE_SCRIPT = r"""
set -eu
tar -C / -xf /tmp/archive/rootfs-diff.tar
n=$(wc -l <"$LOG")
echo "dumped_lines=$n"
echo "dumped_last=$(tail -n 1 "$LOG")"
started=$(date +%s.%N)
if ! criu restore -D /tmp/archive/checkpoint -d -o /tmp/restore.log -v4; then
    echo "restore_failed=yes"; tail -n 40 /tmp/restore.log; exit 1
fi
echo "restored_started=$started"
echo "restored_done=$(date +%s.%N)"
[ -e "/proc/$PID" ] && echo "alive=yes" || echo "alive=no"
waited=0
until [ "$(wc -l <"$LOG")" -ge $((n + 5)) ] || [ "$waited" -ge 600 ]; do sleep 0.05; waited=$((waited + 1)); done
echo "resumed=$(tail -n +$((n + 1)) "$LOG" | tr '\n' ' ')"
"""

CRIU_LOG_TIME = re.compile(r"^\((\d+\.\d+)\)")


@dataclass
class Size:
    """Everything measured for one process size: per run, seconds, CPU seconds and bytes by name."""

    mib: int
    rss_mib: float = 0.0
    runs: list[dict[str, float]] = field(default_factory=list)
    restore: dict[str, str] = field(default_factory=dict)
    restore_download: float = 0.0

    def median(self, name: str) -> float:
        return statistics.median(run[name] for run in self.runs)

    def spread(self, name: str) -> tuple[float, float]:
        values = [run[name] for run in self.runs]
        return min(values), max(values)

    @property
    def gib(self) -> float:
        return self.rss_mib / 1024


def _varints(data: bytes) -> dict[int, int]:
    """The varint fields of one protobuf message (enough for criu's dump_stats_entry)."""
    fields: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        else:
            raise ValueError("unexpected protobuf wire type %d in stats-dump" % wire)
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def dump_stats(archive: pathlib.Path) -> tuple[float, float, int]:
    """criu's wall time (last timestamp of dump.log), frozen time and pages written (stats-dump)."""
    with tarfile.open(archive) as tar:
        log = tar.extractfile("dump.log")
        stats = tar.extractfile("stats-dump")
        if log is None or stats is None:
            raise RuntimeError("%s has no dump.log or stats-dump" % archive)
        lines = log.read().decode(errors="replace").splitlines()
        raw = stats.read()
    if not lines or "Dumping finished successfully" not in lines[-1]:
        raise RuntimeError("criu's dump.log does not end in success: %s" % (lines[-1:] or "empty"))
    match = CRIU_LOG_TIME.match(lines[-1])
    if not match:
        raise RuntimeError("no timestamp in criu's last log line: %s" % lines[-1])
    # Image file: two magic words, the message size, then stats_entry { dump_stats_entry dump = 1; }.
    size = int.from_bytes(raw[8:12], "little")
    outer = raw[12:12 + size]
    if not outer or outer[0] != 0x0A:
        raise RuntimeError("stats-dump holds no dump statistics")
    length, start = _varint(outer, 1)
    inner = _varints(outer[start:start + length])
    # dump_stats_entry: freezing_time = 1, frozen_time = 2 (microseconds), pages_written = 7.
    return float(match.group(1)), inner.get(2, 0) / 1e6, inner.get(7, 0)


def start_workload(standin: KubeletStandin, mib: int, timeout: float = 600.0) -> Container:
    """The process, allocated and counting."""
    script = "exec perl -e '%s' %d %s" % (WORKLOAD_PERL, mib, COUNTER_DIR)
    container = standin.add_container("bench", "mem-%d" % mib, "mem", script=script, image="registry.example/hcm/membench:1.0")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if int(container.read_file(COUNTER_LOG).decode().split()[-1]) >= 5:
                return container
        except (FileNotFoundError, IndexError):
            pass
        if not container.workload_running() or time.monotonic() > deadline:
            raise RuntimeError("the %d MiB workload did not start counting (running: %s)" % (mib, container.workload_running()))
        time.sleep(0.2)


def rss_mib(container: Container) -> float:
    status = container.read_file("/proc/%d/status" % container.workload_pid).decode()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if not match:
        raise RuntimeError("no VmRSS for the workload")
    return int(match.group(1)) / 1024


def workload_host_pid(container: Container) -> int:
    """The workload's PID as the host sees it (a child of the container's init)."""
    init = container.init_pid()
    for child in pathlib.Path("/proc/%d/task/%d/children" % (init, init)).read_text(encoding="utf-8").split():
        status = pathlib.Path("/proc/%s/status" % child).read_text(encoding="utf-8")
        nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspids and nspids[-1] == str(container.workload_pid):
            return int(child)
    raise RuntimeError("the workload %d is not a child of its container's init" % container.workload_pid)


def cpu_seconds(pid: int, children: bool) -> float:
    """A process's own CPU time (utime + stime), or that of its reaped children (cutime + cstime)."""
    after_comm = pathlib.Path("/proc/%d/stat" % pid).read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    first = 13 if children else 11  # stat fields 16/17 and 14/15, counted from the state field (3)
    return (int(after_comm[first]) + int(after_comm[first + 1])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def checkpoint(standin: KubeletStandin, container: Container, workload: int) -> tuple[pathlib.Path, dict[str, float]]:
    """The archive; criu's dump seconds, the frozen seconds, the rest (tar etc.) and the CPU seconds of it all.

    CPU: criu and its post-dump tar (reaped by the container's init, so in its children's time),
    criu's parasite code (it runs inside the dumped process, so in the workload's own time) and
    this process's tar of the archive.
    """
    init = container.init_pid()
    cpu_before = cpu_seconds(init, children=True) + cpu_seconds(workload, children=False) + time.process_time()
    started = time.perf_counter()
    archive = standin.checkpoint(container, timeout=1800)
    total = time.perf_counter() - started
    cpu = cpu_seconds(init, children=True) + cpu_seconds(workload, children=False) + time.process_time() - cpu_before
    dump, frozen, pages = dump_stats(archive)
    if pages * 4096 > archive.stat().st_size:
        raise RuntimeError("the archive is smaller than the pages criu wrote")
    return archive, {"dump": dump, "frozen": frozen, "archive": total - dump, "checkpoint": total, "checkpoint_cpu": cpu}


def plain_upload(server: S3Server, bucket: str, archive: pathlib.Path) -> tuple[float, float]:
    """boto3's upload_file (multipart, threads), as the other benchmark uploads; seconds and CPU seconds."""
    client = server.client()
    cpu_before = time.process_time()
    started = time.perf_counter()
    client.upload_file(str(archive), bucket, "plain/" + archive.name)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    client.delete_object(Bucket=bucket, Key="plain/" + archive.name)  # keeps the disk use down
    return elapsed, cpu


def restic_backup(restic: str, env: dict[str, str], archive: pathlib.Path) -> tuple[float, float, dict[str, object]]:
    """As the node agent runs it; the seconds, restic's CPU seconds and its JSON summary."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run([restic, "backup", "--json", "--host", "bench", "--one-file-system", "--tag", "kind=workload_state", str(archive)],
                          env=env, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    cpu = children_cpu() - cpu_before
    summaries = [m for m in (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")) if m.get("message_type") == "summary"]
    if not summaries:
        raise RuntimeError("restic printed no summary:\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
    return elapsed, cpu, summaries[-1]


def restore_check(root: pathlib.Path, restic: str, env: dict[str, str], snapshot: str, archive: pathlib.Path, container: Container,
                  scratch: pathlib.Path) -> tuple[float, dict[str, str]]:
    """Get the archive back from restic, criu-restore it in a fresh namespace; it must go on counting."""
    copy = scratch / "restored.tar"
    started = time.perf_counter()
    with open(copy, "wb") as out:
        subprocess.run([restic, "dump", snapshot, str(archive)], env=env, stdout=out, check=True)
    download = time.perf_counter() - started
    opened = scratch / "restored"
    with tarfile.open(copy) as tar:
        tar.extractall(opened, filter="tar")
    copy.unlink()
    result = run_in_root(root, ["sh", "-c", RESTORE_SCRIPT], binds={opened: "/tmp/archive"},
                         env={"LOG": COUNTER_LOG, "PID": str(container.workload_pid)}, timeout=600, check=False)
    shutil.rmtree(opened)
    out = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    context = "rc=%d\n%s\n%s" % (result.returncode, result.stdout, result.stderr)
    if result.returncode != 0 or "resumed" not in out:
        raise RuntimeError("criu restore of the checkpoint restic gave back failed: " + context)
    last = int(out["dumped_last"])
    resumed = [int(x) for x in out["resumed"].split()]
    if int(out["dumped_lines"]) != last or out["alive"] != "yes" or resumed[:5] != list(range(last + 1, last + 6)):
        raise RuntimeError("the restored process did not go on from its checkpointed count: " + context)
    out["restore_seconds"] = "%.2f" % (float(out["restored_done"]) - float(out["restored_started"]))
    return download, out


def measure(size: Size, standin: KubeletStandin, server: S3Server, root: pathlib.Path, restic: str, runs: int, pause: float,
            scratch: pathlib.Path) -> None:
    container = start_workload(standin, size.mib)
    try:
        size.rss_mib = rss_mib(container)
        workload = workload_host_pid(container)
        print("%d MiB: workload counting, RSS %.0f MiB" % (size.mib, size.rss_mib), flush=True)
        for number in range(runs):
            bucket = server.create_bucket("ckpt-%d-%d" % (size.mib, number))
            env = dict(os.environ, RESTIC_REPOSITORY="s3:%s/%s/restic" % (server.endpoint_url, bucket), RESTIC_PASSWORD="bench",
                       RESTIC_CACHE_DIR=str(scratch / "restic-cache"), AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key)
            subprocess.run([restic, "init", "--quiet"], env=env, check=True)
            archive, run = checkpoint(standin, container, workload)
            run["archive_bytes"] = archive.stat().st_size
            run["plain"], run["plain_cpu"] = plain_upload(server, bucket, archive)
            run["restic1"], run["restic1_cpu"], summary = restic_backup(restic, env, archive)
            run["stored1"] = int(str(summary["data_added_packed"]))
            archive.unlink()
            time.sleep(pause)
            archive, second = checkpoint(standin, container, workload)
            run.update({"dump2": second["dump"], "checkpoint2": second["checkpoint"], "checkpoint2_cpu": second["checkpoint_cpu"]})
            run["restic2"], run["restic2_cpu"], summary = restic_backup(restic, env, archive)
            run["added2"], run["stored2"] = int(str(summary["data_added"])), int(str(summary["data_added_packed"]))
            for total, parts in [("total1", ("checkpoint", "restic1")), ("total_plain", ("checkpoint", "plain")), ("total2", ("checkpoint2", "restic2"))]:
                run[total] = run[parts[0]] + run[parts[1]]
                run[total + "_cpu"] = run[parts[0] + "_cpu"] + run[parts[1] + "_cpu"]
            size.runs.append(run)
            print("%d MiB run %d: %s" % (size.mib, number + 1, ", ".join("%s=%.6g" % item for item in sorted(run.items()))), flush=True)
            if number == runs - 1:
                size.restore_download, size.restore = restore_check(root, restic, env, str(summary["snapshot_id"]), archive, container, scratch)
                print("%d MiB: restored, counting on from %s" % (size.mib, size.restore["dumped_last"]), flush=True)
            archive.unlink()
    finally:
        standin.remove_container(*container.key)


def machine() -> str:
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = pathlib.Path("/proc/meminfo").read_text(encoding="utf-8")
    total = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    return "%s, %d CPUs (%s), %.1f GiB RAM, Python %s" % (
        platform.platform(), os.cpu_count() or 0, model.group(1).strip() if model else "unknown CPU",
        int(total.group(1)) / 1024 / 1024 if total else 0, platform.python_version())


def tool_version(root: pathlib.Path, argv: list[str]) -> str:
    out = run_in_root(root, argv, timeout=60).stdout
    match = re.search(r"\d+\.\d+(\.\d+)?", out)
    return match.group(0) if match else "?"


def publish(text: str, record: bool) -> None:
    """Print the results; with ``record``, append them to benchmarks/results.md (every benchmark does)."""
    print(text)
    if record:
        with open(REPO / "benchmarks" / "results.md", "a", encoding="utf-8") as out:
            out.write(text)


def load_average() -> str:
    return pathlib.Path("/proc/loadavg").read_text(encoding="utf-8").split()[0]


def report(sizes: list[Size], runs: int, pause: float, versions: str, load: str) -> str:
    timed = [
        ("criu dump (--leave-running)", "dump", ""),
        ("criu dump: time the process stood frozen", "frozen", ""),
        ("checkpoint: criu dump + tar in CRI-O layout", "checkpoint", "checkpoint_cpu"),
        ("plain S3 upload of the archive (boto3, baseline)", "plain", "plain_cpu"),
        ("restic backup of the archive, first", "restic1", "restic1_cpu"),
        ("**checkpoint + plain upload (baseline)**", "total_plain", "total_plain_cpu"),
        ("**checkpoint + restic, first**", "total1", "total1_cpu"),
        ("second checkpoint, %g s after the first backup" % pause, "checkpoint2", "checkpoint2_cpu"),
        ("restic backup of the second archive (same repository)", "restic2", "restic2_cpu"),
        ("**checkpoint + restic, second**", "total2", "total2_cpu"),
    ]
    lines = [
        "",
        "## Checkpoint + upload, %s, %s" % (dt.date.today().isoformat(), platform.node()),
        "",
        "Machine: %s; the cores are shared with other sessions' jobs (1-min load average %s), so the figures are noisy. "
        "%s, rclone S3 on loopback; median of %d run(s), (min-max) beside it. Workload: perl in the Debian 13 root, N MiB in "
        "1 MiB strings, half /dev/urandom bytes, half JSON-like text records with a running id, then counting (a variable, "
        "appended to a file every 0.1 s). The kubelet stand-in's real `criu dump --leave-running` and CRI-O archive (on disk); "
        "restic runs as the node agent runs it (a new repository per run; the second checkpoint goes into the same one). "
        "Per GiB of process RSS. CPU: criu with its parasite and the tar; restic; boto3's threads (rclone's own CPU in "
        "neither). The restore check uses the last run's second snapshot in a fresh namespace."
        % (machine(), load, versions, runs),
        "",
        "| what | " + " | ".join("%d MiB: s | s/GiB | CPU-s/GiB" % s.mib for s in sizes) + " |",
        "|---|" + "---:|---:|---:|" * len(sizes),
    ]
    for name, wall, cpu in timed:
        cells = []
        for size in sizes:
            low, high = size.spread(wall)
            cells += ["%.2f (%.2f-%.2f)" % (size.median(wall), low, high), "%.2f" % (size.median(wall) / size.gib),
                      "%.2f" % (size.median(cpu) / size.gib) if cpu else ""]
        lines.append("| %s | %s |" % (name, " | ".join(cells)))

    def ratio(size: Size, base: str, other: str) -> str:
        return "%.0f %%" % statistics.median(100 * run[base] / run[other] for run in size.runs)

    facts = [
        ("process RSS", ["%.0f MiB" % s.rss_mib for s in sizes]),
        ("checkpoint archive", ["%.0f MB" % (s.median("archive_bytes") / 1e6) for s in sizes]),
        ("restic, first: stored in the repository (compressed)", ["%.0f MB" % (s.median("stored1") / 1e6) for s in sizes]),
        ("restic, second: bytes added (before / after compression)",
         ["%.1f MB / %.1f MB (%.2f %% of the archive)" % (
             s.median("added2") / 1e6, s.median("stored2") / 1e6, 100 * s.median("added2") / s.median("archive_bytes"))
          for s in sizes]),
        ("upload speed, restic first vs plain (plain s / restic s)", [ratio(s, "plain", "restic1") for s in sizes]),
        ("**checkpoint + restic vs checkpoint + plain upload, first** (BRIEF target >= 80 %)", [ratio(s, "total_plain", "total1") for s in sizes]),
        ("**the same, second (deduplicated)**", [ratio(s, "total_plain", "total2") for s in sizes]),
        ("restore check: restic dump of the second archive", ["%.2f s (%.2f s/GiB)" % (s.restore_download, s.restore_download / s.gib) for s in sizes]),
        ("restore check: criu restore; the count goes on",
         ["%s s; %s -> %s" % (s.restore["restore_seconds"], s.restore["dumped_last"], s.restore["resumed"].split()[0]) for s in sizes]),
    ]
    lines += ["", "| what | " + " | ".join("%d MiB process" % s.mib for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    lines += ["| %s | %s |" % (name, " | ".join(values)) for name, values in facts]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="process memory to allocate, MiB (default: 256 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per size; medians are reported (default: 3)")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between the first backup and the second checkpoint (default: 10)")
    parser.add_argument("--no-record", action="store_true", help="print the results only; do not append them to benchmarks/results.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: criu and the Debian root's mount and pid namespaces")
    root = ensure_debian_root()
    restic = str(root / "usr/bin/restic")
    versions = "criu %s, restic %s" % (tool_version(root, ["criu", "--version"]), tool_version(root, ["restic", "version"]))
    sizes = [Size(mib) for mib in args.sizes]
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="hcm-bench-") as tmp:
        scratch = pathlib.Path(tmp)
        with S3Server(scratch / "s3") as server, KubeletStandin(root, scratch / "standin") as standin:
            for size in sizes:
                measure(size, standin, server, root, restic, args.runs, args.pause, scratch)
    text = report(sizes, args.runs, args.pause, versions, "%s at the start, %s at the end" % (load, load_average()))
    publish(text, record=not args.no_record)


if __name__ == "__main__":
    main()
