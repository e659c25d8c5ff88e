"""CNTK's recurrent blocks (``rnnkit.cntk.blocks``) against CNTK's equations and its tests.

Two independent references:

- a NumPy transcription of microsoft/CNTK ``bindings/python/cntk/layers/blocks.py``
  (``_RecurrentBlock``: ``lstm``, ``gru``, ``rnn_step``, and ``Stabilizer``), in CNTK's own
  layout (``x @ W`` with ``W [I, G*C]``, LSTM blocks ``(i, g, f, o)``, GRU blocks
  ``(z, r, c)`` with ``H [S, 2C]`` and ``H1 [S, C]``), run on weights drawn at random and
  copied into the rnnkit cell through the layout mapping; float64 to 1e-10, float32 to 1e-5;
- CNTK's expected values from ``bindings/python/cntk/layers/tests/layers_test.py``
  (``test_recurrent_block``, ``test_recurrence``, ``test_layers_dense``,
  ``test_layers_embedding``, ``test_default_options``), with CNTK's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from rnnkit import Dense, Embedding, Fold, Recurrence, RecurrenceFrom, SequenceBatch
from rnnkit.cells import STABILIZER_INIT
from rnnkit.cntk.blocks import GRU, LSTM, RNNStep, glorot_uniform
from rnnkit.cntk.defaults import (
    default_options,
    default_options_for,
    default_override_or,
    resolve,
)

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
}
sigmoid = ACTIVATIONS["sigmoid"]


def beta(p: float | None) -> float:
    """CNTK's Stabilizer: ``log(1 + exp(4 p)) / 4`` (1 when the stabiliser is absent)."""
    return 1.0 if p is None else float(np.log1p(np.exp(4.0 * p)) / 4.0)


# ---------------------------------------------------------------- NumPy transcription


def np_lstm(xs, P, act, stab, h, c):
    """CNTK's ``lstm(dh, dc, x)`` over the steps ``xs [T, I]``; returns the outputs ``[T, S]``."""
    f_act = ACTIVATIONS[act]
    C = P["H"].shape[1] // 4
    out = []
    for x in xs:
        dhs, dcs = beta(stab.get("dh")) * h, beta(stab.get("dc")) * c
        proj4 = P["b"] + x @ P["W"] + dhs @ P["H"]
        it_p, bit_p, ft_p, ot_p = (proj4[k * C : (k + 1) * C] for k in range(4))
        peep = "Ci" in P
        it = sigmoid(it_p + P["Ci"] * dcs if peep else it_p)
        bit = it * f_act(bit_p)
        ft = sigmoid(ft_p + P["Cf"] * dcs if peep else ft_p)
        ct = ft * c + bit
        ot = sigmoid(ot_p + P["Co"] * (beta(stab.get("c")) * ct) if peep else ot_p)
        ht = ot * f_act(ct)
        h = (beta(stab.get("p")) * ht) @ P["P"] if "P" in P else ht
        c = ct
        out.append(h)
    return np.stack(out)


def np_gru(xs, P, act, stab, h):
    """CNTK's ``gru(dh, x)``."""
    f_act = ACTIVATIONS[act]
    C = P["H1"].shape[1]
    out = []
    for x in xs:
        dhs = beta(stab.get("dh")) * h
        projx3 = P["b"] + x @ P["W"]
        projh2 = dhs @ P["H"]
        zt = sigmoid(projx3[:C] + projh2[:C])
        rt = sigmoid(projx3[C : 2 * C] + projh2[C:])
        ct = f_act(projx3[2 * C :] + (dhs * rt) @ P["H1"])
        ht = (1 - zt) * ct + zt * dhs
        h = (beta(stab.get("p")) * ht) @ P["P"] if "P" in P else ht
        out.append(h)
    return np.stack(out)


def np_rnn_step(xs, P, act, stab, h):
    """CNTK's ``rnn_step(dh, x)``."""
    out = []
    for x in xs:
        dhs = beta(stab.get("dh")) * h
        ht = ACTIVATIONS[act](x @ P["W"] + dhs @ P["H"] + P["b"])
        h = (beta(stab.get("p")) * ht) @ P["P"] if "P" in P else ht
        out.append(h)
    return np.stack(out)


# ---------------------------------------------------------------- CNTK layout -> rnnkit


def _blocks(m: np.ndarray, order: list[int], parts: int) -> np.ndarray:
    """The column blocks of ``m [*, parts*C]`` reordered, as rows of the transpose."""
    blocks = np.split(m, parts, axis=-1)
    return np.concatenate([blocks[k].T for k in order], axis=0)


