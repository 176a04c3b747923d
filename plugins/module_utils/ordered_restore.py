# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply a migration plan to the target cluster, stage by stage, with server-side apply.

The plan format is described in docs of migration_plan (schema 2): ``stages`` is a list of
``{name, objects}`` applied in order. Within a stage, Namespaces go first, then
CustomResourceDefinitions, then everything else (a hand-written single stage still works);
the objects of one wave are applied concurrently (a small thread pool, one HTTP PATCH with
``application/apply-patch+yaml`` each). Before the next stage starts, what the next stage
needs is awaited per kind (``readiness``): Namespace Active, CRD Established and served by
discovery, PVC Bound when it can bind now, Deployment/StatefulSet observedGeneration, Service
with a cluster IP; anything else only has to exist, which the apply answer proves.

Re-running is safe and cheap: server-side apply is idempotent, and each object's state is
read just before it is applied (one LIST per kind and namespace, or a GET for a few objects),
so every object is reported created, updated or unchanged by comparing the object before
and after (``classify``), ignoring bookkeeping (managedFields, resourceVersion, status).
A second run over an applied plan is unchanged. Check mode sends the same requests with
``dryRun=All``.

The first failure stops the run at the end of its wave: what was applied stays applied, and
the error names the object and the API server's reason. ``scale_up`` (state ``scaled``) sets
replicas (or unsuspends CronJobs and Jobs) once data and state are back, and removes the
migration annotations; a later re-run of the resources stage leaves scaled-up workloads alone.

Everything that decides (plan loading, ordering, readiness, classification, bookkeeping) is
a plain function here, unit-tested without a server; ``Cluster`` is the only code that talks
HTTP.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import os
import re
import threading
import time
import typing as t
from urllib.parse import quote

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    APPLY_ANNOTATION,
    APPLY_IF_ABSENT,
    RUN_ID_KEY,
    SCHEMA as PLAN_SCHEMA,
)

try:
    import kubernetes.client.exceptions
    import kubernetes.client.rest
    import urllib3.exceptions
    from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - make_k8s_client reports it
    HAS_KUBERNETES = False

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    HAS_YAML = False

DEFAULT_FIELD_MANAGER = "hybridcloud.migration"
SCALE_UP_MANAGER_SUFFIX = "-scale-up"
REPLICAS_ANNOTATION = "migration.hybridcloud.io/replicas"
SUSPEND_ANNOTATION = "migration.hybridcloud.io/suspend"
# Set by migrate.yml's state phase on a workload whose container runs from its checkpoint image:
# ``checkpoint.migration.hybridcloud.io/<container>: <image>``.
CHECKPOINT_IMAGE_PREFIX = "checkpoint.migration.hybridcloud.io/"
# Bare pods wait for their data behind this scheduling gate (the planner adds it); scale-up removes it.
RESTORE_GATE = "migration.hybridcloud.io/restore"
# Schema 1 plans hold Secret values inline (hand-written ones still may).
READABLE_SCHEMAS = (1, PLAN_SCHEMA)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"
# Set by the API server, never applied (a resourceVersion would even turn the apply into a precondition).
SERVER_SET_METADATA = (
    "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds",
)
# A group of this many objects of one kind in one namespace is read with one LIST, smaller ones with GETs.
LIST_THRESHOLD = 4
RETRIED_STATUSES = frozenset((429, 500, 502, 503, 504))
ATTEMPTS = 3
DEFAULT_WAIT_TIMEOUT = 300
POLL_FIRST = 0.05
POLL_MAX = 2.0

# Ordering inside one stage: Namespaces, then CRDs (awaited and discovered), then the rest.
WAVE_RANK = {"Namespace": 0, "CustomResourceDefinition": 1}
GENERATION_KINDS = frozenset(("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"))
REPLICA_KINDS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "ReplicaSet": "apps/v1", "ReplicationController": "v1"}
SUSPEND_KINDS = {"CronJob": "batch/v1", "Job": "batch/v1"}

Manifest = dict[str, t.Any]


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ObjectId:
    """Who an object is, for results and messages."""

    kind: str
    api_version: str
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: t.Mapping[str, t.Any]) -> "ObjectId":
        metadata = manifest.get("metadata") or {}
        return cls(str(manifest.get("kind", "")), str(manifest.get("apiVersion", "")), str(metadata.get("namespace") or ""), str(metadata.get("name", "")))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity across versions of one group (apps/v1 and apps/v1beta2 name the same object)."""
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return "%s %s" % (self.kind, "%s/%s" % (self.namespace, self.name) if self.namespace else self.name)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    objects: list[Manifest]


@dataclasses.dataclass(frozen=True)
class Plan:
    stages: list[Stage]
    scale_up: list[dict[str, t.Any]]
    run_id: str = ""
    # Where the values of the plan's Secrets are (plan/secret_data.py); empty when they are inline.
    secret_data: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @property
    def stamped_run_id(self) -> str:
        """The run id, when the plan's objects carry it as their label (plans of migration_plan do);
        only then are live objects without it someone else's (hand-written stages are applied as given)."""
        stamped = any(((m.get("metadata") or {}).get("labels") or {}).get(RUN_ID_KEY) == self.run_id for s in self.stages for m in s.objects)
        return self.run_id if self.run_id and stamped else ""

    @property
    def crd_kinds(self) -> set[tuple[str, str]]:
        """(group, kind) of every custom resource kind a CRD of this plan defines."""
        kinds = set()
        for stage in self.stages:
            for manifest in stage.objects:
                if manifest.get("kind") == "CustomResourceDefinition":
                    spec = manifest.get("spec") or {}
                    kinds.add((str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))))
        return kinds


def _invalid(problem: str) -> MigrationError:
    return MigrationError(problem, "give a plan made by hybridcloud.migration.migration_plan (schema %d), or fix the object" % PLAN_SCHEMA)


def read_plan_file(path: str) -> dict[str, t.Any]:
    """A plan saved as JSON (or YAML) by the migration_plan module or by hand."""
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except OSError as err:
        raise MigrationError("Cannot read the plan file %s: %s" % (path, err.strerror or err), "give the path of the plan JSON") from err
    try:
        document = json.loads(text)
    except ValueError:
        if not HAS_YAML:
            raise _invalid("The plan file %s is not JSON" % path) from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise _invalid("The plan file %s is neither JSON nor YAML: %s" % (path, err)) from err
    if not isinstance(document, dict):
        raise _invalid("The plan file %s does not hold a plan (a mapping with stages)" % path)
    return document


