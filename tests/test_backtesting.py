"""rnnkit.backtesting against plain loops over the origins, a counting fit, NumPy metrics and
the demo's seasonal-naive figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnkit import forecasting as fc
from rnnkit.backtesting import Backtest, backtest, model_predictor
from rnnkit.cells import LSTMCell
from rnnkit.data.timeseries import TimeSeries, load_series
from rnnkit.layers import Dense
from rnnkit.recipes.forecast import co2_csv
from rnnkit.recurrence import Fold, Recurrence
from rnnkit.sequences import SequenceBatch

pytestmark = pytest.mark.usefixtures("one_thread")

T_IN, H, SEASON = 24, 6, 12


def synthetic(known: bool = True) -> fc.PreparedSeries:
    """200 steps of two seasonal targets on trends (and a known column), values missing in
    every part; parts 120 / 40 / 40, the clock H steps past the end (as the recipe's)."""
    rng = np.random.default_rng(0)
    t = np.arange(200.0)
    a = 10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / SEASON) + rng.normal(0, 0.3, 200)
    b = -3 + 0.02 * t + np.cos(2 * np.pi * t / SEASON) + rng.normal(0, 0.2, 200)
    c = rng.normal(0, 1, 200)
    for column, rows in ((a, [5, 61, 130, 166, 167, 191]), (b, [40, 162, 185])):
        column[rows] = np.nan
    values = np.stack([a, b, c] if known else [a, b], axis=1)
    names = ("a", "b", "c") if known else ("a", "b")
    series = TimeSeries(values, names)
    return fc.prepare_series(series, ["a", "b"], ["c"] if known else [], (0.6, 0.2, 0.2), H)


def hand_fill(scaled: np.ndarray) -> np.ndarray:
    out, last = scaled.copy(), np.zeros(scaled.shape[1])
    for row in out:
        seen = ~np.isnan(row)
        last[seen] = row[seen]
        row[~seen] = last[~seen]
    return out


def naive_row(o: int, k: int) -> int:
    """The row seasonal naive reads for step k (0-based) of origin o: whole seasons back."""
    return o + 1 + k - SEASON * math.ceil((k + 1) / SEASON)


def hand_forecast(model: nn.Module, data: fc.PreparedSeries, o: int, residual: bool) -> np.ndarray:
    """The window model applied by hand at origin o: ``[H, n]`` in the series' units."""
    scaled = np.concatenate(data.scaled)
    filled = hand_fill(scaled)
    tg, kn = data.targets, data.known
    n = len(tg)
    level = filled[o, tg]
    window = filled[o + 1 - T_IN : o + 1]
    past = np.concatenate(
        [
            window[:, tg] - level,
            ~np.isnan(scaled[o + 1 - T_IN : o + 1, tg]),
            window[:, kn],
            np.zeros((T_IN, 1)),
        ],
        axis=1,
    )
    future = np.concatenate(
        [np.zeros((H, 2 * n)), filled[o + 1 : o + 1 + H, kn], np.ones((H, 1))], axis=1
    )
    features = torch.tensor(np.concatenate([past, future]), dtype=torch.float32)
    with torch.no_grad():
        out = model(SequenceBatch.from_list([features]))[0].numpy().reshape(H, n)
    base = level if not residual else filled[[naive_row(o, k) for k in range(H)]][:, tg]
    center, scale = data.scaler.center[tg], data.scaler.scale[tg]
    return (out + base) * scale + center


def window_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Fold(LSTMCell(2 * 2 + 1 + 1, 8)) >> Dense(8, H * 2)


@pytest.mark.parametrize(("stride", "residual"), [(1, False), (3, True)])
def test_window_backtest_equals_a_plain_loop_over_the_origins(stride, residual):
    data = synthetic()
    model = window_model()
    spec = fc.ForecastSpec("window", T_IN, H, SEASON, stride, residual)
    result = backtest(data, spec, model_predictor(model, batch_size=5))
    first = 160  # 120 + 40: the test part's first row
    assert result.origins.tolist() == list(range(first - 1, 200 - H, stride))
    raw = np.concatenate([p.values for p in data.parts])
    for i, o in enumerate(result.origins):
        np.testing.assert_allclose(
            result.pred[i], hand_forecast(model, data, int(o), residual), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(result.truth[i], raw[o + 1 : o + 1 + H, :2])
        assert result.when[i].tolist() == list(range(o + 1, o + 1 + H))
    assert np.isnan(result.truth).sum() > 0  # missing targets in the test part


class MeanLabelFit:
    """A counting ``fit`` that sets the model's last Dense bias to the mean label (NaN left
    out) of the windows it is given (the weight is zero, so the model outputs its bias)."""

    def __init__(self, model: nn.Module) -> None:
        self.dense = model.layers[1]
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, examples, origin):
        labels = torch.cat([e["labels"] for e in examples]).numpy()
        last_row = max(int(e["when"].max()) for e in examples)
        self.calls.append((origin, len(examples), last_row))
        with torch.no_grad():
            self.dense.bias.copy_(torch.tensor(np.nanmean(labels, axis=0)))


