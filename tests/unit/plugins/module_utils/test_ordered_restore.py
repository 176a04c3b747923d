"""The decisions of ordered_restore, without a server: plan loading, ordering, wait rules, classification, bookkeeping."""

from __future__ import annotations

import json

import pytest

from ansible_collections.hybridcloud.migration.plugins.module_utils import ordered_restore as restore
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError


def obj(kind, name, namespace=None, api_version="v1", **rest):
    metadata = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **rest}


def deployment(name="web", replicas=0, original="3", live_status=None, generation=None):
    manifest = obj("Deployment", name, "shop", "apps/v1", spec={
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "web:1"}]}},
    })
    manifest["metadata"]["annotations"] = {restore.REPLICAS_ANNOTATION: original, "team": "shop"}
    if live_status is not None:
        manifest["status"] = live_status
    if generation is not None:
        manifest["metadata"]["generation"] = generation
    return manifest


# -- the plan -------------------------------------------------------------------------------------
def test_a_plan_is_read_in_stage_order_without_server_set_fields():
    served = obj("ConfigMap", "settings", "shop", data={"a": "1"}, status={"x": 1})
    served["metadata"].update(uid="u-1", resourceVersion="42", creationTimestamp="2026-01-01T00:00:00Z",
                              managedFields=[{"manager": "kubectl"}], generation=3, labels={"app": "shop"})
    plan = restore.load_plan({
        "schema": 1, "run_id": "run-7",
        "stages": [{"name": "namespaces", "objects": [obj("Namespace", "shop")]}, {"name": "config", "objects": [served]}],
        "scale_up": [{"kind": "Deployment", "namespace": "shop", "name": "web", "replicas": 3}],
    })
    assert [stage.name for stage in plan.stages] == ["namespaces", "config"]
    assert plan.run_id == "run-7"
    cleaned = plan.stages[1].objects[0]
    assert cleaned == {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
                       "metadata": {"name": "settings", "namespace": "shop", "labels": {"app": "shop"}}}
    assert "uid" in served["metadata"], "the caller's plan is not modified"
    assert plan.scale_up == [{"kind": "Deployment", "namespace": "shop", "name": "web", "replicas": 3}]


def test_bare_stages_and_the_scale_up_option_stand_in_for_a_plan():
    plan = restore.load_plan(stages=[{"name": "only", "objects": [obj("Namespace", "a")]}], scale_up=[{"kind": "CronJob", "namespace": "a", "name": "c"}])
    assert [s.name for s in plan.stages] == ["only"] and plan.run_id == "" and plan.scale_up[0]["kind"] == "CronJob"
    unnamed = restore.load_plan(stages=[{"objects": []}, {"objects": []}])
    assert [s.name for s in unnamed.stages] == ["stage-1", "stage-2"]


@pytest.mark.parametrize(
    "plan, says",
    [
        ({"schema": 3, "stages": []}, "schema 3; this module reads schemas 1 and 2"),
        ({"stages": [], "secret_data": ["x"]}, "secret_data is not a mapping"),
        ({"stages": {"name": "x"}}, "stages is not a list"),
        ({"stages": [["x"]]}, "Stage 1 of the plan is not a mapping"),
        ({"stages": [{"name": "config", "objects": {"a": 1}}]}, "objects of stage config are not a list"),
        ({"stages": [{"name": "config", "objects": [{"kind": "ConfigMap", "metadata": {"name": "a"}}]}]}, "Object 1 of stage config has no apiVersion"),
        ({"stages": [{"name": "config", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]}]}, "(ConfigMap) has no metadata.name"),
        ({"stages": [{"name": "a", "objects": [obj("Service", "web", "shop")]},
                     {"name": "b", "objects": [obj("Service", "web", "shop")]}]}, "Service shop/web appears twice in the plan (stages a and b)"),
        # Another version of the same group names the same object.
        ({"stages": [{"name": "w", "objects": [obj("Deployment", "web", "shop", "apps/v1"), obj("Deployment", "web", "shop", "apps/v1beta2")]}]},
         "Deployment shop/web appears twice"),
    ],
)
def test_a_malformed_plan_is_refused_before_anything_is_applied(plan, says):
    with pytest.raises(MigrationError) as err:
        restore.load_plan(plan)
    assert says in err.value.problem


