"""Cells against torch.nn's cells with copied weights, hand-written equations, and gradcheck."""

import pytest
import torch
from torch import nn

from rnnkit import GRUCell, GRUDCell, LSTMCell, MinGRUCell, Recurrence, RNNCell, SequenceBatch
from rnnkit.cells import Cell, FusedKernel, check_cell

TOL = {"atol": 1e-6, "rtol": 1e-5}  # float32


def _copy(src: nn.Module, dst: nn.Module, suffix: str = "") -> None:
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
            if hasattr(dst, name + suffix) and getattr(src, name) is not None:
                getattr(dst, name + suffix).copy_(getattr(src, name))


def _inputs(b=4, i=3, h=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, i, generator=g),
        torch.randn(b, h, generator=g),
        torch.randn(b, h, generator=g),
    )


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell_equals_torch(nonlinearity):
    torch.manual_seed(1)
    ours, theirs = (
        RNNCell(3, 5, nonlinearity=nonlinearity),
        nn.RNNCell(3, 5, nonlinearity=nonlinearity),
    )
    _copy(ours, theirs)
    x, h, _ = _inputs()
    torch.testing.assert_close(ours(x, h), theirs(x, h), **TOL)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_rnn_sigmoid_cell_is_cntk_rnnstep():
    cell = RNNCell(3, 5, nonlinearity="sigmoid")
    x, h, _ = _inputs()
    want = torch.sigmoid(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
    torch.testing.assert_close(cell(x, h), want, **TOL)


def test_lstm_cell_equals_torch():
    torch.manual_seed(2)
    ours, theirs = LSTMCell(3, 5), nn.LSTMCell(3, 5)
    _copy(ours, theirs)
    x, h, c = _inputs()
    for got, want in zip(ours(x, (h, c)), theirs(x, (h, c)), strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_lstm_projection_equals_torch_lstm():
    torch.manual_seed(3)
    ours, theirs = LSTMCell(3, 5, proj_size=2), nn.LSTM(3, 5, proj_size=2)
    _copy(ours, theirs, suffix="_l0")
    x, _, c = _inputs()
    h = torch.randn(4, 2)
    _, (h_n, c_n) = theirs(x.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0)))
    got_h, got_c = ours(x, (h, c))
    torch.testing.assert_close(got_h, h_n[0], **TOL)
    torch.testing.assert_close(got_c, c_n[0], **TOL)
    assert ours.hidden_size == 2 and got_c.shape == (4, 5)


def test_lstm_peepholes_equal_equations():
    cell = LSTMCell(3, 5, peepholes=True)
    x, h, c = _inputs()
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, 1)
    i = torch.sigmoid(i + cell.weight_ci * c)
    f = torch.sigmoid(f + cell.weight_cf * c)
    c2 = f * c + i * torch.tanh(g)
    h2 = torch.sigmoid(o + cell.weight_co * c2) * torch.tanh(c2)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c2, **TOL)
    torch.testing.assert_close(got_h, h2, **TOL)


def test_lstm_layer_norm_equals_equations():
    cell = LSTMCell(3, 5, layer_norm=True)
    with torch.no_grad():  # non-trivial gains and biases so that each one matters
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, h, c = _inputs()

    def ln(v, mod):
        mean, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-5) * mod.weight + mod.bias

    gates = ln(x @ cell.weight_ih.T + cell.bias_ih, cell.layer_norm_ih) + ln(
        h @ cell.weight_hh.T + cell.bias_hh, cell.layer_norm_hh
    )
    i, f, g, o = gates.chunk(4, 1)
    c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h2 = torch.sigmoid(o) * torch.tanh(ln(c2, cell.layer_norm_c))
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c2, **TOL)
    torch.testing.assert_close(got_h, h2, **TOL)


def test_gru_after_equals_torch():
    torch.manual_seed(4)
    ours, theirs = GRUCell(3, 5), nn.GRUCell(3, 5)
    _copy(ours, theirs)
    x, h, _ = _inputs()
    torch.testing.assert_close(ours(x, h), theirs(x, h), **TOL)


def test_gru_before_equals_cntk_equation():
    cell = GRUCell(3, 5, reset="before")
    x, h, _ = _inputs()
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + (r * h) @ w_hn.T + b_hn)
    torch.testing.assert_close(cell(x, h), (1 - z) * n + z * h, **TOL)
    # and it really differs from the 'after' form with the same weights
    after = GRUCell(3, 5)
    _copy(cell, after)
    assert not torch.allclose(after(x, h), cell(x, h), atol=1e-4)


