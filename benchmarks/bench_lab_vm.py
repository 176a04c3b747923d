"""How long a real node takes to come up in the lab: a lab VM's boot, and its kubeadm join.

Each run boots a lab VM from the lab's worker image (built once by build_image.yml, as the tests
do), measures boot -> sshd answering, then runs join_node (tests/integration/playbooks/join_node.yml:
a bootstrap token, `kubeadm join` over SSH, TLS bootstrap, the wait for Ready) and measures the
playbook's wall time and the Node's own Ready time. The baseline, measured in the same run: a
kwok node added to the same cluster (`python -m lab.hclab add-node --wait`), what the migrate tests'
cloud watcher does for an instance. Run from the repository root (root needed):

    .venv/bin/python -m benchmarks.bench_lab_vm [--runs 3] [--no-record]

Results are appended to benchmarks/results.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".build" / "collections")]

from benchmarks.bench_checkpoint_upload import load_average, machine, publish  # noqa: E402  (needs the path above)
from benchmarks.bench_demo import spread  # noqa: E402
from lab.hclab.client import Lab  # noqa: E402
from lab.hclab.lab_vm import LabVM  # noqa: E402
from tests.helpers.ansible_run import run_playbook  # noqa: E402
from tests.helpers.lab_vms import failures, inventory  # noqa: E402
from tests.helpers.lab_worker_image import build_lab_worker_image  # noqa: E402


def once(lab: Lab, image: pathlib.Path, key: pathlib.Path, workdir: pathlib.Path, index: int) -> dict[str, float]:
    name = f"cloud-bench-vm-{index}"
    api_port = int(lab.server("cloud").rsplit(":", 1)[1])
    vm = LabVM(name, image=image, disk=workdir / name, address=f"10.98.0.{10 + index}",
               authorized_keys=key.with_suffix(".pub").read_text(), relay_ports=(api_port,))
    try:
        started = time.monotonic()
        vm.start()
        vm.wait_ssh()
        booted = time.monotonic() - started
        hosts = inventory(workdir / f"{name}.json", key, {name: vm.address})
        text = json.loads(hosts.read_text())
        text["all"]["children"]["new_nodes"] = text["all"]["children"].pop("hcm_new_nodes")
        hosts.write_text(json.dumps(text))
        started = time.monotonic()
        joined = run_playbook(REPO / "tests/integration/playbooks/join_node.yml", inventory=hosts, extra_vars={
            "join_node_kubeconfig": str(lab.kubeconfig("cloud")), "test_run_id": uuid.uuid4().hex[:12],
            "join_node_ignore_preflight_errors": ["SystemVerification"]})
        join = time.monotonic() - started
        if joined.returncode != 0:
            raise RuntimeError(failures(joined))
    finally:
        vm.remove()
        lab.run("remove-node", "cloud", name, check=False)
    started = time.monotonic()
    lab.add_node("cloud", f"cloud-bench-kwok-{index}")
    kwok = time.monotonic() - started
    lab.remove_node("cloud", f"cloud-bench-kwok-{index}")
    return {"boot": booted, "join": join, "kwok": kwok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print the results only; do not append them to benchmarks/results.md")
    args = parser.parse_args()
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="hcm-bench-vm-") as tmp:
        workdir = pathlib.Path(tmp)
        image = build_lab_worker_image(workdir / "image")
        key = workdir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        lab = Lab(workdir / "lab")
        lab.up(onprem_nodes=1, cloud_nodes=1)
        try:
            runs = [once(lab, image, key, workdir, index) for index in range(args.runs)]
        finally:
            lab.down()
    text = "\n".join([
        "", f"## Lab VM boot and kubeadm join, {dt.date.today().isoformat()}, vm", "",
        f"Machine: {machine()}; load {load} at the start, {load_average()} at the end; {args.runs} runs, median (min-max).", "",
        "| step | seconds |", "|---|---|",
        f"| lab VM boot until sshd answers | {spread([r['boot'] for r in runs])} |",
        f"| join_node playbook: token, `kubeadm join` over SSH, TLS bootstrap, Ready, label | {spread([r['join'] for r in runs])} |",
        f"| baseline: a kwok node added and Ready (`add-node --wait`) | {spread([r['kwok'] for r in runs])} |", ""])
    publish(text, record=not args.no_record)


if __name__ == "__main__":
    main()
