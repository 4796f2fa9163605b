"""Compare and outlier results -> rich tables. Renderers take a Console; they never create one.

Marks are words, not only colours, so a console without colour (a pipe,
``NO_COLOR``) shows everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .trace import format_number

if TYPE_CHECKING:
    from ..compare import CompareResult, ModuleDiff
    from ..outliers import DimCount, ModuleOutliers, OutlierResult

__all__ = [
    "compare_table",
    "format_layers",
    "outlier_table",
    "recurring_table",
    "render_compare",
    "render_outliers",
]

#: Most dimensions listed in one row of the outlier table; the JSON has them all.
MAX_DIMS_SHOWN = 5
RANDOM_NOTE = "note: this checkpoint has random weights; its numbers describe no trained model"


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# -- compare -------------------------------------------------------------------------


def compare_summary(result: CompareResult) -> str:
    """The line that names the first module above the tolerance, or says there is none."""
    first = result.first_exceeding
    if first is None:
        return f"no module's relative error exceeds the tolerance {result.tolerance:g}"
    if first.status != "compared":
        detail = first.status
    elif first.rel_error is None:
        detail = "relative error undefined"
    else:
        detail = f"relative error {format_number(first.rel_error)}"
    call = f" (call {first.call})" if first.call else ""
    return f"first module above the tolerance {result.tolerance:g}: {first.name}{call} ({detail})"


def compare_table(result: CompareResult) -> Table:
    """One row per module call in execution order; rows above the tolerance are marked."""
    first = result.first_exceeding
    table = Table(
        title=f"modules ({len(result.modules)}, execution order)",
        title_justify="left",
        caption=escape(compare_summary(result)),
        caption_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("module", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("cosine", justify="right")
    table.add_column("rel err", justify="right")
    table.add_column("max abs diff", justify="right")
    table.add_column("", no_wrap=True)
    for row in result.modules:
        mark = "FIRST" if row is first else ("over" if row.exceeds else "")
        style = "bold red" if row is first else ("red" if row.exceeds else "")
        table.add_row(*_diff_cells(row), mark, style=style)
    return table


def _diff_cells(row: ModuleDiff) -> list[str]:
    name = ("  " * row.depth) + row.name + (f" (call {row.call})" if row.call else "")
    shape = "[" + ", ".join(str(d) for d in row.shape) + "]" if row.shape is not None else "-"
    if row.status != "compared":
        metrics = [row.status, "-", "-"]
    else:
        cosine = "-" if row.cosine is None else f"{row.cosine:.6f}"
        metrics = [cosine, format_number(row.rel_error), format_number(row.max_abs_diff)]
    return [str(row.index), escape(name), row.type, shape, *metrics]


def render_compare(console: Console, result: CompareResult) -> None:
    """Print what was compared with what, the random-weights note, and the table."""
    setting, reference = result.setting, result.reference
    console.print(
        escape(
            f"model {result.model} · device {result.device} · "
            f"{setting.quant} {setting.dtype} against {reference.quant} {reference.dtype} "
            f"(reference) · {_count(len(result.tokens), 'token')}"
        ),
        highlight=False,
    )
    if result.random_weights:
        console.print(RANDOM_NOTE, highlight=False)
    console.print(compare_table(result), highlight=False)


# -- outliers ------------------------------------------------------------------------


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
        _percent(m.token_fraction),
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
            _percent(r.layer_fraction),
            _percent(r.token_fraction),
            format_number(r.absmax),
        )
    return table


def render_outliers(console: Console, result: OutlierResult) -> None:
    """Print the header, the per-module table and the recurring dimensions."""
    console.print(
        escape(
            f"model {result.model} · quant {result.quant} · device {result.device} · "
            f"dtype {result.dtype} · {_count(result.sentences, 'sentence')} · "
            f"{_count(result.tokens, 'token')}"
        ),
        highlight=False,
    )
    if result.random_weights:
        console.print(RANDOM_NOTE, highlight=False)
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
