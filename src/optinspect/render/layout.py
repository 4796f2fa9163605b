"""Laying text out for a width: tables split into blocks, and lines that break only
between whole values. No value (a number, a shape, a name's part) is ever cut.

    columns = [Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS),
               Column("mean", group="stats"), Column("std", group="stats")]
    for table in fit_tables(columns, rows, console.width, title="modules"):
        console.print(table)

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = ["NAME_BREAKS", "NAME_COLUMN", "Column", "fit_tables", "grouped", "print_parts"]
__all__ += ["wrap_pieces"]

#: Where a dotted module name may break: after a dot, but never before a layer's index
#: (``model.decoder.`` / ``layers.0``, not ``model.decoder.layers.`` / ``0``).
NAME_BREAKS = r"(?<=\.)(?!\d)"
#: Where a header may break: after a space.
_WORD_BREAKS = r"(?<= )"


@dataclass(frozen=True)
class Column:
    """One column of a table that ``fit_tables`` lays out.

    ``key`` columns (the row number, the name) start every block. A ``wrap`` column may
    take several lines: only where ``breaks`` allows (a regular expression that matches
    the places between two characters, such as NAME_BREAKS), or anywhere when
    ``breaks`` is None (free text, a token). Every other column keeps its whole width,
    so a number is never cut. Neighbouring columns of one ``group`` stay in one block
    where the width allows, so a block holds values that belong together.
    """

    header: str
    justify: JustifyMethod = "right"
    key: bool = False
    wrap: bool = False
    breaks: str | None = None
    group: str = ""

    @property
    def shrinks(self) -> bool:
        """Whether the layout may narrow it: a wrap column with places to break."""
        return self.wrap and self.breaks is not None


#: The dotted module name that starts a table's rows; it wraps only at NAME_BREAKS.
NAME_COLUMN = Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS)


def grouped(group: str, *headers: str) -> list[Column]:
    """Right-justified columns (numbers) of one ``group``, kept in one block where they fit."""
    return [Column(header, group=group) for header in headers]


#: What a column costs beside its content in a boxed table: a space each side and a rule.
_COLUMN_EDGES = 3
#: The lines of a boxed table besides its header and rows: top, header rule, bottom.
_TABLE_LINES = 3
#: What a line a name wraps onto costs beside the line itself: a wrapped name reads
#: slower, so names wrap only where that saves a block of many rows.
_WRAPPED = 2


def _pack(pieces: Sequence[str], width: int, indent: int) -> list[list[int]]:
    """Which pieces go on each line (indices) so that lines break only between two
    pieces and fit ``width`` where the pieces allow (see ``wrap_pieces``)."""
    lines: list[list[int]] = [[]]
    line = ""
    for index, piece in enumerate(pieces):
        if line.strip() and cell_len((line + piece).rstrip()) > width:
            lines.append([])
            line = " " * indent + piece.lstrip()
        else:
            line += piece
        lines[-1].append(index)
    return lines


def wrap_pieces(pieces: Sequence[str | Text], width: int, *, indent: int = 0) -> list[Text]:
    """The pieces in order, as lines of at most ``width`` cells that break only between
    two pieces; a piece wider than ``width`` gets a line of its own. A continuation line
    starts with ``indent`` spaces, without the spaces its first piece began with."""
    texts = [piece if isinstance(piece, Text) else Text(piece) for piece in pieces]
    out: list[Text] = []
    for number, indices in enumerate(_pack([t.plain for t in texts], width, indent)):
        line = Text(" " * indent if number else "")
        for position, index in enumerate(indices):
            piece = texts[index]
            if number and not position:  # a continuation line's first piece
                piece = piece[len(piece.plain) - len(piece.plain.lstrip()) :]
            line.append_text(piece)
        line.rstrip()
        out.append(line)
    return out


def print_parts(console: Console, parts: Sequence[str], separator: str = " · ") -> None:
    """Print the parts joined by ``separator``, breaking lines only between two parts."""
    pieces = [part + separator for part in parts[:-1]] + list(parts[-1:])
    for line in wrap_pieces(pieces, console.width):
        console.print(line, highlight=False)


@cache
def _wrap_line(line: str, width: int, breaks: str) -> tuple[str, ...]:
    """One line of a cell broken where ``breaks`` matches to fit ``width``; continuation
    lines keep the line's own indentation (a tree name stays under its parent)."""
    indent = len(line) - len(line.lstrip(" "))
    return tuple(line.plain for line in wrap_pieces(re.split(breaks, line), width, indent=indent))


