"""``optinspect attention``: one layer's attention weights as a heatmap, with head summaries."""

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


def attention_command(
    text: Annotated[str, typer.Argument(help="The text to run through the model.")],
    layer: Annotated[
        str, typer.Option("--layer", "-l", help="The decoder layer: N, or -1 for the last.")
    ] = "-1",
    head: Annotated[
        int | None,
        typer.Option(
            "--head", help="The head to show (-1: the last); without it, the mean of all heads."
        ),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Also write the heatmap to this PNG file; needs matplotlib, "
            "from pip install 'optinspect\\[plot]'.",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    fmt: ViewFormatOpt = ViewFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show one layer's attention as a heatmap, with every head's entropy and sink mass.

    Rows are query tokens, columns the earlier tokens they attend to; cells
    are weights in percent. Entropy is the mean over query rows of
    -sum w ln w (nats); sink is the mean weight on position 0 (</s>). The
    model is loaded with eager attention, the only kind that computes weights.

    Examples:

      optinspect attention "The quick brown fox jumps over the lazy dog" --layer 5 --head 3

      optinspect attention "The quick brown fox jumps over the lazy dog" --layer 5 --png attn.png

      optinspect attention "Hello world" --model tiny --layer 0 --format json | jq '.heads'
    """
    from ..attention import compute_attention, resolve_head, resolve_layer
    from ..errors import UsageError
    from ..model.loading import read_config, resolve_source
    from ..render.attention import attention_title, heatmap_labels, render_attention
    from ..render.images import check_output_path, require_matplotlib, save_heatmap
    from ..render.trace import write_json
    from .common import load_with_status, stderr_console, stdout_console

    if not text.strip():
        raise UsageError("the text is empty: give at least one word to trace")
    if png is not None:
        check_output_path(png)
        require_matplotlib("--png")
    # Refuse impossible layers and heads from the config, before loading any weights.
    config = read_config(resolve_source(model))
    layer_index = resolve_layer(layer, int(config.num_hidden_layers))
    if head is not None:
        resolve_head(head, int(config.num_attention_heads))
    loaded = load_with_status(
        model,
        quant=quant.value,
        device=device,
        dtype=dtype.value,
        verbose=verbose,
        attn_implementation="eager",
    )
    result = compute_attention(loaded, text, layer=layer_index, head=head)
    if png is not None:
        labels = heatmap_labels(result)
        save_heatmap(
            png,
            [
                [value if key <= query else None for key, value in enumerate(row)]
                for query, row in enumerate(result.weights)
            ],
            row_labels=labels,
            column_labels=labels,
            title=f"{result.model}: {attention_title(result)}",
            xlabel="key",
            ylabel="query",
            colorbar_label="attention weight",
        )
        stderr_console().print(f"wrote {png}", highlight=False, markup=False)
    if fmt is ViewFormat.json:
        write_json(sys.stdout, result.as_dict())
    else:
        render_attention(stdout_console(), result)
