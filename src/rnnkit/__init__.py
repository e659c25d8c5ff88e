"""rnnkit: recurrent and recursive neural networks on PyTorch.

The public index: every name a user needs, imported from the module that defines it.
"""

from rnnkit.cells import (
    Cell,
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    RNNCell,
)
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.layers import Activation, Dense, Dropout, Embedding, Layer, Sequential
from rnnkit.recurrence import Bidirectional, Fold, Recurrence, RecurrenceFrom, Unfold
from rnnkit.sequences import SequenceBatch

__all__ = [
    "Activation",
    "Bidirectional",
    "Cell",
    "Dense",
    "Dropout",
    "Embedding",
    "Fold",
    "GRUCell",
    "GRUDCell",
    "LSTMCell",
    "Layer",
    "MinGRUCell",
    "MinLSTMCell",
    "MinibatchSource",
    "RNNCell",
    "Recurrence",
    "RecurrenceFrom",
    "SequenceBatch",
    "Sequential",
    "Unfold",
]
__version__ = "0.1.0"
