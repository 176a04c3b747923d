"""What a person checks after the migration, each check one line: where the pods run, the bytes, the count."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from demo.lab_site import DATA_PATH, NEW_NODE, NS, ONPREM_VM, LabSite
from lab.hclab import counter
from lab.hclab.lab_vm import file_digests


@dataclass
class Check:
    what: str
    passed: bool
    detail: str


def _eventually(probe: Callable[[], tuple[bool, str]], within: float) -> tuple[bool, str]:
    """``probe()`` until it passes or ``within`` seconds are over; an error is a failed probe."""
    deadline = time.monotonic() + within
    while True:
        try:
            passed, detail = probe()
        except Exception as error:  # pylint: disable=broad-exception-caught  # a check reports, it does not stop the demo
            passed, detail = False, f"{type(error).__name__}: {str(error)[:200]}"
        if passed or time.monotonic() >= deadline:
            return passed, detail
        time.sleep(2)


def _pods(site: LabSite, cluster: str, app: str) -> list[Any]:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    return [p for p in client.CoreV1Api(site.lab.api(cluster)).list_namespaced_pod(NS, label_selector=f"app={app}").items
            if p.metadata.deletion_timestamp is None]


def _placed(site: LabSite, cluster: str, app: str) -> list[str]:
    return sorted(f"{p.metadata.name.rsplit('-', 2)[0] if app != 'db' else p.metadata.name} on {p.spec.node_name} ({p.status.phase})"
                  for p in _pods(site, cluster, app))


def run_all(site: LabSite, data: dict[str, str], counted: tuple[int, int], say: Callable[[str], None]) -> list[Check]:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    def node_ready() -> tuple[bool, str]:
        node = client.CoreV1Api(site.lab.api("cloud")).read_node(NEW_NODE)
        ready = [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
        came_from = (node.metadata.labels or {}).get("hybridcloud.io/migrated-from")
        return ready and came_from == ONPREM_VM, (f"{NEW_NODE} Ready={ready}, runtime {node.status.node_info.container_runtime_version}, "
                                                  f"labelled migrated-from={came_from}")

    def moved() -> tuple[bool, str]:
        placed = {app: _placed(site, "cloud", app) for app in ("db", "counter", "web")}
        wanted = {"db": [f"db-0 on {NEW_NODE} (Running)"], "counter": [f"counter on {NEW_NODE} (Running)"], "web": [f"web on {NEW_NODE} (Running)"]}
        return placed == wanted, "; ".join(", ".join(v) or f"no {k}" for k, v in placed.items())

    def stayed() -> tuple[bool, str]:
        web = _placed(site, "onprem", "web")
        replicas = client.AppsV1Api(site.lab.api("onprem")).read_namespaced_deployment("web", NS).spec.replicas
        return replicas == 1 and len(web) == 1 and ONPREM_VM not in web[0] and "Running" in web[0], f"replicas {replicas}: {', '.join(web) or 'none'}"

    def same_bytes() -> tuple[bool, str]:
        found = file_digests(site.ssh_key, site.new_node_address(), DATA_PATH)
        return found == data, ", ".join(f"{name} {'equal' if found.get(name) == digest else 'DIFFERENT'}" for name, digest in sorted(data.items()))

    def counts_on() -> tuple[bool, str]:
        pod = _pods(site, "cloud", "counter")[0].metadata.name
        log = client.CoreV1Api(site.lab.api("cloud")).read_namespaced_pod_log(pod, NS, _request_timeout=10)
        return counter.continues_from([int(x) for x in log.split()], *counted)

    found = []
    for what, probe, within in (
            (f"the new node {NEW_NODE} joined cloud and is Ready", node_ready, 60),
            (f"cloud runs db-0, the counter and web's share (1 of 2) on {NEW_NODE}", moved, 120),
            ("onprem keeps the other web replica, on its live node (web scaled to 1 there)", stayed, 60),
            (f"db-0's local volume on {NEW_NODE} holds the bytes backed up on {ONPREM_VM} (sha256)", same_bytes, 30),
            ("the counter goes on from its checkpointed value (its memory came back)", counts_on, 60)):
        passed, detail = _eventually(probe, within)
        found.append(Check(what, passed, detail))
        say(f"{'ok' if passed else 'FAILED'}: {what}: {detail}")
    return found


def nothing_changed(site: LabSite, output: str, hosts: Iterable[str], say: Callable[[str], None]) -> Check:
    """The play recap of a second run: changed=0 on every host that matters, and still one VM."""
    recap = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", output, re.MULTILINE)}
    changed = {host: recap.get(host) for host in hosts}
    vms = [i["InstanceId"] for r in site.moto.client("ec2").describe_instances(Filters=[
        {"Name": "tag:Name", "Values": [NEW_NODE]}, {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
        for i in r["Instances"]]
    check = Check("a second migrate.yml changes nothing (the same VM, no second join, everything applied)",
                  all(value == 0 for value in changed.values()) and len(vms) == 1,
                  ", ".join(f"{host} changed={value}" for host, value in changed.items()) + f"; instances named {NEW_NODE}: {len(vms)}")
    say(f"{'ok' if check.passed else 'FAILED'}: {check.what}: {check.detail}")
    return check


def no_secrets(output: str, site: LabSite, say: Callable[[str], None]) -> Check:
    """None of the run's secrets in anything the playbooks printed, nor in a plain object of the bucket."""
    secrets = site.secrets()
    objects = site.plain_objects()
    leaked = [name for name, value in secrets.items() if value and value in output]
    stored = sorted({f"{name} in {path.name}" for path in objects for name, value in secrets.items() if value.encode() in path.read_bytes()})
    has_plan = any(path.name == "plan.json" for path in objects)
    check = Check(f"no secret in the playbooks' output or in the bucket's plain objects ({', '.join(secrets)})", has_plan and not leaked and not stored,
                  "; ".join([f"found in the output: {', '.join(leaked)}"] * bool(leaked) + [f"stored: {', '.join(stored)}"] * bool(stored)
                            + ["no plan.json among the bucket's objects"] * (not has_plan))
                  or f"none in {len(output.splitlines())} lines of output and {len(objects)} objects (the plan among them)")
    say(f"{'ok' if check.passed else 'FAILED'}: {check.what}: {check.detail}")
    return check
