r"""The delta rule: DeltaNet and Gated DeltaNet, with their chunked WY form.

A head's state ``S [d_k, d_v]`` is a fast-weight memory written by the delta rule: it reads
what it holds at the key, ``S ᵀ k``, and moves it towards the value by ``β``. Gated DeltaNet
decays the memory first. In the layout of the other matrix cells (:mod:`rnnkit.modern.matrix`,
``S`` with keys as rows, the transpose of the papers' ``[d_v, d_k]``):

.. code-block:: text

    S = α (I - β k kᵀ) S + β k vᵀ    (α = 1: DeltaNet)
    o = Sᵀ q

The chunked form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule
over Sequence Length") writes a chunk's updates as ``S_t = γ_t S_0 + Σ_{i≤t} (γ_t/γ_i) k_i
δ_iᵀ`` (``γ`` the cumulative decay within the chunk), where the corrections ``δ`` solve a
unit lower-triangular system, the UT transform of the WY representation:

.. code-block:: text

    A = I + strict_tril(diag(β) (K Kᵀ ⊙ Γ)),   Γ[t, i] = γ_t / γ_i
    U = A⁻¹ diag(β) V,   W = A⁻¹ diag(β γ) K             (per chunk, all chunks at once)
    δ = U - W S_0,   O = diag(γ) Q S_0 + (tril(Q Kᵀ) ⊙ Γ) δ,   S_L = γ_L S_0 + (K ⊙ γ_L/γ)ᵀ δ

Only ``δ`` and the state pass from chunk to chunk; every ``Γ`` factor is ``<= 1``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells import State
from rnnkit.modern.matrix import (
    Carry,
    MatrixCell,
    Restarts,
    causal_mask,
    from_chunks,
    segment_decays,
    to_chunks,
)

__all__ = ["DeltaNetCell", "GatedDeltaNetCell", "delta_chunks"]


def delta_chunks(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor | None,
    s0: Tensor,
    restarts: Restarts | None = None,
) -> tuple[Tensor, Tensor]:
    """The (gated) delta rule over chunks: ``q, k [B, h, n, L, d_k]``, ``v [B, h, n, L,
    d_v]``, ``beta [B, h, n, L]``, ``g`` the log decays ``[B, h, n, L]`` (None: no decay),
    ``s0 [B, h, d_k, d_v]``; the outputs ``[B, h, n, L, d_v]`` and the final state (with
    ``restarts``: B lanes, each sequence's, see :class:`~rnnkit.modern.matrix.Carry`)."""
    chunk = q.shape[-2]
    inclusive = causal_mask(chunk, q.device)
    strict = causal_mask(chunk, q.device, -1)
    if g is None:
        gamma = torch.ones_like(beta)
        end = gamma[..., -1:]
        ratios = inclusive.to(q.dtype)
        to_end = gamma
    else:
        b = g.cumsum(-1)
        gamma = torch.exp(b)
        end = gamma[..., -1:]
        ratios = segment_decays(b, inclusive)
        to_end = torch.exp(b[..., -1:] - b)
    a = (beta.unsqueeze(-1) * (k @ k.transpose(-1, -2)) * ratios).masked_fill(~strict, 0.0)
    a = a + torch.eye(chunk, dtype=q.dtype, device=q.device)
    rhs = torch.cat([beta.unsqueeze(-1) * v, (beta * gamma).unsqueeze(-1) * k], -1)
    u, w = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True).split(
        [v.shape[-1], k.shape[-1]], -1
    )
    k_end = (k * to_end.unsqueeze(-1)).transpose(-1, -2)  # [B, h, n, d_k, L]
    carry = Carry((s0,), restarts)
    entering, deltas = [], []
    chunks = zip(*(t.unbind(2) for t in (u, w, end.unsqueeze(-1), k_end)), strict=True)
    for j, (u_c, w_c, e_c, k_c) in enumerate(chunks):
        (s,) = carry.enter(j)
        entering.append(s)
        delta = u_c - w_c @ s
        deltas.append(delta)
        carry.leave(j, (e_c * s + k_c @ delta,))
    s_in, delta = torch.stack(entering, 2), torch.stack(deltas, 2)
    scores = (q @ k.transpose(-1, -2)) * ratios
    out = (gamma.unsqueeze(-1) * q) @ s_in + scores @ delta
    return out, carry.final()[0]


