"""Training: the Trainer, its callbacks, criteria and checkpoints.

* :mod:`~rnnkit.training.criteria` – losses and metrics as sums over samples, and
  :class:`Criterion` pairing them.
* :mod:`~rnnkit.training.trainer` – :class:`Trainer` (fit, evaluate, predict, restore).
* :mod:`~rnnkit.training.callbacks` – the callback protocol, validation, early stopping,
  learning-rate records.
* :mod:`~rnnkit.training.progress` – the progress printer in CNTK's formats, a terminal bar.
* :mod:`~rnnkit.training.loggers` – CSV and TensorBoard logs.
* :mod:`~rnnkit.training.checkpoint` – atomic checkpoints in safetensors + JSON, no pickle.
* :mod:`~rnnkit.training.distributed` – joining torchrun's process group.
"""

from rnnkit.training.callbacks import (
    Callback,
    EarlyStopping,
    EpochInfo,
    GradientMonitor,
    GradientWarning,
    LearningRateLogger,
    PlateauSchedule,
    StepInfo,
    TimeBudget,
    Validation,
)
from rnnkit.training.checkpoint import Checkpoint, load_state, save_state
from rnnkit.training.criteria import (
    Criterion,
    classification_error,
    count_samples,
    cross_entropy_with_softmax,
    smoothed_cross_entropy,
    squared_error,
)
from rnnkit.training.loggers import CSVLogger, TensorBoardLogger
from rnnkit.training.progress import ProgressBar, ProgressPrinter, auto_progress
from rnnkit.training.trainer import (
    FitSummary,
    ModelInputError,
    NonFiniteError,
    Trainer,
    TrainerState,
)

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "Criterion",
    "EarlyStopping",
    "EpochInfo",
    "FitSummary",
    "GradientMonitor",
    "GradientWarning",
    "LearningRateLogger",
    "ModelInputError",
    "NonFiniteError",
    "PlateauSchedule",
    "ProgressBar",
    "ProgressPrinter",
    "StepInfo",
    "TensorBoardLogger",
    "TimeBudget",
    "Trainer",
    "TrainerState",
    "Validation",
    "auto_progress",
    "classification_error",
    "count_samples",
    "cross_entropy_with_softmax",
    "load_state",
    "save_state",
    "smoothed_cross_entropy",
    "squared_error",
]
