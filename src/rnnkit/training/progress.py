"""Progress on the screen: CNTK's ``ProgressPrinter`` line for line, and a terminal bar.

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

import sys
from collections.abc import Mapping
from typing import IO, Any, TextIO

from rnnkit.training.callbacks import Callback, EpochInfo, StepInfo, TrainerView

__all__ = ["ProgressBar", "ProgressPrinter", "auto_progress"]


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
        metric_name: the metric's name in those lines (CNTK's is ``metric``), e.g. ``mse``.
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
        metric_name: str = "metric",
    ) -> None:
        if freq is not None and (not isinstance(freq, int) or freq < 0):
            raise ValueError(f"freq: expected None, 0 or a positive integer, found {freq!r}")
        if not isinstance(first, int) or first < 0:
            raise ValueError(f"first: expected a non-negative integer, found {first!r}")
        self.freq, self.first, self.num_epochs = freq, first, num_epochs
        self.tag = f"[{tag}] " if tag else ""
        self.metric_is_pct = metric_is_pct
        self.metric_name = metric_name
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
            return f"{self.metric_name} = {value * 100.0:0.2f}% * {samples:d}"
        return f"{self.metric_name} = {value:0.6f} * {samples:d}"

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
            f"Minibatch[1-{int(result['minibatches'])}]: {self.metric_name} = {value} * {samples};"
        )

    def on_fit_start(self, trainer: TrainerView) -> None:
        if self.freq == 0 and not self._header_written:
            self.write_header()
        self._epochs = self.num_epochs if self.num_epochs is not None else trainer.fit_epochs
        self._lr = None

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        if step.lr != self._lr:
            self._print(f"Learning rate per minibatch: {step.lr}")
            self._lr = step.lr
        if not step.skipped:
            self.update(step.samples, step.loss_sum, step.metric_sum)

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
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
    """A tqdm bar per epoch (``epoch i/N``, samples, rate, time left, the current loss), drawn
    only when writing to a terminal; each finished epoch leaves one line above the bar.

    Nothing is drawn when ``file`` (default ``sys.stderr``) is not a terminal or when tqdm is
    not installed, so logs and CI output stay clean (:func:`auto_progress` then gives CNTK's
    table instead).
    """

    rank_zero_only = True

    def __init__(
        self, file: TextIO | None = None, metric_name: str = "metric", metric_is_pct: bool = False
    ) -> None:
        self.file = file
        self.metric_name, self.metric_is_pct = metric_name, metric_is_pct
        self._bar: Any = None
        self._epochs: int | None = None

    def _stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stderr

    def on_fit_start(self, trainer: TrainerView) -> None:
        self._epochs = trainer.fit_epochs

    def _open(self, trainer: TrainerView, epoch: int) -> None:
        stream = self._stream()
        if not _is_terminal(stream):
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        of = f"/{self._epochs}" if self._epochs is not None else ""
        self._bar = tqdm(
            total=trainer.epoch_target,
            desc=f"epoch {epoch}{of}",
            unit="samples",
            file=stream,
            leave=False,
            dynamic_ncols=True,
        )

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        self._close()
        self._open(trainer, epoch)

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        if self._bar is not None:
            self._bar.update(step.samples)
            if not step.skipped:
                self._bar.set_postfix(loss=f"{step.loss:.4g}", refresh=False)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        bar = self._bar
        self._close()
        if bar is None:
            return
        from tqdm import tqdm

        def shown(value: float) -> str:
            return f"{value * 100:.2f}%" if self.metric_is_pct else f"{value:.6g}"

        parts = [f"loss {epoch.metrics.get('loss', float('nan')):.6g}"]
        if "metric" in epoch.metrics:
            parts.append(f"{self.metric_name} {shown(float(epoch.metrics['metric']))}")
        for key in ("val_loss", "val_metric"):
            if key in epoch.metrics:
                value = float(epoch.metrics[key])
                name = "val loss" if key == "val_loss" else f"val {self.metric_name}"
                parts.append(
                    f"{name} {value:.6g}" if key == "val_loss" else f"{name} {shown(value)}"
                )
        of = f"/{self._epochs}" if self._epochs is not None else ""
        tqdm.write(
            f"epoch {epoch.epoch}{of}: " + ", ".join(parts) + f" ({epoch.seconds:.1f} s)",
            file=self._stream(),
        )

    def on_fit_end(self, trainer: TrainerView) -> None:
        self._close()


def auto_progress(
    metric_name: str = "metric",
    metric_is_pct: bool = False,
    *,
    file: TextIO | None = None,
    table: TextIO | None = None,
) -> list[Callback]:
    """Progress for a command: a :class:`ProgressBar` when ``file`` (default stderr) is a
    terminal, otherwise CNTK's epoch lines (:class:`ProgressPrinter` with ``freq=None``) on
    ``table`` (default stdout); never both, so their lines never break into each other."""
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        return [ProgressBar(stream, metric_name=metric_name, metric_is_pct=metric_is_pct)]
    return [
        ProgressPrinter(freq=None, metric_is_pct=metric_is_pct, metric_name=metric_name, file=table)
    ]
