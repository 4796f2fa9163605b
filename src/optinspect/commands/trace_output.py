"""How ``trace`` writes its results: the shared emitters, plus CSV and the FFN summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..render.trace import CsvWriter, render_trace, sparsity_table
from .output import Emitter, make_emitter

if TYPE_CHECKING:
    from ..sparsity import LayerSparsity
    from ..tracing import TraceResult

__all__ = ["close_trace_output", "trace_emitter"]


class CsvEmitter(Emitter):
    """One row per (sentence, module call); the header comes first."""

    def __init__(self, stats: Sequence[str]) -> None:
        super().__init__(True, lambda console, result: None, lambda result: {})
        self.writer = CsvWriter(sys.stdout, stats)

    def _emit(self, result: Any) -> None:
        self.writer.write(result)
        sys.stdout.flush()


def trace_emitter(fmt: str, stats: Sequence[str], many: bool) -> Emitter:
    """The emitter of ``trace --format fmt`` showing ``stats``."""
    if fmt == "csv":
        return CsvEmitter(stats)

    def render(console: Console, result: TraceResult) -> None:
        render_trace(console, result, stats)

    return make_emitter(fmt, many, render, lambda result: result.as_dict(stats))


def close_trace_output(emitter: Emitter, sparsity: list[LayerSparsity] | None) -> None:
    """End the output; table and JSON show the FFN sparsity summary."""
    if not emitter.wants_summary:
        emitter.close()
        return
    ffn = [row.as_dict() for row in sparsity] if sparsity is not None else None

    def tail(console: Console) -> None:
        if sparsity:
            console.print(sparsity_table(sparsity, many=emitter.many))

    emitter.close({"ffn": ffn}, tail)
