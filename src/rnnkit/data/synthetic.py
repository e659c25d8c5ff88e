"""The classic long-range memory tasks, generated from a seed.

* :func:`adding_problem` (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015):
  ``T`` steps of two channels, a value drawn from U(0, 1) and a marker that is 1 at exactly
  two steps, one in the first half ``[0, T//2)`` and one in the second half ``[T//2, T)``.
  The target is the sum of the two marked values. Always predicting 1.0, the mean of the
  target, gives a mean squared error of ``Var(u + v) = 2/12 ≈ 0.167`` (:data:`ADDING_BASELINE_MSE`).
* :func:`copy_task` (Arjovsky, Shah & Bengio 2016): ``K`` symbols drawn from ``1..S``, then
  ``delay - 1`` blanks (0), a delimiter (``S + 1``), and ``K`` more blanks; the target is
  blanks for the first ``delay + K`` steps and the ``K`` symbols for the last ``K``. A model
  that outputs blanks and then guesses uniformly scores a cross-entropy per step of
  ``K log S / (delay + 2K)`` (:func:`copy_baseline`).
* :func:`selective_copy` (Gu & Dao 2023, the selective copying task of the Mamba paper):
  ``K`` data tokens drawn from ``1..V-2`` at random distinct positions among ``L`` steps of
  noise (0), then ``K`` markers (``V - 1``); the target is the data tokens in order at the
  marker steps. Where the tokens sit varies from sequence to sequence, so a time-invariant
  recurrence (a fixed convolution) cannot solve it; a uniform guess is right with
  probability ``1 / (V - 2)`` (:func:`selective_copy_baseline`).

All three return plain tensors (``[B, T, ...]`` inputs, targets); :func:`as_examples` turns them
into the examples :class:`~rnnkit.data.MinibatchSource` batches.

Files (for ``rnnkit predict``): an adding-problem file is CSV, one step a line
``value,marker``, a blank line between sequences and an optional header line
``value,marker`` (:func:`read_adding_csv`, :func:`write_adding_csv`); a copy-task file has one
sequence a line, its symbol ids separated by spaces (:func:`read_copy_file`,
:func:`write_copy_file`).

>>> x, y = adding_problem(2, 6, seed=0)
>>> x.shape, y.shape, x[:, :, 1].sum(dim=1).tolist()
(torch.Size([2, 6, 2]), torch.Size([2, 1]), [2.0, 2.0])
>>> bool(torch.allclose((x[..., 0] * x[..., 1]).sum(dim=1, keepdim=True), y))
True
>>> x, y = copy_task(1, delay=3, num_copy=2, num_symbols=8, seed=0)
>>> x[0].tolist()[2:], y[0].tolist()[:5]   # after the 2 symbols: 2 blanks, "go", 2 blanks
([0, 0, 9, 0, 0], [0, 0, 0, 0, 0])
>>> bool((y[0, -2:] == x[0, :2]).all())
True
>>> x, y = selective_copy(1, length=6, num_copy=2, vocab_size=5, seed=0)
>>> x.shape, y[0].tolist()[:6], x[0, -2:].tolist()   # 6 steps of noise and data, 2 markers
(torch.Size([1, 8]), [0, 0, 0, 0, 0, 0], [4, 4])
>>> x[0, :6][x[0, :6] > 0].tolist() == y[0, -2:].tolist()
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import PathArg, end_of, read_lines

__all__ = [
    "ADDING_BASELINE_MSE",
    "adding_problem",
    "as_examples",
    "copy_baseline",
    "copy_task",
    "read_adding_csv",
    "read_copy_file",
    "selective_copy",
    "selective_copy_baseline",
    "write_adding_csv",
    "write_copy_file",
]

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1.0 on the adding problem: the variance of a sum of two U(0, 1)."""


