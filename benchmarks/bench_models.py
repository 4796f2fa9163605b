"""Random-weight OPT models and inputs for the benchmarks: nothing is downloaded."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

#: Shaped like facebook/opt-125m.
OPT_125M = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "num_attention_heads": 12,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 768,
}
#: Shaped like facebook/opt-1.3b (the CUDA section).
OPT_1_3B = {
    "hidden_size": 2048,
    "num_hidden_layers": 24,
    "ffn_dim": 8192,
    "num_attention_heads": 32,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 2048,
}
#: Small enough for ``--quick`` on two cores.
OPT_SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "ffn_dim": 256,
    "num_attention_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "word_embed_proj_dim": 64,
}
_SPECIAL = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 2}

_TEXT = (
    "the model reads every token and each layer adds a little more context to what came "
    "before so that by the last layer a word knows its neighbours quite well while the "
    "attention heads look back over the sentence and the feed forward blocks widen then "
    "narrow the hidden state again"
)
WORDS = tuple(_TEXT.split())


def opt_config(shape: dict[str, int]) -> Any:
    from transformers import OPTConfig

    return OPTConfig(**shape, **_SPECIAL)


def build_model(shape: dict[str, int], seed: int = 0) -> Any:
    """An OPTForCausalLM with random weights, float32, on the CPU, in eval mode."""
    import torch
    from transformers import OPTForCausalLM

    torch.manual_seed(seed)
    return OPTForCausalLM(opt_config(shape)).eval()


def tiny_tokenizer() -> Any:
    """The tokenizer shipped with optinspect's tiny model; its ids are < 512."""
    from transformers import AutoTokenizer

    from optinspect.model.spec import tiny_path

    return AutoTokenizer.from_pretrained(str(tiny_path()))


#: What ``from_pretrained`` needs of the tiny model's tokenizer.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def save_checkpoint(shape: dict[str, int], folder: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of ``shape`` in ``folder``, with the tiny model's tokenizer.

    The tokenizer's ids must exist in the model's vocabulary, so its size is checked.
    """
    from optinspect.model.spec import tiny_path

    tokenizer_size = len(tiny_tokenizer())
    if tokenizer_size > shape["vocab_size"]:
        raise ValueError(
            f"the tiny tokenizer has {tokenizer_size} ids, more than the vocabulary of "
            f"{shape['vocab_size']}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    build_model(shape, seed).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_path() / name, folder / name)
    return folder


def wrap_loaded(model: Any, tokenizer: Any, label: str) -> Any:
    """Present an in-memory model to optinspect's library as if ``load_model`` made it."""
    from optinspect.model.loading import LoadedModel, ModelSource

    weight = next(model.parameters())
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=ModelSource(spec=label, location=label, is_local=True),
        quant="none",
        device=str(weight.device),
        dtype=weight.dtype,
        random_weights=True,
    )


def token_ids(tokens: int, seed: int = 0) -> Any:
    """[1, tokens] ids: ``</s>`` then random ids that exist in every vocabulary used here."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 500, (1, tokens), generator=generator)
    ids[0, 0] = 2
    return ids


def sentences(tokenizer: Any, count: int, tokens: int, seed: int = 0) -> list[str]:
    """``count`` sentences of about ``tokens`` tokens each (``</s>`` included)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words: list[str] = []
        while len(tokenizer(" ".join(words))["input_ids"]) < tokens:
            words.append(rng.choice(WORDS))
        texts.append(" ".join(words).capitalize())
    return texts


def pad_batch(tokenizer: Any, texts: list[str]) -> tuple[Any, Any, bool]:
    """Right-padded ids and mask, as optinspect pads a batch; also whether any row is padded."""
    import torch

    encoded = [tokenizer(text)["input_ids"] for text in texts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 1
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, values in enumerate(encoded):
        ids[row, : len(values)] = torch.tensor(values)
        mask[row, : len(values)] = 1
    return ids, mask, any(len(values) != width for values in encoded)
