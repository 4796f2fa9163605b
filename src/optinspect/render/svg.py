"""Pictures for the HTML writer: a heatmap and a line chart as inline SVG, nothing fetched.

    svg = heatmap_svg(Heatmap("outliers", rows, columns, values, high=12.0))
    svg = chart_svg(Chart("across depth", "layer", x, [Series("absmax", values)]))

Every text that comes from the input is escaped. A heatmap is drawn as a background of
its ``low`` colour with one ``<rect>`` (and a ``<title>`` for hover) per cell that differs
from it, so a sparse map (outlier counts: mostly zeros) costs what its few marked cells
cost. A map with more marked cells than ``MAX_RECTS`` is drawn as one PNG (a data URI,
written here with zlib and struct): a byte or so per cell instead of some sixty, so a
dense 12 x 768 map stays a few kilobytes; its cells then have no hover text, but the
figure says where each row and column is. Colours are the terminal's viridis.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence
from html import escape

from .common import format_number
from .page import Bins, Chart, Heatmap
from .terminal import VIRIDIS, viridis

__all__ = ["MAX_RECTS", "chart_svg", "heatmap_svg", "histogram_svg", "png_rgb"]

#: Above this many marked cells a heatmap is one PNG: rects cost ~60 bytes a cell.
MAX_RECTS = 2500
#: A cell with no value (None, or above the diagonal of a causal map).
NO_VALUE = (221, 221, 221)
#: The lines of a chart, in order (Tableau 10).
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")
#: Width of the drawing area of a picture, in CSS pixels (it shrinks with the page).
WIDTH = 880
#: A chart marks each value with a dot (its value on hover) up to this many points.
MAX_DOTS = 48
#: A chart lists its lines beside it up to this many; more, and each line names
#: itself on hover (calibrate's act_scales: a line per linear layer).
MAX_LEGEND = 14
_FONT = 11


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _num(value: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def png_rgb(pixels: Sequence[Sequence[tuple[int, int, int]]]) -> bytes:
    """A truecolour PNG of rows of RGB pixels (all rows of one width, at least one)."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(c for rgb in row for c in rgb) for row in pixels)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _level(heatmap: Heatmap, value: float) -> float:
    span = heatmap.high - heatmap.low
    return (value - heatmap.low) / span if span else 0.0


def _colour(heatmap: Heatmap, value: float | None) -> tuple[int, int, int]:
    """A cell's colour: viridis of its place in [low, high], grey for no value (None,
    NaN or Inf: the hover text says which)."""
    if value is None or not math.isfinite(value):
        return NO_VALUE
    return viridis(_level(heatmap, value))[0]


def _shown(heatmap: Heatmap, value: float | None) -> str:
    if value is None:
        return "no value"
    return format_number(value * 100) + "%" if heatmap.percent else format_number(value)


def _fit(label: object, chars: int = 22) -> str:
    """A label cut to ``chars`` characters (an ellipsis at the end), so it stays in view."""
    text = str(label)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _label_text(label: object, chars: int = 22, *, tail: bool = False) -> str:
    """A label's escaped text for a ``<text>``, cut as ``_fit`` cuts it (or keeping its
    end, with ``tail``: the end of a module name says most), with the whole label in a
    ``<title>`` where it was cut."""
    whole = str(label)
    cut = "…" + whole[-(chars - 1) :] if tail and len(whole) > chars else _fit(label, chars)
    return escape(cut) + (f"<title>{escape(whole)}</title>" if cut != whole else "")


def _every(size: float, count: int) -> int:
    """Label every n-th row or column so that labels do not overlap."""
    return max(1, math.ceil(14 / size)) if count else 1


