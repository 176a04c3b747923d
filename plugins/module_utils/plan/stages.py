# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration plan: which of a dead node's workloads move, with what, changed how, in what order.

``build_plan(objects, failed_node, options)`` takes every object of the source cluster's backup
(the Velero tarball, see ``velero_tarball``) and returns the plan of the contract shared with
``ordered_restore`` (a JSON-serialisable dict: ``selected``, ``skipped``, ``stages``, ``scale_up``,
``local_data``, ``workload_state``, ``warnings``). Plain functions over dicts, deterministic
(everything sorted), linear in the number of objects.

The plan is made in three steps, each described in its file: ``select`` (which workloads move),
``closure`` (what they need) and ``transform`` (the manifests for the target). This file puts
the manifests in ordered stages and says how to start the workloads (``scale_up``).
"""

from __future__ import annotations

import datetime as dt
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    BUILTIN,
    CONFIG_MAP,
    CRON_JOB,
    DEPLOYMENT,
    HPA,
    JOB,
    POD,
    REPLICA_SET,
    SCHEDULING_GATE,
    SCHEMA,
    STAGES,
    STATEFUL_SET,
    Obj,
    Ref,
    group_of,
    gk,
    known_nodes,
    meta,
    show,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.select import Selection, map_ns, select
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.closure import Closure, close, containers, pod_templates
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.transform import Transformer
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.decide import Decider
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.live import LiveState
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.share import HPA_RULE, check_policies, hpa_split


def _sort_key(ref: Ref) -> tuple[str, int, str, str, str]:
    stage, order = BUILTIN.get((ref[0], ref[1]), ("custom", 0))
    return (stage, order, ref[1] if stage == "custom" else "", ref[2], ref[3])


def _scale_up(selection: Selection, index: Index, options: PlanOptions) -> list[dict[str, t.Any]]:
    items = []
    for ref in sorted(selection.workloads, key=_sort_key):
        gk = (ref[0], ref[1])
        obj = index.by_ref[ref]
        spec = obj.get("spec") or {}
        base = {"kind": ref[1], "api_version": obj.get("apiVersion"), "namespace": map_ns(options, ref[2]), "name": ref[3]}
        if gk in (DEPLOYMENT, REPLICA_SET, STATEFUL_SET):
            share = selection.shares.get(ref)
            replicas = share.moves if share is not None else (1 if spec.get("replicas") is None else int(spec["replicas"]))
            if replicas > 0:
                items.append(dict(base, replicas=replicas, action="scale"))
        elif gk in (JOB, CRON_JOB):
            if not spec.get("suspend"):
                items.append(dict(base, suspend=False, action="unsuspend"))
        elif gk == POD:
            items.append(dict(base, replicas=1, action="ungate", scheduling_gate=SCHEDULING_GATE))
    return items


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_plan(objects: t.Iterable[t.Mapping[str, t.Any]], failed_node: str, options: PlanOptions,
               live: t.Optional[LiveState] = None) -> dict[str, t.Any]:
    """The migration plan for ``failed_node``'s workloads, from every object of the source backup.

    ``live`` is what the source cluster's API says now (``source_reschedule.observe``): the shares
    are then decided from it; without it, from the backup (the source does not answer).

    Raises ``MigrationError`` for a node the backup does not know (naming those it knows), for
    unusable options and when the namespace map makes two objects one.
    """
    include_custom = options.validate()
    index = Index(objects)
    nodes = known_nodes(index.by_ref.values())
    if failed_node not in nodes:
        shown = ", ".join(nodes[:30]) + (" and %d more" % (len(nodes) - 30) if len(nodes) > 30 else "")
        raise MigrationError(
            "Node %r is not in the backup%s" % (failed_node, " of cluster %s" % options.source_cluster if options.source_cluster else ""),
            ("use one of the nodes it knows (Node objects and pods' spec.nodeName): %s" % shown) if nodes else
            "the backup has no Node objects and no pods bound to a node; check that the Velero backup includes the "
            "namespaces of the node's pods (and the cluster-scoped Nodes)",
            known_nodes=nodes,
        )
    selection = select(index, failed_node, options, include_custom, Decider(index, failed_node, check_policies(options.share_policy), live))
    closure = close(index, selection, failed_node, options)
    transformer = Transformer(index, closure, selection, failed_node, options)

    stages: dict[str, list[Obj]] = {name: [] for name in STAGES}
    seen: dict[tuple[str, str, str, str], Ref] = {}
    manifests: list[tuple[Ref, Obj]] = [(ref, transformer.manifest(ref)) for ref in sorted(closure.refs, key=_sort_key)]
    for namespace in sorted(closure.synthetic_namespaces):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": map_ns(options, namespace)}}
        transformer.stamp(manifest)
        manifests.append((("", "Namespace", "", namespace), manifest))
    for ref, manifest in sorted(manifests, key=lambda item: _sort_key((item[0][0], item[0][1], meta(item[1]).get("namespace") or "",
                                                                       meta(item[1]).get("name") or ""))):
        target = (ref[0], ref[1], meta(manifest).get("namespace") or "", meta(manifest).get("name") or "")
        if target in seen:
            raise MigrationError(
                "namespace_map makes %s and %s the same object %s in the target" % (show(seen[target]), show(ref), show(target)),
                "map these namespaces to different namespaces",
            )
        seen[target] = ref
        stage = BUILTIN.get((ref[0], ref[1]), ("custom", 0))[0]
        stages[stage].append(manifest)

    _autoscaler_shares(index, closure, selection)
    warnings = list(closure.warnings)
    if not selection.workloads:
        on_node = sum(1 for pod in index.kind(POD) if (pod.get("spec") or {}).get("nodeName") == failed_node)
        warnings.insert(0, ("No workload of node %s needs moving: its %s DaemonSet or static pods, finished, excluded or "
                            "still running elsewhere (see skipped)" % (failed_node, "pod is" if on_node == 1 else "%d pods are" % on_node))
                        if on_node else "No workload to move: the backup has no pod bound to node %s" % failed_node)
    if any(c.owner.outcome == "custom" for c in selection.workloads.values()) or selection.custom_owners:
        kinds = sorted({ref[1] for ref in closure.refs if index.is_custom((ref[0], ref[1]))})
        if kinds:
            warnings.append("custom resources move (%s): their controllers (operators) must run in the target"
                            % ", ".join(kinds))
    warnings.extend(_namespace_name_warnings(index, closure, options))
    warnings.extend(_class_warnings(stages))
    return {
        "schema": SCHEMA,
        "run_id": options.run_id,
        "failed_node": failed_node,
        "source_cluster": options.source_cluster,
        "target_node": options.target_node,
        "created_at": options.created_at or _now(),
        "options": options.to_dict(),
        "selected": selection.selected,
        "skipped": selection.skipped,
        "left_out": selection.left_out,
        "share_basis": live.basis if live is not None else "backup",
        "share_notes": list(live.notes) if live is not None else [],
        "stages": [{"name": name, "objects": stages[name]} for name in STAGES if stages[name]],
        "scale_up": _scale_up(selection, index, options),
        "local_data": [],
        "workload_state": [],
        "warnings": unique(warnings),
    }


def _autoscaler_shares(index: Index, closure: Closure, selection: Selection) -> None:
    """The split of each carried autoscaler whose workload moves in part, in that workload's ``share`` (the fence applies it)."""
    entries = {(e["kind"], e["namespace"], e["name"]): e for e in selection.selected}
    for ref in sorted(r for r in closure.refs if (r[0], r[1]) == HPA):
        spec = (index.by_ref[ref].get("spec") or {})
        target = spec.get("scaleTargetRef") or {}
        entry = entries.get((target.get("kind"), ref[2], target.get("name")))
        share = selection.shares.get((group_of(str(target.get("apiVersion") or "")), str(target.get("kind")), ref[2], str(target.get("name"))))
        if entry is None or share is None or not share.partial:
            continue
        split = hpa_split(int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1), share.moves, share.of)
        entry["share"]["autoscaler"] = dict(split, name=ref[3], rule=HPA_RULE)


