"""rnnkit.cntk.convert: CNTK parameters (NumPy, CNTK's layout) into rnnkit cells, checked
against a NumPy transcription of CNTK's ``layers/blocks.py`` equations (LSTM with peepholes,
projection and stabilisers; GRU; RNNStep), in float64, over ragged sequences from a
non-zero initial state, forwards and backwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit import Fold, Recurrence, SequenceBatch
from rnnkit.cntk.convert import (
    dense_from_cntk,
    embedding_from_cntk,
    gru_from_cntk,
    lstm_from_cntk,
    model_from_cntk,
    rnn_step_from_cntk,
)

TOL = dict(rtol=1e-10, atol=1e-12)
LENGTHS = (5, 1, 3)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def stab(s: float | None) -> float:
    """CNTK's Stabilizer: beta = log(1 + exp(4 s)) / 4 (1 without a stabiliser)."""
    return 1.0 if s is None else float(np.log1p(np.exp(4.0 * s)) / 4.0)


def cntk_lstm(x, p, h, c, act=np.tanh):
    """blocks.py's LSTM step: (dh, dc, x) -> (h, c), CNTK's names and layout."""
    dhs, dcs = stab(p.get("dh")) * h, stab(p.get("dc")) * c
    proj4 = p["b"] + x @ p["W"] + dhs @ p["H"]
    it_proj, bit_proj, ft_proj, ot_proj = np.split(proj4, 4, axis=-1)

    def peep(z, cc, name):
        return z + p[name] * cc if "Ci" in p else z

    it = sigmoid(peep(it_proj, dcs, "Ci"))
    bit = it * act(bit_proj)
    ft = sigmoid(peep(ft_proj, dcs, "Cf"))
    ct = ft * c + bit
    ot = sigmoid(peep(ot_proj, stab(p.get("c")) * ct, "Co"))
    ht = ot * act(ct)
    out = stab(p.get("P_stab")) * ht @ p["P"] if "P" in p else ht
    return out, ct


def cntk_gru(x, p, h, act=np.tanh):
    """blocks.py's GRU step."""
    dhs = stab(p.get("dh")) * h
    projx3 = p["b"] + x @ p["W"]
    projh2 = dhs @ p["H"]
    xz, xr, xc = np.split(projx3, 3, axis=-1)
    hz, hr = np.split(projh2, 2, axis=-1)
    zt, rt = sigmoid(xz + hz), sigmoid(xr + hr)
    ct = act(xc + (dhs * rt) @ p["H1"])
    return (1 - zt) * ct + zt * dhs


def cntk_rnn(x, p, h, act=sigmoid):
    """blocks.py's RNNStep: activation(b + x W + h H)."""
    return act(p["b"] + x @ p["W"] + h @ p["H"])


def run_numpy(step, seqs, state, backwards=False):
    """Each sequence through ``step`` from ``state``; outputs per step and final outputs."""
    outs, last = [], []
    for seq in seqs:
        s = state
        rows = []
        order = range(len(seq) - 1, -1, -1) if backwards else range(len(seq))
        for t in order:
            s = step(seq[t], s)
            rows.append(s[0] if isinstance(s, tuple) else s)
        outs.append(np.stack(rows[::-1] if backwards else rows))
        last.append(rows[-1])
    return outs, np.stack(last)


def rnnkit_outputs(cell, seqs, state, backwards=False):
    x = SequenceBatch.from_list([torch.from_numpy(s) for s in seqs])
    outs = Recurrence(cell, go_backwards=backwards, initial_state=state)(x)
    last = Fold(cell, go_backwards=backwards, initial_state=state)(x)
    return [o.detach().numpy() for o in outs.to_list()], last.detach().numpy()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("stabilized", [False, True])
@pytest.mark.parametrize("backwards", [False, True])
def test_lstm_matches_cntk_equations(rng, peepholes, projection, stabilized, backwards):
    i, c = 3, 4
    s = 2 if projection else c
    p = {"W": rng.normal(size=(i, 4 * c)), "H": rng.normal(size=(s, 4 * c)) * 0.5}
    p["b"] = rng.normal(size=4 * c)
    options: dict = {}
    if peepholes:
        for name in ("Ci", "Cf", "Co"):
            p[name] = options[name] = rng.normal(size=c)
    if projection:
        p["P"] = options["P"] = rng.normal(size=(c, s))
    stabilizers = {}
    if stabilized:
        p["dh"], stabilizers["dh_stabilizer"] = 0.7, 0.7
        if peepholes:
            p["dc"], stabilizers["dc_stabilizer"] = 1.3, 1.3
            p["c"], stabilizers["c_stabilizer"] = 0.9, 0.9
        if projection:
            p["P_stab"], stabilizers["P_stabilizer"] = 1.1, 1.1
    cell = lstm_from_cntk(
        p["W"], p["H"], p["b"], stabilizers=stabilizers, dtype=torch.float64, **options
    )
    seqs = [rng.normal(size=(n, i)) for n in LENGTHS]
    h0, c0 = np.full(s, 0.1), np.full(c, 0.1)
    want, want_last = run_numpy(lambda x, st: cntk_lstm(x, p, *st), seqs, (h0, c0), backwards)
    got, got_last = rnnkit_outputs(cell, seqs, 0.1, backwards)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL)
    np.testing.assert_allclose(got_last, want_last, **TOL)


