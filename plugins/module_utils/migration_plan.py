# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration plan: which of a dead node's workloads move, with what, changed how, in what order.

``build_plan(objects, failed_node, options)`` takes every object of the source cluster's backup
(the Velero tarball, see ``velero_tarball``) and returns the plan of the contract shared with
``ordered_restore`` (a JSON-serialisable dict: ``selected``, ``skipped``, ``stages``, ``scale_up``,
``local_data``, ``workload_state``, ``warnings``). Plain functions over dicts, deterministic
(everything sorted), linear in the number of objects.

Selection
    Pods bound to the node (``spec.nodeName``) lead to the workload that owns them, following the
    controller owner references: ReplicaSet -> Deployment, StatefulSet, Job -> CronJob, or the pod
    itself when it has no owner. Left out, each with its reason in ``skipped``: DaemonSets (they
    run on every node already), static pods (mirror pods: annotation ``kubernetes.io/config.mirror``
    or owner kind Node), pods in ``exclude_namespaces`` (by default the system namespaces and
    ``velero``: the target runs its own), pods that had already finished, pods run by a custom controller
    unless ``include_custom`` names its resource, and workloads that still have running pods on
    other nodes. Such a workload is still serving from the healthy nodes and its controller
    replaces the lost pods there, so it stays unless ``move_partial`` is set: then Deployments,
    ReplicaSets, Jobs and CronJobs move too, and scale up to the number of pods the dead node ran
    (not to their full size). StatefulSets never move partially: the ordinals still running would
    run twice. Pods of other nodes are never touched.

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
    StatefulSets at ``replicas: 0`` (annotation ``migration.hybridcloud.io/replicas``: the
    original), Jobs and CronJobs suspended (annotation ``migration.hybridcloud.io/suspend``), bare
    pods behind the scheduling gate ``migration.hybridcloud.io/restore``. ``scale_up`` says how to
    start each (``action``: ``scale``, ``unsuspend`` or ``ungate``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

SCHEMA = 1
PREFIX = "migration.hybridcloud.io/"
RUN_ID_KEY = PREFIX + "run-id"
REPLICAS_ANNOTATION = PREFIX + "replicas"
SUSPEND_ANNOTATION = PREFIX + "suspend"
OWNERS_ANNOTATION = PREFIX + "owner-references"
SCHEDULING_GATE = PREFIX + "restore"
HOSTNAME_LABEL = "kubernetes.io/hostname"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "velero")
STAGES = ("namespaces", "crds", "rbac", "config", "storage", "network", "custom", "workloads", "policies")
# Host paths that hold no workload data (sockets, kernel interfaces, logs): no warning, no pinning.
SYSTEM_HOST_PATHS = ("/proc", "/sys", "/dev", "/run", "/var/run", "/var/log", "/var/lib/kubelet", "/etc/localtime", "/lib/modules")

Obj = t.Dict[str, t.Any]
Ref = t.Tuple[str, str, str, str]  # (group, kind, namespace, name); namespace "" when cluster-scoped
GroupKind = t.Tuple[str, str]

# (group, kind) -> (stage, order in the stage); anything else is a custom resource.
_BUILTIN: dict[GroupKind, tuple[str, int]] = {
    ("", "Namespace"): ("namespaces", 0),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ("crds", 0),
    ("", "ServiceAccount"): ("rbac", 0),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("rbac", 1),
    ("rbac.authorization.k8s.io", "Role"): ("rbac", 2),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("rbac", 3),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("rbac", 4),
    ("", "ConfigMap"): ("config", 0),
    ("", "Secret"): ("config", 1),
    ("", "PersistentVolume"): ("storage", 0),
    ("", "PersistentVolumeClaim"): ("storage", 1),
    ("", "Service"): ("network", 0),
    ("networking.k8s.io", "NetworkPolicy"): ("network", 1),
    ("apps", "Deployment"): ("workloads", 0),
    ("apps", "ReplicaSet"): ("workloads", 1),
    ("apps", "StatefulSet"): ("workloads", 2),
    ("batch", "Job"): ("workloads", 3),
    ("batch", "CronJob"): ("workloads", 4),
    ("", "Pod"): ("workloads", 5),
    ("policy", "PodDisruptionBudget"): ("policies", 0),
    ("autoscaling", "HorizontalPodAutoscaler"): ("policies", 1),
}
# Kinds the plan knows without being carried (never custom resources).
_OTHER_BUILTIN_GROUPS = frozenset((
    "", "apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "policy", "autoscaling", "storage.k8s.io",
    "apiextensions.k8s.io", "admissionregistration.k8s.io", "apiregistration.k8s.io", "certificates.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io", "node.k8s.io",
    "scheduling.k8s.io", "resource.k8s.io", "internal.apiserver.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
    "storagemigration.k8s.io",
))
POD = ("", "Pod")
NODE = ("", "Node")
NAMESPACE = ("", "Namespace")
SERVICE_ACCOUNT = ("", "ServiceAccount")
CONFIG_MAP = ("", "ConfigMap")
SECRET = ("", "Secret")
PVC = ("", "PersistentVolumeClaim")
PV = ("", "PersistentVolume")
SERVICE = ("", "Service")
CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
DEPLOYMENT = ("apps", "Deployment")
REPLICA_SET = ("apps", "ReplicaSet")
STATEFUL_SET = ("apps", "StatefulSet")
DAEMON_SET = ("apps", "DaemonSet")
JOB = ("batch", "Job")
CRON_JOB = ("batch", "CronJob")
RBAC = "rbac.authorization.k8s.io"
ROLE = (RBAC, "Role")
CLUSTER_ROLE = (RBAC, "ClusterRole")
ROLE_BINDING = (RBAC, "RoleBinding")
CLUSTER_ROLE_BINDING = (RBAC, "ClusterRoleBinding")
NETWORK_POLICY = ("networking.k8s.io", "NetworkPolicy")
PDB = ("policy", "PodDisruptionBudget")
HPA = ("autoscaling", "HorizontalPodAutoscaler")
WORKLOAD_KINDS = (DEPLOYMENT, REPLICA_SET, STATEFUL_SET, JOB, CRON_JOB)
# A workload higher in this list wins when a pod's owner chain has several (Deployment over ReplicaSet).
_WORKLOAD_RANK = {DEPLOYMENT: 2, CRON_JOB: 2, REPLICA_SET: 1, JOB: 1, STATEFUL_SET: 1}
_PARTIAL_OK = (DEPLOYMENT, REPLICA_SET, JOB, CRON_JOB)