def test_refit_is_called_every_k_origins_on_the_data_up_to_the_origin():
    data = synthetic()
    model = window_model()
    with torch.no_grad():
        model.layers[1].weight.zero_()
    fit = MeanLabelFit(model)
    spec = fc.ForecastSpec("window", T_IN, H, SEASON, stride=2)
    result = backtest(data, spec, model_predictor(model), fit=fit, refit_every=4)
    origins = result.origins.tolist()  # 159, 161, ..., 193: 18 origins
    assert len(origins) == 18
    expected = [origins[4], origins[8], origins[12], origins[16]]
    assert [c[0] for c in fit.calls] == expected == list(result.fits)
    for origin, count, last_row in fit.calls:
        assert last_row == origin  # the last window's horizon ends at the origin
        assert count == len(range(0, origin + 2 - T_IN - H, 2))
    # By hand: the bias in force at each origin is the mean label of the windows of the last
    # fit (none before the first: the bias as built).
    scaled = np.concatenate(data.scaled)
    filled = hand_fill(scaled)
    center, scale = data.scaler.center[:2], data.scaler.scale[:2]
    torch.manual_seed(0)
    bias = window_model().layers[1].bias.detach().numpy().astype(float)
    for i, o in enumerate(origins):
        if o in expected:
            starts = range(0, o + 2 - T_IN - H, 2)
            labels = [
                (scaled[s + T_IN : s + T_IN + H, :2] - filled[s + T_IN - 1, :2]).reshape(-1)
                for s in starts
            ]
            bias = np.nanmean(labels, axis=0)
        by_hand = (bias.reshape(H, 2) + filled[o, :2]) * scale + center
        np.testing.assert_allclose(result.pred[i], by_hand, rtol=1e-5, atol=1e-5)


def test_per_step_and_summary_metrics_are_the_numpy_figures():
    data = synthetic()
    spec = fc.ForecastSpec("window", T_IN, H, SEASON)

    def rmse(p, y):
        return float(np.sqrt(np.mean((p - y) ** 2)))

    result = backtest(data, spec, model_predictor(window_model()), metrics={"rmse": rmse})
    error = np.abs(result.pred - result.truth)  # NaN where the truth is missing
    train = data.parts[0].values[:, :2]
    scale = np.nanmean(np.abs(train[SEASON:] - train[:-SEASON]), axis=0)
    np.testing.assert_allclose(result.scale, scale, rtol=1e-12)
    steps = result.per_step()
    np.testing.assert_allclose(steps["mae"], np.nanmean(error, axis=0), rtol=1e-12)
    np.testing.assert_allclose(steps["mase"], np.nanmean(error, axis=0) / scale, rtol=1e-12)
    np.testing.assert_array_equal(steps["observed"], (~np.isnan(error)).sum(axis=0))
    np.testing.assert_allclose(steps["rmse"], np.sqrt(np.nanmean(error**2, axis=0)), rtol=1e-12)
    summary = result.summary()
    for j, name in enumerate(("a", "b")):
        assert summary[name]["observed"] == int((~np.isnan(error[..., j])).sum())
        assert summary[name]["mae"] == pytest.approx(np.nanmean(error[..., j]), rel=1e-12)
        assert summary[name]["mase"] == pytest.approx(
            np.nanmean(error[..., j]) / scale[j], rel=1e-12
        )
    table = result.table()
    o, k = 7, 2
    assert len(table) == result.pred.size
    row = table[(o * H + k) * 2 + 1]  # origin o, step k + 1, target b
    assert (row["origin"], row["step"], row["when"], row["series"]) == (
        int(result.origins[o]),
        k + 1,
        str(int(result.origins[o]) + k + 1),
        "b",
    )
    assert (row["prediction"], row["truth"]) == (result.pred[o, k, 1], result.truth[o, k, 1])


def test_seasonal_naive_gives_the_demo_figure():
    """The demo's split and windows (input 104, horizon 52, season 52): the test windows lie in
    the test part, so the first origin is input_length rows into it. rnnkit's figure: MAE
    1.308, MASE 1.044 on 74 windows, 3,848 observed targets."""
    series = load_series(co2_csv(), "date", ["co2"], time_format="%Y%m%d")
    data = fc.prepare_series(series, ["co2"], (), (0.8, 0.1, 0.1), 52)
    spec = fc.ForecastSpec("window", 104, 52, 52)
    first = len(data.scaled[0]) + len(data.scaled[1])
    result = backtest(data, spec, lambda ex: [e["naive"] for e in ex], start=first - 1 + 104)
    _, _, test = fc.window_sets(data, input_length=104, horizon=52, season=52)
    recipe = fc.forecasts(
        test,
        None,
        horizon=52,
        center=data.scaler.center[data.targets],
        scale=data.scaler.scale[data.targets],
    )
    scale = fc.mase_scales(data, ["co2"], 52)["co2"]
    mae, _, mase = fc.forecast_errors(recipe.naive[..., 0], recipe.truth[..., 0], scale)
    summary = result.summary()["co2"]
    assert len(result.origins) == 74 and summary["observed"] == 3848
    assert summary["mae"] == pytest.approx(mae, rel=1e-6)
    assert summary["mase"] == pytest.approx(mase, rel=1e-6)
    assert (round(summary["mae"], 3), round(summary["mase"], 3)) == (1.308, 1.044)
    np.testing.assert_allclose(result.naive, result.pred)
    np.testing.assert_array_equal(result.when, recipe.when)
    assert result.unit == "D" and result.table()[0]["when"] == "1999-08-14"


