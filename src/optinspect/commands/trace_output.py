"""How ``trace`` writes its results: the shared emitters, plus CSV and the FFN summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..render.page import Page
from ..render.trace import CsvWriter, sparsity_page, trace_page
from ..results.records import STAT_NAMES
from .output import Emitter, make_emitter

if TYPE_CHECKING:
    from ..results.sparsity import LayerSparsity

__all__ = ["close_trace_output", "trace_emitter"]


class TraceCsvEmitter(Emitter):
    """One row per (sentence, module call); the header comes with the first result, so a
    run that fails before one writes nothing, as the other formats do. Trace's own CSV
    (``render.trace.CsvWriter`` says why it is not a page's flat sheet)."""

    def __init__(self, stats: Sequence[str]) -> None:
        super().__init__(True, trace_page, lambda result: {})
        self.writer = CsvWriter(sys.stdout, stats)

    def _emit(self, result: Any) -> None:
        self.writer.write(result)
        sys.stdout.flush()

    def close(
        self,
        extra: dict[str, Any] | None = None,
        tail: Page | None = None,
    ) -> None:
        self.writer.finish()


def trace_emitter(
    fmt: str, stats: Sequence[str] | None, many: bool, model: str | None = None
) -> Emitter:
    """The emitter of ``trace --format fmt`` showing ``stats``: None is every statistic
    in the data formats and the table's own default set in the table; ``model`` as in
    ``make_emitter``."""
    chosen = tuple(stats) if stats is not None else STAT_NAMES
    if fmt == "csv":
        return TraceCsvEmitter(chosen)

    return make_emitter(
        fmt,
        many,
        lambda result: trace_page(result, stats),
        as_dict=lambda result: result.as_dict(chosen),
        model=model,
        kind="trace",
    )


def close_trace_output(emitter: Emitter, sparsity: list[LayerSparsity] | None) -> None:
    """End the output; table and JSON show the FFN sparsity summary."""
    if not emitter.wants_summary:
        emitter.close()
        return
    ffn = [row.as_dict() for row in sparsity] if sparsity is not None else None
    emitter.close({"ffn": ffn}, sparsity_page(sparsity or [], emitter.many))
