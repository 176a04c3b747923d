"""A running lab, driven through its command line (``python -m lab.hclab``), for the demo and the tests.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. ``Lab(state_dir)`` starts (``up``) and stops (``down``) the
lab in a state directory of its own, and gives what the demo and the tests need of it:
kubeconfig, API server, CA and nodes per cluster, ``fail_node``/``restore_node``,
``add_node``/``remove_node``, an ApiClient, and, in threads, ``cloud_watcher`` (moto's EC2
instances join as kwok nodes, lab/hclab/cloud_watcher.py) and ``vm_cloud`` (a lab VM boots
behind each instance, lab/hclab/vm_cloud.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lab.hclab import LabError
from lab.hclab.cloud_watcher import CloudWatcher
from lab.hclab.cluster import api_client
from lab.hclab.paths import REPO
from lab.hclab.process import ProcessRecord
from lab.hclab.state import LabState, require
from lab.hclab.vm_cloud import VmCloud

LOG_TAIL_LINES = 40
KWOK_LOG_TAIL_LINES = 15
UP_TIMEOUT = 420
COMMAND_TIMEOUT = 180


class LabCommandError(LabError):
    """An hclab command failed; the message holds its output."""


class Lab:
    """A running lab, driven through its command line; state read from its state file."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.up_output = ""

    # -- the command line ---------------------------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """``python -m lab.hclab ARGS --state-dir <this lab>`` from the repository root."""
        argv = [sys.executable, "-m", "lab.hclab", *args, "--state-dir", str(self.state_dir)]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise LabCommandError(f"{' '.join(argv[2:])} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def up(self, onprem_nodes: int = 3, cloud_nodes: int = 2) -> Lab:
        self.up_output = self.run("up", f"--onprem-nodes={onprem_nodes}", f"--cloud-nodes={cloud_nodes}", timeout=UP_TIMEOUT).stdout
        return self

    def down(self, keep_state: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("down", *(["--keep-state"] if keep_state else []))

    def fail_node(self, cluster: str, node: str, wait: bool = False) -> str:
        """Kill the node's kwok (``fail-node``); with ``wait``, return once it is NotReady."""
        return self.run("fail-node", cluster, node, *(["--wait"] if wait else [])).stdout

    def restore_node(self, cluster: str, node: str, wait: bool = True) -> str:
        return self.run("restore-node", cluster, node, *(["--wait"] if wait else [])).stdout

    def add_node(self, cluster: str, node: str, labels: Mapping[str, str] | None = None, wait: bool = True) -> str:
        """One more kwok node (``add-node``); with ``wait``, return once it is Ready. Remove it when done."""
        label_args = [f"--label={key}={value}" for key, value in (labels or {}).items()]
        return self.run("add-node", cluster, node, *label_args, *(["--wait"] if wait else [])).stdout

    def remove_node(self, cluster: str, node: str) -> str:
        """Stop the node's kwok and delete its Node (``remove-node``); fine if it is not there."""
        return self.run("remove-node", cluster, node).stdout

    @contextlib.contextmanager
    def cloud_watcher(
        self, cluster: str, endpoint_url: str, region: str = "us-east-1", interval: float = 0.5, remove_nodes: bool = True
    ) -> Iterator[CloudWatcher]:
        """Run ``watch-cloud`` in a thread: moto's managed EC2 instances join ``cluster`` as nodes.

        On exit the watcher stops and, with ``remove_nodes``, the nodes it made that are still
        there are removed (a test leaves the shared lab as it found it). Its messages go to
        stdout (pytest shows them for a failed test); ``watcher.errors`` holds failed polls.
        """
        watcher = CloudWatcher(self.state_dir, cluster, endpoint_url, region=region, interval=interval, say=lambda line: print(line, flush=True))
        with self._watching(watcher, cluster, remove_nodes):
            yield watcher

    @contextlib.contextmanager
    def vm_cloud(self, cluster: str, endpoint_url: str, *, image: Path, disks: Path, authorized_keys: str = "",
                 relay_ports: tuple[int, ...] = (), name_prefixes: tuple[str, ...] = (), region: str = "us-east-1",
                 interval: float = 0.5) -> Iterator[VmCloud]:
        """Boot a lab VM from ``image`` behind every managed instance of moto (lab/hclab/vm_cloud.py),
        in a thread; on exit every VM is powered off and its disk removed."""
        cloud = VmCloud(self.state_dir, cluster, endpoint_url, image=image, disks=disks, authorized_keys=authorized_keys,
                        relay_ports=relay_ports, name_prefixes=name_prefixes, region=region, interval=interval, say=lambda line: print(line, flush=True))
        with self._watching(cloud, cluster, True):
            yield cloud

    @staticmethod
    @contextlib.contextmanager
    def _watching(watcher: CloudWatcher, cluster: str, remove: bool) -> Iterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), name=f"hclab-watch-cloud-{cluster}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(COMMAND_TIMEOUT)
            if thread.is_alive():
                raise LabCommandError(f"the cloud watcher did not stop within {COMMAND_TIMEOUT}s")
            if remove:
                watcher.remove_joined()

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.run("status", "--json").stdout)
        return report

    # -- what is where --------------------------------------------------------------------
    @property
    def state(self) -> LabState:
        return require(self.state_dir)

    @property
    def clusters(self) -> list[str]:
        return list(self.state.clusters)

    def kubeconfig(self, cluster: str) -> Path:
        return Path(self.state.cluster(cluster).kubeconfig)

    def server(self, cluster: str) -> str:
        return self.state.cluster(cluster).server

    def ca_cert(self, cluster: str) -> Path:
        return Path(self.state.cluster(cluster).ca_cert)

    def ca_cert_hash(self, cluster: str) -> str:
        """``sha256:<hex>`` of the CA's public key, the pin ``kubeadm join --discovery-token-ca-cert-hash`` takes."""
        from cryptography import x509  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel

        cert = x509.load_pem_x509_certificate(self.ca_cert(cluster).read_bytes())
        spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(spki).hexdigest()

    def nodes(self, cluster: str) -> list[str]:
        return list(self.state.cluster(cluster).nodes)

    def processes(self, cluster: str | None = None) -> dict[str, ProcessRecord]:
        """Every recorded process as ``cluster/component`` -> record."""
        state = self.state
        names = [cluster] if cluster else list(state.clusters)
        return {f"{name}/{component}": record for name in names for component, record in state.cluster(name).processes.items()}

    def api(self, cluster: str) -> Any:
        """A kubernetes ApiClient for ``cluster`` as the lab's admin."""
        return api_client(self.kubeconfig(cluster))

    def log_tails(self) -> list[tuple[str, str]]:
        """(title, text) per component: the end of its log, for failure reports."""
        try:
            records = self.processes()
        except Exception as error:  # pylint: disable=broad-exception-caught  # a report must not fail
            return [(f"lab {self.state_dir}", f"no state: {error}")]
        sections = []
        for label, record in records.items():
            alive = "running" if record.alive() else "not running"
            if record.name.startswith("kwok-"):
                # kwok logs every lease renewal (every 5 s): show what else it did.
                kept = [line for line in record.log_tail(400).splitlines() if '"msg":"Syncing lease"' not in line]
                text, lines = "\n".join(kept[-KWOK_LOG_TAIL_LINES:]), KWOK_LOG_TAIL_LINES
                title = f"lab {label} (pid {record.pid}, {alive}) log, last {lines} lines other than lease renewals, of {record.log}"
            else:
                text, lines = record.log_tail(LOG_TAIL_LINES), LOG_TAIL_LINES
                title = f"lab {label} (pid {record.pid}, {alive}) log, last {lines} lines of {record.log}"
            sections.append((title, text))
        return sections

    def __repr__(self) -> str:
        return f"<Lab {self.state_dir}>"
