"""The fused RNN kernel as a custom operator, so that ``torch.compile`` keeps it fused.

Dynamo cannot trace ``torch._VF.lstm`` and friends in training (the decomposition reaches
``aten.mkldnn_rnn_layer`` with a list argument it rejects), so the engine calls the kernel
through ``rnnkit::fused_rnn``: an opaque operator whose shapes are known without running it
(``register_fake``), and whose backward is a second opaque operator,
``rnnkit::fused_rnn_backward``, which recomputes the forward eagerly under autograd and asks
``torch.autograd.grad`` for the gradients (one more forward in exchange for an op Dynamo and
AOTAutograd treat as a black box). Eager calls go through the same operators, so one path is
tested for both.

``kernel``: ``'lstm'``, ``'gru'``, ``'rnn_tanh'`` or ``'rnn_relu'`` (a ``torch._VF`` name);
``x``: padded ``[T, B, I]`` or packed ``[N, I]`` with ``batch_sizes``; ``hx``: ``[1, B, H]``
per state tensor (two for an LSTM); ``weights``: ``weight_ih, weight_hh[, bias_ih, bias_hh]``.
Returns ``[out, *final]``: ``out`` is ``[T, B, H]`` (or ``[N, H]``), ``final`` ``[1, B, H]`` per
state tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["fused_rnn"]


def _eager(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    train: bool,
) -> list[Tensor]:
    vf: Any = torch._VF
    fn = getattr(vf, kernel)
    h: Any = hx if kernel == "lstm" else hx[0]
    flags = (len(weights) == 4, 1, 0.0, train, False)
    if batch_sizes is None:
        out = fn(x, h, weights, *flags, False)
    else:
        out = fn(x, batch_sizes, h, weights, *flags)
    return [out[0], *out[1:]]


@torch.library.custom_op("rnnkit::fused_rnn", mutates_args=())
def _fused_rnn_op(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    train: bool,
) -> list[Tensor]:
    with torch.no_grad():
        return _eager(kernel, x, batch_sizes, hx, weights, train)


@_fused_rnn_op.register_fake
def _(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    train: bool,
) -> list[Tensor]:
    hidden = weights[1].shape[1]
    out = x.new_empty((*x.shape[:-1], hidden))
    return [out, *(h.new_empty(h.shape) for h in hx)]


_AUTOGRAD_KEYS = [
    key
    for name, key in torch._C.DispatchKey.__members__.items()
    if name.startswith("Autograd") or name == "ADInplaceOrView"
]


def _autograd_again() -> Any:
    """A guard under which autograd records again: an operator's implementation runs with the
    autograd dispatch keys excluded, and the backward below needs them for its recomputation."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op("rnnkit::fused_rnn_backward", mutates_args=())
def _fused_rnn_backward_op(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    grads: list[Tensor],
) -> list[Tensor]:
    inputs = [t.detach().requires_grad_() for t in (x, *hx, *weights)]
    n = len(hx)
    with _autograd_again(), torch.enable_grad():
        outs = _eager(kernel, inputs[0], batch_sizes, inputs[1 : 1 + n], inputs[1 + n :], True)
        found = torch.autograd.grad(outs, inputs, grads, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(found, inputs, strict=True)]


@_fused_rnn_backward_op.register_fake
def _(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    grads: list[Tensor],
) -> list[Tensor]:
    return [t.new_empty(t.shape) for t in (x, *hx, *weights)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    kernel, x, batch_sizes, hx, weights, _ = inputs
    ctx.kernel = kernel
    ctx.n = (len(hx), len(weights))
    ctx.save_for_backward(x, batch_sizes, *hx, *weights)


def _backward(ctx: Any, grads: list[Tensor]) -> tuple[Any, ...]:
    x, batch_sizes, *rest = ctx.saved_tensors
    n_h, _ = ctx.n
    hx, weights = rest[:n_h], rest[n_h:]
    found = _fused_rnn_backward_op(ctx.kernel, x, batch_sizes, hx, weights, list(grads))
    return None, found[0], None, found[1 : 1 + n_h], found[1 + n_h :], None


_fused_rnn_op.register_autograd(_backward, setup_context=_setup_context)


def fused_rnn(
    kernel: str,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: list[Tensor],
    weights: list[Tensor],
    train: bool,
) -> list[Tensor]:
    """``torch._VF.<kernel>`` on one layer, one direction, as ``rnnkit::fused_rnn``: ``[out,
    *final]`` (see the module docstring for the shapes)."""
    return _fused_rnn_op(kernel, x, batch_sizes, list(hx), list(weights), train)
