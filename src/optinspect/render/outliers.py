"""Outlier results -> the per-module table of linear-layer inputs and the recurring
dimensions.

Renderers take a Console; they never create one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType

from .common import (
    count_noun,
    format_number,
    format_percent,
    header_line,
    print_header,
    tree_rows,
)
from .layout import NAME_BREAKS, Column, fit_tables, print_parts

if TYPE_CHECKING:
    from ..results.outliers import DimCount, ModuleOutliers, OutlierResult

__all__ = ["format_layers", "outlier_tables", "recurring_tables", "render_outliers"]

#: Most dimensions listed in one row of the outlier table; the JSON has them all.
MAX_DIMS_SHOWN = 5
#: Where a list of dimensions may break: before a dimension, never inside ``17 (100%)``.
_DIM_BREAKS = r"(?<= )(?=[0-9+])"


def format_layers(layers: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts: list[str] = []
    run: list[int] = []
    for layer in sorted(layers):
        if run and layer != run[-1] + 1:
            parts.append(_span(run))
            run = []
        run.append(layer)
    if run:
        parts.append(_span(run))
    return ",".join(parts)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def _dims_cell(dims: Sequence[DimCount]) -> str:
    top = sorted(dims, key=lambda d: (-d.count, d.dim))[:MAX_DIMS_SHOWN]
    text = " ".join(f"{d.dim} ({d.fraction:.0%})" for d in top)
    if len(dims) > MAX_DIMS_SHOWN:
        text += f" +{len(dims) - MAX_DIMS_SHOWN} more"
    return text or "-"


def outlier_tables(result: OutlierResult, width: int = 200) -> list[RenderableType]:
    """One row per linear layer, under a heading row per decoder layer: where its input
    reached the threshold, then what the layer is. Blocks fit ``width``; the dimensions
    wrap between two of them."""
    columns = [
        Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS),
        Column("tokens hit", group="hits"),
        Column("fraction", group="hits"),
        Column("absmax", group="hits"),
        Column(
            "dimensions (most tokens first)",
            justify="left",
            wrap=True,
            breaks=_DIM_BREAKS,
            group="hits",
        ),
        Column("type", justify="left", group="layer"),
        Column("in", group="layer"),
        Column("threshold", group="layer"),
    ]
    rows: list[list[str]] = []
    styles: list[str] = []
    for name, index in tree_rows([m.name for m in result.modules]):
        if index is None:
            rows.append([name, *([""] * (len(columns) - 1))])
            styles.append("")
            continue
        m = result.modules[index]
        rows.append([name, *_outlier_cells(m)])
        styles.append("bold" if m.dims else "")
    title = f"linear-layer inputs ({len(result.modules)}, execution order)"
    return fit_tables(columns, rows, width, title=title, row_styles=styles)


def _outlier_cells(m: ModuleOutliers) -> list[str]:
    return [
        str(m.tokens_affected),
        format_percent(m.token_fraction),
        format_number(m.absmax),
        _dims_cell(m.dims),
        m.type,
        str(m.in_features),
        f"{m.threshold:g} ({m.threshold_source})",
    ]


def recurring_tables(result: OutlierResult, width: int = 200) -> list[RenderableType]:
    """One row per recurring hidden dimension."""
    columns = [
        Column("dim", key=True),
        Column("layers", justify="left", wrap=True, breaks=r"(?<=,)"),
        Column("of layers"),
        Column("of tokens"),
        Column("absmax"),
    ]
    rows = [
        [
            str(r.dim),
            format_layers(r.layers),
            format_percent(r.layer_fraction),
            format_percent(r.token_fraction),
            format_number(r.absmax),
        ]
        for r in result.recurring
    ]
    return fit_tables(columns, rows, width, title=f"recurring dimensions ({len(rows)})")


def render_outliers(console: Console, result: OutlierResult) -> None:
    """Print the header, the per-module table and the recurring dimensions."""
    line = header_line(
        result.info, count_noun(result.sentences, "sentence"), count_noun(result.tokens, "token")
    )
    print_header(console, line, result.random_weights)
    # One line at 80 columns; narrower, it breaks after the comma only.
    print_parts(
        console,
        [
            "threshold: |x| >= its LLM.int8 threshold (module)",
            f"else --threshold {result.threshold:g} (option)",
        ],
        ", ",
    )
    for table in outlier_tables(result, console.width):
        console.print(table, highlight=False)
    criteria = (
        f"at least {result.min_layer_fraction:.0%} of the {result.num_layers} layers and "
        f"{result.min_token_fraction:.0%} of token positions (q/k/v/out_proj and fc1 inputs)"
    )
    if result.recurring:
        for table in recurring_tables(result, console.width):
            console.print(table, highlight=False)
        console.print(f"recurring: reaches the threshold in {criteria}", highlight=False)
    else:
        console.print(f"no dimension reaches the threshold in {criteria}", highlight=False)
