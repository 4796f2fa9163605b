"""Helpers the commands share: consoles and loading behind a spinner on stderr."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ..loading import LoadedModel

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
    model: str, *, quant: str, device: str, dtype: str, verbose: bool
) -> LoadedModel:
    """Load a model, showing a spinner on stderr while it loads."""
    from ..loading import load_model

    err = stderr_console()
    with err.status(f"loading {model} ({quant})", spinner="dots"):
        return load_model(model, quant=quant, device=device, dtype=dtype, verbose=verbose)
