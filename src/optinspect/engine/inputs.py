"""Where sentences come from: one argument, a file, or stdin, one sentence per line."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError, os_reason
from .preflight import check_text, not_utf8

__all__ = ["Line", "iter_lines", "peek", "read_texts"]

_BOM = "\ufeff"


class Line(str):
    """A sentence read from a file or stdin, which knows where it came from."""

    where: str

    def __new__(cls, text: str, where: str) -> Line:
        line = super().__new__(cls, text)
        line.where = where
        return line


def iter_lines(stream: Iterable[bytes], source: str) -> Iterator[str]:
    """Decode UTF-8 lines lazily, skipping blank ones; bad bytes name their line.

    A byte-order mark at the start is dropped, as text editors write one.
    """
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise not_utf8(f"line {number} of {source}", e.start + 1) from e
        if number == 1:
            line = line.removeprefix(_BOM)
        line = line.rstrip("\r\n")
        if line.strip():
            yield Line(line, f"line {number} of {source}")


def read_texts(
    text: str | None, file: Path | None, stdin: BinaryIO | None = None, *, verb: str = "trace"
) -> tuple[Iterator[str], bool]:
    """The sentences to trace, and whether they came from a file or stdin (many-sentence mode).

    ``text`` ``-`` means stdin. Lines are read lazily so a long input streams.
    """
    if text is not None and file is not None:
        raise UsageError("give TEXT or --file, not both")
    if file is not None and str(file) != "-":
        try:
            is_dir, is_file = file.is_dir(), file.is_file()
        except OSError as e:  # a folder on the way that this user cannot enter
            raise UsageError(f"cannot read input file {file}: {os_reason(e)}") from e
        if is_dir:
            raise UsageError(f"input file {file} is a folder")
        if not is_file:
            raise UsageError(f"input file {file} does not exist")
        return _file_lines(file), True
    if text == "-" or file is not None:  # --file - reads stdin, as most tools do
        stream = stdin if stdin is not None else sys.stdin.buffer
        return iter_lines(stream, "stdin"), True
    if text is None:
        raise UsageError(f"give the text to {verb}, - for stdin, or --file PATH")
    return iter([check_text(text, verb)]), False


def _file_lines(path: Path) -> Iterator[str]:
    try:
        handle = path.open("rb")
    except OSError as e:  # read when the first sentence is wanted, before any model loads
        raise UsageError(f"cannot read input file {path}: {os_reason(e)}") from e
    with handle:
        yield from iter_lines(handle, str(path))


def peek(texts: Iterator[str]) -> Iterator[str] | None:
    """``texts`` unchanged, or None when it holds nothing: read before any model loads."""
    first = next(texts, None)
    return None if first is None else itertools.chain([first], texts)
