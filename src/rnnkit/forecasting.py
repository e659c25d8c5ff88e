"""Forecasting a time series the next ``horizon`` steps with a recurrent network.

The pieces ``rnnkit forecast`` (:mod:`rnnkit.recipes.forecast`) is built from, usable alone:

* :func:`prepare_series`: split in time order, scale with the training part's statistics,
  fill missing values with the last observation (the training mean before any);
* :func:`forecast_windows` (the *window* model, ``Fold(cell) >> Dense``): an input window and
  the next ``H`` values, both relative to the window's last value, with the seasonal-naive
  forecast of the same steps;
* :func:`stream_inputs`, :func:`stream_targets`, :func:`stream_chunks`, :func:`stream_series`
  (the *stream* model, ``Recurrence(cell) >> Dense``, the "forking sequences" of Wen et al.
  2017): a forecast of the next ``H`` steps at every step;
* :func:`forecasts`: the examples and a model's outputs back in the series' units, one row per
  forecast origin; :func:`forecast_errors` (MAE, MAPE, MASE) and :func:`seasonal_naive`;
* :func:`validation_examples`: every model's validation forecasts from the same origins, so
  that models and baselines are compared on the same targets;
  :func:`change_autocorrelation`: whether a season shows in a series at all;
* :class:`StreamingForecaster`: a trained stream model fed one observation at a time.

Every example carries its streams as tensors: ``features`` (the model's input), ``labels``
(what the loss compares with, NaN where unobserved), ``level`` (the value the forecast is
relative to), ``naive`` (the seasonal-naive forecast, relative to the level) and ``when``
(int64, the time of each forecast step: microseconds since 1970 for a series with times, else
the row number). Missing values are never dropped: they are filled for the input, flagged by a
mask and left out of the loss (:func:`masked_squared_error`) and of every error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.timeseries import Scaler, TimeSeries, split_series
from rnnkit.sequences import SequenceBatch

if TYPE_CHECKING:
    from rnnkit.layers import Dense

__all__ = [
    "ForecastSpec",
    "Forecasts",
    "PreparedSeries",
    "StreamingForecaster",
    "change_autocorrelation",
    "file_examples",
    "fill_forward",
    "forecast_errors",
    "forecast_table",
    "forecast_windows",
    "forecasts",
    "mase_scales",
    "masked_squared_error",
    "part_examples",
    "plot_forecasts",
    "prepare_series",
    "residual_labels",
    "scaler_from_dict",
    "scaler_to_dict",
    "seasonal_naive",
    "series_clock",
    "stream_chunks",
    "stream_inputs",
    "stream_series",
    "stream_targets",
    "time_unit",
    "validation_examples",
    "when_text",
    "window_sets",
]

Example = dict[str, Tensor]


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


def series_clock(series: TimeSeries, extra: int = 0) -> np.ndarray:
    """int64 ``[T + extra]``: each row's time in microseconds since 1970 (a series without
    times: its row number); the ``extra`` steps after the end continue the last interval.

    >>> s = TimeSeries(np.zeros((2, 1)), ("x",), np.array(["2024-01-01", "2024-01-08"],
    ...                                                    dtype="datetime64[us]"))
    >>> series_clock(s, 1).astype("datetime64[us]").astype("datetime64[D]").tolist()[-1]
    datetime.date(2024, 1, 15)
    """
    steps = len(series)
    if series.times is None:
        return np.arange(steps + extra, dtype=np.int64)
    times = series.times.astype("datetime64[us]").astype(np.int64)
    step = int(times[-1] - times[-2]) if steps > 1 else 86_400_000_000
    return np.concatenate([times, times[-1] + step * np.arange(1, extra + 1, dtype=np.int64)])


def _naive_offsets(horizon: int, season: int) -> np.ndarray:
    """For horizon step k (0-based, the step ``end + k``), the offset from ``end`` of the value
    one season before it, or whole seasons more while that lies at or after ``end``."""
    return np.array([k - season * math.ceil((k + 1) / season) for k in range(horizon)])


@dataclass
class PreparedSeries:
    """A series cut in parts in time order, scaled with its training part's statistics.

    Attributes:
        scaler: fitted on ``parts[0]`` only.
        parts: the parts (train, validation, test).
        scaled: per part, ``[T_p, F]``, NaN where missing.
        filled: per part, ``[T_p, F]``, NaN filled (:func:`fill_forward`, 0 = the training mean).
        clock: per part, int64 ``[T_p + extra]`` (:func:`series_clock` of the whole series,
            sliced from the part's first row).
        targets, known: the columns of the targets and of the known covariates.
    """

    scaler: Scaler
    parts: tuple[TimeSeries, ...]
    scaled: list[np.ndarray]
    filled: list[np.ndarray]
    clock: list[np.ndarray]
    targets: list[int]
    known: list[int]


def prepare_series(
    series: TimeSeries,
    targets: Sequence[str],
    known: Sequence[str] = (),
    split: Sequence[float] = (0.8, 0.1, 0.1),
    extra: int = 0,
) -> PreparedSeries:
    """Split ``series`` in time order, fit the scaler on the first part, scale and fill every
    part; ``extra`` steps of clock after the end (see :class:`PreparedSeries`)."""
    target_index = series.column_indices(list(targets), "target")
    known_index = series.column_indices(list(known), "known")
    parts = split_series(series, list(split))
    scaler = Scaler.fit(parts[0])
    scaled = [scaler.transform(p).values for p in parts]
    mean = np.zeros(len(series.columns))  # the training mean, in scaled units
    filled = [fill_forward(s, mean) for s in scaled]
    whole = series_clock(series, extra)
    starts = np.cumsum([0, *(len(p) for p in parts)])
    clock = [whole[a:] for a in starts[:-1]]
    return PreparedSeries(scaler, parts, scaled, filled, clock, target_index, known_index)


def forecast_windows(
    scaled: np.ndarray,
    filled: np.ndarray,
    targets: Sequence[int],
    known: Sequence[int] = (),
    *,
    input_length: int,
    horizon: int,
    season: int,
    stride: int = 1,
    clock: np.ndarray | None = None,
    starts: Sequence[int] | None = None,
) -> list[Example]:
    """The window model's examples of one part, ``n`` targets and ``K`` known columns.

    ``features`` ``[T_in, 2n]``: each target's filled value minus its level (the window's last
    value), then each target's mask; with known columns ``[T_in + H, 2n + K + 1]``: the known
    values and a flag (1 on the ``H`` appended horizon steps, whose target values and masks
    are 0). ``labels`` ``[1, H n]`` (the change from the level, step-major, NaN where
    unobserved or past the end of ``scaled``), ``level`` ``[1, n]``, ``naive`` ``[1, H n]``
    (the value one season before each target step, relative to the level) and ``when``
    ``[1, H]`` (``clock`` of the horizon steps; default: the row numbers).

    Windows start at ``starts`` (default ``0, stride, ...`` while input and horizon fit in the
    part); a window whose horizon passes the end of the part needs no known columns.
    """
    t_in, h = input_length, horizon
    steps = len(scaled)
    if clock is None:
        clock = np.arange(steps + h, dtype=np.int64)
    if starts is None:
        starts = range(0, steps - t_in - h + 1, stride)
    pad = np.full((h, scaled.shape[1]), np.nan)
    scaled = np.concatenate([scaled, pad])
    value, observed = filled[:, list(targets)], ~np.isnan(scaled[:steps, list(targets)])
    covariates = filled[:, list(known)]
    back = _naive_offsets(h, season)
    examples = []
    for start in starts:
        end = start + t_in
        if end > steps or (known and end + h > steps) or end + h > len(clock):
            raise ValueError(
                f"starts: the window at {start} needs rows up to {end + h if known else end}, "
                f"found {steps} rows"
            )
        level = value[end - 1]
        target = scaled[end : end + h, list(targets)] - level
        features = np.concatenate([value[start:end] - level, observed[start:end]], axis=1)
        if known:
            past = np.concatenate([covariates[start:end], np.zeros((t_in, 1))], axis=1)
            future = np.concatenate(
                [np.zeros((h, 2 * len(targets))), covariates[end : end + h], np.ones((h, 1))],
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
                "when": torch.from_numpy(clock[end : end + h].copy()).unsqueeze(0),
            }
        )
    return examples


def residual_labels(examples: Sequence[Example]) -> list[Example]:
    """The examples with ``labels`` relative to the seasonal-naive forecast (NaN stays NaN);
    ``truth`` keeps the plain labels, so that the truth is read back exactly."""
    return [{**e, "labels": e["labels"] - e["naive"], "truth": e["labels"]} for e in examples]


def window_sets(
    data: PreparedSeries,
    *,
    input_length: int,
    horizon: int,
    season: int,
    stride: int = 1,
    residual: bool = False,
) -> tuple[list[Example], list[Example], list[Example]]:
    """The window examples of the training, validation and test parts (``residual``: labels
    relative to seasonal naive, see :func:`residual_labels`)."""
    sets = []
    for name, scaled, filled, clock in zip(
        ("train", "validation", "test"), data.scaled, data.filled, data.clock, strict=True
    ):
        windows = forecast_windows(
            scaled,
            filled,
            data.targets,
            data.known,
            input_length=input_length,
            horizon=horizon,
            season=season,
            stride=stride,
            clock=clock,
        )
        if not windows:
            raise ValueError(
                f"split: the {name} part ({len(scaled)} steps) is shorter than input_length + "
                f"horizon = {input_length + horizon} steps; use a longer series or shorter "
                "windows"
            )
        sets.append(residual_labels(windows) if residual else windows)
    return sets[0], sets[1], sets[2]


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


def _stream_parts(
    scaled: np.ndarray, filled: np.ndarray, targets: Sequence[int], known: Sequence[int], h: int
) -> tuple[np.ndarray, np.ndarray]:
    inputs = stream_inputs(
        filled[:, list(targets)], ~np.isnan(scaled[:, list(targets)]), filled[:, list(known)], h
    )
    return inputs, stream_targets(scaled[:, list(targets)], filled[:, list(targets)], h)


def stream_chunks(
    data: PreparedSeries, *, input_length: int, horizon: int
) -> tuple[list[Example], list[Example]]:
    """The stream model's training and validation examples: chunks of ``input_length`` steps,
    one every ``input_length // 2``, of each part (the inputs read the whole series, so the
    first step of a part sees the change from the part before)."""
    whole_scaled, whole_filled = np.concatenate(data.scaled), np.concatenate(data.filled)
    inputs, _ = _stream_parts(whole_scaled, whole_filled, data.targets, data.known, horizon)
    sets: list[list[Example]] = []
    offset = 0
    length, stride = input_length, max(1, input_length // 2)
    for name, scaled, filled in zip(
        ("train", "validation"), data.scaled[:2], data.filled[:2], strict=True
    ):
        if len(scaled) < length:
            raise ValueError(
                f"split: the {name} part ({len(scaled)} steps) is shorter than input_length = "
                f"{length} steps; use a longer series or a shorter input_length"
            )
        labels = stream_targets(scaled[:, data.targets], filled[:, data.targets], horizon)
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
    return sets[0], sets[1]


def stream_series(
    scaled: np.ndarray,
    filled: np.ndarray,
    targets: Sequence[int],
    known: Sequence[int],
    *,
    horizon: int,
    season: int,
    origins: Sequence[int],
    clock: np.ndarray | None = None,
) -> Example:
    """One example holding a whole series for the stream model, forecast from ``origins``
    (the steps whose next ``H`` steps are forecast), the state carried from the first step.

    Streams ``[T, ...]``: ``features``, ``labels`` (NaN except at the origins), ``truth``
    (every step's targets ahead, relative to the level), ``level``, ``naive``, ``when``
    (``clock`` of the steps ahead) and ``origin`` (1 at the origins).
    """
    steps, h = len(scaled), horizon
    n = len(targets)
    if clock is None:
        clock = np.arange(steps + h, dtype=np.int64)
    inputs, truth = _stream_parts(scaled, filled, targets, known, h)
    value = filled[:, list(targets)]
    origin = np.zeros(steps, dtype=bool)
    origin[np.asarray(origins, dtype=np.int64)] = True
    labels = np.where(origin[:, None], truth, np.nan)
    ahead = np.arange(steps)[:, None] + 1 + _naive_offsets(h, season)  # [T, H]
    naive = value[np.clip(ahead, 0, steps - 1)] - value[:, None, :]
    naive[ahead < 0] = np.nan
    when = clock[np.arange(steps)[:, None] + np.arange(1, h + 1)]
    return {
        "features": torch.tensor(inputs, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.float32),
        "truth": torch.tensor(truth, dtype=torch.float32),
        "level": torch.tensor(value, dtype=torch.float32),
        "naive": torch.tensor(naive.reshape(steps, h * n), dtype=torch.float32),
        "when": torch.from_numpy(when.astype(np.int64)),
        "origin": torch.from_numpy(origin.astype(np.float32)).unsqueeze(1),
    }


@dataclass(frozen=True)
class ForecastSpec:
    """What the examples of a forecaster depend on: ``model`` ``"window"`` or ``"stream"``,
    the window (or training chunk) length, the horizon, the season of the naive forecast, the
    steps between origins, and whether the window model learns the change from seasonal
    naive."""

    model: str = "window"
    input_length: int = 104
    horizon: int = 52
    season: int = 52
    stride: int = 1
    residual: bool = False


def part_examples(
    data: PreparedSeries, spec: ForecastSpec
) -> tuple[list[Example], list[Example], list[Example]]:
    """The training, validation and test examples: windows of each part, or (stream) chunks of
    the training and validation parts and the whole series forecast from every test origin
    (``stride`` apart, the first the step before the test part)."""
    h = spec.horizon
    if spec.model == "window":
        return window_sets(
            data,
            input_length=spec.input_length,
            horizon=h,
            season=spec.season,
            stride=spec.stride,
            residual=spec.residual,
        )
    train, validation = stream_chunks(data, input_length=spec.input_length, horizon=h)
    scaled, filled = np.concatenate(data.scaled), np.concatenate(data.filled)
    first = len(scaled) - len(data.scaled[2])  # the test part's first row
    origins = range(first - 1, len(scaled) - h, spec.stride)
    if not origins:
        raise ValueError(f"split: the test part is shorter than horizon = {h} steps")
    test = stream_series(
        scaled,
        filled,
        data.targets,
        data.known,
        horizon=h,
        season=spec.season,
        origins=origins,
        clock=data.clock[0],
    )
    return train, validation, [test]


def validation_examples(data: PreparedSeries, spec: ForecastSpec) -> list[Example]:
    """The validation part's forecasts, from the same origins for every model: the window
    model's validation windows (:func:`forecast_windows` of ``data.scaled[1]``, residual labels
    with ``spec.residual``); for the stream model, the training and validation parts as one
    series (:func:`stream_series`) forecast from those windows' last input steps. The truth,
    the level and the seasonal-naive forecast are then the same whichever the model."""
    t_in, h = spec.input_length, spec.horizon
    steps = len(data.scaled[1])
    starts = range(0, steps - t_in - h + 1, spec.stride)
    if not starts:
        raise ValueError(
            f"split: the validation part ({steps} steps) is shorter than input_length + horizon "
            f"= {t_in + h} steps; use a longer series or shorter windows"
        )
    if spec.model == "window":
        windows = forecast_windows(
            data.scaled[1],
            data.filled[1],
            data.targets,
            data.known,
            input_length=t_in,
            horizon=h,
            season=spec.season,
            clock=data.clock[1],
            starts=starts,
        )
        return residual_labels(windows) if spec.residual else windows
    first = len(data.scaled[0])
    return [
        stream_series(
            np.concatenate(data.scaled[:2]),
            np.concatenate(data.filled[:2]),
            data.targets,
            data.known,
            horizon=h,
            season=spec.season,
            origins=[first + s + t_in - 1 for s in starts],
            clock=data.clock[0],
        )
    ]


def change_autocorrelation(values: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """The autocorrelation of a series' changes ``y_t - y_{t-1}`` at each lag (pairs where
    both changes are observed; the mean and the variance of all observed changes). Changes,
    not values: a trend or a random walk correlates with itself at every lag, its changes do
    not; a season shows as a positive correlation at its lag. White noise stays within about
    ``1.96 / sqrt(n)`` of 0 (n changes) 95 % of the time.

    >>> t = np.arange(240.0)
    >>> r = change_autocorrelation(np.sin(2 * np.pi * t / 12) + 0.01 * t, [6, 12])
    >>> [round(float(v), 3) for v in r]
    [-1.0, 1.0]
    """
    change = np.diff(np.asarray(values, dtype=float))
    seen = change[~np.isnan(change)]
    if seen.size < 2 or not seen.var() > 0:
        return np.zeros(len(lags))
    centred = change - seen.mean()
    out = []
    for lag in lags:
        if lag <= 0:
            raise ValueError(f"lags: expected positive lags, found {lag}")
        products = centred[lag:] * centred[:-lag]
        products = products[~np.isnan(products)]
        out.append(products.mean() / seen.var() if products.size else 0.0)
    return np.array(out)


def file_examples(
    series: TimeSeries,
    scaler: Scaler,
    targets: Sequence[str],
    known: Sequence[str],
    spec: ForecastSpec,
) -> list[Example]:
    """The examples of a new series (the training file's columns, scaled with ``scaler``):
    forecasts from its last row and every ``stride``-th row before it that has a full input
    window, the last past the end of the series; with known columns, the last ``H`` rows must
    hold their future values, and the forecasts end there."""
    columns = [*targets, *known]
    scaled = scaler.transform(series.select(list(scaler.columns))).values
    scaled = scaled[:, [scaler.columns.index(c) for c in columns]]
    filled = fill_forward(scaled, np.zeros(scaled.shape[1]))
    t_index, k_index = list(range(len(targets))), list(range(len(targets), len(columns)))
    h, ahead = spec.horizon, spec.horizon if known else 0
    window = spec.model == "window"
    lowest = spec.input_length if window else 1
    firsts = list(range(len(series) - ahead, lowest - 1, -spec.stride))[::-1]
    if not firsts:
        raise ValueError(
            f"series: expected at least {lowest + ahead} rows (input_length"
            f"{', + horizon with known columns' if ahead else ''}), found {len(series)}"
        )
    clock = series_clock(series, h)
    if not window:
        origins = [f - 1 for f in firsts]
        return [
            stream_series(
                scaled,
                filled,
                t_index,
                k_index,
                horizon=h,
                season=spec.season,
                origins=origins,
                clock=clock,
            )
        ]
    examples = forecast_windows(
        scaled,
        filled,
        t_index,
        k_index,
        input_length=spec.input_length,
        horizon=h,
        season=spec.season,
        clock=clock,
        starts=[f - spec.input_length for f in firsts],
    )
    return residual_labels(examples) if spec.residual else examples


def mase_scales(data: PreparedSeries, names: Sequence[str], season: int) -> dict[str, float]:
    """Each target's mean in-sample seasonal-naive error on the training part (MASE's
    denominator); ValueError when it is 0."""
    scales = {}
    for name, column in zip(names, data.targets, strict=True):
        scales[name] = float(seasonal_naive(data.parts[0].values[:, column], season).mean())
        if not scales[name] > 0:
            raise ValueError(
                f"target {name!r}: the seasonal-naive forecast of the training part is exact "
                "(a constant or purely seasonal series), so MASE is undefined"
            )
    return scales


def scaler_to_dict(scaler: Scaler) -> dict[str, Any]:
    """The scaler as JSON-ready values (:func:`scaler_from_dict` reads them back)."""
    return {
        "kind": scaler.kind,
        "columns": list(scaler.columns),
        "center": scaler.center.tolist(),
        "scale": scaler.scale.tolist(),
    }


def scaler_from_dict(values: Mapping[str, Any]) -> Scaler:
    """The scaler of :func:`scaler_to_dict`."""
    return Scaler(
        values["kind"],
        tuple(values["columns"]),
        np.array(values["center"], dtype=float),
        np.array(values["scale"], dtype=float),
    )


def time_unit(clock: np.ndarray) -> str:
    """The finest unit timestamps in microseconds need: ``"D"``, ``"s"`` or ``"us"``."""
    if (clock % 86_400_000_000 == 0).all():
        return "D"
    return "s" if (clock % 1_000_000 == 0).all() else "us"


def when_text(when: int, unit: str | None) -> str:
    """A forecast step's id: its date (or time) in ISO 8601 at ``unit`` (:func:`time_unit`),
    or, with ``unit=None``, its row number.

    >>> when_text(86_400_000_000, "D"), when_text(5, None)
    ('1970-01-02', '5')
    """
    if unit is None:
        return str(when)
    moment = datetime(1970, 1, 1) + timedelta(microseconds=when)
    if unit == "D":
        return moment.date().isoformat()
    return moment.isoformat(timespec="seconds" if unit == "s" else "microseconds")


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


def forecast_errors(
    pred: np.ndarray, truth: np.ndarray, scale: float
) -> tuple[float, float, float]:
    """MAE, MAPE % (over the nonzero observed targets; NaN when all are 0) and MASE (the MAE
    over ``scale``), on the observed (non-NaN) values of ``truth`` only.

    >>> forecast_errors(np.array([1.0, 2.0, 5.0]), np.array([2.0, np.nan, 4.0]), 2.0)
    (1.0, 37.5, 0.5)
    """
    seen = ~np.isnan(truth)
    err = np.abs(pred[seen] - truth[seen])
    nonzero = truth[seen] != 0
    mape = 100 * (err[nonzero] / np.abs(truth[seen][nonzero])).mean() if nonzero.any() else np.nan
    return float(err.mean()), float(mape), float(err.mean() / scale)


@dataclass
class Forecasts:
    """Forecasts in the series' units, one row per origin: ``when`` int64 ``[O, H]``,
    ``truth`` and ``naive`` ``[O, H, n]`` (NaN where unobserved), ``pred`` ``[O, H, n]`` or
    None."""

    when: np.ndarray
    truth: np.ndarray
    naive: np.ndarray
    pred: np.ndarray | None


def forecasts(
    examples: Sequence[Example],
    predictions: Sequence[Any] | None,
    *,
    horizon: int,
    center: np.ndarray,
    scale: np.ndarray,
    residual: bool = False,
) -> Forecasts:
    """The examples (of :func:`forecast_windows` or :func:`stream_series`) and a model's
    outputs for them (``[H n]`` per window, ``[T, H n]`` per series) as :class:`Forecasts`:
    level added back (and seasonal naive, ``residual``), targets scaled back with the
    targets' ``center`` and ``scale`` ``[n]``; a series gives its ``origin`` rows."""
    n = len(center)
    whens, truths, naives, preds = [], [], [], []
    for i, e in enumerate(examples):
        level = e["level"].numpy().astype(float).reshape(-1, n)
        rows = e["origin"].numpy().reshape(-1) > 0 if "origin" in e else slice(None)
        level = level[rows][:, None, :]
        truth = e.get("truth", e["labels"]).numpy().astype(float).reshape(-1, horizon, n)
        naive = e["naive"].numpy().astype(float).reshape(-1, horizon, n)[rows] + level
        truths.append(truth[rows] + level)
        naives.append(naive)
        whens.append(e["when"].numpy().reshape(-1, horizon)[rows])
        if predictions is not None:
            out = np.asarray(predictions[i], dtype=float).reshape(-1, horizon, n)[rows]
            preds.append(out + (naive if residual else level))
    if not whens:
        raise ValueError("examples: expected at least one forecast origin, found none")

    def units(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) * scale + center

    pred = units(preds) if predictions is not None else None
    return Forecasts(np.concatenate(whens), units(truths), units(naives), pred)


