"""``optinspect trace``: real forward passes, every selected module's output."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .options import (
    DEFAULT_MODEL,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    FilterOpt,
    MaxMemoryOpt,
    ModelOpt,
    OffloadDirOpt,
    Quant,
    QuantOpt,
    TraceFormat,
    VerboseOpt,
)


def trace_command(
    text: Annotated[
        str | None,
        typer.Argument(help="The text to trace; - reads one sentence per line from stdin."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-F", help="Read sentences from a file, one per line."),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            "-l",
            help="Decoder layers to show in full: 0, 0,5, 3-7, -1 (the last) or all. "
            "Without it, an overview: embeddings, each layer's output, final norm, head.",
        ),
    ] = None,
    filters: FilterOpt = None,
    stats: Annotated[
        str | None,
        typer.Option(
            "--stats", help="Statistics to show, e.g. mean,absmax,zeros (all by default)."
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    quant: QuantOpt = Quant.int8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = Dtype.auto,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    offload_dir: OffloadDirOpt = None,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Cut text longer than the model's positions.")
    ] = False,
    fmt: Annotated[
        TraceFormat,
        typer.Option("--format", "-f", help="table for people; json, jsonl or csv for scripts."),
    ] = TraceFormat.table,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Sentences per forward pass.")
    ] = 8,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", help="Write the selected modules' full outputs to a .safetensors file."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --save file.")] = False,
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
        typer.Option("--tokens", help="With --dry-run: this many tokens instead of TEXT."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write per-layer lines of std, absmax and zeros to a PNG."),
    ] = None,
    timings: Annotated[
        bool,
        typer.Option("--timings", help="Print import, load, forward and render times to stderr."),
    ] = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Trace TEXT through an OPT model and show every module's output in execution order.

    Examples:

      optinspect trace "The quick brown fox jumps over the lazy dog" --layer 0

      optinspect trace "Hello" --model tiny --format json | jq '.modules[].name'

      cat sentences.txt | optinspect trace - --filter '*.fc1' --format jsonl > fc1.jsonl

      optinspect trace --file sentences.txt --layer all --format csv --stats mean,absmax,zeros

      optinspect trace "text" --layer 3 --save layer3.safetensors

      optinspect trace "some text" --model facebook/opt-175b --dry-run --layer 0

      optinspect trace --file sentences.txt --layer all --plot layers.png
    """
    from .. import STARTED
    from ..engine.inputs import read_texts
    from ..engine.records import TraceResult
    from ..errors import NonFiniteError, UsageError
    from ..render.trace import parse_stats
    from .trace_output import EMITTERS

    stat_names = parse_stats(stats)
    globs = tuple(filters or ())
    if save is not None:
        from ..engine.saving import check_writable

        check_writable(save, force)
    if plot is not None:
        from ..render.images import check_output_path, require_matplotlib

        require_matplotlib("--plot")
        check_output_path(plot)
    if dry_run:
        if save is not None or fail_on_nonfinite or plot is not None:
            raise UsageError(
                "--dry-run computes no values: it cannot --save, --plot or --fail-on-nonfinite"
            )
        from ..dryrun import dry_run as run_dry

        result = run_dry(
            model,
            text,
            tokens=tokens,
            quant=quant.value,
            dtype=dtype.value,
            layers=layer,
            filters=globs,
        )
        emitter = EMITTERS[fmt.value](stat_names, many=False)
        emitter.emit(result)
        emitter.close()
        return
    if tokens is not None:
        raise UsageError("--tokens only applies with --dry-run")
    texts, many = read_texts(text, file)

    from ..tracing import iter_trace
    from .common import load_with_status, progress, stderr_console

    imported = time.perf_counter()
    loaded = load_with_status(
        model,
        quant=quant.value,
        device=device,
        dtype=dtype.value,
        verbose=verbose,
        device_map=device_map,
        max_memory=max_memory,
        offload_dir=offload_dir,
    )
    loaded_at = time.perf_counter()
    store = None
    if save is not None:
        from ..engine.saving import ActivationStore

        store = ActivationStore()
    emitter = EMITTERS[fmt.value](stat_names, many)
    sparsity = None
    if emitter.wants_sparsity or plot is not None:
        from ..sparsity import FfnSparsity

        sparsity = FfnSparsity(loaded.model)
    kept: list[TraceResult] = []
    first_bad: tuple[int, str] | None = None
    forward = render = 0.0
    results = iter_trace(
        loaded,
        texts,
        layers=layer,
        filters=globs,
        batch_size=batch_size,
        sink=store.add if store is not None else None,
        truncate=truncate,
        sparsity=sparsity,
    )
    with progress(enabled=many) as advance:
        while True:
            start = time.perf_counter()
            result = next(results, None)
            forward += time.perf_counter() - start
            if result is None:
                break
            start = time.perf_counter()
            emitter.emit(result)
            render += time.perf_counter() - start
            advance()
            if store is not None:
                store.describe(result.index, result)
            if plot is not None:
                kept.append(result)
            bad = result.first_nonfinite() if first_bad is None else None
            if bad is not None:
                first_bad = (result.index, bad.name)
    start = time.perf_counter()
    summary = sparsity.summary() if sparsity is not None else None
    emitter.close(summary if emitter.wants_sparsity else None)
    if plot is not None and kept:
        from ..render.layer_plot import save_layer_plot

        save_layer_plot(kept, summary or [], plot)
    render += time.perf_counter() - start
    if emitter.count == 0:
        stderr_console().print(
            "note: the input holds no sentences; nothing was traced", soft_wrap=True
        )
    if store is not None and save is not None:
        store.write(save, model=loaded.name, quant=loaded.quant)
    if timings:
        total = time.perf_counter() - STARTED
        stderr_console().print(
            f"timings: import {imported - STARTED:.3f}s · load {loaded_at - imported:.3f}s · "
            f"forward {forward:.3f}s · render {render:.3f}s · total {total:.3f}s",
            highlight=False,
            soft_wrap=True,
        )
    if fail_on_nonfinite and first_bad is not None:
        index, name = first_bad
        raise NonFiniteError(f"{name} produced NaN or Inf (sentence {index})")
