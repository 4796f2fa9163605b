"""Published configs of the well-known non-OPT checkpoints, in plain Python, so that
``params``, ``tree`` and ``trace --dry-run`` of their hub ids work offline.

    published_config("meta-llama/Llama-3.1-8B")["intermediate_size"]    # 14336

The values are those of the ``config.json`` files on the Hugging Face hub (the keys
that decide the model's modules and shapes, and a few more a reader looks for):
Llama 2 (7b, 13b, 70b), Llama 3.1 (8B, 70B, 405B), Llama 3.2 (1B, 3B), Mistral 7B
v0.1, Qwen2.5 (0.5B to 72B) and GPT-2 (small to xl). A test builds every row on the
meta device and compares its parameters with the family's formula. No torch here.

Every row was checked, key by key, against a copy of its hub ``config.json``; ``_SOURCES``
names the copy each row was checked against.
"""

from __future__ import annotations

from typing import Any

from .gpt2 import GPT2
from .llama import LLAMA

__all__ = ["PUBLISHED", "published_config"]

#: Llama layout rows: hub id -> (model_type, hidden, intermediate, layers, heads, kv heads,
#: vocab, max positions, tied head, head_dim where the config gives one).
_LLAMA_LAYOUT: dict[str, tuple[Any, ...]] = {
    "meta-llama/Llama-2-7b-hf": ("llama", 4096, 11008, 32, 32, 32, 32000, 4096, False, None),
    "meta-llama/Llama-2-13b-hf": ("llama", 5120, 13824, 40, 40, 40, 32000, 4096, False, None),
    "meta-llama/Llama-2-70b-hf": ("llama", 8192, 28672, 80, 64, 8, 32000, 4096, False, None),
    "meta-llama/Llama-3.1-8B": ("llama", 4096, 14336, 32, 32, 8, 128256, 131072, False, None),
    "meta-llama/Llama-3.1-70B": ("llama", 8192, 28672, 80, 64, 8, 128256, 131072, False, None),
    "meta-llama/Llama-3.1-405B": ("llama", 16384, 53248, 126, 128, 8, 128256, 131072, False, None),
    "meta-llama/Llama-3.2-1B": ("llama", 2048, 8192, 16, 32, 8, 128256, 131072, True, 64),
    "meta-llama/Llama-3.2-3B": ("llama", 3072, 8192, 28, 24, 8, 128256, 131072, True, 128),
    "mistralai/Mistral-7B-v0.1": ("mistral", 4096, 14336, 32, 32, 8, 32000, 32768, False, None),
    "Qwen/Qwen2.5-0.5B": ("qwen2", 896, 4864, 24, 14, 2, 151936, 32768, True, None),
    "Qwen/Qwen2.5-1.5B": ("qwen2", 1536, 8960, 28, 12, 2, 151936, 131072, True, None),
    "Qwen/Qwen2.5-3B": ("qwen2", 2048, 11008, 36, 16, 2, 151936, 32768, True, None),
    "Qwen/Qwen2.5-7B": ("qwen2", 3584, 18944, 28, 28, 4, 152064, 131072, False, None),
    "Qwen/Qwen2.5-14B": ("qwen2", 5120, 13824, 48, 40, 8, 152064, 131072, False, None),
    "Qwen/Qwen2.5-32B": ("qwen2", 5120, 27648, 64, 40, 8, 152064, 131072, False, None),
    "Qwen/Qwen2.5-72B": ("qwen2", 8192, 29568, 80, 64, 8, 152064, 131072, False, None),
}  # fmt: skip
#: Where each row's values were checked: the hub's own page where it was stored, else a copy
#: of the hub config inside a derived repo (``_name_or_path`` or "Duplicate from" naming the
#: row) with the same keys. hf = https://huggingface.co/
_SOURCES: dict[str, str] = {
    "meta-llama/Llama-2-7b-hf": "hf abhishek/llama-2-7b-hf-small-shards config.json",
    "meta-llama/Llama-2-13b-hf": "hf LoftQ/Llama-2-13b-hf-4bit-64rank config.json",
    "meta-llama/Llama-2-70b-hf": "hf TheBloke/Llama-2-70B-fp16 config.json",
    "meta-llama/Llama-3.1-8B": "hf NbAiLab/nb-llama-3.1-8B config.json",
    "meta-llama/Llama-3.1-70B": "hf radi-cho/Meta-Llama-3.1-70B-FLUTE config.json",
    # The July 2024 upload had 16 (duplicated) kv heads, as copies of that time show (hf
    # axolotl-ai-co/meta-llama-3_1-405b-hqq-4bit); Meta's "8 kv heads" PRs made it 8 (hf
    # meta-llama/Llama-3.1-405B-Instruct-FP8/discussions/13, /14; unsloth/Meta-Llama-3.1-
    # 405B-bnb-4bit/discussions/1). The instruct model has the same shapes.
    "meta-llama/Llama-3.1-405B": "hf relaxml/Llama-3.1-405B-Instruct-QTIP-2Bit-TP8 config.json",
    "meta-llama/Llama-3.2-1B": "hf Emm9625/Llama-3.2-1B-chatml (duplicate) config.json",
    "meta-llama/Llama-3.2-3B": "hf mlx-community/Llama-3.2-3B-bf16 config.json",
    "mistralai/Mistral-7B-v0.1": "hf dmayboroda/42_mistral_0.1 config.json",
    "Qwen/Qwen2.5-0.5B": "hf artificialguybr/QWEN-2.5-0.5B-Synthia-I config.json",
    "Qwen/Qwen2.5-1.5B": "hf kaitchup/Qwen2.5-1.5B-AutoRound-GPTQ-asym-4bit config.json",
    "Qwen/Qwen2.5-3B": "hf BitStack/BitStack-Qwen2.5-3B config.json",
    "Qwen/Qwen2.5-7B": "hf fblgit/cybertron-v4-qw7B-MGS config.json",
    "Qwen/Qwen2.5-14B": "hf osllmai-community/Qwen2.5-14B-bnb-4bit config.json",
    "Qwen/Qwen2.5-32B": "hf Qwen/Qwen2.5-32B/blob/main/config.json",
    "Qwen/Qwen2.5-72B": "hf BitStack/BitStack-Qwen2.5-72B config.json",
    "openai-community/gpt2": "hf ke-lly/47163343_0 config.json",
    "openai-community/gpt2-medium": "hf openai-community/gpt2-medium config.json",
    "openai-community/gpt2-large": "hf openai-community/gpt2-large config.json",
    "openai-community/gpt2-xl": "hf openai-community/gpt2-xl/blob/main/config.json",
}
#: The ``rope_scaling`` factor of the rows whose config stores Llama 3's rope scaling.
_LLAMA3_ROPE_FACTOR: dict[str, float] = {
    "meta-llama/Llama-3.1-8B": 8.0,
    "meta-llama/Llama-3.1-70B": 8.0,
    "meta-llama/Llama-3.1-405B": 8.0,
    "meta-llama/Llama-3.2-1B": 32.0,
    "meta-llama/Llama-3.2-3B": 32.0,
}
#: (rms_norm_eps, rope_theta) of each row.
_NORM_ROPE: dict[str, tuple[float, float]] = {
    "meta-llama/Llama-2-7b-hf": (1e-5, 10000.0),
    "meta-llama/Llama-2-13b-hf": (1e-5, 10000.0),
    "meta-llama/Llama-2-70b-hf": (1e-5, 10000.0),
    "meta-llama/Llama-3.1-8B": (1e-5, 500000.0),
    "meta-llama/Llama-3.1-70B": (1e-5, 500000.0),
    "meta-llama/Llama-3.1-405B": (1e-5, 500000.0),
    "meta-llama/Llama-3.2-1B": (1e-5, 500000.0),
    "meta-llama/Llama-3.2-3B": (1e-5, 500000.0),
    "mistralai/Mistral-7B-v0.1": (1e-5, 10000.0),
    "Qwen/Qwen2.5-0.5B": (1e-6, 1000000.0),
    "Qwen/Qwen2.5-1.5B": (1e-6, 1000000.0),
    "Qwen/Qwen2.5-3B": (1e-6, 1000000.0),
    "Qwen/Qwen2.5-7B": (1e-6, 1000000.0),
    "Qwen/Qwen2.5-14B": (1e-5, 1000000.0),
    "Qwen/Qwen2.5-32B": (1e-5, 1000000.0),
    "Qwen/Qwen2.5-72B": (1e-5, 1000000.0),
}

