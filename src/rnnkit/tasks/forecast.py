"""Forecast a time series: windows in, the next ``horizon`` steps out, against seasonal naive.

The recipe (:func:`forecast`):

1. split the series in time order (train / validation / test) and fit the scaler on the
   training part only;
2. cut each part into windows: the input is the window's values (missing values filled with the
   last observation before them, or the training mean when none) plus the mask (1 = observed),
   and the target is the next ``horizon`` values; inputs and targets are both taken *relative
   to the window's last value* (its level), so the network learns shapes and changes, not the
   level of a trending series, and a test period above the training range is no extrapolation;
3. train ``Fold(cell) >> Dense(hidden, horizon)`` with the Trainer (CNTK's progress table,
   early stopping on the validation loss);
4. report MAE, MAPE and MASE on the test windows, on the truly observed target values only,
   next to the seasonal-naive forecast (the value one season before each target time).

Missing values are never dropped: they are filled for the input and flagged by the mask, and
they are left out of the loss and of every error figure.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnnkit.cells import GRUCell, LSTMCell
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.data.timeseries import Scaler, TimeSeries, split_series
from rnnkit.layers import Dense
from rnnkit.recurrence import Fold
from rnnkit.sequences import SequenceBatch

__all__ = [
    "ForecastConfig",
    "ForecastResult",
    "fill_forward",
    "forecast",
    "forecast_windows",
    "masked_squared_error",
    "seasonal_naive",
]


@dataclass(frozen=True)
class ForecastConfig:
    """Settings of :func:`forecast`; every field is written to the run's ``config.json``."""

    target: str
    input_length: int = 104
    horizon: int = 52
    season: int = 52
    stride: int = 1
    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: int = 32
    epochs: int = 40
    patience: int = 8
    minibatch_size: int = 32
    learning_rate: float = 0.005
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("input_length", "horizon", "season", "stride", "hidden_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell: expected 'lstm' or 'gru', found {self.cell!r}")
        if self.season > self.input_length:
            raise ValueError(
                f"season: expected at most input_length={self.input_length} (the seasonal-naive "
                f"forecast reads one season back inside the window), found {self.season}"
            )


