# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the source cluster's API says now about the dead node's workloads (plain functions over live objects).

``LiveState`` is what ``source_reschedule`` read after the source had its chance to reschedule
(or, in check mode, without touching anything). ``placement`` tells, for one workload, how many
replicas run on live nodes and which the source could not place; ``estimate_unplaced`` answers
the same question for check mode from the nodes' free capacity: requests against allocatable,
taints, node selectors and required node affinity, and local volumes pinned to the dead node.
Inter-pod affinity and topology spread are not modelled: the estimate can only be optimistic
there, and says it is an estimate.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

Obj = t.Dict[str, t.Any]
Ref = t.Tuple[str, str, str, str]

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}
_TAINT_EFFECTS = ("NoSchedule", "NoExecute")


@dataclasses.dataclass
class LiveState:
    """The source cluster as read after the grace (basis ``source``) or without waiting (``estimate``)."""

    basis: str
    workloads: dict[Ref, Obj]  # live Deployments, ReplicaSets, StatefulSets, Jobs, CronJobs, HPAs of the candidates
    pods: list[Obj]  # live pods of the candidates' namespaces
    nodes: list[Obj]
    jobs: list[Obj] = dataclasses.field(default_factory=list)  # live Jobs of the namespaces of CronJob candidates
    on_node_before: dict[Ref, int] = dataclasses.field(default_factory=dict)  # workload -> pods bound to the dead node at first look
    waited_seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Placement:
    desired: int
    placed: dict[str, int]  # live node -> replicas there
    unplaced: int  # replicas the source does not run on a live node
    dead_ordinals: list[int] = dataclasses.field(default_factory=list)  # StatefulSet
    start: int = 0  # StatefulSet: spec.ordinals.start


def _meta(obj: t.Mapping[str, t.Any]) -> t.Mapping[str, t.Any]:
    return obj.get("metadata") or {}


def quantity(value: t.Any) -> float:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``3``) as a number; 0 when unreadable."""
    match = _QUANTITY.match(str(value if value is not None else "").strip())
    if not match or match.group(2) not in _SUFFIX:
        return 0.0
    try:
        return float(match.group(1)) * _SUFFIX[match.group(2)]
    except ValueError:
        return 0.0


def node_ready(node: t.Mapping[str, t.Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def live_nodes(nodes: t.Iterable[t.Mapping[str, t.Any]], failed_node: str) -> set[str]:
    """Nodes that run pods: Ready, and not the dead one."""
    return {str(_meta(n).get("name")) for n in nodes if node_ready(n) and _meta(n).get("name") != failed_node}


def pod_alive(pod: t.Mapping[str, t.Any]) -> bool:
    """Counts as a replica: not finished and not being deleted."""
    return not _meta(pod).get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _replicas(obj: t.Mapping[str, t.Any]) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def placement(kind: str, workload: t.Mapping[str, t.Any], pods: t.Sequence[t.Mapping[str, t.Any]], alive_nodes: t.Collection[str],
              selector_matches: t.Callable[[t.Any, t.Mapping[str, str]], bool],
              jobs: t.Sequence[t.Mapping[str, t.Any]] = ()) -> Placement:
    """Where the source runs ``workload`` now (``pods``: live pods of its namespace)."""
    name = str(_meta(workload).get("name") or "")
    namespace = _meta(workload).get("namespace")
    spec = workload.get("spec") or {}
    own = [p for p in pods if _meta(p).get("namespace") == namespace and pod_alive(p)]
    if kind == "StatefulSet":
        start = int(((spec.get("ordinals") or {}).get("start")) or 0)
        desired = _replicas(workload)
        by_name = {str(_meta(p).get("name")): p for p in own}
        placed: dict[str, int] = {}
        dead = []
        for ordinal in range(start, start + desired):
            pod = by_name.get("%s-%d" % (name, ordinal))
            where = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
            if pod is not None and where in alive_nodes:
                placed[where] = placed.get(where, 0) + 1
            else:
                dead.append(ordinal)
        return Placement(desired, placed, len(dead), dead, start)
    if kind == "CronJob":
        job_names = {str(_meta(j).get("name")) for j in jobs if _meta(j).get("namespace") == namespace and any(
            o.get("kind") == "CronJob" and o.get("name") == name for o in _meta(j).get("ownerReferences") or [])}
        mine = [p for p in own if any(o.get("kind") == "Job" and o.get("name") in job_names for o in _meta(p).get("ownerReferences") or [])]
        desired = len(mine)
    else:
        selector = spec.get("selector")
        mine = [p for p in own if selector_matches(selector, _meta(p).get("labels") or {})]
        desired = _replicas(workload) if kind in ("Deployment", "ReplicaSet") else len(mine)
    placed = {}
    for pod in mine:
        where = str((pod.get("spec") or {}).get("nodeName") or "")
        if where in alive_nodes:
            placed[where] = placed.get(where, 0) + 1
    unplaced = max(0, desired - sum(placed.values())) if kind in ("Deployment", "ReplicaSet") else len(mine) - sum(placed.values())
    return Placement(desired, placed, unplaced)


# -- the capacity estimate (check mode) ------------------------------------------------------------


def requests_of(spec: t.Mapping[str, t.Any]) -> dict[str, float]:
    """A pod's effective requests: the sum of its containers, or its largest init container when more."""
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for key, value in (((container.get("resources") or {}).get("requests")) or {}).items():
            total[key] = total.get(key, 0.0) + quantity(value)
    for container in spec.get("initContainers") or []:
        for key, value in (((container.get("resources") or {}).get("requests")) or {}).items():
            total[key] = max(total.get(key, 0.0), quantity(value))
    total["pods"] = 1.0
    return total


