"""``cntk.train``: CNTK's ``Trainer``, ``TestConfig`` and a criterion's ``.train`` / ``.test``.

``criterion.train(source, ...)`` (CNTK's ``Function.train``) runs rnnkit's
:class:`rnnkit.Trainer` on the criterion's graph: the graph becomes one module whose
inputs are the source's streams and whose outputs are the loss and metric sums; the
trainer divides by the label samples, steps the CNTK learner and calls CNTK's progress
printers. It returns CNTK's history: ``updates`` (the average loss and metric at each line
the first progress printer prints: every ``freq`` minibatches, or 1, 3, 7, 15, ... for
``freq=0``), ``epoch_summaries`` (one per epoch of ``epoch_size`` label samples) and, with a
:class:`TestConfig`, ``test_summary`` (the metric on the test data after training).

:class:`Trainer` is CNTK's minibatch-at-a-time trainer (``train_minibatch``,
``test_minibatch``, ``previous_minibatch_loss_average``, ``summarize_training_progress``).

>>> import numpy as np, torch
>>> import rnnkit.cntk as C
>>> _ = torch.manual_seed(0)
>>> x, t = C.input_variable(2), C.input_variable(1)
>>> z = C.layers.Dense(1)(x)
>>> loss = C.squared_error(z, t)
>>> trainer = C.Trainer(z, (loss, loss), [C.sgd(z.parameters, C.learning_parameter_schedule(0.5))])
>>> data = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
>>> target = np.array([[1.0], [-1.0]], np.float32)
>>> round(trainer.test_minibatch({x: data, t: target}), 4)  # the mean squared error at the start
2.186
>>> for _ in range(100):
...     _ = trainer.train_minibatch({x: data, t: target})
>>> trainer.previous_minibatch_sample_count, z.eval(data).round(3).tolist()
(2, [[1.0], [-1.0]])
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import Tensor

from rnnkit.cntk.graph import (
    Function,
    GraphModule,
    Variable,
    combine,
    register_training,
    to_value,
)
from rnnkit.cntk.io import MinibatchSource, StreamInformation
from rnnkit.cntk.learners import Learner
from rnnkit.cntk.logging import ProgressPrinter
from rnnkit.training import Callback
from rnnkit.training import Trainer as RnnkitTrainer
from rnnkit.training.callbacks import EpochInfo, StepInfo
from rnnkit.training.criteria import count_samples

__all__ = [
    "Record",
    "TestConfig",
    "Trainer",
    "add_test",
    "as_writers",
    "label_value",
    "summarize_test",
    "test_function",
    "train_function",
]


class Record(SimpleNamespace):
    """CNTK's ``Record``: named fields (``loss``, ``metric``, ``samples``, ...).

    >>> Record(loss=0.5, samples=10)
    Record(loss=0.5, samples=10)
    """

    def updated_with(self, **fields: Any) -> Record:
        return Record(**{**vars(self), **fields})


class TestConfig:
    """Evaluate the criterion's metric on ``minibatch_source`` after training (CNTK's
    ``TestConfig(minibatch_source, minibatch_size=32, model_inputs_to_streams=None,
    criterion=None)``); without ``model_inputs_to_streams`` the training's mapping is used.
    The result is printed by each progress printer (``Finished Evaluation [1]: ...``) and
    returned as the history's ``test_summary``."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        minibatch_source: MinibatchSource,
        minibatch_size: int = 32,
        model_inputs_to_streams: Mapping[Variable, StreamInformation] | None = None,
        criterion: Function | None = None,
        callbacks: Any = None,
    ) -> None:
        if not isinstance(minibatch_source, MinibatchSource):
            raise TypeError(
                "minibatch_source: expected an rnnkit.cntk.io.MinibatchSource, found "
                f"{type(minibatch_source).__name__}"
            )
        self.minibatch_source = minibatch_source
        self.minibatch_size = minibatch_size
        self.model_inputs_to_streams = model_inputs_to_streams
        self.criterion = criterion


def _parts(criterion: Any) -> tuple[Function, Function | None]:
    if isinstance(criterion, (tuple, list)):
        outs = [o for c in criterion for o in c.outputs]
    elif isinstance(criterion, Function):
        outs = list(criterion.outputs)
    else:
        raise TypeError(
            f"criterion: expected a function (loss, or loss and metric) or a tuple of them, "
            f"found {type(criterion).__name__}"
        )
    if not 1 <= len(outs) <= 2:
        raise ValueError(
            f"criterion: expected a loss and optionally a metric, found {len(outs)} outputs"
        )
    return outs[0], outs[1] if len(outs) == 2 else None


