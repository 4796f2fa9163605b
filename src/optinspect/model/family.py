"""The family table in pure Python: published configs and the parameters a config gives.

    from optinspect.model.family import family_config
    raw = family_config("facebook/opt-1.3b")   # a fresh dict, or None for an unknown name
    raw["hidden_size"]                          # 2048
    family_config("meta-llama/Llama-3.1-8B")    # the other families' rows (families.published)

The values are those of the ``config.json`` files Meta published on the
Hugging Face hub for ``facebook/opt-125m`` ... ``facebook/opt-66b``. There is
no public ``facebook/opt-175b`` config; its entry uses the paper's numbers
(Zhang et al. 2022, table 1: 96 layers, 96 heads, d_model 12288) with the same
conventions as the rest of the family (ffn_dim = 4 x d_model).

``list_config_params`` works out the parameter list of the model a config builds
(the family adapter's formula, ``model.families``), so every row is counted
without importing torch. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .families import ParamEntry, adapter_for_config
from .families.published import published_config

__all__ = [
    "FAMILY",
    "ParamEntry",
    "config_module_names",
    "config_value",
    "family_config",
    "family_size",
    "list_config_params",
]

#: Size -> (hidden_size, num_hidden_layers, ffn_dim, num_attention_heads).
_SHAPES: dict[str, tuple[int, int, int, int]] = {
    "125m": (768, 12, 3072, 12),
    "350m": (1024, 24, 4096, 16),
    "1.3b": (2048, 24, 8192, 32),
    "2.7b": (2560, 32, 10240, 32),
    "6.7b": (4096, 32, 16384, 32),
    "13b": (5120, 40, 20480, 40),
    "30b": (7168, 48, 28672, 56),
    "66b": (9216, 64, 36864, 72),
    "175b": (12288, 96, 49152, 96),
}

_ORG = "facebook/opt-"


def _published(size: str) -> dict[str, Any]:
    hidden, layers, ffn, heads = _SHAPES[size]
    # opt-350m alone is post-LayerNorm and embeds words in 512 dimensions,
    # projected to and from its 1024-wide decoder by project_in / project_out.
    is_350m = size == "350m"
    return {
        "_name_or_path": f"{_ORG}{size}",
        "_remove_final_layer_norm": False,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["OPTForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": not is_350m,
        "dropout": 0.1,
        "enable_bias": True,
        "eos_token_id": 2,
        "ffn_dim": ffn,
        "hidden_size": hidden,
        "init_std": 0.02,
        "layer_norm_elementwise_affine": True,
        "layerdrop": 0.0,
        "max_position_embeddings": 2048,
        "model_type": "opt",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": 1,
        "prefix": "</s>",
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "use_cache": True,
        "vocab_size": 50272,
        "word_embed_proj_dim": 512 if is_350m else hidden,
    }


#: Hub id -> published config, smallest first.
FAMILY: dict[str, dict[str, Any]] = {f"{_ORG}{size}": _published(size) for size in _SHAPES}


def family_size(spec: str) -> str | None:
    """The size suffix (``1.3b``) when ``spec`` names a family member, hub ids being case-blind."""
    name = spec.strip().lower()
    return name.removeprefix(_ORG) if name in FAMILY else None


def family_config(spec: str) -> dict[str, Any] | None:
    """A fresh copy of the built-in config of hub id ``spec`` (an OPT family member or a
    row of ``families.published``), or None for other names."""
    size = family_size(spec)
    return published_config(spec) if size is None else _published(size)


def config_value(raw: Mapping[str, Any], key: str) -> Any:
    """``raw[key]`` under its family's name for it (``ffn_dim`` is Llama's
    ``intermediate_size``, GPT-2's ``n_inner``), or the config class's default where the
    config leaves it out."""
    return adapter_for_config(raw).value(raw, key)


def config_module_names(raw: Mapping[str, Any]) -> list[str]:
    """``module_names`` of the model ``raw`` builds, in plain Python: every named
    submodule, in ``named_modules()`` order, without importing torch (the family
    adapter's mirror of transformers' registration order; a test compares it with the
    meta-built model)."""
    return adapter_for_config(raw).module_names(raw)


def list_config_params(raw: Mapping[str, Any]) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The parameters of the model ``raw`` builds, worked out without building it: the
    family adapter's formula (OPT's: ``families.opt.opt_params``). Returns the entries,
    each shared tensor once, and what ``lm_head.weight`` is tied to."""
    return adapter_for_config(raw).list_params(raw)
