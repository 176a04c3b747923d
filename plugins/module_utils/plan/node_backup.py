# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node backup's data, matched to the plan: ``attach_node_backup``."""

from __future__ import annotations

import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.stages import unique


def attach_node_backup(plan: t.Mapping[str, t.Any], entry: t.Optional[t.Mapping[str, t.Any]]) -> dict[str, t.Any]:
    """The plan with ``local_data`` and ``workload_state`` from the failed node's catalog entry.

    Keeps the artifacts that belong to what moves: local PVs of carried claims, hostPath volumes and
    checkpoints of the selected pods, and the node's extra paths. Each gets ``target_node``,
    ``target_path`` (local data: the same path, where the re-homed PV or hostPath points) and the
    ``workload`` it belongs to (target namespace). A carried local PV without a backup is a warning.
    """
    plan = dict(plan)
    data = (entry or {}).get("data") or {}
    target_node = plan.get("target_node") or ""
    pods: dict[tuple[str, str], dict[str, str]] = {}
    owners: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, "<kind>/<name>") as the node agent names owners
    for selected in plan.get("selected") or []:
        workload = {"kind": selected["kind"], "namespace": selected.get("target_namespace", selected["namespace"]), "name": selected["name"]}
        for pod in selected.get("pods") or []:
            pods[(selected["namespace"], pod)] = workload
        if selected.get("namespace"):
            owners[(selected["namespace"], "%s/%s" % (selected["kind"].lower(), selected["name"]))] = workload
    rename = dict((plan.get("options") or {}).get("namespace_map") or {})
    claims: dict[tuple[str, str], str] = {}
    local_pvs: set[str] = set()
    for stage in plan.get("stages") or []:
        for obj in stage.get("objects") or []:
            if obj.get("kind") == "PersistentVolume":
                claim = (obj.get("spec") or {}).get("claimRef") or {}
                if (obj.get("spec") or {}).get("local") or (obj.get("spec") or {}).get("hostPath"):
                    local_pvs.add(obj["metadata"]["name"])
                if claim.get("name"):
                    claims[(claim.get("namespace") or "", claim["name"])] = obj["metadata"]["name"]
    local_data, covered = [], set()
    for artifact in data.get("local_data") or []:
        details = artifact.get("details") or {}
        source, namespace = details.get("source"), details.get("namespace") or ""
        item = dict(artifact, target_node=target_node, target_path=details.get("path") or "")
        if source == "local-pv":
            target_ns = rename.get(namespace, namespace)
            pv = claims.get((target_ns, details.get("pvc") or "")) or (details.get("pv") if details.get("pv") in local_pvs else None)
            if not pv:
                continue
            covered.add(pv)
            item["persistent_volume"] = pv
            item["claim"] = {"namespace": target_ns, "name": details.get("pvc") or ""}
        elif source == "host-path":
            # By owner first: the pod the agent read it from may have been replaced before the node died.
            workload = owners.get((namespace, details.get("owner") or "")) or pods.get((namespace, details.get("pod") or ""))
            if workload is None:
                continue
            item["workload"] = workload
        local_data.append(item)
    workload_state = []
    for artifact in data.get("workload_state") or []:
        details = artifact.get("details") or {}
        workload = pods.get((details.get("namespace") or "", details.get("pod") or ""))
        if workload is not None:
            workload_state.append(dict(artifact, target_node=target_node, workload=workload, container=details.get("container") or ""))
    warnings = list(plan.get("warnings") or [])
    for pv in sorted(local_pvs - covered):
        warnings.append("PersistentVolume %s has no local data backup in the node's catalog entry: it starts empty" % pv)
    plan["local_data"] = sorted(local_data, key=lambda a: (a.get("name") or "", a.get("location") or ""))
    plan["workload_state"] = sorted(workload_state, key=lambda a: (a.get("name") or "", a.get("location") or ""))
    plan["warnings"] = unique(warnings)
    return plan