def _learner(parameter_learners: Any) -> Learner:
    learners = (
        [parameter_learners]
        if isinstance(parameter_learners, Learner)
        else list(parameter_learners)
    )
    if len(learners) != 1 or not isinstance(learners[0], Learner):
        raise ValueError(
            "parameter_learners: expected one learner of rnnkit.cntk.learners (adam, sgd, "
            f"momentum_sgd, fsadagrad), found {parameter_learners!r}"
        )
    return learners[0]


def _sums(output: Any) -> tuple[Tensor, Tensor]:
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, output


def label_value(loss: Function, feed: Mapping[Variable, Any]) -> Any:
    """The value of ``loss``'s labels for the inputs ``feed`` (whose samples it counts)."""
    label = loss.label
    if label is None:
        raise ValueError(f"criterion: its loss {loss!r} is not a loss of rnnkit.cntk.losses")
    if isinstance(label, Variable) and label in feed:
        return feed[label]
    return label.forward_values(feed)[0]


# Test results are summed per progress writer, as CNTK's writers sum them: the 202 tutorial
# makes a new Evaluator for every minibatch and summarises with the last one.
_TEST_SUMS: weakref.WeakKeyDictionary[ProgressPrinter, list[float]] = weakref.WeakKeyDictionary()


def add_test(writers: Sequence[ProgressPrinter], samples: int, total: float) -> None:
    """Add one test minibatch (its samples and metric sum) to each writer's sums."""
    for w in writers:
        sums = _TEST_SUMS.setdefault(w, [0, 0.0, 0])
        sums[0] += samples
        sums[1] += total
        sums[2] += 1


def summarize_test(writers: Sequence[ProgressPrinter]) -> None:
    """Each writer's ``Finished Evaluation`` line for its test minibatches since the last."""
    for w in writers:
        samples, total, minibatches = _TEST_SUMS.pop(w, [0, 0.0, 0])
        if samples:
            result = {"samples": samples, "metric": total / samples, "minibatches": minibatches}
            w.evaluation_summary("test", result)


def as_writers(progress_writers: Any) -> list[ProgressPrinter]:
    """``None``, one ProgressPrinter or a list of them, as a list."""
    if progress_writers is None:
        return []
    writers = (
        [progress_writers]
        if isinstance(progress_writers, ProgressPrinter)
        else list(progress_writers)
    )
    for w in writers:
        if not isinstance(w, ProgressPrinter):
            raise TypeError(f"progress_writers: expected ProgressPrinter objects, found {w!r}")
    return writers


class Trainer:
    """CNTK's ``Trainer(model, criterion, parameter_learners, progress_writers=None)``.

    ``criterion`` is ``(loss, metric)`` or a function with those outputs;
    ``train_minibatch({variable: data})`` makes one update (mean gradient over the label
    samples, the learner's rule) and reports it to the progress writers.
    """

    def __init__(
        self,
        model: Function | None,
        criterion: Any,
        parameter_learners: Any = (),
        progress_writers: Any = None,
    ) -> None:
        self.model = model
        self.loss_function, self.evaluation_function = _parts(criterion)
        outputs = [self.loss_function]
        if self.evaluation_function is not None:
            outputs.append(self.evaluation_function)
        self.criterion = combine(outputs)
        self.module = GraphModule(self.criterion)
        self.learner = _learner(parameter_learners)
        self.parameter_learners = [self.learner]
        self.progress_writers = as_writers(progress_writers)
        self.total_number_of_samples_seen = 0
        self.previous_minibatch_loss_average = 0.0
        self.previous_minibatch_evaluation_average = 0.0
        self.previous_minibatch_sample_count = 0
        self.fit_epochs: int | None = None  # what a progress printer asks of a trainer
        self._steps = 0
        self._epoch = 0
        self._epoch_steps = 0
        self._started = False
        self._clock = time.perf_counter()

    def _feed(self, arguments: Mapping[Any, Any]) -> dict[Variable, Any]:
        if not isinstance(arguments, Mapping):
            raise TypeError(
                f"arguments: expected a dict {{variable: data}}, found {type(arguments).__name__}"
            )
        feed: dict[Variable, Any] = {}
        for var in self.criterion.arguments:
            if var not in arguments:
                raise ValueError(
                    f"arguments: no data for {var!r}; expected one entry per input "
                    f"{[a.name or repr(a) for a in self.criterion.arguments]}"
                )
            feed[var] = to_value(var, arguments[var])
        return feed

    def train_minibatch(
        self, arguments: Mapping[Any, Any], outputs: Any = None, device: Any = None
    ) -> bool:
        """One update on ``arguments`` (``{variable: data or MinibatchData}``); True."""
        feed = self._feed(arguments)
        if not self._started:
            for w in self.progress_writers:
                w.on_fit_start(cast(Any, self))
            self._started = True
        self.module.train()
        loss_sum, metric_sum = _sums(self.module(*feed.values()))
        samples = count_samples(label_value(self.loss_function, feed))
        lr = float(self.learner.param_groups[0]["lr"])
        (loss_sum / samples).backward()
        self.learner.minibatch_samples = samples
        self.learner.step()
        self.learner.zero_grad(set_to_none=True)
        loss, metric = float(loss_sum.detach()), float(metric_sum.detach())
        self.previous_minibatch_loss_average = loss / samples
        self.previous_minibatch_evaluation_average = metric / samples
        self.previous_minibatch_sample_count = samples
        self.total_number_of_samples_seen += samples
        self._steps += 1
        self._epoch_steps += 1
        info = StepInfo(
            self._steps, self._epoch + 1, self._epoch_steps, samples, loss, metric, math.nan, lr
        )
        for w in self.progress_writers:
            w.on_step_end(cast(Any, self), info)
        return True

    def test_minibatch(self, arguments: Mapping[Any, Any], device: Any = None) -> float:
        """The average metric (the loss without a metric) per label sample on ``arguments``."""
        feed = self._feed(arguments)
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                _, metric_sum = _sums(self.module(*feed.values()))
        finally:
            self.module.train(was)
        metric = self.evaluation_function or self.loss_function
        samples = count_samples(label_value(metric, feed))
        add_test(self.progress_writers, samples, float(metric_sum))
        return float(metric_sum) / samples

    def summarize_training_progress(self) -> None:
        """Print each writer's epoch summary and start a new epoch."""
        seconds = time.perf_counter() - self._clock
        for w in self.progress_writers:
            w.summary(self._epoch + 1, seconds)
        self._epoch += 1
        self._epoch_steps = 0
        self._clock = time.perf_counter()

    def summarize_test_progress(self) -> None:
        """Print each writer's ``Finished Evaluation`` line for the tests since the last."""
        summarize_test(self.progress_writers)