def _set(cell: Any, name: str, value: np.ndarray) -> None:
    p = getattr(cell, name)
    with torch.no_grad():
        p.copy_(torch.as_tensor(value, dtype=p.dtype).reshape(p.shape))


def load_lstm(cell: Any, P: dict, stab: dict) -> None:
    """CNTK's (i, g, f, o) blocks to torch's (i, f, g, o); one bias -> bias_ih, bias_hh = 0."""
    order = [0, 2, 1, 3]
    _set(cell, "weight_ih", _blocks(P["W"], order, 4))
    _set(cell, "weight_hh", _blocks(P["H"], order, 4))
    _set(cell, "bias_ih", _blocks(P["b"][None, :], order, 4)[:, 0])
    _set(cell, "bias_hh", np.zeros(cell.bias_hh.shape))
    for cntk, ours in (("Ci", "weight_ci"), ("Cf", "weight_cf"), ("Co", "weight_co")):
        if cntk in P:
            _set(cell, ours, P[cntk])
    if "P" in P:
        _set(cell, "weight_hr", P["P"].T)
    for k, v in stab.items():
        _set(cell, f"stabilizer_{k}", np.array([v]))


def load_gru(cell: Any, P: dict, stab: dict) -> None:
    """CNTK's (z, r, c) blocks to torch's (r, z, n); H (z, r) and H1 (c) are weight_hh."""
    _set(cell, "weight_ih", _blocks(P["W"], [1, 0, 2], 3))
    _set(cell, "weight_hh", np.concatenate([_blocks(P["H"], [1, 0], 2), P["H1"].T]))
    _set(cell, "bias_ih", _blocks(P["b"][None, :], [1, 0, 2], 3)[:, 0])
    _set(cell, "bias_hh", np.zeros(cell.bias_hh.shape))
    if "P" in P:
        _set(cell, "weight_hr", P["P"].T)
    for k, v in stab.items():
        _set(cell, f"stabilizer_{k}", np.array([v]))


def load_rnn(cell: Any, P: dict, stab: dict) -> None:
    _set(cell, "weight_ih", P["W"].T)
    _set(cell, "weight_hh", P["H"].T)
    _set(cell, "bias_ih", P["b"])
    _set(cell, "bias_hh", np.zeros(cell.bias_hh.shape))
    if "P" in P:
        _set(cell, "weight_hr", P["P"].T)
    for k, v in stab.items():
        _set(cell, f"stabilizer_{k}", np.array([v]))


def cntk_parameters(kind: str, n_in: int, S: int, C: int, projected: bool, peepholes: bool, rng):
    """Parameters in CNTK's shapes (``blocks.py``'s W, H, H1, b, Ci/Cf/Co, P)."""
    G, GH = {"LSTM": (4, 4), "GRU": (3, 2), "RNNStep": (1, 1)}[kind]
    P = {
        "W": rng.normal(0, 0.5, (n_in, G * C)),
        "H": rng.normal(0, 0.5, (S, GH * C)),
        "b": rng.normal(0, 0.5, (G * C,)),
    }
    if kind == "GRU":
        P["H1"] = rng.normal(0, 0.5, (S, C))
    if peepholes:
        P.update({k: rng.normal(0, 0.5, (C,)) for k in ("Ci", "Cf", "Co")})
    if projected:
        P["P"] = rng.normal(0, 0.5, (C, S))
    return P


def trained_stabilizers(kind: str, peepholes: bool, projected: bool, rng) -> dict[str, float]:
    """Values away from the initial one (beta != 1), as after training."""
    names = ["dh"]
    if kind == "LSTM" and peepholes:
        names += ["dc", "c"]
    if projected:
        names.append("p")
    return {n: float(rng.uniform(0.3, 1.6)) for n in names}


LENGTHS = [5, 2, 4]
INPUT = 3

CASES = [
    # kind, shape S, cell_shape C (None: S), activation, peepholes, stabilised
    ("LSTM", 4, None, "tanh", False, False),
    ("LSTM", 4, None, "tanh", True, False),
    ("LSTM", 3, 6, "tanh", True, False),  # projection down: cell larger than the output
    ("LSTM", 6, 3, "tanh", False, False),  # projection up: cell smaller than the output
    ("LSTM", 4, 4, "relu", True, True),  # square projection, relu, all four stabilisers
    ("LSTM", 4, None, "sigmoid", False, True),
    ("GRU", 4, None, "tanh", False, False),
    ("GRU", 4, None, "relu", False, True),
    ("GRU", 4, 4, "tanh", False, True),  # square projection and its stabiliser
    ("RNNStep", 4, None, "sigmoid", False, False),
    ("RNNStep", 3, 5, "tanh", False, True),
    ("RNNStep", 5, 2, "relu", False, False),
]


