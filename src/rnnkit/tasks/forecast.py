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

Several targets (a tuple ``target``) are forecast together: each has its own value and mask in
the input and its own figures (:attr:`ForecastResult.per_target`). Covariates known in advance
(``known``: a calendar, a temperature forecast) enter the input; the window model appends the
horizon's ``H`` steps to each window (targets unobserved there, a flag set) so that the
network reads their known values before it forecasts.

``residual=True`` (window model) trains the network on the difference between the target and
the seasonal-naive forecast, and adds that forecast back: a network that outputs zero *is*
seasonal naive, and training with early stopping on the validation loss moves away from it as
far as that helps on the validation windows (the baseline as a skip connection).

``model='stream'`` trains a forecaster that reads the series one step at a time and forecasts
the next ``horizon`` steps at *every* step (the "forking sequences" of Wen et al. 2017,
"A multi-horizon quantile recurrent forecaster"): ``Recurrence(cell) >> Dense`` over an input
of, per step, each target's change since the step before and its mask, and the known
covariates of the next ``horizon`` steps; the output is each target's change from the current
value. It is trained on chunks of ``input_length`` steps (one every ``input_length // 2``
steps), and tested from every origin whose horizon lies in the test part, the state carried
from the first step of the series. :class:`StreamingForecaster` runs it one observation at a
time (``update(observation) -> forecast``), carrying the state between calls.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    "StreamingForecaster",
    "fill_forward",
    "forecast",
    "forecast_command",
    "forecast_windows",
    "masked_squared_error",
    "seasonal_naive",
    "stream_inputs",
    "stream_targets",
]


@dataclass(frozen=True)
class ForecastConfig:
    """Settings of :func:`forecast`; every field is written to the run's ``config.json``.

    ``target`` is one column or a tuple of columns forecast together; ``known`` the columns
    known in advance over the horizon; ``model`` ``'window'`` (``Fold >> Dense`` on windows)
    or ``'stream'`` (``Recurrence >> Dense`` at every step, see the module docstring).
    """

    target: str | tuple[str, ...]
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
    known: tuple[str, ...] = ()
    model: Literal["window", "stream"] = "window"
    residual: bool = False

    @property
    def targets(self) -> tuple[str, ...]:
        """The target columns as a tuple."""
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def __post_init__(self) -> None:
        if not self.targets or not all(isinstance(t, str) for t in self.targets):
            raise ValueError(f"target: expected a column name or names, found {self.target!r}")
        both = sorted(set(self.targets) & set(self.known))
        if both:
            raise ValueError(f"known: expected columns that are not targets, found {both}")
        if self.model not in ("window", "stream"):
            raise ValueError(f"model: expected 'window' or 'stream', found {self.model!r}")
        if self.residual and self.model != "window":
            raise ValueError(
                "residual: the forecast relative to seasonal naive is a window-model option "
                f"(model='window'), found model={self.model!r}"
            )
        if self.model == "stream" and self.input_length < 2:
            raise ValueError(
                f"input_length: the stream model trains on chunks of input_length >= 2 steps, "
                f"found {self.input_length}"
            )
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
    """Test figures of the model and of the seasonal-naive baseline, in the series' units.

    The top-level figures are those of the first target; ``per_target`` holds every target's
    (``mae``, ``mape``, ``mase``, ``naive_mae``, ``naive_mape``, ``naive_mase``).
    """

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
    per_target: dict[str, dict[str, float]] = field(default_factory=dict)

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
    scaled: np.ndarray,
    filled: np.ndarray,
    config: ForecastConfig,
    column: int | Sequence[int],
    known: Sequence[int] = (),
) -> list[dict[str, Tensor]]:
    """Examples of one part for ``n`` target columns and ``K`` known columns.

    ``features`` ``[T_in, 2n]``: each target's filled value minus its level, then each
    target's mask; with known columns, ``[T_in + H, 2n + K + 1]``: the known values and a flag
    (1 on the ``H`` appended horizon steps, whose target values and masks are 0). ``labels``
    ``[1, H n]`` (the change from the last input value, step-major, NaN where unobserved),
    ``level`` ``[1, n]`` and ``naive`` ``[1, H n]`` (the seasonal-naive forecast, also
    relative to the level); the ``[1, ...]`` streams are one sample per example.
    """
    t_in, h, season = config.input_length, config.horizon, config.season
    columns = [column] if isinstance(column, int) else list(column)
    value, observed = filled[:, columns], ~np.isnan(scaled[:, columns])
    covariates = filled[:, list(known)]
    # seasonal naive: the value one season before each target step (filled), h <= season
    # steps repeat the last season of the window; beyond, the season before that, etc.
    back = np.array([k - season * math.ceil((k + 1) / season) for k in range(h)])
    examples = []
    for start in range(0, len(value) - t_in - h + 1, config.stride):
        end = start + t_in
        level = value[end - 1]
        target = scaled[end : end + h, columns] - level
        features = np.concatenate([value[start:end] - level, observed[start:end]], axis=1)
        if known:
            past = np.concatenate([covariates[start:end], np.zeros((t_in, 1))], axis=1)
            future = np.concatenate(
                [np.zeros((h, 2 * len(columns))), covariates[end : end + h], np.ones((h, 1))],
                axis=1,
            )
            features = np.concatenate([np.concatenate([features, past], axis=1), future])
        examples.append(
            {
                "features": torch.tensor(features, dtype=torch.float32),
                "labels": torch.tensor(target, dtype=torch.float32).reshape(1, -1),
                "level": torch.tensor(level, dtype=torch.float32).unsqueeze(0),
                "naive": torch.tensor(value[end + back] - level, dtype=torch.float32).reshape(
                    1, -1
                ),
            }
        )
    return examples


