"""Every check that needs no weights, each in one place, run before any model is loaded.

    plan = preflight("facebook/opt-1.3b", layers="0-3", top_k=5)
    plan.layers            # [0, 1, 2, 3], checked against the config's 24 layers

Each check is one function; the library functions call the same ones, so a
value is judged the same way from the CLI, before loading, and from Python.
``preflight`` reads the model's config (never a weight) and runs the checks
a command asked for. The loading settings (``model.settings.LoadSettings``) are
judged by the checks that live beside them in ``model`` (``check_quant_dtype``,
``check_placement``), which the loader runs again. Messages name the bad input and
exit 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError, os_reason
from ..model.family import config_value
from ..model.placement import check_new_file, check_placement
from ..model.settings import LoadSettings, check_quant_dtype
from ..results.records import STAT_NAMES
from .selection import LayerSpec, resolve_layers, select_names

__all__ = [
    "Plan",
    "check_batch_size",
    "check_depth",
    "check_load_settings",
    "check_output_path",
    "check_output_paths",
    "check_text",
    "check_threshold",
    "check_tolerance",
    "check_top_k",
    "check_utf8",
    "parse_stats",
    "preflight",
    "resolve_head",
    "resolve_single_layer",
]


def not_utf8(where: str, byte: int) -> UsageError:
    """The error for input that is not UTF-8: ``where`` names it, ``byte`` (from 1) is
    the first bad byte. TEXT, a file's lines and stdin's are all told alike."""
    return UsageError(f"{where} is not valid UTF-8 (byte {byte})")


def check_utf8(text: str, where: str) -> str:
    """``text`` when it is valid Unicode text. An argument holding bytes that are not UTF-8
    reaches Python as lone surrogates (``surrogateescape``), which no tokenizer, JSON
    or socket takes; refused here, naming the first bad byte of what was typed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise not_utf8(where, len(text[: e.start].encode("utf-8")) + 1) from e
    return text


def check_text(text: str, verb: str) -> str:
    """``text`` when it is UTF-8 and holds a word; ``verb`` names the command in the message."""
    check_utf8(text, "the text")
    if not text.strip():
        raise UsageError(f"the text is empty: give at least one word to {verb}")
    return text


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    return batch_size


def check_depth(depth: int | None) -> int | None:
    """``tree --depth``: None (every level) or 0 and more."""
    if depth is not None and depth < 0:
        raise UsageError(f"--depth must be 0 or more, not {depth}")
    return depth


def check_top_k(top_k: int, vocab_size: int) -> int:
    """``top_k`` when it is between 1 and the vocabulary size, else a usage error."""
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")
    if top_k > vocab_size:
        raise UsageError(f"--top-k {top_k} is more than the vocabulary of {vocab_size} tokens")
    return top_k


def check_threshold(threshold: float) -> float:
    """Refuse a threshold that is not a finite number above 0."""
    if not math.isfinite(threshold) or threshold <= 0:
        raise UsageError(f"--threshold must be a finite number above 0, not {threshold}")
    return threshold


