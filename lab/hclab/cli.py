"""hclab's command line: ``python -m lab.hclab <command> --help``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.hclab import LabError, commands, paths
from lab.hclab.cloud_watcher import DEFAULT_INTERVAL, DEFAULT_REGION, CloudWatcher
from lab.hclab.vm_cloud import VmCloud
from lab.hclab.state import LabState, require

DESCRIPTION = """\
The lab: two real Kubernetes clusters, onprem and cloud, on this machine. Each has its own etcd,
kube-apiserver, kube-controller-manager and kube-scheduler (built by `make lab-build`), and worker
nodes simulated by kwok, one process per node, so a node can die like a real one (fail-node).
Binaries: $HCM_LAB_BIN, else .build/lab/bin of this checkout. State, PKI, kubeconfigs and logs:
--state-dir, else $HCM_LAB_STATE, else .build/lab/state of this checkout.

A running cluster takes more nodes (add-node, remove-node); watch-cloud makes the EC2 instances
of a moto_server join the cloud cluster as nodes, as VMs booting from the worker image would.
"""

WATCH_DESCRIPTION = """Lab infrastructure standing in for "the VM boots from the worker image and joins": poll the EC2
API at --ec2-endpoint (a moto_server) and, for every pending or running instance tagged
hybridcloud.io/managed-by=hybridcloud.migration, add a kwok node named after its Name tag, with
the labels node.kubernetes.io/instance-type, topology.kubernetes.io/region and zone, and
hclab.io/instance-id. When the instance is terminated, its node is removed. Runs until SIGTERM
or SIGINT; the nodes of running instances stay after it stops.

With --vm-image, a real node instead (lab/hclab/vm_cloud.py): a lab VM boots from that worker
image root at the instance's private address (sshd, containerd, kubelet; the key of the
instance's key pair in root's authorized_keys) and joins when the product runs kubeadm join
there over SSH. The VMs power off when the instance is terminated, or when this stops.
"""


class Printer:
    """Progress lines with the time since start; safe to call from the threads of ``up``."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(f"[{time.monotonic() - self.began:6.1f}s] {line}", flush=True)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"where the lab keeps its state (default: $HCM_LAB_STATE, else {paths.DEFAULT_STATE_DIR})",
    )
    parser = argparse.ArgumentParser(prog="python -m lab.hclab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_up = sub.add_parser("up", parents=[common], help="start both clusters and print where everything is", description="Start the onprem and cloud clusters.")
    p_up.add_argument("--onprem-nodes", type=int, default=3, metavar="N", help="kwok worker nodes in onprem (default: 3)")
    p_up.add_argument("--cloud-nodes", type=int, default=2, metavar="M", help="kwok worker nodes in cloud (default: 2; 0 is fine)")

    p_down = sub.add_parser("down", parents=[common], help="stop every process the lab started and remove its state", description="Stop the lab.")
    p_down.add_argument("--keep-state", action="store_true", help="keep PKI, kubeconfigs, etcd data and logs")

    p_status = sub.add_parser("status", parents=[common], help="processes, endpoints, kubeconfigs and nodes of each cluster", description="Show the lab.")
    p_status.add_argument("--json", action="store_true", help="print JSON")

    p_logs = sub.add_parser("logs", parents=[common], help="the log of one component of one cluster", description="Print a component's log.")
    p_logs.add_argument("cluster", metavar="CLUSTER", help="onprem or cloud")
    p_logs.add_argument("component", metavar="COMPONENT", help="etcd, kube-apiserver, kube-controller-manager, kube-scheduler, or a node name (its kwok)")
    p_logs.add_argument("--tail", type=int, default=100, metavar="N", help="last N lines (default: 100; 0: all)")

    for name, text in (
        ("fail-node", "kill a node's kwok (SIGKILL): heartbeats stop, the node turns NotReady, its pods stay bound to it"),
        ("restore-node", "start a failed node's kwok again: it renews its lease and the node turns Ready"),
    ):
        p_node = sub.add_parser(name, parents=[common], help=text, description=text[0].upper() + text[1:] + ".")
        p_node.add_argument("cluster", metavar="CLUSTER", help="onprem or cloud")
        p_node.add_argument("node", metavar="NODE", help="node name, e.g. onprem-worker-2")
        p_node.add_argument("--wait", action="store_true", help="wait until the node's Ready condition has changed")

    add_text = "add a kwok node to a running cluster, made like the nodes of `up` (identity, Node object, kwok process)"
    add_description = add_text[0].upper() + add_text[1:] + ". Nothing happens if it runs already."
    p_add = sub.add_parser("add-node", parents=[common], help=add_text, description=add_description)
    p_add.add_argument("cluster", metavar="CLUSTER", help="onprem or cloud")
    p_add.add_argument("node", metavar="NODE", help="node name (a DNS name, e.g. cloud-worker-7)")
    p_add.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", type=_label, help="a label of the Node (repeatable; may replace region/zone)"
    )
    p_add.add_argument("--wait", action="store_true", help="wait until the node is Ready")

    remove_text = "stop a node's kwok and delete its Node object; nothing happens if the lab has no such node"
    p_remove = sub.add_parser("remove-node", parents=[common], help=remove_text, description=remove_text[0].upper() + remove_text[1:] + ".")
    p_remove.add_argument("cluster", metavar="CLUSTER", help="onprem or cloud")
    p_remove.add_argument("node", metavar="NODE", help="node name")

    p_watch = sub.add_parser(
        "watch-cloud",
        parents=[common],
        help="make the tagged EC2 instances of a moto_server join a cluster as kwok nodes (until stopped)",
        description=WATCH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_watch.add_argument("--cluster", default="cloud", metavar="CLUSTER", help="the cluster the instances join (default: cloud)")
    p_watch.add_argument("--ec2-endpoint", required=True, metavar="URL", help="the EC2 API, e.g. http://127.0.0.1:5000 (moto_server)")
    p_watch.add_argument("--region", default=DEFAULT_REGION, help=f"the region polled (default: {DEFAULT_REGION})")
    p_watch.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, metavar="SECONDS", help=f"seconds between polls (default: {DEFAULT_INTERVAL:g})")
    p_watch.add_argument("--vm-image", type=Path, metavar="ROOT",
                         help="boot a lab VM from this worker image root behind each instance (it joins only when told to), instead of a kwok node")
    p_watch.add_argument("--vm-disks", type=Path, metavar="DIR", help="where the lab VMs' disks go (default: <state dir>/vms)")
    p_watch.add_argument("--relay-port", type=int, action="append", default=[], metavar="PORT",
                         help="a host port on 127.0.0.1 the lab VMs reach at the same address (a storage server's); repeatable")
    return parser


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _watch_cloud(directory: Path, args: argparse.Namespace, say: Printer) -> None:
    if args.interval <= 0:
        raise LabError("--interval must be more than 0")
    stop = threading.Event()

    def stopping(signum: int, _frame: Any) -> None:
        say(f"watch-cloud: {signal.Signals(signum).name}: stopping")
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    if args.vm_image is None:
        CloudWatcher(directory, args.cluster, args.ec2_endpoint, region=args.region, interval=args.interval, say=say).run(stop)
        return
    cloud = VmCloud(directory, args.cluster, args.ec2_endpoint, image=args.vm_image.resolve(), disks=(args.vm_disks or directory / "vms").resolve(),
                    relay_ports=tuple(args.relay_port), region=args.region, interval=args.interval, say=say)
    try:
        cloud.run(stop)
    finally:
        cloud.remove_joined()  # the VMs live in this process: they power off with it