_METADATA_DROP = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
                  "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
_SERVER_FINALIZERS = frozenset(("kubernetes.io/pvc-protection", "kubernetes.io/pv-protection", "foregroundDeletion", "orphan",
                                "batch.kubernetes.io/job-tracking"))
_ANNOTATIONS_DROP = frozenset((
    "kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
    "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node", "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner", "kubernetes.io/service-account.uid",
    "endpoints.kubernetes.io/last-change-trigger-time", "batch.kubernetes.io/job-tracking",
    "control-plane.alpha.kubernetes.io/leader", "kubernetes.io/config.seen", "kubernetes.io/config.source",
))
_NODE_DERIVED_POD_LABELS = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region")
_JOB_CONTROLLER_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TOKEN_VOLUME_RE = re.compile(r"^kube-api-access-[a-z0-9]{5}$")


# -- options -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CustomRef:
    """A custom resource named in ``include_custom``: ``Kind[.group]/[namespace/]name``."""

    kind: str
    group: str
    namespace: str
    name: str

    @classmethod
    def parse(cls, value: t.Union[str, t.Mapping[str, t.Any]]) -> "CustomRef":
        if isinstance(value, t.Mapping):
            group = str(value.get("group") or _group_of(str(value.get("api_version") or value.get("apiVersion") or "")))
            ref = cls(str(value.get("kind") or ""), group, str(value.get("namespace") or ""), str(value.get("name") or ""))
        else:
            parts = str(value).strip().split("/")
            if len(parts) not in (2, 3):
                ref = cls("", "", "", "")
            else:
                kind, _dot, group = parts[0].partition(".")
                ref = cls(kind, group, parts[1] if len(parts) == 3 else "", parts[-1])
        if not (ref.kind and ref.name):
            raise MigrationError(
                "include_custom entry %r names no custom resource" % (value,),
                "write Kind.group/namespace/name (Kind.group/name for a cluster-scoped one), or a dict with kind, group, namespace and name",
            )
        return ref

    def matches(self, obj: t.Mapping[str, t.Any]) -> bool:
        meta = obj.get("metadata") or {}
        return (obj.get("kind") == self.kind and meta.get("name") == self.name and (meta.get("namespace") or "") == self.namespace
                and (not self.group or _group_of(obj.get("apiVersion", "")) == self.group))

    def __str__(self) -> str:
        kind = "%s.%s" % (self.kind, self.group) if self.group else self.kind
        return "/".join(p for p in (kind, self.namespace, self.name) if p)


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    """What the user chose for this migration (the module's options)."""

    run_id: str  # label value: the plan's objects carry it (migration.hybridcloud.io/run-id)
    source_cluster: str = ""  # for the plan and messages only
    target_node: str = ""  # the new node: local PVs are re-homed to it, hostPath pods pinned to it; "" leaves them (warned)
    created_at: str = ""  # ISO 8601 UTC; now when empty
    move_partial: bool = False  # also move Deployments, ReplicaSets, Jobs, CronJobs still running on other nodes
    storage_class_map: t.Mapping[str, str] = dataclasses.field(default_factory=dict)  # source class -> target class
    image_registry_map: t.Mapping[str, str] = dataclasses.field(default_factory=dict)  # image prefix -> replacement
    namespace_map: t.Mapping[str, str] = dataclasses.field(default_factory=dict)  # source namespace -> target namespace
    include_custom: t.Sequence[t.Union[str, t.Mapping[str, t.Any]]] = ()  # "Kind.group/namespace/name" or dicts
    exclude_namespaces: t.Sequence[str] = DEFAULT_EXCLUDED_NAMESPACES  # their workloads never move
    pin_host_path_pods: bool = True  # pin pods with hostPath data to target_node

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "PlanOptions":
        """Options from a module's parameters: the fields above by name; missing or None keeps the default."""
        fields = {f.name for f in dataclasses.fields(cls)}
        given = {name: value for name, value in params.items() if name in fields and value is not None}
        for name in ("storage_class_map", "image_registry_map", "namespace_map"):
            if name in given:
                given[name] = dict(given[name])
        for name in ("include_custom", "exclude_namespaces"):
            if name in given:
                given[name] = tuple(given[name])
        return cls(**given)

    def validate(self) -> list[CustomRef]:
        """Refuse what would make a broken plan; the parsed ``include_custom``."""
        if not _RUN_ID_RE.match(self.run_id or ""):
            raise MigrationError("run_id %r is not usable as a label value" % (self.run_id,),
                                 "use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
        if self.target_node and not _DNS_SUBDOMAIN_RE.match(self.target_node):
            raise MigrationError("target_node %r is not a node name" % (self.target_node,), "give the new node's name as Kubernetes shows it")
        for source, target in self.namespace_map.items():
            for name in (source, target):
                if not isinstance(name, str) or not _DNS_LABEL_RE.match(name):
                    raise MigrationError("namespace_map entry %r: %r is not a namespace name" % (source, name),
                                         "map namespace names (lower-case letters, digits and '-', at most 63)")
        for option, mapping in (("storage_class_map", self.storage_class_map), ("image_registry_map", self.image_registry_map)):
            for source, target in mapping.items():
                if not source or not isinstance(source, str) or not isinstance(target, str) or (option == "storage_class_map" and not target):
                    raise MigrationError("%s entry %r: %r is not usable" % (option, source, target), "map non-empty strings to strings")
        if self.created_at:
            _parse_time(self.created_at)
        return [CustomRef.parse(item) for item in self.include_custom]

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "move_partial": self.move_partial,
            "storage_class_map": dict(sorted(self.storage_class_map.items())),
            "image_registry_map": dict(sorted(self.image_registry_map.items())),
            "namespace_map": dict(sorted(self.namespace_map.items())),
            "include_custom": sorted(str(CustomRef.parse(item)) for item in self.include_custom),
            "exclude_namespaces": sorted(self.exclude_namespaces),
            "pin_host_path_pods": self.pin_host_path_pods,
        }


