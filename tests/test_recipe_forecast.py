"""``rnnkit forecast`` on the recipe harness: windows, known covariates, several targets, the
stream model and StreamingForecaster (one observation at a time == the Recurrence over the whole
series), the residual model, and the run directory (contract, predictions against the model
applied by hand, ``rnnkit predict``, a fresh-interpreter load, ``diagnose``).

Data: series generated here (two targets driven by a random covariate known in advance, a cycle
of 12 steps, a few missing values), written to CSV with hourly timestamps."""

import contextlib
import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnkit import Dense, LSTMCell, Recurrence, SequenceBatch, load
from rnnkit.cli import main
from rnnkit.data.timeseries import Scaler, TimeSeries
from rnnkit.forecasting import (
    StreamingForecaster,
    fill_forward,
    forecast_windows,
    stream_inputs,
)
from rnnkit.recipes.forecast import RECIPE, ForecastConfig
from rnnkit.recipes.harness import load_run, run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT

START = np.datetime64("2024-01-01T00:00", "us")


def _series(steps: int = 600, seed: int = 0) -> TimeSeries:
    """Two targets driven by a covariate known in advance (random, so no history predicts it),
    a cycle of 12 steps, and a few missing values."""
    rng = np.random.default_rng(seed)
    known = rng.normal(size=steps)
    cycle = np.sin(2 * np.pi * np.arange(steps) / 12)
    a = 10 + 2.0 * known + cycle + 0.1 * rng.normal(size=steps)
    b = 5 - 1.0 * known + 0.5 * cycle + 0.1 * rng.normal(size=steps)
    values = np.stack([a, b, known], axis=1)
    values[rng.choice(steps, 15, replace=False), 0] = np.nan
    return TimeSeries(values, ("a", "b", "x"))


