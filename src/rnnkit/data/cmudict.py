"""Pronouncing dictionaries in CMUdict's format (``WORD  PH1 PH2 ...``) for grapheme to phoneme:
the reader, the split by word, the examples an encoder-decoder trains on, and the scores.

``WORD(1)``, ``WORD(2)`` are alternate pronunciations of ``WORD``; lines starting ``;;;`` are
comments. A predicted pronunciation counts as correct when it equals any of the word's
pronunciations; the phoneme error rate is the edit distance to the nearest pronunciation over
that pronunciation's length, summed over the words.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.data.errors import ReaderError

if TYPE_CHECKING:
    from rnnkit.data.text import Vocabulary

__all__ = [
    "BOS",
    "EOS",
    "WordEntry",
    "default_dictionary",
    "edit_distance",
    "nearest",
    "pronunciation_examples",
    "read_cmudict",
    "read_words",
    "score",
    "split_words",
]

BOS, EOS = "<s>", "</s>"
_ALTERNATE = re.compile(r"\(\d+\)$")


def default_dictionary() -> Path:
    """``../shared/data/cmudict/dict.txt`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "cmudict" / "dict.txt"
        if candidate.is_file():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "cmudict" / "dict.txt"


def _phones(fields: Sequence[str], stress: bool) -> tuple[str, ...]:
    return tuple(fields if stress else (p.rstrip("012") for p in fields))


def read_cmudict(path: str | Path, *, stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """``word -> its pronunciations`` from a CMUdict file (``WORD  PH1 PH2``, ``;;;`` comments).

    ``WORD(1)``, ``WORD(2)`` are alternates of ``WORD``; ``stress=False`` removes the stress
    digits (``AH0`` -> ``AH``); equal pronunciations are kept once.

    Raises:
        ReaderError: a line without phonemes, with its line number.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "d.txt"
    ...     _ = path.write_text(";;; c\\nA  AH0\\nA(1)  EY1\\nAB  AE1 B\\n")
    ...     read_cmudict(path)
    {'A': [('AH',), ('EY',)], 'AB': [('AE', 'B')]}
    """
    path = Path(path)
    words: dict[str, list[tuple[str, ...]]] = {}
    with path.open(encoding="latin-1") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(";;;"):
                continue
            fields = line.split()
            if len(fields) < 2:
                raise ReaderError(
                    f"expected 'WORD  PH1 PH2 ...', found {line.strip()!r}",
                    path=path,
                    line=line_no,
                    column=1,
                )
            known = words.setdefault(_ALTERNATE.sub("", fields[0]), [])
            phones = _phones(fields[1:], stress)
            if phones not in known:
                known.append(phones)
    if not words:
        raise ReaderError("expected dictionary entries, found none", path=path, line=1, column=1)
    return words


@dataclass(frozen=True)
class WordEntry:
    """A word to pronounce (upper-cased), where it was read (1-based line and column) and the
    pronunciations the file gives for it (none for a plain word list)."""

    word: str
    line: int
    column: int
    pronunciations: tuple[tuple[str, ...], ...] = ()


def read_words(path: str | Path, *, stress: bool = False) -> list[WordEntry]:
    """The words of a file to pronounce: one word a line, or CMUdict lines (``WORD  PH1 ...``,
    whose pronunciations become the references; ``WORD(1)`` lines add to ``WORD``). Words are
    upper-cased; blank and ``;;;`` lines are skipped.

    Raises:
        ReaderError: a file without words.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "w.txt"
    ...     _ = path.write_text("cat\\nREAD  R IY1 D\\nREAD(1)  R EH1 D\\n")
    ...     [(e.word, e.line, e.pronunciations) for e in read_words(path)]
    [('CAT', 1, ()), ('READ', 2, (('R', 'IY', 'D'), ('R', 'EH', 'D')))]
    """
    path = Path(path)
    entries: dict[str, WordEntry] = {}
    with path.open(encoding="latin-1") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(";;;"):
                continue
            fields = line.split()
            word = _ALTERNATE.sub("", fields[0]).upper()
            column = len(line) - len(line.lstrip()) + 1
            entry = entries.setdefault(word, WordEntry(word, line_no, column))
            phones = _phones(fields[1:], stress)
            if phones and phones not in entry.pronunciations:
                entries[word] = WordEntry(
                    word, entry.line, entry.column, (*entry.pronunciations, phones)
                )
    if not entries:
        raise ReaderError("expected words, one a line, found none", path=path, line=1, column=1)
    return list(entries.values())


def split_words(
    words: Sequence[str], fractions: tuple[float, float, float], seed: int
) -> tuple[list[str], list[str], list[str]]:
    """Train / validation / test words: a seeded shuffle of the sorted words, cut by fractions.

    >>> split_words([f"w{i}" for i in range(10)], (0.8, 0.1, 0.1), seed=0)[1:]
    (['w9'], ['w6'])
    """
    if abs(sum(fractions) - 1) > 1e-9 or any(f <= 0 for f in fractions):
        raise ValueError(f"split: expected three positive shares summing to 1, found {fractions}")
    order = sorted(words)
    random.Random(seed).shuffle(order)
    a = round(fractions[0] * len(order))
    b = a + round(fractions[1] * len(order))
    return order[:a], order[a:b], order[b:]


def pronunciation_examples(
    words: Sequence[str],
    lexicon: dict[str, list[tuple[str, ...]]],
    letters: Vocabulary,
    phonemes: Vocabulary,
) -> list[dict[str, Any]]:
    """One example per (word, pronunciation): ``letters``, ``decoder_input`` (``<s>`` then the
    pronunciation) and ``phones`` (the pronunciation then ``</s>``), int64 ``[T]`` each."""
    examples = []
    for word in words:
        x = letters.encode(list(word))
        for pron in lexicon[word]:
            ids = phonemes.encode([BOS, *pron, EOS])
            examples.append({"letters": x, "decoder_input": ids[:-1], "phones": ids[1:]})
    return examples


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1).

    >>> edit_distance(["K", "AE", "T"], ["K", "AA", "T", "S"])
    2
    """
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def nearest(guess: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[int, int]:
    """``(edit distance, length)`` of the reference nearest to ``guess`` (smallest distance,
    then the shortest)."""
    return min((edit_distance(guess, r), len(r)) for r in references)


def score(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[tuple[str, ...]]]
) -> tuple[float, float]:
    """``(PER %, WER %)``: per word the nearest reference (smallest edit distance, then the
    shortest); PER sums the distances over the sum of those references' lengths; WER is the
    share of words whose prediction equals none of their references.

    >>> score([["K", "AE", "T"], ["D", "AO"]], [[("K", "AE", "T")], [("D", "AO", "G")]])
    (16.666666666666668, 50.0)
    """
    errors = length = wrong = 0
    for guess, refs in zip(predictions, references, strict=True):
        distance, size = nearest(guess, refs)
        errors, length, wrong = errors + distance, length + size, wrong + (distance > 0)
    return 100 * errors / length, 100 * wrong / len(predictions)
