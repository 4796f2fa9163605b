"""The feed-forward sparsity record: one layer's ReLU zeros and dead units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["LayerSparsity"]


@dataclass(frozen=True)
class LayerSparsity:
    """One layer's feed-forward sparsity over everything traced so far.

    zeros: fraction of ReLU outputs exactly zero; dead: units that were zero for
    every token seen (meaningful over many sentences); units: the FFN width.
    """

    layer: int
    zeros: float
    dead: int
    units: int
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "zeros": self.zeros,
            "dead": self.dead,
            "units": self.units,
            "tokens": self.tokens,
        }
