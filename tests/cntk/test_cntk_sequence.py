"""CNTK's sequence operations and sequence layers, translated from microsoft/CNTK
(``bindings/python/cntk/ops/sequence/__init__.py``'s docstrings, ``layers/sequence.py``,
``layers/blocks.py``, ``layers/layers.py`` and ``layers/tests/layers_test.py``) with their inputs
and expected values; ragged batches against plain per-sequence loops over ``to_list()``; float64
gradient checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rnnkit import SequenceBatch, sequence_ops
from rnnkit.cells import GRUCell
from rnnkit.layers.sequence import (
    Delay,
    LayerNormalization,
    PastValueWindow,
    Stabilizer,
    UnfoldFrom,
)
from rnnkit.recurrence import Fold, Recurrence, RecurrenceFrom

X0 = torch.arange(24.0).reshape(4, 3, 2)  # CNTK's docstring input: one sequence, 4 steps (3, 2)
LENGTHS = [3, 1, 5, 2]  # ragged, unsorted, so packing reorders


def _ragged(lengths=LENGTHS, shape=(2,), dtype=torch.float64, seed=0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, *shape, generator=g, dtype=dtype) for n in lengths]


def _batch(seqs: list[Tensor]) -> SequenceBatch:
    return SequenceBatch.from_list(seqs)


def _assert_lists(got: list[Tensor], want: list[Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------- CNTK's examples


def test_past_value_cntk_docstring():
    x = _batch([X0])
    want = torch.cat([torch.zeros(1, 3, 2), X0[:3]])
    _assert_lists(sequence_ops.past_value(x).to_list(), [want])
    s0 = (torch.arange(6.0) / 2).reshape(1, 3, 2)  # a per-sequence initial state (data)
    want = torch.cat([s0, X0[:3]])
    _assert_lists(sequence_ops.past_value(x, initial_state=s0).to_list(), [want])


def test_future_value_cntk_docstring():
    want = torch.cat([X0[1:], torch.zeros(1, 3, 2)])
    _assert_lists(sequence_ops.future_value(_batch([X0])).to_list(), [want])


def test_first_last_is_first_is_last_reduce_sum_cntk_docstrings():
    x = _batch([X0])
    assert sequence_ops.first(x).tolist() == [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]]
    assert sequence_ops.last(x).tolist() == [[[18.0, 19.0], [20.0, 21.0], [22.0, 23.0]]]
    assert sequence_ops.is_first(x).to_list()[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert sequence_ops.is_last(x).to_list()[0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert sequence_ops.reduce_sum(x).tolist() == [[[36.0, 40.0], [44.0, 48.0], [52.0, 56.0]]]


def test_broadcast_as_cntk_docstring():
    x = _batch([X0])
    y = sequence_ops.broadcast_as(sequence_ops.last(x), sequence_ops.is_first(x))
    _assert_lists(y.to_list(), [X0[3].expand(4, 3, 2)])


def _greater_than_60(x: SequenceBatch) -> SequenceBatch:
    return x.map(lambda d: (d.sum((1, 2)) > 60).float().unsqueeze(1))


def test_where_cntk_docstring():
    x = _batch([X0])
    assert sequence_ops.where(_greater_than_60(x)).to_list()[0].tolist() == [2, 3]
    factors = _batch([torch.tensor([[1.0], [2.0], [1.0], [3.0], [2.0]])])
    assert sequence_ops.where(factors).to_list()[0].tolist() == [0, 1, 1, 2, 3, 3, 3, 4, 4]
    stretch = sequence_ops.where(_batch([torch.full((10, 1), 1.2)])).to_list()[0].tolist()
    assert stretch == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]


def test_gather_cntk_docstring():
    x = _batch([X0])
    _assert_lists(sequence_ops.gather(x, _greater_than_60(x)).to_list(), [X0[2:]])


def test_delay_layer_cntk_trigram():
    # CNTK's Delay docstring: splice of Delay(-1), Delay(0), Delay(1) over one sequence.
    x = _batch([torch.arange(6.0).reshape(3, 2)])
    trigram = torch.cat([Delay(t)(x).data for t in (-1, 0, 1)], dim=-1)
    assert trigram.tolist() == [
        [2.0, 3.0, 0.0, 1.0, 0.0, 0.0],
        [4.0, 5.0, 2.0, 3.0, 0.0, 1.0],
        [0.0, 0.0, 4.0, 5.0, 2.0, 3.0],
    ]


def test_past_value_window_cntk_docstring():
    x = _batch([torch.arange(6.0).reshape(3, 2)])
    value, valid = PastValueWindow(4, axis=-2)(x)
    assert value.tolist() == [[[4.0, 5.0], [2.0, 3.0], [0.0, 1.0], [0.0, 0.0]]]
    assert valid.tolist() == [[[1.0], [1.0], [1.0], [0.0]]]


def test_stabilizer_cntk_test_and_init():
    # layers_test.test_layers_stabilizer: a stabiliser starts with no effect.
    dat = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(Stabilizer()(dat), dat, rtol=0, atol=1e-6)
    # blocks.py's initial value, 1/steepness * ln(e^steepness - 1) for steepness 4
    assert math.isclose(
        math.log(math.expm1(4.0)) / 4.0, 0.99537863, abs_tol=1e-8
    )  # CNTK writes 8 digits
    assert Stabilizer().param.item() == pytest.approx(0.99537863, abs=1e-7)


def test_layer_normalization_cntk_test():
    # layers_test.test_layers_layer_normalization: scale and bias have the input's shape, and
    # the output is (x - mean) / (std + epsilon) at init.
    dat = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    ln = LayerNormalization()
    res = ln(torch.from_numpy(dat))
    assert tuple(ln.scale.shape) == (4,) and tuple(ln.bias.shape) == (4,)
    x = dat - np.mean(dat)
    std = np.sqrt(np.mean(x * x))
    np.testing.assert_array_almost_equal(res.detach().numpy(), x / (std + 0.00001), decimal=6)


def test_layer_normalization_cntk_docstring():
    ln = LayerNormalization(initial_scale=2, initial_bias=1)
    out = ln(torch.tensor([[4.0, 0.0, 0.0, 4.0]]))
    np.testing.assert_array_almost_equal(
        out.detach().numpy(), [[2.99999, -0.99999, -0.99999, 2.99999]], decimal=5
    )


def test_unfold_from_cntk_test():
    # layers_test.test_unfold, both parts: UF(Constant(1), x) over inputs of 3 and 5 steps.
    x = _batch([torch.zeros(3, 1), torch.zeros(5, 1)])

    def double_up(s):
        return s * 2

    got = [s.tolist() for s in UnfoldFrom(double_up)(1.0, x).to_list()]
    assert got == [[2.0, 4.0, 8.0], [2.0, 4.0, 8.0, 16.0, 32.0]]
    unfold = UnfoldFrom(double_up, until_predicate=lambda o: o > 63, length_increase=1.6)
    got = [s.tolist() for s in unfold(1.0, x).to_list()]
    assert got == [[2, 4, 8, 16, 32], [2, 4, 8, 16, 32, 64]]  # length increase; early stop


def test_recurrence_from_sequence_initial_state_cntk_test():
    # layers_test.test_recurrence: GRU(5, init=0.05) over arange(25) as 5 steps of 5, from a
    # constant 0.1 (Recurrence) and from a sequence of 0.1s (RecurrenceFrom: its last item).
    x = _batch([torch.arange(25.0).reshape(5, 5)])
    want = (
        torch.tensor([0.239151, 0.338713, 0.367456, 0.375577, 0.377891]).unsqueeze(1).expand(5, 5)
    )
    gru = GRUCell(5, 5, reset="before")
    with torch.no_grad():
        for name, p in gru.named_parameters():
            p.fill_(0.0 if name.startswith("bias") else 0.05)
    torch.testing.assert_close(Recurrence(gru, initial_state=0.1)(x).data, want, atol=1e-6, rtol=0)
    s = _batch([torch.full((5, 5), 0.1)])
    torch.testing.assert_close(RecurrenceFrom(gru)(s, x).data, want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- ragged batches


def _shift_loop(seq: Tensor, k: int, init: Tensor, future: bool) -> Tensor:
    out = init.expand_as(seq).clone()
    n = seq.shape[0]
    for t in range(n):
        src = t + k if future else t - k
        if 0 <= src < n:
            out[t] = seq[src]
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 4])
@pytest.mark.parametrize("future", [False, True])
def test_shifts_match_a_loop_on_ragged_batches(k, future):
    seqs = _ragged()
    x = _batch(seqs)
    b = len(seqs)
    per_seq = torch.randn(b, 2, dtype=torch.float64)
    init_seq = _ragged([2, 4, 1, 3], seed=1)
    inits = {
        "number": (0.5, [torch.tensor([0.5, 0.5], dtype=torch.float64)] * b),
        "feature": (torch.tensor([1.0, -1.0]), [torch.tensor([1.0, -1.0]).double()] * b),
        "per sequence": (per_seq, list(per_seq)),
        "sequence": (_batch(init_seq), [s[0] if future else s[-1] for s in init_seq]),
    }
    op = sequence_ops.future_value if future else sequence_ops.past_value
    for spec, rows in inits.values():
        got = op(x, initial_state=spec, time_step=k).to_list()
        _assert_lists(got, [_shift_loop(s, k, r, future) for s, r in zip(seqs, rows, strict=True)])
    # delay: positive past, negative future
    got = sequence_ops.delay(x, 0.5, -k if future else k).to_list()
    _assert_lists(got, [_shift_loop(s, k, inits["number"][1][0], future) for s in seqs])


def test_reductions_and_flags_match_loops():
    seqs = [s - 3.0 for s in _ragged()]  # all negative-ish: a max must not be clamped at 0
    x = _batch(seqs)
    torch.testing.assert_close(sequence_ops.reduce_sum(x), torch.stack([s.sum(0) for s in seqs]))
    assert torch.equal(sequence_ops.reduce_max(x), torch.stack([s.max(0).values for s in seqs]))
    assert (sequence_ops.reduce_max(x) < 0).any()
    firsts = [torch.eye(1, len(s), dtype=torch.float64)[0] for s in seqs]
    _assert_lists(sequence_ops.is_first(x).to_list(), firsts)
    _assert_lists(sequence_ops.is_last(x).to_list(), [f.flip(0) for f in firsts])
    _assert_lists([sequence_ops.first(x)], [torch.stack([s[0] for s in seqs])])
    _assert_lists([sequence_ops.last(x)], [torch.stack([s[-1] for s in seqs])])
    per_seq = torch.randn(len(seqs), 3, dtype=torch.float64)
    want = [p.expand(len(s), 3) for p, s in zip(per_seq, seqs, strict=True)]
    _assert_lists(sequence_ops.broadcast_as(per_seq, x).to_list(), want)


def test_gather_and_where_match_loops():
    seqs = _ragged()
    x = _batch(seqs)
    masks = [(s[:, 0] > 0) | (torch.arange(len(s)) == 0) for s in seqs]  # >= 1 kept each
    condition = _batch([m.double().unsqueeze(1) for m in masks])
    _assert_lists(
        sequence_ops.gather(x, condition).to_list(),
        [s[m] for s, m in zip(seqs, masks, strict=True)],
    )
    want = [torch.nonzero(m).squeeze(1) for m in masks]
    _assert_lists(sequence_ops.where(condition).to_list(), want)
    bool_condition = _batch([m for m in masks])  # [N] bool steps work too
    _assert_lists(sequence_ops.where(bool_condition).to_list(), want)


def test_selections_refuse_empty_results_and_bad_conditions():
    x = _batch(_ragged([2, 3]))
    none_for_first = _batch([torch.zeros(2, 1), torch.ones(3, 1)])
    with pytest.raises(ValueError, match="gather: sequence 0 keeps no step"):
        sequence_ops.gather(x, none_for_first)
    with pytest.raises(ValueError, match="where: sequence 0 keeps no step"):
        sequence_ops.where(none_for_first)
    with pytest.raises(ValueError, match="condition: expected the lengths of x"):
        sequence_ops.gather(x, _batch([torch.ones(3, 1), torch.ones(2, 1)]))
    with pytest.raises(ValueError, match=r"condition: expected one scalar per step"):
        sequence_ops.gather(x, x)
    with pytest.raises(ValueError, match="condition: expected values >= 0"):
        sequence_ops.where(_batch([-torch.ones(2, 1), torch.ones(3, 1)]))
    with pytest.raises(ValueError, match=r"slice\(5, 0\): sequence 0 keeps no step"):
        sequence_ops.slice(x, 5, 0)


@pytest.mark.parametrize(
    "begin, end", [(0, 0), (1, 0), (-2, 0), (0, -1), (1, 3), (-3, -1), (-9, 2), (0, 9)]
)
def test_slice_matches_python_slicing(begin, end):
    seqs = _ragged([4, 5, 3, 6])
    want = [s[begin : (None if end == 0 else end)] for s in seqs]  # CNTK: end 0 is the end
    _assert_lists(sequence_ops.slice(_batch(seqs), begin, end).to_list(), want)


def test_bad_arguments_are_named():
    x = _batch(_ragged([2, 3]))
    with pytest.raises(
        ValueError, match=r"initial_state: expected a number, a tensor broadcastable"
    ):
        sequence_ops.past_value(x, initial_state=torch.ones(3))
    with pytest.raises(ValueError, match="time_step: expected an integer >= 0"):
        sequence_ops.past_value(x, time_step=-1)
    with pytest.raises(TypeError, match="x: expected a SequenceBatch, found Tensor"):
        sequence_ops.reduce_sum(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"operand: expected a tensor \[B=2, ...\]"):
        sequence_ops.broadcast_as(torch.ones(3, 2), x)
    with pytest.raises(ValueError, match=r"axis: expected an axis of the 2-dimensional window"):
        PastValueWindow(2, axis=2)(x)
    with pytest.raises(ValueError, match="length_increase: expected a positive number"):
        UnfoldFrom(lambda s: s, length_increase=0)
    with pytest.raises(ValueError, match=r"initial_state: expected a number, a \[B=2, ...\]"):
        UnfoldFrom(lambda s: s)(torch.ones(3, 1), x)
    with pytest.raises(ValueError, match=r"LayerNormalization input: expected steps of shape"):
        LayerNormalization(normalized_shape=3)(x)


# ---------------------------------------------------------------------------- layers


@pytest.mark.parametrize("go_backwards", [False, True])
def test_past_value_window_matches_a_loop(go_backwards):
    seqs = _ragged()
    window = 3
    value, valid = PastValueWindow(window, axis=-2, go_backwards=go_backwards)(_batch(seqs))
    for i, s in enumerate(seqs):
        for k in range(window):
            t = k if go_backwards else len(s) - 1 - k
            inside = 0 <= t < len(s)
            assert torch.equal(value[i, k], s[t] if inside else torch.zeros(2, dtype=s.dtype))
            assert valid[i, k].tolist() == [1.0 if inside else 0.0]
    value, valid = PastValueWindow(window, axis=-1)(_batch(seqs))  # the window last: [B, F, W]
    assert value.shape == (len(seqs), 2, window) and valid.shape == (len(seqs), 1, window)
    assert torch.equal(value[:, :, 0], torch.stack([s[-1] for s in seqs]))


def test_stabilizer_formula_and_sequences():
    stab = Stabilizer().double()
    with torch.no_grad():
        stab.param.fill_(0.3)
    beta = math.log1p(math.exp(4 * 0.3)) / 4  # blocks.py: log(1 + exp(steepness * p)) / steepness
    seqs = _ragged()
    got = stab(_batch(seqs))
    _assert_lists(got.to_list(), [s * torch.tensor(beta, dtype=torch.float64) for s in seqs])
    off = Stabilizer(enable_self_stabilization=False)
    assert off.param is None and list(off.parameters()) == []
    x = _batch(seqs)
    assert off(x) is x


def test_layer_normalization_against_torch_layer_norm():
    seqs = _ragged(shape=(3, 4))
    x = _batch(seqs)
    ln = LayerNormalization(epsilon=0.0).double()
    ln(x)  # materialise, then give scale and bias values that differ per element
    with torch.no_grad():
        ln.scale.copy_(torch.linspace(0.5, 2.0, 12, dtype=torch.float64).view(3, 4))
        ln.bias.copy_(torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).view(3, 4))
    want = [nn.functional.layer_norm(s, (3, 4), ln.scale, ln.bias, eps=0.0) for s in seqs]
    for a, b in zip(ln(x).to_list(), want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # with epsilon, CNTK adds it to the standard deviation (torch: inside the square root)
    ln_eps = LayerNormalization(epsilon=0.1, normalized_shape=(3, 4)).double()
    s = seqs[0]
    centred = s - s.mean((1, 2), keepdim=True)
    std = centred.square().mean((1, 2), keepdim=True).sqrt()
    torch.testing.assert_close(ln_eps(_batch([s])).data, centred / (std + 0.1))


def test_unfold_from_state_forms_and_ragged_lengths():
    x = _batch([torch.zeros(n, 1) for n in (2, 4, 1)])

    def counter(state):  # (output, new state): emit the state times 10, count up by one
        return state * 10, state + 1

    got = UnfoldFrom(counter)(torch.tensor([1.0, 5.0, 7.0]), x).to_list()
    _assert_lists(
        got, [torch.tensor([10.0, 20.0]), torch.tensor([50.0, 60, 70, 80]), torch.tensor([70.0])]
    )
    # tuple state; a sequence as initial state gives its last step
    pair = UnfoldFrom(lambda s: (s[0] + s[1], (s[0] + s[1], s[1])), length_increase=0.5)
    seed = (
        _batch([torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]]), torch.tensor([[3.0]])]),
        torch.ones(3, 1),
    )
    got = pair(seed, x).to_list()  # lengths ceil(0.5 L): 1, 2, 1
    _assert_lists(got, [torch.tensor([[2.0]]), torch.tensor([[3.0], [4.0]]), torch.tensor([[4.0]])])


def test_recurrence_from_a_sequence_state_matches_a_loop():
    torch.manual_seed(0)
    cell = GRUCell(2, 3, reset="before").double()
    seqs = _ragged()
    states = _ragged([2, 1, 3, 4], shape=(3,), seed=2)
    for go_backwards in (False, True):
        got = RecurrenceFrom(cell, go_backwards=go_backwards)(
            _batch(states), _batch(seqs)
        ).to_list()
        for s, st, out in zip(seqs, states, got, strict=True):
            h = (st[0] if go_backwards else st[-1]).unsqueeze(0)
            steps = range(len(s) - 1, -1, -1) if go_backwards else range(len(s))
            want = torch.empty(len(s), 3, dtype=torch.float64)
            for t in steps:
                h = cell(s[t].unsqueeze(0), h)
                want[t] = h[0]
            torch.testing.assert_close(out, want)
    # in Recurrence's constructor too, and inside a tuple
    fold = Fold(cell, initial_state=_batch(states))
    h0 = torch.stack([st[-1] for st in states])
    torch.testing.assert_close(fold(_batch(seqs)), RecurrenceFrom(cell)(h0, _batch(seqs)).last())


# ---------------------------------------------------------------------------- gradients


def test_gradcheck_sequence_ops_float64():
    seqs = [s.requires_grad_() for s in _ragged([3, 1, 4])]
    init = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    per_seq = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    keep = _batch([torch.tensor([1.0, 0, 2]), torch.tensor([1.0]), torch.tensor([0.0, 1, 1, 0])])

    def f(init, per_seq, *s):
        x = _batch(list(s))
        return (
            sequence_ops.past_value(x, init, 2).data,
            sequence_ops.future_value(x, _batch([i.unsqueeze(0) for i in init]), 1).data,
            sequence_ops.broadcast_as(per_seq, x).data * x.data,
            sequence_ops.reduce_sum(x),
            sequence_ops.reduce_max(x),
            sequence_ops.gather(x, keep).data,
            sequence_ops.slice(x, -2, 0).data,
            PastValueWindow(2, axis=-2)(x)[0],
        )

    assert torch.autograd.gradcheck(f, (init, per_seq, *seqs))


def test_gradcheck_layers_float64():
    seqs = [s.requires_grad_() for s in _ragged([3, 1, 4], shape=(4,))]
    stab = Stabilizer().double()
    ln = LayerNormalization(initial_scale=1.5, initial_bias=0.2, normalized_shape=4).double()
    gen = nn.Linear(4, 4).double()
    cell = GRUCell(4, 4, reset="before").double()

    def f(*s):
        x = _batch(list(s))
        return (
            stab(x).data,
            ln(x).data,
            Delay(-1, 0.5)(x).data,
            UnfoldFrom(lambda h: torch.tanh(gen(h)))(x.last(), x).data,
            RecurrenceFrom(cell)(x, x).data,  # the sequence's last step as initial state
        )

    assert torch.autograd.gradcheck(f, tuple(seqs))
    # and with respect to the layers' own parameters
    x = _batch([s.detach() for s in seqs])

    def h(param, scale, bias):
        return (
            torch.func.functional_call(stab, {"param": param}, (x,)).data,
            torch.func.functional_call(ln, {"scale": scale, "bias": bias}, (x,)).data,
        )

    params = tuple(p.detach().clone().requires_grad_() for p in (stab.param, ln.scale, ln.bias))
    assert torch.autograd.gradcheck(h, params)


# ---------------------------------------------------------------------------- saving


def test_layers_save_and_load(tmp_path):
    from rnnkit import load, save

    x = _batch(_ragged(shape=(4,)))
    ln = LayerNormalization(initial_scale=2.0).double()
    ln(x)  # infers normalized_shape (4,)
    stab = Stabilizer().double()
    with torch.no_grad():
        stab.param.fill_(0.25)
        ln.bias.copy_(torch.arange(4.0))
    layers = [Delay(-2, torch.full((4,), 0.5)).double(), stab, ln]
    for i, layer in enumerate(layers):
        save(layer, tmp_path / str(i))
        back = load(tmp_path / str(i))
        assert type(back) is type(layer)
        torch.testing.assert_close(back(x).data, layer(x).data, rtol=0, atol=0)
    window = PastValueWindow(3, axis=-1, go_backwards=True)
    save(window, tmp_path / "window")
    for a, b in zip(load(tmp_path / "window")(x), window(x), strict=True):
        assert torch.equal(a, b)
    unfold = UnfoldFrom(nn.Linear(4, 4).double(), length_increase=1.5)
    save(unfold, tmp_path / "unfold")
    torch.testing.assert_close(
        load(tmp_path / "unfold")(x.last(), x).data, unfold(x.last(), x).data
    )
    with pytest.raises(TypeError, match="UnfoldFrom.generator_function: a plain function"):
        save(UnfoldFrom(lambda s: s), tmp_path / "function")
