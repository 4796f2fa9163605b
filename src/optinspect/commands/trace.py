"""``optinspect trace``: real forward passes, every selected module's output."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..analyses.job import Job
from .jobs import run_job, with_umask
from .options import (
    FilterOpt,
    Format,
    InputOptions,
    LayerOpt,
    LoadOptions,
    TraceFormatOpt,
    file_option,
    model_command,
)

if TYPE_CHECKING:
    from ..results.sparsity import LayerSparsity
    from ..results.trace import TraceResult
    from .output import Emitter


SaveOpt = file_option(
    "--save", help="Write the selected modules' full outputs to a .safetensors file."
)
PlotOpt = file_option("--plot", help="Write per-layer lines of std, absmax and zeros to a PNG.")


@model_command(reads="batches", verb="trace")
def trace_command(
    layer: LayerOpt = None,
    filters: FilterOpt = None,
    stats: Annotated[
        str | None,
        typer.Option(
            "--stats",
            metavar="LIST",
            help="Statistics to show, e.g. mean,absmax,zeros, or all. Default: all in json, "
            "jsonl and csv; mean, std, absmax, zeros (and nan, inf when present) in the table.",
        ),
    ] = None,
    fmt: TraceFormatOpt = Format.table,
    save: SaveOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --save or --plot file.")
    ] = False,
    fail_on_nonfinite: Annotated[
        bool,
        typer.Option("--fail-on-nonfinite", help="Exit 3 if any recorded output holds NaN or Inf."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Shapes and dtypes from a meta-device pass; no weights."),
    ] = False,
    tokens: Annotated[
        int | None,
        typer.Option(
            "--tokens", metavar="N", help="With --dry-run: this many tokens instead of TEXT."
        ),
    ] = None,
    plot: PlotOpt = None,
    timings: Annotated[
        bool,
        typer.Option("--timings", help="Print import, load, forward and render times to stderr."),
    ] = False,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Trace TEXT through a model and show every module's output in execution order.

    Examples:

    \b
      optinspect trace "The quick brown fox jumps over the lazy dog" --layer 0
      optinspect trace "Hello" --model tiny --format json | jq '.modules[].name'
      cat sentences.txt | optinspect trace - --filter '*.fc1' -f jsonl > fc1.jsonl
      optinspect trace --file sentences.txt --layer all --format csv > stats.csv
      optinspect trace "text" --layer 3 --save layer3.safetensors
      optinspect trace "some text" --model facebook/opt-175b --dry-run --layer 0
      optinspect trace --file sentences.txt --layer all --plot layers.png
    """
    from ..engine.preflight import parse_stats

    stat_names = parse_stats(stats) if stats is not None else None
    globs = tuple(filters or ())
    _check_options(inputs, save, plot, force, dry_run, tokens, fail_on_nonfinite)
    if dry_run:
        if load.device_map or load.max_memory or load.offload_dir:
            from ..errors import UsageError

            raise UsageError(
                "--dry-run builds the model on the meta device: it takes no --device-map, "
                "--max-memory or --offload-dir"
            )
        _dry_run(load, inputs.text, tokens, layer, globs, fmt.value, stat_names)
        return
    texts, many = inputs.read()
    clock = _Clock()
    run = _TraceRun(fmt.value, stat_names, many, plot=plot, model=load.model)
    values = {"layers": layer, "filters": globs, "batch_size": inputs.batch_size}
    job = Job(
        "trace",
        load,
        checks=values,
        params={
            **values,
            "truncate": inputs.truncate,
            "summary": run.emitter.wants_summary or plot is not None,
            "plot": plot is not None,
            "save": str(save) if save is not None else None,
        },
        texts=texts,
    )
    run.stream(with_umask(job), clock)
    run.finish(plot, clock)
    if texts is None:
        from .common import say_nothing_read

        say_nothing_read("trace")
    if timings:
        clock.report()
    if fail_on_nonfinite and run.first_bad is not None:
        from ..errors import NonFiniteError

        index, name = run.first_bad
        raise NonFiniteError(f"{name} produced NaN or Inf (sentence {index})")


