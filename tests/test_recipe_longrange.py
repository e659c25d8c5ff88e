"""The long-range memory recipe (``rnnkit longrange``) and its pieces.

Oracles: the definitions of the tasks (marker placement, the target as the sum of the marked
values, the copy layout), the closed-form baseline MSE 1/6 (sampling error stated), the copy
baseline recomputed with ``torch.nn.functional.cross_entropy`` on explicit probabilities, the
IRNN's initialisation, the generators called again by hand for the test part and the files,
the saved model applied by hand, and the 1/6 baseline for a trained LSTM.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit import SequenceBatch, load
from rnnkit.cli import main
from rnnkit.data.errors import ReaderError
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.data.synthetic import (
    ADDING_BASELINE_MSE,
    adding_problem,
    as_examples,
    copy_baseline,
    copy_task,
    read_adding_csv,
    read_copy_file,
    write_adding_csv,
    write_copy_file,
)
from rnnkit.layers.longrange import irnn_cell, make_cell
from rnnkit.recipes import longrange
from rnnkit.recipes.longrange import LongRangeConfig
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--length", "12", "--hidden-size", "8", "--epochs", "2", "--eval-every", "3"]
TINY += ["--validation-size", "40", "--test-size", "30", "--threads", "1", "--quiet"]
TEST_SEED = 1_000_000_007  # the test part's seed at --seed 0


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "adding"
    assert main(["longrange", "--cell", "gru", *TINY, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "copy"
    argv = ["longrange", "--task", "copy", "--num-copy", "3", "--num-symbols", "4", *TINY]
    assert main([*argv, "--length", "5", "--run-dir", str(run)]) == 0
    return run


# ----------------------------------------------------------------------------- the generators


@pytest.mark.parametrize("length", [2, 7, 50])
def test_adding_problem_has_one_marker_per_half_and_sums_the_marked_values(length: int) -> None:
    x, y = adding_problem(3000, length, seed=11, dtype=torch.float64)
    values, markers = x[..., 0], x[..., 1]
    half = length // 2
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert markers[:, :half].sum(1).tolist() == [1.0] * 3000
    assert markers[:, half:].sum(1).tolist() == [1.0] * 3000
    marked = [values[i, markers[i] == 1].sum().item() for i in range(3000)]
    np.testing.assert_allclose(y[:, 0].numpy(), marked, rtol=0, atol=1e-15)
    assert float(values.min()) >= 0.0 and float(values.max()) < 1.0


def test_adding_problem_statistics() -> None:
    x, y = adding_problem(20000, 40, seed=1, dtype=torch.float64)
    # The mean of U(0,1) is 1/2 (sd of the mean of 800000 draws: 0.0003).
    assert abs(float(x[..., 0].mean()) - 0.5) < 0.002
    # Predicting 1.0 costs Var(u + v) = 1/6 (sd of the estimate over 20000 sums: about 0.0015).
    assert abs(float(((y - 1.0) ** 2).mean()) - ADDING_BASELINE_MSE) < 0.006
    # Each marker is uniform over its half: all 20 positions occur, about 1000 times each.
    first = x[:, :20, 1].argmax(1)
    second = x[:, 20:, 1].argmax(1) + 20
    for positions in (first, second):
        counts = torch.bincount(positions).tolist()
        assert len([c for c in counts if c]) == 20 and min(c for c in counts if c) > 800


def test_generators_are_seeded() -> None:
    a, b, c = (adding_problem(5, 10, seed=s) for s in (3, 3, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(copy_task(4, 6, seed=1)[0], copy_task(4, 6, seed=1)[0])
    assert not torch.equal(copy_task(4, 6, seed=1)[0], copy_task(4, 6, seed=2)[0])


def test_copy_task_layout() -> None:
    k, delay, s = 4, 9, 5
    x, y = copy_task(200, delay, num_copy=k, num_symbols=s, seed=0)
    assert x.shape == y.shape == (200, delay + 2 * k)
    symbols = x[:, :k]
    assert int(symbols.min()) >= 1 and int(symbols.max()) <= s
    assert torch.equal(y[:, -k:], symbols)
    assert (y[:, :-k] == 0).all()
    assert (x[:, k + delay - 1] == s + 1).all()
    rest = torch.cat([x[:, k : k + delay - 1], x[:, k + delay :]], dim=1)
    assert (rest == 0).all()


def test_copy_baseline_is_the_cross_entropy_of_blanks_then_a_uniform_guess() -> None:
    k, delay, s = 3, 7, 4
    _, y = copy_task(5, delay, num_copy=k, num_symbols=s, seed=0)
    probs = torch.zeros(5, delay + 2 * k, s + 2, dtype=torch.float64)
    probs[:, : delay + k, 0] = 1.0
    probs[:, delay + k :, 1 : s + 1] = 1.0 / s
    ce = torch.nn.functional.nll_loss(
        torch.log(probs).reshape(-1, s + 2), y.reshape(-1), reduction="mean"
    )
    assert math.isclose(copy_baseline(delay, k, s), float(ce), rel_tol=1e-12)


def test_examples_batch_back_into_the_same_tensors() -> None:
    x, y = adding_problem(6, 5, seed=2)
    source = MinibatchSource(as_examples(x, y), 6, unit="sequences", randomize=False, max_sweeps=1)
    mb = next(iter(source))
    padded, lengths = mb["x"].to_padded()
    assert torch.equal(padded, x) and lengths.tolist() == [5] * 6
    assert torch.equal(mb["y"], y)
    ids, target = copy_task(3, 4, num_copy=2, seed=0)
    ex = as_examples(ids, target)
    assert torch.equal(ex[1]["y"], target[1])


def test_files_round_trip_and_errors_carry_path_line_column(tmp_path: Path) -> None:
    x, _ = adding_problem(3, 5, seed=4)
    write_adding_csv(tmp_path / "a.csv", x)
    assert torch.equal(torch.stack(read_adding_csv(tmp_path / "a.csv")), x)
    ids, _ = copy_task(2, 4, num_copy=2, num_symbols=3, seed=0)
    write_copy_file(tmp_path / "c.txt", ids)
    assert torch.equal(torch.stack(read_copy_file(tmp_path / "c.txt", 3)), ids)
    bad = tmp_path / "bad.csv"
    bad.write_text("value,marker\n0.5,1\n0.2,x\n")
    with pytest.raises(ReaderError, match="expected a number, found 'x'") as err:
        read_adding_csv(bad)
    assert str(err.value).startswith(f"{bad}:3:5: ")
    bad.write_text("0.5,1,2\n")
    with pytest.raises(ReaderError, match="expected two columns"):
        read_adding_csv(bad)
    bad.write_text("1 2 0\n1 9 0\n")
    with pytest.raises(ReaderError, match="expected a symbol id 0-4, found '9'") as err:
        read_copy_file(bad, 3)
    assert str(err.value).startswith(f"{bad}:2:3: ")


# ----------------------------------------------------------------------------- the models


def test_irnn_is_initialised_as_le_et_al() -> None:
    torch.manual_seed(0)
    cell = irnn_cell(4, 256)
    assert torch.equal(cell.weight_hh, torch.eye(256))
    with torch.no_grad():
        assert float(cell.bias_ih.abs().max()) == 0.0 and float(cell.bias_hh.abs().max()) == 0.0
        # 1024 draws of N(0, 1e-6): the sample sd is within 10 % of 1e-3 (about 4.5 sd).
        assert abs(float(cell.weight_ih.std()) - 1e-3) < 1e-4
    assert cell.nonlinearity == "relu"


def test_cells_and_configs_are_checked() -> None:
    with pytest.raises(ValueError, match="kind: expected one of"):
        make_cell("elman", 2, 3)
    with pytest.raises(ValueError, match="cell: expected one of"):
        LongRangeConfig(cell="tanh")
    with pytest.raises(ValueError, match="clip_norm: expected a number > 0"):
        LongRangeConfig(train=TrainSettings(clip_norm=0.0))
    with pytest.raises(ValueError, match="length: expected an integer >= 2 for the adding"):
        LongRangeConfig(length=1)  # one step has no two halves
    assert LongRangeConfig(task="copy", length=1).steps == 12 * 50
    with pytest.raises(ValueError, match="length: expected an integer >= 1"):
        LongRangeConfig(length=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--length", "-1"], "argument --length: expected an integer >= 1, found -1"),
        (["--cell", "tanh"], "argument --cell: invalid choice: 'tanh'"),
        (["--eval-every", "0"], "argument --eval-every: expected an integer >= 1, found 0"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["longrange", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the recipe


def test_run_directory_holds_the_contract_and_the_test_part(adding_run) -> None:
    assert sorted(p.name for p in adding_run.iterdir()) == sorted(CONTRACT)
    info = json.loads((adding_run / "run.json").read_text())
    assert info["recipe"] == "longrange" and info["result"]["steps_run"] == 6
    rows = rows_of(adding_run / "predictions.csv")
    _, y = adding_problem(30, 12, seed=TEST_SEED)  # the test part, generated again by hand
    assert [float(r["target"]) for r in rows] == pytest.approx(y[:, 0].tolist(), rel=1e-5)
    mse = sum((float(r["prediction"]) - float(r["target"])) ** 2 for r in rows) / len(rows)
    assert info["result"]["test_mse"] == pytest.approx(mse, rel=1e-4)
    baseline = float(((y - 1.0) ** 2).mean())
    assert info["result"]["baselines"]["always 1.0"]["test_mse"] == pytest.approx(baseline)
    lines = (adding_run / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("2,6,150,")  # 3 steps of 50 per epoch


def test_load_in_a_fresh_interpreter_gives_the_test_predictions(adding_run) -> None:
    code = (
        "import sys, torch, rnnkit\n"
        "from rnnkit.data.synthetic import adding_problem\n"
        f"model = rnnkit.load({str(adding_run)!r}).eval()\n"
        f"x, _ = adding_problem(30, 12, seed={TEST_SEED})\n"
        "with torch.no_grad():\n"
        "    out = model(rnnkit.SequenceBatch.from_padded(x, [12] * 30))\n"
        "print(' '.join(repr(v) for v in out[:, 0].tolist()))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    values, imported = result.stdout.splitlines()
    assert imported == "False"
    saved = [float(r["prediction"]) for r in rows_of(adding_run / "predictions.csv")]
    assert [float(v) for v in values.split()] == pytest.approx(saved, rel=1e-5)


def test_predict_on_an_adding_csv(adding_run, tmp_path) -> None:
    x, y = adding_problem(4, 9, seed=123)  # another length than training: a Fold takes any
    path = tmp_path / "new.csv"
    write_adding_csv(path, x)
    out = tmp_path / "out.csv"
    assert main(["predict", str(adding_run), str(path), "--out", str(out)]) == 0
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"new.csv:{i}" for i in range(1, 5)]
    assert [float(r["target"]) for r in rows] == pytest.approx(y[:, 0].tolist(), rel=1e-5)
    model = load(adding_run).eval()
    with torch.no_grad():
        expected = model(SequenceBatch.from_padded(x, [9] * 4))[:, 0].tolist()
    assert [float(r["prediction"]) for r in rows] == pytest.approx(expected, rel=1e-5)


def test_copy_run_recall_and_predict(copy_run, tmp_path) -> None:
    info = json.loads((copy_run / "run.json").read_text())
    result = info["result"]
    rows = rows_of(copy_run / "predictions.csv")
    right = sum(int(r["recalled_right"]) for r in rows)
    assert result["recall_accuracy"] == pytest.approx(right / (3 * 30))
    expected = copy_baseline(5, 3, 4)
    assert result["baselines"]["blanks, then a uniform guess"]["test_ce"] == expected
    ids, _ = copy_task(3, 5, num_copy=3, num_symbols=4, seed=77)
    path = tmp_path / "new.txt"
    write_copy_file(path, ids)
    out = tmp_path / "out.csv"
    assert main(["predict", str(copy_run), str(path), "--out", str(out)]) == 0
    model = load(copy_run).eval()
    with torch.no_grad():
        logits, _ = model(SequenceBatch.from_padded(ids, [11] * 3)).to_padded()
    for row, x, guess in zip(rows_of(out), ids, logits[:, -3:].argmax(-1), strict=True):
        assert row["target"] == " ".join(str(int(v)) for v in x[:3])
        assert row["prediction"] == " ".join(str(int(v)) for v in guess)


def test_predict_refuses_a_copy_line_too_short(copy_run, tmp_path, capsys) -> None:
    path = tmp_path / "short.txt"
    path.write_text("1 2 3 5 0\n")
    assert main(["predict", str(copy_run), str(path)]) == 1
    assert "expected at least 2 x 3 steps" in capsys.readouterr().err


def test_diagnose_gives_the_saved_runs_validation_loss(tmp_path, capsys) -> None:
    run = tmp_path / "rnn"
    assert main(["longrange", "--cell", "rnn", *TINY, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(run)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    match = re.search(r"from (\S+) \(first step\) to (\S+) \(last\)", line)
    assert match is not None, line
    first, last = float(match.group(1)), float(match.group(2))
    # a tanh RNN forgets: the gradient reaching the first step is smaller than at the last
    assert 0 < first < last
    from rnnkit.recipes.harness import diagnose_run

    flow = diagnose_run(run, tmp_path / "flow.png")  # the whole validation part (40 < 200)
    val_loss = json.loads((run / "run.json").read_text())["result"]["val_loss"]
    assert flow.loss == pytest.approx(val_loss, rel=1e-5)
    assert flow.layers[0].steps.tolist() == list(range(12))


def test_training_stops_once_the_validation_part_is_solved(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(longrange, "SOLVED_MSE", 100.0)  # any model solves it at once
    run = tmp_path / "solved"
    assert main(["longrange", *TINY, "--run-dir", str(run)]) == 0
    result = json.loads((run / "run.json").read_text())["result"]
    assert (result["steps_to_solve"], result["steps_run"], result["epochs"]) == (3, 3, [1])
    assert result["solved"] is True
    run = tmp_path / "not-stopped"
    assert main(["longrange", *TINY, "--no-until-solved", "--run-dir", str(run)]) == 0
    result = json.loads((run / "run.json").read_text())["result"]
    assert (result["steps_to_solve"], result["steps_run"]) == (3, 6)


def test_lstm_beats_the_baseline_on_the_adding_problem_at_t20(tmp_path) -> None:
    run = tmp_path / "t20"
    argv = ["longrange", "--cell", "lstm", "--length", "20", "--hidden-size", "32", "--epochs", "8"]
    argv += ["--clip-norm", "1", "--test-size", "300", "--validation-size", "100"]
    assert main([*argv, "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    result = json.loads((run / "run.json").read_text())["result"]
    assert result["skipped_steps"] == 0 and result["steps_run"] <= 400
    assert result["test_mse"] < 0.5 * ADDING_BASELINE_MSE
