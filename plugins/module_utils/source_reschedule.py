# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Let the source cluster reschedule what it can, then read what it could not: the facts of the share.

A pod on an unreachable node is evicted only after its ``node.kubernetes.io/unreachable``
toleration (300 s by default), and a StatefulSet pod not even then. Kubernetes' non-graceful
node shutdown skips that wait: the taint ``node.kubernetes.io/out-of-service=nodeshutdown:NoExecute``
on a node that is not Ready makes the control plane force-delete its pods and detach their
volumes, so the controllers replace them at once. ``observe`` adds that taint (recording who
did, in ``migration.hybridcloud.io/out-of-service-by``), waits until the node's pods are gone,
then gives the scheduler ``grace`` seconds to place the replacements, and returns the live
state (``plan.live.LiveState``). It stops early once every workload runs all its replicas on
live nodes. In check mode it taints nothing and waits for nothing: the state now, for the
capacity estimate. ``release`` removes the taint once the node is back (migrate_back).
"""

from __future__ import annotations

import dataclasses
import time
import typing as t
from urllib.parse import quote

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.k8s_client import K8sSettings, make_k8s_client
from ansible_collections.hybridcloud.migration.plugins.module_utils.ordered_restore import ApiError, Cluster
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.select import watch_list
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.live import LiveState, live_nodes, node_ready, placement, pod_alive
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import PREFIX, selector_matches

OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}
TAINTED_BY = PREFIX + "out-of-service-by"
MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "hybridcloud.migration-reschedule"
POLL = 1.0
_PATHS = {"Deployment": ("apps/v1", "deployments"), "ReplicaSet": ("apps/v1", "replicasets"), "StatefulSet": ("apps/v1", "statefulsets"),
          "Job": ("batch/v1", "jobs"), "CronJob": ("batch/v1", "cronjobs")}

Ref = t.Tuple[str, str, str, str]
Obj = t.Dict[str, t.Any]


@dataclasses.dataclass(frozen=True)
class RescheduleSettings:
    failed_node: str
    run_id: str
    out_of_service: bool = True  # taint the dead node so its pods are replaced now
    grace: float = 20.0  # seconds the scheduler gets to place the replacements
    drain_timeout: float = 120.0  # seconds to wait for the node's pods to be force-deleted
    check_mode: bool = False


def has_out_of_service(node: t.Mapping[str, t.Any]) -> bool:
    return any(taint.get("key") == OUT_OF_SERVICE["key"] for taint in (node.get("spec") or {}).get("taints") or [])


def taint_patch(node: t.Mapping[str, t.Any], run_id: str) -> t.Optional[Obj]:
    """The merge patch that adds the out-of-service taint (None when it is there); guarded by resourceVersion."""
    if has_out_of_service(node):
        return None
    taints = list((node.get("spec") or {}).get("taints") or []) + [dict(OUT_OF_SERVICE)]
    return {"metadata": {"resourceVersion": (node.get("metadata") or {}).get("resourceVersion"), "annotations": {TAINTED_BY: run_id}},
            "spec": {"taints": taints}}


def untaint_patch(node: t.Mapping[str, t.Any], run_id: str) -> tuple[t.Optional[Obj], str]:
    """The patch that removes the taint this run (or, with ``run_id`` empty, any migration) added; a note otherwise."""
    by = ((node.get("metadata") or {}).get("annotations") or {}).get(TAINTED_BY)
    if not has_out_of_service(node):
        return None, "not marked out of service"
    if by is None:
        return None, "marked out of service, not by a migration: left as it is"
    if run_id and by != run_id:
        return None, "marked out of service by another run (%s): left as it is" % by
    taints = [taint for taint in (node.get("spec") or {}).get("taints") or [] if taint.get("key") != OUT_OF_SERVICE["key"]]
    return {"metadata": {"resourceVersion": (node.get("metadata") or {}).get("resourceVersion"), "annotations": {TAINTED_BY: None}},
            "spec": {"taints": taints or None}}, ""


class SourceReschedule:
    """The reads and the taint, over ``ordered_restore.Cluster`` (the source cluster's API)."""

    def __init__(self, cluster: Cluster, settings: RescheduleSettings, clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep) -> None:
        self.cluster, self.settings, self.clock, self.sleep = cluster, settings, clock, sleep

    def _get(self, path: str) -> t.Optional[Obj]:
        try:
            return self.cluster.request("GET", path)[1]
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def _items(self, path: str) -> list[Obj]:
        return list((self._get(path) or {}).get("items") or [])

    def node(self) -> t.Optional[Obj]:
        return self._get("/api/v1/nodes/" + quote(self.settings.failed_node, safe=""))

    def _patch_node(self, patch: Obj) -> None:
        self.cluster.request("PATCH", "/api/v1/nodes/" + quote(self.settings.failed_node, safe=""), [("fieldManager", FIELD_MANAGER)],
                             patch, MERGE_PATCH)

    def read(self, candidates: t.Sequence[Ref]) -> tuple[dict[Ref, Obj], list[Obj], list[Obj], list[Obj]]:
        """(live workloads, pods of their namespaces, nodes, jobs of their namespaces)."""
        workloads: dict[Ref, Obj] = {}
        pods: list[Obj] = []
        jobs: list[Obj] = []
        namespaces = sorted({ref[2] for ref in candidates if ref[2]})
        for ref in candidates:
            if ref[1] in _PATHS:
                version, plural = _PATHS[ref[1]]
                found = self._get("/apis/%s/namespaces/%s/%s/%s" % (version, quote(ref[2], safe=""), plural, quote(ref[3], safe="")))
                if found is not None:
                    workloads[ref] = found
        for namespace in namespaces:
            pods.extend(self._items("/api/v1/namespaces/%s/pods" % quote(namespace, safe="")))
            if any(ref[1] == "CronJob" and ref[2] == namespace for ref in candidates):
                jobs.extend(self._items("/apis/batch/v1/namespaces/%s/jobs" % quote(namespace, safe="")))
        return workloads, pods, self._items("/api/v1/nodes"), jobs

    def _on_node(self, pods: t.Sequence[t.Mapping[str, t.Any]]) -> list[t.Mapping[str, t.Any]]:
        return [p for p in pods if (p.get("spec") or {}).get("nodeName") == self.settings.failed_node and pod_alive(p)]

    def _settled(self, workloads: t.Mapping[Ref, Obj], pods: list[Obj], nodes: list[Obj], jobs: list[Obj]) -> bool:
        alive = live_nodes(nodes, self.settings.failed_node)
        return all(placement(ref[1], obj, pods, alive, selector_matches, jobs).unplaced == 0 for ref, obj in workloads.items())

    def observe(self, candidates: t.Sequence[Ref], owner_of: t.Callable[[t.Mapping[str, t.Any]], t.Optional[Ref]]) -> LiveState:
        """The live state after the source had its chance (see the module docstring).

        ``owner_of`` maps a live pod to the candidate workload it belongs to (or None).
        """
        notes: list[str] = []
        node = self.node()
        if node is None:
            raise MigrationError("Node %s is not in the source cluster any more" % self.settings.failed_node,
                                 "plan without the source (the share then comes from the backup), or give the node's name as it was")
        workloads, pods, nodes, jobs = self.read(candidates)
        before: dict[Ref, int] = {}
        for pod in self._on_node(pods):
            owner = owner_of(pod)
            if owner is not None:
                before[owner] = before.get(owner, 0) + 1
        if self.settings.check_mode:
            notes.append("check mode: nothing tainted, nothing waited for; the share is an estimate from the pods' state and the live "
                         "nodes' free capacity")
            return LiveState("estimate", workloads, pods, nodes, jobs, before, 0.0, notes)
        began = self.clock()
        if not self.settings.out_of_service:
            notes.append("node %s was not marked out of service (out_of_service=false)" % self.settings.failed_node)
        elif node_ready(node):
            notes.append("node %s is Ready: not marked out of service" % self.settings.failed_node)
        else:
            self._taint(node, notes)
        deadline = self.clock() + self.settings.drain_timeout
        while self._on_node([p for p in pods if owner_of(p) is not None]) and self.clock() < deadline:
            self.sleep(POLL)
            workloads, pods, nodes, jobs = self.read(candidates)
        left = [p for p in self._on_node(pods) if owner_of(p) is not None]
        if left:
            notes.append("%d pod%s still bound to %s after %.0f s (counted as not placed)" % (
                len(left), "" if len(left) == 1 else "s", self.settings.failed_node, self.settings.drain_timeout))
        deadline = self.clock() + self.settings.grace
        while not self._settled(workloads, pods, nodes, jobs) and self.clock() < deadline:
            self.sleep(POLL)
            workloads, pods, nodes, jobs = self.read(candidates)
        waited = round(self.clock() - began, 1)
        notes.append("the source had %.1f s to reschedule (grace %.0f s)" % (waited, self.settings.grace))
        return LiveState("source", workloads, pods, nodes, jobs, before, waited, notes)

    def _taint(self, node: Obj, notes: list[str]) -> None:
        for _attempt in range(3):
            patch = taint_patch(node, self.settings.run_id)
            if patch is None:
                notes.append("node %s is marked out of service already" % self.settings.failed_node)
                return
            try:
                self._patch_node(patch)
                notes.append("node %s marked out of service (%s=%s:%s): its pods are deleted and replaced now" % (
                    self.settings.failed_node, OUT_OF_SERVICE["key"], OUT_OF_SERVICE["value"], OUT_OF_SERVICE["effect"]))
                return
            except ApiError as err:
                if err.status != 409:
                    raise
            node = self.node() or node
        raise MigrationError("Node %s kept changing while it was being marked out of service" % self.settings.failed_node, "run again")

    def release(self) -> dict[str, t.Any]:
        """Remove the out-of-service taint this run added, once the node is Ready again."""
        node = self.node()
        if node is None:
            return {"name": self.settings.failed_node, "action": "absent", "note": "no such node"}
        if not node_ready(node):
            return {"name": self.settings.failed_node, "action": "unchanged", "note": "not Ready yet: the taint stays until it is"}
        patch, note = untaint_patch(node, self.settings.run_id)
        if patch is None:
            return {"name": self.settings.failed_node, "action": "unchanged", "note": note}
        if not self.settings.check_mode:
            self._patch_node(patch)
        return {"name": self.settings.failed_node, "action": "untainted"}


def observe_source(source: K8sSettings, settings: RescheduleSettings, objects: t.Sequence[t.Mapping[str, t.Any]],
                   options: PlanOptions) -> tuple[t.Optional[LiveState], str]:
    """(live state, "") when the source answers; (None, a warning) when it does not, so the share comes from the backup."""
    index = Index(objects)
    refs, owner_of = watch_list(index, settings.failed_node, options)
    try:
        cluster = Cluster(make_k8s_client(source), request_timeout=15, workers=1)
        return SourceReschedule(cluster, settings).observe(refs, owner_of), ""
    except MigrationError as err:
        if "Node %s is not in the source cluster" % settings.failed_node in err.problem:
            raise
        return None, "The source cluster did not answer (%s): the share of each workload is what the backup saw on %s" % (
            err.problem, settings.failed_node)
    except ApiError as err:
        if err.status != 0:
            raise MigrationError("The source cluster refused a request while deciding the shares: %s" % err,
                                 "the source kubeconfig needs get and list on nodes, pods and workloads and patch on nodes; "
                                 "fix it and run again (nothing was moved yet)") from err
        return None, "The source cluster did not answer (%s): the share of each workload is what the backup saw on %s" % (
            err, settings.failed_node)
