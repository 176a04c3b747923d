# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can this node restore a Kubernetes container checkpoint? (CRI-O's or containerd's settings, and criu.)

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

containerd 2.2/2.3 restores when the image named in CreateContainer carries that annotation on its
top-level manifest or index and the CRI runtime plugin has

    [plugins."io.containerd.cri.v1.runtime"]
    enable_experimental_restore_via_create = true   # default false
    enable_criu = true                              # the default

(containerd releases from before that opt-in restore without it; that is trusted only when
``containerd config dump`` shows no such key). criu must be at least 3.16 (go-criu's minimum) and
pass ``criu check``; containerd 1.x cannot restore at all.

``decide``/``decide_node`` are plain functions over what was read (no I/O), unit-tested;
``read_settings`` reads CRI-O's files in CRI-O's order (``crio.conf``, then ``crio.conf.d/*.conf``
sorted, later values win); ``read_containerd_settings`` reads ``config.toml`` and its ``imports``
as containerd does, each file migrated from its own ``version`` to version 4's layout.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import typing as t

try:
    import tomllib
except ImportError:  # Python < 3.11 on the node
    tomllib = None  # type: ignore[assignment]

CHECKPOINT_ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
ENABLED = "checkpoint_restore"
SETTING = '[crio.checkpoint_restore] container_level_enabled = "checkpoint_restore"'
DEFAULT_FIX = "build the worker image with the worker_node role, whose CRI-O has checkpoint restore enabled"
CONTAINERD_FIX = "build the worker image with worker_node_container_runtime=containerd, whose containerd has restore enabled"
CONTAINERD_RUNTIME = "io.containerd.cri.v1.runtime"
CONTAINERD_IMAGES = "io.containerd.cri.v1.images"
CONTAINERD_GRPC = "io.containerd.server.v1.grpc"
CONTAINERD_ADDRESS = "/run/containerd/containerd.sock"
CONTAINERD_NAMESPACE = "k8s.io"  # the CRI's namespace
RESTORE_KEY = "enable_experimental_restore_via_create"
MIN_CRIU = 31600  # go-criu's PodCriuVersion, which containerd's CRI checks


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
    mode: str  # checkpoint_restore, checkpoint_only, legacy enable_criu_support, restore_via_create, ..., "" (none)
    reason: str
    runtime: str = ""  # crio, containerd, "" (neither)
    runtime_note: str = ""  # how the runtime was chosen when both are there
    ready: bool = False  # the runtime is set up to restore (criu aside): worth installing criu, buildah, restic

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


def criu_number(version: str) -> t.Optional[int]:
    """``Version: 4.1.1`` -> 40101 (go-criu's numbering); ``None`` when there is no version."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not match:
        return None
    return int(match.group(1)) * 10000 + int(match.group(2)) * 100 + int(match.group(3) or 0)


def _criu_why_not(node: str, runtime: str, criu: Criu, fix: str, minimum: t.Optional[int] = None) -> str:
    if not criu.path:
        return ("node %s has %s with checkpoint restore enabled but no criu: install criu (the package criu), "
                "or %s; the container starts from its image" % (node, runtime, fix))
    number = criu_number(criu.version)
    if minimum and number is not None and number < minimum:
        return ("node %s has %s with checkpoint restore enabled but criu %s, older than the %d.%d it needs: install criu 4.1 "
                "or later, or %s; the container starts from its image"
                % (node, runtime, criu.version, minimum // 10000, minimum // 100 % 100, fix))
    if criu.check_rc != 0:
        said = " / ".join(line.strip() for line in criu.check_output.splitlines() if line.strip())[-600:]
        return ("node %s: criu check fails (exit %s: %s): this kernel cannot restore checkpoints; "
                "use a worker image whose kernel passes criu check, or %s; the container starts from its image"
                % (node, criu.check_rc, said or "no output", fix))
    return ""


def decide(node: str, settings: t.Optional[CrioSettings], criu: Criu, fix: str = DEFAULT_FIX) -> Decision:
    """Whether ``node`` can restore checkpoints with CRI-O; when not, a reason naming what is missing and the fix."""
    mode, why_not = restore_mode(settings)
    runtime = "crio" if settings is not None else ""
    if why_not:
        return Decision(False, mode, "node %s %s: set %s and install criu, or %s; the container starts from its image"
                        % (node, why_not, SETTING, fix), runtime)
    why_not = _criu_why_not(node, "CRI-O", criu, fix)
    return Decision(not why_not, mode, why_not, runtime, ready=True)


# -- containerd --------------------------------------------------------------------------------

# containerd's version 1 plugin names (v1MigratePluginName), the ones whose settings matter here.
_V1_PLUGINS = {"cri": "io.containerd.grpc.v1.cri", "overlayfs": "io.containerd.snapshotter.v1.overlayfs"}
# Keys of the version 2 CRI table that did not move to the runtime plugin (plugins/cri/runtime migrateConfig).
_NOT_RUNTIME = {"cni", "containerd", "sandbox_image", "registry", "image_decryption", "max_concurrent_downloads",
                "image_pull_progress_timeout", "image_pull_with_sync_fs", "stats_collect_period", "disable_tcp_service",
                "stream_server_address", "stream_server_port", "stream_idle_timeout", "enable_tls_streaming",
                "x509_key_pair_streaming"}


def _table(parent: t.Mapping[str, t.Any], key: str) -> dict[str, t.Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def migrate_containerd(document: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """One containerd config file in version 4's layout (the parts read here), as containerd migrates it.

    Version 1 (or none): short plugin names; 2: CRI settings in ``io.containerd.grpc.v1.cri``; 3: the
    GRPC address in ``[grpc]``; 4: the server settings are plugins too.
    """
    doc = dict(document)
    version = doc.get("version") or 1
    plugins = dict(_table(doc, "plugins"))
    if version < 2:
        plugins = {(_V1_PLUGINS.get(name, name) if "." not in name else name): value for name, value in plugins.items()}
    if version < 3 and isinstance(plugins.get("io.containerd.grpc.v1.cri"), dict):
        cri = plugins["io.containerd.grpc.v1.cri"]
        runtime = dict(_table(plugins, CONTAINERD_RUNTIME))
        for key, value in cri.items():
            if key not in _NOT_RUNTIME:
                runtime.setdefault(key, value)
        old = _table(cri, "containerd")
        moved = {k: v for k, v in old.items() if k not in ("snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers")}
        if moved:
            runtime["containerd"] = merge(moved, _table(runtime, "containerd"))
        plugins[CONTAINERD_RUNTIME] = runtime
        if "snapshotter" in old:
            plugins[CONTAINERD_IMAGES] = dict(_table(plugins, CONTAINERD_IMAGES), snapshotter=old["snapshotter"])
    if version < 4 and _table(doc, "grpc").get("address") and CONTAINERD_GRPC not in plugins:
        plugins[CONTAINERD_GRPC] = {"address": _table(doc, "grpc")["address"]}
    doc["plugins"] = plugins
    doc["version"] = max(version, 4)
    return doc


@dataclasses.dataclass
class ContainerdSettings:
    """containerd's settings as read, in version 4's layout, and where they came from."""

    config: dict[str, t.Any]
    sources: list[str]
    effective: bool  # from ``containerd config dump`` (the installed containerd's own view, defaults included)
    version: str = ""  # ``containerd --version``'s, when the binary is there

    def runtime(self) -> dict[str, t.Any]:
        return _table(_table(self.config, "plugins"), CONTAINERD_RUNTIME)

    def address(self) -> str:
        return str(_table(_table(self.config, "plugins"), CONTAINERD_GRPC).get("address") or CONTAINERD_ADDRESS)

    def snapshotter(self) -> str:
        """The snapshotter the CRI restores from: the default runtime's, else the image service's, else overlayfs."""
        containerd = _table(self.runtime(), "containerd")
        name = str(containerd.get("default_runtime_name") or "runc")
        own = _table(_table(containerd, "runtimes"), name).get("snapshotter")
        images = _table(_table(self.config, "plugins"), CONTAINERD_IMAGES).get("snapshotter")
        return str(own or images or "overlayfs")

    def cri_disabled(self) -> bool:
        disabled = self.config.get("disabled_plugins") or []
        return any(name in disabled for name in ("io.containerd.grpc.v1.cri", CONTAINERD_RUNTIME, "cri"))


def _resolve_imports(parent: str, imports: t.Any) -> list[str]:
    found: list[str] = []
    for entry in imports if isinstance(imports, list) else []:
        path = os.path.normpath(str(entry))
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(parent), path)
        found += sorted(glob.glob(path)) if "*" in path else [path]
    return found


def read_containerd_settings(main_file: str, dump_output: t.Optional[str] = None, version: str = "") -> t.Optional[ContainerdSettings]:
    """containerd's settings: ``containerd config dump``'s output when given, else ``main_file`` and its imports.

    ``None`` when neither is there. Imports are read after the file that names them, each migrated
    from its own version, tables merged key by key, later values winning (containerd's rules).
    """
    if dump_output is not None:
        return ContainerdSettings(migrate_containerd(parse_toml(dump_output, "the output of containerd config dump")),
                                  ["containerd config dump"], True, version)
    if not os.path.isfile(main_file):
        return None
    config: dict[str, t.Any] = {}
    pending, loaded = [main_file], []
    while pending:
        path, pending = pending[0], pending[1:]
        if path in loaded:
            continue
        with open(path, encoding="utf-8") as handle:
            document = parse_toml(handle.read(), path)
        config = merge(config, migrate_containerd(document))
        loaded.append(path)
        pending += _resolve_imports(path, document.get("imports"))
    return ContainerdSettings(config, loaded, False, version)


def containerd_release(version: str) -> t.Optional[tuple[int, int]]:
    """``containerd github.com/containerd/containerd/v2 v2.3.7 lab`` -> (2, 3)."""
    match = re.search(r"(?<![\w.])v?(\d+)\.(\d+)(?:\.\d+)?", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def containerd_setting(path: str) -> str:
    return '%s = true in [plugins."%s"] of %s' % (RESTORE_KEY, CONTAINERD_RUNTIME, path)


def containerd_restore_mode(settings: t.Optional[ContainerdSettings], main_file: str) -> tuple[str, str]:
    """(mode, why not) from containerd's settings; ``why not`` is empty when containerd restores checkpoints."""
    if settings is None:
        return "", "has no containerd (no %s, no containerd command)" % main_file
    where = ", ".join(settings.sources)
    release = containerd_release(settings.version)
    if release is not None and release < (2, 1):
        return "", ("has containerd %s (%s), which cannot restore checkpoints (containerd 2.1 or later can)"
                    % (".".join(map(str, release)), settings.version.strip()))
    if settings.cri_disabled():
        return "", "has containerd with its CRI plugin disabled (disabled_plugins in %s)" % where
    runtime = settings.runtime()
    if runtime.get("enable_criu") is False:
        return "criu disabled", "has containerd with enable_criu = false (%s)" % where
    restore = runtime.get(RESTORE_KEY)
    if restore is True:
        return "restore_via_create", ""
    if restore is None and settings.effective:
        return "restore_via_create (before the opt-in)", ""  # a containerd from before the setting says so itself
    return "", "has containerd without checkpoint restore enabled (%s = %s, %s)" % (RESTORE_KEY, str(bool(restore)).lower(), where)


def decide_containerd(node: str, settings: t.Optional[ContainerdSettings], criu: Criu, main_file: str = "/etc/containerd/config.toml",
                      fix: str = CONTAINERD_FIX) -> Decision:
    """Whether ``node`` can restore checkpoints with containerd; when not, the reason with the setting and the fix."""
    mode, why_not = containerd_restore_mode(settings, main_file)
    runtime = "containerd" if settings is not None else ""
    if why_not:
        return Decision(False, mode, "node %s %s: set %s and install criu, or %s; the container starts from its image"
                        % (node, why_not, containerd_setting(main_file), fix), runtime)
    why_not = _criu_why_not(node, "containerd", criu, fix, MIN_CRIU)
    return Decision(not why_not, mode, why_not, runtime, ready=True)


# -- which runtime -----------------------------------------------------------------------------


def kubelet_endpoint(config_yaml: str = "", flags_env: str = "") -> str:
    """The kubelet's container runtime endpoint: kubeadm's flags file wins over its config file; "" when neither says."""
    flag = re.search(r"--container-runtime-endpoint[= ](\S+?)[\"']?(?:\s|$)", flags_env or "")
    if flag:
        return flag.group(1).strip("\"'")
    line = re.search(r"^containerRuntimeEndpoint:\s*[\"']?([^\s\"'#]+)", config_yaml or "", re.M)
    return line.group(1) if line else ""


def endpoint_runtime(endpoint: str, containerd: t.Optional[ContainerdSettings]) -> str:
    """crio, containerd or "" for the runtime behind a kubelet endpoint (``unix:///run/containerd/containerd.sock``)."""
    path = re.sub(r"^unix://", "", endpoint or "")
    if not path:
        return ""
    if containerd is not None and os.path.normpath(path) == os.path.normpath(containerd.address()):
        return "containerd"
    name = os.path.basename(path)
    return "containerd" if "containerd" in name else "crio" if "crio" in name else ""


def decide_node(node: str, crio: t.Optional[CrioSettings], containerd: t.Optional[ContainerdSettings], criu: Criu,
                endpoint: str = "", fix: str = DEFAULT_FIX, containerd_fix: str = CONTAINERD_FIX,
                containerd_file: str = "/etc/containerd/config.toml", runtime: str = "auto") -> Decision:
    """The decision for the node's runtime: the one asked for, else the kubelet's, else the only one, else the one set up to restore."""
    by_crio = decide(node, crio, criu, fix)
    by_containerd = decide_containerd(node, containerd, criu, containerd_file, containerd_fix)
    if runtime in ("crio", "containerd"):
        chosen, note = (by_crio if runtime == "crio" else by_containerd), "asked for %s" % runtime
    elif crio is None and containerd is None:
        return Decision(False, "", "node %s has no CRI-O (no /etc/crio/crio.conf, no /etc/crio/crio.conf.d/*.conf, no crio command) "
                        "and no containerd (no %s, no containerd command): set %s (CRI-O) or %s (containerd 2.2 or later) and "
                        "install criu, or %s; the container starts from its image"
                        % (node, containerd_file, SETTING, containerd_setting(containerd_file), fix))
    elif crio is None or containerd is None:
        chosen, note = (by_containerd if crio is None else by_crio), ""
    elif endpoint_runtime(endpoint, containerd):
        used = endpoint_runtime(endpoint, containerd)
        chosen, note = (by_crio if used == "crio" else by_containerd), "both CRI-O and containerd are here; the kubelet uses %s (%s)" % (used, endpoint)
    elif by_containerd.ready and not by_crio.ready:
        chosen, note = by_containerd, "both CRI-O and containerd are here and the kubelet's endpoint is unknown; chose containerd, the one set up to restore"
    else:
        chosen, note = by_crio, ("both CRI-O and containerd are here and the kubelet's endpoint is unknown; chose CRI-O"
                                 + (", the one set up to restore" if by_crio.ready and not by_containerd.ready else ""))
    chosen.runtime_note = note
    return chosen
