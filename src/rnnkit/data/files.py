"""Shared pieces of the file readers: path types, UTF-8 decoding with located errors,
reading a whole text file, and CSV rows with the columns of their fields."""

from __future__ import annotations

import bisect
import csv
import io
import os
from collections.abc import Iterable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Union

from torch import Tensor

from rnnkit.data.errors import ReaderError

__all__ = [
    "Example",
    "PathArg",
    "Sentence",
    "csv_records",
    "csv_row",
    "decode_text",
    "end_of",
    "path_list",
    "read_lines",
    "read_text",
    "split_columns",
]

PathArg = Union[str, "os.PathLike[str]"]
Example = dict[str, Tensor]
Sentence = dict[str, list[str]]


# ---------------------------------------------------------------------------------------------
# Text files


def decode_text(data: bytes, path: PathArg, encoding: str = "utf-8") -> str:
    """The text of ``data`` in ``encoding`` (UTF-8: a leading byte-order mark is dropped); a
    byte that is not valid in it is located."""
    utf8 = encoding == "utf-8"
    try:
        return data.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ReaderError(
            f"expected {'UTF-8' if utf8 else encoding} text, found the byte 0x{data[e.start]:02x}",
            path=path,
            line=line,
            column=column,
        ) from None


def read_lines(path: PathArg) -> list[str]:
    """The lines of a UTF-8 text file, without their ``\\n`` or ``\\r\\n`` endings."""
    lines = decode_text(Path(path).read_bytes(), path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def path_list(paths: PathArg | Iterable[PathArg]) -> list[PathArg]:
    """``paths`` as a list: one path alone, or each of an iterable of them."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


def read_text(path: PathArg) -> str:
    """The exact text of a UTF-8 file (line endings kept as they are), for `TextVocabulary`.

    Raises:
        ReaderError: at the line and column of the first byte that is not UTF-8.
    """
    return decode_text(Path(path).read_bytes(), path)


def split_columns(text: str, sep: str, start: int) -> list[tuple[str, int]]:
    """Pieces of ``text`` split on ``sep``, each with its 0-based offset in the line."""
    pieces = []
    for piece in text.split(sep):
        pieces.append((piece, start))
        start += len(piece) + len(sep)
    return pieces


def end_of(lines: list[str]) -> tuple[int, int]:
    """``(line, column)``, 1-based, just after the last character of ``lines`` (a file's lines
    as :func:`read_lines` gives them): where "found the end of the file" is reported."""
    if not lines:
        return 1, 1
    return len(lines), len(lines[-1]) + 1


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_scan(line: str, delimiter: str) -> tuple[list[int], int | None]:
    """0-based start of each field of one CSV line (``"`` quotes a field, ``""`` inside is a
    quote), and the offset of the first problem ``csv.reader(strict=True)`` reports, or None."""
    starts: list[int] = []
    limit = csv.field_size_limit()
    i, n = 0, len(line)
    while True:
        starts.append(i)
        if line.startswith('"', i):
            j = i + 1
            while True:
                k = line.find('"', j)
                if k < 0:
                    return starts, n  # the quoted field is not closed
                if not line.startswith('"', k + 1):
                    break
                j = k + 2
            end = k + 1
            if end < n and line[end] != delimiter:
                return starts, end  # something after the closing quote
        else:
            k = line.find(delimiter, i)
            end = n if k < 0 else k
            cr = line.find("\r", i, end)
            if cr >= 0:
                return starts, cr
        if end - i > limit:
            return starts, i
        if end >= n:
            return starts, None
        i = end + 1


def csv_row(line: str, delimiter: str, path: PathArg, line_no: int) -> tuple[list[str], list[int]]:
    """The fields of one CSV line (the ``csv`` module's dialect, strict) and the 1-based column
    where each starts.

    Raises:
        ReaderError: at ``path:line_no:column`` of the first character the ``csv`` module
            refuses (an unclosed quote, text after a closing quote, a carriage return in an
            unquoted field, a field longer than ``csv.field_size_limit()``).
    """
    starts, bad = _csv_scan(line, delimiter)
    try:
        fields = next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error as e:
        raise ReaderError(
            f"expected a CSV row, found {e}",
            path=path,
            line=line_no,
            column=(bad or 0) + 1,
        ) from None
    return fields, [start + 1 for start in starts]


def csv_records(
    text: str, path: PathArg, delimiter: str = ","
) -> Iterator[tuple[int, list[str], list[tuple[int, int]]]]:
    """``(line, fields, places)`` of each record of CSV ``text`` (blank lines skipped): the
    1-based line where the record starts, its fields (a quoted field may span lines), and the
    ``(line, column)`` where each field starts.

    Raises:
        ReaderError: at ``path:line:column`` of the first character the ``csv`` module refuses.
    """
    seen: list[str] = []  # the physical lines of the record being read

    def source() -> Iterator[str]:
        for physical in io.StringIO(text, newline=""):
            seen.append(physical)
            yield physical

    reader = csv.reader(source(), delimiter=delimiter, strict=True)
    first = 1
    while True:
        seen.clear()
        try:
            fields = next(reader, None)
        except csv.Error as e:
            record = "".join(seen)
            _, bad = _csv_scan(_without_newline(record), delimiter)
            line, column = _place(seen, first, len(record) if bad is None else bad)
            raise ReaderError(
                f"expected a CSV row, found {e}", path=path, line=line, column=column
            ) from None
        if fields is None:
            return
        if fields:
            starts, _ = _csv_scan(_without_newline("".join(seen)), delimiter)
            yield first, fields, [_place(seen, first, start) for start in starts]
        first += len(seen)


def _without_newline(record: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if record.endswith(ending):
            return record[: -len(ending)]
    return record


def _place(physical: list[str], first: int, offset: int) -> tuple[int, int]:
    """``(line, column)`` of ``offset`` in the record made of the ``physical`` lines, the first
    of them line ``first``."""
    ends = list(accumulate(len(p) for p in physical))
    k = min(bisect.bisect_right(ends, offset), max(len(physical) - 1, 0))
    start = ends[k - 1] if k else 0
    return first + k, offset - start + 1
