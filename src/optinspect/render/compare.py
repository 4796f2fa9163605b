"""Compare results -> a page: the per-module table of error metrics, with the first
module above the tolerance marked. Marks are words, not only colours, so a console
without colour (a pipe, ``NO_COLOR``) shows everything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from .common import (
    count_noun,
    format_number,
    format_shape,
    header_parts,
    random_notes,
    tree_rows,
)
from .layout import NAME_COLUMN, Column, grouped
from .page import Lines, Page, Sheet, Style, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.compare import CompareResult, ModuleDiff

__all__ = ["compare_page", "compare_sheet", "compare_summary", "render_compare"]


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


def compare_sheet(result: CompareResult) -> Sheet:
    """One row per module call in execution order, names as a tree; rows above the
    tolerance are marked in words (``over``, ``FIRST``) and style. The metrics and the
    mark come first, then each module's type and shape."""
    first = result.first_exceeding
    columns = [
        NAME_COLUMN,
        *grouped("metrics", "#", "rel err", "cosine", "max abs diff"),
        Column("mark", justify="left", group="metrics"),
        Column("type", justify="left", group="structure"),
        Column("shape", justify="left", group="structure"),
    ]
    modules = result.modules
    rows = []
    styles = []
    for name, index in tree_rows([m.name for m in modules], [m.depth for m in modules]):
        if index is None:
            rows.append([cell(name), *([cell("")] * (len(columns) - 1))])
            styles.append(Style.plain)
            continue
        row = modules[index]
        mark = "FIRST" if row is first else ("over" if row.exceeds else "")
        over = Style.over if row.exceeds else Style.plain
        styles.append(Style.first_over if row is first else over)
        rows.append([cell(text) for text in _diff_cells(row, name, mark)])
    return Sheet(
        f"modules ({len(result.modules)}, execution order)",
        columns,
        rows,
        name="modules",
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


def compare_page(result: CompareResult) -> Page:
    """What was compared with what, the token count and the table."""
    setting, reference = result.setting, result.reference
    against = f"{setting.quant} {setting.dtype} against {reference.quant} {reference.dtype}"
    return Page(
        "compare",
        headline=header_parts(result.info, f"{against} (reference)", quant=False, dtype=False),
        notes=random_notes(result.random_weights),
        parts=[Lines([count_noun(len(result.tokens), "token")]), compare_sheet(result)],
        data=result.as_dict(),
    )


def render_compare(console: Console, result: CompareResult, *, header: bool = True) -> None:
    """Print the header (unless ``header`` is False), the token count and the table."""
    write_terminal(console, compare_page(result), header=header)