class _Collector(Callback):
    """CNTK's progress collector: the history ``Function.train`` returns."""

    def __init__(self, freq: int | None) -> None:
        self.freq = freq
        self.updates: list[Record] = []
        self.epochs: list[Record] = []
        self._reset()

    def _reset(self) -> None:
        self._count, self._samples, self._loss, self._metric = 0, 0, 0.0, 0.0

    def on_step_end(self, trainer: Any, step: StepInfo) -> None:
        if step.skipped:
            return
        self._count += 1
        self._samples += step.samples
        self._loss += step.loss_sum
        self._metric += step.metric_sum
        u = self._count + self._printed
        due = (u + 1) & u == 0 if self.freq == 0 else self.freq is not None and u % self.freq == 0
        if due:
            n = max(self._samples, 1)
            self.updates.append(
                Record(loss=self._loss / n, metric=self._metric / n, samples=self._samples)
            )
            self._printed += self._count
            self._reset()

    _printed = 0

    def on_epoch_end(self, trainer: Any, epoch: EpochInfo) -> None:
        self.epochs.append(
            Record(
                loss=epoch.metrics["loss"], metric=epoch.metrics["metric"], samples=epoch.samples
            )
        )
        self._printed = 0
        self._reset()


def _stream_names(
    criterion: Function, mapping: Mapping[Variable, StreamInformation], argument: str
) -> list[str]:
    names = []
    for var in criterion.arguments:
        if var not in mapping:
            raise ValueError(
                f"{argument}: no stream for the input {var!r}; expected one per input "
                f"{[a.name or repr(a) for a in criterion.arguments]}"
            )
        info = mapping[var]
        if not isinstance(info, StreamInformation):
            raise TypeError(f"{argument}: expected source.streams.<name> values, found {info!r}")
        names.append(info.name)
    return names


def _mapping(
    criterion: Function,
    streams: Sequence[StreamInformation] | None,
    model_inputs_to_streams: Mapping[Variable, StreamInformation] | None,
) -> dict[Variable, StreamInformation]:
    if streams is not None and model_inputs_to_streams is not None:
        raise ValueError("streams and model_inputs_to_streams are mutually exclusive")
    if streams is not None:
        return dict(zip(criterion.arguments, streams, strict=True))
    if model_inputs_to_streams is None:
        raise ValueError("model_inputs_to_streams: expected {input variable: source.streams.name}")
    return dict(model_inputs_to_streams)


