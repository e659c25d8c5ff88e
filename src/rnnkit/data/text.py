"""Tagged text (``word/tag``), CoNLL columns, and the vocabularies that turn tokens or
characters into ids.

Vocabularies are built from training data only and then applied unchanged to validation and test
data; a token never seen in training maps to ``<unk>`` when the vocabulary has one, and is an
error otherwise. Malformed input raises `rnnkit.data.errors.ReaderError` located as
``path:line:column``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import Example, PathArg, Sentence, path_list, read_lines, split_columns

__all__ = [
    "TextVocabulary",
    "Vocabulary",
    "encode_sentences",
    "read_conll",
    "read_tagged",
    "text_windows",
]


# ---------------------------------------------------------------------------------------------
# Tagged text and CoNLL columns


def read_tagged(paths: PathArg | Iterable[PathArg], *, separator: str = "/") -> list[Sentence]:
    """Read ``word/tag`` text: one sentence per line, tokens separated by whitespace.

    The LAST ``separator`` of a token splits it, so ``1/2/cd`` is the word ``1/2`` with the tag
    ``cd``; word and tag must both be non-empty. Blank lines are skipped.

    Args:
        paths: one file or several (read in the order given), e.g. the Brown corpus files.
        separator: the string between word and tag.

    Returns:
        one dict per sentence: ``{"words": [...], "tags": [...]}`` of equal lengths.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     text = "\\tThe/at 1/2/cd cup/nn ./.\\n\\nIt/pps is/bez\\n"
    ...     _ = (Path(tmp) / "a.txt").write_text(text)
    ...     sentences = read_tagged(Path(tmp) / "a.txt")
    >>> sentences[0]
    {'words': ['The', '1/2', 'cup', '.'], 'tags': ['at', 'cd', 'nn', '.']}
    >>> len(sentences)
    2
    """
    if not separator:
        raise ValueError("separator: expected a non-empty string, found ''")
    sentences: list[Sentence] = []
    for path in path_list(paths):
        for line_no, line in enumerate(read_lines(path), start=1):
            tokens = line.split()
            if not tokens:
                continue
            words, tags = [], []
            for token in tokens:
                cut = token.rfind(separator)
                if cut <= 0 or cut + len(separator) == len(token):
                    column = _token_column(line, token)
                    raise ReaderError(
                        f"expected word{separator}tag with a non-empty word and tag, "
                        f"found {token!r}",
                        path=path,
                        line=line_no,
                        column=column,
                    )
                words.append(token[:cut])
                tags.append(token[cut + len(separator) :])
            sentences.append({"words": words, "tags": tags})
    return sentences


def _token_column(line: str, token: str) -> int:
    """1-based column of the first whitespace-separated ``token`` of ``line``."""
    for match in re.finditer(r"\S+", line):
        if match.group() == token:
            return match.start() + 1
    return 1


def read_conll(
    paths: PathArg | Iterable[PathArg],
    columns: Sequence[str | None],
    *,
    delimiter: str | None = None,
    comment: str | None = None,
) -> list[Sentence]:
    """Read CoNLL-style columns: one token per line, blank lines between sentences.

    A line ``-DOCSTART- ...`` (the CoNLL-2003 document marker) ends the current sentence and is
    not a token. Multi-word-token ranges of CoNLL-U are not interpreted (they are ordinary lines).

    Args:
        paths: one file or several, read in order.
        columns: a name for each column of a line, in order; ``None`` reads a column and drops it.
            Every token line must have exactly ``len(columns)`` fields.
        delimiter: the field separator; None splits on any run of whitespace, ``"\\t"`` on tabs
            only (fields may then contain spaces).
        comment: lines starting with this string are comments (``"#"`` for CoNLL-U); None (the
            default) has no comments, since ``#`` is a real token in many CoNLL files.

    Returns:
        one dict per sentence mapping each named column to its list of tokens.

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "a.conll"
    ...     text = "-DOCSTART- -X- O\\n\\nEU NNP B-ORG\\nrejects VBZ O\\n\\nPeter NNP B-PER\\n"
    ...     _ = path.write_text(text)
    ...     sentences = read_conll(path, columns=["words", None, "ner"])
    >>> sentences
    [{'words': ['EU', 'rejects'], 'ner': ['B-ORG', 'O']}, {'words': ['Peter'], 'ner': ['B-PER']}]
    """
    names = [c for c in columns if c is not None]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"columns: expected distinct names (None to drop one), found {columns}")
    sentences: list[Sentence] = []

    def close(current: Sentence) -> Sentence:
        if current[names[0]]:
            sentences.append(current)
        return {name: [] for name in names}

    for path in path_list(paths):
        sentence: Sentence = {name: [] for name in names}
        for line_no, line in enumerate(read_lines(path), start=1):
            if comment is not None and line.startswith(comment):
                continue
            if not line.strip():
                sentence = close(sentence)
                continue
            fields = line.split(delimiter) if delimiter is not None else line.split()
            if fields[0].strip() == "-DOCSTART-":
                sentence = close(sentence)
                continue
            if len(fields) != len(columns):
                where = _field_offset(line, delimiter, min(len(fields), len(columns)))
                raise ReaderError(
                    f"expected {len(columns)} columns ({list(columns)}), found {len(fields)}",
                    path=path,
                    line=line_no,
                    column=where + 1,
                )
            for name, field in zip(columns, fields, strict=True):
                if name is not None:
                    sentence[name].append(field)
        close(sentence)
    return sentences


def _field_offset(line: str, delimiter: str | None, index: int) -> int:
    """0-based offset of field ``index`` of ``line`` (the end of the line if it has fewer)."""
    if delimiter is None:
        starts = [m.start() for m in re.finditer(r"\S+", line)]
    else:
        starts = [offset for _, offset in split_columns(line, delimiter, 0)]
    return starts[index] if index < len(starts) else len(line)


# ---------------------------------------------------------------------------------------------
# Vocabularies


class Vocabulary:
    """A bijection between tokens and ids ``0 .. len-1``.

    The reserved tokens come first: ``pad`` (id 0) when given, then ``unk``, then ``tokens`` in
    the order given. ``pad`` is only a filler for code that pads sequences (rnnkit's own batches
    are packed and never need it); ``unk`` is what a token outside the vocabulary maps to. With
    ``unk=None``, encoding an unknown token raises ValueError instead, which is what a closed set
    such as tags usually wants.

    >>> tags = Vocabulary(["nn", "vb"], pad=None, unk=None)
    >>> words = Vocabulary.build([["the", "cat"], ["the", "dog"]], min_freq=2)
    >>> words.tokens, words.pad_id, words.unk_id
    (('<pad>', '<unk>', 'the'), 0, 1)
    >>> words.encode(["the", "cat"]).tolist(), tags.encode(["vb", "nn"]).tolist()
    ([2, 1], [1, 0])
    >>> words.decode([2, 1])
    ['the', '<unk>']
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
    ) -> None:
        reserved = [t for t in (pad, unk) if t is not None]
        if pad is not None and pad == unk:
            raise ValueError(f"pad and unk: expected two different tokens, found {pad!r} twice")
        self._tokens: list[str] = [*reserved]
        self._ids: dict[str, int] = {t: i for i, t in enumerate(reserved)}
        for token in tokens:
            if token in self._ids:
                kind = "a reserved token" if token in reserved else "a duplicate"
                raise ValueError(
                    f"tokens: expected distinct ordinary tokens, found {kind} {token!r}"
                )
            self._ids[token] = len(self._tokens)
            self._tokens.append(token)
        self.pad = pad
        self.unk = unk

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
    ) -> Vocabulary:
        """The vocabulary of the tokens seen at least ``min_freq`` times in ``sequences``.

        Build it from the training data only. Tokens are ordered by decreasing count, ties by
        first appearance; ``max_size`` caps the number of ordinary tokens (reserved ones are not
        counted). Occurrences of the reserved tokens themselves in the data (a corpus that already
        contains ``<unk>``) are not counted: they encode to the reserved ids.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq: expected an integer >= 1, found {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size: expected None or an integer >= 0, found {max_size}")
        counts: Counter[str] = Counter()
        for sequence in sequences:
            counts.update(sequence)
        for reserved in (pad, unk):
            if reserved is not None:
                counts.pop(reserved, None)
        kept = [t for t, n in counts.most_common() if n >= min_freq]
        return cls(kept[:max_size] if max_size is not None else kept, pad=pad, unk=unk)

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, reserved ones included, in id order."""
        return tuple(self._tokens)

    @property
    def pad_id(self) -> int | None:
        """The id of ``pad``, or None without one."""
        return None if self.pad is None else self._ids[self.pad]

    @property
    def unk_id(self) -> int | None:
        """The id of ``unk``, or None without one."""
        return None if self.unk is None else self._ids[self.unk]

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens, pad={self.pad!r}, unk={self.unk!r})"

    def id(self, token: str) -> int:
        """The id of ``token``: ``unk_id`` for an unknown token, a ValueError without ``unk``."""
        found = self._ids.get(token)
        if found is not None:
            return found
        if self.unk is not None:
            return self._ids[self.unk]
        raise ValueError(
            f"token {token!r} is not in the vocabulary, which has no unk token; "
            "build it with unk='<unk>' to map unknown tokens"
        )

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """int64 ``[T]`` ids of ``tokens`` (see `id` for unknown tokens)."""
        tokens = list(tokens)
        get = self._ids.get
        ids = [get(t, -1) for t in tokens]
        if -1 in ids:
            ids = [i if i >= 0 else self.id(t) for i, t in zip(ids, tokens, strict=True)]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> list[str]:
        """The tokens of the ids ``[T]``.

        Raises:
            ValueError: an id outside ``0 .. len-1``.
        """
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        for position, i in enumerate(values):
            if not (isinstance(i, int) and 0 <= i < len(self._tokens)):
                raise ValueError(
                    f"ids[{position}]: expected an integer in [0, {len(self._tokens)}), found {i!r}"
                )
        return [self._tokens[i] for i in values]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description; `from_dict` rebuilds the same vocabulary."""
        reserved = sum(t is not None for t in (self.pad, self.unk))
        return {"tokens": self._tokens[reserved:], "pad": self.pad, "unk": self.unk}

    @classmethod
    def from_dict(
        cls, state: Mapping[str, object], *, path: PathArg | None = None, key: str = "state"
    ) -> Vocabulary:
        """The vocabulary `to_dict` described (``state`` as read back from JSON).

        Raises:
            ReaderError: ``state`` is not such a description; the message names the entry
                (``key``, then the field: ``state['tokens']``) and ``path``, the file it came
                from, when given.

        >>> v = Vocabulary(["a", "b"], pad=None)
        >>> Vocabulary.from_dict(v.to_dict()).tokens
        ('<unk>', 'a', 'b')
        """
        if not isinstance(state, Mapping):
            raise ReaderError(
                f"{key}: expected a vocabulary (a mapping with 'tokens', 'pad', 'unk'), found "
                f"{_shown(state)}",
                path=path,
            )
        tokens, pad, unk = state.get("tokens"), state.get("pad"), state.get("unk")
        if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise ReaderError(
                f"{key}['tokens']: expected a list of strings, found {_shown(tokens)}", path=path
            )
        if not (pad is None or isinstance(pad, str)):
            raise ReaderError(
                f"{key}['pad']: expected a string or None, found {_shown(pad)}", path=path
            )
        if not (unk is None or isinstance(unk, str)):
            raise ReaderError(
                f"{key}['unk']: expected a string or None, found {_shown(unk)}", path=path
            )
        try:
            return cls(tokens, pad=pad, unk=unk)
        except ValueError as e:
            raise ReaderError(f"{key}: expected a valid vocabulary, found {e}", path=path) from None


def _shown(value: object) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def encode_sentences(
    sentences: Iterable[Mapping[str, Sequence[str]]], vocabularies: Mapping[str, Vocabulary]
) -> list[Example]:
    """Examples ``{name: int64 [T]}`` for each sentence, one stream per vocabulary.

    >>> sentences = [{"words": ["the", "cat"], "tags": ["at", "nn"]}]
    >>> words = Vocabulary.build(s["words"] for s in sentences)
    >>> tags = Vocabulary.build((s["tags"] for s in sentences), pad=None, unk=None)
    >>> example = encode_sentences(sentences, {"words": words, "tags": tags})[0]
    >>> example["words"].tolist(), example["tags"].tolist()
    ([2, 3], [0, 1])
    """
    examples = []
    for index, sentence in enumerate(sentences):
        example = {}
        for name, vocabulary in vocabularies.items():
            if name not in sentence:
                raise ValueError(
                    f"sentences[{index}]: expected a column {name!r}, found {sorted(sentence)}"
                )
            if not sentence[name]:
                raise ValueError(f"sentences[{index}][{name!r}]: expected tokens, found none")
            example[name] = vocabulary.encode(sentence[name])
        examples.append(example)
    return examples


_WORD_PIECES = re.compile(r"\w+|\s+|[^\w\s]")


class TextVocabulary:
    """Plain text to ids and back, exactly, at the level of characters or words.

    At the word level the text is cut into runs of word characters, runs of whitespace and single
    other characters (punctuation), so the pieces concatenate back to the text and
    ``decode(encode(text)) == text`` whenever every piece is in the vocabulary. An unknown piece
    raises ValueError by default (``unk=None``); with ``unk="<unk>"`` it maps to that token,
    which then decodes as the string ``"<unk>"``. There is no padding token.

    >>> chars = TextVocabulary.characters("abba cab")
    >>> chars.vocabulary.tokens
    ('a', 'b', ' ', 'c')
    >>> chars.encode("cab").tolist(), chars.decode(chars.encode("a cab"))
    ([3, 0, 1], 'a cab')
    >>> words = TextVocabulary.words("the cat, the hat.")
    >>> words.tokenize("the hat.")
    ['the', ' ', 'hat', '.']
    """

    def __init__(self, vocabulary: Vocabulary, level: Literal["characters", "words"]) -> None:
        if level not in ("characters", "words"):
            raise ValueError(f"level: expected 'characters' or 'words', found {level!r}")
        if vocabulary.pad is not None:
            raise ValueError(f"vocabulary: expected no pad token, found {vocabulary.pad!r}")
        self.vocabulary = vocabulary
        self.level = level

    @classmethod
    def characters(cls, text: str, *, min_freq: int = 1, unk: str | None = None) -> TextVocabulary:
        """The characters of ``text`` (the training text), most frequent first."""
        return cls(Vocabulary.build([text], min_freq=min_freq, pad=None, unk=unk), "characters")

    @classmethod
    def words(
        cls,
        text: str,
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        unk: str | None = None,
    ) -> TextVocabulary:
        """The word, whitespace and punctuation pieces of ``text``, most frequent first."""
        pieces = _WORD_PIECES.findall(text)
        vocabulary = Vocabulary.build(
            [pieces], min_freq=min_freq, max_size=max_size, pad=None, unk=unk
        )
        return cls(vocabulary, "words")

    def __len__(self) -> int:
        return len(self.vocabulary)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` this vocabulary encodes; they concatenate back to ``text``."""
        return list(text) if self.level == "characters" else _WORD_PIECES.findall(text)

    def encode(self, text: str) -> Tensor:
        """int64 ``[N]`` ids of the pieces of ``text``.

        Raises:
            ValueError: a piece outside the vocabulary when it has no ``unk``, with its position.
        """
        pieces = self.tokenize(text)
        get = self.vocabulary._ids.get
        ids = [get(p, -1) for p in pieces]
        if -1 in ids:
            unk_id = self.vocabulary.unk_id
            if unk_id is None:
                index = ids.index(-1)
                position = sum(len(p) for p in pieces[:index])
                raise ValueError(
                    f"text[{position}]: {pieces[index]!r} is not in the vocabulary, which has no "
                    f"unk token; build it with unk='<unk>' to map unknown {self.level}"
                )
            ids = [unk_id if i < 0 else i for i in ids]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of the ids ``[N]``."""
        return "".join(self.vocabulary.decode(ids))


def text_windows(ids: Tensor, length: int, *, stride: int | None = None) -> list[Example]:
    """Language-model examples: ``"input"`` ``ids[s : s+length]`` and ``"target"`` shifted by one.

    Windows start at ``0, stride, 2*stride, ...`` (``stride`` defaults to ``length``: windows
    that do not overlap) as long as the target fits: the last ``< stride`` ids may go unused.

    Args:
        ids: ``[N]`` encoded text.
        length: steps per window.

    Returns:
        dicts of ``"input"`` and ``"target"``, each ``[length]`` with ids' dtype.

    >>> w = text_windows(torch.arange(7), 3)
    >>> [(x["input"].tolist(), x["target"].tolist()) for x in w]
    [([0, 1, 2], [1, 2, 3]), ([3, 4, 5], [4, 5, 6])]
    """
    if ids.dim() != 1:
        raise ValueError(f"ids: expected a 1-D tensor [N], found shape {tuple(ids.shape)}")
    if length < 1:
        raise ValueError(f"length: expected an integer >= 1, found {length}")
    step = length if stride is None else stride
    if step < 1:
        raise ValueError(f"stride: expected None or an integer >= 1, found {stride}")
    return [
        {"input": ids[s : s + length], "target": ids[s + 1 : s + length + 1]}
        for s in range(0, ids.numel() - length, step)
    ]
