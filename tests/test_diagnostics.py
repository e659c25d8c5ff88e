"""gradient_flow against hand derivations and plain per-sequence autograd loops.

Oracles: for a linear recurrence the analytic ``dL/dh_t = (W^T)^(L-1-t) v`` (and its
backward recursion with a loss at every step), computed in NumPy; for LSTM/GRU layers
(stacked, bidirectional, ragged) a plain Python loop over each sequence alone with
``torch.autograd.grad`` on every state it produced; gate activations against the NumPy
forward passes of ``rnnkit.testing.reference``; for a Recursive a per-node recursion. All in
float64, ``rtol=1e-6`` (the gate means 1e-9 absolute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_sequences
from torch import Tensor, nn

from rnnkit import (
    Bidirectional,
    Dense,
    Fold,
    GRUCell,
    LSTMCell,
    Recurrence,
    RNNCell,
    SequenceBatch,
)
from rnnkit.diagnostics import GradientFlow, gradient_flow
from rnnkit.recursive import Recursive, RecursiveCell
from rnnkit.testing.reference import CellParams, gru_forward, lstm_forward, rnn_forward
from rnnkit.trees import Tree, TreeBatch

RTOL = 1e-6
LENGTHS = [5, 2, 7, 4]  # ragged, not sorted


class LinearCell(nn.Module):
    """``h' = W_ih x + W h`` (no nonlinearity), split like rnnkit's cells."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.randn(hidden_size, input_size, dtype=torch.float64))
        self.weight_hh = nn.Parameter(
            0.6 * torch.randn(hidden_size, hidden_size, dtype=torch.float64) / hidden_size**0.5
        )

    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.zeros(batch_size, self.hidden_size, dtype=torch.float64)

    def input_projection(self, x: Tensor) -> Tensor:
        return x @ self.weight_ih.T

    def step(self, px: Tensor, state: Tensor) -> Tensor:
        return px + state @ self.weight_hh.T

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        if state is None:
            state = self.initial_state(x.shape[0])
        return self.step(self.input_projection(x), state)


def ragged(
    seed: int, size: int, lengths: list[int] = LENGTHS
) -> tuple[list[Tensor], SequenceBatch]:
    seqs = random_sequences(lengths, size, seed=seed, dtype=torch.float64)
    return seqs, SequenceBatch.from_list(seqs)


def mean_over_active(per_sequence: list[np.ndarray]) -> np.ndarray:
    """Mean over the sequences that have step t of per-sequence values ``[L_i]``."""
    steps = max(len(v) for v in per_sequence)
    return np.array([np.mean([v[t] for v in per_sequence if len(v) > t]) for t in range(steps)])


# ------------------------------------------------------------------- analytic (linear RNN)


def test_fold_of_linear_rnn_matches_powers_of_w_transpose() -> None:
    torch.manual_seed(0)
    cell = LinearCell(3, 4)
    _, x = ragged(1, 3)
    v = torch.randn(len(LENGTHS), 4, dtype=torch.float64)
    flow = gradient_flow(Fold(cell), x, lambda h: (h * v).sum())
    w = cell.weight_hh.detach().numpy()
    expected = [
        np.array(
            [
                np.linalg.norm(np.linalg.matrix_power(w.T, n - 1 - t) @ v[i].numpy())
                for t in range(n)
            ]
        )
        for i, n in enumerate(LENGTHS)
    ]
    (layer,) = flow.layers
    np.testing.assert_allclose(layer.grad_norm, mean_over_active(expected), rtol=RTOL)
    assert layer.active.tolist() == [4, 4, 3, 3, 2, 1, 1]
    assert layer.steps.tolist() == list(range(7)) and layer.axis == "step"


def test_recurrence_with_a_loss_at_every_step_follows_the_backward_recursion() -> None:
    torch.manual_seed(1)
    cell = LinearCell(2, 3)
    _, x = ragged(2, 2)
    u = [torch.randn(n, 3, dtype=torch.float64) for n in LENGTHS]
    u_packed = SequenceBatch.from_list(u).data
    flow = gradient_flow(Recurrence(cell), x, lambda out: (out.data * u_packed).sum())
    w = cell.weight_hh.detach().numpy()
    expected = []
    for ui in u:  # g_t = u_t + W^T g_{t+1}
        g = np.zeros(3)
        norms = []
        for t in reversed(range(ui.shape[0])):
            g = ui[t].numpy() + w.T @ g
            norms.append(np.linalg.norm(g))
        expected.append(np.array(norms[::-1]))
    np.testing.assert_allclose(flow.layers[0].grad_norm, mean_over_active(expected), rtol=RTOL)


# ------------------------------------------------------------------- plain loops (LSTM, GRU)


def plain_states(cell: nn.Module, seq: Tensor, backwards: bool = False) -> list[tuple[Tensor, ...]]:
    """Run ``cell`` over one sequence ([T, I]) step by step; the states in the order run."""
    state = None
    states = []
    order = range(seq.shape[0] - 1, -1, -1) if backwards else range(seq.shape[0])
    for t in order:
        out = cell(seq[t : t + 1], state)
        state = out
        states.append(out if isinstance(out, tuple) else (out,))
    return states


