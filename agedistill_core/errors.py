"""Errors a user can act on.  Each message names the item and the fix.

The CLI prints ``AgedistillError`` messages as one line (no traceback); any
other exception is a bug and keeps its traceback.  ``run_command`` is that one handler, used by
every command (the ``agedistill`` CLI, ``agedistill_dag``'s materialize and cluster, and the
measurement modules run with ``python -m``).
"""
from __future__ import annotations

import sys
from typing import Callable


class AgedistillError(Exception):
    """Base class: the message is meant for the user, in one line."""


class ConfigError(AgedistillError):
    """params.yaml, a profile or an option is wrong."""


class DataError(AgedistillError):
    """A data root, manifest or shard is missing or malformed."""


class UnreadableImage(AgedistillError):
    """One image cannot be decoded; long runs record it and go on."""


class CheckpointError(AgedistillError):
    """A checkpoint is missing, truncated or not one of ours."""


def run_command(body: Callable[[], int | None], *, interrupted: str | None = None,
                stopped: str | None = None) -> int:
    """Run a command's ``body`` under the one error handler of agedistill's commands; its exit code.

    A user-fixable error (``AgedistillError``) prints ``error: <one line>`` on stderr: exit 2,
    no traceback.  With ``interrupted``, Ctrl-C prints it: exit 130.  With ``stopped``, a
    ``SystemExit(128 + signal)`` (what the cluster's SIGTERM/SIGHUP handlers raise, so that every
    ``finally`` runs) prints ``stopped by signal N: <stopped>`` and is raised on.
    """
    try:
        return body() or 0
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(interrupted, file=sys.stderr)
        return 130
    except SystemExit as exc:
        if stopped is not None and isinstance(exc.code, int) and exc.code > 128:
            print(f"stopped by signal {exc.code - 128}: {stopped}", file=sys.stderr)
        raise
