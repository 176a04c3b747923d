"""Run the collection's modules and playbooks with the real ansible CLI, as a user would.

Tests get back what Ansible reported (the module's result, or per-task results and the
play recap) parsed from the ``ansible.posix.json`` callback, plus the raw output so they
can check that secrets never appear in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import typing as t

REPO = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS_ROOT = REPO / ".build" / "collections"
BIN = pathlib.Path(sys.executable).parent


def ansible_env(extra: t.Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ansible commands: our collection first, JSON output, no host keys."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_ROOT),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    # The test's AWS_* variables would silently stand in for missing module options.
    for name in [n for n in env if n.startswith("AWS_")]:
        del env[name]
    env.update(extra or {})
    return env


@dataclasses.dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, t.Any]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def task_results(self, host: str = "localhost") -> list[dict[str, t.Any]]:
        """Each task's result on ``host``, in order, with the task name added as ``_task``."""
        results = []
        for play in self.report.get("plays", []):
            for task in play.get("tasks", []):
                if host in task.get("hosts", {}):
                    results.append(dict(task["hosts"][host], _task=task["task"]["name"]))
        return results

    def stats(self, host: str = "localhost") -> dict[str, int]:
        return self.report.get("stats", {}).get(host, {})


class ModuleResult(dict):
    """A module's result as Ansible reported it, with the whole run in ``.run``."""

    run: Run


def _parse(stdout: str) -> dict[str, t.Any]:
    start = stdout.find("{")
    try:
        return json.loads(stdout[start:]) if start >= 0 else {}
    except ValueError:
        return {}


def run_module(
    module: str,
    args: t.Mapping[str, t.Any],
    *,
    check: bool = False,
    verbosity: int = 0,
    env: t.Mapping[str, str] | None = None,
) -> ModuleResult:
    """Run ``hybridcloud.migration.<module>`` (or any module given by FQCN) on localhost.

    Returns the module's result, with the whole run in ``.run``.
    """
    fqcn = module if "." in module else "hybridcloud.migration." + module
    argv = [str(BIN / "ansible"), "localhost", "-m", fqcn, "-a", json.dumps(dict(args))]
    if check:
        argv.append("--check")
    if verbosity:
        argv.append("-" + "v" * verbosity)
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(env), capture_output=True, text=True, timeout=300, check=False)
    run = Run(proc.returncode, proc.stdout, proc.stderr, _parse(proc.stdout))
    results = run.task_results()
    if not results:
        raise AssertionError("ansible printed no result:\n%s" % run.output)
    result = ModuleResult(results[0])
    result.run = run
    return result


def run_playbook(
    playbook: pathlib.Path,
    *,
    inventory: pathlib.Path | str | None = None,
    extra_vars: t.Mapping[str, t.Any] | None = None,
    check: bool = False,
    env: t.Mapping[str, str] | None = None,
) -> Run:
    argv = [str(BIN / "ansible-playbook"), str(playbook)]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(env), capture_output=True, text=True, timeout=900, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr, _parse(proc.stdout))
