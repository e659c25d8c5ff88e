"""Matrix-state recurrences (rnnkit.modern.matrix, rnnkit.modern.delta): step, loop and the
chunked parallel form against a float64 sequential loop written here from the papers'
equations (GLA, Mamba-2/SSD, mLSTM without its stabiliser, DeltaNet and Gated DeltaNet in
the papers' ``[d_v, d_k]`` orientation), on a ragged batch whose longest sequence is not a
multiple of the chunk; gradients loop against chunked; float64 gradcheck of the chunked form;
streaming in two halves; the bad inputs.

Tolerances: float32 outputs and states within 1e-5 (absolute, plus 1e-5 relative) of the
float64 oracle at sizes whose outputs are of order 1; gradients of float32 loop and chunked
forms within 1e-4.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit import Fold, Recurrence, RecurrenceFrom, SequenceBatch, load, save
from rnnkit.modern.blocks import SequenceModel
from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
from rnnkit.modern.matrix import GLACell, Mamba2Cell, MatrixCell, MLSTMCell
from rnnkit.modern.matrix_blocks import (
    GLA,
    MLSTM,
    DeltaNet,
    Mamba2,
    deltanet_mixer,
    gla_mixer,
    mamba2_mixer,
    mlstm_mixer,
)
from rnnkit.recurrence import select_backend

pytestmark = pytest.mark.usefixtures("one_thread")

IN, H, HEADS, DK = 6, 8, 2, 3  # d_v = 4: key and value sizes differ, so a transpose shows
LENGTHS = (37, 20, 5)
CHUNK = 8  # 37 is not a multiple

Oracle = Callable[[MatrixCell, Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


def _params(cell: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().double() for k, v in cell.named_parameters()}


def _rows(w: Tensor, *sizes: int) -> list[Tensor]:
    return list(w.split(list(sizes), 0))


def oracle_gla(cell: MatrixCell, x: Tensor, state: tuple[Tensor, ...]):
    """Yang et al. 2024: S = diag(α) S + kᵀ v, o = q S, α = σ(W2 W1 x + b)^(1/16)."""
    p = _params(cell)
    hk = HEADS * cell.key_size
    wq, wk, wv = _rows(p["weight_ih"], hk, hk, H)
    s = state[1].double().clone()
    outs = []
    for xt in x.double():
        gate = p["weight_gate_up"] @ (p["weight_gate_down"] @ xt) + p["bias_gate"]
        alpha = torch.sigmoid(gate) ** (1 / 16)
        q, k, v, a = (wq @ xt).view(HEADS, -1), (wk @ xt).view(HEADS, -1), wv @ xt, alpha
        v, a = v.view(HEADS, -1), a.view(HEADS, -1)
        o = []
        for j in range(HEADS):
            s[j] = torch.diag(a[j]) @ s[j] + torch.outer(k[j], v[j])
            o.append(q[j] @ s[j])
        outs.append(torch.cat(o))
    out = torch.stack(outs)
    return out, (out[-1], s)


def oracle_mamba2(cell: MatrixCell, x: Tensor, state: tuple[Tensor, ...]):
    """Dao & Gu 2024: a = exp(Δ A), S = a S + Δ Bᵀ x_h, y = C S + D x_h."""
    p = _params(cell)
    n = cell.key_size
    wx, wb, wc, wdt = _rows(p["weight_ih"], H, n, n, HEADS)
    a_h = -torch.exp(p["A_log"])
    s = state[1].double().clone()
    outs = []
    for xt in x.double():
        xh = (wx @ xt).view(HEADS, -1)
        bm, cm = wb @ xt, wc @ xt
        dt = F.softplus(wdt @ xt + p["dt_bias"])
        y = []
        for j in range(HEADS):
            s[j] = math.exp(float(dt[j] * a_h[j])) * s[j] + dt[j] * torch.outer(bm, xh[j])
            y.append(cm @ s[j] + p["D"][j] * xh[j])
        outs.append(torch.cat(y))
    out = torch.stack(outs)
    return out, (out[-1], s)


def oracle_mlstm(cell: MatrixCell, x: Tensor, state: tuple[Tensor, ...]):
    """Beck et al. 2024 without the stabiliser (float64 holds the range): C = f C + i kᵀ v,
    n = f n + i k, h = σ(o) ⊙ q C / max(|q · n|, 1). The state given and returned is the
    cell's stabilised one, (h, C e^{-m}, n e^{-m}, m); the final one with m = 0."""
    p = _params(cell)
    hk = HEADS * cell.key_size
    w, bias = p["weight_ih"], p["bias_ih"]
    _, c, n, m = (s.double() for s in state)
    c = c * torch.exp(m)[:, None, None]
    n = n * torch.exp(m)[:, None]
    outs = []
    for xt in x.double():
        q, k, v, ig, fg, og = (w @ xt + bias).split([hk, hk, H, HEADS, HEADS, H])
        q, k, v = q.view(HEADS, -1), k.view(HEADS, -1) / math.sqrt(cell.key_size), v.view(HEADS, -1)
        i = torch.exp(ig)
        f = torch.sigmoid(fg) if cell.forget == "sigmoid" else torch.exp(fg)
        h = []
        for j in range(HEADS):
            c[j] = f[j] * c[j] + i[j] * torch.outer(k[j], v[j])
            n[j] = f[j] * n[j] + i[j] * k[j]
            h.append(q[j] @ c[j] / torch.clamp((q[j] @ n[j]).abs(), min=1.0))
        outs.append(torch.sigmoid(og) * torch.cat(h))
    out = torch.stack(outs)
    return out, (out[-1], c, n, torch.zeros(HEADS, dtype=torch.float64))


