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
    C(/etc/crio/crio.conf) and C(/etc/crio/crio.conf.d/*.conf) in CRI-O's order), looks for criu and runs C(criu check).
  - The node can restore when CRI-O has C([crio.checkpoint_restore] container_level_enabled = "checkpoint_restore")
    (releases that have the setting default to C(checkpoint_only), which takes checkpoints but does not restore them),
    or, on a CRI-O from before that setting (C(crio config) shows no C(checkpoint_restore) table),
    C([crio.runtime] enable_criu_support = true); and criu is installed and C(criu check) passes.
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
      - How to get a node that can restore, appended to every reason.
    type: str
    default: build the worker image with the worker role (issue 6), whose CRI-O has checkpoint restore enabled
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
mode:
  description: >-
    How CRI-O is set up for checkpoints: V(checkpoint_restore), V(checkpoint_only), V(legacy enable_criu_support),
    or empty (no CRI-O, or checkpoints not enabled).
  returned: always
  type: str
  sample: checkpoint_restore
reason:
  description: Why this node cannot restore, with the fix; empty when it can.
  returned: always
  type: str
  sample: >-
    node cloud-worker-3 has no CRI-O (no /etc/crio/crio.conf, no /etc/crio/crio.conf.d/*.conf, no crio command): set
    [crio.checkpoint_restore] container_level_enabled = "checkpoint_restore" and install criu, or build the worker image
    with the worker role (issue 6), whose CRI-O has checkpoint restore enabled; the container starts from its image
sources:
  description: Where CRI-O's settings were read from (files, or V(crio config)).
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


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type="str", required=True),
            crio_config=dict(type="path", default="/etc/crio/crio.conf"),
            crio_config_dir=dict(type="path", default="/etc/crio/crio.conf.d"),
            crio_binary=dict(type="str", default="crio"),
            criu_binary=dict(type="str", default="criu"),
            fix=dict(type="str", default=checkpoint_runtime.DEFAULT_FIX),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        output = None
        crio = module.get_bin_path(params["crio_binary"], opt_dirs=["/usr/local/bin"]) if params["crio_binary"] else None
        if crio:
            rc, out, err = module.run_command([crio, "config"])
            if rc == 0:
                output = out
            else:
                module.warn("%s config failed (exit %d: %s); read the files instead" % (crio, rc, err.strip()[-300:]))
        try:
            settings = checkpoint_runtime.read_settings(params["crio_config"], params["crio_config_dir"], output)
        except (OSError, ValueError) as err:
            raise MigrationError("Cannot read CRI-O's settings on %s: %s" % (params["node"], err),
                                 "fix the file (CRI-O itself would refuse it), then run again") from None
        criu = _criu(module, params["criu_binary"])
        decision = checkpoint_runtime.decide(params["node"], settings, criu, params["fix"])
    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(
        changed=False,
        sources=settings.sources if settings else [],
        criu={"path": criu.path, "version": criu.version, "check_rc": criu.check_rc},
        storage=checkpoint_runtime.storage(settings),
        **decision.as_dict(),
    )


if __name__ == "__main__":
    main()
