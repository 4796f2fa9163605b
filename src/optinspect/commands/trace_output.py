"""How ``trace`` writes its results: one emitter per --format, streaming where it can."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from ..engine.records import SCHEMA_VERSION, LayerSparsity, TraceResult
from ..render.trace import CsvWriter, render_trace, sparsity_table, write_json
from .common import stdout_console


class Emitter:
    """Receives results as batches finish; ``close`` ends the document."""

    def __init__(self, stats: Sequence[str], many: bool) -> None:
        self.stats = tuple(stats)
        self.many = many
        self.count = 0

    def emit(self, result: TraceResult) -> None:
        self.count += 1
        self._emit(result)

    def _emit(self, result: TraceResult) -> None:
        raise NotImplementedError

    #: Whether this format shows the FFN sparsity summary (tracking it costs a little).
    wants_sparsity = False

    def close(self, sparsity: list[LayerSparsity] | None = None) -> None:
        """Finish the output; nothing to do for streaming formats."""


class TableEmitter(Emitter):
    wants_sparsity = True

    def __init__(self, stats: Sequence[str], many: bool) -> None:
        super().__init__(stats, many)
        self.console = stdout_console()

    def _emit(self, result: TraceResult) -> None:
        if self.many:
            if self.count > 1:
                self.console.print()
            self.console.rule(f"sentence {result.index}", align="left")
        render_trace(self.console, result, self.stats)

    def close(self, sparsity: list[LayerSparsity] | None = None) -> None:
        if sparsity:
            self.console.print(sparsity_table(sparsity, many=self.many))


class JsonEmitter(Emitter):
    """One object for one TEXT; ``{"schema", ..., "results": [...]}`` for --file or stdin."""

    wants_sparsity = True

    def __init__(self, stats: Sequence[str], many: bool) -> None:
        super().__init__(stats, many)
        self.results: list[dict[str, Any]] = []
        self.first: TraceResult | None = None

    def _emit(self, result: TraceResult) -> None:
        self.first = self.first or result
        self.results.append(result.as_dict(self.stats))

    def close(self, sparsity: list[LayerSparsity] | None = None) -> None:
        ffn = [row.as_dict() for row in sparsity] if sparsity is not None else None
        if not self.many:
            if self.results:
                write_json(sys.stdout, {**self.results[0], "ffn": ffn})
            return
        head = self.first
        write_json(
            sys.stdout,
            {
                "schema": SCHEMA_VERSION,
                "model": head.model if head else None,
                "quant": head.quant if head else None,
                "device": head.device if head else None,
                "dtype": head.dtype if head else None,
                "ffn": ffn,
                "results": self.results,
            },
        )


class JsonlEmitter(Emitter):
    def _emit(self, result: TraceResult) -> None:
        line = json.dumps(result.as_dict(self.stats), ensure_ascii=False, allow_nan=False)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class CsvEmitter(Emitter):
    def __init__(self, stats: Sequence[str], many: bool) -> None:
        super().__init__(stats, many)
        self.writer = CsvWriter(sys.stdout, self.stats)

    def _emit(self, result: TraceResult) -> None:
        self.writer.write(result)
        sys.stdout.flush()


EMITTERS: dict[str, type[Emitter]] = {
    "table": TableEmitter,
    "json": JsonEmitter,
    "jsonl": JsonlEmitter,
    "csv": CsvEmitter,
}
