"""rnnkit's small-layer LSTM kernel against torch.nn.LSTM in float64 (outputs, final state and
the gradients of every input), in the engine against torch's kernel, and its choice.

Tolerances: the kernel computes in float32 (its exp has a relative error of about 2e-7), so
values of order one agree with float64 to 2e-5 and gradients to 2e-5 of their largest entry.
"""

import pytest
import torch
from conftest import random_sequences

from rnnkit import Fold, LSTMCell, Recurrence, SequenceBatch, lstm_kernel

pytestmark = pytest.mark.skipif(
    not lstm_kernel.available(), reason="the native LSTM kernel is not built for this CPU"
)

# (T, B, I, H): rows not a multiple of 4, inputs not a multiple of 8 or 16, hidden sizes
# 8, 24 and 40 (not multiples of 16), one step, one row
SHAPES = [
    (18, 32, 40, 32),
    (5, 3, 7, 8),
    (1, 1, 1, 8),
    (13, 7, 3, 24),
    (6, 5, 130, 64),
    (4, 33, 16, 16),
    (3, 6, 9, 40),
]


def _reference(shape, bias=True, seed=0, scale=1.0):
    """A float64 torch.nn.LSTM and inputs, the kernel's float32 copies of them, and random
    gradients for the outputs and the final state."""
    steps, batch, inputs, hidden = shape
    torch.manual_seed(seed)
    layer = torch.nn.LSTM(inputs, hidden, bias=bias).double()
    x = scale * torch.randn(steps, batch, inputs, dtype=torch.float64)
    h0 = torch.randn(1, batch, hidden, dtype=torch.float64)
    c0 = torch.randn(1, batch, hidden, dtype=torch.float64)
    grads = [torch.randn(steps, batch, hidden), torch.randn(1, batch, hidden)]
    grads.append(torch.randn(1, batch, hidden))
    return layer, [x, h0, c0], [g.double() for g in grads]


def _run(fn, inputs, weights, grads, wanted=None):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    weights = [w.detach().clone().requires_grad_() for w in weights]
    out, h, c = fn(inputs[0], (inputs[1], inputs[2]), weights)
    loss = sum(
        (o * g.to(o.dtype)).sum() for o, g in zip((out, h, c), grads, strict=True) if g is not None
    )
    targets = inputs + weights if wanted is None else [(inputs + weights)[k] for k in wanted]
    return [out, h, c], list(torch.autograd.grad(loss, targets))


def _torch(x, hx, weights):
    vf = torch._VF
    return tuple(vf.lstm(x, list(hx), weights, len(weights) == 4, 1, 0.0, True, False, False))


def _close(found, want, tol=2e-5):
    for f, w in zip(found, want, strict=True):
        f, w = f.detach().double(), w.detach()
        scale = max(float(w.abs().max()), 1.0)
        assert float((f - w).abs().max()) <= tol * scale


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_equals_float64_lstm(shape, bias):
    layer, inputs, grads = _reference(shape, bias=bias)
    weights = list(layer.parameters())
    want_values, want_grads = _run(_torch, inputs, weights, grads)
    values, found = _run(
        lstm_kernel.lstm, [t.float() for t in inputs], [w.float() for w in weights], grads
    )
    _close(values, want_values)
    _close(found, want_grads)


@pytest.mark.parametrize("which", [(0,), (1,), (2,), (1, 2)])
def test_kernel_gradients_from_some_outputs_only(which):
    """Gradients reach only the outputs named (the others get none: a Fold reads only h)."""
    layer, inputs, grads = _reference((9, 5, 6, 16), seed=1)
    grads = [g if k in which else None for k, g in enumerate(grads)]
    weights = list(layer.parameters())
    _, want = _run(_torch, inputs, weights, grads)
    _, found = _run(
        lstm_kernel.lstm, [t.float() for t in inputs], [w.float() for w in weights], grads
    )
    _close(found, want)


