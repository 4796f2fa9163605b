"""Attention weights of one decoder layer, with per-head entropy and sink mass.

    loaded = load_model("tiny", quant="none", device="cpu", attn_implementation="eager")
    result = compute_attention(loaded, "The quick brown fox", layer="-1", head=0)
    result.weights[3][0]      # how much query 3 attends to key 0 (</s>)

The weights come from one forward pass with ``output_attentions=True``; only
eager attention computes them, so the model must be loaded with
``attn_implementation="eager"``.

Definitions, per head, over the T query rows of one sentence:

- entropy: the mean over query rows i = 0..T-1 of H_i = -sum_j w_ij ln w_ij,
  in nats, with 0 ln 0 = 0. Row i can attend to keys 0..i only, so it is at
  most ln(i + 1); row 0 always contributes 0.
- sink: the mean over query rows of w_i0, the weight on position 0 (``</s>``).
  Row 0 always contributes 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..engine.batch import Batch
from ..engine.collect import collect
from ..engine.preflight import resolve_head, resolve_single_layer
from ..engine.runner import Runner
from ..errors import ModelError
from ..model.loading import LoadedModel
from ..results.attention import AttentionResult, HeadMaps, HeadSummary
from ..results.attention import Matrix as Matrix
from ..results.records import finite_or_none

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "AttentionCollector",
    "AttentionResult",
    "HeadSummary",
    "compute",
    "compute_attention",
    "head_entropy",
    "sink_mass",
    "uniform_entropy",
]

#: What ``the text is empty`` asks for.
VERB = "show the attention of"


def head_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of each row's entropy in nats; ``weights`` is [..., query, key]."""
    w = weights.float()
    return -torch.special.xlogy(w, w).sum(dim=-1).mean(dim=-1)


def sink_mass(weights: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of the weight on key 0; ``weights`` is [..., query, key]."""
    return weights.float()[..., 0].mean(dim=-1)


def uniform_entropy(tokens: int) -> float:
    """The entropy a head spreading every row evenly over keys 0..i would have."""
    return sum(math.log(i + 1) for i in range(tokens)) / tokens


def compute_attention(
    loaded: LoadedModel,
    text: str,
    *,
    layer: str | int = -1,
    head: int | None = None,
    truncate: bool = False,
) -> AttentionResult:
    """Run ``text`` once and return layer ``layer``'s attention: ``head``'s, or the heads' mean."""
    attention = AttentionCollector(loaded, layer=layer, head=head)
    runner = Runner(loaded, batch_size=1, truncate=truncate, verb=VERB)
    with contextlib.closing(collect(runner, [text], [attention])) as batches:
        _batch, ((result,),) = next(batches)
    return result  # type: ignore[no-any-return]


class AttentionCollector:
    """The attention's reducer: no hooks, the weights the forward returns when asked
    (``output_attentions``); one ``AttentionResult`` per sentence of a batch."""

    forward_kwargs: ClassVar[Mapping[str, Any]] = MappingProxyType({"output_attentions": True})

    def __init__(self, loaded: LoadedModel, *, layer: str | int = -1, head: int | None = None):
        self.loaded = loaded
        self.num_heads = int(loaded.model.config.num_attention_heads)
        self.layer = resolve_single_layer(layer, loaded.num_layers)
        self.head = resolve_head(head, self.num_heads) if head is not None else None

    def groups(self) -> list[Any]:
        return []

    def finish(self, batch: Batch, output: Any) -> list[AttentionResult]:
        """Each sentence's weights: its own rows and columns (a right-padded sentence's
        queries never attend to the padding after it)."""
        attentions = returned_attentions(self.loaded, output)
        with torch.inference_mode():
            return [
                self._result(
                    text, tokens, attentions[self.layer][b, :, : len(tokens), : len(tokens)]
                )
                for b, (text, tokens) in enumerate(zip(batch.texts, batch.tokens, strict=True))
            ]

    def _result(self, text: str, tokens: Any, weights: torch.Tensor) -> AttentionResult:
        weights = weights.float()  # [heads, query, key]
        shown = weights[self.head] if self.head is not None else weights.mean(dim=0)
        entropy = head_entropy(weights).tolist()
        sink = sink_mass(weights).tolist()
        matrix = tuple(tuple(finite_or_none(v) for v in row) for row in shown.tolist())
        return AttentionResult(
            info=self.loaded.info,
            text=text,
            tokens=tuple(tokens),
            layer=self.layer,
            head=self.head,
            num_heads=self.num_heads,
            weights=matrix,
            heads=tuple(
                HeadSummary(head=h, entropy=finite_or_none(e), sink=finite_or_none(s))
                for h, (e, s) in enumerate(zip(entropy, sink, strict=True))
            ),
            uniform_entropy=uniform_entropy(len(tokens)),
        )


def returned_attentions(loaded: LoadedModel, output: Any) -> tuple[torch.Tensor, ...]:
    """Every layer's weights [batch, heads, query, key] from a forward's ``output``; an
    error where the model computed none (not eager attention)."""
    attentions = getattr(output, "attentions", None)
    if not attentions or len(attentions) != loaded.num_layers:
        raise ModelError(
            f"{loaded.name} returned no attention weights: load it with attn_implementation='eager'"
        )
    return tuple(attentions)


class HeadMapsCollector:
    """Entropy and sink of every head of every layer, from the weights the same forward
    returns (the report's layer x head maps); one ``HeadMaps`` per sentence, each one
    transfer to the host."""

    forward_kwargs: ClassVar[Mapping[str, Any]] = AttentionCollector.forward_kwargs

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def groups(self) -> list[Any]:
        return []

    def finish(self, batch: Batch, output: Any) -> list[HeadMaps]:
        attentions = returned_attentions(self.loaded, output)
        maps = []
        with torch.inference_mode():
            for b, tokens in enumerate(batch.tokens):
                n = len(tokens)
                weights = torch.stack([a[b, :, :n, :n] for a in attentions]).float()
                both = torch.stack([head_entropy(weights), sink_mass(weights)]).tolist()
                entropy, sink = (
                    tuple(tuple(finite_or_none(v) for v in row) for row in rows) for rows in both
                )
                maps.append(HeadMaps(entropy, sink, uniform_entropy(n)))
        return maps


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: None,
    *,
    text: str,
    layer: str,
    head: int | None,
    truncate: bool,
) -> Iterator[AttentionResult]:
    """The attention job, where the model is: eager attention, the kind that gives weights."""
    loaded = ctx.model(attn_implementation="eager")
    chosen = plan.layers[0] if plan is not None and plan.layers else layer
    yield compute_attention(loaded, text, layer=chosen, head=head, truncate=truncate)