#: GPT-2 rows: hub id -> (n_embd, n_layer, n_head).
_GPT2: dict[str, tuple[int, int, int]] = {
    "openai-community/gpt2": (768, 12, 12),
    "openai-community/gpt2-medium": (1024, 24, 16),
    "openai-community/gpt2-large": (1280, 36, 20),
    "openai-community/gpt2-xl": (1600, 48, 25),
}
#: The short ids the hub still answers for GPT-2 (``gpt2`` is ``openai-community/gpt2``).
_ALIASES = {name.removeprefix("openai-community/"): name for name in _GPT2}


def _llama_layout(name: str) -> dict[str, Any]:
    kind, hidden, ffn, layers, heads, kv, vocab, positions, tied, head_dim = _LLAMA_LAYOUT[name]
    eps, theta = _NORM_ROPE[name]
    raw: dict[str, Any] = {
        "_name_or_path": name,
        "architectures": [LLAMA.classes[kind]],
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "max_position_embeddings": positions,
        "model_type": kind,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "tie_word_embeddings": tied,
        "torch_dtype": "float16" if name.startswith("meta-llama/Llama-2") else "bfloat16",
        "vocab_size": vocab,
    }
    if kind == "llama":
        raw.update(attention_bias=False, mlp_bias=False)
    if kind == "mistral":
        raw["sliding_window"] = 4096
    if head_dim is not None:
        raw["head_dim"] = head_dim
    if name in _LLAMA3_ROPE_FACTOR:
        raw["rope_scaling"] = {
            "factor": _LLAMA3_ROPE_FACTOR[name],
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        }
    return raw


def _gpt2(name: str) -> dict[str, Any]:
    hidden, layers, heads = _GPT2[name]
    return {
        "_name_or_path": name,
        "activation_function": "gelu_new",
        "architectures": [GPT2.classes["gpt2"]],
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "layer_norm_epsilon": 1e-5,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": hidden,
        "n_head": heads,
        "n_layer": layers,
        "n_positions": 1024,
        "vocab_size": 50257,
    }


#: Every row's hub id, as the hub spells it.
PUBLISHED: tuple[str, ...] = (*_LLAMA_LAYOUT, *_GPT2)
_BY_LOWER = {name.lower(): name for name in PUBLISHED} | {
    alias.lower(): name for alias, name in _ALIASES.items()
}


def published_config(spec: str) -> dict[str, Any] | None:
    """A fresh copy of the published config of hub id ``spec`` (case-blind), or None."""
    name = _BY_LOWER.get(spec.strip().lower())
    if name is None:
        return None
    return _gpt2(name) if name in _GPT2 else _llama_layout(name)
