"""``optinspect lens``: the logit lens, every layer's output read through the model's head."""

from __future__ import annotations

import sys
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


def lens_command(
    text: Annotated[str, typer.Argument(help="The text to run through the model.")],
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Decoder layers to show: 0, 0,5, 3-7, -1 (the last) or all (the default).",
        ),
    ] = None,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k", "-k", help="Show the K most likely next tokens, with probabilities."
        ),
    ] = 1,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    fmt: ViewFormatOpt = ViewFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show what each decoder layer would predict next, read through the model's own head.

    Every layer's output goes through the final layer norm (where the model
    has one), project_out (where it has one) and lm_head; the last layer's
    row is the model's own prediction.

    Examples:

      optinspect lens "The capital of France is"

      optinspect lens "The capital of France is" --top-k 3 --layer 12-23

      optinspect lens "Hello" --model tiny --format json | jq '.layers[-1].predictions'
    """
    from ..engine.selection import parse_layers
    from ..errors import UsageError
    from ..lens import check_top_k, compute_lens
    from ..model.loading import read_config, resolve_source
    from ..render.lens import render_lens
    from ..render.trace import write_json
    from .common import load_with_status, stdout_console

    if not text.strip():
        raise UsageError("the text is empty: give at least one word to trace")
    # Refuse impossible layers and --top-k from the config, before loading any weights.
    config = read_config(resolve_source(model))
    if layer is not None:
        parse_layers(layer, int(config.num_hidden_layers))
    check_top_k(top_k, int(config.vocab_size))
    loaded = load_with_status(
        model, quant=quant.value, device=device, dtype=dtype.value, verbose=verbose
    )
    result = compute_lens(loaded, text, layers=layer, top_k=top_k)
    if fmt is ViewFormat.json:
        write_json(sys.stdout, result.as_dict())
    else:
        render_lens(stdout_console(), result)
