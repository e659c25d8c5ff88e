"""Combinators against torch.nn.RNN/LSTM/GRU run one sequence at a time, and backends
against each other (outputs and parameter gradients)."""

import copy

import pytest
import torch
from conftest import random_sequences
from torch import nn

from rnnkit import (
    Bidirectional,
    Dense,
    Embedding,
    Fold,
    GRUCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    RecurrenceFrom,
    RNNCell,
    SequenceBatch,
    Sequential,
    Unfold,
)

LENGTHS = [3, 1, 7, 2, 5, 7, 4]  # unsorted, with a tie and a length-1 sequence
TORCH = {RNNCell: nn.RNN, LSTMCell: nn.LSTM, GRUCell: nn.GRU}


def _sequences(lengths=LENGTHS, size=3, dtype=torch.float32, seed=0):
    return random_sequences(lengths, size, seed=seed, dtype=dtype)


def _torch_twin(cell):
    twin = TORCH[type(cell)](cell.input_size, cell.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(twin, name + "_l0").copy_(getattr(cell, name))
    return twin.to(cell.weight_ih.dtype)


def _one_at_a_time(twin, seqs, backwards=False, h0=None):
    """Outputs and final states of torch's module, sequence by sequence (no batching)."""
    outs, finals = [], []
    for i, s in enumerate(seqs):
        inp = (s.flip(0) if backwards else s).unsqueeze(0)
        hx = None if h0 is None else tuple(h[i : i + 1].unsqueeze(0) for h in h0)
        if hx is not None and not isinstance(twin, nn.LSTM):
            hx = hx[0]
        out, state = twin(inp, hx)
        out = out[0].flip(0) if backwards else out[0]
        outs.append(out)
        finals.append(tuple(t[0, 0] for t in (state if isinstance(state, tuple) else (state,))))
    return outs, finals


@pytest.mark.parametrize(
    "make", [lambda: RNNCell(3, 4), lambda: LSTMCell(3, 4), lambda: GRUCell(3, 4)]
)
@pytest.mark.parametrize("backend", ["auto", "fused", "loop", "reference"])
@pytest.mark.parametrize("backwards", [False, True])
def test_recurrence_and_fold_equal_torch_per_sequence(make, backend, backwards):
    torch.manual_seed(0)
    cell = make()
    seqs = _sequences()
    want_outs, want_finals = _one_at_a_time(_torch_twin(cell), seqs, backwards)
    x = SequenceBatch.from_list(seqs)
    outs, final = Recurrence(cell, go_backwards=backwards, backend=backend).with_final_state(x)
    for got, want in zip(outs.to_list(), want_outs, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    final = final if isinstance(final, tuple) else (final,)
    for k, f in enumerate(final):
        torch.testing.assert_close(
            f, torch.stack([w[k] for w in want_finals]), atol=1e-5, rtol=1e-5
        )
    fold = Fold(cell, go_backwards=backwards, backend=backend)(x)
    torch.testing.assert_close(fold, torch.stack([w[0] for w in want_finals]), atol=1e-5, rtol=1e-5)


STANDARD = [lambda: RNNCell(3, 4), lambda: LSTMCell(3, 4), lambda: GRUCell(3, 4)]
CUSTOM = [
    lambda: RNNCell(3, 4, nonlinearity="sigmoid"),
    lambda: LSTMCell(3, 4, peepholes=True, proj_size=2),
    lambda: LSTMCell(3, 4, layer_norm=True),
    lambda: GRUCell(3, 4, reset="before"),
]


def _outputs_and_grads(module, x, combine):
    module.zero_grad()
    out = combine(module, x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    assert grads, "no parameter received a gradient"
    return out.detach(), grads


COMBINE = {
    "recurrence": lambda m, x: m(x).data,
    "fold": lambda m, x: m.last_of(x),
    "final_state": lambda m, x: torch.cat([s for s in m.final(x)], dim=1),
    "all_states": lambda m, x: torch.cat([s.data for s in m.every(x)], dim=1),
}


class _Probe(nn.Module):
    """A Recurrence with helpers naming each result, so one test walks all of them."""

    def __init__(self, cell, backend, backwards):
        super().__init__()
        self.rec = Recurrence(
            cell, go_backwards=backwards, initial_state="learned", backend=backend
        )
        self.fold = Fold(cell, go_backwards=backwards, backend=backend)

    def forward(self, x):
        return self.rec(x)

    def last_of(self, x):
        return self.fold(x)

    def final(self, x):
        state = self.rec.with_final_state(x)[1]
        return state if isinstance(state, tuple) else (state,)

    def every(self, x):
        return self.rec.states(x)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("make", STANDARD + CUSTOM)
@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("what", sorted(COMBINE))
def test_all_backends_equal(dtype, tol, make, backwards, what):
    torch.manual_seed(1)
    cell = make().to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = SequenceBatch.from_list(_sequences(dtype=dtype))
    backends = ["reference", "loop"] + (["fused"] if make in STANDARD else [])
    if what == "all_states" and "fused" in backends and isinstance(cell, LSTMCell):
        with pytest.raises(ValueError, match="backend='fused' gives the output of every step"):
            _Probe(cell, "fused", backwards).every(x)
        backends.remove("fused")
    results = []
    for backend in backends:
        probe = _Probe(cell, backend, backwards)
        with torch.no_grad():
            for p in probe.rec.initial.learned:
                p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=dtype))  # states differ
        results.append(_outputs_and_grads(probe, x, COMBINE[what]))
    ref_out, ref_grads = results[0]
    for out, grads in results[1:]:
        torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
        assert grads.keys() == ref_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], atol=tol, rtol=tol, msg=name)


