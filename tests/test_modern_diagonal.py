"""The diagonal recurrences of rnnkit.modern against float64 loops written here from the papers'
equations (LRU: Orvieto et al. 2023; RG-LRU: De et al. 2024; S6 and the Mamba block: Gu & Dao
2023), and linear_scan against a plain loop, torch.autograd.gradcheck and separate runs.

Tolerances: float32 forms within 1e-5 (absolute and relative) of the float64 oracle on inputs
of unit scale; float64 forms within 1e-10 of each other; gradcheck at its float64 defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from rnnkit import Bidirectional, Fold, Recurrence, RecurrenceFrom, SequenceBatch
from rnnkit.cells import as_tuple
from rnnkit.modern import scan
from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell, ShortConv
from rnnkit.modern.scan import linear_scan, packed_stream, scan_packed
from rnnkit.recurrence import select_backend

F64 = torch.float64

# ------------------------------------------------------------------ oracles from the equations


def plain_scan(a: Tensor, b: Tensor, h0: Tensor, resets: Tensor | None = None) -> Tensor:
    h, out = h0, []
    for t in range(b.shape[0]):
        a_t = a[min(t, a.shape[0] - 1)]
        if resets is not None:
            a_t = torch.where(resets[min(t, resets.shape[0] - 1)], torch.zeros_like(a_t), a_t)
        h = a_t * h + b[t]
        out.append(h)
    return torch.stack(out)


def lru_oracle(cell: LRUCell, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    p = {k: v.detach().to(F64) for k, v in cell.named_parameters()}
    n = cell.state_size
    lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
    b_mat = torch.complex(p["weight_ih"][:n], p["weight_ih"][n:])
    c_mat = torch.complex(p["C_re"], p["C_im"])
    gamma = torch.exp(p["gamma_log"])
    h = torch.zeros(n, dtype=torch.complex128)
    ys = []
    for x_t in x.to(F64):
        h = lam * h + gamma * (b_mat @ x_t.to(torch.complex128))
        ys.append((c_mat @ h).real + p["D"] * x_t)
    return torch.stack(ys), (ys[-1], h.real, h.imag)


def rglru_oracle(cell: RGLRUCell, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, ...]:
    w = cell.weight_ih.detach().to(F64)
    bias = cell.bias_ih.detach().to(F64)
    lam = cell.log_lambda.detach().to(F64)
    hsz = cell.hidden_size
    h = torch.zeros(hsz, dtype=F64) if h0 is None else h0
    hs = []
    for x_t in x.to(F64):
        r = torch.sigmoid(w[:hsz] @ x_t + bias[:hsz])
        i = torch.sigmoid(w[hsz:] @ x_t + bias[hsz:])
        a = torch.sigmoid(lam) ** (cell.c * r)  # the paper's form, not its log
        h = a * h + torch.sqrt(1 - a**2) * (i * x_t)
        hs.append(h)
    return torch.stack(hs), (h,)


def s6_oracle(
    cell: S6Cell, x: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    p = {k: v.detach().to(F64) for k, v in cell.named_parameters()}
    r, n = cell.dt_rank, cell.state_size
    a_mat = -torch.exp(p["A_log"])
    h = torch.zeros(cell.hidden_size, n, dtype=F64) if h0 is None else h0
    ys = []
    for x_t in x.to(F64):
        proj = p["weight_ih"] @ x_t
        delta, b_t, c_t = proj[:r], proj[r : r + n], proj[r + n :]
        dt = nn.functional.softplus(p["weight_dt"] @ delta + p["bias_dt"])
        h = torch.exp(dt[:, None] * a_mat) * h + (dt * x_t)[:, None] * b_t[None, :]
        ys.append(h @ c_t + p["D_skip"] * x_t)
    return torch.stack(ys), (ys[-1], h)


def conv_oracle(conv: ShortConv, u: Tensor) -> Tensor:
    w, bias = conv.weight.detach().to(F64), conv.bias.detach().to(F64)
    width = conv.width
    out = []
    for t in range(u.shape[0]):
        acc = bias.clone()
        for k in range(width):
            s = t - width + 1 + k
            if s >= 0:
                acc = acc + w[:, k] * u[s]
        out.append(acc)
    return torch.stack(out)


def conv_cache(conv: ShortConv, u: Tensor) -> Tensor:
    """The last W-1 inputs ``[D, W-1]``, oldest first, zeros before the first step."""
    padded = torch.cat([torch.zeros(conv.width - 1, u.shape[1], dtype=u.dtype), u])
    return padded[-(conv.width - 1) :].t()


def mamba_oracle(cell: MambaCell, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    x = x.to(F64)
    u, z = (x @ cell.weight_ih.detach().to(F64).t()).chunk(2, dim=-1)
    v = nn.functional.silu(conv_oracle(cell.conv, u))
    y, (_, h) = s6_oracle(cell.s6, v)
    out = (y * nn.functional.silu(z)) @ cell.out_proj.weight.detach().to(F64).t()
    return out, (out[-1], conv_cache(cell.conv, u), h)


def hawk_oracle(cell: HawkCell, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    x = x.to(F64)
    pre = x @ cell.weight_ih.detach().to(F64).t() + cell.bias_ih.detach().to(F64)
    g, u = pre.chunk(2, dim=-1)
    h, (h_last,) = rglru_oracle(cell.rglru, conv_oracle(cell.conv, u))
    lin = cell.out_proj
    out = (h * nn.functional.gelu(g)) @ lin.weight.detach().to(F64).t() + lin.bias.detach().to(F64)
    return out, (out[-1], conv_cache(cell.conv, u), h_last)


Oracle = Callable[[nn.Module, Tensor], tuple[Tensor, tuple[Tensor, ...]]]
CELLS: dict[str, tuple[Callable[[], nn.Module], Oracle]] = {
    "lru": (lambda: LRUCell(4, 6, r_min=0.5, r_max=0.99), lru_oracle),  # type: ignore[dict-item]
    "rglru": (lambda: RGLRUCell(4), rglru_oracle),  # type: ignore[dict-item]
    "s6": (lambda: S6Cell(4, 3), s6_oracle),  # type: ignore[dict-item]
    "mamba": (lambda: MambaCell(4, 3), mamba_oracle),  # type: ignore[dict-item]
    "hawk": (lambda: HawkCell(4, 5), hawk_oracle),  # type: ignore[dict-item]
}


def _batch(
    lengths: tuple[int, ...], size: int, dtype: torch.dtype = torch.float32
) -> SequenceBatch:
    g = torch.Generator().manual_seed(sum(lengths))
    return SequenceBatch.from_list(
        [torch.randn(n, size, generator=g, dtype=dtype) for n in lengths]
    )


# ------------------------------------------------------------------ linear_scan


@pytest.mark.parametrize("chunk", [None, 1, 3, 16])
@pytest.mark.parametrize("steps", [1, 5, 37, 300])
def test_linear_scan_equals_the_plain_loop(steps: int, chunk: int | None) -> None:
    g = torch.Generator().manual_seed(steps)
    a = torch.rand(steps, 3, 2, generator=g, dtype=F64)
    b = torch.randn(steps, 3, 2, generator=g, dtype=F64)
    h0 = torch.randn(3, 2, generator=g, dtype=F64)
    torch.testing.assert_close(linear_scan(a, b, h0, chunk=chunk), plain_scan(a, b, h0))


def test_linear_scan_complex_and_broadcast_decay() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 1, 4, generator=g, dtype=torch.complex128) * 0.7
    b = torch.randn(50, 3, 4, generator=g, dtype=torch.complex128)
    h0 = torch.randn(3, 4, generator=g, dtype=torch.complex128)
    want = plain_scan(a.expand(50, 3, 4), b, h0)
    torch.testing.assert_close(linear_scan(a, b, h0, chunk=7), want)


def test_linear_scan_gradcheck_real_complex_and_resets() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.rand(9, 2, 3, generator=g, dtype=F64).requires_grad_()
    b = torch.randn(9, 2, 3, generator=g, dtype=F64).requires_grad_()
    h0 = torch.randn(2, 3, generator=g, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h: linear_scan(a, b, h, chunk=4), (a, b, h0))
    resets = torch.zeros(9, 2, 1, dtype=torch.bool)
    resets[4, 0] = True
    assert torch.autograd.gradcheck(
        lambda a, b, h: linear_scan(a, b, h, resets=resets, chunk=2), (a, b, h0)
    )
    ac = (torch.randn(9, 1, 3, generator=g, dtype=torch.complex128) * 0.5).requires_grad_()
    bc = torch.randn(9, 2, 3, generator=g, dtype=torch.complex128).requires_grad_()
    hc = torch.randn(3, generator=g, dtype=torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h: linear_scan(a, b, h, chunk=3), (ac, bc, hc))


def test_resets_equal_separate_runs() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(20, 5, generator=g, dtype=F64)
    b = torch.randn(20, 5, generator=g, dtype=F64)
    resets = torch.zeros(20, 1, dtype=torch.bool)
    resets[[0, 6, 13]] = True
    got = linear_scan(a, b, torch.randn(5, dtype=F64), resets=resets, chunk=4)
    zero = torch.zeros(5, dtype=F64)
    want = torch.cat([plain_scan(a[s:e], b[s:e], zero) for s, e in ((0, 6), (6, 13), (13, 20))])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_packed_stream_runs_each_sequence_from_its_own_state() -> None:
    x = _batch((4, 9, 1, 6), 3, F64)
    g = torch.Generator().manual_seed(4)
    a = torch.rand(x.data.shape, generator=g, dtype=F64)
    h0 = torch.randn(4, 3, generator=g, dtype=F64)  # sorted order
    states, final = scan_packed(a, x.data, h0, x, chunk=3)
    xa = x.with_data(a)
    padded = plain_scan(xa.to_padded_time_major(), x.to_padded_time_major(), h0)
    torch.testing.assert_close(states, padded.flatten(0, 1)[x.padded_index])
    torch.testing.assert_close(final, padded[x.sorted_lengths - 1, torch.arange(4)])
    stream = packed_stream(x)
    assert stream.resets.sum().item() == 4
    assert torch.equal(stream.order[stream.inverse], torch.arange(x.data.shape[0]))


@pytest.mark.parametrize("chunk", [0, -2, 2.5, True])
def test_linear_scan_refuses_a_bad_chunk(chunk: object) -> None:
    with pytest.raises(ValueError, match=r"chunk: expected a positive integer .* found"):
        linear_scan(torch.ones(3, 2), torch.ones(3, 2), torch.zeros(2), chunk=chunk)  # type: ignore[arg-type]


# ------------------------------------------------------------------ cells: three forms vs oracle


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("lengths", [(7, 3, 1), (300, 120)])
def test_step_loop_and_parallel_equal_the_float64_equations(
    name: str, lengths: tuple[int, ...]
) -> None:
    make, oracle = CELLS[name]
    torch.manual_seed(0)
    cell = make()
    x = _batch(lengths, cell.input_size)
    wants = [oracle(cell, s) for s in x.to_list()]
    tol = {"atol": 1e-5, "rtol": 1e-5}
    for backend in ("loop", "scan"):
        out, final = Recurrence(cell, backend=backend).with_final_state(x)
        for got, (want, _) in zip(out.to_list(), wants, strict=True):
            torch.testing.assert_close(got.to(F64), want, **tol)
        for k, tensor in enumerate(final if isinstance(final, tuple) else (final,)):
            want_k = torch.stack([w[1][k] for w in wants])
            torch.testing.assert_close(tensor.to(F64), want_k, **tol)
    if max(lengths) > 10:
        return
    for seq, (want, _) in zip(x.to_list(), wants, strict=True):  # step: streaming by hand
        state = None
        outs = []
        for x_t in seq:
            state = cell(x_t.unsqueeze(0), state)
            outs.append((state[0] if isinstance(state, tuple) else state).squeeze(0))
        torch.testing.assert_close(torch.stack(outs).to(F64), want, **tol)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_equal_on_loop_and_parallel(name: str) -> None:
    make, _ = CELLS[name]
    torch.manual_seed(1)
    cell = make().double()
    x = _batch((9, 4, 2), cell.input_size, F64)
    grads = {}
    for backend in ("loop", "scan"):
        data = x.data.clone().requires_grad_()
        out, final = Recurrence(cell, backend=backend).with_final_state(x.with_data(data))
        last = final[-1] if isinstance(final, tuple) else final
        loss = (out.data * torch.linspace(-1, 1, out.data.shape[-1], dtype=F64)).sum()
        loss = loss + (last**2).sum()
        params = [p for _, p in sorted(cell.named_parameters())]
        grads[backend] = torch.autograd.grad(loss, [data, *params])
    for a, b in zip(grads["loop"], grads["scan"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradcheck_parallel_form_float64(name: str) -> None:
    make, _ = CELLS[name]
    torch.manual_seed(2)
    cell = make().double()
    x = _batch((3, 2), cell.input_size, F64)
    start = tuple(
        torch.randn(2, *s.shape[1:], dtype=F64) * 0.5 for s in as_tuple(cell.initial_state(1))
    )

    def run(data: Tensor, *state: Tensor) -> Tensor:
        layer = RecurrenceFrom(cell, backend="scan")
        out, final = layer.with_final_state(
            state if len(state) > 1 else state[0], x.with_data(data)
        )
        last = final[-1] if isinstance(final, tuple) else final
        flat = torch.cat([out.data.flatten(), last.flatten()])
        # Three random mixtures of every output: three backward passes per check, not one each.
        mix = torch.randn(flat.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=F64)
        return flat @ mix

    data = x.data.clone().requires_grad_()
    inputs = (data, *(s.requires_grad_() for s in start))
    assert torch.autograd.gradcheck(run, inputs, fast_mode=True)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("backend", ["loop", "scan"])
def test_streaming_in_two_halves_equals_the_whole(name: str, backend: str) -> None:
    make, _ = CELLS[name]
    torch.manual_seed(3)
    cell = make().double()
    x = _batch((11, 8), cell.input_size, F64)
    whole, whole_final = Recurrence(cell, backend=backend).with_final_state(x)
    seqs = x.to_list()
    first = SequenceBatch.from_list([s[:5] for s in seqs])
    second = SequenceBatch.from_list([s[5:] for s in seqs])
    layer = RecurrenceFrom(cell, backend=backend)
    start = cell.initial_state(2, dtype=F64)
    a, state = layer.with_final_state(start, first)
    b, final = layer.with_final_state(state, second)
    for w, u, v in zip(whole.to_list(), a.to_list(), b.to_list(), strict=True):
        torch.testing.assert_close(w, torch.cat([u, v]), atol=1e-12, rtol=1e-12)
    for w, f in zip(whole_final, final, strict=True):  # conv cache and SSM state included
        torch.testing.assert_close(w, f, atol=1e-12, rtol=1e-12)


def test_fold_bidirectional_and_auto_on_the_parallel_form() -> None:
    torch.manual_seed(4)
    cell = MambaCell(4, 3).double()
    x = _batch((30, 12, 5), 4, F64)
    for combinator in (
        Fold,
        lambda c, backend: Bidirectional(
            Recurrence(c, backend=backend), Recurrence(c, go_backwards=True, backend=backend)
        ),
    ):
        loop = combinator(cell, backend="loop")(x)
        scan = combinator(cell, backend="scan")(x)
        loop_t = loop if isinstance(loop, Tensor) else loop.data
        scan_t = scan if isinstance(scan, Tensor) else scan.data
        torch.testing.assert_close(loop_t, scan_t, atol=1e-12, rtol=1e-12)
    assert select_backend(cell, "auto", x=x) == "scan"
    short = _batch((15, 3), 4, F64)  # below PARALLEL_FROM steps the loop was as fast or faster
    assert select_backend(cell, "auto", x=short) == "loop"
    assert select_backend(cell, "auto", every_state=True, x=x) == "loop"
    states = Recurrence(cell).states(x)  # every state tensor: auto runs the loop
    assert [s.data.shape[1:] for s in states] == [(4,), (8, 3), (8, 3)]
    with pytest.raises(ValueError, match="backend='scan' gives the output of every step"):
        Recurrence(cell, backend="scan").states(x)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r_min": 0.0}, r"r_min: expected a decay modulus in \(0, 1\].*found 0.0"),
        ({"r_max": 1.5}, r"r_max: expected a decay modulus in \(0, 1\].*found 1.5"),
        ({"r_min": 0.9, "r_max": 0.5}, r"r_min: expected r_min <= r_max = 0.5, found 0.9"),
        ({"max_phase": 0.0}, r"max_phase: expected a positive angle, found 0.0"),
    ],
)
def test_lru_refuses_a_decay_outside_the_unit_interval(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LRUCell(4, 4, **kwargs)


def test_rglru_and_s6_refuse_bad_ranges() -> None:
    with pytest.raises(ValueError, match=r"a_max: expected a decay a\^c in \(0, 1\), found 1.0"):
        RGLRUCell(4, a_max=1.0)
    with pytest.raises(ValueError, match="c: expected a positive exponent scale"):
        RGLRUCell(4, c=0.0)
    with pytest.raises(ValueError, match="dt_min, dt_max: expected 0 < dt_min <= dt_max"):
        S6Cell(4, dt_min=0.2, dt_max=0.1)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_refuses_a_state_of_the_wrong_shape(name: str) -> None:
    cell = CELLS[name][0]()
    good = cell.initial_state(2)
    good_t = good if isinstance(good, tuple) else (good,)
    bad = (*good_t[:-1], torch.zeros(2, *[d + 1 for d in good_t[-1].shape[1:]]))
    px = cell.input_projection(torch.zeros(2, cell.input_size))
    kind = type(cell).__name__
    with pytest.raises(ValueError, match=rf"state: {kind} expected a state of .* found"):
        cell.step(px, bad if len(bad) > 1 else bad[0])


def test_lru_initialisation_lies_on_the_ring() -> None:
    cell = LRUCell(8, 256, r_min=0.4, r_max=0.8, max_phase=math.pi / 4)
    re, im = cell.decay()
    modulus = torch.sqrt(re**2 + im**2)
    assert modulus.min().item() >= 0.4 - 1e-6 and modulus.max().item() <= 0.8 + 1e-6
    phase = torch.atan2(im, re)
    assert phase.min().item() >= 0.0 and phase.max().item() <= math.pi / 4 + 1e-6
    torch.testing.assert_close(torch.exp(cell.gamma_log), torch.sqrt(1 - modulus**2))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_selective_scan_in_chunks_equals_the_plain_loop(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mamba's selective scan against the equations written as a loop, in float64, values and
    the gradients of every input (through the outputs and the states), whatever the number of
    steps per chunk (the chunk boundaries at 3 and 7 do not divide the 20 steps)."""
    steps, batch, d, n = 20, 2, 3, 4
    monkeypatch.setattr(scan, "SCAN_SLAB", chunk * batch * d * n)
    gen = torch.Generator().manual_seed(5)
    delta = torch.rand(steps, batch, d, generator=gen, dtype=F64) * 0.5 + 0.05
    a = -torch.rand(d, n, generator=gen, dtype=F64) - 0.5
    b, c = (torch.randn(steps, batch, n, generator=gen, dtype=F64) for _ in range(2))
    u = torch.randn(steps, batch, d, generator=gen, dtype=F64)
    h0 = torch.randn(batch, d, n, generator=gen, dtype=F64)
    mix_y = torch.randn(steps, batch, d, generator=gen, dtype=F64)
    mix_h = torch.randn(steps, batch, d, n, generator=gen, dtype=F64)

    def loop(*args: Tensor) -> tuple[Tensor, Tensor]:
        delta, a, b, c, u, h = args
        ys, hs = [], []
        for t in range(steps):
            h = (
                torch.exp(delta[t, ..., None] * a) * h
                + (delta[t] * u[t])[..., None] * b[t, :, None]
            )
            hs.append(h)
            ys.append((h * c[t, :, None]).sum(-1))
        return torch.stack(ys), torch.stack(hs)

    results = []
    for fn in (loop, scan.selective_scan):
        inputs = [t.clone().requires_grad_() for t in (delta, a, b, c, u, h0)]
        y, h = fn(*inputs)
        loss = (y * mix_y).sum() + (h * mix_h).sum()
        results.append((y, h, torch.autograd.grad(loss, inputs)))
    (y_want, h_want, g_want), (y_got, h_got, g_got) = results
    torch.testing.assert_close(y_got, y_want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h_got, h_want, atol=1e-12, rtol=1e-12)
    for got, want in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
