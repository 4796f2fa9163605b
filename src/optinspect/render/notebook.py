"""Results that show themselves in a notebook: a record, or a list of them, with its pages.

    shown = Shown(result, lens_page)         # what optinspect.lens returns, one per sentence
    shown.layers                             # the record's own attributes
    shown.as_dict()                          # what ``--format json`` prints
    shown                                    # in Jupyter: the page

Jupyter asks ``_repr_mimebundle_`` for ``text/plain`` (the terminal writer on a
colourless console 100 columns wide), ``text/html`` (``render.html.html_fragment``: CSS
scoped to the output, no script, long tables cut as pandas does) and ``application/json``
(each page's ``data``: what ``--format json`` prints for it). Records live in
``results/``, which knows nothing of pages, so the API wraps them here: the wrapper
reads through to the record, and the record stays as it is.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from .page import Page, fresh_headers
from .terminal import plain_console, write_terminal

__all__ = [
    "HTML_ROWS",
    "TEXT_WIDTH",
    "Displayable",
    "Shown",
    "ShownList",
    "page_bundle",
    "page_text",
]

#: The width of the plain-text form, in columns.
TEXT_WIDTH = 100
#: Rows of a table shown in a notebook before the middle is cut out (pandas shows 60).
HTML_ROWS = 60

R = TypeVar("R")


def page_text(pages: Sequence[Page], width: int = TEXT_WIDTH) -> str:
    """The pages as the terminal shows them, without colour, ``width`` columns wide; the
    model line and notes come again only where they change (``fresh_headers``)."""
    buffer = io.StringIO()
    # Not a terminal, not Jupyter: rich would otherwise draw into the notebook itself.
    console = plain_console(buffer, width)
    for page, fresh in fresh_headers(pages):
        write_terminal(console, page, header=fresh)
    return buffer.getvalue()


def page_html(pages: Sequence[Page], max_rows: int = HTML_ROWS) -> str:
    """The pages as one HTML fragment (``render.html``), tables cut past ``max_rows``."""
    from .html import html_fragment

    return html_fragment(pages, max_rows=max_rows)


def page_bundle(
    pages: Callable[[], Sequence[Page]],
    data: Callable[[], Any],
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The forms a notebook may show: the pages' text, their HTML, and ``data`` (the
    records' JSON) as it is; only those ``include`` names (all by default) and
    ``exclude`` does not, each made only when it is wanted (the pages at most once)."""
    made = functools.cache(pages)
    makers: dict[str, Callable[[], Any]] = {
        "text/plain": lambda: page_text(made()),
        "text/html": lambda: page_html(made()),
        "application/json": data,
    }
    wanted = set(makers if include is None else include) - set(exclude or ())
    return {kind: make() for kind, make in makers.items() if kind in wanted}


class Displayable:
    """Shows its ``pages()`` in Jupyter (HTML, text, JSON) and as text in a console."""

    def pages(self) -> list[Page]:
        """The pages this result shows, in order."""
        raise NotImplementedError

    def json_data(self) -> Any:
        """What ``--format json`` prints for this result."""
        raise NotImplementedError

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, Any]:
        return page_bundle(self.pages, self.json_data, include, exclude)

    def _repr_html_(self) -> str:
        return page_html(self.pages())

    def __str__(self) -> str:
        return page_text(self.pages())


class Shown(Displayable, Generic[R]):
    """One record that shows itself: ``record`` is the record, ``page_of`` makes its page
    (or its pages, for the report).

    Every attribute the wrapper lacks is the record's (``shown.modules``,
    ``shown.as_dict()``); it equals its record; ``repr`` names the record, ``str`` is
    its text.
    """

    def __init__(self, record: R, page_of: Callable[[R], Page | Sequence[Page]]) -> None:
        self.record = record
        self._page_of = page_of

    def __getattr__(self, name: str) -> Any:
        # Only for what the wrapper itself lacks; the record is set first in __init__,
        # and a copy made without __init__ has none.
        if name in ("record", "_page_of"):
            raise AttributeError(name)
        return getattr(self.record, name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(self.record)})

    def __eq__(self, other: object) -> bool:
        other_record = other.record if isinstance(other, Shown) else other
        return bool(self.record == other_record)

    __hash__ = None  # type: ignore[assignment]  # equal to its record, which may not hash

    def __repr__(self) -> str:
        return f"Shown({self.record!r})"

    def as_dict(self) -> dict[str, Any]:
        """What ``--format json`` prints for the record."""
        return self.record.as_dict()  # type: ignore[attr-defined, no-any-return]

    def json_data(self) -> dict[str, Any]:
        return self.as_dict()

    def pages(self) -> list[Page]:
        made = self._page_of(self.record)
        return [made] if isinstance(made, Page) else list(made)


class ShownList(list, Displayable):  # type: ignore[type-arg]
    """A list of ``Shown`` results (one per sentence) that shows them one after another,
    the model line once, then ``tail`` (trace's FFN summary) when there is one."""

    def __init__(self, items: Iterable[Shown[Any]], tail: Page | None = None) -> None:
        super().__init__(items)
        self.tail = tail

    def pages(self) -> list[Page]:
        pages = [page for item in self for page in item.pages()]
        return [*pages, self.tail] if self.tail is not None else pages

    def json_data(self) -> dict[str, Any]:
        """One result's object, or ``{"results": [...]}`` for several, with the tail's
        keys (``ffn``) beside them, as ``--format json`` prints them."""
        extra = self.tail.data if self.tail is not None and self.tail.data else {}
        if len(self) == 1:
            return {**self[0].as_dict(), **extra}
        return {**extra, "results": self.as_dicts()}

    def as_dicts(self) -> list[dict[str, Any]]:
        """What ``--format jsonl`` prints: one object per result."""
        return [item.as_dict() for item in self]

    __repr__ = list.__repr__
