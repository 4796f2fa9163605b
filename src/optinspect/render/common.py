"""What every renderer shares: numbers, shapes, percentages, the model header line, the
random-weights note, token labels, colour detection and JSON writing.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from ..engine.records import ModelInfo

__all__ = [
    "RANDOM_NOTE",
    "count_noun",
    "format_bytes",
    "format_count",
    "format_number",
    "format_percent",
    "format_shape",
    "has_colour",
    "header_line",
    "print_header",
    "token_label",
    "write_json",
]

#: Said under the header of every result from a checkpoint with random weights.
RANDOM_NOTE = "note: this checkpoint has random weights; its numbers mean nothing"


def format_number(value: float | int | None) -> str:
    """Four significant digits, '-' for undefined."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.4g}"


def format_count(value: int) -> str:
    """An exact count with thousands separators."""
    return f"{value:,}"


def format_bytes(value: int) -> str:
    """Bytes in binary units with three significant digits: ``2.45 GiB``."""
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    digits = 0 if size >= 100 else 1 if size >= 10 else 2
    return f"{size:.{digits}f} {unit}"


def format_shape(shape: Sequence[int] | None, *, missing: str = "-") -> str:
    """``[1, 9, 768]``; ``missing`` when there is no shape."""
    return missing if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def format_percent(value: float | None, digits: int = 1) -> str:
    """``12.5%``; '-' for undefined."""
    return "-" if value is None else f"{value:.{digits}%}"


def count_noun(n: int, noun: str) -> str:
    """``1 token``, ``2 tokens``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def token_label(text: str) -> str:
    """A token's text as a JSON string, so spaces and newlines stay visible."""
    return json.dumps(text, ensure_ascii=False)


def header_line(info: ModelInfo, *extra: str, quant: bool = True, dtype: bool = True) -> str:
    """``model X · quant Y · device Z · dtype W``, then any ``extra`` parts."""
    parts = [f"model {info.model}"]
    if quant:
        parts.append(f"quant {info.quant}")
    parts.append(f"device {info.device}")
    if dtype:
        parts.append(f"dtype {info.dtype}")
    return " · ".join([*parts, *extra])


def print_header(console: Console, line: str, random_weights: bool) -> None:
    """Print a result's header line and, for random weights, the note under it."""
    console.print(escape(line), highlight=False)
    if random_weights:
        console.print(RANDOM_NOTE, highlight=False)


def has_colour(console: Console) -> bool:
    """Whether ``console`` shows colours: a terminal with colours, and NO_COLOR unset."""
    return console.color_system is not None and not console.no_color


def write_json(stream: IO[str], payload: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document; NaN and Inf never appear (records already hold None)."""
    json.dump(payload, stream, indent=indent, ensure_ascii=False, allow_nan=False)
    stream.write("\n")