def _parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MigrationError("created_at %r is not an ISO 8601 time" % text, "write it like 2026-11-25T19:15:00Z") from None
    if when.tzinfo is None:
        raise MigrationError("created_at %r has no time zone" % text, "add Z (UTC) or an offset such as +00:00")
    return when


# -- small helpers over objects ------------------------------------------------------------------


def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _gk(obj: t.Mapping[str, t.Any]) -> GroupKind:
    return (_group_of(obj.get("apiVersion") or ""), obj.get("kind") or "")


def _meta(obj: t.Mapping[str, t.Any]) -> t.Mapping[str, t.Any]:
    return obj.get("metadata") or {}


def ref_of(obj: t.Mapping[str, t.Any]) -> Ref:
    meta = _meta(obj)
    return (_group_of(obj.get("apiVersion") or ""), obj.get("kind") or "", meta.get("namespace") or "", meta.get("name") or "")


def _show(ref: Ref) -> str:
    return "%s %s" % (ref[1], "%s/%s" % (ref[2], ref[3]) if ref[2] else ref[3])


def _labels(obj: t.Optional[t.Mapping[str, t.Any]]) -> t.Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _controller_ref(obj: t.Mapping[str, t.Any]) -> t.Optional[t.Mapping[str, t.Any]]:
    owners = _meta(obj).get("ownerReferences") or []
    for owner in owners:
        if owner.get("controller"):
            return owner
    return owners[0] if owners else None


def _rv(obj: t.Mapping[str, t.Any]) -> int:
    value = str(_meta(obj).get("resourceVersion") or "")
    return int(value) if value.isdigit() else -1


