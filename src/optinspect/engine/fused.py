"""The one-pass statistics kernels: compiled C++ on the CPU, Triton on CUDA.

``one_pass_partials`` is the statistics' single entry point: it picks the
kernel for the tensor's device, or returns None for the eager torch path.
On the CPU, ``_fused_stats.cpp`` (loaded with ctypes when it was built)
computes a [B, T, F] output's exact-form per-token partials (stats.PARTIALS)
in a single read of the data, where the eager torch path needs several
passes. It is optional: setup.py builds it when a C++ compiler is present,
and ``fused_partials`` returns None wherever it cannot run (no library, not a
CPU tensor, a dtype it does not read, or ``OPTINSPECT_STATS=eager``), so the
caller falls back to the eager path.
On CUDA, ``fused_triton`` does the same single pass (when Triton is present).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path

import torch

from .fused_triton import triton_partials

__all__ = [
    "available",
    "fused_partials",
    "library_path",
    "one_pass_partials",
    "pooled_statistics",
    "switched_off",
]

#: Set to "eager" to force the eager torch statistics even where the kernel is built.
ENV = "OPTINSPECT_STATS"

_ABI = 2
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_NAME = "_fused_stats"
_PARTIALS = 8  # len(stats.PARTIALS); the kernel's output layout

_library: ctypes.CDLL | None = None
_loaded = False


def library_path() -> Path | None:
    """The built shared object next to this module, or None when it was not built."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"{_NAME}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load() -> ctypes.CDLL | None:
    """Load the kernel once per process; None when it is absent or of another ABI."""
    global _library, _loaded
    if _loaded:
        return _library
    _loaded = True
    path = library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        if lib.optinspect_fused_abi() != _ABI:
            return None
    except (OSError, AttributeError):
        return None  # a stale or foreign build: the eager path is always correct
    fn = lib.optinspect_token_partials
    fn.restype = ctypes.c_int
    fn.argtypes = [
        ctypes.c_void_p,  # data
        ctypes.c_int,  # dtype code
        ctypes.c_int64,  # batch
        ctypes.c_int64,  # tokens
        ctypes.c_int64,  # features
        ctypes.c_int64,  # batch stride, in elements
        ctypes.c_int64,  # token stride, in elements
        ctypes.c_void_p,  # out: [batch * tokens, 8] float64
        ctypes.c_int,  # threads
    ]
    pool = lib.optinspect_pool_finalize
    pool.restype = None
    pool.argtypes = [
        ctypes.c_void_p,  # partials: [groups, batch, tokens, 8] float64
        ctypes.c_int64,  # groups
        ctypes.c_int64,  # batch
        ctypes.c_int64,  # tokens
        ctypes.c_void_p,  # valid: [batch, tokens] uint8, or NULL
        ctypes.c_void_p,  # out: [groups, batch, 9] float64
    ]
    _library = lib
    return lib


def switched_off() -> bool:
    """True when ``OPTINSPECT_STATS=eager`` asks for the eager torch statistics everywhere."""
    return os.environ.get(ENV, "").lower() == "eager"


def available() -> bool:
    """True when the C++ kernel is built, loadable and not switched off by OPTINSPECT_STATS."""
    return not switched_off() and _load() is not None


def fused_partials(x: torch.Tensor) -> torch.Tensor | None:
    """Exact-form partials [B, T, 8] float64 of a non-empty [B, T, F] CPU tensor, or None.

    Equal to the eager exact path up to float64 rounding (min, max and counts
    exactly). None means "use the eager path": the kernel is not available, or
    ``x`` is not a float32/float16/bfloat16 tensor on the CPU. A last dimension
    with a stride other than 1 is copied first (rare; still one pass cheaper
    than eager).
    """
    if switched_off():
        return None
    return _cpu_partials(x)


def _cpu_partials(x: torch.Tensor) -> torch.Tensor | None:
    # Called for every module output: kept to the fewest Python steps (a trace's
    # hooks run between large matrix products, with the interpreter's caches cold).
    lib = _library if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if lib is None or code is None or not x.is_cpu:
        return None
    batch, tokens, features = x.shape
    stride_batch, stride_token, stride_feature = x.stride()
    if stride_feature != 1 and features > 1:
        x = x.contiguous()
        stride_batch, stride_token, _ = x.stride()
    out = torch.empty(batch, tokens, _PARTIALS, dtype=torch.float64)
    status = lib.optinspect_token_partials(
        x.data_ptr(),
        code,
        batch,
        tokens,
        features,
        stride_batch,
        stride_token,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    return out if status == 0 else None


def one_pass_partials(x: torch.Tensor, enabled: bool | None = None) -> torch.Tensor | None:
    """Exact-form partials [B, T, 8] of a non-empty [B, T, F] tensor in one read, or None.

    The C++ kernel for CPU tensors, the Triton kernel for CUDA tensors; None
    (use the eager path) where neither applies. ``enabled`` is
    ``not switched_off()``, read here when not given: a capture decides it once
    rather than on each of its hundreds of calls.
    """
    if enabled is None:
        enabled = not switched_off()
    if not enabled:
        return None
    if x.is_cpu:
        return _cpu_partials(x)
    if x.is_cuda:
        return triton_partials(x)
    return None


def pooled_statistics(
    partials: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``stats.combine_partials`` in one C call, for float64 CPU partials; else None.

    partials [..., B, T, 8] -> statistics [..., B, 9], pooled over the tokens
    that ``valid`` [B, T] marks (all when None). None means "use the torch
    path": the library is absent, OPTINSPECT_STATS=eager, or the input is not
    of that form.
    """
    lib = _library if _loaded else _load()
    if lib is None or not partials.is_cpu or partials.dtype != torch.float64:
        return None
    if partials.dim() < 3 or partials.shape[-1] != _PARTIALS or switched_off():
        return None
    *lead, batch, tokens, _ = partials.shape
    if tokens == 0 or (valid is not None and tuple(valid.shape) != (batch, tokens)):
        return None
    groups = 1
    for size in lead:
        groups *= size
    p = partials.contiguous()
    keep = None if valid is None else valid.to(device="cpu", dtype=torch.uint8).contiguous()
    out = torch.empty(*lead, batch, 9, dtype=torch.float64)
    lib.optinspect_pool_finalize(
        p.data_ptr(),
        groups,
        batch,
        tokens,
        None if keep is None else keep.data_ptr(),
        out.data_ptr(),
    )
    return out
