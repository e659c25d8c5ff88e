"""The Trainer against a plain reference loop, CNTK's printed formats, exact resume and faults."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, TRAINING_SCRIPT
from safetensors.torch import load_file
from torch import Tensor
from training_script import make_examples

from rnnkit import Dense, Dropout, Fold, LSTMCell, Recurrence, SequenceBatch
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.training import (
    Callback,
    Checkpoint,
    Criterion,
    CSVLogger,
    EarlyStopping,
    EpochInfo,
    LearningRateLogger,
    ModelInputError,
    NonFiniteError,
    ProgressBar,
    ProgressPrinter,
    StepInfo,
    Trainer,
    classification_error,
    cross_entropy_with_softmax,
    load_state,
    save_state,
    squared_error,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(Callback):
    """Keeps every StepInfo and EpochInfo, and the weights at each epoch end."""

    def __init__(self) -> None:
        self.steps: list[StepInfo] = []
        self.epochs: list[EpochInfo] = []
        self.weights: list[dict[str, Tensor]] = []

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        self.steps.append(step)

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        self.epochs.append(epoch)
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def make_model(seed: int = 0, dtype: torch.dtype = torch.float64, dropout: float = 0.0) -> Any:
    torch.manual_seed(seed)
    layers = Fold(LSTMCell(2, 6)) >> Dense(6, 1)
    if dropout:
        layers = Fold(LSTMCell(2, 6)) >> Dropout(dropout) >> Dense(6, 1)
    return layers.to(dtype)


def source(examples: list[dict[str, Tensor]], size: int = 8, **kwargs: Any) -> MinibatchSource:
    return MinibatchSource(examples, size, unit="sequences", seed=3, **kwargs)


def trainer_for(model: torch.nn.Module, lr: float = 0.02, **kwargs: Any) -> Trainer:
    return Trainer(
        model, Criterion(squared_error), torch.optim.Adam(model.parameters(), lr), **kwargs
    )


def weights_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- criteria


def test_squared_error_matches_torch_on_tensors_and_sequences() -> None:
    g = torch.Generator().manual_seed(0)
    out, tgt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    torch.testing.assert_close(squared_error(out, tgt), F.mse_loss(out, tgt, reduction="sum"))
    seqs = [torch.randn(n, 2, generator=g) for n in (3, 1, 4)]
    tgts = [torch.randn(n, 2, generator=g) for n in (3, 1, 4)]
    expected = sum(((s - t) ** 2).sum() for s, t in zip(seqs, tgts, strict=True))
    got = squared_error(SequenceBatch.from_list(seqs), SequenceBatch.from_list(tgts))
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r"output \(5, 1\) and target \(5,\)"):
        squared_error(torch.zeros(5, 1), torch.zeros(5))
    with pytest.raises(TypeError, match="output is a SequenceBatch .* target is a tensor"):
        squared_error(SequenceBatch.from_list(seqs), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"output lengths \[3, 1, 4\], target lengths \[3, 2, 4\]"):
        squared_error(
            SequenceBatch.from_list(seqs),
            SequenceBatch.from_list([torch.zeros(n, 2) for n in (3, 2, 4)]),
        )


def test_cross_entropy_and_classification_error_against_torch_and_numpy() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g)
    ids = torch.randint(0, 4, (7,), generator=g)
    expected = F.cross_entropy(logits, ids, reduction="sum")
    torch.testing.assert_close(cross_entropy_with_softmax(logits, ids), expected)
    torch.testing.assert_close(cross_entropy_with_softmax(logits, ids.view(7, 1)), expected)
    one_hot = F.one_hot(ids, 4).double()
    torch.testing.assert_close(
        cross_entropy_with_softmax(logits.double(), one_hot), expected.double()
    )
    errors = float(np.sum(logits.numpy().argmax(axis=1) != ids.numpy()))
    assert classification_error(logits, ids).item() == errors
    assert classification_error(logits, one_hot.float()).item() == errors
    # Per step: a tagger's outputs and tags as SequenceBatches.
    seq_logits = [torch.randn(n, 4, generator=g) for n in (2, 5)]
    seq_tags = [torch.randint(0, 4, (n,), generator=g) for n in (2, 5)]
    got = cross_entropy_with_softmax(
        SequenceBatch.from_list(seq_logits), SequenceBatch.from_list(seq_tags)
    )
    torch.testing.assert_close(
        got, F.cross_entropy(torch.cat(seq_logits), torch.cat(seq_tags), reduction="sum")
    )
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 4\)"):
        cross_entropy_with_softmax(logits, torch.full((7,), 4))
    with pytest.raises(ValueError, match=r"class indices of shape \[7\] or \[7, 1\]"):
        classification_error(logits, torch.zeros(6, dtype=torch.long))
    loss, metric = Criterion(cross_entropy_with_softmax, classification_error)(logits, ids)
    assert loss.requires_grad is False and metric.item() == errors  # inputs need no grad here


# ---------------------------------------------------------------------------- the training step


def reference_fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    minibatches: MinibatchSource,
    clip_norm: float | None = None,
    skip_nonfinite: bool = False,
) -> list[tuple[float, float]]:
    """nanoGPT-style loop: mean squared error per sequence, backward, clip, step."""
    log = []
    for mb in minibatches:
        y = mb["labels"]
        loss = ((model(mb["features"]) - y) ** 2).sum() / y.shape[0]
        optimizer.zero_grad()
        loss.backward()
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])
        )
        log.append((loss.item(), norm.item()))
        if skip_nonfinite and not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
            continue
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
    return log


def test_trainer_matches_a_plain_reference_loop() -> None:
    examples = make_examples(dtype=torch.float64)
    model, ref = make_model(), make_model()
    recorder = Recorder()
    trainer = trainer_for(model, clip_norm=0.5, callbacks=[recorder])
    summary = trainer.fit(source(examples), epochs=3)
    log = reference_fit(
        ref, torch.optim.Adam(ref.parameters(), 0.02), source(examples, max_sweeps=3), 0.5
    )
    assert len(recorder.steps) == len(log) == 18 and summary.steps == 18
    for step, (loss, norm) in zip(recorder.steps, log, strict=True):
        assert step.samples == 8
        assert step.loss == pytest.approx(loss, rel=1e-12)
        assert step.grad_norm == pytest.approx(norm, rel=1e-12)
    assert max(s.grad_norm for s in recorder.steps) > 0.5  # clipping was exercised
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=name)
    # The epoch figures are sums over the steps, as CNTK's epoch summary reports them.
    first = recorder.epochs[0]
    assert first.samples == 48 and first.steps == 6
    assert first.loss_sum == pytest.approx(sum(s.loss_sum for s in recorder.steps[:6]))
    assert summary.history[0].metrics["loss"] == pytest.approx(first.loss_sum / 48)


def test_evaluate_matches_one_sequence_at_a_time_and_keeps_the_source_position() -> None:
    examples = make_examples(dtype=torch.float64)
    model = make_model(dropout=0.5)
    trainer = trainer_for(model)
    data = source(examples, max_sweeps=2)
    next(data)
    before = data.state_dict()
    result = trainer.evaluate(data)
    assert data.state_dict() == before
    model.eval()
    with torch.no_grad():
        errors = [
            ((model(SequenceBatch.from_list([e["features"]])) - e["labels"]) ** 2).sum().item()
            for e in examples
        ]
    assert result["samples"] == 48 and result["minibatches"] == 6
    assert result["loss"] == pytest.approx(sum(errors) / 48, rel=1e-12)
    assert result["metric"] == pytest.approx(result["loss"], rel=1e-12)
    as_list = trainer.evaluate(list(source(examples, max_sweeps=1)))  # any iterable of batches
    assert as_list["samples"] == 48 and as_list["loss"] == pytest.approx(result["loss"], rel=1e-12)
    model.train()
    x = SequenceBatch.from_list([e["features"] for e in examples[:5]])
    torch.testing.assert_close(trainer.predict(x), trainer.predict({"features": x}))
    assert model.training  # predict puts the mode back
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.predict(x), model(x))


def test_epoch_size_and_max_samples_count_label_samples() -> None:
    examples = make_examples(dtype=torch.float64)
    recorder = Recorder()
    trainer = trainer_for(make_model(), callbacks=[recorder])
    summary = trainer.fit(source(examples), epochs=4, epoch_size=20)  # 3 minibatches of 8
    assert [e.samples for e in summary.history] == [24, 24, 24, 24]
    assert summary.steps == 12 and summary.stop_reason == "epochs"
    trainer = trainer_for(make_model())
    summary = trainer.fit(source(examples), max_samples=60)  # 8 minibatches, a partial epoch
    assert (summary.samples, summary.stop_reason) == (64, "max_samples")
    assert [(e.steps, e.samples) for e in summary.history] == [(6, 48), (2, 16)]
    with pytest.raises(ValueError, match="training would never end"):
        trainer_for(make_model()).fit(source(examples))


def test_hooks_reach_the_callbacks_that_override_them_in_every_fit() -> None:
    """The Trainer finds each hook's callbacks once per fit: a hook set on an instance counts
    as an override, and a callback added between two fits is called in the second."""
    examples = make_examples(dtype=torch.float64)
    calls: list[tuple[str, int]] = []
    ad_hoc = Callback()
    ad_hoc.on_step_end = lambda trainer, step: calls.append(("ad hoc", step.step))  # type: ignore[method-assign]
    recorder = Recorder()
    trainer = trainer_for(make_model(), callbacks=[ad_hoc])
    n = trainer.fit(source(examples), epochs=1).steps  # one epoch
    assert n > 1 and calls == [("ad hoc", k) for k in range(1, n + 1)]
    trainer.callbacks = (*trainer.callbacks, recorder)
    trainer.fit(source(examples), epochs=2)  # the second epoch
    assert calls[n:] == [("ad hoc", k) for k in range(n + 1, 2 * n + 1)]
    assert [s.step for s in recorder.steps] == list(range(n + 1, 2 * n + 1))
    assert [e.epoch for e in recorder.epochs] == [2]


def test_arguments_are_checked() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(ValueError, match="on_nonfinite: expected 'stop' or 'skip', found 'ignore'"):
        Trainer(model, Criterion(squared_error), opt, on_nonfinite="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"input_streams: expected a tuple .* found 'features'"):
        Trainer(model, Criterion(squared_error), opt, input_streams="features")
    with pytest.raises(ValueError, match="clip_norm: expected a positive number"):
        Trainer(model, Criterion(squared_error), opt, clip_norm=0)
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected a rnnkit.training.Callback"):
        Trainer(model, Criterion(squared_error), opt, callbacks=[print])  # type: ignore[list-item]
    trainer = Trainer(model, Criterion(squared_error), opt, target_stream="y")
    with pytest.raises(ValueError, match=r"the source has no stream \['y'\]; its streams are"):
        trainer.fit(source(make_examples(dtype=torch.float64)), epochs=1)


# ---------------------------------------------------------------------------- printing


def geometric_rows(steps: list[tuple[float, float, int]]) -> str:
    out = io.StringIO()
    printer = ProgressPrinter(freq=0, file=out)
    for loss_sum, metric_sum, n in steps:
        printer.update(n, loss_sum, metric_sum)
    return out.getvalue()


def test_progress_printer_geometric_table_is_cntks() -> None:
    out = io.StringIO()
    ProgressPrinter(freq=0, file=out).write_header()
    assert out.getvalue().splitlines() == [
        " average      since    average      since      examples",
        "    loss       last     metric       last              ",
        " ------------------------------------------------------",
    ]
    # Seven minibatches of 10 samples; lines after 1, 3 and 7 (hand-computed averages:
    # 5/10; 12/30 and 7/20; 16/70 and 4/40; metric 1/10; 2/30 and 1/20; 2/70 and 0/40).
    rows = geometric_rows([(5.0, 1.0, 10), (4.0, 1.0, 10), (3.0, 0.0, 10)] + [(1.0, 0.0, 10)] * 4)
    assert rows.splitlines() == [
        "      0.5        0.5        0.1        0.1            10",
        "      0.4       0.35     0.0667       0.05            30",
        "    0.229        0.1     0.0286          0            70",
    ]
    # The columns line up with the header as in CNTK's logs (examples right-aligned).
    assert all(len(line) == 56 for line in rows.splitlines())


def test_progress_printer_minibatch_lines_and_epoch_summary_are_cntks() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(freq=5, first=2, tag="Training", num_epochs=10, file=out)
    for i in range(12):
        printer.update(20, 0.1 * (i + 1), 2.0)
    printer.summary(1, 3.21)
    printer.evaluation_summary("val", {"metric": 0.123456, "samples": 2239, "minibatches": 17})
    # Minibatches 1 and 2 (first=2), then 3-5 and 6-10 (freq=5); 11-12 only in the summary.
    # Losses: 0.1/20; 0.2/20; (0.3+0.4+0.5)/60; (0.6+...+1.0)/100; total 7.8/240.
    assert out.getvalue().splitlines() == [
        " Minibatch[   1-   1]: loss = 0.005000 * 20, metric = 10.00% * 20;",
        " Minibatch[   2-   2]: loss = 0.010000 * 20, metric = 10.00% * 20;",
        " Minibatch[   3-   5]: loss = 0.020000 * 60, metric = 10.00% * 60;",
        " Minibatch[   6-  10]: loss = 0.040000 * 100, metric = 10.00% * 100;",
        "Finished Epoch[1 of 10]: [Training] loss = 0.032500 * 240, metric = 10.00% * 240 "
        "3.210s ( 74.8 samples/s);",
        "Finished Evaluation [1]: Minibatch[1-17]: metric = 12.35% * 2239;",
    ]
    out = io.StringIO()
    printer = ProgressPrinter(freq=1, metric_is_pct=False, file=out)
    printer.update(4, 2.0, 1.0)
    printer.summary(3, 0.5)
    assert out.getvalue().splitlines() == [
        " Minibatch[   1-   1]: loss = 0.500000 * 4, metric = 0.250000 * 4;",
        "Finished Epoch[3]: loss = 0.500000 * 4, metric = 0.250000 * 4 0.500s (  8.0 samples/s);",
    ]


def test_progress_printer_during_fit() -> None:
    """Header, learning rate, rows after minibatches 1, 3 (each epoch), no epoch summary."""
    examples = make_examples(dtype=torch.float64)
    out, recorder = io.StringIO(), Recorder()
    trainer = trainer_for(make_model(), callbacks=[recorder, ProgressPrinter(freq=0, file=out)])
    trainer.fit(source(examples), epochs=2)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        " average      since    average      since      examples",
        "    loss       last     metric       last              ",
        " ------------------------------------------------------",
        "Learning rate per minibatch: 0.02",
    ]
    expected = []
    for epoch in (0, 6):
        s = recorder.steps[epoch : epoch + 3]
        expected.append((s[0].loss, s[0].loss, 8))
        total = sum(x.loss_sum for x in s)
        expected.append((total / 24, (s[1].loss_sum + s[2].loss_sum) / 16, 24))
    rows = [line.split() for line in lines[4:]]
    assert len(rows) == 4
    for row, (avg, last, n) in zip(rows, expected, strict=True):
        assert row == [f"{avg:.3g}", f"{last:.3g}", f"{avg:.3g}", f"{last:.3g}", str(n)]


def test_progress_printer_epoch_summary_and_learning_rate_changes() -> None:
    examples = make_examples(dtype=torch.float64)
    out, recorder = io.StringIO(), Recorder()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    trainer = Trainer(
        model,
        Criterion(squared_error),
        opt,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5),
        callbacks=[recorder, ProgressPrinter(tag="Training", file=out)],
    )
    trainer.fit(source(examples), epochs=2, validation=source(examples[:20], size=6))
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "Learning rate per minibatch",
        "Finished Epoch[1 of 2]",
        "Finished Evaluation [1]",
        "Learning rate per minibatch",
        "Finished Epoch[2 of 2]",
        "Finished Evaluation [2]",
    ]
    assert lines[0] == "Learning rate per minibatch: 0.1"
    assert lines[3] == "Learning rate per minibatch: 0.05"
    e = recorder.epochs[0]
    assert lines[1].startswith(
        f"Finished Epoch[1 of 2]: [Training] loss = {e.loss_sum / 48:0.6f} * 48, "
        f"metric = {100 * e.metric_sum / 48:0.2f}% * 48 "
    )
    val = e.evaluations["val"]
    assert lines[2] == (
        f"Finished Evaluation [1]: Minibatch[1-4]: metric = {100 * val['metric']:0.2f}% * 20;"
    )


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    examples = make_examples(dtype=torch.float64)
    plain, terminal = io.StringIO(), FakeTerminal()
    trainer = trainer_for(make_model(), callbacks=[ProgressBar(plain), ProgressBar(terminal)])
    trainer.fit(source(examples), epochs=1)
    assert plain.getvalue() == ""
    assert "epoch 1/1:" in terminal.getvalue() and "/48 [" in terminal.getvalue()
    assert "samples/s" in terminal.getvalue()
    # the finished epoch leaves one line with its figures above the (cleared) bar
    loss = trainer.evaluate(source(examples))["loss"]
    assert "epoch 1/1: loss " in terminal.getvalue()
    assert math.isfinite(loss)


# ---------------------------------------------------------------------------- loggers, stopping


def test_csv_logger_rows_match_the_steps_and_epochs(tmp_path: Path) -> None:
    examples = make_examples(dtype=torch.float64)
    recorder = Recorder()
    steps_csv, epochs_csv = tmp_path / "steps.csv", tmp_path / "epochs.csv"
    trainer = trainer_for(
        make_model(),
        callbacks=[
            recorder,
            LearningRateLogger(),
            CSVLogger(steps_csv, per="step"),
            CSVLogger(epochs_csv),
        ],
    )
    trainer.fit(source(examples), epochs=2, validation=source(examples[:16]))
    import csv

    with steps_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    for row, step in zip(rows, recorder.steps, strict=True):
        assert float(row["loss"]) == step.loss and float(row["grad_norm"]) == step.grad_norm
        assert (int(row["epoch"]), float(row["lr"]), row["skipped"]) == (step.epoch, 0.02, "0")
    with epochs_csv.open() as f:
        epochs = list(csv.DictReader(f))
    assert list(epochs[0]) == [
        "epoch",
        "step",
        "samples",
        "seconds",
        "skipped",
        "loss",
        "metric",
        "val_loss",
        "val_metric",
        "lr",
    ]
    for row, info in zip(epochs, recorder.epochs, strict=True):
        assert float(row["val_loss"]) == info.metrics["val_loss"]
        assert float(row["loss"]) == info.loss_sum / info.samples
        assert int(row["step"]) == 6 * info.epoch


def test_learning_rate_logger_follows_the_schedule() -> None:
    examples = make_examples(dtype=torch.float64)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    lrs = LearningRateLogger()
    Trainer(
        model,
        Criterion(squared_error),
        opt,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
        callbacks=[lrs],
    ).fit(source(examples), epochs=2)
    assert lrs.values == [(k, [0.1 * 0.5 ** (k // 4)]) for k in range(1, 13)]


def test_tensorboard_logger_writes_the_step_losses(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnkit.training import TensorBoardLogger

    recorder = Recorder()
    trainer = trainer_for(make_model(), callbacks=[recorder, TensorBoardLogger(tmp_path)])
    trainer.fit(source(make_examples(dtype=torch.float64)), epochs=1)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([s.loss for s in recorder.steps], rel=1e-6)
    assert [e.value for e in events.Scalars("epoch/loss")] == pytest.approx(
        [recorder.epochs[0].metrics["loss"]], rel=1e-6
    )


class ScriptedValidation(Callback):
    """Sets ``val_loss`` from a list, one value per epoch."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def on_epoch_end(self, trainer: Trainer, epoch: EpochInfo) -> None:
        epoch.metrics["val_loss"] = self.values[epoch.epoch - 1]


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    examples = make_examples(dtype=torch.float64)
    recorder = Recorder()
    stopper = EarlyStopping(patience=2, min_delta=0.05)
    trainer = trainer_for(
        make_model(),
        callbacks=[ScriptedValidation([3.0, 2.0, 1.97, 2.4, 1.0, 0.5]), recorder, stopper],
    )
    summary = trainer.fit(source(examples), epochs=6)
    # 1.97 is within min_delta of 2.0: epochs 3 and 4 do not improve, so it stops after 4.
    assert len(summary.history) == 4 and stopper.best_epoch == 2
    assert summary.stop_reason.startswith("early stopping: val_loss has not improved on 2")
    assert weights_equal(trainer.model.state_dict(), recorder.weights[1])
    assert not weights_equal(recorder.weights[3], recorder.weights[1])
    with pytest.raises(ValueError, match=r"has no such metric; it has \['loss', 'metric'\]"):
        trainer_for(make_model(), callbacks=[EarlyStopping()]).fit(source(examples), epochs=1)


