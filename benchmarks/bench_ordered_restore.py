"""ordered_restore throughput: 1,000 mixed objects into a lab cluster, beside a kubernetes.core.k8s loop.

Both apply the same objects (ConfigMaps, Secrets, ServiceAccounts, Services and Deployments at 0
replicas, spread over 10 namespaces, plus the namespaces) into the lab's `cloud` cluster in the
same run, each into fresh namespaces so both create everything. Both run as a user runs them,
with ansible-playbook: ordered_restore as one task over a plan file, the baseline as one
kubernetes.core.k8s task (server-side apply) looping over the objects in stage order. The goal
(issue 5) is at least 200 objects/s and 5x the loop. Run from the repository root:

    .venv/bin/python -m benchmarks.bench_ordered_restore [--namespaces 10] [--per-kind 20] [--state-dir DIR]

Without --state-dir it starts a private lab (and stops it); with it, it uses that running lab.
Results are appended to benchmarks/results.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".build" / "collections")]

from tests.helpers.ansible_run import BIN, ansible_env  # noqa: E402  (needs the path above)
from lab.hclab.client import Lab  # noqa: E402

CLUSTER = "cloud"
KINDS = ("ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment")

RESTORE_PLAYBOOK = """\
- name: Restore with ordered_restore
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply the plan stage by stage
      hybridcloud.migration.ordered_restore:
        kubeconfig: "{{ kubeconfig }}"
        plan_file: "{{ plan_file }}"
        workers: "{{ workers | int }}"
        wait: "{{ wait | bool }}"
      register: restored

    - name: Write the module's result
      ansible.builtin.copy:
        content: "{{ restored | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
"""

LOOP_PLAYBOOK = """\
- name: Restore with a kubernetes.core.k8s loop
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply each object
      kubernetes.core.k8s:
        kubeconfig: "{{ kubeconfig }}"
        definition: "{{ item }}"
        apply: true
        server_side_apply:
          field_manager: bench-loop
          force_conflicts: true
      loop: "{{ objects }}"
      loop_control:
        label: "{{ item.kind }} {{ item.metadata.namespace | default('') }}/{{ item.metadata.name }}"
