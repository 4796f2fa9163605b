"""The exceptions a user can see, each carrying its one-line message and exit code, and the
one table that turns library exceptions into them.

    try:
        ...
    except Exception as e:
        raise translate(e) or e

Library exceptions are recognised by class, through ``LIBRARY_ERRORS``. The
classes are looked up in ``sys.modules`` only, so this module imports no
library: an exception of a class whose module was never imported cannot occur.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

#: Exit codes, documented in docs/errors.md.
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # stdout closed by its reader (| head), as a process ended by SIGPIPE


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


class ResourceError(OptinspectError):
    """The machine ran out of something the run needs (device memory)."""


class NonFiniteError(OptinspectError):
    """A recorded tensor holds NaN or Inf and the user asked to fail on that."""

    exit_code = EXIT_NONFINITE


OOM_HINT = "out of memory; try --quant 4bit, a smaller --model, or a CPU run with --device cpu"
PICKLE_REFUSED = "its pickle checkpoint holds more than tensors, so it was refused unread"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def os_reason(error: OSError) -> str:
    """What the system said of a failed file operation, as the end of a sentence:
    ``permission denied``, ``read-only file system``."""
    return (error.strerror or type(error).__name__).lower()


def _permission_denied(error: BaseException) -> str:
    filename = getattr(error, "filename", None)
    if filename is None:
        return first_line(error)
    return f"cannot access {filename}: permission denied"


@dataclass(frozen=True)
class LibraryError:
    """One row of the map: a library exception class and what the user is told instead."""

    module: str
    name: str
    kind: type[OptinspectError]
    message: Callable[[BaseException], str]

    def matches(self, error: BaseException) -> bool:
        owner = sys.modules.get(self.module)
        cls = getattr(owner, self.name, None) if owner is not None else None
        return isinstance(cls, type) and isinstance(error, cls)


#: Library exceptions, by class, and what each means to the user. Checkpoint errors
#: are worded as the cause; ``load_model`` prefixes which model they belong to.
LIBRARY_ERRORS: tuple[LibraryError, ...] = (
    LibraryError("torch", "OutOfMemoryError", ResourceError, lambda e: OOM_HINT),
    LibraryError("torch.cuda", "OutOfMemoryError", ResourceError, lambda e: OOM_HINT),
    LibraryError("safetensors", "SafetensorError", CheckpointError, first_line),
    LibraryError("pickle", "UnpicklingError", CheckpointError, lambda e: PICKLE_REFUSED),
    # A path the user cannot enter or read (a folder of another user's) is a bad path:
    # the checks name it first; this catches any the checks do not reach.
    LibraryError("builtins", "PermissionError", UsageError, _permission_denied),
)


def translate(error: BaseException) -> OptinspectError | None:
    """The user-facing error for a library exception the map knows, else None."""
    if isinstance(error, OptinspectError):
        return error
    for row in LIBRARY_ERRORS:
        if row.matches(error):
            return row.kind(row.message(error))
    return None


def describe(error: BaseException) -> tuple[str, int, bool]:
    """What the CLI tells of ``error``: its one line, its exit code, and whether the line
    is followed by "Run again with --debug" (for errors that are not ours)."""
    if isinstance(error, OptinspectError):
        return str(error), error.exit_code, bool(getattr(error, "hint", False))
    known = translate(error)
    if known is not None:
        return str(known), known.exit_code, True
    detail = first_line(error) if str(error).strip() else ""
    return f"{type(error).__name__}: {detail}", EXIT_RUNTIME, True
