"""``optinspect params``: exact parameter counts and weight bytes, from the config alone."""

from __future__ import annotations

import sys
from enum import Enum
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
    TableFormat,
    TableFormatOpt,
    VerboseOpt,
)


class ParamsBy(str, Enum):
    group = "group"
    layer = "layer"
    module = "module"
    type = "type"


def params_command(
    model: ModelOpt = DEFAULT_MODEL,
    by: Annotated[
        ParamsBy,
        typer.Option(
            "--by",
            "-b",
            help="Rows by group (embeddings, attention, feed-forward, norms, projections), "
            "by decoder layer, by module (full dotted names) or by module type.",
        ),
    ] = ParamsBy.group,
    loaded: Annotated[
        bool,
        typer.Option(
            "--loaded",
            help="Also load the model as trace does (--quant, --device, --dtype) and report "
            "its logical and stored parameters and its real memory.",
        ),
    ] = False,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    fmt: TableFormatOpt = TableFormat.table,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Count the parameters of an OPT model exactly, and the bytes its weights take.

    The count comes from the configuration alone: no weights are read or
    downloaded. The whole OPT family (facebook/opt-125m ... facebook/opt-175b)
    is built in and works offline. A tied lm_head is counted once. Bytes are
    given at float32, float16/bfloat16, int8 (LLM.int8) and nf4 (4-bit).

    Examples:

      optinspect params --model facebook/opt-175b

      optinspect params --model facebook/opt-350m --by layer --format csv

      optinspect params --model tiny --loaded --quant 4bit --format json | jq .loaded
    """
    from ..errors import UsageError
    from ..params import count_params, inventory_params, measure_loaded
    from ..render.model import params_payload, render_params, write_params_csv
    from ..render.trace import write_json
    from .common import stdout_console

    if loaded and fmt is TableFormat.csv:
        raise UsageError("--loaded has no CSV form: use --format table or --format json")
    report = count_params(inventory_params(model), by=by.value)
    measured = None
    if loaded:
        from .common import load_with_status

        model_loaded = load_with_status(
            model, quant=quant.value, device=device, dtype=dtype.value, verbose=verbose
        )
        measured = measure_loaded(
            model_loaded.model,
            quant=model_loaded.quant,
            device=model_loaded.device,
            dtype=model_loaded.dtype_name,
        )
    if fmt is TableFormat.json:
        write_json(sys.stdout, params_payload(report, measured))
    elif fmt is TableFormat.csv:
        write_params_csv(sys.stdout, report)
    else:
        render_params(stdout_console(), report, measured)
