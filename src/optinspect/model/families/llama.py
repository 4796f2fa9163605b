"""The Llama layout (Llama, Mistral, Qwen2, Qwen3): names, roles and the parameter formula.

    LLAMA.layer_root(3)                 # "model.layers.3"
    entries, tied_to = LLAMA.list_params(raw)

RMSNorm before attention and before the gated FFN (``gate_proj``, ``up_proj``,
``act_fn``, ``down_proj``), rotary positions (no parameters), grouped-query
attention when ``num_key_value_heads`` < ``num_attention_heads``, a tied or untied
head. Qwen2 has q/k/v biases; Qwen3 RMS-normalises q and k per head (``q_norm``,
``k_norm``); Llama adds biases where ``attention_bias`` / ``mlp_bias`` say. The
formulas mirror transformers' ``modeling_llama``, ``modeling_mistral``,
``modeling_qwen2`` and ``modeling_qwen3`` (registration order); a test compares them
with the meta-built model. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import FamilyAdapter, ParamEntry, ParamList

__all__ = ["LLAMA"]

_LAYERS = "model.layers."
_EMBED = "model.embed_tokens"
_NORM = "model.norm"
_HEAD = "lm_head"

_CLASSES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
#: The RMSNorm class of each model type, as transformers names it.
_NORM_CLASS = {
    "llama": "LlamaRMSNorm",
    "mistral": "MistralRMSNorm",
    "qwen2": "Qwen2RMSNorm",
    "qwen3": "Qwen3RMSNorm",
}

_COMMON = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "head_dim": None,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
#: Each config class's defaults for the keys read (transformers 5: LlamaConfig() ...).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        **_COMMON,
        "vocab_size": 32000,
        "intermediate_size": 11008,
        "num_key_value_heads": None,
        "max_position_embeddings": 2048,
    },
    "mistral": {
        **_COMMON,
        "vocab_size": 32000,
        "intermediate_size": 14336,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
    },
    "qwen2": {
        **_COMMON,
        "vocab_size": 151936,
        "intermediate_size": 22016,
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
    },
    "qwen3": {
        **_COMMON,
        "vocab_size": 151936,
        "intermediate_size": 22016,
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
        "head_dim": 128,
    },
}


def _get(raw: Mapping[str, Any], key: str) -> Any:
    value = raw.get(key)
    return _DEFAULTS[str(raw.get("model_type"))][key] if value is None else value


def _sizes(raw: Mapping[str, Any]) -> dict[str, int]:
    hidden = int(_get(raw, "hidden_size"))
    heads = int(_get(raw, "num_attention_heads"))
    kv = _get(raw, "num_key_value_heads")
    return {
        "hidden": hidden,
        "heads": heads,
        "kv": int(kv) if kv is not None else heads,
        "head_dim": int(_get(raw, "head_dim") or hidden // heads),
        "ffn": int(_get(raw, "intermediate_size")),
        "vocab": int(_get(raw, "vocab_size")),
        "layers": int(_get(raw, "num_hidden_layers")),
    }


def _attention_biases(raw: Mapping[str, Any]) -> tuple[bool, bool]:
    """(q/k/v have biases, o_proj has one), as each model type's attention builds them."""
    kind = raw.get("model_type")
    if kind == "qwen2":
        return True, False
    if kind == "mistral":
        return False, False
    bias = bool(_get(raw, "attention_bias"))
    return bias, bias


def llama_module_names(raw: Mapping[str, Any]) -> list[str]:
    """``module_names`` of the model ``raw`` builds, in plain Python (registration order)."""
    qk_norm = raw.get("model_type") == "qwen3"
    names = ["model", _EMBED, _LAYERS.rstrip(".")]
    for index in range(_sizes(raw)["layers"]):
        layer = f"{_LAYERS}{index}"
        attn = [f"{layer}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        if qk_norm:
            attn += [f"{layer}.self_attn.q_norm", f"{layer}.self_attn.k_norm"]
        names += [layer, f"{layer}.self_attn", *attn, f"{layer}.mlp"]
        names += [f"{layer}.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj", "act_fn")]
        names += [f"{layer}.input_layernorm", f"{layer}.post_attention_layernorm"]
    return [*names, _NORM, "model.rotary_emb", _HEAD]


