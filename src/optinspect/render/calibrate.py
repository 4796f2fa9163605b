"""Calibration results -> the linear-input table (worst first) and the layer-output table.

Renderers take a Console; they never create one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, RenderableType

from ..engine.records import STAT_NAMES
from ..model.names import is_layer_root
from .common import Column, count_noun, fit_tables, format_number, header_line, print_header

if TYPE_CHECKING:
    from ..results.calibration import CalibrationResult, LinearInput

__all__ = ["input_tables", "output_tables", "render_calibration"]


def _worst_first(m: LinearInput) -> tuple[float, float]:
    # A missing ratio (median 0, no tokens) sorts last; ties go to the larger max |x|.
    ratio = m.outlier_ratio if m.outlier_ratio is not None else float("-inf")
    return (-ratio, -(m.absmax or 0.0))


def input_tables(result: CalibrationResult, width: int = 200) -> list[RenderableType]:
    """One row per linear layer's input, the largest outlier ratio first."""
    columns = [
        Column("module", justify="left", key=True, wrap=True),
        Column("channels"),
        Column("max |x|"),
        Column("channel"),
        Column("median max"),
        Column("outlier ratio"),
        Column("p99.9 |x|"),
    ]
    rows = [
        [
            m.name,
            str(m.in_features),
            format_number(m.absmax),
            "-" if m.argmax is None else str(m.argmax),
            format_number(m.median),
            format_number(m.outlier_ratio),
            format_number(m.percentiles.get("p99.9")),
        ]
        for m in sorted(result.inputs, key=_worst_first)
    ]
    title = f"linear-layer inputs ({len(rows)}, largest outlier ratio first)"
    return fit_tables(columns, rows, width, title=title)


def output_tables(result: CalibrationResult, width: int = 200) -> list[RenderableType]:
    """One row per decoder layer's output, the largest absmax first."""
    layers = [o for o in result.outputs if is_layer_root(o.name)]
    layers.sort(key=lambda o: -(o.stats.absmax or 0.0))
    columns = [Column("layer output", justify="left", key=True, wrap=True)]
    columns += [Column(name) for name in STAT_NAMES]
    rows = [[o.name, *(format_number(v) for v in o.stats.as_dict().values())] for o in layers]
    title = f"decoder layer outputs ({len(rows)}, largest absmax first)"
    return fit_tables(columns, rows, width, title=title)


def render_calibration(console: Console, result: CalibrationResult) -> None:
    """Print the header, the quantized-model note, and both tables."""
    extra = [count_noun(result.samples, "sample"), count_noun(result.tokens, "token")]
    if result.world_size > 1:
        extra.append(count_noun(result.world_size, "rank"))
    print_header(console, header_line(result.info, *extra), result.random_weights)
    if result.quantized:
        console.print(
            f"note: statistics from a {result.quant}-quantized model; the reference tools "
            "calibrate the full-precision model (--quant none)",
            highlight=False,
        )
    for table in [*input_tables(result, console.width), *output_tables(result, console.width)]:
        console.print(table, highlight=False)
    console.print(
        "outlier ratio: the largest channel max |x| over the median channel max; "
        "p99.9 read from a histogram, within 3.2%",
        highlight=False,
    )