def forecast_table(
    result: Forecasts, names: Sequence[str], unit: str | None
) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per origin and target: ids (:func:`when_text` of the first forecast step) and
    ``series``, ``target``, ``prediction``, ``naive`` (the ``H`` values of each)."""
    if result.pred is None:
        raise ValueError("result: expected predictions, found none")
    ids, rows = [], []
    for o, when in enumerate(result.when[:, 0]):
        for j, name in enumerate(names):
            ids.append(when_text(int(when), unit))
            rows.append(
                {
                    "series": name,
                    "target": result.truth[o, :, j].tolist(),
                    "prediction": result.pred[o, :, j].tolist(),
                    "naive": result.naive[o, :, j].tolist(),
                }
            )
    return ids, rows


def _time_axis(when: np.ndarray, timed: bool) -> np.ndarray:
    return when.astype("datetime64[us]") if timed else when


def _spread_origins(when: np.ndarray, count: int) -> list[int]:
    """Up to about ``count`` origins whose horizons do not overlap, spread over the span."""
    gap = (when[-1, 0] - when[0, 0]) / count
    chosen = [0]
    for o in range(1, len(when)):
        last = chosen[-1]
        if when[o, 0] > when[last, -1] and when[o, 0] - when[last, 0] >= gap:
            chosen.append(o)
    return chosen


def plot_forecasts(
    path: str | Path,
    result: Forecasts,
    names: Sequence[str],
    *,
    timed: bool,
    title: str = "",
    count: int = 4,
) -> Path:
    """One axis per target: the observed test values, and the model's and the seasonal-naive
    forecasts from about ``count`` origins spread over the test part whose horizons do not
    overlap (one step ahead: from every origin); a test part longer than ``count + 1``
    horizons is shown from ``count + 1`` horizons before its end. Dates on the axis when
    ``timed``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)), squeeze=False)
    when = result.when
    flat_when = when.reshape(-1)
    order = np.unique(flat_when, return_index=True)[1]
    origins: list[Any] = [slice(None)]  # one step ahead: every origin
    if when.shape[1] > 1:  # origins among the last ``count`` horizons, and one before them
        span = when[0, -1] - when[0, 0]
        first = int(np.searchsorted(when[:, 0], when[-1, -1] - count * span, side="left"))
        origins = [first + o for o in _spread_origins(when[first:], count)]
        order = order[flat_when[order] >= when[origins[0], 0] - span]
    for j, (ax, name) in enumerate(zip(axes[:, 0], names, strict=True)):
        observed = result.truth[..., j].reshape(-1)[order]
        ax.plot(
            _time_axis(flat_when[order], timed), observed, color="black", lw=1, label="observed"
        )
        for k, o in enumerate(origins):
            x = _time_axis(result.when[o].reshape(-1), timed)
            if result.pred is not None:
                pred = result.pred[o, :, j].reshape(-1)
                ax.plot(x, pred, color="tab:blue", label=None if k else "rnnkit")
            naive = result.naive[o, :, j].reshape(-1)
            ax.plot(x, naive, color="tab:orange", ls="--", label=None if k else "seasonal naive")
        ax.set_ylabel(name)
        ax.set_xlabel("time" if timed else "step")
        ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    if timed:
        fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


