"""Tagging data: documents of tagged sentences, the token features a tagger reads, the
vocabularies built from the training part, the split by documents and the most-frequent-tag
baseline.

A sentence is a dict of token lists (``"words"``, the tags, and any extra per-token columns,
see :mod:`rnnkit.data.text` and :mod:`rnnkit.data.srl`). Each word becomes four categorical
features (:func:`token_features`): the lower-cased word, its last two and last three letters
and its shape; the extra columns follow. :class:`TagVocabularies` turns sentences into
examples ``{"tokens": int64 [T, K], "tags": int64 [T]}``.

>>> token_shape("McCarthy"), token_shape("1960s"), token_shape("--"), token_shape("U.S.")
('Xx', 'xd', '.', 'X.')
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import PathArg, Sentence, read_lines
from rnnkit.data.text import Vocabulary

__all__ = [
    "FEATURES",
    "FORMATS",
    "SRL_COLUMNS",
    "TagVocabularies",
    "TaggedExample",
    "column_names",
    "extra_columns",
    "most_frequent_tag_accuracy",
    "read_documents",
    "read_sentences",
    "split_documents",
    "token_features",
    "token_shape",
]

FEATURES = ("word", "suffix2", "suffix3", "shape")
"""The word features of every token, in column order."""

FORMATS = ("tagged", "conll", "srl")
"""``word/tag`` lines, CoNLL columns, CoNLL-2005 semantic roles."""

SRL_COLUMNS = ("words", "pos", None, None, "predicate")
"""The leading columns of the CoNLL-2005 combined files (word, POS, parse, NE, predicate)."""


def token_shape(word: str) -> str:
    """A coarse shape: ``X`` / ``Xx`` / ``x`` / ``xX`` for the letters' case, ``d`` for a digit,
    ``-`` for a hyphen, ``.`` for other punctuation (``.`` alone: no letter or digit)."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        case = ""
    elif all(c.isupper() for c in letters):
        case = "X"
    elif letters[0].isupper():
        case = "Xx"
    elif any(c.isupper() for c in letters):
        case = "xX"
    else:
        case = "x"
    digit = "d" if any(c.isdigit() for c in word) else ""
    hyphen = "-" if "-" in word and (case or digit) else ""
    other = "." if any(not (c.isalnum() or c == "-") for c in word) or not (case or digit) else ""
    return case + digit + hyphen + other


def token_features(word: str) -> tuple[str, str, str, str]:
    """``(lower-cased word, last 2 letters, last 3 letters, shape)`` of a word.

    >>> token_features("Running")
    ('running', 'ng', 'ing', 'Xx')
    """
    lower = word.lower()
    return lower, lower[-2:], lower[-3:], token_shape(word)


class TaggedExample(dict):
    """An example (``stream name -> tensor``) that also keeps the sentence it was made from
    (``.sentence``: the words and the tags as read, unseen tags included), for the rows of a
    predictions file. A minibatch source sees only the streams."""

    sentence: Sentence

    def __init__(self, streams: Mapping[str, Any], sentence: Sentence) -> None:
        super().__init__(streams)
        self.sentence = sentence


