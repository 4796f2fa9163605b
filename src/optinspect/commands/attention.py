"""``optinspect attention``: one layer's attention weights as a heatmap, with head summaries."""

from __future__ import annotations

from typing import Annotated

import typer

from ..analyses.job import Job
from .jobs import run_job
from .options import (
    Format,
    HeadOpt,
    InputOptions,
    LoadOptions,
    ViewFormatOpt,
    file_option,
    model_command,
)

VERB = "show the attention of"


PngOpt = file_option(
    "--png",
    help="Also write the heatmap to this PNG file; needs matplotlib, "
    "from pip install 'optinspect[plot]'.",
)


@model_command(reads="one", verb=VERB)
def attention_command(
    layer: Annotated[
        str,
        typer.Option(
            "--layer", "-l", metavar="SPEC", help="The decoder layer: N, or -1 for the last."
        ),
    ] = "-1",
    head: HeadOpt = None,
    png: PngOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --png file.")
    ] = False,
    fmt: ViewFormatOpt = Format.table,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Show one layer's attention as a heatmap, with every head's entropy and sink mass.

    Rows are query tokens, columns the earlier tokens they attend to; cells
    are weights in percent. Entropy is the mean over query rows of
    -sum w ln w (nats); sink is the mean weight on position 0 (</s>). The
    model is loaded with eager attention, the only kind that computes weights.

    Examples:

    \b
      optinspect attention "The quick brown fox jumps" --layer 5 --head 3
      optinspect attention "The quick brown fox jumps" --layer 5 --png attn.png
      optinspect attention "Hello" --model tiny --layer 0 -f json | jq .heads
    """
    from ..engine.preflight import check_output_path, check_text
    from ..errors import UsageError
    from ..render.attention import attention_page, save_attention_png
    from .common import stderr_console
    from .output import make_emitter

    check_text(inputs.text or "", VERB)
    if force and png is None:
        raise UsageError("--force only applies with --png")
    if png is not None:
        from ..render.images import require_matplotlib

        check_output_path(png, force=force, suffix=".png", option="--png")
        require_matplotlib("--png")
    job = Job(
        "attention",
        load,
        checks={"single_layer": layer, "head": head},
        params={
            "text": inputs.text or "",
            "layer": layer,
            "head": head,
            "truncate": inputs.truncate,
        },
    )
    (result,) = run_job(job)
    if png is not None:
        save_attention_png(result, png)
        stderr_console().print(f"wrote {png}", highlight=False, markup=False)
    emitter = make_emitter(fmt.value, False, attention_page)
    emitter.emit(result)
    emitter.close()