def _tolerates(spec: t.Mapping[str, t.Any], taint: t.Mapping[str, t.Any]) -> bool:
    for toleration in spec.get("tolerations") or []:
        if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and (not toleration.get("key") or toleration.get("key") == taint.get("key")):
            return True
        if toleration.get("key") == taint.get("key") and str(toleration.get("value") or "") == str(taint.get("value") or ""):
            return True
    return False


def _expression_matches(expr: t.Mapping[str, t.Any], labels: t.Mapping[str, str]) -> bool:
    key, operator, values = expr.get("key"), expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and values:
        try:
            return int(labels[key]) > int(values[0]) if operator == "Gt" else int(labels[key]) < int(values[0])
        except ValueError:
            return False
    return False


def fits_node(spec: t.Mapping[str, t.Any], node: t.Mapping[str, t.Any]) -> bool:
    """The scheduler's filters the estimate models: unschedulable, taints, node selector, required node affinity."""
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        return False
    for taint in node_spec.get("taints") or []:
        if taint.get("effect") in _TAINT_EFFECTS and not _tolerates(spec, taint):
            return False
    labels = _meta(node).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_expression_matches(e, labels) for e in term.get("matchExpressions") or []) for term in terms):
        return False
    return True


def free_capacity(nodes: t.Iterable[t.Mapping[str, t.Any]], pods: t.Iterable[t.Mapping[str, t.Any]], alive: t.Collection[str]) -> dict[str, dict[str, float]]:
    """Live node -> allocatable minus the requests of the pods bound to it."""
    free = {}
    for node in nodes:
        name = str(_meta(node).get("name"))
        if name in alive:
            free[name] = {k: quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    for pod in pods:
        where = str((pod.get("spec") or {}).get("nodeName") or "")
        if where in free and pod_alive(pod):
            for key, value in requests_of(pod.get("spec") or {}).items():
                free[where][key] = free[where].get(key, 0.0) - value
    return free


def estimate_unplaced(replacements: t.Sequence[tuple[t.Mapping[str, t.Any], bool]], nodes: t.Sequence[t.Mapping[str, t.Any]],
                      free: dict[str, dict[str, float]]) -> int:
    """How many of ``replacements`` ((pod spec, pinned to the dead node)) find no room; ``free`` is used up as they are placed."""
    by_name = {str(_meta(n).get("name")): n for n in nodes}
    unplaced = 0
    for spec, pinned in replacements:
        wanted = requests_of(spec)
        home = None
        if not pinned:
            for name in sorted(free):
                room = free[name]
                if fits_node(spec, by_name[name]) and all(room[k] >= v for k, v in wanted.items() if k in room and v > 0):
                    home = name
                    break
        if home is None:
            unplaced += 1
            continue
        for key, value in wanted.items():
            free[home][key] = free[home].get(key, 0.0) - value
    return unplaced
