"""The models of the long-range memory tasks (``rnnkit longrange``): the cells compared and
the two model shapes, built from rnnkit's own layers (so a saved one loads like any other).

Cells (:data:`CELLS`): ``'rnn'`` (tanh), ``'irnn'`` (relu with ``weight_hh = I``, zero biases
and input weights drawn from N(0, 0.001^2), Le, Jaitly & Hinton 2015), ``'lstm'`` and
``'gru'``, all on the fused kernel. :func:`adding_model` reads the sum out of the last state;
:func:`copy_model` gives a symbol at every step.

>>> from rnnkit import SequenceBatch
>>> from rnnkit.data.synthetic import adding_problem
>>> x, _ = adding_problem(3, 6, seed=0)
>>> adding_model("gru", 5)(SequenceBatch.from_padded(x, [6, 6, 6])).shape
torch.Size([3, 1])
"""

from __future__ import annotations

import torch
from torch import nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.layers import Dense, Embedding, Sequential
from rnnkit.recurrence import Fold, Recurrence

__all__ = ["CELLS", "adding_model", "copy_model", "irnn_cell", "make_cell"]

CELLS: tuple[str, ...] = ("rnn", "irnn", "lstm", "gru")


def irnn_cell(input_size: int, hidden_size: int, input_std: float = 1e-3) -> RNNCell:
    """Le et al.'s IRNN: a relu RNNCell with ``weight_hh = I``, zero biases, and input weights
    drawn from N(0, ``input_std``^2) (from torch's global generator).

    >>> cell = irnn_cell(2, 3)
    >>> cell.weight_hh.tolist(), cell.bias_hh.tolist(), cell.nonlinearity
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0], 'relu')
    """
    cell = RNNCell(input_size, hidden_size, nonlinearity="relu")
    with torch.no_grad():
        cell.weight_hh.copy_(torch.eye(hidden_size))
        nn.init.normal_(cell.weight_ih, 0.0, input_std)
        for bias in (cell.bias_ih, cell.bias_hh):
            if bias is not None:
                bias.zero_()
    return cell


def make_cell(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    """A cell of one of the :data:`CELLS` kinds, with torch's default initialisation (the
    IRNN's own for ``'irnn'``)."""
    if kind == "rnn":
        return RNNCell(input_size, hidden_size)
    if kind == "irnn":
        return irnn_cell(input_size, hidden_size)
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size)
    if kind == "gru":
        return GRUCell(input_size, hidden_size)
    raise ValueError(f"kind: expected one of {list(CELLS)}, found {kind!r}")


def adding_model(kind: str, hidden_size: int) -> Sequential:
    """``Fold(cell) >> Dense(H, 1)``: the sum read out from the last state."""
    return Fold(make_cell(kind, 2, hidden_size)) >> Dense(hidden_size, 1)


def copy_model(kind: str, hidden_size: int, num_symbols: int = 8) -> Sequential:
    """``Embedding(S + 2, S + 2) >> Recurrence(cell) >> Dense(H, S + 2)``: a symbol per step."""
    vocab = num_symbols + 2
    return Sequential(
        [
            Embedding(vocab, vocab),
            Recurrence(make_cell(kind, vocab, hidden_size)),
            Dense(hidden_size, vocab),
        ]
    )
