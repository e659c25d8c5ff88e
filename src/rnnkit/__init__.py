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
from rnnkit.saving import export_onnx, load, register_module, save
from rnnkit.sequences import SequenceBatch
from rnnkit.training import (
    Checkpoint,
    Criterion,
    EarlyStopping,
    ProgressPrinter,
    Trainer,
    classification_error,
    cross_entropy_with_softmax,
    squared_error,
)

__all__ = [
    "Activation",
    "Bidirectional",
    "Cell",
    "Checkpoint",
    "Criterion",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "Fold",
    "GRUCell",
    "GRUDCell",
    "LSTMCell",
    "Layer",
    "MinGRUCell",
    "MinLSTMCell",
    "MinibatchSource",
    "ProgressPrinter",
    "RNNCell",
    "Recurrence",
    "RecurrenceFrom",
    "SequenceBatch",
    "Sequential",
    "Trainer",
    "Unfold",
    "classification_error",
    "cross_entropy_with_softmax",
    "export_onnx",
    "load",
    "register_module",
    "save",
    "squared_error",
]
__version__ = "0.1.0"
