"""``optinspect trace``: one real forward pass, every selected module's output."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..options import (
    DEFAULT_MODEL,
    DebugOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    TraceFormat,
    VerboseOpt,
)


def trace_command(
    text: Annotated[str, typer.Argument(help="The text to run through the model.")],
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Decoder layers to show in full: 0, 0,5, 3-7, -1 (the last) or all. "
            "Without it, an overview: embeddings, each layer's output, final norm, head.",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    fmt: Annotated[
        TraceFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")
    ] = TraceFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Trace TEXT through an OPT model and show every module's output in execution order.

    Examples:

      optinspect trace "The quick brown fox jumps over the lazy dog" --layer 0

      optinspect trace "Hello" --model tiny --format json | jq '.modules[].name'

      optinspect trace "Hello" --model facebook/opt-125m --quant none --layer -1
    """
    from ..errors import UsageError
    from ..render import render_trace, write_json
    from ..tracing import iter_trace
    from .common import load_with_status, stdout_console

    if not text.strip():
        raise UsageError("the text is empty: give at least one word to trace")
    loaded = load_with_status(
        model, quant=quant.value, device=device, dtype=dtype.value, verbose=verbose
    )
    (result,) = iter_trace(loaded, [text], layers=layer)
    if fmt is TraceFormat.json:
        write_json(sys.stdout, result.as_dict())
    else:
        render_trace(stdout_console(), result)
