"""Shared pieces of the file readers: path types, UTF-8 decoding with located errors, and
reading a whole text file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from torch import Tensor

from rnnkit.data.errors import ReaderError

__all__ = [
    "Example",
    "PathArg",
    "Sentence",
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


def _decode(data: bytes, path: PathArg) -> str:
    """UTF-8 text of ``data`` (a leading byte-order mark is dropped); bad bytes are located."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ReaderError(
            f"expected UTF-8 text, found the byte 0x{data[e.start]:02x}",
            path=path,
            line=line,
            column=column,
        ) from None


def read_lines(path: PathArg) -> list[str]:
    """The lines of a UTF-8 text file, without their ``\\n`` or ``\\r\\n`` endings."""
    lines = _decode(Path(path).read_bytes(), path).split("\n")
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
    return _decode(Path(path).read_bytes(), path)


def split_columns(text: str, sep: str, start: int) -> list[tuple[str, int]]:
    """Pieces of ``text`` split on ``sep``, each with its 0-based offset in the line."""
    pieces = []
    for piece in text.split(sep):
        pieces.append((piece, start))
        start += len(piece) + len(sep)
    return pieces
