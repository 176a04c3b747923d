# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dead node's share of a workload: what moves to the target, what stays in the source, and why.

The scheduler spreads replicas over nodes, so a dead node usually ran only part of a workload.
The share is the part the source cannot run any more, decided from facts:

``source``
    The source API answered. The dead node was marked out of service (non-graceful node
    shutdown: its pods are force-deleted, so the controllers replace them at once) and the plan
    waited a short grace; replicas the source placed on a live node stay, the replacements it
    could not place (Pending, unschedulable) are the share.
``estimate``
    The same question in check mode, without tainting anything: the pods' state now and the
    live nodes' free capacity (requests against allocatable, taints, node selectors).
``backup``
    The source does not answer (site down): the share is what ran on the dead node, as the
    backup saw it.

Policies, per kind (``share_policy``) or per workload (``Kind/namespace/name`` key, or the
annotation ``migration.hybridcloud.io/share-policy`` on the workload): ``share`` (default) moves
the share, ``whole`` moves every replica (the source keeps none), ``skip`` moves nothing.

Rules by kind
    Deployments and ReplicaSets: the target runs the share; the source keeps the rest.
    StatefulSets move ordinals, through ``spec.ordinals.start``: a range at one end of the
    source's range can move (the target runs it, the source keeps the other end). Dead
    ordinals in the middle move with the smallest end range that covers them when the other
    ordinals of that range hold no node-local data (a tie takes the top end, the way a
    StatefulSet scales down); otherwise the StatefulSet is not split and stays, said so.
    Jobs and CronJobs cannot be split: they move whole when the source cannot run them.
    A bare pod has no controller to replace it: it always moves (unless ``skip``).
    HorizontalPodAutoscalers are split with their workload (``hpa_split``).
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

POLICIES = ("share", "whole", "skip")
BASES = ("source", "estimate", "backup")
REPLICA_SHARE_KINDS = ("Deployment", "ReplicaSet")
WHOLE_KINDS = ("Job", "CronJob")


@dataclasses.dataclass(frozen=True)
class Share:
    """One workload's share. ``moves`` 0 means it stays in the source."""

    kind: str
    policy: str  # share, whole, skip
    basis: str  # source, estimate, backup
    moves: int  # replicas (ordinals) the target runs; Job, CronJob and Pod: 1 when it moves
    of: int  # replicas the workload has
    why: str
    ordinals_start: t.Optional[int] = None  # StatefulSet: first ordinal the target runs
    source_replicas: t.Optional[int] = None  # what the source keeps (replicas); None: not scaled there
    source_ordinals_start: t.Optional[int] = None  # StatefulSet: the source's first ordinal afterwards

    @property
    def stays(self) -> int:
        return max(0, self.of - self.moves) if self.kind not in WHOLE_KINDS + ("Pod",) else 0

    @property
    def partial(self) -> bool:
        return 0 < self.moves < self.of and self.kind not in WHOLE_KINDS + ("Pod",)

    def to_dict(self) -> dict[str, t.Any]:
        found: dict[str, t.Any] = {"policy": self.policy, "basis": self.basis, "moves": self.moves, "of": self.of,
                                   "stays": self.stays, "why": self.why}
        if self.ordinals_start is not None:
            found["ordinals"] = {"start": self.ordinals_start, "count": self.moves}
        if self.source_replicas is not None:
            found["source"] = {"replicas": self.source_replicas}
            if self.source_ordinals_start is not None:
                found["source"]["ordinals_start"] = self.source_ordinals_start
        return found


def check_policy(value: t.Any, where: str) -> str:
    """``value`` as a policy name, or the error naming the choices."""
    policy = str(value or "").strip().lower()
    if policy not in POLICIES:
        raise MigrationError("%s: share policy %r does not exist" % (where, value), "use one of %s" % ", ".join(POLICIES))
    return policy


def check_policies(policies: t.Mapping[str, t.Any]) -> dict[str, str]:
    """The ``share_policy`` option checked: keys are a kind or ``Kind/namespace/name``."""
    checked = {}
    for key, value in policies.items():
        parts = str(key).split("/")
        if not parts[0] or len(parts) not in (1, 3) or not all(parts):
            raise MigrationError("share_policy key %r names neither a kind nor a workload" % (key,),
                                 "write a kind (StatefulSet) or Kind/namespace/name (StatefulSet/shop/db)")
        checked[str(key)] = check_policy(value, "share_policy %s" % key)
    return checked


