"""Which modules a trace records: layer specs and module-name selection, normalised once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import UsageError

#: Dotted prefix of the decoder layers inside an OPTForCausalLM.
LAYERS_PREFIX = "model.decoder.layers."

#: Modules shown in the overview besides each layer's output, in forward order.
OVERVIEW_BEFORE = (
    "model.decoder.embed_tokens",
    "model.decoder.embed_positions",
    "model.decoder.project_in",
)
OVERVIEW_AFTER = ("model.decoder.final_layer_norm", "model.decoder.project_out", "lm_head")

_LAYER_IN_NAME = re.compile(r"^model\.decoder\.layers\.([0-9]+)(?:\.|$)")
_ITEM = re.compile(r"^(-?[0-9]+)(?:-([0-9]+))?$")


def layer_of(name: str) -> int | None:
    """The decoder layer a dotted module name belongs to, or None outside the layers."""
    match = _LAYER_IN_NAME.match(name)
    return int(match.group(1)) if match else None


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """Parse ``0``, ``0,5``, ``3-7``, ``-1`` (the last) or ``all`` into sorted layer indices.

    >>> parse_layers("0,3-4,-1", 12)
    [0, 3, 4, 11]
    """
    text = spec.strip()
    valid = f"layers 0-{num_layers - 1}" if num_layers > 1 else "layer 0"
    if text.lower() == "all":
        return list(range(num_layers))
    chosen: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        match = _ITEM.match(item)
        if not match:
            raise UsageError(f"cannot read layer spec {spec!r}: use N, N-M, N,M, -1 or all")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else None
        if end is None:
            index = start + num_layers if start < 0 else start
            if not 0 <= index < num_layers:
                raise UsageError(f"layer {start} does not exist: the model has {valid}")
            chosen.add(index)
            continue
        if start < 0:
            raise UsageError(f"cannot read layer spec {spec!r}: a range cannot start below 0")
        if end < start:
            raise UsageError(f"layer range {item} is empty: write it as low-high")
        if end >= num_layers:
            raise UsageError(f"layer {end} does not exist: the model has {valid}")
        chosen.update(range(start, end + 1))
    return sorted(chosen)


def select_modules(names: Iterable[str], layers: Sequence[int] | None) -> list[str]:
    """Names to record, from all named modules.

    With ``layers`` None, the overview: embeddings, each layer's output, final
    norm, projections and head. Otherwise every module inside those layers,
    the layer itself included.
    """
    all_names = [n for n in names if n]
    if layers is None:
        wanted = set(OVERVIEW_BEFORE) | set(OVERVIEW_AFTER)
        return [n for n in all_names if n in wanted or _is_layer_root(n)]
    layer_set = set(layers)
    return [n for n in all_names if layer_of(n) in layer_set]


def _is_layer_root(name: str) -> bool:
    return name.startswith(LAYERS_PREFIX) and name[len(LAYERS_PREFIX) :].isdigit()
