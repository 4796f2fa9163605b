"""Sentences as one forward pass takes them: token ids right-padded into [batch, tokens],
the mask of real tokens, and where each sentence sits. The runner makes them; every
hook group hears of each one (``HookGroup.begin``) before its forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..results.records import Token

__all__ = ["Batch", "BatchLayout"]


@dataclass(frozen=True)
class BatchLayout:
    """How the sentences of one forward pass sit in its [batch, tokens] input."""

    lengths: tuple[int, ...]
    tokens: int
    valid: torch.Tensor | None = None  # [batch, tokens] bool; None when nothing is padded

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> BatchLayout:
        """Layout of a right-padded batch from its mask (read on the host before the run)."""
        lengths = tuple(int(n) for n in attention_mask.sum(dim=1).tolist())
        tokens = int(attention_mask.shape[1])
        padded = any(n != tokens for n in lengths)
        return cls(lengths, tokens, attention_mask.bool() if padded else None)

    @property
    def batch(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class Batch:
    """Sentences that run in one forward pass, right-padded with the pad id.

    ``first`` is the index of the batch's first sentence in the whole input;
    ``input_ids`` and ``attention_mask`` are [batch, tokens] on the CPU.
    """

    texts: tuple[str, ...]
    tokens: tuple[tuple[Token, ...], ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    layout: BatchLayout
    first: int = 0

    @classmethod
    def of(
        cls, texts: Sequence[str], tokens: Sequence[Sequence[Token]], pad_id: int, first: int = 0
    ) -> Batch:
        """Right-pad the token ids of ``texts``; the mask marks real tokens."""
        width = max(len(t) for t in tokens)
        ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(tokens), width), dtype=torch.long)
        for row, sentence in enumerate(tokens):
            ids[row, : len(sentence)] = torch.tensor([t.id for t in sentence], dtype=torch.long)
            mask[row, : len(sentence)] = 1
        return cls(
            texts=tuple(texts),
            tokens=tuple(tuple(t) for t in tokens),
            input_ids=ids,
            attention_mask=mask,
            layout=BatchLayout.from_mask(mask),
            first=first,
        )

    @property
    def size(self) -> int:
        return len(self.texts)

    @property
    def padded(self) -> bool:
        return self.layout.valid is not None

    @property
    def real_tokens(self) -> int:
        return sum(self.layout.lengths)