def stream_inputs(
    filled: np.ndarray, observed: np.ndarray, covariates: np.ndarray, horizon: int
) -> np.ndarray:
    """The stream model's input ``[T, 2n + H K]``: each target's change since the step before
    (0 at the first step), each target's mask, and the known covariates of the next ``H``
    steps (past the series' end the last known row is repeated).

    ``filled`` ``[T, n]`` (targets, missing values filled), ``observed`` ``[T, n]``,
    ``covariates`` ``[T, K]`` (filled).

    >>> one = np.array([[1.0], [0.0]])
    >>> stream_inputs(np.array([[1.0], [3.0]]), one, np.array([[5.0], [6.0]]), 2)
    array([[0., 1., 6., 6.],
           [2., 0., 6., 6.]])
    """
    change = np.diff(filled, axis=0, prepend=filled[:1])
    steps = len(filled)
    ahead = np.minimum(np.arange(steps)[:, None] + np.arange(1, horizon + 1), steps - 1)
    future = covariates[ahead].reshape(steps, -1)  # [T, H K], step-major
    return np.concatenate([change, observed.astype(float), future], axis=1)


def stream_targets(scaled: np.ndarray, filled: np.ndarray, horizon: int) -> np.ndarray:
    """``[T, H n]``: at step t, each target's value at ``t+1..t+H`` minus its filled value at
    t (step-major; NaN where unobserved or past the end of ``scaled``, ``[T, n]``).

    >>> stream_targets(np.array([[1.0], [np.nan], [4.0]]), np.array([[1.0], [1.0], [4.0]]), 2)
    array([[nan,  3.],
           [ 3., nan],
           [nan, nan]])
    """
    steps, n = scaled.shape
    padded = np.concatenate([scaled, np.full((horizon, n), np.nan)])
    ahead = np.arange(steps)[:, None] + np.arange(1, horizon + 1)
    return (padded[ahead] - filled[:, None, :]).reshape(steps, -1)


