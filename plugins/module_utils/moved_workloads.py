# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The workloads a migration run moved, in one cluster: fence them, release them, or remove them.

A workload must never run in two clusters at once. When a dead node comes back, its kubelet
would restart the pods the source cluster still wants while their copies run on the target:
split brain, diverging data. Fencing stops that in the source cluster's API, the one place that
decides what runs:

``fenced``
    Each moved workload records what it had (annotation ``migration.hybridcloud.io/source-replicas``,
    or ``source-suspend`` for CronJobs and Jobs, and ``moved-to: <cluster>/<run id>``) and is
    scaled to 0 (suspended). The record is written once: a re-run, or a workload found at 0,
    never replaces it with 0. The failed node is cordoned (``unschedulable``, and the annotation
    ``migration.hybridcloud.io/cordoned-by``) unless someone cordoned it before. No NoExecute
    taint: it would also evict the node's DaemonSet pods (network, kube-proxy) once it is back,
    and cordon's ``node.kubernetes.io/unschedulable:NoSchedule`` taint already keeps new pods off.
    A workload that moved in part (its share, ``plan.share``) is scaled down by that share, not
    to 0: the source keeps serving the rest. A StatefulSet whose moved ordinals are at the bottom
    of its range also gets ``spec.ordinals.start`` past them (recorded in ``source-ordinals``), and
    an autoscaler of a workload that moved in part keeps its part of ``minReplicas``/``maxReplicas``
    (recorded in ``source-autoscaler``), so it cannot scale the moved share back. Bare pods have
    nothing to scale (the out-of-service taint or the node controller deletes them): reported, not fenced.
``released``
    The recorded replicas (suspend, ordinals, autoscaler bounds) come back, the annotations go,
    the node is uncordoned when this run cordoned it and its out-of-service taint is removed when
    this run's plan added it (once the node is Ready), and the pods are awaited. A workload fenced by another run is left.
``absent``
    The run's workloads, their PodDisruptionBudgets and HorizontalPodAutoscalers, and the local
    PersistentVolumes (``local`` or ``hostPath``) with their claims are deleted, but only objects
    that carry the run's ``migration.hybridcloud.io/run-id`` label: what the restore of this run
    made. Namespaces, ConfigMaps, Secrets, Services, RBAC and network policies stay (other
    workloads may use them); the result lists them.

