"""The report's record: every analysis of one sentence from one forward pass, with the
parameter count, per-module histograms and the series across depth a page charts.

``ReportResult.as_dict()`` holds, under each analysis's key, exactly what that command's
``--format json`` prints for the same input (``trace`` with its ``ffn`` summary,
``params``, ``outliers``, ``attention``, ``lens``, and ``compare`` when asked for);
``sparsity`` is trace's ``ffn`` list; ``histograms`` and ``series`` are the report's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .attention import AttentionResult, HeadMaps
from .compare import CompareResult
from .lens import LensResult
from .outliers import OutlierResult
from .params import ParamsResult
from .records import SCHEMA_VERSION, DescribesModel, Histogram, ModelInfo
from .sparsity import LayerSparsity
from .trace import TraceResult

__all__ = [
    "DEFAULT_ROLE",
    "DEFAULT_TOP_K",
    "SERIES_STATS",
    "DepthSeries",
    "ReportResult",
    "histogram_key",
]

#: The module inside each decoder layer whose outputs ``--role`` charts by default.
DEFAULT_ROLE = "fc1"
#: The lens's predictions per position: the page's tooltip shows five.
DEFAULT_TOP_K = 5
#: The statistics a depth series follows.
SERIES_STATS = ("mean", "std", "absmax")


def histogram_key(name: str, call: int) -> str:
    """A histogram's key: the module's dotted name, ``name#call`` for a later call."""
    return name if call == 0 else f"{name}#{call}"


@dataclass(frozen=True)
class DepthSeries:
    """One module's output statistics layer by layer: the decoder layer's own output
    (``role`` None) or that of the module ``role`` inside each layer (``fc1``).

    Each of mean, std and absmax has one value per entry of ``layers``, None where the
    statistic is undefined (no finite element); layers whose module was not traced are
    left out.
    """

    role: str | None
    layers: tuple[int, ...]
    mean: tuple[float | None, ...]
    std: tuple[float | None, ...]
    absmax: tuple[float | None, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "layers": list(self.layers),
            "mean": list(self.mean),
            "std": list(self.std),
            "absmax": list(self.absmax),
        }


@dataclass(frozen=True)
class ReportResult(DescribesModel):
    """Everything ``optinspect report`` shows of one sentence."""

    info: ModelInfo
    trace: TraceResult
    #: None for a model without a ReLU FFN, as trace's ``ffn``.
    sparsity: tuple[LayerSparsity, ...] | None
    params: ParamsResult
    outliers: OutlierResult
    attention: AttentionResult
    heads: HeadMaps
    lens: LensResult
    #: The trace's modules' histograms by ``histogram_key``, in execution order.
    histograms: dict[str, Histogram]
    #: Each decoder layer's output across depth, and the chosen role's (``--role``).
    layer_series: DepthSeries
    role_series: DepthSeries
    compare: CompareResult | None = None

    @property
    def text(self) -> str | None:
        return self.trace.text

    def as_dict(self) -> dict[str, Any]:
        """The ``--format json`` document (see the module docstring)."""
        ffn = None if self.sparsity is None else [row.as_dict() for row in self.sparsity]
        document: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            **self.info.as_dict(),
            "text": self.text,
            "trace": {**self.trace.as_dict(), "ffn": ffn},
            "params": self.params.as_dict(),
            "outliers": self.outliers.as_dict(),
            "attention": self.attention.as_dict(),
            "heads": self.heads.as_dict(),
            "lens": self.lens.as_dict(),
            "sparsity": ffn,
            "histograms": {key: h.as_dict() for key, h in self.histograms.items()},
            "series": {
                "layers": self.layer_series.as_dict(),
                "role": self.role_series.as_dict(),
            },
        }
        if self.compare is not None:
            document["compare"] = self.compare.as_dict()
        return document
