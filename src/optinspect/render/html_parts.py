"""The parts of a page as HTML, for ``render.html``: sheets as tables, heatmaps, charts
and histograms as inline SVG (``render.svg``), trees as nested lists, lines and legends.

    html = part_html(sheet, max_rows=None)      # a <table>, every row
    html = part_html(sheet, max_rows=60)        # first and last 30, and a row that says so

A cell's runs become ``<span class="s-<style>">``, its ``tip`` a ``title``, its ``value``
``data-value`` (the sort script reads it; NaN and Inf are marked ``data-nonfinite``). A
row whose cells past the first are empty heads the rows under it. A tree's entries with
entries under them are ``<details open>``: they fold without script. Every text is
escaped here; nothing refers to anything outside the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from .common import format_number
from .page import (
    Cell,
    Chart,
    Heatmap,
    Histograms,
    Legend,
    Lines,
    Node,
    Part,
    Sheet,
    Style,
    Tree,
)
from .svg import chart_svg, heatmap_svg, histogram_svg
from .terminal import viridis

__all__ = ["joined_html", "part_html"]


def joined_html(parts: Sequence[str], separator: str) -> str:
    """Parts of one line joined by ``separator``: the line breaks only between them
    (the model line, a rule of several clauses)."""
    glue = f'<span class="sep">{escape(separator)}</span>'
    return glue.join(f'<span class="part">{escape(part)}</span>' for part in parts)


def part_html(part: Part, max_rows: int | None) -> str:
    """``part`` as HTML; with ``max_rows``, a longer table or histogram list shows its
    first and last ``max_rows // 2`` rows and a row that says how many are not shown."""
    if isinstance(part, Sheet):
        return _sheet(part, max_rows)
    if isinstance(part, Heatmap):
        return _figure(part.caption, part.name, heatmap_svg(part))
    if isinstance(part, Chart):
        return _figure(part.title, part.name, chart_svg(part))
    if isinstance(part, Lines) and part.separator is not None:
        return f"<p>{joined_html(part.lines, part.separator)}</p>\n"
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
    heading = _is_heading(row)
    classes = ["heading"] if heading else []
    if sheet.row_styles is not None and sheet.row_styles[index] is not Style.plain:
        classes.append("r-" + sheet.row_styles[index].value)
    if sheet.section_before is not None and index == sheet.section_before:
        classes.append("section")
    attrs = _class(" ".join(classes))
    if heading:
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
