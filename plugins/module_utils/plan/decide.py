# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each candidate workload's share, from the facts at hand: the live source (``plan.live``) or the backup.

``Decider`` holds what every decision reads once: the policies, the live state and, for the
check-mode estimate, the live nodes' free capacity (used up as replacements are placed, in the
plan's order, so two workloads do not count the same free room twice). The rules themselves
are in ``plan.share``.
"""

from __future__ import annotations

import re
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan import live as live_facts
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan import share as rules
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    HOSTNAME_LABEL,
    PREFIX,
    PV,
    PVC,
    Obj,
    Ref,
    meta,
    pod_active,
    selector_matches,
)

POLICY_ANNOTATION = PREFIX + "share-policy"


def _replicas(obj: t.Optional[t.Mapping[str, t.Any]]) -> int:
    value = ((obj or {}).get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _ordinal(pod_name: str, workload: str) -> t.Optional[int]:
    match = re.match(r"^%s-(\d+)$" % re.escape(workload), pod_name)
    return int(match.group(1)) if match else None


def _pv_nodes(pv: t.Mapping[str, t.Any]) -> set[str]:
    """The nodes a local PersistentVolume is pinned to (kubernetes.io/hostname In ...)."""
    found: set[str] = set()
    if not ((pv.get("spec") or {}).get("local") or (pv.get("spec") or {}).get("hostPath")):
        return found
    terms = ((((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In":
                found.update(str(v) for v in expr.get("values") or [])
    return found


class Decider:
    """Shares of the dead node's workloads (see the module docstring)."""

    def __init__(self, index: Index, node: str, policies: t.Mapping[str, str], live: t.Optional[live_facts.LiveState]) -> None:
        self.index, self.node, self.policies, self.live = index, node, policies, live
        self.alive: set[str] = live_facts.live_nodes(live.nodes, node) if live else set()
        self.free = live_facts.free_capacity(live.nodes, live.pods, self.alive) if live and live.basis == "estimate" else {}

    # -- facts from the backup -----------------------------------------------------------------
    def claim_nodes(self, namespace: str, claim: str) -> set[str]:
        """Nodes the claim's local volume is pinned to (empty: not node-local)."""
        pvc = self.index.get(PVC, namespace, claim)
        pv = self.index.get(PV, "", ((pvc or {}).get("spec") or {}).get("volumeName") or "") if pvc else None
        if pv is None:
            for candidate in self.index.kind(PV):
                ref = (candidate.get("spec") or {}).get("claimRef") or {}
                if ref.get("namespace") == namespace and ref.get("name") == claim:
                    pv = candidate
                    break
        return _pv_nodes(pv) if pv is not None else set()

    def ordinal_claims(self, sts: t.Mapping[str, t.Any], ordinal: int) -> list[str]:
        name = str(meta(sts).get("name"))
        return ["%s-%s-%d" % (meta(t_).get("name"), name, ordinal) for t_ in (sts.get("spec") or {}).get("volumeClaimTemplates") or []]

    def pinned_here(self, namespace: str, spec: t.Mapping[str, t.Any], claims: t.Iterable[str] = ()) -> bool:
        """Whether a pod (spec, or a StatefulSet ordinal's claims) can only run on the dead node: a local volume there."""
        names = list(claims) + [str((v.get("persistentVolumeClaim") or {}).get("claimName")) for v in spec.get("volumes") or []
                                if (v.get("persistentVolumeClaim") or {}).get("claimName")]
        return any(self.node in self.claim_nodes(namespace, claim) for claim in names)

    # -- the decision --------------------------------------------------------------------------
    def decide(self, ref: Ref, on_node: t.Sequence[Obj], elsewhere: t.Mapping[str, int]) -> rules.Share:
        kind, namespace, name = ref[1], ref[2], ref[3]
        backed_up = self.index.by_ref.get(ref)
        live_obj = self.live.workloads.get(ref) if self.live else None
        basis = self.live.basis if self.live else "backup"
        annotation = ((meta(live_obj or backed_up or {}).get("annotations")) or {}).get(POLICY_ANNOTATION)
        policy, source = rules.policy_for(kind, namespace, name, annotation, self.policies)
        active = [p for p in on_node if pod_active(p)]
        if kind == "Pod":
            return rules.skipped_share(kind, basis, 1, source) if policy == "skip" else rules.pod_share(policy, basis, self.node)
        if self.live and live_obj is None:
            return rules.Share(kind, policy, basis, 0, 0, "it is not in the source cluster any more (deleted since the backup): "
                                                          "it is not brought back")
        obj = live_obj or backed_up or {}
        desired = _replicas(obj) if kind in rules.REPLICA_SHARE_KINDS + ("StatefulSet",) else 1
        if policy == "skip":
            return rules.skipped_share(kind, basis, desired, source)
        count = (self.live.on_node_before.get(ref) if self.live else None) or len(active)
        if kind in rules.REPLICA_SHARE_KINDS:
            unplaced = self._unplaced(kind, obj, namespace) if self.live else 0
            return rules.replica_share(kind, policy, basis, desired, count, unplaced, self.node)
        if kind == "StatefulSet":
            return self._statefulset(obj, policy, basis, desired, active)
        unplaced, placed = (len(active), sum(elsewhere.values())) if not self.live else self._whole_facts(kind, obj, namespace)
        return rules.whole_share(kind, policy, basis, unplaced, placed, self.node)

    def _placement(self, kind: str, obj: t.Mapping[str, t.Any]) -> live_facts.Placement:
        live = self.live or live_facts.LiveState("backup", {}, [], [])
        return live_facts.placement(kind, obj, live.pods, self.alive, selector_matches, live.jobs)

    def _template_spec(self, obj: t.Mapping[str, t.Any]) -> t.Mapping[str, t.Any]:
        spec = obj.get("spec") or {}
        if "jobTemplate" in spec:
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        return ((spec.get("template") or {}).get("spec")) or {}

    def _unplaced(self, kind: str, obj: t.Mapping[str, t.Any], namespace: str) -> int:
        where = self._placement(kind, obj)
        if self.live is None or self.live.basis != "estimate":
            return where.unplaced
        spec = self._template_spec(obj)
        pinned = self.pinned_here(namespace, spec)
        return live_facts.estimate_unplaced([(spec, pinned)] * where.unplaced, self.live.nodes, self.free)

    def _whole_facts(self, kind: str, obj: t.Mapping[str, t.Any], namespace: str) -> tuple[int, int]:
        where = self._placement(kind, obj)
        placed = sum(where.placed.values())
        if self.live is not None and self.live.basis == "estimate":
            spec = self._template_spec(obj)
            return live_facts.estimate_unplaced([(spec, self.pinned_here(namespace, spec))] * where.unplaced, self.live.nodes, self.free), placed
        return where.unplaced, placed

    def _statefulset(self, obj: t.Mapping[str, t.Any], policy: str, basis: str, desired: int, active: t.Sequence[Obj]) -> rules.Share:
        namespace, name = str(meta(obj).get("namespace")), str(meta(obj).get("name"))
        start = int((((obj.get("spec") or {}).get("ordinals")) or {}).get("start") or 0)
        if self.live is None:
            dead = [o for o in (_ordinal(str(meta(p).get("name")), name) for p in active) if o is not None]
        else:
            where = self._placement("StatefulSet", obj)
            dead = where.dead_ordinals
            if self.live.basis == "estimate":
                spec = self._template_spec(obj)
                dead = [o for o in dead if self.pinned_here(namespace, spec, self.ordinal_claims(obj, o))
                        or live_facts.estimate_unplaced([(spec, False)], self.live.nodes, self.free)]
        elsewhere = [o for o in range(start, start + desired)
                     if any(self.claim_nodes(namespace, c) - {self.node} for c in self.ordinal_claims(obj, o))]
        return rules.ordinal_share(policy, basis, desired, start, dead, elsewhere, self.node)
