"""``optinspect params``: exact parameter counts and weight bytes, from the config alone."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from ..analyses.job import Job
from .jobs import run_job
from .options import (
    Format,
    LoadOptions,
    TableFormatOpt,
    model_command,
)


class ParamsBy(str, Enum):
    group = "group"
    layer = "layer"
    module = "module"
    type = "type"


@model_command()
def params_command(
    by: Annotated[
        ParamsBy,
        typer.Option(
            "--by",
            case_sensitive=False,
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
    fmt: TableFormatOpt = Format.table,
    *,
    load: LoadOptions,
) -> None:
    """Count the parameters of a model exactly, and the bytes its weights take.

    The count comes from the configuration alone: no weights are read or
    downloaded. The whole OPT family (facebook/opt-125m ... facebook/opt-175b)
    is built in and works offline. A tied lm_head is counted once. Bytes are
    given at float32, float16/bfloat16, int8 (LLM.int8) and nf4 (4-bit).

    Examples:

    \b
      optinspect params --model facebook/opt-175b
      optinspect params --model facebook/opt-350m --by layer --format csv
      optinspect params --model tiny --loaded -q 4bit -f json | jq .loaded
    """
    from ..analyses.params import count_params, inventory_params
    from ..errors import UsageError
    from ..render.params import params_page
    from ..results.params import ParamsResult
    from .output import emit_result

    if loaded and fmt is Format.csv:
        raise UsageError("--loaded has no CSV form: use --format table or --format json")
    if loaded:  # the count too, where the model is: the client imports no torch
        (result,) = run_job(
            Job("params", load, checks=None, params={"model": load.model, "by": by.value})
        )
    else:
        result = ParamsResult(count_params(inventory_params(load.model), by=by.value))
    emit_result(fmt.value, result, params_page)
