"""rnnkit.cntk: CNTK's names over rnnkit's pieces, so that CNTK programs run with only their
import lines changed (``import cntk as C`` becomes ``import rnnkit.cntk as C``,
``from cntk.layers import Dense`` becomes ``from rnnkit.cntk.layers import Dense``).

The modules mirror CNTK's layout: :mod:`~rnnkit.cntk.layers` (``Dense``, ``Embedding``,
``Dropout``, ``Sequential``, ``Recurrence``, ``Fold``, ``LSTM``, ``GRU``, ``RNNStep``),
:mod:`~rnnkit.cntk.sequence`, :mod:`~rnnkit.cntk.losses`, :mod:`~rnnkit.cntk.metrics`,
:mod:`~rnnkit.cntk.learners`, :mod:`~rnnkit.cntk.io`, :mod:`~rnnkit.cntk.logging`,
:mod:`~rnnkit.cntk.train`, :mod:`~rnnkit.cntk.eval`, :mod:`~rnnkit.cntk.initializer`,
:mod:`~rnnkit.cntk.defaults` (``default_options``) and :mod:`~rnnkit.cntk.convert`
(CNTK parameters into rnnkit cells). A graph is a deferred composition of rnnkit modules
(:mod:`~rnnkit.cntk.graph`); training is rnnkit's :class:`~rnnkit.Trainer`. docs/cntk.md
is the migration guide, with every departure from CNTK.

>>> import numpy as np
>>> import rnnkit.cntk as C
>>> x = C.sequence.input_variable(1)
>>> with C.layers.default_options(initial_state=0.1):
...     z = C.layers.Dense(1)(C.sequence.last(C.layers.Recurrence(C.layers.LSTM(5))(x)))
>>> z.eval({x: np.zeros((2, 3, 1), np.float32)}).shape
(2, 1)
"""

from rnnkit.cntk import (
    cntk_py,
    convert,
    defaults,
    eval,
    initializer,
    io,
    layers,
    learners,
    logging,
    losses,
    metrics,
    ops,
    sequence,
    train,
)
from rnnkit.cntk.defaults import default_options
from rnnkit.cntk.graph import Axis, Function, Variable, combine, constant, input_variable
from rnnkit.cntk.learners import (
    UnitType,
    adam,
    fsadagrad,
    learning_parameter_schedule,
    learning_parameter_schedule_per_sample,
    learning_rate_schedule,
    momentum_as_time_constant_schedule,
    momentum_schedule,
    momentum_schedule_per_sample,
    momentum_sgd,
    sgd,
)
from rnnkit.cntk.losses import cross_entropy_with_softmax, squared_error
from rnnkit.cntk.metrics import classification_error
from rnnkit.cntk.ops import element_times, exp, log, minus, plus, relu, sigmoid, softmax, tanh
from rnnkit.cntk.train import Trainer

__all__ = [
    "Axis",
    "Function",
    "Trainer",
    "UnitType",
    "Variable",
    "adam",
    "classification_error",
    "cntk_py",
    "combine",
    "constant",
    "convert",
    "cross_entropy_with_softmax",
    "default_options",
    "defaults",
    "element_times",
    "eval",
    "exp",
    "fsadagrad",
    "initializer",
    "input_variable",
    "io",
    "layers",
    "learners",
    "learning_parameter_schedule",
    "learning_parameter_schedule_per_sample",
    "learning_rate_schedule",
    "log",
    "logging",
    "losses",
    "metrics",
    "minus",
    "momentum_as_time_constant_schedule",
    "momentum_schedule",
    "momentum_schedule_per_sample",
    "momentum_sgd",
    "ops",
    "plus",
    "relu",
    "sequence",
    "sgd",
    "sigmoid",
    "softmax",
    "squared_error",
    "tanh",
    "train",
]
