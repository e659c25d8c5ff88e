"""Callbacks: plain objects the :class:`~rnnkit.training.Trainer` calls during ``fit``.

A callback subclasses :class:`Callback` and overrides the hooks it needs; each hook receives the
trainer and, for steps and epochs, a :class:`StepInfo` or :class:`EpochInfo`. The trainer calls
callbacks in the order given. Under several processes every callback runs on every process,
except those with ``rank_zero_only = True`` (the ones that print or write), which run on rank 0.

Built in: :class:`ProgressPrinter` (CNTK's exact formats), :class:`ProgressBar` (tqdm, only on a
terminal), :class:`Validation` (evaluation on another source at each epoch end),
:class:`CSVLogger`, :class:`TensorBoardLogger`, :class:`EarlyStopping` and
:class:`LearningRateLogger`.

CNTK's geometric progress table, from hand-made steps (loss and metric are sums over samples):

>>> import io
>>> out = io.StringIO()
>>> printer = ProgressPrinter(freq=0, file=out)
>>> printer.write_header()
>>> for loss_sum, metric_sum, n in [(6.6, 6.6, 10), (3.0, 1.0, 10), (2.0, 0.0, 20)]:
...     printer.update(n, loss_sum, metric_sum)
>>> for line in out.getvalue().splitlines():
...     print(line.rstrip())
 average      since    average      since      examples
    loss       last     metric       last
 ------------------------------------------------------
     0.66       0.66       0.66       0.66            10
     0.29      0.167       0.19     0.0333            40
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TextIO

from torch import Tensor

if TYPE_CHECKING:
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.training.trainer import Trainer

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "EpochInfo",
    "LearningRateLogger",
    "ProgressBar",
    "ProgressPrinter",
    "StepInfo",
    "TensorBoardLogger",
    "Validation",
]


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

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once at the start of ``fit`` (after a resume has been applied)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before the first step of epoch ``epoch`` (1-based), also after a resume."""

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        """Called after every update (and after every skipped one)."""

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        """Called when an epoch ends, before its checkpoint is written."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called when ``fit`` returns or fails (``trainer.failed`` tells which)."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in a checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state_dict` gave."""


def _avg(total: float, count: float) -> float:
    return total / count if count > 0 else 0.0


