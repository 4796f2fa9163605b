"""The one forward pass under every analysis: texts -> padded batches -> the model.

    runner = Runner(loaded, batch_size=8, truncate=True)
    with capture(loaded.model, names) as cap:
        for batch, _output in runner.run(texts, [cap]):
            records = cap.collect()

An analysis is hook groups plus a reducer around ``Runner.run``, in the way
baukit's ``TraceDict`` is used: the runner tokenizes, right-pads, places the
token ids where the input embedding runs (offloaded embeddings included),
tells every hook group which batch comes (``HookGroup.begin``), runs one
forward under ``inference_mode`` and reports progress, one way for every
command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ModelError, UsageError
from ..model.placement import input_device
from ..results.records import Token, past_vocabulary_text
from .batch import Batch
from .notes import say_truncated
from .preflight import check_batch_size, check_text

if TYPE_CHECKING:
    from ..model.loading import LoadedModel
    from .hooks import HookGroup

__all__ = [
    "Progress",
    "Runner",
    "batched",
    "describe_token",
    "encode",
    "forward",
]

#: Called with the number of sentences each finished batch held.
Progress = Callable[[int], None]


def encode(loaded: LoadedModel, text: str, *, truncate: bool = False) -> list[Token]:
    """Token ids and texts for one sentence, checked against the model's positions.

    With ``truncate`` a text that is too long keeps its first tokens instead of failing,
    and a note says so (``engine.notes``).
    """
    ids = loaded.tokenizer(text)["input_ids"]
    if not ids:  # a folder without tokenizer files can load a tokenizer that knows no text
        raise ModelError(f"the tokenizer of {loaded.name} gives no tokens for {text!r}")
    if truncate and len(ids) > loaded.max_positions:
        say_truncated(getattr(text, "where", "the text"), len(ids), loaded.max_positions)
        ids = ids[: loaded.max_positions]
    if len(ids) > loaded.max_positions:
        raise UsageError(
            f"the text has {len(ids)} tokens; {loaded.name} accepts at most "
            f"{loaded.max_positions} (or use --truncate)"
        )
    return [describe_token(loaded.tokenizer, int(i)) for i in ids]


def describe_token(tokenizer: Any, token_id: int) -> Token:
    """The token ``token_id`` decodes to, with its bytes when they are no whole characters.

    OPT's byte-level BPE splits a character such as "—" over several tokens;
    each decodes alone to U+FFFD, so the bytes (from the byte-to-unicode map
    the tokenizer is built on) are what tells them apart. An id the tokenizer does
    not know (past its vocabulary) is shown as ``<id N>``.
    """
    text = tokenizer.decode([token_id])
    if not text and tokenizer.convert_ids_to_tokens(token_id) is None:
        # Past the vocabulary (OPT's embedding matrix is larger): an id, not "".
        return Token(token_id, past_vocabulary_text(token_id))
    if "\ufffd" not in text:
        return Token(token_id, text)
    raw = _token_bytes(tokenizer, token_id)
    if raw is None:
        return Token(token_id, text)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return Token(token_id, text, raw.hex(" "))
    return Token(token_id, text)


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of the byte-to-unicode map byte-level BPE is built on; made once."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _token_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    piece = tokenizer.convert_ids_to_tokens(token_id)
    decoder = _byte_decoder()
    if not isinstance(piece, str) or any(char not in decoder for char in piece):
        return None
    return bytes(decoder[char] for char in piece)


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


def forward(model: nn.Module, batch: Batch, groups: Sequence[HookGroup] = (), **kwargs: Any) -> Any:
    """Tell ``groups`` which batch comes, then run it once under ``inference_mode``.

    The ids go to the device the token embedding runs on (see
    ``placement.input_device``); the mask only when the batch is padded, so an
    unpadded run computes exactly what a plain call would. ``kwargs`` go to
    the model (``output_attentions=True``; ``use_cache`` is False unless given).
    """
    for group in groups:
        group.begin(batch)
    device = input_device(model)
    mask = batch.attention_mask.to(device) if batch.padded else None
    with torch.inference_mode():
        return model(
            input_ids=batch.input_ids.to(device),
            attention_mask=mask,
            **{"use_cache": False, **kwargs},
        )


class Runner:
    """Texts -> batches -> forward passes through one loaded model.

    ``verb`` names the command in input errors ("the text is empty: give at
    least one word to {verb}"); ``advance`` hears of every finished batch.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        batch_size: int = 8,
        truncate: bool = False,
        verb: str = "trace",
        advance: Progress | None = None,
    ) -> None:
        self.loaded = loaded
        self.batch_size = check_batch_size(batch_size)
        self.truncate = truncate
        self.verb = verb
        self._advance = advance
        self.sentences = 0

    @property
    def pad_id(self) -> int:
        pad = self.loaded.tokenizer.pad_token_id
        return int(pad) if pad is not None else 1

    def batches(self, texts: Iterable[str]) -> Iterator[Batch]:
        """Tokenized, right-padded batches of ``batch_size`` texts, read lazily."""

        for chunk in batched(texts, self.batch_size):
            tokens = [self._encode(text) for text in chunk]
            yield Batch.of(chunk, tokens, self.pad_id, first=self.sentences)
            self.sentences += len(chunk)

    def _encode(self, text: str) -> list[Token]:
        try:
            return encode(self.loaded, check_text(text, self.verb), truncate=self.truncate)
        except UsageError as e:
            where = getattr(text, "where", None)  # a Line from a file or stdin
            if where is None:
                raise
            raise UsageError(f"{where}: {e}") from e

    def token_batches(self, samples: Iterable[Sequence[int]]) -> Iterator[Batch]:
        """Right-padded batches of ``batch_size`` samples already tokenized, read lazily.

        For analyses that read only the ids (calibration): the tokens' texts are
        not decoded (empty), which spares a decode per token. Each sample must
        fit the model's positions; the caller has cut or refused longer ones.
        """
        for chunk in batched(samples, self.batch_size):
            tokens = [[Token(int(i), "") for i in ids] for ids in chunk]
            for sample in tokens:
                if not 0 < len(sample) <= self.loaded.max_positions:
                    raise UsageError(
                        f"a sample has {len(sample)} tokens; {self.loaded.name} takes "
                        f"1 to {self.loaded.max_positions}"
                    )
            yield Batch.of([""] * len(chunk), tokens, self.pad_id, first=self.sentences)
            self.sentences += len(chunk)

    def run(
        self, texts: Iterable[str], groups: Sequence[HookGroup] = (), **kwargs: Any
    ) -> Iterator[tuple[Batch, Any]]:
        """One forward per batch; yields each batch with the model's output."""
        yield from self.run_batches(self.batches(texts), groups, **kwargs)

    def run_batches(
        self, batches: Iterable[Batch], groups: Sequence[HookGroup] = (), **kwargs: Any
    ) -> Iterator[tuple[Batch, Any]]:
        """One forward per batch of ``batches`` (from ``batches`` or ``token_batches``,
        perhaps a share of them); yields each batch with the model's output."""
        for batch in batches:
            output = forward(self.loaded.model, batch, groups, **kwargs)
            if self._advance is not None:
                self._advance(batch.size)
            yield batch, output
