"""Module names, in one place: every analysis asks here (or the family's adapter), none
splits names itself.

    layer_of("model.decoder.layers.3.fc1")      # 3
    layer_of("model.layers.3.mlp.act_fn")       # 3 (the Llama layout)
    role_of("transformer.h.3.attn.c_attn")      # "attn.c_attn" (GPT-2)
    layer_root(3)                               # "model.decoder.layers.3" (OPT's)

Names are the full dotted names of the model's ``named_modules()``. Every supported
family (``model.families``) has its own layer prefix, so these functions read a
name of any of them without being told the family. The constants are OPT's, the
default family; ``adapter_of`` gives a loaded model's adapter. No torch here.
"""

from __future__ import annotations

import re
from typing import Any

from .families import ADAPTERS, OPT, FamilyAdapter, adapter_for_config

__all__ = [
    "HEAD",
    "LAYERS_PREFIX",
    "TOKEN_EMBEDDINGS",
    "adapter_of",
    "in_features",
    "is_layer_root",
    "is_linear",
    "layer_group",
    "layer_of",
    "layer_root",
    "module_names",
    "role_of",
]

#: Dotted prefix of OPT's decoder layers.
LAYERS_PREFIX = OPT.layers_prefix
#: OPT's token embeddings; the token ids go to the device this module runs on.
TOKEN_EMBEDDINGS = OPT.token_embeddings
#: The output head (tied to the token embeddings unless tie_word_embeddings is false).
HEAD = OPT.head

_IN_LAYER = re.compile(
    "^(?:" + "|".join(re.escape(a.layers_prefix) for a in ADAPTERS) + r")([0-9]+)(?:\.(.+))?$"
)


def layer_of(name: str) -> int | None:
    """The decoder layer a dotted module name belongs to, or None outside the layers."""
    match = _IN_LAYER.match(name)
    return int(match.group(1)) if match else None


def layer_root(index: int) -> str:
    """The dotted name of OPT's decoder layer ``index`` (``adapter.layer_root`` for others)."""
    return OPT.layer_root(index)


def is_layer_root(name: str) -> bool:
    """Whether ``name`` is a decoder layer itself (not a module inside one)."""
    match = _IN_LAYER.match(name)
    return match is not None and match.group(2) is None


def role_of(name: str) -> str | None:
    """A module's name inside its decoder layer (``fc1``, ``self_attn.q_proj``).

    None for a layer itself and for modules outside the layers.
    """
    match = _IN_LAYER.match(name)
    return match.group(2) if match else None


def layer_group(name: str) -> str:
    """The layer's root for a module inside a decoder layer, else the name itself."""
    match = _IN_LAYER.match(name)
    if match is None:
        return name
    return name[: match.end(1)]


def module_names(model: Any) -> list[str]:
    """Every named submodule's dotted name, in ``named_modules()`` order, the root left out."""
    return [name for name, _ in model.named_modules() if name]


def adapter_of(model: Any) -> FamilyAdapter:
    """The family adapter of a built model (real or meta), from its config's model_type."""
    return adapter_for_config(model.config)


def is_linear(module: Any) -> bool:
    """Whether ``module`` is a linear layer: an ``nn.Linear`` (bitsandbytes' quantized
    layers included) or GPT-2's ``Conv1D``, which computes the same with [in, out]
    weights."""
    from torch import nn

    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def in_features(module: Any) -> int:
    """The input width of a linear layer (``Conv1D`` calls it ``nx``); 0 when unknown."""
    return int(getattr(module, "in_features", getattr(module, "nx", 0)))
