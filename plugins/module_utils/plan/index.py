# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup, indexed: its objects by reference, by kind and by namespace."""

from __future__ import annotations

import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.plan.vocabulary import (
    BUILTIN,
    CRD,
    OTHER_BUILTIN_GROUPS,
    GroupKind,
    Obj,
    Ref,
    group_of,
    meta,
    ref_of,
    rv,
)


class Index:
    """The backup's objects by reference, by kind and by namespace; duplicates keep the newest."""

    def __init__(self, objects: t.Iterable[t.Mapping[str, t.Any]]) -> None:
        self.by_ref: dict[Ref, Obj] = {}
        for obj in objects:
            if not isinstance(obj, t.Mapping) or not obj.get("kind") or not meta(obj).get("name"):
                continue
            ref = ref_of(obj)
            old = self.by_ref.get(ref)
            if old is None or rv(obj) > rv(old):
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
        group, kind, name = group_of(owner_ref.get("apiVersion") or ""), owner_ref.get("kind") or "", owner_ref.get("name") or ""
        found = self.by_ref.get((group, kind, namespace, name)) or self.by_ref.get((group, kind, "", name))
        if found is None:
            return None
        uid = owner_ref.get("uid")
        if uid and meta(found).get("uid") and meta(found).get("uid") != uid:
            return None
        return found

    def is_custom(self, gk: GroupKind) -> bool:
        return gk in self.crds or (gk not in BUILTIN and gk[0] not in OTHER_BUILTIN_GROUPS)