CELLS = [
    lambda: RNNCell(3, 4),
    lambda: RNNCell(3, 4, nonlinearity="sigmoid"),
    lambda: LSTMCell(3, 4),
    lambda: LSTMCell(3, 4, proj_size=2, peepholes=True),
    lambda: LSTMCell(3, 4, layer_norm=True),
    lambda: GRUCell(3, 4),
    lambda: GRUCell(3, 4, reset="before", bias=False),
]


@pytest.mark.parametrize("make", CELLS)
def test_gradcheck_every_cell(make):
    cell = make().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    state = tuple(
        (torch.randn_like(s) * 0.5).requires_grad_()
        for s in (
            cell.initial_state(2)
            if isinstance(cell.initial_state(2), tuple)
            else (cell.initial_state(2),)
        )
    )

    def f(x, *state):
        out = cell(x, state if len(state) > 1 else state[0])
        return out if isinstance(out, tuple) else (out,)

    assert torch.autograd.gradcheck(f, (x, *state))
    assert isinstance(cell, Cell)


def test_cell_options_are_checked():
    with pytest.raises(ValueError, match="nonlinearity: expected one of .* found 'gelu'"):
        RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="reset: expected 'after' or 'before', found 'middle'"):
        GRUCell(3, 4, reset="middle")
    with pytest.raises(ValueError, match="proj_size: .* found -1"):
        LSTMCell(3, 4, proj_size=-1)
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 3\], found \(2, 5\)"):
        LSTMCell(3, 4)(torch.zeros(2, 5))


def test_protocol_check_names_what_is_missing():
    with pytest.raises(TypeError, match="found Linear without initial_state, hidden_size"):
        check_cell(nn.Linear(2, 2))


def _constant_grud():
    cell = GRUDCell(1, 1, x_mean=torch.tensor([2.0]))
    with torch.no_grad():
        for name, value in [
            ("weight_ih", 0.5),
            ("weight_hh", 0.5),
            ("weight_mh", 0.5),
            ("bias_ih", 0.0),
            ("weight_decay_x", 1.0),
            ("bias_decay_x", 0.0),
            ("weight_decay_h", 1.0),
            ("bias_decay_h", 0.0),
        ]:
            getattr(cell, name).fill_(value)
    return cell


def test_grud_golden_numbers_by_hand():
    import math

    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    cell = _constant_grud()
    # step 1: x unobserved (m=0), 1 time unit since the last observation; h0=0, x_last=mean=2
    # γ_x = e^-1, x̂ = γ_x*2 + (1-γ_x)*2 = 2; ĥ = 0; r = z = σ(0.5*2) ; n = tanh(0.5*2)
    h1 = sig(1.0) * math.tanh(1.0)
    # step 2: x=4 observed, δ=2: ĥ = e^-2 h1; x̂ = 4; V m = 0.5
    hh = math.exp(-2.0) * h1
    r2 = sig(0.5 * 4 + 0.5 * hh + 0.5)
    z2 = sig(0.5 * 4 + 0.5 * hh + 0.5)
    n2 = math.tanh(0.5 * 4 + 0.5 * r2 * hh + 0.5)
    h2 = (1 - z2) * hh + z2 * n2
    # step 3: unobserved again after 3 units: x̂ = γ_x*4 + (1-γ_x)*2 with γ_x = e^-3
    g3 = math.exp(-3.0)
    xh = g3 * 4 + (1 - g3) * 2
    hh3 = math.exp(-3.0) * h2
    r3 = sig(0.5 * xh + 0.5 * hh3)
    z3 = r3
    n3 = math.tanh(0.5 * xh + 0.5 * r3 * hh3)
    h3 = (1 - z3) * hh3 + z3 * n3
    values = torch.tensor([[float("nan")], [4.0], [float("nan")]])
    mask = torch.tensor([[0.0], [1.0], [0.0]])
    delta = torch.tensor([[1.0], [2.0], [3.0]])
    seq = GRUDCell.pack_inputs(values, mask, delta)
    out, (h, x_last) = Recurrence(cell).with_final_state(SequenceBatch.from_list([seq]))
    torch.testing.assert_close(
        out.data.squeeze(1), torch.tensor([h1, h2, h3]), atol=1e-6, rtol=1e-6
    )
    assert x_last.item() == 4.0
    assert h.item() == out.data[-1].item()


