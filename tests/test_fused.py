"""The one-pass kernels against the eager torch path they replace.

Three backends run the same checks (the ``one_pass`` fixture):
- ``c++``: the compiled CPU kernel (``_fused_stats.cpp``), where it was built;
- ``triton-interpreted``: the Triton kernel of ``fused_triton`` run by Triton's
  interpreter on CPU tensors (``TRITON_INTERPRET=1``), where Triton is installed.
  This checks the kernel's arithmetic, masking and indexing without a GPU; the
  interpreter runs one program at a time, so its row counts are kept small;
- ``triton-cuda``: the same kernel compiled for CUDA (marked gpu).

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

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from optinspect.engine import fused, fused_triton, stats
from optinspect.engine.stats import finalize_stats, summarize_tensor, token_partials

U = 2.0**-53
HAS_TRITON = importlib.util.find_spec("triton") is not None
NOT_BUILT = (
    "the compiled statistics kernel is not built (no C++ compiler at install time; "
    "build it with `python setup.py build_ext --inplace`)"
)
needs_cpp = pytest.mark.skipif(fused._load() is None, reason=NOT_BUILT)


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


@dataclass(frozen=True)
class OnePass:
    """One kernel under test: how to call it, on which device, and whether it is slow."""

    name: str
    compute: Callable[[torch.Tensor], torch.Tensor | None]
    device: str
    interpreted: bool  # one program at a time: keep row counts small


INTERPRETER_OFF = (
    "Triton's interpreter is off: conftest switches it on (TRITON_INTERPRET=1) before "
    "anything imports triton, in every run that does not select -m gpu"
)
BACKENDS = [
    pytest.param("c++", marks=needs_cpp),
    pytest.param(
        "triton-interpreted",
        marks=[
            pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed"),
            pytest.mark.skipif(not fused_triton.interpreting(), reason=INTERPRETER_OFF),
        ],
    ),
    pytest.param(
        "triton-cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed"),
        ],
    ),
]


@pytest.fixture(autouse=True)
def kernel_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fused.ENV, raising=False)


@pytest.fixture(params=BACKENDS)
def one_pass(request: pytest.FixtureRequest) -> Iterator[OnePass]:
    name = request.param
    if name == "c++":
        yield OnePass(name, fused.fused_partials, "cpu", interpreted=False)
        return
    interpreted = name == "triton-interpreted"
    device = "cpu" if interpreted else "cuda"
    yield OnePass(name, fused_triton.triton_partials, device, interpreted=interpreted)
    assert fused_triton._broken is None, fused_triton._broken


def eager_exact(x: torch.Tensor) -> torch.Tensor:
    """Today's exact-form partials, computed by the eager torch path."""
    return stats._exact_partials(x.detach().to(torch.float32))


def assert_same_partials(one_pass: OnePass, x: torch.Tensor) -> None:
    x = x.to(one_pass.device)
    got = one_pass.compute(x)
    assert got is not None
    want = eager_exact(x)
    assert got.shape == want.shape and got.dtype == torch.float64
    assert got.device == x.device
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
def test_random_rows_of_every_width(one_pass: OnePass, width: int) -> None:
    x = torch.randn(2, 3, width, generator=generator(width)) * 5 + 3
    assert_same_partials(one_pass, x)


def test_batches_of_many_rows(one_pass: OnePass) -> None:
    # Large enough that the C++ kernel splits the rows over OpenMP threads, if built
    # with it, and that CUDA runs many programs at once.
    if one_pass.interpreted:
        pytest.skip("the interpreter runs one program at a time: too slow for 1024 rows")
    x = torch.randn(4, 256, 3072, generator=generator(1))
    assert_same_partials(one_pass, x)


def test_strided_views_are_read_in_place_or_copied(one_pass: OnePass) -> None:
    # Sliced where the kernel runs: moving a view to another device copies it into a
    # contiguous tensor, and the kernel would never see a row stride.
    base = torch.randn(3, 8, 40, generator=generator(2)).to(one_pass.device)
    rows = base[:, ::2, 5:30]
    assert rows.stride() == (320, 80, 1)  # rows 80 apart, 25 wide
    assert_same_partials(one_pass, rows)
    swapped = base.transpose(0, 1)
    assert swapped.stride() == (40, 320, 1)  # batch and token strides swapped
    assert_same_partials(one_pass, swapped)
    assert_same_partials(one_pass, base.transpose(1, 2))  # features not contiguous: copied


def test_constant_rows_have_no_spread(one_pass: OnePass) -> None:
    x = torch.full((1, 4, 1000), 7.25, device=one_pass.device)
    got = one_pass.compute(x)
    assert got is not None
    assert torch.equal(got[..., 1].cpu(), torch.zeros(1, 4, dtype=torch.float64))
    assert_same_partials(one_pass, x)
    assert_same_partials(one_pass, torch.zeros(1, 3, 17))


