"""The `rnnkit` command: the demo end to end (short), and one-line argument errors."""

import csv
import json
import math
import re

import numpy as np
import pytest

from rnnkit import load
from rnnkit.cli import main
from rnnkit.recipes.forecast import co2_csv
from rnnkit.recipes.rundir import CONTRACT


def _seasonal_naive_mae_by_hand(values: np.ndarray) -> float:
    """The demo's test part (last 10 % of the rows), windows of 104 in and 52 out, and the
    forecast 'the same week one year before', missing values forward-filled, errors on the
    observed targets only."""
    n = len(values)
    test = values[math.floor(0.9 * n + 1e-9) :]
    filled = test.copy()
    for t in range(1, len(filled)):
        if np.isnan(filled[t]):
            filled[t] = filled[t - 1]
    errors = []
    for start in range(len(test) - 156 + 1):
        for k in range(52):
            t = start + 104 + k
            if not np.isnan(test[t]):
                errors.append(abs(filled[t - 52] - test[t]))
    return float(np.mean(errors))


def test_demo_runs_and_writes_its_run_directory(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    with co2_csv().open() as f:
        rows = list(csv.DictReader(f))
    values = np.array([float(r["co2"]) if r["co2"] else np.nan for r in rows])
    assert len(values) == 2284 and int(np.isnan(values).sum()) == 59
    naive = result["baselines"]["seasonal naive (season 52)"]
    assert naive["mae"] == pytest.approx(_seasonal_naive_mae_by_hand(values), rel=1e-6)
    assert math.isfinite(result["mae"]) and result["recipe"] == "demo"
    assert {p.name for p in run.iterdir()} == {
        *CONTRACT,
        "forecast.png",
        "forecast.csv",
        "future.png",
    }
    info = json.loads((run / "run.json").read_text())
    assert info["recipe"] == "demo" and info["config"]["train"]["epochs"] == 1
    assert info["config"]["target"] == ["co2"] and info["config"]["csv"] == str(co2_csv())
    assert "| seasonal naive (season 52) |" in (run / "report.md").read_text()
    with (run / "predictions.csv").open() as f:
        predictions = list(csv.DictReader(f))
    assert len(predictions) == 74  # one per test window: 229 test weeks - 104 - 52 + 1
    first = rows[math.floor(0.9 * len(rows) + 1e-9) + 104]["date"]  # its first forecast week
    assert predictions[0]["id"] == f"{first[:4]}-{first[4:6]}-{first[6:]}" == "1999-08-14"
    assert len(predictions[0]["prediction"].split()) == 52
    model = load(run)
    # LSTM(32) over segments of 4 steps of (value, mask) (single steps for the residual model
    # --model auto may choose), two biases, then Dense(32, 52)
    patch = 1 if info["data"]["residual"] else 4
    assert sum(p.numel() for p in model.parameters()) == 4 * 32 * (patch * 2 + 32 + 2) + 33 * 52
    assert (run / "forecast.png").stat().st_size > 1000
    with (run / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 1  # one epoch, one row
    # the gradient flow of the saved run, on its validation windows rebuilt from run.json
    assert main(["diagnose", str(run)]) == 0
    layer = "layers.1" if patch > 1 else "layers.0"  # with segments, layers.0 is Segments
    assert f"{layer}: |dL/dh_t| from" in capsys.readouterr().out
    assert (run / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_reader_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "s.csv"
    bad.write_text("t,y\n2020-01-01,1\n2020-01-02,x\n")
    assert main(["forecast", str(bad), "--time-column", "t", "--target", "y"]) == 1
    err = capsys.readouterr().err
    assert "s.csv:3:" in err and "Traceback" not in err


def test_longrange_then_diagnose(tmp_path, capsys):
    run = tmp_path / "adding"
    argv = ["longrange", "--cell", "rnn", "--length", "12", "--epochs", "1", "--eval-every", "3"]
    argv += ["--hidden-size", "8", "--quiet"]
    assert main([*argv, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(run)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    match = re.search(r"from (\S+) \(first step\) to (\S+) \(last\)", line)
    assert match is not None, line
    first, last = float(match.group(1)), float(match.group(2))
    # a tanh RNN forgets: the gradient reaching the first step is smaller than at the last
    assert 0 < first < last
    assert (run / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
