"""Semantic role labelling data: the CoNLL-2005 column format, BIO tags per predicate, spans.

In a CoNLL-2005 file each line is a token and a blank line ends a sentence. The first columns
are per token (the word, its part of speech, a parse, named entities, ...); one of them is the
*predicate column*, holding the predicate's lemma on the line of each predicate and ``-``
elsewhere. Then comes one *argument column per predicate*, in the order the predicates occur,
marking that predicate's arguments with brackets: ``(A0*`` opens an argument labelled ``A0``,
``*)`` closes it, ``(V*)`` is a one-token argument, ``*`` is inside or outside. (The older
CoNLL-2004 closing form ``*A0)`` is read too.)

:func:`read_srl` turns every (sentence, predicate) pair into one tagging example: the named
columns, a ``"predicate"`` indicator column (``"1"`` at the predicate, ``"0"`` elsewhere; the
extra input by which a tagger knows which predicate it labels) and ``"tags"`` in BIO form
(``B-A0``, ``I-A0``, ``O``). :func:`bio_to_spans` decodes tags back to labelled spans and
:func:`span_scores` gives the precision, recall and F1 over spans, as the CoNLL evaluation
does (the ``V`` span is left out by default).

>>> spans = brackets_to_spans(["(A0*", "*)", "(V*)", "(A1*", "*", "*)"])
>>> spans
[('A0', 0, 2), ('V', 2, 3), ('A1', 3, 6)]
>>> tags = spans_to_bio(spans, 6)
>>> tags
['B-A0', 'I-A0', 'B-V', 'B-A1', 'I-A1', 'I-A1']
>>> bio_to_spans(tags) == spans
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import PathArg, Sentence, path_list, read_lines

__all__ = [
    "BracketError",
    "Span",
    "bio_to_spans",
    "brackets_to_spans",
    "read_srl",
    "span_scores",
    "spans_to_bio",
]

Span = tuple[str, int, int]
"""``(label, start, end)``: the tokens ``start .. end-1`` of a sentence."""


class BracketError(ValueError):
    """A malformed argument column; ``token`` is the 0-based index of the bad entry and
    ``detail`` the message without the position."""

    def __init__(self, token: int, detail: str) -> None:
        super().__init__(f"token {token + 1}: {detail}")
        self.token, self.detail = token, detail


_BRACKET = re.compile(r"^((?:\([^()*\s]+)*)\*((?:[^()*\s]*\))*)$")


def brackets_to_spans(column: Sequence[str]) -> list[Span]:
    """The labelled spans of one argument column (``(A0*``, ``*``, ``*)``, ``(V*)``, ...).

    Raises:
        BracketError: (a ValueError) a malformed entry, an argument opened inside another
            one, a closing bracket with none open, or an argument left open.
    """
    spans: list[Span] = []
    open_label: str | None = None
    start = 0
    for i, entry in enumerate(column):
        match = _BRACKET.match(entry)
        if match is None:
            raise BracketError(
                i,
                f"expected an argument entry such as '(A0*', '*', '*)' or '(V*)', found {entry!r}",
            )
        opened = [label for label in match.group(1).split("(") if label]
        closed = match.group(2).count(")")
        if opened:
            if open_label is not None or len(opened) > 1:
                raise BracketError(
                    i,
                    f"{entry!r} opens an argument inside another one; the arguments of one "
                    "predicate must not nest",
                )
            open_label, start = opened[0], i
        if closed:
            if open_label is None or closed > 1:
                raise BracketError(i, f"{entry!r} closes an argument that is not open")
            spans.append((open_label, start, i + 1))
            open_label = None
    if open_label is not None:
        raise BracketError(start, f"the argument {open_label!r} opened here is never closed")
    return spans


def spans_to_bio(spans: Iterable[Span], length: int) -> list[str]:
    """BIO tags for ``length`` tokens: ``B-label`` on a span's first token, ``I-label`` on
    the rest, ``O`` outside every span.

    >>> spans_to_bio([("A1", 1, 3)], 4)
    ['O', 'B-A1', 'I-A1', 'O']
    """
    tags = ["O"] * length
    for label, start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(
                f"spans: expected 0 <= start < end <= {length}, found {(label, start, end)}"
            )
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def bio_to_spans(tags: Sequence[str]) -> list[Span]:
    """The spans of BIO ``tags``, read as the CoNLL evaluation reads them: an ``I-X`` that does
    not continue a span of ``X`` starts a new one; ``O`` (or anything without ``B-``/``I-``)
    is outside.

    >>> bio_to_spans(["B-A0", "I-A0", "I-A1", "O", "B-V", "B-A1"])
    [('A0', 0, 2), ('A1', 2, 3), ('V', 4, 5), ('A1', 5, 6)]
    """
    spans: list[Span] = []
    label: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        kind, _, name = tag.partition("-")
        continues = kind == "I" and name == label
        if label is not None and not continues:
            spans.append((label, start, i))
            label = None
        if kind in ("B", "I") and name and not continues:
            label, start = name, i
    if label is not None:
        spans.append((label, start, len(tags)))
    return spans


def span_scores(
    gold: Iterable[Sequence[str]],
    predicted: Iterable[Sequence[str]],
    *,
    ignore: Sequence[str] = ("V",),
) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` of the predicted spans against the gold ones (exact label
    and boundaries), over sentences of BIO tags; spans labelled in ``ignore`` do not count.

    >>> span_scores([["B-A0", "I-A0", "B-V", "B-A1"]], [["B-A0", "O", "B-V", "B-A1"]])
    (0.5, 0.5, 0.5)
    """
    hits = found = wanted = 0
    for g, p in zip(gold, predicted, strict=True):
        gs = {s for s in bio_to_spans(g) if s[0] not in ignore}
        ps = {s for s in bio_to_spans(p) if s[0] not in ignore}
        hits, found, wanted = hits + len(gs & ps), found + len(ps), wanted + len(gs)
    precision = hits / found if found else 0.0
    recall = hits / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def read_srl(
    paths: PathArg | Iterable[PathArg],
    columns: Sequence[str | None] = ("words", "pos", None, None, "predicate"),
) -> list[Sentence]:
    """One tagging example per (sentence, predicate) of CoNLL-2005 column files.

    Args:
        paths: one file or several, read in order.
        columns: names of the leading per-token columns (``None`` drops one); one must be
            ``"predicate"`` (a lemma or ``-`` per token) and one ``"words"``. Every further
            column is an argument column, one per predicate. The default fits the CoNLL-2005
            combined files ``word POS parse NE predicate args...``.

    Returns:
        dicts with the named columns (the predicate column replaced by the indicator
        ``"1"``/``"0"``) and ``"tags"``, the BIO tags of that predicate's arguments.
        A sentence without predicates yields no example.

    Raises:
        ReaderError: a line with too few columns or a different number of columns than the
            sentence's first line, argument columns that do not match the predicates, or a
            malformed argument column, located at its line and column.

    >>> import tempfile
    >>> from pathlib import Path
    >>> lines = ["The DT - (A0* *", "cat NN - *) (A0*)", "saw VBD see (V*) *",
    ...          "it PRP - (A1*) *", "purr VB purr * (V*)", ""]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "a.props"
    ...     _ = path.write_text("\\n".join(lines))
    ...     examples = read_srl(path, columns=["words", "pos", "predicate"])
    >>> [(e["predicate"], e["tags"]) for e in examples]  # doctest: +NORMALIZE_WHITESPACE
    [(['0', '0', '1', '0', '0'], ['B-A0', 'I-A0', 'B-V', 'B-A1', 'O']),
     (['0', '0', '0', '0', '1'], ['O', 'B-A0', 'O', 'O', 'B-V'])]
    """
    names = [c for c in columns if c is not None]
    if "words" not in names or "predicate" not in names or len(set(names)) != len(names):
        raise ValueError(
            f"columns: expected the names 'words' and 'predicate' among {list(columns)}"
        )
    if "tags" in names:
        raise ValueError("columns: 'tags' is the name of the output BIO column; rename it")
    lead = len(columns)
    examples: list[Sentence] = []
    for path in path_list(paths):
        rows: list[tuple[int, str, list[str]]] = []
        lines = read_lines(path)
        for line_no, line in enumerate([*lines, ""], start=1):
            if line.strip():
                fields = line.split()
                if len(fields) < lead or (rows and len(fields) != len(rows[0][2])):
                    wanted = len(rows[0][2]) if rows else f"at least {lead}"
                    raise ReaderError(
                        f"expected {wanted} columns ({list(columns)} then one per predicate), "
                        f"found {len(fields)}",
                        path=path,
                        line=line_no,
                        column=1,
                    )
                rows.append((line_no, line, fields))
            elif rows:
                examples.extend(_sentence_examples(rows, columns, path))
                rows = []
    return examples


