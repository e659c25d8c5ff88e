"""Forecasting extensions: known covariates, several targets, the stream model and
StreamingForecaster (one observation at a time == the Recurrence over the whole series)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from rnnkit import Dense, LSTMCell, Recurrence, SequenceBatch
from rnnkit.cli import main
from rnnkit.data.timeseries import Scaler, TimeSeries
from rnnkit.tasks.forecast import (
    ForecastConfig,
    StreamingForecaster,
    fill_forward,
    forecast,
    forecast_windows,
    stream_inputs,
)


def _series(steps: int = 600, seed: int = 0) -> TimeSeries:
    """Two targets driven by a covariate known in advance (random, so no history predicts it),
    a daily cycle of 12 steps, and a few missing values."""
    rng = np.random.default_rng(seed)
    known = rng.normal(size=steps)
    cycle = np.sin(2 * np.pi * np.arange(steps) / 12)
    a = 10 + 2.0 * known + cycle + 0.1 * rng.normal(size=steps)
    b = 5 - 1.0 * known + 0.5 * cycle + 0.1 * rng.normal(size=steps)
    values = np.stack([a, b, known], axis=1)
    values[rng.choice(steps, 15, replace=False), 0] = np.nan
    return TimeSeries(values, ("a", "b", "x"))


def test_streaming_updates_equal_the_recurrence_over_the_whole_series():
    series = _series(80)
    config = ForecastConfig(
        target=("a", "b"), known=("x",), input_length=12, horizon=3, season=12, model="stream"
    )
    torch.manual_seed(0)
    model = Recurrence(LSTMCell(2 * 2 + 3 * 1, 8)) >> Dense(8, 3 * 2)
    scaler = Scaler.fit(series)
    scaled = scaler.transform(series).values
    filled = fill_forward(scaled, np.zeros(3))
    inputs = stream_inputs(filled[:, :2], ~np.isnan(scaled[:, :2]), filled[:, 2:], 3)
    with torch.no_grad():
        out = model(SequenceBatch.from_list([torch.tensor(inputs, dtype=torch.float32)]))
    whole = out.data.numpy().reshape(80, 3, 2) + filled[:, None, :2]
    whole = whole * scaler.scale[:2] + scaler.center[:2]

    streaming = StreamingForecaster(model, scaler, config)
    raw = series.values
    stepwise = []
    for t in range(80):
        ahead = np.minimum(np.arange(t + 1, t + 4), 79)  # past the end: the last known row
        stepwise.append(streaming.update(raw[t, :2], raw[ahead, 2:]))
    np.testing.assert_allclose(np.stack(stepwise), whole, rtol=1e-5, atol=1e-5)
    # the state is carried: a fresh forecaster fed only the last observation differs
    streaming.reset()
    alone = streaming.update(raw[79, :2], raw[[79, 79, 79], 2:])
    assert np.abs(alone - whole[79]).max() > 1e-3


def test_streaming_rejects_bad_observations():
    series = _series(40)
    config = ForecastConfig(target="a", known=("x",), input_length=12, horizon=2, season=12)
    stream = dataclasses.replace(config, model="stream")
    model = Recurrence(LSTMCell(2 + 2, 4)) >> Dense(4, 2)
    with pytest.raises(ValueError, match="model: expected the stream model"):
        StreamingForecaster(model, Scaler.fit(series), config)
    forecaster = StreamingForecaster(model, Scaler.fit(series), stream)
    with pytest.raises(ValueError, match=r"observation: expected 1 values"):
        forecaster.update([1.0, 2.0], np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"known: expected the next 2 values of \['x'\]"):
        forecaster.update([1.0])


def test_window_examples_with_known_covariates_and_two_targets():
    values = np.array([[1.0, 10, 0], [2, 20, 1], [3, 30, 2], [4, 40, 3], [5, 50, 4]])
    config = ForecastConfig(target=("y", "z"), known=("k",), input_length=2, horizon=2, season=2)
    (first, *_rest) = forecast_windows(values, values, config, [0, 1], [2])
    # input steps: y - 2, z - 20, masks, known value, flag 0; horizon steps: zeros, known, 1
    expected = [
        [-1, -10, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 2, 1],
        [0, 0, 0, 0, 3, 1],
    ]
    assert first["features"].tolist() == expected
    assert first["labels"].tolist() == [[1, 10, 2, 20]]  # step-major: (y, z) at t+1, t+2
    assert first["level"].tolist() == [[2, 20]]
    assert first["naive"].tolist() == [[-1, -10, 0, 0]]  # one season (2 steps) back
    assert len(_rest) == 1


@pytest.mark.parametrize("model", ["window", "stream"])
def test_known_covariates_beat_seasonal_naive_on_both_targets(model):
    # The targets follow a random covariate known in advance: no history forecasts them, so
    # seasonal naive is poor, while a model that reads the known values is not (test MAE over
    # seasonal-naive MAE measured 0.31-0.44 for both targets and both models, threshold 0.7).
    config = ForecastConfig(
        target=("a", "b"),
        known=("x",),
        input_length=24,
        horizon=3,
        season=12,
        stride=2,
        hidden_size=16,
        epochs=40 if model == "stream" else 15,
        patience=40,
        learning_rate=0.01,
        model=model,
    )
    result = forecast(_series(480), config, progress=False)
    for name in ("a", "b"):
        figures = result.per_target[name]
        assert figures["mae"] < 0.7 * figures["naive_mae"], figures
    assert result.mae == result.per_target["a"]["mae"]


def test_forecast_command_with_known_and_stream_model(tmp_path, capsys):
    series = _series(300)
    path = tmp_path / "s.csv"
    rows = ["a,b,x"] + [
        ",".join("" if math.isnan(v) else f"{v:.4f}" for v in row) for row in series.values
    ]
    path.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    argv = ["forecast", str(path), "--target", "a,b", "--known", "x", "--model", "stream"]
    argv += ["--input-length", "24", "--horizon", "3", "--season", "12", "--epochs", "2"]
    assert main([*argv, "--run-dir", str(run)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["per_target"]) == {"a", "b"} and result["model"] == "stream"
    config = json.loads((run / "config.json").read_text())
    assert config["known"] == ["x"] and config["target"] == ["a", "b"]
    forecaster = StreamingForecaster.from_run(run)
    assert forecaster.update([10.0, 5.0], np.zeros((3, 1))).shape == (3, 2)

    assert main([*argv, "--known", "nope", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1

    # --residual reaches the window model's config; with the stream model it is refused
    window = [a if a != "stream" else "window" for a in argv]
    assert main([*window, "--residual", "--run-dir", str(tmp_path / "residual")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "residual" / "config.json").read_text())["residual"] is True
    assert main([*argv, "--residual", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "residual" in err and len(err.strip().splitlines()) == 1


def test_residual_model_learns_the_change_from_seasonal_naive(monkeypatch):
    """With ``residual=True`` the labels are the target minus seasonal naive, and the
    prediction adds seasonal naive back: a network that predicts zero change *is* seasonal
    naive, to the last digit of every figure."""
    from rnnkit.tasks import forecast as fc
    from rnnkit.training import Trainer

    series = _series(480)
    plain = ForecastConfig(target="a", input_length=24, horizon=3, season=12, epochs=1)
    residual = dataclasses.replace(plain, residual=True)
    data = fc._prepare(series, plain)
    for part_plain, part_residual in zip(
        fc._window_sets(data, plain), fc._window_sets(data, residual), strict=True
    ):
        for e, r in zip(part_plain, part_residual, strict=True):
            torch.testing.assert_close(r["labels"], e["labels"] - e["naive"], equal_nan=True)
            assert torch.equal(r["change"].nan_to_num(-1), e["labels"].nan_to_num(-1))

    monkeypatch.setattr(Trainer, "predict", lambda self, x: torch.zeros(x.batch_size, 3))
    result = forecast(series, residual, progress=False)
    assert result.mae == pytest.approx(result.naive_mae, rel=1e-6)
    assert result.mase == pytest.approx(result.naive_mase, rel=1e-6)
    assert result.mape == pytest.approx(result.naive_mape, rel=1e-6)
    # without it, zero change is the last value carried forward: a different forecast
    carried = forecast(series, plain, progress=False)
    assert carried.naive_mae == result.naive_mae  # the same truth, exactly
    assert carried.naive_mape == result.naive_mape
    assert abs(carried.mae - carried.naive_mae) > 0.05 * carried.naive_mae

    with pytest.raises(ValueError, match="residual: .*window-model option"):
        ForecastConfig(target="a", model="stream", residual=True)