def grad_norms(
    loss: Tensor, states: list[list[tuple[Tensor, ...]]], k: int = 0
) -> list[np.ndarray]:
    """Per sequence, ``||dL/dstate_k||`` at every step of ``states``."""
    flat = [s[k] for seq in states for s in seq]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    out, i = [], 0
    for seq in states:
        norms = []
        for _ in seq:
            g = grads[i]
            norms.append(0.0 if g is None else float(g.norm()))
            i += 1
        out.append(np.array(norms))
    return out


def test_stacked_gru_then_lstm_fold_matches_plain_loops_and_numpy_gates() -> None:
    torch.manual_seed(2)
    gru, lstm = GRUCell(3, 5).double(), LSTMCell(5, 4).double()
    dense = Dense(4, 1).double()
    model = Recurrence(gru) >> Fold(lstm) >> dense
    seqs, x = ragged(3, 3)
    target = torch.randn(len(LENGTHS), 1, dtype=torch.float64)
    flow = gradient_flow(model, x, lambda out: ((out - target) ** 2).sum())
    assert [la.name for la in flow.layers] == ["layers.0", "layers.1"]
    assert [la.kind for la in flow.layers] == ["Recurrence(GRUCell)", "Fold(LSTMCell)"]

    gru_states = [plain_states(gru, s) for s in seqs]
    lstm_states = [plain_states(lstm, torch.cat([st[0] for st in seq])) for seq in gru_states]
    out = dense(torch.cat([seq[-1][0] for seq in lstm_states]))
    loss = ((out - target) ** 2).sum()
    np.testing.assert_allclose(flow.loss, float(loss.detach()), rtol=1e-12)
    first, second = flow.layers
    np.testing.assert_allclose(
        first.grad_norm, mean_over_active(grad_norms(loss, gru_states)), rtol=RTOL
    )
    np.testing.assert_allclose(
        second.grad_norm, mean_over_active(grad_norms(loss, lstm_states)), rtol=RTOL
    )
    np.testing.assert_allclose(
        second.state_grad_norms[1], mean_over_active(grad_norms(loss, lstm_states, k=1)), rtol=RTOL
    )

    def params(cell: nn.Module) -> CellParams:
        return CellParams(
            *(
                p.detach().numpy()
                for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            )
        )

    gru_traces = [gru_forward(params(gru), s.numpy()) for s in seqs]
    lstm_inputs = [torch.cat([st[0] for st in seq]).detach().numpy() for seq in gru_states]
    lstm_traces = [lstm_forward(params(lstm), xi) for xi in lstm_inputs]
    for gate, field in (("reset", "r"), ("update", "z")):
        expected = mean_over_active([getattr(t, field).mean(axis=1) for t in gru_traces])
        np.testing.assert_allclose(first.activations[gate], expected, rtol=0, atol=1e-9)
    for gate, field in (("input", "i"), ("forget", "f"), ("output", "o")):
        expected = mean_over_active([getattr(t, field).mean(axis=1) for t in lstm_traces])
        np.testing.assert_allclose(second.activations[gate], expected, rtol=0, atol=1e-9)


def test_bidirectional_lstm_in_a_sequential_matches_plain_loops_both_ways() -> None:
    torch.manual_seed(3)
    fwd, bwd = LSTMCell(2, 3).double(), LSTMCell(2, 3).double()
    model = Bidirectional(fwd, bwd) >> Dense(6, 1).double()
    seqs, x = ragged(4, 2)
    flow = gradient_flow(model, x, lambda out: (out.data**2).sum())
    names = [la.name for la in flow.layers]
    assert names == ["layers.0.forward_layer", "layers.0.backward_layer"]
    assert [la.go_backwards for la in flow.layers] == [False, True]

    f_states = [plain_states(fwd, s) for s in seqs]
    b_states = [plain_states(bwd, s, backwards=True) for s in seqs]
    dense = model[1]
    loss = torch.zeros((), dtype=torch.float64)
    for fs, bs in zip(f_states, b_states, strict=True):
        h = torch.cat([torch.cat([st[0] for st in fs]), torch.cat([st[0] for st in bs[::-1]])], 1)
        loss = loss + (dense(h) ** 2).sum()
    np.testing.assert_allclose(flow.loss, float(loss.detach()), rtol=1e-12)
    for layer, states in zip(flow.layers, (f_states, b_states), strict=True):
        np.testing.assert_allclose(
            layer.grad_norm, mean_over_active(grad_norms(loss, states)), rtol=RTOL
        )


