"""The neutral page: what a renderer makes of a result before any output format.

    page = Page("lens", headline=header_parts(result.info), notes=random_notes(result))
    page.parts.append(Sheet("logit lens", columns, rows))
    write_terminal(console, page)          # render.terminal: rich tables fit to the width
    html = page_html(page)                 # render.html: one self-contained document

A renderer turns a result record into a ``Page``: a headline (the model line, in parts), notes
under it, then parts in reading order: ``Sheet`` (a table of columns and rows), ``Heatmap``
(a grid of numbers shown as colour), ``Chart`` (lines across depth), ``Histograms``
(small ones, a row each), ``Lines`` (plain text), ``Legend`` (what a cell style means)
and ``Tree`` (a hierarchy of named entries). Each writer draws what it can: the terminal
draws sheets, lines, legends, trees and the heatmaps marked ``terminal``; HTML draws them
all. ``Page.flat`` is the result as raw rows, which CSV writes.

A cell's look is a neutral style name (``Style``) that every writer maps to its own: the
terminal to a rich style, or to a mark after the text where there is no colour; HTML to a
CSS class. A page holds no width, no colour and no markup, and no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .layout import Column

__all__ = [
    "Bins",
    "Cell",
    "Chart",
    "Column",
    "Heatmap",
    "Histograms",
    "Legend",
    "Lines",
    "Node",
    "Page",
    "Part",
    "Run",
    "Series",
    "Sheet",
    "Style",
    "Tree",
    "cell",
    "fresh_headers",
]


class Style(str, Enum):
    """The looks a cell (or a run of its text) may have; each writer maps them."""

    plain = ""
    #: The lens: a layer's top-1 token is already the model's own prediction there.
    match = "match"
    #: A row or value the reader is pointed at (the attention head shown, the worst module).
    marked = "marked"
    #: A value that is NaN or Inf, or a position with no ranking.
    nonfinite = "nonfinite"
    #: A weight in [0, 1] shown as a shade: the cell's ``value`` gives it.
    heat = "heat"
    #: A row above a tolerance (compare), and the first such row.
    over = "over"
    first_over = "first_over"
    #: Text set off without pointing at it (a module's name in a tree, the root's class).
    strong = "strong"
    #: A module's class, beside its name.
    kind = "kind"
    #: A detail said quietly (a weight's shape, what it is tied to).
    quiet = "quiet"


@dataclass(frozen=True)
class Run:
    """A stretch of a cell's text with one style."""

    text: str
    style: Style = Style.plain


@dataclass(frozen=True)
class Cell:
    """One table cell: runs of text (lines split at ``\\n``), the number behind it (for
    sorting, and the shade of a ``heat`` run), and a longer text a writer may show on
    hover (``tip``)."""

    runs: tuple[Run, ...]
    value: float | None = None
    tip: str = ""

    @property
    def text(self) -> str:
        return "".join(run.text for run in self.runs)


def cell(
    text: str | Cell, style: Style = Style.plain, *, value: float | None = None, tip: str = ""
) -> Cell:
    """A cell of one run; a Cell is returned as it is."""
    if isinstance(text, Cell):
        return text
    return Cell((Run(text, style),), value=value, tip=tip)


@dataclass(frozen=True)
class Sheet:
    """A table: ``columns`` (``layout.Column``: header, justification, key, wrapping,
    group) and ``rows`` of cells, one per column (a row whose cells past the first are empty is a
    heading: a layer's name above its modules). ``lines`` draws a rule between rows
    (cells of several lines); ``row_styles`` gives a row its look (the head shown);
    ``section_before`` sets a row apart (a total); ``caption`` goes under the table;
    ``name`` is a stable id for the part (``modules``). ``fill_title`` makes the title
    the table's own, as wide as the table (the terminal pads it to the table's width)."""

    title: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]
    name: str = ""
    lines: bool = False
    row_styles: Sequence[Style] | None = None
    section_before: int | None = None
    caption: str = ""
    fill_title: bool = False


