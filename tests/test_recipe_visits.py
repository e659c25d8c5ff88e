"""Visits: the CSV reader and its errors, the synthetic rules, the measures and baselines
against plain loops, and the Doctor AI-style recipe (``rnnkit visits``) end to end: generate,
train, the run directory, predict on a new CSV, a fresh-interpreter load, diagnose."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit import SequenceBatch, load
from rnnkit.cli import main
from rnnkit.data.errors import ReaderError
from rnnkit.data.visits import (
    Patient,
    SyntheticVisitsConfig,
    Visit,
    history_scores,
    read_visits,
    recall_at_k,
    synthetic_visits,
    visit_examples,
    write_visits,
)
from rnnkit.layers.visits import visit_loss
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.recipes.visits import RECIPE, VisitsConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--epochs", "2", "--hidden-size", "8", "--embedding-size", "8", "--threads", "1"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def visits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("visits")
    data = folder / "v.csv"
    assert main(["visits", "generate", str(data), "--patients", "80"]) == 0
    run = folder / "run"
    assert main(["visits", "train", str(data), *TINY, "--quiet", "--run-dir", str(run)]) == 0
    return run, data


def test_reader_groups_patients_and_parses_both_kinds_of_time(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text(
        "patient_id,visit_time,codes\na,2020-01-01,X Y X\nb,2020-03-01T12:00,Z\na,2020-01-31,Y\n"
    )
    a, b = read_visits(path)
    assert a.patient_id == "a" and [v.codes for v in a.visits] == [("X", "Y"), ("Y",)]
    assert a.visits[1].time - a.visits[0].time == 30.0
    assert b.visits[0].time == pytest.approx(18322.5)  # days from 1970-01-01 to 2020-03-01 12:00
    days = tmp_path / "d.csv"
    days.write_text("patient_id,visit_time,codes\np,0,A\np,2.5,B\n")
    assert [v.time for v in read_visits(days)[0].visits] == [0.0, 2.5]


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("p,2020-01-05,A\np,2020-01-04,B\n", ":3:3:", "patient 'p': expected visit times in"),
        ("p,2020-01-05\n", ":2:3:", "expected 3 fields"),
        ("p,yesterday,A\n", ":2:3:", "expected a visit time"),
        ("p,2020-01-05,  \n", ":2:14:", "expected the visit's codes"),
        ("p,3,A\np,2020-01-05,B\n", ":3:3:", "expected a visit time as days"),
        (",3,A\n", ":2:1:", "expected a patient id"),
    ],
)
def test_reader_errors_give_path_line_column(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("patient_id,visit_time,codes\n" + body)
    with pytest.raises(ReaderError, match=message) as info:
        read_visits(path)
    assert str(info.value).startswith(f"{path}{where}")


def test_reader_refuses_a_wrong_header(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("id,time,codes\n")
    with pytest.raises(ReaderError, match=r":1:1: expected the header"):
        read_visits(path)


def test_write_then_read_gives_the_same_patients(tmp_path: Path) -> None:
    patients = synthetic_visits(30, seed=5)
    write_visits(tmp_path / "s.csv", patients)
    assert read_visits(tmp_path / "s.csv") == patients


def test_synthetic_visits_follow_their_rules() -> None:
    cfg = SyntheticVisitsConfig()
    patients = synthetic_visits(600, seed=2, config=cfg)
    severe = {f"ACU{a:03d}" for a in range(cfg.acute - cfg.severe, cfg.acute)}
    follow, after_severe, gaps = 0, 0, {"severe": [], "chronic only": []}
    recur, chronic_pairs = 0, 0
    for p in patients:
        for v, w in zip(p.visits, p.visits[1:], strict=False):
            hit = sorted(severe & set(v.codes))
            if hit:
                after_severe += len(hit)
                follow += sum(f"FUP{int(c[3:]) - 120:03d}" in w.codes for c in hit)
                gaps["severe"].append(w.time - v.time)
            elif all(c.startswith(("CHR", "MED")) for c in v.codes):
                gaps["chronic only"].append(w.time - v.time)
            for c in v.codes:
                if c.startswith("CHR"):
                    chronic_pairs += 1
                    recur += c in w.codes
    # rule 3: a severe code implies its follow-up at the next visit with probability 0.9
    assert abs(follow / after_severe - 0.9) < 0.03
    # rule 1: a chronic code is coded again at the next visit with probability 0.8
    assert abs(recur / chronic_pairs - 0.8) < 0.03
    # rule 4: gaps are 1 + Exp(7) after a severe code, 1 + Exp(90) after chronic codes only
    assert abs(np.mean(gaps["severe"]) - 8) < 1.5
    assert abs(np.mean(gaps["chronic only"]) - 91) < 12


def test_recall_and_history_scores_against_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 12))
    targets = (rng.random((20, 12)) < 0.3).astype(float)
    targets[:, 0] = 1
    for k in (1, 3, 5):
        expected = [
            len(set(np.argsort(-s)[:k]) & set(np.flatnonzero(t))) / t.sum()
            for s, t in zip(scores, targets, strict=True)
        ]
        got = recall_at_k(torch.tensor(scores), torch.tensor(targets), k)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    p = Patient("p", (Visit(0.0, ("A",)), Visit(1.0, ("B",)), Visit(2.0, ("A",))))
    p = Patient("p", (*p.visits, Visit(3.0, ("C",))))
    features = visit_examples([p], ["A", "B", "C"])[0]["features"]
    scores_h = history_scores(features, torch.tensor([1.0, 2.0, 4.0]))
    # after visits A, B, A: A twice (+0.5, in the last visit), B once; C only by frequency
    np.testing.assert_allclose(scores_h[-1].numpy(), [2.5 + 0.0025, 1.005, 0.01], rtol=1e-6)


def test_visit_loss_is_bce_plus_weighted_time_error() -> None:
    out = torch.randn(5, 4)
    tgt = torch.cat([(torch.rand(5, 3) < 0.5).float(), torch.rand(5, 1)], 1)
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")(out[:, :3], tgt[:, :3])
    expected = bce + 0.5 * ((out[:, 3] - tgt[:, 3]) ** 2).sum()
    torch.testing.assert_close(visit_loss(0.5)(out, tgt), expected)


# ----------------------------------------------------------------------------- the recipe


def by_hand(patient: Patient, codes: list[str]) -> torch.Tensor:
    """The model's input for every visit of ``patient``, written out: multi-hot of the known
    codes, then log(1 + days since the previous visit)."""
    rows = []
    for t, visit in enumerate(patient.visits):
        row = [1.0 if c in visit.codes else 0.0 for c in codes]
        gap = visit.time - patient.visits[t - 1].time if t else 0.0
        rows.append([*row, float(np.log1p(gap))])
    return torch.tensor(rows)


def test_generate_writes_the_synthetic_patients(visits_run) -> None:
    _, data = visits_run
    assert read_visits(data) == synthetic_visits(80, seed=0)


def test_run_directory_holds_the_contract(visits_run) -> None:
    run, data = visits_run
    assert {p.name for p in run.iterdir()} == set(CONTRACT)
    info = json.loads((run / "run.json").read_text())
    assert info["recipe"] == "visits" and [Path(f["path"]).name for f in info["inputs"]] == [
        data.name
    ]
    assert info["training"][0]["best_val_metric"] is not None
    report = (run / "report.md").read_text()
    assert "| patient's past codes |" in report and "| most frequent codes |" in report


def test_predictions_are_the_saved_models_top_codes(visits_run) -> None:
    """Rows against the patients read back and the reloaded model applied to each by hand;
    recall@20 recomputed from the rows."""
    run, data = visits_run
    rows = rows_of(run / "predictions.csv")
    info = json.loads((run / "run.json").read_text())
    codes = info["data"]["codes"]
    patients = {p.patient_id: p for p in read_visits(data)}
    model = load(run).eval()
    test_ids = list(dict.fromkeys(r["id"].split("/")[0] for r in rows))
    assert len(rows) == info["result"]["test_visits"]
    for pid in test_ids[:3]:
        patient = patients[pid]
        mine = [r for r in rows if r["id"].split("/")[0] == pid]
        assert [r["id"] for r in mine] == [f"{pid}/{k}" for k in range(2, len(patient.visits) + 1)]
        with torch.no_grad():
            out = model(SequenceBatch.from_list([by_hand(patient, codes)[:-1]])).to_list()[0]
        for t, row in enumerate(mine):
            assert row["target"].split() == list(patient.visits[t + 1].codes)
            gap = patient.visits[t + 1].time - patient.visits[t].time
            assert float(row["target_days"]) == pytest.approx(gap)
            top = out[t, :-1].topk(20).indices.tolist()
            assert row["prediction"].split() == [codes[i] for i in top]
            assert float(row["predicted_days"]) == pytest.approx(
                float(torch.expm1(out[t, -1])), rel=1e-5
            )
    recall = np.mean(
        [
            len(set(r["prediction"].split()) & set(r["target"].split())) / len(r["target"].split())
            for r in rows
        ]
    )
    assert info["result"]["recall@20"] == pytest.approx(recall, abs=1e-6)


def test_predict_on_a_new_csv_adds_the_next_visit(visits_run, tmp_path) -> None:
    run, data = visits_run
    rows = rows_of(run / "predictions.csv")
    pid = rows[0]["id"].split("/")[0]
    patient = next(p for p in read_visits(data) if p.patient_id == pid)
    new = tmp_path / "new.csv"
    write_visits(new, [patient, Patient("Q", (Visit(patient.visits[0].time, ("ZZZ",)),))])
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(new), "--out", str(out)]) == 0
    got = rows_of(out)
    n = len(patient.visits)
    assert [r["id"] for r in got] == [f"{pid}/{k}" for k in range(2, n + 2)] + ["Q/2"]
    saved = [r for r in rows if r["id"].split("/")[0] == pid]
    for new_row, old in zip(got[: n - 1], saved, strict=True):
        assert new_row["prediction"] == old["prediction"] and new_row["target"] == old["target"]
        assert float(new_row["predicted_days"]) == pytest.approx(
            float(old["predicted_days"]), rel=1e-5
        )
    assert got[n - 1]["target"] == "" and len(got[n - 1]["prediction"].split()) == 20
    assert got[n]["target"] == ""  # one visit of an unknown code: only the next visit


def test_load_in_a_fresh_interpreter_without_the_recipe(visits_run) -> None:
    run, data = visits_run
    rows = rows_of(run / "predictions.csv")
    pid = rows[0]["id"].split("/")[0]
    code = (
        "import json, sys, torch, rnnkit\n"
        "from rnnkit.data.visits import read_visits, visit_features\n"
        f"run = {str(run)!r}\n"
        "codes = json.load(open(run + '/run.json'))['data']['codes']\n"
        f"patient = next(p for p in read_visits({str(data)!r}) if p.patient_id == {pid!r})\n"
        "x = rnnkit.SequenceBatch.from_list([visit_features(patient, codes)[:1]])\n"
        "with torch.no_grad():\n"
        "    out = rnnkit.load(run).eval()(x).to_list()[0][0]\n"
        "print(' '.join(codes[i] for i in out[:-1].topk(20).indices.tolist()))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    top, imported = result.stdout.strip().splitlines()
    assert imported == "False" and top == rows[0]["prediction"]


def test_diagnose_a_saved_run(visits_run, capsys) -> None:
    run, _ = visits_run
    assert main(["diagnose", str(run)]) == 0
    assert "layers.1: |dL/dh_t| from" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["x.csv", "--hidden-size", "-1"], "argument --hidden-size: expected an integer >= 1"),
        (["x.csv", "--embedding-size", "-2"], "argument --embedding-size: expected an integer"),
        (["x.csv", "--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
        (["x.csv", "--test-share", "0.95"], "validation_share + test_share: expected less"),
        (["generate", "o.csv", "--patients", "0"], "argument --patients: expected an integer"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["visits", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_bad_file_is_one_located_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,visit_time,codes\nq,2020-02-01,A\nq,2020-01-01,B\n")
    assert main(["visits", "train", str(bad), "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:3:3:" in err


def test_the_model_beats_both_baselines_on_synthetic_visits(tmp_path) -> None:
    # Measured (600 synthetic patients, seed 0, 10 epochs, one thread): recall@10/20/30 of the
    # model 0.798 / 0.884 / 0.912, of the patient's past codes 0.798 / 0.878 / 0.895, of the
    # most frequent codes 0.323 at k = 10 (rnnkit.tasks.visits measured the same, but 0.911
    # at k = 30). The test
    # asks for the model above the past codes at k = 20 and 30 and far above the most
    # frequent codes.
    data = tmp_path / "v.csv"
    write_visits(data, synthetic_visits(600, seed=0))
    config = VisitsConfig(
        csv=data,
        embedding_size=32,
        hidden_size=64,
        train=TrainSettings(epochs=10, patience=10, minibatch_size=16, learning_rate=0.01),
    )
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    figures = result.figures
    history = figures["baselines"]["patient's past codes"]
    frequent = figures["baselines"]["most frequent codes"]
    assert figures["recall@20"] > history["recall@20"] + 0.002, figures
    assert figures["recall@30"] > history["recall@30"] + 0.008, figures
    assert figures["recall@10"] > frequent["recall@10"] + 0.4, figures
