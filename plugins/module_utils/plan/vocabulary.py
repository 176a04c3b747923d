# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan's vocabulary: its schema, labels, annotations and stages, the kinds it knows, and small helpers over objects."""

from __future__ import annotations

import re
import typing as t


# 2: Secrets hold no values; the plan's secret_data says where they are (plan/secret_data.py).
SCHEMA = 2
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
BUILTIN: dict[GroupKind, tuple[str, int]] = {
    ("", "Namespace"): ("namespaces", 0),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ("crds", 0),
    ("", "ServiceAccount"): ("rbac", 0),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("rbac", 1),
    ("rbac.authorization.k8s.io", "Role"): ("rbac", 2),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("rbac", 3),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("rbac", 4),
    ("", "ConfigMap"): ("config", 0),
    ("", "Secret"): ("config", 1),
    ("storage.k8s.io", "StorageClass"): ("storage", 0),
    ("", "PersistentVolume"): ("storage", 1),
    ("", "PersistentVolumeClaim"): ("storage", 2),
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
OTHER_BUILTIN_GROUPS = frozenset((
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
STORAGE_CLASS = ("storage.k8s.io", "StorageClass")
NO_PROVISIONER = "kubernetes.io/no-provisioner"
# A manifest with this annotation is created only where the target lacks the object (never taken over).
APPLY_ANNOTATION = PREFIX + "apply"
APPLY_IF_ABSENT = "if-absent"
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
WORKLOAD_RANK = {DEPLOYMENT: 2, CRON_JOB: 2, REPLICA_SET: 1, JOB: 1, STATEFUL_SET: 1}
_PARTIAL_OK = (DEPLOYMENT, REPLICA_SET, JOB, CRON_JOB)

METADATA_DROP = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences")
SERVER_FINALIZERS = frozenset(("kubernetes.io/pvc-protection", "kubernetes.io/pv-protection", "foregroundDeletion", "orphan",
                               "batch.kubernetes.io/job-tracking"))
ANNOTATIONS_DROP = frozenset((
    "kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas",
    "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node", "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner", "kubernetes.io/service-account.uid",
    "endpoints.kubernetes.io/last-change-trigger-time", "batch.kubernetes.io/job-tracking",
    "control-plane.alpha.kubernetes.io/leader", "kubernetes.io/config.seen", "kubernetes.io/config.source",
))
NODE_DERIVED_POD_LABELS = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region")
JOB_CONTROLLER_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
TOKEN_VOLUME_RE = re.compile(r"^kube-api-access-[a-z0-9]{5}$")


# -- small helpers over objects ------------------------------------------------------------------


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def gk(obj: t.Mapping[str, t.Any]) -> GroupKind:
    return (group_of(obj.get("apiVersion") or ""), obj.get("kind") or "")


def meta(obj: t.Mapping[str, t.Any]) -> t.Mapping[str, t.Any]:
    return obj.get("metadata") or {}


def ref_of(obj: t.Mapping[str, t.Any]) -> Ref:
    metadata = meta(obj)
    return (group_of(obj.get("apiVersion") or ""), obj.get("kind") or "", metadata.get("namespace") or "", metadata.get("name") or "")


def show(ref: Ref) -> str:
    return "%s %s" % (ref[1], "%s/%s" % (ref[2], ref[3]) if ref[2] else ref[3])


def labels(obj: t.Optional[t.Mapping[str, t.Any]]) -> t.Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def controller_ref(obj: t.Mapping[str, t.Any]) -> t.Optional[t.Mapping[str, t.Any]]:
    owners = meta(obj).get("ownerReferences") or []
    for owner in owners:
        if owner.get("controller"):
            return owner
    return owners[0] if owners else None


def rv(obj: t.Mapping[str, t.Any]) -> int:
    value = str(meta(obj).get("resourceVersion") or "")
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
        group_kind = gk(obj)
        if group_kind == NODE:
            names.add(meta(obj).get("name") or "")
        elif group_kind == POD:
            names.add((obj.get("spec") or {}).get("nodeName") or "")
    names.discard("")
    return sorted(names)


def pod_active(pod: t.Mapping[str, t.Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pinned_to(pv_or_affinity: t.Mapping[str, t.Any], node: str) -> bool:
    terms = (((pv_or_affinity.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == HOSTNAME_LABEL and expr.get("operator") == "In" and node in (expr.get("values") or []):
                return True
    return False
