"""The first-order linear scan of the engine (:func:`linear_scan`) and its ragged forms: a
batch in its lanes (:func:`scan_packed`) and the packed stream (:func:`packed_stream`). The
``'scan'`` path runs them for minGRU and minLSTM (:mod:`rnnkit.cells`) and the diagonal
recurrences (:mod:`rnnkit.modern`, which re-exports them beside Mamba's selective scan).

:func:`linear_scan` computes, over dim 0,

.. code-block:: text

    h_t = a_t ⊙ h_{t-1} + b_t        h_{-1} = h0        (h_{t-1} taken as 0 where resets[t])

for real or complex ``a``, ``b``, exactly: only products and sums, never a division by a
cumulative product, so a decay near 0 loses nothing (a log-space scan divides in log space
and needs positive coefficients). It is a
``torch.autograd.Function``: the forward pass keeps only ``a`` and the states, and the
backward pass is the same scan run backwards in time,

.. code-block:: text

    λ_t = g_t + conj(a_{t+1}) ⊙ λ_{t+1}      ∂L/∂b_t = λ_t      ∂L/∂a_t = λ_t ⊙ conj(h_{t-1})

so training builds one graph node whatever T, where a loop builds a few per step.

>>> import torch
>>> a = torch.tensor([0.5, 0.5, 0.5]); b = torch.tensor([1.0, 1.0, 1.0])
>>> linear_scan(a, b, torch.tensor(0.0)).tolist()
[1.0, 1.5, 1.75]
>>> linear_scan(a, b, torch.tensor(0.0), resets=torch.tensor([False, False, True])).tolist()
[1.0, 1.5, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rnnkit.sequences import SequenceBatch

__all__ = ["PackedStream", "linear_scan", "packed_stream", "scan_packed"]

# How the passes run, measured (one thread of the 2-core AMD EPYC shared with other jobs,
# float32 a, b [T, D], ms, best of 3). Forward only:
#   D = 1024:  T=1024: loop 18.0, chunks of 16: 16.3, 32: 3.7, 64: 9.5;
#              T=4096: loop 68.1, 32: 38.9, 64: 42.0;  T=16384: loop 363, 32: 248, 64: 323
#   D = 4096:  T=4096: loop 174, chunks of 32: 346;   D = 16384, T=4096: loop 467, 32: 1304
# Training (forward and backward), T=4096: D=256: sequential 236, chunks of 16: 88, 32: 66,
# 64: 76; D=1024: sequential 234, 32: 237, 128: 177; D=4096: sequential 855, 32: 1892.
# Against the log-space scan of minGRU (positive a, b only), training, D=1024: T=1024 66 vs
# 1006, T=4096 257 vs 4581, T=16384 1347 vs 26077 (15-19x).
# A step of a few thousand elements costs more than the fixed overhead of an operation, and
# the two-level scan's extra passes (a transposed copy, the running products, the fix-up)
# then cost more than they save: from _SEQUENTIAL_FROM elements per step the pass is the plain
# sequential one (one fused multiply-add per step, into the output), below it chunks of
# _CHUNK steps.
_SEQUENTIAL_FROM = 4096
_CHUNK = 32


def _sequential(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """``h_t = a_t h_{t∓1} + b_t`` step by step into a new tensor (``a``, ``b`` of one shape
    ``[T, ...]``; backwards in time when ``reverse``)."""
    out = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    h = h0.expand(b.shape[1:])
    steps = range(b.shape[0] - 1, -1, -1) if reverse else range(b.shape[0])
    for t in steps:
        h = torch.addcmul(b[t], a[t], h, out=out[t])
    return out


def _chunked(a: Tensor, b: Tensor, h0: Tensor, chunk: int) -> Tensor:
    """The two-level scan: within chunks of ``chunk`` steps a sequential pass over all chunks
    at once (local states from 0 and the running products of ``a``, in a ``[L, C, ...]``
    layout so that each step's slab is contiguous), then a pass over the chunks carrying each
    chunk's start state, then one fix-up ``h += P ⊙ carry``."""
    steps, rest = b.shape[0], b.shape[1:]
    chunks = -(-steps // chunk)
    pad = chunks * chunk - steps
    if pad:
        a = torch.cat([a, a.new_ones((pad, *rest))])
        b = torch.cat([b, b.new_zeros((pad, *rest))])
    p = a.reshape(chunks, chunk, *rest).transpose(0, 1).contiguous()  # [L, C, ...]
    h = b.reshape(chunks, chunk, *rest).transpose(0, 1).contiguous()
    if p.data_ptr() == a.data_ptr():  # a view of a: the products must not write into a
        p = p.clone()
    if h.data_ptr() == b.data_ptr():
        h = h.clone()
    for t in range(1, chunk):
        h[t].addcmul_(p[t], h[t - 1])
        p[t].mul_(p[t - 1])
    carry = torch.empty((chunks, *rest), dtype=h.dtype, device=h.device)
    c = h0.expand(rest)
    for k in range(chunks):
        carry[k] = c
        c = torch.addcmul(h[-1, k], p[-1, k], c)
    h.addcmul_(p, carry.unsqueeze(0))
    return h.transpose(0, 1).reshape(chunks * chunk, *rest)[:steps]


def _scan(a: Tensor, b: Tensor, h0: Tensor, chunk: int | None, reverse: bool = False) -> Tensor:
    """``h [T, ...]`` of ``h_t = a_t h_{t-1} + b_t`` from ``h0`` (backwards in time, ``h_t =
    a_t h_{t+1} + b_t``, when ``reverse``), no graph; ``a``, ``b`` of one shape."""
    steps = b.shape[0]
    if chunk is None:
        chunk = steps if b[0].numel() >= _SEQUENTIAL_FROM else _CHUNK
    if chunk >= steps or chunk == 1:
        return _sequential(a, b, h0, reverse)
    if reverse:
        return _chunked(a.flip(0), b.flip(0), h0, chunk).flip(0)
    return _chunked(a, b, h0, chunk)


def _adjoint(a: Tensor, grad: Tensor, chunk: int | None) -> Tensor:
    """``λ_t = g_t + conj(a_{t+1}) ⊙ λ_{t+1}`` (``λ_{T-1} = g_{T-1}``): the scan backwards in
    time with ``a`` shifted by one step."""
    steps = grad.shape[0]
    if chunk is None:
        chunk = steps if grad[0].numel() >= _SEQUENTIAL_FROM else _CHUNK
    if chunk >= steps or chunk == 1:
        lam = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
        lam[-1] = grad[-1]
        decay = a.conj() if a.is_complex() else a
        for t in range(steps - 2, -1, -1):
            torch.addcmul(grad[t], decay[t + 1], lam[t + 1], out=lam[t])
        return lam
    shifted = torch.cat([a[1:], a[:1]]).conj()  # the last entry multiplies λ_T = 0
    return _scan(shifted, grad, grad.new_zeros(()), chunk, reverse=True)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, h0: Tensor, chunk: int | None) -> Tensor:
        shape = torch.broadcast_shapes(a.shape, b.shape, (1, *h0.shape))
        h = _scan(a.expand(shape), b.expand(shape), h0, chunk)
        ctx.save_for_backward(a, h0, h)
        ctx.chunk = chunk
        ctx.shapes = (a.shape, b.shape, h0.shape)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, h0, h = ctx.saved_tensors
        a_shape, b_shape, h0_shape = ctx.shapes
        a = a.expand(h.shape)
        lam = _adjoint(a, grad, ctx.chunk)
        grad_a = grad_b = grad_h0 = None
        if ctx.needs_input_grad[0]:
            full = torch.empty_like(lam)
            torch.mul(lam[1:], h[:-1].conj(), out=full[1:])
            torch.mul(lam[0], h0.expand(h.shape[1:]).conj(), out=full[0])
            grad_a = full.sum_to_size(a_shape)
        if ctx.needs_input_grad[1]:
            grad_b = lam.sum_to_size(b_shape)
        if ctx.needs_input_grad[2]:
            grad_h0 = (lam[0] * a[0].conj()).sum_to_size(h0_shape)
        return grad_a, grad_b, grad_h0, None


def linear_scan(
    a: Tensor,
    b: Tensor,
    h0: Tensor,
    resets: Tensor | None = None,
    chunk: int | None = None,
) -> Tensor:
    """Every state ``h [T, ...]`` of ``h_t = a_t ⊙ h_{t-1} + b_t`` from ``h_{-1} = h0``.

    Args:
        a: ``[T, ...]`` decays (real or complex; broadcast against ``b``, e.g. ``[1, N]``
            for a decay constant in time).
        b: ``[T, ...]`` inputs.
        h0: the state before step 0, broadcast to ``b.shape[1:]``.
        resets: optional bool ``[T, ...]`` (broadcast): where set, ``h_{t-1}`` is taken as 0,
            so several sequences run as one stream (see :func:`packed_stream`).
        chunk: the chunk length of the two-level scan (a positive int; 1, or T and more:
            the sequential pass); None picks by the step's size, from the figures in this
            module's source (sequential from 4096 elements per step, else chunks of 32).

    Returns ``[T, ...]`` (``torch.broadcast_shapes(a.shape, b.shape)``), of ``b``'s dtype
    (complex when either is complex). Gradients flow to ``a``, ``b`` and ``h0``.
    """
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk: expected a positive integer (steps per chunk), found {chunk!r}")
    if a.dim() < 1 or b.dim() < 1:
        raise ValueError(
            f"a, b: expected tensors [T, ...] with time first, found shapes {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    try:
        torch.broadcast_shapes(a.shape, b.shape, (1, *h0.shape))
    except RuntimeError as e:
        raise ValueError(
            f"a, b, h0: expected shapes that broadcast to [T, ...] (h0 to [...]), found "
            f"{tuple(a.shape)}, {tuple(b.shape)} and {tuple(h0.shape)}"
        ) from e
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype)
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    if resets is not None:
        if resets.dtype != torch.bool:
            raise ValueError(f"resets: expected a bool tensor, found dtype {resets.dtype}")
        a = torch.where(resets.to(a.device), torch.zeros((), dtype=dtype, device=a.device), a)
    out: Tensor = _LinearScan.apply(a, b, h0, chunk)
    return out


@dataclass(frozen=True)
class PackedStream:
    """A ragged batch's sequences concatenated one after another (sequence-major).

    ``order [N]``: the rows of the batch's packed ``data`` in stream order (the sorted
    sequences in turn, each in time order); ``inverse [N]``: the stream position of each
    packed row (``stream[inverse]`` is back in packed order); ``resets [N]`` bool, True at
    each sequence's first step; ``starts [B]`` and ``ends [B]``: the stream positions of
    each sorted sequence's first and last steps.
    """

    order: Tensor
    inverse: Tensor
    resets: Tensor
    starts: Tensor
    ends: Tensor


def packed_stream(x: SequenceBatch) -> PackedStream:
    """The :class:`PackedStream` of ``x`` (index tensors on ``x.data``'s device).

    >>> x = SequenceBatch.from_list([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])])
    >>> stream = packed_stream(x)
    >>> x.data[stream.order].tolist(), stream.resets.tolist()
    ([3.0, 4.0, 5.0, 1.0, 2.0], [True, False, False, True, False])
    """
    lengths = x.sorted_lengths
    starts = torch.cumsum(lengths, 0) - lengths
    seq, step = _row_position(x)
    inverse = starts[seq] + step
    order = torch.empty_like(inverse)
    order[inverse] = torch.arange(len(inverse))
    resets = torch.zeros(len(inverse), dtype=torch.bool)
    resets[starts] = True
    device = x.data.device
    return PackedStream(
        order.to(device),
        inverse.to(device),
        resets.to(device),
        starts.to(device),
        (starts + lengths - 1).to(device),
    )


def _row_position(x: SequenceBatch) -> tuple[Tensor, Tensor]:
    """For every packed row of ``x``: its sorted sequence and its step (CPU int64)."""
    sizes = x.batch_sizes
    step = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    offsets = torch.cumsum(sizes, 0) - sizes
    seq = torch.arange(len(step)) - offsets[step]
    return seq, step


def scan_packed(
    a: Tensor, b: Tensor, h0: Tensor, x: SequenceBatch, chunk: int | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`linear_scan` over a ragged batch without padding: ``a``, ``b [N, ...]`` in the
    packed rows of ``x`` (``a`` may be ``[1, ...]``, constant), ``h0 [B, ...]`` in sorted
    order. The sequences run in the lanes of :attr:`SequenceBatch.lanes
    <rnnkit.sequences.SequenceBatch.lanes>` (those that fit together share a lane, one after
    another), each from its own ``h0``: at a sequence's first step ``b += a ⊙ h0`` and ``a``
    is 0. Returns every state ``[N, ...]`` in packed rows and the final state ``[B, ...]``
    (sorted order).

    Against the padded ``[T, B, ...]`` scan, the grid has as many steps and at most as many
    columns; with the coefficients computed on the packed rows too, RG-LRU, LRU and Hawk
    trained on ragged batches in 0.51-1.05 of the padded time where lanes are shared, S6
    and Mamba (through :func:`selective_scan`'s resets) in 0.48-0.81
    (:func:`rnnkit.recurrence.packing_pays`).
    """
    lanes = x.lanes
    shape = torch.broadcast_shapes(a.shape, b.shape)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype)
    features = shape[1:]
    a_grid = lanes.grid(a.to(dtype).expand(shape))
    b_grid = lanes.grid(b.to(dtype).expand(shape))
    a_flat, b_flat = a_grid.view(-1, *features), b_grid.view(-1, *features)
    h0 = h0.to(dtype)
    if h0.requires_grad or bool(h0.any()):
        b_flat.index_add_(0, lanes.starts, a_flat.index_select(0, lanes.starts) * h0)
    a_flat.index_fill_(0, lanes.starts, 0.0)
    h = linear_scan(a_grid, b_grid, h0.new_zeros((lanes.width, *features)), chunk=chunk)
    flat = h.reshape(-1, *features)
    return flat.index_select(0, lanes.index), flat.index_select(0, lanes.ends)
