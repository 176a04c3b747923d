# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan's closure: what the selected workloads need to run in the target.

Closure (what the selected workloads need)
    Their namespaces; ServiceAccounts, the RoleBindings and ClusterRoleBindings that name them
    (as ServiceAccount subject, ``system:serviceaccount:<ns>:<name>`` user or
    ``system:serviceaccounts:<ns>`` group; in any namespace), and the Roles and ClusterRoles those
    bind (bootstrap roles, ``system:*`` and ``kubernetes.io/bootstrapping=rbac-defaults``, are left
    to the target); ConfigMaps and Secrets referenced from env, envFrom, volumes (projected too,
    and volume ``secretRef``s), imagePullSecrets of pods and ServiceAccounts, in containers and
    initContainers; PersistentVolumeClaims of pod volumes and the StatefulSet claims
    ``<template>-<statefulset>-<ordinal>`` found in the backup, and their PersistentVolumes;
    Services whose selector matches a selected pod template; NetworkPolicies whose podSelector
    matches (or is empty); PodDisruptionBudgets whose selector matches; HorizontalPodAutoscalers
    whose scaleTargetRef names a selected workload. Custom resources are kept to two kinds: those
    owning a selected workload (an operator's resource above a Deployment, say) and those named in
    ``include_custom``; the CustomResourceDefinitions of the custom resources carried come along.
    ``kube-root-ca.crt`` is never carried (every namespace has its own, with the target's CA).
"""

from __future__ import annotations

import dataclasses
import re
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    CLUSTER_ROLE_BINDING,
    CONFIG_MAP,
    CRON_JOB,
    HPA,
    NAMESPACE,
    NETWORK_POLICY,
    PDB,
    POD,
    PV,
    PVC,
    RBAC,
    ROLE_BINDING,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    NO_PROVISIONER,
    STATEFUL_SET,
    STORAGE_CLASS,
    SYSTEM_HOST_PATHS,
    GroupKind,
    Obj,
    Ref,
    labels,
    meta,
    pinned_to,
    pod_active,
    ref_of,
    selector_matches,
    show,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.select import Selection


def pod_templates(obj: t.Mapping[str, t.Any], gk: GroupKind) -> list[tuple[t.Mapping[str, t.Any], t.Mapping[str, t.Any]]]:
    """(metadata, spec) of the pod template(s) of a workload; a bare pod is its own template."""
    spec = obj.get("spec") or {}
    if gk == POD:
        return [(meta(obj), spec)]
    if gk == CRON_JOB:
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    if not template:
        return []
    return [(template.get("metadata") or {}, template.get("spec") or {})]


def containers(spec: t.Mapping[str, t.Any]) -> list[t.Mapping[str, t.Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or []) + list(spec.get("ephemeralContainers") or [])


@dataclasses.dataclass
class _Need:
    """A reference from a workload to an object in its namespace."""

    gk: GroupKind
    name: str
    optional: bool
    by: Ref


def _pod_needs(spec: t.Mapping[str, t.Any], by: Ref) -> list[_Need]:
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    needs: list[_Need] = [_Need(SERVICE_ACCOUNT, account, account == "default", by)]  # every namespace has a default one
    for pull in spec.get("imagePullSecrets") or []:
        if pull.get("name"):
            needs.append(_Need(SECRET, pull["name"], False, by))
    for container in containers(spec):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            for field, gk in (("configMapKeyRef", CONFIG_MAP), ("secretKeyRef", SECRET)):
                ref = source.get(field) or {}
                if ref.get("name"):
                    needs.append(_Need(gk, ref["name"], bool(ref.get("optional")), by))
        for env_from in container.get("envFrom") or []:
            for field, gk in (("configMapRef", CONFIG_MAP), ("secretRef", SECRET)):
                ref = env_from.get(field) or {}
                if ref.get("name"):
                    needs.append(_Need(gk, ref["name"], bool(ref.get("optional")), by))
    for volume in spec.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name"):
            needs.append(_Need(CONFIG_MAP, volume["configMap"]["name"], bool(volume["configMap"].get("optional")), by))
        if (volume.get("secret") or {}).get("secretName"):
            needs.append(_Need(SECRET, volume["secret"]["secretName"], bool(volume["secret"].get("optional")), by))
        if (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            needs.append(_Need(PVC, volume["persistentVolumeClaim"]["claimName"], False, by))
        for source in (volume.get("projected") or {}).get("sources") or []:
            for field, gk in (("configMap", CONFIG_MAP), ("secret", SECRET)):
                ref = source.get(field) or {}
                if ref.get("name"):
                    needs.append(_Need(gk, ref["name"], bool(ref.get("optional")), by))
        for key, source in volume.items():  # csi, cephfs, rbd, iscsi, flexVolume, ... name their secrets alike
            if isinstance(source, t.Mapping) and key not in ("secret", "projected", "configMap"):
                for field in ("secretRef", "nodePublishSecretRef"):
                    if (source.get(field) or {}).get("name"):
                        needs.append(_Need(SECRET, source[field]["name"], False, by))
                if key == "azureFile" and source.get("secretName"):
                    needs.append(_Need(SECRET, source["secretName"], False, by))
    return needs


def _host_paths(spec: t.Mapping[str, t.Any]) -> list[tuple[str, str]]:
    """(volume, path) of the hostPath volumes that may hold data (not sockets, /proc, /sys, ...)."""
    found = []
    for volume in spec.get("volumes") or []:
        path = (volume.get("hostPath") or {}).get("path") or ""
        if path and not any(path == p or path.startswith(p + "/") for p in SYSTEM_HOST_PATHS):
            found.append((volume.get("name") or "", path))
    return found


@dataclasses.dataclass
class Closure:
    refs: set[Ref] = dataclasses.field(default_factory=set)
    warnings: list[str] = dataclasses.field(default_factory=list)
    host_path_workloads: set[Ref] = dataclasses.field(default_factory=set)
    synthetic_namespaces: set[str] = dataclasses.field(default_factory=set)
    reprovision: set[Ref] = dataclasses.field(default_factory=set)  # PVCs whose PV is provisioned anew in the target
    pod_labels: dict[Ref, list[t.Mapping[str, str]]] = dataclasses.field(default_factory=dict)


def _is_bootstrap_rbac(obj: t.Optional[t.Mapping[str, t.Any]], name: str) -> bool:
    return name.startswith("system:") or labels(obj).get("kubernetes.io/bootstrapping") == "rbac-defaults"


def _binding_index(index: Index) -> dict[tuple[str, str], list[Obj]]:
    """(namespace, service account) -> the bindings naming it; ("", namespace) for namespace-wide groups."""
    by_sa: dict[tuple[str, str], list[Obj]] = {}
    for gk in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
        for binding in index.kind(gk):
            name = meta(binding).get("name") or ""
            if _is_bootstrap_rbac(binding, name):
                continue
            keys = set()
            for subject in binding.get("subjects") or []:
                kind, subject_name = subject.get("kind"), subject.get("name") or ""
                if kind == "ServiceAccount":
                    keys.add((subject.get("namespace") or meta(binding).get("namespace") or "", subject_name))
                elif kind == "User" and subject_name.startswith("system:serviceaccount:"):
                    parts = subject_name.split(":")
                    if len(parts) == 4:
                        keys.add((parts[2], parts[3]))
                elif kind == "Group" and subject_name.startswith("system:serviceaccounts:"):
                    keys.add(("", subject_name.split(":", 2)[2]))
            for key in keys:
                by_sa.setdefault(key, []).append(binding)
    return by_sa


def close(index: Index, selection: Selection, node: str, options: PlanOptions) -> Closure:
    closure = Closure()
    refs = closure.refs
    missing: dict[tuple[GroupKind, str, str], set[str]] = {}
    needs: list[_Need] = []

    for ref, cand in sorted(selection.workloads.items()):
        refs.add(ref)
        gk = (ref[0], ref[1])
        obj = index.by_ref[ref]
        if index.is_custom(gk):
            templates = [(meta(p), p.get("spec") or {}) for p in cand.on_node if pod_active(p)]
        else:
            templates = list(pod_templates(obj, gk))
        closure.pod_labels[ref] = [m.get("labels") or {} for m, _s in templates]
        for _meta_, spec in templates:
            needs.extend(_pod_needs(spec, ref))
            if _host_paths(spec):
                closure.host_path_workloads.add(ref)
                where = options.target_node or "the new node"
                hint = "" if options.target_node else ": set target_node so the pods land there"
                for volume, path in _host_paths(spec):
                    closure.warnings.append(
                        "%s mounts hostPath %s (volume %s): only the node agent's backup (local_data) holds its data; it is restored "
                        "to the same path on %s%s" % (show(ref), path, volume, where, hint))
        if gk == STATEFUL_SET:
            _statefulset_claims(index, selection, closure, ref, obj)
    for custom in sorted(selection.custom_owners):
        refs.add(custom)

    bindings = _binding_index(index)
    for need in needs:
        namespace = need.by[2]
        target = index.get(need.gk, namespace, need.name)
        if need.gk == CONFIG_MAP and need.name == "kube-root-ca.crt":
            continue
        if need.gk == SERVICE_ACCOUNT:  # its bindings come even when the account itself was not backed up
            for binding in bindings.get((namespace, need.name), []) + bindings.get(("", namespace), []):
                refs.add(ref_of(binding))
                _add_role(index, binding, refs, closure.warnings)
        if target is None:
            if not need.optional:
                missing.setdefault((need.gk, namespace, need.name), set()).add(show(need.by))
            continue
        refs.add(ref_of(target))
        if need.gk == SERVICE_ACCOUNT:
            for pull in target.get("imagePullSecrets") or []:
                secret = index.get(SECRET, namespace, pull.get("name") or "")
                if secret is not None:
                    refs.add(ref_of(secret))
                elif pull.get("name"):
                    missing.setdefault((SECRET, namespace, pull["name"]), set()).add(show(ref_of(target)))
    for (gk, namespace, name), users in sorted(missing.items()):
        closure.warnings.append("%s %s/%s is referenced by %s but is not in the backup: create it in the target before scale-up"
                                % (gk[1], namespace, name, ", ".join(sorted(users))))

    _close_volumes(index, closure, node, options)
    _close_network_and_policies(index, selection, closure)
    _close_custom(index, closure)
    for ref in sorted(refs):
        if ref[2] and index.get(NAMESPACE, "", ref[2]) is None:
            closure.synthetic_namespaces.add(ref[2])
        elif ref[2]:
            refs.add((NAMESPACE[0], NAMESPACE[1], "", ref[2]))
    for namespace in sorted(closure.synthetic_namespaces):
        closure.warnings.append("Namespace %s is not in the backup: the plan creates it without labels or annotations "
                                "(pod security labels, say)" % namespace)
    return closure


def _statefulset_claims(index: Index, selection: Selection, closure: Closure, ref: Ref, obj: t.Mapping[str, t.Any]) -> None:
    """The claims of the ordinals that move (all of them when the StatefulSet moves whole); the others are left out."""
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    share = selection.shares.get(ref)
    moved: t.Optional[range] = None
    if share is not None and share.ordinals_start is not None and share.moves < share.of:
        moved = range(share.ordinals_start, share.ordinals_start + share.moves)
    for template in spec.get("volumeClaimTemplates") or []:
        pattern = re.compile(r"^%s-%s-(\d+)$" % (re.escape(meta(template).get("name") or ""), re.escape(ref[3])))
        for pvc in index.in_namespace(PVC, ref[2]):
            match = pattern.match(meta(pvc).get("name") or "")
            if not match:
                continue
            if moved is not None and int(match.group(1)) not in moved:
                selection.left_out.append({"kind": "PersistentVolumeClaim", "api_version": "v1", "namespace": ref[2],
                                           "name": meta(pvc).get("name"), "workload": show(ref),
                                           "reason": "claim of ordinal %s of %s, which stays in the source" % (match.group(1), show(ref))})
                continue
            closure.refs.add(ref_of(pvc))
            if moved is None and replicas is not None and int(match.group(1)) >= int(replicas):
                closure.warnings.append("%s keeps %s of an ordinal beyond its %s replicas: carried as well"
                                        % (show(ref), show(ref_of(pvc)), replicas))


def _add_role(index: Index, binding: t.Mapping[str, t.Any], refs: set[Ref], warnings: list[str]) -> None:
    role_ref = binding.get("roleRef") or {}
    kind, name = role_ref.get("kind") or "", role_ref.get("name") or ""
    namespace = meta(binding).get("namespace") or "" if kind == "Role" else ""
    role = index.get((RBAC, kind), namespace, name)
    if role is None:
        if not (kind == "ClusterRole" and _is_bootstrap_rbac(None, name)) and name not in ("admin", "edit", "view", "cluster-admin"):
            warnings.append("%s binds %s %s, which is not in the backup" % (show(ref_of(binding)), kind, name))
        return
    if not _is_bootstrap_rbac(role, name):
        refs.add(ref_of(role))


def _close_volumes(index: Index, closure: Closure, node: str, options: PlanOptions) -> None:
    for ref in sorted(r for r in closure.refs if (r[0], r[1]) == PVC):
        pvc = index.by_ref[ref]
        spec = pvc.get("spec") or {}
        pv = index.get(PV, "", spec.get("volumeName") or "") if spec.get("volumeName") else None
        if pv is None:
            for candidate in index.kind(PV):
                claim = (candidate.get("spec") or {}).get("claimRef") or {}
                if claim.get("namespace") == ref[2] and claim.get("name") == ref[3]:
                    pv = candidate
                    break
        if pv is None:
            if spec.get("volumeName"):
                closure.warnings.append("%s is bound to PersistentVolume %s, which is not in the backup: the target provisions a new, "
                                        "empty volume" % (show(ref), spec["volumeName"]))
                closure.reprovision.add(ref)
            continue
        pv_spec = pv.get("spec") or {}
        pv_name = meta(pv).get("name") or ""
        if pinned_to(pv, node):
            closure.refs.add(ref_of(pv))
            _local_class(index, closure, pv_spec.get("storageClassName"), options)
            if not options.target_node:
                closure.warnings.append("PersistentVolume %s (%s) is pinned to the failed node %s: set target_node to re-home it, "
                                        "or its pods cannot start" % (pv_name, show(ref), node))
        elif (meta(pv).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by"):
            closure.reprovision.add(ref)
            provisioner = meta(pv)["annotations"]["pv.kubernetes.io/provisioned-by"]
            closure.warnings.append("%s: PersistentVolume %s was provisioned by %s and its data is in no node backup; the target "
                                    "provisions a new, empty volume (storage class %s)" % (
                                        show(ref), pv_name, provisioner, _storage_class(options, spec.get("storageClassName"))))
        else:
            closure.refs.add(ref_of(pv))
            kinds = sorted(k for k in pv_spec if isinstance(pv_spec[k], t.Mapping) and k not in (
                "capacity", "claimRef", "nodeAffinity", "mountOptions"))
            closure.warnings.append("%s: PersistentVolume %s (%s) is carried as it is: the target nodes must reach that storage"
                                    % (show(ref), pv_name, ", ".join(kinds) or "static"))


def _local_class(index: Index, closure: Closure, name: t.Optional[str], options: PlanOptions) -> None:
    """A re-homed local volume's class comes along when it has no provisioner (created only where the target lacks it)."""
    if not name or name in options.storage_class_map:
        return
    found = index.get(STORAGE_CLASS, "", name)
    if found is not None and found.get("provisioner") == NO_PROVISIONER:
        closure.refs.add(ref_of(found))


def _storage_class(options: PlanOptions, name: t.Optional[str]) -> str:
    if name is None:
        return "(default)"
    return options.storage_class_map.get(name, name) or '""'


def _close_network_and_policies(index: Index, selection: Selection, closure: Closure) -> None:
    by_namespace: dict[str, list[tuple[Ref, list[t.Mapping[str, str]]]]] = {}
    for ref in sorted(selection.workloads):
        by_namespace.setdefault(ref[2], []).append((ref, closure.pod_labels.get(ref, [])))
    for namespace, workloads in sorted(by_namespace.items()):
        labels = [lbl for _ref, lbls in workloads for lbl in lbls]
        for service in index.in_namespace(SERVICE, namespace):
            selector = (service.get("spec") or {}).get("selector") or {}
            if selector and any(all(lbl.get(k) == v for k, v in selector.items()) for lbl in labels):
                closure.refs.add(ref_of(service))
        for policy in index.in_namespace(NETWORK_POLICY, namespace):
            selector = (policy.get("spec") or {}).get("podSelector")
            if selector == {} or (selector is not None and any(selector_matches(selector, lbl) for lbl in labels)):
                closure.refs.add(ref_of(policy))
        for pdb in index.in_namespace(PDB, namespace):
            if any(selector_matches((pdb.get("spec") or {}).get("selector"), lbl) for lbl in labels):
                closure.refs.add(ref_of(pdb))
        names = {(ref[1], ref[3]) for ref, _l in workloads}
        for hpa in index.in_namespace(HPA, namespace):
            target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if (target.get("kind"), target.get("name")) in names:
                closure.refs.add(ref_of(hpa))


def _close_custom(index: Index, closure: Closure) -> None:
    for ref in sorted(closure.refs):
        gk = (ref[0], ref[1])
        if index.is_custom(gk):
            crd = index.crds.get(gk)
            if crd is None:
                closure.warnings.append("%s is a custom resource whose CustomResourceDefinition is not in the backup: install it in "
                                        "the target first" % show(ref))
            else:
                closure.refs.add(ref_of(crd))
