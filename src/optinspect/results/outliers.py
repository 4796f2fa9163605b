"""The outlier-feature records: per linear-layer input, the dimensions that reached the
LLM.int8 threshold, and the dimensions that recur across layers.

The threshold and both recurrence criteria are described in ``optinspect.analyses.outliers``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .records import SCHEMA_VERSION, DescribesModel, ModelInfo

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_LAYER_FRACTION",
    "MIN_TOKEN_FRACTION",
    "DimCount",
    "ModuleOutliers",
    "OutlierResult",
    "RecurringDim",
]

#: LLM.int8's outlier threshold: |x| at or above it (``outliers --threshold``).
DEFAULT_THRESHOLD = 6.0
MIN_LAYER_FRACTION = 0.25
MIN_TOKEN_FRACTION = 0.06


@dataclass(frozen=True)
class DimCount:
    """One input dimension of one module that reached the threshold."""

    dim: int
    count: int  # token positions where |x| reached the threshold
    fraction: float  # count / the module's tokens
    absmax: float | None  # largest |x| seen in this dimension; None when not finite


@dataclass(frozen=True)
class ModuleOutliers:
    """What one linear layer's input held, over every token of every sentence."""

    name: str
    type: str
    layer: int
    in_features: int
    threshold: float
    threshold_source: str  # "module" (its own LLM.int8 threshold) or "option" (--threshold)
    summary: bool  # its input counts toward the recurring dimensions
    tokens: int
    tokens_affected: int  # tokens where at least one dimension reached the threshold
    absmax: float | None  # largest |x| over all dimensions; None when not finite
    dims: tuple[DimCount, ...]  # dimensions that reached the threshold, by index

    @property
    def token_fraction(self) -> float | None:
        return self.tokens_affected / self.tokens if self.tokens else None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)  # dims become a list of dicts
        values["token_fraction"] = self.token_fraction
        values["dims"] = list(values["dims"])
        return values


@dataclass(frozen=True)
class RecurringDim:
    """A hidden dimension that meets both criteria in ``optinspect.analyses.outliers``."""

    dim: int
    layers: tuple[int, ...]
    layer_fraction: float
    token_fraction: float
    absmax: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}


@dataclass(frozen=True)
class OutlierResult(DescribesModel):
    """Outlier features of every decoder linear layer over many sentences."""

    info: ModelInfo
    threshold: float  # --threshold, for modules without their own
    num_layers: int
    sentences: int
    tokens: int
    modules: tuple[ModuleOutliers, ...]
    recurring: tuple[RecurringDim, ...]
    min_layer_fraction: float = MIN_LAYER_FRACTION
    min_token_fraction: float = MIN_TOKEN_FRACTION

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("info")
        criteria = {key: values.pop(key) for key in ("min_layer_fraction", "min_token_fraction")}
        return {
            "schema": SCHEMA_VERSION,
            **self.info.as_dict(),
            **values,
            "criteria": criteria,
            "modules": [m.as_dict() for m in self.modules],
            "recurring": [r.as_dict() for r in self.recurring],
        }
