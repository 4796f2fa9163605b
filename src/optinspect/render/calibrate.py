"""Calibration results -> a page: the linear-input table (worst first), the layer-output
table, what their columns mean, and each linear input's act_scales as a chart.

    write_terminal(console, calibrate_page(result))

No torch here: the record reads its own per-channel tensors (``scale_curves``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from ..model.names import is_layer_root
from ..results.records import STAT_NAMES
from .common import count_noun, format_number, format_stat, header_parts, random_notes
from .layout import NAME_BREAKS, NAME_COLUMN, Column, grouped
from .page import Chart, Lines, Page, Part, Series, Sheet, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.calibration import CalibrationResult, LinearInput

__all__ = ["calibrate_page", "input_sheet", "output_sheet", "render_calibration"]

#: What the columns mean, under the tables.
_LEGEND = (
    "ratio: outlier ratio, the largest channel max |x| over the median channel max",
    "in: the input's channels; p99.9 read from a histogram, within 3.2%",
)


def _worst_first(m: LinearInput) -> tuple[float, float]:
    # A missing ratio (median 0, no tokens) sorts last; ties go to the larger max |x|.
    ratio = m.outlier_ratio if m.outlier_ratio is not None else float("-inf")
    return (-ratio, -(m.absmax or 0.0))


def input_sheet(result: CalibrationResult) -> Sheet:
    """One row per linear layer's input, the largest outlier ratio first: the ratio, the
    largest channel max and its channel, then the median channel max, the p99.9 and the
    input's channels (``in``)."""
    columns = [
        NAME_COLUMN,
        *grouped("outlier", "ratio", "max |x|", "channel"),
        *grouped("spread", "median max", "p99.9 |x|", "in"),
    ]
    rows = [
        [
            cell(m.name),
            cell(format_number(m.outlier_ratio)),
            cell(format_number(m.absmax)),
            cell("-" if m.argmax is None else str(m.argmax)),
            cell(format_number(m.median)),
            cell(format_number(m.percentiles.get("p99.9"))),
            cell(str(m.in_features)),
        ]
        for m in sorted(result.inputs, key=_worst_first)
    ]
    title = f"linear-layer inputs ({len(rows)}, largest outlier ratio first)"
    return Sheet(title, columns, rows, name="inputs")


def output_sheet(result: CalibrationResult) -> Sheet:
    """One row per decoder layer's output, the largest absmax first (and its column)."""
    layers = [o for o in result.outputs if is_layer_root(o.name)]
    layers.sort(key=lambda o: -(o.stats.absmax or 0.0))
    stats = ("absmax", *(name for name in STAT_NAMES if name != "absmax"))
    columns = [Column("layer output", justify="left", key=True, wrap=True, breaks=NAME_BREAKS)]
    columns += [Column(name) for name in stats]
    rows = [
        [cell(o.name), *(cell(format_stat(name, o.stats.as_dict()[name])) for name in stats)]
        for o in layers
    ]
    title = f"decoder layer outputs ({len(rows)}, largest absmax first)"
    return Sheet(title, columns, rows, name="outputs")


def scales_chart(result: CalibrationResult, points: int = 201) -> Chart | None:
    """Each linear input's act_scales (max |x| per channel), sorted from the largest down,
    a line per module against the share of its channels; None where the record holds no
    per-channel values. A value that is not finite is a gap."""
    curves = result.scale_curves(points)
    if not curves:
        return None
    return Chart(
        "act_scales: each linear input's max |x| per channel, largest first",
        "share of the input's channels (%)",
        [round(100 * k / (points - 1), 2) for k in range(points)],
        [Series(name, values) for name, values in curves.items()],
        y_label="max |x|",
        name="act_scales",
    )


def calibrate_page(result: CalibrationResult) -> Page:
    """The model line with the samples, tokens (and ranks), the quantized-model note, both
    tables, what their columns mean, and the act_scales chart for pictures."""
    extra = [count_noun(result.samples, "sample"), count_noun(result.tokens, "token")]
    if result.world_size > 1:
        extra.append(count_noun(result.world_size, "rank"))
    notes = random_notes(result.random_weights)
    if result.quantized:
        notes.append(
            f"note: statistics from a {result.quant}-quantized model; the reference tools "
            "calibrate the full-precision model (--quant none)"
        )
    parts: list[Part] = [input_sheet(result), output_sheet(result), Lines(_LEGEND)]
    chart = scales_chart(result)
    if chart is not None:
        parts.append(chart)
    return Page(
        "calibrate",
        headline=header_parts(result.info, *extra),
        notes=notes,
        parts=parts,
        data=result.as_dict(),
    )


def render_calibration(console: Console, result: CalibrationResult) -> None:
    """Print the header, the quantized-model note, both tables and what they mean."""
    write_terminal(console, calibrate_page(result))
