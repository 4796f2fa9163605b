"""Logit-lens results -> a page: positions down, layers across, each cell the token that
layer predicts next (the top-k with probabilities), marked where it is already the
model's own prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from .common import header_parts, random_notes, token_label
from .layout import Column
from .page import Cell, Legend, Lines, Page, Part, Run, Sheet, Style, cell
from .terminal import write_terminal

if TYPE_CHECKING:
    from ..results.lens import LensResult, Ranked

__all__ = ["lens_page", "lens_title", "render_lens"]

#: A position whose logits hold NaN or Inf: there is no ranking to show.
NONFINITE = "(not finite)"


def _cell(ranked: Ranked, top_k: int, final_id: int | None, grid: bool) -> Cell:
    if not ranked:
        return cell(NONFINITE, Style.nonfinite)
    tip = "\n".join(
        f"{token_label(p)} {'-' if p.prob is None else f'{p.prob:.3g}'}" for p in ranked
    )
    if grid:  # the top token alone, shaded by its probability; the top k on hover
        return Cell((Run(token_label(ranked[0]), Style.heat),), value=ranked[0].prob, tip=tip)
    runs: list[Run] = []
    for rank, prediction in enumerate(ranked):
        if rank:
            runs.append(Run("\n"))
        matched = rank == 0 and prediction.id == final_id
        runs.append(Run(token_label(prediction), Style.match if matched else Style.plain))
        if top_k > 1:
            runs.append(Run(" -" if prediction.prob is None else f" {prediction.prob:.3g}"))
    return Cell(tuple(runs), value=ranked[0].prob, tip=tip)


def lens_title(result: LensResult) -> str:
    """``logit lens: top-1 next token after each layer``; with top-k, their probabilities."""
    if result.top_k == 1:
        return "logit lens: top-1 next token after each layer"
    return f"logit lens: top-{result.top_k} next tokens after each layer, with probabilities"


def lens_page(result: LensResult, *, grid: bool = False) -> Page:
    """Rows are input positions, columns the selected layers, cells the predicted next token;
    a top-1 token that is already the model's own prediction at that position is a
    ``match``. A writer that lacks the width puts further layers in further tables.

    ``grid`` (the report's picture) shows each layer's top token alone, shaded by its
    probability (a ``heat`` cell), with the top k as the cell's tip."""
    finals = [ranked[0].id if ranked else None for ranked in result.output]
    columns = [
        Column("pos", key=True),
        Column("input", justify="left", key=True),
        *(Column(f"L{layer.layer}", justify="left") for layer in result.layers),
    ]
    rows = [
        [
            cell(str(pos)),
            cell(token_label(token)),
            *(
                _cell(layer.predictions[pos], result.top_k, finals[pos], grid)
                for layer in result.layers
            ),
        ]
        for pos, token in enumerate(result.tokens)
    ]
    if grid:
        title = "logit lens: each layer's top-1 next token, shaded by its probability"
        sheet = Sheet(title, columns, rows, name="lens")
        shade = "shade: its probability, from 0 (dark) to 1 (light)"
        key: Part = Lines([f"{shade}; the top {result.top_k} on hover"])
    else:
        sheet = Sheet(lens_title(result), columns, rows, name="lens", lines=result.top_k > 1)
        key = Legend(Style.match, "already the model's own prediction at that position")
    return Page(
        "lens",
        headline=header_parts(result.info),
        notes=random_notes(result.random_weights),
        parts=[sheet, key],
        data=result.as_dict(),
    )


def render_lens(console: Console, result: LensResult, *, header: bool = True) -> None:
    """Print the header (unless ``header`` is False), the lens table and its legend."""
    write_terminal(console, lens_page(result), header=header)
