"""The parameter records: a breakdown's rows and their weight bytes at each precision, and
what a loaded model holds. ``analyses.params`` counts them; no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import SCHEMA_VERSION

__all__ = ["LoadedCount", "ParamReport", "ParamRow", "ParamsResult", "WeightBytes"]


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of weights stored at each precision; see ``estimate_bytes`` for the layout."""

    float32: int = 0
    float16: int = 0
    int8: int = 0
    nf4: int = 0

    def __add__(self, other: WeightBytes) -> WeightBytes:
        return WeightBytes(
            self.float32 + other.float32,
            self.float16 + other.float16,
            self.int8 + other.int8,
            self.nf4 + other.nf4,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "float32": self.float32,
            "float16": self.float16,
            "int8": self.int8,
            "nf4": self.nf4,
        }


@dataclass(frozen=True)
class ParamRow:
    """One row of a breakdown: a name and what its parameters hold and weigh."""

    name: str
    params: int
    bytes: WeightBytes

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "bytes": self.bytes.as_dict()}


@dataclass(frozen=True)
class ParamReport:
    """A breakdown of one model's parameters; the rows add up to total and bytes."""

    model: str
    by: str
    total: int
    tied_to: str | None
    builtin: bool
    rows: tuple[ParamRow, ...]
    bytes: WeightBytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "by": self.by,
            "total": self.total,
            "tied": self.tied_to is not None,
            "tied_to": self.tied_to,
            "builtin_config": self.builtin,
            "rows": [row.as_dict() for row in self.rows],
            "bytes": self.bytes.as_dict(),
        }


@dataclass(frozen=True)
class LoadedCount:
    """What a loaded model really holds.

    params is the logical count (a 4-bit weight counts its unpacked values);
    stored is the plain sum of ``numel()`` over the stored tensors (two 4-bit
    values share one uint8 element); bytes is the memory of parameters, buffers
    and quantization statistics (int8 ``SCB``, NF4 absmax and code tables),
    each distinct tensor once.
    """

    quant: str
    device: str
    dtype: str
    params: int
    stored: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype,
            "params": self.params,
            "stored": self.stored,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ParamsResult:
    """What ``optinspect params`` reports: the config-only count, and what a load holds."""

    report: ParamReport
    loaded: LoadedCount | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``--format json`` document."""
        payload: dict[str, Any] = {"schema": SCHEMA_VERSION, **self.report.as_dict()}
        if self.loaded is not None:
            matches = self.loaded.params == self.report.total
            payload["loaded"] = {**self.loaded.as_dict(), "matches_config": matches}
        return payload
