"""``rnnkit forecast``'s probabilistic losses, RevIN choice, forecasts past the end, long
format and backtest: each figure recomputed here from the files the run wrote (or from an
independent path through the library), never only its presence."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from rnnkit.backtesting import backtest
from rnnkit.cli import main
from rnnkit.forecasting import ForecastSpec
from rnnkit.recipes.forecast import RECIPE, ForecastConfig
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings


def _single(path, steps=240, future=0, seed=0):
    """``t,y,x`` daily: y a cycle of 7 driven by a known x; ``future`` rows with x only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=steps + future)
    y = 10 + np.sin(2 * np.pi * np.arange(steps) / 7) + 0.5 * x[:steps]
    y = y + 0.1 * rng.normal(size=steps)
    start = np.datetime64("2020-01-01")
    lines = ["t,y,x"]
    for i in range(steps + future):
        value = f"{y[i]:.6f}" if i < steps else ""
        lines.append(f"{start + i},{value},{x[i]:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(path, **changes):
    settings = {"epochs": 2, "minibatch_size": 32, "learning_rate": 0.01, "threads": 1}
    settings.update(changes.pop("train", {}))
    values = dict(
        csv=path,
        target=("y",),
        time_column="t",
        input_length=14,
        horizon=4,
        season=7,
        model="window",
        revin="off",
        hidden_size=8,
        train=TrainSettings(**settings),
    )
    values.update(changes)
    return ForecastConfig(**values)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(text):
    return np.array([float(v) for v in text.split()])


@pytest.fixture(scope="module")
def quantile_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantile")
    path = _single(folder / "s.csv")
    config = _config(
        path, loss="quantile", quantiles=(0.1, 0.5, 0.9), backtest=True, calibrate="off"
    )
    result = run_recipe(RECIPE, config, folder / "run", progress=False, log=lambda _: None)
    return config, folder / "run", result


def _intervals(run):
    rows = _read(run / "predictions.csv")
    return [
        np.stack([_floats(r[k]) for r in rows]) for k in ("target", "lower", "prediction", "upper")
    ]


def test_calibrated_intervals_are_the_raw_ones_stretched_by_the_validation_factors(
    quantile_run, tmp_path
):
    """The same run (same seed) with ``--calibrate validation``: each horizon step's interval
    is the uncalibrated one stretched about the median by run.json's factor for that step, and
    coverage and width are those of the stretched intervals."""
    config, raw_run, raw = quantile_run
    path = _single(tmp_path / "s.csv")
    changes = {"csv": path, "calibrate": "validation", "backtest": False}
    calibrated = ForecastConfig(**{**config.__dict__, **changes})
    result = run_recipe(RECIPE, calibrated, tmp_path / "run", progress=False, log=lambda _: None)
    factors = np.array(result.data.info["interval_scale"][0])
    assert factors.shape == (config.horizon,) and (factors > 0).all()
    y, lo0, md0, hi0 = _intervals(raw_run)
    _, lo, md, hi = _intervals(tmp_path / "run")
    assert np.allclose(md, md0, atol=1e-5)  # the same model: deterministic training
    assert np.allclose(md - lo, factors * (md0 - lo0), rtol=1e-4, atol=1e-5)
    assert np.allclose(hi - md, factors * (hi0 - md0), rtol=1e-4, atol=1e-5)
    seen = ~np.isnan(y)
    inside = (y >= lo) & (y <= hi)
    figures = result.figures
    assert figures["coverage"] == pytest.approx(inside[seen].mean(), abs=1e-12)
    assert figures["width"] == pytest.approx((hi - lo)[seen].mean(), rel=1e-4)
    assert figures["uncalibrated coverage"] == pytest.approx(raw.figures["coverage"], abs=1e-12)
    assert figures["pinball"] == pytest.approx(raw.figures["pinball"], rel=1e-5)  # quantiles kept
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["data"]["interval_scale"][0] == pytest.approx(factors.tolist())


def test_quantile_coverage_width_and_pinball_are_those_of_the_written_intervals(quantile_run):
    """Coverage, width and pinball recomputed from predictions.csv's target, lower,
    prediction (the median) and upper columns, with NumPy only."""
    _, run, result = quantile_run
    rows = _read(run / "predictions.csv")
    truth = np.concatenate([_floats(r["target"]) for r in rows])
    low = np.concatenate([_floats(r["lower"]) for r in rows])
    mid = np.concatenate([_floats(r["prediction"]) for r in rows])
    high = np.concatenate([_floats(r["upper"]) for r in rows])
    seen = ~np.isnan(truth)
    y, lo, md, hi = truth[seen], low[seen], mid[seen], high[seen]
    assert (lo <= md + 1e-4).all() and (md <= hi + 1e-4).all()  # quantiles never cross
    figures = result.figures
    assert figures["coverage"] == pytest.approx(((y >= lo) & (y <= hi)).mean(), abs=1e-12)
    assert figures["width"] == pytest.approx((hi - lo).mean(), rel=1e-4)
    assert figures["mae"] == pytest.approx(np.abs(md - y).mean(), rel=1e-4)
    pinball = np.mean(
        [
            np.maximum(q * (y - f), (q - 1) * (y - f)).mean()
            for q, f in ((0.1, lo), (0.5, md), (0.9, hi))
        ]
    )
    assert figures["pinball"] == pytest.approx(pinball, rel=1e-4)
    assert figures["crps"] == pytest.approx(2 * pinball, rel=1e-4)  # CRPS from 3 quantiles


def test_forecast_csv_continues_the_dates_past_the_end(quantile_run):
    _, run, _ = quantile_run
    rows = _read(run / "forecast.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    last = np.datetime64("2020-01-01") + 239
    assert {r["origin"] for r in rows} == {str(last)}
    assert [r["time"] for r in rows] == [str(last + k) for k in range(1, 5)]
    for r in rows:
        assert float(r["lower"]) <= float(r["prediction"]) <= float(r["upper"])
        assert float(r["q0.5"]) == float(r["prediction"])
    assert (run / "future.png").stat().st_size > 5000


def test_backtest_figures_are_those_of_backtest_csv_and_its_naive_the_library_one(quantile_run):
    """backtest.csv's errors averaged by hand give run.json's figures; its naive column is
    what :func:`rnnkit.backtesting.backtest` gives for seasonal naive on the same series."""
    config, run, result = quantile_run
    rows = _read(run / "backtest.csv")
    bt = result.figures["backtest"]
    error = np.array([float(r["error"]) for r in rows])
    seen = ~np.isnan(error)
    assert bt["summary"]["y"]["mae"] == pytest.approx(error[seen].mean(), rel=1e-4)
    assert bt["origins"] * config.horizon == len(rows)
    steps = np.array([int(r["step"]) for r in rows])
    for k in range(1, config.horizon + 1):
        at = (steps == k) & seen
        assert bt["per_step"]["y"]["mae"][k - 1] == pytest.approx(error[at].mean(), rel=1e-4)
    data = result.data.extra["prepared"]
    spec = ForecastSpec("window", config.input_length, config.horizon, config.season)
    naive = backtest(data, spec, lambda examples: [e["naive"] for e in examples])
    assert np.allclose(
        naive.pred.reshape(-1), [float(r["naive"]) for r in rows], rtol=1e-5, atol=1e-5
    )


def test_revin_auto_chooses_the_lower_validation_mase(tmp_path):
    path = _single(tmp_path / "s.csv")
    config = _config(path, revin="auto")
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    info = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    scores = {n: c["score"] for n, c in info["selection"]["candidates"].items()}
    assert set(scores) == {"window", "window revin"}
    chosen = min(scores, key=scores.__getitem__)
    assert result.figures["model"] == chosen and info["revin"] == (chosen == "window revin")


def test_gaussian_and_student_t_heads_train_with_revin(tmp_path):
    path = _single(tmp_path / "s.csv")
    for loss in ("gaussian", "student-t"):
        config = _config(path, loss=loss, revin="on", train={"epochs": 1})
        result = run_recipe(RECIPE, config, tmp_path / loss, progress=False, log=lambda _: None)
        f = result.figures
        assert 0.0 <= f["coverage"] <= 1.0 and f["width"] > 0 and f["crps"] > 0
        # CRPS never exceeds the MAE of the point forecast (a distribution's is at most its
        # median's absolute error, averaged)
        assert f["crps"] <= f["mae"] + 1e-6


def test_known_covariates_forecast_over_the_future_rows_or_say_why_not(tmp_path):
    path = _single(tmp_path / "f.csv", future=4)
    run_recipe(RECIPE, _config(path, known=("x",)), tmp_path / "a", progress=False, log=print)
    rows = _read(tmp_path / "a" / "forecast.csv")
    last = np.datetime64("2020-01-01") + 239
    assert [r["time"] for r in rows] == [str(last + k) for k in range(1, 5)]
    short = _single(tmp_path / "g.csv", future=2)
    run_recipe(RECIPE, _config(short, known=("x",)), tmp_path / "b", progress=False, log=print)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "No forecast past the end: the known columns ['x'] need 4 rows" in report
    assert "found 2" in report and not (tmp_path / "b" / "forecast.csv").exists()


def _panel(path, lengths=(30, 40, 9), seed=0):
    """``id,year,v``: a trend per series, one series shorter than the input window."""
    rng = np.random.default_rng(seed)
    lines = ["id,year,v"]
    for s, n in enumerate(lengths):
        base = rng.uniform(10, 100)
        for t in range(n):
            lines.append(f"S{s},{1950 + t},{base * (1 + 0.05 * t) + rng.normal():.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _panel_values(path) -> dict[str, list[float]]:
    """Each series' values of :func:`_panel`'s file, read back as text."""
    values: dict[str, list[float]] = {}
    for line in path.read_text().splitlines()[1:]:
        name, _, v = line.split(",")
        values.setdefault(name, []).append(float(v))
    return values


def _panel_config(path, **changes):
    """A one-epoch window model over :func:`_panel`'s file, horizon 3."""
    values = dict(
        csv=path,
        series_id="id",
        time_column="year",
        target=("v",),
        horizon=3,
        season=1,
        input_length=6,
        model="window",
        revin="off",
        hidden_size=8,
        train=TrainSettings(epochs=1, threads=1),
    )
    return ForecastConfig(**{**values, **changes})


def test_long_format_persistence_mase_is_the_mean_of_each_series_own(tmp_path):
    """Persistence's test MASE recomputed by hand: per series the MAE of its last value
    before the test part over its in-sample naive MAE (all its history before the test
    part), averaged over the series."""
    path = _panel(tmp_path / "p.csv")
    config = _panel_config(path)
    with pytest.warns(UserWarning, match="S2"):  # too short to train on: named
        run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    values = _panel_values(path)
    mases, errors = [], []
    for v in values.values():
        v = np.array(v)
        history, test = v[:-3], v[-3:]
        scale = np.abs(np.diff(history)).mean()
        error = np.abs(test - history[-1])
        mases.append(error.mean() / scale)
        errors.append(error)
    run = json.loads((tmp_path / "run" / "run.json").read_text())["result"]
    persistence = run["baselines"]["persistence"]
    assert persistence["mase"] == pytest.approx(np.mean(mases), rel=1e-5)
    assert persistence["mae"] == pytest.approx(np.concatenate(errors).mean(), rel=1e-5)
    rows = _read(tmp_path / "run" / "forecast.csv")
    assert sorted({r["series"] for r in rows}) == ["S0", "S1", "S2"]
    s2 = [r for r in rows if r["series"] == "S2"]
    assert [r["time"] for r in s2] == ["1959", "1960", "1961"] and s2[0]["origin"] == "1958"


def test_predict_on_a_long_file_repeats_forecast_csv_and_refuses_new_series(tmp_path, capsys):
    """``rnnkit predict`` on the training file gives forecast.csv's forecasts again (a second
    path: the file read anew, scaled with the run's stored scalers); with rows appended to one
    series, that series' forecast starts after its new end; a series the run never saw is
    refused by name."""
    path = _panel(tmp_path / "p.csv", lengths=(30, 40, 25))
    argv = ["forecast", str(path), "--series-id", "id", "--time-column", "year", "--target", "v"]
    options = ["--horizon", "3", "--season", "1", "--input-length", "6", "--model", "window"]
    run = tmp_path / "run"
    small = ["--revin", "off", "--hidden-size", "8", "--epochs", "1", "--threads", "1"]
    assert main([*argv, *options, *small, "--run-dir", str(run), "--quiet"]) == 0
    future = {}
    for r in _read(run / "forecast.csv"):
        future.setdefault(r["series"], []).append(float(r["prediction"]))
    out = tmp_path / "predicted.csv"
    assert main(["predict", str(run), str(path), "--out", str(out)]) == 0
    rows = {r["series"]: r for r in _read(out)}
    assert sorted(rows) == sorted(future) == ["S0", "S1", "S2"]
    for name, values in future.items():
        assert np.allclose(_floats(rows[name]["prediction"]), values, rtol=1e-5, atol=1e-4)
    assert rows["S0"]["id"] == "1980"  # the year after S0's last (30 rows from 1950)
    longer = tmp_path / "longer.csv"
    text = path.read_text() + "S0,1980,99.0\nS0,1981,101.0\n"
    longer.write_text(text)
    assert main(["predict", str(run), str(longer), "--out", str(out)]) == 0
    rows = {r["series"]: r for r in _read(out)}
    assert rows["S0"]["id"] == "1982" and rows["S1"]["id"] == "1990"
    stranger = tmp_path / "new.csv"
    stranger.write_text(text + "S9,2000,5.0\nS9,2001,6.0\n")
    assert main(["predict", str(run), str(stranger), "--out", str(out)]) == 1
    assert "found 1 new: ['S9']" in capsys.readouterr().err


def test_long_format_backtest_figures_per_step_and_series_are_those_of_backtest_csv(tmp_path):
    """One origin per series: backtest.csv's errors averaged by hand per step and per series
    give run.json's figures; its overall MAE and MASE are the run's own test MAE and MASE (the
    same forecasts by another path), and its naive column is seasonal naive (the last value,
    season 1)."""
    path = _panel(tmp_path / "p.csv", lengths=(30, 40, 25))
    config = _panel_config(path, backtest=True)
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    bt = result.figures["backtest"]
    rows = _read(tmp_path / "run" / "backtest.csv")
    assert len(rows) == 3 * 3 and bt["origins"] == 3
    error = np.array([float(r["error"]) for r in rows])
    steps = np.array([int(r["step"]) for r in rows])
    names = np.array([r["series"] for r in rows])
    for k in (1, 2, 3):
        # backtest.csv holds 6 significant digits
        assert bt["per_step"]["v"]["mae"][k - 1] == pytest.approx(error[steps == k].mean(), 1e-5)
    values = _panel_values(path)
    mases = []
    for name, v in values.items():
        scale = np.abs(np.diff(v[:-3])).mean()
        mase = error[names == name].mean() / scale
        assert bt["per_series"]["v"][name]["mae"] == pytest.approx(
            error[names == name].mean(), 1e-5
        )
        assert bt["per_series"]["v"][name]["mase"] == pytest.approx(mase, rel=1e-5)
        assert [float(r["naive"]) for r in rows if r["series"] == name] == pytest.approx(
            [v[-4]] * 3, rel=1e-5
        )
        mases.append(mase)
    assert bt["summary"]["v"]["mae"] == pytest.approx(result.figures["mae"], rel=1e-6)
    assert bt["summary"]["v"]["mase"] == pytest.approx(np.mean(mases), rel=1e-5)
    assert bt["summary"]["v"]["mase"] == pytest.approx(result.figures["mase"], rel=1e-6)
    assert rows[0]["origin"] == "26" and rows[0]["when"] == "1977"  # S0: 30 rows from 1950


def test_long_format_rolling_origins_over_a_longer_test_part(tmp_path):
    """--test-steps 5 with horizon 3: three origins per series, one step apart, the last the
    row before its last 3 steps. Every backtest.csv row's truth is the file's value at its
    origin + step and its naive the value at its origin (season 1); the figures per series
    and overall, averaged by hand, are run.json's and the run's own test MAE and MASE."""
    path = _panel(tmp_path / "p.csv", lengths=(30, 40, 25))
    config = _panel_config(path, backtest=True, test_steps=5)
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["data"]["steps"] == [[22, 25, 30], [32, 35, 40], [17, 20, 25]]
    bt = result.figures["backtest"]
    rows = _read(tmp_path / "run" / "backtest.csv")
    assert bt["origins"] == 9 and len(rows) == 9 * 3
    values = _panel_values(path)
    mases = []
    for name, v in values.items():
        mine = [r for r in rows if r["series"] == name]
        origins = sorted({int(r["origin"]) for r in mine})
        assert origins == [len(v) - 6, len(v) - 5, len(v) - 4]
        for r in mine:
            origin, step = int(r["origin"]), int(r["step"])
            assert float(r["truth"]) == pytest.approx(v[origin + step], rel=1e-5)
            assert float(r["naive"]) == pytest.approx(v[origin], rel=1e-5)
            assert r["when"] == str(1950 + origin + step)
        error = np.array([float(r["error"]) for r in mine])
        scale = np.abs(np.diff(v[:-5])).mean()  # in-sample naive MAE before the test part
        assert bt["per_series"]["v"][name]["origins"] == 3
        assert bt["per_series"]["v"][name]["mae"] == pytest.approx(error.mean(), rel=1e-5)
        assert bt["per_series"]["v"][name]["mase"] == pytest.approx(error.mean() / scale, 1e-5)
        mases.append(error.mean() / scale)
    assert bt["summary"]["v"]["mae"] == pytest.approx(result.figures["mae"], rel=1e-6)
    assert bt["summary"]["v"]["mase"] == pytest.approx(np.mean(mases), rel=1e-5)
    assert bt["summary"]["v"]["mase"] == pytest.approx(result.figures["mase"], rel=1e-6)


def test_long_format_bad_input_names_the_series_and_the_line(tmp_path, capsys):
    bad = tmp_path / "dup.csv"
    bad.write_text("id,year,v\nA,2000,1\nA,2001,2\nA,2001,3\n")
    argv = ["forecast", str(bad), "--series-id", "id", "--time-column", "year", "--target", "v"]
    assert main([*argv, "--horizon", "1"]) == 1
    err = capsys.readouterr().err
    assert "dup.csv:4" in err and "series 'A'" in err and "'2001' again" in err


def test_patch_reads_the_window_in_segments_and_predict_repeats_its_forecasts(tmp_path):
    """``--patch 4``: the saved model is ``Segments(4) >> Fold(LSTMCell(4 F, H))``, and
    ``rnnkit predict`` (the model loaded back, the file read anew) repeats the run's test
    forecasts (predictions.csv)."""
    from rnnkit import load
    from rnnkit.layers.sequence import Segments

    path = _single(tmp_path / "s.csv", future=4)
    run = tmp_path / "run"
    result = run_recipe(
        RECIPE, _config(path, patch=4, known=("x",)), run, progress=False, log=lambda _: None
    )
    model = load(run)
    order = [m for m in model.modules() if isinstance(m, Segments) or type(m).__name__ == "Fold"]
    assert [type(m).__name__ for m in order] == ["Segments", "Fold"] and order[0].length == 4
    cells = [m for m in model.modules() if type(m).__name__ == "LSTMCell"]
    features = 2 + 2  # y and its mask, x and the horizon flag
    assert [c.weight_ih.shape[1] for c in cells] == [4 * features]
    assert "Segments(4) >> Fold(LSTMCell(16, 8))" in (run / "report.md").read_text()
    out = tmp_path / "predicted.csv"
    assert main(["predict", str(run), str(path), "--out", str(out)]) == 0
    again = {r["id"]: _floats(r["prediction"]) for r in _read(out)}
    tested = _read(run / "predictions.csv")  # the run's own test forecasts
    assert len(tested) >= 5 and all(r["id"] in again for r in tested)
    for r in tested:
        assert np.allclose(again[r["id"]], _floats(r["prediction"]), rtol=1e-5, atol=1e-4)
    # and a model without segments is a different model: the test figures move
    plain = run_recipe(
        RECIPE,
        _config(path, patch=1, known=("x",)),
        tmp_path / "p",
        progress=False,
        log=lambda _: None,
    )
    assert plain.figures["mae"] != result.figures["mae"]
    assert not any(isinstance(m, Segments) for m in load(tmp_path / "p").modules())


@pytest.mark.parametrize(
    ("input_length", "known", "patch", "model", "expected"),
    [
        (14, (), 0, "window", 1),  # 7 steps of 2 would be fewer than 16
        (32, (), 0, "window", 2),
        (60, (), 0, "window", 2),  # 15 steps of 4 would be too few
        (61, (), 0, "window", 4),  # 16 steps of 4, zeros in front of the first
        (104, (), 0, "window", 4),  # CO2: 26 steps of 4; 13 of 8 would be too few
        (96, ("x",), 0, "window", 8),  # demand: 96 + 48 horizon steps, 18 steps of 8
        (6, (), 0, "window", 1),  # M1
        (104, (), 2, "window", 2),
        (104, (), 0, "stream", 1),
        (96, (), 0, "residual", 1),  # the residual window model: single steps by default
        (96, (), 4, "residual", 4),
    ],
)
def test_patch_zero_leaves_the_cell_at_least_16_steps(
    tmp_path, input_length, known, patch, model, expected
):
    from rnnkit.recipes.forecast import patch_length

    config = _config(
        tmp_path / "s.csv",
        input_length=input_length,
        known=known,
        horizon=48,
        season=1,
        patch=patch,
        model="window" if model == "residual" else model,
        residual=model == "residual",
    )
    assert patch_length(config) == expected


def test_model_auto_with_a_patch_still_screens_the_stream_model(tmp_path):
    """The stream model reads single steps: ``--model auto --patch 2`` screens it with
    patch 1 instead of refusing the combination."""
    path = _single(tmp_path / "s.csv")
    config = _config(path, model="auto", patch=2, train={"epochs": 1})
    run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    info = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert "stream" in info["selection"]["candidates"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"refit_every": 2}, "refit_every: a --backtest option"),
        ({"past": ("x",)}, "past: a long-format option"),
        ({"loss": "quantile", "quantiles": (0.2, 0.5, 0.8)}, "level: expected an interval within"),
        ({"revin": "on", "model": "stream"}, "revin: normalises the plain window model"),
        ({"series_id": "id", "model": "stream"}, "series_id: long format trains the window"),
        (
            {"series_id": "id", "backtest": True, "refit_every": 2},
            "refit_every: with --series-id the backtest forecasts every origin",
        ),
        ({"test_steps": 5}, "test_steps: a long-format option"),
        ({"series_id": "id", "test_steps": 1}, "test_steps: expected 0 or at least horizon"),
        ({"patch": 2, "model": "stream"}, "patch: a window-model option"),
        ({"patch": 15}, r"patch: expected at most input_length = 14 steps, found 15"),
    ],
)
def test_option_conflicts_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path / "s.csv", **changes)