class DeltaNetCell(MatrixCell):
    r"""DeltaNet (Schlag et al. 2021; Yang et al. 2024): a linear-attention memory written by
    the delta rule.

    .. code-block:: text

        q = l2norm(silu(W_q x)),  k = l2norm(silu(W_k x)),  v = W_v x    per head
        β = σ(W_β x + b_β)                                               a scalar per head
        S = (I - β k kᵀ) S + β k vᵀ                                      [d_k, d_v]
        o = Sᵀ q

    Shapes: ``weight_ih [2 h d_k + H + h, I]`` (rows q, k, v, β), ``bias_ih`` likewise
    (``b_β`` used, the others zero at start). State ``(o [B, H], S [B, h, d_k, d_v])``.

    Chunked form: the WY representation per chunk (see the module docstring), one
    triangular solve for all chunks at once and one ``[L, d_k] x [d_k, d_v]`` update per
    chunk. Training time (B=4, I=H=256, h=4, d_k=64, T=4096, 1 thread, chunked/loop): 0.20
    for chunk 32, 0.185 for 64, 0.20 for 128 (Gated DeltaNet 0.134, 0.138, 0.164); so 64.
    """

    gated = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        heads: int = 4,
        key_size: int | None = None,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(input_size, hidden_size, heads, key_size, chunk_size)
        rows = 2 * heads * self.key_size + hidden_size + heads * (2 if self.gated else 1)
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        if self.gated:
            self.dt_bias = nn.Parameter(torch.empty(heads))
            self.A_log = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def features(self, px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """``q, k [..., h, d_k]`` (unit length), ``v [..., h, d_v]``, ``β [..., h]`` and the
        log decay ``[..., h]`` (None without the gate)."""
        keys, h = self.heads * self.key_size, self.heads
        sizes = [keys, keys, self.hidden_size, h] + ([h] if self.gated else [])
        q, k, v, beta, *gate = px.split(sizes, -1)
        dk = self.key_size
        q = F.normalize(F.silu(self.heads_of(q, dk)), dim=-1)
        k = F.normalize(F.silu(self.heads_of(k, dk)), dim=-1)
        log_alpha = None
        if gate:
            log_alpha = -torch.exp(self.A_log) * F.softplus(gate[0] + self.dt_bias)
        return q, k, self.heads_of(v, self.value_size), torch.sigmoid(beta), log_alpha

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        _, s = self.check_state(state, px.shape[0])
        q, k, v, beta, log_alpha = self.features(px)
        if log_alpha is not None:
            s = torch.exp(log_alpha)[..., None, None] * s
        read = (k.unsqueeze(-2) @ s).squeeze(-2)  # Sᵀ k, [B, h, d_v]
        s = s + k.unsqueeze(-1) * (beta.unsqueeze(-1) * (v - read)).unsqueeze(-2)
        o = (q.unsqueeze(-2) @ s).squeeze(-2)
        return o.flatten(1), s

    def chunked(
        self, px: Tensor, state: tuple[Tensor, ...], keep: Tensor, restarts: Restarts | None
    ) -> tuple[Tensor, tuple[Tensor]]:
        """Outputs ``[T, B, H]`` and the final ``S`` (see
        :class:`~rnnkit.modern.matrix.MatrixCell`); an identity step has ``β = 0`` and no
        decay."""
        steps = px.shape[0]
        q, k, v, beta, log_alpha = self.features(px)
        keep = keep.unsqueeze(-1)
        chunk = self.chunk_size
        beta = to_chunks(beta * keep, chunk)
        g = None if log_alpha is None else to_chunks(log_alpha * keep, chunk)
        q, k, v = (to_chunks(t, chunk) for t in (q, k, v))
        out, final = delta_chunks(q, k, v, beta, g, state[0], restarts)
        return from_chunks(out, steps), (final,)


class GatedDeltaNetCell(DeltaNetCell):
    r"""Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta
    Rule"): the delta rule after a Mamba-2 decay.

    .. code-block:: text

        α = exp(-exp(A_log) softplus(W_α x + b_α + dt_bias))   a scalar per head, in (0, 1]
        S = α (I - β k kᵀ) S + β k vᵀ,   o = Sᵀ q              (q, k, v, β as DeltaNetCell)

    Shapes: ``weight_ih [2 h d_k + H + 2h, I]`` (rows q, k, v, β, α), ``bias_ih``,
    ``dt_bias [h]``, ``A_log [h]``; initialised as Mamba-2 (A in [1, 16], the step
    log-uniform in [0.001, 0.1]). Chunked form: :func:`delta_chunks` with the decays (chunk
    64, as DeltaNet; see its figures).
    """

    gated = True

    def reset_parameters(self) -> None:
        """Projections as a linear layer; ``A ~ U[1, 16]``, the step ``~ logU[0.001, 0.1]``."""
        super().reset_parameters()
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.empty(self.heads).uniform_(1.0, 16.0)))
            dt = torch.exp(torch.empty(self.heads).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
