#!/usr/bin/env python3
"""Regenerate the built-in ``tiny-llama`` checkpoint (Llama layout, grouped-query
attention), byte for byte.

    python scripts/make_tiny_llama.py                # writes src/optinspect/data/tiny_llama
    python scripts/make_tiny_llama.py --out /tmp/t   # somewhere else, e.g. to compare

A real ``LlamaForCausalLM``: RMSNorm, a gated FFN, rotary positions, 4 query heads
sharing 2 key/value heads, an untied head, random weights drawn from the tiny OPT's
seeded generator in name order (the shapes are optinspect's own parameter formula,
which a test compares with the built model). Its tokenizer is a byte-level BPE trained
on the tiny OPT's corpus with Llama's special tokens: <unk>=0, <s>=1 (put in front of
every text), </s>=2, <pad>=3. Every file comes from fixed inputs, so two runs give
identical bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from make_tiny import VOCAB, _write_json, draw_weights, train_tokenizer
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "_name_or_path": "optinspect/tiny-llama",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "max_position_embeddings": 128,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "optinspect_random_weights": True,
    "pad_token_id": 3,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": VOCAB,
}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
SPECIAL_MAP = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_prefix_space": False,
    "errors": "replace",
    "model_max_length": 1000000000000000019884624838656,
    "tokenizer_class": "GPT2Tokenizer",
    **SPECIAL_MAP,
}


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, from optinspect's Llama formula (no model is built)."""
    sys.path.insert(0, str(ROOT / "src"))
    from optinspect.model.family import list_config_params

    entries, _ = list_config_params(CONFIG)
    return {entry.name: entry.shape for entry in entries}


def main() -> None:
    default = ROOT / "src" / "optinspect" / "data" / "tiny_llama"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default, help="folder to write")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", CONFIG)
    weights = draw_weights(weight_shapes(), CONFIG["initializer_range"])
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    train_tokenizer(out, SPECIAL_TOKENS, TOKENIZER_CONFIG, SPECIAL_MAP)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