def selector_matches(selector: t.Optional[t.Mapping[str, t.Any]], labels: t.Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against labels; ``{}`` matches all, None nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def map_image(image: str, registry_map: t.Mapping[str, str]) -> str:
    """The image with the longest matching prefix of ``registry_map`` replaced."""
    if not registry_map:
        return image
    normalised = _normalise_image(image)
    for prefix in sorted(registry_map, key=lambda p: (-len(p), p)):
        # A bare registry ("registry.example:5000") ends at "/"; a repository prefix also at a tag or digest.
        boundaries = "/:@" if "/" in prefix else "/"
        for candidate in (image, normalised):
            if candidate == prefix or (candidate.startswith(prefix) and (prefix.endswith("/") or candidate[len(prefix)] in boundaries)):
                return registry_map[prefix] + candidate[len(prefix):]
    return image


def _normalise_image(image: str) -> str:
    first, slash, rest = image.partition("/")
    if not slash:
        return "docker.io/library/" + image
    if "." in first or ":" in first or first == "localhost":
        return image
    return "docker.io/%s/%s" % (first, rest)


def known_nodes(objects: t.Iterable[t.Mapping[str, t.Any]]) -> list[str]:
    """Node names the backup knows: its Node objects and the pods' ``spec.nodeName``."""
    names = set()
    for obj in objects:
        gk = _gk(obj)
        if gk == NODE:
            names.add(_meta(obj).get("name") or "")
        elif gk == POD:
            names.add((obj.get("spec") or {}).get("nodeName") or "")
    names.discard("")
    return sorted(names)


def _pod_active(pod: t.Mapping[str, t.Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _pinned_to(pv_or_affinity: t.Mapping[str, t.Any], node: str) -> bool:
    terms = (((pv_or_affinity.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and node in (expr.get("values") or []):
                return True
    return False


# -- the backup, indexed ---------------------------------------------------------------------------


class _Index:
    """The backup's objects by reference, by kind and by namespace; duplicates keep the newest."""

    def __init__(self, objects: t.Iterable[t.Mapping[str, t.Any]]) -> None:
        self.by_ref: dict[Ref, Obj] = {}
        for obj in objects:
            if not isinstance(obj, t.Mapping) or not obj.get("kind") or not _meta(obj).get("name"):
                continue
            ref = ref_of(obj)
            old = self.by_ref.get(ref)
            if old is None or _rv(obj) > _rv(old):
                self.by_ref[ref] = t.cast(Obj, obj)
        self.by_kind: dict[GroupKind, list[Obj]] = {}
        self.by_kind_ns: dict[tuple[str, str, str], list[Obj]] = {}
        self.by_kind_name: dict[tuple[str, str, str], list[Obj]] = {}  # (kind, namespace, name): any group
        for ref in sorted(self.by_ref):
            obj = self.by_ref[ref]
            self.by_kind.setdefault((ref[0], ref[1]), []).append(obj)
            self.by_kind_ns.setdefault((ref[0], ref[1], ref[2]), []).append(obj)
            self.by_kind_name.setdefault((ref[1], ref[2], ref[3]), []).append(obj)
        self.crds: dict[GroupKind, Obj] = {}
        for crd in self.by_kind.get(CRD, []):
            spec = crd.get("spec") or {}
            self.crds[(spec.get("group") or "", (spec.get("names") or {}).get("kind") or "")] = crd

    def get(self, gk: GroupKind, namespace: str, name: str) -> t.Optional[Obj]:
        return self.by_ref.get((gk[0], gk[1], namespace, name))

    def kind(self, gk: GroupKind) -> list[Obj]:
        return self.by_kind.get(gk, [])

    def in_namespace(self, gk: GroupKind, namespace: str) -> list[Obj]:
        return self.by_kind_ns.get((gk[0], gk[1], namespace), [])

    def owner(self, owner_ref: t.Mapping[str, t.Any], namespace: str) -> t.Optional[Obj]:
        """The object an owner reference names: by group, kind and name (uid when both have one)."""
        group, kind, name = _group_of(owner_ref.get("apiVersion") or ""), owner_ref.get("kind") or "", owner_ref.get("name") or ""
        found = self.by_ref.get((group, kind, namespace, name)) or self.by_ref.get((group, kind, "", name))
        if found is None:
            return None
        uid = owner_ref.get("uid")
        if uid and _meta(found).get("uid") and _meta(found).get("uid") != uid:
            return None
        return found

    def is_custom(self, gk: GroupKind) -> bool:
        return gk in self.crds or (gk not in _BUILTIN and gk[0] not in _OTHER_BUILTIN_GROUPS)


# -- selection -------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Owner:
    """What a pod belongs to, after following its controller references."""

    outcome: str  # workload, custom, daemonset, mirror, missing
    ref: Ref  # the workload (or the pod itself for a bare pod), the DaemonSet, the missing owner, ...
    custom_owners: tuple[Ref, ...] = ()  # custom resources above the workload
    chain: tuple[Ref, ...] = ()  # every owner from the pod up
    note: str = ""


def _resolve(pod: Obj, index: _Index, cache: dict[tuple[str, str, str, str], _Owner]) -> _Owner:
    meta = _meta(pod)
    namespace = meta.get("namespace") or ""
    pod_ref = ref_of(pod)
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return _Owner("mirror", pod_ref)
    owner_ref = _controller_ref(pod)
    if owner_ref is None:
        return _Owner("workload", pod_ref)
    if owner_ref.get("kind") == "Node":
        return _Owner("mirror", pod_ref)
    key = (owner_ref.get("apiVersion") or "", owner_ref.get("kind") or "", namespace, owner_ref.get("name") or "")
    if key not in cache:
        cache[key] = _resolve_owner(owner_ref, namespace, _labels(pod).get("pod-template-hash", ""), index)
    return cache[key]


def _resolve_owner(owner_ref: t.Mapping[str, t.Any], namespace: str, template_hash: str, index: _Index) -> _Owner:
    chain: list[Ref] = []
    current: t.Optional[t.Mapping[str, t.Any]] = owner_ref
    while current is not None and len(chain) < 16:
        gk = (_group_of(current.get("apiVersion") or ""), current.get("kind") or "")
        wanted: Ref = (gk[0], gk[1], namespace, current.get("name") or "")
        if gk == DAEMON_SET:
            return _Owner("daemonset", wanted, chain=tuple(chain + [wanted]))
        obj = index.owner(current, namespace)
        if obj is None and gk == REPLICA_SET and template_hash and wanted[3].endswith("-" + template_hash):
            # The ReplicaSet is gone from the backup; its Deployment is named by the pod-template-hash.
            obj = index.get(DEPLOYMENT, namespace, wanted[3][: -len(template_hash) - 1])
        if obj is None:
            return _Owner("missing", wanted, chain=tuple(chain), note="%s is not in the backup" % _show(wanted))
        chain.append(ref_of(obj))
        current = _controller_ref(obj)
    workloads = [i for i, ref in enumerate(chain) if (ref[0], ref[1]) in _WORKLOAD_RANK]
    if not workloads:
        return _Owner("custom", chain[-1], chain=tuple(chain))
    top = max(workloads, key=lambda i: (_WORKLOAD_RANK[(chain[i][0], chain[i][1])], i))
    custom = tuple(ref for ref in chain if index.is_custom((ref[0], ref[1])))
    return _Owner("workload", chain[top], custom_owners=custom, chain=tuple(chain))


@dataclasses.dataclass
class _Candidate:
    owner: _Owner
    on_node: list[Obj] = dataclasses.field(default_factory=list)
    elsewhere: dict[str, int] = dataclasses.field(default_factory=dict)  # node -> active pods


@dataclasses.dataclass
class _Selection:
    workloads: dict[Ref, _Candidate]  # selected workloads (builtin, bare pods, custom resources)
    custom_owners: set[Ref]
    selected: list[dict[str, t.Any]]
    skipped: list[dict[str, t.Any]]
    partial: dict[Ref, int]  # moved with move_partial: the number of pods to start


def _entry(ref: Ref, index: _Index, reason: str, **extra: t.Any) -> dict[str, t.Any]:
    obj = index.by_ref.get(ref)
    api_version = (obj or {}).get("apiVersion") or ("%s/v1" % ref[0] if ref[0] else "v1")
    return dict({"kind": ref[1], "api_version": api_version, "namespace": ref[2], "name": ref[3], "reason": reason}, **extra)


def _pod_list(pods: t.Sequence[Obj]) -> str:
    names = sorted("%s/%s" % (_meta(p).get("namespace"), _meta(p).get("name")) for p in pods)
    shown = ", ".join(names[:5]) + (" and %d more" % (len(names) - 5) if len(names) > 5 else "")
    return ("pod " if len(names) == 1 else "pods ") + shown


def _select(index: _Index, node: str, options: PlanOptions, include_custom: list[CustomRef]) -> _Selection:
    cache: dict[tuple[str, str, str, str], _Owner] = {}
    candidates: dict[Ref, _Candidate] = {}
    on_node_owners: set[Ref] = set()
    pods = index.kind(POD)
    for pod in pods:
        bound = (pod.get("spec") or {}).get("nodeName") or ""
        if bound == node:
            owner = _resolve(pod, index, cache)
            candidates.setdefault(owner.ref, _Candidate(owner)).on_node.append(pod)
            on_node_owners.add(owner.ref)
    for pod in pods:  # a second pass: the same workloads' running pods on other nodes
        bound = (pod.get("spec") or {}).get("nodeName") or ""
        if bound and bound != node and _pod_active(pod) and _controller_ref(pod) is not None:
            owner = _resolve(pod, index, cache)
            if owner.ref in on_node_owners:
                elsewhere = candidates[owner.ref].elsewhere
                elsewhere[bound] = elsewhere.get(bound, 0) + 1

    excluded = set(options.exclude_namespaces)
    selection = _Selection({}, set(), [], [], {})
    for ref in sorted(candidates):
        cand = candidates[ref]
        owner, active = cand.owner, [p for p in cand.on_node if _pod_active(p)]
        pods_text = "%s on %s" % (_pod_list(cand.on_node), node)
        names = sorted(_meta(p).get("name") for p in cand.on_node)
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
                                                            "it (%s)" % (_show(ref), pods_text)))
                continue
            top = wanted[-1]
            selection.workloads[top] = cand
            selection.selected.append(_entry(top, index, "include_custom; its controller ran %s" % pods_text,
                                             pods=names, target_namespace=_map_ns(options, top[2])))
            continue
        gk = (ref[0], ref[1])
        others = sum(cand.elsewhere.values())
        if others and (gk == STATEFUL_SET or not options.move_partial):
            why = ("the ordinals still running would run twice" if gk == STATEFUL_SET
                   else "it keeps serving there and its controller replaces the lost pods; set move_partial to move it anyway")
            selection.skipped.append(_entry(ref, index, "still has %d pod%s on other nodes (%s): %s"
                                            % (others, "" if others == 1 else "s", ", ".join(sorted(cand.elsewhere)), why)))
            continue
        if gk == JOB and _job_finished(index.by_ref.get(ref)):
            selection.skipped.append(_entry(ref, index, "Job already finished"))
            continue
        reason = ("bare pod (no controller) on %s" % node) if gk == POD else "owns %s" % pods_text
        if others:
            reason += " (move_partial: %d more on other nodes stay; starts %d)" % (others, len(active))
            selection.partial[ref] = len(active)
        selection.workloads[ref] = cand
        selection.custom_owners.update(owner.custom_owners)
        selection.selected.append(_entry(ref, index, reason, pods=names, target_namespace=_map_ns(options, ref[2])))
        for middle in owner.chain:
            if (middle[0], middle[1]) == JOB and middle != ref:
                selection.skipped.append(_entry(middle, index, "created by %s, which moves (suspended until scale-up); its next run "
                                                               "starts in the target" % _show(ref)))
    for custom in include_custom:  # include_custom entries that run no pod on the node still move
        for obj in index.by_kind_name.get((custom.kind, custom.namespace, custom.name), []):
            if custom.matches(obj) and ref_of(obj) not in selection.workloads:
                selection.custom_owners.add(ref_of(obj))
    selection.selected.sort(key=lambda e: (e["namespace"], e["kind"], e["name"]))
    selection.skipped.sort(key=lambda e: (e["namespace"], e["kind"], e["name"]))
    return selection


def _job_finished(job: t.Optional[t.Mapping[str, t.Any]]) -> bool:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return True
    return False


def _map_ns(options: PlanOptions, namespace: str) -> str:
    return options.namespace_map.get(namespace, namespace) if namespace else namespace


# -- closure ---------------------------------------------------------------------------------------


def _pod_templates(obj: t.Mapping[str, t.Any], gk: GroupKind) -> list[tuple[t.Mapping[str, t.Any], t.Mapping[str, t.Any]]]:
    """(metadata, spec) of the pod template(s) of a workload; a bare pod is its own template."""
    spec = obj.get("spec") or {}
    if gk == POD:
        return [(_meta(obj), spec)]
    if gk == CRON_JOB:
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    if not template:
        return []
    return [(template.get("metadata") or {}, template.get("spec") or {})]


def _containers(spec: t.Mapping[str, t.Any]) -> list[t.Mapping[str, t.Any]]:
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
    for container in _containers(spec):
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
class _Closure:
    refs: set[Ref] = dataclasses.field(default_factory=set)
    warnings: list[str] = dataclasses.field(default_factory=list)
    host_path_workloads: set[Ref] = dataclasses.field(default_factory=set)
    synthetic_namespaces: set[str] = dataclasses.field(default_factory=set)
    reprovision: set[Ref] = dataclasses.field(default_factory=set)  # PVCs whose PV is provisioned anew in the target
    pod_labels: dict[Ref, list[t.Mapping[str, str]]] = dataclasses.field(default_factory=dict)


def _is_bootstrap_rbac(obj: t.Optional[t.Mapping[str, t.Any]], name: str) -> bool:
    return name.startswith("system:") or _labels(obj).get("kubernetes.io/bootstrapping") == "rbac-defaults"


def _binding_index(index: _Index) -> dict[tuple[str, str], list[Obj]]:
    """(namespace, service account) -> the bindings naming it; ("", namespace) for namespace-wide groups."""
    by_sa: dict[tuple[str, str], list[Obj]] = {}
    for gk in (ROLE_BINDING, CLUSTER_ROLE_BINDING):
        for binding in index.kind(gk):
            name = _meta(binding).get("name") or ""
            if _is_bootstrap_rbac(binding, name):
                continue
            keys = set()
            for subject in binding.get("subjects") or []:
                kind, subject_name = subject.get("kind"), subject.get("name") or ""
                if kind == "ServiceAccount":
                    keys.add((subject.get("namespace") or _meta(binding).get("namespace") or "", subject_name))
                elif kind == "User" and subject_name.startswith("system:serviceaccount:"):
                    parts = subject_name.split(":")
                    if len(parts) == 4:
                        keys.add((parts[2], parts[3]))
                elif kind == "Group" and subject_name.startswith("system:serviceaccounts:"):
                    keys.add(("", subject_name.split(":", 2)[2]))
            for key in keys:
                by_sa.setdefault(key, []).append(binding)
    return by_sa


def _close(index: _Index, selection: _Selection, node: str, options: PlanOptions) -> _Closure:
    closure = _Closure()
    refs = closure.refs
    missing: dict[tuple[GroupKind, str, str], set[str]] = {}
    needs: list[_Need] = []

    for ref, cand in sorted(selection.workloads.items()):
        refs.add(ref)
        gk = (ref[0], ref[1])
        obj = index.by_ref[ref]
        if index.is_custom(gk):
            templates = [(_meta(p), p.get("spec") or {}) for p in cand.on_node if _pod_active(p)]
        else:
            templates = list(_pod_templates(obj, gk))
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
                        "to the same path on %s%s" % (_show(ref), path, volume, where, hint))
        if gk == STATEFUL_SET:
            replicas = (obj.get("spec") or {}).get("replicas")
            for template in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
                pattern = re.compile(r"^%s-%s-(\d+)$" % (re.escape(_meta(template).get("name") or ""), re.escape(ref[3])))
                for pvc in index.in_namespace(PVC, ref[2]):
                    match = pattern.match(_meta(pvc).get("name") or "")
                    if match:
                        refs.add(ref_of(pvc))
                        if replicas is not None and int(match.group(1)) >= int(replicas):
                            closure.warnings.append("%s keeps %s of an ordinal beyond its %s replicas: carried as well"
                                                    % (_show(ref), _show(ref_of(pvc)), replicas))
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
                missing.setdefault((need.gk, namespace, need.name), set()).add(_show(need.by))
            continue
        refs.add(ref_of(target))
        if need.gk == SERVICE_ACCOUNT:
            for pull in target.get("imagePullSecrets") or []:
                secret = index.get(SECRET, namespace, pull.get("name") or "")
                if secret is not None:
                    refs.add(ref_of(secret))
                elif pull.get("name"):
                    missing.setdefault((SECRET, namespace, pull["name"]), set()).add(_show(ref_of(target)))
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


def _add_role(index: _Index, binding: t.Mapping[str, t.Any], refs: set[Ref], warnings: list[str]) -> None:
    role_ref = binding.get("roleRef") or {}
    kind, name = role_ref.get("kind") or "", role_ref.get("name") or ""
    namespace = _meta(binding).get("namespace") or "" if kind == "Role" else ""
    role = index.get((RBAC, kind), namespace, name)
    if role is None:
        if not (kind == "ClusterRole" and _is_bootstrap_rbac(None, name)) and name not in ("admin", "edit", "view", "cluster-admin"):
            warnings.append("%s binds %s %s, which is not in the backup" % (_show(ref_of(binding)), kind, name))
        return
    if not _is_bootstrap_rbac(role, name):
        refs.add(ref_of(role))


def _close_volumes(index: _Index, closure: _Closure, node: str, options: PlanOptions) -> None:
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
                                        "empty volume" % (_show(ref), spec["volumeName"]))
                closure.reprovision.add(ref)
            continue
        pv_spec = pv.get("spec") or {}
        pv_name = _meta(pv).get("name") or ""
        if _pinned_to(pv, node):
            closure.refs.add(ref_of(pv))
            if not options.target_node:
                closure.warnings.append("PersistentVolume %s (%s) is pinned to the failed node %s: set target_node to re-home it, "
                                        "or its pods cannot start" % (pv_name, _show(ref), node))
        elif (_meta(pv).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by"):
            closure.reprovision.add(ref)
            provisioner = _meta(pv)["annotations"]["pv.kubernetes.io/provisioned-by"]
            closure.warnings.append("%s: PersistentVolume %s was provisioned by %s and its data is in no node backup; the target "
                                    "provisions a new, empty volume (storage class %s)" % (
                                        _show(ref), pv_name, provisioner, _storage_class(options, spec.get("storageClassName"))))
        else:
            closure.refs.add(ref_of(pv))
            kinds = sorted(k for k in pv_spec if isinstance(pv_spec[k], t.Mapping) and k not in (
                "capacity", "claimRef", "nodeAffinity", "mountOptions"))
            closure.warnings.append("%s: PersistentVolume %s (%s) is carried as it is: the target nodes must reach that storage"
                                    % (_show(ref), pv_name, ", ".join(kinds) or "static"))


def _storage_class(options: PlanOptions, name: t.Optional[str]) -> str:
    if name is None:
        return "(default)"
    return options.storage_class_map.get(name, name) or '""'


def _close_network_and_policies(index: _Index, selection: _Selection, closure: _Closure) -> None:
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


def _close_custom(index: _Index, closure: _Closure) -> None:
    for ref in sorted(closure.refs):
        gk = (ref[0], ref[1])
        if index.is_custom(gk):
            crd = index.crds.get(gk)
            if crd is None:
                closure.warnings.append("%s is a custom resource whose CustomResourceDefinition is not in the backup: install it in "
                                        "the target first" % _show(ref))
            else:
                closure.refs.add(ref_of(crd))


# -- transforms ------------------------------------------------------------------------------------


class _Transformer:
    """Turns backed-up objects into manifests for the target."""

    def __init__(self, index: _Index, closure: _Closure, selection: _Selection, node: str, options: PlanOptions) -> None:
        self.index, self.closure, self.selection, self.node, self.options = index, closure, selection, node, options
        self.carried = closure.refs

    def ns(self, namespace: str) -> str:
        return _map_ns(self.options, namespace)

    def storage_class(self, name: t.Optional[str]) -> t.Optional[str]:
        return self.options.storage_class_map.get(name, name) if name else name

    def manifest(self, ref: Ref) -> Obj:
        obj = json.loads(json.dumps(self.index.by_ref[ref]))  # a deep copy that is JSON for sure
        obj.pop("status", None)
        self.metadata(obj)
        gk = (ref[0], ref[1])
        handler = getattr(self, "_" + gk[1].lower(), None) if gk in _BUILTIN or gk == CRD else None
        if handler is not None:
            handler(obj, ref)
        self.stamp(obj)
        return obj

    def metadata(self, obj: Obj) -> None:
        meta = obj.setdefault("metadata", {})
        owners = [o for o in meta.get("ownerReferences") or [] if self.carries_owner(o, meta.get("namespace") or "")]
        for field in _METADATA_DROP:
            meta.pop(field, None)
        if meta.get("namespace"):
            meta["namespace"] = self.ns(meta["namespace"])
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _ANNOTATIONS_DROP}
        if owners:
            annotations[OWNERS_ANNOTATION] = json.dumps(
                [{"apiVersion": o.get("apiVersion"), "kind": o.get("kind"), "name": o.get("name"), "controller": bool(o.get("controller"))}
                 for o in sorted(owners, key=lambda o: (o.get("kind") or "", o.get("name") or ""))], sort_keys=True)
        meta["annotations"] = annotations
        finalizers = [f for f in meta.get("finalizers") or [] if f not in _SERVER_FINALIZERS]
        if finalizers:
            meta["finalizers"] = finalizers
        else:
            meta.pop("finalizers", None)

    def carries_owner(self, owner_ref: t.Mapping[str, t.Any], namespace: str) -> bool:
        """Whether the plan recreates the owner an owner reference names (in the namespace, or cluster-scoped)."""
        group, kind, name = _group_of(owner_ref.get("apiVersion") or ""), owner_ref.get("kind") or "", owner_ref.get("name") or ""
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
        pass

    def _deployment(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "replicas")
        self.template(spec.get("template") or {}, ref)

    _replicaset = _deployment

    def _statefulset(self, obj: Obj, ref: Ref) -> None:
        self._deployment(obj, ref)
        for template in obj["spec"].get("volumeClaimTemplates") or []:
            template.pop("status", None)
            (template.get("metadata") or {}).pop("creationTimestamp", None)
            template_spec = template.get("spec") or {}
            if template_spec.get("storageClassName"):
                template_spec["storageClassName"] = self.storage_class(template_spec["storageClassName"])

    def _job(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "suspend")
        if not spec.get("manualSelector"):
            spec.pop("selector", None)
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            for label in _JOB_CONTROLLER_LABELS:
                labels.pop(label, None)
        self.template(spec.get("template") or {}, ref)

    def _cronjob(self, obj: Obj, ref: Ref) -> None:
        spec = obj.setdefault("spec", {})
        self.stop(obj, spec, "suspend")
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
        for label in _NODE_DERIVED_POD_LABELS:  # copied from the old node at binding; the new node's come at the new binding
            (meta.get("labels") or {}).pop(label, None)
        for field in ("ephemeralContainers", "preemptionPolicy", "priority"):  # not creatable, or set by admission from the class
            spec.pop(field, None)
        tokens = {v.get("name") for v in spec.get("volumes") or [] if _TOKEN_VOLUME_RE.match(v.get("name") or "") and v.get("projected")}
        if tokens:
            spec["volumes"] = [v for v in spec["volumes"] if v.get("name") not in tokens]
            for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if container.get("volumeMounts"):
                    container["volumeMounts"] = [m for m in container["volumeMounts"] if m.get("name") not in tokens]
        gates = [g for g in spec.get("schedulingGates") or [] if g.get("name") != SCHEDULING_GATE]
        spec["schedulingGates"] = gates + [{"name": SCHEDULING_GATE}]
        self.pod_spec(spec, ref)

    def stop(self, obj: Obj, spec: Obj, field: str) -> None:
        annotations = obj["metadata"].setdefault("annotations", {})
        if field == "replicas":
            original = spec.get("replicas")
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
        for container in _containers(spec):
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
        """(whether the term named the failed node, the term without it)."""
        pinned = False
        for field, key in (("matchExpressions", HOSTNAME_LABEL), ("matchFields", "metadata.name")):
            kept = []
            for expr in term.get(field) or []:
                if expr.get("key") == key and expr.get("operator") == "In" and self.node in (expr.get("values") or []):
                    pinned = True
                    values = [v for v in expr["values"] if v != self.node]
                    if values:
                        kept.append(dict(expr, values=values))
                    continue
                kept.append(expr)
            if kept:
                term[field] = kept
            else:
                term.pop(field, None)
        return pinned, term


# -- the plan --------------------------------------------------------------------------------------


def _sort_key(ref: Ref) -> tuple[str, int, str, str, str]:
    stage, order = _BUILTIN.get((ref[0], ref[1]), ("custom", 0))
    return (stage, order, ref[1] if stage == "custom" else "", ref[2], ref[3])


def _scale_up(selection: _Selection, index: _Index, options: PlanOptions) -> list[dict[str, t.Any]]:
    items = []
    for ref in sorted(selection.workloads, key=_sort_key):
        gk = (ref[0], ref[1])
        obj = index.by_ref[ref]
        spec = obj.get("spec") or {}
        base = {"kind": ref[1], "api_version": obj.get("apiVersion"), "namespace": _map_ns(options, ref[2]), "name": ref[3]}
        if gk in (DEPLOYMENT, REPLICA_SET, STATEFUL_SET):
            replicas = selection.partial.get(ref, 1 if spec.get("replicas") is None else int(spec["replicas"]))
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


def build_plan(objects: t.Iterable[t.Mapping[str, t.Any]], failed_node: str, options: PlanOptions) -> dict[str, t.Any]:
    """The migration plan for ``failed_node``'s workloads, from every object of the source backup.

    Raises ``MigrationError`` for a node the backup does not know (naming those it knows), for
    unusable options and when the namespace map makes two objects one.
    """
    include_custom = options.validate()
    index = _Index(objects)
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
    selection = _select(index, failed_node, options, include_custom)
    closure = _close(index, selection, failed_node, options)
    transformer = _Transformer(index, closure, selection, failed_node, options)

    stages: dict[str, list[Obj]] = {name: [] for name in STAGES}
    seen: dict[tuple[str, str, str, str], Ref] = {}
    manifests: list[tuple[Ref, Obj]] = [(ref, transformer.manifest(ref)) for ref in sorted(closure.refs, key=_sort_key)]
    for namespace in sorted(closure.synthetic_namespaces):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": _map_ns(options, namespace)}}
        transformer.stamp(manifest)
        manifests.append((("", "Namespace", "", namespace), manifest))
    for ref, manifest in sorted(manifests, key=lambda item: _sort_key((item[0][0], item[0][1], _meta(item[1]).get("namespace") or "",
                                                                       _meta(item[1]).get("name") or ""))):
        target = (ref[0], ref[1], _meta(manifest).get("namespace") or "", _meta(manifest).get("name") or "")
        if target in seen:
            raise MigrationError(
                "namespace_map makes %s and %s the same object %s in the target" % (_show(seen[target]), _show(ref), _show(target)),
                "map these namespaces to different namespaces",
            )
        seen[target] = ref
        stage = _BUILTIN.get((ref[0], ref[1]), ("custom", 0))[0]
        stages[stage].append(manifest)

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
        "stages": [{"name": name, "objects": stages[name]} for name in STAGES if stages[name]],
        "scale_up": _scale_up(selection, index, options),
        "local_data": [],
        "workload_state": [],
        "warnings": _unique(warnings),
    }


def _unique(items: t.Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _namespace_name_warnings(index: _Index, closure: _Closure, options: PlanOptions) -> list[str]:
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
        for _m, spec in _pod_templates(obj, (ref[0], ref[1])) if (ref[0], ref[1]) in _BUILTIN else []:
            texts.extend(str(env.get("value") or "") for c in _containers(spec) for env in c.get("env") or [])
        for old in renamed:
            if any(".%s.svc" % old in text for text in texts):
                found.setdefault(old, set()).add(_show(ref))
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
        for _meta_, pod_spec in _pod_templates(obj, _gk(obj)):
            name = pod_spec.get("priorityClassName") or ""
            if name and not name.startswith("system-"):
                priorities.add(name)
    warnings = []
    if classes:
        warnings.append("the target cluster needs these StorageClasses (or map them with storage_class_map): %s" % ", ".join(sorted(classes)))
    if priorities:
        warnings.append("the target cluster needs these PriorityClasses: %s" % ", ".join(sorted(priorities)))
    return warnings


# -- the node backup's data, matched to the plan -------------------------------------------------------


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
    plan["warnings"] = _unique(warnings)
    return plan
