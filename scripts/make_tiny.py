#!/usr/bin/env python3
"""Regenerate the built-in ``tiny`` OPT checkpoint, byte for byte.

    python scripts/make_tiny.py                # writes src/optinspect/data/tiny
    python scripts/make_tiny.py --out /tmp/t   # somewhere else, e.g. to compare

The checkpoint is a real OPT model (pre-LayerNorm like opt-1.3b) with random
weights drawn from a seeded generator, a byte-level BPE tokenizer trained on
the small corpus below, and OPT's special tokens: <s>=0, <pad>=1, </s>=2
(put in front of every text), <unk>=3. Every file is written by this script
from fixed inputs, so two runs give identical bytes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer

SEED = 1234
VOCAB = 512
CONFIG = {
    "_name_or_path": "optinspect/tiny",
    "activation_dropout": 0.0,
    "activation_function": "relu",
    "architectures": ["OPTForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "do_layer_norm_before": True,
    "dropout": 0.0,
    "enable_bias": True,
    "eos_token_id": 2,
    "ffn_dim": 256,
    "hidden_size": 64,
    "init_std": 0.02,
    "layer_norm_elementwise_affine": True,
    "layerdrop": 0.0,
    "max_position_embeddings": 128,
    "model_type": "opt",
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "optinspect_random_weights": True,
    "pad_token_id": 1,
    "tie_word_embeddings": True,
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": VOCAB,
    "word_embed_proj_dim": 64,
}
TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_prefix_space": False,
    "bos_token": "</s>",
    "eos_token": "</s>",
    "errors": "replace",
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": "<pad>",
    "tokenizer_class": "GPT2Tokenizer",
    "unk_token": "</s>",
}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
CORPUS = """\
The quick brown fox jumps over the lazy dog. The lazy dog sleeps in the sun.
A language model reads the text one token at a time and predicts the next one.
Every layer of the decoder adds attention and a feed-forward block to the stream.
The capital of France is Paris. The capital of Italy is Rome. Hello world!
Students and researchers look inside models to see what the layers compute.
Quantization stores weights in eight or four bits to save memory on the GPU.
She said that the weather would be fine, and they walked to the river together.
Numbers like 1, 2, 3, 10, 42 and 2048 appear in text as well as words do.
"""


def train_tokenizer(
    out: Path,
    special_tokens: list[str] = SPECIAL_TOKENS,
    config: dict | None = None,
    special_map: dict | None = None,
) -> None:
    """A byte-level BPE on CORPUS with ``special_tokens`` first (ids 0, 1, ...), and its
    tokenizer config and special tokens map (OPT's by default)."""
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        CORPUS.splitlines() * 4,
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=special_tokens,
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_model(tmp)
        vocab = json.loads((Path(tmp) / "vocab.json").read_text(encoding="utf-8"))
        merges = (Path(tmp) / "merges.txt").read_text(encoding="utf-8")
    ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    (out / "vocab.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(merges, encoding="utf-8")
    _write_json(out / "tokenizer_config.json", config or TOKENIZER_CONFIG)
    _write_json(
        out / "special_tokens_map.json",
        special_map
        or {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "</s>"},
    )


def make_weights() -> dict[str, torch.Tensor]:
    """Random weights for every OPT parameter, drawn in a fixed order from one generator."""
    c = CONFIG
    d, f, v = c["hidden_size"], c["ffn_dim"], c["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "model.decoder.embed_tokens.weight": (v, d),
        "model.decoder.embed_positions.weight": (c["max_position_embeddings"] + 2, d),
        "model.decoder.final_layer_norm.weight": (d,),
        "model.decoder.final_layer_norm.bias": (d,),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.decoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (d, d)
            shapes[f"{p}self_attn.{proj}.bias"] = (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"{p}{norm}.weight"] = (d,)
            shapes[f"{p}{norm}.bias"] = (d,)
        shapes[f"{p}fc1.weight"] = (f, d)
        shapes[f"{p}fc1.bias"] = (f,)
        shapes[f"{p}fc2.weight"] = (d, f)
        shapes[f"{p}fc2.bias"] = (d,)
    return draw_weights(shapes, c["init_std"])


def draw_weights(shapes: dict[str, tuple[int, ...]], init_std: float) -> dict[str, torch.Tensor]:
    """float16 weights drawn in name order from one seeded generator: norm weights near
    1, biases and everything else small."""
    generator = torch.Generator().manual_seed(SEED)
    weights = {}
    for name in sorted(shapes):
        noise = torch.randn(shapes[name], generator=generator, dtype=torch.float32)
        if "norm" in name and name.endswith(".weight"):
            value = 1.0 + 0.1 * noise
        elif name.endswith(".bias"):
            value = 0.02 * noise
        else:
            value = init_std * noise
        weights[name] = value.to(torch.float16).contiguous()
    return weights


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    default = Path(__file__).resolve().parents[1] / "src" / "optinspect" / "data" / "tiny"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default, help="folder to write")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", CONFIG)
    save_file(make_weights(), str(out / "model.safetensors"), metadata={"format": "pt"})
    train_tokenizer(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
