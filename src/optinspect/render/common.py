"""What every renderer shares: numbers, shapes, percentages, the model header line, the
random-weights note, token labels, names as a tree, colour detection and JSON writing.
Tables and lines laid out for a width are in ``layout``; counts and byte sizes are
``results.units``' (re-exported here), which the analyses' notes use too.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import IO, Any, Protocol

from rich.console import Console

from ..results.records import ModelInfo, past_vocabulary_text
from ..results.units import count_noun, format_bytes, format_count

__all__ = [
    "HEADER_SEPARATOR",
    "RANDOM_NOTE",
    "count_noun",
    "format_bytes",
    "format_count",
    "format_number",
    "format_percent",
    "format_shape",
    "format_stat",
    "has_colour",
    "header_parts",
    "random_notes",
    "token_label",
    "tree_rows",
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


def format_shape(shape: Sequence[int] | None, *, missing: str = "-") -> str:
    """``[1, 9, 768]``; ``missing`` when there is no shape."""
    return missing if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def format_percent(value: float | None, digits: int = 1) -> str:
    """``12.5%``; '-' for undefined."""
    return "-" if value is None else f"{value:.{digits}%}"


def format_stat(name: str, value: float | int | None) -> str:
    """A statistic as every table shows it: ``zeros`` (a fraction) as a percentage."""
    return format_percent(value) if name == "zeros" else format_number(value)


class TokenLike(Protocol):
    """What a table needs of a token or a predicted token."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def bytes(self) -> str | None: ...


def token_label(token: TokenLike) -> str:
    """A token's text as a JSON string, so spaces and newlines stay visible; a piece of a
    character (its ``bytes`` in hex) as ``<0xE2><0x80>``, so different pieces differ; an id
    past the vocabulary as ``<id 50265>``, unquoted, as no text decodes to it."""
    if token.bytes is not None:
        return "".join(f"<0x{byte.upper()}>" for byte in token.bytes.split())
    if token.text == past_vocabulary_text(token.id):
        return token.text
    return json.dumps(token.text, ensure_ascii=False)


#: Between the parts of a header line; a long header breaks only there.
HEADER_SEPARATOR = " · "


def header_parts(info: ModelInfo, *extra: str, quant: bool = True, dtype: bool = True) -> list[str]:
    """``model X · quant Y · device Z · dtype W``, then any ``extra`` parts, as a list: a
    writer breaks the line only between them."""
    parts = [f"model {info.model}"]
    if quant:
        parts.append(f"quant {info.quant}")
    parts.append(f"device {info.device}")
    if dtype:
        parts.append(f"dtype {info.dtype}")
    return [*parts, *extra]


def random_notes(random_weights: bool) -> list[str]:
    """The notes under a result's header: the random-weights note where it applies."""
    return [RANDOM_NOTE] if random_weights else []


def has_colour(console: Console) -> bool:
    """Whether ``console`` shows colours: a terminal with colours, and NO_COLOR unset."""
    return console.color_system is not None and not console.no_color


def write_json(stream: IO[str], payload: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document; NaN and Inf never appear (records already hold None)."""
    json.dump(payload, stream, indent=indent, ensure_ascii=False, allow_nan=False)
    stream.write("\n")


def tree_rows(
    names: Sequence[str], depths: Sequence[int] | None = None
) -> list[tuple[str, int | None]]:
    """Rows of a name column that show ``names`` as a tree, each with its index in
    ``names`` (None for a heading row).

    A name is indented by its ``depth`` (its nesting among the rows; 0 for all when
    None) and, under a parent shown above it, named relative to it
    (``model.decoder.layers.0`` then ``  self_attn``). A module inside a decoder layer
    that has no row of its own goes under a heading row, the layer's name, and is named
    relative to it (``  self_attn.q_proj``), so ``--filter`` tables stay narrow. Modules
    outside the layers keep their full name.
    """
    from ..model.names import layer_group

    rows: list[tuple[str, int | None]] = []
    parents: list[str] = []
    heading: str | None = None  # the layer named in the last heading row, or shown
    shift = 0  # one more level under a heading row
    for index, name in enumerate(names):
        depth = depths[index] if depths is not None else 0
        del parents[depth:]
        parent = parents[-1] if parents else None
        if parent is not None and name.startswith(parent + "."):
            rows.append(("  " * (depth + shift) + name[len(parent) + 1 :], index))
        elif depth == 0 and layer_group(name) != name:
            root = layer_group(name)
            if root != heading:
                rows.append((root, None))
                heading = root
            shift = 1
            rows.append(("  " + name[len(root) + 1 :], index))
        else:
            if depth == 0:
                heading, shift = layer_group(name), 0
            rows.append(("  " * (depth + shift) + name, index))
        parents.append(name)
    return rows
