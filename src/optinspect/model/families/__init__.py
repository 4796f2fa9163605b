"""The model families optinspect knows, each one adapter, found by the config's model_type.

    adapter = adapter_for_config({"model_type": "llama", ...})    # LLAMA
    adapter_for_names(module_names(model))                        # the same, from names
    SUPPORTED_TYPES                                               # ("opt", "llama", ...)

A new family is one module here with its ``FamilyAdapter``, added to ``ADAPTERS``.
Every supported family's module names are distinct (``model.decoder.layers.N``,
``model.layers.N``, ``transformer.h.N``), so a name alone says which family and
which layer it belongs to. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .base import FamilyAdapter, ParamEntry, ParamList
from .gpt2 import GPT2
from .llama import LLAMA
from .opt import OPT

__all__ = [
    "ADAPTERS",
    "GPT2",
    "LLAMA",
    "OPT",
    "SUPPORTED_TYPES",
    "FamilyAdapter",
    "ParamEntry",
    "ParamList",
    "adapter_for_config",
    "adapter_for_names",
    "adapter_for_type",
    "supported_text",
]

#: Every family, OPT first (the default).
ADAPTERS: tuple[FamilyAdapter, ...] = (OPT, LLAMA, GPT2)
#: Every model_type some adapter builds, in ADAPTERS order.
SUPPORTED_TYPES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types)


def adapter_for_type(model_type: object) -> FamilyAdapter | None:
    """The adapter that builds ``model_type``, or None when no family does."""
    return next((a for a in ADAPTERS if model_type in a.classes), None)


def adapter_for_config(raw: Mapping[str, Any] | Any) -> FamilyAdapter:
    """The adapter of a raw config dict or a transformers config (OPT when it has no
    model_type, as OPT's own defaults are what a bare config means here)."""
    model_type = raw.get("model_type") if isinstance(raw, Mapping) else raw.model_type
    return adapter_for_type(model_type or "opt") or OPT


def adapter_for_names(names: Iterable[str]) -> FamilyAdapter:
    """The adapter whose token embeddings are among ``names`` (OPT when none is)."""
    present = set(names)
    return next((a for a in ADAPTERS if a.token_embeddings in present), OPT)


def supported_text() -> str:
    """The supported model types as a sentence fragment: ``opt, llama, ... or gpt2``."""
    head, last = SUPPORTED_TYPES[:-1], SUPPORTED_TYPES[-1]
    return f"{', '.join(head)} or {last}"
