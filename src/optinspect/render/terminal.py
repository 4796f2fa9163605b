"""The terminal writer: a page on a rich Console, fit to its width, with or without colour.

    write_terminal(console, lens_page(result))               # header, tables, legends
    write_terminal(console, page, header=False)             # many sentences, one model line

Sheets become ``fit_tables`` blocks (no number is ever cut), lines and legends are printed
as text, trees with rich's guides, small causal heatmaps as blocks of coloured numbers;
charts are left to the writers that draw pictures. Where the console has no colour, a
styled run gets a mark after its text instead (``*``), so the difference is still there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import IO

from rich.cells import cell_len
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.style import Style as RichStyle
from rich.text import Text
from rich.tree import Tree as RichTree

from .common import HEADER_SEPARATOR, has_colour
from .layout import NAME_BREAKS, fit_tables, print_parts, wrap_pieces
from .page import Cell, Heatmap, Legend, Lines, Node, Page, Run, Sheet, Style, Tree

__all__ = [
    "TERMINAL_STYLES",
    "cell_text",
    "heatmap_blocks",
    "plain_console",
    "shade",
    "write_terminal",
]

#: Style -> (rich style with colour, mark after the text without colour, its name in a
#: legend with colour). ``heat`` is drawn by ``shade`` from the cell's value.
TERMINAL_STYLES: dict[Style, tuple[str, str, str]] = {
    Style.match: ("bold green", "*", "green"),
    Style.marked: ("bold", "*", "bold"),
    Style.nonfinite: ("", "", ""),
    Style.over: ("red", "", "red"),
    Style.first_over: ("bold red", "", "bold red"),
    Style.strong: ("bold", "", "bold"),
    Style.kind: ("cyan", "", "cyan"),
    Style.quiet: ("dim", "", "dim"),
}

#: Viridis at 0, 1/4, 1/2, 3/4 and 1, as RGB; the terminal, the PNG and HTML share the map.
VIRIDIS: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
)
#: Each heatmap cell: a space and up to three digits ("100").
CELL_WIDTH = 4


def viridis(value: float) -> tuple[tuple[int, int, int], bool]:
    """The colour of a value in [0, 1] and whether text on it should be dark."""
    t = min(1.0, max(0.0, value)) * (len(VIRIDIS) - 1)
    low = min(int(t), len(VIRIDIS) - 2)
    frac = t - low
    pairs = zip(VIRIDIS[low], VIRIDIS[low + 1], strict=True)
    r, g, b = (round(a + (c - a) * frac) for a, c in pairs)
    return (r, g, b), t >= 2.4


def shade(value: float) -> RichStyle:
    """Background colour for a weight in [0, 1], with a foreground that stays legible."""
    (r, g, b), dark = viridis(value)
    return RichStyle(color="black" if dark else "white", bgcolor=Color.from_rgb(r, g, b))


def cell_text(item: Cell, colour: bool, *, row: Style = Style.plain) -> Text:
    """A cell as rich Text: each run in its style, or with its mark where there is no colour.
    A run styled as its ``row`` takes its look from the row (the mark still shows)."""
    text = Text()
    for run in item.runs:
        if run.style is Style.heat:
            heat = colour and item.value is not None
            text.append(run.text, style=shade(item.value) if heat else "")  # type: ignore[arg-type]
            continue
        rich_style, mark, _ = TERMINAL_STYLES.get(run.style, ("", "", ""))
        if colour:
            text.append(run.text, style="" if run.style is row else rich_style)
        else:
            text.append(run.text + mark)
    return text


def heatmap_blocks(heatmap: Heatmap, width: int, *, colour: bool = True) -> list[Text]:
    """The heatmap as blocks of lines, each at most ``width`` cells wide where it can be.

    Columns that do not fit beside the row labels go to the next block, so none is ever
    dropped; with ``causal``, a block starting at column k shows the rows from k on and
    leaves out the cells above the diagonal.
    """
    labels = list(heatmap.rows)
    label_width = max(cell_len(label) for label in [*labels, heatmap.corner]) + 1
    size = len(heatmap.columns)
    per_block = max(1, (width - label_width) // CELL_WIDTH)
    blocks: list[Text] = []
    for start in range(0, size, per_block):
        end = min(size, start + per_block)
        block = Text(no_wrap=True, overflow="ignore")
        header = heatmap.corner.ljust(label_width) + "".join(
            str(label).rjust(CELL_WIDTH) for label in heatmap.columns[start:end]
        )
        block.append(header, style="bold")
        for row in range(start if heatmap.causal else 0, len(labels)):
            label = labels[row]
            block.append("\n" + label + " " * (label_width - cell_len(label)))
            last = min(end, row + 1) if heatmap.causal else end
            for column in range(start, last):
                block.append_text(_heat_cell(heatmap, heatmap.values[row][column], colour))
        blocks.append(block)
    return blocks


def _heat_cell(heatmap: Heatmap, value: float | None, colour: bool) -> Text:
    if value is None:
        return Text("-".rjust(CELL_WIDTH))
    shown = value * 100 if heatmap.percent else value
    text = str(round(shown)).rjust(CELL_WIDTH)
    span = heatmap.high - heatmap.low
    level = (value - heatmap.low) / span if span else 0.0
    return Text(text, style=shade(level) if colour else "")


def plain_console(file: IO[str], width: int) -> Console:
    """A console ``width`` cells wide without colour that is neither a terminal nor a
    notebook, whatever the environment says (FORCE_COLOR, TTY_*, COLUMNS, Jupyter)."""
    return Console(
        file=file,
        width=width,
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        legacy_windows=False,
        _environ={},
    )


def write_header(console: Console, page: Page) -> None:
    """The model line, broken only between its parts, and the notes under it."""
    if page.headline:
        print_parts(console, list(page.headline), HEADER_SEPARATOR)
    for note in page.notes:
        console.print(escape(note), highlight=False)


def write_terminal(console: Console, page: Page, *, header: bool = True) -> None:
    """Print ``page`` on ``console``: its header (unless ``header`` is False), then its parts."""
    colour = has_colour(console)
    if header:
        write_header(console, page)
    for part in page.parts:
        if isinstance(part, Sheet):
            _write_sheet(console, part, colour)
        elif isinstance(part, Lines) and part.separator is not None:
            print_parts(console, part.lines, part.separator)
        elif isinstance(part, Lines):
            for line in part.lines:
                console.print(escape(line), highlight=False)
        elif isinstance(part, Tree):
            _write_tree(console, part)
        elif isinstance(part, Legend):
            _, mark, name = TERMINAL_STYLES.get(part.style, ("", "", ""))
            console.print(escape(f"{name if colour else mark}: {part.text}"), highlight=False)
        elif isinstance(part, Heatmap) and part.terminal:
            if part.note:
                console.print(escape(part.caption), highlight=False)
            for index, block in enumerate(heatmap_blocks(part, console.width, colour=colour)):
                if index:  # columns that did not fit: the same rows, titled as a table goes on
                    console.print(escape(f"{part.title}, continued"), highlight=False)
                console.print(block, highlight=False, crop=False)
        # Charts, histograms and large heatmaps are pictures: drawn where pictures can be.


def _write_sheet(console: Console, sheet: Sheet, colour: bool) -> None:
    looks = sheet.row_styles or [Style.plain] * len(sheet.rows)
    rows = [
        [cell_text(item, colour, row=look) for item in row]
        for row, look in zip(sheet.rows, looks, strict=True)
    ]
    styles: Sequence[str] | None = None
    if sheet.row_styles is not None and colour:
        styles = [TERMINAL_STYLES.get(style, ("", "", ""))[0] for style in sheet.row_styles]
    fit = partial(
        fit_tables,
        sheet.columns,
        rows,
        console.width,
        caption=sheet.caption or None,
        row_styles=styles,
        show_lines=sheet.lines,
        section_before=sheet.section_before,
    )
    if sheet.fill_title and sheet.title and len(tables := fit()) == 1:
        # The title as rich draws a table's own: wrapped and padded to the table's width.
        width = min(console.measure(tables[0]).maximum, console.width)
        lines = Text(sheet.title, "table.title").wrap(console, width, justify="left")
        console.print(Text("\n").join(lines), highlight=False)
    else:  # a line of its own above each block, "continued" after the first
        tables = fit(title=sheet.title or None)
    for table in tables:
        console.print(table, highlight=False)


#: The columns rich's tree guides take per level ("├── ", "│   ").
_GUIDE = 4
#: Between two values of a tree entry.
_GAP = "  "
#: How far an entry's continuation lines are indented under its first.
_CONTINUED = 2


def _node_label(node: Node, width: int, colour: bool) -> Text:
    """The entry's name and values as lines of at most ``width`` cells that break only
    between two of them (or, for a name wider than that alone, after a dot of it): a
    count or a shape is never split."""
    name = [cell_text(Cell((Run(part, Style.strong),)), colour) for part in _name_parts(node)]
    values = [cell_text(Cell((run,)), colour) for run in node.runs]
    pieces = [*name[:-1], *(Text.assemble(piece, _GAP) for piece in [*name[-1:], *values[:-1]])]
    lines = wrap_pieces([*pieces, values[-1]], width, indent=_CONTINUED)
    return Text("\n").join(lines)


def _name_parts(node: Node) -> list[str]:
    return re.split(NAME_BREAKS, node.name) if node.name else []


def _write_tree(console: Console, tree: Tree) -> None:
    colour = has_colour(console)
    drawn = RichTree(_node_label(tree.root, console.width, colour))
    stack: list[tuple[Node, RichTree, int]] = [(tree.root, drawn, 0)]
    while stack:
        node, branch, depth = stack.pop()
        below = [
            (child, branch.add(_node_label(child, console.width - _GUIDE * (depth + 1), colour)))
            for child in node.children
        ]
        stack.extend((child, added, depth + 1) for child, added in reversed(below))
    console.print(drawn)