def _rnnkit_trainer(
    criterion: Function,
    mapping: Mapping[Variable, StreamInformation],
    learner: Learner | None,
    callbacks: list[Callback],
    argument: str,
) -> RnnkitTrainer:
    loss, _ = _parts(criterion)
    label = loss.label
    if not isinstance(label, Variable) or label not in mapping:
        raise ValueError(
            f"criterion: the loss's labels must be an input fed from a stream, found {label!r}"
        )
    names = _stream_names(criterion, mapping, argument)

    def measured(output: Any, target: Any) -> tuple[Tensor, Tensor]:
        loss_sum, metric_sum = _sums(output)
        if learner is not None:
            learner.minibatch_samples = count_samples(to_value(label, target))
        return loss_sum, metric_sum.detach()

    optimizer = (
        learner
        if learner is not None
        else torch.optim.SGD(criterion.parameters or [torch.zeros(1, requires_grad=True)], lr=0.0)
    )
    return RnnkitTrainer(
        GraphModule(criterion),
        measured,
        optimizer,
        input_streams=names,
        target_stream=mapping[label].name,
        callbacks=callbacks,
    )


def train_function(
    criterion: Function,
    minibatch_source: MinibatchSource,
    minibatch_size: int = 32,
    streams: Sequence[StreamInformation] | None = None,
    model_inputs_to_streams: Mapping[Variable, StreamInformation] | None = None,
    parameter_learners: Any = (),
    callbacks: Sequence[Any] = (),
    progress_frequency: int | None = None,
    max_epochs: int | None = None,
    epoch_size: int | None = None,
    max_samples: int | None = None,
) -> Record:
    """CNTK's ``Function.train`` (see the module doc). ``epoch_size`` (label samples) is
    required with a MinibatchSource; training stops at ``max_samples`` or
    ``max_epochs * epoch_size`` label samples (``max_epochs`` defaults to 1)."""
    if not isinstance(minibatch_source, MinibatchSource):
        raise TypeError(
            "minibatch_source: expected an rnnkit.cntk.io.MinibatchSource (NumPy arrays as "
            f"a source are not supported here), found {type(minibatch_source).__name__}"
        )
    if not isinstance(minibatch_size, int) or minibatch_size < 1:
        raise ValueError(f"minibatch_size: expected a positive int, found {minibatch_size!r}")
    if max_samples is None:
        if epoch_size is None:
            raise ValueError("epoch_size must be specified, unless max_samples is given")
        max_samples = int((max_epochs or 1) * epoch_size)
    elif max_epochs is not None:
        raise ValueError("max_epochs and max_samples are mutually exclusive")
    learner = _learner(parameter_learners)
    mapping = _mapping(criterion, streams, model_inputs_to_streams)
    printers = [c for c in callbacks if isinstance(c, ProgressPrinter)]
    tests = [c for c in callbacks if isinstance(c, TestConfig)]
    others = [c for c in callbacks if not isinstance(c, (ProgressPrinter, TestConfig))]
    if others or len(tests) > 1:
        raise ValueError(
            "callbacks: expected ProgressPrinter objects and at most one TestConfig, found "
            f"{others or tests}"
        )
    collector = _Collector(printers[0].freq if printers else None)
    trainer = _rnnkit_trainer(
        criterion, mapping, learner, [*printers, collector], "model_inputs_to_streams"
    )
    source = minibatch_source.rnnkit_source(minibatch_size)
    # CNTK summarises every progress_frequency samples (epoch_size by default)
    trainer.fit(source, max_samples=max_samples, epoch_size=progress_frequency or epoch_size)
    history = Record(updates=collector.updates, epoch_summaries=collector.epochs)
    if tests:
        test = tests[0]
        result = _evaluate(
            test.criterion or criterion,
            test.minibatch_source,
            test.minibatch_size,
            test.model_inputs_to_streams or mapping,
        )
        for p in printers:
            p.evaluation_summary("test", result)
        history = history.updated_with(
            test_summary=Record(metric=result["metric"], samples=result["samples"])
        )
    return history


def _evaluate(
    criterion: Function,
    source: MinibatchSource,
    minibatch_size: int,
    mapping: Mapping[Variable, StreamInformation],
) -> dict[str, float]:
    trainer = _rnnkit_trainer(criterion, mapping, None, [], "model_inputs_to_streams")
    return trainer.evaluate(source.rnnkit_source(minibatch_size, max_sweeps=1, max_samples=None))


def test_function(
    criterion: Function,
    minibatch_source: MinibatchSource,
    minibatch_size: int = 32,
    streams: Sequence[StreamInformation] | None = None,
    model_inputs_to_streams: Mapping[Variable, StreamInformation] | None = None,
    callbacks: Any = None,
) -> Record:
    """CNTK's ``Function.test``: the average metric (the loss without one) over one sweep
    of ``minibatch_source``: ``Record(metric=..., samples=...)``."""
    mapping = _mapping(criterion, streams, model_inputs_to_streams)
    result = _evaluate(criterion, minibatch_source, minibatch_size, mapping)
    for p in as_writers(callbacks):
        p.evaluation_summary("test", result)
    return Record(metric=result["metric"], samples=result["samples"])


test_function.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
register_training(train_function, test_function)
