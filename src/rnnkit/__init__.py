"""rnnkit: recurrent and recursive neural networks on PyTorch.

The public index: every name a user needs, from the module that defines it. The names load on
first use (PEP 562), so ``import rnnkit`` itself imports neither torch nor any submodule and
``rnnkit --help`` starts without paying for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.backtesting import Backtest, backtest, model_predictor
    from rnnkit.cells import (
        Cell,
        FusedKernel,
        GRUCell,
        GRUDCell,
        LSTMCell,
        MinGRUCell,
        MinLSTMCell,
        RNNCell,
    )
    from rnnkit.data.ctf import CTFWarning
    from rnnkit.data.errors import ReaderError
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.data.panel import (
        Panel,
        PanelSplit,
        PanelWarning,
        load_panel,
        panel_windows,
        split_panel,
    )
    from rnnkit.layers import Activation, Dense, Dropout, Embedding, Lambda, Layer, Sequential
    from rnnkit.layers.revin import RevIN, RevINForecaster
    from rnnkit.layers.sequence import (
        Delay,
        LayerNormalization,
        PastValueWindow,
        Segments,
        Stabilizer,
        UnfoldFrom,
    )
    from rnnkit.lazy import UninitializedModelError, count_parameters
    from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
    from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell
    from rnnkit.modern.matrix import GLACell, Mamba2Cell, MLSTMCell
    from rnnkit.onnx_export import export_onnx, export_step_onnx
    from rnnkit.probabilistic import (
        GaussianHead,
        QuantileHead,
        StudentTHead,
        crps_from_quantiles,
        crps_from_samples,
        crps_gaussian,
        crps_student_t,
        gaussian_nll,
        interval_coverage,
        interval_scale,
        interval_width,
        mean_pinball_loss,
        quantile_loss,
        scale_interval,
        student_t_nll,
    )
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
    from rnnkit.serialization import CorruptFileError, FileWriteError
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
    "Backtest",
    "Bidirectional",
    "CSVLogger",
    "CTFWarning",
    "Callback",
    "Cell",
    "Checkpoint",
    "ChildSumTreeLSTMCell",
    "CorruptFileError",
    "Criterion",
    "Delay",
    "DeltaNetCell",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "FileWriteError",
    "Fold",
    "FusedKernel",
    "GLACell",
    "GRUCell",
    "GRUDCell",
    "GatedDeltaNetCell",
    "GaussianHead",
    "GradientMonitor",
    "HawkCell",
    "LRUCell",
    "LSTMCell",
    "Lambda",
    "Layer",
    "LayerNormalization",
    "LearningRateLogger",
    "MLSTMCell",
    "Mamba2Cell",
    "MambaCell",
    "MinGRUCell",
    "MinLSTMCell",
    "MinibatchSource",
    "ModelInputError",
    "NaryTreeLSTMCell",
    "NonFiniteError",
    "Panel",
    "PanelSplit",
    "PanelWarning",
    "PastValueWindow",
    "ProgressBar",
    "ProgressPrinter",
    "QuantileHead",
    "RGLRUCell",
    "RNNCell",
    "RNTNCell",
    "ReaderError",
    "Recurrence",
    "RecurrenceFrom",
    "Recursive",
    "RecursiveCell",
    "RevIN",
    "RevINForecaster",
    "S6Cell",
    "Segments",
    "SequenceBatch",
    "Sequential",
    "Stabilizer",
    "StudentTHead",
    "TensorBoardLogger",
    "Trainer",
    "Tree",
    "TreeBatch",
    "Unfold",
    "UnfoldFrom",
    "UninitializedModelError",
    "Validation",
    "backtest",
    "classification_error",
    "count_parameters",
    "cross_entropy_with_softmax",
    "crps_from_quantiles",
    "crps_from_samples",
    "crps_gaussian",
    "crps_student_t",
    "export_onnx",
    "export_step_onnx",
    "gaussian_nll",
    "interval_coverage",
    "interval_scale",
    "interval_width",
    "load",
    "load_panel",
    "mean_pinball_loss",
    "model_predictor",
    "panel_windows",
    "quantile_loss",
    "register_module",
    "save",
    "scale_interval",
    "split_panel",
    "squared_error",
    "student_t_nll",
]
__version__ = "0.1.0"

# Each public name and the module that defines it; ``__getattr__`` imports the module on first use.
_SOURCES: dict[str, str] = {
    "Cell": "rnnkit.cells",
    "FusedKernel": "rnnkit.cells",
    "GRUCell": "rnnkit.cells",
    "GRUDCell": "rnnkit.cells",
    "LSTMCell": "rnnkit.cells",
    "MinGRUCell": "rnnkit.cells",
    "MinLSTMCell": "rnnkit.cells",
    "RNNCell": "rnnkit.cells",
    "CTFWarning": "rnnkit.data.ctf",
    "ReaderError": "rnnkit.data.errors",
    "MinibatchSource": "rnnkit.data.minibatch",
    "Activation": "rnnkit.layers",
    "Dense": "rnnkit.layers",
    "Dropout": "rnnkit.layers",
    "Embedding": "rnnkit.layers",
    "Layer": "rnnkit.layers",
    "Sequential": "rnnkit.layers",
    "Lambda": "rnnkit.layers",
    "Delay": "rnnkit.layers.sequence",
    "LayerNormalization": "rnnkit.layers.sequence",
    "PastValueWindow": "rnnkit.layers.sequence",
    "Segments": "rnnkit.layers.sequence",
    "Stabilizer": "rnnkit.layers.sequence",
    "UnfoldFrom": "rnnkit.layers.sequence",
    "UninitializedModelError": "rnnkit.lazy",
    "count_parameters": "rnnkit.lazy",
    "export_onnx": "rnnkit.onnx_export",
    "export_step_onnx": "rnnkit.onnx_export",
    "Bidirectional": "rnnkit.recurrence",
    "Fold": "rnnkit.recurrence",
    "Recurrence": "rnnkit.recurrence",
    "RecurrenceFrom": "rnnkit.recurrence",
    "Unfold": "rnnkit.recurrence",
    "ChildSumTreeLSTMCell": "rnnkit.recursive",
    "NaryTreeLSTMCell": "rnnkit.recursive",
    "Recursive": "rnnkit.recursive",
    "RecursiveCell": "rnnkit.recursive",
    "RNTNCell": "rnnkit.recursive",
    "load": "rnnkit.saving",
    "register_module": "rnnkit.saving",
    "save": "rnnkit.saving",
    "SequenceBatch": "rnnkit.sequences",
    "CorruptFileError": "rnnkit.serialization",
    "FileWriteError": "rnnkit.serialization",
    "Callback": "rnnkit.training",
    "Checkpoint": "rnnkit.training",
    "Criterion": "rnnkit.training",
    "CSVLogger": "rnnkit.training",
    "EarlyStopping": "rnnkit.training",
    "GradientMonitor": "rnnkit.training",
    "LearningRateLogger": "rnnkit.training",
    "ModelInputError": "rnnkit.training",
    "NonFiniteError": "rnnkit.training",
    "ProgressBar": "rnnkit.training",
    "ProgressPrinter": "rnnkit.training",
    "TensorBoardLogger": "rnnkit.training",
    "Trainer": "rnnkit.training",
    "Validation": "rnnkit.training",
    "classification_error": "rnnkit.training",
    "cross_entropy_with_softmax": "rnnkit.training",
    "squared_error": "rnnkit.training",
    "Tree": "rnnkit.trees",
    "TreeBatch": "rnnkit.trees",
    "Panel": "rnnkit.data.panel",
    "PanelSplit": "rnnkit.data.panel",
    "PanelWarning": "rnnkit.data.panel",
    "load_panel": "rnnkit.data.panel",
    "panel_windows": "rnnkit.data.panel",
    "split_panel": "rnnkit.data.panel",
    "GaussianHead": "rnnkit.probabilistic",
    "QuantileHead": "rnnkit.probabilistic",
    "StudentTHead": "rnnkit.probabilistic",
    "quantile_loss": "rnnkit.probabilistic",
    "gaussian_nll": "rnnkit.probabilistic",
    "student_t_nll": "rnnkit.probabilistic",
    "interval_coverage": "rnnkit.probabilistic",
    "interval_width": "rnnkit.probabilistic",
    "mean_pinball_loss": "rnnkit.probabilistic",
    "crps_gaussian": "rnnkit.probabilistic",
    "crps_student_t": "rnnkit.probabilistic",
    "crps_from_quantiles": "rnnkit.probabilistic",
    "crps_from_samples": "rnnkit.probabilistic",
    "RevIN": "rnnkit.layers.revin",
    "RevINForecaster": "rnnkit.layers.revin",
    "Backtest": "rnnkit.backtesting",
    "backtest": "rnnkit.backtesting",
    "model_predictor": "rnnkit.backtesting",
    "LRUCell": "rnnkit.modern.diagonal",
    "RGLRUCell": "rnnkit.modern.diagonal",
    "S6Cell": "rnnkit.modern.diagonal",
    "MambaCell": "rnnkit.modern.diagonal",
    "HawkCell": "rnnkit.modern.diagonal",
    "GLACell": "rnnkit.modern.matrix",
    "Mamba2Cell": "rnnkit.modern.matrix",
    "MLSTMCell": "rnnkit.modern.matrix",
    "DeltaNetCell": "rnnkit.modern.delta",
    "GatedDeltaNetCell": "rnnkit.modern.delta",
    "interval_scale": "rnnkit.probabilistic",
    "scale_interval": "rnnkit.probabilistic",
}


def __getattr__(name: str) -> Any:
    try:
        module = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
