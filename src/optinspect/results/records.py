"""The records every analysis shares: the model description, tokens, module calls and
their statistics, and the JSON schema version. No torch, so renderers and the CLI stay light.

Each result record serialises itself with ``as_dict()``; every JSON document
carries ``schema``: SCHEMA_VERSION, defined here once for all commands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

#: Version of every JSON layout; bumped only when a key is removed or changes meaning.
SCHEMA_VERSION = 1

#: Statistic names in the order they are computed and shown.
STAT_NAMES: tuple[str, ...] = ("mean", "std", "min", "max", "absmax", "rms", "zeros", "nan", "inf")


_Frozen = TypeVar("_Frozen")


def fast_new(cls: type[_Frozen], *values: Any) -> _Frozen:
    """An instance of the frozen dataclass ``cls`` from every field's value, in field order.

    What ``cls(*values)`` builds, at a fifth of the cost: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (2.7 us for nine
    fields on CPython 3.11), and a trace builds a record and its statistics for
    every module call. Only for the hot paths; tests check it against ``cls``.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(zip(_field_names(cls), values, strict=True))
    return obj


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def finite_or_none(value: float) -> float | None:
    """``value``, or None (null in JSON) when it is NaN or infinite."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor, reduced in float32 on its device.

    mean, std (population), min, max, absmax and rms are over the finite
    values only and are None when there are none. zeros is the fraction of
    elements that are exactly zero; nan and inf are counts.
    """

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    absmax: float | None
    rms: float | None
    zeros: float | None
    nan: int
    inf: int

    @classmethod
    def from_values(cls, values: list[float]) -> TensorStats:
        """Build from the raw vector in STAT_NAMES order; NaN marks 'undefined'."""
        mean, std, mn, mx, absmax, rms, zeros, nan, inf = values
        # v != v is NaN's own test; one per field, called once per module per sentence.
        return fast_new(
            cls,
            None if mean != mean else float(mean),
            None if std != std else float(std),
            None if mn != mn else float(mn),
            None if mx != mx else float(mx),
            None if absmax != absmax else float(absmax),
            None if rms != rms else float(rms),
            None if zeros != zeros else float(zeros),
            int(nan),
            int(inf),
        )

    def as_dict(self, names: Sequence[str] = STAT_NAMES) -> dict[str, float | int | None]:
        values = asdict(self)
        return {name: values[name] for name in names}

    @property
    def nonfinite(self) -> bool:
        return self.nan > 0 or self.inf > 0


@dataclass(frozen=True)
class ModuleRecord:
    """One call of one module during the forward pass.

    index is the position in execution order (when the call started), so a
    parent comes before its children. output is "tensor" when shape, dtype
    and stats describe the module's main output tensor, else what it was.
    """

    index: int
    name: str
    type: str
    layer: int | None
    call: int
    depth: int
    output: str
    shape: tuple[int, ...] | None
    dtype: str | None
    device: str | None
    weight_dtype: str | None
    weight_shape: tuple[int, ...] | None
    stats: TensorStats | None
    #: Position in the order calls *finished*: a child finishes before its parent.
    finished: int = 0
    #: Where the module's weight lives: a device, or "disk"/"cpu" when accelerate offloads it.
    weight_device: str | None = None

    def as_dict(self, stats: Sequence[str] = STAT_NAMES) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "layer": self.layer,
            "call": self.call,
            "output": self.output,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "device": self.device,
            "weight_dtype": self.weight_dtype,
            "weight_shape": list(self.weight_shape) if self.weight_shape is not None else None,
            "weight_device": self.weight_device,
            "stats": self.stats.as_dict(stats) if self.stats is not None else None,
        }


def past_vocabulary_text(token_id: int) -> str:
    """The text of an id past the tokenizer's vocabulary: ``<id 50265>``.

    OPT's embedding matrix has rows no token has (50,272 against 50,265 tokens), so
    the logit lens can rank such an id; it decodes to nothing.
    """
    return f"<id {token_id}>"


@dataclass(frozen=True)
class Token:
    """One token: its id and the text it decodes to on its own.

    ``bytes`` is the hex of the token's bytes when they are not whole UTF-8
    characters (a byte-level piece of one), where ``text`` is only U+FFFD;
    None otherwise. An id past the tokenizer's vocabulary has the text
    ``past_vocabulary_text(id)``.
    """

    id: int
    text: str
    bytes: str | None = None

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.bytes is not None:
            values["bytes"] = self.bytes
        return values


@dataclass(frozen=True)
class Histogram:
    """Counts of a module output's finite values in equal-width bins over [lo, hi].

    lo and hi are the output's own minimum and maximum (None when it held no finite
    value); bin i covers [lo + i w, lo + (i + 1) w) with w = (hi - lo) / len(counts),
    the last bin includes hi, and when hi == lo every value is in bin 0.
    """

    lo: float | None
    hi: float | None
    counts: tuple[int, ...]

    @classmethod
    def of(cls, lo: float, hi: float, counts: Sequence[float]) -> Histogram:
        """The record of host numbers; the counts arrive as exact floats."""
        return cls(finite_or_none(lo), finite_or_none(hi), tuple(int(c) for c in counts))

    def as_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "counts": list(self.counts)}


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded and how: the fields every result carries about its model.

    ``device`` is a device name or ``map:<strategy>`` for an accelerate device
    map; ``dtype`` the compute dtype's name (``float16``).
    """

    model: str
    quant: str
    device: str
    dtype: str
    random_weights: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype,
            "random_weights": self.random_weights,
        }


class DescribesModel:
    """Mixin for result records holding ``info``: its fields read as attributes."""

    info: ModelInfo

    @property
    def model(self) -> str:
        return self.info.model

    @property
    def quant(self) -> str:
        return self.info.quant

    @property
    def device(self) -> str:
        return self.info.device

    @property
    def dtype(self) -> str:
        return self.info.dtype

    @property
    def random_weights(self) -> bool:
        return self.info.random_weights
