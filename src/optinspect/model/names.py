"""OPT's module names, in one place: every analysis asks here, none splits names itself.

    layer_of("model.decoder.layers.3.fc1")      # 3
    layer_root(3)                               # "model.decoder.layers.3"
    role_of("model.decoder.layers.3.self_attn.q_proj")   # "self_attn.q_proj"

Names are the full dotted names of ``OPTForCausalLM.named_modules()``. No torch here.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ACTIVATION",
    "DECODER",
    "HEAD",
    "LAYERS_PREFIX",
    "NEVER_CALLED",
    "OVERVIEW_AFTER",
    "OVERVIEW_BEFORE",
    "TOKEN_EMBEDDINGS",
    "is_layer_root",
    "layer_group",
    "layer_of",
    "layer_root",
    "module_names",
    "role_of",
]

#: The decoder inside an OPTForCausalLM.
DECODER = "model.decoder"
#: Dotted prefix of the decoder layers.
LAYERS_PREFIX = f"{DECODER}.layers."
#: The token embeddings; the token ids go to the device this module runs on.
TOKEN_EMBEDDINGS = f"{DECODER}.embed_tokens"
#: The output head (tied to the token embeddings unless tie_word_embeddings is false).
HEAD = "lm_head"
#: The ReLU of each layer's feed-forward block, relative to the layer.
ACTIVATION = "activation_fn"

#: Named modules that never run: OPTForCausalLM.forward calls ``model.decoder`` itself,
#: so the OPTModel wrapper around it is skipped.
NEVER_CALLED = frozenset({"model"})

#: Modules shown in the overview besides each layer's output, in forward order.
OVERVIEW_BEFORE = (TOKEN_EMBEDDINGS, f"{DECODER}.embed_positions", f"{DECODER}.project_in")
OVERVIEW_AFTER = (f"{DECODER}.final_layer_norm", f"{DECODER}.project_out", HEAD)

_IN_LAYER = re.compile(r"^model\.decoder\.layers\.([0-9]+)(?:\.(.+))?$")


def layer_of(name: str) -> int | None:
    """The decoder layer a dotted module name belongs to, or None outside the layers."""
    match = _IN_LAYER.match(name)
    return int(match.group(1)) if match else None


def layer_root(index: int) -> str:
    """The dotted name of decoder layer ``index`` itself."""
    return f"{LAYERS_PREFIX}{index}"


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
    index = layer_of(name)
    return layer_root(index) if index is not None else name


def module_names(model: Any) -> list[str]:
    """Every named submodule's dotted name, in ``named_modules()`` order, the root left out."""
    return [name for name, _ in model.named_modules() if name]
