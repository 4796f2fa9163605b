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
    from .options import LoadOptions

#: Width used when stdout is not a terminal and COLUMNS is unset, so piped tables do not wrap.
PIPE_WIDTH = 200


def stdout_console() -> Console:
    """Console for data; wide when piped so table rows stay on one line."""
    width = None
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        width = PIPE_WIDTH
    return Console(file=sys.stdout, width=width)


def stderr_console() -> Console:
    """Console for diagnostics: spinners, progress, notes."""
    return Console(file=sys.stderr)


def load_with_status(
    options: LoadOptions, *, attn_implementation: str | None = None
) -> LoadedModel:
    """Load a model as ``options`` say, showing a spinner on stderr while it loads.

    ``attn_implementation`` is passed to ``load_model`` (``"eager"`` for attention weights).
    """
    from ..model.loading import load_model

    err = stderr_console()
    with err.status(f"loading {options.model} ({options.quant})", spinner="dots"):
        return load_model(
            options.model,
            quant=options.quant,
            device=options.device,
            dtype=options.dtype,
            verbose=options.verbose,
            attn_implementation=attn_implementation,
            device_map=options.device_map,
            max_memory=options.max_memory,
            offload_dir=options.offload_dir,
        )


@contextlib.contextmanager
def progress(enabled: bool, label: str = "tracing") -> Iterator[Callable[[int], None]]:
    """A sentence counter on stderr when it is a terminal; yields ``advance(sentences)``.

    The counter appears at the first ``advance``, so a model loaded inside the
    block (compare loads two) shows its own spinner alone, never beside the
    counter. The display never captures stdout: data written while it is live
    goes where stdout goes (a file, a pipe), not into the terminal.
    """
    err = stderr_console()
    # Tables drawn on the terminal are the progress there; a counter on the same
    # screen would interleave with them. It draws when the data goes elsewhere.
    if not enabled or not err.is_terminal or sys.stdout.isatty():
        yield lambda n=1: None
        return
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn(label), MofNCompleteColumn())
    bar = Progress(
        *columns, console=err, transient=True, redirect_stdout=False, redirect_stderr=False
    )
    task: list[Any] = []

    def advance(n: int = 1) -> None:
        if not task:
            bar.start()
            task.append(bar.add_task(label, total=None))
        bar.advance(task[0], n)

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


@contextlib.contextmanager
def calibration_progress(
    enabled: bool, samples: int, tokens: int
) -> Iterator[Callable[[int, int], None]]:
    """Samples and tokens done, with a rate and an ETA, on stderr when it is a terminal;
    yields ``advance(samples, tokens)``. Never captures stdout."""
    err = stderr_console()
    if not enabled or not err.is_terminal:
        yield lambda n, t: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("calibrating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples · {task.fields[tokens]:,}/" + f"{tokens:,} tokens"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=err, transient=True, redirect_stdout=False, redirect_stderr=False
    ) as bar:
        task = bar.add_task("calibrating", total=samples, tokens=0, rate="")
        done = [0, 0]

        def advance(n: int, t: int) -> None:
            # Under a launcher the leader counts each round of ranks: capped at the totals.
            done[0], done[1] = min(done[0] + n, samples), min(done[1] + t, tokens)
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done[1] / elapsed:,.0f} tokens/s" if elapsed > 0 else ""
            bar.update(task, completed=done[0], tokens=done[1], rate=rate)

        yield advance
