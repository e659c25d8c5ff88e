"""Plain text files for language models: reading them (any codec Python knows), joining several,
cutting the whole into contiguous training, validation and test parts at paragraph or line
boundaries, and what general-purpose compressors make of a part.

The parts are ``text[:a]``, ``text[a:b]`` and ``text[b:]``: every character is in exactly one
part, and the held-out parts follow the training part (the test part is the end of the text).
A cut is placed at the **paragraph** start (the first character after one or more blank lines,
or the start of a file) nearest its target ``fraction * len(text)``; when the nearest one is
further from the target than a quarter of the smaller held-out part's target size, the
nearest **line** start is tried instead, then the nearest **word** start (after a run of
whitespace, for a text without line breaks), then any **character**.

>>> corpus = Corpus.from_texts([("a.txt", "one\\n\\ntwo\\n\\nthree\\nfour\\n")])
>>> split = split_fractions(corpus, (0.5, 0.25, 0.25))
>>> split.parts, split.level
(('one\\n\\ntwo\\n\\n', 'three\\n', 'four\\n'), 'line')
>>> corpus.locate(split.bounds[0])
'a.txt:5:1'
"""

from __future__ import annotations

import bisect
import bz2
import codecs
import gzip
import lzma
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import PathArg, decode_text

__all__ = [
    "LEVELS",
    "Corpus",
    "Speller",
    "TextSplit",
    "compressed_bits",
    "read_plain_text",
    "split_fractions",
    "unknown_bits",
]

LEVELS = ("paragraph", "line", "word", "character")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE = re.compile(r"\n")
_WORD = re.compile(r"\s+")


def read_plain_text(path: PathArg, encoding: str = "utf-8") -> str:
    """The text of a file in ``encoding`` (a leading UTF-8 byte-order mark dropped), with
    ``\\r\\n`` line endings read as ``\\n``.

    Raises:
        ReaderError: a byte sequence that is not valid in ``encoding`` (at its line and
            column), or a file with nothing but whitespace.
        LookupError: an encoding Python does not know.
    """
    utf8 = codecs.lookup(encoding).name == "utf-8"
    text = decode_text(Path(path).read_bytes(), path, "utf-8" if utf8 else encoding)
    if not text.strip():
        found = "an empty file" if not text else "only whitespace"
        raise ReaderError(f"expected text, found {found}", path=path, line=1, column=1)
    return text.replace("\r\n", "\n")


@dataclass(frozen=True)
class Corpus:
    """Texts joined in order, each ending in ``"\\n"`` (one is added to a text without it).

    Attributes:
        text: the joined text.
        names: the source of each text (a file's path).
        starts: the offset of each text in ``text``.
        lines: per text, the source line of each of its lines (``None``: line k of the text is
            line k of the file), for texts made from a file's lines (verses without references).
        columns: per text, the column in the file where each of its lines starts (``None``: 1).
    """

    text: str
    names: tuple[str, ...]
    starts: tuple[int, ...]
    lines: tuple[tuple[int, ...] | None, ...]
    columns: tuple[tuple[int, ...] | None, ...]

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[tuple[str, str]],
        places: Sequence[tuple[tuple[int, ...], tuple[int, ...]] | None] | None = None,
    ) -> Corpus:
        """``(name, text)`` pairs joined; ``places`` gives, per text, the file line and column of
        each of its lines (or ``None``)."""
        pieces, names, starts, offset = [], [], [], 0
        for name, text in texts:
            if not text.endswith("\n"):
                text += "\n"
            names.append(name)
            starts.append(offset)
            pieces.append(text)
            offset += len(text)
        if not pieces:
            raise ValueError("texts: expected at least one text, found none")
        where = list(places) if places is not None else [None] * len(pieces)
        return cls(
            "".join(pieces),
            tuple(names),
            tuple(starts),
            tuple(None if p is None else p[0] for p in where),
            tuple(None if p is None else p[1] for p in where),
        )

    def locate(self, position: int) -> str:
        """``path:line:column`` (1-based) of the character at ``position`` of :attr:`text`."""
        k = max(0, bisect.bisect_right(self.starts, position) - 1)
        start = self.starts[k]
        before = self.text.rfind("\n", start, position)
        line = self.text.count("\n", start, position) + 1
        column = position - (before + 1 if before >= 0 else start) + 1
        lines, columns = self.lines[k], self.columns[k]
        if lines is not None and line <= len(lines):
            if columns is not None:
                column += columns[line - 1] - 1
            line = lines[line - 1]
        return f"{self.names[k]}:{line}:{column}"

    def cut_points(self, level: str) -> list[int]:
        """The sorted offsets where a part may start at ``level`` (one of :data:`LEVELS`),
        the starts of the texts included, 0 and ``len(text)`` excluded."""
        if level == "character":
            return list(range(1, len(self.text)))
        pattern = {"paragraph": _PARAGRAPH, "line": _LINE, "word": _WORD}.get(level)
        if pattern is None:
            raise ValueError(f"level: expected one of {LEVELS}, found {level!r}")
        points = {m.end() for m in pattern.finditer(self.text)} | set(self.starts)
        return sorted(p for p in points if 0 < p < len(self.text))


