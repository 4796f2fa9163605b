"""``trace --plot``: per-layer lines of the layer outputs' std and absmax, and zero fractions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..model.names import is_layer_root, layer_of
from .common import RANDOM_NOTE
from .images import new_figure, save_figure

if TYPE_CHECKING:
    from ..results.sparsity import LayerSparsity
    from ..results.trace import TraceResult

__all__ = ["layer_series", "save_layer_plot"]


def layer_series(results: Sequence[TraceResult]) -> dict[str, list[float]]:
    """Per decoder layer, the mean over sentences of the layer output's std, absmax and zeros."""
    sums: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for result in results:
        for m in result.modules:
            layer = layer_of(m.name)
            if layer is None or not is_layer_root(m.name) or m.stats is None:
                continue
            values = [m.stats.std, m.stats.absmax, m.stats.zeros]
            if any(v is None for v in values):
                continue
            acc = sums.setdefault(layer, [0.0, 0.0, 0.0])
            for i, v in enumerate(values):
                acc[i] += float(v)  # type: ignore[arg-type]
            counts[layer] = counts.get(layer, 0) + 1
    layers = sorted(sums)
    return {
        "layer": [float(i) for i in layers],
        "std": [sums[i][0] / counts[i] for i in layers],
        "absmax": [sums[i][1] / counts[i] for i in layers],
        "zeros": [sums[i][2] / counts[i] for i in layers],
    }


def save_layer_plot(
    results: Sequence[TraceResult], sparsity: Sequence[LayerSparsity], path: Path
) -> Path:
    """Three stacked panels against the layer index; returns the path written."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    series = layer_series(results)
    if not series["layer"]:
        raise UsageError(
            "--plot needs the decoder layers' outputs: use it without --filter, or with --layer all"
        )
    figure = new_figure(8.0, 9.0)
    figure.set_layout_engine("constrained")
    axes = figure.subplots(3, 1, sharex=True)
    layers = series["layer"]
    model = results[0].model
    axes[0].plot(layers, series["std"], marker="o", color="tab:blue")
    axes[0].set_ylabel("std")
    title = f"{model}: decoder layer outputs ({len(results)} sentence(s))"
    if results[0].random_weights:
        title += f"\n{RANDOM_NOTE}"
    axes[0].set_title(title)
    axes[1].plot(layers, series["absmax"], marker="o", color="tab:red")
    axes[1].set_ylabel("absmax")
    axes[1].set_yscale("log")
    # Plain numbers on the log axis (0.5, 6, 20), not 6x10^0.
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes[1].yaxis.set_major_formatter(plain)
    axes[1].yaxis.set_minor_formatter(plain)
    # A layer's output (after the residual add) is almost never exactly zero, so only
    # the ReLU outputs, where zeros mean something, are drawn.
    if sparsity:
        axes[2].plot(
            [float(s.layer) for s in sparsity],
            [s.zeros for s in sparsity],
            marker="s",
            color="tab:green",
            label="after ReLU (activation_fn)",
        )
    axes[2].set_ylabel("zero fraction after ReLU")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("decoder layer")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    if sparsity:
        axes[2].legend(loc="best")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return save_figure(figure, path)
