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

import math
from dataclasses import dataclass
from typing import Any

import torch

from .engine.records import Token
from .engine.selection import parse_layers
from .errors import ModelError, UsageError
from .model.loading import LoadedModel
from .tracing import encode

__all__ = [
    "ATTENTION_SCHEMA",
    "AttentionResult",
    "HeadSummary",
    "compute_attention",
    "head_entropy",
    "resolve_head",
    "resolve_layer",
    "sink_mass",
    "uniform_entropy",
]

#: Version of the attention JSON layout; bumped only when a key is removed or changes meaning.
ATTENTION_SCHEMA = 1

Matrix = tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class HeadSummary:
    """Entropy (nats) and sink mass of one head, as defined in the module docstring."""

    head: int
    entropy: float | None
    sink: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"head": self.head, "entropy": self.entropy, "sink": self.sink}


@dataclass(frozen=True)
class AttentionResult:
    """One layer's attention for one sentence: the shown matrix and every head's summary.

    ``weights[i][j]`` is the weight query position i gives key position j; it
    is one head's (``head``) or the mean over the layer's heads (``head`` None).
    """

    model: str
    quant: str
    device: str
    dtype: str
    random_weights: bool
    text: str
    tokens: tuple[Token, ...]
    layer: int
    head: int | None
    num_heads: int
    weights: Matrix
    heads: tuple[HeadSummary, ...]
    uniform_entropy: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": ATTENTION_SCHEMA,
            "model": self.model,
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype,
            "random_weights": self.random_weights,
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "layer": self.layer,
            "head": self.head,
            "num_heads": self.num_heads,
            "weights": [list(row) for row in self.weights],
            "heads": [h.as_dict() for h in self.heads],
            "uniform_entropy": self.uniform_entropy,
        }


def resolve_layer(spec: str, num_layers: int) -> int:
    """The one decoder layer ``spec`` names (``5``, ``-1``), checked against the model."""
    chosen = parse_layers(spec, num_layers)
    if len(chosen) != 1:
        raise UsageError(f"--layer {spec} names {len(chosen)} layers: give exactly one")
    return chosen[0]


def resolve_head(head: int, num_heads: int) -> int:
    """``head`` as an index 0..num_heads-1; negative counts from the end like -1 for the last."""
    index = head + num_heads if head < 0 else head
    if not 0 <= index < num_heads:
        valid = f"heads 0-{num_heads - 1}" if num_heads > 1 else "head 0"
        raise UsageError(f"head {head} does not exist: the model has {valid}")
    return index


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


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compute_attention(
    loaded: LoadedModel, text: str, *, layer: str | int = -1, head: int | None = None
) -> AttentionResult:
    """Run ``text`` once and return layer ``layer``'s attention: ``head``'s, or the heads' mean."""
    model = loaded.model
    num_heads = int(model.config.num_attention_heads)
    index = resolve_layer(str(layer), loaded.num_layers)
    head_index = resolve_head(head, num_heads) if head is not None else None
    tokens = encode(loaded, text)
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([[t.id for t in tokens]], dtype=torch.long, device=device)
    with torch.inference_mode():
        output = model(input_ids=input_ids, use_cache=False, output_attentions=True)
        attentions = getattr(output, "attentions", None)
        if not attentions or len(attentions) != loaded.num_layers:
            raise ModelError(
                f"{loaded.name} returned no attention weights: "
                "load it with attn_implementation='eager'"
            )
        weights = attentions[index][0].float()  # [heads, query, key]
        shown = weights[head_index] if head_index is not None else weights.mean(dim=0)
        entropy = head_entropy(weights).tolist()
        sink = sink_mass(weights).tolist()
        matrix = tuple(tuple(_finite(v) for v in row) for row in shown.tolist())
    return AttentionResult(
        **loaded.describe(),
        text=text,
        tokens=tuple(tokens),
        layer=index,
        head=head_index,
        num_heads=num_heads,
        weights=matrix,
        heads=tuple(
            HeadSummary(head=h, entropy=_finite(e), sink=_finite(s))
            for h, (e, s) in enumerate(zip(entropy, sink, strict=True))
        ),
        uniform_entropy=uniform_entropy(len(tokens)),
    )