def oracle_delta(cell: MatrixCell, x: Tensor, state: tuple[Tensor, ...]):
    """Yang et al. 2024/2025 in the papers' orientation ``S [d_v, d_k]``: S = α S (I - β k kᵀ)
    + β v kᵀ, o = S q (α = 1 for DeltaNet); the state compared as ``Sᵀ``."""
    p = _params(cell)
    hk = HEADS * cell.key_size
    gated = isinstance(cell, GatedDeltaNetCell)
    sizes = [hk, hk, H, HEADS] + ([HEADS] if gated else [])
    w, bias = p["weight_ih"], p["bias_ih"]
    s = state[1].double().transpose(-1, -2).clone()  # [h, d_v, d_k]
    eye = torch.eye(cell.key_size, dtype=torch.float64)
    outs = []
    for xt in x.double():
        parts = (w @ xt + bias).split(sizes)
        q = F.normalize(F.silu(parts[0].view(HEADS, -1)), dim=-1)
        k = F.normalize(F.silu(parts[1].view(HEADS, -1)), dim=-1)
        v, beta = parts[2].view(HEADS, -1), torch.sigmoid(parts[3])
        alpha = torch.ones(HEADS, dtype=torch.float64)
        if gated:
            alpha = torch.exp(-torch.exp(p["A_log"]) * F.softplus(parts[4] + p["dt_bias"]))
        o = []
        for j in range(HEADS):
            s[j] = alpha[j] * s[j] @ (eye - beta[j] * torch.outer(k[j], k[j]))
            s[j] = s[j] + beta[j] * torch.outer(v[j], k[j])
            o.append(s[j] @ q[j])
        outs.append(torch.cat(o))
    out = torch.stack(outs)
    return out, (out[-1], s.transpose(-1, -2))


def _gla(**kw) -> MatrixCell:
    return GLACell(IN, H, HEADS, DK, chunk_size=CHUNK, sub_chunk=4, **kw)


def _mamba2(**kw) -> MatrixCell:
    return Mamba2Cell(IN, H, HEADS, DK, chunk_size=CHUNK, **kw)


def _mlstm(**kw) -> MatrixCell:
    return MLSTMCell(IN, H, HEADS, DK, chunk_size=CHUNK, **kw)


def _delta(**kw) -> MatrixCell:
    return DeltaNetCell(IN, H, HEADS, DK, chunk_size=CHUNK, **kw)