def clean_manifest(manifest: t.Mapping[str, t.Any]) -> Manifest:
    """A copy without what the API server sets (status, uid, resourceVersion, managedFields, ...)."""
    cleaned = copy.deepcopy(dict(manifest))
    cleaned.pop("status", None)
    metadata = dict(cleaned.get("metadata") or {})
    for key in SERVER_SET_METADATA:
        metadata.pop(key, None)
    cleaned["metadata"] = metadata
    return cleaned


def _check_object(manifest: t.Any, where: str) -> None:
    if not isinstance(manifest, dict):
        raise _invalid("%s is not an object manifest (a mapping)" % where)
    for key in ("apiVersion", "kind"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise _invalid("%s has no %s" % (where, key))
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise _invalid("%s (%s) has no metadata.name" % (where, manifest["kind"]))
    if metadata.get("generateName") and not metadata.get("name"):
        raise _invalid("%s uses generateName: a restore needs fixed names to be repeatable" % where)


def load_plan(
    plan: t.Optional[t.Mapping[str, t.Any]] = None,
    plan_file: t.Optional[str] = None,
    stages: t.Optional[t.Sequence[t.Any]] = None,
    scale_up: t.Optional[t.Sequence[t.Any]] = None,
) -> Plan:
    """Validate and normalise what the module was given: a plan, a plan file, or bare stages."""
    document: dict[str, t.Any]
    if plan_file:
        document = read_plan_file(plan_file)
    elif plan is not None:
        document = dict(plan)
    else:
        document = {"stages": list(stages or [])}
    schema = document.get("schema", PLAN_SCHEMA)
    if schema not in READABLE_SCHEMAS:
        raise MigrationError(
            "The plan has schema %r; this module reads schemas %s" % (schema, " and ".join(map(str, READABLE_SCHEMAS))),
            "make the plan with the migration_plan module of the same collection version",
        )
    raw_stages = document.get("stages") or []
    if not isinstance(raw_stages, list):
        raise _invalid("The plan's stages is not a list")
    seen: dict[tuple[str, str, str, str], str] = {}
    parsed: list[Stage] = []
    for index, raw in enumerate(raw_stages):
        if not isinstance(raw, dict):
            raise _invalid("Stage %d of the plan is not a mapping with name and objects" % (index + 1))
        name = str(raw.get("name") or "stage-%d" % (index + 1))
        objects = raw.get("objects") or []
        if not isinstance(objects, list):
            raise _invalid("The objects of stage %s are not a list" % name)
        cleaned = []
        for position, manifest in enumerate(objects):
            _check_object(manifest, "Object %d of stage %s" % (position + 1, name))
            identity = ObjectId.of(manifest)
            if identity.key in seen:
                raise _invalid("%s appears twice in the plan (stages %s and %s)" % (identity, seen[identity.key], name))
            seen[identity.key] = name
            cleaned.append(clean_manifest(manifest))
        parsed.append(Stage(name, cleaned))
    items = scale_up if scale_up is not None else document.get("scale_up") or []
    if not isinstance(items, list):
        raise _invalid("The plan's scale_up is not a list")
    secret_data = document.get("secret_data") or {}
    if not isinstance(secret_data, dict):
        raise _invalid("The plan's secret_data is not a mapping")
    return Plan(parsed, [dict(item) for item in items], str(document.get("run_id") or ""), dict(secret_data))


def masked(value: t.Any) -> t.Any:
    """``value`` (a plan, stages, or a manifest) with every Secret's data replaced, for task output."""
    if isinstance(value, list):
        return [masked(item) for item in value]
    if not isinstance(value, dict):
        return value
    result = {key: masked(item) for key, item in value.items()}
    if value.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(value.get(key), dict):
                result[key] = {name: "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" for name in value[key]}
    return result


# --------------------------------------------------------------------------------------------
# Ordering, readiness and classification (pure)
# --------------------------------------------------------------------------------------------
def waves(objects: t.Sequence[Manifest]) -> list[list[Manifest]]:
    """The objects of one stage in the order they can be applied: Namespaces, CRDs, the rest."""
    ranked: dict[int, list[Manifest]] = {}
    for manifest in objects:
        ranked.setdefault(WAVE_RANK.get(str(manifest.get("kind")), len(WAVE_RANK)), []).append(manifest)
    return [ranked[rank] for rank in sorted(ranked)]


@dataclasses.dataclass(frozen=True)
class Readiness:
    """Whether the next stage may rely on an object, and if not what is awaited or why it never will be."""

    ready: bool
    waiting_for: str = ""
    note: str = ""
    failure: str = ""


def _conditions(live: t.Mapping[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    return {str(c.get("type")): c for c in ((live.get("status") or {}).get("conditions") or []) if isinstance(c, dict)}


def storage_class_modes(classes: t.Iterable[t.Mapping[str, t.Any]]) -> tuple[dict[str, str], str]:
    """(name -> volumeBindingMode, name of the default class or '') from a StorageClass list."""
    modes: dict[str, str] = {}
    default = ""
    for item in classes:
        metadata = item.get("metadata") or {}
        name = str(metadata.get("name", ""))
        modes[name] = str(item.get("volumeBindingMode") or "Immediate")
        annotations = metadata.get("annotations") or {}
        if "true" in (annotations.get("storageclass.kubernetes.io/is-default-class"), annotations.get("storageclass.beta.kubernetes.io/is-default-class")):
            default = name
    return modes, default


def pvc_readiness(pvc: t.Mapping[str, t.Any], modes: t.Mapping[str, str], default_class: str = "") -> Readiness:
    """Bound is awaited only when the claim can bind now: pre-bound to a volume, or an Immediate class.

    A WaitForFirstConsumer claim binds when its first pod is scheduled, and restored workloads
    are at 0 replicas until their data is back: waiting for it would always time out.
    """
    spec = pvc.get("spec") or {}
    phase = str((pvc.get("status") or {}).get("phase") or "Pending")
    if phase == "Bound":
        return Readiness(True)
    if phase == "Lost":
        return Readiness(False, failure="its volume %s is lost (phase Lost)" % spec.get("volumeName", ""))
    if spec.get("volumeName"):
        return Readiness(False, waiting_for="phase Bound to PersistentVolume %s (phase %s)" % (spec["volumeName"], phase))
    cls = spec.get("storageClassName")
    if cls is None:
        cls = default_class
    if not cls:
        return Readiness(True, note="no storage class and no volume named: it binds when a matching PersistentVolume appears; not waited for")
    mode = modes.get(cls)
    if mode is None:
        return Readiness(True, note="storage class %s does not exist in the target cluster: it cannot bind yet; not waited for" % cls)
    if mode == "WaitForFirstConsumer":
        return Readiness(True, note="storage class %s binds on first consumer: it binds once its pod is scheduled after scale-up; not waited for" % cls)
    return Readiness(False, waiting_for="phase Bound (storage class %s, phase %s)" % (cls, phase))


def readiness(kind: str, live: t.Mapping[str, t.Any], modes: t.Optional[t.Mapping[str, str]] = None, default_class: str = "") -> Readiness:
    """What a kind must show before the next stage: the wait rules of the restore."""
    status = live.get("status") or {}
    if kind == "Namespace":
        phase = status.get("phase") or "Pending"
        return Readiness(phase == "Active", waiting_for="phase Active (phase %s)" % phase)
    if kind == "CustomResourceDefinition":
        conditions = _conditions(live)
        names = conditions.get("NamesAccepted") or {}
        if names.get("status") == "False":
            return Readiness(False, failure="its names are not accepted: %s" % names.get("message", names.get("reason", "")))
        established = conditions.get("Established") or {}
        return Readiness(established.get("status") == "True", waiting_for="condition Established")
    if kind == "PersistentVolumeClaim":
        return pvc_readiness(live, dict(modes or {}), default_class)
    if kind in GENERATION_KINDS:
        generation = (live.get("metadata") or {}).get("generation") or 0
        observed = status.get("observedGeneration") or 0
        return Readiness(observed >= generation, waiting_for="status.observedGeneration %s to reach generation %s" % (observed, generation))
    if kind == "Service":
        spec = live.get("spec") or {}
        return Readiness(spec.get("type") == "ExternalName" or bool(spec.get("clusterIP")), waiting_for="a cluster IP")
    return Readiness(True)


def comparable(obj: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """An object without what changes with no change of content (bookkeeping and status)."""
    result = {key: value for key, value in obj.items() if key not in ("status", "apiVersion", "kind")}
    metadata = {key: value for key, value in (obj.get("metadata") or {}).items() if key not in ("managedFields", "resourceVersion")}
    result["metadata"] = metadata
    return result


def applied_at(obj: t.Optional[t.Mapping[str, t.Any]], field_manager: str) -> t.Optional[str]:
    """When ``field_manager``'s server-side apply last changed ``obj`` (its managedFields entry), or None."""
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == field_manager and entry.get("operation") == "Apply" and not entry.get("subresource"):
            return str(entry.get("time") or "")
    return None


def classify(before: t.Optional[t.Mapping[str, t.Any]], after: t.Mapping[str, t.Any], status: int,
             field_manager: str = DEFAULT_FIELD_MANAGER) -> str:
    """created, updated or unchanged, from the object before the apply, the answer, and its HTTP status.

    Content is compared without bookkeeping. When it differs, the change may also be someone
    else's, made between our read and our apply (a controller annotating a Deployment): the
    API server stamps our manager's managedFields entry with a new time exactly when our apply
    changes the object (in a dry run too), so that entry tells whose change it was.
    """
    if status == 201:
        return "created"
    if before is None:
        return "updated"  # it appeared between our read and our apply
    if comparable(before) == comparable(after):
        return "unchanged"
    ours_before, ours_after = applied_at(before, field_manager), applied_at(after, field_manager)
    if ours_before is not None and ours_before == ours_after:
        return "unchanged"  # not our change
    return "updated"


def keep_live_scale(manifest: Manifest, live: t.Optional[t.Mapping[str, t.Any]]) -> tuple[Manifest, str]:
    """Leave a workload that was scaled up already (its migration annotation is gone) at its replicas.

    The plan holds workloads at 0 replicas (CronJobs suspended) with the original value in an
    annotation; ``scaled`` restores the value and removes the annotation. A later re-run of the
    resources stage must not scale them back to 0: it applies them without those fields.
    """
    if live is None:
        return manifest, ""
    if manifest.get("kind") == "Pod":
        return _keep_live_ungated(manifest, live)
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    live_annotations = (live.get("metadata") or {}).get("annotations") or {}
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        return manifest, ""
    for annotation, field in ((REPLICAS_ANNOTATION, "replicas"), (SUSPEND_ANNOTATION, "suspend")):
        if annotation in annotations and annotation not in live_annotations and field in spec:
            kept = copy.deepcopy(manifest)
            del kept["metadata"]["annotations"][annotation]
            if not kept["metadata"]["annotations"]:
                del kept["metadata"]["annotations"]
            del kept["spec"][field]
            value = (live.get("spec") or {}).get(field)
            return kept, "scaled up already: spec.%s left at %s" % (field, json.dumps(value))
    return manifest, ""


def keep_checkpoint_images(manifest: Manifest, live: t.Optional[t.Mapping[str, t.Any]]) -> tuple[Manifest, str]:
    """Leave containers that the state phase pointed at their checkpoint images on those images.

    The plan holds the original image; re-applying it would make the workload start cold on
    the next scale-up. The annotations on the live object name the containers and images.
    """
    live_annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    images = {key[len(CHECKPOINT_IMAGE_PREFIX):]: value for key, value in live_annotations.items()
              if key.startswith(CHECKPOINT_IMAGE_PREFIX) and isinstance(value, str) and value}
    containers = (((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
    if not images or not isinstance(containers, list):
        return manifest, ""
    kept = copy.deepcopy(manifest)
    names = []
    for container in kept["spec"]["template"]["spec"]["containers"]:
        if isinstance(container, dict) and container.get("name") in images:
            container["image"], container["imagePullPolicy"] = images[container["name"]], "Never"
            names.append(container["name"])
    if not names:
        return manifest, ""
    return kept, "runs from its checkpoint image: %s kept" % ", ".join("%s=%s" % (n, images[n]) for n in names)


def timeout_for(kind: str, default: float, per_kind: t.Optional[t.Mapping[str, t.Any]]) -> float:
    per_kind = per_kind or {}
    return float(per_kind.get(kind, per_kind.get("default", default)))


def connection_error_text(error: BaseException) -> str:
    """Why a connection failed, without urllib3's object reprs: ``... [Errno 111] Connection refused``."""
    reason = getattr(error, "reason", None) or error
    parts = [str(getattr(arg, "strerror", None) or arg) if isinstance(arg, BaseException) else str(arg) for arg in reason.args]
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>(: )?", "", " ".join(part for part in parts if part))
    return text.strip() or type(reason).__name__


def api_error_text(status: int, reason: str, body: t.Any) -> str:
    """``422 Invalid: Service "web" is invalid: ...`` from an API error (its Status body when it has one)."""
    message = ""
    try:
        document = json.loads(body) if isinstance(body, (str, bytes)) and body else body
    except ValueError:
        document = None
    if isinstance(document, dict):
        reason = str(document.get("reason") or reason or "")
        message = str(document.get("message") or "")
    elif isinstance(body, (str, bytes)) and body:
        message = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()[:300]
    text = "%s %s" % (status, reason) if status else str(reason)
    return "%s: %s" % (text, message) if message else text


# --------------------------------------------------------------------------------------------
# Result bookkeeping (pure)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ObjectResult:
    stage: str
    ident: ObjectId
    action: str = ""
    error: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, t.Any]:
        result: dict[str, t.Any] = {
            "stage": self.stage, "kind": self.ident.kind, "api_version": self.ident.api_version,
            "namespace": self.ident.namespace, "name": self.ident.name, "action": self.action,
        }
        if self.error:
            result["error"] = self.error
        if self.note:
            result["note"] = self.note
        return result


@dataclasses.dataclass
class StageResult:
    name: str
    objects: int
    apply_seconds: float = 0.0
    waited_seconds: float = 0.0
    seconds: float = 0.0
    results: list[ObjectResult] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for result in self.results if result.action == action)

    @property
    def changed(self) -> bool:
        return any(result.action in ("created", "updated") for result in self.results)

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "name": self.name, "objects": self.objects,
            "created": self.count("created"), "updated": self.count("updated"),
            "unchanged": self.count("unchanged"), "conflicts": self.count("conflict"), "failed": self.count("failed"),
            "apply_seconds": round(self.apply_seconds, 3), "waited_seconds": round(self.waited_seconds, 3),
            "seconds": round(self.seconds, 3), "notes": list(self.notes),
        }


def summarize(stages: t.Sequence[StageResult], seconds: float) -> dict[str, t.Any]:
    """Totals over every stage reached: counts, seconds and objects per second."""
    objects = sum(len(stage.results) for stage in stages)
    totals: dict[str, t.Any] = {"stages": len(stages), "objects": objects, "seconds": round(seconds, 3)}
    for action in ("created", "updated", "unchanged", "failed"):
        totals[action] = sum(stage.count(action) for stage in stages)
    totals["conflicts"] = sum(stage.count("conflict") for stage in stages)
    totals["waited_seconds"] = round(sum(stage.waited_seconds for stage in stages), 3)
    totals["objects_per_second"] = round(objects / seconds, 1) if seconds > 0 else 0.0
    return totals


def failure_message(stage: StageResult, done: t.Sequence[StageResult], check_mode: bool = False) -> tuple[str, str]:
    """(problem, fix) for a stage that failed, naming the first failed object and the API's reason."""
    failed = [result for result in stage.results if result.action == "failed"]
    first = failed[0]
    others = " (and %d more object%s of the stage)" % (len(failed) - 1, "s" if len(failed) > 2 else "") if len(failed) > 1 else ""
    applied = [previous.name for previous in done]
    kept = "nothing was applied before it" if not applied else "stages %s %s" % (
        ", ".join(applied), "passed the dry run" if check_mode else "are applied and stay applied")
    skipped = stage.objects - len(stage.results)
    if skipped > 0:
        others += "; %d object%s of the stage %s not attempted" % (skipped, "s" if skipped > 1 else "", "were" if skipped > 1 else "was")
    problem = "Stage %s failed: %s: %s%s; %s" % (stage.name, first.ident, first.error, others, kept)
    if "could not reach" in first.error.lower():
        fix = "bring the API server back (or fix the connection to it) and run again: applied objects are kept and the run continues where it stopped"
    elif "timed out" in first.error.lower():
        fix = "find out why it is not ready (kubectl describe), or raise kind_timeouts for %s, then run again: applied objects are kept" % first.ident.kind
    elif "not serve" in first.error.lower():
        fix = "put the CustomResourceDefinition of %s in an earlier stage of the plan (or install it in the target cluster), then run again" % first.ident.kind
    elif "409" in first.error and "Conflict" in first.error:
        fix = "another field manager owns these fields: set force_conflicts to take them over, or change the object, then run again"
    else:
        fix = ("correct the object in the plan (or what the target cluster refuses), then run again: applied objects are kept "
               "and the run continues where it stopped")
    return problem, fix


# --------------------------------------------------------------------------------------------
# Scale-up decisions (pure)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScaleTarget:
    ident: ObjectId
    field: str  # "replicas" or "suspend"
    value: t.Any


def _gates(pod: t.Mapping[str, t.Any]) -> list[str]:
    return [str(g.get("name")) for g in ((pod.get("spec") or {}).get("schedulingGates") or [])]


def _keep_live_ungated(manifest: Manifest, live: t.Mapping[str, t.Any]) -> tuple[Manifest, str]:
    """A bare pod ungated already: the API refuses to add a scheduling gate back, so apply it without ours."""
    if RESTORE_GATE not in _gates(manifest) or RESTORE_GATE in _gates(live):
        return manifest, ""
    kept = copy.deepcopy(manifest)
    rest = [g for g in kept["spec"]["schedulingGates"] if g.get("name") != RESTORE_GATE]
    if rest:
        kept["spec"]["schedulingGates"] = rest
    else:
        del kept["spec"]["schedulingGates"]
    return kept, "scaled up already: scheduling gate %s stays removed" % RESTORE_GATE


def scale_target(item: t.Mapping[str, t.Any], live: t.Optional[t.Mapping[str, t.Any]] = None, partial: bool = False) -> ScaleTarget:
    """What ``item`` of scale_up asks for; missing values come from the live object's migration annotations.

    With ``partial`` (no live object read yet), a missing value is None instead of an error.
    """
    kind = str(item.get("kind") or "")
    if kind == "Pod":  # a bare pod: scale-up removes the gate it waited behind
        if not item.get("name") or not item.get("namespace"):
            raise MigrationError("A scale_up item (Pod) has no name or namespace", "give kind, namespace and name for each item")
        ident = ObjectId("Pod", str(item.get("api_version") or item.get("apiVersion") or "v1"), str(item["namespace"]), str(item["name"]))
        return ScaleTarget(ident, "schedulingGates", str(item.get("scheduling_gate") or RESTORE_GATE))
    if kind not in REPLICA_KINDS and kind not in SUSPEND_KINDS:
        raise MigrationError(
            "scale_up item %s/%s has kind %r, which has neither replicas nor suspend" % (item.get("namespace"), item.get("name"), kind),
            "list Deployments, StatefulSets, ReplicaSets, ReplicationControllers, CronJobs, Jobs or bare Pods in scale_up",
        )
    if not item.get("name") or not item.get("namespace"):
        raise MigrationError("A scale_up item (%s) has no name or namespace" % kind, "give kind, namespace, name and replicas for each item")
    api_version = str(item.get("api_version") or item.get("apiVersion") or REPLICA_KINDS.get(kind) or SUSPEND_KINDS[kind])
    ident = ObjectId(kind, api_version, str(item["namespace"]), str(item["name"]))
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if kind in REPLICA_KINDS:
        replicas = item.get("replicas")
        if replicas is None and REPLICAS_ANNOTATION in annotations:
            replicas = annotations[REPLICAS_ANNOTATION]
        if replicas is None and partial:
            return ScaleTarget(ident, "replicas", None)
        if replicas is None:
            raise MigrationError(
                "scale_up item %s has no replicas and the object has no %s annotation" % (ident, REPLICAS_ANNOTATION),
                "give replicas for the item",
            )
        try:
            value: t.Any = int(replicas)
        except (TypeError, ValueError):
            raise MigrationError("scale_up item %s has replicas %r, not a number" % (ident, replicas), "give replicas as a whole number") from None
        if value < 0:
            raise MigrationError("scale_up item %s has negative replicas %d" % (ident, value), "give replicas of 0 or more")
        return ScaleTarget(ident, "replicas", value)
    suspend = item.get("suspend")
    if suspend is None and partial and live is None:
        return ScaleTarget(ident, "suspend", None)
    if suspend is None:
        suspend = str(annotations.get(SUSPEND_ANNOTATION, "false")).strip().lower() == "true"
    return ScaleTarget(ident, "suspend", bool(suspend))


def scaled_readiness(target: ScaleTarget, live: t.Mapping[str, t.Any]) -> Readiness:
    """After scale-up: the workload's pods are available (CronJobs and Jobs: nothing to wait for; a bare pod: running)."""
    if target.field == "schedulingGates":
        phase = (live.get("status") or {}).get("phase") or "Pending"
        return Readiness(phase in ("Running", "Succeeded"), waiting_for="pod phase Running (it is %s)" % phase)
    if target.field != "replicas":
        return Readiness(True)
    status = live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation") or 0
    observed = status.get("observedGeneration") or 0
    counter = "availableReplicas" if target.ident.kind == "Deployment" else "readyReplicas"
    have = status.get(counter) or 0
    return Readiness(
        observed >= generation and have >= target.value,
        waiting_for="%s %s of %s (observedGeneration %s of %s)" % (counter, have, target.value, observed, generation),
    )


# --------------------------------------------------------------------------------------------
# The API server
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ResourceRef:
    """How to reach one kind: its REST path and whether it lives in namespaces."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "") -> str:
        prefix = "/api/" if "/" not in self.api_version else "/apis/"
        path = prefix + self.api_version
        if self.namespaced and namespace:
            path += "/namespaces/" + quote(namespace, safe="")
        path += "/" + self.plural
        if name:
            path += "/" + quote(name, safe=":@")
        return path


class ApiError(Exception):
    """A request the API server refused or could not answer; ``str()`` is the text for results."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        super().__init__(text)


class NotServed(Exception):
    """The API server does not serve this apiVersion/kind (yet)."""


class Cluster:
    """The target cluster's API server, through a kubernetes.core client (see k8s_client.make_k8s_client)."""

    def __init__(self, k8s: t.Any, request_timeout: float = 30, workers: int = 8, sleep: t.Callable[[float], None] = time.sleep) -> None:
        self.discovery = k8s.client.resources
        self.api = k8s.client.client  # kubernetes.client.ApiClient: thread-safe urllib3 pool
        self.request_timeout = request_timeout
        self.sleep = sleep
        self._resources: dict[tuple[str, str], ResourceRef] = {}
        configuration = self.api.configuration
        if (getattr(configuration, "connection_pool_maxsize", 0) or 0) < workers:
            configuration.connection_pool_maxsize = workers
            self.api.rest_client = kubernetes.client.rest.RESTClientObject(configuration)
        self.host = str(getattr(configuration, "host", ""))

    # -- discovery (main thread only) ---------------------------------------------------------
    def resolve(self, api_version: str, kind: str) -> ResourceRef:
        """The resource of a kind, from discovery (cached here; kubernetes.core caches it on disk and
        refreshes that cache when a kind is missing, so a kind served since is found)."""
        key = (api_version, kind)
        if key in self._resources:
            return self._resources[key]
        lookup: dict[str, str] = {"api_version": api_version, "kind": kind}
        if api_version == "v1":
            lookup["prefix"] = "api"
        try:
            resource = self.discovery.get(**lookup)
        except (ResourceNotFoundError, ResourceNotUniqueError) as err:
            raise NotServed("the API server does not serve %s %s" % (api_version, kind)) from err
        except (urllib3.exceptions.HTTPError, kubernetes.client.exceptions.ApiException) as err:
            raise ApiError(0, "could not reach the API server %s for discovery: %s" % (self.host, connection_error_text(err))) from err
        ref = ResourceRef(resource.group_version, resource.kind, resource.name, bool(resource.namespaced))
        self._resources[key] = ref
        return ref

    # -- requests (any thread) ---------------------------------------------------------------
    def request(self, method: str, path: str, query: t.Optional[list[tuple[str, str]]] = None, body: t.Any = None,
                content_type: str = "application/json", accept: str = "application/json") -> tuple[int, dict[str, t.Any]]:
        """One request, retried on 429/5xx and lost connections; (status, decoded JSON) or ApiError."""
        headers = {"Accept": accept, "Content-Type": content_type}
        for attempt in range(ATTEMPTS):
            last = attempt + 1 == ATTEMPTS
            try:
                response, status, _headers = self.api.call_api(
                    path, method, query_params=list(query or []), header_params=dict(headers), body=body,
                    auth_settings=["BearerToken"], _preload_content=False, _request_timeout=self.request_timeout,
                )
                data = response.data
                return status, json.loads(data) if data else {}
            except kubernetes.client.exceptions.ApiException as err:
                if err.status == 0:  # TLS failure
                    raise ApiError(0, "could not reach the API server %s: %s" % (self.host, err.reason)) from err
                if err.status in RETRIED_STATUSES and not last:
                    self.sleep(0.5 * 2 ** attempt)
                    continue
                raise ApiError(err.status, api_error_text(err.status, str(err.reason or ""), err.body)) from err
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if not last:
                    self.sleep(0.5 * 2 ** attempt)
                    continue
                raise ApiError(0, "could not reach the API server %s: %s" % (self.host, connection_error_text(err))) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, ref: ResourceRef, namespace: str, name: str) -> t.Optional[dict[str, t.Any]]:
        try:
            return self.request("GET", ref.path(namespace, name))[1]
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def fetch(self, ref: ResourceRef, namespace: str, names: t.Sequence[str]) -> dict[str, dict[str, t.Any]]:
        """The objects among ``names`` that exist: one LIST for a big group, GETs for a small one."""
        if len(names) >= LIST_THRESHOLD:
            try:
                items = self.request("GET", ref.path(namespace))[1].get("items") or []
            except ApiError as err:
                if err.status != 403:  # allowed to get but not to list: fall back to GETs
                    raise
            else:
                wanted = set(names)
                return {item["metadata"]["name"]: item for item in items if item.get("metadata", {}).get("name") in wanted}
        found = {}
        for name in names:
            obj = self.get(ref, namespace, name)
            if obj is not None:
                found[name] = obj
        return found

    def apply(self, ref: ResourceRef, manifest: Manifest, field_manager: str, force: bool, dry_run: bool) -> tuple[int, dict[str, t.Any]]:
        metadata = manifest["metadata"]
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request("PATCH", ref.path(metadata.get("namespace", ""), metadata["name"]), query, manifest, APPLY_CONTENT_TYPE)

    def merge_patch(self, ref: ResourceRef, namespace: str, name: str, patch: dict[str, t.Any], field_manager: str, dry_run: bool) -> dict[str, t.Any]:
        query = [("fieldManager", field_manager)] + ([("dryRun", "All")] if dry_run else [])
        return self.request("PATCH", ref.path(namespace, name), query, patch, MERGE_PATCH_CONTENT_TYPE)[1]


# --------------------------------------------------------------------------------------------
# The restore
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Item:
    manifest: Manifest
    result: ObjectResult
    ref: t.Optional[ResourceRef] = None
    before: t.Optional[dict[str, t.Any]] = None
    live: t.Optional[dict[str, t.Any]] = None


@dataclasses.dataclass
class Settings:
    field_manager: str = DEFAULT_FIELD_MANAGER
    force_conflicts: bool = True
    check_mode: bool = False
    wait: bool = True
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    kind_timeouts: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    workers: int = 8
    # Take over objects that exist in the target without this run's label (otherwise left alone).
    adopt: bool = False


# What the target's controllers make in every namespace as soon as it exists: never another owner's.
NAMESPACE_DEFAULTS = frozenset((("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")))


def foreign(manifest: t.Mapping[str, t.Any], live: t.Optional[t.Mapping[str, t.Any]]) -> bool:
    """Whether ``live`` is an object of the target that this run did not create: the manifest carries
    the run's label (plans of migration_plan do) and the live object does not carry the same value."""
    run_id = ((manifest.get("metadata") or {}).get("labels") or {}).get(RUN_ID_KEY)
    if not run_id or live is None or (manifest.get("kind"), (manifest.get("metadata") or {}).get("name")) in NAMESPACE_DEFAULTS:
        return False
    return ((live.get("metadata") or {}).get("labels") or {}).get(RUN_ID_KEY) != run_id


def conflict_note(run_id: str) -> str:
    return ("it exists in the target without this run's label %s=%s: left alone (not applied, never scaled up or deleted "
            "by migrate_back); adopt=true takes it over" % (RUN_ID_KEY, run_id))


class RestoreFailed(MigrationError):
    """A stage failed; ``details`` carry the results up to there."""


class _ClusterWork:
    """What applying and scaling share: the cluster, the settings, and a clock tests can replace."""

    def __init__(self, cluster: Cluster, settings: Settings, clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.sleep = sleep


class Restorer(_ClusterWork):
    """Applies a plan's stages in order (see the module docstring)."""

    def __init__(self, cluster: Cluster, settings: Settings, clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep) -> None:
        super().__init__(cluster, settings, clock, sleep)
        self._storage_classes: t.Optional[tuple[dict[str, str], str]] = None
        self._absent_namespaces: set[str] = set()  # check mode: created by this plan, not there yet
        self._plan_kinds: set[tuple[str, str]] = set()
        # Set by the first "could not reach": the rest of the wave is not attempted (each would
        # take its retries), and the run stops there.
        self._unreachable = threading.Event()

    # -- the run -------------------------------------------------------------------------------
    def run(self, plan: Plan) -> dict[str, t.Any]:
        started = self.clock()
        self._plan_kinds = plan.crd_kinds
        done: list[StageResult] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.settings.workers), thread_name_prefix="restore") as pool:
            for stage in plan.stages:
                result = self._stage(stage, pool)
                if result.count("failed"):
                    problem, fix = failure_message(result, done, self.settings.check_mode)
                    done.append(result)
                    raise RestoreFailed(problem, fix, **self._report(plan, done, started, failed=result))
                done.append(result)
        return self._report(plan, done, started)

    def _report(self, plan: Plan, done: list[StageResult], started: float, failed: t.Optional[StageResult] = None) -> dict[str, t.Any]:
        report: dict[str, t.Any] = {
            "changed": any(stage.changed for stage in done),
            "run_id": plan.run_id,
            "stages": [stage.as_dict() for stage in done],
            "objects": [result.as_dict() for stage in done for result in stage.results],
            "totals": summarize(done, self.clock() - started),
            "notes": ["%s: %s" % (result.ident, result.note) for stage in done for result in stage.results if result.note],
            "conflicts": [str(result.ident) for stage in done for result in stage.results if result.action == "conflict"],
        }
        if failed is not None:
            report["failed_stage"] = failed.name
            report["failed_objects"] = [result.as_dict() for result in failed.results if result.action == "failed"]
            report["pending_stages"] = [stage.name for stage in plan.stages[len(done):]]
        return report

    def _stage(self, stage: Stage, pool: concurrent.futures.Executor) -> StageResult:
        result = StageResult(stage.name, len(stage.objects))
        began = self.clock()
        for wave in waves(stage.objects):
            items = [_Item(manifest, ObjectResult(stage.name, ObjectId.of(manifest))) for manifest in wave]
            wave_began = self.clock()
            self._resolve(items)
            self._read_before(items, pool)
            todo = [item for item in items if not item.result.action]
            list(pool.map(self._apply_one, todo))
            result.apply_seconds += self.clock() - wave_began
            # Objects not attempted (the API server went away first) are left out of the results.
            result.results.extend(item.result for item in items if item.result.action)
            if any(item.result.action == "failed" for item in items):
                break
            if self.settings.check_mode:
                continue
            if self.settings.wait:
                wait_began = self.clock()
                self._wait(items, pool)
                if not any(item.result.action == "failed" for item in items):
                    self._discover_crds(items)
                result.waited_seconds += self.clock() - wait_began
                if any(item.result.action == "failed" for item in items):
                    break
        result.seconds = self.clock() - began
        result.notes.extend("%s: %s" % (res.ident, res.note) for res in result.results if res.note)
        if self.settings.check_mode:
            result.notes.append("check mode: server-side dry run, nothing awaited")
        return result

    # -- steps -----------------------------------------------------------------------------------
    def _fail(self, item: _Item, error: str) -> None:
        item.result.action = "failed"
        item.result.error = error
        if "could not reach the API server" in error:
            self._unreachable.set()

    def _resolve(self, items: list[_Item]) -> None:
        for item in items:
            ident = item.result.ident
            try:
                item.ref = self.cluster.resolve(ident.api_version, ident.kind)
            except NotServed as err:
                if self.settings.check_mode and (ident.group, ident.kind) in self._plan_kinds:
                    item.result.action = "created"
                    item.result.note = "its CustomResourceDefinition is created by this plan: not dry-run"
                else:
                    self._fail(item, str(err))
                continue
            except ApiError as err:
                self._fail(item, str(err))
                continue
            metadata = item.manifest["metadata"]
            if item.ref.namespaced and not metadata.get("namespace"):
                self._fail(item, "it has no metadata.namespace, and %s lives in namespaces" % ident.kind)
            elif not item.ref.namespaced and "namespace" in metadata:
                del metadata["namespace"]
            elif item.ref.namespaced and self.settings.check_mode and metadata["namespace"] in self._absent_namespaces:
                item.result.action = "created"
                item.result.note = "its namespace is created by this plan: not dry-run"

    def _read_before(self, items: list[_Item], pool: concurrent.futures.Executor) -> None:
        groups: dict[tuple[ResourceRef, str], list[_Item]] = {}
        for item in items:
            if item.ref is not None and not item.result.action:
                groups.setdefault((item.ref, item.manifest["metadata"].get("namespace", "")), []).append(item)

        def read(group: tuple[tuple[ResourceRef, str], list[_Item]]) -> None:
            (ref, namespace), members = group
            try:
                found = self.cluster.fetch(ref, namespace, [member.manifest["metadata"]["name"] for member in members])
            except ApiError as err:
                for member in members:
                    self._fail(member, "reading it before applying: %s" % err)
                return
            for member in members:
                member.before = found.get(member.manifest["metadata"]["name"])

        list(pool.map(read, groups.items()))

    def _apply_one(self, item: _Item) -> None:
        if self._unreachable.is_set() or item.ref is None:
            return
        annotations = (item.manifest.get("metadata") or {}).get("annotations") or {}
        if item.before is not None and annotations.get(APPLY_ANNOTATION) == APPLY_IF_ABSENT:
            item.live = item.before  # the target's own object: never taken over
            item.result.action = "unchanged"
            item.result.note = "the target has its own: left as it is (%s: %s)" % (APPLY_ANNOTATION, APPLY_IF_ABSENT)
            return
        if not self.settings.adopt and foreign(item.manifest, item.before):
            item.live = item.before
            item.result.action = "conflict"
            item.result.note = conflict_note(str(item.manifest["metadata"]["labels"][RUN_ID_KEY]))
            return
        manifest, note = keep_live_scale(item.manifest, item.before)
        manifest, image_note = keep_checkpoint_images(manifest, item.before)
        note = "; ".join(n for n in (note, image_note) if n)
        try:
            status, live = self.cluster.apply(item.ref, manifest, self.settings.field_manager, self.settings.force_conflicts, self.settings.check_mode)
        except ApiError as err:
            self._fail(item, str(err))
            return
        item.live = live
        item.result.action = classify(item.before, live, status, self.settings.field_manager)
        item.result.note = note
        if self.settings.check_mode and item.result.ident.kind == "Namespace" and item.before is None:
            self._absent_namespaces.add(item.result.ident.name)

    def _modes(self) -> tuple[dict[str, str], str]:
        if self._storage_classes is None:
            try:
                ref = self.cluster.resolve("storage.k8s.io/v1", "StorageClass")
                items = self.cluster.request("GET", ref.path())[1].get("items") or []
            except (NotServed, ApiError):
                items = []
            self._storage_classes = storage_class_modes(items)
        return self._storage_classes

    def _readiness(self, item: _Item, live: t.Mapping[str, t.Any]) -> Readiness:
        kind = item.result.ident.kind
        if kind == "PersistentVolumeClaim":
            modes, default = self._modes()
            return readiness(kind, live, modes, default)
        return readiness(kind, live)

    def _wait(self, items: list[_Item], pool: concurrent.futures.Executor) -> None:
        """Poll what is not ready yet (grouped reads), until ready, failed, or its kind's timeout."""
        pending: dict[int, tuple[_Item, float, Readiness]] = {}
        self._storage_classes = None  # read again: an earlier wave may have created one
        began = self.clock()
        for index, item in enumerate(items):
            if item.live is None or item.result.action == "failed":
                continue
            state = self._readiness(item, item.live)
            timeout = timeout_for(item.result.ident.kind, self.settings.wait_timeout, self.settings.kind_timeouts)
            if not state.ready and not state.failure and timeout <= 0:
                state = Readiness(True, note="not waited for (its kind's timeout is 0)")
            if state.note and not item.result.note:
                item.result.note = state.note
            if state.failure:
                self._fail(item, state.failure)
            elif not state.ready:
                pending[index] = (item, began + timeout, state)
        interval = POLL_FIRST
        while pending:
            self.sleep(interval)
            interval = min(POLL_MAX, interval * 1.5)
            groups: dict[tuple[ResourceRef, str], list[int]] = {}
            for index, (item, _deadline, _state) in pending.items():
                groups.setdefault((t.cast(ResourceRef, item.ref), item.manifest["metadata"].get("namespace", "")), []).append(index)

            def poll(group: tuple[tuple[ResourceRef, str], list[int]]) -> tuple[list[int], t.Union[dict[str, dict[str, t.Any]], ApiError]]:
                (ref, namespace), indexes = group
                try:
                    return indexes, self.cluster.fetch(ref, namespace, [items[i].manifest["metadata"]["name"] for i in indexes])
                except ApiError as err:
                    return indexes, err

            now_results = list(pool.map(poll, groups.items()))
            now = self.clock()
            for indexes, found in now_results:
                for index in indexes:
                    item, deadline, state = pending[index]
                    if isinstance(found, ApiError):
                        if now > deadline or found.status == 0:
                            self._fail(item, "waiting for %s: %s" % (state.waiting_for, found))
                            del pending[index]
                        continue
                    live = found.get(item.manifest["metadata"]["name"])
                    if live is None:
                        self._fail(item, "it disappeared while waiting for %s" % state.waiting_for)
                        del pending[index]
                        continue
                    state = self._readiness(item, live)
                    if state.failure:
                        self._fail(item, state.failure)
                    elif state.ready:
                        if state.note and not item.result.note:
                            item.result.note = state.note
                    elif now > deadline:
                        self._fail(item, "timed out after %.0fs waiting for %s" % (deadline - began, state.waiting_for))
                    else:
                        pending[index] = (item, deadline, state)
                        continue
                    del pending[index]

    def _discover_crds(self, items: list[_Item]) -> None:
        """After CRDs are Established, wait until discovery serves their kinds (the next stage needs them)."""
        for item in items:
            if item.result.ident.kind != "CustomResourceDefinition" or item.result.action == "failed":
                continue
            spec = item.manifest.get("spec") or {}
            group, kind = str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))
            versions = [str(v.get("name")) for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True)]
            timeout = timeout_for("CustomResourceDefinition", self.settings.wait_timeout, self.settings.kind_timeouts)
            if timeout <= 0:
                return
            deadline = self.clock() + timeout
            for version in versions:
                while True:
                    try:
                        self.cluster.resolve("%s/%s" % (group, version), kind)
                        break
                    except (NotServed, ApiError) as err:
                        if self.clock() > deadline:
                            self._fail(item, "timed out waiting for discovery to serve %s/%s %s: %s" % (group, version, kind, err))
                            return
                        self.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Scale-up
