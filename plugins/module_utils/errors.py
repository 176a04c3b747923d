# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the collection.

Every failure a user can meet is raised as MigrationError with two parts: what went wrong
and what to do about it. Modules turn it into ``fail_json`` in their one exception
handler, so every message in the collection reads the same way:

    except MigrationError as err:
        module.fail_json(**err.fail_json_kwargs())
"""

from __future__ import annotations

import typing as t


class MigrationError(Exception):
    """A failure with a message naming the problem and the fix."""

    def __init__(self, problem: str, fix: str, **details: t.Any) -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "%s. Fix: %s." % (self.problem, self.fix)

    def fail_json_kwargs(self) -> dict[str, t.Any]:
        """The keyword arguments for ``AnsibleModule.fail_json``."""
        return dict(msg=self.message, problem=self.problem, fix=self.fix, **self.details)