def test_kernel_saturated_gates_stay_finite_and_exact():
    """Pre-activations of hundreds (exp clamped inside the kernel) give torch's values."""
    layer, inputs, grads = _reference((7, 4, 5, 16), seed=2, scale=300.0)
    weights = list(layer.parameters())
    want_values, want_grads = _run(_torch, inputs, weights, grads)
    values, found = _run(
        lstm_kernel.lstm, [t.float() for t in inputs], [w.float() for w in weights], grads
    )
    assert all(torch.isfinite(t).all() for t in values + found)
    _close(values, want_values)
    _close(found, want_grads, tol=1e-4)  # products of saturated gates lose float32 digits


def test_a_nan_goes_where_torch_sends_it():
    """A NaN in the input is never turned into a number: the outputs it reaches are NaN, as
    with torch's kernel."""
    layer, inputs, _ = _reference((5, 4, 6, 16), seed=6)
    x = inputs[0].float()
    x[2, 1, 3] = float("nan")
    weights = [w.float() for w in layer.parameters()]
    state = (inputs[1].float(), inputs[2].float())
    found = lstm_kernel.lstm(x, state, weights)
    want = _torch(x, state, weights)
    for f, w in zip(found, want, strict=True):
        assert torch.equal(torch.isnan(f), torch.isnan(w))
        assert bool(torch.isnan(w).any())
        torch.testing.assert_close(f.nan_to_num(), w.nan_to_num(), rtol=1e-5, atol=1e-5)


def test_kernel_without_input_gradient_still_gives_the_weights_gradients():
    layer, inputs, grads = _reference((8, 6, 10, 24), seed=3)
    weights = list(layer.parameters())
    _, want = _run(_torch, inputs, weights, grads, wanted=[3, 4, 5, 6])
    x = inputs[0].float()  # does not require grad: the kernel skips dx
    w32 = [w.float().requires_grad_() for w in weights]
    out, h, c = lstm_kernel.lstm(x, (inputs[1].float(), inputs[2].float()), w32)
    loss = sum((o * g.float()).sum() for o, g in zip((out, h, c), grads, strict=True))
    _close(torch.autograd.grad(loss, w32), want)


def test_bias_gradients_are_two_tensors():
    """Equal gradients of bias_ih and bias_hh land in two tensors, so that accumulating one
    never changes the other."""
    cell = LSTMCell(4, 8)
    layer = Fold(cell, backend="fused")
    x = SequenceBatch.from_list(random_sequences([5, 5, 5], 4, seed=0))
    for _ in range(2):
        layer(x).sum().backward()
    assert cell.bias_ih.grad.data_ptr() != cell.bias_hh.grad.data_ptr()
    torch.testing.assert_close(cell.bias_ih.grad, cell.bias_hh.grad)


