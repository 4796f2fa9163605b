"""What every renderer shares: numbers, shapes, percentages, the model header line, the
random-weights note, token labels, colour detection and JSON writing.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..engine.records import ModelInfo, past_vocabulary_text

__all__ = [
    "RANDOM_NOTE",
    "Column",
    "count_noun",
    "fit_tables",
    "format_bytes",
    "format_count",
    "format_number",
    "format_percent",
    "format_shape",
    "has_colour",
    "header_line",
    "layer_headings",
    "print_header",
    "relative_names",
    "token_label",
    "write_json",
]

#: Said under the header of every result from a checkpoint with random weights.
RANDOM_NOTE = "note: this checkpoint has random weights; its numbers mean nothing"


def format_number(value: float | int | None) -> str:
    """Four significant digits, '-' for undefined."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}"


def format_count(value: int) -> str:
    """An exact count with thousands separators."""
    return f"{value:,}"


def format_bytes(value: int) -> str:
    """Bytes in binary units with three significant digits: ``2.45 GiB``."""
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    digits = 0 if size >= 100 else 1 if size >= 10 else 2
    return f"{size:.{digits}f} {unit}"


def format_shape(shape: Sequence[int] | None, *, missing: str = "-") -> str:
    """``[1, 9, 768]``; ``missing`` when there is no shape."""
    return missing if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def format_percent(value: float | None, digits: int = 1) -> str:
    """``12.5%``; '-' for undefined."""
    return "-" if value is None else f"{value:.{digits}%}"


def count_noun(n: int, noun: str) -> str:
    """``1 token``, ``2 tokens``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class TokenLike(Protocol):
    """What a table needs of a token or a predicted token."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def bytes(self) -> str | None: ...


def token_label(token: TokenLike) -> str:
    """A token's text as a JSON string, so spaces and newlines stay visible; a piece of a
    character (its ``bytes`` in hex) as ``<0xE2><0x80>``, so different pieces differ; an id
    past the vocabulary as ``<id 50265>``, unquoted, as no text decodes to it."""
    if token.bytes is not None:
        return "".join(f"<0x{byte.upper()}>" for byte in token.bytes.split())
    if token.text == past_vocabulary_text(token.id):
        return token.text
    return json.dumps(token.text, ensure_ascii=False)


def header_line(info: ModelInfo, *extra: str, quant: bool = True, dtype: bool = True) -> str:
    """``model X · quant Y · device Z · dtype W``, then any ``extra`` parts."""
    parts = [f"model {info.model}"]
    if quant:
        parts.append(f"quant {info.quant}")
    parts.append(f"device {info.device}")
    if dtype:
        parts.append(f"dtype {info.dtype}")
    return " · ".join([*parts, *extra])


def print_header(console: Console, line: str, random_weights: bool) -> None:
    """Print a result's header line and, for random weights, the note under it."""
    console.print(escape(line), highlight=False)
    if random_weights:
        console.print(RANDOM_NOTE, highlight=False)


def has_colour(console: Console) -> bool:
    """Whether ``console`` shows colours: a terminal with colours, and NO_COLOR unset."""
    return console.color_system is not None and not console.no_color


