"""The lab (issue 3): two real Kubernetes control planes with kwok nodes, checked as a user would.

Workloads go in through ``kubernetes.core.k8s`` run by the ansible CLI and are read back with
``kubernetes.core.k8s_info``; what only the API shows (leases, JWS signatures, sockets) is
read with the kubernetes client. Every wait has a deadline and says what it waited for.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.hclab.client import Lab
from lab.hclab.cluster import api_client
from lab.hclab.paths import REPO
from tests.helpers.ansible_run import ModuleResult, run_module
from tests.helpers.jws import jws_signature_valid
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration


def k8s(lab: Lab, cluster: str, **args: Any) -> ModuleResult:
    result = run_module("kubernetes.core.k8s", {"kubeconfig": str(lab.kubeconfig(cluster)), **args})
    assert not result.get("failed"), result.run.output
    return result


def k8s_info(lab: Lab, cluster: str, **args: Any) -> list[dict[str, Any]]:
    result = run_module("kubernetes.core.k8s_info", {"kubeconfig": str(lab.kubeconfig(cluster)), **args})
    assert not result.get("failed"), result.run.output
    return result["resources"]


def ready_status(node: dict[str, Any]) -> str:
    return next((c["status"] for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"), "")


def deployment(name: str, namespace: str, replicas: int, node: str | None = None) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.example/hcm/web:1.0", "ports": [{"containerPort": 8080}]}]}
    if node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


@pytest.fixture
def namespace(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace name in onprem, created by the test; deleted (not awaited) at teardown."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    yield name
    from kubernetes import client

    try:
        client.CoreV1Api(lab.api("onprem")).delete_namespace(name, _request_timeout=10)
    except client.exceptions.ApiException as error:
        if error.status != 404:
            raise


def test_deployment_applied_with_k8s_is_run_by_the_real_controllers_on_kwok_nodes(lab: Lab, namespace: str) -> None:
    nodes = set(lab.nodes("onprem"))
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    applied = k8s(lab, "onprem", state="present", definition=[ns, deployment("web", namespace, 3)], wait=True, wait_timeout=120, wait_sleep=1)
    assert applied["changed"] is True

    pods = k8s_info(lab, "onprem", kind="Pod", namespace=namespace, label_selectors=["app=web"], wait=True, wait_timeout=120, wait_sleep=1)
    assert len(pods) == 3, json.dumps(pods, indent=1)[:3000]
    [replica_set] = k8s_info(lab, "onprem", kind="ReplicaSet", namespace=namespace, label_selectors=["app=web"])
    [owner] = replica_set["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
    assert replica_set["status"]["readyReplicas"] == 3

    node_cidrs = {node["metadata"]["name"]: node["spec"]["podCIDR"] for node in k8s_info(lab, "onprem", kind="Node")}
    scheduled = {
        event["involvedObject"]["name"]: event
        for event in k8s_info(lab, "onprem", kind="Event", namespace=namespace, field_selectors=["reason=Scheduled"])
    }
    for pod in pods:
        name = pod["metadata"]["name"]
        [pod_owner] = pod["metadata"]["ownerReferences"]
        assert (pod_owner["kind"], pod_owner["name"]) == ("ReplicaSet", replica_set["metadata"]["name"])
        assert pod["spec"]["nodeName"] in nodes, f"{name} on {pod['spec'].get('nodeName')}, not a kwok node of onprem"
        assert pod["status"]["phase"] == "Running"
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["PodScheduled"] == conditions["Ready"] == "True", conditions
        # Placed by kube-scheduler (not by a nodeName in the spec) ...
        assert scheduled[name]["reportingComponent"] == "default-scheduler", scheduled[name]
        assert f"Successfully assigned {namespace}/{name} to {pod['spec']['nodeName']}" in scheduled[name]["message"]
        # ... with the pod IP from the range kube-controller-manager's node IPAM gave that node.
        cidr = node_cidrs[pod["spec"]["nodeName"]]
        assert cidr and _in_cidr(pod["status"]["podIP"], cidr), (pod["status"].get("podIP"), cidr)
    # The pods got the default tolerations (admission plugins are on): 300 s on unreachable nodes.
    tolerations = {t["key"]: t.get("tolerationSeconds") for t in pods[0]["spec"]["tolerations"]}
    assert tolerations == {"node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 300}


def _in_cidr(ip: str, cidr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


@pytest.fixture
def victim(lab: Lab) -> Iterator[str]:
    """The onprem node a test fails; brought back (restore-node) afterwards so the session lab stays whole."""
    node = lab.nodes("onprem")[-1]
    yield node
    if not lab.processes("onprem")[f"onprem/kwok-{node}"].alive():
        lab.restore_node("onprem", node, wait=True)


def test_fail_node_turns_the_node_not_ready_and_leaves_its_pods_bound_to_it(lab: Lab, namespace: str, victim: str) -> None:
    from kubernetes import client

    others = [node for node in lab.nodes("onprem") if node != victim]
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    k8s(lab, "onprem", state="present", definition=[ns, deployment("pinned", namespace, 2, node=victim)], wait=True, wait_timeout=120, wait_sleep=1)
    before = {p["metadata"]["name"]: p for p in k8s_info(lab, "onprem", kind="Pod", namespace=namespace, label_selectors=["app=pinned"])}
    assert len(before) == 2 and {p["spec"]["nodeName"] for p in before.values()} == {victim}
    coordination = client.CoordinationV1Api(lab.api("onprem"))
    lease_before = coordination.read_namespaced_lease(victim, "kube-node-lease").spec.renew_time

    output = lab.fail_node("onprem", victim)
    assert f"killed kwok pid {lab.processes('onprem')[f'onprem/kwok-{victim}'].pid}" in output
    assert not lab.processes("onprem")[f"onprem/kwok-{victim}"].alive()

    # What a playbook would wait for: the node's Ready condition turning Unknown (nothing reports any more).
    # kubernetes.core 6.2 matches status Unknown only together with a reason: without one its argspec
    # sets reason=None and the condition never matches.
    unknown = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}
    [node] = k8s_info(lab, "onprem", kind="Node", name=victim, wait=True, wait_timeout=90, wait_sleep=1, wait_condition=unknown)
    assert ready_status(node) == "Unknown", node["status"]["conditions"]
    assert coordination.read_namespaced_lease(victim, "kube-node-lease").spec.renew_time <= lease_before + datetime.timedelta(seconds=10)

    def unreachable_taint() -> list[dict[str, Any]]:
        [current] = k8s_info(lab, "onprem", kind="Node", name=victim)
        return [t for t in current["spec"].get("taints", []) if t["key"] == "node.kubernetes.io/unreachable" and t["effect"] == "NoExecute"]

    wait_until(f"taint node.kubernetes.io/unreachable:NoExecute on {victim}", unreachable_taint, 60)

    def pods_marked_not_ready() -> list[dict[str, Any]]:
        pods = k8s_info(lab, "onprem", kind="Pod", namespace=namespace, label_selectors=["app=pinned"])
        return pods if all({c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "False" for p in pods) else []

    after = {p["metadata"]["name"]: p for p in wait_until("pods of the dead node marked Ready=False", pods_marked_not_ready, 60)}
    assert sorted(after) == sorted(before), "pods were deleted or replaced"
    for name, pod in after.items():
        assert pod["metadata"]["uid"] == before[name]["metadata"]["uid"]
        assert pod["spec"]["nodeName"] == victim
        assert not pod["metadata"].get("deletionTimestamp"), f"{name} is being evicted already"
    # The other nodes keep renewing their leases and stay Ready.
    for other in k8s_info(lab, "onprem", kind="Node"):
        if other["metadata"]["name"] in others:
            assert ready_status(other) == "True", other["status"]["conditions"]
    for other in others:
        renewed = coordination.read_namespaced_lease(other, "kube-node-lease").spec.renew_time
        assert renewed > lease_before, f"{other}'s lease stopped too"


def _new_token() -> tuple[str, str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _n in range(6)), "".join(secrets.choice(alphabet) for _n in range(16))


def _bootstrap_token_secret(token_id: str, token_secret: str) -> dict[str, Any]:
    expiration = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": token_id,
            "token-secret": token_secret,
            "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        },
    }


def _cluster_info(lab: Lab) -> dict[str, str]:
    [config_map] = k8s_info(lab, "onprem", kind="ConfigMap", namespace="kube-public", name="cluster-info")
    return config_map["data"]


def test_bootstrap_token_is_signed_into_cluster_info_by_the_bootstrapsigner(lab: Lab) -> None:
    token_id, token_secret = _new_token()
    k8s(lab, "onprem", state="present", definition=_bootstrap_token_secret(token_id, token_secret))
    key = f"jws-kubeconfig-{token_id}"

    def signed() -> dict[str, str] | None:
        data = _cluster_info(lab)
        return data if key in data else None

    data = wait_until(f"{key} in kube-public/cluster-info", signed, 60)

    assert jws_signature_valid(data[key], data["kubeconfig"], token_id, token_secret), data[key]
    # What the signature vouches for: this cluster's API server and CA, as a joining node will see them.
    published = yaml.safe_load(data["kubeconfig"])["clusters"][0]["cluster"]
    assert published["server"] == lab.server("onprem")
    assert base64.b64decode(published["certificate-authority-data"]) == lab.ca_cert("onprem").read_bytes()
    assert lab.ca_cert_hash("onprem").startswith("sha256:")

    # Deleting the token withdraws its signature.
    k8s(lab, "onprem", state="absent", kind="Secret", namespace="kube-system", name=f"bootstrap-token-{token_id}")
    wait_until(f"{key} removed from cluster-info", lambda: key not in _cluster_info(lab), 60)


def test_bootstrap_token_authenticates_and_node_client_csr_is_approved_and_signed(lab: Lab) -> None:
    """Node TLS bootstrap as kubelet does it: token -> CSR -> csrapproving -> csrsigning -> a node certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from kubernetes import client

    token_id, token_secret = _new_token()
    k8s(lab, "onprem", state="present", definition=_bootstrap_token_secret(token_id, token_secret))
    config = client.Configuration()
    config.host = lab.server("onprem")
    config.ssl_ca_cert = str(lab.ca_cert("onprem"))
    config.api_key = {"authorization": f"Bearer {token_id}.{token_secret}"}
    as_token = client.ApiClient(config)

    review = client.AuthenticationV1Api(as_token).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review.status.user_info.username == f"system:bootstrap:{token_id}"
    assert "system:bootstrappers:kubeadm:default-node-token" in review.status.user_info.groups

    node = f"joining-{token_id}"
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"), x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    csr_name = f"node-csr-{token_id}"
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name},
        "spec": {
            "request": base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode(),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    }
    certificates = client.CertificatesV1Api(as_token)
    certificates.create_certificate_signing_request(body)

    def issued() -> bytes:
        status = certificates.read_certificate_signing_request(csr_name).status
        return base64.b64decode(status.certificate) if status and status.certificate else b""

    pem = wait_until(f"CSR {csr_name} approved and signed", issued, 60)
    approved = certificates.read_certificate_signing_request(csr_name).status.conditions
    assert [(c.type, c.reason) for c in approved] == [("Approved", "AutoApproved")]
    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(lab.ca_cert("onprem").read_bytes())
    assert cert.subject == subject and cert.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm or hashes.SHA256()))
    k8s(lab, "onprem", state="absent", kind="Secret", namespace="kube-system", name=f"bootstrap-token-{token_id}")


