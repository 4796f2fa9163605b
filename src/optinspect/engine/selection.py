"""Which modules an analysis hooks: layer specs and module-name selection, normalised once.

    resolve_layers("0,3-4,-1", 12)                     # [0, 3, 4, 11]
    select_names(names, 12, layers="0", filters=["*.fc1"])

Every command parses ``--layer`` through ``resolve_layers`` and picks module
names through ``select_names``; both work on plain names, so the same checks
run before loading (on the config, or a model built on the meta device) and
after. No torch here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from ..errors import UsageError
from ..model.families import adapter_for_names
from ..model.names import is_layer_root, layer_of

__all__ = ["LayerSpec", "parse_layers", "resolve_layers", "select_modules", "select_names"]

#: A layer spec as the API takes it: ``"0,3-5"``, ``"all"``, a list of indices, or None.
LayerSpec = str | Sequence[int] | None

_ITEM = re.compile(r"^(-?[0-9]+)(?:-([0-9]+))?$")


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


def resolve_layers(
    layers: LayerSpec, num_layers: int, *, default: str | None = None
) -> list[int] | None:
    """The layer indices a spec names, checked against the model; the one parser every
    command and the API use.

    ``layers`` is a spec string or a list of indices (negative counts from the
    end). None gives ``default`` parsed the same way, or None when there is no
    default (the caller's own meaning, such as the overview).
    """
    if layers is None:
        return None if default is None else parse_layers(default, num_layers)
    if isinstance(layers, str):
        return parse_layers(layers, num_layers)
    return parse_layers(",".join(str(int(i)) for i in layers), num_layers)


def select_modules(names: Iterable[str], layers: Sequence[int] | None) -> list[str]:
    """Names to record, from all named modules.

    With ``layers`` None, the overview: embeddings, each layer's output, final
    norm, projections and head (the family's, told by the names). Otherwise every
    module inside those layers, the layer itself included.
    """
    all_names = [n for n in names if n]
    if layers is None:
        adapter = adapter_for_names(all_names)
        wanted = set(adapter.overview_before) | set(adapter.overview_after)
        return [n for n in all_names if n in wanted or is_layer_root(n)]
    layer_set = set(layers)
    return [n for n in all_names if layer_of(n) in layer_set]


def select_names(
    names: Iterable[str],
    num_layers: int,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
) -> list[str]:
    """The dotted names to hook: a layer spec (or the overview), narrowed by globs.

    Filters alone search every named module; with ``layers`` they narrow it.
    """
    all_names = [n for n in names if n]
    chosen = resolve_layers(layers, num_layers)
    selected = all_names if filters and chosen is None else select_modules(all_names, chosen)
    if filters:
        selected = [n for n in selected if any(fnmatch.fnmatchcase(n, g) for g in filters)]
        adapter = adapter_for_names(all_names)
        idle = [n for n in selected if n in adapter.never_called]
        selected = [n for n in selected if n not in adapter.never_called]
        if not selected:
            why = f" ({', '.join(idle)} never runs: {adapter.never_called_why})"
            raise UsageError(f"no module matches --filter {' '.join(filters)}{why if idle else ''}")
    return selected
