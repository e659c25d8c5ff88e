"""rnnkit.nn's LSTM, GRU and RNN against torch.nn with copied weights; final states of Recurrence
and Bidirectional against a plain loop; to_padded(total_length) against pad_packed_sequence;
the dtype/device errors.

Oracles: torch.nn.LSTM/GRU/RNN on the same state_dict (float64, outputs, h_n/c_n and every
parameter's gradient to 1e-10); a hand-written loop over the same cell; torch's
pad_packed_sequence. Dropout between layers is checked against torch.nn under the same seed
(both draw one dropout mask per layer output in the same order).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit.nn as rnn
from rnnkit.cells import GRUCell, LSTMCell, as_tuple
from rnnkit.recurrence import Bidirectional, Fold, Recurrence
from rnnkit.sequences import SequenceBatch

TOL = 1e-10
IN, H, P, B, T = 3, 5, 2, 4, 6
LENGTHS = [4, 6, 1, 3]  # unsorted, distinct


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(mode: str, **kw):
    torch.manual_seed(0)
    ours = getattr(rnn, mode)(IN, H, dtype=torch.float64, **kw)
    theirs = getattr(nn, mode)(IN, H, dtype=torch.float64, **kw)
    missing = theirs.load_state_dict(ours.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    return ours, theirs


def _initial(mode: str, kw: dict, batch: int):
    d = 2 if kw.get("bidirectional") else 1
    ld = kw.get("num_layers", 1) * d
    h = torch.randn(ld, batch, kw.get("proj_size", 0) or H, dtype=torch.float64)
    if mode == "LSTM":
        return (h, torch.randn(ld, batch, H, dtype=torch.float64))
    return h


def _flat(out, state):
    data = out.data if hasattr(out, "batch_sizes") else out
    return [data, *(state if isinstance(state, tuple) else (state,))]


def _compare(ours, theirs, x_ours, x_theirs, hx):
    out_a, st_a = ours(x_ours, hx)
    out_b, st_b = theirs(x_theirs, hx)
    fa, fb = _flat(out_a, st_a), _flat(out_b, st_b)
    for a, b in zip(fa, fb, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    weights = [torch.randn_like(a) for a in fa]
    sum((a * w).sum() for a, w in zip(fa, weights, strict=True)).backward()
    sum((b * w).sum() for b, w in zip(fb, weights, strict=True)).backward()
    grads_b = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[name].grad, atol=TOL, rtol=0, msg=name)
    return out_a


CONFIGS = [
    dict(num_layers=n, bidirectional=bi, batch_first=bf, bias=bias)
    for n, bi, bf, bias in itertools.product([1, 2], [False, True], [False, True], [True, False])
]
CASES = (
    [("LSTM", dict(c, proj_size=p)) for c in CONFIGS for p in (0, P)]
    + [("GRU", c) for c in CONFIGS]
    + [("RNN", dict(c, nonlinearity=nl)) for c in CONFIGS[::2] for nl in ("tanh", "relu")]
)


@pytest.mark.parametrize(("mode", "kw"), CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("given", [False, True], ids=["h0-none", "h0-given"])
def test_padded_equals_torch(mode, kw, given):
    ours, theirs = _pair(mode, dropout=0.0, **kw)
    ours.eval(), theirs.eval()
    x = torch.randn(B, T, IN, dtype=torch.float64)
    x = x if kw["batch_first"] else x.transpose(0, 1).contiguous()
    hx = _initial(mode, kw, B) if given else None
    _compare(ours, theirs, x, x, hx)


@pytest.mark.parametrize(("mode", "kw"), CASES[::3], ids=lambda v: str(v))
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_equals_torch(mode, kw, enforce_sorted):
    ours, theirs = _pair(mode, **kw)
    lengths = sorted(LENGTHS, reverse=True) if enforce_sorted else LENGTHS
    x = torch.randn(B, T, IN, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    out = _compare(ours, theirs, packed, packed, _initial(mode, kw, B))
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    assert out.sorted_indices is packed.sorted_indices


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_sequence_batch_equals_packed_torch(mode):
    kw = dict(num_layers=2, bidirectional=True)
    ours, theirs = _pair(mode, **kw)
    seqs = [torch.randn(n, IN, dtype=torch.float64) for n in LENGTHS]
    out, st = ours(SequenceBatch.from_list(seqs))
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    ref, st_ref = theirs(packed)
    assert isinstance(out, SequenceBatch)
    ref_list = nn.utils.rnn.unpad_sequence(*pad_packed_sequence(ref), batch_first=False)
    for a, b in zip(out.to_list(), ref_list, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    for a, b in zip(_flat(st, st)[1:], _flat(st_ref, st_ref)[1:], strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_unbatched_equals_torch():
    ours, theirs = _pair("LSTM", num_layers=2)
    x = torch.randn(T, IN, dtype=torch.float64)
    hx = tuple(s[:, 0] for s in _initial("LSTM", dict(num_layers=2), 1))
    _compare(ours, theirs, x, x, hx)


def test_state_dict_both_ways():
    torch.manual_seed(1)
    theirs = nn.LSTM(IN, H, num_layers=2, bidirectional=True, proj_size=P, dtype=torch.float64)
    ours = rnn.LSTM(IN, H, num_layers=2, bidirectional=True, proj_size=P, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(T, B, IN, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_against_torch_under_the_same_seed(mode):
    ours, theirs = _pair(mode, num_layers=3, dropout=0.5)
    ours.train(), theirs.train()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    torch.manual_seed(7)
    a = ours(x)[0]
    torch.manual_seed(7)
    b = theirs(x)[0]
    torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    torch.manual_seed(8)
    assert (ours(x)[0] - a).abs().max() > 1e-3  # another seed, another mask
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ours(x)[0], atol=0, rtol=0)


def test_learned_initial_state_is_used_and_trained():
    torch.manual_seed(0)
    model = rnn.LSTM(IN, H, num_layers=2, learned_initial_state=True, dtype=torch.float64)
    with torch.no_grad():
        model.h_0.normal_(), model.c_0.normal_()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    hx = tuple(p.unsqueeze(1).expand(-1, B, -1).contiguous() for p in (model.h_0, model.c_0))
    torch.testing.assert_close(model(x)[0], model(x, hx)[0], atol=TOL, rtol=0)
    model(x)[0].sum().backward()
    assert model.h_0.grad is not None and model.h_0.grad.abs().sum() > 0


def test_layer_norm_lstm_equals_a_loop_over_its_cell():
    torch.manual_seed(0)
    model = rnn.LSTM(IN, H, layer_norm=True, dtype=torch.float64)
    assert "layer_norm_ih_l0.weight" in model.state_dict()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    out, (_, c) = model(x)
    cell = model._layers[0][0].cell
    state = cell.initial_state(B, dtype=torch.float64)
    for t in range(T):
        state = cell(x[t], state)
        torch.testing.assert_close(out[t], state[0], atol=TOL, rtol=0)
    torch.testing.assert_close(c[0], state[1], atol=TOL, rtol=0)


def _loop_final(cell, seqs, backwards=False):
    finals = []
    for s in seqs:
        state = cell.initial_state(1, dtype=s.dtype)
        for t in reversed(range(len(s))) if backwards else range(len(s)):
            state = cell(s[t : t + 1], state)
        finals.append(as_tuple(state))
    return tuple(torch.cat(parts) for parts in zip(*finals, strict=True))


@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_recurrence_and_bidirectional_final_states_against_a_loop(backend):
    torch.manual_seed(0)
    f, b = LSTMCell(IN, H).double(), LSTMCell(IN, H).double()
    seqs = [torch.randn(n, IN, dtype=torch.float64) for n in LENGTHS]
    x = SequenceBatch.from_list(seqs)
    _, final = Recurrence(f, backend=backend).with_final_state(x)
    for a, e in zip(final, _loop_final(f, seqs), strict=True):
        torch.testing.assert_close(a, e, atol=TOL, rtol=0)
    bi = Bidirectional(
        Recurrence(f, backend=backend), Recurrence(b, go_backwards=True, backend=backend)
    )
    out, (ff, bf) = bi.with_final_state(x)
    torch.testing.assert_close(out.data, bi(x).data, atol=TOL, rtol=0)
    for a, e in zip(ff + bf, _loop_final(f, seqs) + _loop_final(b, seqs, True), strict=True):
        torch.testing.assert_close(a, e, atol=TOL, rtol=0)
    g = GRUCell(IN, H).double()
    final = Fold(g, backend=backend).final_state(x)
    torch.testing.assert_close(final, _loop_final(g, seqs)[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("total_length", [None, 6, 9])
def test_to_padded_total_length_equals_pad_packed_sequence(total_length):
    seqs = [torch.randn(n, 2) for n in LENGTHS]
    padded, lengths = SequenceBatch.from_list(seqs).to_padded(-1.0, total_length=total_length)
    ref, ref_lengths = pad_packed_sequence(
        nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False),
        batch_first=True,
        padding_value=-1.0,
        total_length=total_length,
    )
    torch.testing.assert_close(padded, ref, atol=0, rtol=0)
    assert lengths.tolist() == ref_lengths.tolist()


def test_to_padded_refuses_a_short_total_length():
    x = SequenceBatch.from_list([torch.randn(n, 2) for n in LENGTHS])
    with pytest.raises(
        ValueError, match=r"^total_length: expected at least the longest length 6, found 5$"
    ):
        x.to_padded(total_length=5)


def test_dtype_errors_name_the_layer_expected_and_found():
    model = rnn.LSTM(IN, H)
    with pytest.raises(
        TypeError,
        match=r"^input: LSTM expected dtype torch.float32 \(its parameters'\), "
        r"found torch.float64$",
    ):
        model(torch.randn(T, B, IN, dtype=torch.float64))
    x = SequenceBatch.from_list([torch.randn(n, IN, dtype=torch.float64) for n in LENGTHS])
    with pytest.raises(
        TypeError,
        match=r"^x: LSTMCell expected input of dtype torch.float32 \(its parameters'\), "
        r"found torch.float64$",
    ):
        Recurrence(LSTMCell(IN, H))(x)
    with pytest.raises(TypeError, match="^x: GRUCell expected input of dtype torch.float32"):
        Fold(GRUCell(IN, H))(x)


def test_device_errors_name_the_layer_expected_and_found():
    model = rnn.GRU(IN, H, device="meta")
    with pytest.raises(
        ValueError, match=r"^input: GRU expected device meta \(its parameters'\), found cpu$"
    ):
        model(torch.randn(T, B, IN))
    x = SequenceBatch.from_list([torch.randn(n, IN) for n in LENGTHS])
    with pytest.raises(
        ValueError,
        match=r"^x: GRUCell expected input on device meta \(its parameters'\), found cpu$",
    ):
        Recurrence(GRUCell(IN, H).to("meta"))(x)


def test_hx_shape_error():
    model = rnn.LSTM(IN, H, num_layers=2)
    with pytest.raises(
        ValueError, match=r"hx: LSTM expected h_0 of shape \(2, 4, 5\), found \(1, 4, 5\)"
    ):
        model(torch.randn(T, B, IN), (torch.zeros(1, B, H), torch.zeros(2, B, H)))


def _plain_regularized_loop(cell, x, mask, rate_z):
    """h_in = mask ⊙ h at every step (mask None: none); zoneout's evaluation mean at rate_z."""
    state = as_tuple(cell.initial_state(x.shape[1], dtype=x.dtype))
    outs = []
    for t in range(x.shape[0]):
        h = state[0] * mask if mask is not None else state[0]
        new = as_tuple(cell(x[t], (h, *state[1:]) if len(state) > 1 else h))
        if rate_z:
            new = tuple(rate_z * o + (1 - rate_z) * n for o, n in zip(state, new, strict=True))
        state = new
        outs.append(state[0])
    return torch.stack(outs), state


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_zoneout_in_evaluation_equals_a_plain_loop(mode):
    torch.manual_seed(0)
    model = getattr(rnn, mode)(IN, H, zoneout=0.3, dtype=torch.float64).eval()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    out, st = model(x)
    ref, ref_state = _plain_regularized_loop(model._layers[0][0].cell.inner[0], x, None, 0.3)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    torch.testing.assert_close(as_tuple(st)[-1][0], ref_state[-1], atol=TOL, rtol=0)