def test_rnn_slope_is_the_derivative_of_the_nonlinearity() -> None:
    torch.manual_seed(4)
    cell = RNNCell(2, 3).double()
    seqs, x = ragged(5, 2)
    flow = gradient_flow(Fold(cell), x, lambda h: h.sum())
    params = CellParams(
        *(p.detach().numpy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    )
    slopes = [(1 - rnn_forward(params, s.numpy()).h[1:] ** 2).mean(axis=1) for s in seqs]
    np.testing.assert_allclose(
        flow.layers[0].activations["slope"], mean_over_active(slopes), rtol=0, atol=1e-9
    )


# ------------------------------------------------------------------- trees


def test_recursive_reports_the_mean_gradient_norm_per_height() -> None:
    torch.manual_seed(5)
    size = 3
    cell = RecursiveCell(size, size).double()

    def leaf() -> Tree:
        return Tree(value=torch.randn(size, dtype=torch.float64))

    trees = [
        Tree(None, [Tree(None, [leaf(), leaf()]), leaf()]),
        Tree(None, [leaf(), leaf()]),
        Tree(None, [Tree(None, [leaf(), Tree(None, [leaf(), leaf()])]), leaf()]),
    ]
    batch = TreeBatch.from_trees(trees)
    assert batch.inputs is not None
    inputs = batch.inputs.clone().requires_grad_(True)
    v = torch.randn(len(trees), size, dtype=torch.float64)
    model = Recursive(cell)
    flow = gradient_flow(
        model, (batch, inputs), lambda states: (states.index_select(0, batch.roots) * v).sum()
    )
    (layer,) = flow.layers
    assert layer.axis == "height" and layer.kind == "Recursive(RecursiveCell)"

    # Per-node recursion over the batch's own numbering (children before parents).
    states: list[Tensor] = []
    for j in range(batch.num_nodes):
        kids = batch.children[j, : int(batch.num_children[j])].tolist()
        if not kids:
            states.append(inputs[j : j + 1])
            continue
        stacked = torch.stack([states[k][0] for k in kids] + [torch.zeros(size)] * (2 - len(kids)))
        states.append(cell(inputs[j : j + 1], stacked.unsqueeze(0), torch.ones(1, 2).bool()))
    loss = (torch.cat([states[int(r)] for r in batch.roots]) * v).sum()
    grads = torch.autograd.grad(loss, states)
    heights = batch.heights.tolist()
    expected = [
        np.mean([float(g.norm()) for g, h in zip(grads, heights, strict=True) if h == height])
        for height in range(batch.height + 1)
    ]
    np.testing.assert_allclose(layer.grad_norm, expected, rtol=RTOL)
    assert layer.active.tolist() == [heights.count(h) for h in range(batch.height + 1)]


# ------------------------------------------------------------------- side effects, errors, plot


def test_the_model_is_left_as_it_was() -> None:
    cell = LSTMCell(2, 3)
    layer = Fold(cell)
    model = layer >> Dense(3, 1)
    _, x = ragged(6, 2)
    x = x.with_data(x.data.float())
    gradient_flow(model, x, lambda out: out.sum())
    assert layer.backend == "auto"
    assert "_run" not in vars(layer) and "step" not in vars(cell)
    assert all(p.grad is None for p in model.parameters())


def test_errors_name_what_is_wrong() -> None:
    _, x = ragged(7, 2)
    with pytest.raises(ValueError, match="at least one Recurrence"):
        gradient_flow(Dense(2, 1).double(), x, lambda out: out.data.sum())
    with pytest.raises(TypeError, match="scalar tensor"):
        gradient_flow(Fold(RNNCell(2, 3).double()), x, lambda out: out)
    frozen = Fold(RNNCell(2, 3).double()).requires_grad_(False)
    with pytest.raises(ValueError, match="needs a gradient"):
        gradient_flow(frozen, x, lambda out: out.sum())


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    torch.manual_seed(8)
    model = Recurrence(GRUCell(2, 4)) >> Fold(RNNCell(4, 4)) >> Dense(4, 1)
    _, x = ragged(8, 2)
    flow = gradient_flow(model, x.with_data(x.data.float()), lambda out: out.sum())
    assert isinstance(flow, GradientFlow)
    path = flow.plot(tmp_path / "flow.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (560, 448)  # 7 x 5.6 inches at 80 dpi: two panels (gates)


def test_diagnose_run_reproduces_the_loss_on_the_runs_validation_data(tmp_path: Path) -> None:
    """``rnnkit diagnose`` on a solar run: the loss it differentiates is the saved model's
    mean squared error on the first 200 sequences of the validation file, computed by hand."""
    pytest.importorskip("matplotlib")
    from conftest import shared_data

    from rnnkit.cli import main
    from rnnkit.data.solar import book_examples
    from rnnkit.recipes.harness import diagnose_run
    from rnnkit.saving import load

    folder = shared_data("cntk-book")
    argv = ["solar", "--epochs", "1", "--epoch-size", "200", "--threads", "1", "--quiet"]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    flow = diagnose_run(tmp_path / "run", tmp_path / "flow.png")
    examples = book_examples(folder / "solar_val.ctf")[:200]
    model = load(tmp_path / "run")
    with torch.no_grad():
        out = model(SequenceBatch.from_list([e["features"] for e in examples]))
    target = torch.cat([e["target"] for e in examples])
    np.testing.assert_allclose(flow.loss, float(((out - target) ** 2).mean()), rtol=1e-5)
    assert (tmp_path / "flow.png").stat().st_size > 0
    assert flow.layers[0].steps.tolist() == list(range(max(len(e["features"]) for e in examples)))