@pytest.mark.parametrize("stabilized", [False, True])
@pytest.mark.parametrize("backwards", [False, True])
def test_gru_matches_cntk_equations(rng, stabilized, backwards):
    i, c = 3, 4
    p = {
        "W": rng.normal(size=(i, 3 * c)),
        "H": rng.normal(size=(c, 2 * c)) * 0.5,
        "H1": rng.normal(size=(c, c)) * 0.5,
        "b": rng.normal(size=3 * c),
    }
    stabilizers = {}
    if stabilized:
        p["dh"], stabilizers["dh_stabilizer"] = 0.6, 0.6
    cell = gru_from_cntk(
        p["W"], p["H"], p["H1"], p["b"], stabilizers=stabilizers, dtype=torch.float64
    )
    assert cell.reset == "before"
    seqs = [rng.normal(size=(n, i)) for n in LENGTHS]
    want, want_last = run_numpy(lambda x, h: cntk_gru(x, p, h), seqs, np.full(c, 0.1), backwards)
    got, got_last = rnnkit_outputs(cell, seqs, 0.1, backwards)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL)
    np.testing.assert_allclose(got_last, want_last, **TOL)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_rnn_step_matches_cntk_equations(rng, activation):
    i, c = 3, 4
    p = {"W": rng.normal(size=(i, c)), "H": rng.normal(size=(c, c)) * 0.5, "b": rng.normal(size=c)}
    act = {"sigmoid": sigmoid, "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}[activation]
    cell = rnn_step_from_cntk(p["W"], p["H"], p["b"], activation=activation, dtype=torch.float64)
    seqs = [rng.normal(size=(n, i)) for n in LENGTHS]
    want, _ = run_numpy(lambda x, h: cntk_rnn(x, p, h, act), seqs, np.zeros(c))
    got, _ = rnnkit_outputs(cell, seqs, None)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL)


def test_dense_and_embedding_compute_x_times_w(rng):
    w, b, e = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=(5, 4))
    x = rng.normal(size=(6, 3))
    dense = dense_from_cntk(w, b, dtype=torch.float64)
    np.testing.assert_allclose(dense(torch.from_numpy(x)).detach().numpy(), x @ w + b, **TOL)
    ids = np.array([4, 0, 2])
    onehot = np.eye(5)[ids]
    table = embedding_from_cntk(e, dtype=torch.float64)
    np.testing.assert_allclose(table(torch.from_numpy(onehot)).detach().numpy(), e[ids], **TOL)


def test_model_from_cntk_is_the_solar_model(rng):
    """The book's Fold(LSTM(15)) >> Dense(1) from CNTK arrays, against the equations."""
    p = {"W": rng.normal(size=(1, 60)), "H": rng.normal(size=(15, 60)) * 0.3}
    p["b"] = rng.normal(size=60)
    w, b = rng.normal(size=(15, 1)), rng.normal(size=1)
    model = model_from_cntk(
        [("Fold(LSTM)", {**p, "initial_state": 0.1}), ("Dense", {"W": w, "b": b})],
        dtype=torch.float64,
    )
    seqs = [rng.normal(size=(n, 1)) for n in (13, 2, 7)]
    _, last = run_numpy(lambda x, st: cntk_lstm(x, p, *st), seqs, (np.full(15, 0.1),) * 2)
    x = SequenceBatch.from_list([torch.from_numpy(s) for s in seqs])
    np.testing.assert_allclose(model(x).detach().numpy(), last @ w + b, **TOL)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match=r"W, H, b: expected \[I, 4C\], \[S, 4C\] and \[4C\]"):
        lstm_from_cntk(np.zeros((2, 8)), np.zeros((2, 12)), np.zeros(8))
    with pytest.raises(ValueError, match="Ci, Cf, Co: expected all three"):
        lstm_from_cntk(np.zeros((2, 8)), np.zeros((2, 8)), np.zeros(8), Ci=np.zeros(2))
    with pytest.raises(ValueError, match=r"layers\[0\]: expected Recurrence"):
        model_from_cntk([("Fold(LSTMX)", {})])
    with pytest.raises(ValueError, match="stabilizers: expected names among"):
        gru_from_cntk(
            np.zeros((1, 6)),
            np.zeros((2, 4)),
            np.zeros((2, 2)),
            np.zeros(6),
            stabilizers={"x_stabilizer": 1.0},
        )