def _build(kind, S, C, act, peepholes, stabilised):
    if kind == "LSTM":
        return LSTM(
            S,
            cell_shape=C,
            activation=act,
            use_peepholes=peepholes,
            enable_self_stabilization=stabilised,
        )
    block = GRU if kind == "GRU" else RNNStep
    return block(S, cell_shape=C, activation=act, enable_self_stabilization=stabilised)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("kind", "S", "C", "act", "peepholes", "stabilised"), CASES)
def test_block_matches_cntk_equations(kind, S, C, act, peepholes, stabilised, dtype):
    rng = np.random.default_rng(hash((kind, S, C, act, peepholes, stabilised)) % 2**32)
    cell_size = S if C is None else C
    P = cntk_parameters(kind, INPUT, S, cell_size, C is not None, peepholes, rng)
    stab = trained_stabilizers(kind, peepholes, C is not None, rng) if stabilised else {}
    cell = _build(kind, S, C, act, peepholes, stabilised).to(dtype)
    seqs = [rng.normal(0, 1, (n, INPUT)) for n in LENGTHS]
    x = SequenceBatch.from_list([torch.as_tensor(s, dtype=dtype) for s in seqs])
    Recurrence(cell)(x)  # the first call materialises weight_ih [G*C, I]
    {"LSTM": load_lstm, "GRU": load_gru, "RNNStep": load_rnn}[kind](cell, P, stab)
    # initial states that differ from each other and from zero
    h0 = rng.normal(0, 0.5, (len(LENGTHS), S))
    c0 = rng.normal(0, 0.5, (len(LENGTHS), cell_size))
    state: Tensor | tuple[Tensor, ...]
    if kind == "LSTM":
        state = (torch.as_tensor(h0, dtype=dtype), torch.as_tensor(c0, dtype=dtype))
    else:
        state = torch.as_tensor(h0, dtype=dtype)
    with torch.no_grad():
        got = RecurrenceFrom(cell)(state, x).to_list()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for b, xs in enumerate(seqs):
        if kind == "LSTM":
            want = np_lstm(xs, P, act, stab, h0[b], c0[b])
        elif kind == "GRU":
            want = np_gru(xs, P, act, stab, h0[b])
        else:
            want = np_rnn_step(xs, P, act, stab, h0[b])
        np.testing.assert_allclose(got[b].double().numpy(), want, rtol=tol, atol=tol)


def test_trained_gru_stabilizer_is_not_a_weight_rescaling():
    """With beta != 1 the ``z ⊙ dhs`` term changes: no rescaling of weight_hh alone gives the
    same GRU (why the stabiliser is a parameter and not folded into the weights)."""
    rng = np.random.default_rng(3)
    P = cntk_parameters("GRU", INPUT, 4, 4, False, False, rng)
    xs = rng.normal(0, 1, (4, INPUT))
    h0 = rng.normal(0, 0.5, 4)
    stabilised = np_gru(xs, P, "tanh", {"dh": 1.3}, h0)
    b = beta(1.3)
    folded = dict(P, H=P["H"] * b, H1=P["H1"] * b)
    assert np.abs(np_gru(xs, folded, "tanh", {}, h0) - stabilised).max() > 1e-3


def test_stabilizers_start_at_one_and_are_trained():
    cell = LSTM(4, cell_shape=3, use_peepholes=True, enable_self_stabilization=True)
    names = sorted(n for n, _ in cell.named_parameters() if n.startswith("stabilizer"))
    assert names == ["stabilizer_c", "stabilizer_dc", "stabilizer_dh", "stabilizer_p"]
    for n in names:
        p = getattr(cell, n)
        assert p.requires_grad
        assert beta(p.detach().item()) == pytest.approx(1.0, abs=1e-7)  # CNTK's 0.99537863
    assert pytest.approx(0.99537863, abs=1e-8) == STABILIZER_INIT
    x = SequenceBatch.from_list([torch.randn(3, 2), torch.randn(2, 2)])
    Fold(cell)(x).sum().backward()
    assert all(getattr(cell, n).grad is not None and getattr(cell, n).grad.abs() > 0 for n in names)
    assert isinstance(cell.fused_kernel(), str)