class ProgressPrinter(Callback):
    """CNTK's ``ProgressPrinter``, line for line.

    Args:
        freq: ``0`` prints the geometric table after minibatches 1, 3, 7, 15, ... of each epoch
            (columns: average loss since the epoch began, since the last line, the same for the
            metric, examples seen in the epoch); ``N > 0`` prints
            ``Minibatch[a-b]: loss = x * n, metric = y% * n;`` every N minibatches; ``None``
            prints no per-minibatch line. The epoch summary ``Finished Epoch[i of N]: ...``
            comes with ``N > 0`` and ``None`` (CNTK prints none on the geometric schedule).
        first: also print each of the first ``first`` minibatches (``freq > 0`` or ``None``).
        tag: shown as ``[tag] `` in the epoch summary (CNTK's examples use ``'Training'``).
        num_epochs: the N of ``Epoch[i of N]``; ``None`` takes ``fit``'s ``epochs``, and
            without either the summary reads ``Finished Epoch[i]:``.
        metric_is_pct: print the metric as a percentage (CNTK's default) in the minibatch and
            summary lines; the geometric table always shows the plain average.
        file: where to print; ``None`` is ``sys.stdout`` at the time of printing.

    Also printed, as CNTK does: ``Learning rate per minibatch: 0.005`` before the first step
    and whenever it changes, and ``Finished Evaluation [k]: Minibatch[1-m]: metric = ...`` for
    each :class:`Validation` at an epoch end. Minibatches are counted within the epoch, and a
    skipped step is not counted (CNTK ignores an update without samples); an epoch with skipped
    steps ends with one more line, ``Skipped k minibatches with a non-finite loss or gradient
    (steps ...).``

    >>> import io
    >>> out = io.StringIO()
    >>> printer = ProgressPrinter(freq=2, tag="Training", num_epochs=10, file=out)
    >>> for loss_sum, metric_sum, n in [(1.0, 1.0, 10), (3.0, 0.0, 10), (2.0, 1.0, 20)]:
    ...     printer.update(n, loss_sum, metric_sum)
    >>> printer.summary(1, 2.5)
    >>> print(out.getvalue(), end="")
     Minibatch[   1-   2]: loss = 0.200000 * 20, metric = 5.00% * 20;
    Finished Epoch[1 of 10]: [Training] loss = 0.150000 * 40, metric = 5.00% * 40 2.500s ( 16.0 samples/s);
    """  # noqa: E501

    rank_zero_only = True

    def __init__(
        self,
        freq: int | None = None,
        first: int = 0,
        tag: str = "",
        num_epochs: int | None = None,
        metric_is_pct: bool = True,
        file: TextIO | None = None,
    ) -> None:
        if freq is not None and (not isinstance(freq, int) or freq < 0):
            raise ValueError(f"freq: expected None, 0 or a positive integer, found {freq!r}")
        if not isinstance(first, int) or first < 0:
            raise ValueError(f"first: expected a non-negative integer, found {first!r}")
        self.freq, self.first, self.num_epochs = freq, first, num_epochs
        self.tag = f"[{tag}] " if tag else ""
        self.metric_is_pct = metric_is_pct
        self.file = file
        self._header_written = False
        self._lr: float | None = None
        self._evaluations: dict[str, int] = {}
        self._epochs: int | None = num_epochs
        self._reset()

    def _reset(self) -> None:
        # (value at the last printed line, value now), as CNTK's ProgressWriter keeps them.
        self._updates = [0, 0]
        self._samples = [0, 0]
        self._loss = [0.0, 0.0]
        self._metric = [0.0, 0.0]

    def _print(self, line: str) -> None:
        print(line, file=self.file if self.file is not None else sys.stdout, flush=True)

    def write_header(self) -> None:
        """The three header lines of the geometric table."""
        self._print(" average      since    average      since      examples")
        self._print("    loss       last     metric       last              ")
        self._print(" ------------------------------------------------------")
        self._header_written = True

    def update(self, samples: int, loss_sum: float, metric_sum: float) -> None:
        """Count one minibatch and print a line when the schedule says so."""
        if samples == 0:
            return
        self._samples[1] += samples
        self._loss[1] += loss_sum
        self._metric[1] += metric_sum
        self._updates[1] += 1
        u = self._updates[1]
        if self.freq == 0:
            due = (u + 1) & u == 0
        else:
            due = (self.freq is not None and u % self.freq == 0) or u <= self.first
        if not due:
            return
        since = self._samples[1] - self._samples[0]
        loss_last = _avg(self._loss[1] - self._loss[0], since)
        metric_last = _avg(self._metric[1] - self._metric[0], since)
        if self.freq == 0:
            self._print(
                f" {_avg(self._loss[1], self._samples[1]):8.3g}   {loss_last:8.3g}   "
                f"{_avg(self._metric[1], self._samples[1]):8.3g}   {metric_last:8.3g}    "
                f"{self._samples[1]:10d}"
            )
        else:
            span = f"Minibatch[{self._updates[0] + 1:4d}-{u:4d}]"
            self._print(
                f" {span}: loss = {loss_last:0.6f} * {since:d}, "
                f"{self._metric_text(metric_last, since)};"
            )
        self._updates[0], self._samples[0] = u, self._samples[1]
        self._loss[0], self._metric[0] = self._loss[1], self._metric[1]

    def _metric_text(self, value: float, samples: int) -> str:
        if self.metric_is_pct:
            return f"metric = {value * 100.0:0.2f}% * {samples:d}"
        return f"metric = {value:0.6f} * {samples:d}"

    def summary(self, epoch: int, seconds: float) -> None:
        """The ``Finished Epoch`` line for the minibatches counted since the last summary."""
        samples = self._samples[1]
        if self.freq != 0:
            of = f"[{epoch} of {self._epochs}]" if self._epochs is not None else f"[{epoch}]"
            self._print(
                f"Finished Epoch{of}: {self.tag}loss = {_avg(self._loss[1], samples):0.6f} * "
                f"{samples}, {self._metric_text(_avg(self._metric[1], samples), samples)} "
                f"{seconds:0.3f}s ({_avg(samples, seconds):5.1f} samples/s);"
            )
        self._reset()

    def evaluation_summary(self, name: str, result: Mapping[str, float]) -> None:
        """CNTK's test summary line for one evaluation (``metric`` averaged per sample)."""
        self._evaluations[name] = self._evaluations.get(name, 0) + 1
        samples = int(result["samples"])
        metric = float(result["metric"])
        value = f"{metric * 100.0:0.2f}%" if self.metric_is_pct else f"{metric:0.6f}"
        self._print(
            f"Finished Evaluation [{self._evaluations[name]}]: "
            f"Minibatch[1-{int(result['minibatches'])}]: metric = {value} * {samples};"
        )

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.freq == 0 and not self._header_written:
            self.write_header()
        self._epochs = self.num_epochs if self.num_epochs is not None else trainer.fit_epochs
        self._lr = None

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if step.lr != self._lr:
            self._print(f"Learning rate per minibatch: {step.lr}")
            self._lr = step.lr
        if not step.skipped:
            self.update(step.samples, step.loss_sum, step.metric_sum)

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        self.summary(epoch.epoch, epoch.seconds)
        for name, result in epoch.evaluations.items():
            self.evaluation_summary(name, result)
        if epoch.skipped:
            self._print(
                f"Skipped {len(epoch.skipped)} minibatches with a non-finite loss or gradient "
                f"(steps {', '.join(map(str, epoch.skipped))})."
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": list(self._updates),
            "samples": list(self._samples),
            "loss": list(self._loss),
            "metric": list(self._metric),
            "evaluations": dict(self._evaluations),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._updates = [int(v) for v in state["updates"]]
        self._samples = [int(v) for v in state["samples"]]
        self._loss = [float(v) for v in state["loss"]]
        self._metric = [float(v) for v in state["metric"]]
        self._evaluations = {str(k): int(v) for k, v in state["evaluations"].items()}


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


class ProgressBar(Callback):
    """A tqdm bar per epoch with samples/s and time left, only when writing to a terminal.

    Nothing is drawn when ``file`` (default ``sys.stderr``) is not a terminal or when tqdm is
    not installed, so logs and CI output stay clean.
    """

    rank_zero_only = True

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file
        self._bar: Any = None

    def _open(self, trainer: Trainer, epoch: int) -> None:
        stream = self.file if self.file is not None else sys.stderr
        if not _is_terminal(stream):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=trainer.epoch_target,
            desc=f"Epoch {epoch}",
            unit="samples",
            file=stream,
            leave=False,
            dynamic_ncols=True,
        )

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._close()
        self._open(trainer, epoch)

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if self._bar is not None:
            self._bar.update(step.samples)
            if not step.skipped:
                self._bar.set_postfix(loss=f"{step.loss:.4g}", refresh=False)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        self._close()

    def on_fit_end(self, trainer: Trainer) -> None:
        self._close()


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

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        result = trainer.evaluate(self.source)
        epoch.metrics[f"{self.name}_loss"] = result["loss"]
        epoch.metrics[f"{self.name}_metric"] = result["metric"]
        epoch.evaluations[self.name] = result