def _listeners() -> dict[int, int]:
    """Loopback TCP port -> pid of the listening process (from `ss`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        match = re.search(r"\s(\S+):(\d+)\s.*pid=(\d+)", line)
        if match:
            found[int(match.group(2))] = int(match.group(3))
    return found


def test_both_clusters_run_at_once_without_sharing_ports_files_or_data(lab: Lab) -> None:
    state = lab.state
    onprem, cloud = state.cluster("onprem"), state.cluster("cloud")
    ports = [port for cluster in (onprem, cloud) for port in cluster.ports.values()]
    assert len(ports) == len(set(ports)) == 10, (onprem.ports, cloud.ports)
    listeners = _listeners()
    for cluster in (onprem, cloud):
        # Each recorded port is listened on by the component it belongs to, and kwok listens on none.
        for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert listeners.get(cluster.ports[component]) == cluster.processes[component].pid, (cluster.name, component)
        assert listeners.get(cluster.ports["etcd-client"]) == cluster.processes["etcd"].pid
        kwok_pids = {r.pid for name, r in cluster.processes.items() if name.startswith("kwok-")}
        assert kwok_pids and not kwok_pids & set(listeners.values()), "a kwok opened a port"
    # Each cluster's files are under its own directory, and its processes use no file of the other's.
    assert Path(onprem.directory).parent == Path(cloud.directory).parent == lab.state_dir
    assert Path(onprem.directory) != Path(cloud.directory)
    for mine, theirs in ((onprem, cloud), (cloud, onprem)):
        for record in mine.processes.values():
            assert not [arg for arg in record.argv if theirs.directory + "/" in arg], (mine.name, record.name)
            assert Path(record.log).is_relative_to(mine.directory)

    # Each API server presents a certificate from its own cluster's CA and no other.
    for mine, theirs in (("onprem", "cloud"), ("cloud", "onprem")):
        port = state.cluster(mine).ports["kube-apiserver"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ssl.create_default_context(cafile=str(lab.ca_cert(mine))).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version()
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                ssl.create_default_context(cafile=str(lab.ca_cert(theirs))).wrap_socket(raw, server_hostname="127.0.0.1")

    # Separate data: a ConfigMap written in onprem is not in cloud; separate etcds, separate nodes.
    marker = f"hclab-isolation-{uuid.uuid4().hex[:8]}"
    k8s(lab, "onprem", state="present", definition={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": marker, "namespace": "default"}})
    assert len(k8s_info(lab, "onprem", kind="ConfigMap", namespace="default", name=marker)) == 1
    assert k8s_info(lab, "cloud", kind="ConfigMap", namespace="default", name=marker) == []
    k8s(lab, "onprem", state="absent", kind="ConfigMap", namespace="default", name=marker)
    uids = {name: k8s_info(lab, name, kind="Namespace", name="kube-system")[0]["metadata"]["uid"] for name in ("onprem", "cloud")}
    assert uids["onprem"] != uids["cloud"]
    for name in ("onprem", "cloud"):
        listed = {node["metadata"]["name"]: node for node in k8s_info(lab, name, kind="Node")}
        assert sorted(listed) == sorted(lab.nodes(name))
        assert {node["metadata"]["labels"]["hclab.io/cluster"] for node in listed.values()} == {name}
        assert all(node["spec"]["podCIDR"] in _subnets(state.cluster(name).pod_cidr) for node in listed.values())


def _subnets(cidr: str) -> set[str]:
    import ipaddress

    return {str(net) for net in ipaddress.ip_network(cidr).subnets(new_prefix=24)}


def test_status_and_logs_show_each_cluster_its_processes_and_nodes(lab: Lab) -> None:
    report = lab.status()
    assert list(report["clusters"]) == ["onprem", "cloud"]
    for name, cluster in report["clusters"].items():
        assert cluster["kubeconfig"] == str(lab.kubeconfig(name)) and cluster["server"] == lab.server(name)
        assert "api_error" not in cluster
        expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} | {f"kwok-{node}" for node in lab.nodes(name)}
        assert set(cluster["processes"]) == expected
        assert all(process["alive"] for process in cluster["processes"].values()), cluster["processes"]
        assert cluster["nodes"] == {node: "True" for node in lab.nodes(name)}
    assert oct(lab.kubeconfig("onprem").stat().st_mode & 0o777) == "0o600"

    text = lab.run("status").stdout
    assert f"kubeconfig {lab.kubeconfig('cloud')}" in text and f"node {lab.nodes('cloud')[0]}" in text
    tail = lab.run("logs", "onprem", "kube-apiserver", "--tail", "5").stdout.splitlines()
    assert len(tail) == 5
    first = lab.run("logs", "onprem", lab.nodes("onprem")[0], "--tail", "0").stdout.splitlines()[0]
    assert first.startswith("=== hclab:") and f"--manage-single-node={lab.nodes('onprem')[0]}" in first
    unknown = lab.run("logs", "onprem", "kubelet", check=False)
    assert unknown.returncode == 1 and "components: etcd, kube-apiserver" in unknown.stderr


def _live_pids_using(directory: Path) -> list[str]:
    """`pgrep -af <state dir>`: live processes with the lab's files on their command line."""
    proc = subprocess.run(["pgrep", "-af", str(directory)], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if not line.split(" ", 1)[1].startswith("pgrep")]


