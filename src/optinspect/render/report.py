"""The report's pages: each analysis's own page, from the record its command prints, with
the series across depth and the per-module histograms between them.

    pages = report_pages(result)            # trace, depth, sparsity, ...
    page = report_html(result)              # the whole self-contained HTML page

Every analysis draws its part with its own page function (``trace_page``,
``outliers_page``, ...), so the report shows what the commands show; the ``depth`` page
is the report's own: each layer's output and the chosen role's (mean, std, absmax) as
charts, and a small histogram of each traced module's output values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .attention import attention_page
from .compare import compare_page
from .lens import lens_page
from .outliers import outliers_page
from .page import Bins, Chart, Heatmap, Histograms, Lines, Page, Series
from .params import params_page
from .trace import sparsity_page, trace_page

if TYPE_CHECKING:
    from ..results.attention import HeadMaps
    from ..results.report import DepthSeries, ReportResult

__all__ = [
    "depth_chart",
    "depth_page",
    "heads_page",
    "report_html",
    "report_pages",
    "report_title",
]


def report_title(result: ReportResult) -> str:
    """``optinspect report: MODEL``, the title of the page and of its file."""
    return f"optinspect report: {result.info.model}"


def depth_chart(series: DepthSeries) -> Chart:
    """Mean, std and absmax of one module's output, layer by layer (None is a gap)."""
    who = "each decoder layer's output" if series.role is None else f"each layer's {series.role}"
    return Chart(
        f"{who} across depth",
        "layer",
        list(series.layers),
        [
            Series("mean", series.mean),
            Series("std", series.std),
            Series("absmax", series.absmax),
        ],
        name=f"depth-{series.role or 'layers'}",
    )


def depth_page(result: ReportResult) -> Page:
    """The charts across depth and the histograms of the traced modules' outputs; a
    module whose output held no finite value has no histogram, and a line says so."""
    rows = [
        Bins(key, histogram.lo, histogram.hi, histogram.counts)
        for key, histogram in result.histograms.items()
        if histogram.lo is not None and histogram.hi is not None
    ]
    parts: list = [depth_chart(result.layer_series), depth_chart(result.role_series)]
    if rows:
        parts.append(Histograms("output values of each module", rows, name="histograms"))
    missing = len(result.histograms) - len(rows)
    if missing:
        parts.append(Lines([f"{missing} modules held no finite value: no histogram"]))
    return Page("depth", parts=parts)


def heads_page(maps: HeadMaps) -> Page:
    """Every head of every layer as two layer x head maps: its entropy (0 to the entropy of
    an even spread) and its sink, the weight on the first token (0 to 100%)."""
    layers = [f"L{layer}" for layer in range(len(maps.entropy))]
    heads = [str(head) for head in range(len(maps.entropy[0]) if maps.entropy else 0)]
    even = maps.uniform_entropy
    return Page(
        "heads",
        parts=[
            Heatmap(
                f"entropy of each head, in nats (0 to {even:.3f}, an even spread)",
                layers,
                heads,
                maps.entropy,
                name="head-entropy",
                corner="layer",
                high=even or 1.0,
            ),
            Heatmap(
                "sink: each head's weight on the first token, in percent",
                layers,
                heads,
                maps.sink,
                name="head-sink",
                corner="layer",
                percent=True,
            ),
        ],
    )


def report_pages(result: ReportResult) -> list[Page]:
    """The report in reading order: the trace (header, tokens, modules), the depth page,
    FFN sparsity, the heads, attention, the lens, then the pages whose model line says
    more (so the shared one is said once): outliers, compare (when asked for), parameters."""
    pages = [
        trace_page(result.trace),
        depth_page(result),
        sparsity_page(result.sparsity or (), many=False),
        heads_page(result.heads),
        attention_page(result.attention),
        lens_page(result.lens, grid=True),
        outliers_page(result.outliers),
    ]
    if result.compare is not None:
        pages.append(compare_page(result.compare))
    pages.append(params_page(result.params))
    return pages


def report_html(result: ReportResult) -> str:
    """The report as one self-contained HTML page, its record embedded as the JSON that
    ``--format json`` prints."""
    from .html import html_document

    return html_document(report_pages(result), title=report_title(result), data=result.as_dict())
