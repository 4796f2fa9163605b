"""What a model family is to optinspect: one frozen record of names, roles and formulas.

    adapter = LLAMA
    adapter.layer_root(3)                       # "model.layers.3"
    adapter.value(raw, "ffn_dim")               # the config's intermediate_size
    entries, tied_to = adapter.list_params(raw)

A family adapter says which transformers class builds a ``model_type``, the dotted
names of its parts (layers prefix, token embeddings, the modules after the last
layer, the head), each layer's roles in the order they run, the activation the FFN
analyses look at, the norms SmoothQuant folds into (norm -> input linears), and the
exact parameter list a config gives. Every analysis asks the adapter; none spells a
family's names itself. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FamilyAdapter", "ParamEntry", "ParamList"]


@dataclass(frozen=True)
class ParamEntry:
    """One parameter: full dotted name, the module that holds it, its class and shape."""

    name: str
    module: str
    module_type: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def kind(self) -> str:
        """``weight`` or ``bias``: the attribute name within its module."""
        return self.name.rsplit(".", 1)[-1]


class ParamList:
    """Builds a parameter list in registration order (the formulas' one helper)."""

    def __init__(self) -> None:
        self.entries: list[ParamEntry] = []

    def add(self, module: str, module_type: str, kind: str, shape: tuple[int, ...]) -> None:
        self.entries.append(ParamEntry(f"{module}.{kind}", module, module_type, shape))

    def linear(
        self, module: str, n_in: int, n_out: int, bias: bool, module_type: str = "Linear"
    ) -> None:
        """A linear layer: ``Linear`` stores [out, in], GPT-2's ``Conv1D`` [in, out]."""
        shape = (n_in, n_out) if module_type == "Conv1D" else (n_out, n_in)
        self.add(module, module_type, "weight", shape)
        if bias:
            self.add(module, module_type, "bias", (n_out,))

    def norm(self, module: str, module_type: str, size: int, *, bias: bool) -> None:
        self.add(module, module_type, "weight", (size,))
        if bias:
            self.add(module, module_type, "bias", (size,))


#: (entries, the parameter lm_head.weight is tied to or None), from a raw config.
ParamFormula = Callable[[Mapping[str, Any]], tuple[tuple[ParamEntry, ...], str | None]]
#: Every named submodule of the model a raw config builds, in named_modules() order.
NameFormula = Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class FamilyAdapter:
    """One architecture: its names, roles and formulas, looked up by ``model_type``."""

    name: str  # short name: "opt", "llama", "gpt2"
    label: str  # how docs and errors say it: "OPT", "Llama layout", "GPT-2"
    classes: Mapping[str, str]  # model_type -> transformers CausalLM class name
    layers_prefix: str  # dotted prefix of the decoder layers, with the trailing dot
    token_embeddings: str  # the token ids go to the device this module runs on
    head: str
    #: Modules the model applies after its last layer and before the head, in order;
    #: the lens applies each one the model has.
    lens_tail: tuple[str, ...]
    #: A layer's roles in the order their forward passes finish, the layer itself ("")
    #: last; a model runs the roles it has in this order (Qwen3 alone has q_norm and
    #: k_norm; OPT's order is that of its pre-LayerNorm members).
    layer_roles: tuple[str, ...]
    activation: str  # the role whose output the FFN analyses read
    ffn_in: str  # the FFN's first linear (OPT's fc1): what a report charts by default
    #: What the activation is: "relu" (exact zeros mean something), "gated" (act_fn of a
    #: gated FFN: silu(gate) * up) or "gelu".
    activation_kind: str
    #: SmoothQuant's folds: (norm role, the input-linear roles that read its output).
    smooth: tuple[tuple[str, tuple[str, ...]], ...]
    #: Roles of the linear layers inside a layer (Linear or Conv1D), in module order.
    linear_roles: tuple[str, ...]
    #: Linear roles whose input lives in the hidden dimension: the outlier summary.
    summary_roles: tuple[str, ...]
    #: ``params --by group``: (role prefix inside a layer, its group), first match wins.
    param_groups: tuple[tuple[str, str], ...]
    position_embeddings: str | None  # learned positions, where the family has them
    overview_before: tuple[str, ...]  # the overview's modules before the layers, in order
    overview_after: tuple[str, ...]  # and after them
    #: Canonical key (OPT's name for it) -> this family's config key.
    keys: Mapping[str, str]
    #: model_type -> the config class's defaults for the keys read, by this family's keys.
    defaults: Mapping[str, Mapping[str, Any]]
    list_params: ParamFormula
    module_names: NameFormula
    #: Named modules that never run in a forward pass, and why (one clause).
    never_called: frozenset[str] = frozenset()
    never_called_why: str = ""
    #: Canonical keys worked out from others when the config leaves them None.
    derived: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def layer_root(self, index: int) -> str:
        """The dotted name of decoder layer ``index`` itself."""
        return f"{self.layers_prefix}{index}"

    def class_name(self, raw: Mapping[str, Any]) -> str:
        """The transformers class that builds the model of ``raw``."""
        return self.classes[str(raw.get("model_type"))]

    def value(self, raw: Mapping[str, Any], key: str) -> Any:
        """Config value ``key`` (OPT's name for it: ``ffn_dim``, ``hidden_size``), read
        under this family's key, with the config class's default where it is left out."""
        own = self.keys.get(key, key)
        defaults = self.defaults.get(str(raw.get("model_type")), {})
        found = raw[own] if own in raw else defaults.get(own)
        if found is None and key in self.derived:
            return self.derived[key](raw)
        return found

    def smooth_pairs(self, num_layers: int) -> list[tuple[str, tuple[str, ...]]]:
        """Every (norm, input linears) of the model, by full dotted names, layer by layer."""
        pairs = []
        for index in range(num_layers):
            root = self.layer_root(index)
            for norm, linears in self.smooth:
                pairs.append((f"{root}.{norm}", tuple(f"{root}.{name}" for name in linears)))
        return pairs
