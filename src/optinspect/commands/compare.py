"""``optinspect compare``: one model under two settings, every module's output side by side."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from ..analyses.job import Job
from ..results.compare import DEFAULT_TOLERANCE
from .jobs import emit_job
from .options import (
    Dtype,
    FilterOpt,
    Format,
    InputOptions,
    LayerOpt,
    LoadOptions,
    Quant,
    ResultFormatOpt,
    model_command,
)

VERB = "compare"


@model_command(reads="batches", verb=VERB)
def compare_command(
    against: Annotated[
        Quant,
        typer.Option(
            "--against", "-a", case_sensitive=False, help="Quantization of the reference run."
        ),
    ] = Quant.none,
    against_dtype: Annotated[
        Dtype,
        typer.Option(
            "--against-dtype",
            case_sensitive=False,
            help="Compute dtype of the reference run (auto as for --dtype).",
        ),
    ] = Dtype.auto,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            "-t",
            metavar="X",
            help="Mark modules whose relative error ||a-b||/||b|| is above this.",
        ),
    ] = DEFAULT_TOLERANCE,
    layer: LayerOpt = None,
    filters: FilterOpt = None,
    fmt: ResultFormatOpt = Format.table,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Run TEXT under two settings (--quant/--dtype against --against/--against-dtype) and
    show how far apart every module's output is: cosine similarity, relative error and max
    abs difference, and the first module whose relative error passes --tolerance.

    The reference (--against) runs first and is freed before the other setting loads.

    Examples:

    \b
      optinspect compare "The quick brown fox" --quant 8bit --against none
      optinspect compare "Hello" -q 4bit -a 8bit --layer all --filter '*.fc2'
      optinspect compare "Hello" --model tiny -f json | jq -r .first_exceeding
      optinspect compare --file prompts.txt --model tiny -f jsonl > compare.jsonl
    """
    from ..engine.preflight import check_load_settings
    from ..render.compare import compare_page
    from .output import make_emitter

    texts, many = inputs.read()
    globs = tuple(filters or ())
    # The reference runs under its own setting: it must be loadable too.
    check_load_settings(replace(load, quant=against.value, dtype=against_dtype.value))
    selection = {"layers": layer, "filters": globs, "tolerance": tolerance}
    job = Job(
        "compare",
        load,
        checks={**selection, "batch_size": inputs.batch_size},
        params={
            **selection,
            "setting": [load.quant, load.dtype],
            "reference": [against.value, against_dtype.value],
            "batch_size": inputs.batch_size,
            "truncate": inputs.truncate,
        },
        texts=texts,
    )
    emitter = make_emitter(fmt.value, many, compare_page, model=load.model, kind="compare")
    emit_job(job, emitter, many=many, label="comparing", verb=VERB)