def check_tolerance(tolerance: float) -> float:
    """Refuse a tolerance that is negative, NaN or infinite."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise UsageError(f"--tolerance must be a finite number of at least 0, not {tolerance}")
    return tolerance


def resolve_single_layer(spec: str | int, num_layers: int) -> int:
    """The one decoder layer ``spec`` names (``5``, ``-1``), checked against the model."""
    chosen = resolve_layers(str(spec), num_layers) or []
    if len(chosen) != 1:
        raise UsageError(f"--layer {spec} names {len(chosen)} layers: give exactly one")
    return chosen[0]


def resolve_head(head: int, num_heads: int) -> int:
    """``head`` as an index 0..num_heads-1; negative counts from the end like -1 for the last."""
    index = head + num_heads if head < 0 else head
    if not 0 <= index < num_heads:
        valid = f"heads 0-{num_heads - 1}" if num_heads > 1 else "head 0"
        raise UsageError(f"head {head} does not exist: the model has {valid}")
    return index


def parse_stats(spec: str | None) -> tuple[str, ...]:
    """``mean,absmax,zeros`` -> the chosen statistics in their usual order; None is all."""
    if spec is None:
        return STAT_NAMES
    if spec.strip().lower() == "all":
        return STAT_NAMES
    chosen = [s.strip().lower() for s in spec.split(",") if s.strip()]
    for name in chosen:
        if name not in STAT_NAMES:
            raise UsageError(f"unknown statistic {name!r}: choose from {', '.join(STAT_NAMES)}")
    if not chosen:
        raise UsageError(f"--stats is empty: choose from {', '.join(STAT_NAMES)}")
    return tuple(n for n in STAT_NAMES if n in chosen)


def probe_path(path: Path, failure: str) -> tuple[bool, bool, bool]:
    """Whether ``path`` is a folder, whether it is a file, and whether its folder is one;
    a folder on the way that this user cannot enter is a UsageError ``{failure}: reason``."""
    try:
        return path.is_dir(), path.is_file(), path.parent.is_dir()
    except OSError as e:
        raise UsageError(f"{failure}: {os_reason(e)}") from e


def check_output_path(
    path: str | Path, *, force: bool = False, suffix: str | None = None, option: str = ""
) -> Path:
    """An output file's path, refused before any work: a folder, a missing folder, a
    folder that cannot be entered or written, a file that exists (without ``force``),
    or a name without ``suffix`` (the format written, such as ``.png``)."""
    target = Path(path).expanduser()
    is_dir, is_file, parent_is_dir = probe_path(target, f"cannot write {path}")
    if is_dir:
        raise UsageError(f"cannot write {path}: it is a folder")
    if not parent_is_dir:
        raise UsageError(f"cannot write {path}: folder {target.parent} does not exist")
    if suffix is not None and target.suffix.lower() != suffix:
        raise UsageError(
            f"{option} writes {suffix[1:].upper()}: give a file name ending in {suffix}"
        )
    if (is_file or target.exists()) and not force:
        raise UsageError(f"{path} exists: use --force to overwrite it")
    check_new_file(target.parent, f"cannot write {path}", prefix=f".{target.name}.")
    return target


def check_output_paths(
    wanted: Mapping[str, tuple[str | Path | None, str]], *, force: bool = False
) -> dict[str, Path]:
    """The output files a command was given, by option (``{"--out": (path, ".safetensors")}``,
    None where not given), each checked as ``check_output_path`` does; refused when two
    options name one file."""
    paths: dict[str, Path] = {}
    for option, (path, suffix) in wanted.items():
        if path is None:
            continue
        target = check_output_path(path, force=force, suffix=suffix, option=option)
        for other, known in paths.items():
            if known.resolve() == target.resolve():
                raise UsageError(f"{other} and {option} name the same file: give each its own")
        paths[option] = target
    return paths


#: More layers than any model has: checks a layer spec's syntax before the config is read.
_ANY_LAYERS = 1 << 20


def check_load_settings(load: LoadSettings) -> None:
    """The loading settings that cannot work together, judged from the settings alone."""
    check_quant_dtype(load.quant, load.dtype)
    check_placement(
        load.device,
        load.device_map,
        quant=load.quant,
        max_memory=load.max_memory,
        offload_dir=load.offload_dir,
    )


@dataclass(frozen=True)
class Plan:
    """What preflight learned from the config: the model's sizes and the checked choices."""

    config: dict[str, Any]  # the raw config (model.spec.read_raw_config); no torch needed
    layers: list[int] | None  # the indices --layer names; None when it was not given
    head: int | None = None
    names: tuple[str, ...] | None = None  # the modules --filter selects, when filters were given

    @property
    def num_layers(self) -> int:
        return int(config_value(self.config, "num_hidden_layers"))


def preflight(
    load: LoadSettings | str,
    *,
    layers: LayerSpec = None,
    single_layer: str | None = None,
    filters: Sequence[str] = (),
    head: int | None = None,
    top_k: int | None = None,
    batch_size: int | None = None,
    threshold: float | None = None,
    tolerance: float | None = None,
) -> Plan:
    """Check every value a command was given, then read the model's config (no weights)
    and check what depends on it, all without importing torch (but for a hub id
    outside the family table, whose config comes through transformers).

    ``load`` is the loading settings, or just the model (default settings);
    ``layers`` is a layer spec; ``single_layer`` one layer (attention);
    ``filters`` are matched against the module names of the model built on
    the module names the config gives; ``head`` and ``top_k`` against its sizes.
    """
    from ..model.family import config_module_names
    from ..model.spec import read_raw_config, resolve_source

    if layers is not None:  # the syntax first: it needs no config, so it answers at once
        resolve_layers(layers, _ANY_LAYERS)
    if isinstance(load, str):
        load = LoadSettings(model=load)
    check_load_settings(load)
    if batch_size is not None:
        check_batch_size(batch_size)
    if threshold is not None:
        check_threshold(threshold)
    if tolerance is not None:
        check_tolerance(tolerance)

    config = read_raw_config(resolve_source(load.model))
    num_layers = int(config_value(config, "num_hidden_layers"))
    chosen = resolve_layers(layers, num_layers)
    if single_layer is not None:
        chosen = [resolve_single_layer(single_layer, num_layers)]
    heads = int(config_value(config, "num_attention_heads"))
    head_index = resolve_head(head, heads) if head is not None else None
    if top_k is not None:
        check_top_k(top_k, int(config_value(config, "vocab_size")))
    names = None
    if filters:
        names = tuple(select_names(config_module_names(config), num_layers, layers, filters))
    return Plan(config=config, layers=chosen, head=head_index, names=names)
