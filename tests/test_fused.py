"""The compiled one-pass kernel against the eager torch path it replaces on the CPU.

Tolerance, derived: both paths read elements that are exact in float64 (float32,
float16 and bfloat16 all widen exactly) and accumulate in float64, in different
orders. A float64 sum of n terms is off by at most gamma(n) * sum|x_i|, with
gamma(n) = n*u / (1 - n*u) and u = 2**-53, so two such sums differ by at most
2 * gamma(n) * sum|x_i|. m2 is a float64 sum of n squared deviations, each off
by a few roundings, from a mean off by gamma(n) * sum|x| / n; squared deviations
from a shifted mean grow by n * shift**2, so two m2 differ by at most
2 * gamma(n + 8) * (m2 + n * shift**2). For a width of 50272 that is about 1e-11
relative, far inside the 5e-6 of float32 inputs. min, max and counts are exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from optinspect.engine import fused, stats
from optinspect.engine.stats import finalize_stats, summarize_tensor, token_partials

pytestmark = pytest.mark.skipif(
    fused._load() is None,
    reason="the compiled statistics kernel is not built (no C++ compiler at install time; "
    "build it with `python setup.py build_ext --inplace`)",
)

U = 2.0**-53


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


@pytest.fixture(autouse=True)
def kernel_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fused.ENV, raising=False)


def eager_exact(x: torch.Tensor) -> torch.Tensor:
    """Today's exact-form partials, computed by the eager torch path."""
    return stats._exact_partials(x.detach().to(torch.float32))


def assert_same_partials(x: torch.Tensor) -> None:
    got = fused.fused_partials(x)
    assert got is not None
    want = eager_exact(x)
    assert got.shape == want.shape and got.dtype == torch.float64
    # min, max and the counts are exact: same elements, no arithmetic.
    for channel in (2, 3, 4, 5, 6, 7):
        assert torch.equal(got[..., channel], want[..., channel]), stats.PARTIALS[channel]
    x64 = x.detach().to(torch.float64)
    finite = torch.isfinite(x64)
    clean = torch.where(finite, x64, 0.0)
    n = x.shape[-1]
    abs_sum = clean.abs().sum(dim=-1)
    sum_tol = 2 * gamma(n) * abs_sum
    assert bool(((got[..., 0] - want[..., 0]).abs() <= sum_tol).all()), "sum"
    shift = gamma(n) * abs_sum / finite.sum(dim=-1).clamp(min=1)
    m2_tol = 2 * gamma(n + 8) * (want[..., 1] + n * shift.square())
    assert bool(((got[..., 1] - want[..., 1]).abs() <= m2_tol).all()), "m2"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("width", [1, 17, 768, 50272])
def test_random_rows_of_every_width(width: int) -> None:
    x = torch.randn(2, 3, width, generator=generator(width)) * 5 + 3
    assert_same_partials(x)


def test_batches_of_many_rows_split_over_threads() -> None:
    # Large enough that the kernel splits the rows over OpenMP threads, if built with it.
    x = torch.randn(4, 256, 3072, generator=generator(1))
    assert_same_partials(x)


def test_strided_views_are_read_in_place_or_copied() -> None:
    base = torch.randn(3, 8, 40, generator=generator(2))
    assert_same_partials(base[:, ::2, 5:30])  # row strides other than the width
    assert_same_partials(base.transpose(0, 1))  # batch and token strides swapped
    assert_same_partials(base.transpose(1, 2))  # features not contiguous: copied


def test_constant_rows_have_no_spread() -> None:
    x = torch.full((1, 4, 1000), 7.25)
    got = fused.fused_partials(x)
    assert got is not None
    assert torch.equal(got[..., 1], torch.zeros(1, 4, dtype=torch.float64))
    assert_same_partials(x)
    assert_same_partials(torch.zeros(1, 3, 17))


