"""Metrics to files: CSV (always available) and TensorBoard (with the ``tensorboard`` package)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from rnnkit.training.callbacks import Callback, EpochInfo, StepInfo, TrainerView

__all__ = ["CSVLogger", "TensorBoardLogger"]

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

    def on_fit_start(self, trainer: TrainerView) -> None:
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

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
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

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
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

    def on_fit_end(self, trainer: TrainerView) -> None:
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

    def on_fit_start(self, trainer: TrainerView) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs the 'tensorboard' package: pip install tensorboard"
            ) from error
        self._writer = SummaryWriter(str(self.log_dir), purge_step=trainer.state.step + 1)

    def on_step_end(self, trainer: TrainerView, step: StepInfo) -> None:
        if step.skipped:
            return
        for name, value in (
            ("loss", step.loss),
            ("metric", step.metric),
            ("grad_norm", step.grad_norm),
            ("lr", step.lr),
        ):
            self._writer.add_scalar(f"train/{name}", value, step.step)

    def on_epoch_end(self, trainer: TrainerView, epoch: EpochInfo) -> None:
        for name, value in epoch.metrics.items():
            self._writer.add_scalar(f"epoch/{name}", value, epoch.epoch)
        self._writer.flush()

    def on_fit_end(self, trainer: TrainerView) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