def _wrap(cell: str, width: int, breaks: str) -> str:
    return "\n".join(part for line in cell.split("\n") for part in _wrap_line(line, width, breaks))


def _lines(text: str | Text) -> list[str]:
    return (text.plain if isinstance(text, Text) else text).split("\n")


def _width(text: str | Text) -> int:
    return max((cell_len(line) for line in _lines(text)), default=0)


def _narrowest(text: str, breaks: str) -> int:
    """The width of the widest piece: as narrow as ``text`` can wrap."""
    return max(
        (cell_len(piece.strip()) for line in _lines(text) for piece in re.split(breaks, line)),
        default=0,
    )


class _Cells:
    """A column's header and cells, and their wrapped forms at any width (cached). Only
    a shrinking column wraps, and its cells are plain text (names, lists of values)."""

    def __init__(self, column: Column, cells: Sequence[str | Text]) -> None:
        self.column = column
        self.cells = [cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells]
        self.natural = max([_width(column.header), *(_width(c) for c in self.cells)])
        self.minimum = self.natural
        if column.shrinks:
            assert column.breaks is not None
            pieces = [_narrowest(c.plain, column.breaks) for c in self.cells]
            self.minimum = max([_narrowest(column.header, _WORD_BREAKS), *pieces])
        self.at = cache(self._at)

    def _at(self, width: int) -> tuple[Text, list[Text], list[int]]:
        """Header, cells and each cell's line count when the column is ``width`` wide."""
        if width >= self.natural or not self.column.shrinks:
            header, cells = Text(self.column.header), self.cells
        else:
            assert self.column.breaks is not None
            header = Text(_wrap(self.column.header, width, _WORD_BREAKS))
            cells = [Text(_wrap(c.plain, width, self.column.breaks)) for c in self.cells]
        return header, cells, [len(_lines(c)) for c in cells]


@dataclass(frozen=True)
class _Layout:
    """A choice of layout: the key columns' widths, and each block's columns with their
    widths; ``score`` orders choices, lower first."""

    keys: dict[int, int]
    blocks: list[dict[int, int]]
    score: tuple[int, int, int, int, int]


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

    Columns keep their order: a renderer puts first what a reader needs first. Each block
    repeats the key columns and takes a run of the others. Of the layouts that fit, the
    one with the fewest lines wins, then the one that splits the fewest groups, then the
    most even; a long name may wrap at its dots when that saves lines (a block), each line
    it wraps onto counting three times, as a wrapped name reads slower. No value
    is ever cut or dropped, only moved to the next block. Cells are plain text: no markup
    is read from them. ``section_before`` draws a rule above that row (a total). Titles
    and captions are lines of their own, the title marked ``continued`` after the first.
    """
    table_cells = [_Cells(column, [row[i] for row in rows]) for i, column in enumerate(columns)]
    fixed = 1 if title else 0
    fixed += 1 if section_before is not None else 0
    fixed += max(len(rows) - 1, 0) if show_lines else 0
    layout = _choose(table_cells, width, fixed)
    out: list[RenderableType] = []
    for number, block in enumerate(layout.blocks):
        shown = {**layout.keys, **block}
        table = Table(show_lines=show_lines)
        texts = []
        for i, column_width in shown.items():
            header, cells, _ = table_cells[i].at(column_width)
            column = columns[i]
            table.add_column(
                header,
                justify=column.justify,
                no_wrap=not column.wrap,
                overflow="fold" if column.wrap else "ellipsis",
                min_width=column_width if column.shrinks or not column.wrap else None,
            )
            texts.append(cells)
        for r in range(len(rows)):
            if r == section_before:
                table.add_section()
            style = row_styles[r] if row_styles is not None else None
            table.add_row(*(cells[r] for cells in texts), style=style or None)
        parts: list[RenderableType] = []
        if title:
            parts.append(Text(title if number == 0 else f"{title}, continued", "table.title"))
        parts.append(table)
        if caption and number == len(layout.blocks) - 1:
            parts.append(Text(caption, style="table.caption"))
        out.append(Group(*parts) if len(parts) > 1 else table)
    return out


def _choose(table_cells: list[_Cells], width: int, fixed: int) -> _Layout:
    """The best layout: for each width a shrinking key column (a name) may wrap to, the
    best blocks beside it; the natural width unless wrapping saves lines."""
    natural = {i: c.natural for i, c in enumerate(table_cells) if c.column.key}
    best = _blocks(table_cells, natural, width, fixed)
    shrinking = [i for i in natural if table_cells[i].column.shrinks]
    if (len(best.blocks) == 1 and best.score[0] == 0) or not shrinking:
        return best
    index = shrinking[0]
    name = table_cells[index]
    tried = {name.natural}
    for narrower in range(name.natural - 1, name.minimum - 1, -1):
        wrapped = _width_at(name, narrower)  # the same lines as wrapping at ``wrapped``
        if wrapped in tried:
            continue
        tried.add(wrapped)
        candidate = _blocks(table_cells, {**natural, index: wrapped}, width, fixed)
        if candidate.score < best.score:
            best = candidate
    return best


def _width_at(cells: _Cells, width: int) -> int:
    """How wide the column's lines are once wrapped to ``width``."""
    _, wrapped, _ = cells.at(width)
    return max(_width(c) for c in [*wrapped, Text(cells.column.header)])


