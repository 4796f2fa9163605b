"""The logit lens: every decoder layer's output read through the model's own head.

    loaded = load_model("tiny", quant="none", device="cpu")
    result = compute_lens(loaded, "The capital of France is", top_k=3)
    result.layers[-1].predictions[-1][0].text   # what the last layer predicts last
    for result in iter_lens(loaded, sentences, batch_size=8): ...

Each layer's output goes through the modules the decoder applies after its
last layer (``final_layer_norm`` where the model has one, ``project_out``
where it has one) and then ``lm_head``. For the last layer that is exactly
the computation behind the model's logits, so its row is the model's own
prediction.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..engine.batch import Batch
from ..engine.capture import Capture, capture
from ..engine.collect import NO_KWARGS, collect
from ..engine.preflight import check_top_k
from ..engine.runner import Progress, Runner, describe_token
from ..engine.selection import LayerSpec, resolve_layers
from ..model.loading import LoadedModel
from ..model.names import layer_of, layer_root
from ..results.lens import LensLayer, LensResult, Prediction, Ranked
from ..results.records import Token, finite_or_none

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "LensCollector",
    "LensLayer",
    "LensResult",
    "Prediction",
    "compute",
    "compute_lens",
    "iter_lens",
    "project_hidden",
    "rank_top_k",
]

#: What ``the text is empty`` asks for.
VERB = "read through the lens"


def project_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from a decoder hidden state, through the modules the decoder ends with.

    ``final_layer_norm`` and ``project_out`` are applied where the model has
    them (post-LayerNorm models such as opt-350m have no final norm), then
    ``lm_head``, the same modules the model itself applies after its last layer.
    """
    decoder = model.model.decoder
    if decoder.final_layer_norm is not None:
        hidden = decoder.final_layer_norm(hidden)
    if decoder.project_out is not None:
        hidden = decoder.project_out(hidden)
    return model.lm_head(hidden)


def rank_top_k(logits: torch.Tensor, k: int) -> list[list[int]]:
    """Indices of the ``k`` largest logits of each row, largest first.

    Ties go to the lower index and NaN ranks highest, as in ``torch.argmax``,
    so the first index of every row is the argmax of that row.
    """
    values = logits.float()
    values = torch.where(torch.isnan(values), torch.full_like(values, math.inf), values)
    kth = torch.topk(values, k, dim=-1).values[..., -1:]
    # Only the values at or above the k-th can rank; usually exactly k of them a row.
    rows, cols = torch.nonzero(values >= kth, as_tuple=True)
    chosen = values[rows, cols]
    candidates: list[list[tuple[float, int]]] = [[] for _ in range(values.shape[0])]
    for row, col, value in zip(rows.tolist(), cols.tolist(), chosen.tolist(), strict=True):
        candidates[row].append((-value, col))
    return [[col for _, col in sorted(items)[:k]] for items in candidates]


def _predictions(logits: torch.Tensor, k: int, tokenizer: Any) -> tuple[Ranked, ...]:
    """Top-k predictions for each row of ``logits`` [positions, vocab].

    A row holding NaN or Inf has no ranking worth showing (NaN would rank
    first, naming token 0): it gets no predictions, an empty tuple.
    """
    ranked = rank_top_k(logits, k)
    probs = torch.softmax(logits.float(), dim=-1)
    index = torch.tensor(ranked, dtype=torch.long, device=logits.device)
    chosen = probs.gather(-1, index).tolist()
    finite = torch.isfinite(logits).all(dim=-1).tolist()
    rows: list[Ranked] = []
    for ids, row_probs, ok in zip(ranked, chosen, finite, strict=True):
        if not ok:
            rows.append(())
            continue
        rows.append(
            tuple(
                _prediction(tokenizer, i, finite_or_none(p))
                for i, p in zip(ids, row_probs, strict=True)
            )
        )
    return tuple(rows)


def _prediction(tokenizer: Any, token_id: int, prob: float | None) -> Prediction:
    token = describe_token(tokenizer, token_id)
    return Prediction(id=token.id, text=token.text, prob=prob, bytes=token.bytes)


