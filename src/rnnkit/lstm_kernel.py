"""rnnkit's own CPU kernel for small LSTM layers, beside torch's (oneDNN).

At the sizes of a forecaster's LSTM (tens of hidden units, tens of steps, minibatches of
tens) oneDNN's kernel spends most of each step in overhead rather than arithmetic. The native
kernel (``_lstmkernel.c``, x86-64 with AVX2 and FMA) runs a whole sequence forward in one
call and its backward through time in another: per step one register-blocked product with
``W_hh`` and one pass of vectorised activations. It computes torch.nn.LSTM's equations, gates in
its order, on the cell's own weights; :func:`lstm` returns what ``torch._VF.lstm`` returns for
one layer and one direction over padded time-major input.

The engine (:mod:`rnnkit.recurrence`) calls it in place of torch's kernel where
:func:`pays` says so: float32 on the CPU, outside ``torch.compile``, tracing and autocast,
with a hidden size that is a multiple of 8 and a layer small enough for the kernel to be the
faster (measured: ``bench/bench_lstm_kernel.py``). Elsewhere, and where the extension was not
built (no C compiler at install, another CPU), torch's kernel runs as before.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

_native: ModuleType | None
try:
    from rnnkit import _lstmkernel as _native
except ImportError:  # built without a C compiler: torch's kernel everywhere
    _native = None

__all__ = ["available", "lstm", "pays", "run"]

# Where the kernel is the faster (bench/bench_lstm_kernel.py, a 2-core AMD EPYC with AVX2,
# training and inference): on one torch thread up to 64K multiply-adds per row and step,
# 4H * (I + H) (H = 96 with I = 64 still gains, H = I = 128 loses); on two threads, where
# oneDNN splits its products between them, up to H = 32 and 16K. More threads were not
# measured there, so torch's kernel runs.
ONE_THREAD_WORK = 64 * 1024
TWO_THREAD_WORK = 16 * 1024
TWO_THREAD_HIDDEN = 32


@functools.cache
def available() -> bool:
    """Whether the native kernel was built and this CPU runs it (AVX2 and FMA)."""
    return _native is not None and bool(_native.available())


def pays(x: Tensor, hidden_size: int, weights: list[Tensor]) -> bool:
    """Whether :func:`lstm` runs ``x`` (padded ``[T, B, I]``) with ``weights`` in place of
    torch's kernel: the kernel is available, every tensor is float32 on the CPU, no
    transform (compile, tracing, autocast) is active, the hidden size is a multiple of 8 and
    the layer is small enough to gain from it on this many torch threads (the constants
    above)."""
    if not available() or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if hidden_size % 8 or x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        return False
    work = 4 * hidden_size * (x.shape[2] + hidden_size)
    threads = torch.get_num_threads()
    if threads == 1:
        if work > ONE_THREAD_WORK:
            return False
    elif threads > 2 or hidden_size > TWO_THREAD_HIDDEN or work > TWO_THREAD_WORK:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or (exporting and exporting()):
        return False
    return all(w.dtype == torch.float32 and w.device.type == "cpu" for w in weights)


def _address(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class _LSTM(torch.autograd.Function):
    """One layer, one direction; inputs contiguous float32 (``lstm`` sees to it)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, inputs = x.shape
        hidden = w_hh.shape[1]
        gates = x.new_empty(steps, batch, 4 * hidden)
        hs = x.new_empty(steps + 1, batch, hidden)
        cs = x.new_empty(steps, batch, hidden)
        assert _native is not None
        _native.forward(
            steps, batch, inputs, hidden, x.data_ptr(), w_ih.data_ptr(), w_hh.data_ptr(),
            _address(b_ih), _address(b_hh), h0.data_ptr(), c0.data_ptr(), gates.data_ptr(),
            hs.data_ptr(), cs.data_ptr(),
        )  # fmt: skip
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, gates, hs, cs)
        return hs[1:], hs[steps], cs[steps - 1]

    @staticmethod
    def backward(
        ctx: Any, d_out: Tensor | None, d_h: Tensor | None, d_c: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, _, c0, w_ih, w_hh, b_ih, _, gates, hs, cs = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a backward that is itself differentiable
            return _differentiable_backward(ctx, (d_out, d_h, d_c))
        steps, batch, inputs = x.shape
        hidden = w_hh.shape[1]
        d_out, d_h, d_c = (None if d is None else d.contiguous() for d in (d_out, d_h, d_c))
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dw_ih, dw_hh = torch.empty_like(w_ih), torch.empty_like(w_hh)
        db = None if b_ih is None else torch.empty_like(b_ih)
        dh0, dc0 = torch.empty_like(c0), torch.empty_like(c0)
        assert _native is not None
        _native.backward(
            steps, batch, inputs, hidden, x.data_ptr(), w_ih.data_ptr(), w_hh.data_ptr(),
            c0.data_ptr(), gates.data_ptr(), hs.data_ptr(), cs.data_ptr(), _address(d_out),
            _address(d_h), _address(d_c), _address(dx), dw_ih.data_ptr(), dw_hh.data_ptr(),
            _address(db), dh0.data_ptr(), dc0.data_ptr(),
        )  # fmt: skip
        # the two biases get equal gradients, as two tensors (never one tensor for both)
        db_hh = None if db is None else db.clone()
        return dx, dh0, dc0, dw_ih, dw_hh, db, db_hh


def _differentiable_backward(
    ctx: Any, grads: tuple[Tensor | None, ...]
) -> tuple[Tensor | None, ...]:
    """The gradients of :class:`_LSTM`'s inputs, with a graph: the layer recomputed by
    torch's kernel, whose backward is itself differentiable."""
    inputs = ctx.saved_tensors[:7]
    wanted = [k for k, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[k]]
    x, h0, c0, *weights = inputs
    weights = [w for w in weights if w is not None]
    vf: Any = torch._VF
    out, h, c = vf.lstm(
        x, [h0[None], c0[None]], weights, len(weights) == 4, 1, 0.0, True, False, False
    )
    outputs = (out, h[0], c[0])
    pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
    found = torch.autograd.grad(
        [o for o, _ in pairs],
        [inputs[k] for k in wanted],
        [g for _, g in pairs],
        create_graph=True,
        allow_unused=True,
    )
    result: list[Tensor | None] = [None] * 7
    for k, g in zip(wanted, found, strict=True):
        result[k] = g
    return tuple(result)


def lstm(x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor]) -> tuple[Tensor, ...]:
    """``torch._VF.lstm`` for one layer and one direction over padded ``x`` (``[T, B, I]``):
    ``(out [T, B, H], h [1, B, H], c [1, B, H])`` from ``hx`` (``[1, B, H]`` each) and
    ``weights`` (``[weight_ih, weight_hh]`` or with ``bias_ih, bias_hh`` after them).

    Raises:
        ValueError: where the shapes do not fit one another (naming what was expected).
        RuntimeError: where the kernel is not available (see :func:`available`).
    """
    if not available():
        raise RuntimeError("lstm: the native LSTM kernel is not available on this machine")
    if len(weights) not in (2, 4):
        raise ValueError(f"weights: expected 2 or 4 tensors, found {len(weights)}")
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if len(weights) == 4 else (None, None)
    batch, inputs, hidden = x.shape[1], x.shape[2], w_hh.shape[1]
    want = {
        "weight_ih": (w_ih, (4 * hidden, inputs)),
        "weight_hh": (w_hh, (4 * hidden, hidden)),
        "h0": (hx[0], (1, batch, hidden)),
        "c0": (hx[1], (1, batch, hidden)),
    }
    if b_ih is not None and b_hh is not None:
        want |= {"bias_ih": (b_ih, (4 * hidden,)), "bias_hh": (b_hh, (4 * hidden,))}
    for name, (tensor, shape) in want.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, found {tuple(tensor.shape)}")
    if hidden % 8:
        raise ValueError(f"hidden size: expected a multiple of 8, found {hidden}")
    out, h, c = run(x, hx, weights)
    return out, h.unsqueeze(0), c.unsqueeze(0)


def run(x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor]) -> tuple[Tensor, ...]:
    """:func:`lstm` without its checks, for the engine, whose plan holds a cell's own weights
    and whose call has passed :func:`pays`; the final ``h`` and ``c`` as ``[B, H]``."""
    w_ih, w_hh, *bias = (t.contiguous().float() for t in weights)
    b_ih, b_hh = (bias[0], bias[1]) if bias else (None, None)
    h0, c0 = hx[0][0].contiguous().float(), hx[1][0].contiguous().float()
    return tuple(_LSTM.apply(x.contiguous().float(), h0, c0, w_ih, w_hh, b_ih, b_hh))
