"""Lab VMs: the worker image's root booted in a network namespace of its own, reachable over SSH.

LAB INFRASTRUCTURE, NOT PRODUCT CODE. Nothing here can run a real VM, so a lab VM is the closest
thing that runs real node software: a network namespace with one interface (``eth0``, a veth
whose host end routes the VM's address), its own mount, pid, UTS, IPC and cgroup namespaces, a
disk that is an overlay over the image's root (vm/boot.sh), and a PID 1 that starts the services
the image enabled (vm/init.py: sshd, containerd, the kubelet). From the host it is a machine at
``address``: Ansible SSHes in, ``kubeadm join`` runs there, the kubelet registers by TLS
bootstrap, containerd runs the pods with runc, and the API server reaches the kubelet at
``address``:10250.

The lab's API servers listen on 127.0.0.1 only; inside the VM, 127.0.0.1:<port> of each cluster
it may join is relayed to the host's (a listening socket made in the VM's namespace, connected
from the host's), so the cluster-info the VM discovers, with its 127.0.0.1 address and TLS name,
works unchanged.

    vm = LabVM("cloud-onprem-worker-1", image=root, disk=workdir / "vm1", address="10.0.3.7",
               authorized_keys=public_key, relay_ports=(6443,))
    vm.start(); vm.wait_ssh(60); ...; vm.stop()
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lab.hclab import LabError

HERE = Path(__file__).resolve().parent
BOOT_SCRIPT = HERE / "vm" / "boot.sh"
INIT_SCRIPT = HERE / "vm" / "init.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "hclab"
# The host end of every VM's veth has this address; the VM's default route goes to it.
HOST_END = "169.254.77.1"
CLONE_NEWNET = 0x40000000
LOOPBACK = "127.0.0.1"
BOOT_TIMEOUT = 60.0

_libc = ctypes.CDLL(None, use_errno=True)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(err)}")


def _cgroup_controllers() -> list[str]:
    """The host's cgroup v1 hierarchies (cpu, memory, ..., and systemd's named one)."""
    if not CGROUP_ROOT.joinpath("memory").is_dir():
        raise LabError("lab VMs need a cgroup v1 host (/sys/fs/cgroup/memory is missing)")
    return sorted(p.name for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "unified")


def remove_stale() -> list[str]:
    """Remove what lab VMs left when the process that ran them was killed: network namespaces with
    no process in them (their veth and route go with them) and empty cgroups. Returns the names."""
    removed = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.startswith("hclab-")):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout.strip()
        if not pids:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    for parent in CGROUP_ROOT.glob(f"*/{CGROUP_PARENT}"):
        for own in [p for p in parent.iterdir() if p.is_dir()]:
            try:
                for path in [*sorted((p for p in own.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), own]:
                    path.rmdir()
            except OSError:
                continue  # still in use: a running VM's
    return removed


# A lab VM's host key is new at each boot, so none is kept or checked.
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes")


def ssh(key: Path, address: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``command`` as root on the lab VM at ``address``, with the private key ``key``."""
    return subprocess.run(["ssh", "-i", str(key), *SSH_OPTIONS, f"root@{address}", command],
                          capture_output=True, text=True, timeout=timeout, check=False)


def file_digests(key: Path, address: str, path: str) -> dict[str, str]:
    """File name -> sha256 of the files in the directory ``path`` on the lab VM at ``address``."""
    listed = ssh(key, address, f"cd {path} && sha256sum *", timeout=120)
    if listed.returncode != 0:
        raise LabError(f"reading {path} on {address} failed: {listed.stderr.strip()}")
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in listed.stdout.splitlines())}


