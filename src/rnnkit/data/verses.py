"""Verse files (``Ge1:1 In the beginning ...``, one verse a line) for character language models:
the reader, the split by book, contiguous scoring streams and the ``xz`` baseline.

The letters of a verse's reference name its book. A part's text is its verses without the
references, each followed by ``"\\n"``; splitting **by book** holds out whole books, so no
held-out verse has a neighbour in training.

>>> import torch
>>> [(s["input"].tolist(), s["target"].tolist()) for s in text_streams(torch.arange(5), 9, 2)]
[([9, 0], [0, 1]), ([1, 2, 3], [2, 3, 4])]
"""

from __future__ import annotations

import itertools
import lzma
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_lines

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "TEST_BOOKS",
    "VALIDATION_BOOKS",
    "Verse",
    "default_text",
    "is_verse_text",
    "read_verse_lines",
    "read_verses",
    "split_by_book",
    "stream_bounds",
    "text_streams",
    "xz_bits_per_character",
]

VALIDATION_BOOKS = ("Ruth", "Joel", "Gal", "1Pet")
TEST_BOOKS = ("Eccl", "Mark", "Rom")
_REFERENCE = re.compile(r"([0-9]?[A-Za-z]+)([0-9]+):([0-9]+) ")


def default_text() -> Path:
    """``../shared/data/text/kjv-verses.txt`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "text" / "kjv-verses.txt"
        if candidate.is_file():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "text" / "kjv-verses.txt"


def is_verse_text(text: str) -> bool:
    """Whether every non-blank line of ``text`` starts with a verse reference (and one does).

    >>> is_verse_text("Ge1:1 In the\\n\\nGe1:2 And\\n"), is_verse_text("Ge1:1 In\\nthe end\\n")
    (True, False)
    """
    lines = [line for line in text.split("\n") if line.strip()]
    return bool(lines) and all(_REFERENCE.match(line) for line in lines)


@dataclass(frozen=True)
class Verse:
    """One verse line: its book (``Ge``), reference (``Ge1:1``), text, line number (1-based)
    and the column where the text starts (1-based)."""

    book: str
    reference: str
    text: str
    line: int
    column: int


def read_verse_lines(path: str | Path) -> list[Verse]:
    """Every verse of a file of ``BookC:V text`` lines; blank lines are skipped.

    Raises:
        ReaderError: a byte that is not UTF-8, a non-empty line without a reference, or a file
            without verses.
    """
    path = Path(path)
    verses = []
    for line_no, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        match = _REFERENCE.match(line)
        if match is None:
            raise ReaderError(
                f"expected a verse reference such as 'Ge1:1 ' before the text, found {line[:20]!r}",
                path=path,
                line=line_no,
                column=1,
            )
        reference = match.group(0).rstrip()
        verses.append(
            Verse(match.group(1), reference, line[match.end() :], line_no, match.end() + 1)
        )
    if not verses:
        raise ReaderError("expected verse lines, found an empty file", path=path, line=1, column=1)
    return verses


def read_verses(path: str | Path) -> list[tuple[str, str]]:
    """``(book, verse text)`` per line of a file of ``BookC:V text`` lines (e.g. ``Ge1:1 In``).

    Raises:
        ReaderError: a non-empty line without a reference, with its line number.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "v.txt"
    ...     _ = path.write_text("Ge1:1 In the beginning\\n1Sm2:3 Talk no more\\n")
    ...     read_verses(path)
    [('Ge', 'In the beginning'), ('1Sm', 'Talk no more')]
    """
    return [(v.book, v.text) for v in read_verse_lines(path)]


def split_by_book(
    verses: list[tuple[str, str]],
    validation: tuple[str, ...] = VALIDATION_BOOKS,
    test: tuple[str, ...] = TEST_BOOKS,
) -> tuple[str, str, str]:
    """The training, validation and test texts: verses joined by ``"\\n"`` (one after each).

    >>> v = [("Ge", "a"), ("Ruth", "b"), ("Mark", "c"), ("Ge", "d")]
    >>> split_by_book(v, validation=("Ruth",), test=("Mark",))
    ('a\\nd\\n', 'b\\n', 'c\\n')
    """
    books = {b for b, _ in verses}
    for name, chosen in (("validation", validation), ("test", test)):
        missing = [b for b in chosen if b not in books]
        if missing or not chosen:
            raise ValueError(
                f"{name} books: expected books of the file (it has {sorted(books)}), found "
                f"{list(chosen)}"
            )
    if set(validation) & set(test):
        raise ValueError(
            f"validation and test books: expected no book in both, found "
            f"{sorted(set(validation) & set(test))}"
        )
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for book, text in verses:
        part = 1 if book in validation else 2 if book in test else 0
        parts[part].append(text + "\n")
    if not parts[0]:
        raise ValueError("books: every book is held out; leave some for training")
    return "".join(parts[0]), "".join(parts[1]), "".join(parts[2])


def stream_bounds(length: int, streams: int = 16) -> list[tuple[int, int]]:
    """``min(streams, length)`` contiguous ``[a, b)`` ranges covering ``range(length)``.

    >>> stream_bounds(10, 3)
    [(0, 3), (3, 7), (7, 10)]
    """
    count = max(1, min(streams, length))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def text_streams(ids: Tensor, start: int, streams: int = 16) -> list[dict[str, Any]]:
    """A text ``[N]`` cut into contiguous streams (:func:`stream_bounds`) for scoring: stream
    ``[a, b)`` has ``"target"`` ``ids[a:b]`` and ``"input"`` the id before each, ``start`` (e.g.
    the id of ``"\\n"``) before the first. Run from a fresh state, the streams predict every
    character of the text once.
    """
    import torch

    inputs = torch.cat([torch.tensor([start], dtype=ids.dtype), ids[:-1]])
    return [{"input": inputs[a:b], "target": ids[a:b]} for a, b in stream_bounds(len(ids), streams)]


def xz_bits_per_character(text: str) -> float:
    """``8 * len(xz(text)) / len(text)``, xz (LZMA2, .xz container) at preset 9 | extreme."""
    compressed = lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    return 8 * len(compressed) / len(text)