def policy_for(kind: str, namespace: str, name: str, annotation: t.Optional[str], policies: t.Mapping[str, str]) -> tuple[str, str]:
    """(policy, where it came from): the option for the workload, its annotation, the option for its kind, ``share``."""
    own = "%s/%s/%s" % (kind, namespace, name)
    if own in policies:
        return policies[own], "share_policy %s" % own
    if annotation is not None:
        return check_policy(annotation, "%s annotation" % own), "its annotation"
    if kind in policies:
        return policies[kind], "share_policy %s" % kind
    return "share", "default"


def _basis_text(basis: str) -> str:
    return {"source": "the source could not place them after the grace",
            "estimate": "estimated from the source's free capacity now (check mode)",
            "backup": "the source does not answer: what the backup saw on the node"}[basis]


def replica_share(kind: str, policy: str, basis: str, desired: int, on_node: int, unplaced: int, node: str) -> Share:
    """Deployment or ReplicaSet: ``on_node`` replicas ran on the dead node, ``unplaced`` the source cannot run now.

    ``unplaced`` is ignored for ``backup`` (then the share is ``on_node``). The share never exceeds
    what the node ran: replicas already Pending before the failure are not the node's.
    """
    if policy == "whole":
        return Share(kind, policy, basis, desired, desired, "policy whole: all %d replicas move, the source keeps none" % desired,
                     source_replicas=0)
    lost = on_node if basis == "backup" else min(on_node, unplaced)
    moves = max(0, min(desired, lost))
    if moves == 0:
        return Share(kind, policy, basis, 0, desired, "the source placed the %d replica%s %s ran on its live nodes: it stays there"
                     % (on_node, "" if on_node == 1 else "s", node))
    lost_text = ("%s lost" % ("was" if on_node == 1 else "were")) if basis == "backup" else "%d found no room" % moves
    why = "%d of its %d replicas ran on %s and %s (%s): %d move%s, %d stay%s in the source" % (
        on_node, desired, node, lost_text, _basis_text(basis), moves, "s" if moves == 1 else "", desired - moves,
        "s" if desired - moves == 1 else "")
    return Share(kind, policy, basis, moves, desired, why, source_replicas=desired - moves)


def ordinal_share(policy: str, basis: str, desired: int, start: int, dead: t.Iterable[int], local_elsewhere: t.Iterable[int],
                  node: str) -> Share:
    """StatefulSet: the ``dead`` ordinals (in ``start .. start+desired-1``) and those holding local data on live nodes."""
    lo, hi = start, start + desired - 1
    dead_set = sorted({o for o in dead if lo <= o <= hi})
    pinned = sorted({o for o in local_elsewhere if lo <= o <= hi and o not in dead_set})
    kind = "StatefulSet"
    if policy == "whole":
        if pinned:
            why_not = ("policy whole, but ordinal%s %s hold%s local data on live nodes, which no backup of %s has: "
                       % ("" if len(pinned) == 1 else "s", _ordinals(pinned), "s" if len(pinned) == 1 else "", node))
            return _ordinal_range(basis, desired, start, dead_set, pinned, node, policy, why_not)
        return Share(kind, policy, basis, desired, desired, "policy whole: ordinals %s move, the source keeps none" % _ordinals(range(lo, hi + 1)),
                     ordinals_start=lo, source_replicas=0)
    return _ordinal_range(basis, desired, start, dead_set, pinned, node, policy, "")