def test_nan_and_inf_are_masked() -> None:
    x = torch.randn(1, 6, 600, generator=generator(3))
    x[0, 0, 5] = math.nan
    x[0, 1, 300] = math.inf
    x[0, 1, 301] = -math.inf
    x[0, 2] = math.nan  # no finite element at all
    x[0, 3] = math.inf
    x[0, 4, ::2] = math.nan  # every other element
    assert_same_partials(x)
    got = fused.fused_partials(x)
    assert got is not None
    assert got[0, 2, 2] == math.inf and got[0, 2, 3] == -math.inf  # as the eager path


def test_extreme_magnitudes() -> None:
    big = torch.finfo(torch.float32).max
    tiny = torch.finfo(torch.float32).smallest_normal / 2**20  # subnormal
    x = torch.tensor(
        [
            [big, big, -big, big * 0.5] * 8,
            [tiny, -tiny, tiny * 3, 0.0] * 8,
            [big, tiny, -big, -tiny] * 8,
            [1e30, 1e-30, -1e30, 1.0] * 8,
        ]
    )[None]
    assert_same_partials(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_read_directly(dtype: torch.dtype) -> None:
    x = (torch.randn(2, 5, 999, generator=generator(4)) * 100).to(dtype)
    x[0, 1, 3] = math.nan
    x[1, 2, 4] = -math.inf
    assert_same_partials(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_half_bit_pattern_widens_exactly(dtype: torch.dtype) -> None:
    # All 65536 patterns (normals, subnormals, zeros, Inf, NaN), one element a row:
    # the sum of a finite one-element row is the element itself.
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    rows = x.reshape(1, -1, 1)
    got = fused.fused_partials(rows)
    assert got is not None
    want = x.to(torch.float64)
    finite = torch.isfinite(want)
    assert torch.equal(got[0, finite, 0], want[finite])
    assert torch.equal(got[0, :, 7], torch.isnan(want).to(torch.float64))
    assert_same_partials(rows)
    assert_same_partials(x.reshape(1, 4, -1))


def test_empty_widths_agree_with_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for shape in [(1, 3, 0), (1, 0, 5), (2, 0, 0)]:
        x = torch.empty(shape)
        fused_form = token_partials(x)
        monkeypatch.setenv(fused.ENV, "eager")
        eager_form = token_partials(x)
        monkeypatch.delenv(fused.ENV)
        assert torch.equal(fused_form.values, eager_form.values)


@pytest.mark.parametrize("width", [1, 17, 50272])
def test_statistics_agree_with_todays_eager_statistics(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Today's default CPU path reduces in float32 (about 1e-7 per rounding, times
    # a pairwise depth of log2(width) at most 16): 5e-6 relative, of the largest
    # magnitude for statistics that can cancel.
    x = torch.randn(1, 7, width, generator=generator(width)) * 2 + 0.5
    x[0, 0, 0] = 0.0
    one_pass = finalize_stats([summarize_tensor(x)])[0].as_dict()
    monkeypatch.setenv(fused.ENV, "eager")
    eager = finalize_stats([summarize_tensor(x)])[0].as_dict()
    scale = float(x.abs().max())
    for key, value in eager.items():
        assert one_pass[key] == pytest.approx(value, rel=5e-6, abs=5e-6 * scale), key


def test_token_partials_take_the_kernel_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(1, 4, 32)
    assert token_partials(x).exact  # the kernel writes the exact form
    monkeypatch.setenv(fused.ENV, "eager")
    assert not token_partials(x).exact  # the eager CPU fast path
    assert fused.fused_partials(x) is None


def test_unsupported_inputs_fall_back() -> None:
    assert fused.fused_partials(torch.randn(1, 2, 3, dtype=torch.float64)) is None
    assert fused.fused_partials(torch.ones(1, 2, 3, dtype=torch.int32)) is None


def test_a_missing_library_means_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "library_path", lambda: None)
    monkeypatch.setattr(fused, "_loaded", False)
    monkeypatch.setattr(fused, "_library", None)
    assert not fused.available()
    x = torch.randn(1, 4, 32)
    assert not token_partials(x).exact
