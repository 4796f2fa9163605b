"""Trace results -> the tokens and modules tables, the FFN sparsity table, and CSV.

Renderers take a Console; they never create one.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..engine.records import STAT_NAMES, ModuleRecord
from .common import (
    format_number,
    format_percent,
    format_shape,
    header_line,
    print_header,
    token_label,
)

if TYPE_CHECKING:
    from ..sparsity import LayerSparsity
    from ..tracing import TraceResult

__all__ = ["CsvWriter", "modules_table", "render_trace", "sparsity_table", "tokens_table"]


def tokens_table(result: TraceResult) -> Table:
    table = Table(title=f"tokens ({len(result.tokens)})", title_justify="left")
    table.add_column("pos", justify="right")
    table.add_column("id", justify="right")
    table.add_column("text", no_wrap=True)
    for pos, token in enumerate(result.tokens):
        table.add_row(str(pos), str(token.id), escape(token_label(token.text)))
    return table


def modules_table(result: TraceResult, stats: Sequence[str] = STAT_NAMES) -> Table:
    title = f"modules ({len(result.modules)}, execution order)"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("module", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype")
    table.add_column("weight")
    show_stats = not result.dry_run
    if show_stats:
        for name in stats:
            table.add_column(name, justify="right")
    for record in result.modules:
        table.add_row(*_module_cells(record, stats if show_stats else ()))
    return table


def _module_cells(record: ModuleRecord, stats: Sequence[str]) -> list[str]:
    name = ("  " * record.depth) + record.name
    if record.call:
        name += f" (call {record.call})"
    shape = format_shape(record.shape) if record.output == "tensor" else record.output
    cells = [
        str(record.index),
        escape(name),
        record.type,
        shape,
        record.dtype or "-",
        _weight_cell(record),
    ]
    values = record.stats.as_dict() if record.stats is not None else {}
    for stat in stats:
        value = values.get(stat)
        if stat == "zeros" and value is not None:
            cells.append(format_percent(value))
        else:
            cells.append(format_number(value))
    return cells


def _weight_cell(record: ModuleRecord) -> str:
    """The weight's dtype, with its home when it is not where the module ran (offload)."""
    if record.weight_dtype is None:
        return "-"
    if record.weight_device is not None and record.weight_device != record.device:
        return f"{record.weight_dtype} ({record.weight_device})"
    return record.weight_dtype


def render_trace(console: Console, result: TraceResult, stats: Sequence[str] = STAT_NAMES) -> None:
    """Print the header, the tokens and the module table of one traced sentence."""
    extra = ("dry run: meta device, no weights, no statistics",) if result.dry_run else ()
    print_header(console, header_line(result.info, *extra), result.random_weights)
    console.print(tokens_table(result))
    console.print(modules_table(result, stats))


def sparsity_table(rows: Sequence[LayerSparsity], many: bool) -> Table:
    """Per-layer ReLU zeros; dead units only when several sentences were traced."""
    tokens = rows[0].tokens if rows else 0
    title = f"FFN sparsity after activation_fn ({tokens} tokens)"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("layer", justify="right")
    table.add_column("zeros", justify="right")
    if many:
        table.add_column("dead units", justify="right")
    for row in rows:
        cells = [str(row.layer), format_percent(row.zeros)]
        if many:
            cells.append(f"{row.dead}/{row.units}")
        table.add_row(*cells)
    return table


class CsvWriter:
    """One row per (sentence, module call); the header comes with the first row."""

    BASE_COLUMNS = (
        "sentence",
        "text",
        "index",
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
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow((*self.BASE_COLUMNS, *self._stats))

    def write(self, result: TraceResult) -> None:
        for m in result.modules:
            values = m.stats.as_dict(self._stats) if m.stats is not None else {}
            shape = "x".join(str(d) for d in m.shape) if m.shape is not None else ""
            self._writer.writerow(
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


def _csv_value(value: float | int | None) -> str:
    return "" if value is None else repr(value)