def heatmap_svg(heatmap: Heatmap) -> str:
    """The heatmap as an ``<svg>``: row and column labels, the grid and a colour bar."""
    n_rows, n_cols = len(heatmap.rows), len(heatmap.columns)
    label_w = 8 + 7 * max((len(_fit(r)) for r in [*heatmap.rows, heatmap.corner]), default=1)
    cw = min(28.0, max(1.0, (WIDTH - label_w) / max(n_cols, 1)))
    ch = min(18.0, max(2.0, 480 / max(n_rows, 1)))
    top, left = 30.0, float(label_w)
    grid_w, grid_h = cw * n_cols, ch * n_rows
    width, height = left + grid_w + 70, top + grid_h + 10
    out = [
        f'<svg class="heatmap" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
        f'aria-label="{escape(heatmap.title)}">'
    ]
    background = _hex(viridis(0.0)[0])
    out.append(
        f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(grid_w)}" height="{_num(grid_h)}" '
        f'fill="{background}"><title>{escape(_shown(heatmap, heatmap.low))}</title></rect>'
    )
    # Above the diagonal of a causal map nothing is: one staircase, not a rect a cell.
    if heatmap.causal and n_cols > 1 and n_rows:
        out.append(_upper_triangle(min(n_rows, n_cols - 1), left, top, cw, ch, grid_w))
    marked = [
        (r, c, value)
        for r, row in enumerate(heatmap.values)
        for c, value in enumerate(row)
        if not (heatmap.causal and c > r) and (value is None or value != heatmap.low)
    ]
    if len(marked) > MAX_RECTS:
        out.append(_grid_png(heatmap, left, top, grid_w, grid_h))
    else:
        for r, c, value in marked:
            rgb = _colour(heatmap, value)
            tip = f"{heatmap.rows[r]}, {heatmap.columns[c]}: {_shown(heatmap, value)}"
            out.append(
                f'<rect x="{_num(left + c * cw)}" y="{_num(top + r * ch)}" width="{_num(cw)}" '
                f'height="{_num(ch)}" fill="{_hex(rgb)}"><title>{escape(tip)}</title></rect>'
            )
    out.extend(_heatmap_labels(heatmap, left, top, cw, ch))
    out.extend(_colour_bar(heatmap, left + grid_w + 14, top, min(grid_h, 160.0)))
    out.append("</svg>")
    return "".join(out)


def _upper_triangle(rows: int, left: float, top: float, cw: float, ch: float, grid_w: float) -> str:
    """The cells right of the diagonal in the first ``rows`` rows, as one grey path."""
    d = [f"M{_num(left + cw)} {_num(top)}", f"H{_num(left + grid_w)}", f"V{_num(top + ch * rows)}"]
    for r in range(rows - 1, -1, -1):
        d.append(f"H{_num(left + cw * (r + 1))}V{_num(top + ch * r)}")
    return f'<path d="{"".join(d)}Z" fill="{_hex(NO_VALUE)}"><title>no value</title></path>'


def _grid_png(heatmap: Heatmap, left: float, top: float, width: float, height: float) -> str:
    pixels = [
        [
            NO_VALUE if heatmap.causal and c > r else _colour(heatmap, value)
            for c, value in enumerate(row)
        ]
        for r, row in enumerate(heatmap.values)
    ]
    data = base64.b64encode(png_rgb(pixels)).decode("ascii")
    return (
        f'<image x="{_num(left)}" y="{_num(top)}" width="{_num(width)}" height="{_num(height)}" '
        f'preserveAspectRatio="none" style="image-rendering:pixelated" '
        f'href="data:image/png;base64,{data}"/>'
    )