def _gated_delta(**kw) -> MatrixCell:
    return GatedDeltaNetCell(IN, H, HEADS, DK, chunk_size=CHUNK, **kw)


KINDS: dict[str, tuple[Callable[..., MatrixCell], Oracle]] = {
    "gla": (_gla, oracle_gla),
    "mamba2": (_mamba2, oracle_mamba2),
    "mlstm": (_mlstm, oracle_mlstm),
    "mlstm_exp": (lambda **kw: _mlstm(forget="exp", **kw), oracle_mlstm),
    "deltanet": (_delta, oracle_delta),
    "gated_deltanet": (_gated_delta, oracle_delta),
}


def _cell(kind: str, seed: int = 0) -> MatrixCell:
    torch.manual_seed(seed)
    cell = KINDS[kind][0]()
    if isinstance(cell, MLSTMCell):  # input gates near 1 rather than e^-10: a real test
        with torch.no_grad():
            cell.bias_ih.normal_(0.0, 0.5)
    if isinstance(cell, (Mamba2Cell, GatedDeltaNetCell)):  # decays well inside (0, 1)
        with torch.no_grad():
            cell.dt_bias.normal_(0.0, 0.5)
    return cell


def _batch(lengths=LENGTHS, seed: int = 1) -> SequenceBatch:
    gen = torch.Generator().manual_seed(seed)
    return SequenceBatch.from_list([torch.randn(n, IN, generator=gen) for n in lengths])


def _state(cell: MatrixCell, batch: int, seed: int = 2) -> tuple[Tensor, ...]:
    """A random start, different in every state tensor and row (m of the mLSTM too)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(0.5 * torch.randn(s.shape, generator=gen) for s in cell.initial_state(batch))


def _close(a: Tensor, b: Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol)


def _true_state(cell: MatrixCell, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The mLSTM's stabilised (h, C, n, m) as the unstabilised (h, C e^m, n e^m, 0)."""
    if not isinstance(cell, MLSTMCell):
        return state
    h, c, n, m = (s.double() for s in state)
    e = torch.exp(m)
    return h, c * e[..., None, None], n * e[..., None], torch.zeros_like(m)


