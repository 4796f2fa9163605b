"""Histograms of module outputs, binned on the device between the output's own extremes.

    counts = output_histogram(view, partials, valid, bins=64)   # in a forward hook
    rows = fetch_histograms([counts, ...])                     # once per batch

The range of each output is the minimum and maximum its statistics' per-token partials
already hold (``engine.stats``), reduced over the real tokens on the device, so binning
costs no host synchronisation. Bins are equal-width over [lo, hi]: element x goes to bin
floor((x - lo) / (hi - lo) * bins), and x = hi to the last bin, as ``torch.histc`` does.
NaN, Inf and padding positions are left out; when hi == lo every element is in bin 0.
Values are read in float32. Everything comes to the host in one transfer per batch.
"""

from __future__ import annotations

import torch

from ..results.records import Histogram
from .stats import TokenPartials

__all__ = ["DEFAULT_BINS", "fetch_histograms", "output_histogram"]

#: Bins of a report's histograms.
DEFAULT_BINS = 64


def output_histogram(
    view: torch.Tensor, partials: TokenPartials, valid: torch.Tensor | None, bins: int
) -> torch.Tensor:
    """[lo, hi, count of bin 0, ..., count of bin bins-1] of ``view`` [B, T, F], float64,
    on its device; ``valid`` [B, T] marks the real tokens (None: all are)."""
    x = view.detach()
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    extremes = partials.values[..., 2:4].to(torch.float64)  # min, max per token
    keep = torch.isfinite(x)
    if valid is not None:
        on = valid.to(device=x.device, dtype=torch.bool)
        keep = keep & on[:, :, None]
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
        extremes = torch.where(on[:, :, None], extremes, torch.stack([inf, -inf]))
    lo = extremes[..., 0].amin() if extremes.numel() else torch.zeros((), device=x.device)
    hi = extremes[..., 1].amax() if extremes.numel() else torch.zeros((), device=x.device)
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi)).to(torch.float32)
    low = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo)).to(torch.float32)
    index = ((x - low) * (bins / width)).floor_()
    index = torch.where(keep, index, 0.0).clamp_(0, bins - 1).to(torch.int64)
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    counts.scatter_add_(0, index.reshape(-1), keep.reshape(-1).to(torch.int64))
    return torch.cat([torch.stack([lo, hi]), counts.to(torch.float64)])


def fetch_histograms(rows: list[torch.Tensor]) -> list[Histogram]:
    """``output_histogram`` rows as records, brought to the host in one transfer."""
    if not rows:
        return []
    # Gather on one device first (device-to-device copies): the host waits once.
    host = torch.stack([row.to(rows[0].device) for row in rows]).cpu().tolist()
    return [Histogram.of(row[0], row[1], row[2:]) for row in host]