@pytest.mark.parametrize("unit", [None, "D"])
def test_future_plot_of_many_series_draws_each_under_its_name(tmp_path, monkeypatch, unit):
    """Ten series in small multiples: each axis carries its series' name and draws that
    series' last three horizons of history and its forecast (read back from the figure
    before it is closed), with at most five ticks a side; the rest of the grid is blank."""
    import matplotlib.pyplot as plt

    from rnnkit.recipes.forecast_outputs import FutureForecast, plot_future

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rng = np.random.default_rng(0)
    n, h = 10, 3
    day = 86_400_000_000 if unit else 1  # microseconds: the plot's datetime64[us] axis
    start = np.datetime64("2020-01-01", "us").astype(np.int64) if unit else 1950
    history = tuple((start + day * np.arange(10), rng.normal(size=10)) for _ in range(n))
    pred = rng.normal(size=(n, h))
    forecast = FutureForecast(
        names=tuple(f"S{i}" for i in range(n)),
        origin=np.full(n, start + 9 * day),
        when=np.tile(start + day * np.arange(10, 13), (n, 1)),
        pred=pred,
        lower=pred - 1,
        upper=pred + 1,
        quantiles=None,
        levels=(0.8,),
        history=history,
        unit=unit,
    )
    path, drawn = plot_future(tmp_path / "future.png", forecast, title="t")
    assert drawn == n and path.stat().st_size > 5000
    (fig,) = figures
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == n and len(fig.axes) == 12  # 4 columns, 3 rows
    for i, ax in enumerate(used):
        assert [t.get_text() for t in ax.texts] == [f"S{i}"]
        observed, predicted = ax.get_lines()[0], ax.get_lines()[-1]
        np.testing.assert_allclose(observed.get_ydata(), history[i][1][-3 * h :])  # 3 horizons
        np.testing.assert_allclose(predicted.get_ydata(), pred[i])
        assert len(ax.get_yticks()) <= 5 and len(ax.xaxis.get_major_locator()()) <= 5