@pytest.mark.parametrize("kind", list(KINDS))
def test_step_loop_and_chunked_equal_the_float64_loop(kind):
    cell = _cell(kind)
    x = _batch()
    start = _state(cell, len(LENGTHS))
    oracle = KINDS[kind][1]
    expected = [oracle(cell, seq, tuple(s[b] for s in start)) for b, seq in enumerate(x.to_list())]
    for backend in ("loop", "scan"):
        out, final = RecurrenceFrom(cell, backend=backend).with_final_state(start, x)
        for b, (seq_out, (want_out, want_final)) in enumerate(
            zip(out.to_list(), expected, strict=True)
        ):
            _close(seq_out, want_out)
            got_final = _true_state(cell, tuple(s[b : b + 1] for s in final))
            for got, want in zip(got_final, want_final, strict=True):
                _close(got[0], want)
    # step: one input at a time, state in and out (streaming), for the middle sequence
    state = tuple(s[1:2] for s in start)
    steps = []
    for xt in x.to_list()[1]:
        state = cell(xt.unsqueeze(0), state)
        steps.append(state[0][0])
    _close(torch.stack(steps), expected[1][0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_of_loop_and_chunked_agree(kind):
    cell = _cell(kind)
    x = _batch()
    start = _state(cell, len(LENGTHS))
    gen = torch.Generator().manual_seed(3)
    w_out = torch.randn(x.data.shape[0], H, generator=gen)
    w_final = [torch.randn(s.shape, generator=gen) for s in start]
    grads = []
    for backend in ("loop", "scan"):
        data = x.data.clone().requires_grad_()
        s0 = tuple(s.clone().requires_grad_() for s in start)
        out, final = RecurrenceFrom(cell, backend=backend).with_final_state(s0, x.with_data(data))
        loss = (out.data * w_out).sum() + sum(
            (f * w).sum() for f, w in zip(final, w_final, strict=True)
        )
        params = list(cell.parameters())
        grads.append(torch.autograd.grad(loss, [data, *s0, *params], materialize_grads=True))
    for g_loop, g_scan in zip(*grads, strict=True):
        torch.testing.assert_close(g_scan, g_loop, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_of_the_chunked_form_in_float64(kind):
    torch.manual_seed(0)
    make = KINDS[kind][0]
    cell = make().double()
    cell.chunk_size = 2
    if isinstance(cell, GLACell):
        cell.sub_chunk = 1
    x = _batch((5, 3)).to(torch.float64)
    start = tuple(s.double() for s in _state(cell, 2))
    recurrence = RecurrenceFrom(cell, backend="scan")

    def run(data: Tensor, *s0: Tensor) -> tuple[Tensor, ...]:
        out, final = recurrence.with_final_state(s0, x.with_data(data))
        return (out.data, *final)

    inputs = (x.data.clone().requires_grad_(), *(s.clone().requires_grad_() for s in start))
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("backend", ["loop", "scan"])
def test_streaming_in_two_halves_equals_the_whole(kind, backend):
    cell = _cell(kind)
    lengths, cut = (37, 20, 17), 11
    x = _batch(lengths)
    seqs = x.to_list()
    first = SequenceBatch.from_list([s[:cut] for s in seqs])
    second = SequenceBatch.from_list([s[cut:] for s in seqs])
    start = _state(cell, len(lengths))
    whole, whole_final = RecurrenceFrom(cell, backend=backend).with_final_state(start, x)
    a, middle = RecurrenceFrom(cell, backend=backend).with_final_state(start, first)
    b, final = RecurrenceFrom(cell, backend=backend).with_final_state(middle, second)
    for w, p, q in zip(whole.to_list(), a.to_list(), b.to_list(), strict=True):
        _close(torch.cat([p, q]), w)
    for got, want in zip(final, whole_final, strict=True):
        _close(got, want)


def test_mlstm_stabiliser_holds_input_gates_that_overflow_float32():
    """ĩ around 60 (e^60 ≈ 1e26, e^120 overflows float32) and exp forget gates: the
    stabilised chunked form and loop still equal the unstabilised float64 loop (within 1e-4:
    the normaliser q · n sums terms of both signs, which float32 rounds)."""
    cell = _cell("mlstm_exp")
    start_i = 2 * HEADS * DK + H
    with torch.no_grad():
        cell.bias_ih[start_i : start_i + HEADS].fill_(60.0)
        cell.bias_ih[start_i + HEADS : start_i + 2 * HEADS].fill_(0.5)
    x = _batch((12, 9))
    start = tuple(torch.zeros_like(s) for s in cell.initial_state(2))
    expected = [
        oracle_mlstm(cell, seq, tuple(s[b] for s in start)) for b, seq in enumerate(x.to_list())
    ]
    for backend in ("loop", "scan"):
        out = RecurrenceFrom(cell, backend=backend)(start, x)
        assert torch.isfinite(out.data).all()
        for seq_out, (want, _) in zip(out.to_list(), expected, strict=True):
            _close(seq_out, want, 1e-4)


def test_gla_chunks_stay_exact_under_strong_decays():
    """Gates of σ(-60)^(1/16) (log α ≈ -3.75 per step, e^{-30} over a sub-chunk of 8): the
    two-level chunked form has no factor above 1, so it still equals the float64 loop."""
    torch.manual_seed(0)
    cell = GLACell(IN, H, HEADS, DK, chunk_size=16, sub_chunk=8)
    with torch.no_grad():
        cell.bias_gate.uniform_(-80.0, -40.0)
    x = _batch()
    start = _state(cell, len(LENGTHS))
    out = RecurrenceFrom(cell, backend="scan")(start, x)
    for b, seq in enumerate(x.to_list()):
        want, _ = oracle_gla(cell, seq, tuple(s[b] for s in start))
        _close(out.to_list()[b], want)


@pytest.mark.parametrize("kind", list(KINDS))
def test_fold_and_backwards_runs_agree_between_loop_and_chunked(kind):
    cell = _cell(kind)
    x = _batch()
    with torch.no_grad():
        folds = [Fold(cell, backend=b)(x) for b in ("loop", "scan")]
        backwards = [
            Recurrence(cell, go_backwards=True, backend=b)(x).data for b in ("loop", "scan")
        ]
        finals = [Fold(cell, backend=b).final_state(x) for b in ("loop", "scan")]
    _close(folds[1], folds[0])
    _close(backwards[1], backwards[0])
    for got, want in zip(*finals, strict=True):
        _close(got, want)


@pytest.mark.parametrize("kind", list(KINDS))
def test_auto_runs_the_chunked_form_from_16_steps(kind):
    cell = _cell(kind)
    assert select_backend(cell, "auto", x=_batch((15, 3))) == "loop"
    assert select_backend(cell, "auto", x=_batch((16, 3))) == "scan"
    assert select_backend(cell, "auto", every_state=True, x=_batch((16, 3))) == "loop"


def test_gla_gates_past_the_clamp_agree_in_every_form():
    """Gate pre-activations of -500 (log α = -31 per step, clamped at -10 in every form):
    the loop and the chunked form stay finite and equal."""
    torch.manual_seed(0)
    cell = GLACell(IN, H, HEADS, DK, chunk_size=16, sub_chunk=8)
    with torch.no_grad():
        cell.bias_gate.fill_(-500.0)
    x = _batch()
    start = _state(cell, len(LENGTHS))
    loop, scan = (RecurrenceFrom(cell, backend=b)(start, x).data for b in ("loop", "scan"))
    assert torch.isfinite(scan).all()
    _close(scan, loop)


# ---------------------------------------------------------------------------- mixers

MIXERS = {
    "gla": gla_mixer,
    "mamba2": mamba2_mixer,
    "mlstm": mlstm_mixer,
    "deltanet": deltanet_mixer,
    "gated_deltanet": lambda d, heads: deltanet_mixer(d, heads, gated=True),
}


@pytest.mark.parametrize("kind", list(MIXERS))
def test_mixers_agree_in_loop_chunked_step_and_two_halves(kind):
    """The mixer (convolution, cell, norm, gate, projection): the chunked form equals the
    loop, one step at a time equals both, and two halves with the carried state (the
    convolution's cache included) equal the whole."""
    torch.manual_seed(0)
    mixer = MIXERS[kind](8, heads=2)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 8, generator=gen) for n in (37, 20, 17)]
    x = SequenceBatch.from_list(seqs)
    loop, loop_final = Recurrence(mixer, backend="loop").with_final_state(x)
    scan, scan_final = Recurrence(mixer, backend="scan").with_final_state(x)
    _close(scan.data, loop.data)
    for got, want in zip(scan_final, loop_final, strict=True):
        _close(got, want)
    state = mixer.initial_state(1)
    for t, xt in enumerate(seqs[1]):
        state = mixer(xt.unsqueeze(0), state)
        _close(state[0][0], loop.to_list()[1][t])
    cut = 11
    first = SequenceBatch.from_list([s[:cut] for s in seqs])
    second = SequenceBatch.from_list([s[cut:] for s in seqs])
    a, middle = Recurrence(mixer, backend="scan").with_final_state(first)
    b, final = RecurrenceFrom(mixer, backend="scan").with_final_state(middle, second)
    for w, p, q in zip(loop.to_list(), a.to_list(), b.to_list(), strict=True):
        _close(torch.cat([p, q]), w)
    for got, want in zip(final, loop_final, strict=True):
        _close(got, want)


BLOCKS = {
    "gla": lambda: GLA(8, heads=2),
    "mamba2": lambda: Mamba2(8, heads=2, state_size=4),
    "mlstm": lambda: MLSTM(8, heads=2),
    "deltanet": lambda: DeltaNet(8, heads=2),
    "gated_deltanet": lambda: DeltaNet(8, heads=2, gated=True),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_a_two_layer_stack_trains_streams_and_reloads(kind, tmp_path):
    """Three Adam steps on a fixed batch lower the loss; the step form fed one input at a
    time gives the model's outputs; a saved model reloads to the same outputs."""
    torch.manual_seed(0)
    model = SequenceModel([BLOCKS[kind](), BLOCKS[kind]()], 8, input_size=3, output_size=2)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 3, generator=gen) for n in (17, 9, 5)]
    x = SequenceBatch.from_list(seqs)
    target = torch.randn(x.data.shape[0], 2, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x).data, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        whole = model(x).to_list()
        cell = model.step_cell()
        state = cell.initial_state(1)
        for t, xt in enumerate(seqs[1]):
            state = cell(xt.unsqueeze(0), state)
            _close(state[0][0], whole[1][t])
        save(model, tmp_path / "model")
        _close(load(tmp_path / "model")(x).data, model(x).data, 0.0)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [GLACell, Mamba2Cell, MLSTMCell, DeltaNetCell, GatedDeltaNetCell])
