"""Statistics against a plain torch float64 reference, including non-finite values and padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from optinspect.engine import fused
from optinspect.engine.stats import finalize_stats, summarize_batch, summarize_tensor
from optinspect.results.records import STAT_NAMES, TensorStats


@pytest.fixture(autouse=True, scope="module", params=["kernel", "eager"])
def statistics_path(request: pytest.FixtureRequest) -> object:
    """Every test runs on the compiled one-pass kernel (where built) and the eager path.

    Module-scoped, so Hypothesis tests may use it too.
    """
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "eager":
            mp.setenv(fused.ENV, "eager")
        else:
            mp.delenv(fused.ENV, raising=False)
            if not fused.available():
                pytest.skip("the compiled statistics kernel is not built")
        yield request.param


def reference(x: torch.Tensor) -> dict[str, float | int | None]:
    """The same statistics computed the obvious way, in float64, on the host."""
    flat = x.detach().reshape(-1).to(torch.float64)
    finite = flat[torch.isfinite(flat)]
    n = flat.numel()
    out: dict[str, float | int | None] = {
        "nan": int(torch.isnan(flat).sum()),
        "inf": int(torch.isinf(flat).sum()),
        "zeros": float((flat == 0).sum()) / n if n else None,
    }
    if finite.numel():
        out.update(
            mean=float(finite.mean()),
            std=float(finite.std(correction=0)),
            min=float(finite.min()),
            max=float(finite.max()),
            absmax=float(finite.abs().max()),
            rms=float(finite.pow(2).mean().sqrt()),
        )
    else:
        out.update(mean=None, std=None, min=None, max=None, absmax=None, rms=None)
    return out


def stats_of(x: torch.Tensor) -> TensorStats:
    return finalize_stats([summarize_tensor(x)])[0]


def assert_matches(
    stats: TensorStats, ref: dict[str, float | int | None], *, atol: float = 1e-6
) -> None:
    """Undefined where the reference is, counts exact, the rest within ``rel=1e-5``."""
    got = stats.as_dict()
    assert list(got) == list(STAT_NAMES)
    for key in STAT_NAMES:
        if ref[key] is None:
            assert got[key] is None, key
        elif key in ("nan", "inf"):
            assert got[key] == ref[key], key
        else:
            assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=atol), key


def test_known_tensor_exact_values() -> None:
    stats = stats_of(torch.tensor([[-2.0, 0.0], [1.0, 5.0]]))
    assert (stats.mean, stats.min, stats.max, stats.absmax) == (1.0, -2.0, 5.0, 5.0)
    assert (stats.zeros, stats.nan, stats.inf) == (0.25, 0, 0)
    # Norms are reduced in float32, so these carry float32 rounding.
    assert stats.std == pytest.approx(math.sqrt(6.5), rel=1e-6)
    assert stats.rms == pytest.approx(math.sqrt(7.5), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_random_tensors_match_reference(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 7, 11, generator=g) * 4).to(dtype)
    x[0, 0, :3] = 0
    assert_matches(stats_of(x), reference(x))


def test_nan_and_inf_are_counted_and_excluded() -> None:
    x = torch.tensor([1.0, float("nan"), 3.0, float("inf"), -float("inf"), 0.0])
    stats = stats_of(x)
    assert (stats.nan, stats.inf) == (1, 2)
    assert stats.min == 0.0 and stats.max == 3.0 and stats.mean == pytest.approx(4 / 3)
    assert stats.zeros == pytest.approx(1 / 6)
    assert_matches(stats, reference(x))


def test_no_finite_value_leaves_statistics_undefined() -> None:
    stats = stats_of(torch.tensor([float("nan"), float("inf")]))
    assert stats.mean is None and stats.min is None and stats.absmax is None
    assert (stats.nan, stats.inf, stats.zeros) == (1, 1, 0.0)


def test_empty_tensor() -> None:
    stats = stats_of(torch.empty(0, 4))
    assert stats.mean is None and stats.zeros is None and (stats.nan, stats.inf) == (0, 0)


def test_padding_positions_are_excluded() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 8, generator=g)
    b = torch.randn(3, 8, generator=g)
    batch = torch.full((2, 5, 8), 1e6)
    batch[0] = a
    batch[1, :3] = b
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    rows = finalize_stats(list(summarize_batch(batch, valid)))
    assert_matches(rows[0], reference(a))
    assert_matches(rows[1], reference(b))


def test_result_stays_on_device_as_one_vector() -> None:
    vector = summarize_tensor(torch.ones(4))
    assert vector.dtype == torch.float64 and vector.shape == (len(STAT_NAMES),)


finite_or_not = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float32,
        array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9),
        elements=finite_or_not,
    )
)
def test_statistics_equal_a_float64_reference_on_any_tensor(values: np.ndarray) -> None:
    x = torch.from_numpy(values)
    ref = reference(x)
    # float32 reductions: errors scale with the largest magnitude present, and
    # squares of values below ~1e-19 underflow to zero.
    scale = abs(ref["absmax"] or 0.0)
    assert_matches(stats_of(x), ref, atol=1e-6 * scale + 1e-18)


def test_large_outputs_with_near_constant_tokens_keep_their_precision() -> None:
    # Above the direct-centring size, variances come from sums of squares unless
    # float32 could not resolve them; a near-constant token must still be exact.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 64, 4096, generator=g)
    x[0, 3] = 1000.0 + 1e-3 * torch.randn(4096, generator=g)
    x[0, 5] = 7.0
    assert x.numel() > 1 << 17
    rows = finalize_stats(list(summarize_batch(x)))
    assert_matches(rows[0], reference(x))
    offset = 1000.0 + 1e-3 * torch.randn(1, 64, 4096, generator=g)
    stats = finalize_stats(list(summarize_batch(offset)))[0]
    assert stats.std == pytest.approx(float(offset.double().std(correction=0)), rel=1e-3)
    constant = finalize_stats(list(summarize_batch(torch.full((1, 64, 4096), 7.0))))[0]
    assert constant.std == 0.0 and constant.mean == 7.0


def test_large_output_with_nan_takes_the_exact_path() -> None:
    x = torch.randn(1, 64, 4096)
    x[0, 10, 7] = float("nan")
    x[0, 11, 8] = float("-inf")
    stats = finalize_stats(list(summarize_batch(x)))[0]
    assert (stats.nan, stats.inf) == (1, 1)
    assert_matches(stats, reference(x))
