"""ordered_restore against the lab's `cloud` cluster: a plan applied stage by stage, read back through the API.

The module runs through the ansible CLI as a user would; what it made is read back with the
kubernetes client. Faults are real: an object the API server refuses, a claim that cannot
bind within its kind's timeout, and the API server going away mid-restore (a TCP proxy in
front of it, TLS end to end, is cut and brought back).
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.hclab.client import Lab
from tests.helpers.ansible_run import ModuleResult, run_module
from tests.helpers.tcp_proxy import TcpProxy, proxy_to
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.integration

CLOUD = "cloud"
CLOUD_SERVICE_CIDR = ipaddress.ip_network("10.112.0.0/16")
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex
REPLICAS = "migration.hybridcloud.io/replicas"
STAGE_NAMES = ["namespaces", "crds", "rbac", "config", "storage", "network", "custom", "workloads", "policies"]


def restore(lab: Lab, check: bool = False, kubeconfig: Path | None = None, **args: Any) -> ModuleResult:
    return run_module("ordered_restore", {"kubeconfig": str(kubeconfig or lab.kubeconfig(CLOUD)), **args}, check=check)


def dynamic(lab: Lab) -> Any:
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(lab.api(CLOUD))


def read(lab: Lab, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        return dynamic(lab).resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None


def labels(app: str) -> dict[str, Any]:
    return {"matchLabels": {"app": app}}


def pod_template(app: str, volume_claim: str | None = None) -> dict[str, Any]:
    container = {"name": "app", "image": "registry.example/hcm/%s:1.0" % app, "envFrom": [{"configMapRef": {"name": "settings"}}]}
    spec: dict[str, Any] = {"serviceAccountName": "shop", "containers": [container]}
    if volume_claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": volume_claim}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def make_plan(ns: str, node: str) -> dict[str, Any]:
    """A plan as migration_plan makes it: every kind the restore handles, one stage each, workloads at 0."""
    group = "%s.example.com" % ns
    run = {"migration.hybridcloud.io/run-id": ns}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets." + group},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]},
    }

    def meta(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": ns, "labels": dict(run), **extra}

    workload_meta = {"annotations": {REPLICAS: "2"}}
    return {
        "schema": 1, "run_id": ns, "failed_node": "onprem-worker-3", "source_cluster": "onprem",
        "stages": [
            {"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": dict(run)}}]},
            {"name": "crds", "objects": [crd]},
            {"name": "rbac", "objects": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("shop")},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader"),
                 "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("shop-reader"),
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                 "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": ns}]},
            ]},
            {"name": "config", "objects": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"), "data": {"MODE": "restored", "LEVEL": "3"}},
                {"apiVersion": "v1", "kind": "Secret", "metadata": meta("db"), "type": "Opaque",
                 "data": {"password": base64.b64encode(SECRET_VALUE.encode()).decode()}},
            ]},
            {"name": "storage", "objects": [
                {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": ns + "-wffc"},
                 "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"},
                {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": ns + "-data", "labels": dict(run)},
                 "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage",
                          "persistentVolumeReclaimPolicy": "Retain", "local": {"path": "/mnt/disks/" + ns},
                          "claimRef": {"namespace": ns, "name": "data"},
                          "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                              {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data"),
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-storage", "volumeName": ns + "-data",
                          "resources": {"requests": {"storage": "1Gi"}}}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("scratch"),
                 "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": ns + "-wffc", "resources": {"requests": {"storage": "1Gi"}}}},
            ]},
            {"name": "network", "objects": [
                {"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
                 "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
            ]},
            {"name": "custom", "objects": [
                {"apiVersion": group + "/v1", "kind": "Widget", "metadata": meta("gear"), "spec": {"size": 7}},
            ]},
            {"name": "workloads", "objects": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", **copy.deepcopy(workload_meta)),
                 "spec": {"replicas": 0, "selector": labels("web"), "template": pod_template("web")}},
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db", annotations={REPLICAS: "1"}),
                 "spec": {"replicas": 0, "serviceName": "web", "selector": labels("db"), "template": pod_template("db", "data")}},
            ]},
            {"name": "policies", "objects": [
                {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web"), "spec": {"minAvailable": 1, "selector": labels("web")}},
                {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta("web"),
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 4,
                          "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}},
            ]},
        ],
        "scale_up": [
            {"kind": "Deployment", "api_version": "apps/v1", "namespace": ns, "name": "web", "replicas": 2},
            {"kind": "StatefulSet", "api_version": "apps/v1", "namespace": ns, "name": "db", "replicas": 1},
        ],
    }


def count_objects(plan: dict[str, Any]) -> int:
    return sum(len(stage["objects"]) for stage in plan["stages"])


def cleanup(lab: Lab, ns: str) -> None:
    """Delete what a plan made (namespaced objects go with the namespace); not awaited."""
    from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

    client = dynamic(lab)
    for api_version, kind, name in (
        ("v1", "Namespace", ns), ("v1", "PersistentVolume", ns + "-data"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.%s.example.com" % ns),
        ("storage.k8s.io/v1", "StorageClass", ns + "-wffc"),
    ):
        try:
            client.resources.get(api_version=api_version, kind=kind).delete(name=name)
        except (NotFoundError, ResourceNotFoundError):
            pass


@pytest.fixture
def ns(lab: Lab) -> Iterator[str]:
    name = "restore-" + uuid.uuid4().hex[:8]
    yield name
    cleanup(lab, name)


def actions(result: dict[str, Any]) -> dict[str, str]:
    return {"%s %s/%s" % (o["kind"], o["namespace"], o["name"]): o["action"] for o in result["objects"]}


# ----------------------------------------------------------------------------------------------
def test_a_plan_is_restored_in_order_with_every_kind_and_a_second_run_changes_nothing(lab: Lab, ns: str) -> None:
    node = lab.nodes(CLOUD)[0]
    plan = make_plan(ns, node)
    group = "%s.example.com" % ns

    first = restore(lab, plan=plan)
    assert first.get("failed") is not True, first.run.output
    assert first["changed"] is True
    assert SECRET_VALUE not in first.run.output and base64.b64encode(SECRET_VALUE.encode()).decode() not in first.run.output
    assert set(actions(first).values()) == {"created"} and len(first["objects"]) == count_objects(plan)
    assert [stage["name"] for stage in first["stages"]] == STAGE_NAMES
    for stage in first["stages"]:
        assert stage["created"] == stage["objects"] > 0 and stage["failed"] == 0
        assert stage["seconds"] >= stage["apply_seconds"] > 0 and stage["waited_seconds"] >= 0
    by_name = {stage["name"]: stage for stage in first["stages"]}
    assert by_name["crds"]["waited_seconds"] > 0  # Established and discovered before the custom resource
    assert first["totals"]["created"] == count_objects(plan) and first["totals"]["objects_per_second"] > 0
    # The WaitForFirstConsumer claim is not awaited (it binds after scale-up); the note says so.
    assert any("PersistentVolumeClaim %s/scratch" % ns in note and "binds on first consumer" in note for note in first["notes"]), first["notes"]
    assert by_name["storage"]["notes"] and "scratch" in by_name["storage"]["notes"][0]

    # Read back through the API.
    namespace = read(lab, "v1", "Namespace", ns)
    assert namespace and namespace["status"]["phase"] == "Active"
    crd = read(lab, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets." + group)
    assert crd and {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    widget = read(lab, group + "/v1", "Widget", "gear", ns)
    assert widget and widget["spec"] == {"size": 7}
    assert read(lab, "v1", "ServiceAccount", "shop", ns)
    binding = read(lab, "rbac.authorization.k8s.io/v1", "RoleBinding", "shop-reader", ns)
    assert binding and binding["roleRef"]["name"] == "reader" and binding["subjects"][0]["name"] == "shop"
    role = read(lab, "rbac.authorization.k8s.io/v1", "Role", "reader", ns)
    assert role and role["rules"][0]["verbs"] == ["get", "list"]
    settings = read(lab, "v1", "ConfigMap", "settings", ns)
    assert settings and settings["data"] == {"MODE": "restored", "LEVEL": "3"}
    secret = read(lab, "v1", "Secret", "db", ns)
    assert secret and base64.b64decode(secret["data"]["password"]).decode() == SECRET_VALUE
    pvc = read(lab, "v1", "PersistentVolumeClaim", "data", ns)
    pv = read(lab, "v1", "PersistentVolume", ns + "-data")
    assert pvc and pv and pvc["status"]["phase"] == "Bound" and pv["status"]["phase"] == "Bound"  # awaited: pre-bound
    assert pv["spec"]["claimRef"]["name"] == "data"
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [node]
    scratch = read(lab, "v1", "PersistentVolumeClaim", "scratch", ns)
    assert scratch and scratch["status"]["phase"] == "Pending"
    service = read(lab, "v1", "Service", "web", ns)
    assert service and ipaddress.ip_address(service["spec"]["clusterIP"]) in CLOUD_SERVICE_CIDR
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 0 and web["metadata"]["annotations"][REPLICAS] == "2"
    assert web["status"]["observedGeneration"] >= web["metadata"]["generation"]  # awaited before the policies stage
    db = read(lab, "apps/v1", "StatefulSet", "db", ns)
    assert db and db["spec"]["replicas"] == 0 and db["status"]["observedGeneration"] >= db["metadata"]["generation"]
    pdb = read(lab, "policy/v1", "PodDisruptionBudget", "web", ns)
    assert pdb and pdb["spec"]["minAvailable"] == 1
    hpa = read(lab, "autoscaling/v2", "HorizontalPodAutoscaler", "web", ns)
    assert hpa and hpa["spec"]["scaleTargetRef"]["name"] == "web" and hpa["spec"]["maxReplicas"] == 4
    managers = {(m["manager"], m["operation"]) for m in web["metadata"]["managedFields"]}
    assert ("hybridcloud.migration", "Apply") in managers

    second = restore(lab, plan=plan)
    assert second["changed"] is False, json.dumps(second["objects"], indent=1)
    assert set(actions(second).values()) == {"unchanged"} and second["totals"]["unchanged"] == count_objects(plan)
    assert [stage["name"] for stage in second["stages"]] == STAGE_NAMES


def test_check_mode_dry_runs_a_new_plan_and_changes_nothing(lab: Lab, ns: str) -> None:
    plan = make_plan(ns, lab.nodes(CLOUD)[0])
    dry = restore(lab, check=True, plan=plan)
    assert dry.get("failed") is not True, dry.run.output
    assert dry["changed"] is True and set(actions(dry).values()) == {"created"}
    notes = {o["name"]: o.get("note", "") for o in dry["objects"]}
    assert "its namespace is created by this plan" in notes["settings"]
    assert "its CustomResourceDefinition is created by this plan" in notes["gear"]
    # Cluster-scoped objects were really dry-run, and nothing exists afterwards.
    assert "note" not in {o["name"]: o for o in dry["objects"]}[ns + "-data"]
    assert read(lab, "v1", "Namespace", ns) is None
    assert read(lab, "v1", "PersistentVolume", ns + "-data") is None
    assert read(lab, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.%s.example.com" % ns) is None


def test_check_mode_on_an_applied_plan_reports_the_one_change_without_making_it(lab: Lab, ns: str) -> None:
    plan = make_plan(ns, lab.nodes(CLOUD)[0])
    assert restore(lab, plan=plan)["changed"] is True
    edited = copy.deepcopy(plan)
    edited["stages"][3]["objects"][0]["data"]["LEVEL"] = "4"
    dry = restore(lab, check=True, plan=edited)
    assert dry["changed"] is True
    changed = {key: action for key, action in actions(dry).items() if action != "unchanged"}
    assert changed == {"ConfigMap %s/settings" % ns: "updated"}
    settings = read(lab, "v1", "ConfigMap", "settings", ns)
    assert settings and settings["data"]["LEVEL"] == "3"
    applied = restore(lab, plan=edited)
    assert {k: a for k, a in actions(applied).items() if a != "unchanged"} == {"ConfigMap %s/settings" % ns: "updated"}
    settings = read(lab, "v1", "ConfigMap", "settings", ns)
    assert settings and settings["data"]["LEVEL"] == "4"


def test_an_object_the_api_refuses_stops_the_restore_at_its_stage_and_a_fixed_rerun_completes(lab: Lab, ns: str) -> None:
    plan = make_plan(ns, lab.nodes(CLOUD)[0])
    network = plan["stages"][STAGE_NAMES.index("network")]["objects"]
    broken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "broken", "namespace": ns},
              "spec": {"clusterIP": "192.0.2.10", "ports": [{"port": 5432}]}}  # outside the cluster's service range
    network.append(broken)

    failed = restore(lab, plan=plan)
    assert failed["failed"] is True
    assert "Stage network failed: Service %s/broken: 422 Invalid" % ns in failed["msg"], failed["msg"]
    assert "192.0.2.10" in failed["msg"] and "stay applied" in failed["msg"] and "run again" in failed["fix"]
    assert failed["failed_stage"] == "network"
    assert failed["pending_stages"] == ["custom", "workloads", "policies"]
    assert [o["name"] for o in failed["failed_objects"]] == ["broken"]
    assert failed["changed"] is True
    assert [stage["name"] for stage in failed["stages"]] == STAGE_NAMES[:STAGE_NAMES.index("network") + 1]
    # Earlier stages are there, the rest of the failed stage was applied, later stages were not.
    assert read(lab, "v1", "ConfigMap", "settings", ns) and read(lab, "v1", "PersistentVolumeClaim", "data", ns)
    assert read(lab, "v1", "Service", "web", ns)
    assert read(lab, "v1", "Service", "broken", ns) is None
    assert read(lab, "apps/v1", "Deployment", "web", ns) is None

    del broken["spec"]["clusterIP"]
    fixed = restore(lab, plan=plan)
    assert fixed.get("failed") is not True, fixed.run.output
    before = actions(failed)
    after = actions(fixed)
    assert len(after) == count_objects(plan)
    for key, action in after.items():
        expected = "unchanged" if before.get(key) == "created" else "created"
        assert action == expected, (key, action, before.get(key))
    services = dynamic(lab).resources.get(api_version="v1", kind="Service").get(namespace=ns).to_dict()["items"]
    assert sorted(s["metadata"]["name"] for s in services) == ["broken", "web"]


def test_a_claim_that_cannot_bind_fails_at_its_kinds_timeout(lab: Lab, ns: str) -> None:
    plan = {"stages": [
        {"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]},
        {"name": "storage", "objects": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "orphan", "namespace": ns},
                                         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": ns + "-missing",
                                                  "resources": {"requests": {"storage": "1Gi"}}}}]},
        {"name": "config", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later", "namespace": ns}}]},
    ]}
    began = time.monotonic()
    result = restore(lab, plan=plan, kind_timeouts={"PersistentVolumeClaim": 3}, wait_timeout=600)
    assert time.monotonic() - began < 60
    assert result["failed"] is True and result["failed_stage"] == "storage"
    assert "PersistentVolumeClaim %s/orphan: timed out after 3s waiting for phase Bound to PersistentVolume %s-missing" % (ns, ns) in result["msg"]
    assert "kind_timeouts for PersistentVolumeClaim" in result["fix"]
    assert result["stages"][1]["waited_seconds"] >= 3
    assert read(lab, "v1", "ConfigMap", "later", ns) is None


def test_a_kind_timeout_of_zero_skips_that_kinds_wait_and_says_so(lab: Lab, ns: str) -> None:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "web:1"}]}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
                  "spec": {"replicas": 0, "selector": labels("web"), "template": template}}
    plan = {"stages": [{"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]},
                       {"name": "workloads", "objects": [deployment]}]}
    result = restore(lab, plan=plan, kind_timeouts={"Deployment": 0})
    assert result.get("failed") is not True, result.run.output
    [web] = [o for o in result["objects"] if o["kind"] == "Deployment"]
    assert web["action"] == "created" and web["note"] == "not waited for (its kind's timeout is 0)"
    assert result["stages"][1]["waited_seconds"] == 0


def test_scale_up_sets_replicas_removes_the_annotation_and_a_rerun_leaves_them_up(lab: Lab, ns: str) -> None:
    plan = make_plan(ns, lab.nodes(CLOUD)[0])
    assert restore(lab, plan=plan).get("failed") is not True

    dry = restore(lab, check=True, plan=plan, state="scaled")
    assert dry["changed"] is True and {o["name"]: o["action"] for o in dry["objects"]} == {"web": "scaled", "db": "scaled"}
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 0 and REPLICAS in web["metadata"]["annotations"]

    scaled = restore(lab, plan=plan, state="scaled", kind_timeouts={"default": 120})
    assert scaled.get("failed") is not True, scaled.run.output
    assert scaled["changed"] is True and scaled["totals"]["scaled"] == 2
    assert {o["name"]: (o["before"], o["replicas"]) for o in scaled["objects"]} == {"web": (0, 2), "db": (0, 1)}
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 2 and REPLICAS not in (web["metadata"].get("annotations") or {})
    assert web["status"]["availableReplicas"] == 2  # awaited: kwok runs the pods
    db = read(lab, "apps/v1", "StatefulSet", "db", ns)
    assert db and db["spec"]["replicas"] == 1 and db["status"]["readyReplicas"] == 1
    pods = dynamic(lab).resources.get(api_version="v1", kind="Pod").get(namespace=ns, label_selector="app=db").to_dict()["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [lab.nodes(CLOUD)[0]]  # where its local volume is

    again = restore(lab, plan=plan)  # the resources stage of a re-run of the playbook
    assert again["changed"] is False, json.dumps([o for o in again["objects"] if o["action"] != "unchanged"], indent=1)
    notes = {o["name"]: o.get("note") for o in again["objects"] if o["kind"] in ("Deployment", "StatefulSet")}
    assert notes == {"web": "scaled up already: spec.replicas left at 2", "db": "scaled up already: spec.replicas left at 1"}
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 2

    rescaled = restore(lab, plan=plan, state="scaled")
    assert rescaled["changed"] is False and {o["action"] for o in rescaled["objects"]} == {"unchanged"}


def test_what_the_target_had_without_the_run_label_is_left_alone_unless_adopted(lab: Lab, ns: str) -> None:
    """A namespace, a ConfigMap and a Deployment of the plan's names already in the target, not this run's."""
    plan = make_plan(ns, lab.nodes(CLOUD)[0])
    client = dynamic(lab)
    client.resources.get(api_version="v1", kind="Namespace").create(body={"metadata": {"name": ns}})
    client.resources.get(api_version="v1", kind="ConfigMap").create(namespace=ns, body={
        "metadata": {"name": "settings"}, "data": {"MODE": "theirs"}})
    theirs = {"spec": {"containers": [{"name": "app", "image": "registry.example/theirs:1"}]}, "metadata": {"labels": {"app": "web"}}}
    client.resources.get(api_version="apps/v1", kind="Deployment").create(namespace=ns, body={
        "metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": labels("web"), "template": theirs}})

    first = restore(lab, plan=plan)
    assert first.get("failed") is not True, first.run.output
    conflicts = [f"Namespace {ns}", f"ConfigMap {ns}/settings", f"Deployment {ns}/web"]
    assert sorted(first["conflicts"]) == sorted(conflicts) and first["totals"]["conflicts"] == 3
    found = actions(first)
    assert [key for key, action in found.items() if action == "conflict"] == [f"Namespace /{ns}", f"ConfigMap {ns}/settings", f"Deployment {ns}/web"]
    assert {action for key, action in found.items() if action != "conflict"} == {"created"}
    settings = read(lab, "v1", "ConfigMap", "settings", ns)
    assert settings and settings["data"] == {"MODE": "theirs"} and "migration.hybridcloud.io/run-id" not in (settings["metadata"].get("labels") or {})
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 1 and web["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/theirs:1"

    scaled = restore(lab, plan=plan, state="scaled", kind_timeouts={"default": 120})
    assert scaled.get("failed") is not True, scaled.run.output
    assert {o["name"]: o["action"] for o in scaled["objects"]} == {"web": "conflict", "db": "scaled"}
    web = read(lab, "apps/v1", "Deployment", "web", ns)
    assert web and web["spec"]["replicas"] == 1 and REPLICAS not in (web["metadata"].get("annotations") or {})

    adopted = restore(lab, plan=plan, adopt=True)
    assert adopted.get("failed") is not True and adopted["conflicts"] == [], adopted.run.output
    settings = read(lab, "v1", "ConfigMap", "settings", ns)
    assert settings and settings["data"] == {"MODE": "restored", "LEVEL": "3"}
    assert settings["metadata"]["labels"]["migration.hybridcloud.io/run-id"] == ns


def test_a_bare_pod_waits_behind_its_gate_until_scale_up_and_a_rerun_leaves_it_ungated(lab: Lab, ns: str) -> None:
    gate = "migration.hybridcloud.io/restore"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tool", "namespace": ns}, "spec": {
        "schedulingGates": [{"name": gate}], "containers": [{"name": "tool", "image": "busybox:1.37"}]}}
    plan = {"schema": 1, "run_id": "bare-pod", "stages": [
        {"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]},
        {"name": "workloads", "objects": [pod]}],
        "scale_up": [{"kind": "Pod", "api_version": "v1", "namespace": ns, "name": "tool", "action": "ungate", "replicas": 1,
                      "scheduling_gate": gate}]}
    applied = restore(lab, plan=plan)
    assert applied.get("failed") is not True, applied.run.output
    held = read(lab, "v1", "Pod", "tool", ns)
    assert held and not held["spec"].get("nodeName") and [g["name"] for g in held["spec"]["schedulingGates"]] == [gate]

    scaled = restore(lab, plan=plan, state="scaled", kind_timeouts={"default": 60})
    assert scaled.get("failed") is not True, scaled.run.output
    assert [(o["name"], o["action"]) for o in scaled["objects"]] == [("tool", "scaled")]
    running = read(lab, "v1", "Pod", "tool", ns)
    assert running and not running["spec"].get("schedulingGates") and running["status"]["phase"] == "Running"

    again = restore(lab, plan=plan)  # the API would refuse the gate back: it is left out
    assert again.get("failed") is not True and again["changed"] is False, again.run.output
    assert restore(lab, plan=plan, state="scaled")["changed"] is False


def test_scale_up_of_a_workload_that_is_not_there_fails_naming_it(lab: Lab, ns: str) -> None:
    result = restore(lab, state="scaled", scale_up=[{"kind": "Deployment", "namespace": ns, "name": "ghost", "replicas": 1}])
    assert result["failed"] is True
    assert "Scale-up failed for Deployment %s/ghost: it does not exist in the target cluster" % ns in result["msg"]


# -- the API server goes away mid-restore ---------------------------------------------------------
@pytest.fixture
def proxied(lab: Lab, tmp_path: Path) -> Iterator[tuple[TcpProxy, Path]]:
    proxy = proxy_to(lab.server(CLOUD))
    yield proxy, proxy.kubeconfig_through(lab.kubeconfig(CLOUD), tmp_path / "via-proxy.kubeconfig")
    proxy.cut()


def test_the_api_server_going_away_mid_restore_then_a_rerun_completes_without_duplicates(
    lab: Lab, ns: str, proxied: tuple[TcpProxy, Path]
) -> None:
    from kubernetes import client

    proxy, kubeconfig = proxied
    configmaps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-%03d" % i, "namespace": ns}, "data": {"i": str(i)}}
                  for i in range(400)]
    plan = {"schema": 1, "run_id": ns, "stages": [
        {"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]},
        {"name": "config", "objects": configmaps},
        {"name": "network", "objects": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                                         "spec": {"ports": [{"port": 80}]}}]},
    ]}
    core = client.CoreV1Api(lab.api(CLOUD))  # straight to the API server, not through the proxy

    # A whole run sends about 200 kB (a ConfigMap apply is about 500 bytes): the cut comes a
    # quarter of the way into the config stage, after the namespaces stage is done.
    proxy.cut_after = 60_000
    began = time.monotonic()
    broken = restore(lab, kubeconfig=kubeconfig, plan=plan, request_timeout=10)
    took = time.monotonic() - began
    assert broken["failed"] is True, "the restore finished before the outage: %s" % broken.get("totals")
    assert "could not reach the API server https://127.0.0.1:%d" % proxy.port in broken["msg"], broken["msg"]
    assert "of the stage were not attempted" in broken["msg"] and took < 45, (took, broken["msg"])
    assert broken["failed_stage"] == "config" and "bring the API server back" in broken["fix"]
    applied_before = {o["name"] for o in broken["objects"] if o["action"] == "created"}
    assert ns in applied_before  # the namespaces stage was done
    present = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert 20 <= len(present - {"kube-root-ca.crt"}) < 400

    proxy.start()
    resumed = restore(lab, kubeconfig=kubeconfig, plan=plan)
    assert resumed.get("failed") is not True, resumed.run.output
    after = {o["name"]: o["action"] for o in resumed["objects"]}
    assert len(after) == 402
    for name in applied_before:
        assert after[name] == "unchanged", name
    # What the outage hid (applied without an answer) is unchanged too; only what was missing is created.
    missing = {o["metadata"]["name"] for o in configmaps} - present
    assert {name for name, action in after.items() if action == "created"} == missing | {"web"}
    names = [cm.metadata.name for cm in core.list_namespaced_config_map(ns).items if cm.metadata.name != "kube-root-ca.crt"]
    assert len(names) == len(set(names)) == 400
    wait_until("the Service web has a cluster IP", lambda: core.read_namespaced_service("web", ns).spec.cluster_ip, timeout=10)