def test_stream_backtest_equals_the_recipe_test_forecasts_and_refits_on_chunks():
    """The stream model at the default origins gives the forecasts of the recipe's test
    example (the whole series, every origin), though each run of origins hides the targets
    after its last origin: a Recurrence reads no later step."""
    data = synthetic()
    spec = fc.ForecastSpec("stream", T_IN, H, SEASON)
    torch.manual_seed(1)
    model = Recurrence(LSTMCell(2 * 2 + H, 8)) >> Dense(8, H * 2)
    calls = []

    def fit(examples, origin):
        """Chunks of T_IN rows, one every T_IN // 2, in rows 0..origin; labels (the H steps
        ahead of each row) missing past the origin."""
        calls.append(origin)
        starts = range(0, origin + 2 - T_IN, T_IN // 2)
        assert len(examples) == len(starts)
        for a, e in zip(starts, examples, strict=True):
            assert e["features"].shape == (T_IN, 2 * 2 + H)
            labels = e["labels"].numpy().reshape(T_IN, H, 2)
            ahead = a + np.arange(T_IN)[:, None] + np.arange(1, H + 1)  # the rows labelled
            assert np.isnan(labels[ahead > origin]).all()
            scaled = np.concatenate(data.scaled)[:, :2]
            assert (~np.isnan(labels[ahead <= origin])).sum() == (
                ~np.isnan(scaled[ahead[ahead <= origin]])
            ).sum()

    seen_runs = []

    def predict(examples):
        """The model's forecasts; what it is shown: one series up to the run's last horizon,
        no labels, the targets' masks 0 after the run's last origin."""
        (e,) = examples
        assert "labels" not in e and "truth" not in e
        last = int(np.flatnonzero(e["origin"].numpy()[:, 0])[-1])
        assert len(e["features"]) == last + H + 1
        assert (e["features"][last + 1 :, 2:4] == 0).all()  # the masks: nothing observed
        assert (e["features"][last + 1 :, :2] == 0).all()  # the changes: nothing moves
        seen_runs.append(last)
        return model_predictor(model)(examples)

    result = backtest(data, spec, predict, fit=fit, refit_every=10)
    assert seen_runs == [int(result.origins[i]) for i in (9, 19, 29, len(result.origins) - 1)]
    _, _, test = fc.part_examples(data, spec)
    outputs = model_predictor(model)(test)
    recipe = fc.forecasts(
        test,
        outputs,
        horizon=H,
        center=data.scaler.center[data.targets],
        scale=data.scaler.scale[data.targets],
    )
    assert recipe.pred is not None
    np.testing.assert_allclose(result.pred, recipe.pred, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.when, recipe.when)
    assert calls == [int(result.origins[10]), int(result.origins[20]), int(result.origins[30])]


def test_bad_arguments_are_named():
    data = synthetic()
    spec = fc.ForecastSpec("window", T_IN, H, SEASON)
    naive = lambda ex: [e["naive"] for e in ex]  # noqa: E731
    with pytest.raises(ValueError, match=r"fit, refit_every: expected both"):
        backtest(data, spec, naive, refit_every=2)
    with pytest.raises(ValueError, match=r"start: expected in 23..193, found 194"):
        backtest(data, spec, naive, start=194)
    with pytest.raises(ValueError, match=r"refit_every: expected at least 1, found 0"):
        backtest(data, spec, naive, fit=lambda ex, o: None, refit_every=0)
    with pytest.raises(ValueError, match=r"predict: expected 35 outputs"):
        backtest(data, spec, lambda ex: naive(ex)[:-1])
    with pytest.raises(ValueError, match=r"metrics: expected callables named other than"):
        backtest(data, spec, naive, metrics={"mae": np.mean})
    with pytest.raises(ValueError, match=r"spec.model: expected 'window' or 'stream'"):
        backtest(data, fc.ForecastSpec("auto"), naive)


def test_a_backtest_is_a_plain_dataclass():
    result = backtest(
        synthetic(known=False),
        fc.ForecastSpec("window", T_IN, H, SEASON, stride=5),
        lambda ex: [e["naive"] for e in ex],
    )
    assert isinstance(result, Backtest) and result.unit is None and result.fits == ()
    assert result.pred.shape == result.truth.shape == (7, H, 2)