Decisions are plain functions over manifests (unit-tested); ``MovedWorkloads`` does the requests
through ``ordered_restore.Cluster``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing as t
from urllib.parse import quote

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.live import node_ready
from ansible_collections.hybridcloud.migration.plugins.module_utils.source_reschedule import untaint_patch
from ansible_collections.hybridcloud.migration.plugins.module_utils.ordered_restore import (
    REPLICA_KINDS,
    SUSPEND_KINDS,
    ApiError,
    Cluster,
    NotServed,
    ObjectId,
    ScaleTarget,
    scaled_readiness,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import HOSTNAME_LABEL, PREFIX, RUN_ID_KEY

SOURCE_REPLICAS = PREFIX + "source-replicas"
SOURCE_SUSPEND = PREFIX + "source-suspend"
SOURCE_ORDINALS = PREFIX + "source-ordinals"
SOURCE_AUTOSCALER = PREFIX + "source-autoscaler"
MOVED_TO = PREFIX + "moved-to"
CORDONED_BY = PREFIX + "cordoned-by"
FIELD_MANAGER = "hybridcloud.migration-fence"
MERGE_PATCH = "application/merge-patch+json"
STATES = ("fenced", "released", "absent")
SIDES = ("source", "target")
AUTOSCALER = "HorizontalPodAutoscaler"
WORKLOAD_KINDS = frozenset(REPLICA_KINDS) | frozenset(SUSPEND_KINDS) | {"Pod"}
# Deleted with state=absent besides the workloads (they only make sense with them).
POLICY_KINDS = frozenset(("PodDisruptionBudget", "HorizontalPodAutoscaler"))
POLL_FIRST = 0.1
POLL_MAX = 2.0

Obj = dict[str, t.Any]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One moved workload, as it is named in one cluster."""

    kind: str
    api_version: str
    namespace: str
    name: str
    replicas: t.Optional[int] = None  # what it ran before the move (the plan's scale_up)
    skip: str = ""  # why it is not fenced or released
    keep: int = 0  # replicas the source keeps (its share stays there); 0 when it moved whole
    ordinals_start: t.Optional[int] = None  # StatefulSet: the source's first ordinal once fenced (None: unchanged)
    bounds: t.Optional[t.Mapping[str, int]] = None  # autoscaler: minReplicas and maxReplicas the source keeps

    @property
    def ident(self) -> ObjectId:
        return ObjectId(self.kind, self.api_version, self.namespace, self.name)

    def result(self) -> dict[str, t.Any]:
        return {"kind": self.kind, "api_version": self.api_version, "namespace": self.namespace, "name": self.name}


def workloads_of(plan: t.Mapping[str, t.Any], side: str) -> list[Workload]:
    """The plan's moved workloads named as in the ``source`` or the ``target`` cluster (namespace map)."""
    if side not in SIDES:
        raise MigrationError("side %r is unknown" % side, "use source or target")
    scale = {(str(i.get("kind")), str(i.get("namespace")), str(i.get("name"))): i for i in plan.get("scale_up") or [] if isinstance(i, dict)}
    found = []
    for item in plan.get("selected") or []:
        kind = str(item.get("kind") or "")
        if kind not in WORKLOAD_KINDS:
            continue
        target_ns = str(item.get("target_namespace") or item.get("namespace") or "")
        namespace = str(item.get("namespace") or "") if side == "source" else target_ns
        planned = scale.get((kind, target_ns, str(item.get("name"))), {})
        replicas = planned.get("replicas") if kind in REPLICA_KINDS else None
        default_version = REPLICA_KINDS.get(kind) or SUSPEND_KINDS.get(kind) or "v1"
        share = item.get("share") if isinstance(item.get("share"), dict) else {}
        kept = (share.get("source") or {}) if side == "source" else {}
        skip = ""
        if kind == "Pod":
            skip = "a bare pod: nothing to scale (the out-of-service taint or the node controller deletes it from the dead node)"
        start = kept.get("ordinals_start")
        found.append(Workload(kind, str(item.get("api_version") or default_version), namespace, str(item.get("name") or ""),
                              int(replicas) if replicas is not None else None, skip, int(kept.get("replicas") or 0),
                              int(start) if start is not None and kind == "StatefulSet" else None))
        autoscaler = share.get("autoscaler") if isinstance(share.get("autoscaler"), dict) else None
        if autoscaler and side == "source" and autoscaler.get("source"):
            found.insert(len(found) - 1, Workload(AUTOSCALER, "autoscaling/v2", namespace, str(autoscaler.get("name") or ""),
                                                  bounds=dict(autoscaler["source"])))
    return found


# --------------------------------------------------------------------------------------------
# Decisions (pure)
# --------------------------------------------------------------------------------------------
def _annotations(live: t.Mapping[str, t.Any]) -> dict[str, str]:
    return dict((live.get("metadata") or {}).get("annotations") or {})


def fence_patch(workload: Workload, live: t.Mapping[str, t.Any], moved_to: str) -> tuple[t.Optional[Obj], t.Any]:
    """(merge patch or None when fenced already, the value recorded) to stop ``live``.

    The record is written only when there is none: a re-run never overwrites it, and a workload
    found at 0 without a record gets the plan's replicas (what it ran before the move).
    """
    annotations = _annotations(live)
    spec = live.get("spec") or {}
    patch_annotations: dict[str, str] = {}
    patch_spec: dict[str, t.Any] = {}
    if workload.kind == AUTOSCALER:
        bounds = workload.bounds or {}
        value = annotations.get(SOURCE_AUTOSCALER)
        if value is None:
            value = json.dumps({k: spec.get(k) for k in ("minReplicas", "maxReplicas")}, sort_keys=True)
            patch_annotations[SOURCE_AUTOSCALER] = value
        patch_spec.update({k: v for k, v in bounds.items() if spec.get(k) != v})
        value = json.loads(value)
    elif workload.kind in REPLICA_KINDS:
        current = 1 if spec.get("replicas") is None else int(spec["replicas"])
        recorded: t.Any = annotations.get(SOURCE_REPLICAS)
        if recorded is None:
            recorded = str(current if current > workload.keep or workload.replicas is None else workload.replicas + workload.keep)
            patch_annotations[SOURCE_REPLICAS] = recorded
        if current != workload.keep:
            patch_spec["replicas"] = workload.keep
        if workload.ordinals_start is not None:
            start = int((spec.get("ordinals") or {}).get("start") or 0)
            if SOURCE_ORDINALS not in annotations:
                patch_annotations[SOURCE_ORDINALS] = str((spec.get("ordinals") or {}).get("start", ""))
            if start != workload.ordinals_start:
                patch_spec["ordinals"] = {"start": workload.ordinals_start}
        value: t.Any = int(recorded)
    else:
        current_suspend = bool(spec.get("suspend"))
        recorded = annotations.get(SOURCE_SUSPEND)
        if recorded is None:
            recorded = "true" if current_suspend else "false"
            patch_annotations[SOURCE_SUSPEND] = recorded
        if not current_suspend:
            patch_spec["suspend"] = True
        value = recorded == "true"
    if MOVED_TO not in annotations and moved_to:
        patch_annotations[MOVED_TO] = moved_to
    patch: Obj = {}
    if patch_annotations:
        patch["metadata"] = {"annotations": patch_annotations}
    if patch_spec:
        patch["spec"] = patch_spec
    return (patch or None), value


def release_patch(workload: Workload, live: t.Mapping[str, t.Any], moved_to: str) -> tuple[t.Optional[Obj], t.Any, str]:
    """(merge patch or None, the value it returns to, a note) to undo ``fence_patch``."""
    annotations = _annotations(live)
    spec = live.get("spec") or {}
    if workload.kind == AUTOSCALER:
        if SOURCE_AUTOSCALER not in annotations:
            return None, None, "not fenced (released already, or never fenced)"
        try:
            bounds = {k: v for k, v in json.loads(annotations[SOURCE_AUTOSCALER]).items() if v is not None}
        except ValueError:
            raise MigrationError("%s has %s %r, not JSON" % (workload.ident, SOURCE_AUTOSCALER, annotations[SOURCE_AUTOSCALER]),
                                 'set it to the bounds it should have, like {"minReplicas": 2, "maxReplicas": 8}, then run again') from None
        return {"metadata": {"annotations": {SOURCE_AUTOSCALER: None}}, "spec": bounds}, bounds, ""
    key = SOURCE_REPLICAS if workload.kind in REPLICA_KINDS else SOURCE_SUSPEND
    field = "replicas" if workload.kind in REPLICA_KINDS else "suspend"
    if key not in annotations:
        return None, spec.get(field), "not fenced (released already, or never fenced)"
    owner = annotations.get(MOVED_TO, "")
    if moved_to and owner and owner != moved_to:
        return None, spec.get(field), "fenced by another run (%s): left fenced" % owner
    if field == "replicas":
        try:
            value: t.Any = int(annotations[key])
        except ValueError:
            raise MigrationError("%s has %s %r, not a number" % (workload.ident, key, annotations[key]),
                                 "set the annotation to the replicas it should run, then run again") from None
    else:
        value = str(annotations[key]).strip().lower() == "true"
    patch: Obj = {"metadata": {"annotations": {key: None, MOVED_TO: None}}, "spec": {field: value}}
    if SOURCE_ORDINALS in annotations:
        recorded = str(annotations[SOURCE_ORDINALS]).strip()
        patch["metadata"]["annotations"][SOURCE_ORDINALS] = None
        patch["spec"]["ordinals"] = {"start": int(recorded)} if recorded.isdigit() else None
    return patch, value, ""


def cordon_patch(node: t.Mapping[str, t.Any], moved_to: str) -> tuple[t.Optional[Obj], str]:
    """Cordon the node, saying who did; a node cordoned by someone else is left as it is."""
    if (node.get("spec") or {}).get("unschedulable"):
        by = _annotations(node).get(CORDONED_BY)
        return None, "cordoned already" + (" (by %s)" % by if by else " (not by a migration: it stays cordoned on release)")
    return {"metadata": {"annotations": {CORDONED_BY: moved_to or "hybridcloud.migration"}}, "spec": {"unschedulable": True}}, ""


def uncordon_patch(node: t.Mapping[str, t.Any], moved_to: str) -> tuple[t.Optional[Obj], str]:
    """Uncordon the node when a migration (this run, when ``moved_to`` is given) cordoned it."""
    by = _annotations(node).get(CORDONED_BY)
    if by is None:
        cordoned = bool((node.get("spec") or {}).get("unschedulable"))
        return None, "cordoned, not by a migration: left cordoned" if cordoned else "schedulable already"
    if moved_to and by != moved_to:
        return None, "cordoned by another run (%s): left cordoned" % by
    return {"metadata": {"annotations": {CORDONED_BY: None}}, "spec": {"unschedulable": None}}, ""


def removal_order(plan: t.Mapping[str, t.Any], side: str = "target") -> list[ObjectId]:
    """What state=absent deletes, in order: policies, workloads, claims of local volumes, local volumes.

    Namespaces are mapped like ``workloads_of``; objects of the plan are named as in the target.
    """
    stages = {str(s.get("name")): s.get("objects") or [] for s in plan.get("stages") or [] if isinstance(s, dict)}
    every = [obj for objects in stages.values() for obj in objects if isinstance(obj, dict)]
    policies = [ObjectId.of(obj) for obj in every if obj.get("kind") in POLICY_KINDS]
    workloads = [w.ident for w in workloads_of(plan, side)]
    for obj in every:
        ident = ObjectId.of(obj)
        if ident.kind in WORKLOAD_KINDS and ident not in workloads and side == "target":
            workloads.append(ident)
    local_pvs = [obj for obj in every if obj.get("kind") == "PersistentVolume"
                 and ((obj.get("spec") or {}).get("local") or (obj.get("spec") or {}).get("hostPath"))]
    names = {obj["metadata"]["name"] for obj in local_pvs}
    claims = {(str(((obj.get("spec") or {}).get("claimRef") or {}).get("namespace") or ""),
               str(((obj.get("spec") or {}).get("claimRef") or {}).get("name") or "")) for obj in local_pvs}
    pvcs = [ObjectId.of(obj) for obj in every if obj.get("kind") == "PersistentVolumeClaim" and (
        (obj.get("spec") or {}).get("volumeName") in names
        or ((obj.get("metadata") or {}).get("namespace"), (obj.get("metadata") or {}).get("name")) in claims)]
    return policies + workloads + pvcs + [ObjectId.of(obj) for obj in local_pvs]


def source_pod(plan: t.Mapping[str, t.Any], workload: Workload, node: str) -> t.Optional[Obj]:
    """The bare pod as the source had it, from the plan's target manifest: the source namespace, no restore gate, no run label,
    and pinned to ``node`` (the return node) instead of the new node when the plan had pinned it (its hostPath data)."""
    target_node = str(plan.get("target_node") or "")
    target_ns = next((str(i.get("target_namespace") or i.get("namespace")) for i in plan.get("selected") or []
                      if i.get("kind") == "Pod" and i.get("name") == workload.name and i.get("namespace") == workload.namespace), workload.namespace)
    for stage in plan.get("stages") or []:
        for obj in stage.get("objects") or []:
            meta = obj.get("metadata") or {}
            if obj.get("kind") != "Pod" or meta.get("name") != workload.name or meta.get("namespace") != target_ns:
                continue
            pod = json.loads(json.dumps(obj))
            meta = pod["metadata"]
            meta["namespace"] = workload.namespace
            for field in ("labels", "annotations"):
                kept = {k: v for k, v in (meta.get(field) or {}).items() if not k.startswith(PREFIX)}
                if kept:
                    meta[field] = kept
                else:
                    meta.pop(field, None)
            spec = pod.setdefault("spec", {})
            gates = [g for g in spec.get("schedulingGates") or [] if not str(g.get("name", "")).startswith(PREFIX)]
            if gates:
                spec["schedulingGates"] = gates
            else:
                spec.pop("schedulingGates", None)
            selector = spec.get("nodeSelector") or {}
            if target_node and selector.get(HOSTNAME_LABEL) == target_node:
                if node:
                    selector[HOSTNAME_LABEL] = node
                else:
                    selector.pop(HOSTNAME_LABEL)
                if not selector:
                    spec.pop("nodeSelector", None)
            return pod
    return None


def kept_objects(plan: t.Mapping[str, t.Any], removed: t.Sequence[ObjectId]) -> list[str]:
    """The plan's objects state=absent leaves (shared ones: namespaces, config, services, RBAC ...)."""
    gone = {ident.key for ident in removed}
    return sorted({str(ObjectId.of(obj)) for s in plan.get("stages") or [] for obj in s.get("objects") or []
                   if isinstance(obj, dict) and ObjectId.of(obj).key not in gone})


def selector_of(live: t.Mapping[str, t.Any]) -> str:
    """A label selector for a workload's pods (matchLabels and simple matchExpressions), '' when it has none."""
    selector = (live.get("spec") or {}).get("selector") or {}
    parts = ["%s=%s" % (key, value) for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            parts.append("%s in (%s)" % (key, ",".join(values)))
        elif operator == "NotIn":
            parts.append("%s notin (%s)" % (key, ",".join(values)))
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append("!%s" % key)
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Settings:
    moved_to: str
    check_mode: bool = False
    wait: bool = True
    wait_timeout: float = 300


class MovedWorkloads:
    """Fence, release or remove a run's workloads in one cluster (see the module docstring)."""

    def __init__(self, cluster: Cluster, settings: Settings, clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.sleep = sleep

    # -- helpers ------------------------------------------------------------------------------
    def _patch(self, path: str, patch: Obj) -> Obj:
        query = [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if self.settings.check_mode else [])
        return self.cluster.request("PATCH", path, query, patch, MERGE_PATCH)[1]

    def _until(self, what: str, done: t.Callable[[], bool]) -> None:
        deadline = self.clock() + self.settings.wait_timeout
        interval = POLL_FIRST
        while not done():
            if self.clock() > deadline:
                raise ApiError(0, "timed out after %.0fs waiting for %s" % (self.settings.wait_timeout, what))
            self.sleep(interval)
            interval = min(POLL_MAX, interval * 1.5)

    def _pods(self, namespace: str, selector: str) -> list[Obj]:
        path = "/api/v1/namespaces/%s/pods" % quote(namespace, safe="")
        return list(self.cluster.request("GET", path, [("labelSelector", selector)])[1].get("items") or [])

    # -- workloads ----------------------------------------------------------------------------
    def fence(self, workloads: t.Sequence[Workload]) -> list[dict[str, t.Any]]:
        return [self._one(w, "fenced") for w in workloads]

    def release(self, workloads: t.Sequence[Workload], plan: t.Optional[t.Mapping[str, t.Any]] = None,
                node: str = "") -> list[dict[str, t.Any]]:
        return [self._recreate(w, plan or {}, node) if w.kind == "Pod" else self._one(w, "released") for w in workloads]

    def _recreate(self, workload: Workload, plan: t.Mapping[str, t.Any], node: str) -> dict[str, t.Any]:
        """A bare pod the source lost (nothing recreates it there): made again from the plan's manifest."""
        result = workload.result()
        try:
            ref = self.cluster.resolve("v1", "Pod")
            if self.cluster.get(ref, workload.namespace, workload.name) is not None:
                result.update(action="unchanged", note="it runs in this cluster")
                return result
            manifest = source_pod(plan, workload, node)
            if manifest is None:
                result.update(action="skipped", note="the plan has no manifest of it")
                return result
            query = [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if self.settings.check_mode else [])
            self.cluster.request("POST", ref.path(workload.namespace), query, manifest)
            result.update(action="released", note="recreated (the source had lost it)" + (" on %s, where its data is" % node if node else ""))
        except (ApiError, NotServed) as err:
            result.update(action="failed", error=str(err))
        return result

    def _one(self, workload: Workload, state: str) -> dict[str, t.Any]:
        result = workload.result()
        began = self.clock()
        if workload.skip:
            result.update(action="skipped", note=workload.skip)
            return result
        try:
            ref = self.cluster.resolve(workload.api_version, workload.kind)
            live = self.cluster.get(ref, workload.namespace, workload.name)
            if live is None:
                result.update(action="absent", note="not in this cluster")
                return result
            field = "replicas" if workload.kind in REPLICA_KINDS else ("bounds" if workload.kind == AUTOSCALER else "suspend")
            spec = live.get("spec") or {}
            result["before"] = ({k: spec.get(k) for k in ("minReplicas", "maxReplicas")} if field == "bounds"
                                else spec.get(field, 1 if field == "replicas" else False))
            if state == "fenced":
                patch, value = fence_patch(workload, live, self.settings.moved_to)
                result["recorded"] = value
                result[field] = {"replicas": workload.keep, "bounds": dict(workload.bounds or {}), "suspend": True}[field]
                if workload.ordinals_start is not None:
                    result["ordinals_start"] = workload.ordinals_start
            else:
                patch, value, note = release_patch(workload, live, self.settings.moved_to)
                result[field] = value
                if note:
                    result["note"] = note
            after = live
            if patch is not None:
                after = self._patch(ref.path(workload.namespace, workload.name), patch)
            result["action"] = state if patch is not None else "unchanged"
            if self.settings.wait and not self.settings.check_mode:
                if state == "fenced" and field != "bounds":
                    self._wait_stopped(workload, after)
                elif field == "replicas" and "note" not in result:
                    self._wait_available(ref, workload, int(value), after)
        except (ApiError, NotServed) as err:
            result.update(action="failed", error=str(err))
        except MigrationError as err:
            result.update(action="failed", error=err.problem)
        result["seconds"] = round(self.clock() - began, 3)
        return result

    def _wait_stopped(self, workload: Workload, live: Obj) -> None:
        """Until no more pods of the workload are left than the source keeps (terminating ones count: they may still write)."""
        if workload.kind == "CronJob":
            return  # suspended: no new Jobs; a running Job finishes
        selector = selector_of(live)
        if not selector:
            return
        what = "the pods of %s (%s) to be gone" % (workload.ident, selector) if not workload.keep else \
            "%s (%s) to be down to the %d pods the source keeps" % (workload.ident, selector, workload.keep)
        self._until(what, lambda: len(self._pods(workload.namespace, selector)) <= workload.keep)

    def _wait_available(self, ref: t.Any, workload: Workload, replicas: int, live: Obj) -> None:
        target = ScaleTarget(workload.ident, "replicas", replicas)
        current = [live]

        def ready() -> bool:
            if scaled_readiness(target, current[0]).ready:
                return True
            found = self.cluster.get(ref, workload.namespace, workload.name)
            if found is None:
                raise ApiError(404, "it disappeared while waiting for its pods")
            current[0] = found
            return scaled_readiness(target, found).ready

        self._until("%s to have %d pods available" % (workload.ident, replicas), ready)

    # -- the node -----------------------------------------------------------------------------
    def node(self, name: str, cordon: bool, run_id: str = "") -> dict[str, t.Any]:
        result: dict[str, t.Any] = {"name": name}
        try:
            ref = self.cluster.resolve("v1", "Node")
            live = self.cluster.get(ref, "", name)
            if live is None:
                result.update(action="absent", note="no such node in this cluster")
                return result
            patch, note = cordon_patch(live, self.settings.moved_to) if cordon else uncordon_patch(live, self.settings.moved_to)
            if not cordon and run_id:  # the out-of-service taint goes once the node is back (Ready)
                untaint, taint_note = untaint_patch(live, run_id)
                if untaint is not None and node_ready(live):
                    patch = _merged(patch or {}, untaint)
                    result["out_of_service"] = "removed"
                elif untaint is not None:
                    result["out_of_service"] = "kept: the node is not Ready yet"
                elif taint_note != "not marked out of service":
                    result["out_of_service"] = taint_note
            if patch is not None:
                self._patch(ref.path("", name), patch)
            result["action"] = ("cordoned" if cordon else "uncordoned") if patch is not None else "unchanged"
            if note:
                result["note"] = note
        except (ApiError, NotServed) as err:
            result.update(action="failed", error=str(err))
        return result

    # -- removal ------------------------------------------------------------------------------
    def remove(self, plan: t.Mapping[str, t.Any], run_id: str) -> list[dict[str, t.Any]]:
        """Delete what ``removal_order`` names and this run made; wait for each to be gone, in order."""
        results = []
        for ident in removal_order(plan):
            result: dict[str, t.Any] = {"kind": ident.kind, "api_version": ident.api_version, "namespace": ident.namespace, "name": ident.name}
            results.append(result)
            try:
                ref = self.cluster.resolve(ident.api_version, ident.kind)
                namespace = ident.namespace if ref.namespaced else ""
                live = self.cluster.get(ref, namespace, ident.name)
                if live is None:
                    result["action"] = "absent"
                    continue
                labels = (live.get("metadata") or {}).get("labels") or {}
                if labels.get(RUN_ID_KEY) != run_id:
                    result.update(action="kept", note="not made by run %s (its %s label is %r): left" % (run_id, RUN_ID_KEY, labels.get(RUN_ID_KEY)))
                    continue
                result["action"] = "deleted"
                if self.settings.check_mode:
                    continue
                path = ref.path(namespace, ident.name)
                if not (live.get("metadata") or {}).get("deletionTimestamp"):
                    try:
                        self.cluster.request("DELETE", path, body={"propagationPolicy": "Background"})
                    except ApiError as err:
                        if err.status != 404:
                            raise
                if self.settings.wait:
                    self._until("%s to be deleted" % ident, lambda ref=ref, namespace=namespace, name=ident.name:
                                self.cluster.get(ref, namespace, name) is None)
            except NotServed:
                result["action"] = "absent"
            except ApiError as err:
                result.update(action="failed", error=str(err))
                break  # later objects depend on this one going first (a claim before its volume)
        return results


def _merged(first: Obj, second: Obj) -> Obj:
    """Two merge patches as one (nested mappings merged, the second wins)."""
    merged = dict(first)
    for key, value in second.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def failed_items(results: t.Sequence[t.Mapping[str, t.Any]]) -> list[str]:
    return ["%s %s: %s" % (r.get("kind"), "/".join(p for p in (r.get("namespace"), r.get("name")) if p), r.get("error", ""))
            for r in results if r.get("action") == "failed"]


def run(cluster: Cluster, plan: t.Mapping[str, t.Any], state: str, side: str, node: str, moved_to: str,
        check_mode: bool = False, wait: bool = True, wait_timeout: float = 300,
        clock: t.Callable[[], float] = time.monotonic, sleep: t.Callable[[float], None] = time.sleep) -> dict[str, t.Any]:
    """What the module does: one state over the plan's workloads (and the node) in one cluster."""
    if state not in STATES:
        raise MigrationError("state %r is unknown" % state, "use one of %s" % ", ".join(STATES))
    run_id = str(plan.get("run_id") or "")
    if not run_id or not isinstance(plan.get("selected"), list):
        raise MigrationError("The plan has no run_id or no selected list", "give the plan of the run (migration_plan's plan, or the saved plan.json)")
    worker = MovedWorkloads(cluster, Settings(moved_to or run_id, check_mode, wait, wait_timeout), clock, sleep)
    workloads = workloads_of(plan, side)
    result: dict[str, t.Any] = {"run_id": run_id, "state": state, "side": side}
    node_result: t.Optional[dict[str, t.Any]] = None
    if state == "fenced":
        if node:
            node_result = worker.node(node, cordon=True)
        objects = worker.fence(workloads)
    elif state == "released":
        if node:  # first, so the pods can be scheduled on it again
            node_result = worker.node(node, cordon=False, run_id=run_id)
        objects = worker.release(workloads, plan, node)
    else:
        objects = worker.remove(plan, run_id)
        result["kept"] = kept_objects(plan, removal_order(plan))
    result["objects"] = objects
    if node_result is not None:
        result["node"] = node_result
    changed_actions = {"fenced", "released", "deleted", "cordoned", "uncordoned"}
    result["changed"] = any(o.get("action") in changed_actions for o in objects + ([node_result] if node_result else []))
    result["totals"] = {action: sum(1 for o in objects if o.get("action") == action)
                        for action in ("fenced", "released", "deleted", "unchanged", "absent", "skipped", "kept", "failed")}
    failures = failed_items(objects + ([node_result] if node_result else []))
    if failures:
        raise MigrationError(
            "%s the moved workloads of run %s%s failed for %s" % ({"fenced": "Fencing", "released": "Releasing", "absent": "Removing"}[state],
                                                                  run_id, " (dry run)" if check_mode else "", "; ".join(failures)),
            "fix the cause and run again: what is done stays done and the run continues", **result)
    return result
