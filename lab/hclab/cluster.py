"""One lab cluster: its PKI, its processes, and the API objects a kubeadm cluster would have.

Bring-up order: PKI and kubeconfigs, etcd, kube-apiserver, the API objects (admin binding,
``kube-public/cluster-info`` and the bootstrap-token RBAC kubeadm creates), then
kube-controller-manager and kube-scheduler, then the Node objects and one kwok per node. Each
step waits, with a deadline, until the component answers on its secure port with this
cluster's CA; a failure names the component and quotes the end of its log.

A node is made in three steps, the same for the nodes ``up`` makes and for one ``add-node``
adds to a running cluster (``Cluster.running``): its identity (a client certificate for
``system:node:<name>`` and a kubeconfig), its Node object, and its kwok process.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.hclab import LabError, kubeadm_objects, kwok, paths, pki
from lab.hclab.process import ProcessRecord, https_get, start, stop_all, tls_context, wait_for
from lab.hclab.state import ClusterState, LabState

LOOPBACK = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"

# Deadlines (seconds). Two clusters start at once on two cores: kube-apiserver alone takes ~10-20 s.
ETCD_TIMEOUT = 60.0
APISERVER_TIMEOUT = 120.0
CONTROLLER_TIMEOUT = 90.0
NODES_TIMEOUT = 90.0

# A node whose lease has not moved for this long is marked Ready=Unknown by the node-lifecycle
# controller. The upstream default (50 s) is for real networks; the lab shortens it so a
# failed node turns NotReady about 20 s after fail-node. It stays 4 lease renewals (5 s each)
# long, so a busy machine does not flap nodes.
NODE_MONITOR_GRACE_PERIOD = "20s"
NODE_MONITOR_PERIOD = "2s"

PORT_NAMES = ("etcd-client", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class ClusterSpec:
    """What differs between the lab's clusters: names, CIDRs, node addresses and topology."""

    name: str
    service_cidr: str
    pod_cidr: str
    node_ip_base: str  # node i gets base + i
    region: str
    zones: tuple[str, ...]
    node_count: int

    def node_names(self) -> list[str]:
        return [f"{self.name}-worker-{index}" for index in range(1, self.node_count + 1)]

    def node_ip(self, index: int) -> str:
        return str(ipaddress.ip_address(self.node_ip_base) + index)

    def zone(self, index: int) -> str:
        return self.zones[(index - 1) % len(self.zones)]

    def kubernetes_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))


def default_specs(onprem_nodes: int, cloud_nodes: int) -> list[ClusterSpec]:
    """onprem (one site, one zone) and cloud (a region with two zones); no CIDR in common."""
    return [
        ClusterSpec("onprem", "10.96.0.0/16", "10.244.0.0/16", "192.168.10.10", "onprem-dc1", ("onprem-dc1-a",), onprem_nodes),
        ClusterSpec("cloud", "10.112.0.0/16", "10.248.0.0/16", "172.31.10.10", "cloud-region-1", ("cloud-region-1a", "cloud-region-1b"), cloud_nodes),
    ]


def spec_of(name: str) -> ClusterSpec:
    """The spec of the lab's cluster ``name`` (its node count is 0: a running cluster's nodes are in its state)."""
    for spec in default_specs(0, 0):
        if spec.name == name:
            return spec
    raise LabError(f"no cluster {name!r} in the lab; clusters: {', '.join(spec.name for spec in default_specs(0, 0))}")


# A node name is a DNS subdomain (RFC 1123), as Kubernetes requires; it also names files of the lab.
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_node_name(node: str) -> None:
    if len(node) > 253 or not _NODE_NAME.fullmatch(node):
        raise LabError(f"{node!r} is not a valid node name (lower-case letters, digits, '-' and '.', at most 253 characters)")


