# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this node restore a Kubernetes container checkpoint? (CRI-O's settings and criu.)

Kubernetes restores a checkpoint by running an OCI image built from the checkpoint archive
(annotation ``io.kubernetes.cri-o.annotations.checkpoint.name``) on a node whose runtime restores
it instead of starting the image: CRI-O with

    [crio.checkpoint_restore]
    container_level_enabled = "checkpoint_restore"

(CRI-O releases that have this setting default to ``checkpoint_only``: they take checkpoints but
start such an image like any other). CRI-O releases from before that setting restore when
``[crio.runtime] enable_criu_support = true``; that alone is trusted only when ``crio config``
(the effective settings of the CRI-O installed) shows no ``checkpoint_restore`` table. Either way
criu must be installed and ``criu check`` must pass.

``decide`` is a plain function over what was read (no I/O), unit-tested; ``read_settings`` reads
the files in CRI-O's order (``crio.conf``, then ``crio.conf.d/*.conf`` sorted, later values win).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import typing as t

try:
    import tomllib
except ImportError:  # Python < 3.11 on the node
    tomllib = None  # type: ignore[assignment]

CHECKPOINT_ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
ENABLED = "checkpoint_restore"
SETTING = '[crio.checkpoint_restore] container_level_enabled = "checkpoint_restore"'
DEFAULT_FIX = "build the worker image with the worker role (issue 6), whose CRI-O has checkpoint restore enabled"


def parse_toml(text: str, source: str) -> dict[str, t.Any]:
    """One TOML document; ``ValueError`` naming ``source`` when it does not parse."""
    if tomllib is None:
        raise ValueError("reading %s needs Python 3.11 or later on the node (tomllib)" % source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError("%s is not valid TOML: %s" % (source, err)) from None


def merge(base: t.Mapping[str, t.Any], override: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``override`` over ``base``, tables merged key by key (CRI-O's drop-in semantics)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclasses.dataclass
class CrioSettings:
    """CRI-O's settings as read: the merged document and where it came from."""

    config: dict[str, t.Any]
    sources: list[str]
    effective: bool  # from ``crio config`` (the installed CRI-O's own view, defaults included)

    def value(self, *path: str) -> t.Any:
        node: t.Any = self.config
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def read_settings(main_file: str, drop_in_dir: str, crio_config_output: t.Optional[str] = None) -> t.Optional[CrioSettings]:
    """CRI-O's settings: ``crio config``'s output when given, else the files; ``None`` when there are none."""
    if crio_config_output is not None:
        return CrioSettings(parse_toml(crio_config_output, "the output of crio config"), ["crio config"], True)
    files = [main_file] if os.path.isfile(main_file) else []
    files += sorted(p for p in glob.glob(os.path.join(drop_in_dir, "*.conf")) if os.path.isfile(p))
    if not files:
        return None
    config: dict[str, t.Any] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            config = merge(config, parse_toml(handle.read(), path))
    return CrioSettings(config, files, False)


def storage(settings: t.Optional[CrioSettings]) -> dict[str, t.Any]:
    """The container storage CRI-O reads (``[crio] root``, ``runroot``, ``storage_driver``, ``storage_option``).

    Empty values mean CRI-O's (and buildah's) default, /etc/containers/storage.conf; an image built
    with buildah given the same values lands where CRI-O finds it.
    """
    table = (settings.value("crio") if settings else None) or {}
    options = table.get("storage_option") or []
    return {
        "root": str(table.get("root") or ""),
        "runroot": str(table.get("runroot") or ""),
        "driver": str(table.get("storage_driver") or ""),
        "options": [str(o) for o in options] if isinstance(options, list) else [],
    }


@dataclasses.dataclass
class Criu:
    """criu on the node: where, which version, what ``criu check`` said."""

    path: str = ""
    version: str = ""
    check_rc: t.Optional[int] = None
    check_output: str = ""


@dataclasses.dataclass
class Decision:
    supported: bool
    mode: str  # checkpoint_restore, checkpoint_only, legacy enable_criu_support, "" (none)
    reason: str

    def as_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


def restore_mode(settings: t.Optional[CrioSettings]) -> tuple[str, str]:
    """(mode, why not) from CRI-O's settings; ``why not`` is empty when CRI-O restores checkpoints."""
    if settings is None:
        return "", "has no CRI-O (no /etc/crio/crio.conf, no /etc/crio/crio.conf.d/*.conf, no crio command)"
    level = settings.value("crio", "checkpoint_restore", "container_level_enabled")
    if level is not None:
        if level == ENABLED:
            return ENABLED, ""
        return str(level), "has CRI-O with container_level_enabled = %r (%s)" % (level, ", ".join(settings.sources))
    legacy = settings.value("crio", "runtime", "enable_criu_support") is True
    if legacy and settings.effective and settings.value("crio", "checkpoint_restore") is None:
        return "legacy enable_criu_support", ""  # a CRI-O from before container_level_enabled says so itself
    if legacy:
        return "", ("has CRI-O with only [crio.runtime] enable_criu_support = true (%s), which CRI-O releases with "
                    "container_level_enabled (default checkpoint_only) do not restore with" % ", ".join(settings.sources))
    return "", "has CRI-O without checkpoint restore enabled (%s)" % ", ".join(settings.sources)


def decide(node: str, settings: t.Optional[CrioSettings], criu: Criu, fix: str = DEFAULT_FIX) -> Decision:
    """Whether ``node`` can restore checkpoints; when not, a reason naming what is missing and the fix."""
    mode, why_not = restore_mode(settings)
    if why_not:
        return Decision(False, mode, "node %s %s: set %s and install criu, or %s; the container starts from its image"
                        % (node, why_not, SETTING, fix))
    if not criu.path:
        return Decision(False, mode, "node %s has CRI-O with checkpoint restore enabled but no criu: install criu (the package criu), "
                        "or %s; the container starts from its image" % (node, fix))
    if criu.check_rc != 0:
        said = " / ".join(line.strip() for line in criu.check_output.splitlines() if line.strip())[-600:]
        return Decision(False, mode, "node %s: criu check fails (exit %s: %s): this kernel cannot restore checkpoints; "
                        "use a worker image whose kernel passes criu check, or %s; the container starts from its image"
                        % (node, criu.check_rc, said or "no output", fix))
    return Decision(True, mode, "")