def _sentence_examples(
    rows: list[tuple[int, str, list[str]]], columns: Sequence[str | None], path: PathArg
) -> list[Sentence]:
    lead = len(columns)
    table = {name: [r[2][k] for r in rows] for k, name in enumerate(columns) if name is not None}
    predicates = [i for i, p in enumerate(table["predicate"]) if p != "-"]
    arguments = len(rows[0][2]) - lead
    if arguments != len(predicates):
        raise ReaderError(
            f"expected one argument column per predicate ({len(predicates)} predicates), "
            f"found {arguments} argument columns",
            path=path,
            line=rows[0][0],
            column=1,
        )
    out: list[Sentence] = []
    for k, position in enumerate(predicates):
        column = [r[2][lead + k] for r in rows]
        try:
            spans = brackets_to_spans(column)
        except BracketError as error:
            line_no, line, _ = rows[error.token]
            offset = [m.start() for m in re.finditer(r"\S+", line)][lead + k]
            raise ReaderError(
                f"argument column {k + 1}: {error.detail}",
                path=path,
                line=line_no,
                column=offset + 1,
            ) from None
        indicator = ["1" if i == position else "0" for i in range(len(rows))]
        out.append({**table, "predicate": indicator, "tags": spans_to_bio(spans, len(rows))})
    return out
