"""``optinspect outliers``: LLM.int8 outlier features in the inputs of every linear layer."""

from __future__ import annotations

from typing import Annotated

import typer

from ..analyses.job import Job
from ..results.outliers import DEFAULT_THRESHOLD
from .jobs import run_job
from .options import (
    Format,
    InputOptions,
    LoadOptions,
    ViewFormatOpt,
    model_command,
)

VERB = "inspect"


@model_command(reads="batches", verb=VERB)
def outliers_command(
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            metavar="X",
            help="|x| that makes an outlier, for layers without their own LLM.int8 threshold.",
        ),
    ] = DEFAULT_THRESHOLD,
    fmt: ViewFormatOpt = Format.table,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Find LLM.int8 outlier features: the input dimensions of every linear layer in the
    decoder layers (q/k/v/out_proj, fc1, fc2) where |x| reaches the threshold, and the
    dimensions that recur across layers (at least 25% of the layers and 6% of the tokens).

    8-bit layers use their own threshold (6.0 as transformers loads them), others --threshold.

    Examples:

    \b
      optinspect outliers --file sentences.txt --model facebook/opt-6.7b
      cat sentences.txt | optinspect outliers - --quant none --threshold 4
      optinspect outliers "Hello" --model tiny -f json | jq '.recurring[].dim'
    """
    from ..render.outliers import outliers_page
    from .common import progress
    from .output import make_emitter

    values = {"threshold": threshold, "batch_size": inputs.batch_size}
    texts, many = inputs.read()
    job = Job(
        "outliers", load, checks=values, params={**values, "truncate": inputs.truncate}, texts=texts
    )
    with progress(enabled=many, label="inspecting") as advance:
        (result,) = run_job(job, advance)
    emitter = make_emitter(fmt.value, False, outliers_page)
    emitter.emit(result)
    emitter.close()
