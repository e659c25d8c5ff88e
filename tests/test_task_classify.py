"""The sequence-classification recipe: readers, baselines against NumPy, learning, the command."""

import bz2
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, needs_shared_data

import rnnkit
import rnnkit.cli
from rnnkit import SequenceBatch
from rnnkit.data.idx import write_idx
from rnnkit.layers import Dense
from rnnkit.tasks.classify import (
    ClassifyConfig,
    Conv,
    Ensemble,
    Pool,
    bag_of_words_accuracy,
    classify,
    idx_data,
    majority_accuracy,
    nearest_neighbour_accuracy,
    smoothed_cross_entropy,
    stratified_folds,
    stratified_split,
    text_data,
    ts_cross_validation,
    ts_data,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(rnnkit.cli, "TASK_MODULES", ("rnnkit.tasks.classify",))
    return rnnkit.cli.main(argv)


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


def test_pool_matches_numpy_on_ragged_sequences():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(t, 3)).astype(np.float32) - 2 for t in (4, 1, 6)]
    out = Pool()(SequenceBatch.from_list([torch.from_numpy(s) for s in seqs]))
    expected = np.stack([np.concatenate([s.mean(0), s.max(0)]) for s in seqs])
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_ts_data_normalises_with_training_statistics_only(tmp_path):
    rng = np.random.default_rng(1)
    train, y_train = toy_series(rng, 20)
    test = [x * 10 + 100 for x in toy_series(rng, 6)[0]]  # far from training: must not leak
    data = ts_data(
        write_ts(tmp_path / "a.ts", train, y_train, "up down"),
        write_ts(tmp_path / "b.ts", test, ["up", "down"] * 3, "up down"),
        validation=0.2,
        seed=0,
    )
    assert (len(data.train), len(data.validation), len(data.test)) == (16, 4, 6)
    assert sorted(int(e["label"]) for e in data.validation) == [0, 0, 1, 1]
    # the same carve on the raw series, then the statistics by NumPy
    raw = [
        {"features": torch.from_numpy(x), "label": torch.tensor([int(y == "down")])}
        for x, y in zip(train, y_train, strict=True)
    ]
    kept, _ = stratified_split(raw, 0.2, seed=0)
    steps = np.concatenate([e["features"].numpy() for e in kept])
    mean, std = steps.mean(0), steps.std(0)
    for got, x in zip(data.test, test, strict=True):
        np.testing.assert_allclose(got["features"].numpy(), (x - mean) / std, rtol=1e-4, atol=1e-4)
    scaled = torch.cat([e["features"] for e in data.train]).numpy()
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-5)


def test_ts_test_label_never_seen_in_training_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    train, y = toy_series(rng, 6)
    a = write_ts(tmp_path / "a.ts", train, y, "up down side")
    b = write_ts(tmp_path / "b.ts", train[:2], ["up", "side"], "up down side")
    with pytest.raises(ValueError, match=r"b\.ts: series 2 has the label 'side'"):
        ts_data(a, b)


def test_nearest_neighbour_matches_brute_force_numpy():
    rng = np.random.default_rng(3)
    train = [{"features": torch.randn(12, 2), "label": torch.tensor([i % 3])} for i in range(30)]
    test = [{"features": torch.randn(12, 2), "label": torch.tensor([i % 3])} for i in range(40)]
    a = np.stack([e["features"].numpy().ravel() for e in train])
    b = np.stack([e["features"].numpy().ravel() for e in test])
    nearest = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1).argmin(1)
    expected = np.mean(
        [train[j]["label"].item() == test[i]["label"].item() for i, j in enumerate(nearest)]
    )
    assert nearest_neighbour_accuracy(train, test) == pytest.approx(expected)
    del rng


def test_majority_counts_training_labels():
    train = [{"label": torch.tensor([c])} for c in (2, 2, 1, 0, 2)]
    test = [{"label": torch.tensor([c])} for c in (2, 1, 1, 2, 0, 2, 2, 1)]
    assert majority_accuracy(train, test) == 4 / 8


