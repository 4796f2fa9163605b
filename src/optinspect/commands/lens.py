"""``optinspect lens``: the logit lens, every layer's output read through the model's head."""

from __future__ import annotations

from typing import Annotated

import typer

from ..analyses.job import Job
from .jobs import emit_job
from .options import (
    Format,
    InputOptions,
    LoadOptions,
    ResultFormatOpt,
    TopKOpt,
    model_command,
)

VERB = "read through the lens"


@model_command(reads="batches", verb=VERB)
def lens_command(
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            metavar="SPEC",
            help="Decoder layers to show: 0, 0,5, 3-7, -1 (the last) or all (the default).",
        ),
    ] = None,
    top_k: TopKOpt = 1,
    fmt: ResultFormatOpt = Format.table,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Show what each decoder layer would predict next, read through the model's own head.

    Every layer's output goes through the final layer norm (where the model
    has one), project_out (where it has one) and lm_head; the last layer's
    row is the model's own prediction.

    Examples:

    \b
      optinspect lens "The capital of France is"
      optinspect lens "The capital of France is" --top-k 3 --layer 12-23
      optinspect lens "Hello" --model tiny -f json | jq '.layers[-1].predictions'
      optinspect lens --file prompts.txt --model tiny --format jsonl > lens.jsonl
    """
    from ..render.lens import lens_page
    from .output import make_emitter

    texts, many = inputs.read()
    emitter = make_emitter(fmt.value, many, lens_page, model=load.model, kind="lens")
    values = {"layers": layer, "top_k": top_k, "batch_size": inputs.batch_size}
    job = Job(
        "lens", load, checks=values, params={**values, "truncate": inputs.truncate}, texts=texts
    )
    emit_job(job, emitter, many=many, label="lens", verb=VERB)
