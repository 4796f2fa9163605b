"""Tensor -> summary statistics, reduced on the tensor's own device with no host sync."""

from __future__ import annotations

import torch

from .records import STAT_NAMES, TensorStats

__all__ = ["STAT_NAMES", "finalize_stats", "summarize_batch", "summarize_tensor"]


def summarize_batch(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce ``values`` of shape [B, T, F] to a float64 [B, len(STAT_NAMES)] matrix.

    Row b summarizes ``values[b]`` over the token positions where ``valid[b]``
    (shape [B, T], bool) is true, so padding never enters a sentence's
    statistics. The work stays on the tensor's device and never calls
    ``.item()``: callers collect many results and move them to the host at once.
    Elements are read in float32; sums accumulate in float64. mean, std
    (population), min, max, absmax and rms are over finite elements and are
    NaN when there is none; zeros is a fraction, nan and inf are counts.
    """
    x = values.detach().to(torch.float32)
    batch, tokens, features = x.shape
    dims = (1, 2)
    if x.numel() == 0:
        undefined = torch.full((batch, 7), float("nan"), dtype=torch.float64, device=x.device)
        return torch.cat(
            [undefined, torch.zeros(batch, 2, dtype=torch.float64, device=x.device)], 1
        )

    finite = torch.isfinite(x)
    is_nan = torch.isnan(x)
    is_zero = x == 0
    if valid is None:
        count = torch.full((batch,), float(tokens * features), dtype=torch.float64, device=x.device)
    else:
        keep = valid.to(device=x.device, dtype=torch.bool)[:, :, None]
        finite = finite & keep
        is_nan = is_nan & keep
        is_zero = is_zero & keep
        count = keep.sum(dim=(1, 2), dtype=torch.float64) * features

    n_finite = finite.sum(dim=dims, dtype=torch.float64)
    n_nan = is_nan.sum(dim=dims, dtype=torch.float64)
    n_inf = count - n_finite - n_nan
    zeros = is_zero.sum(dim=dims, dtype=torch.float64) / count

    clean = torch.where(finite, x, 0.0)
    # Both sums read float32 and accumulate in float64, so neither overflows nor
    # loses the small terms; the variance comes from them without a centred pass.
    mean = clean.sum(dim=dims, dtype=torch.float64) / n_finite
    sum_sq = torch.linalg.vector_norm(clean, ord=2, dim=dims, dtype=torch.float64).square()
    mean_sq = sum_sq / n_finite
    std = torch.sqrt(torch.clamp(mean_sq - mean * mean, min=0.0))
    rms = torch.sqrt(mean_sq)

    inf = torch.tensor(float("inf"), dtype=torch.float32, device=x.device)
    lo = torch.where(finite, x, inf).amin(dim=dims).to(torch.float64)
    hi = torch.where(finite, x, -inf).amax(dim=dims).to(torch.float64)
    # With no finite value lo/hi stay at +/-inf; mark them undefined like the rest.
    none_finite = n_finite == 0
    lo = torch.where(none_finite, torch.nan, lo)
    hi = torch.where(none_finite, torch.nan, hi)
    absmax = torch.maximum(lo.abs(), hi.abs())
    return torch.stack([mean, std, lo, hi, absmax, rms, zeros, n_nan, n_inf], dim=1)


def summarize_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Reduce a whole tensor of any shape to a float64 vector in STAT_NAMES order."""
    return summarize_batch(tensor.reshape(1, 1, -1))[0]


def finalize_stats(vectors: list[torch.Tensor]) -> list[TensorStats]:
    """Move many statistic vectors to the host in one transfer per device."""
    if not vectors:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(vectors):
        by_device.setdefault(v.device, []).append(i)
    rows: list[list[float]] = [[] for _ in vectors]
    for indices in by_device.values():
        host = torch.stack([vectors[i] for i in indices]).cpu().tolist()
        for i, values in zip(indices, host, strict=True):
            rows[i] = values
    return [TensorStats.from_values(r) for r in rows]
