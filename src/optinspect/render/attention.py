"""Attention results -> a coloured heatmap table and a per-head summary.

Renderers take a Console; they never create one. Every cell prints its
weight in percent, and colour (a viridis-like background) only adds to it,
so a console without colour (a pipe, ``NO_COLOR``) still shows every number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from .common import format_percent, has_colour, header_line, print_header, token_label

if TYPE_CHECKING:
    from ..results.attention import AttentionResult
    from ..results.records import Token

__all__ = [
    "attention_title",
    "heads_notes",
    "heads_table",
    "heatmap_blocks",
    "heatmap_labels",
    "render_attention",
    "save_attention_png",
    "shade",
]

#: Viridis at 0, 1/4, 1/2, 3/4 and 1, as RGB; the terminal and the PNG share the map.
_STOPS: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
)
#: Longest token label in the row headers; longer ones end in an ellipsis.
LABEL_WIDTH = 16
#: Each heatmap cell: a space and up to three digits ("100").
CELL_WIDTH = 4


def shade(value: float) -> Style:
    """Background colour for a weight in [0, 1], with a foreground that stays legible."""
    t = min(1.0, max(0.0, value)) * (len(_STOPS) - 1)
    low = min(int(t), len(_STOPS) - 2)
    frac = t - low
    r, g, b = (round(a + (c - a) * frac) for a, c in zip(_STOPS[low], _STOPS[low + 1], strict=True))
    foreground = "black" if t >= 2.4 else "white"
    return Style(color=foreground, bgcolor=Color.from_rgb(r, g, b))


def attention_title(result: AttentionResult) -> str:
    heads = (
        f"head {result.head}" if result.head is not None else f"mean of {result.num_heads} heads"
    )
    return f"attention of layer {result.layer}, {heads}"


def _row_label(pos: int, token: Token, digits: int = 0) -> str:
    """``pos "text"``, the position right-aligned to ``digits``, long texts shortened."""
    label = token_label(token)
    if cell_len(label) > LABEL_WIDTH:
        label = set_cell_size(label, LABEL_WIDTH - 1) + "…"
    return f"{pos:>{digits}} {label}"


def _heat_cell(value: float | None, colour: bool) -> Text:
    if value is None:
        return Text("-".rjust(CELL_WIDTH))
    text = str(round(value * 100)).rjust(CELL_WIDTH)
    return Text(text, style=shade(value) if colour else "")


def heatmap_blocks(result: AttentionResult, width: int, *, colour: bool = True) -> list[Text]:
    """The heatmap as blocks of lines, each at most ``width`` cells wide where it can be.

    Rows are query positions, columns key positions, cells the weight in
    percent. Keys that do not fit beside the row labels go to the next block,
    so no column is ever dropped; a block starting at key k shows the queries
    from k on, since earlier ones cannot attend to it. Cells above the
    diagonal, which a causal model never attends to, are left out.
    """
    digits = len(str(len(result.tokens) - 1))
    labels = [_row_label(pos, token, digits) for pos, token in enumerate(result.tokens)]
    label_width = max(cell_len(label) for label in [*labels, "query"]) + 1
    size = len(labels)
    per_block = max(1, (width - label_width) // CELL_WIDTH)
    blocks: list[Text] = []
    for start in range(0, size, per_block):
        end = min(size, start + per_block)
        block = Text(no_wrap=True, overflow="ignore")
        header = "query".ljust(label_width) + "".join(
            str(key).rjust(CELL_WIDTH) for key in range(start, end)
        )
        block.append(header, style="bold")
        for query in range(start, size):
            label = labels[query]
            block.append("\n" + label + " " * (label_width - cell_len(label)))
            row = result.weights[query]
            for key in range(start, min(end, query + 1)):
                block.append_text(_heat_cell(row[key], colour))
        blocks.append(block)
    return blocks


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def heads_table(result: AttentionResult, *, colour: bool = True) -> Table:
    """Entropy and sink mass of every head in the layer; the shown head is marked."""
    table = Table(title=f"heads of layer {result.layer}", title_justify="left")
    table.add_column("head", justify="right")
    table.add_column("entropy", justify="right")
    table.add_column("sink", justify="right")
    for summary in result.heads:
        shown = summary.head == result.head
        label = str(summary.head) + ("*" if shown and not colour else "")
        table.add_row(
            label,
            _number(summary.entropy),
            format_percent(summary.sink),
            style="bold" if shown and colour else None,
        )
    return table


def heads_notes(result: AttentionResult, colour: bool) -> list[str]:
    """The lines under the heads table: what entropy and sink mean, and the marked head."""
    lines = [
        "entropy: mean over query rows of -sum w ln w, in nats "
        f"(evenly spread: {result.uniform_entropy:.3f})",
        "sink: mean over query rows of the weight on position 0, in percent",
    ]
    if result.head is not None:
        lines.append("the head shown above is in bold" if colour else "*: the head shown above")
    return lines


def render_attention(console: Console, result: AttentionResult) -> None:
    """Print the header, the random-weights note when it applies, the heatmap and the heads."""
    colour = has_colour(console)
    print_header(console, header_line(result.info), result.random_weights)
    console.print(
        escape(f"{attention_title(result)}: weights in percent, rows query, columns key"),
        highlight=False,
    )
    for index, block in enumerate(heatmap_blocks(result, console.width, colour=colour)):
        if index:  # keys that did not fit: the same rows, titled as a table goes on
            console.print(escape(f"{attention_title(result)}, continued"), highlight=False)
        console.print(block, highlight=False, crop=False)
    console.print(heads_table(result, colour=colour), highlight=False)
    for line in heads_notes(result, colour):
        console.print(escape(line), highlight=False)


def heatmap_labels(result: AttentionResult) -> Sequence[str]:
    """Axis labels for an image of the heatmap: position and token text."""
    return [_row_label(pos, token) for pos, token in enumerate(result.tokens)]


def save_attention_png(result: AttentionResult, path: Path) -> Path:
    """The heatmap as an image: causal cells only, labelled with position and token."""
    from .images import save_heatmap

    labels = heatmap_labels(result)
    return save_heatmap(
        path,
        [
            [value if key <= query else None for key, value in enumerate(row)]
            for query, row in enumerate(result.weights)
        ],
        row_labels=labels,
        column_labels=labels,
        title=f"{result.model}: {attention_title(result)}",
        xlabel="key",
        ylabel="query",
        colorbar_label="attention weight",
    )
