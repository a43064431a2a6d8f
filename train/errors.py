"""train/'s errors: one base class, :class:`TrainError`, and the one wrapper,
:func:`command`, that turns it into a one-line ``Error: ...`` and an exit status for every
``python -m train*`` entry point.

Each error is also the built-in exception its cause belongs to: a bad config value or flag
(:class:`ConfigError`) is a ``ValueError``, a value of the wrong type
(:class:`ConfigTypeError`) a ``TypeError``, data, a run, a checkpoint or an artifact that
cannot be used a ``RuntimeError``; so ``except ValueError`` keeps working for callers that
used jconv-style errors.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class TrainError(Exception):
    """The base of every error train/ raises on purpose; its message names the fix.
    ``exit_code`` is the status :func:`command` returns for it."""

    exit_code = 2


class ConfigError(TrainError, ValueError):
    """A config file, override or command-line flag with a wrong value (message says
    which key)."""


class ConfigTypeError(ConfigError, TypeError):
    """A config value of the wrong type (message says which key and what was expected);
    also a :class:`ConfigError`, so ``except ConfigError`` sees every bad config."""


class DataError(TrainError, RuntimeError):
    """Data that cannot be read: missing, corrupt or unprepared; the message says the fix."""


class RunError(TrainError, RuntimeError):
    """A run that cannot start as asked (e.g. a work directory holding another run)."""


class CheckpointError(TrainError, RuntimeError):
    """A checkpoint that cannot be saved or restored."""


class ExportError(TrainError, RuntimeError):
    """A run or artifact that cannot be exported or loaded; the message says why."""


class RaceError(TrainError, RuntimeError):
    """One side of a race failed; its log has the details (exit status 1: the race ran)."""

    exit_code = 1


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message (its type name when it has none).

    Example:
      >>> first_line(RuntimeError("\\n  collective failed\\n  at ..."))
      'collective failed'
    """
    return (str(e).strip().splitlines() or [type(e).__name__])[0].strip()


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """``main(argv) -> exit status`` that prints a :class:`TrainError` as one line
    ``Error: <message>`` on stderr and returns its ``exit_code`` (2 for bad input) instead
    of raising; any other exception is a bug and keeps its traceback.

    Example:
      >>> @command
      ... def main(argv=None):
      ...     raise ConfigError("--steps 0 is invalid: expected >= 1")
      >>> main([])  # prints "Error: --steps 0 is invalid: expected >= 1" on stderr
      2
    """
    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except TrainError as e:
            print(f"Error: {e}", file=sys.stderr, flush=True)
            return e.exit_code

    return run
