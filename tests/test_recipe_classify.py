"""rnnkit classify: readers, splits and baselines against NumPy, the layers against loops, and
the recipe end to end (run directory, predict, load without the recipe, diagnose, cv)."""

import bz2
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data

import rnnkit
from rnnkit import SequenceBatch
from rnnkit.cli import main
from rnnkit.data.classify import (
    bag_of_words_accuracy,
    idx_data,
    majority_accuracy,
    nearest_neighbour_accuracy,
    stratified_folds,
    stratified_split,
    text_data,
    ts_data,
)
from rnnkit.data.idx import write_idx
from rnnkit.layers import Dense
from rnnkit.layers.conv import Conv, Ensemble, Pool
from rnnkit.recipes.classify import RECIPE, config_for
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.training import smoothed_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--threads", "1", "--quiet"]


def write_ts(path: Path, series: list[np.ndarray], labels: list[str], names: str) -> Path:
    lines = [f"@problemName toy\n@univariate false\n@dimensions {series[0].shape[1]}\n"]
    lines.append(f"@equalLength false\n@classLabel true {names}\n@data\n")
    for x, y in zip(series, labels, strict=True):
        dims = ":".join(",".join(f"{v:.6f}" for v in x[:, d]) for d in range(x.shape[1]))
        lines.append(f"{dims}:{y}\n")
    path.write_text("".join(lines))
    return path


def toy_series(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[str]]:
    """Class 'up' rises, 'down' falls; lengths 8-15, two channels (the second is noise)."""
    series, labels = [], []
    for i in range(n):
        t = rng.integers(8, 16)
        sign = 1 if i % 2 == 0 else -1
        rise = sign * np.linspace(0, 3, t) + rng.normal(0, 0.3, t) + 5
        series.append(np.stack([rise, rng.normal(2, 1, t)], 1))
        labels.append("up" if sign > 0 else "down")
    return series, labels


def train(files, run, **changes):
    config = config_for(files, **{"threads": 1, **changes})
    return run_recipe(RECIPE, config, run, progress=False, log=lambda _: None)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the pieces


