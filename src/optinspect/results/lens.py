"""The logit lens's records: each layer's top-k predictions at every position of a sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import SCHEMA_VERSION, DescribesModel, ModelInfo, Token

__all__ = ["LensLayer", "LensResult", "Prediction", "Ranked"]


@dataclass(frozen=True)
class Prediction:
    """One candidate next token; ``bytes`` as in ``Token`` (a piece of a character)."""

    id: int
    text: str
    prob: float | None
    bytes: str | None = None

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"id": self.id, "text": self.text, "prob": self.prob}
        if self.bytes is not None:
            values["bytes"] = self.bytes
        return values


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
class LensResult(DescribesModel):
    """The logit lens of one sentence: selected layers, plus the model's own output."""

    info: ModelInfo
    text: str
    tokens: tuple[Token, ...]
    top_k: int
    layers: tuple[LensLayer, ...]
    output: tuple[Ranked, ...]  # from the model's real logits, one entry per position
    index: int = 0  # the sentence's position in the input

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "index": self.index,
            **self.info.as_dict(),
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "top_k": self.top_k,
            "layers": [layer.as_dict() for layer in self.layers],
            "output": [[p.as_dict() for p in ranked] for ranked in self.output],
        }
