"""The dead node's share of each workload: the rules (plan/share.py), the facts (plan/decide.py, plan/live.py), the plan, the fence."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import moved_workloads as mw
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_report import share_moved, share_stayed
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_source import describe_moves
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan import share as rules
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.live import LiveState, estimate_unplaced, free_capacity, quantity
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.stages import build_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.source_reschedule import OUT_OF_SERVICE, TAINTED_BY, taint_patch, untaint_patch
from tests.unit.fixtures import cluster as c

W1, W2, W3 = c.NODES
TARGET = "cloud-worker-9"


def plan_for(objects=None, live=None, **options):
    options.setdefault("run_id", "run-1")
    options.setdefault("created_at", "2026-11-25T19:15:00Z")
    options.setdefault("target_node", TARGET)
    return build_plan(c.onprem() if objects is None else objects, W1, PlanOptions(**options), live)


def entry(plan, kind, namespace, name, where="selected"):
    [found] = [e for e in plan[where] if (e["kind"], e["namespace"], e["name"]) == (kind, namespace, name)]
    return found


def manifest(plan, kind, name):
    [found] = [o for s in plan["stages"] for o in s["objects"] if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


# -- the rules ---------------------------------------------------------------------------------


def test_replicas_the_backup_saw_on_the_dead_node_move_when_the_source_does_not_answer():
    share = rules.replica_share("Deployment", "share", "backup", 4, 2, 0, W1)
    assert (share.moves, share.stays, share.source_replicas, share.partial) == (2, 2, 2, True)
    assert "2 of its 4 replicas ran on onprem-worker-1 and were lost" in share.why


def test_with_the_source_answering_only_what_it_could_not_place_moves():
    assert rules.replica_share("Deployment", "share", "source", 4, 2, 1, W1).moves == 1
    stays = rules.replica_share("Deployment", "share", "source", 4, 2, 0, W1)
    assert stays.moves == 0 and "placed the 2 replicas onprem-worker-1 ran on its live nodes" in stays.why
    # replicas Pending before the failure are not the node's share
    assert rules.replica_share("Deployment", "share", "source", 4, 2, 3, W1).moves == 2


def test_policy_whole_moves_every_replica_and_the_source_keeps_none():
    share = rules.replica_share("Deployment", "whole", "source", 4, 1, 0, W1)
    assert (share.moves, share.source_replicas, share.partial) == (4, 0, False)


@pytest.mark.parametrize("desired, start, dead, pinned, expected", [
    (2, 0, [0], [1], (0, 1, 1, 1)),  # the bottom end moves; the source starts at 1
    (3, 0, [2], [0, 1], (2, 1, 2, 0)),  # the top end moves; the source keeps 0..1
    (3, 5, [5], [6, 7], (5, 1, 2, 6)),  # an offset range
    (5, 0, [2], [], (2, 3, 2, 0)),  # a middle ordinal: the smallest covering end range, ties to the top
    (5, 0, [2], [3, 4], (0, 3, 2, 3)),  # the top end holds local data elsewhere: the bottom end moves
    (2, 0, [0, 1], [], (0, 2, 0, None)),  # all of them
])
def test_statefulset_ordinals_move_as_a_range_at_one_end(desired, start, dead, pinned, expected):
    share = rules.ordinal_share("share", "backup", desired, start, dead, pinned, W1)
    assert (share.ordinals_start, share.moves, share.source_replicas, share.source_ordinals_start) == expected, share.why


def test_a_middle_ordinal_whose_covering_ranges_hold_local_data_elsewhere_is_not_split():
    share = rules.ordinal_share("share", "source", 5, 0, [2], [0, 1, 3, 4], W1)
    assert share.moves == 0
    assert "spec.ordinals can move a range only at one end" in share.why and "it stays in the source" in share.why


def test_policy_whole_on_a_statefulset_with_local_data_elsewhere_falls_back_to_its_share():
    share = rules.ordinal_share("whole", "backup", 2, 0, [0], [1], W1)
    assert (share.moves, share.ordinals_start) == (1, 0)
    assert share.why.startswith("policy whole, but ordinal 1 holds local data on live nodes")
    assert rules.ordinal_share("whole", "backup", 2, 0, [0], [], W1).moves == 2


def test_jobs_and_cronjobs_move_whole_or_not_at_all():
    assert rules.whole_share("CronJob", "share", "backup", 1, 0, W1).moves == 1
    assert rules.whole_share("Job", "share", "source", 0, 0, W1).moves == 0
    assert "cannot be split" in rules.whole_share("Job", "share", "backup", 1, 2, W1).why


@pytest.mark.parametrize("bounds, moves, of, expected", [
    ((2, 8), 2, 4, {"target": {"minReplicas": 1, "maxReplicas": 4}, "source": {"minReplicas": 1, "maxReplicas": 4}}),
    ((1, 3), 1, 3, {"target": {"minReplicas": 1, "maxReplicas": 1}, "source": {"minReplicas": 1, "maxReplicas": 2}}),
    ((2, 6), 2, 2, {"target": {"minReplicas": 2, "maxReplicas": 6}, "source": {}}),
])
def test_an_autoscaler_is_split_with_its_workload(bounds, moves, of, expected):
    assert rules.hpa_split(bounds[0], bounds[1], moves, of) == expected


def test_policies_come_from_the_workload_option_its_annotation_the_kind_option():
    policies = rules.check_policies({"Deployment": "whole", "Deployment/shop/web": "skip"})
    assert rules.policy_for("Deployment", "shop", "web", "share", policies) == ("skip", "share_policy Deployment/shop/web")
    assert rules.policy_for("Deployment", "shop", "api", "share", policies) == ("share", "its annotation")
    assert rules.policy_for("Deployment", "shop", "api", None, policies) == ("whole", "share_policy Deployment")
    assert rules.policy_for("StatefulSet", "db", "pg", None, policies) == ("share", "default")


@pytest.mark.parametrize("policies, problem", [
    ({"Deployment": "half"}, "share policy 'half' does not exist"),
    ({"Deployment/shop": "skip"}, "names neither a kind nor a workload"),
])
def test_unknown_policies_are_refused_naming_the_choices(policies, problem):
    with pytest.raises(MigrationError) as caught:
        plan_for(share_policy=policies)
    assert problem in caught.value.problem and ("share, whole, skip" in caught.value.fix or "Kind/namespace/name" in caught.value.fix)


def test_a_bad_policy_annotation_is_refused():
    objects = c.onprem()
    c.by_name(objects, "Deployment", "api")["metadata"]["annotations"]["migration.hybridcloud.io/share-policy"] = "most"
    with pytest.raises(MigrationError) as caught:
        plan_for(objects)
    assert "Deployment/shop/api annotation: share policy 'most' does not exist" in caught.value.problem


# -- the plan from the backup ------------------------------------------------------------------


def test_by_default_the_share_of_partly_moved_workloads_moves():
    plan = plan_for()
    api = entry(plan, "Deployment", "shop", "api")
    assert api["share"]["moves"] == 1 and api["share"]["stays"] == 1 and api["share"]["basis"] == "backup"
    assert [s["replicas"] for s in plan["scale_up"] if s["name"] == "api"] == [1]
    assert manifest(plan, "Deployment", "api")["metadata"]["annotations"]["migration.hybridcloud.io/replicas"] == "1"
    cache = entry(plan, "StatefulSet", "db", "cache")
    assert cache["share"]["ordinals"] == {"start": 0, "count": 1} and cache["share"]["source"] == {"replicas": 1, "ordinals_start": 1}
    assert "ordinals" not in manifest(plan, "StatefulSet", "cache")["spec"]  # start 0 is the default
    assert plan["share_basis"] == "backup"


def test_the_autoscaler_of_a_partly_moved_workload_is_split_in_the_plan_and_the_target():
    plan = plan_for()
    autoscaler = entry(plan, "Deployment", "shop", "api")["share"]["autoscaler"]
    assert (autoscaler["name"], autoscaler["target"], autoscaler["source"]) == (
        "api", {"minReplicas": 1, "maxReplicas": 2}, {"minReplicas": 1, "maxReplicas": 2})
    spec = manifest(plan, "HorizontalPodAutoscaler", "api")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 2)
    assert manifest(plan, "HorizontalPodAutoscaler", "web")["spec"]["minReplicas"] == 2  # web moves whole: unchanged


def test_a_statefulset_moves_only_the_claims_of_its_moved_ordinals():
    objects = c.onprem()
    cache = c.by_name(objects, "StatefulSet", "cache")
    cache["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
    objects += [c.obj("v1", "PersistentVolumeClaim", f"data-cache-{i}", "db", spec={"accessModes": ["ReadWriteOnce"]}) for i in (0, 1)]
    plan = plan_for(objects)
    claims = [o["metadata"]["name"] for s in plan["stages"] for o in s["objects"] if o["kind"] == "PersistentVolumeClaim"]
    assert "data-cache-0" in claims and "data-cache-1" not in claims
    assert entry(plan, "PersistentVolumeClaim", "db", "data-cache-1", "left_out")["reason"] == \
        "claim of ordinal 1 of StatefulSet db/cache, which stays in the source"


def test_related_objects_that_do_not_move_are_explained():
    plan = plan_for()
    reasons = {(e["kind"], e["name"]): e["reason"] for e in plan["left_out"]}
    assert reasons[("ReplicaSet", "api-5c8f7b9d4")].startswith("owned by Deployment shop/api: its controller makes a new one")
    assert reasons[("Pod", "api-5c8f7b9d4-klmno")] == \
        "pod of Deployment shop/api on onprem-worker-2, a live node: it stays with the share the source keeps"
    assert reasons[("Job", "report-29100")].startswith("created by CronJob batch/report, which moves")
    assert all(e.get("workload") for e in plan["left_out"])


def test_a_local_volumes_no_provisioner_class_comes_along_created_only_where_missing():
    objects = c.onprem() + [c.obj("storage.k8s.io/v1", "StorageClass", "local-storage", provisioner="kubernetes.io/no-provisioner",
                                  volumeBindingMode="WaitForFirstConsumer")]
    for pv in (o for o in objects if o["kind"] == "PersistentVolume" and o["spec"].get("local")):
        pv["spec"]["storageClassName"] = "local-storage"
    storage = manifest(plan_for(objects), "StorageClass", "local-storage")
    assert storage["metadata"]["annotations"]["migration.hybridcloud.io/apply"] == "if-absent"
    mapped = plan_for(objects, storage_class_map={"local-storage": "local-path"})
    assert not [o for s in mapped["stages"] for o in s["objects"] if o["kind"] == "StorageClass"]


# -- the plan from the live source -------------------------------------------------------------


def _live_pod(pod, node_name=None, phase="Running"):
    found = copy.deepcopy(pod)
    found["spec"].pop("nodeName", None)
    if node_name:
        found["spec"]["nodeName"] = node_name
    found["status"] = {"phase": phase}
    return found


def _live(objects, pods, basis="source", nodes=None):
    workloads = {(g, k, ns, n): c.by_name(objects, k, n) for (g, k, ns, n) in (
        ("apps", "Deployment", "shop", "web"), ("apps", "Deployment", "shop", "api"), ("apps", "StatefulSet", "db", "pg"),
        ("apps", "StatefulSet", "db", "cache"), ("batch", "CronJob", "batch", "report"))}
    ready = {"type": "Ready", "status": "True"}
    nodes = nodes or [dict(c.node(n), status={"conditions": [dict(ready, status="False") if n == W1 else ready],
                                              "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}) for n in c.NODES]
    return LiveState(basis, workloads, pods, nodes)


def test_replicas_the_source_placed_after_the_grace_stay_there():
    objects = c.onprem()
    pods = [p for p in objects if p["kind"] == "Pod"]
    web = [p for p in pods if p["metadata"]["name"].startswith("web-")]
    api = [p for p in pods if p["metadata"]["name"].startswith("api-")]
    cache1 = c.by_name(objects, "Pod", "cache-1")
    live_pods = [_live_pod(web[0], W2), _live_pod(web[1]),  # one web replacement placed, one Pending
                 _live_pod(api[0], W2), _live_pod(api[1], W3),  # api rescheduled fully
                 _live_pod(cache1, W3)]  # cache-0 is gone (force-deleted) and not back: its ordinal is the share
    plan = plan_for(objects, _live(objects, live_pods), share_policy={})
    assert entry(plan, "Deployment", "shop", "web")["share"]["moves"] == 1
    skipped = entry(plan, "Deployment", "shop", "api", "skipped")
    assert skipped["share"]["basis"] == "source" and "stays there" in skipped["reason"]
    assert entry(plan, "StatefulSet", "db", "cache")["share"]["ordinals"] == {"start": 0, "count": 1}
    assert plan["share_basis"] == "source"


def test_a_workload_deleted_since_the_backup_is_not_brought_back():
    objects = c.onprem()
    live = _live(objects, [])
    del live.workloads[("apps", "Deployment", "shop", "api")]
    assert "not in the source cluster any more" in entry(plan_for(objects, live), "Deployment", "shop", "api", "skipped")["reason"]


def test_check_mode_estimates_from_free_capacity_taints_and_pinned_volumes():
    nodes = [{"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
              "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]} if n == W3 else {},
              "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}
             for n in (W2, W3)]
    busy = [{"metadata": {"name": "big"}, "spec": {"nodeName": W2, "containers": [{"resources": {"requests": {"cpu": "6500m"}}}]},
             "status": {"phase": "Running"}}]
    free = free_capacity(nodes, busy, {W2, W3})
    assert free[W2]["cpu"] == pytest.approx(1.5)
    small = {"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    assert estimate_unplaced([(small, False), (small, False)], nodes, free) == 1  # one fits W2, W3's taint is not tolerated
    tolerant = dict(small, tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert estimate_unplaced([(tolerant, False), (tolerant, True)], nodes, free) == 1  # the pinned one has nowhere to go
    assert (quantity("250m"), quantity("2Gi"), quantity("x")) == (0.25, 2 ** 31, 0.0)


# -- the fence in the source -------------------------------------------------------------------


def _workload(kind="Deployment", **extra):
    return mw.Workload(kind, "apps/v1", "shop", "web", **extra)


def test_the_fence_scales_the_source_down_by_the_share_and_records_once():
    live = {"metadata": {"annotations": {}}, "spec": {"replicas": 4}}
    patch, recorded = mw.fence_patch(_workload(replicas=2, keep=2), live, "cloud/run-1")
    assert patch["spec"] == {"replicas": 2} and patch["metadata"]["annotations"][mw.SOURCE_REPLICAS] == "4" and recorded == 4
    again = {"metadata": {"annotations": {mw.SOURCE_REPLICAS: "4", mw.MOVED_TO: "cloud/run-1"}}, "spec": {"replicas": 2}}
    assert mw.fence_patch(_workload(replicas=2, keep=2), again, "cloud/run-1") == (None, 4)
    found_down = {"metadata": {"annotations": {}}, "spec": {"replicas": 2}}  # scaled by hand to what it keeps: the plan knows the rest
    assert mw.fence_patch(_workload(replicas=2, keep=2), found_down, "")[0]["metadata"]["annotations"][mw.SOURCE_REPLICAS] == "4"


def test_the_fence_moves_a_statefulsets_start_past_the_moved_ordinals_and_the_release_gives_them_back():
    sts = _workload("StatefulSet", replicas=1, keep=1, ordinals_start=1)
    live = {"metadata": {"annotations": {}}, "spec": {"replicas": 2}}
    patch, _value = mw.fence_patch(sts, live, "cloud/run-1")
    assert patch["spec"] == {"replicas": 1, "ordinals": {"start": 1}} and patch["metadata"]["annotations"][mw.SOURCE_ORDINALS] == ""
    fenced = {"metadata": {"annotations": dict(patch["metadata"]["annotations"])}, "spec": {"replicas": 1, "ordinals": {"start": 1}}}
    back, value, note = mw.release_patch(sts, fenced, "cloud/run-1")
    assert (value, note) == (2, "") and back["spec"] == {"replicas": 2, "ordinals": None}
    assert back["metadata"]["annotations"][mw.SOURCE_ORDINALS] is None


def test_the_autoscaler_keeps_its_part_in_the_source_and_gets_its_bounds_back():
    hpa = mw.Workload(mw.AUTOSCALER, "autoscaling/v2", "shop", "web", bounds={"minReplicas": 1, "maxReplicas": 4})
    live = {"metadata": {"annotations": {}}, "spec": {"minReplicas": 2, "maxReplicas": 8}}
    patch, recorded = mw.fence_patch(hpa, live, "cloud/run-1")
    assert patch["spec"] == {"minReplicas": 1, "maxReplicas": 4} and recorded == {"minReplicas": 2, "maxReplicas": 8}
    fenced = {"metadata": {"annotations": patch["metadata"]["annotations"]}, "spec": {"minReplicas": 1, "maxReplicas": 4}}
    back, bounds, _note = mw.release_patch(hpa, fenced, "cloud/run-1")
    assert back["spec"] == bounds == {"minReplicas": 2, "maxReplicas": 8}
    assert json.loads(patch["metadata"]["annotations"][mw.SOURCE_AUTOSCALER]) == bounds


def test_the_out_of_service_taint_is_added_once_and_removed_only_by_its_run():
    node = {"metadata": {"name": W1, "resourceVersion": "7"}, "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}
    patch = taint_patch(node, "run-1")
    assert patch["spec"]["taints"][-1] == OUT_OF_SERVICE and patch["metadata"] == {"resourceVersion": "7", "annotations": {TAINTED_BY: "run-1"}}
    tainted = {"metadata": {"name": W1, "annotations": {TAINTED_BY: "run-1"}}, "spec": {"taints": patch["spec"]["taints"]}}
    assert taint_patch(tainted, "run-1") is None
    removal, _note = untaint_patch(tainted, "run-1")
    assert removal["spec"]["taints"] == [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
    assert untaint_patch(tainted, "run-2") == (None, "marked out of service by another run (run-1): left as it is")
    by_hand = {"metadata": {"name": W1}, "spec": {"taints": [OUT_OF_SERVICE]}}
    assert untaint_patch(by_hand, "run-1")[0] is None


# -- what people read ----------------------------------------------------------------------------


def test_the_plan_and_the_report_say_what_moved_of_each_workload_and_what_stayed():
    plan = plan_for()
    lines = describe_moves(plan)
    assert "Deployment/api 1 of 2 replicas (1 stays in the source)" in lines and "StatefulSet/cache ordinal 0 of 2 (1 stays in the source)" in lines
    assert "Deployment/web" in lines  # moved whole
    api = entry(plan, "Deployment", "shop", "api")["share"]
    assert (share_moved(api), share_stayed(api)) == ("1 of 2", "1; autoscaler api: 1..2 in the source, 1..2 in the target")
    cache = entry(plan, "StatefulSet", "db", "cache")["share"]
    assert (share_moved(cache), share_stayed(cache)) == ("ordinal 0 of 2", "1 (from ordinal 1)")
    assert share_moved(entry(plan, "Deployment", "shop", "web")["share"]) == "all"


def test_a_bare_pod_the_source_lost_is_made_again_from_the_plan_on_release():
    plan = plan_for()
    pod = mw.source_pod(plan, mw.Workload("Pod", "v1", "ops", "debug"), W1)
    assert pod["metadata"]["namespace"] == "ops" and "schedulingGates" not in pod["spec"]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": W1}  # its hostPath data comes back to the return node
    assert not [k for k in list(pod["metadata"].get("labels", {})) + list(pod["metadata"].get("annotations", {})) if "hybridcloud" in k]
    assert "nodeSelector" not in mw.source_pod(plan, mw.Workload("Pod", "v1", "ops", "debug"), "")["spec"]
    assert mw.source_pod(plan, mw.Workload("Pod", "v1", "ops", "nope"), W1) is None
