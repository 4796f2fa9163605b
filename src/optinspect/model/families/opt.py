"""OPT (``OPTForCausalLM``): its names, roles and the parameters a config gives.

    OPT.layer_root(3)                   # "model.decoder.layers.3"
    entries, tied_to = OPT.list_params(raw)

The formulas mirror transformers' ``modeling_opt`` (registration order), so the
family is counted without importing torch; a test compares them with the
meta-built model for every published config. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import FamilyAdapter, ParamEntry, ParamList

__all__ = ["DECODER", "OPT", "OPT_DEFAULTS"]

#: The decoder inside an OPTForCausalLM.
DECODER = "model.decoder"
_LAYERS = f"{DECODER}.layers."
_EMBED = f"{DECODER}.embed_tokens"
_HEAD = "lm_head"
_ACTIVATION = "activation_fn"

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


def _value(raw: Mapping[str, Any], key: str) -> Any:
    return raw.get(key, OPT_DEFAULTS[key])


def _has_final_norm(raw: Mapping[str, Any]) -> bool:
    return bool(_value(raw, "do_layer_norm_before")) and not _value(raw, "_remove_final_layer_norm")


def opt_module_names(raw: Mapping[str, Any]) -> list[str]:
    """``module_names(OPTForCausalLM(OPTConfig(**raw)))`` in plain Python, in
    ``named_modules()`` order (transformers' ``modeling_opt`` registration order)."""
    hidden = int(_value(raw, "hidden_size"))
    word_dim = int(_value(raw, "word_embed_proj_dim") or hidden)
    names = ["model", DECODER, _EMBED, f"{DECODER}.embed_positions"]
    if word_dim != hidden:
        names += [f"{DECODER}.project_out", f"{DECODER}.project_in"]
    if _has_final_norm(raw):
        names.append(f"{DECODER}.final_layer_norm")
    names.append(_LAYERS.rstrip("."))
    for index in range(int(_value(raw, "num_hidden_layers"))):
        layer = f"{_LAYERS}{index}"
        names += [layer, f"{layer}.self_attn"]
        names += [
            f"{layer}.self_attn.{proj}" for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
        ]
        names += [
            f"{layer}.{role}"
            for role in (_ACTIVATION, "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
        ]
    names.append(_HEAD)
    return names


def opt_params(raw: Mapping[str, Any]) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The parameters ``OPTForCausalLM(OPTConfig(**raw))`` has, worked out without building it.

    Mirrors transformers' ``modeling_opt``: registration order, biases when
    ``enable_bias``, LayerNorm parameters when ``layer_norm_elementwise_affine``,
    ``project_in``/``project_out`` when ``word_embed_proj_dim`` differs from
    ``hidden_size``, a final LayerNorm only for pre-LayerNorm models, and
    ``lm_head`` listed only when it is not tied. Missing keys take OPTConfig's
    defaults. Returns the entries and what ``lm_head.weight`` is tied to.
    """
    hidden = int(_value(raw, "hidden_size"))
    ffn = int(_value(raw, "ffn_dim"))
    vocab = int(_value(raw, "vocab_size"))
    positions = int(_value(raw, "max_position_embeddings"))
    word_dim = int(_value(raw, "word_embed_proj_dim") or hidden)
    bias = bool(_value(raw, "enable_bias"))
    affine = bool(_value(raw, "layer_norm_elementwise_affine"))
    tied = bool(_value(raw, "tie_word_embeddings"))

    out = ParamList()

    def norm(module: str) -> None:
        if affine:
            out.norm(module, "LayerNorm", hidden, bias=True)

    out.add(_EMBED, "Embedding", "weight", (vocab, word_dim))
    # OPT offsets positions by 2, so the table has two rows more than max positions.
    out.add(
        f"{DECODER}.embed_positions",
        "OPTLearnedPositionalEmbedding",
        "weight",
        (positions + 2, hidden),
    )
    if word_dim != hidden:
        out.linear(f"{DECODER}.project_out", hidden, word_dim, bias=False)
        out.linear(f"{DECODER}.project_in", word_dim, hidden, bias=False)
    if _has_final_norm(raw):
        norm(f"{DECODER}.final_layer_norm")
    for index in range(int(_value(raw, "num_hidden_layers"))):
        layer = f"{_LAYERS}{index}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out.linear(f"{layer}.self_attn.{proj}", hidden, hidden, bias)
        norm(f"{layer}.self_attn_layer_norm")
        out.linear(f"{layer}.fc1", hidden, ffn, bias)
        out.linear(f"{layer}.fc2", ffn, hidden, bias)
        norm(f"{layer}.final_layer_norm")
    if not tied:
        out.linear(_HEAD, word_dim, vocab, bias=False)
    return tuple(out.entries), (f"{_EMBED}.weight" if tied else None)


OPT = FamilyAdapter(
    name="opt",
    label="OPT",
    classes={"opt": "OPTForCausalLM"},
    layers_prefix=_LAYERS,
    token_embeddings=_EMBED,
    head=_HEAD,
    lens_tail=(f"{DECODER}.final_layer_norm", f"{DECODER}.project_out"),
    layer_roles=(
        "self_attn_layer_norm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "self_attn",
        "final_layer_norm",
        "fc1",
        _ACTIVATION,
        "fc2",
        "",
    ),
    activation=_ACTIVATION,
    ffn_in="fc1",
    activation_kind="relu",
    smooth=(
        ("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
        ("final_layer_norm", ("fc1",)),
    ),
    linear_roles=(
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.q_proj",
        "self_attn.out_proj",
        "fc1",
        "fc2",
    ),
    summary_roles=(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "fc1",
    ),
    param_groups=(
        ("self_attn.", "attention projections"),
        ("fc1", "feed-forward layers"),
        ("fc2", "feed-forward layers"),
    ),
    position_embeddings=f"{DECODER}.embed_positions",
    overview_before=(_EMBED, f"{DECODER}.embed_positions", f"{DECODER}.project_in"),
    overview_after=(f"{DECODER}.final_layer_norm", f"{DECODER}.project_out", _HEAD),
    keys={},
    defaults={"opt": OPT_DEFAULTS},
    list_params=opt_params,
    module_names=opt_module_names,
    # OPTForCausalLM.forward calls model.decoder itself, so the OPTModel wrapper is skipped.
    never_called=frozenset({"model"}),
    never_called_why="the forward pass calls model.decoder",
)
