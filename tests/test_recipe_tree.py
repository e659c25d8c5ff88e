"""The ListOps recipe (``rnnkit tree``) and its pieces.

Oracles: the generator called again by hand for the split (labels, the majority class), the
saved model applied by hand to TreeBatches built from the expressions, the schedule's values
worked out by hand, dropout's draw repeated by hand, AdamW's decoupled decay with zero
gradients, and the majority class for a Tree-LSTM that learns a tiny slice.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import load
from rnnkit.cli import main
from rnnkit.data.listops import (
    LISTOPS_VOCAB,
    ListOpsConfig,
    ListOpsExpression,
    generate_listops,
    write_listops_tsv,
)
from rnnkit.layers.trees import TreeClassifier
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.recipes.tree import RECIPE, TreeConfig, lr_factor
from rnnkit.trees import Tree, TreeBatch

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ListOpsConfig(max_depth=2, max_length=20)
TINY = ["--max-depth", "2", "--max-length", "20", "--embedding-size", "8", "--hidden-size", "8"]
TINY += ["--generated-train", "64", "--generated-test", "16", "--generated-validation", "16"]
TINY += ["--minibatch-size", "16"]
TINY += ["--learning-rate", "0.01", "--epochs", "3", "--threads", "1", "--quiet"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def split(train: int, test: int, validation: int, config: ListOpsConfig = SMALL):
    examples = generate_listops(train + test + validation, config, seed=0)
    return examples[:train], examples[train : train + test], examples[train + test :]


def by_hand(run: Path, sequences: list[str]) -> list[int]:
    """The saved model's classes for ``sequences``, from a TreeBatch built here."""
    model = load(run).eval()
    batch = TreeBatch.from_trees([Tree.from_listops(s) for s in sequences], LISTOPS_VOCAB)
    with torch.no_grad():
        return model(batch).argmax(1).tolist()


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tree"
    assert main(["tree", *TINY, "--run-dir", str(run)]) == 0
    return run


# ----------------------------------------------------------------------------- the recipe


def test_run_directory_holds_the_contract_and_the_split(tree_run) -> None:
    assert sorted(p.name for p in tree_run.iterdir()) == sorted(CONTRACT)
    train, test, _ = split(64, 16, 16)
    rows = rows_of(tree_run / "predictions.csv")
    assert [(int(r["target"]), r["expression"]) for r in rows] == [tuple(e) for e in test]
    result = json.loads((tree_run / "run.json").read_text())["result"]
    right = sum(r["target"] == r["prediction"] for r in rows)
    assert result["test_accuracy"] == right / 16
    labels = [e.label for e in train]
    majority = max(range(10), key=labels.count)
    share = sum(e.label == majority for e in test) / 16
    assert result["baselines"]["majority class"]["test_accuracy"] == share
    assert set(result["baselines"]) == {"majority class", "lstm"}


def test_predictions_are_the_saved_models_classes(tree_run) -> None:
    rows = rows_of(tree_run / "predictions.csv")
    expected = by_hand(tree_run, [r["expression"] for r in rows])
    assert [int(r["prediction"]) for r in rows] == expected


def test_the_lstm_baseline_is_the_lstm_trained_alone(tree_run, tmp_path) -> None:
    run = tmp_path / "lstm"
    assert main(["tree", *TINY, "--model", "lstm", "--no-compare", "--run-dir", str(run)]) == 0
    alone = json.loads((run / "run.json").read_text())["result"]
    assert set(alone["baselines"]) == {"majority class"}
    beside = json.loads((tree_run / "run.json").read_text())["result"]["baselines"]["lstm"]
    assert beside["test_accuracy"] == alone["test_accuracy"]


def test_predict_on_a_listops_tsv(tree_run, tmp_path) -> None:
    examples = generate_listops(7, SMALL, seed=42)
    path = tmp_path / "new.tsv"
    write_listops_tsv(path, examples)
    out = tmp_path / "out.csv"
    assert main(["predict", str(tree_run), str(path), "--out", str(out)]) == 0
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [f"new.tsv:{i}" for i in range(1, 8)]
    assert [int(r["target"]) for r in rows] == [e.label for e in examples]
    assert [int(r["prediction"]) for r in rows] == by_hand(tree_run, [e.sequence for e in examples])


def test_predict_refuses_a_bad_tsv_with_its_place(tree_run, tmp_path, capsys) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("3\t[SM 1 2 ]\n9\t[MAX 1 9\n")
    assert main(["predict", str(tree_run), str(path)]) == 1
    assert f"{path}:2:11: " in capsys.readouterr().err


