"""The Python API: the same records the CLI renders.

from optinspect import load, trace
model = load("tiny", quant="none")
results = trace(model, ["first sentence", "second"], layers=[0])
"""

from __future__ import annotations

from collections.abc import Sequence

from .analyses.trace import LayerSpec, TraceResult, iter_trace
from .model.loading import LoadedModel
from .model.loading import load_model as load

__all__ = ["load", "trace"]


def trace(
    model: LoadedModel,
    texts: str | Sequence[str],
    *,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    batch_size: int = 8,
) -> list[TraceResult]:
    """Trace one sentence or many; one TraceResult per sentence, in input order.

    ``layers`` takes a spec string (``"0,3-5"``, ``"all"``) or a list of indices;
    None gives the overview. ``filters`` are globs on dotted module names.
    """
    sentences = [texts] if isinstance(texts, str) else list(texts)
    return list(iter_trace(model, sentences, layers=layers, filters=filters, batch_size=batch_size))
