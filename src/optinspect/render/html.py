"""The HTML writer: pages as one self-contained document, or as a notebook cell's fragment.

    html = html_document([trace_page(result)], title="optinspect trace")   # a file
    html = html_fragment([lens_page(result)])                               # _repr_html_

A document loads nothing: its CSS is inline, its pictures inline SVG (``render.svg``), no
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
import math
import secrets
from collections.abc import Mapping, Sequence
from html import escape
from importlib import metadata
from typing import Any

from .common import HEADER_SEPARATOR, format_number
from .page import (
    Cell,
    Chart,
    Heatmap,
    Histograms,
    Legend,
    Lines,
    Node,
    Page,
    Sheet,
    Style,
    Tree,
)
from .svg import chart_svg, heatmap_svg, histogram_svg
from .terminal import viridis

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
    shown: tuple[list[str], list[str]] = ([], [])
    for page in pages:
        out.append(f'<section class="{escape("kind-" + page.kind)}">\n')
        # Many sentences share one model: its line and notes come again only if they change.
        header = (list(page.headline), list(page.notes))
        if header != shown:
            out.append(_headline(page))
            shown = header
        out.append(_section_heading(page, several=len(pages) > 1))
        out.extend(_part(part, max_rows) for part in page.parts)
        out.append("</section>\n")
    return "".join(out)


def _headline(page: Page) -> str:
    """The model line, which breaks only between its parts, and the notes under it."""
    out = f'<p class="headline">{_joined(page.headline, HEADER_SEPARATOR)}</p>\n'
    return (out if page.headline else "") + "".join(
        f'<p class="note">{escape(note)}</p>\n' for note in page.notes
    )


def _joined(parts: Sequence[str], separator: str) -> str:
    """Parts of one line joined by ``separator``: the line breaks only between them."""
    glue = f'<span class="sep">{escape(separator)}</span>'
    return glue.join(f'<span class="part">{escape(part)}</span>' for part in parts)


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


def _part(part: object, max_rows: int | None) -> str:
    if isinstance(part, Sheet):
        return _sheet(part, max_rows)
    if isinstance(part, Heatmap):
        return _figure(part.title, part.name, heatmap_svg(part))
    if isinstance(part, Chart):
        return _figure(part.title, part.name, chart_svg(part))
    if isinstance(part, Lines) and part.separator is not None:
        return f"<p>{_joined(part.lines, part.separator)}</p>\n"
    if isinstance(part, Lines):
        return "".join(f"<p>{escape(line)}</p>\n" for line in part.lines)
    if isinstance(part, Legend):
        return (
            f'<p class="legend"><span class="swatch s-{part.style.value}">Aa</span>'
            f"{escape(part.text)}</p>\n"
        )
    if isinstance(part, Histograms):
        return _histograms(part, max_rows)
    if isinstance(part, Tree):
        named = f' data-name="{escape(part.name)}"' if part.name else ""
        return f'<div class="tree"{named}><ul>{_node(part.root)}</ul></div>\n'
    return ""


def _node(node: Node) -> str:
    """One entry as a list item: its name and values; with entries under it, a
    ``details`` element (open, so the page reads whole without script) holding them."""
    runs = [escape(node.name)] if node.name else []
    for run in node.runs:
        text = escape(run.text)
        runs.append(f'<span class="s-{run.style.value}">{text}</span>' if run.style.value else text)
    label = '<span class="gap">  </span>'.join(
        [f'<span class="name">{runs[0]}</span>', *runs[1:]] if node.name else runs
    )
    if not node.children:
        return f"<li>{label}</li>"
    below = "".join(_node(child) for child in node.children)
    return f"<li><details open><summary>{label}</summary><ul>{below}</ul></details></li>"


def _figure(title: str, name: str, svg: str) -> str:
    named = f' data-name="{escape(name)}"' if name else ""
    return f"<figure{named}><figcaption>{escape(title)}</figcaption>{svg}</figure>\n"


def _kept(count: int, max_rows: int | None) -> tuple[list[int], int]:
    """The rows shown of ``count`` (-1 where rows are left out) and how many are left out:
    all of them, or the first and last ``max_rows // 2`` as pandas shows a long frame."""
    indices = list(range(count))
    if max_rows is None or count <= max_rows:
        return indices, 0
    half = max(1, max_rows // 2)
    return [*indices[:half], -1, *indices[-half:]], count - 2 * half


def _cut_row(columns: int, cut: int) -> str:
    return f'<tr class="cut"><td colspan="{columns}">… {cut} rows not shown …</td></tr>'


def _histograms(part: Histograms, max_rows: int | None) -> str:
    """A table: each row's label, its lowest value, its histogram and its highest value."""
    indices, cut = _kept(len(part.rows), max_rows)
    rows = []
    for index in indices:
        if index < 0:
            rows.append(_cut_row(4, cut))
            continue
        bins = part.rows[index]
        low, high = (escape(format_number(v)) for v in (bins.low, bins.high))
        rows.append(
            f'<tr><td>{escape(bins.label)}</td><td class="n">{low}</td>'
            f'<td>{histogram_svg(bins)}</td><td class="n">{high}</td></tr>'
        )
    name = f' data-name="{escape(part.name)}"' if part.name else ""
    title = f'<p class="sheet-title">{escape(part.title)}</p>' if part.title else ""
    return (
        f'{title}<div class="scroll"><table class="hists"{name}>'
        '<thead><tr><th scope="col">module</th><th class="n" scope="col">min</th>'
        '<th scope="col">values</th><th class="n" scope="col">max</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>\n"
    )


def _is_heading(row: Sequence[Cell]) -> bool:
    """A row whose cells past the first are empty heads the rows under it (a layer)."""
    return len(row) > 1 and all(not item.text for item in row[1:])


def _sheet(sheet: Sheet, max_rows: int | None) -> str:
    align = [
        "n" if column.justify == "right" else "c" if column.justify == "center" else ""
        for column in sheet.columns
    ]
    head = "".join(
        f'<th{_class(a)} scope="col">{escape(column.header)}</th>'
        for column, a in zip(sheet.columns, align, strict=True)
    )
    indices, cut = _kept(len(sheet.rows), max_rows)
    rows = []
    for index in indices:
        if index < 0:
            rows.append(_cut_row(len(sheet.columns), cut))
            continue
        rows.append(_row(sheet, index, align))
    classes = "sortable" + (" lined" if sheet.lines else "")
    name = f' data-name="{escape(sheet.name)}"' if sheet.name else ""
    title = f'<p class="sheet-title">{escape(sheet.title)}</p>' if sheet.title else ""
    after = f'<p class="caption">{escape(sheet.caption)}</p>\n' if sheet.caption else ""
    label = f' aria-label="{escape(sheet.title)}"' if sheet.title else ""
    return (
        f'{title}<div class="scroll"><table class="{classes}"{name}{label}>'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></div>\n"
        + after
    )


def _class(name: str) -> str:
    return f' class="{name}"' if name else ""


def _row(sheet: Sheet, index: int, align: Sequence[str]) -> str:
    row = sheet.rows[index]
    classes = []
    if _is_heading(row):
        classes.append("heading")
    if sheet.row_styles is not None and sheet.row_styles[index] is not Style.plain:
        classes.append("r-" + sheet.row_styles[index].value)
    if sheet.section_before is not None and index == sheet.section_before:
        classes.append("section")
    attrs = _class(" ".join(classes))
    if _is_heading(row):
        return (
            f'<tr{attrs}><th colspan="{len(sheet.columns)}" scope="rowgroup">'
            f"{_runs(row[0])}</th></tr>"
        )
    cells = "".join(_cell(item, a) for item, a in zip(row, align, strict=True))
    return f"<tr{attrs}>{cells}</tr>"


def _cell(item: Cell, align: str) -> str:
    attrs = _class(align)
    if item.tip:
        attrs += f' title="{escape(item.tip)}"'
    if item.value is not None:
        attrs += f' data-value="{_value(item.value)}"'
        if isinstance(item.value, float) and not math.isfinite(item.value):
            attrs += ' data-nonfinite=""'
    return f"<td{attrs}>{_runs(item)}</td>"


def _value(value: float) -> str:
    if isinstance(value, int) or not isinstance(value, float):
        return str(value)
    return (
        repr(value)
        if math.isfinite(value)
        else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))
    )


def _runs(item: Cell) -> str:
    out = []
    for run in item.runs:
        text = escape(run.text).replace("\n", "<br>")
        if run.style is Style.plain:
            out.append(text)
        elif run.style is Style.heat and item.value is not None:
            (r, g, b), dark = viridis(item.value)
            colour = "#000" if dark else "#fff"
            out.append(
                f'<span class="s-heat" style="background:rgb({r},{g},{b});'
                f'color:{colour}">{text}</span>'
            )
        else:
            out.append(f'<span class="s-{run.style.value}">{text}</span>')
    return "".join(out)
