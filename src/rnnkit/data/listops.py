"""ListOps (Nangia & Bowman 2018): nested list operations on digits, with gold trees.

An example is a prefix expression such as ``[MAX 2 9 [MIN 4 7 ] 0 ]`` and its value (9), one
of 10 classes. Operators: ``[MIN``, ``[MAX``, ``[MED`` (median, truncated to an integer as the
original generator's ``int(np.median(x))``: ``[MED 1 2 ]`` is 1), ``[SM`` (sum modulo 10).

The generator follows the original ``make_data.py``: a node below the maximum depth is an
operator with probability ``operator_p`` = 0.25 (the original's ``VALUE_P``: it draws
``r``, and makes a value when ``r > VALUE_P``), otherwise a digit; an operator takes 2 to
``max_args`` arguments (uniform); at ``max_depth`` a digit is forced. Examples are kept when
their length in tokens is in ``[min_length, max_length]`` (which drops the single digits), and
are unique, as the original collects them in a set. ``ListOpsConfig.long_range_arena()`` is the
Long Range Arena variant (depth 10, up to 10 arguments, 500 to 2000 tokens).

Files are TSV, one example a line: ``label TAB sequence``.

For training, an expression goes into a :class:`~rnnkit.data.MinibatchSource` as a
:class:`ListOpsExpression` (which collates into the :class:`~rnnkit.trees.TreeBatch` of the
gold trees, token ids as inputs) or as its token ids (:func:`listops_token_ids`).

>>> evaluate_listops("[MAX 2 9 [MIN 4 7 ] 0 ]"), evaluate_listops("[SM 8 [MED 1 2 ] 5 ]")
(9, 4)
>>> examples = generate_listops(3, ListOpsConfig(max_depth=3), seed=1)
>>> all(label == evaluate_listops(seq) for label, seq in examples)
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_lines
from rnnkit.trees import Tree, TreeBatch

__all__ = [
    "LISTOPS_VOCAB",
    "NUM_CLASSES",
    "OPERATORS",
    "ListOpsConfig",
    "ListOpsExample",
    "ListOpsExpression",
    "apply_operator",
    "evaluate_listops",
    "generate_listops",
    "listops_token_ids",
    "read_listops_tsv",
    "write_listops_tsv",
]

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
LISTOPS_VOCAB: dict[str, int] = {
    token: i for i, token in enumerate([*OPERATORS, END, *(str(d) for d in range(10))])
}
"""Token ids: the 4 operators, ``]``, then the digits 0-9 (15 tokens)."""

NUM_CLASSES = 10
"""An expression's value is a digit: 10 classes."""


class ListOpsExample(NamedTuple):
    """One example: its value (0-9) and its expression."""

    label: int
    sequence: str


def listops_token_ids(sequence: str) -> Tensor:
    """The flat tokens of an expression as ids ``[T]`` (int64), the input of an LSTM.

    >>> listops_token_ids("[SM 1 2 ]").tolist()
    [3, 6, 7, 4]
    """
    return torch.tensor([LISTOPS_VOCAB[t] for t in sequence.split()], dtype=torch.int64)


@dataclass(frozen=True)
class ListOpsExpression:
    """One expression as a :class:`~rnnkit.data.MinibatchSource` value: a minibatch of them
    collates into the :class:`~rnnkit.trees.TreeBatch` of their gold trees, with the token ids
    of :data:`LISTOPS_VOCAB` as node inputs (internal nodes have none).

    Only the string is kept, and it is parsed when a minibatch is made, so 90,000 training
    expressions hold a few megabytes rather than the trees' nodes.

    >>> batch = ListOpsExpression.collate([ListOpsExpression("[SM 1 2 ]")])
    >>> batch.num_trees, batch.num_nodes, batch.inputs.tolist()
    (1, 7, [3, 6, 7, 4, -1, -1, -1])
    """

    sequence: str

    @classmethod
    def collate(cls, items: Sequence[ListOpsExpression]) -> TreeBatch:
        """The TreeBatch of the items' gold trees (the hook a MinibatchSource calls)."""
        return TreeBatch.from_trees([Tree.from_listops(i.sequence) for i in items], LISTOPS_VOCAB)


@dataclass(frozen=True)
class ListOpsConfig:
    """Generator parameters; the defaults are those of Nangia & Bowman (2018).

    Attributes:
        max_depth: depth at which a digit is forced (the root has depth 1).
        max_args: an operator takes 2 to ``max_args`` arguments.
        operator_p: probability that a node below ``max_depth`` is an operator.
        min_length: shortest kept expression, in tokens (2 drops the single digits).
        max_length: longest kept expression, in tokens.
    """

    max_depth: int = 20
    max_args: int = 5
    operator_p: float = 0.25
    min_length: int = 2
    max_length: int = 100

    @classmethod
    def long_range_arena(cls) -> ListOpsConfig:
        """The Long Range Arena preset: depth 10, up to 10 arguments, 500-2000 tokens."""
        return cls(max_depth=10, max_args=10, min_length=500, max_length=2000)

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError(f"max_depth: expected >= 1, found {self.max_depth}")
        if self.max_args < 2:
            raise ValueError(f"max_args: expected >= 2, found {self.max_args}")
        if not 0.0 <= self.operator_p <= 1.0:
            raise ValueError(f"operator_p: expected a probability, found {self.operator_p}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(
                f"min_length, max_length: expected 1 <= min_length <= max_length, found "
                f"{self.min_length}, {self.max_length}"
            )


