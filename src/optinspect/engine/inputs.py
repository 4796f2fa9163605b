"""Where sentences come from: one argument, a file, or stdin, one sentence per line."""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError, os_reason
from .preflight import check_text, not_utf8, probe_path

__all__ = ["Line", "Sentences", "count_lines", "given_texts", "iter_lines", "peek", "read_texts"]

_BOM = "\ufeff"


class Line(str):
    """A sentence read from a file or stdin, which knows where it came from."""

    where: str

    def __new__(cls, text: str, where: str) -> Line:
        line = super().__new__(cls, text)
        line.where = where
        return line


class Sentences(Iterator[str]):
    """Sentences read lazily, with ``total``, how many there are, where that is known
    before they are read (a file's); None where it is not (stdin)."""

    def __init__(self, texts: Iterator[str], total: int | None = None) -> None:
        self._texts = texts
        self.total = total

    def __next__(self) -> str:
        return next(self._texts)


def iter_lines(stream: Iterable[bytes], source: str) -> Iterator[str]:
    """Decode UTF-8 lines lazily, skipping blank ones; bad bytes name their line.

    A byte-order mark at the start is dropped, as text editors write one.
    """
    for number, raw in enumerate(stream, start=1):
        try:
            line = _sentence(raw, number)
        except UnicodeDecodeError as e:
            raise not_utf8(f"line {number} of {source}", e.start + 1) from e
        if line is not None:
            yield Line(line, f"line {number} of {source}")


def count_lines(path: Path) -> int:
    """How many sentences ``iter_lines`` reads from the file at ``path``; a line that is
    not UTF-8 counts as one (reading it stops the run there anyway)."""
    with path.open("rb") as handle:
        return sum(
            _sentence(raw, number, errors="replace") is not None
            for number, raw in enumerate(handle, start=1)
        )


def _sentence(raw: bytes, number: int, *, errors: str = "strict") -> str | None:
    """Line ``number`` as a sentence, or None when it is blank."""
    line = raw.decode("utf-8", errors)
    if number == 1:
        line = line.removeprefix(_BOM)
    line = line.rstrip("\r\n")
    return line if line.strip() else None


def read_texts(
    text: str | None, file: Path | None, stdin: BinaryIO | None = None, *, verb: str = "trace"
) -> tuple[Iterator[str], bool]:
    """The sentences to trace, and whether they came from a file or stdin (many-sentence mode).

    ``text`` ``-`` means stdin. Lines are read lazily so a long input streams; a file's
    are counted first (``Sentences.total``), for the progress counter.
    """
    if text is not None and file is not None:
        raise UsageError("give TEXT or --file, not both")
    if file is not None and str(file) != "-":
        is_dir, is_file, _ = probe_path(file, f"cannot read input file {file}")
        if is_dir:
            raise UsageError(f"input file {file} is a folder")
        if not is_file:
            raise UsageError(f"input file {file} does not exist")
        try:
            count = count_lines(file)
        except OSError as e:  # a file this user cannot open
            raise UsageError(f"cannot read input file {file}: {os_reason(e)}") from e
        return Sentences(_file_lines(file), count), True
    if text == "-" or file is not None:  # --file - reads stdin, as most tools do
        stream = stdin if stdin is not None else _stdin_bytes()
        return Sentences(iter_lines(stream, "stdin")), True
    if text is None:
        raise UsageError(f"give the text to {verb}, - for stdin, or --file PATH")
    return iter([check_text(text, verb)]), False


def given_texts(
    texts: str | Sequence[str] | None, file: str | Path | None, verb: str
) -> Iterator[str] | None:
    """The sentences a Python caller gives: one string, a list, or ``file`` (one per line,
    as ``--file`` reads it); None when there are none. Each is checked as TEXT is."""
    if file is not None:
        if texts is not None:
            raise UsageError("give the text or file=, not both")
        read, _ = read_texts(None, Path(file), verb=verb)
        return peek(read)
    if texts is None:
        raise UsageError(f"give the text to {verb}, a list of sentences, or file=")
    listed = [texts] if isinstance(texts, str) else list(texts)
    return iter([check_text(text, verb) for text in listed]) if listed else None


def _file_lines(path: Path) -> Iterator[str]:
    try:
        handle = path.open("rb")
    except OSError as e:  # read when the first sentence is wanted, before any model loads
        raise UsageError(f"cannot read input file {path}: {os_reason(e)}") from e
    with handle:
        yield from iter_lines(handle, str(path))


def _stdin_bytes() -> BinaryIO:
    """The process's stdin, as bytes. The real stdin is read through a reader of its own:
    a thread that sends it to the server may still wait in a read when the program
    ends, and Python aborts at exit when that thread holds ``sys.stdin``'s own lock."""
    if sys.stdin is not None and sys.stdin is sys.__stdin__:
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            return open(sys.stdin.fileno(), "rb", closefd=False)
    return sys.stdin.buffer


def peek(texts: Iterator[str]) -> Iterator[str] | None:
    """``texts`` unchanged (its ``total`` kept), or None when it holds nothing: read
    before any model loads."""
    first = next(texts, None)
    if first is None:
        return None
    return Sentences(itertools.chain([first], texts), getattr(texts, "total", None))