def test_down_stops_every_process_even_after_some_died_and_removes_the_state(lab_factory: Any) -> None:
    private = lab_factory(onprem_nodes=1, cloud_nodes=1)
    records = private.processes()
    assert len(records) == 2 * 5  # etcd, apiserver, controller-manager, scheduler, one kwok; per cluster
    assert all(record.alive() for record in records.values())
    assert _live_pids_using(private.state_dir)
    # Some die before `down`: a failed node, and a scheduler killed behind the lab's back.
    private.fail_node("onprem", private.nodes("onprem")[0])
    scheduler = records["cloud/kube-scheduler"]
    os.kill(scheduler.pid, signal.SIGKILL)
    wait_until("the killed scheduler to be gone", lambda: not scheduler.alive(), 10)

    kept = private.down(keep_state=True)
    assert "stopped; state and logs kept" in kept.stdout
    assert not [label for label, record in records.items() if record.alive()]
    assert _live_pids_using(private.state_dir) == []
    for cluster in ("onprem", "cloud"):
        port = records[f"{cluster}/kube-apiserver"].endpoint.rsplit(":", 1)[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
    assert Path(records["onprem/kube-apiserver"].log).stat().st_size > 0

    removed = private.down()
    assert "removed" in removed.stdout
    assert not private.state_dir.exists()
    assert private.down().returncode == 0  # nothing left: still fine


def test_up_that_cannot_start_a_component_names_it_quotes_its_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    from lab.hclab.paths import REQUIRED_BINARIES, bin_dir

    broken = tmp_path / "bin"
    broken.mkdir()
    for name in REQUIRED_BINARIES:
        (broken / name).symlink_to(bin_dir() / name)
    (broken / "kube-scheduler").unlink()
    (broken / "kube-scheduler").write_text("#!/bin/sh\necho 'simulated: cannot start the scheduler' >&2\nexit 3\n")
    (broken / "kube-scheduler").chmod(0o755)
    state_dir = tmp_path / "state"
    argv = [sys.executable, "-m", "lab.hclab", "up", "--onprem-nodes=1", "--cloud-nodes=0", "--state-dir", str(state_dir)]
    failed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "HCM_LAB_BIN": str(broken)})

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "kube-scheduler exited during startup" in failed.stderr
    assert "simulated: cannot start the scheduler" in failed.stderr
    assert _live_pids_using(state_dir) == []
    assert (state_dir / "onprem" / "logs" / "kube-apiserver.log").exists()  # kept for a look
    subprocess.run([sys.executable, "-m", "lab.hclab", "down", "--state-dir", str(state_dir)], cwd=REPO, timeout=60, check=True, capture_output=True)
    assert not state_dir.exists()


