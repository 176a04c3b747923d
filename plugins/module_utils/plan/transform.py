# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan's transforms: backed-up objects turned into manifests for the target.

Transforms
    Server-set fields go (uid, resourceVersion, creationTimestamp, generation, managedFields,
    selfLink, status, ``last-applied-configuration`` and the binding annotations, Service
    clusterIP(s) and healthCheckNodePort, Job controller-uid selectors, pod priority values, bare
    pods' token volumes, preemptionPolicy and the topology labels they got from the old node).
    Owner references go too: an owner's uid changes when it is recreated, and the garbage
    collector deletes objects whose owners are gone. When the owner moves as well, the reference
    is kept in the annotation ``migration.hybridcloud.io/owner-references`` for the restorer.
    PersistentVolumes pinned to the dead node (``local`` or ``hostPath`` with a
    ``kubernetes.io/hostname`` node affinity) are re-homed to ``target_node`` and keep their claim
    (``volumeName`` and ``claimRef``, without uid): the node agent's restic backup refills their
    path there. Dynamically provisioned volumes elsewhere are provisioned anew in the target (the
    claim loses its ``volumeName``), static ones are carried as they are; both with a warning.
    Pod templates lose ``nodeName`` and the nodeSelector and node affinity terms that pin the dead
    node; pods that mount hostPath data are pinned to ``target_node``, where that data is restored.
    ``storage_class_map``, ``image_registry_map`` (longest prefix first; a prefix matches the
    image as written or its normalised ``docker.io/library/...`` form) and ``namespace_map``
    (applied to every reference: object namespaces, RBAC subjects, PV claimRefs, pod affinity
    namespaces, NetworkPolicy namespace selectors by ``kubernetes.io/metadata.name``) rewrite
    what they name. Every object carries the label and annotation
    ``migration.hybridcloud.io/run-id``. Workloads start stopped: Deployments, ReplicaSets and
    StatefulSets at ``replicas: 0`` (annotation ``migration.hybridcloud.io/replicas``: their
    share, ``plan.share``; a StatefulSet's moved ordinals start at ``spec.ordinals.start``; an
    autoscaler of a workload that moves in part gets its share of ``minReplicas`` and
    ``maxReplicas``), Jobs and CronJobs suspended (annotation ``migration.hybridcloud.io/suspend``), bare
    pods behind the scheduling gate ``migration.hybridcloud.io/restore``. ``scale_up`` says how to
    start each (``action``: ``scale``, ``unsuspend`` or ``ungate``).
"""

from __future__ import annotations

import json
import re
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    ANNOTATIONS_DROP,
    BUILTIN,
    CRD,
    HOSTNAME_LABEL,
    JOB_CONTROLLER_LABELS,
    METADATA_DROP,
    NAMESPACE_NAME_LABEL,
    NODE_DERIVED_POD_LABELS,
    OWNERS_ANNOTATION,
    APPLY_ANNOTATION,
    APPLY_IF_ABSENT,
    REPLICAS_ANNOTATION,
    RUN_ID_KEY,
    SCHEDULING_GATE,
    SECRET,
    SERVER_FINALIZERS,
    SUSPEND_ANNOTATION,
    TOKEN_VOLUME_RE,
    Obj,
    Ref,
    group_of,
    map_image,
    meta,
)
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.share import hpa_split
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.options import PlanOptions
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.index import Index
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.select import Selection, map_ns
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.closure import Closure, containers


class Transformer:
    """Turns backed-up objects into manifests for the target."""

    def __init__(self, index: Index, closure: Closure, selection: Selection, node: str, options: PlanOptions) -> None:
        self.index, self.closure, self.selection, self.node, self.options = index, closure, selection, node, options
        self.carried = closure.refs

    def ns(self, namespace: str) -> str:
        return map_ns(self.options, namespace)

    def storage_class(self, name: t.Optional[str]) -> t.Optional[str]:
        return self.options.storage_class_map.get(name, name) if name else name

    def manifest(self, ref: Ref) -> Obj:
        obj = json.loads(json.dumps(self.index.by_ref[ref]))  # a deep copy that is JSON for sure
        obj.pop("status", None)
        self.metadata(obj)
        gk = (ref[0], ref[1])
        handler = getattr(self, "_" + gk[1].lower(), None) if gk in BUILTIN or gk == CRD else None
        if handler is not None:
            handler(obj, ref)
        self.stamp(obj)
        return obj

    def metadata(self, obj: Obj) -> None:
        meta = obj.setdefault("metadata", {})
        owners = [o for o in meta.get("ownerReferences") or [] if self.carries_owner(o, meta.get("namespace") or "")]
        for field in METADATA_DROP:
            meta.pop(field, None)
        if meta.get("namespace"):
            meta["namespace"] = self.ns(meta["namespace"])
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in ANNOTATIONS_DROP}
        if owners:
            annotations[OWNERS_ANNOTATION] = json.dumps(
                [{"apiVersion": o.get("apiVersion"), "kind": o.get("kind"), "name": o.get("name"), "controller": bool(o.get("controller"))}
                 for o in sorted(owners, key=lambda o: (o.get("kind") or "", o.get("name") or ""))], sort_keys=True)
        meta["annotations"] = annotations
        finalizers = [f for f in meta.get("finalizers") or [] if f not in SERVER_FINALIZERS]
        if finalizers:
            meta["finalizers"] = finalizers
        else:
            meta.pop("finalizers", None)

    def carries_owner(self, owner_ref: t.Mapping[str, t.Any], namespace: str) -> bool:
        """Whether the plan recreates the owner an owner reference names (in the namespace, or cluster-scoped)."""
        group, kind, name = group_of(owner_ref.get("apiVersion") or ""), owner_ref.get("kind") or "", owner_ref.get("name") or ""
        return (group, kind, namespace, name) in self.carried or (group, kind, "", name) in self.carried

    def stamp(self, obj: Obj) -> None:
        meta = obj["metadata"]
        meta["labels"] = dict(meta.get("labels") or {}, **{RUN_ID_KEY: self.options.run_id})
        meta["annotations"] = dict(meta.get("annotations") or {}, **{RUN_ID_KEY: self.options.run_id})
        obj["metadata"] = {k: meta[k] for k in sorted(meta) if meta[k] not in ({}, [], None, "")}

    # -- per kind (method names: "_" + kind.lower()) --
    def _namespace(self, obj: Obj, _ref: Ref) -> None:
        meta = obj["metadata"]
        meta["name"] = self.ns(meta["name"])
        labels = dict(meta.get("labels") or {})
        labels.pop(NAMESPACE_NAME_LABEL, None)
        meta["labels"] = labels
        obj.pop("spec", None)  # spec.finalizers: the server's

    def _customresourcedefinition(self, obj: Obj, _ref: Ref) -> None:
        pass

    def _serviceaccount(self, obj: Obj, ref: Ref) -> None:
        kept = []
        for item in obj.get("secrets") or []:
            secret = self.index.get(SECRET, ref[2], item.get("name") or "")
            token_name = re.match(r"^%s-token-[a-z0-9]{5}$" % re.escape(ref[3]), item.get("name") or "")
            if (secret is not None and secret.get("type") == "kubernetes.io/service-account-token") or (secret is None and token_name):
                continue
            kept.append(item)
        if kept:
            obj["secrets"] = kept
        else:
            obj.pop("secrets", None)

    def _clusterrole(self, obj: Obj, _ref: Ref) -> None:
        if obj.get("aggregationRule"):
            obj["rules"] = []  # the aggregation controller fills them in the target

    def _role(self, obj: Obj, ref: Ref) -> None:
        pass

    def _rolebinding(self, obj: Obj, ref: Ref) -> None:
        subjects = []
        for subject in obj.get("subjects") or []:
            subject = dict(subject)
            kind, name = subject.get("kind"), subject.get("name") or ""
            if kind == "ServiceAccount" and (subject.get("namespace") or ref[2]):
                subject["namespace"] = self.ns(subject.get("namespace") or ref[2])
            elif kind == "User" and name.startswith("system:serviceaccount:") and len(name.split(":")) == 4:
                parts = name.split(":")
                subject["name"] = "system:serviceaccount:%s:%s" % (self.ns(parts[2]), parts[3])
            elif kind == "Group" and name.startswith("system:serviceaccounts:"):
                subject["name"] = "system:serviceaccounts:%s" % self.ns(name.split(":", 2)[2])
            subjects.append(subject)
        if subjects:
            obj["subjects"] = subjects

    _clusterrolebinding = _rolebinding

    def _configmap(self, obj: Obj, ref: Ref) -> None:
        pass

    def _secret(self, obj: Obj, _ref: Ref) -> None:
        if obj.get("type") == "kubernetes.io/service-account-token":
            obj.pop("data", None)  # the target's token controller writes its own token and CA

    def _persistentvolume(self, obj: Obj, _ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        claim = spec.get("claimRef")
        if claim:
            spec["claimRef"] = {k: v for k, v in claim.items() if k not in ("uid", "resourceVersion")}
            if claim.get("namespace"):
                spec["claimRef"]["namespace"] = self.ns(claim["namespace"])
        if spec.get("storageClassName"):
            spec["storageClassName"] = self.storage_class(spec["storageClassName"])
        if self.options.target_node:
            for term in ((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []:
                for expr in term.get("matchExpressions") or []:
                    if expr.get("key") == HOSTNAME_LABEL and self.node in (expr.get("values") or []):
                        expr["values"] = sorted({self.options.target_node if v == self.node else v for v in expr["values"]})

    def _persistentvolumeclaim(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("storageClassName"):
            spec["storageClassName"] = self.storage_class(spec["storageClassName"])
        annotations = obj["metadata"].get("annotations") or {}
        if annotations.get("volume.beta.kubernetes.io/storage-class"):
            annotations["volume.beta.kubernetes.io/storage-class"] = self.storage_class(annotations["volume.beta.kubernetes.io/storage-class"])
        if ref in self.closure.reprovision:
            spec.pop("volumeName", None)

    def _service(self, obj: Obj, _ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        headless = spec.get("clusterIP") == "None"
        for field in ("clusterIPs", "healthCheckNodePort"):
            spec.pop(field, None)
        if not headless:
            spec.pop("clusterIP", None)
        if spec.get("ipFamilyPolicy", "SingleStack") == "SingleStack":
            spec.pop("ipFamilies", None)

    def _networkpolicy(self, obj: Obj, _ref: Ref) -> None:
        spec = obj.get("spec") or {}
        for rules, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(rules) or []:
                for peer in rule.get(peers_key) or []:
                    self.map_namespace_selector(peer.get("namespaceSelector"))

    def map_namespace_selector(self, selector: t.Optional[Obj]) -> None:
        if not selector or not self.options.namespace_map:
            return
        labels = selector.get("matchLabels") or {}
        if NAMESPACE_NAME_LABEL in labels:
            labels[NAMESPACE_NAME_LABEL] = self.ns(labels[NAMESPACE_NAME_LABEL])
        for expr in selector.get("matchExpressions") or []:
            if expr.get("key") == NAMESPACE_NAME_LABEL and expr.get("values"):
                expr["values"] = [self.ns(v) for v in expr["values"]]

    def _poddisruptionbudget(self, obj: Obj, ref: Ref) -> None:
        pass

    def _horizontalpodautoscaler(self, obj: Obj, ref: Ref) -> None:
        split = self.hpa_split(obj)
        if split:
            obj.setdefault("spec", {}).update(split["target"])

    def hpa_split(self, hpa: t.Mapping[str, t.Any]) -> t.Optional[dict[str, dict[str, int]]]:
        """The autoscaler's bounds split with its workload's share (None when the workload moves whole)."""
        spec = hpa.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        namespace = meta(hpa).get("namespace") or ""
        for ref, share in self.selection.shares.items():
            if ref[2] == namespace and ref[1] == target.get("kind") and ref[3] == target.get("name") and share.partial:
                return hpa_split(int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1), share.moves, share.of)
        return None

    def _storageclass(self, obj: Obj, _ref: Ref) -> None:
        obj["metadata"].setdefault("annotations", {})[APPLY_ANNOTATION] = APPLY_IF_ABSENT

    def _deployment(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "replicas", ref)
        self.template(spec.get("template") or {}, ref)

    _replicaset = _deployment

    def _statefulset(self, obj: Obj, ref: Ref) -> None:
        self._deployment(obj, ref)
        share = self.selection.shares.get(ref)
        if share is not None and share.ordinals_start is not None:
            if share.ordinals_start:
                obj["spec"]["ordinals"] = {"start": share.ordinals_start}
            else:
                obj["spec"].pop("ordinals", None)
        for template in obj["spec"].get("volumeClaimTemplates") or []:
            template.pop("status", None)
            (template.get("metadata") or {}).pop("creationTimestamp", None)
            template_spec = template.get("spec") or {}
            if template_spec.get("storageClassName"):
                template_spec["storageClassName"] = self.storage_class(template_spec["storageClassName"])

    def _job(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "suspend", ref)
        if not spec.get("manualSelector"):
            spec.pop("selector", None)
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            for label in JOB_CONTROLLER_LABELS:
                labels.pop(label, None)
        self.template(spec.get("template") or {}, ref)

    def _cronjob(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "suspend", ref)
        job_template = spec.get("jobTemplate") or {}
        if isinstance(job_template.get("metadata"), dict):
            job_template["metadata"].pop("creationTimestamp", None)
            if not job_template["metadata"]:
                job_template.pop("metadata")
        self.template((job_template.get("spec") or {}).get("template") or {}, ref)

    def _pod(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        meta = obj["metadata"]
        meta.setdefault("annotations", {})[REPLICAS_ANNOTATION] = "1"
        for label in NODE_DERIVED_POD_LABELS:  # copied from the old node at binding; the new node's come at the new binding
            (meta.get("labels") or {}).pop(label, None)
        for field in ("ephemeralContainers", "preemptionPolicy", "priority"):  # not creatable, or set by admission from the class
            spec.pop(field, None)
        tokens = {v.get("name") for v in spec.get("volumes") or [] if TOKEN_VOLUME_RE.match(v.get("name") or "") and v.get("projected")}
        if tokens:
            spec["volumes"] = [v for v in spec["volumes"] if v.get("name") not in tokens]
            for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if container.get("volumeMounts"):
                    container["volumeMounts"] = [m for m in container["volumeMounts"] if m.get("name") not in tokens]
        gates = [g for g in spec.get("schedulingGates") or [] if g.get("name") != SCHEDULING_GATE]
        spec["schedulingGates"] = gates + [{"name": SCHEDULING_GATE}]
        self.pod_spec(spec, ref)

    def stop(self, obj: Obj, spec: Obj, field: str, ref: Ref) -> None:
        annotations = obj["metadata"].setdefault("annotations", {})
        share = self.selection.shares.get(ref)
        if field == "replicas":
            original = share.moves if share is not None else spec.get("replicas")
            annotations[REPLICAS_ANNOTATION] = str(1 if original is None else original)
            spec["replicas"] = 0
        else:
            annotations[SUSPEND_ANNOTATION] = "true" if spec.get("suspend") else "false"
            spec["suspend"] = True

    def template(self, template: Obj, ref: Ref) -> None:
        meta = template.get("metadata")
        if isinstance(meta, dict):
            meta.pop("creationTimestamp", None)
            if meta.get("namespace"):
                meta["namespace"] = self.ns(meta["namespace"])
        if isinstance(template.get("spec"), dict):
            self.pod_spec(template["spec"], ref)

    def pod_spec(self, spec: Obj, ref: Ref) -> None:
        if spec.get("nodeName") is not None:
            spec.pop("nodeName")
        selector = spec.get("nodeSelector") or {}
        if selector.get(HOSTNAME_LABEL) == self.node:
            del selector[HOSTNAME_LABEL]
        if self.options.target_node and self.options.pin_host_path_pods and ref in self.closure.host_path_workloads:
            selector[HOSTNAME_LABEL] = self.options.target_node
        if selector:
            spec["nodeSelector"] = selector
        else:
            spec.pop("nodeSelector", None)
        spec.pop("priority", None)  # admission sets it from the class (or the target's default class); a stale value is refused
        self.unpin_affinity(spec)
        for container in containers(spec):
            if container.get("image"):
                container["image"] = map_image(container["image"], self.options.image_registry_map)
        for volume in spec.get("volumes") or []:
            template_spec = ((volume.get("ephemeral") or {}).get("volumeClaimTemplate") or {}).get("spec") or {}
            if template_spec.get("storageClassName"):
                template_spec["storageClassName"] = self.storage_class(template_spec["storageClassName"])
        affinity = spec.get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            rules = affinity.get(kind) or {}
            terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
            terms += [p.get("podAffinityTerm") or {} for p in rules.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
            for term in terms:
                if term.get("namespaces"):
                    term["namespaces"] = [self.ns(n) for n in term["namespaces"]]
                self.map_namespace_selector(term.get("namespaceSelector"))

    def unpin_affinity(self, spec: Obj) -> None:
        """Drop the node affinity terms that pin the failed node (kubernetes.io/hostname or metadata.name)."""
        node_affinity = (spec.get("affinity") or {}).get("nodeAffinity")
        if not node_affinity:
            return
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if required:
            terms = []
            for term in required.get("nodeSelectorTerms") or []:
                pinned, term = self.unpin_term(term)
                if not pinned or term.get("matchExpressions") or term.get("matchFields"):
                    terms.append(term)
            if terms:
                required["nodeSelectorTerms"] = terms
            else:
                node_affinity.pop("requiredDuringSchedulingIgnoredDuringExecution")
        preferred = node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
        if preferred:
            kept = [p for p in preferred if not self.unpin_term(p.get("preference") or {})[0]]
            if kept:
                node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = kept
            else:
                node_affinity.pop("preferredDuringSchedulingIgnoredDuringExecution")
        if not node_affinity:
            spec["affinity"].pop("nodeAffinity")
        if not spec["affinity"]:
            spec.pop("affinity")

    def unpin_term(self, term: Obj) -> tuple[bool, Obj]:
        """(whether the term named the failed node, the term without that node-name expression).

        The whole expression goes, not only the dead node's name: the other names it lists are the
        source cluster's nodes, which the target does not have, so keeping them would leave the
        pods unschedulable there.
        """
        pinned = False
        for field, key in (("matchExpressions", HOSTNAME_LABEL), ("matchFields", "metadata.name")):
            kept = []
            for expr in term.get(field) or []:
                if expr.get("key") == key and expr.get("operator") == "In" and self.node in (expr.get("values") or []):
                    pinned = True
                    continue
                kept.append(expr)
            if kept:
                term[field] = kept
            else:
                term.pop(field, None)
        return pinned, term