def test_load_in_a_fresh_interpreter_without_the_recipe(tree_run) -> None:
    rows = rows_of(tree_run / "predictions.csv")
    code = (
        "import sys, torch, rnnkit\n"
        "from rnnkit.data.listops import ListOpsExpression\n"
        f"model = rnnkit.load({str(tree_run)!r}).eval()\n"
        f"texts = {[r['expression'] for r in rows]!r}\n"
        "batch = ListOpsExpression.collate([ListOpsExpression(s) for s in texts])\n"
        "with torch.no_grad():\n"
        "    print(' '.join(str(c) for c in model(batch).argmax(1).tolist()))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    classes, imported = result.stdout.splitlines()
    assert imported == "False"
    assert classes.split() == [r["prediction"] for r in rows]


def test_diagnose_a_tree_run(tree_run, capsys) -> None:
    assert main(["diagnose", str(tree_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("encoder: |dL/dh_t| from ")
    assert (tree_run / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tree_run / "gradients.png").unlink()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--generated-train", "-1"], "argument --generated-train: expected an integer >= 1"),
        (["--test", "t.tsv"], "test: expected --train FILE with --test, found no --train"),
        (["--train", "t.tsv"], "test: expected --test FILE with --train FILE, found none"),
        (["--valid-fraction", "1"], "valid_fraction: expected a number in (0, 1), found 1.0"),
        (["--model", "gru"], "argument --model: invalid choice: 'gru'"),
        (["--dropout", "1"], "dropout: expected a number in [0, 1), found 1.0"),
        (["--hold-epochs", "2"], "hold_epochs: expected 0 unless --schedule cosine"),
        (["--lr", "0.1"], "unrecognized arguments: --lr"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tree", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["tree", "longrange"])
def test_help_shows_the_presets(name, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "--preset" in capsys.readouterr().out


def test_tree_lstm_learns_a_tiny_slice_beyond_the_majority_class(tmp_path) -> None:
    """400 shallow trees (one list of digits each), 15 short epochs: a few seconds."""
    run = tmp_path / "learn"
    argv = ["tree", "--max-depth", "2", "--max-length", "30", "--generated-train", "400"]
    argv += [
        "--generated-test",
        "200",
        "--generated-validation",
        "50",
        "--epochs",
        "15",
        "--embedding-size",
        "32",
    ]
    argv += ["--hidden-size", "32", "--minibatch-size", "32", "--learning-rate", "0.01"]
    assert main([*argv, "--no-compare", "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    result = json.loads((run / "run.json").read_text())["result"]
    majority = result["baselines"]["majority class"]["test_accuracy"]
    assert majority < 0.2
    assert result["test_accuracy"] > majority + 0.25, result


# ----------------------------------------------------------------------------- the pieces


def test_lr_factor_hand_computed() -> None:
    # 10 steps per epoch: warm-up (s + 1) / 10, hold until epoch 2, cosine over epochs 2-5.
    got = [lr_factor(s, 10, 5, 1, 2) for s in (0, 4, 9, 15, 20, 35, 50)]
    want = [0.1, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    assert got == pytest.approx(want)
    assert lr_factor(5, 10, 2, 0, 0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_schedules_set_the_optimizers_learning_rate(tmp_path) -> None:
    """4 steps per epoch; the rate after each epoch (metrics.csv's lr) is the schedule's."""
    run = tmp_path / "cosine"
    argv = ["tree", *TINY, "--no-compare", "--run-dir", str(run)]
    assert main([*argv, "--schedule", "cosine", "--hold-epochs", "1"]) == 0
    rates = [float(r["lr"]) for r in rows_of(run / "metrics.csv")]
    assert rates == pytest.approx([1e-2, 0.5e-2, 0.0])
    assert main([*argv, "--epoch-decay", "0.5"]) == 0
    rates = [float(r["lr"]) for r in rows_of(run / "metrics.csv")]
    assert rates == pytest.approx([0.5e-2, 0.25e-2, 0.125e-2])


def test_dropout_on_the_root_state_acts_in_training_only() -> None:
    examples = generate_listops(8, ListOpsConfig(max_depth=3, max_length=30), seed=2)
    batch = ListOpsExpression.collate([ListOpsExpression(ex.sequence) for ex in examples])
    torch.manual_seed(0)
    model = TreeClassifier(8, 8, dropout=0.5)
    h, _ = model.encoder.root_states(batch, batch.embed(model.embedding))
    model.eval()
    assert torch.allclose(model(batch), model.output(h))
    model.train()
    torch.manual_seed(1)
    logits = model(batch)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones_like(h), 0.5)  # the same draw: kept units x2
    assert torch.allclose(logits, model.output(h * mask), atol=1e-6)
    assert not torch.allclose(logits, model.output(h))


def test_weight_decay_is_decoupled_and_off_by_default() -> None:
    """With zero gradients Adam's step is zero, so AdamW only shrinks: w (1 - lr wd)."""
    layer = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    for decay, factor in ((0.1, 1 - 1e-3 * 0.1), (0.0, 1.0)):
        for p, b in zip(layer.parameters(), before, strict=True):
            p.data.copy_(b)
        config = TreeConfig(train=TrainSettings(weight_decay=decay))
        optimizer = RECIPE.optimizer(config, layer)
        for p in layer.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        for p, b in zip(layer.parameters(), before, strict=True):
            assert torch.allclose(p.detach(), b * factor, rtol=0, atol=1e-7)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="schedule: expected one of"):
        TreeConfig(train=TrainSettings(schedule="step"))
    with pytest.raises(ValueError, match="dropout"):
        TreeConfig(dropout=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        TrainSettings(weight_decay=-1.0)
    with pytest.raises(ValueError, match="epoch_decay: expected 1 unless --schedule constant"):
        TreeConfig(epoch_decay=0.5, train=TrainSettings(schedule="cosine"))


def test_an_expression_collates_into_its_gold_tree() -> None:
    """A binary tree over T tokens has 2T - 1 nodes, and its leaves in preorder are the
    tokens from left to right, with their ids as inputs."""
    sequences = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "5"]
    batch = ListOpsExpression.collate([ListOpsExpression(s) for s in sequences])
    for i, sequence in enumerate(sequences):
        nodes = batch.tree_nodes(i)
        tokens = sequence.split()
        assert len(nodes) == 2 * len(tokens) - 1
        ids = batch.inputs[nodes][batch.has_input[nodes]]
        assert ids.tolist() == [LISTOPS_VOCAB[t] for t in tokens]
