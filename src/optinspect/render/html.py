"""The HTML writer: pages as one self-contained document, or as a notebook cell's fragment.

    html = html_document([trace_page(result)], title="optinspect trace")   # a file
    html = html_fragment([lens_page(result)])                               # _repr_html_

Each part is drawn by ``render.html_parts`` (tables, trees, lines; pictures through
``render.svg``). A document loads nothing: its CSS is inline, its pictures inline SVG, no
font, no CDN, and a ``Content-Security-Policy`` with ``default-src 'none'`` makes the
browser refuse any request. Its one script sorts a table when a header is clicked,
allowed by its sha256 hash; the page reads the same without it. The records are
embedded as JSON (``<script type="application/json" id="optinspect-data">``), keyed by
page kind, with every ``<`` written ``\\u003c`` so no text can close the script.

A fragment holds the same parts in a ``<div class="optinspect" id="optinspect-…">``
with its CSS scoped to that id (notebook hosts put outputs side by side), no script,
and long tables cut as pandas cuts them: the first and last rows, and a row that says
how many are not shown. Everything that comes from the input (text, tokens, module
names, paths) is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from html import escape
from importlib import metadata
from typing import Any

from .common import HEADER_SEPARATOR
from .html_parts import joined_html, part_html
from .page import Page, fresh_headers

__all__ = [
    "CSP",
    "SORT_SCRIPT",
    "VERSIONED",
    "embedded_json",
    "html_document",
    "html_fragment",
    "library_versions",
    "pages_data",
]

#: The libraries whose versions a page names, read from the installed metadata (no import).
VERSIONED = ("optinspect", "torch", "transformers", "bitsandbytes")

#: Sorts a table by the column whose header is clicked (again: the other way; a third
#: time: back to the order it came in). Numbers by ``data-value``; rows that head a
#: layer are hidden while a table is sorted, as they belong to the order of execution.
SORT_SCRIPT = """\
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.tabIndex = 0;
    th.title = "sort";
    function sort() {
      var dir = th.dataset.dir === "up" ? "down" : th.dataset.dir === "down" ? "" : "up";
      table.querySelectorAll("thead th").forEach(function (h) { h.dataset.dir = ""; });
      th.dataset.dir = dir;
      table.classList.toggle("sorted", dir !== "");
      var order = rows.slice();
      if (dir) {
        var key = function (row) {
          var c = row.cells[col], v = c ? c.dataset.value : undefined;
          if (v !== undefined && v !== "" && !isNaN(parseFloat(v))) return parseFloat(v);
          return c && !row.classList.contains("heading") ? c.textContent : null;
        };
        order.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === null || y === null) return (x === null) - (y === null);
          if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
          var s = x < y ? -1 : x > y ? 1 : 0;
          return dir === "up" ? s : -s;
        });
      }
      order.forEach(function (row) { body.appendChild(row); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });
});
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
#: Nothing may load: styles and images inline, the one script by its hash.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_CSS = """\
{s}{{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;\
background:#fff}}
{s} h1{{font-size:1.5em;margin:.2em 0}}
{s} h2{{font-size:1.2em;margin:1.2em 0 .3em;border-bottom:1px solid #ccc}}
{s} h3{{font-size:1em;margin:1em 0 .3em}}
{s} .part{{white-space:nowrap}}
{s} .headline .sep{{color:#888}}
{s} .note{{color:#8a5a00}}
{s} .versions,{s} .caption,{s} .text{{color:#555;font-size:.9em}}
{s} .text{{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}}
{s} .scroll{{overflow-x:auto;max-width:100%}}
{s} table{{border-collapse:collapse;font-size:12.5px;margin:.2em 0}}
{s} .sheet-title{{font-weight:600;margin:.8em 0 .1em}}
{s} th,{s} td{{padding:1px 8px;border-bottom:1px solid #eee;vertical-align:top;\
white-space:pre}}
{s} thead th{{background:#f3f3f3;border-bottom:1px solid #bbb;text-align:left;\
position:sticky;top:0}}
{s} .n{{text-align:right;font-variant-numeric:tabular-nums}}
{s} .c{{text-align:center}}
{s} tr.heading th{{text-align:left;font-weight:600;background:#fafafa}}
{s} table.sorted tr.heading{{display:none}}
{s} thead th[data-dir=up]:after{{content:" ▲"}}
{s} thead th[data-dir=down]:after{{content:" ▼"}}
{s} table.lined td{{border-bottom:1px solid #ccc}}
{s} tr.section td{{border-top:2px solid #999}}
{s} tr.cut td{{text-align:center;color:#777;font-style:italic}}
{s} .s-match{{color:#1a7f37;font-weight:600}}
{s} .s-marked,{s} tr.r-marked td{{font-weight:700}}
{s} .s-nonfinite{{color:#b00020;background:#fde7ea;font-weight:600}}
{s} .s-over,{s} tr.r-over td{{color:#b00020}}
{s} .s-first_over,{s} tr.r-first_over td{{color:#b00020;font-weight:700}}
{s} .swatch{{display:inline-block;min-width:1.6em;text-align:center;margin-right:.4em;\
border:1px solid #ddd}}
{s} figure{{margin:.6em 0}}
{s} figcaption{{font-weight:600;margin-bottom:.2em}}
{s} svg{{max-width:100%;height:auto;font-size:11px;font-family:inherit}}
{s} svg text{{fill:#333}}
{s} svg .plot{{fill:#fff;stroke:#999}}
{s} svg .grid{{stroke:#e6e6e6}}
{s} svg .axis{{font-weight:600}}
{s} .s-strong,{s} .tree .name{{font-weight:600}}
{s} .s-kind{{color:#0b6e75}}
{s} .s-quiet{{color:#6b6b6b}}
{s} .tree ul{{list-style:none;margin:0;padding-left:1.3em;border-left:1px solid #ddd}}
{s} .tree>ul{{padding-left:0;border-left:0}}
{s} .tree li{{white-space:nowrap;font-size:13px}}
{s} .tree summary{{cursor:pointer}}
{s} .gap{{white-space:pre}}
{s} table.hists td{{vertical-align:middle;padding-top:0;padding-bottom:0}}
{s} svg.hist{{display:block}}
"""


def page_css(scope: str) -> str:
    """The style sheet, every rule under ``scope`` (a selector such as ``#optinspect-1``)."""
    return _CSS.format(s=scope)


def library_versions() -> dict[str, str]:
    """The installed versions of ``VERSIONED`` (from package metadata: nothing is imported);
    a library that is not installed is left out."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def pages_data(pages: Sequence[Page]) -> dict[str, Any]:
    """The records of ``pages`` keyed by kind: a kind's one ``data``, or the list of them
    when several pages share a kind (several sentences)."""
    grouped: dict[str, list[Any]] = {}
    for page in pages:
        if page.data is not None:
            grouped.setdefault(page.kind, []).append(page.data)
    return {kind: items[0] if len(items) == 1 else items for kind, items in grouped.items()}


def embedded_json(data: Mapping[str, Any]) -> str:
    """``data`` as JSON that is safe inside a ``<script>``: every ``<`` is ``\\u003c``, so
    no ``</script>`` or ``<!--`` in a token can end it; ``JSON.parse`` reads it back."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def html_document(
    pages: Sequence[Page], *, title: str, data: Mapping[str, Any] | None = None
) -> str:
    """One self-contained HTML page of ``pages``: a header (the title, the libraries'
    versions), then a section per page. ``data`` is the JSON embedded as the records
    (``pages_data(pages)`` when None; a command passes what its ``--format json`` prints)."""
    scope = "optinspect-page"
    body = _body(pages, max_rows=None)
    records = embedded_json(pages_data(pages) if data is None else data)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="optinspect">\n'
        f"<title>{escape(title)}</title>\n"
        f"<style>\nbody{{margin:1.2em}}\n{page_css('#' + scope)}</style>\n</head>\n<body>\n"
        f'<div class="optinspect" id="{scope}">\n'
        f"<h1>{escape(title)}</h1>\n{_versions()}{body}</div>\n"
        f'<script type="application/json" id="optinspect-data">{records}</script>\n'
        f"<script>{SORT_SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )


def html_fragment(pages: Sequence[Page], *, max_rows: int = 60) -> str:
    """The parts of ``pages`` for a notebook cell: a ``div`` with a unique id, its CSS
    scoped to it, no script; a table of more than ``max_rows`` rows shows its first and
    last ``max_rows // 2`` and says how many are not shown."""
    scope = f"optinspect-{secrets.token_hex(6)}"
    return (
        f'<div class="optinspect" id="{scope}">'
        f"<style>{page_css('#' + scope)}</style>\n"
        f"{_body(pages, max_rows=max_rows)}{_versions()}</div>\n"
    )


def _versions() -> str:
    found = library_versions()
    text = ", ".join(f"{name} {version}" for name, version in found.items())
    return f'<p class="versions">{escape(text)}</p>\n' if text else ""


def _body(pages: Sequence[Page], *, max_rows: int | None) -> str:
    out: list[str] = []
    for page, fresh in fresh_headers(pages):
        out.append(f'<section class="{escape("kind-" + page.kind)}">\n')
        out.append(_section_heading(page, several=len(pages) > 1))
        if fresh:
            out.append(_headline(page))
        out.extend(part_html(part, max_rows) for part in page.parts)
        out.append("</section>\n")
    return "".join(out)


def _headline(page: Page) -> str:
    """The model line, which breaks only between its parts, and the notes under it."""
    out = f'<p class="headline">{joined_html(page.headline, HEADER_SEPARATOR)}</p>\n'
    return (out if page.headline else "") + "".join(
        f'<p class="note">{escape(note)}</p>\n' for note in page.notes
    )


def _section_heading(page: Page, *, several: bool) -> str:
    """``trace · sentence 2`` and the sentence, where the page's record has them; the
    kind alone where a document holds several pages."""
    data = page.data or {}
    index, text = data.get("index"), data.get("text")
    label = page.kind if index is None else f"{page.kind} · sentence {index}"
    out = f"<h2>{escape(label)}</h2>\n" if several or index is not None else ""
    if isinstance(text, str):
        out += f'<p class="text">{escape(text)}</p>\n'
    return out