def test_nan_and_inf_are_masked(one_pass: OnePass) -> None:
    x = torch.randn(1, 6, 600, generator=generator(3))
    x[0, 0, 5] = math.nan
    x[0, 1, 300] = math.inf
    x[0, 1, 301] = -math.inf
    x[0, 2] = math.nan  # no finite element at all
    x[0, 3] = math.inf
    x[0, 4, ::2] = math.nan  # every other element
    assert_same_partials(one_pass, x)
    got = one_pass.compute(x.to(one_pass.device))
    assert got is not None
    assert got[0, 2, 2] == math.inf and got[0, 2, 3] == -math.inf  # as the eager path


def test_extreme_magnitudes(one_pass: OnePass) -> None:
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
    assert_same_partials(one_pass, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_read_directly(one_pass: OnePass, dtype: torch.dtype) -> None:
    x = (torch.randn(2, 5, 999, generator=generator(4)) * 100).to(dtype)
    x[0, 1, 3] = math.nan
    x[1, 2, 4] = -math.inf
    assert_same_partials(one_pass, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_half_bit_pattern_widens_exactly(one_pass: OnePass, dtype: torch.dtype) -> None:
    # All 65536 patterns (normals, subnormals, zeros, Inf, NaN), one element a row:
    # the sum of a finite one-element row is the element itself. The interpreter
    # reads every pattern too, 16384 to a row, and one in 128 as one-element rows.
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    singles = x[::128] if one_pass.interpreted else x
    rows = singles.reshape(1, -1, 1).to(one_pass.device)
    got = one_pass.compute(rows)
    assert got is not None
    got = got.cpu()
    want = singles.to(torch.float64)
    finite = torch.isfinite(want)
    assert torch.equal(got[0, finite, 0], want[finite])
    assert torch.equal(got[0, :, 7], torch.isnan(want).to(torch.float64))
    assert_same_partials(one_pass, rows)
    assert_same_partials(one_pass, x.reshape(1, 4, -1))


@needs_cpp
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
    one_pass: OnePass, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Today's default CPU path reduces in float32 (about 1e-7 per rounding, times
    # a pairwise depth of log2(width) at most 16): 5e-6 relative, of the largest
    # magnitude for statistics that can cancel. On CUDA the eager path is exact.
    if one_pass.interpreted:
        pytest.skip("the statistics send CPU tensors to the C++ kernel, not the interpreter")
    x = torch.randn(1, 7, width, generator=generator(width)) * 2 + 0.5
    x[0, 0, 0] = 0.0
    x = x.to(one_pass.device)
    one_pass_stats = finalize_stats([summarize_tensor(x)])[0].as_dict()
    monkeypatch.setenv(fused.ENV, "eager")
    eager = finalize_stats([summarize_tensor(x)])[0].as_dict()
    scale = float(x.abs().max())
    for key, value in eager.items():
        assert one_pass_stats[key] == pytest.approx(value, rel=5e-6, abs=5e-6 * scale), key


@needs_cpp
def test_token_partials_take_the_kernel_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(1, 4, 32)
    assert token_partials(x).exact  # the kernel writes the exact form
    monkeypatch.setenv(fused.ENV, "eager")
    assert not token_partials(x).exact  # the eager CPU fast path
    assert fused.fused_partials(x) is None
    assert fused.one_pass_partials(x) is None


@pytest.mark.gpu
def test_cuda_tensors_take_the_triton_kernel_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[torch.Size] = []
    real = fused.triton_partials

    def spy(x: torch.Tensor) -> torch.Tensor | None:
        calls.append(x.shape)
        return real(x)

    monkeypatch.setattr(fused, "triton_partials", spy)
    x = torch.randn(1, 4, 32, device="cuda")
    kernel_form = token_partials(x)
    assert calls == [x.shape] and kernel_form.exact
    monkeypatch.setenv(fused.ENV, "eager")
    eager_form = token_partials(x)
    assert len(calls) == 1 and eager_form.exact  # CUDA's eager path is the exact one
    if HAS_TRITON:
        assert kernel_form.values.device == x.device
        assert torch.equal(kernel_form.values[..., 2:], eager_form.values[..., 2:])


def test_unsupported_inputs_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    for dtype in (torch.float64, torch.int32):
        bad = torch.ones(1, 2, 3, dtype=dtype)
        assert fused.fused_partials(bad) is None
        assert fused_triton.triton_partials(bad) is None
    # Without the interpreter, a CPU tensor is not Triton's to reduce.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert fused_triton.triton_partials(torch.ones(1, 2, 3)) is None


def test_a_missing_library_means_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "library_path", lambda: None)
    monkeypatch.setattr(fused, "_loaded", False)
    monkeypatch.setattr(fused, "_library", None)
    assert not fused.available()
    x = torch.randn(1, 4, 32)
    assert not token_partials(x).exact


def test_missing_triton_means_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_triton, "_kernel", lambda interpret: None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors are Triton's, were it present
    assert fused_triton.triton_partials(torch.randn(1, 4, 32)) is None


def test_a_kernel_that_fails_warns_once_then_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        launches = 0

        def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
            Broken.launches += 1
            raise RuntimeError("no kernel image is available for execution on the device\nmore")

    monkeypatch.setattr(fused_triton, "_broken", None)
    monkeypatch.setattr(fused_triton, "_kernel", lambda interpret: Broken())
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(1, 4, 32)
    assert fused_triton.triton_partials(x) is None
    assert fused_triton.triton_partials(x) is None  # no second try, no second warning
    assert Broken.launches == 1
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "optinspect: the Triton statistics kernel failed (RuntimeError: no kernel image is "
            "available for execution on the device); the eager torch statistics are used instead",
        )
    ]


