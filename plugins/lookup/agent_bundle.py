# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: agent_bundle
short_description: Build a node agent as one standard-library zipapp, on the controller
version_added: 0.1.0
description:
  - Bundles an agent program of this collection (for example the node backup agent) with the
    collection's catalog code into one executable zipapp that any Python 3.9 or newer runs
    without third-party packages, and returns the path of that file on the controller.
  - The file is named after its content and is reproducible, so copying it to nodes is idempotent.
author:
  - hybridcloud.migration developers (@hybridcloud)
options:
  _terms:
    description:
      - Path of the agent's main Python file; a relative path is taken from the root of this
        collection, for example V(roles/node_backup/files/hcm_node_backup.py).
    required: true
    type: list
    elements: path
  output_dir:
    description: Controller directory the bundles are written to.
    type: path
    default: ~/.ansible/tmp/hybridcloud-migration-agents
"""

EXAMPLES = r"""
- name: Install the node backup agent
  ansible.builtin.copy:
    src: "{{ lookup('hybridcloud.migration.agent_bundle', 'roles/node_backup/files/hcm_node_backup.py') }}"
    dest: /usr/local/lib/hybridcloud-migration/hcm-node-backup.pyz
    mode: "0755"
"""

RETURN = r"""
_raw:
  description: Path of each bundle on the controller.
  type: list
  elements: path
"""

import pathlib

COLLECTION_ROOT = pathlib.Path(__file__).resolve().parents[2]

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.hybridcloud.migration.plugins.module_utils.agent_bundle import build_bundle


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        output_dir = pathlib.Path(self.get_option("output_dir")).expanduser()
        paths = []
        for term in terms:
            main = COLLECTION_ROOT / pathlib.Path(term).expanduser()  # an absolute term replaces the root
            if not main.is_file():
                raise AnsibleLookupError("agent_bundle: %s is not a file. Fix: give the path of the agent's main .py file." % term)
            paths.append(str(build_bundle(main, output_dir)))
        return paths
