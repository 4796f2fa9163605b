"""Notes the engine has for the user while it runs (a text cut by ``--truncate``), told to
whoever listens: the command's stderr, through the server when one runs the job.

    with notes_to(print):
        ...                  # the engine calls tell("note: ...")

Outside a ``notes_to`` block a note goes nowhere: the Python API says nothing unasked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["notes_to", "say_truncated", "tell"]

_LISTENER: ContextVar[Callable[[str], None] | None] = ContextVar("optinspect_notes", default=None)


@contextlib.contextmanager
def notes_to(listener: Callable[[str], None] | None) -> Iterator[None]:
    """Send the engine's notes to ``listener`` inside the block (None: nowhere)."""
    previous = _LISTENER.get()
    _LISTENER.set(listener)
    try:
        yield
    finally:
        # Set back rather than reset with a token: a generator holding this block may be
        # closed from another context than the one it started in.
        _LISTENER.set(previous)


def tell(text: str) -> None:
    """Give the listener of this block one line (``note: ...``)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(text)


def say_truncated(where: str, tokens: int, kept: int) -> None:
    """The note for a text that ``--truncate`` cut: how many tokens it had, how many stay."""
    tell(f"note: {where} has {tokens:,} tokens; --truncate kept the first {kept:,}")
