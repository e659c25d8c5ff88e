"""Backtesting: rolling-origin evaluation of a forecaster over the test part of a series.

From origins every ``stride`` steps across the test part of a :class:`~rnnkit.forecasting.
PreparedSeries`, a model forecasts the next ``H`` steps; with ``refit_every=k`` it is first
trained further (a ``fit`` the caller gives, so any model can be backtested) on the data up to
the origin, at every ``k``-th origin. :func:`backtest` returns a :class:`Backtest`: the
forecasts and the truth in the series' units, and the metrics per horizon step and per target
(MAE, MASE and any metric callables), missing targets left out of every figure.

**Origins.** An origin ``t`` is the last known row of the whole series (the parts joined in
time order): the forecast covers rows ``t+1 .. t+H``. By default the origins are the stream
model's test origins (:func:`~rnnkit.forecasting.part_examples`): the row before the test part,
then every ``stride`` rows while the horizon lies in the series, the input windows reaching back
into the validation part as a forecaster in service would. ``start`` sets the first origin:
``start = first_test_row - 1 + input_length`` gives the window model's test windows, which lie
inside the test part (``rnnkit forecast``'s test figures).

**What a model sees.** ``predict(examples)`` gets the examples of a run of origins, built as the
recipe builds them (:class:`~rnnkit.forecasting.ForecastSpec` ``model``: window examples from
:func:`~rnnkit.forecasting.forecast_windows`, or one :func:`~rnnkit.forecasting.stream_series`
whose targets after the run's last origin are hidden), without their ``labels`` and ``truth``
streams, and returns one output per example (``[H n]`` per window, ``[T, H n]`` per stream
series; relative to each window's last value, or to seasonal naive with ``spec.residual``).
The series is scaled with the training part's scaler throughout and filled forward across the
part boundaries (the training mean before the first observation). ``fit(examples, origin)``
gets the training examples of rows ``0 .. origin``: every window (every ``stride``-th start)
whose horizon ends at the origin or before, or the stream model's chunks of ``input_length``
steps, one every ``input_length // 2``, with labels missing past the origin (their inputs
read the known covariates up to ``H`` steps ahead, as the forecasts' do); it trains the model
in place. Calls: ``fit`` at the origins ``k, 2k, ...`` (counted from 0: the model as
given forecasts the first ``k`` origins), ``predict`` once per run of origins between fits.

>>> from rnnkit.data.timeseries import TimeSeries
>>> from rnnkit.forecasting import ForecastSpec, prepare_series
>>> t = np.arange(40.0)
>>> series = TimeSeries((t % 4 + 0.1 * t)[:, None], ("y",))  # a season of 4 on a trend
>>> data = prepare_series(series, ["y"], split=(0.5, 0.25, 0.25))
>>> spec = ForecastSpec(input_length=4, horizon=2, season=4)
>>> naive = backtest(data, spec, lambda examples: [e["naive"] for e in examples])
>>> naive.origins.tolist()  # the row before the test part (rows 30..39), to row 37
[29, 30, 31, 32, 33, 34, 35, 36, 37]
>>> {k: round(v, 4) for k, v in naive.summary()["y"].items()}  # one season of trend: 0.4
{'mae': 0.4, 'mase': 1.0, 'observed': 18}
>>> {k: round(v, 4) if isinstance(v, float) else v for k, v in naive.table()[0].items()}
{'origin': 29, 'step': 1, 'when': '30', 'series': 'y', 'prediction': 4.6, 'truth': 5.0, \
'error': 0.4}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.forecasting import (
    ForecastSpec,
    PreparedSeries,
    fill_forward,
    forecast_windows,
    forecasts,
    mase_scales,
    residual_labels,
    stream_inputs,
    stream_series,
    stream_targets,
    time_unit,
    when_text,
)
from rnnkit.sequences import SequenceBatch

__all__ = ["Backtest", "Fit", "Metric", "Predict", "backtest", "model_predictor"]

Example = dict[str, Tensor]
Predict = Callable[[list[Example]], Sequence[Any]]
"""``predict(examples) -> outputs``: one output per example (see the module docstring)."""
Fit = Callable[[list[Example], int], Any]
"""``fit(examples, origin)``: train the model further on the examples of rows ``0..origin``."""
Metric = Callable[[np.ndarray, np.ndarray], float]
"""``metric(prediction, truth) -> float`` over the observed targets (1-D, series' units)."""

_OWN = ("mae", "mase", "observed")


@dataclass(frozen=True)
class Backtest:
    """The forecasts of :func:`backtest` and their metrics.

    Attributes:
        targets: the n target names.
        origins: int64 ``[O]``, each origin's last known row of the whole series.
        when: int64 ``[O, H]``, the time of each forecast step (microseconds since 1970 for
            a series with times, else the row number).
        pred, truth, naive: ``[O, H, n]`` in the series' units: the model's forecasts, the
            observed values (NaN where missing) and the seasonal-naive forecasts.
        scale: ``[n]`` MASE's denominators, the training part's in-sample seasonal-naive MAE.
        fits: the origins at which ``fit`` was called.
        unit: the time unit of ``when`` (:func:`~rnnkit.forecasting.time_unit`), None for rows.
        metrics: the extra metrics, by name.
    """

    targets: tuple[str, ...]
    origins: np.ndarray
    when: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    naive: np.ndarray
    scale: np.ndarray
    fits: tuple[int, ...] = ()
    unit: str | None = None
    metrics: Mapping[str, Metric] = field(default_factory=dict)

    def _figures(self, pred: np.ndarray, truth: np.ndarray, j: int) -> dict[str, float]:
        seen = ~np.isnan(truth)
        p, y = pred[seen], truth[seen]
        mae = float(np.abs(p - y).mean()) if seen.any() else math.nan
        out = {"mae": mae, "mase": mae / float(self.scale[j]), "observed": float(seen.sum())}
        for name, metric in self.metrics.items():
            out[name] = float(metric(p, y)) if seen.any() else math.nan
        return out

    def per_step(self) -> dict[str, np.ndarray]:
        """Each figure ``[H, n]`` per horizon step and target over the origins: ``mae``,
        ``mase``, ``observed`` (the count of observed targets) and each extra metric; NaN at a
        step without an observed target."""
        h, n = self.pred.shape[1:]
        out = {name: np.full((h, n), np.nan) for name in (*_OWN, *self.metrics)}
        for k in range(h):
            for j in range(n):
                for name, value in self._figures(
                    self.pred[:, k, j], self.truth[:, k, j], j
                ).items():
                    out[name][k, j] = value
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        """Per target, the figures over every origin and step: ``mae``, ``mase``, each extra
        metric, and ``observed`` (an int: the observed targets counted)."""
        out = {}
        for j, name in enumerate(self.targets):
            figures: dict[str, Any] = self._figures(self.pred[..., j], self.truth[..., j], j)
            figures["observed"] = int(figures["observed"])
            out[name] = figures
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per origin, horizon step and target: ``origin`` (its row), ``step``
        (1..H), ``when`` (the step's time as :func:`~rnnkit.forecasting.when_text` writes it),
        ``series``, ``prediction``, ``truth`` and ``error`` (absolute; NaN where the truth is
        missing)."""
        rows = []
        for o, origin in enumerate(self.origins.tolist()):
            for k in range(self.pred.shape[1]):
                for j, name in enumerate(self.targets):
                    pred, truth = float(self.pred[o, k, j]), float(self.truth[o, k, j])
                    rows.append(
                        {
                            "origin": origin,
                            "step": k + 1,
                            "when": when_text(int(self.when[o, k]), self.unit),
                            "series": name,
                            "prediction": pred,
                            "truth": truth,
                            "error": abs(pred - truth),
                        }
                    )
        return rows


@dataclass(frozen=True)
class _Whole:
    """The parts joined: raw values, scaled values (NaN where missing) and the scaled values
    filled forward across the part boundaries (0, the training mean, before any). Filling
    forward is causal: the first rows of ``filled`` are the filling of the first rows alone."""

    raw: np.ndarray
    scaled: np.ndarray
    filled: np.ndarray


def _whole(data: PreparedSeries) -> _Whole:
    scaled = np.concatenate(data.scaled)
    filled = fill_forward(scaled, np.zeros(scaled.shape[1]))
    return _Whole(np.concatenate([p.values for p in data.parts]), scaled, filled)


def _visible(
    data: PreparedSeries, whole: _Whole, last: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled and filled rows ``0 .. last + H`` (the known covariates of the last origin's
    horizon) with the targets after row ``last`` hidden (missing)."""
    visible = whole.scaled[: last + h + 1].copy()
    visible[last + 1 :, data.targets] = np.nan
    return visible, fill_forward(visible, np.zeros(visible.shape[1]))


def _origin_examples(
    data: PreparedSeries, spec: ForecastSpec, whole: _Whole, origins: np.ndarray
) -> list[Example]:
    """The examples ``predict`` gets for ``origins`` (one run between fits)."""
    h, last = spec.horizon, int(origins[-1])
    clock = data.clock[0]
    if spec.model == "window":
        windows = forecast_windows(
            whole.scaled,
            whole.filled,
            data.targets,
            data.known,
            input_length=spec.input_length,
            horizon=h,
            season=spec.season,
            clock=clock,
            starts=[int(o) + 1 - spec.input_length for o in origins],
        )
        return residual_labels(windows) if spec.residual else windows
    visible, filled = _visible(data, whole, last, h)
    if len(clock) < len(visible) + h:  # stream_series reads a clock H steps past its rows
        gap = clock[-1] - clock[-2] if len(clock) > 1 else 1
        clock = np.concatenate([clock, clock[-1] + gap * np.arange(1, h + 1, dtype=np.int64)])
    return [
        stream_series(
            visible,
            filled,
            data.targets,
            data.known,
            horizon=h,
            season=spec.season,
            origins=[int(o) for o in origins],
            clock=clock,
        )
    ]


def _history_examples(
    data: PreparedSeries, spec: ForecastSpec, whole: _Whole, origin: int
) -> list[Example]:
    """The training examples of rows ``0..origin`` (``fit``'s; see the module docstring)."""
    known, filled = whole.scaled[: origin + 1], whole.filled[: origin + 1]
    targets, covariates, h = data.targets, data.known, spec.horizon
    if spec.model == "window":
        windows = forecast_windows(
            known,
            filled,
            targets,
            covariates,
            input_length=spec.input_length,
            horizon=h,
            season=spec.season,
            stride=spec.stride,
            clock=data.clock[0],
        )
        return residual_labels(windows) if spec.residual else windows
    visible, shown = _visible(data, whole, origin, h)
    inputs = stream_inputs(
        shown[:, targets], ~np.isnan(visible[:, targets]), shown[:, covariates], h
    )[: origin + 1]
    labels = stream_targets(known[:, targets], filled[:, targets], h)
    length, step = spec.input_length, max(1, spec.input_length // 2)
    return [
        {
            "features": torch.tensor(inputs[a : a + length], dtype=torch.float32),
            "labels": torch.tensor(labels[a : a + length], dtype=torch.float32),
        }
        for a in range(0, len(known) - length + 1, step)
    ]


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, found {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"in {low}..{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name}: expected {bounds}, found {value}")
    return int(value)


def backtest(
    data: PreparedSeries,
    spec: ForecastSpec,
    predict: Predict,
    *,
    fit: Fit | None = None,
    refit_every: int | None = None,
    start: int | None = None,
    metrics: Mapping[str, Metric] | None = None,
) -> Backtest:
    """Forecast from rolling origins over the test part of ``data`` (the module docstring says
    which origins, what ``predict`` and ``fit`` get and when they are called).

    Args:
        data: the prepared series (:func:`~rnnkit.forecasting.prepare_series`), its parts
            train, validation, test.
        spec: the model kind, input length, horizon ``H``, season (seasonal naive and MASE),
            ``stride`` (rows between origins) and ``residual``, as the model was trained.
        predict: ``examples -> outputs``, e.g. :func:`model_predictor` of a trained model.
        fit: ``(examples, origin) -> None``, training the model further, in place.
        refit_every: k: ``fit`` before forecasting from every k-th origin (needs ``fit``).
        start: the first origin (a row of the whole series); default the row before the test
            part.
        metrics: extra figures by name, ``(prediction, truth) -> float`` on the observed
            targets (1-D arrays in the series' units).
    """
    if spec.model not in ("window", "stream"):
        raise ValueError(f"spec.model: expected 'window' or 'stream', found {spec.model!r}")
    if (fit is None) != (refit_every is None):
        raise ValueError(
            "fit, refit_every: expected both (refit every k origins) or neither, found "
            f"fit={'given' if fit is not None else None}, refit_every={refit_every!r}"
        )
    extra = dict(metrics or {})
    clash = sorted(set(extra) & set(_OWN))
    if clash or not all(callable(m) for m in extra.values()):
        raise ValueError(
            f"metrics: expected callables named other than {list(_OWN)}, found {sorted(extra)}"
        )
    whole = _whole(data)
    rows, h = len(whole.scaled), spec.horizon
    first = rows - len(data.scaled[-1])
    lowest = spec.input_length - 1 if spec.model == "window" else 0
    start = first - 1 if start is None else start
    start = _check_int("start", start, lowest, rows - 1 - h)
    k = None if refit_every is None else _check_int("refit_every", refit_every, 1)
    origins = np.arange(start, rows - h, spec.stride, dtype=np.int64)
    cuts = list(range(k, len(origins), k)) if k is not None else []
    names = tuple(data.parts[0].columns[i] for i in data.targets)
    scaler = data.scaler
    center, scale = scaler.center[data.targets], scaler.scale[data.targets]
    preds, naives, fits = [], [], []
    for a, b in zip([0, *cuts], [*cuts, len(origins)], strict=True):
        run = origins[a:b]
        if a > 0 and fit is not None:
            history = _history_examples(data, spec, whole, int(run[0]))
            if not history:
                raise ValueError(
                    f"start: no training example ends at or before origin {int(run[0])} "
                    f"(input_length {spec.input_length}, horizon {h}); start later"
                )
            fit(history, int(run[0]))
            fits.append(int(run[0]))
        examples = _origin_examples(data, spec, whole, run)
        hidden = [{s: v for s, v in e.items() if s not in ("labels", "truth")} for e in examples]
        outputs = predict(hidden)
        if len(outputs) != len(examples):
            raise ValueError(
                f"predict: expected {len(examples)} outputs (one per example), found {len(outputs)}"
            )
        outputs = [o.detach().cpu() if isinstance(o, Tensor) else o for o in outputs]
        result = forecasts(
            examples, outputs, horizon=h, center=center, scale=scale, residual=spec.residual
        )
        preds.append(cast(np.ndarray, result.pred))  # predictions were given
        naives.append(result.naive)
    ahead = origins[:, None] + np.arange(1, h + 1)  # [O, H] rows forecast
    timed = data.parts[0].times is not None
    return Backtest(
        targets=names,
        origins=origins,
        when=data.clock[0][ahead],
        pred=np.concatenate(preds),
        truth=whole.raw[ahead][:, :, data.targets],
        naive=np.concatenate(naives),
        scale=np.array([mase_scales(data, names, spec.season)[t] for t in names]),
        fits=tuple(fits),
        unit=time_unit(data.clock[0][:rows]) if timed else None,
        metrics=extra,
    )


def model_predictor(model: nn.Module, batch_size: int = 256) -> Predict:
    """``predict`` for :func:`backtest` from a torch model: each example's ``features`` in
    batches of ``batch_size`` as a SequenceBatch, the model in eval mode without gradients
    (its mode restored), one output per example (a ``[B, ...]`` output's rows, or a
    SequenceBatch's sequences), on the CPU."""
    size = _check_int("batch_size", batch_size, 1)

    def predict(examples: list[Example]) -> list[Tensor]:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        outputs: list[Tensor] = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for a in range(0, len(examples), size):
                    features = [e["features"].to(device) for e in examples[a : a + size]]
                    out = model(SequenceBatch.from_list(features))
                    rows = out.to_list() if isinstance(out, SequenceBatch) else list(out)
                    outputs += [r.cpu() for r in rows]
        finally:
            model.train(was_training)
        return outputs

    return predict