def test_pool_matches_numpy_on_ragged_sequences():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(t, 3)).astype(np.float32) - 2 for t in (4, 1, 6)]
    out = Pool()(SequenceBatch.from_list([torch.from_numpy(s) for s in seqs]))
    expected = np.stack([np.concatenate([s.mean(0), s.max(0)]) for s in seqs])
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def conv_same_numpy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'same' convolution (cross-correlation) of one ``[T, I]`` series by loops."""
    out_channels, _, k = weight.shape
    left = (k - 1) // 2
    padded = np.concatenate([np.zeros((left, x.shape[1])), x, np.zeros((k - 1 - left, x.shape[1]))])
    out = np.zeros((x.shape[0], out_channels))
    for t in range(x.shape[0]):
        out[t] = np.einsum("oik,ki->o", weight, padded[t : t + k]) + bias
    return out


@pytest.mark.parametrize("kernel", [3, 8])
def test_conv_sees_each_sequence_alone_and_normalises_real_steps(kernel):
    rng = np.random.default_rng(8)
    seqs = [rng.normal(size=(t, 3)).astype(np.float32) for t in (9, 2, 5)]
    layer = Conv(3, 4, kernel).train()
    out = layer(SequenceBatch.from_list([torch.from_numpy(s) for s in seqs])).to_list()
    w = layer.conv.weight.detach().numpy().astype(np.float64)
    b = layer.conv.bias.detach().numpy().astype(np.float64)
    raw = [conv_same_numpy(s.astype(np.float64), w, b) for s in seqs]
    steps = np.concatenate(raw)  # batch statistics over the 16 real steps, no padding
    mean, var = steps.mean(0), steps.var(0)
    for got, r in zip(out, raw, strict=True):
        expected = np.maximum((r - mean) / np.sqrt(var + 1e-5), 0)
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    members = [Dense(3, 4) for _ in range(3)]
    x = torch.randn(5, 3)
    probabilities = [torch.softmax(m(x), -1).detach().numpy() for m in members]
    got = Ensemble(members)(x).exp().detach().numpy()
    np.testing.assert_allclose(got, np.mean(probabilities, 0), rtol=1e-5)


def test_smoothed_cross_entropy_matches_its_formula():
    rng = np.random.default_rng(10)
    logits, labels, eps = rng.normal(size=(6, 4)), rng.integers(0, 4, 6), 0.3
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.full((6, 4), eps / 4)
    target[np.arange(6), labels] += 1 - eps
    expected = -(target * log_p).sum()
    got = smoothed_cross_entropy(eps)(torch.from_numpy(logits), torch.from_numpy(labels)[:, None])
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_ts_data_normalises_with_training_statistics_only(tmp_path):
    rng = np.random.default_rng(1)
    train_x, y_train = toy_series(rng, 20)
    test = [x * 10 + 100 for x in toy_series(rng, 6)[0]]  # far from training: must not leak
    data = ts_data(
        write_ts(tmp_path / "a.ts", train_x, y_train, "up down"),
        write_ts(tmp_path / "b.ts", test, ["up", "down"] * 3, "up down"),
        validation=0.2,
        seed=0,
    )
    assert (len(data.train), len(data.validation), len(data.test)) == (16, 4, 6)
    assert sorted(int(e["label"]) for e in data.validation) == [0, 0, 1, 1]
    # the same carve on the raw series, then the statistics by NumPy
    raw = [
        {"features": torch.from_numpy(x), "label": torch.tensor([int(y == "down")])}
        for x, y in zip(train_x, y_train, strict=True)
    ]
    kept, _ = stratified_split(raw, 0.2, seed=0)
    steps = np.concatenate([e["features"].numpy() for e in kept])
    mean, std = steps.mean(0), steps.std(0)
    for got, x in zip(data.test, test, strict=True):
        np.testing.assert_allclose(got["features"].numpy(), (x - mean) / std, rtol=1e-4, atol=1e-4)
    scaled = torch.cat([e["features"] for e in data.train]).numpy()
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.scale[0], mean, rtol=1e-5)


def test_series_norm_scales_each_series_before_the_channel_statistics(tmp_path):
    rng = np.random.default_rng(9)
    train_x, y_train = toy_series(rng, 10)
    test = toy_series(rng, 4)[0]
    data = ts_data(
        write_ts(tmp_path / "a.ts", train_x, y_train, "up down"),
        write_ts(tmp_path / "b.ts", test, ["up", "down"] * 2, "up down"),
        validation=0.0,
        series_norm=True,
    )
    assert (len(data.train), len(data.validation)) == (10, 0) and "z-normalised" in data.split

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(0)) / x.std(0)

    steps = np.concatenate([z(x) for x in train_x])
    mean, std = steps.mean(0), steps.std(0)
    for got, x in zip(data.test, test, strict=True):
        np.testing.assert_allclose(got["features"].numpy(), (z(x) - mean) / std, atol=1e-4)


def test_ts_test_label_never_seen_in_training_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    series, y = toy_series(rng, 6)
    a = write_ts(tmp_path / "a.ts", series, y, "up down side")
    b = write_ts(tmp_path / "b.ts", series[:2], ["up", "side"], "up down side")
    with pytest.raises(ValueError, match=r"b\.ts:\d+:1: series 2 has the label 'side'"):
        ts_data(a, b)


def test_nearest_neighbour_matches_brute_force_numpy():
    train_x = [{"features": torch.randn(12, 2), "label": torch.tensor([i % 3])} for i in range(30)]
    test = [{"features": torch.randn(12, 2), "label": torch.tensor([i % 3])} for i in range(40)]
    a = np.stack([e["features"].numpy().ravel() for e in train_x])
    b = np.stack([e["features"].numpy().ravel() for e in test])
    nearest = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1).argmin(1)
    expected = np.mean(
        [train_x[j]["label"].item() == test[i]["label"].item() for i, j in enumerate(nearest)]
    )
    assert nearest_neighbour_accuracy(train_x, test, block=7) == pytest.approx(expected)


def test_majority_counts_training_labels():
    train_x = [{"label": torch.tensor([c])} for c in (2, 2, 1, 0, 2)]
    test = [{"label": torch.tensor([c])} for c in (2, 1, 1, 2, 0, 2, 2, 1)]
    assert majority_accuracy(train_x, test) == 4 / 8


def test_stratified_folds_partition_and_balance_classes():
    xs = [{"label": torch.tensor([c])} for c in [0] * 11 + [1] * 7 + [2] * 3]
    folds = stratified_folds(xs, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(21))
    for c in range(3):
        counts = [sum(int(xs[i]["label"]) == c for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1
    assert stratified_folds(xs, 5, seed=3) == folds != stratified_folds(xs, 5, seed=4)


def test_idx_validation_is_the_last_training_images(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(30, 5, 4), dtype=np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    for name, array in (("ti", images), ("tl", labels), ("si", images[:9]), ("sl", labels[:9])):
        write_idx(tmp_path / name, array)
    data = idx_data(*(tmp_path / n for n in ("ti", "tl", "si", "sl")), validation=6)
    assert len(data.train) == 24 and len(data.test) == 9
    np.testing.assert_allclose(data.validation[0]["features"].numpy(), images[24] / 255.0)


def text_csv(path: Path, rng: np.random.Generator, rows: int) -> Path:
    good, bad = ["great", "moving", "fine"], ["dull", "awful", "tired"]
    filler = ["the", "film", "is", "a", "story", "of", "its", "cast"]
    with bz2.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", "text", "movie_name"])
        for i in range(rows):
            label = ["fresh", "rotten", "plot"][i % 3]
            cue = rng.choice(good if i % 3 == 0 else bad)
            words = [*rng.choice(filler, 5), cue, f"m{i % 40}"]  # m<k> names the movie
            if i % 3 == 2:
                words = ["a", "plot", "summary"]
            w.writerow([label, " ".join(words).capitalize() + ".", f"movie{i % 40}"])
    return path


@needs_shared_data
def test_real_sentiment_split_has_no_movie_in_two_parts():
    path = SHARED_DATA / "sentiment" / "rotten_tomatoes_corpus.csv.bz2"
    data = text_data(path, seed=0)
    assert sum(len(p) for p in (data.train, data.validation, data.test)) == 2455 + 2411
    with bz2.open(path, "rt") as f:
        movies = {r["movie_name"] for r in csv.DictReader(f) if r["category"] != "plot"}
    assert data.split.startswith(f"by movie_name, {len(movies)} groups")


# ----------------------------------------------------------------------------- series end to end


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(4)
    train_x, y_train = toy_series(rng, 40)
    test, y_test = toy_series(rng, 30)
    new, _ = toy_series(rng, 5)
    return (
        write_ts(folder / "toy_TRAIN.ts", train_x, y_train, "up down"),
        write_ts(folder / "toy_TEST.ts", test, y_test, "up down"),
        write_ts(folder / "new.ts", new, ["up"] * 5, "up down"),
        train_x,
        new,
    )


@pytest.fixture(scope="module")
def toy_run(toy_files, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "toy"
    argv = ["classify", str(toy_files[0]), str(toy_files[1]), "--epochs", "15"]
    argv += ["--preset", "ts-rnn"]
    argv += ["--hidden-size", "8", "--conv-channels", "0", "--minibatch-size", "8"]
    argv += ["--learning-rate", "0.01", "--label-smoothing", "0", *QUIET]
    assert main([*argv, "--run-dir", str(run)]) == 0
    return run


def test_run_directory_holds_the_contract_and_learns(toy_run, toy_files):
    assert {p.name for p in toy_run.iterdir()} == set(CONTRACT)
    info = json.loads((toy_run / "run.json").read_text())
    assert info["config"]["train"]["epochs"] == 15 and info["config"]["validation"] == 0.0
    assert info["result"]["val_loss"] is None  # the ts preset trains on the whole file
    rows = read_rows(toy_run / "predictions.csv")
    assert [r["id"] for r in rows[:2]] == ["toy_TEST.ts:1", "toy_TEST.ts:2"] and len(rows) == 30
    accuracy = np.mean([r["target"] == r["prediction"] for r in rows])
    assert info["result"]["test_accuracy"] == pytest.approx(accuracy)
    # measured: 1.00 after 15 epochs; majority is 0.5 by construction
    assert accuracy >= 0.9
    assert info["result"]["baselines"]["majority"]["test_accuracy"] == pytest.approx(0.5, abs=0.04)
    assert "1-NN Euclidean" in (toy_run / "report.md").read_text()


def test_predict_new_series_matches_the_model_by_hand(toy_run, toy_files, tmp_path):
    out = tmp_path / "p.csv"
    assert main(["predict", str(toy_run), str(toy_files[2]), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [f"new.ts:{k}" for k in range(1, 6)]
    # the training channels' statistics by NumPy, the saved model on each series alone
    steps = np.concatenate(toy_files[3])
    mean, std = steps.mean(0), steps.std(0)
    model = rnnkit.load(toy_run).eval()
    for row, x in zip(rows, toy_files[4], strict=True):
        scaled = torch.from_numpy(((x - mean) / std).astype(np.float32))
        with torch.no_grad():
            p = torch.softmax(model(SequenceBatch.from_list([scaled])), -1)[0]
        assert row["prediction"] == ["up", "down"][int(p.argmax())]
        assert float(row["probability"]) == pytest.approx(float(p.max()), abs=1e-4)
        assert row["target"] == "up"
    # the test file again gives the rows of predictions.csv
    again = tmp_path / "again.csv"
    assert main(["predict", str(toy_run), str(toy_files[1]), "--out", str(again)]) == 0
    assert read_rows(again) == read_rows(toy_run / "predictions.csv")


def test_load_in_a_fresh_interpreter_without_the_recipe(toy_run, toy_files):
    code = (
        "import sys, torch, rnnkit\n"
        "from rnnkit.data.classify import ts_data\n"
        f"data = ts_data({str(toy_files[0])!r}, {str(toy_files[1])!r}, validation=0.0)\n"
        f"model = rnnkit.load({str(toy_run)!r}).eval()\n"
        "x = rnnkit.SequenceBatch.from_list([e['features'] for e in data.test])\n"
        "with torch.no_grad():\n"
        "    print(' '.join(data.class_names[i] for i in model(x).argmax(1).tolist()))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    labels, imported = result.stdout.strip().splitlines()
    assert imported == "False"
    assert labels.split() == [r["prediction"] for r in read_rows(toy_run / "predictions.csv")]


def test_diagnose_without_a_validation_part_uses_the_training_series(toy_run, capsys):
    assert main(["diagnose", str(toy_run)]) == 0
    assert "|dL/dh_t| from" in capsys.readouterr().out
    assert (toy_run / "gradients.png").read_bytes()[:4] == b"\x89PNG"


def test_ensemble_convolutions_and_cosine_schedule_on_the_command(toy_files, tmp_path):
    run = tmp_path / "run"
    a, b = toy_files[0], toy_files[1]
    argv = ["classify", str(a), str(b), "--epochs", "8", "--ensemble", "2", "--hidden-size", "4"]
    argv += ["--preset", "ts-rnn"]
    argv += ["--conv-channels", "5,3", "--learning-rate", "0.01", "--minibatch-size", "40"]
    argv += ["--series-norm", *QUIET, "--run-dir", str(run)]
    assert main(argv) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["result"]["epochs"] == [4, 4]  # --epochs bounds the whole ensemble
    assert info["config"]["conv_channels"] == [5, 3] and info["config"]["series_norm"] is True
    model = rnnkit.load(run)
    assert isinstance(model, Ensemble) and len(model.members) == 2
    convs = [m for m in model.members[0].layers if isinstance(m, Conv)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(5, 8), (3, 5)]
    # cosine: the rate after each of the 4 epochs (1 step each) is 0.01 * (1 + cos(pi k/4)) / 2
    rates = [float(r["lr"]) for r in read_rows(run / "metrics.csv")]
    expected = [0.005 * (1 + np.cos(np.pi * k / 4)) for k in range(1, 5)]
    np.testing.assert_allclose(rates, expected, atol=1e-12)
    # the saved ensemble gives predictions.csv: the log of the members' mean probabilities
    data = ts_data(a, b, validation=0.0, series_norm=True)
    x = SequenceBatch.from_list([e["features"] for e in data.test])
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m.eval()(x), -1) for m in model.members]).mean(0)
    rows = read_rows(run / "predictions.csv")
    assert [float(r["probability"]) for r in rows] == pytest.approx(mean.amax(1).tolist(), abs=1e-4)


def test_label_smoothing_bounds_the_confidence_it_trains_to(tmp_path):
    rng = np.random.default_rng(11)
    series, y = toy_series(rng, 16)
    a = write_ts(tmp_path / "a_TRAIN.ts", series, y, "up down")
    b = write_ts(tmp_path / "a_TEST.ts", series, y, "up down")
    data = ts_data(a, b, validation=0.0)
    x = SequenceBatch.from_list([e["features"] for e in data.train])
    confidence = {}
    for eps in (0.0, 0.5):
        train(
            [a, b],
            tmp_path / f"run{eps}",
            hidden_size=8,
            conv_channels=(),
            model="rnn",
            train_steps=0,
            epochs=60,
            learning_rate=0.02,
            dropout=0.0,
            label_smoothing=eps,
            schedule="constant",
        )
        model = rnnkit.load(tmp_path / f"run{eps}").eval()
        with torch.no_grad():
            confidence[eps] = float(torch.softmax(model(x), -1).amax(1).mean())
    # the smoothed target of the true class is 0.75: the loss is lowest there, not at 1
    assert confidence[0.0] > 0.95 and 0.65 < confidence[0.5] < 0.85


def test_cross_validation_reads_only_the_training_file(tmp_path, capsys):
    rng = np.random.default_rng(13)
    series, y = toy_series(rng, 20)
    a = write_ts(tmp_path / "a_TRAIN.ts", series, y, "up down")
    argv = ["classify", "cv", str(a), "--folds", "4", "--epochs", "15", "--hidden-size", "8"]
    argv += ["--preset", "ts-rnn"]
    argv += ["--conv-channels", "0", "--learning-rate", "0.01", *QUIET]
    assert main([*argv, "--run-dir", str(tmp_path / "cv")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(line["cv_folds"]) == 4 and line["cv_accuracy"] >= 0.8  # 5 series per fold
    tested = [
        r["id"]
        for k in range(1, 5)
        for r in read_rows(tmp_path / "cv" / f"fold-{k}" / "predictions.csv")
    ]
    assert sorted(tested) == sorted(f"a_TRAIN.ts:{i}" for i in range(1, 21))
    for k, accuracy in enumerate(line["cv_folds"], 1):
        rows = read_rows(tmp_path / "cv" / f"fold-{k}" / "predictions.csv")
        assert np.mean([r["target"] == r["prediction"] for r in rows]) == pytest.approx(
            accuracy, abs=1e-4
        )


# ----------------------------------------------------------------------------- images, sentences


def test_idx_run_and_predict_on_an_images_file(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(40, 6, 5), dtype=np.uint8)
    labels = (images.mean((1, 2)) > 127).astype(np.uint8)
    names = ("ti-ubyte", "tl-ubyte", "si-ubyte", "sl-ubyte")
    arrays = (images[:30], labels[:30], images[30:], labels[30:])
    for name, array in zip(names, arrays, strict=True):
        write_idx(tmp_path / name, array)
    run = tmp_path / "run"
    argv = ["classify", *(str(tmp_path / n) for n in names), "--epochs", "2", "--hidden-size"]
    argv += ["4", "--validation-images", "6", *QUIET, "--run-dir", str(run)]
    assert main(argv) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["hidden_size"] == 4 and info["config"]["train"]["minibatch_size"] == 128
    assert set(info["result"]["baselines"]) == {"majority", "1-NN Euclidean"}
    write_idx(tmp_path / "new-ubyte", images[:3])
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(tmp_path / "new-ubyte"), "--out", str(out)]) == 0
    rows = read_rows(out)
    model = rnnkit.load(run).eval()
    x = SequenceBatch.from_list([torch.from_numpy(i / 255.0).float() for i in images[:3]])
    with torch.no_grad():
        expected = [str(int(i)) for i in model(x).argmax(1)]
    assert [r["id"] for r in rows] == ["new-ubyte:0", "new-ubyte:1", "new-ubyte:2"]
    assert [r["prediction"] for r in rows] == expected and "target" not in rows[0]


def test_text_learns_and_predicts_plain_sentences(tmp_path):
    path = text_csv(tmp_path / "rt.csv.bz2", np.random.default_rng(5), 600)
    data = text_data(path, seed=0)
    assert data.class_names == ("fresh", "rotten")
    assert data.vocabulary is not None and "summary" not in data.vocabulary  # plot rows dropped
    sizes = [len(p) for p in (data.train, data.validation, data.test)]
    assert sum(sizes) == 400 and sizes[0] == 320  # 32 of 40 movies, 10 snippets each
    # the movie's own word is known in training and unknown elsewhere: no movie in two parts
    unk = data.vocabulary.unk_id
    assert all(int(e["features"][-2]) != unk for e in data.train)
    assert all(int(e["features"][-2]) == unk for e in data.validation + data.test)
    assert bag_of_words_accuracy(data) >= 0.95
    result = train(
        [path],
        tmp_path / "run",
        hidden_size=8,
        embedding_dim=8,
        epochs=8,
        dropout=0.0,
        learning_rate=0.01,
    )
    assert result.figures["test_accuracy"] >= 0.95  # measured 1.0; majority is 0.5
    assert result.figures["baselines"]["bag of words"]["test_accuracy"] >= 0.95
    new = tmp_path / "new.txt"
    new.write_text("The film is great.\n\nA dull, tired story.\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(new), "--out", str(out)]) == 0
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["new.txt:1", "new.txt:3"]
    model = rnnkit.load(tmp_path / "run").eval()
    ids = [
        data.vocabulary.encode(s)
        for s in (["the", "film", "is", "great", "."], ["a", "dull", ",", "tired", "story", "."])
    ]
    with torch.no_grad():
        expected = [data.class_names[i] for i in model(SequenceBatch.from_list(ids)).argmax(1)]
    assert [r["prediction"] for r in rows] == expected == ["fresh", "rotten"]


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--hidden-size", "-1"], "argument --hidden-size: expected an integer >= 1, found -1"),
        (["--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
        (["--preset", "nope"], "argument --preset: expected one of 'ts', 'ts-published'"),
        (["--conv-channels", "4,x"], "conv_channels: expected integers >= 1"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", "a_TRAIN.ts", "a_TEST.ts", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_wrong_files_and_bad_files_are_one_line(tmp_path, toy_files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["classify", str(toy_files[0])])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "files: --format ts expects TRAIN.ts TEST.ts, found 1 file(s)" in err
    with pytest.raises(SystemExit):
        main(["classify", "data.bin", "more.bin"])
    assert "format: cannot tell the format of 'data.bin'" in capsys.readouterr().err
    (tmp_path / "bad.ts").write_text("@data\n1,2,x:up\n")
    assert main(["classify", str(tmp_path / "bad.ts"), str(toy_files[1]), *QUIET]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.ts:" in err and "Traceback" not in err


def test_the_preset_follows_the_files_and_help_shows_it(capsys):
    with pytest.raises(SystemExit):
        main(["classify", "x_TRAIN.ts", "x_TEST.ts", "--help"])
    text = capsys.readouterr().out
    assert "(default: ts)" in text and "(default: 64,64,64)" in text and "(default: rocket)" in text
    with pytest.raises(SystemExit):
        main(["classify", "rt.csv.bz2", "--help"])
    text = capsys.readouterr().out
    assert "(default: text)" in text and "(default: lstm)" in text
    assert config_for(["a.ts", "b.ts"], "ts-rnn-published").train.member_epochs == 100
    published = config_for(["a.ts", "b.ts"], "ts-published")
    assert published.train.ensemble == 5 and published.model == "rocket"
    assert config_for(["a.ts", "b.ts"]).model == "rocket"
    assert config_for(["a.ts", "b.ts"], "ts-fcn").train_steps == 1_000_000


# ----------------------------------------------------------------------------- conv families


def short_series(rng: np.random.Generator, n: int, lengths: tuple[int, ...]) -> tuple:
    """Class 'up' sits above zero, 'down' below; every series is one of ``lengths`` long."""
    series, labels = [], []
    for i in range(n):
        sign = 1 if i % 2 == 0 else -1
        t = int(rng.choice(lengths))
        series.append(np.stack([sign * 2 + rng.normal(0, 0.5, t), rng.normal(0, 1, t)], 1))
        labels.append("up" if sign > 0 else "down")
    return series, labels


@pytest.mark.parametrize("model", ["fcn", "resnet", "inception", "rocket"])
def test_series_shorter_than_every_kernel_train_and_predict(model, tmp_path):
    # lengths 1-3 against kernels of 8 (fcn, resnet), 40 (inception) and 7-11 (rocket): zeros
    # beyond the ends
    rng = np.random.default_rng(21)
    files = []
    for name, n in (("s_TRAIN.ts", 24), ("s_TEST.ts", 12)):
        files.append(write_ts(tmp_path / name, *short_series(rng, n, (1, 2, 3)), "up down"))
    argv = ["classify", *map(str, files), "--model", model, "--train-steps", "3000"]
    argv += ["--epochs", "5", "--minibatch-size", "8", *QUIET]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    rows = read_rows(tmp_path / "run" / "predictions.csv")
    assert info["result"]["test_accuracy"] == pytest.approx(
        np.mean([r["target"] == r["prediction"] for r in rows])
    )
    assert info["result"]["test_accuracy"] >= 0.9  # the level tells the class
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(files[1]), "--out", str(out)]) == 0
    assert [r["prediction"] for r in read_rows(out)] == [r["prediction"] for r in rows]


def test_train_steps_spread_one_cosine_over_the_run_and_long_series_are_averaged(tmp_path):
    rng = np.random.default_rng(22)
    series, labels = short_series(rng, 16, (250, 150))
    train_file = write_ts(tmp_path / "l_TRAIN.ts", series, labels, "up down")
    test_file = write_ts(tmp_path / "l_TEST.ts", *short_series(rng, 6, (200,)), "up down")
    result = train(
        [train_file, test_file],
        tmp_path / "run",
        model="fcn",
        max_steps=100,
        train_steps=15_000,
        epochs=4,
        minibatch_size=4,
    )
    model = rnnkit.load(tmp_path / "run")
    assert model[0].downsample.factor == 3  # ceil(250 / 100)
    # the series steps seen after averaging by 3: 8 of ceil(250/3) and 8 of ceil(150/3)
    mean_length = (8 * 84 + 8 * 50) / 16
    per_epoch = round(15_000 / 4 / mean_length)
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 4
    for row in rows:  # epochs end on whole minibatches of 4
        assert per_epoch - 4 < int(row["samples"]) <= per_epoch + 4
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0  # one cosine, down to 0
    assert result.figures["test_accuracy"] >= 0.8


def test_cross_validation_compares_conv_models(tmp_path, capsys):
    rng = np.random.default_rng(23)
    a = write_ts(tmp_path / "a_TRAIN.ts", *toy_series(rng, 20), "up down")
    for model in ("fcn", "rnn"):
        argv = ["classify", "cv", str(a), "--folds", "4", "--model", model]
        argv += ["--train-steps", "15000", "--epochs", "5", "--hidden-size", "8", *QUIET]
        assert main([*argv, "--run-dir", str(tmp_path / model)]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert len(line["cv_folds"]) == 4 and line["cv_accuracy"] >= 0.8
        saved = rnnkit.load(tmp_path / model / "fold-1")
        assert (type(saved[0]).__name__ == "FCN") == (model == "fcn")


def test_the_dtw_baseline_on_request_matches_the_module(toy_files, tmp_path):
    from rnnkit.data.nearest import nearest_neighbour_dtw_accuracy

    result = train(toy_files[:2], tmp_path / "run", model="fcn", train_steps=2000, dtw=True)
    data = ts_data(toy_files[0], toy_files[1], validation=0.0)
    expected = nearest_neighbour_dtw_accuracy(data.train, data.test)
    assert result.figures["baselines"]["1-NN DTW"]["test_accuracy"] == pytest.approx(expected)
    assert "1-NN DTW" in (tmp_path / "run" / "report.md").read_text()


def test_rocket_default_fits_without_gradient_steps_and_ensembles(toy_files, tmp_path):
    a, b = toy_files[0], toy_files[1]
    argv = ["classify", str(a), str(b), "--rocket-kernels", "300", "--ensemble", "2", *QUIET]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 0  # the ts preset: rocket
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["model"] == "rocket" and info["result"]["epochs"] == [0, 0]
    assert [t["stop"] for t in info["training"]] == ["fitted without gradient steps"] * 2
    assert info["result"]["test_accuracy"] >= 0.9  # measured 1.00; the slope tells the class
    model = rnnkit.load(tmp_path / "run")
    first, second = (m[0] for m in model.members)
    assert first.seed != second.seed and not torch.equal(first.weight, second.weight)
    # each member's head is the ridge classifier of its own kernels' training features
    from rnnkit.layers.rocket import fit_ridge

    data = ts_data(a, b, validation=0.0)
    x = SequenceBatch.from_list([e["features"] for e in data.train])
    labels = torch.tensor([int(e["label"]) for e in data.train])
    with torch.no_grad():
        ridge = fit_ridge(first(x), labels, 2)
    torch.testing.assert_close(model.members[0][1].weight, ridge.weight, rtol=1e-4, atol=1e-5)
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(b), "--out", str(out)]) == 0
    rows = read_rows(tmp_path / "run" / "predictions.csv")
    assert [r["prediction"] for r in read_rows(out)] == [r["prediction"] for r in rows]