# --------------------------------------------------------------------------------------------
class ScaleUp(_ClusterWork):
    """state=scaled: set replicas (or unsuspend), drop the migration annotations, wait for the pods."""

    _run_id = ""

    def run(self, items: t.Sequence[t.Mapping[str, t.Any]], run_id: str = "") -> dict[str, t.Any]:
        """Scale ``items`` up; with ``run_id``, only the workloads that run created (the label says)."""
        started = self.clock()
        self._run_id = run_id
        parsed = [scale_target(item, partial=True) for item in items]  # validates every item before touching anything
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.settings.workers), thread_name_prefix="scale") as pool:
            results = list(pool.map(self._one, zip(parsed, items)))
        seconds = self.clock() - started
        report: dict[str, t.Any] = {
            "changed": any(result["action"] == "scaled" for result in results),
            "objects": results,
            "totals": {
                "objects": len(results), "scaled": sum(1 for r in results if r["action"] == "scaled"),
                "unchanged": sum(1 for r in results if r["action"] == "unchanged"),
                "conflicts": sum(1 for r in results if r["action"] == "conflict"),
                "failed": sum(1 for r in results if r["action"] == "failed"), "seconds": round(seconds, 3),
            },
        }
        failed = [result for result in results if result["action"] == "failed"]
        if failed:
            first = failed[0]
            raise RestoreFailed(
                "Scale-up failed for %s %s/%s: %s%s" % (first["kind"], first["namespace"], first["name"], first["error"],
                                                        " (and %d more)" % (len(failed) - 1) if len(failed) > 1 else ""),
                "fix the cause and run state=scaled again: workloads scaled already stay scaled",
                **report,
            )
        return report

    def _one(self, pair: tuple[ScaleTarget, t.Mapping[str, t.Any]]) -> dict[str, t.Any]:
        target, item = pair
        ident = target.ident
        result: dict[str, t.Any] = {"kind": ident.kind, "api_version": ident.api_version, "namespace": ident.namespace, "name": ident.name}
        began = self.clock()
        try:
            ref = self.cluster.resolve(ident.api_version, ident.kind)
            before = self.cluster.get(ref, ident.namespace, ident.name)
            if before is None:
                raise ApiError(404, "it does not exist in the target cluster (run the restore, state=present, first)")
            if self._run_id and not self.settings.adopt and foreign({"metadata": {"labels": {RUN_ID_KEY: self._run_id}}}, before):
                result.update(action="conflict", note=conflict_note(self._run_id), seconds=0.0)
                return result
            target = scale_target(item, before)  # the annotation may supply the value
            if target.field == "schedulingGates":
                return self._ungate(ref, target, before, result, began)
            result[target.field] = target.value
            annotations = (before.get("metadata") or {}).get("annotations") or {}
            stale = [name for name in (REPLICAS_ANNOTATION, SUSPEND_ANNOTATION) if name in annotations]
            manager = self.settings.field_manager + SCALE_UP_MANAGER_SUFFIX
            dry_run = self.settings.check_mode
            config = {"apiVersion": ident.api_version, "kind": ident.kind,
                      "metadata": {"name": ident.name, "namespace": ident.namespace}, "spec": {target.field: target.value}}
            # The value first, by a manager of its own (so the restore's manager can let go of it
            # on a re-run without the field being removed), then the annotations.
            _status, after = self.cluster.apply(ref, config, manager, True, dry_run)
            if stale:
                after = self.cluster.merge_patch(ref, ident.namespace, ident.name,
                                                 {"metadata": {"annotations": {name: None for name in stale}}}, manager, dry_run)
            result["action"] = "unchanged" if comparable(before) == comparable(after) else "scaled"
            result["before"] = (before.get("spec") or {}).get(target.field)
            if self.settings.wait and not dry_run:
                self._wait(ref, target, after)
        except ApiError as err:
            result["action"] = "failed"
            result["error"] = str(err)
        except MigrationError as err:
            result["action"] = "failed"
            result["error"] = err.problem
        result["seconds"] = round(self.clock() - began, 3)
        return result

    def _ungate(self, ref: ResourceRef, target: ScaleTarget, before: dict[str, t.Any], result: dict[str, t.Any],
                began: float) -> dict[str, t.Any]:
        """A bare pod: remove the restore gate (the API allows removing gates, never adding them)."""
        ident = target.ident
        result["scheduling_gate"] = target.value
        gates = (before.get("spec") or {}).get("schedulingGates") or []
        rest = [g for g in gates if g.get("name") != target.value]
        after: dict[str, t.Any] = before
        if len(rest) != len(gates):
            after = self.cluster.merge_patch(ref, ident.namespace, ident.name, {"spec": {"schedulingGates": rest or None}},
                                             self.settings.field_manager + SCALE_UP_MANAGER_SUFFIX, self.settings.check_mode)
        result["action"] = "scaled" if len(rest) != len(gates) else "unchanged"
        if self.settings.wait and not self.settings.check_mode:
            self._wait(ref, target, after)
        result["seconds"] = round(self.clock() - began, 3)
        return result

    def _wait(self, ref: ResourceRef, target: ScaleTarget, live: dict[str, t.Any]) -> None:
        ident = target.ident
        deadline = self.clock() + timeout_for(ident.kind, self.settings.wait_timeout, self.settings.kind_timeouts)
        interval = POLL_FIRST
        while True:
            state = scaled_readiness(target, live)
            if state.ready:
                return
            if self.clock() > deadline:
                raise ApiError(0, "timed out waiting for %s" % state.waiting_for)
            self.sleep(interval)
            interval = min(POLL_MAX, interval * 1.5)
            found = self.cluster.get(ref, ident.namespace, ident.name)
            if found is None:
                raise ApiError(404, "it disappeared while waiting for %s" % state.waiting_for)
            live = found
