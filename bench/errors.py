"""The error types of bench, one per exit code. The CLI maps them in one place (cli.BenchGroup).

  UsageError    exit 2: a user mistake -- a bad flag or value, an unknown plugin, an unreadable or
                foreign result file (named file:line), conflicting plugins. One line, no traceback.
  HarnessError  exit 3: the harness itself could not do its job (a rerun that fails to start, a
                gate that cannot compare). `bench regress` reserves 2 for "ambiguous", so its own
                usage errors are harness errors too.
Anything else that escapes a command is an internal error: exit 3 with one line
(BENCH_DEBUG=1 shows the traceback).
"""

from __future__ import annotations


class BenchError(Exception):
    """Base class: carries its exit code."""

    exit_code = 3


class UsageError(BenchError):
    """A user mistake: printed as one clear message, exit code 2."""

    exit_code = 2


class HarnessError(BenchError):
    """The harness could not do its job: exit code 3."""

    exit_code = 3


class ResultsError(UsageError):
    """A result file that cannot be read or written; the message names file and line (exit 2)."""