# ---------------------------------------------------------------------------- checkpoints


def test_state_round_trips_without_pickle(tmp_path: Path) -> None:
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), 0.01, betas=(0.8, 0.9))
    model(SequenceBatch.from_list([torch.ones(3, 2, dtype=torch.float64)])).sum().backward()
    opt.step()
    state: dict[str, Any] = {
        "optimizer": opt.state_dict(),
        "numbers": [1, 2.5, float("nan"), float("-inf"), None, True],
        "array": np.arange(5, dtype=np.uint32),
        "__odd_key": {"x": torch.arange(3, dtype=torch.int16)},
        "bools": torch.tensor([True, False]),
        "scalar": torch.tensor(2.0),
    }
    path = save_state(tmp_path / "s.safetensors", state)
    back = load_state(path)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert list(back["optimizer"]["state"]) == list(range(len(list(model.parameters()))))
    for k, v in opt.state_dict()["state"].items():
        for name, t in v.items():
            assert torch.equal(back["optimizer"]["state"][k][name], t)
    assert back["numbers"][:2] == [1, 2.5] and math.isnan(back["numbers"][2])
    assert back["numbers"][3:] == [float("-inf"), None, True]
    assert back["array"].dtype == np.uint32 and back["array"].tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(back["__odd_key"]["x"], torch.arange(3, dtype=torch.int16))
    assert torch.equal(back["bools"], state["bools"]) and back["scalar"].dim() == 0
    # The file is plain safetensors: an 8-byte little-endian header length, a JSON header.
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    assert header["__metadata__"]["format"] == "rnnkit.checkpoint"
    assert "optimizer/state/0/exp_avg" in header
    with pytest.raises(TypeError, match=r"state at 'f': cannot store a function without pickle"):
        save_state(tmp_path / "bad.safetensors", {"f": lambda: 0})