@dataclass(frozen=True)
class TextSplit:
    """Three contiguous parts of a :class:`Corpus`: ``parts`` (training, validation, test),
    ``bounds`` ``(a, b)`` where the held-out parts start, and the ``level`` of the cuts."""

    parts: tuple[str, str, str]
    bounds: tuple[int, int]
    level: str


def _nearest(points: list[int], target: float) -> int | None:
    if not points:
        return None
    k = bisect.bisect_left(points, target)
    near = [points[i] for i in (k - 1, k) if 0 <= i < len(points)]
    return min(near, key=lambda p: (abs(p - target), p))


def split_fractions(corpus: Corpus, fractions: Sequence[float]) -> TextSplit:
    """The corpus cut into training, validation and test parts of about ``fractions`` of its
    characters (see the module docstring for where the cuts go).

    Raises:
        ValueError: fractions that are not three positive numbers summing to 1, or a text too
            short to give every part at least one character (naming ``split``).
    """
    if len(fractions) != 3 or not all(f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split: expected three fractions > 0 summing to 1 (training, validation, test), "
            f"found {list(fractions)}"
        )
    n = len(corpus.text)
    targets = (fractions[0] * n, (fractions[0] + fractions[1]) * n)
    tolerance = 0.25 * min(fractions[1], fractions[2]) * n
    for level in LEVELS:
        points = corpus.cut_points(level)
        a, b = _nearest(points, targets[0]), _nearest(points, targets[1])
        if a is None or b is None or not 0 < a < b < n:
            continue
        if level == "character" or max(abs(a - targets[0]), abs(b - targets[1])) <= tolerance:
            text = corpus.text
            return TextSplit((text[:a], text[a:b], text[b:]), (a, b), level)
    raise ValueError(
        f"split: a text of {n} characters cannot give training, validation and test parts "
        f"of {list(fractions)} with at least one character each; give more text"
    )


def compressed_bits(text: str) -> dict[str, float]:
    """Bits per character, ``8 * compressed bytes / characters``, of the UTF-8 bytes of
    ``text`` compressed alone, whole files headers included: ``xz -9e`` (LZMA2 in the .xz
    container, preset 9 | extreme), ``bzip2 -9`` and ``gzip -9`` (no file name, time 0).

    >>> figures = compressed_bits("abc" * 1000)
    >>> sorted(figures), all(0 < v < 1 for v in figures.values())
    (['bzip2 -9', 'gzip -9', 'xz -9e'], True)
    """
    if not text:
        raise ValueError("text: expected at least one character, found none")
    data = text.encode("utf-8")
    sizes = {
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "bzip2 -9": len(bz2.compress(data, compresslevel=9)),
        "gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
    }
    return {name: 8 * size / len(text) for name, size in sizes.items()}


UNICODE_BITS = math.log2(0x110000)
"""Bits to name one Unicode code point out of all of them, uniformly."""


class Speller:
    """The cost in bits of spelling a token out character by character, so that a model whose
    vocabulary maps a token to ``<unk>`` still codes the text exactly: an add-one unigram model
    of the training text's characters plus an end mark and an escape; an escaped character
    costs the escape and :data:`UNICODE_BITS`.

    >>> s = Speller(Counter("aab"))
    >>> round(s.bits("ab"), 3) == round(-math.log2(3 / 7) - math.log2(2 / 7) - math.log2(1 / 7), 3)
    True
    """

    def __init__(self, counts: Counter[str] | dict[str, int]) -> None:
        self.counts = dict(counts)
        self.total = sum(self.counts.values()) + len(self.counts) + 2  # + end and escape

    def bits(self, token: str) -> float:
        """``-log2`` of the probability of ``token``'s characters, then the end mark."""
        total = -math.log2(1 / self.total)  # the end mark
        for char in token:
            count = self.counts.get(char)
            if count is None:
                total += -math.log2(1 / self.total) + UNICODE_BITS
            else:
                total += -math.log2((count + 1) / self.total)
        return total


def unknown_bits(tokens: Sequence[str], spell: Callable[[str], float]) -> list[float]:
    """The bits that say which token each ``<unk>`` of a stream stands for, coded in order and
    adaptively, as a compressor codes a symbol it has not met before: the ``n``-th unknown
    token (``n`` counted from 0) is one already coded ``k`` times with probability
    ``k / (n + 1)``, or a new one with probability ``1 / (n + 1)``, which ``spell`` then
    spells out.

    >>> [round(b, 3) for b in unknown_bits(["x", "y", "x"], lambda token: 10.0)]
    [10.0, 11.0, 1.585]
    """
    counts: Counter[str] = Counter()
    bits = []
    for n, token in enumerate(tokens):
        seen = counts[token]
        bits.append(-math.log2(seen / (n + 1)) if seen else math.log2(n + 1) + spell(token))
        counts[token] += 1
    return bits
