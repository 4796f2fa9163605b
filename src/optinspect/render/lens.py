"""Logit-lens results -> a rich table. Renderers take a Console; they never create one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .common import has_colour, header_line, print_header, token_label

if TYPE_CHECKING:
    from ..lens import LensResult, Ranked

__all__ = ["lens_tables", "render_lens"]

#: Style of a cell whose top-1 token is already the model's final prediction there.
MATCH_STYLE = "bold green"
#: Without colour, such a cell is marked with this after the token instead.
MATCH_MARK = "*"


def _cell(ranked: Ranked, top_k: int, final_id: int, colour: bool) -> Text:
    cell = Text()
    for rank, prediction in enumerate(ranked):
        if rank:
            cell.append("\n")
        matched = rank == 0 and prediction.id == final_id
        label = token_label(prediction.text)
        if matched and not colour:
            label += MATCH_MARK
        if top_k > 1:
            label += " -" if prediction.prob is None else f" {prediction.prob:.3g}"
        cell.append(label, style=MATCH_STYLE if matched and colour else "")
    return cell


def lens_tables(result: LensResult, width: int, *, colour: bool = True) -> list[Table]:
    """Rows are input positions, columns the selected layers, cells the predicted next token.

    Layers that do not fit in ``width`` beside the position columns go to
    further tables, so no layer is ever dropped. A top-1 token that is
    already the model's own prediction at that position is green
    (``colour``) or marked with ``*``.
    """
    inputs = [Text(token_label(token.text)) for token in result.tokens]
    columns = [
        [
            _cell(layer.predictions[pos], result.top_k, result.output[pos][0].id, colour)
            for pos in range(len(result.tokens))
        ]
        for layer in result.layers
    ]
    fixed = _column_width("pos", [str(len(inputs) - 1)]) + _column_width(
        "input", [t.plain for t in inputs]
    )
    tables: list[Table] = []
    chunk: list[int] = []
    used = 1 + fixed
    for index, layer in enumerate(result.layers):
        need = _column_width(f"L{layer.layer}", [c.plain for c in columns[index]])
        if chunk and used + need > width:
            tables.append(_table(result, inputs, columns, chunk))
            chunk, used = [], 1 + fixed
        chunk.append(index)
        used += need
    tables.append(_table(result, inputs, columns, chunk))
    return tables


def _column_width(header: str, cells: list[str]) -> int:
    """Cells a rich column takes in a boxed table: content, one space each side, a rule."""
    lines = [header, *(line for cell in cells for line in cell.split("\n"))]
    return max(cell_len(line) for line in lines) + 3


def _table(
    result: LensResult, inputs: list[Text], columns: list[list[Text]], chunk: list[int]
) -> Table:
    table = Table(show_lines=result.top_k > 1)
    table.add_column("pos", justify="right")
    table.add_column("input", no_wrap=True)
    for index in chunk:
        table.add_column(f"L{result.layers[index].layer}", no_wrap=True)
    for pos, label in enumerate(inputs):
        table.add_row(str(pos), label, *(columns[index][pos] for index in chunk))
    return table


def render_lens(console: Console, result: LensResult) -> None:
    """Print the header, the random-weights note when it applies, and the lens table."""
    print_header(console, header_line(result.info), result.random_weights)
    colour = has_colour(console)
    what = "top-1 next token" if result.top_k == 1 else f"top-{result.top_k} next tokens"
    if result.top_k > 1:
        what += " with their probabilities"
    console.print(f"logit lens: {what} after each layer (columns)", highlight=False)
    for table in lens_tables(result, console.width, colour=colour):
        console.print(table, highlight=False)
    marker = "green" if colour else MATCH_MARK
    console.print(f"{marker}: already the model's own prediction at that position", highlight=False)
