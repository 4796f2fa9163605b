"""Tensor -> summary statistics, reduced on the tensor's own device with no host sync.

Work is split in two steps so that the hook of each module stays cheap:

1. ``token_partials`` reduces a [batch, tokens, features] output over its
   features only, giving a small [batch, tokens, 8] float64 tensor of partial
   results per token (see PARTIALS). This is the only full pass over the data.
2. ``combine_partials`` merges the partials of many modules at once over each
   sentence's real tokens (padding excluded), giving the statistics in
   STAT_NAMES order. It runs once per batch, not once per module.

mean, std (population), min, max, absmax and rms are over the finite elements
and are NaN (undefined) when there are none; zeros is the fraction of elements
exactly zero; nan and inf are counts. Elements are read in float32 (float16
and bfloat16 widen to it exactly); partials are combined in float64. Where
a one-pass kernel applies (C++ on the CPU, Triton on CUDA; see ``fused``),
step 1 is its single read; the torch code here is the reference and the fallback.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch

from ..results.records import STAT_NAMES, TensorStats
from .fused import one_pass_partials, pooled_statistics, switched_off

__all__ = [
    "PARTIALS",
    "STAT_NAMES",
    "OncePerTensor",
    "Scratch",
    "TokenPartials",
    "combine_partials",
    "empty_partial",
    "exact_partials",
    "expand_partials",
    "finalize_partials",
    "finalize_stats",
    "merge_partials",
    "pool_partials",
    "summarize_batch",
    "summarize_tensor",
    "token_partials",
]

#: Channels of a token's partial results, all float64. m2 is the sum of squared
#: deviations from the token's own mean, so variances combine without cancellation.
PARTIALS = ("sum", "m2", "min", "max", "zeros", "elements", "finite", "nan")


#: Outputs up to this many elements are centred directly: cheaper than the checks.
_CENTRE_BELOW = 1 << 17
#: Below this share of the sum of squares, float32 cannot resolve the deviations.
_CANCELLATION = 1e-3


class Scratch:
    """Reusable buffers, so the per-token passes allocate little per module."""

    def __init__(self) -> None:
        self._buffers: dict[torch.device, torch.Tensor] = {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        buffer = self._buffers.get(x.device)
        if buffer is None or buffer.numel() < x.numel():
            buffer = torch.empty(x.numel(), dtype=torch.float32, device=x.device)
            self._buffers[x.device] = buffer
        return buffer[: x.numel()].view(x.shape)


class TokenPartials(NamedTuple):
    """One output's per-token partial results, before they are merged over tokens.

    ``values`` is either the fast form, float32 [B, T, 5] (sum, root of the
    squared deviations from the token mean, min, max, root of the nonzero
    count), or the exact form, float64 [B, T, len(PARTIALS)].
    """

    values: torch.Tensor
    features: int
    exact: bool


def token_partials(
    values: torch.Tensor, scratch: Scratch | None = None, one_pass: bool | None = None
) -> TokenPartials:
    """Reduce ``values`` [B, T, F] over F.

    ``one_pass`` is False to force the eager path, None to read OPTINSPECT_STATS.

    A kernel of ``fused`` computes the exact form in one pass where it can (C++
    on the CPU when it is built, Triton on CUDA when Triton is present, and
    OPTINSPECT_STATS is not ``eager``). Otherwise, the eager path: on the CPU a
    fast path uses float32 reductions over a reused buffer and checks on the
    host, at no cost there, that every token came out finite; a token holding
    NaN or Inf (or a float32 overflow) sends the tensor down the exact path,
    which masks non-finite elements and works in float64. Other devices (CUDA
    without Triton) take the exact path, which needs no host synchronisation.
    """
    x = values.detach() if values.requires_grad else values  # hooks run under inference_mode
    batch, tokens, features = x.shape
    if x.numel() == 0:
        return TokenPartials(_empty_partials(batch, tokens, x.device), features, True)
    kernel = one_pass_partials(x, one_pass)
    if kernel is not None:
        return TokenPartials(kernel, features, True)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if x.device.type == "cpu":
        fast = _fast_partials(x, scratch or Scratch())
        if fast is not None:
            return TokenPartials(fast, features, False)
    return TokenPartials(_exact_partials(x), features, True)


class OncePerTensor:
    """``token_partials`` for the outputs of one forward pass, each tensor reduced once.

    A parent that returns its child's very tensor (``self_attn`` returns
    ``out_proj``'s output, the decoder its final norm's, the model its head's
    logits) gets the child's partials. A weak reference proves the tensor is the
    same object, not a new one at a reused address, and keeps nothing alive.
    OPTINSPECT_STATS is read once, here, not on every module call; ``clear()``
    starts the next forward pass.
    """

    def __init__(self) -> None:
        self._scratch = Scratch()
        self._one_pass = not switched_off()
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], TokenPartials]] = {}

    def of(self, tensor: torch.Tensor, view: torch.Tensor) -> TokenPartials:
        """The partials of ``view`` [B, T, F], a view of the module output ``tensor``."""
        seen = self._seen.get(id(tensor))
        if seen is not None and seen[0]() is tensor and seen[1].values.shape[:2] == view.shape[:2]:
            return seen[1]
        partials = token_partials(view, self._scratch, self._one_pass)
        self._seen[id(tensor)] = (weakref.ref(tensor), partials)
        return partials

    def clear(self) -> None:
        self._seen.clear()


def expand_partials(heads: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Fast-form partials [..., B, T, 5] (float32) -> exact form [..., B, T, 8] (float64).

    ``features`` holds each output's F, broadcastable to [..., B, T]. Done once
    for many modules, so the hooks stay at a few reductions each.
    """
    h = heads.to(torch.float64)
    count = features.to(torch.float64).expand(h.shape[:-1])
    return torch.stack(
        [
            h[..., 0],
            h[..., 1].square(),
            h[..., 2],
            h[..., 3],
            count - h[..., 4].square().round(),  # a sign's norm is sqrt(nonzero count)
            count,
            count,
            torch.zeros_like(count),
        ],
        dim=-1,
    )


