# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan's selection: which of a dead node's workloads move, and which stay (``skipped``, with the reason).

Selection
    Pods bound to the node (``spec.nodeName``) lead to the workload that owns them, following the
    controller owner references: ReplicaSet -> Deployment, StatefulSet, Job -> CronJob, or the pod
    itself when it has no owner. Left out, each with its reason in ``skipped``: DaemonSets (they
    run on every node already), static pods (mirror pods: annotation ``kubernetes.io/config.mirror``
    or owner kind Node), pods in ``exclude_namespaces`` (by default the system namespaces and
    ``velero``: the target runs its own), pods that had already finished, pods run by a custom controller
    unless ``include_custom`` names its resource. Every other workload gets its share
    (``plan.share``, decided by ``plan.decide``): the part the source cannot run any more. A
    workload whose share is 0 (the source placed its replicas on live nodes, or policy ``skip``)
    stays, with the reason; the rest move with their share in ``selected[].share``. The objects
    of a moved workload that do not move themselves (its ReplicaSets, its pods, its Jobs, its
    pods on live nodes) are listed in ``left_out`` with the reason. Pods of other nodes are never
    touched.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    DAEMON_SET,
    DEPLOYMENT,
    JOB,
    MIRROR_ANNOTATION,
    POD,
    REPLICA_SET,
    WORKLOAD_RANK,
    Obj,
    Ref,
    controller_ref,
    group_of,
    labels,
    meta,
    pod_active,
    ref_of,
    show,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import CustomRef, PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.decide import Decider
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.share import Share


@dataclasses.dataclass
class _Owner:
    """What a pod belongs to, after following its controller references."""

    outcome: str  # workload, custom, daemonset, mirror, missing
    ref: Ref  # the workload (or the pod itself for a bare pod), the DaemonSet, the missing owner, ...
    custom_owners: tuple[Ref, ...] = ()  # custom resources above the workload
    chain: tuple[Ref, ...] = ()  # every owner from the pod up
    note: str = ""


def _resolve(pod: Obj, index: Index, cache: dict[tuple[str, str, str, str], _Owner]) -> _Owner:
    metadata = meta(pod)
    namespace = metadata.get("namespace") or ""
    pod_ref = ref_of(pod)
    if MIRROR_ANNOTATION in (metadata.get("annotations") or {}):
        return _Owner("mirror", pod_ref)
    owner_ref = controller_ref(pod)
    if owner_ref is None:
        return _Owner("workload", pod_ref)
    if owner_ref.get("kind") == "Node":
        return _Owner("mirror", pod_ref)
    key = (owner_ref.get("apiVersion") or "", owner_ref.get("kind") or "", namespace, owner_ref.get("name") or "")
    if key not in cache:
        cache[key] = _resolve_owner(owner_ref, namespace, labels(pod).get("pod-template-hash", ""), index)
    return cache[key]


def _resolve_owner(owner_ref: t.Mapping[str, t.Any], namespace: str, template_hash: str, index: Index) -> _Owner:
    chain: list[Ref] = []
    current: t.Optional[t.Mapping[str, t.Any]] = owner_ref
    while current is not None and len(chain) < 16:
        gk = (group_of(current.get("apiVersion") or ""), current.get("kind") or "")
        wanted: Ref = (gk[0], gk[1], namespace, current.get("name") or "")
        if gk == DAEMON_SET:
            return _Owner("daemonset", wanted, chain=tuple(chain + [wanted]))
        obj = index.owner(current, namespace)
        if obj is None and gk == REPLICA_SET and template_hash and wanted[3].endswith("-" + template_hash):
            # The ReplicaSet is gone from the backup; its Deployment is named by the pod-template-hash.
            obj = index.get(DEPLOYMENT, namespace, wanted[3][: -len(template_hash) - 1])
        if obj is None:
            return _Owner("missing", wanted, chain=tuple(chain), note="%s is not in the backup" % show(wanted))
        chain.append(ref_of(obj))
        current = controller_ref(obj)
    workloads = [i for i, ref in enumerate(chain) if (ref[0], ref[1]) in WORKLOAD_RANK]
    if not workloads:
        return _Owner("custom", chain[-1], chain=tuple(chain))
    top = max(workloads, key=lambda i: (WORKLOAD_RANK[(chain[i][0], chain[i][1])], i))
    custom = tuple(ref for ref in chain if index.is_custom((ref[0], ref[1])))
    return _Owner("workload", chain[top], custom_owners=custom, chain=tuple(chain))