def allocate_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports, all free at the same moment (held open until all are chosen)."""
    sockets = []
    try:
        for _index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Cluster:
    """Brings up (and describes) one cluster of the lab."""

    def __init__(self, spec: ClusterSpec, lab: LabState, state: ClusterState, binaries: dict[str, Path], log: Callable[[str], None]) -> None:
        self.spec = spec
        self.lab = lab
        self.state = state
        self.binaries = binaries
        self.say = log
        self.dir = Path(state.directory)
        self.pki_dir = self.dir / "pki"
        self.log_dir = self.dir / "logs"
        self.server = state.server

    @classmethod
    def new(cls, spec: ClusterSpec, lab: LabState, ports: dict[str, int], binaries: dict[str, Path], log: Callable[[str], None]) -> Cluster:
        """A cluster ``up`` is about to start, entered in ``lab``'s state."""
        directory = lab.directory / spec.name
        state = ClusterState(
            name=spec.name,
            directory=str(directory),
            server=f"https://{LOOPBACK}:{ports['kube-apiserver']}",
            kubeconfig=str(directory / "admin.kubeconfig"),
            ca_cert=str(directory / "pki" / "ca.crt"),
            service_cidr=spec.service_cidr,
            pod_cidr=spec.pod_cidr,
            ports=dict(ports),
            nodes=spec.node_names(),
        )
        lab.clusters[spec.name] = state
        return cls(spec, lab, state, binaries, log)

    @classmethod
    def running(cls, lab: LabState, name: str, log: Callable[[str], None]) -> Cluster:
        """Cluster ``name`` of a running lab, as its state file describes it (to add or remove nodes)."""
        return cls(spec_of(name), lab, lab.cluster(name), {}, log)

    def _binary(self, name: str) -> Path:
        if name not in self.binaries:
            self.binaries[name] = paths.binary(name, Path(self.lab.bin_dir) if self.lab.bin_dir else None)
        return self.binaries[name]

    # -- paths ---------------------------------------------------------------------
    def _pair(self, stem: str, sub: str = "") -> pki.CertPair:
        directory = self.pki_dir / sub if sub else self.pki_dir
        return pki.CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")

    def _kubeconfig(self, name: str) -> Path:
        return self.dir / f"{name}.kubeconfig"

    def _log(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    # -- PKI -----------------------------------------------------------------------
    def make_pki(self) -> None:
        """CAs, serving and client certificates, service-account keys and kubeconfigs."""
        name = self.spec.name
        ca = pki.make_ca(self.pki_dir, "ca", f"hclab-{name}-ca")
        etcd_ca = pki.make_ca(self.pki_dir / "etcd", "ca", f"hclab-{name}-etcd-ca")
        local = ("localhost",)
        etcd_ca.issue(self.pki_dir / "etcd", "server", f"hclab-{name}-etcd", server=True, client=True, dns_names=local, ip_addresses=(LOOPBACK,))
        etcd_ca.issue(self.pki_dir / "etcd", "peer", f"hclab-{name}-etcd-peer", server=True, client=True, dns_names=local, ip_addresses=(LOOPBACK,))
        etcd_ca.issue(self.pki_dir / "etcd", "healthcheck-client", "kube-etcd-healthcheck-client", client=True)
        etcd_ca.issue(self.pki_dir, "apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        dns = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{CLUSTER_DOMAIN}", f"{name}.hclab.local")
        ca.issue(self.pki_dir, "apiserver", "kube-apiserver", server=True, dns_names=dns, ip_addresses=(LOOPBACK, self.spec.kubernetes_service_ip()))
        ca.issue(self.pki_dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organizations=("kubeadm:cluster-admins",), client=True)
        ca.issue(self.pki_dir, "controller-manager-server", "kube-controller-manager", server=True, dns_names=local, ip_addresses=(LOOPBACK,))
        ca.issue(self.pki_dir, "scheduler-server", "kube-scheduler", server=True, dns_names=local, ip_addresses=(LOOPBACK,))
        # The front proxy's CA and client: aggregated APIs (metrics-server, ...) trust requests the
        # API server forwards, and the controllers stop logging that the request-header CA is missing.
        front_proxy_ca = pki.make_ca(self.pki_dir, "front-proxy-ca", f"hclab-{name}-front-proxy-ca")
        front_proxy_ca.issue(self.pki_dir, "front-proxy-client", "front-proxy-client", client=True)
        pki.make_service_account_keys(self.pki_dir)
        clients = {
            # name: (common name, groups); admin gets cluster-admin through a binding, like kubeadm's admin.conf
            "super-admin": ("hclab-super-admin", ("system:masters",)),
            "admin": ("hclab-admin", ("hclab:cluster-admins",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        for stem, (common_name, groups) in clients.items():
            self._client_identity(ca, stem, common_name, groups)
        for node in self.spec.node_names():
            self.node_identity(ca, node)
        ports = self.state.ports
        self.state.etcd = {
            "endpoint": f"https://{LOOPBACK}:{ports['etcd-client']}",
            "cacert": str(self._pair("ca", "etcd").cert),
            "cert": str(self._pair("healthcheck-client", "etcd").cert),
            "key": str(self._pair("healthcheck-client", "etcd").key),
        }

    def _client_identity(self, ca: pki.Authority, stem: str, common_name: str, groups: tuple[str, ...]) -> Path:
        pair = ca.issue(self.pki_dir / "clients", stem, common_name, organizations=groups, client=True)
        return pki.write_kubeconfig(self._kubeconfig(stem), pki.kubeconfig(self.spec.name, self.server, ca.cert, stem, pair))

    def node_identity(self, ca: pki.Authority, node: str) -> Path:
        """kwok's kubeconfig for ``node``: a client certificate for ``system:node:<node>`` in ``system:nodes``."""
        return self._client_identity(ca, f"kwok-{node}", f"system:node:{node}", ("system:nodes", KWOK_GROUP))

    def _node_identity_files(self, node: str) -> list[Path]:
        pair = self._client_pair(f"kwok-{node}")
        return [self._kubeconfig(f"kwok-{node}"), pair.cert, pair.key]

    # -- processes -------------------------------------------------------------------
    def _start(self, component: str, argv: list[str], endpoint: str = "", env: dict[str, str] | None = None) -> ProcessRecord:
        record = start(component, argv, self._log(component), cwd=self.dir, env=env, endpoint=endpoint, cluster=self.spec.name)
        self.state.processes[component] = record
        self.lab.save()
        return record

    def _died(self, record: ProcessRecord) -> Callable[[], str | None]:
        def check() -> str | None:
            if record.alive():
                return None
            return f"{record.name} exited during startup; log {record.log}, last lines:\n{record.log_tail(40)}"

        return check

    def _wait_https(self, record: ProcessRecord, port: int, path: str, timeout: float, client: pki.CertPair | None = None, ca: Path | None = None) -> None:
        context = tls_context(ca or self._pair("ca").cert, client.cert if client else None, client.key if client else None)

        def healthy() -> bool:
            status, body = https_get(LOOPBACK, port, path, context)
            return status == 200 and ("ok" in body or '"health":"true"' in body)

        wait_for(
            f"{self.spec.name} {record.name} {path} on :{port}",
            healthy,
            timeout,
            failed=self._died(record),
            detail=lambda: f"log {record.log}, last lines:\n{record.log_tail(40)}",
        )
        self.say(f"{self.spec.name}: {record.name} healthy (pid {record.pid}, https://{LOOPBACK}:{port}{path})")

    def start_etcd(self) -> None:
        ports = self.state.ports
        server, peer = self._pair("server", "etcd"), self._pair("peer", "etcd")
        etcd_ca = self._pair("ca", "etcd").cert
        client_url = f"https://{LOOPBACK}:{ports['etcd-client']}"
        peer_url = f"https://{LOOPBACK}:{ports['etcd-peer']}"
        member = f"hclab-{self.spec.name}"
        argv = [
            str(self.binaries[paths.ETCD]),
            f"--name={member}",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={member}={peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=hclab-{self.spec.name}",
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={etcd_ca}",
            f"--peer-cert-file={peer.cert}",
            f"--peer-key-file={peer.key}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={etcd_ca}",
            "--snapshot-count=10000",
        ]
        (self.dir / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
        # etcd reads ETCD_* variables as flags: keep any from the caller's environment out.
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
        record = self._start("etcd", argv, client_url, env=env)
        self._wait_https(record, ports["etcd-client"], "/health", ETCD_TIMEOUT, self._pair("healthcheck-client", "etcd"), etcd_ca)

    def start_apiserver(self) -> None:
        ports = self.state.ports
        etcd_client = self._pair("apiserver-etcd-client")
        serving = self._pair("apiserver")
        kubelet_client = self._pair("apiserver-kubelet-client")
        argv = [
            str(self.binaries[paths.KUBE_APISERVER]),
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['kube-apiserver']}",
            f"--advertise-address={LOOPBACK}",
            # The `kubernetes` Service's endpoints would be the advertise address, and an
            # Endpoints/EndpointSlice address may not be loopback: the reconciler would fail
            # every 10 s. Nothing in the lab reaches the API through that Service.
            "--endpoint-reconciler-type=none",
            f"--etcd-servers=https://{LOOPBACK}:{ports['etcd-client']}",
            f"--etcd-cafile={self._pair('ca', 'etcd').cert}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={self._pair('ca').cert}",
            f"--requestheader-client-ca-file={self._pair('front-proxy-ca').cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self._pair('front-proxy-client').cert}",
            f"--proxy-client-key-file={self._pair('front-proxy-client').key}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={self.spec.service_cidr}",
            "--authorization-mode=Node,RBAC",
            # On top of the default plugins (ServiceAccount, DefaultTolerationSeconds, ...), as kubeadm does.
            "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        record = self._start("kube-apiserver", argv, self.server)
        self._wait_https(record, ports["kube-apiserver"], "/readyz", APISERVER_TIMEOUT, self._client_pair("super-admin"))

    def _client_pair(self, name: str) -> pki.CertPair:
        """The client certificate and key of one of the lab's identities (also in its kubeconfig)."""
        return self._pair(name, "clients")

    def start_controllers(self) -> None:
        ports = self.state.ports
        ca = self._pair("ca")
        kcm = self._pair("controller-manager-server")
        kubeconfig = self._kubeconfig("controller-manager")
        kcm_argv = [
            str(self.binaries[paths.KUBE_CONTROLLER_MANAGER]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['kube-controller-manager']}",
            f"--tls-cert-file={kcm.cert}",
            f"--tls-private-key-file={kcm.key}",
            f"--client-ca-file={ca.cert}",
            # Every default controller, plus the two kubeadm turns on for bootstrap tokens.
            # csrsigning and csrapproving are in '*'.
            "--controllers=*,bootstrapsigner,tokencleaner",
            f"--cluster-signing-cert-file={ca.cert}",
            f"--cluster-signing-key-file={ca.key}",
            f"--root-ca-file={ca.cert}",
            f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={self.spec.pod_cidr}",
            f"--service-cluster-ip-range={self.spec.service_cidr}",
            "--node-cidr-mask-size=24",
            f"--cluster-name={self.spec.name}",
            # Lab timing (see NODE_MONITOR_GRACE_PERIOD): a failed node turns NotReady in ~20 s.
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
            f"--node-monitor-period={NODE_MONITOR_PERIOD}",
            # One instance per cluster: no leader election, so a restart does not wait out a lease.
            "--leader-elect=false",
            "--profiling=false",
            "--v=2",
        ]
        scheduler = self._pair("scheduler-server")
        kubeconfig = self._kubeconfig("scheduler")
        scheduler_argv = [
            str(self.binaries[paths.KUBE_SCHEDULER]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['kube-scheduler']}",
            f"--tls-cert-file={scheduler.cert}",
            f"--tls-private-key-file={scheduler.key}",
            f"--client-ca-file={ca.cert}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=2",
        ]
        kcm_record = self._start("kube-controller-manager", kcm_argv, f"https://{LOOPBACK}:{ports['kube-controller-manager']}")
        scheduler_record = self._start("kube-scheduler", scheduler_argv, f"https://{LOOPBACK}:{ports['kube-scheduler']}")
        self._wait_https(kcm_record, ports["kube-controller-manager"], "/healthz", CONTROLLER_TIMEOUT)
        self._wait_https(scheduler_record, ports["kube-scheduler"], "/healthz", CONTROLLER_TIMEOUT)

    # -- API objects -----------------------------------------------------------------
    def api(self, identity: str = "admin") -> Any:
        """A kubernetes ApiClient for this cluster as ``identity`` (one of the lab's kubeconfigs)."""
        return api_client(self._kubeconfig(identity))

    def bootstrap_api(self) -> None:
        """The objects kubeadm init creates that the lab needs: admin binding, cluster-info, bootstrap RBAC."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        api = self.api("super-admin")
        rbac = client.RbacAuthorizationV1Api(api)
        core = client.CoreV1Api(api)
        for binding in _cluster_role_bindings():
            _create(rbac.create_cluster_role_binding, binding)
        for role in _cluster_roles():
            _create(rbac.create_cluster_role, role)
        _create(rbac.create_namespaced_role, _cluster_info_role(), namespace="kube-public")
        _create(rbac.create_namespaced_role_binding, _cluster_info_role_binding(), namespace="kube-public")
        _create(rbac.create_namespaced_role, _kwok_lease_role(), namespace="kube-node-lease")
        _create(rbac.create_namespaced_role_binding, _kwok_lease_role_binding(), namespace="kube-node-lease")
        cluster_info = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": pki.cluster_info_kubeconfig(self.server, self._pair("ca").cert)},
        }
        _create(core.create_namespaced_config_map, cluster_info, namespace="kube-public")
        # What kubeadm join reads after discovery (a real node joins a lab VM: lab_vm.py).
        version = client.VersionApi(api).get_code(_request_timeout=10).git_version
        for config_map in kubeadm_objects.config_maps(version, self.server.removeprefix("https://"), self.spec.pod_cidr,
                                                      self.spec.service_cidr, self.spec.name):
            _create(core.create_namespaced_config_map, config_map, namespace="kube-system")
        for obj in kubeadm_objects.roles_and_bindings():
            create = rbac.create_namespaced_role if obj["kind"] == "Role" else rbac.create_namespaced_role_binding
            _create(create, obj, namespace="kube-system")
        # The admin kubeconfig works once its group is bound: check it does before handing it out.
        admin = client.CoreV1Api(self.api("admin"))
        wait_for(f"{self.spec.name} admin kubeconfig can list nodes", lambda: admin.list_node(_request_timeout=5) is not None, 30)

    def register_nodes(self) -> None:
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(self.api())
        for index, node in enumerate(self.spec.node_names(), start=1):
            self.register_node(core, node, index)

    def register_node(self, core: Any, node: str, index: int, labels: Mapping[str, str] | None = None) -> None:
        """Create the Node object of node number ``index`` (a kubelet registers itself; kwok does not)."""
        manifest = kwok.node_manifest(node, self.spec.name, self.spec.region, self.spec.zone(index), labels)
        if not _create(core.create_node, manifest):  # there already (a kept etcd, a half-done add-node): make it ours
            metadata = manifest["metadata"]
            core.patch_node(node, {"metadata": {"labels": metadata["labels"], "annotations": metadata["annotations"]}}, _request_timeout=10)

    def _stages(self) -> Path:
        """kwok's ``--config`` (the stages), shared by the cluster's kwoks; written once."""
        path = self.dir / "kwok" / "stages.yaml"
        return path if path.exists() else kwok.write_stages(path)

    def start_nodes(self) -> None:
        stages = self._stages()
        for index, node in enumerate(self.spec.node_names(), start=1):
            self.start_node(node, self.spec.node_ip(index), stages)
        self.wait_nodes_ready(self.spec.node_names())

    def start_node(self, node: str, node_ip: str, stages: Path) -> ProcessRecord:
        argv = kwok.argv(self._binary(paths.KWOK), node, node_ip, self._kubeconfig(f"kwok-{node}"), stages)
        return self._start(f"kwok-{node}", argv, env=kwok.environment(self.dir / "kwok" / node))

    # -- one node more or less, in a running cluster -------------------------------------
    def _free_node_index(self) -> int:
        """The lowest node number whose address no kwok of this cluster uses (failed ones included)."""
        used = {
            arg.split("=", 1)[1]
            for name, record in self.state.processes.items()
            if name.startswith("kwok-")
            for arg in record.argv
            if arg.startswith("--node-ip=")
        }
        index = 1
        while self.spec.node_ip(index) in used:
            index += 1
        return index

    def add_node(self, node: str, labels: Mapping[str, str] | None = None) -> ProcessRecord:
        """One more node, made as ``up`` makes each: identity, Node object, kwok; recorded in the state.

        A Node of that name that the lab did not make is refused. On failure, what was made is undone.
        """
        from kubernetes import client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

        check_node_name(node)
        core = client.CoreV1Api(self.api())
        try:
            existing = core.read_node(node, _request_timeout=10)
        except ApiException as error:
            if error.status != 404:
                raise LabError(f"{self.spec.name}: reading Node {node}: {error.status} {error.reason}") from error
        else:
            owner = (existing.metadata.labels or {}).get(kwok.CLUSTER_LABEL)
            if owner != self.spec.name:
                raise LabError(f"{self.spec.name}: a Node {node} exists that the lab did not make. Fix: delete it, or choose another name")
        index = self._free_node_index()
        self.node_identity(pki.Authority(self._pair("ca")), node)
        self.state.nodes.append(node)
        self.lab.save()
        try:
            self.register_node(core, node, index, labels)
            return self.start_node(node, self.spec.node_ip(index), self._stages())
        except BaseException:
            try:
                self.remove_node(node)
            except Exception as cleanup:  # pylint: disable=broad-exception-caught  # the first error is the one to report
                self.say(f"{self.spec.name}/{node}: could not undo the half-made node: {cleanup}")
            raise

    def remove_node(self, node: str) -> ProcessRecord | None:
        """Stop the node's kwok, delete its Node object and credentials, and forget it (its log stays)."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

        record = self.state.processes.get(f"kwok-{node}")
        if record is not None:
            stop_all([record], self.say)
            if record.alive():
                raise LabError(f"{self.spec.name}/{node}: kwok pid {record.pid} does not stop")
        core = client.CoreV1Api(self.api())
        try:
            core.delete_node(node, _request_timeout=10)
        except ApiException as error:
            if error.status != 404:
                raise LabError(f"{self.spec.name}: deleting Node {node}: {error.status} {error.reason}: {error.body}") from error

        def gone() -> bool:
            try:
                core.read_node(node, _request_timeout=5)
            except ApiException as error:
                if error.status == 404:
                    return True
                raise
            return False

        wait_for(f"{self.spec.name} Node {node} deleted", gone, 30)
        self.state.processes.pop(f"kwok-{node}", None)
        if node in self.state.nodes:
            self.state.nodes.remove(node)
        self.lab.save()
        for path in self._node_identity_files(node):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "kwok" / node, ignore_errors=True)
        return record

    def wait_nodes_ready(self, nodes: list[str], timeout: float = NODES_TIMEOUT) -> None:
        """Wait until every node in ``nodes`` is Ready with a pod CIDR, and the controllers work."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(self.api())
        wanted = set(nodes)

        def ready() -> bool:
            listed = {item.metadata.name: item for item in core.list_node(_request_timeout=5).items}
            return all(name in listed and node_ready(listed[name]) == "True" and listed[name].spec.pod_cidr for name in wanted)

        records = [self.state.processes[f"kwok-{name}"] for name in nodes if f"kwok-{name}" in self.state.processes]

        def died() -> str | None:
            for record in records:
                if not record.alive():
                    return f"{record.name} exited during startup; log {record.log}, last lines:\n{record.log_tail(40)}"
            return None

        def logs() -> str:
            kcm = self.state.processes["kube-controller-manager"]
            return "\n".join(f"--- {record.log}\n{record.log_tail(15)}" for record in [*records, kcm])

        wait_for(f"{self.spec.name} nodes {', '.join(nodes)} Ready with a pod CIDR", ready, timeout, interval=0.5, failed=died, detail=logs)
        self.say(f"{self.spec.name}: nodes Ready: {', '.join(nodes) or '(no nodes)'}")

    def wait_service_accounts(self) -> None:
        """The ServiceAccount controller has made ``default/default`` (pods need it to be admitted)."""
        from kubernetes import client  # pylint: disable=import-outside-toplevel

        core = client.CoreV1Api(self.api())
        wait_for(
            f"{self.spec.name} service account default/default",
            lambda: core.read_namespaced_service_account("default", "default", _request_timeout=5),
            CONTROLLER_TIMEOUT,
            interval=0.5,
        )

    # -- all of it -------------------------------------------------------------------------
    def up(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, mode=0o700)
        self.make_pki()
        self.lab.save()
        self.start_etcd()
        self.start_apiserver()
        self.bootstrap_api()
        self.start_controllers()
        self.register_nodes()
        self.start_nodes()
        self.wait_service_accounts()


def api_client(kubeconfig: Path | str) -> Any:
    """A kubernetes ApiClient from a kubeconfig file (no global configuration touched)."""
    from kubernetes import config  # pylint: disable=import-outside-toplevel

    return config.new_client_from_config(config_file=str(kubeconfig))


def node_ready(node: Any) -> str:
    """The status of a Node's Ready condition: "True", "False", "Unknown", or "" if it has none."""
    for condition in (node.status.conditions if node.status else None) or []:
        if condition.type == "Ready":
            return str(condition.status)
    return ""


def _create(method: Callable[..., Any], body: dict[str, Any], **kwargs: Any) -> bool:
    """Create an object; one that exists already is fine (``up`` on a kept etcd): False then."""
    from kubernetes.client.exceptions import ApiException  # pylint: disable=import-outside-toplevel

    try:
        method(body=body, _request_timeout=10, **kwargs)
    except ApiException as error:
        if error.status != 409:
            raise LabError(f"creating {body['kind']} {body['metadata']['name']}: {error.status} {error.reason}: {error.body}") from error
        return False
    return True


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    }


BOOTSTRAPPERS = "system:bootstrappers:kubeadm:default-node-token"
KWOK_GROUP = "hclab:kwok-nodes"
CSR_ROLE_PREFIX = "system:certificates.k8s.io:certificatesigningrequests"


def _cluster_role_bindings() -> list[dict[str, Any]]:
    """The admin binding and kubeadm's bindings for node TLS bootstrap (names as kubeadm makes them)."""
    return [
        _binding("hclab:cluster-admins", "cluster-admin", "Group", "hclab:cluster-admins"),
        _binding("kubeadm:cluster-admins", "cluster-admin", "Group", "kubeadm:cluster-admins"),
        _binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", "Group", BOOTSTRAPPERS),
        _binding("kubeadm:node-autoapprove-bootstrap", f"{CSR_ROLE_PREFIX}:nodeclient", "Group", BOOTSTRAPPERS),
        _binding("kubeadm:node-autoapprove-certificate-rotation", f"{CSR_ROLE_PREFIX}:selfnodeclient", "Group", "system:nodes"),
        _binding("kubeadm:get-nodes", "kubeadm:get-nodes", "Group", BOOTSTRAPPERS),
        _binding(KWOK_GROUP, KWOK_GROUP, "Group", KWOK_GROUP),
    ]


def _cluster_roles() -> list[dict[str, Any]]:
    return [
        {
            # kwok checks the API is up by listing nodes (Limit 1) before it watches only its own,
            # and it keeps its lease in an informer (list+watch, field selector on its name); the
            # Node authorizer lets a node do neither. Besides these reads (see _kwok_lease_role),
            # a kwok node has exactly a kubelet's rights (Node authorizer + NodeRestriction).
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": KWOK_GROUP},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        }
    ]


def _kwok_lease_role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": KWOK_GROUP, "namespace": "kube-node-lease"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"]}],
    }


def _kwok_lease_role_binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": KWOK_GROUP, "namespace": "kube-node-lease"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": KWOK_GROUP},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": KWOK_GROUP}],
    }


def _cluster_info_role() -> dict[str, Any]:
    """Anyone may read cluster-info: a joining node trusts it only through the JWS and the CA hash."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get"]}],
    }


def _cluster_info_role_binding() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "kubeadm:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubeadm:bootstrap-signer-clusterinfo"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}],
    }