_STEP_COLUMNS = ("step", "epoch", "samples", "loss", "metric", "grad_norm", "lr", "skipped")
_EPOCH_COLUMNS = ("epoch", "step", "samples", "seconds", "skipped")


class CSVLogger(Callback):
    """Metrics to a CSV file, one row per step (``per='step'``) or per epoch, flushed per row.

    Step rows: ``step, epoch, samples, loss, metric, grad_norm, lr, skipped`` (loss and
    metric per sample; ``nan`` for a skipped step). Epoch rows: ``epoch, step, samples,
    seconds, skipped`` and then every entry of :attr:`EpochInfo.metrics` in the order of the
    first epoch (``loss``, ``metric``, ``val_loss``, ...). A resumed run keeps the rows up to
    the checkpoint and appends; a fresh run starts a new file.
    """

    rank_zero_only = True

    def __init__(self, path: str | Path, per: str = "epoch") -> None:
        if per not in ("step", "epoch"):
            raise ValueError(f"per: expected 'step' or 'epoch', found {per!r}")
        self.path, self.per = Path(path), per
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._columns: list[str] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        kept: list[dict[str, str]] = []
        if trainer.state.step > 0 and self.path.exists():
            key, last = (
                ("step", trainer.state.step)
                if self.per == "step"
                else (
                    "epoch",
                    trainer.state.epoch,
                )
            )
            with self.path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row[key]) <= last]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("w", newline="")
        self._file, self._writer, self._columns = file, csv.writer(file), None
        if kept:
            self._set_columns(list(kept[0]))
            for row in kept:
                self._writer.writerow(list(row.values()))
        elif self.per == "step":
            self._set_columns(list(_STEP_COLUMNS))
        file.flush()

    def _set_columns(self, columns: list[str]) -> None:
        self._columns = columns
        self._writer.writerow(columns)

    def _row(self, values: Mapping[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("CSVLogger: a row came before on_fit_start opened the file")
        if self._columns is None:
            self._set_columns(list(values))
        columns = self._columns or []
        extra = [k for k in values if k not in columns]
        if extra:
            raise ValueError(
                f"CSVLogger({str(self.path)!r}): the row has columns {extra} that the file's "
                f"header {columns} lacks; metrics must be the same at every epoch"
            )
        self._writer.writerow([values.get(c, "") for c in columns])
        self._file.flush()

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if self.per == "step":
            nan = float("nan")
            self._row(
                {
                    "step": step.step,
                    "epoch": step.epoch,
                    "samples": step.samples,
                    "loss": nan if step.skipped else repr(step.loss),
                    "metric": nan if step.skipped else repr(step.metric),
                    "grad_norm": repr(step.grad_norm),
                    "lr": repr(step.lr),
                    "skipped": int(step.skipped),
                }
            )

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        if self.per == "epoch":
            row: dict[str, Any] = {
                "epoch": epoch.epoch,
                "step": trainer.state.step,
                "samples": epoch.samples,
                "seconds": f"{epoch.seconds:.3f}",
                "skipped": len(epoch.skipped),
            }
            row.update({k: repr(float(v)) for k, v in epoch.metrics.items()})
            self._row(row)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard (``torch.utils.tensorboard``; needs the ``tensorboard`` package).

    Per step: ``train/loss``, ``train/metric``, ``train/grad_norm``, ``train/lr``; per epoch:
    ``epoch/<name>`` for every entry of :attr:`EpochInfo.metrics`.
    """

    rank_zero_only = True

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs the 'tensorboard' package: pip install tensorboard"
            ) from error
        self._writer = SummaryWriter(str(self.log_dir), purge_step=trainer.state.step + 1)

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if step.skipped:
            return
        for name, value in (
            ("loss", step.loss),
            ("metric", step.metric),
            ("grad_norm", step.grad_norm),
            ("lr", step.lr),
        ):
            self._writer.add_scalar(f"train/{name}", value, step.step)

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        for name, value in epoch.metrics.items():
            self._writer.add_scalar(f"epoch/{name}", value, epoch.epoch)
        self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
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

    def on_fit_end(self, trainer: Trainer) -> None:
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

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        self.values.append((step.step, [float(g["lr"]) for g in trainer.optimizer.param_groups]))

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        epoch.metrics["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