def test_an_interrupted_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = Checkpoint(tmp_path, keep=None)
    ckpt.save({"step": 4, "w": torch.ones(3)}, 4)

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash between the temporary write and the rename")

    monkeypatch.setattr("rnnkit.training.checkpoint.os.replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        ckpt.save({"step": 8, "w": torch.zeros(3)}, 8)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-000000004.safetensors"]
    # A crash that kills the process leaves a torn temporary file: it is never read.
    good = (tmp_path / "checkpoint-000000004.safetensors").read_bytes()
    (tmp_path / ".checkpoint-000000012.safetensors.x1y2.tmp").write_bytes(good[: len(good) // 2])
    assert ckpt.latest() == tmp_path / "checkpoint-000000004.safetensors"
    state = load_state(ckpt.latest())  # type: ignore[arg-type]
    assert state["step"] == 4 and torch.equal(state["w"], torch.ones(3))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_state(tmp_path / ".checkpoint-000000012.safetensors.x1y2.tmp")


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path: Path) -> None:
    """In one process: restore the checkpoint of step 8 (epoch 2 of 3) and finish."""
    examples = make_examples()
    full = trainer_for(
        make_model(dtype=torch.float32, dropout=0.3),
        checkpoint=Checkpoint(tmp_path, every_steps=4, keep=None),
    )
    full.fit(source(examples), epochs=3)
    assert [p.name[11:20] for p in Checkpoint(tmp_path).paths()] == [
        "000000004",
        "000000006",
        "000000008",
        "000000012",
        "000000016",
        "000000018",
    ]
    resumed = trainer_for(make_model(seed=99, dtype=torch.float32, dropout=0.3))
    resumed.restore(tmp_path / "checkpoint-000000008.safetensors")
    assert (resumed.state.step, resumed.state.epoch, resumed.state.epoch_steps) == (8, 1, 2)
    torch.manual_seed(12345)  # the checkpoint's random state must win
    resumed.fit(source(examples), epochs=3)
    assert resumed.state.step == 18
    assert weights_equal(resumed.model.state_dict(), full.model.state_dict())


def run_script(out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, str(TRAINING_SCRIPT), str(out), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output.decode()


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = run_script(whole, "--every", "4")
    victim = run_script(killed, "--every", "4", "--pause-after", "10")
    try:
        deadline = time.monotonic() + 120
        while not (killed / "paused").exists():
            assert victim.poll() is None, victim.communicate()[0].decode()
            assert time.monotonic() < deadline, "the run never reached step 10"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    # Steps 1-10 ran; the newest checkpoint is step 8, in the middle of epoch 2 (steps 7-12).
    latest = Checkpoint(killed / "checkpoints").latest()
    assert latest is not None and latest.name == "checkpoint-000000008.safetensors"
    assert not (killed / "final.safetensors").exists()
    finish(run_script(killed, "--every", "4", "--resume"))
    finish(uninterrupted)
    a, b = load_file(whole / "final.safetensors"), load_file(killed / "final.safetensors")
    assert weights_equal(a, b)
    # The step log was cut back to the checkpoint and continued: the same 18 rows.
    assert (whole / "steps.csv").read_text() == (killed / "steps.csv").read_text()


# ---------------------------------------------------------------------------- faults


def with_nan(examples: list[dict[str, Tensor]], index: int) -> list[dict[str, Tensor]]:
    bad = [dict(e) for e in examples]
    x = bad[index]["features"].clone()
    x[1, 0] = float("nan")
    bad[index]["features"] = x
    return bad


def test_a_nan_in_a_batch_stops_with_the_step_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    examples = with_nan(make_examples(dtype=torch.float64), 21)  # minibatch 3 (examples 16-23)
    trainer = trainer_for(make_model(), checkpoint=Checkpoint(tmp_path, every_steps=2, keep=None))
    data = MinibatchSource(examples, 8, unit="sequences", randomize=False)
    with pytest.raises(NonFiniteError) as caught:
        trainer.fit(data, epochs=1)
    message = str(caught.value)
    assert message.startswith("step 3 (epoch 1, minibatch 3 of the epoch): the loss is nan")
    assert (
        "stream 'features' holds 1 non-finite values, in the examples at source positions [21]"
        in message
    )
    assert "checkpoint-000000002.safetensors, is intact" in message
    assert trainer.failed and trainer.state.step == 2
    saved = load_state(tmp_path / "checkpoint-000000002.safetensors")
    assert weights_equal(saved["model"], trainer.model.state_dict())
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert [p.name for p in Checkpoint(tmp_path).paths()] == ["checkpoint-000000002.safetensors"]


def test_skip_drops_the_bad_step_like_a_reference_loop() -> None:
    examples = with_nan(make_examples(dtype=torch.float64), 21)
    out = io.StringIO()
    model, ref = make_model(), make_model()
    trainer = trainer_for(model, on_nonfinite="skip", callbacks=[ProgressPrinter(file=out)])
    data = MinibatchSource(examples, 8, unit="sequences", randomize=False)
    summary = trainer.fit(data, epochs=2)
    assert summary.skipped_steps == (3, 9)
    log = reference_fit(
        ref,
        torch.optim.Adam(ref.parameters(), 0.02),
        MinibatchSource(examples, 8, unit="sequences", randomize=False, max_sweeps=2),
        skip_nonfinite=True,
    )
    assert [i + 1 for i, (loss, _) in enumerate(log) if math.isnan(loss)] == [3, 9]
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("Finished Epoch[1 of 2]: loss = ") and " * 40, " in lines[1]
    assert lines[2] == "Skipped 1 minibatches with a non-finite loss or gradient (steps 3)."


def test_shapes_that_do_not_fit_fail_before_training() -> None:
    examples = make_examples(dtype=torch.float64)
    torch.manual_seed(0)
    model = (Fold(LSTMCell(3, 4)) >> Dense(4, 1)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = trainer_for(model)
    with pytest.raises(ModelInputError) as caught:
        trainer.fit(source(examples), epochs=1)
    message = str(caught.value)
    assert "gives the model 'features': SequenceBatch of 8 sequences" in message
    assert "of steps (2,) torch.float64" in message
    assert "its first layer, 'layers.0.cell' (LSTMCell), takes input_size=3" in message
    assert "expected input of shape [B, 3] per step, found steps of shape (2,)" in message
    assert trainer.state.step == 0 and weights_equal(model.state_dict(), before)
    # A target that does not fit the output: named with both shapes.
    model = make_model()
    wide = [{"features": e["features"], "labels": e["labels"].repeat(1, 2)} for e in examples]
    with pytest.raises(ModelInputError, match=r"output \(8, 1\) and target \(8, 2\)"):
        trainer_for(model).fit(source(wide), epochs=1)
    # A validation source that does not fit fails at the start, not after an epoch.
    trainer = trainer_for(make_model())
    with pytest.raises(ModelInputError, match=r"target 'labels': tensor \(8, 2\)"):
        trainer.fit(source(examples), epochs=1, validation=source(wide))
    assert trainer.state.step == 0
    # A per-step model with a per-sequence target says which is which.
    model = (Recurrence(LSTMCell(2, 4)) >> Dense(4, 1)).double()
    with pytest.raises(ModelInputError, match="output is a SequenceBatch .* target is a tensor"):
        trainer_for(model).fit(source(examples), epochs=1)


def test_gradient_monitor_warns_on_explosion_and_vanishing():
    import warnings

    from rnnkit.training import GradientMonitor, GradientWarning, StepInfo

    monitor = GradientMonitor(explode=10.0, window=5, min_norm=1e-6)
    norms = [1.0, 1.2, 0.9, 1.1, 1.0, 30.0, 1.0, 1e-8, 40.0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_epoch_start(None, 0)
        for i, norm in enumerate(norms, start=1):
            monitor.on_step_end(None, StepInfo(i, 1, i, 10, 1.0, 0.0, norm, 0.01))
    assert monitor.events == [(6, "explodes", 30.0), (8, "vanishes", 1e-8), (9, "explodes", 40.0)]
    messages = [str(w.message) for w in caught if issubclass(w.category, GradientWarning)]
    assert len(messages) == 2  # once per kind and epoch
    assert messages[0].startswith("step 6: the gradient norm explodes: 30 (median of the last 5")
    assert messages[1].startswith("step 8: the gradient norm vanishes: 1e-08")


def test_criterion_reports_the_loss_once_when_the_metric_is_the_loss() -> None:
    calls: list[int] = []

    def counted(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return squared_error(output, target)

    output, target = torch.tensor([[1.0], [3.0]], requires_grad=True), torch.zeros(2, 1)
    loss, metric = Criterion(counted, counted)(output, target)
    assert len(calls) == 1
    assert loss.item() == metric.item() == 10.0  # 1 + 9, summed over samples
    assert loss.requires_grad and not metric.requires_grad
    _, other = Criterion(counted, lambda o, t: (o - t).abs().sum())(output, target)
    assert len(calls) == 2 and other.item() == 4.0
