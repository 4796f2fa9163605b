"""Compare results -> the per-module table of error metrics, with the first module above
the tolerance marked.

Renderers take a Console; they never create one. Marks are words, not only
colours, so a console without colour (a pipe, ``NO_COLOR``) shows everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, RenderableType

from .common import (
    count_noun,
    format_number,
    format_shape,
    header_line,
    print_header,
    tree_rows,
)
from .layout import NAME_BREAKS, Column, fit_tables

if TYPE_CHECKING:
    from ..results.compare import CompareResult, ModuleDiff

__all__ = ["compare_summary", "compare_tables", "render_compare", "render_compare_header"]


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


def compare_tables(result: CompareResult, width: int = 200) -> list[RenderableType]:
    """One row per module call in execution order, names as a tree; rows above the
    tolerance are marked in words (``over``, ``FIRST``) and colour. Blocks fit ``width``:
    the metrics and the mark first, then each module's type and shape."""
    first = result.first_exceeding
    columns = [
        Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS),
        Column("#", group="metrics"),
        Column("rel err", group="metrics"),
        Column("cosine", group="metrics"),
        Column("max abs diff", group="metrics"),
        Column("mark", justify="left", group="metrics"),
        Column("type", justify="left", group="structure"),
        Column("shape", justify="left", group="structure"),
    ]
    modules = result.modules
    rows = []
    styles = []
    for name, index in tree_rows([m.name for m in modules], [m.depth for m in modules]):
        if index is None:
            rows.append([name, *([""] * (len(columns) - 1))])
            styles.append("")
            continue
        row = modules[index]
        mark = "FIRST" if row is first else ("over" if row.exceeds else "")
        styles.append("bold red" if row is first else ("red" if row.exceeds else ""))
        rows.append(_diff_cells(row, name, mark))
    return fit_tables(
        columns,
        rows,
        width,
        title=f"modules ({len(result.modules)}, execution order)",
        caption=compare_summary(result),
        row_styles=styles,
    )


def _diff_cells(row: ModuleDiff, name: str, mark: str) -> list[str]:
    name += f" (call {row.call})" if row.call else ""
    if row.status != "compared":
        metrics = [row.status, "-", "-"]
    else:
        cosine = "-" if row.cosine is None else f"{row.cosine:.6f}"
        metrics = [format_number(row.rel_error), cosine, format_number(row.max_abs_diff)]
    return [name, str(row.index), *metrics, mark, row.type, format_shape(row.shape)]


def render_compare_header(console: Console, result: CompareResult) -> None:
    """What was compared with what, and the random-weights note."""
    setting, reference = result.setting, result.reference
    line = header_line(
        result.info,
        f"{setting.quant} {setting.dtype} against {reference.quant} {reference.dtype} (reference)",
        quant=False,
        dtype=False,
    )
    print_header(console, line, result.random_weights)


def render_compare(console: Console, result: CompareResult, *, header: bool = True) -> None:
    """Print the header (unless ``header`` is False), the token count and the table."""
    if header:
        render_compare_header(console, result)
    console.print(count_noun(len(result.tokens), "token"), highlight=False)
    for table in compare_tables(result, console.width):
        console.print(table, highlight=False)
