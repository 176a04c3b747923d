"""The decisions of moved_workloads (fence, release, remove) and migration_run, without a server."""

from __future__ import annotations

import json

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import moved_workloads as mw
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.migration_run import parse_plan
from ansible_collections.hybridcloud.migration.plugins.module_utils.ordered_restore import ObjectId

MOVED_TO = "cloud/w1-to-cloud"


def plan(**extra):
    document = {
        "run_id": "w1-to-cloud",
        "selected": [
            {"kind": "Deployment", "api_version": "apps/v1", "namespace": "shop", "target_namespace": "shop-cloud", "name": "web",
             "reason": "owns pod shop/web-1 on w1"},
            {"kind": "StatefulSet", "api_version": "apps/v1", "namespace": "shop", "name": "db", "reason": "owns pod shop/db-0 on w1"},
            {"kind": "CronJob", "api_version": "batch/v1", "namespace": "shop", "name": "report", "reason": "owns job"},
            {"kind": "Deployment", "api_version": "apps/v1", "namespace": "shop", "name": "api",
             "reason": "owns pod shop/api-1 on w1",
             "share": {"policy": "share", "basis": "source", "moves": 1, "of": 3, "stays": 2, "why": "1 of its 3 replicas ran on w1",
                       "source": {"replicas": 2},
                       "autoscaler": {"name": "api", "source": {"minReplicas": 1, "maxReplicas": 4},
                                      "target": {"minReplicas": 1, "maxReplicas": 2}}}},
            {"kind": "Pod", "api_version": "v1", "namespace": "shop", "name": "lonely", "reason": "bare pod"},
            {"kind": "ConfigMap", "api_version": "v1", "namespace": "shop", "name": "settings", "reason": "used"},
        ],
        "scale_up": [
            {"kind": "Deployment", "api_version": "apps/v1", "namespace": "shop-cloud", "name": "web", "replicas": 3},
            {"kind": "StatefulSet", "api_version": "apps/v1", "namespace": "shop", "name": "db", "replicas": 1},
        ],
        "stages": [
            {"name": "namespaces", "objects": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}]},
            {"name": "config", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}}]},
            {"name": "storage", "objects": [
                {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "shop-db"},
                 "spec": {"local": {"path": "/data/db"}, "claimRef": {"namespace": "shop", "name": "data-db-0"}}},
                {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "nfs"}, "spec": {"nfs": {"path": "/x"}}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-db-0", "namespace": "shop"}, "spec": {}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared", "namespace": "shop"},
                 "spec": {"volumeName": "nfs"}},
            ]},
            {"name": "workloads", "objects": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop-cloud"}},
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"}},
            ]},
            {"name": "policies", "objects": [
                {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "shop-cloud"}}]},
        ],
    }
    document.update(extra)
    return document


def live(kind="Deployment", replicas=None, suspend=None, annotations=None):
    spec = {}
    if replicas is not None:
        spec["replicas"] = replicas
    if suspend is not None:
        spec["suspend"] = suspend
    return {"kind": kind, "metadata": {"name": "x", "namespace": "shop", "annotations": dict(annotations or {})}, "spec": spec}


def workload(kind="Deployment", replicas=3):
    return mw.Workload(kind, "batch/v1" if kind == "CronJob" else "apps/v1", "shop", "web", replicas)


# -- which workloads ---------------------------------------------------------------------------
def test_the_source_side_uses_the_source_namespaces_and_the_planned_replicas():
    found = {(w.kind, w.name): w for w in mw.workloads_of(plan(), "source")}
    assert set(found) == {("Deployment", "web"), ("StatefulSet", "db"), ("CronJob", "report"), ("Deployment", "api"), ("Pod", "lonely"),
                          ("HorizontalPodAutoscaler", "api")}
    assert found[("Deployment", "web")].namespace == "shop" and found[("Deployment", "web")].replicas == 3
    assert found[("CronJob", "report")].replicas is None and not found[("CronJob", "report")].skip
    assert found[("Deployment", "api")].keep == 2 and not found[("Deployment", "api")].skip  # its share moved, the rest stays
    assert found[("HorizontalPodAutoscaler", "api")].bounds == {"minReplicas": 1, "maxReplicas": 4}
    assert found[("Deployment", "web")].keep == 0  # moved whole
    assert "bare pod" in found[("Pod", "lonely")].skip


