"""The module hierarchy of a model built on the meta device, as plain records.

    from optinspect.analyses.tree import tree_model
    root = tree_model("facebook/opt-1.3b")          # no weights read or downloaded
    [(node.name, node.params) for node in root.walk(max_depth=3)]

Like ``print(model)``, identical consecutive entries of a ``ModuleList`` are
collapsed into one node by default: the 24 decoder layers of opt-1.3b become
``model.decoder.layers.0-23`` with ``repeat`` 24, whose children describe one
layer (``model.decoder.layers.0-23.fc1``). Pass ``collapse=False`` for one node
per module. The records (``TreeNode``, ``TreeResult``) are ``results.tree``'s.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..results.tree import TreeNode, TreeResult

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TreeNode", "TreeResult", "build_tree", "tree_model"]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _runs(children: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Split numbered siblings into runs of consecutive identical modules, as print(model) does."""
    runs: list[list[tuple[str, nn.Module]]] = []
    signature = None
    for name, module in children:
        current = repr(module) if name.isdigit() else None
        if runs and current is not None and current == signature:
            runs[-1].append((name, module))
        else:
            runs.append([(name, module)])
        signature = current
    return runs


def _node(
    module: nn.Module,
    real: str,
    shown: str,
    depth: int,
    repeat: int,
    owners: dict[int, str],
    collapse: bool,
) -> TreeNode:
    own = 0
    for pname, param in module.named_parameters(recurse=False):
        if owners.get(id(param)) == _join(real, pname):
            own += math.prod(param.shape)
    weight = module._parameters.get("weight")
    weight_shape = tuple(weight.shape) if weight is not None else None
    tied_to = None
    if weight is not None and owners.get(id(weight)) != _join(real, "weight"):
        tied_to = owners.get(id(weight))

    kids = list(module.named_children())
    runs = _runs(kids) if collapse else [[kid] for kid in kids]
    children = []
    for run in runs:
        first_name, first = run[0]
        label = first_name if len(run) == 1 else f"{first_name}-{run[-1][0]}"
        children.append(
            _node(
                first,
                _join(real, first_name),
                _join(shown, label),
                depth + 1,
                len(run),
                owners,
                collapse,
            )
        )
    params = own + sum(child.total for child in children)
    return TreeNode(
        name=shown,
        type=type(module).__name__,
        depth=depth,
        repeat=repeat,
        params=params,
        own_params=own,
        weight_shape=weight_shape,
        tied_to=tied_to,
        children=tuple(children),
    )


def build_tree(model: nn.Module, *, collapse: bool = True) -> TreeNode:
    """The hierarchy of ``model`` with parameter counts per subtree.

    A tensor shared by two modules (a tied ``lm_head``) is counted once, under
    the name ``named_parameters()`` gives it first. Collapsed siblings are
    identical by ``repr``, so one instance stands for all.
    """
    owners: dict[int, str] = {}
    for name, param in model.named_parameters():
        owners.setdefault(id(param), name)
    return _node(model, "", "", 0, 1, owners, collapse)


def tree_model(spec: str, *, collapse: bool = True) -> TreeNode:
    """The hierarchy of the model ``spec`` names, reading no weights.

    A member of the OPT family (``facebook/opt-1.3b``; a local folder of that
    name wins) is worked out from its built-in config in plain Python, without
    importing torch; another row of the family table is built on the meta device from
    its built-in config (offline), and anything else from the config it reads.
    """
    from pathlib import Path

    from ..model.family import family_config
    from ..model.spec import build_meta_model, config_from_raw, read_config, resolve_source

    raw = None if Path(spec).expanduser().exists() else family_config(spec)
    if raw is not None and raw.get("model_type") == "opt":
        return family_tree(raw, collapse=collapse)
    # Other families' rows are built on the meta device from the built-in config: offline.
    config = config_from_raw(raw) if raw is not None else read_config(resolve_source(spec))
    return build_tree(build_meta_model(config), collapse=collapse)


#: Classes of the modules that hold no parameter of their own, by name inside the model.
_HOLDERS = {"": "OPTForCausalLM", "model": "OPTModel", "model.decoder": "OPTDecoder"}
#: Classes by a module's role inside a decoder layer, where no parameter names them.
_ROLES = {"self_attn": "OPTAttention", "activation_fn": "ReLU"}


def family_tree(raw: dict[str, Any], *, collapse: bool = True) -> TreeNode:
    """What ``build_tree`` gives for ``OPTForCausalLM(OPTConfig(**raw))``, in plain Python.

    The modules are ``config_module_names`` (``named_modules()`` order); each class
    comes from ``list_config_params`` where the module holds a parameter, else from
    its place in the model. All decoder layers of one config are identical, so
    collapsing keeps one of them.
    """
    from ..model.family import config_module_names, list_config_params
    from ..model.names import HEAD, LAYERS_PREFIX, is_layer_root, role_of

    entries, tied_to = list_config_params(raw)
    classes = {entry.module: entry.module_type for entry in entries}

    def class_of(name: str) -> str:
        role = role_of(name) or ""
        if name in classes:
            return classes[name]
        if name in _HOLDERS:
            return _HOLDERS[name]
        if name == LAYERS_PREFIX.rstrip("."):
            return "ModuleList"
        if is_layer_root(name):
            return "OPTDecoderLayer"
        if name == HEAD:
            return "Linear"
        # a LayerNorm without elementwise affine holds no parameter
        return _ROLES.get(role, "LayerNorm")

    modules = {name: class_of(name) for name in ["", *config_module_names(raw)]}
    own: dict[str, int] = {}
    weights: dict[str, tuple[int, ...]] = {}
    for entry in entries:
        own[entry.module] = own.get(entry.module, 0) + entry.numel
        if entry.kind == "weight":
            weights[entry.module] = entry.shape
    tied = {}
    if tied_to is not None:
        weights[HEAD] = weights[tied_to.removesuffix(".weight")]
        tied[HEAD] = tied_to
    return _family_node("", "", 0, 1, modules, own, weights, tied, collapse)


def _family_node(
    real: str,
    shown: str,
    depth: int,
    repeat: int,
    modules: dict[str, str],
    own: dict[str, int],
    weights: dict[str, tuple[int, ...]],
    tied: dict[str, str],
    collapse: bool,
) -> TreeNode:
    prefix = f"{real}." if real else ""
    kids = [
        n for n in modules if n.startswith(prefix) and n != real and "." not in n[len(prefix) :]
    ]
    runs: list[list[str]] = []
    for kid in kids:
        numbered = kid[len(prefix) :].isdigit()
        if collapse and numbered and runs and runs[-1][-1][len(prefix) :].isdigit():
            runs[-1].append(kid)
        else:
            runs.append([kid])
    children = []
    for run in runs:
        first, last = run[0][len(prefix) :], run[-1][len(prefix) :]
        label = first if len(run) == 1 else f"{first}-{last}"
        children.append(
            _family_node(
                run[0],
                _join(shown, label),
                depth + 1,
                len(run),
                modules,
                own,
                weights,
                tied,
                collapse,
            )
        )
    own_params = own.get(real, 0)
    return TreeNode(
        name=shown,
        type=modules[real],
        depth=depth,
        repeat=repeat,
        params=own_params + sum(child.total for child in children),
        own_params=own_params,
        weight_shape=weights.get(real),
        tied_to=tied.get(real),
        children=tuple(children),
    )
