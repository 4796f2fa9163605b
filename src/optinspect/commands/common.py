"""Helpers the commands share: consoles and loading behind a spinner on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ..model.loading import LoadedModel

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
    model: str,
    *,
    quant: str,
    device: str,
    dtype: str,
    verbose: bool,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_dir: str | None = None,
) -> LoadedModel:
    """Load a model, showing a spinner on stderr while it loads.

    ``attn_implementation`` is passed to ``load_model`` (``"eager"`` for attention weights).
    """
    from ..model.loading import load_model

    err = stderr_console()
    with err.status(f"loading {model} ({quant})", spinner="dots"):
        return load_model(
            model,
            quant=quant,
            device=device,
            dtype=dtype,
            verbose=verbose,
            attn_implementation=attn_implementation,
            device_map=device_map,
            max_memory=max_memory,
            offload_dir=offload_dir,
        )


@contextlib.contextmanager
def progress(enabled: bool) -> Iterator[Callable[[], None]]:
    """A sentence counter on stderr when it is a terminal; yields a function to advance it."""
    err = stderr_console()
    if not enabled or not err.is_terminal:
        yield lambda: None
        return
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn("tracing"), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("tracing", total=None)
        yield lambda: bar.advance(task)
