"""The result records live in ``optinspect.results``, which must never import torch, so a
torch-free client can rebuild results and render them; the analyses re-export them."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest

CHECK_NO_TORCH = """
import sys
import optinspect.results.trace, optinspect.results.sparsity, optinspect.results.lens
import optinspect.results.attention, optinspect.results.compare, optinspect.results.outliers
import optinspect.results.calibration
import optinspect.render.trace, optinspect.render.lens, optinspect.render.attention
import optinspect.render.compare, optinspect.render.outliers, optinspect.render.calibrate
import optinspect.render.params
from optinspect.results.records import ModelInfo
from optinspect.results.calibration import CalibrationResult, CalibrationSettings

info = ModelInfo("tiny", "none", "cpu", "float32", True)
result = CalibrationResult(info, CalibrationSettings(), 1, 2, 1, (), ())
assert result.as_dict()["histogram"]["bins"] == 4096
assert result.metadata()["channel_stats"].startswith("absmax,")
heavy = [m for m in ("torch", "transformers", "bitsandbytes") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def test_results_and_renderers_do_not_import_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_NO_TORCH],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("HEAVY=")


#: (analysis module, its records' home, the names it re-exports from there)
REEXPORTS = [
    ("trace", "trace", "TraceResult"),
    ("sparsity", "sparsity", "LayerSparsity"),
    ("lens", "lens", "Prediction LensLayer LensResult Ranked"),
    ("attention", "attention", "HeadSummary AttentionResult Matrix"),
    ("compare", "compare", "Setting ModuleDiff CompareResult"),
    (
        "outliers",
        "outliers",
        "DimCount ModuleOutliers RecurringDim OutlierResult MIN_LAYER_FRACTION MIN_TOKEN_FRACTION",
    ),
    (
        "calibrate",  # absorbed calibration.py, and what it re-exported
        "calibration",
        "CalibrationSettings LinearInput ModuleOutput CalibrationResult "
        "HIST_BINS SUB_BITS PERCENTILE_ERROR CHANNEL_STATS _SHIFT",
    ),
]


@pytest.mark.parametrize(("old", "home", "names"), REEXPORTS)
def test_analyses_reexport_their_records(old: str, home: str, names: str) -> None:
    module = importlib.import_module(f"optinspect.analyses.{old}")
    records = importlib.import_module(f"optinspect.results.{home}")
    for name in names.split():
        assert getattr(module, name) is getattr(records, name), name
        value = getattr(records, name)
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            assert value.__dataclass_params__.frozen, name  # type: ignore[attr-defined]
            assert value.__module__ == records.__name__, name


def test_public_trace_result_is_the_record() -> None:
    import optinspect
    from optinspect.analyses.trace import TraceResult as Reexported
    from optinspect.results.trace import TraceResult

    assert optinspect.TraceResult is TraceResult is Reexported


def test_fast_new_builds_what_the_constructor_builds() -> None:
    from optinspect.results.records import ModuleRecord, TensorStats, fast_new

    values = (0.5, 1.0, -2.0, 3.0, 3.0, 1.2, 0.1, 0, 2)
    stats = fast_new(TensorStats, *values)
    assert stats == TensorStats(*values)
    assert TensorStats.from_values([*values[:2], float("nan"), *values[3:]]).min is None
    fields = (4, "m.fc1", "Linear", 0, 1, 2, "tensor", (1, 3), "float32", "cpu",
              "float32", (8, 4), stats, 5, "cpu")  # fmt: skip
    record = fast_new(ModuleRecord, *fields)
    assert record == ModuleRecord(*fields)
    assert record.as_dict() == ModuleRecord(*fields).as_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):  # a field short: refused, not left unset
        fast_new(ModuleRecord, *fields[:-1])
