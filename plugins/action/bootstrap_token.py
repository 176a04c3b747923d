# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the bootstrap_token module and hides its result from the display, since it holds a token.

A module cannot mark its own result as no_log: Ansible strips ``_ansible_*`` keys from what a
module returns. An action plugin can, and the task then shows as if it had ``no_log: true``
(``changed`` and ``failed`` stay visible) while the registered variable keeps every value.
Failures hold no token and stay visible. Async is refused: async_status would show the token.
"""

from __future__ import annotations

import typing as t

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        result = merge_hash(result, self._execute_module(task_vars=task_vars))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if "token" in result:
            result["_ansible_no_log"] = True
        return result