@dataclasses.dataclass
class _Candidate:
    owner: _Owner
    on_node: list[Obj] = dataclasses.field(default_factory=list)
    elsewhere: dict[str, int] = dataclasses.field(default_factory=dict)  # node -> active pods
    other_pods: list[Obj] = dataclasses.field(default_factory=list)  # its active pods on other nodes
    movable: bool = False  # a workload of the node that the share decides (not a DaemonSet, mirror, excluded or finished)


@dataclasses.dataclass
class Selection:
    workloads: dict[Ref, _Candidate]  # selected workloads (builtin, bare pods, custom resources)
    custom_owners: set[Ref]
    selected: list[dict[str, t.Any]]
    skipped: list[dict[str, t.Any]]
    shares: dict[Ref, Share]  # the share of each selected builtin workload
    left_out: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)  # related objects that do not move, with the reason


def _entry(ref: Ref, index: Index, reason: str, **extra: t.Any) -> dict[str, t.Any]:
    obj = index.by_ref.get(ref)
    api_version = (obj or {}).get("apiVersion") or ("%s/v1" % ref[0] if ref[0] else "v1")
    return dict({"kind": ref[1], "api_version": api_version, "namespace": ref[2], "name": ref[3], "reason": reason}, **extra)


def _pod_list(pods: t.Sequence[Obj]) -> str:
    names = sorted("%s/%s" % (meta(p).get("namespace"), meta(p).get("name")) for p in pods)
    shown = ", ".join(names[:5]) + (" and %d more" % (len(names) - 5) if len(names) > 5 else "")
    return ("pod " if len(names) == 1 else "pods ") + shown


