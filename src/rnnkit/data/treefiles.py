"""Files of labelled trees, one tree a line, in three formats (what ``rnnkit tree`` reads).

- ``listops``: ``label TAB expression``, a ListOps prefix list (``7\\t[MAX 2 [MIN 4 7 ] ]``),
  as :func:`~rnnkit.data.listops.write_listops_tsv` writes; the label is a digit 0-9 and every
  token one of the 15 ListOps tokens.
- ``brackets``: Penn-Treebank brackets with the class at the root, as in the Stanford
  Sentiment Treebank (``(3 (2 It) (4 (2 's) (3 good)))``); the root's label is the tree's
  label, the labels of the other nodes are kept on their nodes.
- ``labelled``: ``label TAB tree``, the tree in brackets (its own labels, if any, kept).

:func:`detect_format` tells them apart from the first non-blank line (a tab followed by ``(``:
``labelled``; a tab otherwise: ``listops``; no tab and a ``(`` first: ``brackets``).
:func:`read_tree_file` checks every line and returns one :class:`TreeLine` per tree; an error
is a :class:`~rnnkit.data.errors.ReaderError` located as ``path:line:column``. Labels are
integers when written as integers (``3``), else strings (``pos``); a line may have no label
when ``labels_required`` is False (files to predict): a ``listops`` or ``labelled`` line
without a tab, a ``brackets`` tree whose root has no label.

For training, a tree goes into a :class:`~rnnkit.data.MinibatchSource` as a
:class:`ParsedTree` (collated into a :class:`~rnnkit.trees.TreeBatch`) or as the token ids of
its leaves in a :class:`TokenSequence` (collated into a :class:`~rnnkit.SequenceBatch`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "sst.txt"
>>> _ = path.write_text("(3 (2 It) (4 (2 's) (3 good)))\\n(1 (1 Dull))\\n")
>>> detect_format(path)
'brackets'
>>> [(t.line, t.label, t.text) for t in read_tree_file(path)]  # doctest: +NORMALIZE_WHITESPACE
[(1, 3, "(3 (2 It) (4 (2 's) (3 good)))"), (2, 1, '(1 (1 Dull))')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import NamedTuple

import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_lines
from rnnkit.data.listops import LISTOPS_VOCAB
from rnnkit.sequences import SequenceBatch
from rnnkit.trees import Tree, TreeBatch

__all__ = [
    "TREE_FILE_FORMATS",
    "UNKNOWN",
    "ParsedTree",
    "TokenSequence",
    "TreeLine",
    "class_list",
    "detect_format",
    "parse_tree",
    "read_tree_file",
    "vocabulary",
]

TREE_FILE_FORMATS: tuple[str, ...] = ("listops", "brackets", "labelled")
UNKNOWN = "<unk>"
"""The token that stands for every token not seen in training (id 0 of :func:`vocabulary`)."""

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")

Label = int | str


class TreeLine(NamedTuple):
    """One tree of a file: its 1-based line, its label (None when it has none), the tree's
    text as written (for ``labelled`` and ``listops``, the part after the tab) and the 1-based
    column where the label starts."""

    line: int
    label: Label | None
    text: str
    label_column: int = 1


def _label(text: str) -> Label:
    """An integer when ``text`` is an integer written canonically, else the text."""
    return int(text) if _INTEGER.match(text) and len(text) < 19 else text


def detect_format(path: str | PathLike[str]) -> str:
    """``listops``, ``brackets`` or ``labelled``, from the first non-blank line of ``path``."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        _, tab, rest = line.partition("\t")
        if tab:
            return "labelled" if rest.lstrip().startswith("(") else "listops"
        if line.lstrip().startswith("("):
            return "brackets"
        raise ReaderError(
            "cannot tell the format: expected 'label<TAB>expression' (listops), "
            f"'label<TAB>(tree)' (labelled) or '(label ...)' (brackets), found {line[:40]!r}; "
            "give --format",
            path=path,
            line=number,
            column=1,
        )
    raise ReaderError("expected at least one tree, found no non-blank line", path=path)


def parse_tree(text: str, format: str) -> Tree:
    """The tree of one line's tree text in ``format`` (ListOps gold tree, or brackets)."""
    if format == "listops":
        return Tree.from_listops(text)
    if format in ("brackets", "labelled"):
        return Tree.from_brackets(text)
    raise ValueError(f"format: expected one of {TREE_FILE_FORMATS}, found {format!r}")


def read_tree_file(
    path: str | PathLike[str], format: str = "auto", *, labels_required: bool = True
) -> list[TreeLine]:
    """Every tree of ``path`` (blank lines skipped), each line checked.

    Errors (:class:`ReaderError`, ``path:line:column``): an unbalanced bracket or list, a
    missing tab or label (when ``labels_required``), a ListOps label other than 0-9 or token
    outside the 15 ListOps tokens, a file with no tree.
    """
    if format == "auto":
        format = detect_format(path)
    if format not in TREE_FILE_FORMATS:
        raise ValueError(f"format: expected one of {TREE_FILE_FORMATS}, found {format!r}")
    out: list[TreeLine] = []
    for number, line in enumerate(read_lines(path), start=1):
        if line.strip():
            out.append(_read_line(path, number, line, format, labels_required))
    if not out:
        raise ReaderError(
            f"expected at least one {format} tree, found no non-blank line", path=path
        )
    return out