def test_same_name_in_other_namespaces_or_kinds_is_not_a_duplicate():
    plan = restore.load_plan({"stages": [{"name": "s", "objects": [
        obj("ConfigMap", "web", "a"), obj("ConfigMap", "web", "b"), obj("Secret", "web", "a"), obj("Deployment", "web", "a", "apps/v1")]}]})
    assert len(plan.stages[0].objects) == 4


def test_plan_file_json_or_yaml(tmp_path):
    as_json = tmp_path / "plan.json"
    as_json.write_text(json.dumps({"schema": 1, "run_id": "j", "stages": [{"name": "n", "objects": [obj("Namespace", "a")]}]}))
    assert restore.load_plan(plan_file=str(as_json)).run_id == "j"
    as_yaml = tmp_path / "plan.yml"
    as_yaml.write_text("run_id: y\nstages:\n  - name: n\n    objects:\n      - {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n")
    assert restore.load_plan(plan_file=str(as_yaml)).stages[0].objects[0]["metadata"]["name"] == "a"
    with pytest.raises(MigrationError) as missing:
        restore.load_plan(plan_file=str(tmp_path / "nope.json"))
    assert "Cannot read the plan file" in missing.value.problem and "nope.json" in missing.value.problem
    garbage = tmp_path / "list.json"
    garbage.write_text("[1, 2]")
    with pytest.raises(MigrationError, match="does not hold a plan"):
        restore.load_plan(plan_file=str(garbage))