@dataclass(frozen=True, eq=False)
class TagVocabularies:
    """The vocabularies of one tagger, built from its training sentences only.

    ``columns`` are the input columns in order (the four word features, then the extra
    columns); ``tags`` has the unknown tag ``<unseen>`` (id 0), which no training token has,
    for test tags never seen in training.
    """

    columns: tuple[str, ...]
    inputs: tuple[Vocabulary, ...]
    tags: Vocabulary

    @classmethod
    def build(
        cls,
        sentences: Sequence[Sentence],
        *,
        tag_column: str = "tags",
        extra_columns: Sequence[str] = (),
        min_freq: int = 2,
    ) -> TagVocabularies:
        """Words seen ``min_freq`` times or more; every suffix, shape, extra value and tag."""
        features = [[token_features(w) for w in s["words"]] for s in sentences]
        inputs = [
            Vocabulary.build(
                ([f[k] for f in fs] for fs in features), min_freq=min_freq if k == 0 else 1
            )
            for k in range(len(FEATURES))
        ]
        inputs += [Vocabulary.build(s[c] for s in sentences) for c in extra_columns]
        tags = Vocabulary.build((s[tag_column] for s in sentences), pad=None, unk="<unseen>")
        return cls((*FEATURES, *extra_columns), tuple(inputs), tags)

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """The input columns beyond the word features."""
        return self.columns[len(FEATURES) :]

    def encode(self, sentence: Sentence, tag_column: str = "tags") -> TaggedExample:
        """``{"tokens": int64 [T, K], "tags": int64 [T]}`` (no ``"tags"`` without the column)."""
        missing = [c for c in ("words", *self.extra_columns) if c not in sentence]
        if missing:
            raise ValueError(
                f"sentence: expected the columns {['words', *self.extra_columns]}, missing "
                f"{missing}; it has {sorted(sentence)}"
            )
        features = list(zip(*(token_features(w) for w in sentence["words"]), strict=True))
        extra = [sentence[c] for c in self.extra_columns]
        columns = [v.encode(c) for v, c in zip(self.inputs, [*features, *extra], strict=True)]
        streams = {"tokens": torch.stack(columns, dim=1)}
        if tag_column in sentence:
            streams["tags"] = self.tags.encode(sentence[tag_column])
        return TaggedExample(streams, sentence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the columns and every vocabulary."""
        return {
            "columns": list(self.columns),
            "inputs": [v.to_dict() for v in self.inputs],
            "tags": self.tags.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], *, path: PathArg | None = None) -> TagVocabularies:
        """The vocabularies :meth:`to_dict` described (``state`` as read back from JSON).

        Raises:
            ReaderError: ``state`` is not such a description; the message names the entry
                (``state['inputs'][2]['tokens']``) and ``path``, the file it came from, when
                given.
        """
        if not isinstance(state, Mapping):
            raise ReaderError(
                "state: expected a mapping with 'columns', 'inputs' and 'tags', found "
                f"{type(state).__name__}",
                path=path,
            )
        columns, inputs = state.get("columns"), state.get("inputs")
        if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise ReaderError(
                f"state['columns']: expected a list of strings, found {columns!r:.60}", path=path
            )
        if not (isinstance(inputs, list) and len(inputs) == len(columns)):
            found = f"{len(inputs)}" if isinstance(inputs, list) else f"{type(inputs).__name__}"
            raise ReaderError(
                f"state['inputs']: expected a list of one vocabulary per column "
                f"({len(columns)}), found {found}",
                path=path,
            )
        vocabularies = tuple(
            Vocabulary.from_dict(v, path=path, key=f"state['inputs'][{i}]")
            for i, v in enumerate(inputs)
        )
        tags = Vocabulary.from_dict(state.get("tags"), path=path, key="state['tags']")  # type: ignore[arg-type]
        return cls(tuple(columns), vocabularies, tags)


def split_documents(
    documents: Sequence[Any], split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[Any], list[Any], list[Any]]:
    """Shuffle ``documents`` with ``random.Random(seed)`` and cut them in the ``split``
    proportions (rounded), so no document has sentences in two parts.

    >>> split_documents(list("abcdefghij"), seed=1)
    (['g', 'i', 'j', 'h', 'f', 'd', 'a', 'e'], ['b'], ['c'])
    """
    if len(documents) < 3:
        raise ValueError(
            f"documents: expected at least 3 documents to split by documents, found "
            f"{len(documents)}; give separate validation and test files instead"
        )
    order = list(documents)
    random.Random(seed).shuffle(order)
    a = min(len(order) - 2, max(1, round(split[0] * len(order))))
    b = min(len(order) - 1, max(a + 1, a + round(split[1] * len(order))))
    return order[:a], order[a:b], order[b:]


def most_frequent_tag_accuracy(
    train: Iterable[Sentence], test: Iterable[Sentence], tag_column: str = "tags"
) -> float:
    """Token accuracy of tagging each word with its most frequent training tag (ties: the tag
    seen first) and an unknown word with the most frequent training tag overall.

    >>> train = [{"words": ["the", "run", "run", "run"], "tags": ["at", "nn", "vb", "vb"]}]
    >>> most_frequent_tag_accuracy(train, [{"words": ["run", "dog"], "tags": ["vb", "vb"]}])
    1.0
    """
    per_word: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for s in train:
        for w, t in zip(s["words"], s[tag_column], strict=True):
            per_word.setdefault(w, Counter())[t] += 1
            overall[t] += 1
    best = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
    default = overall.most_common(1)[0][0]
    right = total = 0
    for s in test:
        for w, t in zip(s["words"], s[tag_column], strict=True):
            right += best.get(w, default) == t
            total += 1
    return right / total


# ------------------------------------------------------------------------------------ reading


def column_names(columns: Sequence[str | None]) -> list[str | None]:
    """Column names as the command line gives them: ``_``, ``-`` or an empty name drops a
    column (``None``).

    >>> column_names(["words", "pos", "_", "ner"])
    ['words', 'pos', None, 'ner']
    """
    return [None if c in (None, "", "_", "-") else c for c in columns]


def extra_columns(fmt: str, columns: Sequence[str | None], tag_column: str = "tags") -> list[str]:
    """The per-token input columns beyond the words: every named column but ``words`` and the
    tag column (none for ``word/tag`` text; for SRL the ``predicate`` indicator comes last).

    >>> extra_columns("srl", ["words", "pos", None, None, "predicate"])
    ['pos', 'predicate']
    """
    if fmt == "tagged":
        return []
    named = [c for c in column_names(columns) if c is not None]
    extra = [c for c in named if c not in ("words", tag_column)]
    if fmt == "srl":
        extra = [c for c in extra if c != "predicate"] + ["predicate"]
    return extra


def read_documents(
    paths: Sequence[PathArg],
    fmt: str = "tagged",
    columns: Sequence[str | None] = ("words", "tags"),
) -> list[tuple[str, list[Sentence]]]:
    """``(file name, sentences)`` of each file: ``word/tag`` lines (``'tagged'``), CoNLL
    columns named by ``columns`` (``'conll'``) or CoNLL-2005 SRL columns, one example per
    predicate (``'srl'``, see :func:`rnnkit.data.srl.read_srl`)."""
    from rnnkit.data.srl import read_srl
    from rnnkit.data.text import read_conll, read_tagged

    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {FORMATS}, found {fmt!r}")
    names = column_names(columns)
    documents = []
    for path in paths:
        if fmt == "tagged":
            sentences = read_tagged(path)
        elif fmt == "conll":
            sentences = read_conll(path, names)
        else:
            sentences = read_srl(path, names)
        documents.append((Path(path).name, sentences))
    return documents


def read_sentences(
    path: PathArg,
    fmt: str = "tagged",
    columns: Sequence[str | None] = ("words", "tags"),
    tag_column: str = "tags",
) -> list[Sentence]:
    """The sentences of a file to tag, with or without its tags.

    ``'tagged'``: ``word/tag`` lines when every token of the file's first non-blank line is
    ``word/tag`` (then any other line that is not raises ReaderError), otherwise plain text,
    one sentence per line, tokens separated by whitespace. ``'conll'``: ``columns``, or
    ``columns`` without the tag column when the first token line has one field fewer. ``'srl'``:
    the full CoNLL-2005 columns, argument columns included (their tags are not inputs).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "a.txt").write_text("The cat sat\\n\\nIt ran .\\n")
    ...     read_sentences(Path(tmp) / "a.txt")
    [{'words': ['The', 'cat', 'sat']}, {'words': ['It', 'ran', '.']}]
    """
    from rnnkit.data.srl import read_srl
    from rnnkit.data.text import read_conll, read_tagged

    names = column_names(columns)
    if fmt == "srl":
        return read_srl(path, names)
    lines = read_lines(path)
    first = next((line.split() for line in lines if line.strip()), [])
    if fmt == "tagged":
        if all(0 < t.rfind("/") < len(t) - 1 for t in first):
            return read_tagged(path)
        return [{"words": line.split()} for line in lines if line.strip()]
    if fmt != "conll":
        raise ValueError(f"fmt: expected one of {FORMATS}, found {fmt!r}")
    if tag_column in names and len(first) == len(names) - 1 and first[0] != "-DOCSTART-":
        names = [c for c in names if c != tag_column]
    return read_conll(path, names)
