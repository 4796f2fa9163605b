"""How every command writes its results: one emitter per --format, streaming where the format
allows. The one place that chooses a writer by format.

    emitter = make_emitter("jsonl", many=True, page_of=lens_page)
    for result in results:
        emitter.emit(result)
    emitter.close()

    emit_result(fmt, result, params_page)      # a command with one result

A renderer makes a neutral page of each result (``render.page``); the table format
writes it with ``render.terminal``, CSV writes its flat sheet (``Page.flat``) with
``render.csvfile``. Every result serialises itself (``as_dict``).
One TEXT gives one JSON object;
a file or stdin gives ``{"schema", "model", "quant", "device", "dtype", ...,
"results": [...]}`` in ``json`` (the model as asked for even when the input held no
sentence) and one object per line in ``jsonl``. ``html`` writes one page at the end
(``render.html``): a section per sentence, with that same JSON document embedded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from ..render.common import write_json
from ..render.csvfile import write_csv
from ..render.html import html_document
from ..render.page import Page
from ..render.terminal import write_header, write_terminal
from ..results.records import SCHEMA_VERSION
from .common import stdout_console

__all__ = ["Emitter", "emit_result", "make_emitter"]

#: Makes the page of one result.
PageOf = Callable[[Any], Page]


class Emitter:
    """Receives results as batches finish; ``close`` ends the document.

    ``close(extra)`` adds keys to the JSON document (before ``results``);
    ``close(tail=...)`` is a page of what follows the last table.
    """

    #: Whether this format shows summaries that cost something to track (FFN sparsity).
    wants_summary = False

    def __init__(
        self,
        many: bool,
        page_of: PageOf,
        as_dict: Callable[[Any], dict[str, Any]],
        model: str | None = None,
        kind: str = "results",
    ):
        self.many = many
        self.kind = kind  # the command: the key of its records in an HTML page
        self.page_of = page_of
        self.as_dict = as_dict
        self.model = model  # as the user named it: the document's "model" before any result
        self.count = 0

    def emit(self, result: Any) -> None:
        self.count += 1
        self._emit(result)

    def _emit(self, result: Any) -> None:
        raise NotImplementedError

    def close(
        self,
        extra: dict[str, Any] | None = None,
        tail: Page | None = None,
    ) -> None:
        """Finish the output; nothing to do for streaming formats."""


class TableEmitter(Emitter):
    wants_summary = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.console = stdout_console()

    def _emit(self, result: Any) -> None:
        page = self.page_of(result)
        if not self.many:
            write_terminal(self.console, page)
            return
        # Many sentences share one model: its line comes once, above the first.
        if self.count == 1:
            write_header(self.console, page)
        self._rule(result)
        write_terminal(self.console, page, header=False)

    def _rule(self, result: Any) -> None:
        if self.count > 1:
            self.console.print()
        self.console.rule(f"sentence {result.index}", align="left")

    def close(
        self,
        extra: dict[str, Any] | None = None,
        tail: Page | None = None,
    ) -> None:
        if tail is not None:
            write_terminal(self.console, tail, header=False)


class JsonEmitter(Emitter):
    """One object for one TEXT; a ``results`` document for a file or stdin."""

    wants_summary = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[dict[str, Any]] = []
        # Until a result says how the model was loaded, only its name is known.
        self.head: dict[str, Any] = {
            "model": self.model,
            "quant": None,
            "device": None,
            "dtype": None,
        }

    def _emit(self, result: Any) -> None:
        if self.many and not self.results:
            info = result.info.as_dict()
            self.head = {key: info[key] for key in self.head}
        self.results.append(self.as_dict(result))

    def document(self, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """What ``--format json`` prints: None for one TEXT that gave no result."""
        if not self.many:
            return {**self.results[0], **(extra or {})} if self.results else None
        document = {"schema": SCHEMA_VERSION, **self.head, **(extra or {})}
        return {**document, "results": self.results}

    def close(
        self,
        extra: dict[str, Any] | None = None,
        tail: Page | None = None,
    ) -> None:
        document = self.document(extra)
        if document is not None:
            write_json(sys.stdout, document)


class HtmlEmitter(JsonEmitter):
    """One self-contained HTML document, written at ``close``: a section per sentence (and
    the tail's), with what ``--format json`` prints embedded under the command's kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages: list[Page] = []

    def _emit(self, result: Any) -> None:
        super()._emit(result)
        self.pages.append(self.page_of(result))

    def close(
        self,
        extra: dict[str, Any] | None = None,
        tail: Page | None = None,
    ) -> None:
        pages = [*self.pages, *([tail] if tail is not None and tail.parts else [])]
        kind = self.pages[0].kind if self.pages else self.kind
        document = self.document(extra)
        data = {} if document is None else {kind: document}
        model = (document or {}).get("model") or self.head["model"]
        title = f"optinspect {kind}" + (f": {model}" if model else "")
        sys.stdout.write(html_document(pages, title=title, data=data))
        sys.stdout.flush()


class JsonlEmitter(Emitter):
    def _emit(self, result: Any) -> None:
        line = json.dumps(self.as_dict(result), ensure_ascii=False, allow_nan=False)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class CsvEmitter(Emitter):
    """Each result's flat sheet (``Page.flat``), the column headers with the first."""

    def _emit(self, result: Any) -> None:
        sheet = self.page_of(result).flat
        if sheet is None:
            raise ValueError(f"a {type(result).__name__} has no CSV form")
        write_csv(sys.stdout, sheet, header=self.count == 1)
        sys.stdout.flush()


EMITTERS: dict[str, type[Emitter]] = {
    "table": TableEmitter,
    "json": JsonEmitter,
    "jsonl": JsonlEmitter,
    "csv": CsvEmitter,
    "html": HtmlEmitter,
}


def make_emitter(
    fmt: str,
    many: bool,
    page_of: PageOf,
    *,
    as_dict: Callable[[Any], dict[str, Any]] | None = None,
    model: str | None = None,
    kind: str = "results",
) -> Emitter:
    """The emitter for ``--format fmt``; ``as_dict`` defaults to the result's own.

    A table of many sentences shows the model line once, at the top. ``model``
    (``--model``) names the model in a JSON document that holds no result; ``kind``
    (the command) keys the records an HTML page embeds when there is no result.
    """
    as_dict = as_dict or (lambda result: result.as_dict())
    return EMITTERS[fmt](many, page_of, as_dict, model, kind)


def emit_result(fmt: str, result: Any, page_of: PageOf) -> None:
    """Write the one result of a command (params, tree, calibrate) as ``--format fmt``."""
    emitter = make_emitter(fmt, False, page_of)
    emitter.emit(result)
    emitter.close()