# ---------------------------------------------------------------- CNTK's layers_test.py

# test_recurrent_block: block(5, init=0.1) over arange(16) as one sequence of 4 steps of 4.
RECURRENT_BLOCK_DATA = [
    (LSTM, 4, 4, [0.21532, 0.760161, 0.95975, 0.993661]),
    (GRU, 3, 2, [0.1903, 0.262537, 0.276712, 0.279545]),
    (RNNStep, 1, 1, [0.645656, 0.925727, 0.986114, 0.997249]),
]


@pytest.mark.parametrize(("block", "w_mult", "h_mult", "expected"), RECURRENT_BLOCK_DATA)
def test_cntk_recurrent_block(block, w_mult, h_mult, expected):
    cell = block(5, init=0.1)
    data = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    out = Recurrence(cell)(SequenceBatch.from_list([data])).to_list()[0]
    # CNTK: b (W_mult*5,), W (4, W_mult*5), H (5, H_mult*5); here transposed, GRU's H1 in
    # weight_hh and CNTK's one bias as bias_ih (bias_hh is 0)
    assert tuple(cell.bias_ih.shape) == (w_mult * 5,)
    assert tuple(cell.weight_ih.shape) == (w_mult * 5, 4)
    assert tuple(cell.weight_hh.shape) == (w_mult * 5 if block is GRU else h_mult * 5, 5)
    want = np.repeat(np.asarray(expected, dtype=np.float32)[:, None], 5, axis=1)
    np.testing.assert_array_almost_equal(out.detach().numpy(), want, decimal=6)


# test_recurrence: GRU(5, init=0.05) over arange(25) as 5 steps of 5, from 0.1
RECURRENCE_EXPECTED = [0.239151, 0.338713, 0.367456, 0.375577, 0.377891]


def test_cntk_recurrence_gru_constant_initial_state():
    x = SequenceBatch.from_list([torch.arange(25, dtype=torch.float32).reshape(5, 5)])
    want = np.repeat(np.asarray(RECURRENCE_EXPECTED, np.float32)[:, None], 5, axis=1)
    out = Recurrence(GRU(5, init=0.05), initial_state=0.1)(x).to_list()[0]
    np.testing.assert_array_almost_equal(out.detach().numpy(), want, decimal=6)
    # RecurrenceFrom with the state as data gives the same
    out = RecurrenceFrom(GRU(5, init=0.05))(torch.full((1, 5), 0.1), x).to_list()[0]
    np.testing.assert_array_almost_equal(out.detach().numpy(), want, decimal=6)


def test_cntk_dense():
    """test_layers_dense: Dense(2) and Dense(2, sigmoid) on [-1, 1], and two Dense(3)."""
    dat = torch.tensor([[-1.0, 1.0]])
    p = Dense(out_features=2)
    res = p(dat)
    npout = dat.numpy() @ p.weight.detach().numpy().T + p.bias.detach().numpy()
    np.testing.assert_array_equal(res.detach().numpy(), npout)
    p = Dense(out_features=2, activation=torch.sigmoid)
    res = p(dat)
    z = dat.numpy() @ p.weight.detach().numpy().T + p.bias.detach().numpy()
    np.testing.assert_array_almost_equal(res.detach().numpy(), sigmoid(z), decimal=7)
    p, q = Dense(out_features=3), Dense(out_features=3)
    res = (p >> q)(dat)
    w1, b1 = p.weight.detach().numpy(), p.bias.detach().numpy()
    w2, b2 = q.weight.detach().numpy(), q.bias.detach().numpy()
    np.testing.assert_array_almost_equal(
        res.detach().numpy(), (dat.numpy() @ w1.T + b1) @ w2.T + b2, decimal=6
    )
    assert (p.in_features, q.in_features) == (2, 3)


def test_cntk_embedding():
    """test_layers_embedding: Embedding(3) on the dense input [-1, 1] is ``x @ E``, E [2, 3];
    with CNTK's table [[1, 3, 2], [3, 4, 1]] it is [2, 1, -1]."""
    dat = torch.tensor([[-1.0, 1.0]])
    e = Embedding(embedding_dim=3)
    res = e(dat)
    assert tuple(e.weight.shape) == (2, 3)
    np.testing.assert_array_equal(res.detach().numpy(), dat.numpy() @ e.weight.detach().numpy())
    with torch.no_grad():
        e.weight.copy_(torch.tensor([[1.0, 3.0, 2.0], [3.0, 4.0, 1.0]]))
    np.testing.assert_array_equal(e(dat).detach().numpy(), [[2.0, 1.0, -1.0]])
    with pytest.raises(ValueError, match="embedding_dim: expected a positive integer"):
        Embedding()


