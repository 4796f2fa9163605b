"""GPT-2 (``GPT2LMHeadModel``): names, roles and the parameter formula.

    GPT2.layer_root(3)                  # "transformer.h.3"
    entries, tied_to = GPT2.list_params(raw)

Pre-LayerNorm blocks ``transformer.h.N`` with a fused ``attn.c_attn`` (q, k and v
in one ``Conv1D``), learned positions (``wpe``), a GELU FFN (``mlp.c_fc``,
``mlp.act``, ``mlp.c_proj``) and a head tied to ``wte``. ``Conv1D`` stores its
weight as [in, out]. The formulas mirror transformers' ``modeling_gpt2``; a test
compares them with the meta-built model. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import FamilyAdapter, ParamEntry, ParamList

__all__ = ["GPT2"]

_ROOT = "transformer"
_LAYERS = f"{_ROOT}.h."
_EMBED = f"{_ROOT}.wte"
_FINAL = f"{_ROOT}.ln_f"
_HEAD = "lm_head"

#: GPT2Config's defaults for the keys read.
_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_positions": 1024,
    "n_inner": None,
    "tie_word_embeddings": True,
}


def _get(raw: Mapping[str, Any], key: str) -> Any:
    return raw.get(key, _DEFAULTS[key])


def _ffn(raw: Mapping[str, Any]) -> int:
    return int(_get(raw, "n_inner") or 4 * int(_get(raw, "n_embd")))


def gpt2_module_names(raw: Mapping[str, Any]) -> list[str]:
    """``module_names`` of the model ``raw`` builds, in plain Python (registration order)."""
    names = [_ROOT, _EMBED, f"{_ROOT}.wpe", f"{_ROOT}.drop", _LAYERS.rstrip(".")]
    for index in range(int(_get(raw, "n_layer"))):
        layer = f"{_LAYERS}{index}"
        names += [layer, f"{layer}.ln_1", f"{layer}.attn"]
        names += [f"{layer}.attn.{m}" for m in ("c_attn", "c_proj", "attn_dropout")]
        names += [f"{layer}.attn.resid_dropout", f"{layer}.ln_2", f"{layer}.mlp"]
        names += [f"{layer}.mlp.{m}" for m in ("c_fc", "c_proj", "act", "dropout")]
    return [*names, _FINAL, _HEAD]


def gpt2_params(raw: Mapping[str, Any]) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The parameters of ``GPT2LMHeadModel(GPT2Config(**raw))``, the tied head once."""
    hidden = int(_get(raw, "n_embd"))
    ffn = _ffn(raw)
    tied = bool(_get(raw, "tie_word_embeddings"))
    vocab = int(_get(raw, "vocab_size"))
    out = ParamList()
    out.add(_EMBED, "Embedding", "weight", (vocab, hidden))
    out.add(f"{_ROOT}.wpe", "Embedding", "weight", (int(_get(raw, "n_positions")), hidden))
    for index in range(int(_get(raw, "n_layer"))):
        layer = f"{_LAYERS}{index}"
        out.norm(f"{layer}.ln_1", "LayerNorm", hidden, bias=True)
        out.linear(f"{layer}.attn.c_attn", hidden, 3 * hidden, True, "Conv1D")
        out.linear(f"{layer}.attn.c_proj", hidden, hidden, True, "Conv1D")
        out.norm(f"{layer}.ln_2", "LayerNorm", hidden, bias=True)
        out.linear(f"{layer}.mlp.c_fc", hidden, ffn, True, "Conv1D")
        out.linear(f"{layer}.mlp.c_proj", ffn, hidden, True, "Conv1D")
    out.norm(_FINAL, "LayerNorm", hidden, bias=True)
    if not tied:
        out.linear(_HEAD, hidden, vocab, bias=False)
    return tuple(out.entries), (f"{_EMBED}.weight" if tied else None)


GPT2 = FamilyAdapter(
    name="gpt2",
    label="GPT-2",
    classes={"gpt2": "GPT2LMHeadModel"},
    layers_prefix=_LAYERS,
    token_embeddings=_EMBED,
    head=_HEAD,
    lens_tail=(_FINAL,),
    layer_roles=(
        "ln_1",
        "attn.c_attn",
        "attn.attn_dropout",  # with eager attention only
        "attn.c_proj",
        "attn.resid_dropout",
        "attn",
        "ln_2",
        "mlp.c_fc",
        "mlp.act",
        "mlp.c_proj",
        "mlp.dropout",
        "mlp",
        "",
    ),
    activation="mlp.act",
    ffn_in="mlp.c_fc",
    activation_kind="gelu",
    smooth=(("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",))),
    linear_roles=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    summary_roles=("attn.c_attn", "attn.c_proj", "mlp.c_fc"),
    param_groups=(("attn.", "attention projections"), ("mlp.", "feed-forward layers")),
    position_embeddings=f"{_ROOT}.wpe",
    overview_before=(_EMBED, f"{_ROOT}.wpe"),
    overview_after=(_FINAL, _HEAD),
    keys={
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "n_positions",
        "ffn_dim": "n_inner",
    },
    defaults={"gpt2": _DEFAULTS},
    list_params=gpt2_params,
    module_names=gpt2_module_names,
    derived={"ffn_dim": _ffn},
)
