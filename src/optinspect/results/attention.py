"""The attention records: one layer's weights for one sentence and each head's summary.

Entropy and sink mass are defined in ``optinspect.analyses.attention``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import SCHEMA_VERSION, DescribesModel, ModelInfo, Token

__all__ = ["AttentionResult", "HeadMaps", "HeadSummary", "Matrix"]

Matrix = tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class HeadSummary:
    """Entropy (nats) and sink mass of one head, as defined in ``optinspect.analyses.attention``."""

    head: int
    entropy: float | None
    sink: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"head": self.head, "entropy": self.entropy, "sink": self.sink}


@dataclass(frozen=True)
class HeadMaps:
    """Entropy and sink mass of every head of every layer (``entropy[layer][head]``), as
    ``HeadSummary`` defines them, for one sentence; ``uniform_entropy`` as in
    ``AttentionResult``."""

    entropy: Matrix
    sink: Matrix
    uniform_entropy: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "entropy": [list(row) for row in self.entropy],
            "sink": [list(row) for row in self.sink],
            "uniform_entropy": self.uniform_entropy,
        }


@dataclass(frozen=True)
class AttentionResult(DescribesModel):
    """One layer's attention for one sentence: the shown matrix and every head's summary.

    ``weights[i][j]`` is the weight query position i gives key position j; it
    is one head's (``head``) or the mean over the layer's heads (``head`` None).
    """

    info: ModelInfo
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
            "schema": SCHEMA_VERSION,
            **self.info.as_dict(),
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "layer": self.layer,
            "head": self.head,
            "num_heads": self.num_heads,
            "weights": [list(row) for row in self.weights],
            "heads": [h.as_dict() for h in self.heads],
            "uniform_entropy": self.uniform_entropy,
        }