def _fast_partials(x: torch.Tensor, scratch: Scratch) -> torch.Tensor | None:
    features = x.shape[2]
    total = x.sum(dim=2)
    buffer = scratch.like(x)
    if x.numel() <= _CENTRE_BELOW:
        m2_root = torch.linalg.vector_norm(
            torch.sub(x, (total / features)[:, :, None], out=buffer), dim=2
        )
    else:
        # Large outputs skip the centring pass: the squared deviations come from
        # the sum of squares, unless they are too small a part of it to survive
        # float32 rounding (a near-constant token), which is then centred.
        square = torch.linalg.vector_norm(x, dim=2).square()
        m2 = square - total.square() / features
        if bool((m2 < _CANCELLATION * square).any()):
            centred = torch.sub(x, (total / features)[:, :, None], out=buffer)
            m2_root = torch.linalg.vector_norm(centred, dim=2)
        else:
            m2_root = m2.sqrt()
    head = torch.stack(
        [
            total,
            m2_root,
            x.amin(dim=2),
            x.amax(dim=2),
            torch.linalg.vector_norm(torch.sign(x, out=buffer), dim=2),
        ],
        dim=2,
    )
    # A finite total of every token's sums, norms and extremes means no NaN or
    # Inf anywhere and no float32 overflow; otherwise the exact path decides.
    if not math.isfinite(float(head.sum())):
        return None
    return head


def _exact_partials(x: torch.Tensor) -> torch.Tensor:
    features = x.shape[2]
    finite = torch.isfinite(x)
    n_finite = finite.sum(dim=2).to(torch.float64)
    clean = torch.where(finite, x, 0.0)
    total = clean.sum(dim=2, dtype=torch.float64)
    token_mean = torch.where(n_finite > 0, total / n_finite.clamp(min=1), 0.0)
    deviation = torch.where(finite, x.to(torch.float64) - token_mean[:, :, None], 0.0)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    count = torch.full(x.shape[:2], float(features), dtype=torch.float64, device=x.device)
    return torch.stack(
        [
            total,
            torch.linalg.vector_norm(deviation, dim=2).square(),
            torch.where(finite, x, inf).amin(dim=2).to(torch.float64),
            torch.where(finite, x, -inf).amax(dim=2).to(torch.float64),
            (x == 0).sum(dim=2).to(torch.float64),
            count,
            n_finite,
            torch.isnan(x).sum(dim=2).to(torch.float64),
        ],
        dim=2,
    )


#: The partial of no elements: pooling it with another changes nothing.
_EMPTY_PARTIAL = (0.0, 0.0, float("inf"), float("-inf"), 0.0, 0.0, 0.0, 0.0)


def empty_partial(device: torch.device | str = "cpu") -> torch.Tensor:
    """The [len(PARTIALS)] float64 partial of no elements, where a running pool starts."""
    return torch.tensor(_EMPTY_PARTIAL, dtype=torch.float64, device=device)


def _empty_partials(batch: int, tokens: int, device: torch.device) -> torch.Tensor:
    # A zero-token tensor still gets one (empty) row, so every reduction has something to reduce.
    rows = max(tokens, 1)
    partials = torch.zeros(batch, rows, len(PARTIALS), dtype=torch.float64, device=device)
    partials[..., 2] = float("inf")
    partials[..., 3] = float("-inf")
    return partials


