"""Parameter reports -> the breakdown table, the notes under it, and CSV.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console, RenderableType
from rich.markup import escape

from ..results.params import LoadedCount, ParamReport, WeightBytes
from .common import format_bytes, format_count, tree_rows
from .csvfile import csv_rows
from .layout import NAME_BREAKS, Column, fit_tables, print_parts

__all__ = ["params_tables", "render_params", "write_params_csv"]


_PRECISIONS = (
    ("float32", "float32"),
    ("float16", "float16/bf16"),
    ("int8", "int8"),
    ("nf4", "nf4"),
)
#: Under the table, broken only between its parts.
_BYTES_NOTE = (
    "bytes: weights only, as bitsandbytes stores them",
    "int8 = LLM.int8, nf4 = 4-bit NF4",
    "lm_head, embeddings, norms and biases in float16",
)
#: Where a row's name may break: as a module name does, or after a space of a group's.
_NAME_BREAKS = rf"{NAME_BREAKS}|(?<= )"


def _byte_cells(weights: WeightBytes) -> list[str]:
    values = weights.as_dict()
    return [format_bytes(values[key]) for key, _ in _PRECISIONS]


def params_tables(report: ParamReport, width: int = 200) -> list[RenderableType]:
    """The breakdown with a total row that the rows add up to; blocks that fit ``width``,
    the counts together and the bytes together."""
    columns = [
        Column(report.by, justify="left", key=True, wrap=True, breaks=_NAME_BREAKS),
        Column("params", group="count"),
        Column("share", group="count"),
        *(Column(header, group="bytes") for _, header in _PRECISIONS),
    ]
    names = [row.name for row in report.rows]
    plain: list[tuple[str, int | None]] = [(name, i) for i, name in enumerate(names)]
    shown = tree_rows(names) if report.by == "module" else plain
    rows = []
    for name, index in shown:
        if index is None:
            rows.append([name, *([""] * (len(columns) - 1))])
            continue
        row = report.rows[index]
        share = row.params / report.total if report.total else 0.0
        share_text = "<0.1%" if 0 < share < 0.0005 else f"{share:.1%}"
        rows.append([name, format_count(row.params), share_text, *_byte_cells(row.bytes)])
    rows.append(["total", format_count(report.total), "100.0%", *_byte_cells(report.bytes)])
    return fit_tables(
        columns, rows, width, title=f"parameters by {report.by}", section_before=len(rows) - 1
    )


def loaded_lines(report: ParamReport, loaded: LoadedCount) -> list[str]:
    """What a loaded model holds, against the config-only count: how it was loaded, then
    its parameters, its stored elements and its memory, a line each."""
    same = (
        "the same as the config"
        if loaded.params == report.total
        else f"the config says {format_count(report.total)}"
    )
    packed = " (4-bit weights pack two values a byte)" if loaded.stored != loaded.params else ""
    return [
        f"loaded with quant {loaded.quant} · device {loaded.device} · dtype {loaded.dtype}",
        f"  {format_count(loaded.params)} parameters, {same}",
        f"  stored as {format_count(loaded.stored)} elements{packed}",
        f"  {format_bytes(loaded.bytes)} in memory with quantization statistics",
    ]


def source_line(report: ParamReport, loaded: bool) -> str:
    """Where the count comes from; that no weight was read only when none was."""
    source = "the built-in config" if report.builtin else "the config on the meta device"
    tail = "the loaded model is measured below" if loaded else "no weights read"
    return f"counted from {source}; {tail}"


def render_params(console: Console, report: ParamReport, loaded: LoadedCount | None = None) -> None:
    """Print the header lines, the breakdown table and the notes of one parameter report."""
    print_parts(console, [f"model {report.model}", f"{format_count(report.total)} parameters"])
    console.print(escape(source_line(report, loaded is not None)), highlight=False)
    for table in params_tables(report, console.width):
        console.print(table)
    if report.tied_to is not None:
        console.print(
            escape(f"lm_head.weight is tied to {report.tied_to}: counted once"), highlight=False
        )
    print_parts(console, _BYTES_NOTE, "; ")
    if loaded is not None:
        for line in loaded_lines(report, loaded):
            console.print(escape(line), highlight=False)


def write_params_csv(stream: IO[str], report: ParamReport) -> None:
    """One header line, then one line per row: name, params and bytes at each precision."""
    writer = csv_rows(stream)
    writer.writerow(["name", "params", *(key for key, _ in _PRECISIONS)])
    for row in report.rows:
        values = row.bytes.as_dict()
        writer.writerow([row.name, row.params, *(values[key] for key, _ in _PRECISIONS)])
