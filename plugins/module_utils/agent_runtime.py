# -*- coding: utf-8 -*-
# Copyright: hybridcloud.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every backup agent on a node does the same way: settings, one run at a time, exit codes.

Standard library only; bundled into each agent by agent_bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import signal
import sys
import typing as t

from ansible_collections.hybridcloud.migration.plugins.module_utils.errors import MigrationError

Settings = t.Dict[str, t.Any]


def load_settings(path: str, required: t.Mapping[str, t.Sequence[str]], role: str) -> Settings:
    """The agent's JSON settings (written by ``role``), checked before anything runs.

    ``required`` maps a section ("" for the top level) to the keys it must have.
    """
    fix = "run the %s role on this node again" % role
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError) as err:
        raise MigrationError("Cannot read the agent settings %s: %s" % (path, err), fix) from err
    for section, keys in required.items():
        where = settings.get(section) if section else settings
        missing = [k for k in keys if not isinstance(where, dict) or where.get(k) in (None, "")]
        if missing:
            raise MigrationError(
                "The agent settings %s lack %s" % (path, ", ".join((section + "." if section else "") + k for k in missing)), fix
            )
    return settings


@contextlib.contextmanager
def single_run(lock_file: str) -> t.Iterator[None]:
    """Never two runs at once on a node, whoever starts them (timer, runbook, a person)."""
    with open(lock_file, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MigrationError("Another run holds %s" % lock_file, "wait for it to finish") from None
        yield


class Stopped(MigrationError):
    """SIGTERM (the unit's timeout, ``systemctl stop``, a shutdown) ends the run like a failure, so
    its clean-ups run: a checkpoint archive holds every memory page of a container."""


def _stop(signum: int, _frame: t.Any) -> None:
    raise Stopped("Stopped by %s (the unit's timeout, systemctl stop or a shutdown)" % signal.Signals(signum).name,
                  "the catalog still names the previous backup; the next run makes a new one (raise the unit's timeout if it ran out)")


def agent_main(
    prog: str,
    description: str,
    default_settings: str,
    run: t.Callable[[str], t.Mapping[str, t.Any]],
    argv: t.Sequence[str] | None = None,
) -> int:
    """Parse ``--config``, run, log the outcome; 0 on success, 1 on any failure (never a traceback)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default=default_settings, help="the JSON settings the role writes (mode 0600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger(prog)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        result = run(args.config)
    except MigrationError as err:
        log.error("backup FAILED: %s", err.message)
        return 1
    except (OSError, ValueError, KeyError) as err:
        log.error("backup FAILED (the catalog was not touched): %s: %s", type(err).__name__, err)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("backup complete: catalog entry %s (latest: %s)", result["entry_id"], "moved" if result["latest_updated"] else "unchanged")
    return 0
