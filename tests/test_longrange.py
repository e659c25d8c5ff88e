"""The long-range task generators and recipes: statistics, structure, a tiny training run.

Oracles: the definitions of the tasks (marker placement, the target as the sum of the marked
values, the copy layout), the closed-form baseline MSE 1/6 (sampling error stated), the copy
baseline recomputed with ``torch.nn.functional.cross_entropy`` on explicit probabilities, and
the 1.0-baseline for a trained LSTM.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.data.minibatch import MinibatchSource
from rnnkit.data.synthetic import (
    ADDING_BASELINE_MSE,
    adding_problem,
    as_examples,
    copy_baseline,
    copy_task,
)
from rnnkit.tasks.longrange import (
    LongRangeRun,
    adding_model,
    copy_model,
    irnn_cell,
    make_cell,
    train_long_range,
)


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


def test_irnn_is_initialised_as_le_et_al() -> None:
    torch.manual_seed(0)
    cell = irnn_cell(4, 256)
    assert torch.equal(cell.weight_hh, torch.eye(256))
    with torch.no_grad():
        assert float(cell.bias_ih.abs().max()) == 0.0 and float(cell.bias_hh.abs().max()) == 0.0
        # 1024 draws of N(0, 1e-6): the sample sd is within 10 % of 1e-3 (about 4.5 sd).
        assert abs(float(cell.weight_ih.std()) - 1e-3) < 1e-4
    assert cell.nonlinearity == "relu"


def test_cells_and_runs_are_checked() -> None:
    with pytest.raises(ValueError, match="kind: expected one of"):
        make_cell("elman", 2, 3)
    with pytest.raises(ValueError, match="cell: expected one of"):
        LongRangeRun(cell="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip: expected a positive norm"):
        LongRangeRun(clip=0.0)
    with pytest.raises(ValueError, match="length: expected an integer >= 2"):
        adding_problem(2, 1, seed=0)  # one step has no two halves
    with pytest.raises(ValueError, match="length"):
        LongRangeRun(length=0)


def test_models_have_the_right_outputs() -> None:
    torch.manual_seed(0)
    x, _ = adding_problem(3, 6, seed=0)
    from rnnkit import SequenceBatch

    out = adding_model("gru", 5)(SequenceBatch.from_padded(x, [6, 6, 6]))
    assert out.shape == (3, 1)
    ids, _ = copy_task(2, 3, num_copy=2, seed=0)
    logits = copy_model("lstm", 5)(SequenceBatch.from_padded(ids, [7, 7]))
    assert logits.data.shape == (14, 10)


@pytest.mark.usefixtures("one_thread")
def test_lstm_beats_the_baseline_on_the_adding_problem_at_t20() -> None:
    run = LongRangeRun(
        cell="lstm",
        length=20,
        clip=1.0,
        hidden_size=32,
        max_steps=400,
        eval_every=50,
        learning_rate=1e-2,
        num_test=300,
        seed=0,
    )
    result = train_long_range(run)
    assert not result.diverged and result.steps_run <= 400
    assert result.baseline == ADDING_BASELINE_MSE
    assert result.test_loss < 0.5 * ADDING_BASELINE_MSE