def test_every_subcommand_has_help_and_missing_binaries_name_the_fix(tmp_path: Path) -> None:
    def hclab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lab.hclab", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})}
        )

    for command in ("up", "down", "status", "logs", "fail-node", "restore-node"):
        shown = hclab(command, "--help")
        assert shown.returncode == 0 and "--state-dir" in shown.stdout, shown.stderr
    missing = hclab("up", "--state-dir", str(tmp_path / "state"), env={"HCM_LAB_BIN": str(tmp_path / "no-bin")})
    assert missing.returncode == 1
    assert "make lab-build" in missing.stderr and "kube-apiserver" in missing.stderr
    assert not (tmp_path / "state" / "state.json").exists()


# -- add-node / remove-node, and the cloud watcher (VMs that join by themselves) -----------------

def _node_object(lab: Lab, cluster: str, name: str) -> Any:
    """The Node ``name`` read with the kubernetes client (quick enough to poll), or None."""
    from kubernetes import client

    try:
        return client.CoreV1Api(lab.api(cluster)).read_node(name, _request_timeout=10)
    except client.exceptions.ApiException as error:
        if error.status == 404:
            return None
        raise


def _node_ready(lab: Lab, cluster: str, name: str) -> Any:
    node = _node_object(lab, cluster, name)
    conditions = {c.type: c.status for c in (node.status.conditions or [])} if node is not None and node.status else {}
    return node if conditions.get("Ready") == "True" else None