def test_crd_kinds_of_the_plan():
    crd = obj("CustomResourceDefinition", "widgets.example.com", api_version="apiextensions.k8s.io/v1",
              spec={"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}})
    plan = restore.load_plan({"stages": [{"name": "crds", "objects": [crd]}]})
    assert plan.crd_kinds == {("example.com", "Widget")}


def test_secret_data_is_masked_for_task_output_and_nothing_else():
    secret = obj("Secret", "db", "shop", data={"password": "c2VjcmV0"}, stringData={"token": "plain"})
    plan = {"stages": [{"name": "config", "objects": [secret, obj("ConfigMap", "c", "shop", data={"k": "visible"})]}]}
    shown = restore.masked(plan)
    objects = shown["stages"][0]["objects"]
    assert objects[0]["data"] == {"password": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert objects[0]["stringData"] == {"token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert objects[1]["data"] == {"k": "visible"}
    assert "c2VjcmV0" not in json.dumps(shown) and "plain" not in json.dumps(shown)
    assert secret["data"]["password"] == "c2VjcmV0", "the plan itself is untouched"
    assert restore.masked(None) is None


# -- ordering ------------------------------------------------------------------------------------
def test_inside_a_stage_namespaces_then_crds_then_the_rest_in_plan_order():
    crd = obj("CustomResourceDefinition", "w.example.com", api_version="apiextensions.k8s.io/v1")
    objects = [obj("ConfigMap", "a", "x"), crd, obj("Namespace", "x"), obj("Service", "s", "x"), obj("Namespace", "y")]
    assert [[o["metadata"]["name"] for o in wave] for wave in restore.waves(objects)] == [["x", "y"], ["w.example.com"], ["a", "s"]]
    assert restore.waves([]) == []
    assert len(restore.waves([obj("ConfigMap", "a", "x")])) == 1


# -- wait rules --------------------------------------------------------------------------------
def test_namespace_waits_for_active():
    assert restore.readiness("Namespace", obj("Namespace", "a", status={"phase": "Active"})).ready
    terminating = restore.readiness("Namespace", obj("Namespace", "a", status={"phase": "Terminating"}))
    assert not terminating.ready and "Terminating" in terminating.waiting_for


def test_crd_waits_for_established_and_fails_on_refused_names():
    crd = obj("CustomResourceDefinition", "w.example.com", status={"conditions": [{"type": "NamesAccepted", "status": "True"}]})
    assert not restore.readiness("CustomResourceDefinition", crd).ready
    crd["status"]["conditions"].append({"type": "Established", "status": "True"})
    assert restore.readiness("CustomResourceDefinition", crd).ready
    clash = obj("CustomResourceDefinition", "w.example.com", status={"conditions": [
        {"type": "NamesAccepted", "status": "False", "message": "\"widgets\" is already in use"}]})
    state = restore.readiness("CustomResourceDefinition", clash)
    assert not state.ready and "already in use" in state.failure


MODES = {"local-wffc": "WaitForFirstConsumer", "fast": "Immediate"}


@pytest.mark.parametrize(
    "spec, phase, ready, expect",
    [
        ({"volumeName": "pv-1", "storageClassName": "local-wffc"}, "Pending", False, "Bound to PersistentVolume pv-1"),
        ({"volumeName": "pv-1"}, "Bound", True, ""),
        ({"storageClassName": "fast"}, "Pending", False, "storage class fast"),
        ({"storageClassName": "local-wffc"}, "Pending", True, "binds on first consumer"),
        ({"storageClassName": "gone"}, "Pending", True, "storage class gone does not exist"),
        ({"storageClassName": ""}, "Pending", True, "no storage class and no volume"),
    ],
)
def test_a_claim_is_awaited_only_when_it_can_bind_now(spec, phase, ready, expect):
    pvc = obj("PersistentVolumeClaim", "data", "shop", spec=spec, status={"phase": phase})
    state = restore.readiness("PersistentVolumeClaim", pvc, MODES)
    assert state.ready is ready
    assert expect in (state.waiting_for if not ready else state.note)
    if ready and expect:
        assert "not waited for" in state.note


def test_a_claim_without_class_takes_the_default_class_and_a_lost_claim_fails():
    pvc = obj("PersistentVolumeClaim", "data", "shop", spec={}, status={"phase": "Pending"})
    assert "binds on first consumer" in restore.readiness("PersistentVolumeClaim", pvc, MODES, "local-wffc").note
    assert not restore.readiness("PersistentVolumeClaim", pvc, MODES, "fast").ready
    lost = obj("PersistentVolumeClaim", "data", "shop", spec={"volumeName": "pv-1"}, status={"phase": "Lost"})
    assert "Lost" in restore.readiness("PersistentVolumeClaim", lost, MODES).failure


def test_storage_class_modes_and_the_default_class():
    classes = [
        {"metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "volumeBindingMode": "WaitForFirstConsumer"},
        {"metadata": {"name": "ebs"}},  # mode defaults to Immediate
    ]
    assert restore.storage_class_modes(classes) == ({"local": "WaitForFirstConsumer", "ebs": "Immediate"}, "local")
    assert restore.storage_class_modes([]) == ({}, "")


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"])
def test_workloads_at_zero_replicas_wait_for_observed_generation(kind):
    fresh = obj(kind, "web", "shop", "apps/v1", status={})
    fresh["metadata"]["generation"] = 1
    state = restore.readiness(kind, fresh)
    assert not state.ready and "observedGeneration 0 to reach generation 1" in state.waiting_for
    fresh["status"] = {"observedGeneration": 1, "replicas": 0}  # 0 replicas: "available" would say nothing
    assert restore.readiness(kind, fresh).ready


def test_service_waits_for_a_cluster_ip_and_other_kinds_only_exist():
    assert not restore.readiness("Service", obj("Service", "s", "x", spec={"type": "ClusterIP"})).ready
    assert restore.readiness("Service", obj("Service", "s", "x", spec={"clusterIP": "10.96.0.10"})).ready
    assert restore.readiness("Service", obj("Service", "s", "x", spec={"clusterIP": "None"})).ready  # headless
    assert restore.readiness("Service", obj("Service", "s", "x", spec={"type": "ExternalName", "externalName": "db.example"})).ready
    for kind in ("ConfigMap", "Secret", "ServiceAccount", "RoleBinding", "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob", "Widget"):
        assert restore.readiness(kind, obj(kind, "a", "x")).ready


def test_timeouts_per_kind():
    assert restore.timeout_for("Deployment", 300, {}) == 300
    assert restore.timeout_for("Deployment", 300, {"Deployment": 20}) == 20
    assert restore.timeout_for("Service", 300, {"Deployment": 20, "default": 60}) == 60
    assert restore.timeout_for("Service", 300, None) == 300


# -- created / updated / unchanged -----------------------------------------------------------
def test_classify_compares_content_not_bookkeeping():
    before = obj("ConfigMap", "c", "x", data={"a": "1"}, status={})
    before["metadata"].update(resourceVersion="10", managedFields=[{"manager": "before-first-apply"}])
    after = obj("ConfigMap", "c", "x", data={"a": "1"})
    after["metadata"].update(resourceVersion="11", managedFields=[{"manager": "hybridcloud.migration"}])
    assert restore.classify(before, after, 200) == "unchanged"
    changed = json.loads(json.dumps(after))
    changed["data"]["a"] = "2"
    assert restore.classify(before, changed, 200) == "updated"
    relabelled = json.loads(json.dumps(after))
    relabelled["metadata"]["labels"] = {"new": "label"}
    assert restore.classify(before, relabelled, 200) == "updated"
    assert restore.classify(None, after, 201) == "created"
    assert restore.classify(before, after, 201) == "created"  # deleted and created again between read and apply
    assert restore.classify(None, after, 200) == "updated"  # someone created it between read and apply


def managed(obj, *entries):
    obj["metadata"]["managedFields"] = [{"manager": m, "operation": op, "time": when, "fieldsType": "FieldsV1"} for m, op, when in entries]
    return obj


def test_a_change_someone_else_made_between_read_and_apply_is_not_ours():
    mine = ("hybridcloud.migration", "Apply", "2026-11-25T10:00:00Z")
    before = managed(deployment(generation=1), mine)
    # The deployment controller annotated it after our read; our apply changed nothing: same time.
    after = managed(deployment(generation=1), mine, ("kube-controller-manager", "Update", "2026-11-25T10:05:00Z"))
    after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    assert restore.classify(before, after, 200) == "unchanged"
    # Our apply changed it: the API server moved our entry's time.
    ours = managed(deployment(generation=2), ("hybridcloud.migration", "Apply", "2026-11-25T10:06:00Z"))
    assert restore.classify(before, ours, 200) == "updated"
    # Another field manager's entry says nothing about our changes.
    assert restore.classify(before, ours, 200, field_manager="someone-else") == "updated"
    # We take over an object someone else made (no entry of ours before).
    theirs = managed(deployment(generation=1), ("kubectl", "Update", "2026-11-25T09:00:00Z"))
    assert restore.classify(theirs, ours, 200) == "updated"


def test_applied_at_reads_only_our_apply_entry():
    obj = managed(deployment(), ("hybridcloud.migration", "Update", "t1"), ("other", "Apply", "t2"))
    assert restore.applied_at(obj, "hybridcloud.migration") is None
    obj["metadata"]["managedFields"].append({"manager": "hybridcloud.migration", "operation": "Apply", "time": "t3", "subresource": "status"})
    assert restore.applied_at(obj, "hybridcloud.migration") is None
    obj["metadata"]["managedFields"].append({"manager": "hybridcloud.migration", "operation": "Apply", "time": "t4"})
    assert restore.applied_at(obj, "hybridcloud.migration") == "t4"
    assert restore.applied_at(None, "hybridcloud.migration") is None


def test_a_list_item_without_kind_compares_equal_to_the_apply_answer():
    listed = {"metadata": {"name": "c", "namespace": "x", "resourceVersion": "5"}, "data": {"a": "1"}}
    answered = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x", "resourceVersion": "5"}, "data": {"a": "1"}}
    assert restore.classify(listed, answered, 200) == "unchanged"


def test_status_changes_by_controllers_are_not_our_changes():
    before = deployment(live_status={"observedGeneration": 1}, generation=1)
    after = deployment(live_status={"observedGeneration": 1, "conditions": [{"type": "Available"}]}, generation=1)
    assert restore.classify(before, after, 200) == "unchanged"
    after["metadata"]["generation"] = 2
    assert restore.classify(before, after, 200) == "updated"


# -- re-runs after scale-up ------------------------------------------------------------------
def test_a_scaled_up_workload_keeps_its_replicas_on_a_rerun():
    planned = deployment(replicas=0, original="3")
    live = deployment(replicas=3)
    del live["metadata"]["annotations"][restore.REPLICAS_ANNOTATION]  # removed by state=scaled
    applied, note = restore.keep_live_scale(planned, live)
    assert "replicas" not in applied["spec"]
    assert applied["metadata"]["annotations"] == {"team": "shop"}
    assert note == "scaled up already: spec.replicas left at 3"
    assert planned["spec"]["replicas"] == 0, "the plan is untouched"


def test_a_workload_not_scaled_up_yet_or_new_is_applied_as_planned():
    planned = deployment(replicas=0)
    assert restore.keep_live_scale(planned, None) == (planned, "")
    assert restore.keep_live_scale(planned, deployment(replicas=0)) == (planned, "")  # annotation still there
    plain = obj("ConfigMap", "c", "x", data={})
    assert restore.keep_live_scale(plain, obj("ConfigMap", "c", "x")) == (plain, "")


def test_a_container_running_from_its_checkpoint_image_stays_on_it_on_a_rerun():
    planned = deployment(replicas=0)
    planned["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy:2", "imagePullPolicy": "IfNotPresent"})
    live = deployment(replicas=0)
    live["metadata"]["annotations"][restore.CHECKPOINT_IMAGE_PREFIX + "app"] = "localhost/hcm-checkpoint/shop-web-app:abc"
    applied, note = restore.keep_checkpoint_images(planned, live)
    assert applied["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "localhost/hcm-checkpoint/shop-web-app:abc", "imagePullPolicy": "Never"},
        {"name": "sidecar", "image": "proxy:2", "imagePullPolicy": "IfNotPresent"}]
    assert note == "runs from its checkpoint image: app=localhost/hcm-checkpoint/shop-web-app:abc kept"
    assert planned["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1", "the plan is untouched"


def test_without_checkpoint_annotations_the_containers_are_applied_as_planned():
    planned = deployment(replicas=0)
    assert restore.keep_checkpoint_images(planned, None) == (planned, "")
    assert restore.keep_checkpoint_images(planned, deployment(replicas=0)) == (planned, "")
    live = deployment(replicas=0)
    live["metadata"]["annotations"][restore.CHECKPOINT_IMAGE_PREFIX + "gone"] = "localhost/hcm-checkpoint/x:1"
    assert restore.keep_checkpoint_images(planned, live) == (planned, "")  # no such container in the plan
    plain = obj("ConfigMap", "c", "x", data={})
    assert restore.keep_checkpoint_images(plain, live) == (plain, "")


def test_a_resumed_cronjob_stays_resumed():
    planned = obj("CronJob", "nightly", "shop", "batch/v1", spec={"suspend": True, "schedule": "0 3 * * *"})
    planned["metadata"]["annotations"] = {restore.SUSPEND_ANNOTATION: "false"}
    live = obj("CronJob", "nightly", "shop", "batch/v1", spec={"suspend": False, "schedule": "0 3 * * *"})
    applied, note = restore.keep_live_scale(planned, live)
    assert applied["spec"] == {"schedule": "0 3 * * *"} and "annotations" not in applied["metadata"]
    assert note == "scaled up already: spec.suspend left at false"


# -- scale-up --------------------------------------------------------------------------------------
def test_scale_targets_from_items_and_annotations():
    target = restore.scale_target({"kind": "Deployment", "namespace": "shop", "name": "web", "replicas": 3})
    assert (target.ident.api_version, target.field, target.value) == ("apps/v1", "replicas", 3)
    live = deployment(original="5")
    assert restore.scale_target({"kind": "StatefulSet", "namespace": "shop", "name": "db"}, live).value == 5
    assert restore.scale_target({"kind": "StatefulSet", "namespace": "shop", "name": "db"}, partial=True).value is None
    cron = obj("CronJob", "c", "shop", "batch/v1")
    cron["metadata"]["annotations"] = {restore.SUSPEND_ANNOTATION: "true"}  # it was suspended in the source
    assert restore.scale_target({"kind": "CronJob", "namespace": "shop", "name": "c"}, cron).value is True
    assert restore.scale_target({"kind": "CronJob", "namespace": "shop", "name": "c"}, obj("CronJob", "c", "shop")).value is False
    assert restore.scale_target({"kind": "Job", "namespace": "shop", "name": "j", "suspend": False}).ident.api_version == "batch/v1"
    assert restore.scale_target({"kind": "ReplicationController", "namespace": "s", "name": "r", "replicas": "2"}).value == 2


@pytest.mark.parametrize(
    "item, says",
    [
        ({"kind": "ConfigMap", "namespace": "a", "name": "b"}, "neither replicas nor suspend"),
        ({"kind": "Deployment", "name": "b", "replicas": 1}, "no name or namespace"),
        ({"kind": "Deployment", "namespace": "a", "name": "b"}, "has no replicas"),
        ({"kind": "Deployment", "namespace": "a", "name": "b", "replicas": "three"}, "not a number"),
        ({"kind": "Deployment", "namespace": "a", "name": "b", "replicas": -1}, "negative replicas"),
    ],
)
def test_bad_scale_up_items_are_refused(item, says):
    with pytest.raises(MigrationError) as err:
        restore.scale_target(item, obj(item["kind"], "b", "a"))
    assert says in err.value.problem


def test_scaled_up_means_available_pods_at_the_current_generation():
    target = restore.scale_target({"kind": "Deployment", "namespace": "shop", "name": "web", "replicas": 2})
    live = deployment(generation=2, live_status={"observedGeneration": 1, "availableReplicas": 2})
    assert not restore.scaled_readiness(target, live).ready  # the controller has not seen the new replicas yet
    live["status"] = {"observedGeneration": 2, "availableReplicas": 1}
    state = restore.scaled_readiness(target, live)
    assert not state.ready and "availableReplicas 1 of 2" in state.waiting_for
    live["status"]["availableReplicas"] = 2
    assert restore.scaled_readiness(target, live).ready
    sts = restore.scale_target({"kind": "StatefulSet", "namespace": "shop", "name": "db", "replicas": 1})
    assert "readyReplicas 0 of 1" in restore.scaled_readiness(sts, {"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}).waiting_for
    cron = restore.scale_target({"kind": "CronJob", "namespace": "shop", "name": "c"}, obj("CronJob", "c", "shop"))
    assert restore.scaled_readiness(cron, {}).ready


# -- bookkeeping and messages ----------------------------------------------------------------------
def stage_with(name, *actions, errors=()):
    result = restore.StageResult(name, len(actions), apply_seconds=0.5, waited_seconds=0.25, seconds=1.0)
    for index, action in enumerate(actions):
        res = restore.ObjectResult(name, restore.ObjectId("ConfigMap", "v1", "shop", "c%d" % index), action)
        if action == "failed":
            res.error = errors[0] if errors else "422 Invalid: bad"
        result.results.append(res)
    return result


def test_stage_and_total_counts():
    first = stage_with("namespaces", "created")
    second = stage_with("config", "created", "unchanged", "updated", "unchanged", "conflict")
    assert first.as_dict() == {
        "name": "namespaces", "objects": 1, "created": 1, "updated": 0, "unchanged": 0, "conflicts": 0, "failed": 0,
        "apply_seconds": 0.5, "waited_seconds": 0.25, "seconds": 1.0, "notes": [],
    }
    assert second.changed and not stage_with("x", "unchanged", "unchanged").changed
    totals = restore.summarize([first, second], 2.0)
    assert totals == {"stages": 2, "objects": 6, "seconds": 2.0, "created": 2, "updated": 1, "unchanged": 2, "failed": 0,
                      "conflicts": 1, "waited_seconds": 0.5, "objects_per_second": 3.0}
    assert restore.summarize([], 0)["objects_per_second"] == 0.0


def test_object_results_carry_error_and_note_only_when_there_is_one():
    ok = restore.ObjectResult("network", restore.ObjectId("Service", "v1", "shop", "web"), "created")
    assert ok.as_dict() == {"stage": "network", "kind": "Service", "api_version": "v1", "namespace": "shop", "name": "web", "action": "created"}
    bad = restore.ObjectResult("network", restore.ObjectId("Namespace", "v1", "", "shop"), "failed", error="403 Forbidden: no")
    assert bad.as_dict()["error"] == "403 Forbidden: no" and "note" not in bad.as_dict()
    assert str(bad.ident) == "Namespace shop" and str(ok.ident) == "Service shop/web"


def test_a_failure_message_names_the_object_the_reason_and_what_stays_applied():
    failed = stage_with("network", "created", "failed", "failed",
                        errors=['422 Invalid: Service "c1" is invalid: spec.clusterIPs: Invalid value'])
    problem, fix = restore.failure_message(failed, [stage_with("namespaces", "created"), stage_with("config", "created")])
    assert problem.startswith('Stage network failed: ConfigMap shop/c1: 422 Invalid: Service "c1" is invalid')
    assert "(and 1 more object of the stage)" in problem
    assert "stages namespaces, config are applied and stay applied" in problem
    assert "run again" in fix and "continues where it stopped" in fix
    first, _fix = restore.failure_message(stage_with("namespaces", "failed"), [])
    assert "nothing was applied before it" in first and "not attempted" not in first
    cut = stage_with("config", "created", "failed", errors=["could not reach the API server https://10.0.0.1:6443: refused"])
    cut.objects = 400  # the rest was not attempted once the API server had gone
    problem, _fix = restore.failure_message(cut, [stage_with("namespaces", "created")])
    assert "refused; 398 objects of the stage were not attempted; stages namespaces are applied" in problem
    dry, _fix = restore.failure_message(stage_with("b", "failed"), [stage_with("a", "created")], check_mode=True)
    assert "stages a passed the dry run" in dry


@pytest.mark.parametrize(
    "error, fix",
    [
        ("could not reach the API server https://127.0.0.1:1: Connection refused", "bring the API server back"),
        ("timed out after 300s waiting for phase Bound", "raise kind_timeouts for ConfigMap"),
        ("the API server does not serve example.com/v1 Widget", "CustomResourceDefinition of ConfigMap in an earlier stage"),
        ("409 Conflict: Apply failed with 1 conflict", "set force_conflicts"),
    ],
)
def test_the_fix_matches_the_failure(error, fix):
    assert fix in restore.failure_message(stage_with("s", "failed", errors=[error]), [])[1]


def test_api_error_text_prefers_the_status_message():
    body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": 'Service "web" is invalid: spec.ports: Required value'}).encode()
    assert restore.api_error_text(422, "Unprocessable Entity", body) == '422 Invalid: Service "web" is invalid: spec.ports: Required value'
    assert restore.api_error_text(503, "Service Unavailable", b"<html>down</html>") == "503 Service Unavailable: <html>down</html>"
    assert restore.api_error_text(500, "Internal Server Error", None) == "500 Internal Server Error"


def test_connection_errors_read_without_object_reprs():
    import urllib3.connection
    import urllib3.exceptions

    connection = urllib3.connection.HTTPSConnection("127.0.0.1", 6443)
    refused = urllib3.exceptions.NewConnectionError(connection, "Failed to establish a new connection: [Errno 111] Connection refused")
    retried = urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/shop", refused)
    assert restore.connection_error_text(retried) == (
        "HTTPSConnection(host='127.0.0.1', port=6443): Failed to establish a new connection: [Errno 111] Connection refused")
    old_style = urllib3.exceptions.MaxRetryError(None, "/", OSError("<urllib3.connection.HTTPSConnection object at 0x7f2a>: [Errno 111] refused"))
    assert restore.connection_error_text(old_style) == "[Errno 111] refused"
    reset = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    assert restore.connection_error_text(reset) == "Connection aborted. Connection reset by peer"
    assert restore.connection_error_text(TimeoutError()) == "TimeoutError"


def test_rest_paths():
    cm = restore.ResourceRef("v1", "ConfigMap", "configmaps", True)
    assert cm.path("shop", "settings") == "/api/v1/namespaces/shop/configmaps/settings"
    assert cm.path("shop") == "/api/v1/namespaces/shop/configmaps"
    role = restore.ResourceRef("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False)
    assert role.path("ignored", "system:aggregate-to-edit") == "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregate-to-edit"
    assert restore.ResourceRef("v1", "Namespace", "namespaces", False).path(name="a b") == "/api/v1/namespaces/a%20b"


def test_a_bare_pod_is_scaled_up_by_removing_its_restore_gate():
    target = restore.scale_target({"kind": "Pod", "namespace": "ops", "name": "debug", "scheduling_gate": restore.RESTORE_GATE})
    assert (target.field, target.value, target.ident.api_version) == ("schedulingGates", restore.RESTORE_GATE, "v1")
    pending = {"status": {"phase": "Pending"}}
    assert not restore.scaled_readiness(target, pending).ready and restore.scaled_readiness(target, {"status": {"phase": "Running"}}).ready


def test_a_pod_ungated_already_is_applied_without_the_gate():
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "ops"},
                "spec": {"schedulingGates": [{"name": restore.RESTORE_GATE}, {"name": "other"}], "containers": []}}
    live = {"metadata": {"name": "debug"}, "spec": {"schedulingGates": [{"name": "other"}]}}
    kept, note = restore.keep_live_scale(manifest, live)
    assert kept["spec"]["schedulingGates"] == [{"name": "other"}] and "stays removed" in note
    assert manifest["spec"]["schedulingGates"][0]["name"] == restore.RESTORE_GATE  # the plan is left as it was
    assert restore.keep_live_scale(manifest, {"spec": {"schedulingGates": [{"name": restore.RESTORE_GATE}]}}) == (manifest, "")


def test_an_object_is_foreign_when_it_lacks_the_plans_run_label():
    planned = {"metadata": {"name": "web", "labels": {restore.RUN_ID_KEY: "w3-to-cloud"}}}
    assert restore.foreign(planned, {"metadata": {"name": "web"}})  # the target's own
    assert restore.foreign(planned, {"metadata": {"labels": {restore.RUN_ID_KEY: "w1-to-cloud"}}})  # another run's
    assert not restore.foreign(planned, {"metadata": {"labels": {restore.RUN_ID_KEY: "w3-to-cloud"}}})  # an earlier attempt of this run
    assert not restore.foreign(planned, None)  # not there yet
    assert not restore.foreign({"metadata": {"name": "web"}}, {"metadata": {"name": "web"}})  # hand-written stages: applied as given
    assert "adopt=true takes it over" in restore.conflict_note("w3-to-cloud")
    # The namespace's default ServiceAccount, made by the target the moment the plan's namespace exists.
    default_sa = {"kind": "ServiceAccount", "metadata": {"name": "default", "labels": {restore.RUN_ID_KEY: "w3-to-cloud"}}}
    assert not restore.foreign(default_sa, {"metadata": {"name": "default"}})


def test_only_a_plan_whose_objects_carry_its_run_label_checks_scale_up_targets():
    stamped = restore.load_plan({"run_id": "r1", "stages": [{"name": "w", "objects": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a", "labels": {restore.RUN_ID_KEY: "r1"}}}]}]})
    by_hand = restore.load_plan({"run_id": "r1", "stages": [{"name": "w", "objects": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}]}]})
    assert (stamped.stamped_run_id, by_hand.stamped_run_id) == ("r1", "")
