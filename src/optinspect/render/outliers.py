"""Outlier results -> the per-module table of linear-layer inputs and the recurring
dimensions.

Renderers take a Console; they never create one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import count_noun, format_number, format_percent, header_line, print_header

if TYPE_CHECKING:
    from ..outliers import DimCount, ModuleOutliers, OutlierResult

__all__ = ["format_layers", "outlier_table", "recurring_table", "render_outliers"]

#: Most dimensions listed in one row of the outlier table; the JSON has them all.
MAX_DIMS_SHOWN = 5


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


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def _dims_cell(dims: Sequence[DimCount]) -> str:
    top = sorted(dims, key=lambda d: (-d.count, d.dim))[:MAX_DIMS_SHOWN]
    text = " ".join(f"{d.dim} ({d.fraction:.0%})" for d in top)
    if len(dims) > MAX_DIMS_SHOWN:
        text += f" +{len(dims) - MAX_DIMS_SHOWN} more"
    return text or "-"


def outlier_table(result: OutlierResult) -> Table:
    """One row per linear layer: where its input reached the threshold."""
    table = Table(
        title=f"linear-layer inputs ({len(result.modules)}, execution order)",
        title_justify="left",
    )
    table.add_column("module", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("in", justify="right")
    table.add_column("threshold", justify="right", no_wrap=True)
    table.add_column("tokens hit", justify="right")
    table.add_column("fraction", justify="right")
    table.add_column("absmax", justify="right")
    table.add_column("dimensions (most tokens first)", no_wrap=True)
    for m in result.modules:
        table.add_row(*_outlier_cells(m), style="bold" if m.dims else "")
    return table


def _outlier_cells(m: ModuleOutliers) -> list[str]:
    return [
        escape(m.name),
        m.type,
        str(m.in_features),
        f"{m.threshold:g} ({m.threshold_source})",
        str(m.tokens_affected),
        format_percent(m.token_fraction),
        format_number(m.absmax),
        _dims_cell(m.dims),
    ]


def recurring_table(result: OutlierResult) -> Table:
    """One row per recurring hidden dimension."""
    table = Table(title=f"recurring dimensions ({len(result.recurring)})", title_justify="left")
    table.add_column("dim", justify="right")
    table.add_column("layers", no_wrap=True)
    table.add_column("of layers", justify="right")
    table.add_column("of tokens", justify="right")
    table.add_column("absmax", justify="right")
    for r in result.recurring:
        table.add_row(
            str(r.dim),
            format_layers(r.layers),
            format_percent(r.layer_fraction),
            format_percent(r.token_fraction),
            format_number(r.absmax),
        )
    return table


def render_outliers(console: Console, result: OutlierResult) -> None:
    """Print the header, the per-module table and the recurring dimensions."""
    line = header_line(
        result.info, count_noun(result.sentences, "sentence"), count_noun(result.tokens, "token")
    )
    print_header(console, line, result.random_weights)
    console.print(
        f"threshold: |x| >= the module's own LLM.int8 threshold (module), "
        f"else --threshold {result.threshold:g} (option)",
        highlight=False,
    )
    console.print(outlier_table(result), highlight=False)
    criteria = (
        f"at least {result.min_layer_fraction:.0%} of the {result.num_layers} layers and "
        f"{result.min_token_fraction:.0%} of token positions (q/k/v/out_proj and fc1 inputs)"
    )
    if result.recurring:
        console.print(recurring_table(result), highlight=False)
        console.print(f"recurring: reaches the threshold in {criteria}", highlight=False)
    else:
        console.print(f"no dimension reaches the threshold in {criteria}", highlight=False)