def _generate(rng: random.Random, depth: int, config: ListOpsConfig, out: list[str]) -> None:
    """Append the tokens of one random expression at ``depth`` to ``out``."""
    r = rng.random() if depth < config.max_depth else 1.0
    if r > config.operator_p:
        out.append(str(rng.choice(range(10))))
        return
    num_args = rng.randint(2, config.max_args)
    args: list[str] = []
    for _ in range(num_args):
        _generate(rng, depth + 1, config, args)
    out.append(rng.choice(OPERATORS))  # drawn after the arguments, as in the original
    out.extend(args)
    out.append(END)


def generate_listops(
    num_examples: int, config: ListOpsConfig | None = None, seed: int = 0
) -> list[ListOpsExample]:
    """``num_examples`` distinct random examples, reproducible from ``seed``.

    >>> [ex.sequence for ex in generate_listops(2, ListOpsConfig(max_depth=2), seed=0)]
    ['[MAX 6 4 7 5 9 ]', '[MAX 9 4 ]']
    """
    config = ListOpsConfig() if config is None else config
    if num_examples < 0:
        raise ValueError(f"num_examples: expected >= 0, found {num_examples}")
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[ListOpsExample] = []
    while len(examples) < num_examples:
        tokens: list[str] = []
        _generate(rng, 1, config, tokens)
        if not config.min_length <= len(tokens) <= config.max_length:
            continue
        sequence = " ".join(tokens)
        if sequence in seen:
            continue
        seen.add(sequence)
        examples.append(ListOpsExample(evaluate_listops(sequence), sequence))
    return examples


def apply_operator(operator: str, args: Sequence[int]) -> int:
    """The value of one list: ``operator`` (one of :data:`OPERATORS`) applied to its
    arguments' values; the median is truncated to an integer, as the original generator's.

    >>> apply_operator("[MED", [1, 2]), apply_operator("[SM", [8, 4, 5])
    (1, 7)
    """
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[MED":
        return int(np.median(args))
    if operator == "[SM":
        return sum(args) % 10
    raise ValueError(f"operator: expected one of {OPERATORS}, found {operator!r}")


def evaluate_listops(sequence: str | Tree) -> int:
    """The value of an expression (a string or its gold tree from ``Tree.from_listops``).

    Walks the gold tree as the original ``to_value``: ``([OP, a)`` opens a partial
    application, ``(partial, a)`` adds an argument, ``(partial, ])`` applies the operator.
    """
    tree = Tree.from_listops(sequence) if isinstance(sequence, str) else sequence
    values: dict[int, int | tuple[str, list[int]] | str] = {}
    for node in tree.postorder():
        if not node.children:
            token = str(node.token)
            if token.startswith("["):
                values[id(node)] = (token, [])
            elif token == END:
                values[id(node)] = END
            elif token.isdigit():
                values[id(node)] = int(token)
            else:
                raise ValueError(f"sequence: expected a digit, an operator or ']', found {token!r}")
            continue
        left, right = (values[id(c)] for c in node.children)
        if not isinstance(left, tuple):
            raise ValueError(f"sequence: expected an open list on the left, found {left!r}")
        if right == END:
            values[id(node)] = apply_operator(left[0], left[1])
        elif isinstance(right, int):
            values[id(node)] = (left[0], [*left[1], right])
        else:
            raise ValueError(f"sequence: expected a value as argument, found {right!r}")
    result = values[id(tree)]
    if not isinstance(result, int):
        raise ValueError(f"sequence: expected a complete expression, found {result!r}")
    return result


def write_listops_tsv(path: str | PathLike[str], examples: Iterable[ListOpsExample]) -> None:
    """Write ``label TAB sequence`` lines."""
    with Path(path).open("w", encoding="utf-8") as f:
        for label, sequence in examples:
            f.write(f"{label}\t{sequence}\n")


def read_listops_tsv(path: str | PathLike[str]) -> list[ListOpsExample]:
    """Read ``label TAB sequence`` lines (blank lines skipped), checking every expression.

    Errors are :class:`ReaderError` located as ``path:line:column``.
    """
    examples = []
    for line_number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        label_text, tab, sequence = line.partition("\t")
        if not tab:
            raise ReaderError(
                "expected 'label<TAB>sequence', found no tab",
                path=path,
                line=line_number,
                column=len(line) + 1,
            )
        if not (len(label_text) == 1 and label_text in "0123456789"):
            raise ReaderError(
                f"expected a label 0-9, found {label_text!r}",
                path=path,
                line=line_number,
                column=1,
            )
        try:
            Tree.from_listops(sequence)
        except ReaderError as err:
            raise ReaderError(
                err.message,
                path=path,
                line=line_number,
                column=len(label_text) + 1 + (err.column or 1),
            ) from None
        examples.append(ListOpsExample(int(label_text), sequence))
    return examples
