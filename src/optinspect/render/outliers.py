"""Outlier results -> a page: the per-module table of linear-layer inputs, the recurring
dimensions, and (for writers that draw pictures) a layer x hidden-dimension heatmap of how
often each dimension reached the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from .common import (
    count_noun,
    format_number,
    format_percent,
    header_parts,
    random_notes,
    tree_rows,
)
from .layout import NAME_COLUMN, Column
from .page import Cell, Heatmap, Lines, Page, Part, Sheet, Style, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.outliers import DimCount, ModuleOutliers, OutlierResult

__all__ = [
    "format_layers",
    "outlier_heatmap",
    "outlier_sheet",
    "outliers_page",
    "recurring_sheet",
    "render_outliers",
]

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


def outlier_sheet(result: OutlierResult) -> Sheet:
    """One row per linear layer, under a heading row per decoder layer: where its input
    reached the threshold, then what the layer is; a row with dimensions at the threshold
    is ``marked``. The dimensions wrap between two of them."""
    columns = [
        NAME_COLUMN,
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
    rows = []
    styles = []
    for name, index in tree_rows([m.name for m in result.modules]):
        if index is None:
            rows.append([cell(name), *([cell("")] * (len(columns) - 1))])
            styles.append(Style.plain)
            continue
        m = result.modules[index]
        rows.append([cell(name), *_outlier_cells(m)])
        styles.append(Style.marked if m.dims else Style.plain)
    title = f"linear-layer inputs ({len(result.modules)}, execution order)"
    return Sheet(title, columns, rows, name="modules", row_styles=styles)


def _outlier_cells(m: ModuleOutliers) -> list[Cell]:
    return [
        cell(str(m.tokens_affected), value=m.tokens_affected),
        cell(format_percent(m.token_fraction), value=m.token_fraction),
        cell(format_number(m.absmax), value=m.absmax),
        cell(_dims_cell(m.dims)),
        cell(m.type),
        cell(str(m.in_features), value=m.in_features),
        cell(f"{m.threshold:g} ({m.threshold_source})", value=m.threshold),
    ]


def recurring_sheet(result: OutlierResult) -> Sheet:
    """One row per recurring hidden dimension: those that meet LLM.int8's criteria."""
    columns = [
        Column("dim", key=True),
        Column("layers", justify="left", wrap=True, breaks=r"(?<=,)"),
        Column("of layers"),
        Column("of tokens"),
        Column("absmax"),
    ]
    rows = [
        [
            cell(str(r.dim), value=r.dim),
            cell(format_layers(r.layers)),
            cell(format_percent(r.layer_fraction), value=r.layer_fraction),
            cell(format_percent(r.token_fraction), value=r.token_fraction),
            cell(format_number(r.absmax), value=r.absmax),
        ]
        for r in result.recurring
    ]
    return Sheet(f"recurring dimensions ({len(rows)})", columns, rows, name="recurring")


def outlier_heatmap(result: OutlierResult) -> Heatmap | None:
    """Decoder layers down, hidden dimensions across: each cell the (module input, token)
    pairs at which that dimension reached the threshold, over the layer's inputs that
    count toward the recurring dimensions (q/k/v/out_proj and fc1). Only dimensions that
    reached it somewhere are columns; the scale runs to a layer's pairs in all. None when
    no dimension reached it. Drawn by writers that draw pictures, not the terminal."""
    counted = [m for m in result.modules if m.summary]
    layers = sorted({m.layer for m in counted})
    dims = sorted({d.dim for m in counted for d in m.dims})
    if not layers or not dims:
        return None
    column = {dim: index for index, dim in enumerate(dims)}
    row = {layer: index for index, layer in enumerate(layers)}
    values = [[0.0] * len(dims) for _ in layers]
    pairs = [0] * len(layers)
    for m in counted:
        pairs[row[m.layer]] += m.tokens
        for d in m.dims:
            values[row[m.layer]][column[d.dim]] += d.count
    return Heatmap(
        "inputs at the threshold: (module input, token) pairs per layer and hidden dimension",
        rows=[str(layer) for layer in layers],
        columns=[str(dim) for dim in dims],
        values=values,
        name="dimensions",
        corner="layer",
        high=float(max(pairs)) or 1.0,
    )


def outliers_page(result: OutlierResult) -> Page:
    """The threshold rule, the per-module table, the recurring dimensions (or a line that
    there are none) with their criteria, and the heatmap for writers that draw pictures."""
    criteria = (
        f"at least {result.min_layer_fraction:.0%} of the {result.num_layers} layers and "
        f"{result.min_token_fraction:.0%} of token positions (q/k/v/out_proj and fc1 inputs)"
    )
    parts: list[Part] = [
        # One line at 80 columns; narrower, it breaks after the comma only.
        Lines(
            [
                "threshold: |x| >= its LLM.int8 threshold (module)",
                f"else --threshold {result.threshold:g} (option)",
            ],
            separator=", ",
        ),
        outlier_sheet(result),
    ]
    if result.recurring:
        parts.append(recurring_sheet(result))
        parts.append(Lines([f"recurring: reaches the threshold in {criteria}"]))
    else:
        parts.append(Lines([f"no dimension reaches the threshold in {criteria}"]))
    heatmap = outlier_heatmap(result)
    if heatmap is not None:
        parts.append(heatmap)
    counts = (count_noun(result.sentences, "sentence"), count_noun(result.tokens, "token"))
    return Page(
        "outliers",
        headline=header_parts(result.info, *counts),
        notes=random_notes(result.random_weights),
        parts=parts,
        data=result.as_dict(),
    )


def render_outliers(console: Console, result: OutlierResult) -> None:
    """Print the header, the per-module table and the recurring dimensions."""
    write_terminal(console, outliers_page(result))
