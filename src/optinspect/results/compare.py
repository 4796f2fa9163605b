"""The comparison records: every module call of one sentence under two settings, and
how far apart their outputs are. The metrics are defined in ``optinspect.analyses.compare``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import SCHEMA_VERSION, DescribesModel, ModelInfo, Token

__all__ = ["DEFAULT_TOLERANCE", "CompareResult", "ModuleDiff", "Setting"]

#: The relative error above which a module is marked (``compare --tolerance``).
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Setting:
    """How a model is loaded: quantization (8bit, 4bit, none) and dtype (may be auto)."""

    quant: str
    dtype: str

    def as_dict(self) -> dict[str, str]:
        return {"quant": self.quant, "dtype": self.dtype}


@dataclass(frozen=True)
class ModuleDiff:
    """One module call under both settings and how far apart its outputs are.

    ``status`` is ``compared``, or why there are no metrics: ``no tensor``
    (the module returned none), ``not in reference`` (the reference never
    made this call), ``shape mismatch``.
    """

    index: int
    name: str
    type: str
    reference_type: str | None
    layer: int | None
    call: int
    depth: int
    finished: int  # position in the order calls finished: a child before its parent
    shape: tuple[int, ...] | None
    status: str
    cosine: float | None
    rel_error: float | None
    max_abs_diff: float | None
    exceeds: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "reference_type": self.reference_type,
            "layer": self.layer,
            "call": self.call,
            "shape": list(self.shape) if self.shape is not None else None,
            "status": self.status,
            "cosine": self.cosine,
            "rel_error": self.rel_error,
            "max_abs_diff": self.max_abs_diff,
            "exceeds": self.exceeds,
        }


@dataclass(frozen=True)
class CompareResult(DescribesModel):
    """Every selected module call of one sentence, compared across two settings.

    ``info`` describes the compared setting's model; ``setting`` and
    ``reference`` say how each run was loaded.
    """

    info: ModelInfo
    text: str
    tokens: tuple[Token, ...]
    setting: Setting  # resolved: dtype is never auto
    reference: Setting
    tolerance: float
    modules: tuple[ModuleDiff, ...]
    index: int = 0  # the sentence's position in the input

    @property
    def first_exceeding(self) -> ModuleDiff | None:
        """The earliest module call to *finish* whose error exceeds the tolerance.

        Finishing order, not start order, so when a layer and its fc1 both
        exceed it, fc1 is named rather than the layer that contains it.
        """
        return min((m for m in self.modules if m.exceeds), key=lambda m: m.finished, default=None)

    def as_dict(self) -> dict[str, Any]:
        first = self.first_exceeding
        return {
            "schema": SCHEMA_VERSION,
            "index": self.index,
            "model": self.model,
            "device": self.device,
            "random_weights": self.random_weights,
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "setting": self.setting.as_dict(),
            "reference": self.reference.as_dict(),
            "tolerance": self.tolerance,
            "first_exceeding": first.name if first is not None else None,
            "modules": [m.as_dict() for m in self.modules],
        }