def test_cntk_default_options():
    """test_default_options, with resolve() for get_default_override."""

    thirteen = default_override_or(13)

    def Test(some_param=thirteen):
        return resolve(Test, some_param=some_param)

    def other():
        return None

    assert Test() == 13
    assert Test(42) == 42
    with default_options(some_param=1968):
        assert Test() == 1968
        assert Test(some_param=1976) == 1976
        with default_options_for(Test, some_param=2017):
            assert Test() == 2017
            assert Test(some_param=123) == 123
    with default_options_for(other, some_param=2017):
        assert Test() == 13
        assert Test(some_param=124) == 124


def test_blocks_read_default_options():
    with default_options(init=0.1, init_bias=0.5, use_peepholes=True):
        lstm = LSTM(3)
        with default_options_for(GRU, activation="relu"):
            gru, rnn = GRU(3), RNNStep(3)
    x = SequenceBatch.from_list([torch.ones(2, 2)])
    for cell in (lstm, gru, rnn):
        Recurrence(cell)(x)
        assert torch.all(cell.weight_ih == 0.1) and torch.all(cell.weight_hh == 0.1)
        assert torch.all(cell.bias_ih == 0.5) and torch.all(cell.bias_hh == 0)
    assert lstm.peepholes and torch.all(lstm.weight_ci == 0.1)
    assert (gru.activation, rnn.nonlinearity) == ("relu", "sigmoid")
    assert not LSTM(3).peepholes  # outside the block, CNTK's defaults again
    with pytest.raises(TypeError, match="GRU\\(\\) has no option named 'use_peepholes'"):
        resolve(GRU, use_peepholes=True)


def test_glorot_initialisation_and_its_bounds():
    torch.manual_seed(0)
    cell = LSTM(50, use_peepholes=True)
    Recurrence(cell)(SequenceBatch.from_list([torch.ones(1, 30)]))
    for name, fan_in, fan_out in [("weight_ih", 30, 200), ("weight_hh", 50, 200)]:
        w = getattr(cell, name).detach()
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert float(w.abs().max()) <= bound
        assert float(w.std()) == pytest.approx(bound / 3**0.5, rel=0.05)  # uniform's std
    assert float(cell.weight_ci.detach().abs().max()) <= (6 / 51) ** 0.5
    w = torch.empty(10, 20)
    glorot_uniform(w)
    assert float(w.abs().max()) <= (6 / 30) ** 0.5


def test_block_arguments_are_checked():
    with pytest.raises(ValueError, match="GRU: cell_shape: .* expected cell_shape equal to"):
        GRU(4, cell_shape=6)
    with pytest.raises(ValueError, match="LSTM: activation: expected tanh, relu or sigmoid"):
        LSTM(4, activation=torch.exp)
    with pytest.raises(ValueError, match=r"RNNStep: shape: expected a vector shape"):
        RNNStep((2, 3))
    with pytest.raises(ValueError, match="LSTM: init: expected an initialiser"):
        LSTM(4, init="ones")
    assert LSTM((4,)).hidden_size == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: LSTM(
            4, cell_shape=6, activation="relu", use_peepholes=True, enable_self_stabilization=True
        ),
        lambda: GRU(4, cell_shape=4, enable_self_stabilization=True),
        lambda: RNNStep(3, cell_shape=5, activation=torch.tanh, enable_self_stabilization=True),
    ],
)
def test_blocks_save_and_load_with_their_options(tmp_path, make):
    from rnnkit import load, save

    cell = make()
    x = SequenceBatch.from_list([torch.randn(4, 2), torch.randn(3, 2)])
    layer = Recurrence(cell)
    y = layer(x)
    with torch.no_grad():  # trained stabilisers, away from their initial value
        for name, p in cell.named_parameters():
            if name.startswith("stabilizer"):
                p.fill_(0.7)
    y = layer(x)
    save(layer, tmp_path / "m")
    loaded = load(tmp_path / "m")
    torch.testing.assert_close(loaded(x).data, y.data, rtol=0, atol=0)
    for option in ("proj_size", "self_stabilization"):
        assert getattr(loaded.cell, option) == getattr(cell, option)