def pool_partials(partials: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Merge [..., N, len(PARTIALS)] partials over N into one partial each: [..., len(PARTIALS)].

    The result is itself a partial (of the union of the N groups), so pooling is
    exact and can repeat: batch by batch, or rank by rank. ``valid`` [..., N]
    (broadcastable) marks the groups to keep; the rest (padding) are left out.
    """
    p = partials
    if valid is not None:
        keep = valid.to(device=p.device, dtype=torch.bool)
        fill = torch.tensor(_EMPTY_PARTIAL, dtype=p.dtype, device=p.device)
        p = torch.where(keep[..., None], p, fill)
    total, _, _, _, zeros, elements, finite, nan = p.sum(dim=-2).unbind(-1)
    lo = p[..., 2].amin(dim=-1)
    hi = p[..., 3].amax(dim=-1)
    mean = total / finite.clamp(min=1)
    # Chan et al.'s parallel variance: within-group deviations plus the spread of
    # the group means around the overall mean.
    group_finite = p[..., 6]
    group_mean = torch.where(group_finite > 0, p[..., 0] / group_finite.clamp(min=1), 0.0)
    spread = group_finite * (group_mean - mean[..., None]).square()
    m2 = p[..., 1].sum(dim=-1) + spread.sum(dim=-1)
    return torch.stack([total, m2, lo, hi, zeros, elements, finite, nan], dim=-1)


def finalize_partials(pooled: torch.Tensor) -> torch.Tensor:
    """Pooled partials [..., len(PARTIALS)] -> statistics [..., len(STAT_NAMES)]."""
    total, m2, lo, hi, zeros, elements, finite, nan = pooled.unbind(-1)
    mean = total / finite
    variance = m2 / finite
    std = torch.sqrt(variance)
    rms = torch.sqrt(variance + mean * mean)
    none_finite = finite == 0
    lo = torch.where(none_finite, torch.nan, lo)
    hi = torch.where(none_finite, torch.nan, hi)
    return torch.stack(
        [
            mean,
            std,
            lo,
            hi,
            torch.maximum(lo.abs(), hi.abs()),
            rms,
            zeros / elements,
            nan,
            elements - finite - nan,
        ],
        dim=-1,
    )


def combine_partials(partials: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Merge [..., B, T, len(PARTIALS)] partials over T into [..., B, len(STAT_NAMES)].

    ``valid`` [B, T] marks real tokens; padding positions are left out. On the
    CPU the compiled library does both steps in one call where it is built
    (``fused.pooled_statistics``); these torch steps are the reference.
    """
    pooled = pooled_statistics(partials, valid)
    if pooled is not None:
        return pooled
    return finalize_partials(pool_partials(partials, valid))


def exact_partials(partials: list[TokenPartials]) -> torch.Tensor:
    """Same-shaped [B, T] partials in the exact form, stacked: [len(partials), B, T, 8]."""
    fast = [i for i, p in enumerate(partials) if not p.exact]
    exact = [i for i, p in enumerate(partials) if p.exact]
    full: list[torch.Tensor | None] = [None] * len(partials)
    if fast:
        heads = torch.stack([partials[i].values for i in fast])
        features = torch.tensor([partials[i].features for i in fast], device=heads.device)
        for i, expanded in zip(fast, expand_partials(heads, features[:, None, None]), strict=True):
            full[i] = expanded
    for i in exact:
        full[i] = partials[i].values
    return torch.stack(full)  # type: ignore[arg-type]


def merge_partials(
    partials: list[TokenPartials], valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Statistics [len(partials), B, 9] of same-shaped [B, T] partials, over ``valid`` tokens."""
    return combine_partials(exact_partials(partials), valid)


def summarize_batch(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Statistics of ``values`` [B, T, F] per sentence b, over its ``valid`` tokens: [B, 9]."""
    return merge_partials([token_partials(values)], valid)[0]


def summarize_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Reduce a whole tensor of any shape to a float64 vector in STAT_NAMES order."""
    if tensor.numel() == 0:
        rows = tensor.reshape(1, 0, 1)
    elif tensor.dim() == 0:
        rows = tensor.reshape(1, 1, 1)
    else:
        rows = tensor.reshape(1, -1, tensor.shape[-1])
    return summarize_batch(rows)[0]


def finalize_stats(matrices: list[torch.Tensor]) -> list[TensorStats]:
    """Rows of many [k, 9] (or [9]) statistic tensors; one host transfer per device."""
    if not matrices:
        return []
    flat = [m.reshape(-1, len(STAT_NAMES)) for m in matrices]
    by_device: dict[torch.device, list[int]] = {}
    for i, m in enumerate(flat):
        by_device.setdefault(m.device, []).append(i)
    host: list[list[list[float]]] = [[] for _ in flat]
    for indices in by_device.values():
        rows = torch.cat([flat[i] for i in indices]).cpu().tolist()
        start = 0
        for i in indices:
            host[i] = rows[start : start + flat[i].shape[0]]
            start += flat[i].shape[0]
    return [TensorStats.from_values(row) for rows in host for row in rows]
