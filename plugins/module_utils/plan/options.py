# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the user chose for a migration: ``PlanOptions``, and ``CustomRef`` for the ``include_custom`` entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.share import check_policies
from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    DEFAULT_EXCLUDED_NAMESPACES,
    DNS_LABEL_RE,
    DNS_SUBDOMAIN_RE,
    RUN_ID_RE,
    group_of,
)


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
            group = str(value.get("group") or group_of(str(value.get("api_version") or value.get("apiVersion") or "")))
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
                and (not self.group or group_of(obj.get("apiVersion", "")) == self.group))

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
    share_policy: t.Mapping[str, str] = dataclasses.field(default_factory=dict)  # Kind or Kind/namespace/name -> share, whole, skip
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
        for name in ("storage_class_map", "image_registry_map", "namespace_map", "share_policy"):
            if name in given:
                given[name] = dict(given[name])
        for name in ("include_custom", "exclude_namespaces"):
            if name in given:
                given[name] = tuple(given[name])
        return cls(**given)

    def validate(self) -> list[CustomRef]:
        """Refuse what would make a broken plan; the parsed ``include_custom``."""
        if not RUN_ID_RE.match(self.run_id or ""):
            raise MigrationError("run_id %r is not usable as a label value" % (self.run_id,),
                                 "use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
        if self.target_node and not DNS_SUBDOMAIN_RE.match(self.target_node):
            raise MigrationError("target_node %r is not a node name" % (self.target_node,), "give the new node's name as Kubernetes shows it")
        for source, target in self.namespace_map.items():
            for name in (source, target):
                if not isinstance(name, str) or not DNS_LABEL_RE.match(name):
                    raise MigrationError("namespace_map entry %r: %r is not a namespace name" % (source, name),
                                         "map namespace names (lower-case letters, digits and '-', at most 63)")
        for option, mapping in (("storage_class_map", self.storage_class_map), ("image_registry_map", self.image_registry_map)):
            for source, target in mapping.items():
                if not source or not isinstance(source, str) or not isinstance(target, str) or (option == "storage_class_map" and not target):
                    raise MigrationError("%s entry %r: %r is not usable" % (option, source, target), "map non-empty strings to strings")
        if self.created_at:
            _parse_time(self.created_at)
        check_policies(self.share_policy)
        return [CustomRef.parse(item) for item in self.include_custom]

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "share_policy": dict(sorted(self.share_policy.items())),
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