@pytest.mark.parametrize("scale", [1, 4])
def test_panel_scale_trains_a_long_file_on_larger_minibatches_at_a_larger_rate(tmp_path, scale):
    """``--panel-scale k`` on a long file: each update reads k times ``--minibatch-size``
    windows (an epoch is that many fewer updates) at k times ``--learning-rate`` (the first
    update moves the weights k times as far: Adam's first step is the rate times the sign of
    the gradient), and the report says so; one series (wide format) is left as it is."""
    import torch

    path = _panel(tmp_path / "p.csv", lengths=(40, 50, 45, 60))
    train = TrainSettings(epochs=1, threads=1, minibatch_size=4, learning_rate=1e-3)
    config = _panel_config(path, train=train, panel_scale=scale)
    run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    windows = len(RECIPE.load_data(config).train)
    updates = [int(r["step"]) for r in _read(tmp_path / "run" / "metrics.csv")]
    assert updates == [-(-windows // (4 * scale))]
    report = (tmp_path / "run" / "report.md").read_text()
    line = f"Minibatches of {4 * scale} windows at learning rate {1e-3 * scale:g}"
    assert (line in report) == (scale > 1)

    data = RECIPE.load_data(config)
    torch.manual_seed(0)
    model = RECIPE.build_model(config, data)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = RECIPE.optimizer(config, model)
    mb = RECIPE.source(config, data.train, training=True).next_minibatch()
    assert mb is not None and mb.num_sequences == 4 * scale
    loss, _ = RECIPE.criterion(config, data)(model(mb["features"]), mb["labels"])
    loss.backward()
    optimizer.step()
    after = [p.detach() for p in model.parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))
    assert moved == pytest.approx(1e-3 * scale, rel=1e-3)

    wide = ForecastConfig(csv=tmp_path / "w.csv", target=("v",), train=train, panel_scale=scale)
    assert RECIPE.settings(wide) is wide.train
