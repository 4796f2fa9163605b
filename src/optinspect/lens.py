"""The logit lens: every decoder layer's output read through the model's own head.

    loaded = load_model("tiny", quant="none", device="cpu")
    result = compute_lens(loaded, "The capital of France is", top_k=3)
    result.layers[-1].predictions[-1][0].text   # what the last layer predicts last

Each layer's output goes through the modules the decoder applies after its
last layer (``final_layer_norm`` where the model has one, ``project_out``
where it has one) and then ``lm_head``. For the last layer that is exactly
the computation behind the model's logits, so its row is the model's own
prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .engine.capture import capture
from .engine.records import Token
from .engine.selection import LAYERS_PREFIX, parse_layers
from .errors import UsageError
from .model.loading import LoadedModel
from .tracing import encode

__all__ = [
    "LENS_SCHEMA",
    "LensLayer",
    "LensResult",
    "Prediction",
    "check_top_k",
    "compute_lens",
    "project_hidden",
    "rank_top_k",
]


#: Version of the lens JSON layout; bumped only when a key is removed or changes meaning.
LENS_SCHEMA = 1


@dataclass(frozen=True)
class Prediction:
    """One candidate next token; ``prob`` is None when the logits were not finite."""

    id: int
    text: str
    prob: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "prob": self.prob}


#: The k most likely next tokens at one position, most likely first.
Ranked = tuple[Prediction, ...]


@dataclass(frozen=True)
class LensLayer:
    """What one decoder layer's output predicts at every position."""

    layer: int
    predictions: tuple[Ranked, ...]  # one entry per input position

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "predictions": [[p.as_dict() for p in ranked] for ranked in self.predictions],
        }


@dataclass(frozen=True)
class LensResult:
    """The logit lens of one sentence: selected layers, plus the model's own output."""

    model: str
    quant: str
    device: str
    dtype: str
    random_weights: bool
    text: str
    tokens: tuple[Token, ...]
    top_k: int
    layers: tuple[LensLayer, ...]
    output: tuple[Ranked, ...]  # from the model's real logits, one entry per position

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": LENS_SCHEMA,
            "model": self.model,
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype,
            "random_weights": self.random_weights,
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "top_k": self.top_k,
            "layers": [layer.as_dict() for layer in self.layers],
            "output": [[p.as_dict() for p in ranked] for ranked in self.output],
        }


def check_top_k(top_k: int, vocab_size: int) -> int:
    """``top_k`` when it is between 1 and the vocabulary size, else a usage error."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")
    if top_k > vocab_size:
        raise UsageError(f"--top-k {top_k} is more than the vocabulary of {vocab_size} tokens")
    return top_k


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
    """Top-k predictions for each row of ``logits`` [positions, vocab]."""
    ranked = rank_top_k(logits, k)
    probs = torch.softmax(logits.float(), dim=-1)
    index = torch.tensor(ranked, dtype=torch.long, device=logits.device)
    chosen = probs.gather(-1, index).tolist()
    return tuple(
        tuple(
            Prediction(id=i, text=tokenizer.decode([i]), prob=p if math.isfinite(p) else None)
            for i, p in zip(ids, row_probs, strict=True)
        )
        for ids, row_probs in zip(ranked, chosen, strict=True)
    )


def compute_lens(
    loaded: LoadedModel,
    text: str,
    *,
    layers: str | Sequence[int] | None = None,
    top_k: int = 1,
) -> LensResult:
    """Run ``text`` once and read every selected layer's output through the model's head.

    ``layers`` is a layer spec (``0``, ``3-7``, ``-1``, ``all``) or indices; None is all.
    """
    model = loaded.model
    vocab_size = int(model.config.vocab_size)
    check_top_k(top_k, vocab_size)
    if layers is None:
        chosen = list(range(loaded.num_layers))
    elif isinstance(layers, str):
        chosen = parse_layers(layers, loaded.num_layers)
    else:
        chosen = parse_layers(",".join(str(i) for i in layers), loaded.num_layers)
    tokens = encode(loaded, text)
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([[t.id for t in tokens]], dtype=torch.long, device=device)

    hidden: dict[int, torch.Tensor] = {}

    def keep(_sentence: int, name: str, _call: int, tensor: torch.Tensor) -> None:
        hidden[int(name[len(LAYERS_PREFIX) :])] = tensor

    names = [f"{LAYERS_PREFIX}{i}" for i in chosen]
    with torch.inference_mode():
        with capture(model, names, stats=False, sink=keep) as cap:
            cap.begin(None)
            output = model(input_ids=input_ids, use_cache=False)
        lens_layers = tuple(
            LensLayer(
                layer=i,
                predictions=_predictions(
                    project_hidden(model, hidden[i])[0], top_k, loaded.tokenizer
                ),
            )
            for i in chosen
        )
        final = _predictions(output.logits[0], top_k, loaded.tokenizer)
    return LensResult(
        **loaded.describe(),
        text=text,
        tokens=tuple(tokens),
        top_k=top_k,
        layers=lens_layers,
        output=final,
    )