def masked_squared_error(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
    """Sum over samples (rows) of the mean squared error over the row's observed (non-NaN)
    targets; a row with no observed target adds 0. Outputs and targets are ``[B, H]``, or
    SequenceBatches of ``[H]`` steps (one sample per step).

    >>> masked_squared_error(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, float("nan")]]))
    tensor(1.)
    """
    if isinstance(output, SequenceBatch) and isinstance(target, SequenceBatch):
        output, target = output.data, target.data
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            "masked_squared_error: expected two [B, H] tensors or two SequenceBatches, found "
            f"{type(output).__name__} and {type(target).__name__}"
        )
    observed = ~torch.isnan(target)
    diff = torch.where(observed, output - torch.nan_to_num(target), torch.zeros_like(output))
    per_row = diff.pow(2).sum(-1) / observed.sum(-1).clamp(min=1)
    return per_row.sum()


def seasonal_naive(series: np.ndarray, season: int) -> np.ndarray:
    """In-sample seasonal-naive errors ``|y_t - y_{t-season}|`` where both are observed."""
    diff = np.abs(series[season:] - series[:-season])
    return diff[~np.isnan(diff)]


def _errors(pred: np.ndarray, truth: np.ndarray, scale: float) -> tuple[float, float, float]:
    """MAE, MAPE % (over the nonzero targets only; NaN when all are 0) and MASE."""
    seen = ~np.isnan(truth)
    err = np.abs(pred[seen] - truth[seen])
    nonzero = truth[seen] != 0
    mape = 100 * (err[nonzero] / np.abs(truth[seen][nonzero])).mean() if nonzero.any() else np.nan
    return float(err.mean()), float(mape), float(err.mean() / scale)


@dataclass
class _Prepared:
    """A series scaled and filled, and the index of its parts."""

    scaler: Scaler
    parts: tuple[TimeSeries, ...]
    scaled: list[np.ndarray]  # per part, [T_p, F], NaN where missing
    filled: list[np.ndarray]  # per part, [T_p, F]
    targets: list[int]
    known: list[int]


def _prepare(series: TimeSeries, config: ForecastConfig) -> _Prepared:
    targets = series.column_indices(list(config.targets), "target")
    known = series.column_indices(list(config.known), "known")
    parts = split_series(series, list(config.split))
    scaler = Scaler.fit(parts[0])
    scaled = [scaler.transform(p).values for p in parts]
    mean = np.zeros(len(series.columns))  # the training mean, in scaled units
    filled = [fill_forward(s, mean) for s in scaled]
    return _Prepared(scaler, parts, scaled, filled, targets, known)


def _window_sets(data: _Prepared, config: ForecastConfig) -> list[list[dict[str, Tensor]]]:
    sets = [
        forecast_windows(s, f, config, data.targets, data.known)
        for s, f in zip(data.scaled, data.filled, strict=True)
    ]
    for name, windows in zip(("train", "validation", "test"), sets, strict=True):
        if not windows:
            raise ValueError(
                f"split: the {name} part is shorter than input_length + horizon = "
                f"{config.input_length + config.horizon} steps; use a longer series or "
                "shorter windows"
            )
    if config.residual:  # labels relative to seasonal naive (NaN stays NaN); "change" keeps
        # the plain labels, so that the truth is read back exactly (zeros stay zeros)
        sets = [
            [{**e, "labels": e["labels"] - e["naive"], "change": e["labels"]} for e in part]
            for part in sets
        ]
    return sets


