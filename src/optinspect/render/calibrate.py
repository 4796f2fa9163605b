"""Calibration results -> the linear-input table (worst first) and the layer-output table.

Renderers take a Console; they never create one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, RenderableType

from ..model.names import is_layer_root
from ..results.records import STAT_NAMES
from .common import count_noun, format_number, format_stat, header_line, print_header
from .layout import NAME_BREAKS, Column, fit_tables

if TYPE_CHECKING:
    from ..results.calibration import CalibrationResult, LinearInput

__all__ = ["input_tables", "output_tables", "render_calibration"]


def _worst_first(m: LinearInput) -> tuple[float, float]:
    # A missing ratio (median 0, no tokens) sorts last; ties go to the larger max |x|.
    ratio = m.outlier_ratio if m.outlier_ratio is not None else float("-inf")
    return (-ratio, -(m.absmax or 0.0))


def input_tables(result: CalibrationResult, width: int = 200) -> list[RenderableType]:
    """One row per linear layer's input, the largest outlier ratio first: the ratio, the
    largest channel max and its channel, then the median channel max, the p99.9 and the
    input's channels (``in``)."""
    columns = [
        Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS),
        Column("ratio", group="outlier"),
        Column("max |x|", group="outlier"),
        Column("channel", group="outlier"),
        Column("median max", group="spread"),
        Column("p99.9 |x|", group="spread"),
        Column("in", group="spread"),
    ]
    rows = [
        [
            m.name,
            format_number(m.outlier_ratio),
            format_number(m.absmax),
            "-" if m.argmax is None else str(m.argmax),
            format_number(m.median),
            format_number(m.percentiles.get("p99.9")),
            str(m.in_features),
        ]
        for m in sorted(result.inputs, key=_worst_first)
    ]
    title = f"linear-layer inputs ({len(rows)}, largest outlier ratio first)"
    return fit_tables(columns, rows, width, title=title)


def output_tables(result: CalibrationResult, width: int = 200) -> list[RenderableType]:
    """One row per decoder layer's output, the largest absmax first (and its column)."""
    layers = [o for o in result.outputs if is_layer_root(o.name)]
    layers.sort(key=lambda o: -(o.stats.absmax or 0.0))
    stats = ("absmax", *(name for name in STAT_NAMES if name != "absmax"))
    columns = [Column("layer output", justify="left", key=True, wrap=True, breaks=NAME_BREAKS)]
    columns += [Column(name) for name in stats]
    rows = [
        [o.name, *(format_stat(name, o.stats.as_dict()[name]) for name in stats)] for o in layers
    ]
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
        "ratio: outlier ratio, the largest channel max |x| over the median channel max",
        highlight=False,
    )
    console.print(
        "in: the input's channels; p99.9 read from a histogram, within 3.2%", highlight=False
    )