def _check_options(
    inputs: InputOptions,
    save: Path | None,
    plot: Path | None,
    force: bool,
    dry_run: bool,
    tokens: int | None,
    fail_on_nonfinite: bool,
) -> None:
    """Options that cannot go together, then output files that cannot be written."""
    from ..engine.preflight import check_output_path
    from ..errors import UsageError

    if force and save is None and plot is None:
        raise UsageError("--force only applies with --save or --plot")
    if not dry_run and tokens is not None:
        raise UsageError("--tokens only applies with --dry-run")
    if dry_run:
        if save is not None or fail_on_nonfinite or plot is not None:
            raise UsageError(
                "--dry-run computes no values: it cannot --save, --plot or --fail-on-nonfinite"
            )
        if inputs.file is not None or inputs.text == "-":
            raise UsageError("--dry-run takes one TEXT or --tokens N, not - or --file")
        if tokens is not None and inputs.text is not None:
            raise UsageError("give TEXT or --tokens, not both")
    if save is not None:
        check_output_path(save, force=force, suffix=".safetensors", option="--save")
    if plot is not None:
        from ..render.images import require_matplotlib

        require_matplotlib("--plot")
        check_output_path(plot, force=force, suffix=".png", option="--plot")


def _dry_run(
    load: LoadOptions,
    text: str | None,
    tokens: int | None,
    layer: str | None,
    globs: tuple[str, ...],
    fmt: str,
    stat_names: tuple[str, ...] | None,
) -> None:
    from ..analyses.dryrun import dry_run
    from .trace_output import close_trace_output, trace_emitter

    result = dry_run(
        load.model, text, tokens=tokens, quant=load.quant, dtype=load.dtype, device=load.device,
        layers=layer, filters=globs,
    )  # fmt: skip
    emitter = trace_emitter(fmt, stat_names, many=False)
    emitter.emit(result)
    close_trace_output(emitter, None)


@dataclass
class _Clock:
    """Where the time of one trace went, for ``--timings``."""

    imported: float = field(default_factory=time.perf_counter)
    load: float = 0.0  # seconds spent loading the model here (none when a server answered)
    forward: float = 0.0
    render: float = 0.0

    def report(self) -> None:
        from .. import STARTED
        from .common import stderr_console

        total = time.perf_counter() - STARTED
        stderr_console().print(
            f"timings: import {self.imported - STARTED:.3f}s · "
            f"load {self.load:.3f}s · forward {self.forward:.3f}s · "
            f"render {self.render:.3f}s · total {total:.3f}s",
            highlight=False,
            soft_wrap=True,
        )


class _TraceRun:
    """One trace's output: results stream to the emitter as they come."""

    def __init__(
        self,
        fmt: str,
        stat_names: tuple[str, ...] | None,
        many: bool,
        *,
        plot: Path | None,
        model: str,
    ) -> None:
        from .trace_output import trace_emitter

        self.emitter: Emitter = trace_emitter(fmt, stat_names, many, model)
        self.kept: list[TraceResult] | None = [] if plot is not None else None
        self.first_bad: tuple[int, str] | None = None
        self.many = many
        self.summary: list[LayerSparsity] | None = None

    def stream(self, job: Job, clock: _Clock) -> None:
        from .common import progress

        with progress(enabled=self.many) as advance:
            results = run_job(job, advance)
            stream = iter(results)
            while True:
                start = time.perf_counter()
                result = next(stream, None)
                clock.forward += time.perf_counter() - start
                if result is None:
                    break
                start = time.perf_counter()
                self.emitter.emit(result)
                clock.render += time.perf_counter() - start
                self._keep(result)
        self.summary = results.tail
        clock.load = results.load_seconds
        clock.forward -= results.load_seconds

    def _keep(self, result: TraceResult) -> None:
        if self.kept is not None:
            self.kept.append(result)
        bad = result.first_nonfinite() if self.first_bad is None else None
        if bad is not None:
            self.first_bad = (result.index, bad.name)

    def finish(self, plot: Path | None, clock: _Clock) -> None:
        from .common import note
        from .trace_output import close_trace_output

        start = time.perf_counter()
        close_trace_output(self.emitter, self.summary)
        if plot is not None and self.kept:
            from ..render.layer_plot import save_layer_plot

            save_layer_plot(self.kept, self.summary or [], plot)
            note(f"wrote {plot}")
        clock.render += time.perf_counter() - start