def test_the_target_side_uses_the_mapped_namespaces_and_never_skips_partial_moves():
    found = {(w.kind, w.name): w for w in mw.workloads_of(plan(), "target")}
    assert found[("Deployment", "web")].namespace == "shop-cloud"
    assert not found[("Deployment", "api")].skip


def test_an_unknown_side_is_refused():
    with pytest.raises(MigrationError, match="side 'middle'"):
        mw.workloads_of(plan(), "middle")


# -- fencing -------------------------------------------------------------------------------------
def test_fencing_records_the_replicas_once_and_scales_to_zero():
    patch, value = mw.fence_patch(workload(), live(replicas=2), MOVED_TO)
    assert value == 2
    assert patch == {"metadata": {"annotations": {mw.SOURCE_REPLICAS: "2", mw.MOVED_TO: MOVED_TO}}, "spec": {"replicas": 0}}


def test_a_fenced_workload_is_left_alone_and_its_record_is_never_replaced_by_zero():
    fenced = live(replicas=0, annotations={mw.SOURCE_REPLICAS: "2", mw.MOVED_TO: MOVED_TO})
    assert mw.fence_patch(workload(), fenced, MOVED_TO) == (None, 2)


def test_a_fenced_workload_scaled_up_by_someone_is_scaled_down_again_keeping_the_record():
    patch, value = mw.fence_patch(workload(), live(replicas=5, annotations={mw.SOURCE_REPLICAS: "2", mw.MOVED_TO: MOVED_TO}), MOVED_TO)
    assert patch == {"spec": {"replicas": 0}} and value == 2


def test_a_workload_found_at_zero_without_a_record_records_the_planned_replicas():
    patch, value = mw.fence_patch(workload(replicas=3), live(replicas=0), MOVED_TO)
    assert value == 3 and patch["metadata"]["annotations"][mw.SOURCE_REPLICAS] == "3" and "spec" not in patch


def test_a_workload_without_replicas_runs_one():
    patch, value = mw.fence_patch(workload(replicas=None), live(), MOVED_TO)
    assert value == 1 and patch["spec"] == {"replicas": 0}


def test_a_cronjob_is_suspended_and_its_suspend_recorded():
    patch, value = mw.fence_patch(workload("CronJob"), live("CronJob", suspend=False), MOVED_TO)
    assert value is False
    assert patch == {"metadata": {"annotations": {mw.SOURCE_SUSPEND: "false", mw.MOVED_TO: MOVED_TO}}, "spec": {"suspend": True}}
    assert mw.fence_patch(workload("CronJob"), live("CronJob", suspend=True, annotations={mw.SOURCE_SUSPEND: "false", mw.MOVED_TO: MOVED_TO}),
                          MOVED_TO) == (None, False)


# -- releasing -----------------------------------------------------------------------------------
def test_releasing_restores_the_recorded_replicas_and_drops_the_annotations():
    patch, value, note = mw.release_patch(workload(), live(replicas=0, annotations={mw.SOURCE_REPLICAS: "2", mw.MOVED_TO: MOVED_TO}), MOVED_TO)
    assert (value, note) == (2, "")
    assert patch == {"metadata": {"annotations": {mw.SOURCE_REPLICAS: None, mw.MOVED_TO: None}}, "spec": {"replicas": 2}}


def test_a_released_workload_is_unchanged():
    patch, value, note = mw.release_patch(workload(), live(replicas=2), MOVED_TO)
    assert patch is None and value == 2 and "not fenced" in note


def test_a_workload_fenced_by_another_run_stays_fenced():
    patch, _value, note = mw.release_patch(workload(), live(replicas=0, annotations={mw.SOURCE_REPLICAS: "2", mw.MOVED_TO: "aws/other"}), MOVED_TO)
    assert patch is None and "another run (aws/other)" in note


def test_a_cronjob_gets_its_suspend_back():
    patch, value, _note = mw.release_patch(workload("CronJob"), live("CronJob", suspend=True, annotations={mw.SOURCE_SUSPEND: "false"}), MOVED_TO)
    assert value is False and patch["spec"] == {"suspend": False}


