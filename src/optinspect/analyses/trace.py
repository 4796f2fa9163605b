"""The trace analysis: every selected module's output, per sentence, in execution order.

    loaded = load_model("tiny", quant="none")
    for result in iter_trace(loaded, ["first sentence", "second"], layers="0"):
        result.modules[0].stats.absmax

Hook groups (the capture, optionally the FFN sparsity) around the shared
runner; one ``TraceResult`` per sentence as its batch finishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from ..engine.capture import TensorSink, capture
from ..engine.runner import Progress, Runner
from ..engine.selection import LayerSpec, select_names
from ..model.loading import LoadedModel
from ..model.names import module_names
from ..results.trace import TraceResult
from .sparsity import FfnSparsity

__all__ = ["LayerSpec", "TraceResult", "iter_trace"]


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
    model = loaded.model
    names = select_names(module_names(model), loaded.num_layers, layers, filters)
    info = loaded.info
    with (
        capture(model, names, stats=stats, sink=sink) as cap,
        sparsity if sparsity is not None else contextlib.nullcontext(),
    ):
        groups = [cap] if sparsity is None else [cap, sparsity]
        for batch, _output in runner.run(texts, groups):
            del _output  # the logits are not needed; free them before the next batch
            sentences = zip(batch.texts, batch.tokens, cap.collect(), strict=True)
            for position, (text, tokens, records) in enumerate(sentences):
                yield TraceResult(
                    info=info,
                    text=text,
                    tokens=tokens,
                    modules=tuple(records),
                    index=batch.first + position,
                )
