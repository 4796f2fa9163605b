"""Trace results -> a page (the tokens and modules sheets), the FFN sparsity page, and CSV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from rich.console import Console

from ..results.records import STAT_NAMES, ModuleRecord
from .common import (
    format_percent,
    format_shape,
    format_stat,
    header_parts,
    random_notes,
    token_label,
    tree_rows,
)
from .csvfile import csv_rows
from .layout import NAME_COLUMN, Column
from .page import Cell, Page, Sheet, Style, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.sparsity import LayerSparsity
    from ..results.trace import TraceResult

__all__ = [
    "TABLE_STATS",
    "CsvWriter",
    "modules_sheet",
    "render_trace",
    "sparsity_page",
    "tokens_sheet",
    "trace_page",
]


#: The statistics a table shows unless ``--stats`` asks for others: four columns fit beside
#: the structure in two blocks at 80 columns. nan and inf join them when a value is not finite.
TABLE_STATS = ("mean", "std", "absmax", "zeros")


def tokens_sheet(result: TraceResult) -> Sheet:
    """Every input token: position, id and the text it decodes to (bytes for a piece)."""
    columns = [Column("pos", key=True), Column("id"), Column("text", justify="left", wrap=True)]
    rows = [
        [cell(str(pos)), cell(str(token.id)), cell(token_label(token))]
        for pos, token in enumerate(result.tokens)
    ]
    return Sheet(f"tokens ({len(result.tokens)})", columns, rows, name="tokens")


def table_stats(result: TraceResult, stats: Sequence[str] | None) -> tuple[str, ...]:
    """The statistic columns: those asked for, else TABLE_STATS (+ nan, inf when present)."""
    if stats is not None:
        return tuple(stats)
    nonfinite = any(m.stats is not None and m.stats.nonfinite for m in result.modules)
    return TABLE_STATS + (("nan", "inf") if nonfinite else ())


def modules_sheet(result: TraceResult, stats: Sequence[str] | None = None) -> Sheet:
    """The module calls in execution order, as a tree of names, in two column groups: the
    structure (``#``, type, shape, dtype), then the weight and statistics."""
    shown = table_stats(result, stats) if not result.dry_run else ()
    columns = [
        NAME_COLUMN,
        Column("#", group="structure"),
        Column("type", justify="left", group="structure"),
        Column("shape", justify="left", group="structure"),
        Column("dtype", justify="left", group="structure"),
        Column("weight", justify="left", group="values"),
        *(Column(name, group="values") for name in shown),
    ]
    modules = result.modules
    rows = [
        [cell(text) for text in [name, *([""] * (len(columns) - 1))]]
        if index is None
        else _module_cells(modules[index], name, shown)
        for name, index in tree_rows([m.name for m in modules], [m.depth for m in modules])
    ]
    title = f"modules ({len(result.modules)}, execution order)"
    return Sheet(title, columns, rows, name="modules")


def _module_cells(record: ModuleRecord, name: str, stats: Sequence[str]) -> list[Cell]:
    if record.call:
        name += f" (call {record.call})"
    shape = format_shape(record.shape) if record.output == "tensor" else record.output
    cells = [
        name,
        str(record.index),
        record.type,
        shape,
        record.dtype or "-",
        _weight_cell(record),
    ]
    values = record.stats.as_dict() if record.stats is not None else {}
    return [cell(text) for text in cells] + [_stat_cell(stat, values.get(stat)) for stat in stats]


def _stat_cell(name: str, value: float | int | None) -> Cell:
    """A statistic's text and number (a writer may sort by it); non-finite ones styled so."""
    text = format_stat(name, value)
    finite = isinstance(value, int) or (value is not None and math.isfinite(value))
    return cell(text, Style.plain if finite or value is None else Style.nonfinite, value=value)


def _weight_cell(record: ModuleRecord) -> str:
    """The weight's dtype, with its home when it is not where the module ran (offload)."""
    if record.weight_dtype is None:
        return "-"
    if record.weight_device is not None and record.weight_device != record.device:
        return f"{record.weight_dtype} ({record.weight_device})"
    return record.weight_dtype


def trace_page(result: TraceResult, stats: Sequence[str] | None = None) -> Page:
    """The header (with the dry-run note), the tokens and the module calls of one traced
    sentence; ``stats`` None shows the table's default statistics."""
    extra = ("dry run: meta device, no weights, no statistics",) if result.dry_run else ()
    return Page(
        "trace",
        headline=header_parts(result.info, *extra),
        notes=random_notes(result.random_weights),
        parts=[tokens_sheet(result), modules_sheet(result, stats)],
        data=result.as_dict(),
    )


def render_trace(
    console: Console,
    result: TraceResult,
    stats: Sequence[str] | None = None,
    *,
    header: bool = True,
) -> None:
    """Print the page of one traced sentence (without the model line if ``header`` is False)."""
    write_terminal(console, trace_page(result, stats), header=header)


def sparsity_page(rows: Sequence[LayerSparsity], many: bool) -> Page:
    """Per-layer ReLU zeros; dead units only when several sentences were traced."""
    tokens = rows[0].tokens if rows else 0
    columns = [Column("layer", key=True), Column("zeros")]
    if many:
        columns.append(Column("dead units"))
    cells = [
        [
            cell(str(row.layer)),
            cell(format_percent(row.zeros), value=row.zeros),
            *([cell(f"{row.dead}/{row.units}")] if many else []),
        ]
        for row in rows
    ]
    title = f"FFN sparsity after activation_fn ({tokens} tokens)"
    sheet = Sheet(title, columns, cells, name="sparsity")
    data = {"ffn": [row.as_dict() for row in rows]}
    return Page("sparsity", parts=[sheet] if rows else [], data=data)


class CsvWriter:
    """One row per (sentence, module call); the header comes with the first row, or at
    ``finish`` when there was none, so an error found before any result writes nothing.

    Trace keeps this writer rather than a page's flat sheet (``Page.flat``, which the
    other commands' CSV writes): its columns are known before any result (the chosen
    statistics), so an input without sentences still gets its header, and its rows are
    raw values (every digit, the sentence and its text on each row) where the table
    rounds, names as a tree and shows a chosen few statistics.
    """

    BASE_COLUMNS = (
        "sentence",  # the sentence's position in the input ("index" in the JSON)
        "text",
        "order",  # the module call's position in execution order
        "module",
        "type",
        "layer",
        "call",
        "output",
        "shape",
        "dtype",
        "device",
        "weight_dtype",
    )

    def __init__(self, stream: IO[str], stats: Sequence[str] = STAT_NAMES) -> None:
        self._stats = tuple(stats)
        self._rows = csv_rows(stream)
        self._header = False

    def _write_header(self) -> None:
        if not self._header:
            self._header = True
            self._rows.writerow((*self.BASE_COLUMNS, *self._stats))

    def write(self, result: TraceResult) -> None:
        self._write_header()
        for m in result.modules:
            values = m.stats.as_dict(self._stats) if m.stats is not None else {}
            shape = "x".join(str(d) for d in m.shape) if m.shape is not None else ""
            self._rows.writerow(
                (
                    result.index,
                    result.text if result.text is not None else "",
                    m.index,
                    m.name,
                    m.type,
                    "" if m.layer is None else m.layer,
                    m.call,
                    m.output,
                    shape,
                    m.dtype or "",
                    m.device or "",
                    m.weight_dtype or "",
                    *(_csv_value(values.get(name)) for name in self._stats),
                )
            )

    def finish(self) -> None:
        """End a run that went through: an input without sentences still gets its header."""
        self._write_header()


def _csv_value(value: float | int | None) -> str:
    return "" if value is None else repr(value)
