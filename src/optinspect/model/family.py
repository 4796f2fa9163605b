"""The OPT family in pure Python: its published configs and the parameters a config gives.

    from optinspect.model.family import family_config
    raw = family_config("facebook/opt-1.3b")   # a fresh dict, or None for any other name
    raw["hidden_size"]                          # 2048

The values are those of the ``config.json`` files Meta published on the
Hugging Face hub for ``facebook/opt-125m`` ... ``facebook/opt-66b``. There is
no public ``facebook/opt-175b`` config; its entry uses the paper's numbers
(Zhang et al. 2022, table 1: 96 layers, 96 heads, d_model 12288) with the same
conventions as the rest of the family (ffn_dim = 4 x d_model).

``list_config_params`` works out the parameter list of ``OPTForCausalLM`` from
a config, so the family is counted without importing torch. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .names import ACTIVATION, DECODER, HEAD, LAYERS_PREFIX, TOKEN_EMBEDDINGS, layer_root

__all__ = [
    "FAMILY",
    "FAMILY_NAMES",
    "OPT_DEFAULTS",
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
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY)


def family_size(spec: str) -> str | None:
    """The size suffix (``1.3b``) when ``spec`` names a family member, hub ids being case-blind."""
    name = spec.strip().lower()
    return name.removeprefix(_ORG) if name in FAMILY else None


def family_config(spec: str) -> dict[str, Any] | None:
    """A fresh copy of the built-in config of family member ``spec``, or None for other names."""
    size = family_size(spec)
    return None if size is None else _published(size)


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


#: OPTConfig's defaults for the keys this package reads, for configs that leave them out.
OPT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "num_attention_heads": 12,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": None,
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "do_layer_norm_before": True,
    "_remove_final_layer_norm": False,
    "tie_word_embeddings": True,
}


def config_value(raw: Mapping[str, Any], key: str) -> Any:
    """``raw[key]``, or OPTConfig's default where the config leaves it out."""
    return raw.get(key, OPT_DEFAULTS[key])


def config_module_names(raw: Mapping[str, Any]) -> list[str]:
    """``module_names(OPTForCausalLM(OPTConfig(**raw)))`` in plain Python: every named
    submodule, in ``named_modules()`` order, without importing torch.

    Mirrors the registration order of transformers' ``modeling_opt``, as
    ``list_config_params`` does; a test compares both with the meta-built model.
    """
    hidden = int(config_value(raw, "hidden_size"))
    word_dim = int(config_value(raw, "word_embed_proj_dim") or hidden)
    names = ["model", DECODER, TOKEN_EMBEDDINGS, f"{DECODER}.embed_positions"]
    if word_dim != hidden:
        names += [f"{DECODER}.project_out", f"{DECODER}.project_in"]
    if _has_final_norm(raw):
        names.append(f"{DECODER}.final_layer_norm")
    names.append(LAYERS_PREFIX.rstrip("."))
    for index in range(int(config_value(raw, "num_hidden_layers"))):
        layer = layer_root(index)
        names += [layer, f"{layer}.self_attn"]
        names += [
            f"{layer}.self_attn.{proj}" for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
        ]
        names += [
            f"{layer}.{role}"
            for role in (ACTIVATION, "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
        ]
    names.append(HEAD)
    return names


def _has_final_norm(raw: Mapping[str, Any]) -> bool:
    return bool(config_value(raw, "do_layer_norm_before")) and not config_value(
        raw, "_remove_final_layer_norm"
    )


def list_config_params(raw: Mapping[str, Any]) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The parameters ``OPTForCausalLM(OPTConfig(**raw))`` has, worked out without building it.

    Mirrors transformers' ``modeling_opt``: registration order, biases when
    ``enable_bias``, LayerNorm parameters when ``layer_norm_elementwise_affine``,
    ``project_in``/``project_out`` when ``word_embed_proj_dim`` differs from
    ``hidden_size``, a final LayerNorm only for pre-LayerNorm models, and
    ``lm_head`` listed only when it is not tied. Missing keys take OPTConfig's
    defaults. Returns the entries and what ``lm_head.weight`` is tied to.
    """
    hidden = int(config_value(raw, "hidden_size"))
    layers = int(config_value(raw, "num_hidden_layers"))
    ffn = int(config_value(raw, "ffn_dim"))
    vocab = int(config_value(raw, "vocab_size"))
    positions = int(config_value(raw, "max_position_embeddings"))
    word_dim = int(config_value(raw, "word_embed_proj_dim") or hidden)
    bias = bool(config_value(raw, "enable_bias"))
    affine = bool(config_value(raw, "layer_norm_elementwise_affine"))
    final_norm = _has_final_norm(raw)
    tied = bool(config_value(raw, "tie_word_embeddings"))

    entries: list[ParamEntry] = []

    def linear(module: str, n_in: int, n_out: int, has_bias: bool) -> None:
        entries.append(ParamEntry(f"{module}.weight", module, "Linear", (n_out, n_in)))
        if has_bias:
            entries.append(ParamEntry(f"{module}.bias", module, "Linear", (n_out,)))

    def norm(module: str) -> None:
        if affine:
            for kind in ("weight", "bias"):
                entries.append(ParamEntry(f"{module}.{kind}", module, "LayerNorm", (hidden,)))

    decoder = DECODER
    entries.append(
        ParamEntry(f"{TOKEN_EMBEDDINGS}.weight", TOKEN_EMBEDDINGS, "Embedding", (vocab, word_dim))
    )
    # OPT offsets positions by 2, so the table has two rows more than max positions.
    entries.append(
        ParamEntry(
            f"{decoder}.embed_positions.weight",
            f"{decoder}.embed_positions",
            "OPTLearnedPositionalEmbedding",
            (positions + 2, hidden),
        )
    )
    if word_dim != hidden:
        linear(f"{decoder}.project_out", hidden, word_dim, has_bias=False)
        linear(f"{decoder}.project_in", word_dim, hidden, has_bias=False)
    if final_norm:
        norm(f"{decoder}.final_layer_norm")
    for index in range(layers):
        layer = layer_root(index)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(f"{layer}.self_attn.{proj}", hidden, hidden, bias)
        norm(f"{layer}.self_attn_layer_norm")
        linear(f"{layer}.fc1", hidden, ffn, bias)
        linear(f"{layer}.fc2", ffn, hidden, bias)
        norm(f"{layer}.final_layer_norm")
    if not tied:
        linear(HEAD, word_dim, vocab, has_bias=False)
    return tuple(entries), (f"{TOKEN_EMBEDDINGS}.weight" if tied else None)