def _summary(lab: LabState) -> str:
    lines = [f"state: {lab.path}"]
    for cluster in lab.clusters.values():
        pids = ", ".join(f"{name} {record.pid}" for name, record in cluster.processes.items())
        etcd = cluster.etcd
        lines += [
            f"{cluster.name}:",
            f"  api server  {cluster.server}  (CA {cluster.ca_cert})",
            f"  kubeconfig  {cluster.kubeconfig}",
            f"              export KUBECONFIG={cluster.kubeconfig}",
            f"  etcd        {etcd.get('endpoint', '')}  (--cacert {etcd.get('cacert', '')} --cert {etcd.get('cert', '')} --key {etcd.get('key', '')})",
            f"  CIDRs       services {cluster.service_cidr}, pods {cluster.pod_cidr}",
            f"  nodes       {' '.join(cluster.nodes) or '(none)'}",
            f"  logs        {Path(cluster.directory) / 'logs'}",
            f"  pids        {pids}",
        ]
    return "\n".join(lines)


def _print_status(report: dict[str, Any]) -> None:
    print(f"state: {report['state_dir']}")
    for name, cluster in report["clusters"].items():
        print(f"{name}: {cluster['server']}  kubeconfig {cluster['kubeconfig']}")
        for component, process in cluster["processes"].items():
            state = "running" if process["alive"] else ("killed by fail-node" if process["killed"] else "DEAD")
            endpoint = f"  {process['endpoint']}" if process["endpoint"] else ""
            print(f"  {component:<28} pid {process['pid']:<8} {state}{endpoint}")
        if "api_error" in cluster:
            print(f"  API unreachable: {cluster['api_error']}")
        for node, ready in cluster["nodes"].items():
            print(f"  node {node:<23} Ready={ready}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory = paths.state_dir(args.state_dir)
    say = Printer()
    try:
        if args.command == "up":
            lab = commands.up(directory, args.onprem_nodes, args.cloud_nodes, say)
            say(f"lab is up in {time.monotonic() - say.began:.1f}s")
            print(_summary(lab))
            print(f"stop it with: python -m lab.hclab down --state-dir {directory}")
        elif args.command == "down":
            commands.down(directory, args.keep_state, say)
        elif args.command == "status":
            report = commands.status(directory)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_status(report)
        elif args.command == "logs":
            print(commands.component_log(directory, args.cluster, args.component, args.tail))
        elif args.command == "fail-node":
            commands.fail_node(directory, args.cluster, args.node, args.wait, say)
        elif args.command == "restore-node":
            commands.restore_node(directory, args.cluster, args.node, args.wait, say)
        elif args.command == "add-node":
            commands.add_node(directory, args.cluster, args.node, dict(args.label), args.wait, say)
        elif args.command == "remove-node":
            commands.remove_node(directory, args.cluster, args.node, say)
        elif args.command == "watch-cloud":
            require(directory).cluster(args.cluster)  # a lab with that cluster, before watching
            _watch_cloud(directory, args, say)
    except LabError as error:
        print(f"hclab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hclab: interrupted", file=sys.stderr)
        return 130
    return 0