def test_auto_backend_choice():
    from rnnkit.recurrence import select_backend

    assert select_backend(LSTMCell(2, 3), "auto") == "fused"
    assert select_backend(LSTMCell(2, 3), "auto", every_state=True) == "loop"
    assert select_backend(GRUCell(2, 3, reset="before"), "auto") == "loop"
    with pytest.raises(
        ValueError, match="backend='fused' cannot run a GRUCell with reset='before'"
    ):
        Recurrence(GRUCell(2, 3, reset="before"), backend="fused")
    with pytest.raises(ValueError, match="backend: expected one of .* found 'cudnn'"):
        Recurrence(GRUCell(2, 3), backend="cudnn")


def test_bidirectional_equals_each_direction_per_sequence():
    torch.manual_seed(2)
    fwd, bwd = LSTMCell(3, 4), LSTMCell(3, 4)
    seqs = _sequences()
    f_outs, _ = _one_at_a_time(_torch_twin(fwd), seqs)
    b_outs, _ = _one_at_a_time(_torch_twin(bwd), seqs, backwards=True)
    x = SequenceBatch.from_list(seqs)
    concat = Bidirectional(fwd, bwd)(x).to_list()
    summed = Bidirectional(Recurrence(fwd), Recurrence(bwd, go_backwards=True), merge="sum")(x)
    for got, s, f, b in zip(concat, summed.to_list(), f_outs, b_outs, strict=True):
        torch.testing.assert_close(got, torch.cat([f, b], 1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s, f + b, atol=1e-5, rtol=1e-5)
    # torch's own bidirectional LSTM, packed, agrees too
    twin = nn.LSTM(3, 4, bidirectional=True)
    with torch.no_grad():
        for cell, sfx in ((fwd, "_l0"), (bwd, "_l0_reverse")):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(twin, name + sfx).copy_(getattr(cell, name))
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    out, _ = twin(packed)
    torch.testing.assert_close(Bidirectional(fwd, bwd)(x).data, out.data, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="go_backwards=True"):
        Bidirectional(Recurrence(fwd), Recurrence(bwd))


def test_initial_state_constant_matches_torch_with_same_start():
    torch.manual_seed(3)
    cell = LSTMCell(3, 4)
    seqs = _sequences()
    h0 = (torch.full((len(seqs), 4), 0.1), torch.full((len(seqs), 4), 0.1))
    want, _ = _one_at_a_time(_torch_twin(cell), seqs, h0=h0)
    got = Recurrence(cell, initial_state=0.1)(SequenceBatch.from_list(seqs)).to_list()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # a tensor [H] broadcasts like the constant; data [B, H] through RecurrenceFrom likewise
    as_tensor = Recurrence(cell, initial_state=(torch.full((4,), 0.1), torch.full((4,), 0.1)))
    from_data = RecurrenceFrom(cell)
    x = SequenceBatch.from_list(seqs)
    torch.testing.assert_close(as_tensor(x).data, from_data(h0, x).data)
    for a, b in zip(from_data(h0, x).to_list(), want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_recurrence_from_is_per_sequence_state():
    torch.manual_seed(4)
    cell = GRUCell(3, 4)
    seqs = _sequences()
    h0 = torch.randn(len(seqs), 4)
    want, _ = _one_at_a_time(_torch_twin(cell), seqs, h0=(h0,))
    got = RecurrenceFrom(cell)(h0, SequenceBatch.from_list(seqs)).to_list()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"initial_state\[0\]: expected a state of shape \[B=7"):
        RecurrenceFrom(cell)(h0[:3], SequenceBatch.from_list(seqs))


def test_gradcheck_combinators_float64():
    torch.manual_seed(5)
    seqs = [s.requires_grad_() for s in _sequences([3, 1, 2], size=2, dtype=torch.float64)]
    lstm = LSTMCell(2, 3).double()
    gru = GRUCell(2, 3, reset="before").double()
    h0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def f(h0, *s):
        x = SequenceBatch.from_list(list(s))
        return (
            Recurrence(lstm)(x).data,
            Fold(gru, go_backwards=True)(x),
            Bidirectional(lstm, gru)(x).data,
            RecurrenceFrom(gru)(h0, x).data,
            torch.cat(Fold(lstm, backend="loop").final_state(x), 1),
        )

    assert torch.autograd.gradcheck(f, (h0, *seqs))


class _SumCell(nn.Module):
    hidden_size = 2

    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.zeros(batch_size, 2, device=device, dtype=dtype)

    def forward(self, x, state=None):
        return x if state is None else state + x


class _MaxCell(_SumCell):
    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.full((batch_size, 2), -torch.inf, device=device, dtype=dtype)

    def forward(self, x, state=None):
        return x if state is None else torch.maximum(state, x)


@pytest.mark.parametrize("backend", ["loop", "reference"])
def test_fold_of_sum_and_max_cells(backend):
    seqs = _sequences(size=2)
    x = SequenceBatch.from_list(seqs)
    torch.testing.assert_close(
        Fold(_SumCell(), backend=backend)(x), torch.stack([s.sum(0) for s in seqs])
    )
    torch.testing.assert_close(
        Fold(_MaxCell(), backend=backend)(x), torch.stack([s.max(0).values for s in seqs])
    )
    cumsum = Recurrence(_SumCell(), go_backwards=True, backend=backend)(x).to_list()
    for got, s in zip(cumsum, seqs, strict=True):
        torch.testing.assert_close(got, s.flip(0).cumsum(0).flip(0))


def test_stacked_model_trains_on_toy_regression():
    torch.manual_seed(6)
    model = Sequential([Recurrence(LSTMCell(1, 15)), Fold(GRUCell(15, 15)), Dense(15, 1)])
    g = torch.Generator().manual_seed(0)
    seqs = [torch.rand(int(n), 1, generator=g) for n in torch.randint(2, 12, (64,), generator=g)]
    target = torch.stack([s.mean(0) for s in seqs])  # the mean of the sequence
    x = SequenceBatch.from_list(seqs)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    assert losses[-1] < 0.5 * target.var().item()  # better than predicting the mean


def test_unfold_greedy_equals_manual_loop_and_stops():
    torch.manual_seed(7)
    cell, readout, embed = GRUCell(4, 6), Dense(6, 5), Embedding(5, 4)
    unfold = Unfold(cell, readout, embed, max_length=8, stop=0)
    h0 = torch.randn(3, 6)
    start = torch.zeros(3, 4)
    out = unfold(h0, start)
    for i in range(3):  # the plain loop, one sequence at a time
        h, x, want = h0[i : i + 1], start[i : i + 1], []
        for _ in range(8):
            h = cell(x, h)
            item = readout(h).argmax(-1)
            want.append(int(item))
            if int(item) == 0:
                break
            x = embed(item)
        assert out.to_list()[i].tolist() == want


def test_unfold_values_and_sampling():
    cell = RNNCell(1, 3)
    unfold = Unfold(cell, Dense(3, 1), nn.Identity(), max_length=5, mode="value")
    out = unfold(torch.zeros(2, 3), torch.ones(2, 1))
    assert out.lengths.tolist() == [5, 5]
    h, x = torch.zeros(2, 3), torch.ones(2, 1)
    for t in range(5):
        h = cell(x, h)
        x = unfold.readout(h)
        torch.testing.assert_close(out.to_padded()[0][:, t], x)
    sampler = Unfold(GRUCell(4, 6), Dense(6, 5), Embedding(5, 4), 6, mode="sample", temperature=0.5)
    a = sampler(torch.zeros(4, 6), torch.zeros(4, 4), generator=torch.Generator().manual_seed(1))
    b = sampler(torch.zeros(4, 6), torch.zeros(4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.data, b.data)


def test_bad_inputs_are_named():
    rec = Recurrence(LSTMCell(3, 4))
    with pytest.raises(
        TypeError, match=r"x: expected a SequenceBatch .* found Tensor of shape \(2, 5, 3\)"
    ):
        rec(torch.zeros(2, 5, 3))
    with pytest.raises(TypeError, match="cell: expected a cell .* found Linear"):
        Recurrence(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="initial_state: expected None, a float, .* found 'zeros'"):
        Recurrence(GRUCell(3, 4), initial_state="zeros")
    with pytest.raises(ValueError, match=r"initial_state: expected 2 tensor\(s\)"):
        Recurrence(LSTMCell(3, 4), initial_state=torch.zeros(4))
    with pytest.raises(
        ValueError,
        match=r"x: LSTMCell expected input of shape \[B, 3\] per step, found steps of shape \(2,\)",
    ):
        rec(SequenceBatch.from_list([torch.zeros(5, 2)]))
    with pytest.raises(ValueError, match="merge: expected 'concat' or 'sum', found 'mean'"):
        Bidirectional(GRUCell(3, 4), GRUCell(3, 4), merge="mean")
    with pytest.raises(ValueError, match="max_length: expected at least 1, found 0"):
        Unfold(GRUCell(3, 4), Dense(4, 2), Embedding(2, 3), 0)


def _min_gru_by_hand(cell, seq, h):
    """The minGRU equations of Feng et al. (2024), one step at a time."""
    outs = []
    for x in seq:
        k, v = (cell.weight_ih @ x + cell.bias_ih).chunk(2)
        z, cand = torch.sigmoid(k), torch.where(v >= 0, v + 0.5, torch.sigmoid(v))
        h = (1 - z) * h + z * cand
        outs.append(h)
    return torch.stack(outs)


def _min_lstm_by_hand(cell, seq, h):
    outs = []
    for x in seq:
        f, i, v = (cell.weight_ih @ x + cell.bias_ih).chunk(3)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        cand = torch.where(v >= 0, v + 0.5, torch.sigmoid(v))
        h = f / (f + i) * h + i / (f + i) * cand
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize(
    "make,by_hand",
    [(lambda: MinGRUCell(3, 4), _min_gru_by_hand), (lambda: MinLSTMCell(3, 4), _min_lstm_by_hand)],
)
@pytest.mark.parametrize("backwards", [False, True])
def test_min_cells_scan_equals_loop_and_equations(make, by_hand, backwards):
    torch.manual_seed(8)
    cell = make().double()
    seqs = _sequences(dtype=torch.float64)
    x = SequenceBatch.from_list(seqs)
    h0 = torch.randn(len(seqs), 4, dtype=torch.float64)  # negative entries too
    results = {}
    for backend in ("scan", "loop", "reference"):
        cell.zero_grad()
        rec = RecurrenceFrom(cell, go_backwards=backwards, backend=backend)
        out, final = rec.with_final_state(h0, x)
        (
            out.data
            * torch.linspace(-1, 1, out.data.numel(), dtype=torch.float64).view_as(out.data)
        ).sum().backward()
        results[backend] = (out, final, cell.weight_ih.grad.clone())
    for i, s in enumerate(seqs):
        want = by_hand(cell, s.flip(0) if backwards else s, h0[i])
        want = want.flip(0) if backwards else want
        torch.testing.assert_close(results["scan"][0].to_list()[i], want, atol=1e-10, rtol=1e-10)
    for backend in ("loop", "reference"):
        torch.testing.assert_close(
            results[backend][0].data, results["scan"][0].data, atol=1e-10, rtol=1e-10
        )
        torch.testing.assert_close(results[backend][1], results["scan"][1], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(results[backend][2], results["scan"][2], atol=1e-10, rtol=1e-10)
    assert Recurrence(cell).backend == "auto"
    from rnnkit.recurrence import select_backend

    assert select_backend(cell, "auto") == "scan"


@pytest.mark.parametrize("make", [MinGRUCell, MinLSTMCell])
def test_min_cells_float32_scan_stays_within_1e_5_of_the_float64_loop_over_4096_steps(make):
    """The scan is exact (``linear_scan``): no error growing with T, where the log-space
    form it replaced drifted by up to 1e-3 at this length."""
    torch.manual_seed(10)
    cell = make(4, 8)
    x = SequenceBatch.from_list(_sequences([4096, 3000], size=4))
    got = Recurrence(cell, backend="scan")(x).data
    want = Recurrence(copy.deepcopy(cell).double(), backend="loop")(x.map(torch.Tensor.double))
    torch.testing.assert_close(got.double(), want.data, atol=1e-5, rtol=1e-5)


def test_gradcheck_scan_float64():
    torch.manual_seed(9)
    cell = MinGRUCell(2, 3).double()
    seqs = [s.requires_grad_() for s in _sequences([3, 1, 4], size=2, dtype=torch.float64)]
    h0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def f(h0, *s):
        return RecurrenceFrom(cell, backend="scan")(h0, SequenceBatch.from_list(list(s))).data

    assert torch.autograd.gradcheck(f, (h0, *seqs))
    with pytest.raises(ValueError, match="backend='scan' needs a cell whose recurrence is linear"):
        Recurrence(GRUCell(2, 3), backend="scan")


@pytest.mark.parametrize("make", STANDARD)
@pytest.mark.parametrize("backwards", [False, True])
def test_fused_segments_equal_reference(make, backwards, monkeypatch):
    """Ragged CPU batches run as padded segments; force many cuts and compare every result
    (outputs, Fold, final state) and every parameter gradient with the reference loop."""
    import rnnkit.recurrence as engine

    monkeypatch.setattr(engine, "_segment_costs", lambda cell: (0.0, 1.0, 0.0))
    x = SequenceBatch.from_list(_sequences([9, 1, 4, 12, 6, 12, 2, 7], dtype=torch.float64))
    assert len(engine.plan_segments(x.batch_sizes, 0.0, 1.0, 0.0)) > 3
    torch.manual_seed(11)
    cell = make().double()
    results = []
    for backend in ("fused", "reference"):
        cell.zero_grad()
        rec = Recurrence(cell, go_backwards=backwards, initial_state=0.2, backend=backend)
        fold = Fold(cell, go_backwards=backwards, initial_state=0.2, backend=backend)
        out = rec(x).data
        last = fold(x)
        (out.sum() + (last * torch.arange(1.0, 5.0, dtype=torch.float64)).sum()).backward()
        results.append((out, last, [p.grad.clone() for p in cell.parameters()]))
    (out_f, last_f, grads_f), (out_r, last_r, grads_r) = results
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(last_f, last_r, atol=1e-10, rtol=1e-10)
    for a, b in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_gradcheck_unfold_values_float64():
    torch.manual_seed(12)
    cell = GRUCell(2, 3).double()
    readout = Dense(3, 2).double()
    unfold = Unfold(cell, readout, nn.Identity(), max_length=4, mode="value")
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, x: unfold(h, x).data, (h0, x0))


@pytest.mark.parametrize("make", STANDARD)
@pytest.mark.parametrize("initial", [None, 0.3, "learned"])
@pytest.mark.parametrize("lengths", [[5, 5, 5], [3, 7, 1, 7, 4]])
def test_fold_single_call_path_equals_reference(make, initial, lengths, monkeypatch):
    """A Fold of a standard cell on CPU runs as one kernel call on padded input gathering
    straight into the caller's order (the fused path's ``need='last'``); outputs and every
    gradient, including the learned initial state's, must equal the reference loop's."""
    import rnnkit.recurrence as engine

    torch.manual_seed(5)
    cell = make().double()
    x = SequenceBatch.from_list(_sequences(lengths, dtype=torch.float64))
    fast = Fold(cell, initial_state=initial)
    calls = []
    fused_call = engine._fused_call

    def counted(cell, inputs, batch_sizes, *args, **kwargs):
        calls.append(batch_sizes)
        return fused_call(cell, inputs, batch_sizes, *args, **kwargs)

    monkeypatch.setattr(engine, "_fused_call", counted)
    fast(x)
    assert calls == [None]  # the path under test: one call, padded input
    slow = Fold(cell, initial_state=initial, backend="reference")
    if initial == "learned":
        with torch.no_grad():
            for a, b in zip(fast.initial.learned, slow.initial.learned, strict=True):
                a.copy_(torch.linspace(-0.5, 0.5, a.numel(), dtype=torch.float64))
                b.copy_(a)
    results = []
    for fold in (fast, slow):
        fold.zero_grad()
        out = fold(x)
        (
            out * torch.arange(1.0, out.numel() + 1, dtype=torch.float64).view_as(out)
        ).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in fold.parameters()]))
    (out_f, grads_f), (out_r, grads_r) = results
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=1e-10)
    assert (
        len(grads_f)
        == len(grads_r)
        == len(list(cell.parameters()))
        + (
            2
            if initial == "learned" and isinstance(cell, LSTMCell)
            else 1
            if initial == "learned"
            else 0
        )
    )
    for a, b in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