class Owners:
    """The workload a pod belongs to, by its controller references in the backup (cached)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.cache: dict[tuple[str, str, str, str], _Owner] = {}

    def of(self, pod: Obj) -> _Owner:
        return _resolve(pod, self.index, self.cache)


def candidates(index: Index, node: str, options: PlanOptions) -> dict[Ref, _Candidate]:
    """The workloads that had pods on ``node`` (every outcome), with their pods there and elsewhere."""
    owners = Owners(index)
    found: dict[Ref, _Candidate] = {}
    pods = index.kind(POD)
    for pod in pods:
        bound = (pod.get("spec") or {}).get("nodeName") or ""
        if bound == node:
            owner = owners.of(pod)
            found.setdefault(owner.ref, _Candidate(owner)).on_node.append(pod)
    for pod in pods:  # a second pass: the same workloads' running pods on other nodes
        bound = (pod.get("spec") or {}).get("nodeName") or ""
        if bound and bound != node and pod_active(pod) and controller_ref(pod) is not None:
            owner = owners.of(pod)
            if owner.ref in found:
                elsewhere = found[owner.ref].elsewhere
                elsewhere[bound] = elsewhere.get(bound, 0) + 1
                found[owner.ref].other_pods.append(pod)
    excluded = set(options.exclude_namespaces)
    for cand in found.values():
        cand.movable = cand.owner.outcome == "workload" and cand.owner.ref[2] not in excluded and any(pod_active(p) for p in cand.on_node)
    return found


def watch_list(index: Index, node: str, options: PlanOptions) -> tuple[list[Ref], t.Callable[[t.Mapping[str, t.Any]], t.Optional[Ref]]]:
    """What the live source must be asked about: the workloads whose share is decided, and a pod -> workload map."""
    found = candidates(index, node, options)
    wanted = sorted(ref for ref, cand in found.items() if cand.movable)
    owners = Owners(index)

    def owner_of(pod: t.Mapping[str, t.Any]) -> t.Optional[Ref]:
        owner = owners.of(t.cast(Obj, pod))
        return owner.ref if owner.outcome == "workload" and owner.ref in found and found[owner.ref].movable else None

    return wanted, owner_of


def select(index: Index, node: str, options: PlanOptions, include_custom: list[CustomRef], decider: Decider) -> Selection:
    excluded = set(options.exclude_namespaces)
    found = candidates(index, node, options)
    selection = Selection({}, set(), [], [], {})
    for ref in sorted(found):
        cand = found[ref]
        owner, active = cand.owner, [p for p in cand.on_node if pod_active(p)]
        pods_text = "%s on %s" % (_pod_list(cand.on_node), node)
        names = sorted(meta(p).get("name") for p in cand.on_node)
        if owner.outcome == "mirror":
            selection.skipped.append(_entry(ref, index, "static pod (mirror of a manifest file on %s): the kubelet runs it from that "
                                                        "file, the target node runs its own static pods" % node))
            continue
        if owner.outcome == "daemonset":
            selection.skipped.append(_entry(ref, index, "DaemonSet: runs on every node already (%s)" % pods_text))
            continue
        if ref[2] in excluded:
            selection.skipped.append(_entry(ref, index, "namespace %s is excluded (exclude_namespaces): the target cluster runs its "
                                                        "own system workloads (%s)" % (ref[2], pods_text)))
            continue
        if owner.outcome == "missing":
            selection.skipped.append(_entry(ref, index, "owner of %s, but %s: cannot recreate what is not backed up"
                                            % (pods_text, owner.note)))
            continue
        if not active:
            phases = sorted({(p.get("status") or {}).get("phase") or "" for p in cand.on_node})
            selection.skipped.append(_entry(ref, index, "its %s had already finished (%s) before the node failed"
                                            % (pods_text, ", ".join(phases))))
            continue
        if owner.outcome == "custom":
            wanted = [r for r in owner.chain if any(c.matches(index.by_ref[r]) for c in include_custom)]
            if not wanted:
                selection.skipped.append(_entry(ref, index, "managed by a custom controller (%s); list it in include_custom to move "
                                                            "it (%s)" % (show(ref), pods_text)))
                continue
            top = wanted[-1]
            selection.workloads[top] = cand
            selection.selected.append(_entry(top, index, "include_custom; its controller ran %s" % pods_text,
                                             pods=names, target_namespace=map_ns(options, top[2])))
            continue
        gk = (ref[0], ref[1])
        if gk == JOB and _job_finished(index.by_ref.get(ref)):
            selection.skipped.append(_entry(ref, index, "Job already finished"))
            continue
        share = decider.decide(ref, cand.on_node, cand.elsewhere)
        if share.moves == 0:
            selection.skipped.append(_entry(ref, index, share.why, share=share.to_dict()))
            continue
        reason = ("bare pod (no controller) on %s" % node) if gk == POD else "owns %s" % pods_text
        selection.workloads[ref] = cand
        selection.shares[ref] = share
        selection.custom_owners.update(owner.custom_owners)
        selection.selected.append(_entry(ref, index, reason, pods=names, target_namespace=map_ns(options, ref[2]), share=share.to_dict()))
        for middle in owner.chain:
            if (middle[0], middle[1]) == JOB and middle != ref:
                selection.left_out.append(_entry(middle, index, "created by %s, which moves (suspended until scale-up); its next run "
                                                                "starts in the target" % show(ref), workload=show(ref)))
        _left_out_of(selection, index, ref, cand, share)
    for custom in include_custom:  # include_custom entries that run no pod on the node still move
        for obj in index.by_kind_name.get((custom.kind, custom.namespace, custom.name), []):
            if custom.matches(obj) and ref_of(obj) not in selection.workloads:
                selection.custom_owners.add(ref_of(obj))
    for entries in (selection.selected, selection.skipped, selection.left_out):
        entries.sort(key=lambda e: (e["namespace"], e["kind"], e["name"]))
    return selection


def _left_out_of(selection: Selection, index: Index, ref: Ref, cand: _Candidate, share: Share) -> None:
    """The moved workload's own objects that do not move: its pods and ReplicaSets, and its pods that stay on live nodes."""
    workload = show(ref)
    for middle in cand.owner.chain:
        if (middle[0], middle[1]) == REPLICA_SET and middle != ref:
            selection.left_out.append(_entry(middle, index, "owned by %s: its controller makes a new one in the target" % workload,
                                             workload=workload))
    for pod in cand.on_node:
        if ref[1] != "Pod":
            selection.left_out.append(_entry(ref_of(pod), index, "pod of %s on the dead node: its controller starts the moved share anew "
                                                                 "in the target" % workload, workload=workload))
    for pod in cand.other_pods:
        selection.left_out.append(_entry(ref_of(pod), index, "pod of %s on %s, a live node: it stays with the share the source keeps"
                                         % (workload, (pod.get("spec") or {}).get("nodeName")), workload=workload))


def _job_finished(job: t.Optional[t.Mapping[str, t.Any]]) -> bool:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def map_ns(options: PlanOptions, namespace: str) -> str:
    return options.namespace_map.get(namespace, namespace) if namespace else namespace
