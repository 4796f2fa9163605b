"""One real forward pass per batch of sentences, recorded module by module."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterable, Iterator, Sequence

import torch

from .engine.capture import BatchLayout, TensorSink, capture
from .engine.records import Token, TraceResult
from .engine.selection import parse_layers, select_modules
from .errors import UsageError
from .model.loading import LoadedModel
from .model.placement import input_device
from .sparsity import FfnSparsity

__all__ = ["batched", "encode", "iter_trace", "pad_batch", "resolve_modules"]

LayerSpec = str | Sequence[int] | None


def resolve_modules(
    model: torch.nn.Module,
    num_layers: int,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
) -> list[str]:
    """The dotted names to hook: a layer spec (or the overview), narrowed by globs.

    Filters alone search every named module; with ``layers`` they narrow it.
    """
    names = [n for n, _ in model.named_modules()]
    if isinstance(layers, str):
        chosen: list[int] | None = parse_layers(layers, num_layers)
    elif layers is not None:
        chosen = parse_layers(",".join(str(i) for i in layers), num_layers)
    else:
        chosen = None
    if filters and chosen is None:
        selected = [n for n in names if n]
    else:
        selected = select_modules(names, chosen)
    if filters:
        selected = [n for n in selected if any(fnmatch.fnmatchcase(n, g) for g in filters)]
        if not selected:
            raise UsageError(f"no module matches --filter {' '.join(filters)}")
    return selected


def encode(loaded: LoadedModel, text: str, truncate: bool = False) -> list[Token]:
    """Token ids and texts for one sentence, checked against the model's positions.

    With ``truncate`` a text that is too long keeps its first tokens instead of failing.
    """
    if not text.strip():
        raise UsageError("the text is empty: give at least one word to trace")
    ids = loaded.tokenizer(text)["input_ids"]
    if truncate:
        ids = ids[: loaded.max_positions]
    if len(ids) > loaded.max_positions:
        raise UsageError(
            f"the text has {len(ids)} tokens; {loaded.name} accepts at most "
            f"{loaded.max_positions} (or use --truncate)"
        )
    return [Token(id=int(i), text=loaded.tokenizer.decode([i])) for i in ids]


def iter_trace(
    loaded: LoadedModel,
    texts: Iterable[str],
    *,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    stats: bool = True,
    batch_size: int = 8,
    sink: TensorSink | None = None,
    truncate: bool = False,
    sparsity: FfnSparsity | None = None,
) -> Iterator[TraceResult]:
    """Trace sentences in padded batches, yielding one result per sentence as batches finish.

    ``sink`` receives (sentence index, module name, call, tensor as if run alone).
    ``sparsity``, when given, also counts ReLU zeros and dead units over every
    token; read it with ``sparsity.summary()`` after the iteration.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    model = loaded.model
    names = resolve_modules(model, loaded.num_layers, layers, filters)
    offset = 0
    with (
        capture(model, names, stats=stats, sink=sink) as cap,
        sparsity if sparsity is not None else contextlib.nullcontext(),
    ):
        for batch in batched(texts, batch_size):
            encoded = [encode(loaded, text, truncate) for text in batch]
            input_ids, mask = pad_batch(encoded, loaded.tokenizer.pad_token_id or 1)
            layout = BatchLayout.from_mask(mask)
            cap.begin(layout if layout.batch > 1 else None, offset)
            if sparsity is not None:
                sparsity.begin(layout if layout.batch > 1 else None, sum(layout.lengths))
            device = input_device(model)
            with torch.inference_mode():
                model(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device) if layout.valid is not None else None,
                    use_cache=False,
                )
            sentences = zip(batch, encoded, cap.collect(), strict=True)
            for position, (text, tokens, records) in enumerate(sentences):
                yield TraceResult(
                    **loaded.describe(),
                    text=text,
                    tokens=tuple(tokens),
                    modules=tuple(records),
                    index=offset + position,
                )
            offset += len(batch)


def batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to ``size`` texts, read lazily."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pad_batch(encoded: list[list[Token]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token ids; the mask marks real tokens."""
    width = max(len(tokens) for tokens in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor([t.id for t in tokens])
        mask[row, : len(tokens)] = 1
    return ids, mask