def test_grud_backends_agree_on_ragged_batch_and_gradcheck():
    torch.manual_seed(10)
    cell = GRUDCell(2, 3, x_mean=torch.tensor([0.5, -1.0])).double()
    g = torch.Generator().manual_seed(0)
    seqs = []
    for n in (4, 1, 6):
        values = torch.randn(n, 2, generator=g, dtype=torch.float64)
        mask = (torch.rand(n, 2, generator=g) > 0.4).double()
        delta = torch.rand(n, 2, generator=g, dtype=torch.float64) * 3
        seqs.append(GRUDCell.pack_inputs(values, mask, delta))
    x = SequenceBatch.from_list(seqs)
    a = Recurrence(cell, backend="loop")(x).data
    b = Recurrence(cell, backend="reference")(x).data
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    inputs = torch.cat(seqs)[:3].requires_grad_()
    state = (
        torch.randn(3, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda x, h, xl: cell(x, (h, xl)), (inputs, *state))


def test_grud_refuses_bad_shapes_and_means():
    with pytest.raises(ValueError, match=r"mask and delta: expected the shape of values \(3, 2\)"):
        GRUDCell.pack_inputs(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x_mean: expected 2 finite training means"):
        GRUDCell(2, 3, x_mean=torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize(
    "make,answer",
    [
        (lambda: RNNCell(3, 4), FusedKernel("rnn_tanh")),
        (lambda: RNNCell(3, 4, nonlinearity="relu"), FusedKernel("rnn_relu")),
        (lambda: RNNCell(3, 4, nonlinearity="sigmoid"), "a sigmoid RNNCell"),
        (lambda: LSTMCell(3, 4), FusedKernel("lstm")),
        (lambda: LSTMCell(3, 4, bias=False), FusedKernel("lstm")),
        (lambda: LSTMCell(3, 4, peepholes=True), "an LSTMCell with peepholes, layer_norm or"),
        (lambda: LSTMCell(3, 4, proj_size=2), "an LSTMCell with peepholes, layer_norm or"),
        (lambda: GRUCell(3, 4), FusedKernel("gru")),
        (lambda: GRUCell(3, 4, reset="before"), "a GRUCell with reset='before'"),
        (lambda: MinGRUCell(3, 4), "MinGRUCell, which has no fused kernel"),
        (lambda: GRUDCell(1, 4), "GRUDCell, which has no fused kernel"),
    ],
)
def test_cells_declare_their_fused_kernel(make, answer):
    got = make().fused_kernel()
    if isinstance(answer, FusedKernel):
        assert got == answer
        assert callable(getattr(torch._VF, got.name))
        assert got.pair == (got.name == "lstm")
    else:
        assert isinstance(got, str) and got.startswith(answer)


@pytest.mark.parametrize("method", ["forward", "input_projection", "step"])
@pytest.mark.parametrize("base", [RNNCell, LSTMCell, GRUCell])
def test_a_subclass_that_redefines_the_computation_loses_the_kernel(base, method):
    def same(self, *args, **kwargs):  # the same result, but the kernel cannot know that
        return getattr(base, method)(self, *args, **kwargs)

    changed = type("Changed", (base,), {method: same})
    assert changed(3, 4).fused_kernel() == f"Changed, which redefines {base.__name__}.{method}"
    # the initial state is no part of the kernel: the engine asks the cell for it
    own_start = type(
        "OwnStart", (base,), {"initial_state": lambda s, *a: base.initial_state(s, *a)}
    )
    assert isinstance(own_start(3, 4).fused_kernel(), FusedKernel)
    unchanged = type("Unchanged", (base,), {})
    assert isinstance(unchanged(3, 4).fused_kernel(), FusedKernel)


@pytest.mark.parametrize(
    "make",
    [
        lambda i, h: RNNCell(i, h),
        lambda i, h: LSTMCell(i, h),
        lambda i, h: GRUCell(i, h),
        lambda i, h: MinGRUCell(i, h),
        lambda i, h: GRUDCell(i, h),
    ],
)
@pytest.mark.parametrize(
    ("sizes", "name"),
    [((3, 0), "hidden_size"), ((0, 3), "(input_size|num_variables)"), ((3, -1), "hidden_size")],
)
def test_sizes_must_be_positive_integers(make, sizes, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected a positive integer, found"):
        make(*sizes)