def llama_params(raw: Mapping[str, Any]) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The parameters of the model ``raw`` builds, each shared tensor once.

    q_proj is [heads x head_dim, hidden], k_proj and v_proj [kv_heads x head_dim,
    hidden], o_proj [hidden, heads x head_dim]; gate_proj and up_proj
    [intermediate, hidden], down_proj [hidden, intermediate]; every RMSNorm one
    weight of its width; ``lm_head`` only when not tied.
    """
    s = _sizes(raw)
    hidden, head_dim = s["hidden"], s["head_dim"]
    norm_class = _NORM_CLASS[str(raw.get("model_type"))]
    qkv_bias, o_bias = _attention_biases(raw)
    mlp_bias = raw.get("model_type") == "llama" and bool(_get(raw, "mlp_bias"))
    tied = bool(_get(raw, "tie_word_embeddings"))
    out = ParamList()
    out.add(_EMBED, "Embedding", "weight", (s["vocab"], hidden))
    for index in range(s["layers"]):
        layer = f"{_LAYERS}{index}"
        out.linear(f"{layer}.self_attn.q_proj", hidden, s["heads"] * head_dim, qkv_bias)
        out.linear(f"{layer}.self_attn.k_proj", hidden, s["kv"] * head_dim, qkv_bias)
        out.linear(f"{layer}.self_attn.v_proj", hidden, s["kv"] * head_dim, qkv_bias)
        out.linear(f"{layer}.self_attn.o_proj", s["heads"] * head_dim, hidden, o_bias)
        if raw.get("model_type") == "qwen3":
            out.norm(f"{layer}.self_attn.q_norm", norm_class, head_dim, bias=False)
            out.norm(f"{layer}.self_attn.k_norm", norm_class, head_dim, bias=False)
        out.linear(f"{layer}.mlp.gate_proj", hidden, s["ffn"], mlp_bias)
        out.linear(f"{layer}.mlp.up_proj", hidden, s["ffn"], mlp_bias)
        out.linear(f"{layer}.mlp.down_proj", s["ffn"], hidden, mlp_bias)
        out.norm(f"{layer}.input_layernorm", norm_class, hidden, bias=False)
        out.norm(f"{layer}.post_attention_layernorm", norm_class, hidden, bias=False)
    out.norm(_NORM, norm_class, hidden, bias=False)
    if not tied:
        out.linear(_HEAD, hidden, s["vocab"], bias=False)
    return tuple(out.entries), (f"{_EMBED}.weight" if tied else None)


LLAMA = FamilyAdapter(
    name="llama",
    label="Llama layout",
    classes=_CLASSES,
    layers_prefix=_LAYERS,
    token_embeddings=_EMBED,
    head=_HEAD,
    lens_tail=(_NORM,),
    layer_roles=(
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.q_norm",  # Qwen3 only
        "self_attn.k_proj",
        "self_attn.k_norm",  # Qwen3 only
        "self_attn.v_proj",
        "self_attn.o_proj",
        "self_attn",
        "post_attention_layernorm",
        "mlp.gate_proj",
        "mlp.act_fn",
        "mlp.up_proj",
        "mlp.down_proj",
        "mlp",
        "",
    ),
    activation="mlp.act_fn",
    ffn_in="mlp.gate_proj",
    activation_kind="gated",
    smooth=(
        ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ),
    linear_roles=(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ),
    summary_roles=(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
    ),
    param_groups=(("self_attn.", "attention projections"), ("mlp.", "feed-forward layers")),
    position_embeddings=None,  # rotary: no parameters
    overview_before=(_EMBED,),
    overview_after=(_NORM, _HEAD),
    keys={"ffn_dim": "intermediate_size"},
    defaults=_DEFAULTS,
    list_params=llama_params,
    module_names=llama_module_names,
    derived={"num_key_value_heads": lambda raw: _sizes(raw)["kv"]},
)