class StreamingForecaster:
    """A trained stream model fed one observation at a time, keeping its state between calls.

    ``update(observation, known=None)`` takes the targets' values at the new step (``[n]``,
    NaN where missing, in the series' units) and, when the model has known covariates, their
    values over the next ``H`` steps (``[H, K]``), advances the recurrent state by one step and
    returns the forecast of the next ``H`` steps, ``[H, n]`` in the series' units. The outputs
    equal those of the model's Recurrence run over the whole series (the tests check it).
    Missing values are filled with the last observed one (the training mean before any).

    Args:
        model: ``Recurrence(cell) >> Dense(hidden, H n)`` over :func:`stream_inputs`.
        scaler: the statistics the model was trained with (its columns include the targets
            and the known columns).
        targets, known: the column names.
        horizon: H.
    """

    def __init__(
        self,
        model: nn.Module,
        scaler: Scaler,
        targets: Sequence[str],
        known: Sequence[str] = (),
        *,
        horizon: int,
    ) -> None:
        from rnnkit.layers import Dense
        from rnnkit.recurrence import Recurrence

        layers = getattr(model, "layers", None)
        parts = list(layers) if isinstance(layers, nn.ModuleList) else []
        n, k = len(targets), len(known)
        expected = (2 * n + horizon * k, horizon * n)
        if (
            len(parts) != 2
            or not isinstance(parts[0], Recurrence)
            or not isinstance(parts[1], Dense)
            or (getattr(parts[0].cell, "input_size", None), parts[1].out_features) != expected
        ):
            raise ValueError(
                f"model: expected the stream model Recurrence(cell({expected[0]}, hidden)) >> "
                f"Dense(hidden, {expected[1]}) for {n} targets, {k} known columns and horizon "
                f"{horizon}, found {type(model).__name__}"
            )
        self.cell = parts[0].cell
        self.head: Dense = parts[1]
        self.targets, self.known, self.horizon = list(targets), list(known), horizon
        self._center_t, self._scale_t = _stats(scaler, self.targets)
        self._center_k, self._scale_k = _stats(scaler, self.known)
        self.reset()

    @classmethod
    def from_run(cls, run_dir: str | Path) -> StreamingForecaster:
        """The forecaster of a run directory of ``rnnkit forecast --model stream``."""
        from rnnkit.saving import load

        path = Path(run_dir) / "run.json"
        if not path.is_file():
            raise FileNotFoundError(f"run_dir: expected {path}, not found")
        data = json.loads(path.read_text(encoding="utf-8")).get("data", {})
        if data.get("model") != "stream" or "scaler" not in data:
            raise ValueError(
                f"{path}: expected a run of rnnkit forecast --model stream, found model "
                f"{data.get('model')!r}"
            )
        scaler = scaler_from_dict(data["scaler"])
        return cls(load(run_dir), scaler, data["targets"], data["known"], horizon=data["horizon"])

    def reset(self) -> None:
        """Forget the series: the next observation is treated as the first."""
        self._state: Any = None
        self._last: np.ndarray | None = None

    def update(self, observation: Any, known: Any = None) -> np.ndarray:
        """The forecast ``[H, n]`` after one more observation (see the class docstring)."""
        n, h = len(self.targets), self.horizon
        values = np.asarray(observation, dtype=float).reshape(-1)
        if values.shape != (n,):
            raise ValueError(
                f"observation: expected {n} values (targets {self.targets}), found shape "
                f"{np.shape(observation)}"
            )
        if self.known:
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


def _stats(scaler: Scaler, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in columns if c not in scaler.columns]
    if missing:
        raise ValueError(f"scaler: expected statistics of {missing}, found {list(scaler.columns)}")
    index = [scaler.columns.index(c) for c in columns]
    return scaler.center[index], scaler.scale[index]