@pytest.mark.parametrize("chunk", [0, -4, 2.5, True])
def test_a_chunk_size_that_is_not_a_positive_int_is_refused(make, chunk):
    with pytest.raises(ValueError, match=rf"chunk_size: expected a positive int, found {chunk!r}"):
        make(IN, H, HEADS, DK, chunk_size=chunk)


def test_a_sub_chunk_that_does_not_divide_the_chunk_is_refused():
    with pytest.raises(
        ValueError, match="sub_chunk: expected a divisor of chunk_size=32 of at most 8, found 12"
    ):
        GLACell(IN, H, HEADS, DK, chunk_size=32, sub_chunk=12)
    with pytest.raises(ValueError, match="chunk_size=32 of at most 8, found 16"):
        GLACell(IN, H, HEADS, DK, chunk_size=32, sub_chunk=16)


@pytest.mark.parametrize("chunk,sub", [(16, 8), (4, 4), (12, 6), (7, 7), (9, 3), (11, 1)])
def test_the_gla_layer_takes_any_chunk_size_with_its_largest_sub_chunk_up_to_8(chunk, sub):
    assert gla_mixer(8, heads=2, chunk_size=chunk).cell.sub_chunk == sub
    with pytest.raises(ValueError, match="chunk_size: expected a positive int, found 0"):
        gla_mixer(8, heads=2, chunk_size=0)


