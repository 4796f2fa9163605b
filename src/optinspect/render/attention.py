"""Attention results -> a page: the layer's weights as a heatmap (queries down, keys
across, cells in percent) and the heads' summary, with the head shown marked.

Every heatmap cell prints its weight, and colour only adds to it, so a console without
colour (a pipe, ``NO_COLOR``) still shows every number; the head shown is marked ``*``
there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size
from rich.console import Console

from .common import format_percent, header_parts, random_notes, token_label
from .layout import Column
from .page import Heatmap, Legend, Lines, Page, Part, Sheet, Style, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.attention import AttentionResult
    from ..results.records import Token

__all__ = [
    "attention_heatmap",
    "attention_page",
    "attention_title",
    "heads_sheet",
    "heatmap_labels",
    "render_attention",
    "save_attention_png",
]

#: Longest token label in the row headers; longer ones end in an ellipsis.
LABEL_WIDTH = 16


def attention_title(result: AttentionResult) -> str:
    """``attention of layer 3, head 1``, or ``…, mean of 12 heads``."""
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


def attention_heatmap(result: AttentionResult) -> Heatmap:
    """Rows are query positions (labelled with their token), columns key positions,
    values the weights in [0, 1], shown in percent; cells above the diagonal, which a
    causal model never attends to, are left out. The terminal draws it."""
    digits = len(str(len(result.tokens) - 1))
    return Heatmap(
        attention_title(result),
        rows=[_row_label(pos, token, digits) for pos, token in enumerate(result.tokens)],
        columns=[str(key) for key in range(len(result.tokens))],
        values=result.weights,
        name="weights",
        corner="query",
        causal=True,
        percent=True,
        terminal=True,
        note="weights in percent, rows query, columns key",
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def heads_sheet(result: AttentionResult) -> Sheet:
    """Entropy and sink mass of every head in the layer; the head shown is ``marked``."""
    columns = [Column("head", key=True), Column("entropy"), Column("sink")]
    rows = []
    styles = []
    for summary in result.heads:
        shown = summary.head == result.head
        mark = Style.marked if shown else Style.plain
        rows.append(
            [
                cell(str(summary.head), mark),
                cell(_number(summary.entropy), value=summary.entropy),
                cell(format_percent(summary.sink), value=summary.sink),
            ]
        )
        styles.append(mark)
    return Sheet(
        f"heads of layer {result.layer}",
        columns,
        rows,
        name="heads",
        row_styles=styles,
        fill_title=True,
    )


def attention_page(result: AttentionResult) -> Page:
    """The heatmap under its title and what its cells hold, then the heads and what their
    columns mean."""
    notes = [
        "entropy: mean over query rows of -sum w ln w, in nats "
        f"(evenly spread: {result.uniform_entropy:.3f})",
        "sink: mean over query rows of the weight on position 0, in percent",
    ]
    parts: list[Part] = [
        attention_heatmap(result),
        heads_sheet(result),
        Lines(notes),
    ]
    if result.head is not None:
        parts.append(Legend(Style.marked, "the head shown above"))
    return Page(
        "attention",
        headline=header_parts(result.info),
        notes=random_notes(result.random_weights),
        parts=parts,
        data=result.as_dict(),
    )


def render_attention(console: Console, result: AttentionResult) -> None:
    """Print the header, the random-weights note when it applies, the heatmap and the heads."""
    write_terminal(console, attention_page(result))


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
