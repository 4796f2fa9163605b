"""``optinspect compare``: one model under two settings, every module's output side by side."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from .options import (
    DEFAULT_MODEL,
    DebugOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    FilterOpt,
    ModelOpt,
    Quant,
    QuantOpt,
    VerboseOpt,
    ViewFormat,
    ViewFormatOpt,
)

if TYPE_CHECKING:
    from ..model.loading import LoadedModel


def compare_command(
    text: Annotated[str, typer.Argument(help="The text to run under both settings.")],
    against: Annotated[
        Quant,
        typer.Option("--against", "-a", help="Quantization of the reference run."),
    ] = Quant.none,
    against_dtype: Annotated[
        Dtype,
        typer.Option(
            "--against-dtype", help="Compute dtype of the reference run (auto as for --dtype)."
        ),
    ] = Dtype.auto,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            "-t",
            help="Mark modules whose relative error ||a-b||/||b|| is above this.",
        ),
    ] = 0.05,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Decoder layers to compare in full: 0, 0,5, 3-7, -1 (the last) or all. "
            "Without it, an overview: embeddings, each layer's output, final norm, head.",
        ),
    ] = None,
    filters: FilterOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    fmt: ViewFormatOpt = ViewFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run TEXT under two settings (--quant/--dtype against --against/--against-dtype) and
    show how far apart every module's output is: cosine similarity, relative error and max
    abs difference, and the first module whose relative error passes --tolerance.

    The reference (--against) runs first and is freed before the other setting loads.

    Examples:

      optinspect compare "The quick brown fox jumps over the lazy dog" --quant 8bit --against none

      optinspect compare "Hello" --quant 4bit --against 8bit --layer all --filter '*.fc2'

      optinspect compare "Hello" --model tiny --format json | jq -r .first_exceeding
    """
    from ..compare import Setting, check_tolerance, compare_settings
    from ..engine.selection import parse_layers
    from ..errors import UsageError
    from ..model.loading import read_config, resolve_source
    from ..render.quant import render_compare
    from ..render.trace import write_json
    from .common import load_with_status, stdout_console

    if not text.strip():
        raise UsageError("the text is empty: give at least one word to compare")
    check_tolerance(tolerance)
    # Refuse impossible layers from the config, before loading any weights.
    config = read_config(resolve_source(model))
    if layer is not None:
        parse_layers(layer, int(config.num_hidden_layers))

    def load(quant_name: str, dtype_name: str) -> LoadedModel:
        return load_with_status(
            model, quant=quant_name, device=device, dtype=dtype_name, verbose=verbose
        )

    result = compare_settings(
        load,
        text,
        setting=Setting(quant.value, dtype.value),
        reference=Setting(against.value, against_dtype.value),
        layers=layer,
        filters=tuple(filters or ()),
        tolerance=tolerance,
    )
    if fmt is ViewFormat.json:
        write_json(sys.stdout, result.as_dict())
    else:
        render_compare(stdout_console(), result)