def _check_count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}: expected an integer >= {least}, found {value!r}")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def adding_problem(
    num_examples: int, length: int, seed: int, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``num_examples`` sequences of the adding problem of length ``length`` (at least 2).

    Returns ``x [B, T, 2]`` (channel 0 the values, channel 1 the two markers) and the target
    ``y [B, 1]``, the sum of the two marked values. The same ``seed`` gives the same data.

    >>> x, y = adding_problem(1, 4, seed=3)
    >>> x[0, :, 1].tolist()   # one marker in steps 0-1, one in steps 2-3
    [0.0, 1.0, 0.0, 1.0]
    """
    _check_count("num_examples", num_examples, 1)
    _check_count("length", length, 2)
    g = _generator(seed)
    values = torch.rand(num_examples, length, generator=g, dtype=torch.float64)
    half = length // 2
    first = torch.randint(0, half, (num_examples,), generator=g)
    second = torch.randint(half, length, (num_examples,), generator=g)
    markers = torch.zeros(num_examples, length, dtype=torch.float64)
    rows = torch.arange(num_examples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    x = torch.stack([values, markers], dim=-1)
    return x.to(dtype), target.unsqueeze(1).to(dtype)


def copy_task(
    num_examples: int, delay: int, num_copy: int = 10, num_symbols: int = 8, *, seed: int
) -> tuple[Tensor, Tensor]:
    """The copy task: remember ``num_copy`` symbols for ``delay`` steps, then repeat them.

    Returns ids ``x [B, delay + 2K]`` and ``y [B, delay + 2K]`` (int64). Symbol 0 is the
    blank, ``1..num_symbols`` the data, ``num_symbols + 1`` the delimiter that says "now
    repeat", placed at step ``K + delay - 1``; the vocabulary has ``num_symbols + 2`` ids.
    """
    _check_count("num_examples", num_examples, 1)
    _check_count("delay", delay, 1)
    _check_count("num_copy", num_copy, 1)
    _check_count("num_symbols", num_symbols, 1)
    g = _generator(seed)
    total = delay + 2 * num_copy
    symbols = torch.randint(1, num_symbols + 1, (num_examples, num_copy), generator=g)
    x = torch.zeros(num_examples, total, dtype=torch.int64)
    y = torch.zeros(num_examples, total, dtype=torch.int64)
    x[:, :num_copy] = symbols
    x[:, num_copy + delay - 1] = num_symbols + 1
    y[:, -num_copy:] = symbols
    return x, y


def copy_baseline(delay: int, num_copy: int = 10, num_symbols: int = 8) -> float:
    """Cross-entropy per step (nats) of predicting blanks, then a uniform guess of the symbols.

    >>> round(copy_baseline(100, 10, 8), 4)   # 10 log 8 / 120, as in Arjovsky et al. (2016)
    0.1733
    """
    _check_count("delay", delay, 1)
    _check_count("num_copy", num_copy, 1)
    _check_count("num_symbols", num_symbols, 1)
    return num_copy * math.log(num_symbols) / (delay + 2 * num_copy)


def selective_copy(
    num_examples: int, length: int, num_copy: int = 16, vocab_size: int = 16, *, seed: int
) -> tuple[Tensor, Tensor]:
    """The selective copying task (Gu & Dao 2023): find ``num_copy`` tokens among noise and
    repeat them in order after the markers.

    .. code-block:: text

        x = [noise and data: L steps] [marker] * K        K = num_copy, L = length
        y = [0] * L                   [the K data tokens of x, in order]

    Token 0 is the noise (the white token of the paper's figure), ``1..vocab_size-2`` the data,
    ``vocab_size - 1`` the marker; the vocabulary has ``vocab_size`` ids (the paper's setting:
    16, with 16 tokens to copy among 4,096 steps). The ``K`` data tokens are drawn uniformly
    and placed at ``K`` distinct positions of the first ``L`` steps, drawn uniformly. Only the
    last ``K`` target steps are scored; the others are 0.

    Returns ids ``x [B, L + K]`` and ``y [B, L + K]`` (int64). The same ``seed`` gives the
    same data.

    >>> x, y = selective_copy(2, length=10, num_copy=3, seed=0)
    >>> (x[:, :10] > 0).sum(dim=1).tolist(), x[:, 10:].unique().tolist()
    ([3, 3], [15])
    """
    _check_count("num_examples", num_examples, 1)
    _check_count("num_copy", num_copy, 1)
    _check_count("vocab_size", vocab_size, 3)
    _check_count("length", length, 1)
    if length < num_copy:
        raise ValueError(
            f"length: expected at least num_copy = {num_copy} steps to hold the data tokens, "
            f"found {length}"
        )
    g = _generator(seed)
    tokens = torch.randint(1, vocab_size - 1, (num_examples, num_copy), generator=g)
    keys = torch.rand(num_examples, length, generator=g)
    positions = keys.argsort(dim=1)[:, :num_copy].sort(dim=1).values
    x = torch.zeros(num_examples, length + num_copy, dtype=torch.int64)
    x.scatter_(1, positions, tokens)
    x[:, length:] = vocab_size - 1
    y = torch.zeros_like(x)
    y[:, length:] = tokens
    return x, y


def selective_copy_baseline(vocab_size: int = 16) -> float:
    """Accuracy on the copied tokens of a uniform guess among the ``vocab_size - 2`` data
    tokens (its cross-entropy per copied token is ``log(vocab_size - 2)`` nats).

    >>> round(selective_copy_baseline(16), 4)   # the paper's vocabulary: 14 data tokens
    0.0714
    """
    _check_count("vocab_size", vocab_size, 3)
    return 1.0 / (vocab_size - 2)


def as_examples(x: Tensor, y: Tensor, names: Sequence[str] = ("x", "y")) -> list[dict[str, Tensor]]:
    """Examples ``{names[0]: x[i], names[1]: y[i]}`` for :class:`~rnnkit.data.MinibatchSource`.

    A target with as many steps as ``x`` (``y [B, T, ...]``, the copy task) stays a sequence;
    any other (``y [B, F]``, the adding problem) becomes one sample ``[1, F]``, which the
    source batches into a ``[B, F]`` tensor.

    >>> x, y = adding_problem(3, 4, seed=0)
    >>> ex = as_examples(x, y)
    >>> len(ex), ex[0]["x"].shape, ex[0]["y"].shape
    (3, torch.Size([4, 2]), torch.Size([1, 1]))
    """
    if len(names) != 2:
        raise ValueError(f"names: expected two stream names, found {list(names)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"y: expected {x.shape[0]} examples (the first dimension of x), found {y.shape[0]}"
        )
    per_step = y.dim() >= 2 and y.shape[1] == x.shape[1]
    return [
        {names[0]: xi, names[1]: yi if per_step else yi.reshape(1, *yi.shape)}
        for xi, yi in zip(x, y, strict=True)
    ]


ADDING_HEADER = "value,marker"


def write_adding_csv(path: PathArg, sequences: Iterable[Tensor]) -> None:
    """Write adding-problem inputs (each ``[T, 2]``: value, marker) as :func:`read_adding_csv`
    reads them, with the header line."""
    blocks = []
    for x in sequences:
        blocks.append("\n".join(f"{float(v)!r},{float(m):g}" for v, m in x.tolist()))
    with open(path, "w", encoding="utf-8") as f:
        f.write(ADDING_HEADER + "\n" + "\n\n".join(blocks) + "\n")


def read_adding_csv(path: PathArg) -> list[Tensor]:
    """Adding-problem inputs from a CSV file: one step a line, ``value,marker`` (two numbers),
    a blank line between sequences, an optional first line ``value,marker``.

    Returns one float32 tensor ``[T, 2]`` per sequence. Errors are :class:`ReaderError` at
    ``path:line:column``.

    >>> import tempfile, os
    >>> x, _ = adding_problem(2, 3, seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_adding_csv(os.path.join(tmp, "a.csv"), x)
    ...     back = read_adding_csv(os.path.join(tmp, "a.csv"))
    >>> [bool(torch.equal(a, b)) for a, b in zip(back, x)]
    [True, True]
    """
    sequences: list[Tensor] = []
    rows: list[list[float]] = []
    lines = read_lines(path)
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if number == 1 and text.replace(" ", "") == ADDING_HEADER:
            continue
        if not text:
            if rows:
                sequences.append(torch.tensor(rows, dtype=torch.float32))
                rows = []
            continue
        pieces = line.split(",")
        if len(pieces) != 2:
            raise ReaderError(
                f"expected two columns 'value,marker', found {len(pieces)}",
                path=path,
                line=number,
                column=1,
            )
        row = []
        column = 1
        for piece in pieces:
            try:
                value = float(piece)
            except ValueError:
                raise ReaderError(
                    f"expected a number, found {piece.strip()!r}",
                    path=path,
                    line=number,
                    column=column,
                ) from None
            if not math.isfinite(value):
                raise ReaderError(
                    f"expected a finite number, found {piece.strip()!r}",
                    path=path,
                    line=number,
                    column=column,
                )
            row.append(value)
            column += len(piece) + 1
        rows.append(row)
    if rows:
        sequences.append(torch.tensor(rows, dtype=torch.float32))
    if not sequences:
        last, column = end_of(lines)
        raise ReaderError(
            "expected at least one sequence of 'value,marker' lines, found none",
            path=path,
            line=last,
            column=column,
        )
    return sequences


def write_copy_file(path: PathArg, sequences: Iterable[Tensor]) -> None:
    """Write copy-task inputs (each ``[T]`` ids) one sequence a line, as
    :func:`read_copy_file` reads them."""
    with open(path, "w", encoding="utf-8") as f:
        for ids in sequences:
            f.write(" ".join(str(int(i)) for i in ids.tolist()) + "\n")


def read_copy_file(path: PathArg, num_symbols: int = 8) -> list[Tensor]:
    """Copy-task inputs: one sequence a line, symbol ids separated by spaces (0 the blank,
    ``1..num_symbols`` the data, ``num_symbols + 1`` the delimiter); blank lines are skipped.

    Returns one int64 tensor ``[T]`` per sequence. Errors are :class:`ReaderError` at
    ``path:line:column``.

    >>> import tempfile, os
    >>> x, _ = copy_task(2, delay=3, num_copy=2, seed=0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_copy_file(os.path.join(tmp, "c.txt"), x)
    ...     back = read_copy_file(os.path.join(tmp, "c.txt"))
    >>> bool(torch.equal(torch.stack(back), x))
    True
    """
    _check_count("num_symbols", num_symbols, 1)
    sequences = []
    lines = read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        ids = []
        column = 1
        for piece in line.split(" "):
            if piece:
                digits = piece.isascii() and piece.isdigit()
                significant = piece.lstrip("0") or "0"  # int() refuses 4,300+ digits, zeros too
                if not digits or len(significant) > 18 or int(significant) > num_symbols + 1:
                    raise ReaderError(
                        f"expected a symbol id 0-{num_symbols + 1}, found {piece!r}",
                        path=path,
                        line=number,
                        column=column,
                    )
                ids.append(int(significant))
            column += len(piece) + 1
        sequences.append(torch.tensor(ids, dtype=torch.int64))
    if not sequences:
        last, column = end_of(lines)
        raise ReaderError(
            "expected at least one line of symbol ids, found none",
            path=path,
            line=last,
            column=column,
        )
    return sequences