@dataclass(frozen=True)
class Heatmap:
    """A grid of numbers in [``low``, ``high``] shown as colour; None is no value.

    ``causal`` leaves out the cells above the diagonal (a key after its query).
    ``percent`` prints each value x 100 in the cell where a writer prints numbers.
    ``terminal`` says whether the terminal draws it (it draws only small, causal maps).
    ``note`` says what the cells hold; writers show it after the title (``title: note``).
    """

    title: str
    rows: Sequence[str]
    columns: Sequence[str]
    values: Sequence[Sequence[float | None]]
    name: str = ""
    corner: str = ""
    low: float = 0.0
    high: float = 1.0
    causal: bool = False
    percent: bool = False
    terminal: bool = False
    note: str = ""

    @property
    def caption(self) -> str:
        """The title, and the note after it where there is one."""
        return f"{self.title}: {self.note}" if self.note else self.title


@dataclass(frozen=True)
class Series:
    """One line of a chart: a value (or None, a gap) per x."""

    name: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Chart:
    """Lines across ``x`` (layers, positions): drawn by writers that draw pictures."""

    title: str
    x_label: str
    x: Sequence[int | float | str]
    series: Sequence[Series]
    y_label: str = ""
    name: str = ""
    log: bool = False


@dataclass(frozen=True)
class Bins:
    """One row of a ``Histograms`` part: counts of values in equal bins from ``low`` to
    ``high`` (the module's own min and max)."""

    label: str
    low: float
    high: float
    counts: Sequence[int]


@dataclass(frozen=True)
class Histograms:
    """Small histograms, one per row (each module's output values): drawn by writers that
    draw pictures."""

    title: str
    rows: Sequence[Bins]
    name: str = ""


@dataclass(frozen=True)
class Lines:
    """Plain text lines, said as they are (titles above a heatmap, notes under a table).

    With a ``separator``, ``lines`` are the parts of one line joined by it, which a writer
    breaks only between two parts where the line is too wide.
    """

    lines: Sequence[str]
    separator: str | None = None


@dataclass(frozen=True)
class Node:
    """One entry of a ``Tree``: a full dotted ``name`` (``""`` for the root, which shows
    only its runs), then ``runs``, each a value a writer never splits (a class, a count,
    a shape), and the entries under it."""

    name: str
    runs: tuple[Run, ...]
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Tree:
    """A hierarchy drawn as one (the module tree): the terminal draws guides."""

    root: Node
    name: str = ""


@dataclass(frozen=True)
class Legend:
    """What a style means: the terminal says ``green: …`` (or ``*: …`` without colour)."""

    style: Style
    text: str


Part = Sheet | Heatmap | Chart | Histograms | Lines | Legend | Tree


@dataclass
class Page:
    """A result as a writer receives it: ``kind`` is the analysis (``trace``, ``lens``),
    ``headline`` the model line in parts (a writer breaks it only between parts),
    ``notes`` the lines under it (the random-weights note), ``parts`` the rest in order,
    ``data`` what ``--format json`` prints for the result (HTML embeds it), and ``flat``
    the result as one sheet of raw values, a row per item, which ``--format csv`` writes
    (None where the result has no CSV form)."""

    kind: str
    headline: Sequence[str] = ()
    notes: Sequence[str] = ()
    parts: list[Part] = field(default_factory=list)
    data: dict[str, Any] | None = None
    flat: Sheet | None = None


def fresh_headers(pages: Sequence[Page]) -> Iterator[tuple[Page, bool]]:
    """Each page, and whether a writer shows its header (the model line and the notes):
    pages of one model share it, so it comes again only where it changes. A page without
    one (a part of a report: the charts, the sparsity) leaves the last one standing."""
    shown: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    for page in pages:
        header = (tuple(page.headline), tuple(page.notes))
        fresh = bool(page.headline or page.notes) and header != shown
        if fresh:
            shown = header
        yield page, fresh
