"""Callbacks: plain objects the :class:`~rnnkit.training.Trainer` calls during ``fit``.

A callback subclasses :class:`Callback` and overrides the hooks it needs; each hook receives the
trainer and, for steps and epochs, a :class:`StepInfo` or :class:`EpochInfo`. The trainer calls
callbacks in the order given. Under several processes every callback runs on every process,
except those with ``rank_zero_only = True`` (the ones that print or write), which run on rank 0.

Built in here: :class:`Validation` (evaluation on another source at each epoch end),
:class:`EarlyStopping` and :class:`LearningRateLogger`; in :mod:`rnnkit.training.progress`,
:class:`~rnnkit.training.progress.ProgressPrinter` (CNTK's exact formats) and
:class:`~rnnkit.training.progress.ProgressBar` (tqdm, only on a terminal); in
:mod:`rnnkit.training.loggers`, :class:`~rnnkit.training.loggers.CSVLogger` and
:class:`~rnnkit.training.loggers.TensorBoardLogger`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from torch import nn

    from rnnkit.data.minibatch import MinibatchSource

__all__ = [
    "Callback",
    "EarlyStopping",
    "EpochInfo",
    "GradientMonitor",
    "GradientWarning",
    "LearningRateLogger",
    "PlateauSchedule",
    "StepInfo",
    "TimeBudget",
    "TrainerView",
    "Validation",
]


class TrainerView(Protocol):
    """What a callback may use of the :class:`~rnnkit.training.Trainer` that calls it (a
    protocol, so that this module needs nothing from the trainer's)."""

    model: nn.Module
    optimizer: Any
    state: Any  # the trainer's TrainerState: step, epoch, samples, ...
    epoch_target: int | None
    fit_epochs: int | None
    failed: bool

    def stop(self, reason: str) -> None: ...

    def evaluate(self, source: Any) -> dict[str, float]: ...


@dataclass(frozen=True)
class StepInfo:
    """One update, as the trainer saw it; counts and sums are over all processes.

    Attributes:
        step: updates since training began (1-based, skipped steps included).
        epoch: the epoch this step belongs to (1-based).
        epoch_step: the step's position within its epoch (1-based).
        samples: label samples in the minibatch (see :mod:`rnnkit.training.criteria`).
        loss_sum: the criterion's loss, summed over the samples.
        metric_sum: the criterion's metric, summed over the samples.
        grad_norm: the total 2-norm of the gradient before clipping.
        lr: the learning rate of the first parameter group, as used by this step.
        skipped: True when the loss or the gradient was not finite and the step was skipped.
    """

    step: int
    epoch: int
    epoch_step: int
    samples: int
    loss_sum: float
    metric_sum: float
    grad_norm: float
    lr: float
    skipped: bool = False

    @property
    def loss(self) -> float:
        """Average loss per sample."""
        return self.loss_sum / self.samples

    @property
    def metric(self) -> float:
        """Average metric per sample."""
        return self.metric_sum / self.samples


@dataclass
class EpochInfo:
    """One finished epoch; :class:`Validation` callbacks add to ``metrics`` and ``evaluations``.

    Attributes:
        epoch: 1-based.
        num_epochs: the ``epochs`` given to ``fit`` (``None`` when training is limited otherwise).
        steps: updates in the epoch, skipped ones included.
        samples: label samples of the updates that were not skipped.
        loss_sum, metric_sum: sums over those samples.
        seconds: wall time of the epoch (across a resume, the time before and after).
        skipped: the steps of this epoch that were skipped.
        metrics: ``loss`` and ``metric`` (averages per sample), plus what callbacks add
            (``val_loss``, ``val_metric``, ``lr``, ...).
        evaluations: name -> the result of :meth:`Trainer.evaluate` for each Validation.
    """

    epoch: int
    num_epochs: int | None
    steps: int
    samples: int
    loss_sum: float
    metric_sum: float
    seconds: float
    skipped: tuple[int, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)


class Callback:
    """Base class: every hook does nothing. Override what you need.

    ``state_dict``/``load_state_dict`` carry what a callback must remember across a resume
    (ints, floats, strings, lists, dicts and tensors); checkpoints store it.
    """

    rank_zero_only: ClassVar[bool] = False

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Called once at the start of ``fit`` (after a resume has been applied)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Called before the first step of epoch ``epoch`` (1-based), also after a resume."""

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        """Called after every update (and after every skipped one)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        """Called when an epoch ends, before its checkpoint is written."""

    def on_fit_end(self, trainer: TrainerView) -> None:
        """Called when ``fit`` returns or fails (``trainer.failed`` tells which)."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in a checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state_dict` gave."""


class Validation(Callback):
    """Evaluate ``source`` at each epoch end; adds ``{name}_loss`` and ``{name}_metric``.

    ``fit(validation=source)`` puts ``Validation(source, "val")`` before the other callbacks,
    so an :class:`EarlyStopping` or a logger given to the trainer sees ``val_loss``. Put other
    Validation callbacks (a test set, say) before the callbacks that read their results.
    Evaluation runs on every process; each evaluates its share and the sums are combined.
    """

    def __init__(self, source: MinibatchSource, name: str = "val") -> None:
        if not name:
            raise ValueError("name: expected a non-empty string, found ''")
        self.source, self.name = source, name

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        result = trainer.evaluate(self.source)
        epoch.metrics[f"{self.name}_loss"] = result["loss"]
        epoch.metrics[f"{self.name}_metric"] = result["metric"]
        epoch.evaluations[self.name] = result


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: an entry of :attr:`EpochInfo.metrics` (``'val_loss'`` needs a validation
            source; ``'loss'`` is the training loss).
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        mode: ``'min'`` (lower is better) or ``'max'``.
        restore_best: at the end of ``fit``, load the weights of the best epoch.

    Every process runs it (its decision must be the same everywhere); the best weights are
    kept on the CPU and go into checkpoints, so a resumed run still restores them.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best: bool = True,
    ) -> None:
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience: expected a positive integer, found {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta: expected a non-negative number, found {min_delta!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', found {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode, self.restore_best = mode, restore_best
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.best_state: dict[str, Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        if self.monitor not in epoch.metrics:
            raise ValueError(
                f"EarlyStopping(monitor={self.monitor!r}): the epoch has no such metric; it has "
                f"{sorted(epoch.metrics)} (val_* needs fit(validation=...) or a Validation "
                "callback placed before EarlyStopping)"
            )
        value = float(epoch.metrics[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch.epoch, 0
            if self.restore_best:
                self.best_state = {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in trainer.model.state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop(
                f"early stopping: {self.monitor} has not improved on {self.best:.6g} "
                f"(epoch {self.best_epoch}) for {self.patience} epochs"
            )

    def on_fit_end(self, trainer: TrainerView) -> None:
        if self.restore_best and self.best_state is not None and not trainer.failed:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch, self.wait = int(state["best_epoch"]), int(state["wait"])
        best_state = state["best_state"]
        self.best_state = None if best_state is None else dict(best_state)


class LearningRateLogger(Callback):
    """Record the learning rate of every parameter group at every step.

    ``values`` holds ``(step, [lr of each group])`` as they stand after the step and its
    scheduler step (the rates the next step uses); at each epoch end the current learning
    rate of the first group goes into :attr:`EpochInfo.metrics` as ``lr``, so a later
    :class:`CSVLogger` or :class:`TensorBoardLogger` records it.
    """

    def __init__(self) -> None:
        self.values: list[tuple[int, list[float]]] = []

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        self.values.append((step.step, [float(g["lr"]) for g in trainer.optimizer.param_groups]))

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        epoch.metrics["lr"] = float(trainer.optimizer.param_groups[0]["lr"])


class GradientWarning(UserWarning):
    """The gradient norm of a step exploded or vanished (see :class:`GradientMonitor`)."""


class GradientMonitor(Callback):
    """Warn when the total gradient norm of a step explodes or vanishes.

    The norm is the one the trainer measures before clipping (:attr:`StepInfo.grad_norm`).
    A step *explodes* when its norm exceeds ``explode`` times the median of the last
    ``window`` steps (after ``window`` steps), or the absolute ``max_norm``; it *vanishes*
    when its norm falls below ``min_norm``. Each kind warns once per epoch
    (:class:`GradientWarning`, naming the step and the norms); :attr:`events` keeps every
    ``(step, kind, norm)`` seen.
    """

    rank_zero_only = True

    def __init__(
        self,
        explode: float = 10.0,
        window: int = 50,
        max_norm: float = math.inf,
        min_norm: float = 1e-7,
    ) -> None:
        if explode <= 1 or window < 1 or min_norm < 0:
            raise ValueError(
                "explode, window, min_norm: expected explode > 1, window >= 1, min_norm >= 0, "
                f"found {explode}, {window}, {min_norm}"
            )
        self.explode, self.window, self.max_norm, self.min_norm = (
            explode,
            window,
            max_norm,
            min_norm,
        )
        self.recent: list[float] = []
        self.events: list[tuple[int, str, float]] = []
        self._warned: set[str] = set()

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        self._warned.clear()

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        norm = step.grad_norm
        if not math.isfinite(norm):
            return
        median = sorted(self.recent)[len(self.recent) // 2] if self.recent else math.nan
        kind = None
        if norm > self.max_norm or (
            len(self.recent) >= self.window and norm > self.explode * median
        ):
            kind = "explodes"
            detail = f"{norm:.3g} (median of the last {len(self.recent)} steps: {median:.3g})"
        elif norm < self.min_norm:
            kind = "vanishes"
            detail = f"{norm:.3g} (below {self.min_norm:.3g})"
        if kind is not None:
            self.events.append((step.step, kind, norm))
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(
                    f"step {step.step}: the gradient norm {kind}: {detail}; consider "
                    "clip_norm, a lower learning rate, or a gated cell",
                    GradientWarning,
                    stacklevel=2,
                )
        self.recent = [*self.recent[-(self.window - 1) :], norm]


class TimeBudget(Callback):
    """Stop training once ``seconds`` have passed since ``fit`` began, at a step boundary.

    The step that crosses the budget finishes; the epoch it belongs to is closed (validated,
    logged, checkpointed) as a partial one. :attr:`reached` tells afterwards whether the
    budget stopped the run. Combine with :class:`EarlyStopping` (``restore_best=True``) to
    keep the best weights seen before the stop.
    """

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"seconds: expected a positive number, found {seconds!r}")
        self.seconds = float(seconds)
        self.reached = False
        self._start = 0.0

    def on_fit_start(self, trainer: TrainerView) -> None:
        self._start = time.perf_counter()
        self.reached = False

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        if not self.reached and time.perf_counter() - self._start >= self.seconds:
            self.reached = True
            trainer.stop(f"time budget: {self.seconds:g} s reached at step {step.step}")


class PlateauSchedule(Callback):
    """Multiply the learning rate by ``factor`` when the validation loss (the training loss
    without validation) has not improved for ``patience`` epochs
    (``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped at every epoch end)."""

    def __init__(self, optimizer: Any, factor: float = 0.5, patience: int = 2) -> None:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        self.scheduler = ReduceLROnPlateau(optimizer, factor=factor, patience=patience)

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        self.scheduler.step(float(epoch.metrics.get("val_loss", epoch.metrics["loss"])))

    def state_dict(self) -> dict[str, Any]:
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(dict(state))