class LabVM:
    """One lab VM; ``start`` boots it, ``stop`` powers it off (its disk stays until ``remove``)."""

    def __init__(self, name: str, *, image: Path, disk: Path, address: str, authorized_keys: str = "",
                 relay_ports: Sequence[int] = ()) -> None:
        self.name = name
        self.image = Path(image)
        self.disk = Path(disk)
        self.address = address
        self.authorized_keys = authorized_keys
        self.relay_ports = tuple(relay_ports)
        tag = hashlib.sha256(name.encode()).hexdigest()[:8]
        self.netns = f"hclab-{tag}"
        self.veth = f"hv{tag}"
        self.process: subprocess.Popen[bytes] | None = None
        self._relays: list[socket.socket] = []
        self._stopping = threading.Event()

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if not (self.image / "usr/bin/python3").exists():
            raise LabError(f"{self.image} is not a worker image root (no usr/bin/python3)")
        controllers = _cgroup_controllers()
        self._prepare_disk()
        self._network()
        cgroups = self._cgroups(controllers)
        for port in self.relay_ports:
            self._relay(port)
        console = open(self.disk / "console.log", "ab")  # noqa: SIM115  # closed by stop()
        argv = ["ip", "netns", "exec", self.netns,
                "unshare", "--mount", "--pid", "--uts", "--ipc", "--cgroup", "--fork", "--kill-child",
                "/bin/sh", str(BOOT_SCRIPT), str(self.image), str(self.disk), self.name, str(INIT_SCRIPT),
                " ".join(c for c in controllers if c != "systemd")]

        def enter_cgroups() -> None:  # in the child, before exec: the VM's cgroup namespace starts here
            _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the VM dies with the lab process
            for procs in cgroups:
                procs.write_text(str(os.getpid()))

        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                                        preexec_fn=enter_cgroups)  # pylint: disable=subprocess-popen-preexec-fn
        console.close()

    def wait_ssh(self, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabError(f"lab VM {self.name} stopped while booting: {self.console_tail()}")
            try:
                with socket.create_connection((self.address, 22), timeout=2) as conn:
                    if conn.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise LabError(f"lab VM {self.name} at {self.address}: no SSH after {timeout:.0f} s: {self.console_tail()}")

    def stop(self) -> None:
        """Power off: every process of the VM dies with its PID 1; network and cgroups go away."""
        self._stopping.set()
        for listener in self._relays:
            listener.close()
        self._relays.clear()
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        self._remove_cgroups()

    def remove(self) -> None:
        self.stop()
        if self.disk.exists():
            shutil.rmtree(self.disk)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def console_tail(self, lines: int = 20) -> str:
        path = self.disk / "console.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def unit_log(self, unit: str) -> str:
        path = self.disk / "upper/var/log/hclab" / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- parts ----------------------------------------------------------------------------------

    def _prepare_disk(self) -> None:
        """What cloud-init would write at first boot: the SSH key of the instance's key pair."""
        ssh = self.disk / "upper/root/.ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        for path in (ssh.parent, ssh):
            path.chmod(0o700)
        if self.authorized_keys:
            keys = ssh / "authorized_keys"
            keys.write_text(self.authorized_keys.rstrip("\n") + "\n")
            keys.chmod(0o600)

    def _network(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "addr", "add", f"{HOST_END}/32", "dev", self.veth)
        _run("ip", "link", "set", self.veth, "up")
        _run("ip", "route", "add", f"{self.address}/32", "dev", self.veth, "src", HOST_END)
        inside = ("ip", "-n", self.netns)
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "addr", "add", f"{self.address}/32", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "route", "add", HOST_END, "dev", "eth0")
        _run(*inside, "route", "add", "default", "via", HOST_END, "dev", "eth0")

    def _cgroups(self, controllers: list[str]) -> list[Path]:
        procs = []
        for controller in controllers:
            parent = CGROUP_ROOT / controller / CGROUP_PARENT
            own = parent / self.name
            own.mkdir(parents=True, exist_ok=True)
            if controller == "cpuset":  # a new cpuset has no CPUs nor memory nodes until given some
                for path in (parent, own):
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        path.joinpath(knob).write_text(path.parent.joinpath(knob).read_text().strip() or "0")
            procs.append(own / "cgroup.procs")
        return procs

    def _remove_cgroups(self) -> None:
        for controller in CGROUP_ROOT.iterdir():
            own = controller / CGROUP_PARENT / self.name
            if not own.is_dir():
                continue
            for _attempt in range(50):  # processes killed a moment ago may still be leaving
                leftovers = sorted((p for p in own.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
                try:
                    for path in [*leftovers, own]:
                        path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)

    def _relay(self, port: int) -> None:
        """127.0.0.1:``port`` in the VM, relayed to 127.0.0.1:``port`` of the host."""
        listener: socket.socket | None = None
        host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        vm_ns = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            _setns(vm_ns)  # only this thread moves; the socket stays in the namespace it was made in
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, port))
            listener.listen(64)
        finally:
            _setns(host_ns)
            os.close(host_ns)
            os.close(vm_ns)
        self._relays.append(listener)
        threading.Thread(target=self._accept, args=(listener, port), daemon=True, name=f"{self.name}-relay-{port}").start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=_pipe, args=(conn, port), daemon=True).start()


def _pipe(conn: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection((LOOPBACK, port), timeout=10)
    except OSError:
        conn.close()
        return
    upstream.settimeout(None)
    pair = {conn: upstream, upstream: conn}
    try:
        while True:
            readable = select.select(list(pair), [], [])[0]
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                pair[sock].sendall(data)
    except OSError:
        return
    finally:
        conn.close()
        upstream.close()