def _ordinal_range(basis: str, desired: int, start: int, dead: list[int], pinned: list[int], node: str, policy: str, prefix: str) -> Share:
    lo, hi = start, start + desired - 1
    kind = "StatefulSet"
    if not dead:
        return Share(kind, policy, basis, 0, desired, prefix + "the source runs every ordinal of %s again (none was left on %s): it stays"
                     % (_ordinals(range(lo, hi + 1)), node))
    top, bottom = (dead[0], hi), (lo, dead[-1])
    if desired == 1:
        ran = "its one ordinal, %d, ran on %s (%s)" % (lo, node, _basis_text(basis))
    else:
        ran = "ordinal%s %s of %s ran on %s (%s)" % ("" if len(dead) == 1 else "s", _ordinals(dead), _ordinals(range(lo, hi + 1)), node,
                                                     _basis_text(basis))
    if len(dead) == desired:  # every ordinal
        return Share(kind, policy, basis, desired, desired, prefix + ran + ": all move, the source keeps none", ordinals_start=lo, source_replicas=0)
    choices = []
    for first, last in (top, bottom):
        extra = [o for o in range(first, last + 1) if o not in dead]
        if not [o for o in extra if o in pinned]:
            choices.append((last - first, 0 if (first, last) == top else 1, first, last, extra))
    if not choices:
        return Share(kind, policy, basis, 0, desired, prefix + ran + ": spec.ordinals can move a range only at one end, and "
                     "the smallest end range that covers them (%s or %s) holds local data of live ordinals on other nodes; not split, "
                     "it stays in the source (the dead ordinals wait for %s)" % (_ordinals(range(*_incl(top))), _ordinals(range(*_incl(bottom))), node))
    _size, which, first, last, extra = min(choices)
    moves = last - first + 1
    why = prefix + ran + ": ordinals %s move" % _ordinals(range(first, last + 1))
    if extra:
        why += " (spec.ordinals moves a range at one end: %s %s with them, holding no node-local data)" % (
            _ordinals(extra), "comes" if len(extra) == 1 else "come")
    if which == 0:
        why += ", the source keeps %s" % _ordinals(range(lo, first))
        return Share(kind, policy, basis, moves, desired, why, ordinals_start=first, source_replicas=desired - moves, source_ordinals_start=lo)
    why += ", the source keeps %s (spec.ordinals.start %d)" % (_ordinals(range(last + 1, hi + 1)), last + 1)
    return Share(kind, policy, basis, moves, desired, why, ordinals_start=first, source_replicas=desired - moves,
                 source_ordinals_start=last + 1)


def _incl(bounds: tuple[int, int]) -> tuple[int, int]:
    return bounds[0], bounds[1] + 1


def _ordinals(values: t.Iterable[int]) -> str:
    found = sorted(set(values))
    if not found:
        return "none"
    if len(found) > 1 and found == list(range(found[0], found[-1] + 1)):
        return "%d..%d" % (found[0], found[-1])
    return ", ".join(str(v) for v in found)


def whole_share(kind: str, policy: str, basis: str, unplaced: int, placed_elsewhere: int, node: str) -> Share:
    """Job or CronJob: moves whole when the source cannot run it (its pods are lost and none runs elsewhere)."""
    if policy == "whole":
        return Share(kind, policy, basis, 1, 1, "policy whole: it moves; the source's copy is suspended", source_replicas=0)
    if placed_elsewhere:
        return Share(kind, policy, basis, 0, 1, "a %s cannot be split and %d of its pods run on live nodes: it stays in the source"
                     % (kind, placed_elsewhere))
    if basis != "backup" and unplaced == 0:
        return Share(kind, policy, basis, 0, 1, "the source placed its pods from %s on live nodes: it stays there" % node)
    return Share(kind, policy, basis, 1, 1, "its pods ran on %s (%s): it moves whole, the source's copy is suspended" % (node, _basis_text(basis)),
                 source_replicas=0)


def pod_share(policy: str, basis: str, node: str) -> Share:
    """A bare pod: nothing recreates it in the source, so it moves."""
    return Share("Pod", policy, basis, 1, 1, "a bare pod on %s: no controller recreates it in the source, so it moves" % node)


def skipped_share(kind: str, basis: str, desired: int, source: str) -> Share:
    return Share(kind, "skip", basis, 0, desired, "share policy skip (%s): it stays in the source" % source)


def hpa_split(min_replicas: int, max_replicas: int, moves: int, of: int) -> dict[str, dict[str, int]]:
    """min/max of the target's and the source's HorizontalPodAutoscaler for a share ``moves`` of ``of``.

    The target gets its part of each bound, rounded up and at least 1; the source keeps the rest,
    at least 1 (an autoscaler's minimum cannot be 0), so together they may run one more at the floor.
    """
    if of <= 0 or moves >= of:
        return {"target": {"minReplicas": min_replicas, "maxReplicas": max_replicas}, "source": {}}
    target_min = max(1, math.ceil(min_replicas * moves / of))
    target_max = max(target_min, math.ceil(max_replicas * moves / of))
    source_min = max(1, min_replicas - target_min)
    source_max = max(source_min, max_replicas - target_max)
    return {"target": {"minReplicas": target_min, "maxReplicas": target_max},
            "source": {"minReplicas": source_min, "maxReplicas": source_max}}


HPA_RULE = ("the target's autoscaler gets its share of minReplicas and maxReplicas (rounded up, at least 1), "
            "the source's keeps the rest (at least 1)")