FALLBACK_TEST = """
from optinspect.engine import fused_triton


def test_statistics_still_agree_on_the_eager_path():
    fused_triton._broken = "RuntimeError: no kernel image is available for execution"
"""


def test_a_run_in_which_the_kernel_switched_itself_off_fails(tmp_path: Path) -> None:
    # The statistics tests pass on the eager path too, so a kernel that failed once (on
    # a GPU, in any test) would go unseen: conftest fails the run and says where.
    tests = Path(__file__).resolve().parent
    shutil.copy(tests / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_fallback.py").write_text(FALLBACK_TEST, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tests.parent / "src"), env.get("PYTHONPATH", "")])
    pytest_run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir"]
    where = {"cwd": tmp_path, "env": env, "timeout": 120, "check": False}
    proc = subprocess.run([*pytest_run, str(tmp_path)], capture_output=True, text=True, **where)
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert (
        "FAILED: the Triton statistics kernel failed and switched itself off (first seen after "
        "test_fallback.py::test_statistics_still_agree_on_the_eager_path); every later "
        "statistic took the eager path: RuntimeError: no kernel image is available for execution"
    ) in proc.stdout


@pytest.mark.parametrize(
    ("features", "block"), [(1, 16), (16, 16), (17, 32), (768, 1024), (50272, 1024)]
)
def test_block_sizes_are_powers_of_two_within_bounds(features: int, block: int) -> None:
    assert fused_triton.block_size(features) == block


def rows_with_every_case(batch: int, tokens: int, width: int, seed: int) -> torch.Tensor:
    """[batch, tokens, width] values whose token rows hold NaN, Inf, zeros, or nothing finite."""
    x = torch.randn(batch, tokens, width, generator=generator(seed)) * 3 + 1
    x[0, 0, :3] = math.nan
    x[0, 1, 2] = math.inf
    x[-1, -1] = math.nan  # a token with no finite element
    x[0, 2, ::2] = 0.0
    return x


@needs_cpp
@pytest.mark.parametrize("masked", [False, True])
def test_pooled_statistics_agree_with_the_torch_pooling(masked: bool) -> None:
    # Both pool the same float64 partials, in different orders: sums of at most 12
    # terms agree to a few units of 2**-53 of their magnitude, far inside 1e-12.
    # min, max and the counts involve no rounding and agree exactly.
    x = rows_with_every_case(3, 12, 40, seed=5)
    partials = torch.stack([fused.fused_partials(x * k) for k in (1.0, -2.0, 1e-3)])
    valid = torch.ones(3, 12, dtype=torch.bool)
    if masked:
        valid[1, 7:] = False  # padding
        valid[2] = False  # a sentence with no token left: every statistic undefined
    mask = valid if masked else None
    got = fused.pooled_statistics(partials, mask)
    assert got is not None and got.shape == (3, 3, 9)
    want = stats.finalize_partials(stats.pool_partials(partials, mask))
    for channel in (2, 3, 4, 6, 7, 8):  # min, max, absmax, zeros, nan, inf
        assert torch.equal(got[..., channel].isnan(), want[..., channel].isnan())
        assert torch.equal(got[..., channel].nan_to_num(), want[..., channel].nan_to_num())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    if masked:
        assert bool(got[:, 2, :7].isnan().all())  # mean .. zeros undefined
        assert bool((got[:, 2, 7:] == 0).all())  # no NaN or Inf counted either


@needs_cpp
def test_combine_partials_takes_the_c_pooling_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    partials = fused.fused_partials(rows_with_every_case(2, 5, 16, seed=6))[None]
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    pooled = stats.combine_partials(partials, valid)
    assert torch.equal(pooled, fused.pooled_statistics(partials, valid))
    monkeypatch.setenv(fused.ENV, "eager")
    assert fused.pooled_statistics(partials, valid) is None
    torch.testing.assert_close(
        stats.combine_partials(partials, valid), pooled, rtol=1e-12, atol=1e-12, equal_nan=True
    )


def test_pooled_statistics_leave_other_inputs_to_torch() -> None:
    partials = torch.zeros(2, 3, 8, dtype=torch.float64)
    assert fused.pooled_statistics(partials.float()) is None  # not float64
    assert fused.pooled_statistics(torch.zeros(2, 3, 5, dtype=torch.float64)) is None  # fast form
    assert fused.pooled_statistics(partials, torch.ones(3, 2, dtype=torch.bool)) is None
