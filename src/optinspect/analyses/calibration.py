"""Percentiles read from the |x| histograms that ``optinspect.analyses.calibrate`` collects, and
the percentiles it reports.

The calibration records (``CalibrationResult`` with its act_scales, act_shifts and
safetensors files, ``LinearInput``, ...) and the histogram layout live in
``optinspect.results.calibration``; they are re-exported here. ``optinspect.analyses.calibrate``
collects them; the histogram layout and its error bound are described there.
"""

from __future__ import annotations

import math

import torch

from ..results.calibration import (
    _SHIFT,
    CHANNEL_STATS,
    HIST_BINS,
    PERCENTILE_ERROR,
    CalibrationResult,
    CalibrationSettings,
    LinearInput,
    ModuleOutput,
)
from ..results.calibration import SUB_BITS as SUB_BITS

__all__ = [
    "CHANNEL_STATS",
    "HIST_BINS",
    "PERCENTILES",
    "PERCENTILE_ERROR",
    "CalibrationResult",
    "CalibrationSettings",
    "LinearInput",
    "ModuleOutput",
    "percentile_from_histogram",
]

#: The percentiles reported per linear input, by name.
PERCENTILES: dict[str, float] = {"p99": 0.99, "p99.9": 0.999, "p99.99": 0.9999}
_SIGN_OFF = 0x7FFFFFFF


def percentile_from_histogram(
    hist: torch.Tensor, q: float, elements: int, cap: float | None
) -> float | None:
    """The nearest-rank ``q`` quantile of |x| read from its histogram: the middle of the
    bin holding rank ceil(q * elements), capped at ``cap`` (the exact max |x|).

    None when there are no elements or the rank falls among Inf and NaN.
    """
    if elements <= 0:
        return None
    rank = max(1, math.ceil(q * elements))
    cumulative = hist.cumsum(0)
    index = int(torch.searchsorted(cumulative, torch.tensor(rank, dtype=cumulative.dtype)))
    edges = torch.tensor([index, index + 1], dtype=torch.int64).mul(1 << _SHIFT)
    low, high = edges.to(torch.int32).view(torch.float32).tolist()
    if not math.isfinite(low):
        return None
    middle = (low + high) / 2 if math.isfinite(high) else low
    return min(middle, cap) if cap is not None else middle
