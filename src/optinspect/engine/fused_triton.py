"""The one-pass statistics kernel for CUDA tensors, written in Triton.

The same job as ``_fused_stats.cpp`` on the CPU: a [B, T, F] output's
exact-form per-token partials (stats.PARTIALS) in a single read of the data,
where the eager torch path runs about ten kernels per module output. One
Triton program reduces one token's row, block by block: each block's sum and
its squared deviations from its own mean come from registers, and blocks are
merged with Chan et al.'s pairwise update, in float64, as the C++ kernel does.
Nothing is synchronised with the host; the launch is asynchronous.

Triton comes with PyTorch's CUDA builds, so nothing is added to install it. It
is optional all the same: ``triton_partials`` returns None (the caller takes
the eager path) when Triton is absent, the tensor is not on a CUDA device,
its dtype is not float32/float16/bfloat16, or the kernel once failed to
compile or launch in this process (one logged warning says so).
``fused.one_pass_partials`` calls it, unless ``OPTINSPECT_STATS=eager``. With
``TRITON_INTERPRET=1``, Triton's interpreter runs the same kernel on CPU
tensors: that is how the tests check it on machines without a GPU.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

__all__ = ["block_size", "interpreting", "triton_partials"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PARTIALS = 8  # len(stats.PARTIALS); the kernel's output layout
_MIN_BLOCK = 16
_MAX_BLOCK = 1024

#: Set once the kernel failed in this process; every later call takes the eager path.
_broken: str | None = None


def interpreting() -> bool:
    """True when Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def block_size(features: int) -> int:
    """Elements a program reads per step: the row's width rounded up to a power of two, capped."""
    return min(_MAX_BLOCK, max(_MIN_BLOCK, 1 << max(features - 1, 0).bit_length()))


@functools.cache
def _kernel(interpret: bool) -> Any:
    """The jitted kernel, or None without Triton. Defined on first use, once per mode:
    Triton decides at decoration whether a kernel is compiled or interpreted."""
    del interpret  # only the cache key: triton.jit reads TRITON_INTERPRET itself
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def token_partials_kernel(
        x_ptr,
        out_ptr,
        tokens,
        features,
        stride_batch,
        stride_token,
        BLOCK: tl.constexpr,
        BF16_BITS: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        start = x_ptr + (row // tokens) * stride_batch + (row % tokens) * stride_token
        inf = float("inf")
        total = tl.full([], 0.0, tl.float64)
        m2 = tl.full([], 0.0, tl.float64)
        finite = tl.full([], 0.0, tl.float64)
        zeros = tl.full([], 0.0, tl.float64)
        nan = tl.full([], 0.0, tl.float64)
        lo = tl.full([], inf, tl.float32)
        hi = tl.full([], -inf, tl.float32)
        for offset in range(0, features, BLOCK):
            index = offset + tl.arange(0, BLOCK)
            inside = index < features
            if BF16_BITS:
                # bfloat16 read as its 16 bits: widened by a shift, exact for every
                # pattern (Triton's interpreter rounds bfloat16 subnormals to zero).
                bits = tl.load(start + index, mask=inside, other=0).to(tl.int32) & 0xFFFF
                v = (bits << 16).to(tl.float32, bitcast=True)
            else:
                v = tl.load(start + index, mask=inside, other=0.0).to(tl.float32)
            is_finite = inside & (tl.abs(v) < inf)  # NaN compares false
            clean = tl.where(is_finite, v, 0.0).to(tl.float64)
            block_n = tl.sum(is_finite.to(tl.float64), axis=0)
            block_sum = tl.sum(clean, axis=0)
            block_mean = block_sum / tl.maximum(block_n, 1.0)
            deviation = tl.where(is_finite, clean - block_mean, 0.0)
            block_m2 = tl.sum(deviation * deviation, axis=0)
            # Chan et al.: m2 = m2_a + m2_b + delta^2 * n_a * n_b / (n_a + n_b).
            merged = finite + block_n
            delta = block_mean - total / tl.maximum(finite, 1.0)
            m2 += block_m2 + delta * delta * (finite * block_n / tl.maximum(merged, 1.0))
            total += block_sum
            finite = merged
            lo = tl.minimum(lo, tl.min(tl.where(is_finite, v, inf), axis=0))
            hi = tl.maximum(hi, tl.max(tl.where(is_finite, v, -inf), axis=0))
            zeros += tl.sum((inside & (v == 0.0)).to(tl.float64), axis=0)
            nan += tl.sum((inside & (v != v)).to(tl.float64), axis=0)
        out = out_ptr + row * 8
        tl.store(out + 0, total)
        tl.store(out + 1, m2)
        tl.store(out + 2, lo.to(tl.float64))
        tl.store(out + 3, hi.to(tl.float64))
        tl.store(out + 4, zeros)
        tl.store(out + 5, total * 0.0 + features)  # float64 whether or not features is constexpr
        tl.store(out + 6, finite)
        tl.store(out + 7, nan)

    return token_partials_kernel


def triton_partials(x: torch.Tensor) -> torch.Tensor | None:
    """Exact-form partials [B, T, 8] float64 of a non-empty [B, T, F] tensor, or None.

    Equal to the eager exact path up to float64 rounding (min, max and counts
    exactly). None means "use the eager path" (see the module's docstring). A
    last dimension with a stride other than 1 is copied first.
    """
    global _broken
    if _broken is not None or x.dtype not in _DTYPES:
        return None
    interpret = interpreting()
    if x.device.type != ("cpu" if interpret else "cuda"):
        return None
    kernel = _kernel(interpret)
    if kernel is None:
        return None
    batch, tokens, features = x.shape
    if x.stride(2) != 1 and features > 1:
        x = x.contiguous()
    out = torch.empty(batch, tokens, _PARTIALS, dtype=torch.float64, device=x.device)
    try:
        if interpret:
            _launch(kernel, x, out)
        else:
            with torch.cuda.device(x.device):  # a sharded model's outputs sit on any GPU
                _launch(kernel, x, out)
    except Exception as error:  # a compiler or driver that cannot run it: eager is always right
        _broken = f"{type(error).__name__}: {error}".splitlines()[0]
        # One line on stderr (logging's last-resort handler, where nothing is configured).
        logging.getLogger(__name__).warning(
            "optinspect: the Triton statistics kernel failed (%s); "
            "the eager torch statistics are used instead",
            _broken,
        )
        return None
    return out


def _launch(kernel: Any, x: torch.Tensor, out: torch.Tensor) -> None:
    batch, tokens, features = x.shape
    bf16 = x.dtype == torch.bfloat16
    kernel[(batch * tokens,)](
        x.view(torch.int16) if bf16 else x,
        out,
        tokens,
        features,
        x.stride(0),
        x.stride(1),
        BLOCK=block_size(features),
        BF16_BITS=bf16,
    )
