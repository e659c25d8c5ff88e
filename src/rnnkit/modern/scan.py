"""Mamba's selective scan (:func:`selective_scan`), the fused loop of the S6 recurrence, and
the engine's linear scans re-exported from :mod:`rnnkit.scan` (:func:`linear_scan`,
:func:`scan_packed`, :func:`packed_stream`), the primitives of the diagonal recurrences.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnkit.scan import PackedStream, linear_scan, packed_stream, scan_packed

__all__ = ["PackedStream", "linear_scan", "packed_stream", "scan_packed", "selective_scan"]


SCAN_SLAB = 1 << 18
"""Elements of the ``[K, B, D, N]`` slabs :func:`selective_scan` forms per chunk of ``K``
steps: K = max(1, SCAN_SLAB // (B D N)). Measured forward and backward at T=4096, B=4,
D=128, N=16, one thread: 1,134 ms at K=1, 536 at 8, 511-512 at 16-32, 598 at 64, 678 at 256
(float32 slabs of 0.5-1 MiB stay in cache; larger ones do not)."""


class _SelectiveScan(torch.autograd.Function):
    """Chunks of ``K`` steps (:data:`SCAN_SLAB`). Forward: per chunk ``exp(Δ A)`` and ``(Δ u)
    Bᵀ`` as two slab operations, then one in-place multiply-add per step into the saved
    states; the readout ``h_t C_t`` of all steps is one batched product after the loop.
    Backward: the readout's gradient ``g_t C_tᵀ`` per chunk as one slab, then per step the
    adjoint ``λ_t += carry`` and ``carry = exp(Δ_t A) ⊙ λ_t`` (two operations); what depends
    on ``λ`` alone (the gradients of ``B``, ``Δ u`` and ``Δ A``) per chunk as slab products,
    and the gradient of ``C`` over all steps at once. Views are taken once outside the loops
    (each indexing is a Python call)."""

    @staticmethod
    def forward(
        ctx: Any,
        delta: Tensor,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        u: Tensor,
        h0: Tensor,
        keep: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        steps, batch, d = delta.shape
        n = a.shape[-1]
        chunk = _chunk_steps(h0)
        ctx.keep = keep
        dtu = (delta * u).unsqueeze(-1)  # [T, B, D, 1]
        d_col, b_row = delta.unsqueeze(-1), b.unsqueeze(-2)
        h_all = torch.empty((steps, *h0.shape), dtype=h0.dtype, device=h0.device)
        decay = torch.empty((min(chunk, steps), *h0.shape), dtype=h0.dtype, device=h0.device)
        h = h0
        for s in range(0, steps, chunk):
            e = min(s + chunk, steps)
            dec = decay[: e - s]
            torch.mul(d_col[s:e], a, out=dec).exp_()
            if keep is not None:  # a reset: the state before it counts as 0
                dec.mul_(keep[s:e])
            torch.mul(dtu[s:e], b_row[s:e], out=h_all[s:e])  # the inputs, then the states
            rows, slabs = h_all[s:e].unbind(0), dec.unbind(0)
            for j in range(e - s):
                h = rows[j].addcmul_(slabs[j], h)
        flat = h_all.view(steps * batch, d, n)
        y = torch.bmm(flat, c.reshape(steps * batch, n, 1)).view(steps, batch, d)
        ctx.save_for_backward(delta, a, b, c, u, h0, h_all)
        return y, h_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad_y: Tensor | None, grad_h: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        delta, a, b, c, u, h0, h_all = ctx.saved_tensors
        keep = ctx.keep
        steps, batch, d = delta.shape
        n = a.shape[-1]
        chunk = _chunk_steps(h0)
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        grad_y = grad_y.contiguous()
        dtu = delta * u
        d_col, g_col, c_row = delta.unsqueeze(-1), grad_y.unsqueeze(-1), c.unsqueeze(-2)
        # ∂L/∂C_t = g_tᵀ h_t, every step at once
        grad_c = torch.bmm(grad_y.view(steps * batch, 1, d), h_all.view(steps * batch, d, n))
        grad_b = torch.empty(b.shape, dtype=b.dtype, device=b.device)
        grad_dtu = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        g_delta = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        g_a_rows = torch.zeros_like(h0)  # Σ_t q_t ⊙ Δ_t, summed over the batch at the end
        carry = torch.zeros_like(h0)  # exp(Δ_{t+1} A) ⊙ λ_{t+1}
        size = (min(chunk, steps), *h0.shape)
        lam_all = torch.empty(size, dtype=h0.dtype, device=h0.device)
        dec_all = torch.empty(size, dtype=h0.dtype, device=h0.device)
        for e in range(steps, 0, -chunk):
            s = max(e - chunk, 0)
            k = e - s
            lam, dec = lam_all[:k], dec_all[:k]
            if grad_h is None:
                torch.mul(g_col[s:e], c_row[s:e], out=lam)
            else:
                torch.addcmul(grad_h[s:e], g_col[s:e], c_row[s:e], out=lam)
            torch.mul(d_col[s:e], a, out=dec).exp_()
            if keep is not None:
                dec.mul_(keep[s:e])
            lams, decs = lam.unbind(0), dec.unbind(0)
            for j in range(k - 1, -1, -1):
                lams[j].add_(carry)
                torch.mul(lams[j], decs[j], out=carry)
            # what the chunk's adjoints λ give at once
            lam_flat = lam.view(k * batch, d, n)
            torch.bmm(
                dtu[s:e].reshape(k * batch, 1, d), lam_flat, out=grad_b[s:e].view(k * batch, 1, n)
            )
            torch.bmm(
                lam_flat, b[s:e].reshape(k * batch, n, 1), out=grad_dtu[s:e].view(k * batch, d, 1)
            )
            q = dec.mul_(lam)  # exp(Δ_t A) ⊙ λ_t, then ⊙ h_{t-1}: ∂L/∂(Δ_t A)
            if s > 0:
                q.mul_(h_all[s - 1 : e - 1])
            else:
                q[1:].mul_(h_all[: e - 1])
                q[0].mul_(h0)
            g_a_rows.add_((q * d_col[s:e]).sum(0))
            torch.sum(q.mul_(a), dim=-1, out=g_delta[s:e])
        g_delta.addcmul_(grad_dtu, u)
        return (
            g_delta,
            g_a_rows.sum(0),
            grad_b,
            grad_c.view(c.shape),
            grad_dtu * delta,
            carry,
            None,
        )


def _chunk_steps(h0: Tensor) -> int:
    """The steps per chunk of :class:`_SelectiveScan` for a state ``h0 [B, D, N]``."""
    return max(1, SCAN_SLAB // max(1, h0.numel()))


def selective_scan(
    delta: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    u: Tensor,
    h0: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The selective state space of Mamba-1, fused step by step, with its own backward pass.

    .. code-block:: text

        h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t ⊙ u_t) B_tᵀ        [B, D, N]
        y_t = h_t C_t                                           [B, D]

    Args: ``delta``, ``u [T, B, D]``; ``a [D, N]`` (A, negative); ``b``, ``c [T, B, N]``;
    ``h0 [B, D, N]``; ``resets``, optional bool ``[T, B]``: where set, ``h_{t-1}`` is taken as
    0 (several sequences in one column, as :func:`linear_scan`'s). Returns ``(y [T, B, D],
    h [T, B, D, N])``; gradients reach every input.

    Why a fused loop and not :func:`linear_scan` over materialised ``exp(Δ A)`` and ``Δ u
    Bᵀ``: each of those is a ``[T, B, D, N]`` tensor, and on a CPU the vectorised form then
    makes about ten passes over memory, each slower than the whole step's work done in cache
    (profile of ``bench/modern_cases.py`` S6 at T=1024, B=4, D=128, N=16, one thread: 20
    elementwise passes of 28 ms each). Here the work runs in chunks of K steps whose ``[K, B,
    D, N]`` slabs stay in cache (:data:`SCAN_SLAB`): per chunk the decays and inputs are
    formed at once, then one operation per step forward and two backward carry the state
    and the adjoint through the chunk; everything else (the readout ``h C``, the gradients of
    B, C, Δ and A) is batched over the chunk or over all steps. One graph node.
    """
    if a.shape != h0.shape[1:] or delta.shape != u.shape or b.shape != c.shape:
        raise ValueError(
            f"selective_scan: expected delta, u [T, B, D], a [D, N], b, c [T, B, N], h0 "
            f"[B, D, N], found delta {tuple(delta.shape)}, a {tuple(a.shape)}, b "
            f"{tuple(b.shape)}, c {tuple(c.shape)}, u {tuple(u.shape)}, h0 {tuple(h0.shape)}"
        )
    keep = None
    if resets is not None:
        if resets.dtype != torch.bool or resets.shape != delta.shape[:2]:
            raise ValueError(
                f"resets: expected a bool tensor [T, B] = {list(delta.shape[:2])}, found "
                f"{resets.dtype} {list(resets.shape)}"
            )
        keep = (~resets).to(h0.dtype)[:, :, None, None]
    y, h = _SelectiveScan.apply(delta, a, b, c, u, h0, keep)
    return y, h