@pytest.mark.parametrize("decay", [(0.0, 0.5), (0.5, 1.0), (0.9, 0.5), (-0.1, 0.5), (1.2, 1.5)])
@pytest.mark.parametrize("make", [GLACell, MLSTMCell])
def test_a_decay_outside_zero_one_is_refused(make, decay):
    with pytest.raises(
        ValueError,
        match=r"decay: expected a range \(low, high\) of decays with "
        rf"0 < low <= high < 1, found {re.escape(repr(decay))}",
    ):
        make(IN, H, HEADS, DK, decay=decay)


@pytest.mark.parametrize("kind", list(KINDS))
def test_step_refuses_a_state_of_the_wrong_shape(kind):
    cell = _cell(kind)
    state = list(cell.initial_state(3))
    state[1] = torch.zeros(3, HEADS, DK + 1, H // HEADS)
    px = cell.input_projection(torch.randn(3, IN))
    name = type(cell).__name__
    with pytest.raises(
        ValueError,
        match=rf"{name}.step: expected a state of shapes .*\(3, 2, 3, 4\).* found .*\(3, 2, 4, 4\)",
    ):
        cell.step(px, tuple(state))
    with pytest.raises(ValueError, match=rf"{name}.step: expected a state of shapes"):
        cell.step(px, cell.initial_state(2))


def test_hidden_size_must_split_into_heads():
    with pytest.raises(ValueError, match="hidden_size: expected a multiple of heads=3, found 8"):
        Mamba2Cell(IN, 8, heads=3)