def _blocks(table_cells: list[_Cells], keys: dict[int, int], width: int, fixed: int) -> _Layout:
    """The blocks of the other columns beside ``keys`` (index -> width): of the runs that
    fit, the fewest lines, then the fewest groups split, then the most even. A column
    wider than the room on its own gets a block of its own, and the cells it takes past
    the width count first: a layout that fits beats any that does not."""
    others = [i for i, c in enumerate(table_cells) if not c.column.key]
    room = width - 1 - sum(w + _COLUMN_EDGES for w in keys.values())
    key_lines = [1] * len(table_cells[0].cells) if table_cells else []
    key_header = 1
    wrapped_names = 0
    for i, w in keys.items():
        header, _, counts = table_cells[i].at(w)
        key_lines = [max(a, b) for a, b in zip(key_lines, counts, strict=True)]
        key_header = max(key_header, len(_lines(header)))
        if w < table_cells[i].natural:
            wrapped_names += sum(counts) - len(counts)
    key_rows = sum(key_lines)

    def block(
        start: int, stop: int
    ) -> tuple[dict[int, int], tuple[int, int, int, int, int]] | None:
        run = others[start:stop]
        spare = room - sum(table_cells[i].minimum + _COLUMN_EDGES for i in run)
        if spare < 0 and stop - start > 1:
            return None
        widths: dict[int, int] = {}
        for i in run:  # shrinking columns take what is left, in order
            cells = table_cells[i]
            extra = min(cells.natural - cells.minimum, max(spare, 0))
            widths[i] = cells.minimum + extra
            spare -= extra
        rows = key_rows
        header_lines = key_header
        lines: list[int] | None = None
        for i, w in widths.items():
            header, _, counts = table_cells[i].at(w)
            header_lines = max(header_lines, len(_lines(header)))
            if max(counts, default=1) > 1:  # multi-line cells: rows as tall as their tallest
                lines = [max(a, b) for a, b in zip(lines or key_lines, counts, strict=True)]
        rows = sum(lines) if lines is not None else rows
        height = fixed + _TABLE_LINES + header_lines + rows + _WRAPPED * wrapped_names
        split = int(
            stop < len(others)
            and table_cells[others[stop - 1]].column.group != ""
            and table_cells[others[stop - 1]].column.group == table_cells[others[stop]].column.group
        )
        used = sum(w + _COLUMN_EDGES for w in widths.values())
        return widths, (max(used - room, 0), height, split, used * used, 0)

    # best[j]: the best way to lay out the first j other columns.
    Score = tuple[int, int, int, int, int]
    best: list[tuple[Score, list[dict[int, int]]] | None] = [None] * (len(others) + 1)
    best[0] = ((max(-room, 0), 0, 0, 0, 0), [])
    for stop in range(1, len(others) + 1):
        for start in range(stop - 1, -1, -1):
            before = best[start]
            made = block(start, stop)
            if made is None:
                break  # a longer run fits no better
            if before is None:
                continue
            widths, score = made
            total = tuple(a + b for a, b in zip(before[0], score, strict=True))
            if best[stop] is None or total < best[stop][0]:  # type: ignore[index]
                best[stop] = (total, [*before[1], widths])  # type: ignore[assignment]
    final = best[len(others)]
    assert final is not None
    score, blocks = final
    narrower = -sum(keys.values())  # of equal layouts, the one with wider names
    return _Layout(dict(keys), blocks or [{}], (*score[:4], narrower))
