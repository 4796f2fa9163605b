"""The trace analysis: every selected module's output, per sentence, in execution order.

    loaded = load_model("tiny", quant="none")
    for result in iter_trace(loaded, ["first sentence", "second"], layers="0"):
        result.modules[0].stats.absmax

Hook groups (the capture, optionally the FFN sparsity) around the shared
runner; one ``TraceResult`` per sentence as its batch finishes. ``TraceCollector`` is
the capture and its reducer, which ``report`` shares a forward pass with others through
(``engine.collect``). ``compute`` is the trace job: with ``--save`` it streams every
output to a safetensors file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..engine.batch import Batch
from ..engine.capture import Capture, TensorSink, capture
from ..engine.collect import NO_KWARGS, Collector, collect
from ..engine.runner import Progress, Runner
from ..engine.selection import LayerSpec, select_names
from ..errors import UsageError
from ..model.loading import LoadedModel
from ..model.names import is_layer_root, module_names
from ..model.spec import config_from_raw
from ..results.trace import TraceResult
from ..results.units import count_noun, format_bytes, format_count
from .dryrun import output_bytes_per_token
from .job import plan_of
from .sparsity import FfnSparsity

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "SAVE_NOTE_BYTES",
    "LayerSpec",
    "TraceCollector",
    "TraceResult",
    "compute",
    "iter_trace",
]


class TraceCollector:
    """The trace's hook group and reducer: one ``TraceResult`` per sentence of a batch.

    ``bins`` > 0 also bins every output on the device (``Capture.histograms``).
    """

    forward_kwargs: ClassVar[Mapping[str, Any]] = NO_KWARGS

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        layers: LayerSpec = None,
        filters: Sequence[str] = (),
        stats: bool = True,
        sink: TensorSink | None = None,
        bins: int = 0,
    ) -> None:
        self.info = loaded.info
        names = select_names(module_names(loaded.model), loaded.num_layers, layers, filters)
        self.capture: Capture = capture(loaded.model, names, stats=stats, sink=sink, bins=bins)

    def groups(self) -> list[Capture]:
        return [self.capture]

    def finish(self, batch: Batch, output: Any) -> list[TraceResult]:
        """The batch's sentences, each with its module records in execution order."""
        sentences = zip(batch.texts, batch.tokens, self.capture.collect(), strict=True)
        return [
            TraceResult(
                info=self.info,
                text=text,
                tokens=tokens,
                modules=tuple(records),
                index=batch.first + position,
            )
            for position, (text, tokens, records) in enumerate(sentences)
        ]


def iter_trace(
    loaded: LoadedModel,
    texts: Iterable[str],
    *,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    stats: bool = True,
    batch_size: int = 8,
    sink: TensorSink | None = None,
    truncate: bool = False,
    sparsity: FfnSparsity | None = None,
    advance: Progress | None = None,
) -> Iterator[TraceResult]:
    """Trace sentences in padded batches, yielding one result per sentence as batches finish.

    ``sink`` receives (sentence index, module name, call, tensor as if run alone).
    The hooks stay on the model while the iteration is in progress: finish it
    (or ``close()`` it) before running the model otherwise.
    ``sparsity``, when given, also counts ReLU zeros and dead units over every
    token; read it with ``sparsity.summary()`` after the iteration.
    """
    runner = Runner(loaded, batch_size=batch_size, truncate=truncate, advance=advance)
    tracer = TraceCollector(loaded, layers=layers, filters=filters, stats=stats, sink=sink)
    collectors: list[Collector] = [tracer] if sparsity is None else [tracer, sparsity]
    with contextlib.closing(collect(runner, texts, collectors)) as batches:
        for _batch, (results, *_) in batches:
            yield from results


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str] | None,
    *,
    layers: str | None,
    filters: tuple[str, ...],
    batch_size: int,
    truncate: bool,
    summary: bool,
    plot: bool,
    save: str | None,
) -> Iterator[TraceResult]:
    """The trace job, where the model is: one result per sentence, then the FFN summary
    when ``summary`` (json and table show it; ``--plot`` draws it)."""
    plan = plan_of(plan)
    if plot and plan.names is not None:
        _check_plot_selection(plan.names)
    if texts is None:
        return None
    loaded = ctx.model()
    sparsity = None
    if summary:
        sparsity = FfnSparsity(loaded.model, plan.layers)
    with contextlib.ExitStack() as stack:
        store = None
        if save is not None:
            from ..engine.saving import ActivationStore

            texts = list(texts)  # counted first, for the size of the file
            _say_save_size(ctx, plan, loaded, texts, save, layers, filters, truncate)
            store = stack.enter_context(ActivationStore(Path(save)))
        for result in iter_trace(
            loaded,
            texts,
            layers=layers,
            filters=filters,
            batch_size=batch_size,
            sink=store.add if store is not None else None,
            truncate=truncate,
            sparsity=sparsity,
            advance=ctx.advance,
        ):
            if store is not None:
                store.describe(result.index, result)
            yield result
        if store is not None:  # what a full run paid for, first
            store.write(model=loaded.name, quant=loaded.quant)
            ctx.note(f"wrote {save}")
    return sparsity.summary() if sparsity is not None else None


#: A --save file at least this large is announced before the run (bytes).
SAVE_NOTE_BYTES = 100 << 20


def _say_save_size(
    ctx: Context,
    plan: Plan,
    loaded: LoadedModel,
    texts: list[str],
    save: str,
    layers: str | None,
    filters: tuple[str, ...],
    truncate: bool,
) -> None:
    """A note before a run whose --save file will be large: how large, from the tokens of
    the input and what one token's outputs take (a pass on the meta device)."""
    config = config_from_raw(plan.config)  # the plan's is the raw dict: no model builds on it
    per_token = output_bytes_per_token(config, loaded.dtype, layers=layers, filters=filters)
    lengths = [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]] if texts else []
    if truncate:
        lengths = [min(n, loaded.max_positions) for n in lengths]
    tokens = sum(lengths)
    size = per_token * tokens
    if size >= SAVE_NOTE_BYTES:
        ctx.note(
            f"note: --save will write about {format_bytes(size)} to {save} "
            f"({count_noun(len(texts), 'sentence')}, {format_count(tokens)} tokens), "
            "and needs as much again on disk while it is written"
        )


def _check_plot_selection(names: tuple[str, ...]) -> None:
    """``--plot`` draws the decoder layers' outputs: refused before loading when the
    selection holds none of them."""
    if not any(is_layer_root(name) for name in names):
        raise UsageError(
            "--plot needs the decoder layers' outputs: use it without --filter, or with --layer all"
        )
