"""``optinspect report``: one sentence through every analysis in one forward pass."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from ..analyses.job import Job
from ..results.report import DEFAULT_ROLE, DEFAULT_TOP_K
from .jobs import run_job
from .options import (
    FilterOpt,
    Format,
    HeadOpt,
    InputOptions,
    LoadOptions,
    Quant,
    TopKOpt,
    file_option,
    format_option,
    model_command,
)

if TYPE_CHECKING:
    from ..results.report import ReportResult

VERB = "report on"

#: The formats a report is written in; without --format, --out's suffix says which.
ReportFormatOpt = format_option(
    Format.html,
    Format.json,
    help="html: one self-contained page; json: the report's record. "
    "Default: the --out file's suffix (.html or .json), else json on stdout.",
)


ReportOutOpt = file_option(
    "--out",
    "-o",
    help="Write the report to this file: FILE.html (the page) or FILE.json; "
    "without it, the report goes to stdout.",
)


@model_command(reads="one", verb=VERB)
def report_command(
    out: ReportOutOpt = None,
    layer: Annotated[
        str,
        typer.Option(
            "--layer",
            "-l",
            metavar="SPEC",
            help="Decoder layers to trace in full: 0, 0,5, 3-7, -1 (the last) or all.",
        ),
    ] = "all",
    filters: FilterOpt = None,
    attention_layer: Annotated[
        str,
        typer.Option(
            "--attention-layer",
            metavar="SPEC",
            help="The decoder layer whose attention is shown: N, or -1 for the last.",
        ),
    ] = "-1",
    head: HeadOpt = None,
    top_k: TopKOpt = DEFAULT_TOP_K,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            metavar="NAME",
            help="The module inside each decoder layer charted across depth, "
            "e.g. fc1 or self_attn.q_proj.",
        ),
    ] = DEFAULT_ROLE,
    compare: Annotated[
        Quant | None,
        typer.Option(
            "--compare",
            case_sensitive=False,
            help="Also compare every traced module with a run under this quantization "
            "(as compare --against does).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --out file.")
    ] = False,
    fmt: ReportFormatOpt = None,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Run TEXT once with every analysis's hooks on: the trace with each module's
    histogram, FFN sparsity, LLM.int8 outliers, every head's entropy and sink, one layer's
    attention and the logit lens, plus the parameter count: one self-contained HTML page
    (--out FILE.html) or JSON.

    A report is about one sentence: TEXT only. The model is loaded with eager attention,
    the only kind that computes weights. Each analysis's part is what its own command's
    --format json prints for the same TEXT.

    Examples:

    \b
      optinspect report "The quick brown fox jumps" --out fox.html
      optinspect report "The quick brown fox jumps" --out fox.json
      optinspect report "Hello" --model tiny -q none | jq '.series.layers.absmax'
      optinspect report "Hello" --model tiny --compare none --role self_attn.q_proj
    """
    from dataclasses import replace

    from ..engine.preflight import check_load_settings, check_output_path, check_text
    from ..errors import UsageError

    text = check_text(inputs.text or "", VERB)
    if force and out is None:
        raise UsageError("--force only applies with --out")
    if fmt is None:
        fmt = Format.json if out is None else _format_of(out)
    if out is not None:
        check_output_path(out, force=force, suffix=f".{fmt.value}", option="--out")
    reference = None
    if compare is not None:
        reference = [compare.value, "auto"]
        check_load_settings(replace(load, quant=reference[0], dtype=reference[1]))
    globs = tuple(filters or ())
    job = Job(
        "report",
        load,
        checks={"layers": layer, "filters": globs, "top_k": top_k, "head": head},
        params={
            "text": text,
            "model": load.model,
            "layers": layer,
            "filters": globs,
            "attention_layer": attention_layer,
            "head": head,
            "top_k": top_k,
            "role": role,
            "truncate": inputs.truncate,
            "setting": [load.quant, load.dtype],
            "compare": reference,
        },
    )
    (result,) = run_job(job)
    _write(result, fmt, out)


def _format_of(out: Path) -> Format:
    """The format an --out file's suffix names: .html or .json."""
    from ..errors import UsageError

    suffix = out.suffix.lower()
    if suffix not in (".html", ".json"):
        raise UsageError("--out writes HTML or JSON: give a file name ending in .html or .json")
    return Format(suffix[1:])


def _write(result: ReportResult, fmt: Format, out: Path | None) -> None:
    """The report in ``fmt`` (the HTML page or the JSON record): to ``out`` atomically (a
    note on stderr says so), or to stdout."""
    from ..render.common import write_json
    from ..render.report import report_html
    from ..results.files import write_atomic
    from .common import note

    def write(stream: IO[str]) -> None:
        if fmt is Format.html:
            stream.write(report_html(result))
        else:
            write_json(stream, result.as_dict())

    if out is None:
        write(sys.stdout)
        return

    def write_file(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as stream:
            write(stream)

    write_atomic(out, write_file)
    note(f"wrote {out}")