def compute_lens(
    loaded: LoadedModel,
    text: str,
    *,
    layers: LayerSpec = None,
    top_k: int = 1,
    truncate: bool = False,
) -> LensResult:
    """Run ``text`` once and read every selected layer's output through the model's head.

    ``layers`` is a layer spec (``0``, ``3-7``, ``-1``, ``all``) or indices; None is all.
    """
    # Closed at once, so the hooks of the one forward are gone when this returns.
    with contextlib.closing(
        iter_lens(loaded, [text], layers=layers, top_k=top_k, truncate=truncate)
    ) as results:
        return next(results)


def iter_lens(
    loaded: LoadedModel,
    texts: Iterable[str],
    *,
    layers: LayerSpec = None,
    top_k: int = 1,
    batch_size: int = 8,
    truncate: bool = False,
    advance: Progress | None = None,
) -> Iterator[LensResult]:
    """The lens of every sentence, in input order, as each batch finishes.

    Each selected layer's output is kept only until its batch is projected. As
    with ``iter_trace``, the hooks stay on the model while the iteration is in
    progress: finish it (or close it) before running the model otherwise.
    """
    lens = LensCollector(loaded, layers=layers, top_k=top_k)
    runner = Runner(loaded, batch_size=batch_size, truncate=truncate, verb=VERB, advance=advance)
    with contextlib.closing(collect(runner, texts, [lens])) as batches:
        for _batch, (results,) in batches:
            yield from results


class LensCollector:
    """The lens's hook group (the selected layers' outputs, kept until their batch is
    projected) and reducer: one ``LensResult`` per sentence of a batch."""

    forward_kwargs: ClassVar[Mapping[str, Any]] = NO_KWARGS

    def __init__(self, loaded: LoadedModel, *, layers: LayerSpec = None, top_k: int = 1) -> None:
        check_top_k(top_k, int(loaded.model.config.vocab_size))
        self.loaded = loaded
        self.top_k = top_k
        self.chosen = resolve_layers(layers, loaded.num_layers, default="all") or []
        self.hidden: dict[tuple[int, int], torch.Tensor] = {}
        names = [layer_root(i) for i in self.chosen]
        self.capture: Capture = capture(loaded.model, names, stats=False, sink=self._keep)

    def _keep(self, sentence: int, name: str, _call: int, tensor: torch.Tensor) -> None:
        self.hidden[(sentence, layer_of(name) or 0)] = tensor

    def groups(self) -> list[Capture]:
        return [self.capture]

    def finish(self, batch: Batch, output: Any) -> list[LensResult]:
        """Every sentence's lens; the kept outputs are dropped once they are read."""
        try:
            with torch.inference_mode():
                return [
                    _lens_of(
                        self.loaded,
                        batch.first + b,
                        text,
                        tokens,
                        self.chosen,
                        self.hidden,
                        self.top_k,
                        row,
                    )
                    for b, (text, tokens, row) in enumerate(
                        zip(batch.texts, batch.tokens, output.logits, strict=True)
                    )
                ]
        finally:
            self.hidden.clear()


def _lens_of(
    loaded: LoadedModel,
    index: int,
    text: str,
    tokens: tuple[Token, ...],
    chosen: list[int],
    hidden: dict[tuple[int, int], torch.Tensor],
    top_k: int,
    logits: torch.Tensor,
) -> LensResult:
    """One sentence's result; ``logits`` is its row of the batch's output, padding included."""
    model, tokenizer = loaded.model, loaded.tokenizer
    lens_layers = tuple(
        LensLayer(
            layer=i,
            predictions=_predictions(
                project_hidden(model, hidden[(index, i)]).reshape(-1, logits.shape[-1]),
                top_k,
                tokenizer,
            ),
        )
        for i in chosen
    )
    return LensResult(
        info=loaded.info,
        text=text,
        tokens=tokens,
        top_k=top_k,
        layers=lens_layers,
        output=_predictions(logits[: len(tokens)], top_k, tokenizer),
        index=index,
    )


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str] | None,
    *,
    layers: str | None,
    top_k: int,
    batch_size: int,
    truncate: bool,
) -> Iterator[LensResult]:
    """The lens job, where the model is: one result per sentence."""
    if texts is None:
        return
    yield from iter_lens(
        ctx.model(),
        texts,
        layers=layers,
        top_k=top_k,
        batch_size=batch_size,
        truncate=truncate,
        advance=ctx.advance,
    )
