"""Calibration samples: text lines or one JSONL field, a seeded choice, and token ids.

    texts = list(iter_samples(None, Path("pile_val.jsonl"), field="text"))
    chosen = choose(texts, 512, seed=42)          # the samples SmoothQuant's script takes
    ids = tokenize_samples(tokenizer, chosen, seq_len=512, max_positions=2048)

The seeded choice is the one Hugging Face ``datasets`` makes for
``dataset.shuffle(seed=42)`` followed by taking the first N, as SmoothQuant's
``get_act_scales`` does: ``numpy.random.default_rng(seed).permutation(n)``.
So the same JSONL and seed give the same samples as the reference script.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UsageError
from .inputs import Line, peek, read_texts
from .notes import say_truncated

__all__ = [
    "DEFAULT_SEED",
    "VERB",
    "check_sample_options",
    "choose",
    "iter_samples",
    "pack_blocks",
    "read_samples",
    "tokenize_samples",
]

#: SmoothQuant's (and AWQ's) seed for the calibration shuffle.
DEFAULT_SEED = 42
VERB = "calibrate"
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def iter_samples(
    text: str | None,
    file: Path | None,
    *,
    field: str | None = None,
    stdin: BinaryIO | None = None,
) -> Iterator[str]:
    """Every sample, in input order: non-blank lines, or each JSONL line's ``field``;
    read lazily (a server's job gets them as they are read), its options checked now.

    Each sample knows its line (``Line.where``) for the messages that name it.
    A ``.jsonl`` file without ``field`` is refused rather than read as text.
    """
    if field is None and file is not None and file.suffix.lower() in _JSON_SUFFIXES:
        raise UsageError(f"{file} holds JSON lines: give --field NAME (such as --field text)")
    texts, _many = read_texts(text, file, stdin, verb=VERB)
    if field is None:
        return texts
    return (_field_of(line, field) for line in texts)


def read_samples(text: str | None, file: Path | None, *, field: str | None = None) -> Iterator[str]:
    """The samples of ``iter_samples``, read as the job asks for them (a server's job: as
    they are sent); refused at once when the input holds none."""
    texts = peek(iter_samples(text, file, field=field))
    if texts is None:
        raise UsageError("the input holds no samples: give at least one line of text")
    return texts


def check_sample_options(*, seq_len: int | None, pack: bool, samples: int | None) -> None:
    """``--seq-len``, ``--pack`` and ``--samples``, judged before any sample is read."""
    if seq_len is not None and seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, not {seq_len}")
    if pack and seq_len is None:
        raise UsageError("--pack needs --seq-len L: the length of every block")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")


def _field_of(line: str, field: str) -> str:
    where = getattr(line, "where", "the text")
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} is not valid JSON ({e.msg}, column {e.colno})") from e
    if not isinstance(record, dict):
        raise UsageError(f"{where} is not a JSON object, so it has no field {field!r}")
    if field not in record:
        raise UsageError(f"{where} has no field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise UsageError(f"{where}: field {field!r} is {type(value).__name__}, not text")
    return Line(value, where)


def choose(
    samples: Sequence[str], count: int | None, *, seed: int = DEFAULT_SEED, allow_fewer: bool
) -> list[str]:
    """The samples to calibrate on: all of them in input order when ``count`` is None,
    else the first ``count`` of a seeded shuffle (see the module docstring).

    Fewer samples than ``count`` is an error unless ``allow_fewer``, which takes
    them all (shuffled).
    """
    if count is None:
        return list(samples)
    if count < 1:
        raise UsageError(f"--samples must be at least 1, not {count}")
    if len(samples) < count and not allow_fewer:
        raise UsageError(
            f"the input holds {len(samples)} samples, fewer than --samples {count}: "
            f"add --allow-fewer to calibrate on {len(samples)}"
        )
    return [samples[i] for i in shuffled(len(samples), seed)[:count]]


def shuffled(n: int, seed: int) -> list[int]:
    """``datasets``' ``shuffle(seed)`` order of ``n`` rows."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def tokenize_samples(
    tokenizer: Any,
    samples: Sequence[str],
    *,
    seq_len: int | None,
    max_positions: int,
    truncate: bool = False,
) -> Iterator[list[int]]:
    """Each sample's token ids as the reference scripts make them (``</s>`` first), cut
    to ``seq_len``; read lazily.

    A sample with no token besides the special ones is an error that names its
    line; so is one longer than the model's positions without ``seq_len`` (or
    ``truncate``, which cuts it there).
    """
    special = set(tokenizer.all_special_ids)
    for text in samples:
        ids = [int(i) for i in tokenizer(text)["input_ids"]]
        where = getattr(text, "where", "the text")
        if not any(i not in special for i in ids):
            raise UsageError(f"{where}: the sample tokenizes to nothing")
        if seq_len is not None:
            ids = ids[:seq_len]
        elif len(ids) > max_positions:
            if not truncate:
                raise UsageError(
                    f"{where}: the sample has {len(ids)} tokens; the model takes at most "
                    f"{max_positions} (use --seq-len or --truncate)"
                )
            say_truncated(where, len(ids), max_positions)
            ids = ids[:max_positions]
        yield ids


def pack_blocks(
    samples: Iterator[list[int]], seq_len: int, count: int | None, *, allow_fewer: bool
) -> list[list[int]]:
    """GPTQ and AWQ's packing: the samples' ids end to end, cut into blocks of exactly
    ``seq_len`` tokens; the tail shorter than a block is dropped.

    Stops reading at ``count`` blocks; fewer is an error unless ``allow_fewer``.
    """
    blocks: list[list[int]] = []
    pending: list[int] = []
    for ids in samples:
        pending.extend(ids)
        while len(pending) >= seq_len and (count is None or len(blocks) < count):
            blocks.append(pending[:seq_len])
            del pending[:seq_len]
        if count is not None and len(blocks) == count:
            break
    if count is not None and len(blocks) < count and not allow_fewer:
        raise UsageError(
            f"the input packs into {len(blocks)} blocks of {seq_len} tokens, fewer than "
            f"--samples {count}: add --allow-fewer to calibrate on {len(blocks)}"
        )
    if not blocks:
        raise UsageError(
            f"the input holds fewer than {seq_len} tokens: --pack makes no block of --seq-len"
        )
    return blocks