def test_a_damaged_record_is_refused_with_the_fix():
    with pytest.raises(MigrationError, match="not a number"):
        mw.release_patch(workload(), live(replicas=0, annotations={mw.SOURCE_REPLICAS: "many"}), MOVED_TO)


# -- the node ------------------------------------------------------------------------------------
def test_the_node_is_cordoned_with_who_did_it_and_uncordoned_only_by_that_run():
    node = {"metadata": {"name": "w1"}, "spec": {}}
    patch, note = mw.cordon_patch(node, MOVED_TO)
    assert patch == {"metadata": {"annotations": {mw.CORDONED_BY: MOVED_TO}}, "spec": {"unschedulable": True}} and note == ""
    cordoned = {"metadata": {"name": "w1", "annotations": {mw.CORDONED_BY: MOVED_TO}}, "spec": {"unschedulable": True}}
    assert mw.cordon_patch(cordoned, MOVED_TO)[0] is None
    assert mw.uncordon_patch(cordoned, MOVED_TO) == ({"metadata": {"annotations": {mw.CORDONED_BY: None}}, "spec": {"unschedulable": None}}, "")
    assert "another run" in mw.uncordon_patch(cordoned, "aws/other")[1]


def test_a_node_cordoned_by_someone_else_stays_cordoned():
    by_hand = {"metadata": {"name": "w1"}, "spec": {"unschedulable": True}}
    patch, note = mw.cordon_patch(by_hand, MOVED_TO)
    assert patch is None and "not by a migration" in note
    patch, note = mw.uncordon_patch(by_hand, MOVED_TO)
    assert patch is None and "left cordoned" in note


# -- removal -------------------------------------------------------------------------------------
def test_removal_goes_policies_workloads_local_claims_then_local_volumes_and_keeps_shared_objects():
    order = [(i.kind, i.namespace, i.name) for i in mw.removal_order(plan())]
    assert order[0] == ("PodDisruptionBudget", "shop-cloud", "web")
    assert order[-2:] == [("PersistentVolumeClaim", "shop", "data-db-0"), ("PersistentVolume", "", "shop-db")]
    assert ("Deployment", "shop-cloud", "web") in order and ("StatefulSet", "shop", "db") in order
    assert ("PersistentVolume", "", "nfs") not in order and ("PersistentVolumeClaim", "shop", "shared") not in order
    kept = mw.kept_objects(plan(), mw.removal_order(plan()))
    assert "Namespace shop" in kept and "ConfigMap shop/settings" in kept and "PersistentVolume nfs" in kept
    assert not any(k.startswith("Deployment") for k in kept)


def test_the_pods_of_a_workload_are_found_by_its_selector():
    assert mw.selector_of({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "a"},
                                                 "matchExpressions": [{"key": "env", "operator": "In", "values": ["x", "y"]},
                                                                      {"key": "gone", "operator": "DoesNotExist"}]}}}) \
        == "app=web,tier=a,env in (x,y),!gone"
    assert mw.selector_of({"spec": {}}) == ""


def test_a_plan_without_run_id_is_refused():
    with pytest.raises(MigrationError, match="no run_id"):
        mw.run(None, {"selected": []}, "fenced", "source", "", "")  # type: ignore[arg-type]


# -- the saved plan --------------------------------------------------------------------------------
def test_the_saved_plan_must_be_the_plan_of_the_run():
    raw = json.dumps(plan()).encode()
    assert parse_plan(raw, "s3://b/k", "w1-to-cloud")["run_id"] == "w1-to-cloud"
    with pytest.raises(MigrationError, match="plan of run 'w1-to-cloud', not 'other'"):
        parse_plan(raw, "s3://b/k", "other")
    with pytest.raises(MigrationError, match="not JSON"):
        parse_plan(b"{", "s3://b/k", "w1-to-cloud")
    with pytest.raises(MigrationError, match="not a migration plan"):
        parse_plan(b"[]", "s3://b/k", "w1-to-cloud")


def test_object_ids_compare_by_value():
    assert ObjectId("Deployment", "apps/v1", "shop", "web") in [w.ident for w in mw.workloads_of(plan(), "source")]