def _write_csv(path, series: TimeSeries, rows=slice(None)):
    """``t,a,b,x`` with hourly ISO timestamps; empty fields where missing."""
    times = START + np.arange(len(series)) * np.timedelta64(1, "h")
    lines = ["t," + ",".join(series.columns)]
    for t, row in list(zip(times, series.values, strict=True))[rows]:
        cells = ["" if math.isnan(v) else f"{v:.6f}" for v in row]
        lines.append(f"{np.datetime_as_string(t, unit='s')}," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _floats(text):
    return np.array([float(v) for v in text.split()])


def _config(csv_path, **changes):
    settings = {"epochs": 2, "minibatch_size": 32, "learning_rate": 0.01, "threads": 1}
    settings.update(changes.pop("train", {}))
    values = dict(
        csv=csv_path,
        target=("a",),
        time_column="t",
        input_length=24,
        horizon=3,
        season=12,
        model="window",
        revin="off",  # the plain models; tests/test_forecast_options.py covers RevIN
    )
    values.update(hidden_size=8, train=TrainSettings(**settings))
    values.update(changes)
    return ForecastConfig(**values)


@pytest.fixture(scope="module")
def window_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("window")
    path = _write_csv(folder / "s.csv", _series(300))
    run = folder / "run"
    argv = ["forecast", str(path), "--target", "a", "--time-column", "t", "--input-length", "24"]
    argv += ["--horizon", "3", "--season", "12", "--hidden-size", "8", "--epochs", "2"]
    argv += ["--model", "window"]
    assert main([*argv, "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    return path, run


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    path = _write_csv(folder / "s.csv", _series(300))
    run = folder / "run"
    argv = ["forecast", str(path), "--target", "a,b", "--known", "x", "--model", "stream"]
    argv += ["--time-column", "t", "--input-length", "24", "--horizon", "3", "--season", "12"]
    argv += ["--epochs", "2", "--hidden-size", "8", "--threads", "1", "--quiet"]
    assert main([*argv, "--run-dir", str(run)]) == 0
    return path, run


# ----------------------------------------------------------------------------- the pieces


def test_streaming_updates_equal_the_recurrence_over_the_whole_series():
    series = _series(80)
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

    streaming = StreamingForecaster(model, scaler, ("a", "b"), ("x",), horizon=3)
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
    model = Recurrence(LSTMCell(2 + 2, 4)) >> Dense(4, 2)
    with pytest.raises(ValueError, match="model: expected the stream model"):
        StreamingForecaster(model, Scaler.fit(series), ("a",), horizon=2)  # no known column
    forecaster = StreamingForecaster(model, Scaler.fit(series), ("a",), ("x",), horizon=2)
    with pytest.raises(ValueError, match=r"observation: expected 1 values"):
        forecaster.update([1.0, 2.0], np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"known: expected the next 2 values of \['x'\]"):
        forecaster.update([1.0])


def test_window_examples_with_known_covariates_and_two_targets():
    values = np.array([[1.0, 10, 0], [2, 20, 1], [3, 30, 2], [4, 40, 3], [5, 50, 4]])
    spec = dict(input_length=2, horizon=2, season=2)
    (first, *rest) = forecast_windows(values, values, [0, 1], [2], **spec)
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
    assert first["when"].tolist() == [[2, 3]]  # the rows of the horizon
    assert len(rest) == 1
    # a window past the end (no known columns): targets NaN there, the rows go on
    (last,) = forecast_windows(values, values, [0], **spec, starts=[3])
    assert last["labels"].isnan().all() and last["when"].tolist() == [[5, 6]]
    with pytest.raises(ValueError, match="starts: the window at 3 needs rows up to 7"):
        forecast_windows(values, values, [0], [2], **spec, starts=[3])


# ----------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("model", ["window", "stream"])
def test_known_covariates_beat_seasonal_naive_on_both_targets(model, tmp_path):
    # The targets follow a random covariate known in advance: no history forecasts them, so
    # seasonal naive is poor, while a model that reads the known values is not (test MAE over
    # seasonal-naive MAE measured 0.31-0.44 for both targets and both models, threshold 0.7).
    path = _write_csv(tmp_path / "s.csv", _series(480))
    config = _config(
        path,
        target=("a", "b"),
        known=("x",),
        stride=2,
        hidden_size=16,
        model=model,
        train={"epochs": 40 if model == "stream" else 15},
    )
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    naive = result.figures["baselines"]["seasonal naive (season 12)"]
    for name in ("a", "b"):
        assert result.figures[f"{name} mae"] < 0.7 * naive[f"{name} mae"], result.figures


def test_residual_model_learns_the_change_from_seasonal_naive(monkeypatch, tmp_path):
    """With ``residual`` the labels are the target minus seasonal naive, and the prediction
    adds seasonal naive back: a network that predicts zero change *is* seasonal naive, to the
    last digit of every figure."""
    from rnnkit.training import Trainer

    path = _write_csv(tmp_path / "s.csv", _series(480))
    plain = _config(path, train={"epochs": 1})
    residual = _config(path, residual=True, train={"epochs": 1})
    for part_plain, part_residual in zip(
        RECIPE.load_data(plain).test, RECIPE.load_data(residual).test, strict=True
    ):
        torch.testing.assert_close(
            part_residual["labels"], part_plain["labels"] - part_plain["naive"], equal_nan=True
        )
        assert torch.equal(
            part_residual["truth"].nan_to_num(-1), part_plain["labels"].nan_to_num(-1)
        )

    monkeypatch.setattr(
        Trainer, "predict", lambda self, source: [torch.zeros(3)] * source.num_examples
    )
    quiet = {"progress": False, "log": lambda _: None}
    result = run_recipe(RECIPE, residual, tmp_path / "residual", **quiet).figures
    naive = result["baselines"]["seasonal naive (season 12)"]
    for figure in ("mae", "mape", "mase"):
        assert result[figure] == pytest.approx(naive[figure], rel=1e-6)
    # without it, zero change is the last value carried forward: a different forecast
    carried = run_recipe(RECIPE, plain, tmp_path / "plain", **quiet).figures
    assert carried["baselines"] == result["baselines"]  # the same truth, exactly
    assert abs(carried["mae"] - naive["mae"]) > 0.05 * naive["mae"]


def test_config_checks_its_combinations(tmp_path):
    path = tmp_path / "s.csv"
    with pytest.raises(ValueError, match="residual: a window-model option"):
        _config(path, model="stream", residual=True)
    with pytest.raises(ValueError, match=r"known: expected columns that are not targets"):
        _config(path, known=("a",))
    with pytest.raises(ValueError, match=r"season: expected at most input_length = 24"):
        _config(path, season=25)
    with pytest.raises(ValueError, match=r"horizon: expected an integer >= 1, found 0"):
        _config(path, horizon=0)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--horizon", "-3"], "argument --horizon: expected an integer >= 1, found -3"),
        (["--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
        (["--model", "tree"], "argument --model: invalid choice: 'tree'"),
        (["--stride", "0"], "argument --stride: expected an integer >= 1, found 0"),
        (["--model", "stream", "--residual"], "residual: a window-model option"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "s.csv", "--target", "a", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_files_give_one_line_with_the_place(tmp_path, capsys):
    bad = tmp_path / "s.csv"
    bad.write_text("t,y\n2020-01-01,1\n2020-01-02,x\n")
    assert main(["forecast", str(bad), "--time-column", "t", "--target", "y"]) == 1
    err = capsys.readouterr().err
    assert "s.csv:3:12: column 'y': expected a number" in err and "Traceback" not in err
    assert main(["forecast", str(tmp_path / "none.csv"), "--target", "y"]) == 1
    assert "none.csv" in capsys.readouterr().err
    good = _write_csv(tmp_path / "g.csv", _series(300))
    assert main(["forecast", str(good), "--target", "a,nope", "--time-column", "t"]) == 1
    err = capsys.readouterr().err
    assert "'nope'" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the run


def test_run_directory_holds_the_contract_and_the_forecast_plot(window_run):
    path, run = window_run
    assert {p.name for p in run.iterdir()} == {
        *CONTRACT,
        "forecast.png",
        "forecast.csv",
        "future.png",
    }
    assert (run / "forecast.png").stat().st_size > 5000
    info = json.loads((run / "run.json").read_text())
    assert info["recipe"] == "forecast" and info["config"]["target"] == ["a"]
    assert info["config"]["train"]["epochs"] == 2 and info["threads"] == 1
    assert info["inputs"][0]["path"] == str(path.resolve())
    report = (run / "report.md").read_text()
    assert "| seasonal naive (season 12) |" in report and "Test: 4 forecast origins" in report
    assert len(_rows(run / "metrics.csv")) == 2


def test_predictions_are_the_model_applied_by_hand(window_run):
    """Each test window rebuilt from the CSV's text with the saved scaler: the filled values
    relative to the last one and the mask in, the model's output plus that value out."""
    path, run = window_run
    info = json.loads((run / "run.json").read_text())
    stats = info["data"]["scaler"]
    center, scale = stats["center"][0], stats["scale"][0]
    text = _rows(path)
    raw = np.array([float(r["a"]) if r["a"] else np.nan for r in text])
    rows = _rows(run / "predictions.csv")
    first = math.floor(0.9 * len(raw) + 1e-9)  # the test part's first row
    assert len(rows) == len(raw) - first - 24 - 3 + 1
    model = load(run).eval()
    errors, naive_errors = [], []
    for i, row in enumerate(rows):
        end = first + i + 24  # the first forecast row
        assert row["id"] == text[end]["t"] and row["series"] == "a"
        scaled = (raw[first + i : end] - center) / scale
        mask = ~np.isnan(scaled)
        filled = scaled.copy()
        last = 0.0 if np.isnan(scaled[0]) else scaled[0]
        before = (raw[first : first + i] - center) / scale
        if np.isnan(scaled[0]):  # the fill carries the test part's last value before it
            seen = before[~np.isnan(before)]
            last = seen[-1] if seen.size else 0.0
        for t in range(len(filled)):
            last = filled[t] = last if np.isnan(filled[t]) else filled[t]
        x = torch.tensor(np.stack([filled - filled[-1], mask], axis=1), dtype=torch.float32)
        with torch.no_grad():
            out = model(SequenceBatch.from_list([x])).numpy().reshape(-1)
        expected = (out + filled[-1]) * scale + center
        np.testing.assert_allclose(_floats(row["prediction"]), expected, rtol=1e-5)
        truth = raw[end : end + 3]
        np.testing.assert_allclose(_floats(row["target"]), truth, rtol=1e-5)
        naive = filled[np.array([-12, -11, -10])] * scale + center  # one season back
        np.testing.assert_allclose(_floats(row["naive"]), naive, rtol=1e-5)
        seen = ~np.isnan(truth)
        errors += list(np.abs(expected - truth)[seen])
        naive_errors += list(np.abs(naive - truth)[seen])
    assert info["result"]["mae"] == pytest.approx(np.mean(errors), rel=1e-5)
    baseline = info["result"]["baselines"]["seasonal naive (season 12)"]
    assert baseline["mae"] == pytest.approx(np.mean(naive_errors), rel=1e-5)


def test_predict_on_a_new_file_matches_the_test_rows(window_run, tmp_path):
    _, run = window_run
    first = math.floor(0.9 * 300 + 1e-9)
    new = _write_csv(tmp_path / "new.csv", _series(300), slice(first, None))
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(new), "--out", str(out)]) == 0
    rows, saved = _rows(out), {r["id"]: r for r in _rows(run / "predictions.csv")}
    # every window of the test part, then the forecast past the end of the file
    assert [r["id"] for r in rows[: len(saved)]] == list(saved)
    assert len(rows) == len(saved) + 3
    for row in rows[: len(saved)]:
        np.testing.assert_allclose(
            _floats(row["prediction"]), _floats(saved[row["id"]]["prediction"]), rtol=1e-5
        )
    assert rows[-1]["id"] == "2024-01-13T12:00:00"  # hour 300: one past the last row
    assert np.isnan(_floats(rows[-1]["target"])).all()
    assert np.isfinite(_floats(rows[-1]["prediction"])).all()


def test_load_in_a_fresh_interpreter_without_the_recipe(window_run):
    _, run = window_run
    code = (
        "import sys, torch, rnnkit\n"
        f"model = rnnkit.load({str(run)!r}).eval()\n"
        "x = rnnkit.SequenceBatch.from_list([torch.zeros(24, 2)])\n"
        "with torch.no_grad():\n"
        "    print(' '.join(str(v) for v in model(x).reshape(-1).tolist()))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks', 'rnnkit.forecasting'))"
        " for m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    values, imported = result.stdout.strip().splitlines()
    assert imported == "False"
    model = load(run).eval()
    with torch.no_grad():
        expected = model(SequenceBatch.from_list([torch.zeros(24, 2)])).reshape(-1)
    np.testing.assert_allclose(_floats(values), expected.numpy(), rtol=1e-6)


def test_diagnose_a_saved_run(window_run, stream_run, capsys):
    for _, run in (window_run, stream_run):
        assert main(["diagnose", str(run)]) == 0
        assert "layers.0: |dL/dh_t| from" in capsys.readouterr().out
        assert (run / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_stream_run_predicts_and_streams(stream_run, tmp_path):
    """The stream model's test rows (two targets each) against ``rnnkit predict`` on the same
    file (the state carried from its first row) and against StreamingForecaster."""
    path, run = stream_run
    rows = _rows(run / "predictions.csv")
    first = math.floor(0.9 * 300 + 1e-9)
    assert [r["series"] for r in rows[:4]] == ["a", "b", "a", "b"]
    assert rows[0]["id"] == _rows(path)[first]["t"]  # the test part's first row
    assert len(rows) == 2 * (300 - first - 3 + 1)
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(path), "--out", str(out)]) == 0
    new = {(r["id"], r["series"]): r for r in _rows(out)}
    for row in rows:
        again = new[(row["id"], row["series"])]
        np.testing.assert_allclose(
            _floats(again["prediction"]), _floats(row["prediction"]), rtol=1e-5
        )
    forecaster = StreamingForecaster.from_run(run)
    series = _series(300).values
    for t in range(first):
        forecast = forecaster.update(
            series[t, :2], series[np.minimum(np.arange(t + 1, t + 4), 299), 2:]
        )
    pair = [r for r in rows[:2]]
    np.testing.assert_allclose(forecast[:, 0], _floats(pair[0]["prediction"]), rtol=1e-4)
    np.testing.assert_allclose(forecast[:, 1], _floats(pair[1]["prediction"]), rtol=1e-4)


# ----------------------------------------------------------------------------- baselines, choice


def _walk(steps: int, seed: int) -> TimeSeries:
    """A random walk: no season, and persistence is the best forecast there is."""
    rng = np.random.default_rng(seed)
    return TimeSeries(np.cumsum(rng.normal(size=steps))[:, None] + 50, ("a",))


def _seasonal(steps: int, seed: int) -> TimeSeries:
    """A cycle of 12 steps far above its noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    return TimeSeries(
        (20 + 5 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=steps))[:, None], ("a",)
    )


def _parts(n: int) -> tuple[int, int]:
    """The first rows of the validation and test parts (0.8 / 0.1 / 0.1)."""
    return math.floor(0.8 * n + 1e-9), math.floor(0.9 * n + 1e-9)


def _baselines_by_hand(raw, part, t_in, h, season):
    """Persistence and seasonal-naive MAE of the windows of ``raw[part]``, in plain NumPy:
    the part forward-filled (the training mean before its first observation), one forecast
    from each window's last input step, errors on the observed targets."""
    a, b = part
    values = raw[a:b]
    filled, last = values.copy(), np.nanmean(raw[: _parts(len(raw))[0]])
    for t in range(len(filled)):
        last = filled[t] = last if np.isnan(filled[t]) else filled[t]
    persistence, naive = [], []
    for start in range(len(values) - t_in - h + 1):
        end = start + t_in
        for k in range(h):
            if np.isnan(values[end + k]):
                continue
            back = end + k - season * math.ceil((k + 1) / season)
            persistence.append(abs(values[end + k] - filled[end - 1]))
            naive.append(abs(values[end + k] - filled[back]))
    return float(np.mean(persistence)), float(np.mean(naive))


@pytest.fixture(scope="module")
def walk_run(tmp_path_factory):
    """A random walk forecast one step ahead at --season 12: no season, and a model barely
    trained (one epoch at a learning rate of 1e-4: its forecast is about its initial
    weights') beats neither persistence nor seasonal naive (measured: validation MAE 2.2
    against 0.82 for both, for seeds 0-5 1.0-2.6 against 0.54-0.84)."""
    folder = tmp_path_factory.mktemp("walk")
    path = _write_csv(folder / "w.csv", _walk(1000, 2))
    config = _config(path, horizon=1, train={"epochs": 1, "learning_rate": 1e-4})
    lines: list[str] = []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_recipe(RECIPE, config, folder / "run", progress=False, log=lines.append)
    return path, folder / "run", result, lines + printed.getvalue().splitlines()


def test_persistence_and_seasonal_naive_are_the_plain_numpy_figures(window_run):
    path, run = window_run
    raw = np.array([float(r["a"]) if r["a"] else np.nan for r in _rows(path)])
    val, test = _parts(len(raw))
    result = json.loads((run / "run.json").read_text())["result"]
    persistence = result["baselines"]["persistence"]
    naive = result["baselines"]["seasonal naive (season 12)"]
    for prefix, part in (("", (test, len(raw))), ("validation ", (val, test))):
        by_hand = _baselines_by_hand(raw, part, 24, 3, 12)
        assert persistence[f"{prefix}mae"] == pytest.approx(by_hand[0], rel=1e-5)
        assert naive[f"{prefix}mae"] == pytest.approx(by_hand[1], rel=1e-5)
    assert persistence["mae"] != pytest.approx(naive["mae"], rel=1e-3)  # two forecasts
    report = (run / "report.md").read_text()
    assert "| persistence |" in report and "| validation mae |" in report


def test_a_series_without_a_season_gets_the_seasonality_line(walk_run):
    _, run, _, lines = walk_run
    values = _walk(1000, 2).values[: _parts(1000)[0], 0]
    change = np.diff(values) - np.diff(values).mean()
    r = float((change[12:] * change[:-12]).mean() / change.var())  # by hand
    band = 1.96 / math.sqrt(len(change))
    assert abs(r) < band
    line = (
        f"No seasonality detected in a at --season 12: on the training part its changes "
        f"correlate {r:+.3f} with those 12 steps before, inside the white-noise band of "
        f"+-{band:.3f} (1.96/sqrt({len(change)})), so seasonal naive repeats noise; no lag up "
        "to --input-length 24 stands out either: give --season the length of the series' "
        "cycle if it has one (24 for hourly data with a daily cycle, 7 for daily data with a "
        "weekly one), else persistence is the baseline to beat."
    )
    assert line in (run / "report.md").read_text().splitlines()
    assert line in "\n".join(lines).splitlines()  # printed before training
    found = json.loads((run / "run.json").read_text())["data"]["seasonality"]["a"]
    assert found["detected"] is False and found["autocorrelation"] == pytest.approx(r, abs=1e-4)


def test_a_model_that_does_not_beat_the_baselines_says_so(walk_run):
    _, run, result, printed = walk_run
    info = json.loads((run / "run.json").read_text())["result"]
    model = info["validation mae"]
    persistence = info["baselines"]["persistence"]["validation mae"]
    naive = info["baselines"]["seasonal naive (season 12)"]["validation mae"]
    assert model > persistence and model > naive
    assert info["beats_persistence"] is False and info["beats_seasonal_naive"] is False
    lines = [
        "Warning: the model (window) does not beat persistence on the validation part: "
        f"MAE of a {model:.4g} against {persistence:.4g}.",
        "Warning: the model (window) does not beat seasonal naive (season 12) on the "
        f"validation part: MAE of a {model:.4g} against {naive:.4g}.",
    ]
    test = info["mae"], info["baselines"]["persistence"]["mae"]
    assert test[0] > test[1]  # on the test part too
    lines.append(
        "On the test part, the model (window) does not beat persistence: "
        f"MAE of a {test[0]:.4g} against {test[1]:.4g}."
    )
    report = (run / "report.md").read_text().splitlines()
    assert report[-4:-1] == lines  # then the test part's line for seasonal naive
    assert report[-1].startswith("On the test part, the model (window) does not beat seasonal")
    assert set(lines) <= set(printed)
    assert result.figures == info


def test_a_strongly_seasonal_series_gets_no_seasonality_line(tmp_path):
    path = _write_csv(tmp_path / "s.csv", _seasonal(300, 0))
    lines: list[str] = []
    run_recipe(
        RECIPE,
        _config(path, train={"epochs": 1}),
        tmp_path / "run",
        progress=False,
        log=lines.append,
    )
    report = (tmp_path / "run" / "report.md").read_text()
    assert "No seasonality" not in report and "No seasonality" not in "\n".join(lines)
    found = json.loads((tmp_path / "run" / "run.json").read_text())["data"]["seasonality"]["a"]
    assert found["detected"] is True and found["autocorrelation"] > 0.5


def test_auto_chooses_the_candidate_with_the_best_validation_figure(tmp_path):
    """Each candidate's recorded validation MASE against the choice; the winner's short run
    (here as long as the full run: 2 epochs, same seed) gives the final model's validation
    figures exactly, through the other path (the harness's training and the callback)."""
    path = _write_csv(tmp_path / "s.csv", _series(300))
    lines: list[str] = []
    config = _config(path, model="auto", train={"epochs": 2})
    figures = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lines.append)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    selection = info["data"]["selection"]
    scores = {name: c["score"] for name, c in selection["candidates"].items()}
    assert set(scores) == {"window", "stream", "window residual"}
    assert len(set(scores.values())) == 3  # three different models
    for c in selection["candidates"].values():
        assert c["score"] == c["validation"]["validation mase"]
    chosen = min(scores, key=scores.__getitem__)
    assert selection["chosen"] == chosen == info["result"]["model"]
    assert (info["data"]["model"], info["data"]["residual"]) == {
        "window": ("window", False),
        "stream": ("stream", False),
        "window residual": ("window", True),
    }[chosen]
    winner = selection["candidates"][chosen]["validation"]
    for figure in ("validation mae", "validation mape", "validation mase"):
        assert info["result"][figure] == pytest.approx(winner[figure], rel=1e-5)
    assert info["result"]["validation mase"] < max(scores.values())
    printed = "\n".join(lines).splitlines()
    line = next(x for x in printed if x.startswith("--model auto chose"))
    assert line.startswith(f"--model auto chose {chosen} by the lowest validation MASE")
    assert line in (tmp_path / "run" / "report.md").read_text()
    assert figures.figures["model"] == chosen
    # the saved run stands for its choice: rebuilding its data (diagnose) screens nothing
    _, recorded, _ = load_run(tmp_path / "run")
    assert (recorded.model, recorded.residual) == (info["data"]["model"], info["data"]["residual"])
    assert RECIPE.load_data(recorded).info["selection"] is None


def test_residual_alone_names_the_residual_window_model(tmp_path):
    path = _write_csv(tmp_path / "s.csv", _series(300))
    info = RECIPE.load_data(_config(path, model="auto", residual=True)).info
    assert (info["model"], info["residual"], info["selection"]) == ("window", True, None)


def test_validation_reads_larger_minibatches_with_the_same_figures(tmp_path, monkeypatch):
    """The recipe validates and predicts 16 times as many windows a minibatch as it trains
    on (fewer where the windows' outputs would pass ``EVAL_ACTIVATIONS``, never fewer than
    the training size); the loss and the forecasts are those of the training size, to
    float32 rounding."""
    import rnnkit.recipes.forecast as forecast
    from rnnkit.recipes.harness import evaluator

    config = _config(_write_csv(tmp_path / "s.csv", _series(400)), train={"minibatch_size": 4})
    data = RECIPE.load_data(config)
    torch.manual_seed(0)
    model = RECIPE.build_model(config, data)
    trainer = evaluator(RECIPE, config, data, model, RECIPE.input_streams, "cpu")
    large = RECIPE.source(config, data.validation, training=False)
    assert large.minibatch_size == 16 * 4 and large.minibatches_per_sweep == 1
    steps = data.validation[0]["features"].shape[0]  # 24 input steps
    monkeypatch.setattr(forecast, "EVAL_ACTIVATIONS", 6 * steps * config.hidden_size)
    assert RECIPE.eval_minibatch_size(config, data.validation) == 6
    monkeypatch.setattr(forecast, "EVAL_ACTIVATIONS", 1)
    small = RECIPE.source(config, data.validation, training=False)
    assert small.minibatches_per_sweep == math.ceil(len(data.validation) / 4) > 1
    got, want = trainer.evaluate(large), trainer.evaluate(small)
    assert got["samples"] == want["samples"] == len(data.validation)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    torch.testing.assert_close(
        torch.stack(trainer.predict(large)),
        torch.stack(trainer.predict(small)),
        rtol=1e-6,
        atol=1e-6,
    )
