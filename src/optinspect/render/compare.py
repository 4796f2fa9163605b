"""Compare results -> the per-module table of error metrics, with the first module above
the tolerance marked.

Renderers take a Console; they never create one. Marks are words, not only
colours, so a console without colour (a pipe, ``NO_COLOR``) shows everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .common import count_noun, format_number, format_shape, header_line, print_header

if TYPE_CHECKING:
    from ..compare import CompareResult, ModuleDiff

__all__ = ["compare_summary", "compare_table", "render_compare"]


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
    shape = format_shape(row.shape)
    if row.status != "compared":
        metrics = [row.status, "-", "-"]
    else:
        cosine = "-" if row.cosine is None else f"{row.cosine:.6f}"
        metrics = [cosine, format_number(row.rel_error), format_number(row.max_abs_diff)]
    return [str(row.index), escape(name), row.type, shape, *metrics]


def render_compare(console: Console, result: CompareResult) -> None:
    """Print what was compared with what, the random-weights note, and the table."""
    setting, reference = result.setting, result.reference
    line = header_line(
        result.info,
        f"{setting.quant} {setting.dtype} against {reference.quant} {reference.dtype} (reference)",
        count_noun(len(result.tokens), "token"),
        quant=False,
        dtype=False,
    )
    print_header(console, line, result.random_weights)
    console.print(compare_table(result), highlight=False)