def test_double_backward_equals_torch():
    """Under create_graph the backward recomputes the layer with torch's kernel."""
    layer, inputs, _ = _reference((4, 3, 5, 8), seed=4)
    weights = [w.float() for w in layer.parameters()]
    found = []
    for fn in (_torch, lstm_kernel.lstm):
        x = inputs[0].float().requires_grad_()
        ws = [w.detach().clone().requires_grad_() for w in weights]
        out, _, _ = fn(x, (inputs[1].float(), inputs[2].float()), ws)
        (gx,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
        found.append(torch.autograd.grad((gx**2).sum(), [x, *ws]))
    for f, w in zip(*found, strict=True):
        torch.testing.assert_close(f, w, rtol=1e-4, atol=1e-5)


def _engine_pair(monkeypatch, layer_of, lengths, threads=1):
    """The outputs and gradients of one layer on a batch with the kernel and with torch's
    kernel (``pays`` patched to refuse), and how often the kernel ran."""
    torch.set_num_threads(threads)
    x = SequenceBatch.from_list(random_sequences(lengths, 6, seed=5))
    calls = []
    real = lstm_kernel.run

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(lstm_kernel, "run", counted)
    results = []
    for use in (True, False):
        torch.manual_seed(0)
        layer = layer_of()
        if not use:
            monkeypatch.setattr(lstm_kernel, "pays", lambda *a: False)
        out = layer(x)
        data = out.data if isinstance(out, SequenceBatch) else out
        grads = torch.autograd.grad(
            (data * torch.linspace(-1, 1, data.numel()).view_as(data)).sum(),
            list(layer.parameters()),
        )
        results.append([data, *grads])
    return results, len(calls)


@pytest.mark.parametrize("lengths", [[7, 7, 7, 7], [3, 1, 7, 2, 5, 7, 4]])
@pytest.mark.parametrize(
    "layer_of",
    [
        lambda: Fold(LSTMCell(6, 16), backend="fused"),
        lambda: Recurrence(LSTMCell(6, 16), backend="fused"),
        lambda: Recurrence(LSTMCell(6, 16), go_backwards=True, backend="fused"),
    ],
    ids=["fold", "recurrence", "backwards"],
)
def test_engine_runs_the_kernel_with_torch_kernels_results(monkeypatch, layer_of, lengths):
    threads = torch.get_num_threads()
    try:
        (kernel, torch_kernel), calls = _engine_pair(monkeypatch, layer_of, lengths)
    finally:
        torch.set_num_threads(threads)
    assert calls >= 1
    for a, b in zip(kernel, torch_kernel, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_choice():
    x = torch.zeros(18, 32, 40)
    weights = list(torch.nn.LSTM(40, 32).parameters())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert lstm_kernel.pays(x, 32, weights)
        assert not lstm_kernel.pays(x.double(), 32, weights)  # float32 only
        assert not lstm_kernel.pays(torch.zeros(18, 32, 40), 36, weights)  # H % 8
        big = torch.zeros(5, 4, 128)
        assert not lstm_kernel.pays(big, 128, list(torch.nn.LSTM(128, 128).parameters()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not lstm_kernel.pays(x, 32, weights)
        torch.set_num_threads(2)
        assert lstm_kernel.pays(x, 32, weights)
        assert not lstm_kernel.pays(
            torch.zeros(18, 32, 32), 48, list(torch.nn.LSTM(32, 48).parameters())
        )
        torch.set_num_threads(3)  # not measured: torch's kernel
        assert not lstm_kernel.pays(x, 32, weights)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda w: [w[0][:, :-1], *w[1:]],
            r"weight_ih: expected shape \(128, 40\), found \(128, 39\)",
        ),
        (lambda w: [w[0], w[1], w[2][:-1], w[3]], r"bias_ih: expected shape \(128,\)"),
        (lambda w: w[:3], "weights: expected 2 or 4 tensors, found 3"),
    ],
)
def test_bad_shapes_are_refused_by_name(change, message):
    weights = list(torch.nn.LSTM(40, 32).parameters())
    zero = torch.zeros(1, 4, 32)
    with pytest.raises(ValueError, match=message):
        lstm_kernel.lstm(torch.zeros(3, 4, 40), (zero, zero), change(weights))


def test_bad_state_is_refused_by_name():
    weights = list(torch.nn.LSTM(40, 32).parameters())
    with pytest.raises(ValueError, match=r"h0: expected shape \(1, 4, 32\), found \(1, 5, 32\)"):
        lstm_kernel.lstm(
            torch.zeros(3, 4, 40), (torch.zeros(1, 5, 32), torch.zeros(1, 4, 32)), weights
        )


def test_without_the_extension_the_engine_runs_torch_kernel(monkeypatch):
    """An install without a C compiler has no ``_lstmkernel``: nothing is chosen, ``lstm``
    refuses by name, and a layer gives the same results on torch's kernel."""
    x = SequenceBatch.from_list(random_sequences([6, 6, 6], 4, seed=7))
    torch.manual_seed(0)
    layer = Fold(LSTMCell(4, 16), backend="fused")
    with_kernel = layer(x)
    monkeypatch.setattr(lstm_kernel, "_native", None)
    lstm_kernel.available.cache_clear()
    try:
        weights = [layer.cell.weight_ih, layer.cell.weight_hh]
        assert not lstm_kernel.pays(torch.zeros(6, 3, 4), 16, weights)
        zero = torch.zeros(1, 3, 16)
        with pytest.raises(RuntimeError, match="native LSTM kernel is not available"):
            lstm_kernel.lstm(torch.zeros(6, 3, 4), (zero, zero), weights)
        torch.testing.assert_close(layer(x), with_kernel, rtol=1e-5, atol=1e-6)
    finally:
        monkeypatch.undo()
        lstm_kernel.available.cache_clear()
