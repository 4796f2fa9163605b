"""Helpers the commands share: consoles and loading behind a spinner on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from ..model.loading import LoadedModel
    from ..model.settings import LoadSettings

#: Width used when neither stdout nor stderr is a terminal and COLUMNS is unset, so tables
#: written to a file do not wrap.
PIPE_WIDTH = 200


def stdout_width() -> int | None:
    """The width tables on stdout are laid out for; None lets rich read the terminal.

    ``$COLUMNS`` wins; then stdout's terminal. Piped (``| head``, ``| less``) while
    stderr is still the terminal, the reader sits at that terminal: its width. With
    neither stream a terminal (a file, a CI log), PIPE_WIDTH.
    """
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return None
    try:
        if sys.stderr.isatty():
            return os.get_terminal_size(sys.stderr.fileno()).columns or None
    except (AttributeError, ValueError, OSError):  # no real file behind stderr
        pass
    return PIPE_WIDTH


def stdout_console() -> Console:
    """Console for data, at ``stdout_width()``."""
    return Console(file=sys.stdout, width=stdout_width())


def stderr_console() -> Console:
    """Console for diagnostics: spinners, progress, notes."""
    return Console(file=sys.stderr)


def load_with_status(
    settings: LoadSettings, *, attn_implementation: str | None = None
) -> LoadedModel:
    """Load a model as ``settings`` say, showing a spinner on stderr while it loads.

    ``attn_implementation`` is passed to ``load_model`` (``"eager"`` for attention weights).
    """
    from ..model.loading import load_from_settings

    err = stderr_console()
    with err.status(f"loading {settings.model} ({settings.quant})", spinner="dots"):
        return load_from_settings(settings, attn_implementation=attn_implementation)


@contextlib.contextmanager
def progress(
    enabled: bool, label: str = "tracing", *, streams: bool = True, totals: bool = False
) -> Iterator[Callable[..., None]]:
    """Progress on stderr when it is a terminal; yields ``advance(n, t=0, totals=None)``.

    A sentence counter that appears at the first ``advance``, so a model loaded
    inside the block (compare loads two) shows its own spinner alone, never beside
    it; ``advance.expect(sentences)`` gives it its total before then (``n/total``
    rather than ``n/?``). With ``totals`` (calibrate), a bar with both counts, a rate
    and an ETA, from the ``advance(0, 0, totals=(samples, tokens))`` that gives them.
    ``advance.note(line)`` prints a line above the display. ``streams``:
    results are drawn on stdout while the block runs; when stdout is then the
    terminal, the tables are the progress there, and no counter is drawn between them.
    The display never captures stdout: data written while it is live goes where
    stdout goes (a file, a pipe), not into the terminal.
    """
    err = stderr_console()
    if not enabled or not err.is_terminal or (streams and sys.stdout.isatty()):
        yield lambda n=1, t=0, totals=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    if not totals:
        columns: tuple[Any, ...] = (SpinnerColumn(), TextColumn(label), MofNCompleteColumn())
    else:
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("samples · {task.fields[tokens]:,}/{task.fields[total_tokens]:,} tokens"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
    bar = Progress(
        *columns, console=err, transient=True, redirect_stdout=False, redirect_stderr=False
    )
    task: list[Any] = []
    done = [0, 0]
    limits: list[int | None] = [None, None]

    def advance(n: int = 1, t: int = 0, totals: tuple[int, int] | None = None) -> None:
        if totals is not None:
            limits[:] = totals
        if not task:
            bar.start()
            task.append(
                bar.add_task(label, total=limits[0], tokens=0, total_tokens=limits[1], rate="")
            )
        elif totals is not None:
            bar.update(task[0], total=limits[0], total_tokens=limits[1])
        # Capped at the totals: under a launcher the leader counts each round of ranks.
        done[0] = done[0] + n if limits[0] is None else min(done[0] + n, limits[0])
        done[1] = done[1] + t if limits[1] is None else min(done[1] + t, limits[1])
        elapsed = bar.tasks[0].elapsed or 0.0
        rate = f"{done[1] / elapsed:,.0f} tokens/s" if elapsed > 0 else ""
        bar.update(task[0], completed=done[0], tokens=done[1], rate=rate)

    def say(text: str) -> None:  # a line above the live display, which then goes on
        (bar.console if task else err).print(text, highlight=False, markup=False, soft_wrap=True)

    def expect(sentences: int) -> None:
        limits[0] = sentences
        if task:
            bar.update(task[0], total=sentences)

    advance.note = say  # type: ignore[attr-defined]
    advance.expect = expect  # type: ignore[attr-defined]
    try:
        yield advance
    finally:
        if task:
            bar.stop()


def say_nothing_read(verb: str) -> None:
    """The note for a file or stdin that held no sentence: nothing was loaded or run."""
    stderr_console().print(
        f"note: the input holds no sentences; nothing to {verb}", soft_wrap=True, highlight=False
    )


def note(text: str) -> None:
    """One line for the user on stderr (``wrote …``), printed as it is."""
    stderr_console().print(text, highlight=False, markup=False, soft_wrap=True)