def _read_line(
    path: str | PathLike[str], number: int, line: str, format: str, labels_required: bool
) -> TreeLine:
    label: Label | None = None
    start = 0
    label_column = 1
    if format in ("listops", "labelled"):
        label_text, tab, _ = line.partition("\t")
        if tab:
            start = len(label_text) + 1
            if not label_text.strip():
                raise ReaderError(
                    "expected a label before the tab, found none", path=path, line=number, column=1
                )
            label = _label(label_text.strip())
        elif labels_required:
            raise ReaderError(
                f"expected 'label<TAB>{'expression' if format == 'listops' else 'tree'}', "
                "found no tab",
                path=path,
                line=number,
                column=len(line) + 1,
            )
        if format == "listops" and label is not None and label not in range(10):
            raise ReaderError(
                f"expected a ListOps label 0-9, found {label_text!r}",
                path=path,
                line=number,
                column=1,
            )
    text = line[start:]
    try:  # padded to the tree's place in the line, so columns in messages are the line's
        tree = parse_tree(" " * start + text, format)
    except ReaderError as err:
        raise ReaderError(err.message, path=path, line=number, column=err.column) from None
    if format == "listops":
        _check_listops_tokens(path, number, start, text)
    elif format == "brackets":
        label = tree.label
        opening = re.match(r"\s*\(?\s*", text)
        label_column = 1 + (opening.end() if opening else 0)
        if label is None and labels_required:
            raise ReaderError(
                "expected a label at the root, '(label ...)', found none",
                path=path,
                line=number,
                column=label_column,
            )
    return TreeLine(number, label, text.strip(), label_column)


def _check_listops_tokens(path: str | PathLike[str], number: int, start: int, text: str) -> None:
    for match in re.finditer(r"\S+", text):
        if match.group() not in LISTOPS_VOCAB:
            raise ReaderError(
                f"expected a ListOps token ({', '.join(LISTOPS_VOCAB)}), found {match.group()!r}",
                path=path,
                line=number,
                column=start + match.start() + 1,
            )


def class_list(labels: Iterable[Label]) -> list[Label]:
    """The classes of a training file: its distinct labels, integers in numeric order first,
    then strings in alphabetical order; a label's class index is its position here.

    >>> class_list(["pos", 3, "neg", 1, 3])
    [1, 3, 'neg', 'pos']
    """
    distinct = set(labels)
    return sorted(distinct, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, v))


def vocabulary(trees: Iterable[Tree]) -> list[str]:
    """``<unk>`` then the distinct tokens of the trees' nodes in alphabetical order.

    >>> vocabulary([Tree.from_brackets("(1 (0 b) (1 a))")])
    ['<unk>', 'a', 'b']
    """
    tokens = {node.token for tree in trees for node in tree.nodes() if node.token is not None}
    tokens.discard(UNKNOWN)
    return [UNKNOWN, *sorted(tokens)]


@dataclass(frozen=True, eq=False)
class ParsedTree:
    """A tree as a :class:`~rnnkit.data.MinibatchSource` value: ``tree`` carries token ids as
    node values (see :meth:`Tree.map_tokens`) and class indices (or None) as node labels;
    ``text`` is the line it was read from. A minibatch of them collates into a TreeBatch.

    >>> t = ParsedTree.make("(1 (0 b) (1 a))", "brackets", {"<unk>": 0, "a": 1}, {0: 0, 1: 1})
    >>> batch = ParsedTree.collate([t])
    >>> batch.inputs.tolist(), batch.root_labels.tolist()
    ([0, 1, -1], [1])
    """

    text: str
    tree: Tree

    @classmethod
    def make(
        cls, text: str, format: str, vocab: Mapping[str, int], classes: Mapping[Label, int]
    ) -> ParsedTree:
        """Parse ``text`` and map its tokens (unknown ones to ``vocab[UNKNOWN]``) and labels
        (labels that are no class: None)."""
        tree = parse_tree(text, format).map_tokens(vocab, unknown=vocab[UNKNOWN])
        for node in tree.nodes():
            node.label = None if node.label is None else classes.get(node.label)
        return cls(text, tree)

    @classmethod
    def collate(cls, items: Sequence[ParsedTree]) -> TreeBatch:
        """The TreeBatch of the items' trees (the hook a MinibatchSource calls)."""
        return TreeBatch.from_trees([item.tree for item in items])


@dataclass(frozen=True, eq=False)
class TokenSequence:
    """The leaves of a tree as token ids ``[T]``, with the line's ``text``; a minibatch of them
    collates into a :class:`~rnnkit.SequenceBatch` (the input of an LSTM).

    >>> s = TokenSequence.make("(1 (0 b) (1 z))", "brackets", {"<unk>": 0, "b": 1})
    >>> s.ids.tolist(), TokenSequence.collate([s]).lengths.tolist()
    ([1, 0], [2])
    """

    text: str
    ids: Tensor

    @classmethod
    def make(cls, text: str, format: str, vocab: Mapping[str, int]) -> TokenSequence:
        """The ids of the leaves' tokens of ``text``, unknown ones ``vocab[UNKNOWN]``."""
        unknown = vocab[UNKNOWN]
        leaves = [leaf.token for leaf in parse_tree(text, format).leaves()]
        ids = [vocab.get(tok, unknown) if tok is not None else unknown for tok in leaves]
        return cls(text, torch.tensor(ids, dtype=torch.int64))

    @classmethod
    def collate(cls, items: Sequence[TokenSequence]) -> SequenceBatch:
        """The SequenceBatch of the items' ids (the hook a MinibatchSource calls)."""
        return SequenceBatch.from_list([item.ids for item in items])
