"""bench/bench_forecast.py: the table and the targets' checks on fixed inputs, the cache, and
what is read from rnnkit's run.json (no run of rnnkit or of the peers)."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import bench_forecast as bf
finally:
    sys.path.remove(str(ROOT / "bench"))


def record(data, library, loss, seed, mae, seconds, coverage=None):
    result = {"mae": mae, "mase": mae / 2}
    if coverage is not None:
        result.update(coverage=coverage, width=1.0)
    return {
        "data": data,
        "library": library,
        "loss": loss,
        "seed": seed,
        "result": result,
        "train_seconds": seconds,
    }


def test_doctests():
    failed, tried = doctest.testmod(bf, optionflags=doctest.ELLIPSIS)
    assert tried >= 6 and failed == 0


def test_summarise_means_over_seeds_in_table_order():
    runs = [
        record("m1", "point", "point", 0, 1.0, 1.0) | {"library": "neuralforecast"},
        record("co2", "darts", "point", 1, 0.5, 12.0),
        record("co2", "darts", "point", 0, 0.3, 8.0),
        record("co2", "rnnkit", "quantile", 0, 0.4, 2.0, coverage=0.8),
        record("co2", "rnnkit", "quantile", 1, 0.6, 4.0, coverage=0.7),
        record("co2", "rnnkit", "point", 2, 0.2, 1.0),
    ]
    rows = bf.summarise(runs)
    assert [(r.data, r.loss, r.library) for r in rows] == [
        ("co2", "point", "rnnkit"),
        ("co2", "point", "darts"),
        ("co2", "quantile", "rnnkit"),
        ("m1", "point", "neuralforecast"),
    ]
    darts = rows[1]
    assert darts.mae == {0: 0.3, 1: 0.5}
    assert darts.mean_mae == pytest.approx(0.4)
    assert darts.mase == pytest.approx(0.2)
    assert darts.train_seconds == pytest.approx(10.0)
    assert darts.coverage is None
    assert rows[2].coverage == pytest.approx(0.75)
    assert rows[2].width == pytest.approx(1.0)


def rows_for(
    own_mae, own_seconds, coverage, peers=(("darts", 0.4, 10.0), ("neuralforecast", 0.5, 6.0))
):
    runs = [record("co2", "rnnkit", "point", 0, own_mae, own_seconds)]
    runs += [record("co2", name, "point", 0, mae, s) for name, mae, s in peers]
    if coverage is not None:
        runs.append(record("co2", "rnnkit", "quantile", 0, own_mae, own_seconds, coverage))
    return bf.summarise(runs)


def verdicts(rows):
    return {c.target: c.passed for c in bf.checks(rows)}


def test_checks_at_their_bounds():
    # equal to the best peer's MAE, exactly half the faster peer's time, coverage at 75 %
    assert verdicts(rows_for(0.4, 3.0, 0.75)) == {
        "MAE": True,
        "train time": True,
        "coverage": True,
    }
    assert verdicts(rows_for(0.4001, 3.01, 0.7499)) == {
        "MAE": False,
        "train time": False,
        "coverage": False,
    }
    assert verdicts(rows_for(0.1, 1.0, 0.85))["coverage"] is True
    assert verdicts(rows_for(0.1, 1.0, 0.8501))["coverage"] is False


def test_checks_name_the_best_and_the_faster_peer():
    mae, time, coverage = bf.checks(rows_for(0.45, 2.0, 0.9))
    assert (mae.passed, mae.detail) == (False, "rnnkit 0.45, best peer (darts) 0.4")
    assert time.detail == "rnnkit 2 s, half the faster peer (neuralforecast) 3 s"
    assert coverage.detail == "rnnkit 90.0 % (target 75-85 %)"


def test_checks_without_the_runs_they_need_are_open():
    rows = rows_for(0.3, 1.0, None, peers=())
    assert verdicts(rows) == {"MAE": None, "train time": None, "coverage": None}
    table = bf.markdown(rows, seeds=(0,))
    assert "| co2 | MAE | - | needs rnnkit's and a peer's point runs |" in table


def test_markdown_rows_and_missing_seeds():
    runs = [
        record("co2", "darts", "point", 0, 0.41, 8.0),
        record("co2", "darts", "point", 2, 0.39, 9.0),
        record("co2", "rnnkit", "quantile", 0, 0.38, 2.0, coverage=0.812),
    ]
    lines = bf.markdown(bf.summarise(runs)).splitlines()
    assert lines[0].count("|") == 12  # 11 columns
    assert lines[2] == "| co2 | point | darts | 0.41 | - | 0.39 | 0.4 | 0.2 | - | - | 8.5 |"
    assert lines[3] == "| co2 | quantile | rnnkit | 0.38 | - | - | 0.38 | 0.19 | 81.2 | 1 | 2 |"
    assert "| co2 | coverage | yes | rnnkit 81.2 % (target 75-85 %) |" in lines


def test_rnnkit_record_reads_run_json():
    run = {
        "result": {"mae": 0.41, "mase": 0.33, "coverage": 0.79, "width": 1.9, "model": "window"},
        "timings": {"train_seconds": 3.5, "data_seconds": 2.0, "total_seconds": 7.0},
    }
    got = bf.rnnkit_record(run)
    assert got["result"] == {"mae": 0.41, "mase": 0.33, "coverage": 0.79, "width": 1.9}
    assert (got["train_seconds"], got["data_seconds"], got["total_seconds"]) == (3.5, 2.0, 7.0)
    got.update(data="co2", library="rnnkit", loss="quantile", seed=0)
    table = bf.markdown(bf.summarise([got]), seeds=(0,))
    assert "| co2 | quantile | rnnkit | 0.41 | 0.41 | 0.33 | 79 | 1.9 | 3.5 |" in table
    assert "(`timings.data_seconds`): co2 quantile 2 s." in table


def test_cached_runs_are_read_not_rerun(tmp_path, monkeypatch, capsys):
    for library, mae, seconds in (("rnnkit", 0.35, 2.0), ("darts", 0.4, 10.0)):
        path = bf.cache_path(tmp_path, "co2", library, "point", 0)
        path.write_text(json.dumps(record("co2", library, "point", 0, mae, seconds)))

    def refuse(*args, **kwargs):
        raise AssertionError("a cached run was run again")

    monkeypatch.setattr(bf, "run_rnnkit", refuse)
    monkeypatch.setattr(bf, "run_peer", refuse)
    out = tmp_path / "table.md"
    argv = ["--data", "co2", "--libraries", "rnnkit,darts", "--losses", "point", "--seeds", "0"]
    table = bf.main([*argv, "--results", str(tmp_path), "--write", str(out)])
    assert out.read_text() == table == capsys.readouterr().out
    assert "| co2 | MAE | yes | rnnkit 0.35, best peer (darts) 0.4 |" in table
    assert "| co2 | train time | yes | rnnkit 2 s, half the faster peer (darts) 5 s |" in table


def test_a_missing_peer_environment_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(bf, "PEER_PYTHON", tmp_path / "absent" / "python")
    with pytest.raises(SystemExit, match="co2-darts-point-seed0.json: not cached.*forecast_env"):
        bf.run_peer("co2", "darts", "point", 0, None, tmp_path / "co2-darts-point-seed0.json")


def test_bad_choices_are_refused_by_name():
    with pytest.raises(SystemExit, match="--data: expected some of co2, elec, m1, found 'co3'"):
        bf.main(["--data", "co3"])
    with pytest.raises(SystemExit, match="--seeds: expected integers, found 'x'"):
        bf.main(["--seeds", "0,x"])