def test_classifier_learns_toy_series_beyond_majority(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    train, y_train = toy_series(rng, 40)
    test, y_test = toy_series(rng, 30)
    data = ts_data(
        write_ts(tmp_path / "a.ts", train, y_train, "up down"),
        write_ts(tmp_path / "b.ts", test, y_test, "up down"),
    )
    config = ClassifyConfig(
        hidden_size=8, epochs=15, patience=15, minibatch_size=8, learning_rate=0.01
    )
    result = classify(data, config, tmp_path / "run", progress=False)
    # measured: 1.00 after 15 epochs; majority is 0.5 by construction
    assert result.baselines["majority"] == pytest.approx(0.5, abs=0.04)
    assert result.accuracy >= 0.9
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors", "metrics.csv", "report.md"} <= names
    model = rnnkit.load(tmp_path / "run").eval()  # the saved model classifies the same
    x = SequenceBatch.from_list([e["features"] for e in data.test])
    with torch.no_grad():
        logits = model(x)
    truth = torch.cat([e["label"] for e in data.test])
    assert float((logits.argmax(1) == truth).double().mean()) == pytest.approx(result.accuracy)


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


def test_text_data_splits_by_group_and_learns(tmp_path):
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
    result = classify(
        data,
        ClassifyConfig.for_format(
            "text", hidden_size=8, embedding_dim=8, epochs=8, dropout=0.0, learning_rate=0.01
        ),
        progress=False,
    )
    assert result.accuracy >= 0.95  # measured 1.0; majority is 0.5
    assert bag_of_words_accuracy(data) >= 0.95


@needs_shared_data
def test_real_sentiment_split_has_no_movie_in_two_parts():
    data = text_data(SHARED_DATA / "sentiment" / "rotten_tomatoes_corpus.csv.bz2", seed=0)
    assert sum(len(p) for p in (data.train, data.validation, data.test)) == 2455 + 2411
    with bz2.open(SHARED_DATA / "sentiment" / "rotten_tomatoes_corpus.csv.bz2", "rt") as f:
        movies = {r["movie_name"] for r in csv.DictReader(f) if r["category"] != "plot"}
    assert data.split.startswith(f"by movie_name, {len(movies)} groups")


def test_idx_validation_is_the_last_training_images(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(30, 5, 4), dtype=np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    for name, array in (("ti", images), ("tl", labels), ("si", images[:9]), ("sl", labels[:9])):
        write_idx(tmp_path / name, array)
    data = idx_data(*(tmp_path / n for n in ("ti", "tl", "si", "sl")), validation=6)
    assert len(data.train) == 24 and len(data.test) == 9
    np.testing.assert_allclose(data.validation[0]["features"].numpy(), images[24] / 255.0)


def test_command_runs_and_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(7)
    train, y = toy_series(rng, 12)
    a = write_ts(tmp_path / "a_TRAIN.ts", train, y, "up down")
    b = write_ts(tmp_path / "a_TEST.ts", train[:4], y[:4], "up down")
    status = run_cli(
        [
            "classify",
            str(a),
            str(b),
            "--epochs",
            "2",
            "--hidden-size",
            "4",
            "--validation",  # the ts preset holds out nothing; the old carve still works
            "0.2",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        monkeypatch,
    )
    out = capsys.readouterr().out
    assert status == 0
    line = json.loads(out.strip().splitlines()[-1])
    assert line["train/val/test"] == "10/2/4" and "1nn_euclidean_accuracy" in line
    assert run_cli(["classify", str(a)], monkeypatch) == 1
    err = capsys.readouterr().err
    assert (
        err == "rnnkit classify: error: files: --format ts expects TRAIN.ts TEST.ts, found 1 "
        "file(s)\n"
    )
    (tmp_path / "bad.ts").write_text("@data\n1,2,x:up\n")
    assert run_cli(["classify", str(tmp_path / "bad.ts"), str(b)], monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.ts:" in err and "Traceback" not in err


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


def test_stratified_folds_partition_and_balance_classes():
    xs = [{"label": torch.tensor([c])} for c in [0] * 11 + [1] * 7 + [2] * 3]
    folds = stratified_folds(xs, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(21))
    for c in range(3):
        counts = [sum(int(xs[i]["label"]) == c for i in f) for f in folds]
        assert max(counts) - min(counts) <= 1
    assert stratified_folds(xs, 5, seed=3) == folds != stratified_folds(xs, 5, seed=4)


def test_series_norm_scales_each_series_before_the_channel_statistics(tmp_path):
    rng = np.random.default_rng(9)
    train, y_train = toy_series(rng, 10)
    test = toy_series(rng, 4)[0]
    data = ts_data(
        write_ts(tmp_path / "a.ts", train, y_train, "up down"),
        write_ts(tmp_path / "b.ts", test, ["up", "down"] * 2, "up down"),
        validation=0.0,
        series_norm=True,
    )
    assert (len(data.train), len(data.validation)) == (10, 0) and "z-normalised" in data.split

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(0)) / x.std(0)

    steps = np.concatenate([z(x) for x in train])
    mean, std = steps.mean(0), steps.std(0)
    for got, x in zip(data.test, test, strict=True):
        np.testing.assert_allclose(got["features"].numpy(), (z(x) - mean) / std, atol=1e-4)


def test_smoothed_cross_entropy_matches_its_formula():
    rng = np.random.default_rng(10)
    logits, labels, eps = rng.normal(size=(6, 4)), rng.integers(0, 4, 6), 0.3
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.full((6, 4), eps / 4)
    target[np.arange(6), labels] += 1 - eps
    expected = -(target * log_p).sum()
    got = smoothed_cross_entropy(eps)(torch.from_numpy(logits), torch.from_numpy(labels)[:, None])
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_label_smoothing_bounds_the_confidence_it_trains_to(tmp_path):
    rng = np.random.default_rng(11)
    train, y = toy_series(rng, 16)
    data = ts_data(
        write_ts(tmp_path / "a.ts", train, y, "up down"),
        write_ts(tmp_path / "b.ts", train, y, "up down"),
        validation=0.0,
    )
    x = SequenceBatch.from_list([e["features"] for e in data.train])
    confidence = {}
    for eps in (0.0, 0.5):
        config = ClassifyConfig(
            hidden_size=8, epochs=60, learning_rate=0.02, dropout=0.0, label_smoothing=eps
        )
        classify(data, config, tmp_path / f"run{eps}", progress=False)
        model = rnnkit.load(tmp_path / f"run{eps}").eval()
        with torch.no_grad():
            confidence[eps] = float(torch.softmax(model(x), -1).amax(1).mean())
    # the smoothed target of the true class is 0.75: the loss is lowest there, not at 1
    assert confidence[0.0] > 0.95 and 0.65 < confidence[0.5] < 0.85


def test_new_options_take_effect_on_the_command(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(12)
    train, y = toy_series(rng, 12)
    a = write_ts(tmp_path / "a_TRAIN.ts", train, y, "up down")
    b = write_ts(tmp_path / "a_TEST.ts", train[:4], y[:4], "up down")
    argv = ["classify", str(a), str(b), "--epochs", "4", "--hidden-size", "4"]
    argv += ["--conv-channels", "5,3", "--schedule", "cosine", "--learning-rate", "0.01"]
    argv += ["--label-smoothing", "0.1", "--ensemble", "2", "--validation", "0"]
    argv += ["--series-norm", "--run-dir", str(tmp_path / "run")]
    assert run_cli(argv, monkeypatch) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["train/val/test"] == "12/0/4" and line["val_accuracy"] is None
    assert "each series z-normalised" in line["split"] and line["epochs"] == 8  # 2 models x 4
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["conv_channels"] == [5, 3] and config["ensemble"] == 2
    assert config["label_smoothing"] == 0.1 and config["series_norm"] is True
    model = rnnkit.load(tmp_path / "run")
    assert isinstance(model, Ensemble) and len(model.members) == 2
    convs = [m for m in model.members[0].layers if isinstance(m, Conv)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(5, 8), (3, 5)]
    # cosine: the rate after each of the 4 epochs (1 step each) is 0.01 * (1 + cos(pi k/4)) / 2
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rates = [float(r["lr"]) for r in csv.DictReader(f)]
    expected = [0.005 * (1 + np.cos(np.pi * k / 4)) for k in range(1, 5)]
    np.testing.assert_allclose(rates, expected, atol=1e-12)


def test_cross_validation_reads_only_the_training_file(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(13)
    train, y = toy_series(rng, 20)
    a = write_ts(tmp_path / "a_TRAIN.ts", train, y, "up down")
    argv = ["classify", str(a), str(tmp_path / "absent_TEST.ts"), "--cv", "4", "--epochs", "15"]
    argv += ["--hidden-size", "8", "--learning-rate", "0.01", "--validation", "0"]
    assert run_cli(argv, monkeypatch) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(line["cv_folds"]) == 4 and line["cv_accuracy"] >= 0.8  # 5 series per fold
    assert not (tmp_path / "absent_TEST.ts").exists()
    config = ClassifyConfig(hidden_size=8, epochs=15, learning_rate=0.01, validation=0.0)
    assert ts_cross_validation(a, config, folds=4) == line["cv_folds"]