def _stream_sets(data: _Prepared, config: ForecastConfig) -> tuple[list[dict[str, Tensor]], ...]:
    """Chunks of ``input_length`` steps, one every ``input_length // 2``, of each part."""
    whole_filled = np.concatenate(data.filled)
    whole_scaled = np.concatenate(data.scaled)
    inputs = stream_inputs(
        whole_filled[:, data.targets],
        ~np.isnan(whole_scaled[:, data.targets]),
        whole_filled[:, data.known],
        config.horizon,
    )
    sets: list[list[dict[str, Tensor]]] = []
    offset = 0
    length, stride = config.input_length, max(1, config.input_length // 2)
    for name, scaled, filled in zip(
        ("train", "validation"), data.scaled, data.filled, strict=False
    ):
        labels = stream_targets(scaled[:, data.targets], filled[:, data.targets], config.horizon)
        if len(scaled) < length:
            raise ValueError(
                f"split: the {name} part is shorter than input_length = {length} steps; use a "
                "longer series or a shorter input_length"
            )
        sets.append(
            [
                {
                    "features": torch.tensor(
                        inputs[offset + a : offset + a + length], dtype=torch.float32
                    ),
                    "labels": torch.tensor(labels[a : a + length], dtype=torch.float32),
                }
                for a in range(0, len(scaled) - length + 1, stride)
            ]
        )
        offset += len(scaled)
    return tuple(sets)


def _stream_test(
    model: torch.nn.Module, data: _Prepared, config: ForecastConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled ``(pred, truth, naive, level)`` ``[O, H, n]`` from every test origin (the step
    before the first target step), ``config.stride`` apart, the state carried from step 0."""
    whole_filled = np.concatenate(data.filled)
    whole_scaled = np.concatenate(data.scaled)
    value = whole_filled[:, data.targets]
    inputs = stream_inputs(
        value, ~np.isnan(whole_scaled[:, data.targets]), whole_filled[:, data.known], config.horizon
    )
    x = SequenceBatch.from_list([torch.tensor(inputs, dtype=torch.float32)])
    model.eval()
    with torch.no_grad():
        out = model(x).data.numpy().reshape(len(inputs), config.horizon, -1)
    test_start = len(whole_filled) - len(data.scaled[2])
    origins = np.arange(test_start - 1, len(whole_filled) - config.horizon, config.stride)
    if len(origins) == 0:
        raise ValueError(
            f"split: the test part is shorter than horizon = {config.horizon} steps; use a "
            "longer series or a shorter horizon"
        )
    ahead = origins[:, None] + np.arange(1, config.horizon + 1)
    season = config.season
    back = ahead - season * np.ceil(np.arange(1, config.horizon + 1) / season).astype(int)
    level = value[origins][:, None, :]
    return out[origins] + level, whole_scaled[:, data.targets][ahead], value[back], level


def forecast(
    series: TimeSeries,
    config: ForecastConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    data_source: dict[str, Any] | None = None,
) -> ForecastResult:
    """Train and evaluate a forecaster on ``series`` (see the module docstring).

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``scaler.json``, ``metrics.csv``, ``forecast.png`` and ``report.md``. ``data_source``
    (``{"csv": path, "time_column": ..., "time_format": ...}``) goes into ``config.json`` as
    ``"data"``, so that ``rnnkit diagnose RUN_DIR`` can rebuild the validation windows.
    """
    from rnnkit.recurrence import Recurrence
    from rnnkit.training import (
        CSVLogger,
        EarlyStopping,
        ProgressPrinter,
        Trainer,
    )
    from rnnkit.training.criteria import Criterion

    torch.manual_seed(config.seed)
    data = _prepare(series, config)
    n, k = len(data.targets), len(data.known)
    cell_type = LSTMCell if config.cell == "lstm" else GRUCell
    model: torch.nn.Module
    if config.model == "window":
        sets = _window_sets(data, config)
        inputs = 2 * n + (k + 1 if k else 0)
        model = Fold(cell_type(inputs, config.hidden_size)) >> Dense(
            config.hidden_size, config.horizon * n
        )
    else:
        sets = list(_stream_sets(data, config))
        inputs = 2 * n + config.horizon * k
        model = Recurrence(cell_type(inputs, config.hidden_size)) >> Dense(
            config.hidden_size, config.horizon * n
        )
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
        return MinibatchSource.for_fit(
            examples, config.minibatch_size, training=train, unit="sequences", seed=config.seed
        )

    started = time.perf_counter()
    summary = trainer.fit(
        source(sets[0], True), epochs=config.epochs, validation=source(sets[1], False)
    )
    seconds = time.perf_counter() - started

    if config.model == "window":
        test = sets[2]
        x = SequenceBatch.from_list([e["features"] for e in test])
        with torch.no_grad():
            pred = trainer.predict(x).numpy().reshape(len(test), config.horizon, n)
        level = np.concatenate([e["level"].numpy() for e in test])[:, None, :]
        shape = (len(test), config.horizon, n)
        truth_key = "change" if config.residual else "labels"
        truth = np.concatenate([e[truth_key].numpy() for e in test]).reshape(shape) + level
        naive = np.concatenate([e["naive"].numpy() for e in test]).reshape(shape) + level
        pred = pred + level
        if config.residual:  # the prediction is relative to seasonal naive
            pred = pred + naive - level
    else:
        pred, truth, naive, level = _stream_test(model, data, config)
    names = list(config.targets)
    pred_u, truth_u, naive_u = (
        data.scaler.inverse_transform(v, names) for v in (pred, truth, naive)
    )
    per_target: dict[str, dict[str, float]] = {}
    for j, (name, column) in enumerate(zip(names, data.targets, strict=True)):
        scale = float(seasonal_naive(data.parts[0].values[:, column], config.season).mean())
        if not scale > 0:
            raise ValueError(
                f"target {name!r}: the seasonal-naive forecast of the training part is exact "
                "(a constant or purely seasonal series), so MASE is undefined; check the column"
            )
        mae, mape, mase = _errors(pred_u[..., j], truth_u[..., j], scale)
        n_mae, n_mape, n_mase = _errors(naive_u[..., j], truth_u[..., j], scale)
        per_target[name] = {
            "mae": mae,
            "mape": mape,
            "mase": mase,
            "naive_mae": n_mae,
            "naive_mape": n_mape,
            "naive_mase": n_mase,
        }
    first = per_target[names[0]]
    result = ForecastResult(
        first["mae"],
        first["mape"],
        first["mase"],
        first["naive_mae"],
        first["naive_mape"],
        first["naive_mase"],
        len(pred_u),
        int((~np.isnan(truth_u[..., 0])).sum()),
        len(summary.history),
        seconds,
        per_target,
    )
    if run is not None:
        _write_run(run, model, config, result, series, data, pred_u, truth_u, naive_u)
        if data_source is not None:
            written = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(
                json.dumps({**written, "data": data_source}, indent=2) + "\n"
            )
    return result


def _write_run(
    run: Path,
    model: torch.nn.Module,
    config: ForecastConfig,
    result: ForecastResult,
    series: TimeSeries,
    data: _Prepared,
    pred: np.ndarray,
    truth: np.ndarray,
    naive: np.ndarray,
) -> None:
    from rnnkit.saving import save

    save(model, run)
    (run / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    scaler = data.scaler
    (run / "scaler.json").write_text(
        json.dumps(
            {
                "kind": scaler.kind,
                "columns": list(scaler.columns),
                "center": scaler.center.tolist(),
                "scale": scaler.scale.tolist(),
            }
        )
        + "\n"
    )
    _plot(run / "forecast.png", config, pred[..., 0], truth[..., 0], naive[..., 0])
    inputs = 2 * len(config.targets)
    if config.model == "window":
        inputs += len(config.known) + 1 if config.known else 0
        net = (
            f"Fold({config.cell.upper()}Cell({inputs}, {config.hidden_size})) >> "
            f"Dense({config.hidden_size}, {config.horizon * len(config.targets)})"
        )
    else:
        inputs += config.horizon * len(config.known)
        net = (
            f"Recurrence({config.cell.upper()}Cell({inputs}, {config.hidden_size})) >> "
            f"Dense({config.hidden_size}, {config.horizon * len(config.targets)}), "
            "a forecast at every step"
        )
    label = ", ".join(f"`{t}`" for t in config.targets)
    rows = []
    for name, f in result.per_target.items():
        rows += [
            f"| {name} | rnnkit | {f['mae']:.3f} | {f['mape']:.3f} | {f['mase']:.3f} |",
            f"| {name} | seasonal naive (season {config.season}) | {f['naive_mae']:.3f} | "
            f"{f['naive_mape']:.3f} | {f['naive_mase']:.3f} |",
        ]
    if len(config.targets) == 1:
        rows = [r.split(" | ", 1)[1].join(["| ", ""]) for r in rows]
        header = ["| forecast | MAE | MAPE % | MASE |", "|---|---|---|---|"]
    else:
        header = ["| target | forecast | MAE | MAPE % | MASE |", "|---|---|---|---|---|"]
    known = f" Known in advance: {', '.join(config.known)}." if config.known else ""
    (run / "report.md").write_text(
        "\n".join(
            [
                f"# Forecast of {label}",
                "",
                f"Series: {len(series)} steps ({int(np.isnan(series.values).sum())} missing "
                f"values, filled for the input and left out of every error); parts in time "
                f"order: {', '.join(str(len(p)) for p in data.parts)} steps (train, validation, "
                f"test).{known}",
                f"Model: {net}; {result.epochs} epochs, {result.seconds:.1f} s.",
                "",
                f"Test: {result.test_windows} forecast origins, {result.observed_targets} "
                f"observed target values, horizon {config.horizon} steps.",
                "",
                *header,
                *rows,
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
    ax.set_ylabel(config.targets[0])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class StreamingForecaster:
    """A trained stream model fed one observation at a time, keeping its state between calls.

    ``update(observation, known=None)`` takes the targets' values at the new step (``[n]``,
    NaN where missing, in the series' units) and, when the model has known covariates, their
    values over the next ``H`` steps (``[H, K]``), advances the recurrent state by one step and
    returns the forecast of the next ``H`` steps, ``[H, n]`` in the series' units. The outputs
    equal those of the model's Recurrence run over the whole series (the tests check it).
    Missing values are filled with the last observed one (the training mean before any).
    """

    def __init__(self, model: torch.nn.Module, scaler: Scaler, config: ForecastConfig) -> None:
        from rnnkit.recurrence import Recurrence

        layers = getattr(model, "layers", None)
        parts = list(layers) if isinstance(layers, torch.nn.ModuleList) else []
        if (
            config.model != "stream"
            or len(parts) != 2
            or not isinstance(parts[0], Recurrence)
            or not isinstance(parts[1], Dense)
        ):
            raise ValueError(
                "model: expected the stream model Recurrence(cell) >> Dense of "
                "ForecastConfig(model='stream'), found "
                f"{type(model).__name__} with config.model={config.model!r}"
            )
        self.cell, self.head = parts[0].cell, parts[1]
        self.config = config
        self.targets, self.known = list(config.targets), list(config.known)
        self._center_t, self._scale_t = scaler._stats(self.targets)
        self._center_k: np.ndarray | None = None
        self._scale_k: np.ndarray | None = None
        if self.known:
            self._center_k, self._scale_k = scaler._stats(self.known)
        self.reset()

    @classmethod
    def from_run(cls, run_dir: str | Path) -> StreamingForecaster:
        """The forecaster of a run directory written by :func:`forecast` with a stream model."""
        from rnnkit.saving import load

        run = Path(run_dir)
        missing = [f for f in ("config.json", "scaler.json") if not (run / f).is_file()]
        if missing:
            raise ValueError(f"{run}: expected a forecast run directory, found no {missing}")
        settings = json.loads((run / "config.json").read_text())
        settings.pop("data", None)  # where the series came from, not a setting
        for name in ("split", "known"):
            settings[name] = tuple(settings[name])
        if isinstance(settings["target"], list):
            settings["target"] = tuple(settings["target"])
        stats = json.loads((run / "scaler.json").read_text())
        scaler = Scaler(
            stats["kind"],
            tuple(stats["columns"]),
            np.array(stats["center"]),
            np.array(stats["scale"]),
        )
        return cls(load(run), scaler, ForecastConfig(**settings))

    def reset(self) -> None:
        """Forget the series: the next observation is treated as the first."""
        self._state: Any = None
        self._last: np.ndarray | None = None

    def update(self, observation: Any, known: Any = None) -> np.ndarray:
        n, h = len(self.targets), self.config.horizon
        values = np.asarray(observation, dtype=float).reshape(-1)
        if values.shape != (n,):
            raise ValueError(
                f"observation: expected {n} values (targets {self.targets}), found shape "
                f"{np.shape(observation)}"
            )
        if self._center_k is not None and self._scale_k is not None:
            future = None if known is None else np.asarray(known, dtype=float)
            if future is None or future.shape != (h, len(self.known)):
                raise ValueError(
                    f"known: expected the next {h} values of {self.known}, shape "
                    f"[{h}, {len(self.known)}], found "
                    f"{None if future is None else future.shape}"
                )
            extra = ((future - self._center_k) / self._scale_k).reshape(-1)
        else:
            extra = np.zeros(0)
        scaled = (values - self._center_t) / self._scale_t
        observed = ~np.isnan(scaled)
        before = self._last if self._last is not None else np.zeros(n)
        current = np.where(observed, scaled, before)
        change = current - (self._last if self._last is not None else current)
        x = np.concatenate([change, observed.astype(float), extra])
        with torch.no_grad():
            step = torch.tensor(x, dtype=torch.float32).unsqueeze(0)
            self._state = self.cell(step, self._state)
            output = self._state[0] if isinstance(self._state, tuple) else self._state
            delta = self.head(output).numpy().reshape(h, n)
        self._last = current
        return (delta + current) * self._scale_t + self._center_t


def forecast_command(args: Any) -> int:
    """The ``rnnkit forecast`` handler: ``--target`` and ``--known`` take comma-separated
    column names; ``--model window|stream``."""
    from rnnkit.data.timeseries import load_series

    targets = tuple(t for t in args.target.split(",") if t)
    known = tuple(k for k in (args.known or "").split(",") if k)
    series = load_series(
        args.csv, args.time_column, [*targets, *known], time_format=args.time_format
    )
    config = ForecastConfig(
        target=targets[0] if len(targets) == 1 else targets,
        input_length=args.input_length,
        horizon=args.horizon,
        season=args.season,
        stride=args.stride,
        cell=args.cell,
        hidden_size=args.hidden_size,
        epochs=args.epochs,
        patience=max(3, args.epochs // 4),
        seed=args.seed,
        known=known,
        model=args.model,
        residual=args.residual,
    )
    missing = int((series.mask == 0).sum())
    print(
        f"{args.csv.name}: {len(series)} steps of {list(targets)}"
        + (f" with known {list(known)}" if known else "")
        + f", {missing} missing (filled for the input, flagged by a mask, left out of every "
        "error)"
    )
    source = {
        "csv": str(Path(args.csv).resolve()),
        "time_column": args.time_column,
        "time_format": args.time_format,
    }
    result = forecast(series, config, args.run_dir, data_source=source)
    for name, f in result.per_target.items():
        print(
            f"{name}: test MAE {f['mae']:.3f} (seasonal naive {f['naive_mae']:.3f}); "
            f"MASE {f['mase']:.3f} (seasonal naive {f['naive_mase']:.3f})"
        )
    print(f"run directory: {args.run_dir}")
    print(
        json.dumps(
            {
                "data": args.csv.name,
                "split": "time 0.8/0.1/0.1",
                "model": config.model,
                **result.as_dict(),
                "seed": args.seed,
            }
        )
    )
    return 0
