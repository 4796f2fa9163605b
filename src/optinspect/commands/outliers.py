"""``optinspect outliers``: LLM.int8 outlier features in the inputs of every linear layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .options import (
    DEFAULT_MODEL,
    DebugOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    VerboseOpt,
    ViewFormat,
    ViewFormatOpt,
)


def outliers_command(
    text: Annotated[
        str | None,
        typer.Argument(help="The text to look at; - reads one sentence per line from stdin."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-F", help="Read sentences from a file, one per line."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="|x| that makes an outlier, for layers without their own LLM.int8 threshold.",
        ),
    ] = 6.0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Sentences per forward pass.")
    ] = 8,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    fmt: ViewFormatOpt = ViewFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Find LLM.int8 outlier features: the input dimensions of every linear layer in the
    decoder layers (q/k/v/out_proj, fc1, fc2) where |x| reaches the threshold, and the
    dimensions that recur across layers (at least 25% of the layers and 6% of the tokens).

    8-bit layers use their own threshold (6.0 as transformers loads them), others --threshold.

    Examples:

      optinspect outliers --file sentences.txt --model facebook/opt-6.7b

      cat sentences.txt | optinspect outliers - --quant none --threshold 4

      optinspect outliers "Hello world" --model tiny --format json | jq '.recurring[].dim'
    """
    from ..engine.inputs import read_texts
    from ..errors import UsageError
    from ..outliers import check_threshold, find_outliers
    from ..render.quant import render_outliers
    from ..render.trace import write_json
    from .common import load_with_status, progress, stdout_console

    check_threshold(threshold)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    texts, many = read_texts(text, file, verb="inspect")
    loaded = load_with_status(
        model, quant=quant.value, device=device, dtype=dtype.value, verbose=verbose
    )
    with progress(enabled=many) as advance:
        result = find_outliers(
            loaded, texts, threshold=threshold, batch_size=batch_size, advance=advance
        )
    if fmt is ViewFormat.json:
        write_json(sys.stdout, result.as_dict())
    else:
        render_outliers(stdout_console(), result)
