"""The exceptions a user can see, each carrying its one-line message and exit code."""

from __future__ import annotations

#: Exit codes, documented in the README.
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130


class OptinspectError(Exception):
    """A failure the user can act on; its message is one sentence naming the input."""

    exit_code: int = EXIT_RUNTIME


class UsageError(OptinspectError):
    """What was typed can never work: a bad value, a path that does not exist, empty text."""

    exit_code = EXIT_USAGE


class ModelError(OptinspectError):
    """The model named exists as a spec but cannot be used: no config, not OPT, not cached."""


class CheckpointError(OptinspectError):
    """The checkpoint files are unreadable, unsafe or do not match their config."""


class NonFiniteError(OptinspectError):
    """A recorded tensor holds NaN or Inf and the user asked to fail on that."""

    exit_code = EXIT_NONFINITE
