"""Logit-lens results -> a rich table. Renderers take a Console; they never create one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.text import Text

from .common import has_colour, header_line, print_header, token_label
from .layout import Column, fit_tables

if TYPE_CHECKING:
    from ..results.lens import LensResult, Ranked

__all__ = ["lens_tables", "render_lens", "render_lens_header"]

#: Style of a cell whose top-1 token is already the model's final prediction there.
MATCH_STYLE = "bold green"
#: Without colour, such a cell is marked with this after the token instead.
MATCH_MARK = "*"


#: A position whose logits hold NaN or Inf: there is no ranking to show.
NONFINITE = "(not finite)"


def _cell(ranked: Ranked, top_k: int, final_id: int | None, colour: bool) -> Text:
    cell = Text()
    if not ranked:
        return Text(NONFINITE)
    for rank, prediction in enumerate(ranked):
        if rank:
            cell.append("\n")
        matched = rank == 0 and prediction.id == final_id
        label = token_label(prediction)
        if matched and not colour:
            label += MATCH_MARK
        if top_k > 1:
            label += " -" if prediction.prob is None else f" {prediction.prob:.3g}"
        cell.append(label, style=MATCH_STYLE if matched and colour else "")
    return cell


def lens_tables(result: LensResult, width: int, *, colour: bool = True) -> list[RenderableType]:
    """Rows are input positions, columns the selected layers, cells the predicted next token.

    Layers that do not fit in ``width`` beside the position columns go to
    further tables, titled ``…, continued``, so no layer is ever dropped. A top-1
    token that is already the model's own prediction at that position is green
    (``colour``) or marked with ``*``.
    """
    finals = [ranked[0].id if ranked else None for ranked in result.output]
    columns = [
        Column("pos", key=True),
        Column("input", justify="left", key=True),
        *(Column(f"L{layer.layer}", justify="left") for layer in result.layers),
    ]
    rows = [
        [
            str(pos),
            Text(token_label(token)),
            *(
                _cell(layer.predictions[pos], result.top_k, finals[pos], colour)
                for layer in result.layers
            ),
        ]
        for pos, token in enumerate(result.tokens)
    ]
    return fit_tables(columns, rows, width, title=lens_title(result), show_lines=result.top_k > 1)


def lens_title(result: LensResult) -> str:
    """``logit lens: top-1 next token after each layer``; with top-k, their probabilities."""
    if result.top_k == 1:
        return "logit lens: top-1 next token after each layer"
    return f"logit lens: top-{result.top_k} next tokens after each layer, with probabilities"


def render_lens_header(console: Console, result: LensResult) -> None:
    """The model line and, for random weights, the note."""
    print_header(console, header_line(result.info), result.random_weights)


def render_lens(console: Console, result: LensResult, *, header: bool = True) -> None:
    """Print the header (unless ``header`` is False), the random-weights note when it
    applies, and the lens table."""
    if header:
        render_lens_header(console, result)
    colour = has_colour(console)
    for table in lens_tables(result, console.width, colour=colour):
        console.print(table, highlight=False)
    marker = "green" if colour else MATCH_MARK
    console.print(f"{marker}: already the model's own prediction at that position", highlight=False)