def _heatmap_labels(heatmap: Heatmap, left: float, top: float, cw: float, ch: float) -> list[str]:
    out = []
    if heatmap.corner:
        out.append(
            f'<text x="{_num(left - 4)}" y="{_num(top - 18)}" text-anchor="end" '
            f'class="corner">{_label_text(heatmap.corner)}</text>'
        )
    step = _every(ch, len(heatmap.rows))
    for r in range(0, len(heatmap.rows), step):
        y = top + (r + 0.5) * ch + _FONT / 3
        out.append(
            f'<text x="{_num(left - 4)}" y="{_num(y)}" text-anchor="end">'
            f"{_label_text(heatmap.rows[r])}</text>"
        )
    step = _every(cw * 0.6, len(heatmap.columns))
    for c in range(0, len(heatmap.columns), step):
        x = left + (c + 0.5) * cw
        out.append(
            f'<text x="{_num(x)}" y="{_num(top - 6)}" text-anchor="middle">'
            f"{_label_text(heatmap.columns[c], 8)}</text>"
        )
    return out


def _colour_bar(heatmap: Heatmap, x: float, top: float, height: float) -> list[str]:
    """Ten steps of the colour map, high at the top, with the ends labelled."""
    steps = 10
    height = max(height, 40.0)
    out = []
    for i in range(steps):
        rgb = viridis(1 - (i + 0.5) / steps)[0]
        out.append(
            f'<rect x="{_num(x)}" y="{_num(top + i * height / steps)}" width="10" '
            f'height="{_num(height / steps + 0.5)}" fill="{_hex(rgb)}"/>'
        )
    high, low = _shown(heatmap, heatmap.high), _shown(heatmap, heatmap.low)
    out.append(f'<text x="{_num(x + 13)}" y="{_num(top + _FONT)}">{escape(high)}</text>')
    out.append(f'<text x="{_num(x + 13)}" y="{_num(top + height)}">{escape(low)}</text>')
    return out


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values between ``low`` and ``high`` for an axis."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def chart_svg(chart: Chart) -> str:
    """The chart as an ``<svg>``: a line per series (gaps where a value is None or not
    finite, or not positive on a log axis), axes with ticks, and a legend."""
    width, height = float(WIDTH), 280.0
    left, right, top, bottom = 64.0, 230.0, 14.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def usable(v: float | None) -> bool:
        return v is not None and math.isfinite(v) and (v > 0 or not chart.log)

    values = [v for s in chart.series for v in s.values if usable(v)]
    scale = (lambda v: math.log10(v)) if chart.log else (lambda v: v)
    low = min((scale(v) for v in values), default=0.0)  # type: ignore[arg-type]
    high = max((scale(v) for v in values), default=1.0)  # type: ignore[arg-type]
    if high == low:
        low, high = low - 1, high + 1
    n = len(chart.x)

    def px(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top + plot_h * (1 - (scale(v) - low) / (high - low))

    out = [
        f'<svg class="chart" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
        f'aria-label="{escape(chart.title)}">',
        f'<rect x="{_num(left)}" y="{_num(top)}" width="{_num(plot_w)}" height="{_num(plot_h)}" '
        'class="plot"/>',
    ]
    # A log axis ticks at whole powers of ten (1, 10, 100), never at 10^0.4.
    decades = [float(d) for d in range(math.ceil(low), math.floor(high) + 1)]
    for tick in decades if chart.log and len(decades) >= 2 else _ticks(low, high):
        y = top + plot_h * (1 - (tick - low) / (high - low))
        text = format_number(10**tick) if chart.log else format_number(tick)
        out.append(
            f'<line x1="{_num(left)}" x2="{_num(left + plot_w)}" y1="{_num(y)}" '
            f'y2="{_num(y)}" class="grid"/>'
        )
        out.append(
            f'<text x="{_num(left - 4)}" y="{_num(y + 4)}" text-anchor="end">{escape(text)}</text>'
        )
    step = _every(plot_w / max(n, 1) * 0.5, n)
    for i in range(0, n, step):
        out.append(
            f'<text x="{_num(px(i))}" y="{_num(top + plot_h + 14)}" '
            f'text-anchor="middle">{escape(str(chart.x[i]))}</text>'
        )
    out.append(
        f'<text x="{_num(left + plot_w / 2)}" y="{_num(height - 6)}" '
        f'text-anchor="middle" class="axis">{escape(chart.x_label)}</text>'
    )
    if chart.y_label:
        label = chart.y_label + (" (log)" if chart.log else "")
        out.append(
            f'<text x="12" y="{_num(top + plot_h / 2)}" text-anchor="middle" class="axis" '
            f'transform="rotate(-90 12 {_num(top + plot_h / 2)})">{escape(label)}</text>'
        )
    dots = n <= MAX_DOTS
    legend = len(chart.series) <= MAX_LEGEND
    for k, series in enumerate(chart.series):
        colour = PALETTE[k % len(PALETTE)]
        out.append(_series_path(chart, series.values, (px, py, usable), colour, series.name, dots))
        if not legend:
            continue
        y = top + 8 + 15 * k
        out.append(
            f'<line x1="{_num(left + plot_w + 10)}" x2="{_num(left + plot_w + 28)}" '
            f'y1="{_num(y)}" y2="{_num(y)}" stroke="{colour}" stroke-width="2"/>'
        )
        out.append(
            f'<text x="{_num(left + plot_w + 32)}" y="{_num(y + 4)}">'
            f"{_label_text(series.name, 30, tail=True)}</text>"
        )
    if not legend:
        out.append(
            f'<text x="{_num(left + plot_w + 10)}" y="{_num(top + 12)}">'
            f"{len(chart.series)} lines: hover one</text>"
            f'<text x="{_num(left + plot_w + 10)}" y="{_num(top + 27)}">for its name</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _series_path(  # type: ignore[no-untyped-def]
    chart: Chart, values, scale, colour: str, name: str, dots: bool
) -> str:
    """One series: a path broken at the values it cannot draw, with its name in a
    ``<title>``; with ``dots``, a dot at each value with the value in its own."""
    px, py, usable = scale
    pieces: list[str] = []
    marks: list[str] = []
    pen_down = False
    for i, value in enumerate(values):
        if not usable(value):
            pen_down = False
            continue
        x, y = px(i), py(value)
        pieces.append(f"{'L' if pen_down else 'M'}{_num(x)} {_num(y)}")
        pen_down = True
        if dots:
            tip = escape(f"{name}, {chart.x[i]}: {format_number(value)}")
            marks.append(
                f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{colour}">'
                f"<title>{tip}</title></circle>"
            )
    path = (
        f'<path d="{" ".join(pieces)}" fill="none" stroke="{colour}" stroke-width="1.8">'
        f"<title>{escape(name)}</title></path>"
    )
    return f'<g class="series">{path if pieces else ""}{"".join(marks)}</g>'


#: A small histogram: each bin this many pixels wide, the tallest this tall.
BIN_WIDTH, HIST_HEIGHT = 3, 24


def histogram_svg(bins: Bins) -> str:
    """One row's histogram as a small ``<svg>``: its bins as one filled step path (a few
    bytes a bin), the range and the count in a ``<title>``."""
    counts = list(bins.counts)
    top = max(counts, default=0)
    width = BIN_WIDTH * max(len(counts), 1)
    d = [f"M0 {HIST_HEIGHT}"]
    for i, count in enumerate(counts):
        height = round(HIST_HEIGHT * count / top) if top else 0
        d.append(f"V{HIST_HEIGHT - height}H{(i + 1) * BIN_WIDTH}")
    d.append(f"V{HIST_HEIGHT}Z")
    tip = (
        f"{bins.label}: {sum(counts)} values in {len(counts)} bins from "
        f"{format_number(bins.low)} to {format_number(bins.high)}; the fullest holds {top}"
    )
    return (
        f'<svg class="hist" width="{width}" height="{HIST_HEIGHT}" '
        f'viewBox="0 0 {width} {HIST_HEIGHT}" role="img" aria-label="{escape(tip)}">'
        f"<title>{escape(tip)}</title>"
        f'<path d="{"".join(d)}" fill="{_hex(VIRIDIS[1])}"/></svg>'
    )
