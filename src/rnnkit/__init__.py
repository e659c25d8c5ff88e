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
from rnnkit.onnx_export import export_onnx
from rnnkit.recurrence import Bidirectional, Fold, Recurrence, RecurrenceFrom, Unfold
from rnnkit.recursive import (
    ChildSumTreeLSTMCell,
    NaryTreeLSTMCell,
    Recursive,
    RecursiveCell,
    RNTNCell,
)
from rnnkit.saving import load, register_module, save
from rnnkit.sequences import SequenceBatch
from rnnkit.training import (
    Callback,
    Checkpoint,
    Criterion,
    CSVLogger,
    EarlyStopping,
    GradientMonitor,
    LearningRateLogger,
    ModelInputError,
    NonFiniteError,
    ProgressBar,
    ProgressPrinter,
    TensorBoardLogger,
    Trainer,
    Validation,
    classification_error,
    cross_entropy_with_softmax,
    squared_error,
)
from rnnkit.trees import Tree, TreeBatch

__all__ = [
    "Activation",
    "Bidirectional",
    "CSVLogger",
    "Callback",
    "Cell",
    "Checkpoint",
    "ChildSumTreeLSTMCell",
    "Criterion",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "Fold",
    "GRUCell",
    "GRUDCell",
    "GradientMonitor",
    "LSTMCell",
    "Layer",
    "LearningRateLogger",
    "MinGRUCell",
    "MinLSTMCell",
    "MinibatchSource",
    "ModelInputError",
    "NaryTreeLSTMCell",
    "NonFiniteError",
    "ProgressBar",
    "ProgressPrinter",
    "RNNCell",
    "RNTNCell",
    "Recurrence",
    "RecurrenceFrom",
    "Recursive",
    "RecursiveCell",
    "SequenceBatch",
    "Sequential",
    "TensorBoardLogger",
    "Trainer",
    "Tree",
    "TreeBatch",
    "Unfold",
    "Validation",
    "classification_error",
    "cross_entropy_with_softmax",
    "export_onnx",
    "load",
    "register_module",
    "save",
    "squared_error",
]
__version__ = "0.1.0"
