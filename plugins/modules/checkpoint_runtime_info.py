#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_runtime_info
short_description: Tell whether this node can restore Kubernetes container checkpoints, and if not, why
version_added: 0.1.0
description:
  - Runs on a Kubernetes node. Reads CRI-O's settings (the output of C(crio config) when CRI-O is installed, else
    C(/etc/crio/crio.conf) and C(/etc/crio/crio.conf.d/*.conf) in CRI-O's order) and containerd's (the output of
    C(containerd config dump) when containerd is installed, else C(/etc/containerd/config.toml) and its C(imports), each
    file migrated from its own C(version) as containerd does), looks for criu and runs C(criu check).
  - With CRI-O, the node can restore when CRI-O has C([crio.checkpoint_restore] container_level_enabled = "checkpoint_restore")
    (releases that have the setting default to C(checkpoint_only), which takes checkpoints but does not restore them),
    or, on a CRI-O from before that setting (C(crio config) shows no C(checkpoint_restore) table),
    C([crio.runtime] enable_criu_support = true); and criu is installed and C(criu check) passes.
  - With containerd (2.1 or later; 1.x cannot restore), the node can restore when
    C([plugins."io.containerd.cri.v1.runtime"]) has C(enable_experimental_restore_via_create = true) (version 2 configs
    C([plugins."io.containerd.grpc.v1.cri"])) and not C(enable_criu = false), or, on a containerd from before that opt-in
    (C(containerd config dump) shows no such key), by default; criu must be 3.16 or later and pass C(criu check).
  - When both runtimes are there, the one the kubelet uses decides (C(--container-runtime-endpoint) in O(kubelet_flags_file),
    else C(containerRuntimeEndpoint) in O(kubelet_config)); when that is unknown, the one set up to restore, else CRI-O;
    RV(runtime_note) says which and why.
  - When it cannot, RV(reason) names what is missing and the fix. Never fails for that.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  node:
    description:
      - Name of this node, for the reason.
    type: str
    required: true
  crio_config:
    description:
      - CRI-O's main settings file.
    type: path
    default: /etc/crio/crio.conf
  crio_config_dir:
    description:
      - CRI-O's drop-in directory (its C(*.conf) files are read in name order, later values win).
    type: path
    default: /etc/crio/crio.conf.d
  crio_binary:
    description:
      - The crio command (looked up in E(PATH) and C(/usr/local/bin)). When found, C(crio config) gives the settings.
      - Empty to read the files only.
    type: str
    default: crio
  criu_binary:
    description:
      - The criu command (looked up in E(PATH), C(/usr/sbin) and C(/sbin)).
    type: str
    default: criu
  fix:
    description:
      - How to get a node that can restore, appended to every reason about CRI-O (and to the one when there is no runtime).
    type: str
    default: build the worker image with the worker_node role, whose CRI-O has checkpoint restore enabled
  containerd_config:
    description:
      - containerd's main settings file (its C(imports) are read too).
    type: path
    default: /etc/containerd/config.toml
  containerd_binary:
    description:
      - The containerd command (looked up in E(PATH) and C(/usr/local/bin)). When found, C(containerd config dump) gives the
        settings and C(containerd --version) the release.
      - Empty to read the files only.
    type: str
    default: containerd
  ctr_binary:
    description:
      - The ctr command (looked up in E(PATH) and C(/usr/local/bin)), reported in RV(containerd.ctr) for importing images.
    type: str
    default: ctr
  containerd_fix:
    description:
      - How to get a node that can restore, appended to every reason about containerd.
    type: str
    default: build the worker image with worker_node_container_runtime=containerd, whose containerd has restore enabled
  kubelet_config:
    description:
      - The kubelet's configuration file, whose C(containerRuntimeEndpoint) names the runtime when both are installed.
    type: path
    default: /var/lib/kubelet/config.yaml
  kubelet_flags_file:
    description:
      - kubeadm's kubelet flags file, whose C(--container-runtime-endpoint) wins over O(kubelet_config).
    type: path
    default: /var/lib/kubelet/kubeadm-flags.env
  runtime:
    description:
      - The runtime to decide for; V(auto) finds it out (see the description).
    type: str
    choices: [auto, crio, containerd]
    default: auto
attributes:
  check_mode:
    support: full
    description: Reads only (C(crio config) and C(criu check) change nothing).
  diff_mode:
    support: none
    description: Not supported.
notes:
  - Needs Python 3.11 or later on the node (C(tomllib)).
  - The role C(hybridcloud.migration.restore_state) asks it once per new node before it builds checkpoint images.
"""

EXAMPLES = r"""
- name: Can this node restore checkpoints?
  hybridcloud.migration.checkpoint_runtime_info:
    node: "{{ inventory_hostname }}"
  register: runtime

- name: Say why not
  ansible.builtin.debug:
    msg: "{{ runtime.reason }}"
  when: not runtime.supported
"""

RETURN = r"""
supported:
  description: Whether checkpoints can be restored here.
  returned: always
  type: bool
  sample: true
runtime:
  description: The runtime decided for, V(crio) or V(containerd); empty when there is neither.
  returned: always
  type: str
  sample: containerd
runtime_note:
  description: How the runtime was chosen when both are installed; empty otherwise.
  returned: always
  type: str
  sample: both CRI-O and containerd are here; the kubelet uses containerd (unix:///run/containerd/containerd.sock)
ready:
  description: Whether the runtime is set up to restore, criu aside (then installing criu can make RV(supported) true).
  returned: always
  type: bool
  sample: true
mode:
  description: >-
    How the runtime is set up for checkpoints. CRI-O - V(checkpoint_restore), V(checkpoint_only), V(legacy enable_criu_support).
    containerd - V(restore_via_create), V(restore_via_create (before the opt-in)), V(criu disabled). Empty when there is
    no runtime or checkpoints are not enabled.
  returned: always
  type: str
  sample: checkpoint_restore
reason:
  description: Why this node cannot restore, with the fix; empty when it can.
  returned: always
  type: str
  sample: >-
    node cloud-worker-3 has containerd without checkpoint restore enabled (enable_experimental_restore_via_create = false,
    containerd config dump): set enable_experimental_restore_via_create = true in [plugins."io.containerd.cri.v1.runtime"]
    of /etc/containerd/config.toml and install criu, or build the worker image with worker_node_container_runtime=containerd,
    whose containerd has restore enabled; the container starts from its image
sources:
  description: Where the chosen runtime's settings were read from (files, V(crio config) or V(containerd config dump)).
  returned: always
  type: list
  elements: str
  sample: [/etc/crio/crio.conf, /etc/crio/crio.conf.d/10-checkpoint.conf]
criu:
  description: criu on the node.
  returned: always
  type: dict
  contains:
    path:
      description: Where criu is; empty when it is missing.
      type: str
      returned: always
    version:
      description: First line of C(criu --version).
      type: str
      returned: always
    check_rc:
      description: Exit status of C(criu check); null when it did not run.
      type: int
      returned: always
containerd:
  description: containerd as found; empty strings when it is not installed.
  returned: always
  type: dict
  contains:
    address:
      description: The socket of containerd's GRPC API (C(ctr --address)).
      type: str
      returned: always
      sample: /run/containerd/containerd.sock
    namespace:
      description: The namespace the CRI keeps its images in.
      type: str
      returned: always
      sample: k8s.io
    snapshotter:
      description: The snapshotter the CRI restores from (the default runtime's, else the image service's, else V(overlayfs)).
      type: str
      returned: always
      sample: overlayfs
    ctr:
      description: Where ctr is; empty when it is missing.
      type: str
      returned: always
    version:
      description: C(containerd --version).
      type: str
      returned: always
    sources:
      description: Where containerd's settings were read from.
      type: list
      elements: str
      returned: always
storage:
  description: >-
    The container storage CRI-O reads (its C([crio]) C(root), C(runroot), C(storage_driver) and C(storage_option));
    empty values mean the defaults of C(/etc/containers/storage.conf), which buildah reads too.
  returned: always
  type: dict
  contains:
    root:
      description: C(--root) for buildah, or empty.
      type: str
      returned: always
    runroot:
      description: C(--runroot) for buildah, or empty.
      type: str
      returned: always
    driver:
      description: C(--storage-driver) for buildah, or empty.
      type: str
      returned: always
    options:
      description: C(--storage-opt) values for buildah.
      type: list
      elements: str
      returned: always
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hybridcloud.migration.plugins.module_utils import checkpoint_runtime
from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError


def _criu(module: AnsibleModule, binary: str) -> checkpoint_runtime.Criu:
    path = module.get_bin_path(binary, opt_dirs=["/usr/sbin", "/sbin"]) if binary else None
    if not path:
        return checkpoint_runtime.Criu()
    rc, out, err = module.run_command([path, "--version"])
    version = (out or err).strip().splitlines()[0] if rc == 0 and (out or err).strip() else ""
    rc, out, err = module.run_command([path, "check"])
    return checkpoint_runtime.Criu(path, version, rc, (out + "\n" + err).strip())


def _output(module: AnsibleModule, argv: list[str]) -> t.Optional[str]:
    rc, out, err = module.run_command(argv)
    if rc == 0:
        return out
    module.warn("%s failed (exit %d: %s); read the files instead" % (" ".join(argv), rc, err.strip()[-300:]))
    return None


def _text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def _containerd(module: AnsibleModule, params: dict[str, t.Any]) -> t.Optional[checkpoint_runtime.ContainerdSettings]:
    binary = module.get_bin_path(params["containerd_binary"], opt_dirs=["/usr/local/bin"]) if params["containerd_binary"] else None
    if not binary:
        return checkpoint_runtime.read_containerd_settings(params["containerd_config"])
    rc, out, err = module.run_command([binary, "--version"])
    version = (out or err).strip() if rc == 0 else ""
    dump = _output(module, [binary, "--config", params["containerd_config"], "config", "dump"])
    return checkpoint_runtime.read_containerd_settings(params["containerd_config"], dump, version)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type="str", required=True),
            crio_config=dict(type="path", default="/etc/crio/crio.conf"),
            crio_config_dir=dict(type="path", default="/etc/crio/crio.conf.d"),
            crio_binary=dict(type="str", default="crio"),
            criu_binary=dict(type="str", default="criu"),
            fix=dict(type="str", default=checkpoint_runtime.DEFAULT_FIX),
            containerd_config=dict(type="path", default="/etc/containerd/config.toml"),
            containerd_binary=dict(type="str", default="containerd"),
            ctr_binary=dict(type="str", default="ctr"),
            containerd_fix=dict(type="str", default=checkpoint_runtime.CONTAINERD_FIX),
            kubelet_config=dict(type="path", default="/var/lib/kubelet/config.yaml"),
            kubelet_flags_file=dict(type="path", default="/var/lib/kubelet/kubeadm-flags.env"),
            runtime=dict(type="str", default="auto", choices=["auto", "crio", "containerd"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        output = None
        crio = module.get_bin_path(params["crio_binary"], opt_dirs=["/usr/local/bin"]) if params["crio_binary"] else None
        if crio:
            output = _output(module, [crio, "config"])
        try:
            settings = checkpoint_runtime.read_settings(params["crio_config"], params["crio_config_dir"], output)
        except (OSError, ValueError) as err:
            raise MigrationError("Cannot read CRI-O's settings on %s: %s" % (params["node"], err),
                                 "fix the file (CRI-O itself would refuse it), then run again") from None
        try:
            containerd = _containerd(module, params)
        except (OSError, ValueError) as err:
            raise MigrationError("Cannot read containerd's settings on %s: %s" % (params["node"], err),
                                 "fix the file (containerd itself would refuse it), then run again") from None
        criu = _criu(module, params["criu_binary"])
        endpoint = checkpoint_runtime.kubelet_endpoint(_text(params["kubelet_config"]), _text(params["kubelet_flags_file"]))
        decision = checkpoint_runtime.decide_node(params["node"], settings, containerd, criu, endpoint, params["fix"],
                                                  params["containerd_fix"], params["containerd_config"], params["runtime"])
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    ctr = module.get_bin_path(params["ctr_binary"], opt_dirs=["/usr/local/bin"]) if params["ctr_binary"] else None
    chosen = containerd if decision.runtime == "containerd" else settings
    module.exit_json(
        changed=False,
        sources=chosen.sources if chosen else [],
        criu={"path": criu.path, "version": criu.version, "check_rc": criu.check_rc},
        storage=checkpoint_runtime.storage(settings),
        containerd={
            "address": containerd.address() if containerd else "",
            "namespace": checkpoint_runtime.CONTAINERD_NAMESPACE if containerd else "",
            "snapshotter": containerd.snapshotter() if containerd else "",
            "ctr": ctr or "",
            "version": containerd.version if containerd else "",
            "sources": containerd.sources if containerd else [],
        },
        **decision.as_dict(),
    )


if __name__ == "__main__":
    main()