def unique(items: t.Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _namespace_name_warnings(index: Index, closure: Closure, options: PlanOptions) -> list[str]:
    """Renamed namespaces still named in env values and ConfigMap data (service DNS names): not rewritten."""
    renamed = {old: new for old, new in options.namespace_map.items() if old != new}
    if not renamed:
        return []
    found: dict[str, set[str]] = {}
    for ref in sorted(closure.refs):
        obj = index.by_ref.get(ref)
        if obj is None or ref[2] not in renamed:
            continue
        texts: list[str] = []
        if (ref[0], ref[1]) == CONFIG_MAP:
            texts.extend(str(v) for v in (obj.get("data") or {}).values())
        for _m, spec in pod_templates(obj, (ref[0], ref[1])) if (ref[0], ref[1]) in BUILTIN else []:
            texts.extend(str(env.get("value") or "") for c in containers(spec) for env in c.get("env") or [])
        for old in renamed:
            if any(".%s.svc" % old in text for text in texts):
                found.setdefault(old, set()).add(show(ref))
    return ["%s name namespace %s in service DNS names (.%s.svc): namespace_map does not rewrite values; it becomes %s"
            % (", ".join(sorted(users)), old, old, renamed[old]) for old, users in sorted(found.items())]


def _class_warnings(stages: t.Mapping[str, list[Obj]]) -> list[str]:
    classes = set()
    priorities = set()
    for obj in stages["storage"]:
        if (obj.get("spec") or {}).get("storageClassName"):
            classes.add(obj["spec"]["storageClassName"])
    for obj in stages["workloads"]:
        spec = obj.get("spec") or {}
        for template in spec.get("volumeClaimTemplates") or []:
            if (template.get("spec") or {}).get("storageClassName"):
                classes.add(template["spec"]["storageClassName"])
        for _meta_, pod_spec in pod_templates(obj, gk(obj)):
            name = pod_spec.get("priorityClassName") or ""
            if name and not name.startswith("system-"):
                priorities.add(name)
    classes -= {meta(obj).get("name") for obj in stages["storage"] if obj.get("kind") == "StorageClass"}  # carried along
    warnings = []
    if classes:
        warnings.append("the target cluster needs these StorageClasses (or map them with storage_class_map): %s" % ", ".join(sorted(classes)))
    if priorities:
        warnings.append("the target cluster needs these PriorityClasses: %s" % ", ".join(sorted(priorities)))
    return warnings