def _kwoks_managing(lab: Lab, node: str) -> list[str]:
    """`pgrep -af`: live processes run with --manage-single-node=<node> and this lab's files (other labs may run)."""
    proc = subprocess.run(["pgrep", "-af", "--", f"--manage-single-node={node}( |$)"], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if "pgrep" not in line and f"{lab.state_dir}/" in line]


@pytest.fixture
def extra_node(lab: Lab) -> Iterator[str]:
    """The name of a node a test adds to onprem; removed afterwards (a no-op when the test removed it)."""
    node = f"onprem-extra-{uuid.uuid4().hex[:6]}"
    yield node
    lab.remove_node("onprem", node)


def test_add_node_makes_a_node_like_up_does_that_runs_pods_fails_restores_and_is_removed(lab: Lab, namespace: str, extra_node: str) -> None:
    from kubernetes import client

    before = lab.nodes("onprem")
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    added = lab.add_node("onprem", extra_node, labels={"hclab.io/pool": "extra", "topology.kubernetes.io/zone": "onprem-dc1-b"}, wait=True)
    assert f"onprem/{extra_node}: Ready after" in added, added
    assert lab.nodes("onprem") == [*before, extra_node]

    [node] = k8s_info(lab, "onprem", kind="Node", name=extra_node)
    assert ready_status(node) == "True", node["status"]["conditions"]
    labels = node["metadata"]["labels"]
    assert (labels["hclab.io/pool"], labels["topology.kubernetes.io/zone"], labels["topology.kubernetes.io/region"]) == ("extra", "onprem-dc1-b", "onprem-dc1")
    assert (labels["kubernetes.io/hostname"], labels["hclab.io/cluster"], labels["hclab.io/kwok-node"]) == (extra_node, "onprem", extra_node)
    assert node["spec"]["podCIDR"] in _subnets(lab.state.cluster("onprem").pod_cidr)
    internal_ips = {
        item["metadata"]["name"]: next(a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP")
        for item in k8s_info(lab, "onprem", kind="Node")
    }
    assert len(set(internal_ips.values())) == len(internal_ips) == len(before) + 1, internal_ips

    # Its kwok is recorded like the others, authenticates as the node, and renews the node's lease.
    record = lab.processes("onprem")[f"onprem/kwok-{extra_node}"]
    assert record.alive() and f"--manage-single-node={extra_node}" in record.argv
    assert [line.split(" ", 1)[0] for line in _kwoks_managing(lab, extra_node)] == [str(record.pid)]
    kubeconfig = Path(lab.state.cluster("onprem").directory) / f"kwok-{extra_node}.kubeconfig"
    assert f"--kubeconfig={kubeconfig}" in record.argv
    as_node = client.AuthenticationV1Api(api_client(kubeconfig))
    review = as_node.create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review.status.user_info.username == f"system:node:{extra_node}"
    assert "system:nodes" in review.status.user_info.groups
    lease = client.CoordinationV1Api(lab.api("onprem")).read_namespaced_lease(extra_node, "kube-node-lease")
    assert lease.spec.renew_time > started, (lease.spec.renew_time, started)
    assert [(ref.kind, ref.name) for ref in lease.metadata.owner_references] == [("Node", extra_node)]
    cluster_status = lab.status()["clusters"]["onprem"]
    assert cluster_status["nodes"][extra_node] == "True" and cluster_status["processes"][f"kwok-{extra_node}"]["alive"]

    # add-node again: nothing happens.
    again = lab.add_node("onprem", extra_node, wait=True)
    assert "already there" in again, again
    assert lab.processes("onprem")[f"onprem/kwok-{extra_node}"].pid == record.pid and lab.nodes("onprem") == [*before, extra_node]

    # The scheduler places pods on it by its label, and its kwok runs them.
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    pinned = deployment("pool", namespace, 2)
    pinned["spec"]["template"]["spec"]["nodeSelector"] = {"hclab.io/pool": "extra"}
    k8s(lab, "onprem", state="present", definition=[ns, pinned], wait=True, wait_timeout=120, wait_sleep=1)
    pods = k8s_info(lab, "onprem", kind="Pod", namespace=namespace, label_selectors=["app=pool"])
    assert len(pods) == 2
    assert {(pod["spec"]["nodeName"], pod["status"]["phase"]) for pod in pods} == {(extra_node, "Running")}, [p["status"] for p in pods]
    k8s(lab, "onprem", state="absent", kind="Deployment", namespace=namespace, name="pool", wait=True, wait_timeout=120, wait_sleep=1)
    wait_until("the pool pods deleted", lambda: not k8s_info(lab, "onprem", kind="Pod", namespace=namespace, label_selectors=["app=pool"]), 120, interval=1)

    # fail-node and restore-node work on it as on the nodes of `up`.
    lab.fail_node("onprem", extra_node, wait=True)
    assert not record.alive()
    [failed] = k8s_info(lab, "onprem", kind="Node", name=extra_node)
    assert ready_status(failed) in ("Unknown", "False"), failed["status"]["conditions"]
    refused = lab.run("add-node", "onprem", extra_node, check=False)
    assert refused.returncode == 1 and "restore-node" in refused.stderr, refused.stderr
    lab.restore_node("onprem", extra_node, wait=True)
    restored = lab.processes("onprem")[f"onprem/kwok-{extra_node}"]
    assert restored.alive() and restored.pid != record.pid
    assert _node_ready(lab, "onprem", extra_node) is not None

    # remove-node: kwok stopped, Node gone, the lab forgets it; again: nothing to do.
    removed = lab.remove_node("onprem", extra_node)
    assert f"onprem/{extra_node}: removed" in removed, removed
    assert k8s_info(lab, "onprem", kind="Node", name=extra_node) == []
    assert not restored.alive() and _kwoks_managing(lab, extra_node) == []
    assert lab.nodes("onprem") == before
    assert f"kwok-{extra_node}" not in lab.status()["clusters"]["onprem"]["processes"]
    assert not kubeconfig.exists()
    assert "nothing to remove" in lab.remove_node("onprem", extra_node)


# moto's EC2 state is per region and shared by the session: the watcher tests use a region of their own.
WATCH_REGION = "eu-west-3"
MANAGED_BY = {"Key": "hybridcloud.io/managed-by", "Value": "hybridcloud.migration"}


class Launcher:
    """``launch(name, managed=True, instance_type=...)`` runs an EC2 instance in moto (``launch.ec2``)."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2
        self.image = ec2.describe_images()["Images"][0]["ImageId"]
        self.launched: list[str] = []

    def __call__(self, name: str, managed: bool = True, instance_type: str = "t3.medium") -> str:
        tags = [{"Key": "Name", "Value": name}, *([MANAGED_BY] if managed else [])]
        reply = self.ec2.run_instances(
            ImageId=self.image, InstanceType=instance_type, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
        )
        instance_id = str(reply["Instances"][0]["InstanceId"])
        self.launched.append(instance_id)
        return instance_id


@pytest.fixture
def launch(moto_server: Any) -> Iterator[Launcher]:
    """A Launcher in the watcher tests' region; every instance it ran is terminated at teardown."""
    launcher = Launcher(moto_server.client("ec2", region_name=WATCH_REGION))
    yield launcher
    if launcher.launched:
        launcher.ec2.terminate_instances(InstanceIds=launcher.launched)


def test_cloud_watcher_joins_a_node_per_managed_instance_and_removes_it_when_terminated(lab: Lab, moto_server: Any, launch: Launcher) -> None:
    before = lab.nodes("cloud")
    with lab.cloud_watcher("cloud", moto_server.endpoint_url, region=WATCH_REGION, interval=0.5) as watcher:
        instance_id = launch("cloud-worker-7")
        launch("cloud-worker-8", managed=False)
        node = wait_until("Node cloud-worker-7 Ready", lambda: _node_ready(lab, "cloud", "cloud-worker-7"), 45)

        [instance] = launch.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
        labels = node.metadata.labels
        assert labels["node.kubernetes.io/instance-type"] == "t3.medium"
        assert labels["topology.kubernetes.io/region"] == WATCH_REGION
        assert labels["topology.kubernetes.io/zone"] == instance["Placement"]["AvailabilityZone"]
        assert labels["hclab.io/instance-id"] == instance_id
        assert labels["hclab.io/cluster"] == "cloud" and labels["kubernetes.io/hostname"] == "cloud-worker-7"
        assert lab.nodes("cloud") == [*before, "cloud-worker-7"]
        record = lab.processes("cloud")["cloud/kwok-cloud-worker-7"]
        assert record.alive() and "--manage-single-node=cloud-worker-7" in record.argv
        assert [line.split(" ", 1)[0] for line in _kwoks_managing(lab, "cloud-worker-7")] == [str(record.pid)]
        assert watcher.joined == {instance_id: "cloud-worker-7"}

        # The instance without the managed-by tag is ignored, poll after poll.
        polls = watcher.polls
        wait_until("two more polls of the watcher", lambda: watcher.polls >= polls + 2, 30)
        assert _node_object(lab, "cloud", "cloud-worker-8") is None and "cloud-worker-8" not in lab.nodes("cloud")

        launch.ec2.terminate_instances(InstanceIds=[instance_id])
        wait_until("Node cloud-worker-7 removed", lambda: _node_object(lab, "cloud", "cloud-worker-7") is None, 45)
        wait_until("kwok of cloud-worker-7 stopped", lambda: not record.alive(), 30)
        assert wait_until("the lab to forget cloud-worker-7", lambda: lab.nodes("cloud") == before, 30)
        assert _kwoks_managing(lab, "cloud-worker-7") == []
        assert watcher.joined == {}
        assert watcher.errors == []
    assert lab.nodes("cloud") == before


def test_watch_cloud_command_joins_and_removes_nodes_until_sigterm(lab: Lab, moto_server: Any, launch: Launcher) -> None:
    before = lab.nodes("cloud")
    argv = [
        sys.executable, "-m", "lab.hclab", "watch-cloud", "--cluster", "cloud", "--ec2-endpoint", moto_server.endpoint_url,
        "--region", WATCH_REGION, "--interval", "0.5", "--state-dir", str(lab.state_dir),
    ]
    watcher = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        instance_id = launch("cloud-worker-9", instance_type="m5.large")
        node = wait_until("Node cloud-worker-9 Ready", lambda: _node_ready(lab, "cloud", "cloud-worker-9"), 60)
        assert node.metadata.labels["node.kubernetes.io/instance-type"] == "m5.large"
        assert node.metadata.labels["hclab.io/instance-id"] == instance_id
        assert "cloud-worker-9" in lab.nodes("cloud")
        launch.ec2.terminate_instances(InstanceIds=[instance_id])
        wait_until("Node cloud-worker-9 removed", lambda: _node_object(lab, "cloud", "cloud-worker-9") is None, 45)
        wait_until("the lab to forget cloud-worker-9", lambda: lab.nodes("cloud") == before, 30)
        assert watcher.poll() is None, "watch-cloud exited on its own"
    finally:
        watcher.send_signal(signal.SIGTERM)
        output = watcher.communicate(timeout=60)[0]
        lab.remove_node("cloud", "cloud-worker-9")
    assert watcher.returncode == 0, output
    assert re.search(rf"{instance_id} \((pending|running), m5\.large\) boots: node cloud-worker-9 joins cloud", output), output
    assert f"{instance_id} is terminated: node cloud-worker-9 leaves cloud" in output, output
    assert "SIGTERM: stopping" in output and "watch-cloud: stopped" in output, output
    assert "poll failed" not in output, output
    assert _kwoks_managing(lab, "cloud-worker-9") == []


def test_node_commands_have_help_and_refuse_bad_input(lab: Lab) -> None:
    for command in ("add-node", "remove-node", "watch-cloud"):
        shown = lab.run(command, "--help")
        assert "--state-dir" in shown.stdout, shown.stdout
    assert "add-node" in lab.run("--help").stdout and "watch-cloud" in lab.run("--help").stdout
    bad_name = lab.run("add-node", "cloud", "Not_A_Node", check=False)
    assert bad_name.returncode == 1 and "not a valid node name" in bad_name.stderr
    bad_label = lab.run("add-node", "cloud", "cloud-worker-x", "--label", "nolabel", check=False)
    assert bad_label.returncode == 2 and "is not KEY=VALUE" in bad_label.stderr
    no_cluster = lab.run("add-node", "moon", "moon-worker-1", check=False)
    assert no_cluster.returncode == 1 and "no cluster 'moon'" in no_cluster.stderr
    assert "nothing to remove" in lab.remove_node("cloud", "cloud-worker-x")

    # A Node the lab did not make is not taken over.
    from kubernetes import client

    core = client.CoreV1Api(lab.api("cloud"))
    foreign = f"foreign-{uuid.uuid4().hex[:6]}"
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": foreign}})
    try:
        refused = lab.run("add-node", "cloud", foreign, check=False)
        assert refused.returncode == 1 and f"a Node {foreign} exists that the lab did not make" in refused.stderr, refused.stderr
        assert foreign not in lab.nodes("cloud") and "kwok-" + foreign not in lab.state.cluster("cloud").processes
        assert "hclab.io/cluster" not in (core.read_node(foreign).metadata.labels or {})
    finally:
        core.delete_node(foreign)