"""


def make_plan(prefix: str, namespaces: int, per_kind: int) -> dict[str, Any]:
    """A plan as migration_plan makes it, one stage per kind group."""
    stages: dict[str, list[dict[str, Any]]] = {name: [] for name in ("namespaces", "rbac", "config", "network", "workloads")}
    for n in range(namespaces):
        ns = "%s-%02d" % (prefix, n)
        stages["namespaces"].append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"bench": prefix}}})
        for i in range(per_kind):
            app = "app-%03d" % i
            meta = {"name": app, "namespace": ns, "labels": {"app": app, "migration.hybridcloud.io/run-id": prefix}}
            stages["rbac"].append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
            stages["config"].append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                                     "data": {"MODE": "production", "LISTEN": ":8080", "UPSTREAM": "http://backend.%s.svc:8080" % ns}})
            stages["config"].append({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
                                     "data": {"password": base64.b64encode(uuid.uuid4().hex.encode()).decode()}})
            stages["network"].append({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                                      "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
            stages["workloads"].append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": dict(meta, annotations={"migration.hybridcloud.io/replicas": "2"}),
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": app}}, "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {"serviceAccountName": app, "containers": [{
                        "name": "app", "image": "registry.example/hcm/%s:1.0" % app, "ports": [{"containerPort": 8080}],
                        "envFrom": [{"configMapRef": {"name": app}}],
                        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": app, "key": "password"}}}]}]}}},
            })
    return {"schema": 1, "run_id": prefix, "stages": [{"name": name, "objects": objects} for name, objects in stages.items()]}


def objects_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for stage in plan["stages"] for obj in stage["objects"]]


def playbook(text: str, scratch: pathlib.Path, extra_vars: dict[str, Any], name: str) -> float:
    """Run a playbook; its wall time in seconds. Fails loudly (with its output's tail) when the playbook fails."""
    book = scratch / (name + ".yml")
    book.write_text(text)
    variables = scratch / (name + "-vars.json")
    variables.write_text(json.dumps(extra_vars))
    env = ansible_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"})
    began = time.perf_counter()
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(book), "-e", "@%s" % variables], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit("%s failed (%d):\n%s%s" % (name, proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
    return seconds


def count_created(lab: Lab, prefix: str, namespaces: int) -> dict[str, int]:
    """What exists in the benchmark's namespaces, per kind: both runs must have made everything."""
    from kubernetes.dynamic import DynamicClient  # pylint: disable=import-outside-toplevel

    client = DynamicClient(lab.api(CLUSTER))
    counts = {}
    for kind, api_version in (("ServiceAccount", "v1"), ("ConfigMap", "v1"), ("Secret", "v1"), ("Service", "v1"), ("Deployment", "apps/v1")):
        resource = client.resources.get(api_version=api_version, kind=kind)
        counts[kind] = sum(
            1 for n in range(namespaces)
            for item in resource.get(namespace="%s-%02d" % (prefix, n)).to_dict()["items"]
            if item["metadata"].get("labels", {}).get("migration.hybridcloud.io/run-id") == prefix
        )
    return counts


def delete_namespaces(lab: Lab, prefixes: list[str], namespaces: int) -> None:
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    core = client.CoreV1Api(lab.api(CLUSTER))
    for prefix in prefixes:
        for n in range(namespaces):
            try:
                core.delete_namespace("%s-%02d" % (prefix, n))
            except client.exceptions.ApiException:
                pass


def run(lab: Lab, args: argparse.Namespace, scratch: pathlib.Path) -> list[str]:
    kubeconfig = str(lab.kubeconfig(CLUSTER))
    tag = uuid.uuid4().hex[:5]
    # Fresh namespaces for each way of applying, so each creates everything.
    ours, unwaited, theirs = "bench-or-%s" % tag, "bench-nowait-%s" % tag, "bench-k8s-%s" % tag
    total = len(objects_of(make_plan(ours, args.namespaces, args.per_kind)))
    load = os.getloadavg()

    def ordered_restore(prefix: str, label: str, wait: bool) -> tuple[float, dict[str, Any]]:
        plan_file = scratch / ("plan-%s.json" % prefix)
        if not plan_file.exists():
            plan_file.write_text(json.dumps(make_plan(prefix, args.namespaces, args.per_kind)))
            plan_file.chmod(0o600)
        result_file = scratch / ("result-%s.json" % label)
        variables = {"kubeconfig": kubeconfig, "plan_file": str(plan_file), "workers": args.workers, "wait": wait, "result_file": str(result_file)}
        wall = playbook(RESTORE_PLAYBOOK, scratch, variables, "restore-" + label)
        result = json.loads(result_file.read_text())
        print("ordered_restore %s: %.2f s wall, module %.2f s, %s" % (label, wall, result["totals"]["seconds"], result["totals"]), flush=True)
        return wall, result

    try:
        first_wall, first = ordered_restore(ours, "first", True)
        second_wall, second = ordered_restore(ours, "second", True)
        unwaited_wall, unwaited_result = ordered_restore(unwaited, "nowait", False)
        baseline_objects = objects_of(make_plan(theirs, args.namespaces, args.per_kind))
        print("baseline: %d objects through a kubernetes.core.k8s loop ..." % len(baseline_objects), flush=True)
        loop_wall = playbook(LOOP_PLAYBOOK, scratch, {"kubeconfig": kubeconfig, "objects": baseline_objects}, "k8s-loop")
        print("kubernetes.core.k8s loop: %.2f s" % loop_wall, flush=True)
        made = {prefix: count_created(lab, prefix, args.namespaces) for prefix in (ours, unwaited, theirs)}
    finally:
        if args.state_dir:
            delete_namespaces(lab, [ours, unwaited, theirs], args.namespaces)
    expected = {kind: args.namespaces * args.per_kind for kind in KINDS}
    if any(counts != expected for counts in made.values()):
        raise SystemExit("not everything was created: %s, expected %s" % (made, expected))
    assert first["totals"]["created"] == unwaited_result["totals"]["created"] == total
    assert second["totals"]["unchanged"] == total and not second["changed"]

    def row(what: str, seconds: float) -> str:
        rate = total / seconds
        return "| %s | %d | %.2f | %s | %.1fx |" % (what, total, seconds, "%.1f" % rate if rate < 10 else "%.0f" % rate, loop_wall / seconds)

    stages = ", ".join("%s %d in %.2f s (waited %.2f s)" % (s["name"], s["objects"], s["seconds"], s["waited_seconds"]) for s in first["stages"])
    applying = sum(s["apply_seconds"] for s in first["stages"])
    return [
        "",
        "## ordered_restore, %s, %s" % (dt.date.today().isoformat(), platform.node()),
        "",
        "Machine: %s, %d CPUs shared with the lab's two clusters and other jobs (load average %.1f at the start), Python %s; "
        "lab cluster `cloud` (Kubernetes v1.37.2, etcd and the API server on loopback), %d workers. "
        "%d objects: %d namespaces with %d each of ServiceAccount, ConfigMap, Secret, Service and Deployment (0 replicas). "
        "Each way into fresh namespaces, in the same run; times are ansible-playbook's wall time, start-up included."
        % (platform.platform(), os.cpu_count() or 0, load[0], platform.python_version(), args.workers, total, args.namespaces, args.per_kind),
        "",
        "| what | objects | seconds | objects/s | vs the k8s loop |",
        "|---|---|---|---|---|",
        row("kubernetes.core.k8s loop, server-side apply, no waits (baseline)", loop_wall),
        row("ordered_restore, wait=false (the loop's work: apply only)", unwaited_wall),
        row("ordered_restore, with the per-kind waits between stages", first_wall),
        row("ordered_restore, second run over the applied plan (all unchanged)", second_wall),
        "",
        "Inside the module (totals.seconds): wait=false %.2f s (%.0f objects/s); with waits %.2f s, of which %.2f s reading and "
        "applying (%.0f objects/s) and %.2f s waiting. By stage: %s."
        % (unwaited_result["totals"]["seconds"], total / unwaited_result["totals"]["seconds"], first["totals"]["seconds"], applying,
           total / applying, first["totals"]["waited_seconds"], stages),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--per-kind", type=int, default=20, help="objects of each kind per namespace (default 20: 1,000 objects in all)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--state-dir", help="use this running lab instead of starting one")
    parser.add_argument("--no-write", action="store_true", help="print the results without appending them to results.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hcm-bench-restore-") as scratch:
        if args.state_dir:
            lines = run(Lab(pathlib.Path(args.state_dir)), args, pathlib.Path(scratch))
        else:
            lab = Lab(pathlib.Path(scratch) / "lab").up(onprem_nodes=1, cloud_nodes=1)
            try:
                lines = run(lab, args, pathlib.Path(scratch))
            finally:
                lab.down()
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(REPO / "benchmarks" / "results.md", "a", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main()
