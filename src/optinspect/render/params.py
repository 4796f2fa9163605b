"""Parameter reports -> a page: the breakdown table with its total, the notes under it,
what a loaded model holds, and the flat rows CSV writes.

    write_terminal(console, params_page(ParamsResult(count_params(inventory, by="layer"))))

No torch here.
"""

from __future__ import annotations

from rich.console import Console

from ..results.params import LoadedCount, ParamReport, ParamsResult, WeightBytes
from .common import format_bytes, format_count, tree_rows
from .layout import NAME_BREAKS, Column
from .page import Lines, Page, Part, Sheet, cell
from .terminal import write_terminal

__all__ = ["params_page", "render_params"]


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


def params_sheet(report: ParamReport) -> Sheet:
    """The breakdown with a total row that the rows add up to: the counts together and the
    bytes at each precision together; rows by module are named as a tree."""
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
    return Sheet(
        f"parameters by {report.by}",
        columns,
        [[cell(text) for text in row] for row in rows],
        name="params",
        section_before=len(rows) - 1,
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


def _flat(report: ParamReport) -> Sheet:
    """One row per breakdown row, no total: name, params and bytes at each precision."""
    columns = [Column(header) for header in ("name", "params", *(k for k, _ in _PRECISIONS))]
    rows = []
    for row in report.rows:
        values = row.bytes.as_dict()
        rows.append([row.name, row.params, *(values[key] for key, _ in _PRECISIONS)])
    return Sheet(report.by, columns, [[cell(str(value)) for value in row] for row in rows])


def params_page(result: ParamsResult) -> Page:
    """The model and its count, where the count comes from, the breakdown, the tie, what
    the bytes mean and, after a load, what the model holds. Only the config-only count
    has a CSV form (``flat``)."""
    report, loaded = result.report, result.loaded
    parts: list[Part] = [params_sheet(report)]
    if report.tied_to is not None:
        parts.append(Lines([f"lm_head.weight is tied to {report.tied_to}: counted once"]))
    parts.append(Lines(_BYTES_NOTE, separator="; "))
    if loaded is not None:
        parts.append(Lines(loaded_lines(report, loaded)))
    return Page(
        "params",
        headline=[f"model {report.model}", f"{format_count(report.total)} parameters"],
        notes=[source_line(report, loaded is not None)],
        parts=parts,
        data=result.as_dict(),
        flat=_flat(report) if loaded is None else None,
    )


def render_params(console: Console, report: ParamReport, loaded: LoadedCount | None = None) -> None:
    """Print the header lines, the breakdown table and the notes of one parameter report."""
    write_terminal(console, params_page(ParamsResult(report, loaded)))
