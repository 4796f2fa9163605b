"""Image files through matplotlib, an optional extra: imported lazily, Agg only, no windows.

    require_matplotlib("--png")            # fail early, before loading a model
    figure = new_figure(6.0, 4.0)
    figure.add_subplot().plot([1, 2, 3])
    save_figure(figure, "chart.png")

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never
through ``pyplot``: no global backend switch, no figure registry to leak, and
no window can ever open.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OptinspectError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "INSTALL_HINT",
    "heatmap_inches",
    "new_figure",
    "plain_labels",
    "require_matplotlib",
    "save_figure",
    "save_heatmap",
]

#: How to get the optional plotting dependency.
INSTALL_HINT = "pip install 'optinspect[plot]'"
#: Pixels per inch of every image written; a figure of W x H inches is W*DPI x H*DPI pixels.
DPI = 100


def require_matplotlib(purpose: str) -> Any:
    """Import matplotlib, or raise an error that says how to install it.

    ``purpose`` names what needs it (an option such as ``--png``) and leads the message.
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as e:
        raise OptinspectError(
            f"{purpose} needs matplotlib, which is not installed: run {INSTALL_HINT}"
        ) from e
    return matplotlib


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on an Agg canvas (off-screen)."""
    require_matplotlib("plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path, *, image_format: str | None = None) -> Path:
    """Write ``figure`` to ``path`` at DPI, as ``image_format`` or else as its suffix says.

    A path without a suffix gets PNG. The size is the figure's, exactly: no
    tight bounding box. The file is written atomically, so a failed write
    leaves no partial image.
    """
    from ..results.files import write_atomic

    target = Path(path).expanduser()
    chosen = image_format or target.suffix.lstrip(".").lower() or "png"
    try:
        write_atomic(target, lambda tmp: figure.savefig(tmp, dpi=DPI, format=chosen))
    except (OSError, ValueError) as e:
        raise OptinspectError(f"cannot write {path}: {e}") from e
    return target


def plain_labels(labels: Sequence[str]) -> list[str]:
    """Labels drawn as typed: a ``$`` in a token would otherwise start matplotlib's mathtext."""
    return [label.replace("$", r"\$") for label in labels]


def heatmap_inches(rows: int, columns: int) -> tuple[float, float]:
    """Figure size of a heatmap: 0.3 inch a cell plus room for labels, 6 to 24 inches a side."""

    def side(cells: int) -> float:
        return float(min(24, max(6, math.ceil(3 + 0.3 * cells))))

    return side(columns), side(rows)


def save_heatmap(
    path: str | Path,
    values: Sequence[Sequence[float | None]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    colorbar_label: str = "",
    image_format: str | None = "png",
) -> Path:
    """Write a heatmap of ``values`` (rows x columns; None is drawn blank) to ``path``.

    The colour scale is fixed to ``vmin``..``vmax`` so images compare across runs.
    The image is ``heatmap_inches(rows, columns)`` x DPI pixels, a PNG unless
    ``image_format`` says otherwise (None: from the suffix).
    """
    require_matplotlib("writing an image")
    import numpy as np

    grid = np.array(
        [[math.nan if v is None else float(v) for v in row] for row in values], dtype=float
    )
    figure = new_figure(*heatmap_inches(len(row_labels), len(column_labels)))
    axes = figure.add_subplot()
    image = axes.imshow(
        np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto"
    )
    axes.set_xticks(range(len(column_labels)), labels=plain_labels(column_labels), rotation=90)
    axes.set_yticks(range(len(row_labels)), labels=plain_labels(row_labels))
    axes.tick_params(labelsize=8)
    axes.set_title(plain_labels([title])[0])
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    figure.colorbar(image, ax=axes, label=colorbar_label)
    return save_figure(figure, path, image_format=image_format)