def write_json(stream: IO[str], payload: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document; NaN and Inf never appear (records already hold None)."""
    json.dump(payload, stream, indent=indent, ensure_ascii=False, allow_nan=False)
    stream.write("\n")


@dataclass(frozen=True)
class Column:
    """One column of a table that ``fit_tables`` lays out.

    ``key`` columns (the row number, the name) start every block; a ``wrap``
    column (a long name) may wrap onto a second line; every other column keeps
    its whole width, so a number is never cut.
    """

    header: str
    justify: JustifyMethod = "right"
    key: bool = False
    wrap: bool = False


#: What a column costs beside its content in a boxed table: a space each side and a rule.
_COLUMN_EDGES = 3


def _width(cell: str | Text) -> int:
    plain = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in plain.split("\n")), default=0)


def fit_tables(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    width: int,
    *,
    title: str | None = None,
    caption: str | None = None,
    row_styles: Sequence[str] | None = None,
    show_lines: bool = False,
    section_before: int | None = None,
) -> list[RenderableType]:
    """The rows as one table, or as stacked blocks when the columns do not fit ``width``.

    Columns keep their order; each block repeats the key columns and takes a
    run of the others, as few blocks as fit and as even as they can be, so no
    value is ever cut or dropped, only moved to the next block (as ``lens``
    continues its layers). Cells are plain text: no markup is read from them.
    ``section_before`` draws a rule above that row (a total). Titles and
    captions are lines of their own, so they never wrap inside a narrow table.
    """
    natural = [
        max([_width(column.header), *(_width(row[i]) for row in rows)])
        for i, column in enumerate(columns)
    ]
    keys = [i for i, column in enumerate(columns) if column.key]
    others = [i for i, column in enumerate(columns) if not column.key]
    room = width - 1 - sum(natural[i] + _COLUMN_EDGES for i in keys)
    costs = [natural[i] + _COLUMN_EDGES for i in others]
    blocks = [[others[j] for j in block] for block in _partition(costs, room)]
    out: list[RenderableType] = []
    for number, block in enumerate(blocks):
        table = Table(show_lines=show_lines)
        for i in [*keys, *block]:
            column = columns[i]
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=not column.wrap,
                overflow="fold" if column.wrap else "ellipsis",
                min_width=None if column.wrap else natural[i],
            )
        for r, row in enumerate(rows):
            if r == section_before:
                table.add_section()
            cells = [
                row[i] if isinstance(row[i], Text) else Text(str(row[i])) for i in [*keys, *block]
            ]
            style = row_styles[r] if row_styles is not None else None
            table.add_row(*cells, style=style or None)
        parts: list[RenderableType] = []
        if title:
            heading = title if number == 0 else f"{title}, continued"
            parts.append(Text(heading, style="table.title"))
        parts.append(table)
        if caption and number == len(blocks) - 1:
            parts.append(Text(caption, style="table.caption"))
        out.append(Group(*parts) if len(parts) > 1 else table)
    return out


def _partition(costs: Sequence[int], room: int) -> list[list[int]]:
    """Split ``costs`` (in order) into the fewest runs that fit ``room`` each, then even
    them out: the widest run is as narrow as that number of runs allows."""

    def runs(limit: int) -> list[list[int]]:
        out: list[list[int]] = [[]]
        used = 0
        for j, cost in enumerate(costs):
            if out[-1] and used + cost > limit:
                out.append([])
                used = 0
            out[-1].append(j)
            used += cost
        return out

    fewest = runs(room)
    low, high = max(costs, default=0), max(room, max(costs, default=0))
    while low < high:  # the narrowest limit that still needs no more runs
        middle = (low + high) // 2
        if len(runs(middle)) <= len(fewest):
            high = middle
        else:
            low = middle + 1
    return runs(low)


def relative_names(names: Sequence[str], depths: Sequence[int]) -> list[str]:
    """Names as a tree: each indented by its depth and, inside a parent shown above it,
    relative to that parent (``model.decoder.layers.0`` then ``  self_attn``)."""
    shown: list[str] = []
    parents: list[str] = []
    for name, depth in zip(names, depths, strict=True):
        del parents[depth:]
        parent = parents[-1] if parents else None
        if parent is not None and name.startswith(parent + "."):
            shown.append("  " * depth + name[len(parent) + 1 :])
        else:
            shown.append("  " * depth + name)
        parents.append(name)
    return shown


def layer_headings(names: Sequence[str]) -> list[tuple[str, int | None]]:
    """Rows for ``names`` grouped by decoder layer: a heading row (the layer's name, with
    None) before each layer's first module, then its modules named relative to it, each
    with its index in ``names``. Modules outside the layers keep their full name."""
    from ..model.names import layer_group

    rows: list[tuple[str, int | None]] = []
    heading = None
    for index, name in enumerate(names):
        root = layer_group(name)
        if root == name:
            rows.append((name, index))
            heading = None
            continue
        if root != heading:
            rows.append((root, None))
            heading = root
        rows.append(("  " + name[len(root) + 1 :], index))
    return rows
