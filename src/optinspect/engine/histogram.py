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
    mins = partials.values[..., 2].to(torch.float64)  # per token
    maxs = partials.values[..., 3].to(torch.float64)
    keep = torch.isfinite(x)
    if valid is not None:
        on = valid.to(device=x.device, dtype=torch.bool)
        keep = keep & on[:, :, None]
        mins = mins.masked_fill(~on, float("inf"))  # padding: no extreme of its own
        maxs = maxs.masked_fill(~on, float("-inf"))
    lo = mins.amin() if mins.numel() else torch.zeros((), device=x.device)
    hi = maxs.amax() if maxs.numel() else torch.zeros((), device=x.device)
    # The scale in float64, then float32: a range below 1e-37 gives inf (and x - lo,
    # above 3e38, gives inf); bins come from the product's sign, NaN (0 x inf) is bin 0.
    scale = torch.where(hi > lo, bins / (hi - lo), torch.ones_like(hi)).to(torch.float32)
    low = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo)).to(torch.float32)
    index = ((x - low) * scale).floor_().nan_to_num_(nan=0.0, posinf=bins - 1, neginf=0.0)
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