class _ChangedLSTM(LSTMCell):
    """An LSTMCell whose step is not the LSTM's any more (the forget gate is ignored)."""

    def step(self, px, state):
        h, c = state
        i, _, g, o = (px + nn.functional.linear(h, self.weight_hh, self.bias_hh)).chunk(4, 1)
        c = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _OnesGRU(GRUCell):
    """A GRUCell starting from ones: the same step, so the same kernel, from its own state."""

    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.ones(batch_size, self.hidden_size, device=device, dtype=dtype)


def test_subclass_that_changes_the_step_runs_the_loop_and_equals_reference():
    from rnnkit.recurrence import select_backend

    torch.manual_seed(13)
    cell = _ChangedLSTM(3, 4).double()
    assert select_backend(cell, "auto") == "loop"
    with pytest.raises(
        ValueError, match=r"backend='fused' cannot run _ChangedLSTM, which redefines LSTMCell.step"
    ):
        Recurrence(cell, backend="fused")
    x = SequenceBatch.from_list(_sequences(dtype=torch.float64))
    results = {}
    for backend in ("auto", "reference"):
        cell.zero_grad()
        outs, final = Recurrence(cell, backend=backend).with_final_state(x)
        last = Fold(cell, backend=backend)(x)
        (outs.data.sum() + final[1].sum() + last.sum()).backward()
        results[backend] = (outs.data, *final, last, cell.weight_hh.grad.clone())
    for got, want in zip(results["auto"], results["reference"], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # and it really computes something else than the LSTM the fused kernel would run
    lstm = LSTMCell(3, 4).double()
    lstm.load_state_dict(cell.state_dict())
    assert not torch.allclose(Recurrence(lstm)(x).data, results["auto"][0])
    # a subclass that keeps the step keeps the kernel, and the engine asks it for its state
    ones = _OnesGRU(3, 4).double()
    assert select_backend(ones, "auto") == "fused"
    fused = Recurrence(ones).with_final_state(x)
    want = Recurrence(ones, backend="reference").with_final_state(x)
    torch.testing.assert_close(fused[0].data, want[0].data, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fused[1], want[1], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(Fold(ones)(x), want[1], atol=1e-10, rtol=1e-10)


class _TorchGRU(nn.Module):
    """A user's cell, no rnnkit class, declaring the GRU kernel for its torch.gru_cell step."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.randn(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.randn(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.randn(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.randn(3 * hidden_size))

    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def forward(self, x, state=None):
        h = self.initial_state(x.shape[0], x.device, x.dtype) if state is None else state
        return torch.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def fused_kernel(self):
        from rnnkit.cells import FusedKernel

        return FusedKernel("gru")


def test_a_user_cell_declares_its_kernel():
    from rnnkit.recurrence import select_backend

    torch.manual_seed(14)
    cell = _TorchGRU(3, 4).double()
    assert select_backend(cell, "auto") == "fused"
    x = SequenceBatch.from_list(_sequences(dtype=torch.float64))
    fused = Recurrence(cell).with_final_state(x)
    loop = Recurrence(cell, backend="loop").with_final_state(x)
    torch.testing.assert_close(fused[0].data, loop[0].data, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fused[1], loop[1], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(Fold(cell)(x), loop[1], atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="cannot run _SumCell, which declares no fused kernel"):
        Recurrence(_SumCell(), backend="fused")
    cell.fused_kernel = lambda: ("gru",)
    with pytest.raises(
        TypeError, match=r"_TorchGRU.fused_kernel\(\) to return a FusedKernel or a reason .* tuple"
    ):
        Recurrence(cell)


@pytest.mark.parametrize("backend", ["fused", "loop", "reference"])
def test_run_recurrence_result_for_each_need(backend):
    import dataclasses

    from rnnkit.recurrence import RecurrenceResult, run_recurrence

    torch.manual_seed(15)
    cell = LSTMCell(3, 4).double()
    x = SequenceBatch.from_list(_sequences(dtype=torch.float64))
    zeros = cell.initial_state(x.batch_size, dtype=torch.float64)
    want, want_final = Recurrence(cell, backend="reference").with_final_state(x)
    states = Recurrence(cell, backend="reference").states(x)
    results = {}
    for need in ("outputs", "states", "final", "last"):
        if backend == "fused" and need == "states":
            with pytest.raises(ValueError, match="not every state tensor"):
                run_recurrence(cell, x, zeros, backend, need)
            continue
        result = run_recurrence(cell, x, zeros, backend, need)
        assert isinstance(result, RecurrenceResult)
        results[need] = result
    kept = {"outputs": 1, "states": 2, "final": 1, "last": 0}
    assert {need: len(r.outputs) for need, r in results.items()} == {n: kept[n] for n in results}
    torch.testing.assert_close(results["outputs"].outputs[0], want.data)
    assert results["outputs"].final_state == ()
    torch.testing.assert_close(results["final"].outputs[0], want.data)
    for got, w in zip(results["final"].final_state, want_final, strict=True):
        torch.testing.assert_close(got, w)  # in the caller's order
    (last,) = results["last"].final_state
    torch.testing.assert_close(last, want_final[0])
    if "states" in results:
        for got, w in zip(results["states"].outputs, states, strict=True):
            torch.testing.assert_close(got, w.data)
        assert results["states"].final_state == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        results["last"].outputs = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"need: expected one of \('outputs', .* found 'all'"):
        run_recurrence(cell, x, zeros, backend, "all")  # type: ignore[arg-type]


def test_loop_runs_a_subclass_step_not_the_inherited_step_function():
    """The loop asks a cell for ``step_function`` only when the class defining ``step``
    defines it too: a subclass that redefines ``step`` runs its own step (the reference loop,
    which calls the cell, is the oracle)."""

    class Damped(GRUCell):
        def step(self, px, state):
            return 0.5 * super().step(px, state)

    torch.manual_seed(13)
    cell = Damped(3, 4, reset="before").double()
    x = SequenceBatch.from_list(_sequences([6, 2, 5], dtype=torch.float64))
    loop = Recurrence(cell, backend="loop")(x).data
    reference = Recurrence(cell, backend="reference")(x).data
    plain = Recurrence(GRUCell(3, 4, reset="before").double(), backend="loop")
    plain.cell.load_state_dict(cell.state_dict())
    torch.testing.assert_close(loop, reference, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(loop, plain(x).data)  # the damping is really applied


@pytest.mark.parametrize("reset", ["after", "before"])
def test_loop_under_bfloat16_autocast_is_close_to_float32(reset):
    """Under CPU autocast the products come out in bfloat16 while the state is float32; the
    step's interpolation promotes (``torch.lerp`` alone refuses mixed dtypes). bfloat16 keeps
    8 bits of mantissa: outputs within 0.05 of float32."""
    torch.manual_seed(14)
    layer = Recurrence(GRUCell(3, 4, reset=reset), backend="loop")
    x = SequenceBatch.from_list(_sequences([5, 2, 4]))
    want = layer(x).data
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x).data
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cpu_autocast_without_onednn_bf16_runs_the_kernel_in_float32(cell, monkeypatch):
    """On a CPU whose oneDNN has no bfloat16 RNN (torch.nn.LSTM fails there under bfloat16
    autocast), the fused path runs the kernel in float32: the outputs and the gradients are
    those of the run without autocast, exactly."""
    import rnnkit.recurrence as recurrence

    monkeypatch.setattr(recurrence, "onednn_runs_bf16", lambda: False)
    torch.manual_seed(0)
    layer = Recurrence(LSTMCell(3, 5) if cell == "lstm" else GRUCell(3, 5), backend="fused")
    x = SequenceBatch.from_list([torch.randn(n, 3) for n in (4, 2, 3)])

    def run(autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = layer(x).data
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in layer.parameters()]

    (want, want_grads), (got, got_grads) = run(False), run(True)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(got_grads, want_grads, strict=True))