def test_zoneout_in_training_keeps_the_rate_of_units():
    torch.manual_seed(0)
    model = rnn.GRU(IN, 64, zoneout=0.25, dtype=torch.float64).train()
    x = torch.randn(200, 8, IN, dtype=torch.float64)
    out = model(x)[0]
    kept = (out[1:] == out[:-1]).double().mean().item()  # a unit equal to its previous value
    # 199 * 8 * 64 = 101,888 Bernoulli(0.25) draws: standard error 0.0014
    assert abs(kept - 0.25) < 0.01


def test_recurrent_dropout_uses_one_mask_per_sequence():
    torch.manual_seed(0)
    model = rnn.LSTM(IN, H, recurrent_dropout=0.5, dtype=torch.float64).train()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    out, _ = model(x)
    wrapper = model._layers[0][0].cell
    mask = wrapper._mask  # sorted order is the caller's order for equal lengths
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    ref, _ = _plain_regularized_loop(wrapper.inner[0], x, mask, 0)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    model.eval()
    theirs = nn.LSTM(IN, H, dtype=torch.float64)
    theirs.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x)[0], theirs(x)[0], atol=TOL, rtol=0)


def test_recurrent_dropout_keeps_about_one_minus_the_rate():
    torch.manual_seed(0)
    model = rnn.GRU(IN, 256, recurrent_dropout=0.3).train()
    model(torch.randn(2, 64, IN))
    mask = model._layers[0][0].cell._mask
    # 64 * 256 = 16,384 draws of Bernoulli(0.7): standard error 0.0036
    assert abs((mask > 0).float().mean().item() - 0.7) < 0.02


def test_autocast_is_not_a_dtype_mismatch():
    torch.manual_seed(0)
    model = rnn.LSTM(IN, H)
    x = torch.randn(T, B, IN, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)[0]
        ref = model(x.float())[0]
    torch.testing.assert_close(out.float(), ref.float(), atol=0.05, rtol=0)