@dataclass
class ForecastResult:
    """Test figures of the model and of the seasonal-naive baseline, in the series' units."""

    mae: float
    mape: float
    mase: float
    naive_mae: float
    naive_mape: float
    naive_mase: float
    test_windows: int
    observed_targets: int
    epochs: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_forward(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``[T, F]`` with each NaN replaced by the last observed value above it (``fallback``,
    e.g. the training mean, before the first observation).

    >>> fill_forward(np.array([[np.nan], [1.0], [np.nan], [3.0]]), np.array([0.5])).ravel().tolist()
    [0.5, 1.0, 1.0, 3.0]
    """
    out = values.copy()
    last = fallback.astype(float).copy()
    for t in range(out.shape[0]):
        seen = ~np.isnan(out[t])
        last[seen] = out[t, seen]
        out[t, ~seen] = last[~seen]
    return out


def forecast_windows(
    scaled: np.ndarray, filled: np.ndarray, config: ForecastConfig, column: int
) -> list[dict[str, Tensor]]:
    """Examples of one part: ``features [T_in, 2]`` (filled value minus the level, mask),
    ``labels [1, H]``
    (the change from the last input value, NaN where unobserved), ``level [1, 1]`` and
    ``naive [1, H]`` (the seasonal-naive forecast, also relative to the level); the ``[1, ...]``
    streams are one sample per example."""
    t_in, h, season = config.input_length, config.horizon, config.season
    value, observed = filled[:, column], ~np.isnan(scaled[:, column])
    examples = []
    for start in range(0, len(value) - t_in - h + 1, config.stride):
        end = start + t_in
        level = value[end - 1]
        target = scaled[end : end + h, column] - level
        # seasonal naive: the value one season before each target step (filled), h <= season
        # steps repeat the last season of the window; beyond, the season before that, etc.
        back = np.array([end + k - season * math.ceil((k + 1) / season) for k in range(h)])
        features = np.stack([value[start:end] - level, observed[start:end].astype(float)], axis=1)
        examples.append(
            {
                "features": torch.tensor(features, dtype=torch.float32),
                "labels": torch.tensor(target, dtype=torch.float32).unsqueeze(0),
                "level": torch.tensor([[level]], dtype=torch.float32),
                "naive": torch.tensor(value[back] - level, dtype=torch.float32).unsqueeze(0),
            }
        )
    return examples


def masked_squared_error(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
    """Sum over samples (rows) of the mean squared error over the row's observed (non-NaN)
    targets; a row with no observed target adds 0. Outputs and targets are ``[B, H]``."""
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError("masked_squared_error: expected [B, H] tensors, found a SequenceBatch")
    observed = ~torch.isnan(target)
    diff = torch.where(observed, output - torch.nan_to_num(target), torch.zeros_like(output))
    per_row = diff.pow(2).sum(-1) / observed.sum(-1).clamp(min=1)
    return per_row.sum()


def seasonal_naive(series: np.ndarray, season: int) -> np.ndarray:
    """In-sample seasonal-naive errors ``|y_t - y_{t-season}|`` where both are observed."""
    diff = np.abs(series[season:] - series[:-season])
    return diff[~np.isnan(diff)]


def _errors(pred: np.ndarray, truth: np.ndarray, scale: float) -> tuple[float, float, float]:
    seen = ~np.isnan(truth)
    err = np.abs(pred[seen] - truth[seen])
    return (
        float(err.mean()),
        float(100 * (err / np.abs(truth[seen])).mean()),
        float(err.mean() / scale),
    )


def forecast(
    series: TimeSeries,
    config: ForecastConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> ForecastResult:
    """Train and evaluate a forecaster on ``series`` (see the module docstring).

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``metrics.csv``, ``forecast.png`` and ``report.md``.
    """
    from rnnkit.training import (
        CSVLogger,
        EarlyStopping,
        ProgressPrinter,
        Trainer,
    )
    from rnnkit.training.criteria import Criterion

    column = series.column_indices([config.target], "target")[0]
    torch.manual_seed(config.seed)
    parts = split_series(series, list(config.split))
    scaler = Scaler.fit(parts[0])
    scaled = [scaler.transform(p).values for p in parts]
    mean = np.zeros(len(series.columns))  # the training mean, in scaled units
    sets = [forecast_windows(s, fill_forward(s, mean), config, column) for s in scaled]
    for name, windows in zip(("train", "validation", "test"), sets, strict=True):
        if not windows:
            raise ValueError(
                f"split: the {name} part is shorter than input_length + horizon = "
                f"{config.input_length + config.horizon} steps; use a longer series or "
                "shorter windows"
            )
    cell = (LSTMCell if config.cell == "lstm" else GRUCell)(2, config.hidden_size)
    model = Fold(cell) >> Dense(config.hidden_size, config.horizon)
    criterion = Criterion(masked_squared_error, masked_squared_error)
    run = Path(run_dir) if run_dir is not None else None
    callbacks: list[Any] = [EarlyStopping(patience=config.patience, restore_best=True)]
    if progress:
        callbacks.insert(0, ProgressPrinter(freq=0, num_epochs=config.epochs, metric_is_pct=False))
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        callbacks.append(CSVLogger(run / "metrics.csv"))
    trainer = Trainer(
        model,
        criterion,
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        callbacks=callbacks,
    )

    def source(examples: list[dict[str, Tensor]], train: bool) -> MinibatchSource:
        return MinibatchSource(
            examples,
            config.minibatch_size,
            unit="sequences",
            randomize=train,
            seed=config.seed,
            max_sweeps=None if train else 1,
        )

    started = time.perf_counter()
    summary = trainer.fit(
        source(sets[0], True), epochs=config.epochs, validation=source(sets[1], False)
    )
    seconds = time.perf_counter() - started

    test = sets[2]
    x = SequenceBatch.from_list([e["features"] for e in test])
    with torch.no_grad():
        pred = trainer.predict(x).numpy()
    level = np.concatenate([e["level"].numpy() for e in test])
    truth = np.concatenate([e["labels"].numpy() for e in test]) + level
    naive = np.concatenate([e["naive"].numpy() for e in test]) + level
    to_units = lambda v: scaler.inverse_transform(v[..., None], [config.target])[..., 0]  # noqa: E731
    pred_u, truth_u, naive_u = to_units(pred + level), to_units(truth), to_units(naive)
    train_raw = parts[0].values[:, column]
    scale = float(seasonal_naive(train_raw, config.season).mean())
    mae, mape, mase = _errors(pred_u, truth_u, scale)
    n_mae, n_mape, n_mase = _errors(naive_u, truth_u, scale)
    result = ForecastResult(
        mae,
        mape,
        mase,
        n_mae,
        n_mape,
        n_mase,
        len(test),
        int((~np.isnan(truth_u)).sum()),
        len(summary.history),
        seconds,
    )
    if run is not None:
        _write_run(run, model, config, result, series, parts, pred_u, truth_u, naive_u)
    return result


def _write_run(
    run: Path,
    model: torch.nn.Module,
    config: ForecastConfig,
    result: ForecastResult,
    series: TimeSeries,
    parts: Sequence[TimeSeries],
    pred: np.ndarray,
    truth: np.ndarray,
    naive: np.ndarray,
) -> None:
    from rnnkit.saving import save

    save(model, run)
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    _plot(run / "forecast.png", config, pred, truth, naive)
    (run / "report.md").write_text(
        "\n".join(
            [
                f"# Forecast of `{config.target}`",
                "",
                f"Series: {len(series)} steps ({int(np.isnan(series.values).sum())} missing "
                f"values, filled for the input and left out of every error); parts in time "
                f"order: {', '.join(str(len(p)) for p in parts)} steps (train, validation, test).",
                f"Model: Fold({config.cell.upper()}Cell(2, {config.hidden_size})) >> "
                f"Dense({config.hidden_size}, {config.horizon}); {result.epochs} epochs, "
                f"{result.seconds:.1f} s.",
                "",
                f"Test: {result.test_windows} forecast origins, {result.observed_targets} "
                f"observed target values, horizon {config.horizon} steps.",
                "",
                "| forecast | MAE | MAPE % | MASE |",
                "|---|---|---|---|",
                f"| rnnkit | {result.mae:.3f} | {result.mape:.3f} | {result.mase:.3f} |",
                f"| seasonal naive (season {config.season}) | {result.naive_mae:.3f} | "
                f"{result.naive_mape:.3f} | {result.naive_mase:.3f} |",
                "",
                "MASE divides by the mean absolute error of the seasonal-naive forecast on the "
                "training part.",
                "",
            ]
        )
    )


def _plot(
    path: Path, config: ForecastConfig, pred: np.ndarray, truth: np.ndarray, naive: np.ndarray
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    origins = range(0, len(pred), max(1, len(pred) // 4))
    for i, o in enumerate(origins):
        steps = np.arange(o, o + config.horizon)
        ax.plot(steps, truth[o], color="black", lw=1, label="observed" if i == 0 else None)
        ax.plot(steps, pred[o], color="tab:blue", label="rnnkit" if i == 0 else None)
        ax.plot(
            steps, naive[o], color="tab:orange", ls="--", label="seasonal naive" if i == 0 else None
        )
    ax.set_xlabel("test step")
    ax.set_ylabel(config.target)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
