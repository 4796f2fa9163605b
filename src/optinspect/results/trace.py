"""The trace's record: every selected module's output, for one sentence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .records import (
    SCHEMA_VERSION,
    STAT_NAMES,
    DescribesModel,
    ModelInfo,
    ModuleRecord,
    Token,
)

__all__ = ["TraceResult"]


@dataclass(frozen=True)
class TraceResult(DescribesModel):
    """Everything one traced sentence produced, ready to render."""

    info: ModelInfo
    text: str | None
    tokens: tuple[Token, ...]
    modules: tuple[ModuleRecord, ...]
    index: int = 0
    dry_run: bool = False

    def first_nonfinite(self) -> ModuleRecord | None:
        """The module that first produced NaN or Inf: the earliest to finish with them.

        Finishing order, not start order, so a layer whose fc2 overflowed names
        fc2 rather than the layer that contains it.
        """
        bad = [m for m in self.modules if m.stats is not None and m.stats.nonfinite]
        return min(bad, key=lambda m: m.finished, default=None)

    def as_dict(self, stats: Sequence[str] = STAT_NAMES) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "index": self.index,
            **self.info.as_dict(),
            "dry_run": self.dry_run,
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "modules": [m.as_dict(stats) for m in self.modules],
        }
