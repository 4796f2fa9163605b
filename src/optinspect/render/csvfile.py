"""CSV rows as every writer of optinspect writes them: lines end in ``\\n``, and a field that
holds a line break of any kind (``\\r`` alone too) is quoted, so ``csv.reader`` reads back
exactly the rows written.

    rows = csv_rows(sys.stdout)
    rows.writerow(["sentence", "text"])
    write_csv(sys.stdout, page.flat)       # a page's flat sheet: its header, then its rows
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import IO, Any

from .page import Sheet

__all__ = ["CsvRows", "csv_rows", "write_csv"]


class CsvRows:
    """``csv.writer``'s ``writerow`` onto ``stream``, quoting CR as well as LF."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._line = io.StringIO()
        # The csv module quotes a field holding the delimiter, the quote character or a
        # character of the line terminator, so a "\n" terminator would leave a bare "\r"
        # unquoted (and a reader would split the row there). With "\r\n" both are quoted;
        # the one terminator outside any field is then written as "\n".
        self._writer = csv.writer(self._line, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._line.seek(0)
        self._line.truncate()
        self._writer.writerow(row)
        self._stream.write(self._line.getvalue()[:-2] + "\n")


def csv_rows(stream: IO[str]) -> CsvRows:
    """A row writer onto ``stream``."""
    return CsvRows(stream)


def write_csv(stream: IO[str], sheet: Sheet, *, header: bool = True) -> None:
    """The CSV form of a page: ``sheet``'s column headers (unless ``header`` is False, for
    the sheets after the first of a stream), then one line per row, each cell's text."""
    rows = csv_rows(stream)
    if header:
        rows.writerow(column.header for column in sheet.columns)
    for row in sheet.rows:
        rows.writerow(item.text for item in row)
