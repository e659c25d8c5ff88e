r"""Matrix-state recurrences: gated linear attention, Mamba-2 (SSD) and the mLSTM.

Each head keeps a matrix ``S [d_k, d_v]`` that decays and takes an outer product of a key
and a value at every step; a query reads it. Exact forms of one cell:

* ``step(px, state) -> state``: one input, state in and out (streaming); the ``'loop'``
  backend of :class:`rnnkit.Recurrence` runs it once per step over the active rows.
* ``parallel(px, state, lengths) -> (outputs, final)``: the chunked form the ``'scan'``
  backend runs. Time is cut into chunks of ``chunk_size`` steps. Inside a chunk the outputs
  are an attention-like product masked by the cumulative decays (log space, stabilised:
  every exponential at most 1, or bounded as :class:`GLACell` says); between chunks the
  state is passed on, one small update per chunk. A step past
  a sequence's length is an identity step (decay 1, no input), so each sequence's final state
  is its state after its own last step; time is padded with identity steps up to a multiple
  of the chunk size.
* ``parallel_packed(px, state, x)``: the same chunks over a ragged batch's packed rows in
  its chunk lanes (:meth:`rnnkit.SequenceBatch.chunk_lanes`): sequences that fit share a lane
  one after another, each from a chunk boundary, where its own initial state is put in
  (:class:`Carry`, :class:`Restarts`). The ``'scan'`` path runs it where
  :func:`rnnkit.recurrence.packing_pays` says (on a CPU, when the chunk lanes are fewer than
  the sequences).

Shapes: B batch, T time, I input, h heads, ``d_k`` key size per head, ``d_v = H / h`` value
size per head, H the output size (``hidden_size``). States are ``(o [B, H], S [B, h, d_k,
d_v])`` (the mLSTM adds its normaliser and stabiliser); ``state[0]`` is the output.

Chunk sizes were measured for training (forward and backward) on 1 thread of the 2-core CPU
these tests run on (``bench/modern_matrix_cases.py``); see each cell's docstring.

>>> import torch
>>> from rnnkit import Recurrence, SequenceBatch
>>> cell = Mamba2Cell(3, 8, heads=2, state_size=4, chunk_size=4)
>>> x = SequenceBatch.from_list([torch.randn(7, 3), torch.randn(5, 3)])
>>> loop = Recurrence(cell, backend="loop")(x).data
>>> chunked = Recurrence(cell, backend="scan")(x).data
>>> bool(torch.allclose(loop, chunked, atol=1e-5))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells import State, StepCell, as_tuple

if TYPE_CHECKING:
    from rnnkit.sequences import Lanes, SequenceBatch

__all__ = ["Carry", "GLACell", "MLSTMCell", "Mamba2Cell", "MatrixCell", "Restarts"]

# The log input gate of an mLSTM step past a sequence's end: exp(-1e30 - m) is 0 and the
# stabiliser m keeps its value, so the step is the identity (finite, so no inf - inf).
_NO_INPUT = -1e30


def check_positive(name: str, value: object) -> int:
    """``value``, refused unless a positive int (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, found {value!r}")
    return value


def check_decay(name: str, decay: tuple[float, float]) -> tuple[float, float]:
    """A range ``(low, high)`` (a tuple or a list) of per-step decays with ``0 < low <= high
    < 1`` (a decay of exactly 1 would need an infinite gate bias)."""
    if (
        not isinstance(decay, (tuple, list))
        or len(decay) != 2
        or not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in decay)
        or not 0.0 < decay[0] <= decay[1] < 1.0
    ):
        raise ValueError(
            f"{name}: expected a range (low, high) of decays with 0 < low <= high < 1, "
            f"found {decay!r}"
        )
    return float(decay[0]), float(decay[1])


def valid_steps(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """``[T, B]``: True at the steps ``t < lengths[b]`` of each sequence."""
    return (torch.arange(steps).unsqueeze(1) < lengths.cpu().unsqueeze(0)).to(device)


def to_chunks(x: Tensor, chunk: int, fill: float = 0.0) -> Tensor:
    """``[T, B, h, *F] -> [B, h, n, L, *F]``: time cut into ``n = ceil(T / L)`` chunks of
    ``L = chunk`` steps, the last padded with ``fill``."""
    steps = x.shape[0]
    n = -(-steps // chunk)
    if n * chunk != steps:
        x = torch.cat([x, x.new_full((n * chunk - steps, *x.shape[1:]), fill)])
    x = x.unflatten(0, (n, chunk))
    return x.permute(2, 3, 0, 1, *range(4, x.dim()))


def from_chunks(y: Tensor, steps: int) -> Tensor:
    """``[B, h, n, L, d] -> [T, B, h * d]``, the first ``steps`` steps."""
    b, h, n, chunk, d = y.shape
    return y.permute(2, 3, 0, 1, 4).reshape(n * chunk, b, h * d)[:steps]


def last_outputs(outputs: Tensor, lengths: Tensor) -> Tensor:
    """``[B, H]``: each sequence's output at its own last step, from ``outputs [T, B, H]``."""
    rows = torch.arange(outputs.shape[1], device=outputs.device)
    return outputs[lengths.to(outputs.device) - 1, rows]


@dataclass(frozen=True)
class Restarts:
    """Where the sequences of a ragged batch laid out in chunk lanes
    (:meth:`rnnkit.SequenceBatch.chunk_lanes`) start and end, chunk by chunk: a chunked scan
    over the lanes puts each sequence's own initial state in its lane at its first chunk
    (:class:`Carry`) and reads its final state after its last chunk (the steps between its end
    and that chunk's end are identity steps).

    ``starts`` and ``ends`` map a chunk index to ``(lanes, rows)``: the lanes in which
    sequences start (end) in that chunk and those sequences' sorted positions. ``order``
    reorders the final states, read chunk by chunk, into sorted order."""

    width: int
    starts: dict[int, tuple[Tensor, Tensor]]
    ends: dict[int, tuple[Tensor, Tensor]]
    order: Tensor

    @classmethod
    def of(cls, lanes: Lanes, chunk: int) -> Restarts:
        """The restarts of ``lanes`` (every start at a multiple of ``chunk`` steps)."""
        device = lanes.index.device
        width = lanes.width

        def by_chunk(positions: Tensor) -> dict[int, tuple[Tensor, Tensor]]:
            pos = positions.cpu().numpy()
            chunks, lane = pos // width // chunk, pos % width
            out = {}
            for c in np.unique(chunks).tolist():
                rows = np.flatnonzero(chunks == c)
                out[c] = (
                    torch.from_numpy(lane[rows]).to(device),
                    torch.from_numpy(rows).to(device),
                )
            return out

        ends = by_chunk(lanes.ends)
        read = torch.cat([rows for _, rows in ends.values()]) if ends else lanes.ends
        return cls(width, by_chunk(lanes.starts), ends, torch.argsort(read))


class Carry:
    """The states a chunked scan passes from chunk to chunk, one row per lane (``[B, ...]``
    each, B the lanes).

    Without :class:`Restarts` a lane is a sequence: it starts from ``s0`` and :meth:`final`
    is the state after the last chunk. With them, the lanes start from zeros, each
    sequence's row of ``s0`` (sorted order) enters its lane at its first chunk
    (:meth:`enter`), and :meth:`final` gives each sequence's state after its last chunk, in
    sorted order."""

    def __init__(self, s0: tuple[Tensor, ...], restarts: Restarts | None = None) -> None:
        self.s0, self.restarts = s0, restarts
        self.states = s0
        if restarts is not None:
            self.states = tuple(s.new_zeros(restarts.width, *s.shape[1:]) for s in s0)
        self._finals: list[tuple[Tensor, ...]] = []

    def enter(self, chunk: int) -> tuple[Tensor, ...]:
        """The states entering chunk ``chunk``, with the sequences starting there put in."""
        if self.restarts is not None and chunk in self.restarts.starts:
            lanes, rows = self.restarts.starts[chunk]
            self.states = tuple(
                s.index_copy(0, lanes, h.index_select(0, rows))
                for s, h in zip(self.states, self.s0, strict=True)
            )
        return self.states

    def leave(self, chunk: int, states: tuple[Tensor, ...]) -> None:
        """``states`` after chunk ``chunk``: those of the sequences ending there are kept."""
        self.states = states
        if self.restarts is not None and chunk in self.restarts.ends:
            lanes, _ = self.restarts.ends[chunk]
            self._finals.append(tuple(s.index_select(0, lanes) for s in states))

    def final(self) -> tuple[Tensor, ...]:
        """Each sequence's state after its last chunk (each lane's, without restarts)."""
        if self.restarts is None:
            return self.states
        order = self.restarts.order
        parts = zip(*self._finals, strict=True)
        return tuple(torch.cat(p).index_select(0, order) for p in parts)


def carry_states(
    decay: Tensor, delta: Tensor, s0: Tensor, restarts: Restarts | None = None
) -> tuple[Tensor, Tensor]:
    """The states entering each chunk, ``[B, h, n, d_k, d_v]``, and the final state.

    ``S_{c+1} = decay_c ⊙ S_c + delta_c`` from ``S_0 = s0 [B, h, d_k, d_v]``; ``decay [B, h,
    n, ...]`` broadcasts against ``delta [B, h, n, d_k, d_v]``. One update per chunk. With
    ``restarts``, B is the lanes, ``s0`` one row per sequence, and the final state each
    sequence's (:class:`Carry`)."""
    entering = []
    carry = Carry((s0,), restarts)
    # unbind, not indexing: the backward of one unbind is one stack, that of n selections n
    # full-size zero tensors
    for c, (a, d) in enumerate(zip(decay.unbind(2), delta.unbind(2), strict=True)):
        (s,) = carry.enter(c)
        entering.append(s)
        carry.leave(c, (a * s + d,))
    return torch.stack(entering, 2), carry.final()[0]


def causal_mask(chunk: int, device: torch.device, diagonal: int = 0) -> Tensor:
    """``[L, L]``: True where ``s <= t + diagonal`` (0: ``s <= t``; -1: ``s < t``)."""
    return torch.ones(chunk, chunk, dtype=torch.bool, device=device).tril(diagonal)


def segment_decays(b: Tensor, mask: Tensor) -> Tensor:
    """``exp(b_t - b_s)`` where ``mask[t, s]``, else 0: ``b [..., L]`` cumulative log decays
    of a chunk, the result ``[..., L, L]`` (every kept factor ``<= 1`` when ``b`` falls)."""
    diff = b.unsqueeze(-1) - b.unsqueeze(-2)
    return torch.exp(diff.masked_fill(~mask, -math.inf))


class MatrixCell(StepCell):
    """The shared parts of the matrix-state cells: sizes, the state's shapes, its check.

    A subclass defines ``step`` and ``chunked`` and, when its state is not ``(o, S)``,
    :meth:`state_shapes` (per row, after B). ``chunked`` runs over the padding
    (:meth:`parallel`) and over a ragged batch's chunk lanes (:meth:`parallel_packed`).
    ``input_projection`` is ``x W_ih^T (+ b_ih)`` unless the subclass says otherwise;
    ``cell(x, state=None)`` is ``step(input_projection(x), state)``.
    """

    # The chunked form, each cell's own: outputs [T, B, H] and the final state after the
    # output, from px [T, B, G], that state (sorted order), keep [T, B] (False: an identity
    # step) and the restarts (None: each of the B columns is one sequence; else lanes).
    chunked: Callable[
        [Tensor, tuple[Tensor, ...], Tensor, Restarts | None],
        tuple[Tensor, tuple[Tensor, ...]],
    ]

    input_size: int
    heads: int
    key_size: int
    value_size: int
    chunk_size: int
    parallel_from = 16  # steps from which the chunked form beats the loop on a CPU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        heads: int,
        key_size: int | None,
        chunk_size: int,
    ) -> None:
        super().__init__()
        self.input_size = check_positive("input_size", input_size)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.heads = check_positive("heads", heads)
        if hidden_size % heads:
            raise ValueError(
                f"hidden_size: expected a multiple of heads={heads}, found {hidden_size}"
            )
        self.value_size = hidden_size // heads
        self.key_size = check_positive(
            "key_size", self.value_size if key_size is None else key_size
        )
        self.chunk_size = check_positive("chunk_size", chunk_size)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """Whether the chunked form beats the loop on ``x`` (``backend='auto'``): on a GPU
        always, on a CPU from :attr:`parallel_from` steps. Measured for training (forward and
        backward, 1 thread, chunked/loop time) at B=4, I=H=256, 4 heads and at B=32, I=H=64,
        2 heads: 1.0-3.7 at T=4, 0.6-1.8 at T=8, 0.3-0.9 at T=16, 0.1-0.4 at T=64 over the
        five cells, so the chunked form is chosen from T=16."""
        return x.data.is_cuda or x.max_length >= self.parallel_from

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Outputs ``[T, B, H]`` and each sequence's final state, from ``px [T, B, G]``
        (sorted by length, descending) and ``state`` (sorted order); a step past a
        sequence's end is an identity step."""
        keep = valid_steps(lengths, px.shape[0], px.device)
        outputs, final = self.chunked(px, tuple(state[1:]), keep, None)
        return outputs, (last_outputs(outputs, lengths), *final)

    def packing_lanes(self, x: SequenceBatch) -> Lanes:
        """The lanes :meth:`parallel_packed` runs in: each sequence from a chunk boundary
        (:meth:`rnnkit.SequenceBatch.chunk_lanes` of :attr:`chunk_size`)."""
        return x.chunk_lanes(self.chunk_size)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The chunked form over a ragged batch's packed rows ``px [N, G]``, in chunk lanes
        (:meth:`packing_lanes`): sequences that fit one after another share a lane, each
        starting at a chunk boundary from its own row of ``state`` (:class:`Carry`), so the
        chunks are those of the lanes, not of the padding. Outputs ``[N, H]`` and each
        sequence's final state (sorted order)."""
        parts = self.check_state(state, x.batch_size)
        lanes = self.packing_lanes(x)
        filled = torch.zeros(lanes.steps * lanes.width, dtype=torch.bool, device=px.device)
        keep = filled.index_fill_(0, lanes.index, True).view(lanes.steps, lanes.width)
        restarts = Restarts.of(lanes, self.chunk_size)
        outputs, final = self.chunked(lanes.grid(px), parts[1:], keep, restarts)
        y = outputs.flatten(0, 1).index_select(0, lanes.index)
        return y, (y.index_select(0, x.last_rows_sorted()), *final)

    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each state tensor after its batch dimension: ``(o, S)``."""
        return (self.hidden_size,), (self.heads, self.key_size, self.value_size)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        """Zeros, one tensor per entry of :meth:`state_shapes`."""
        dtype = dtype or self.weight_ih.dtype
        device = device or self.weight_ih.device
        return tuple(
            torch.zeros(batch_size, *shape, device=device, dtype=dtype)
            for shape in self.state_shapes()
        )

    def check_state(self, state: State, batch: int) -> tuple[Tensor, ...]:
        """``state`` as a tuple, refused (ValueError naming the cell, the expected and the
        found shapes) unless it has the cell's state shapes for ``batch`` rows."""
        parts = as_tuple(state)
        expected = [(batch, *shape) for shape in self.state_shapes()]
        found = [tuple(s.shape) for s in parts]
        if found != expected:
            raise ValueError(
                f"{type(self).__name__}.step: expected a state of shapes {expected}, found {found}"
            )
        return parts

    def reset_parameters(self) -> None:
        """Weights Uniform(-1/sqrt(I), 1/sqrt(I)) (a linear layer's scale, since a
        projection reads the input); each cell draws its gates' parameters after."""
        bound = 1.0 / math.sqrt(self.weight_ih.shape[1])
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("weight"):
                    nn.init.uniform_(p, -bound, bound)
                elif name.startswith("bias"):
                    nn.init.zeros_(p)

    def heads_of(self, x: Tensor, size: int) -> Tensor:
        """``[..., h * size] -> [..., h, size]``."""
        return x.unflatten(-1, (self.heads, size))


class GLACell(MatrixCell):
    r"""Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
    Hardware-Efficient Training"), one recurrent state per head.

    .. code-block:: text

        q, k, v = W_q x, W_k x, W_v x               per head: [d_k], [d_k], [d_v]
        α = σ(W_α2 W_α1 x + b_α)^(1/τ)              [d_k], low rank 16, τ = 16
        log α ← max(log α, -10)                     (see below)
        S = diag(α) S + kᵀ v                        [d_k, d_v]
        o = q S                                     [d_v]

    The layer's output norm and gate (``RMSNorm(o) ⊙ swish(W_r x)``, then ``W_o``) belong to
    the block. Shapes: ``weight_ih [2 h d_k + H, I]`` (rows q, k, v), ``weight_gate_down [16,
    I]``, ``weight_gate_up [h d_k, 16]``, ``bias_gate [h d_k]``. State ``(o [B, H], S [B, h,
    d_k, d_v])``. ``decay``: the range of α at initialisation (zero input), spread over the
    key dimensions.

    The chunked form is the paper's two-level one: chunks of ``chunk_size`` steps pass the
    state on; inside a chunk, sub-chunks of ``sub_chunk`` steps (a divisor of
    ``chunk_size``, at most 8) meet through a reference point at the end of the earlier one
    (both factors ``<= 1``), and each sub-chunk meets itself through a reference at its first
    step. There the key factor ``e^{b_first - b_s}`` can exceed 1, so ``log α`` is clamped
    at :attr:`min_log_decay` = -10 per step (α >= 4.5e-5, reached only for gate
    pre-activations below -160) in every form: 7 steps of it stay below ``e^70``, inside
    float32. Training time (forward and backward, B=4, I=H=256, h=4, d_k=32, 1 thread,
    chunked/loop): at T=1024 0.29 for chunk 16, 0.34 for 32, 0.39 for 64 (sub-chunk 8), 0.46
    for 32 with sub-chunk 4; at T=4096 0.25 for 16, 0.27 for 32; so 16 with 8. By default
    (``sub_chunk=None``) the sub-chunk is the largest divisor of ``chunk_size`` up to 8.
    """

    gate_rank = 16
    temperature = 16.0
    min_log_decay = -10.0
    max_sub_chunk = 8

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        heads: int = 4,
        key_size: int | None = None,
        chunk_size: int = 16,
        sub_chunk: int | None = None,
        decay: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        super().__init__(input_size, hidden_size, heads, key_size, chunk_size)
        if sub_chunk is None:
            limit = min(chunk_size, self.max_sub_chunk)
            sub_chunk = max(d for d in range(1, limit + 1) if chunk_size % d == 0)
        self.sub_chunk = check_positive("sub_chunk", sub_chunk)
        if chunk_size % sub_chunk or sub_chunk > self.max_sub_chunk:
            raise ValueError(
                f"sub_chunk: expected a divisor of chunk_size={chunk_size} of at most "
                f"{self.max_sub_chunk}, found {sub_chunk}"
            )
        self.decay = check_decay("decay", decay)
        keys = heads * self.key_size
        self.weight_ih = nn.Parameter(torch.empty(2 * keys + hidden_size, input_size))
        self.bias_ih = None
        self.weight_gate_down = nn.Parameter(torch.empty(self.gate_rank, input_size))
        self.weight_gate_up = nn.Parameter(torch.empty(keys, self.gate_rank))
        self.bias_gate = nn.Parameter(torch.empty(keys))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections as a linear layer; ``b_α`` so that ``σ(b_α)^(1/τ)`` spans
        :attr:`decay` (log-spaced over the key dimensions of each head)."""
        super().reset_parameters()
        low, high = self.decay
        alpha = torch.logspace(math.log10(low), math.log10(high), self.key_size)
        with torch.no_grad():
            self.bias_gate.copy_(torch.logit(alpha**self.temperature).repeat(self.heads))

    def input_projection(self, x: Tensor) -> Tensor:
        """``[N, I] -> [N, 3 h d_k + H]``: q, k, v, then the gate's pre-activation."""
        qkv = super().input_projection(x)
        gate = F.linear(F.linear(x, self.weight_gate_down), self.weight_gate_up, self.bias_gate)
        return torch.cat([qkv, gate], -1)

    def features(self, px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, k [..., h, d_k]``, ``v [..., h, d_v]``, ``log α [..., h, d_k]``."""
        keys = self.heads * self.key_size
        q, k, v, gate = px.split([keys, keys, self.hidden_size, keys], -1)
        log_alpha = (F.logsigmoid(gate) / self.temperature).clamp(min=self.min_log_decay)
        dk, dv = self.key_size, self.value_size
        return (
            self.heads_of(q, dk),
            self.heads_of(k, dk),
            self.heads_of(v, dv),
            self.heads_of(log_alpha, dk),
        )

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        _, s = self.check_state(state, px.shape[0])
        q, k, v, log_alpha = self.features(px)
        s = torch.exp(log_alpha).unsqueeze(-1) * s + k.unsqueeze(-1) * v.unsqueeze(-2)
        o = (q.unsqueeze(-2) @ s).squeeze(-2)
        return o.flatten(1), s

    def chunked(
        self, px: Tensor, state: tuple[Tensor, ...], keep: Tensor, restarts: Restarts | None
    ) -> tuple[Tensor, tuple[Tensor]]:
        """Outputs ``[T, B, H]`` and the final ``S`` (see :class:`MatrixCell`)."""
        steps = px.shape[0]
        q, k, v, log_alpha = self.features(px)
        keep = keep[..., None, None]
        k, log_alpha = k * keep, log_alpha * keep
        chunk = self.chunk_size
        q, k, v, g = (to_chunks(t, chunk) for t in (q, k, v, log_alpha))
        out, final = gla_chunks(q, k, v, g, state[0], self.sub_chunk, restarts)
        return from_chunks(out, steps), (final,)


def gla_chunks(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    s0: Tensor,
    sub: int,
    restarts: Restarts | None = None,
) -> tuple[Tensor, Tensor]:
    """Gated linear attention over chunks: ``q, k, g [B, h, n, L, d_k]`` (``g`` the log
    decays, at least :attr:`GLACell.min_log_decay` each), ``v [B, h, n, L, d_v]``, ``s0 [B,
    h, d_k, d_v]``, sub-chunks of ``sub`` steps; the outputs ``[B, h, n, L, d_v]`` and the
    final state (with ``restarts``: B lanes, see :func:`carry_states`).

    .. code-block:: text

        b_t = Σ_{r≤t} g_r (within the chunk)
        S_next = e^{b_L} ⊙ S + Σ_s (k_s ⊙ e^{b_L - b_s})ᵀ v_s
        o_t = (q_t ⊙ e^{b_t}) S + Σ_{s≤t} Σ_d q_td k_sd e^{b_td - b_sd} v_s

    The last sum splits at a reference point r: ``(q_t ⊙ e^{b_t - b_r}) · (k_s ⊙ e^{b_r -
    b_s})``. Between sub-chunks r is the end of the earlier one (both factors <= 1); within
    a sub-chunk r is its first step, so the key factor is at most ``e^{-(sub - 1) g_min}``.
    """
    chunk = q.shape[-2]
    b = g.cumsum(-2)
    end = b[..., -1:, :]
    delta = (k * torch.exp(end - b)).transpose(-1, -2) @ v
    entering, final = carry_states(torch.exp(end).transpose(-1, -2), delta, s0, restarts)
    out = (q * torch.exp(b)) @ entering
    m = chunk // sub
    bb, qq, kk, vv = (t.unflatten(-2, (m, sub)) for t in (b, q, k, v))  # [.., m, c, d]
    first = bb[..., :1, :]
    own = (qq * torch.exp(bb - first)) @ (kk * torch.exp(first - bb)).transpose(-1, -2)
    own = own.masked_fill(~causal_mask(sub, q.device), 0.0)
    out = out + (own @ vv).flatten(-3, -2)
    if m > 1:
        ref = bb[..., -1, :]  # [.., m, d_k]: the end of each sub-chunk
        k_ref = kk * torch.exp(ref.unsqueeze(-2) - bb)  # [.., m, c, d_k]
        # q_t e^{b_t - ref_j} [.., m, L, d_k] (for t past sub-chunk j; the rest masked)
        q_ref = q.unsqueeze(-3) * torch.exp((b.unsqueeze(-3) - ref.unsqueeze(-2)).clamp(max=0))
        later = torch.arange(chunk, device=q.device) // sub > torch.arange(
            m, device=q.device
        ).unsqueeze(1)
        cross = (q_ref @ k_ref.transpose(-1, -2)).masked_fill(~later.unsqueeze(-1), 0.0)
        out = out + (cross @ vv).sum(-3)
    return out, final


class Mamba2Cell(MatrixCell):
    r"""Mamba-2's selective state space, the SSD layer (Dao & Gu 2024, "Transformers are
    SSMs"): a scalar decay per head.

    .. code-block:: text

        Δ = softplus(W_Δ x + b_Δ)                   per head, a scalar
        a = exp(Δ A),  A = -exp(A_log)              per head, in (0, 1]
        x_h = W_x x [d_v],  B = W_B x [N],  C = W_C x [N]   (B, C shared by the heads)
        S = a S + Δ Bᵀ x_h                          [N, d_v]
        y = C S + D x_h

    N is ``state_size`` (the key size). The block's convolution, gate and norm are outside the
    cell. Shapes: ``weight_ih [H + 2N + h, I]`` (rows x, B, C, Δ), ``dt_bias [h]``, ``A_log
    [h]``, ``D [h]``. State ``(y [B, H], S [B, h, N, d_v])``. Initialisation as the paper: A
    uniform in [1, 16], Δ log-uniform in [0.001, 0.1].

    Chunked form: inside a chunk the scalar decays make an ``[L, L]`` matrix per head
    (``exp(b_t - b_s)``, ``s <= t``) that weights ``C_t · B_s``; between chunks the state is
    passed on. Training time (B=4, I=H=256, h=4, N=32, T=4096, 1 thread, chunked/loop):
    0.105 for chunk 32, 0.094 for 64, 0.21 for 128; so 64.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        heads: int = 4,
        state_size: int = 32,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(input_size, hidden_size, heads, state_size, chunk_size)
        n = self.key_size
        self.weight_ih = nn.Parameter(torch.empty(hidden_size + 2 * n + heads, input_size))
        self.bias_ih = None
        self.dt_bias = nn.Parameter(torch.empty(heads))
        self.A_log = nn.Parameter(torch.empty(heads))
        self.D = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections as a linear layer; ``A ~ U[1, 16]``, ``Δ ~ logU[0.001, 0.1]`` (through
        ``dt_bias``, the inverse softplus), ``D = 1``."""
        super().reset_parameters()
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.empty(self.heads).uniform_(1.0, 16.0)))
            dt = torch.exp(torch.empty(self.heads).uniform_(math.log(1e-3), math.log(1e-1)))
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.D.fill_(1.0)

    def features(self, px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x_h [..., h, d_v]``, ``B, C [..., N]``, ``Δ [..., h]``."""
        n = self.key_size
        x, bm, cm, dt = px.split([self.hidden_size, n, n, self.heads], -1)
        return self.heads_of(x, self.value_size), bm, cm, F.softplus(dt + self.dt_bias)

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        _, s = self.check_state(state, px.shape[0])
        x, bm, cm, dt = self.features(px)
        a = torch.exp(dt * -torch.exp(self.A_log))
        s = a[..., None, None] * s + (dt[..., None, None] * bm[:, None, :, None]) * x.unsqueeze(-2)
        y = (cm[:, None, None, :] @ s).squeeze(-2) + self.D.unsqueeze(-1) * x
        return y.flatten(1), s

    def chunked(
        self, px: Tensor, state: tuple[Tensor, ...], keep: Tensor, restarts: Restarts | None
    ) -> tuple[Tensor, tuple[Tensor]]:
        """Outputs ``[T, B, H]`` and the final ``S`` (see :class:`MatrixCell`)."""
        steps = px.shape[0]
        x, bm, cm, dt = self.features(px)
        dt = dt * keep.unsqueeze(-1)
        chunk = self.chunk_size
        x = to_chunks(x, chunk)  # [B, h, n, L, d_v]
        bm, cm = (to_chunks(t.unsqueeze(2), chunk) for t in (bm, cm))  # [B, 1, n, L, N]
        dt = to_chunks(dt, chunk)  # [B, h, n, L]
        b = (dt * -torch.exp(self.A_log)[:, None, None]).cumsum(-1)
        end = b[..., -1:]
        decays = segment_decays(b, causal_mask(chunk, px.device))
        intra = ((cm @ bm.transpose(-1, -2)) * decays * dt.unsqueeze(-2)) @ x
        into = (torch.exp(end - b) * dt).unsqueeze(-1)
        delta = (bm * into).transpose(-1, -2) @ x  # [B, h, n, N, d_v]
        entering, final = carry_states(torch.exp(end).unsqueeze(-1), delta, state[0], restarts)
        inter = torch.exp(b).unsqueeze(-1) * (cm @ entering)
        y = intra + inter + self.D[:, None, None, None] * x
        return from_chunks(y, steps), (final,)


class MLSTMCell(MatrixCell):
    r"""The mLSTM of xLSTM (Beck et al. 2024): a matrix memory with an exponential input
    gate, a normaliser and the max-stabiliser.

    .. code-block:: text

        q, k, v = W_q x, W_k x / sqrt(d_k), W_v x        per head
        i = exp(ĩ),  f = σ(f̃) or exp(f̃),  o = σ(W_o x)   ĩ, f̃ scalars per head
        m' = max(log f + m, log i)                       the stabiliser
        C' = e^{log f + m - m'} C + e^{log i - m'} kᵀ v  [d_k, d_v]
        n' = e^{log f + m - m'} n + e^{log i - m'} k     [d_k]
        h = o ⊙ (q C') / max(|q · n'|, e^{-m'})

    ``C``, ``n`` are stored divided by ``e^m`` (so they stay in range); ``h`` is the same as
    without the stabiliser, ``q C / max(|q · n|, 1)``. Shapes: ``weight_ih [2 h d_k + 2H + 2h,
    I]`` and ``bias_ih`` (rows q, k, v, ĩ, f̃, o). State ``(h [B, H], C [B, h, d_k, d_v], n
    [B, h, d_k], m [B, h])``, starting at zeros. ``forget``: ``'sigmoid'`` or ``'exp'``;
    ``decay``: the range of the forget gate at initialisation (xLSTM's bias 3..6 is
    ``σ(3)..σ(6)``, about (0.95, 0.9975)), spread over the heads.

    Chunked form: inside a chunk ``D[t, s] = b_t - b_s + log i_s`` (``b`` the cumulative log
    forget gate) with each row's maximum as the stabiliser, so every exponential is ``<= 1``;
    between chunks ``(C, n, m)`` pass on. Training time (B=4, I=H=256, h=4, d_k=64, T=4096,
    1 thread, chunked/loop): 0.135 for chunk 32, 0.12 for 64, 0.16 for 128; so 64.
    """

    bias_ih: nn.Parameter

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        heads: int = 4,
        key_size: int | None = None,
        chunk_size: int = 64,
        forget: str = "sigmoid",
        decay: tuple[float, float] = (0.9526, 0.9975),
    ) -> None:
        super().__init__(input_size, hidden_size, heads, key_size, chunk_size)
        if forget not in ("sigmoid", "exp"):
            raise ValueError(f"forget: expected 'sigmoid' or 'exp', found {forget!r}")
        self.forget = forget
        self.decay = check_decay("decay", decay)
        rows = 2 * heads * self.key_size + 2 * hidden_size + 2 * heads
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """``(h, C, n, m)``."""
        h, dk = self.heads, self.key_size
        return (self.hidden_size,), (h, dk, self.value_size), (h, dk), (h,)

    def reset_parameters(self) -> None:
        """Projections as a linear layer; the forget gate's bias so that the gate spans
        :attr:`decay` over the heads; the input gate's bias -10 (xLSTM), the others 0."""
        super().reset_parameters()
        low, high = self.decay
        f = torch.linspace(low, high, self.heads)
        bias = torch.logit(f) if self.forget == "sigmoid" else torch.log(f)
        start = 2 * self.heads * self.key_size + self.hidden_size
        with torch.no_grad():
            self.bias_ih[start : start + self.heads].fill_(-10.0)
            self.bias_ih[start + self.heads : start + 2 * self.heads].copy_(bias)

    def features(self, px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``q, k [..., h, d_k]``, ``v [..., h, d_v]``, ``log i, log f [..., h]``, ``o [...,
        H]``."""
        keys, h = self.heads * self.key_size, self.heads
        q, k, v, log_i, f, o = px.split([keys, keys, self.hidden_size, h, h, self.hidden_size], -1)
        log_f = F.logsigmoid(f) if self.forget == "sigmoid" else f
        k = k / math.sqrt(self.key_size)
        dk = self.key_size
        return (
            self.heads_of(q, dk),
            self.heads_of(k, dk),
            self.heads_of(v, self.value_size),
            log_i,
            log_f,
            torch.sigmoid(o),
        )

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _, c, n, m = self.check_state(state, px.shape[0])
        q, k, v, log_i, log_f, o = self.features(px)
        m_new = torch.maximum(log_f + m, log_i)
        f = torch.exp(log_f + m - m_new).unsqueeze(-1)
        i = torch.exp(log_i - m_new).unsqueeze(-1)
        c = f.unsqueeze(-1) * c + (i * k).unsqueeze(-1) * v.unsqueeze(-2)
        n = f * n + i * k
        num = (q.unsqueeze(-2) @ c).squeeze(-2)
        den = torch.maximum((q * n).sum(-1).abs(), torch.exp(-m_new)).unsqueeze(-1)
        return o * (num / den).flatten(1), c, n, m_new

    def chunked(
        self, px: Tensor, state: tuple[Tensor, ...], keep: Tensor, restarts: Restarts | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Outputs ``[T, B, H]`` and the final ``(C, n, m)`` (see :class:`MatrixCell`)."""
        steps = px.shape[0]
        q, k, v, log_i, log_f, o = self.features(px)
        keep = keep.unsqueeze(-1)
        log_f = log_f * keep
        log_i = log_i.masked_fill(~keep, _NO_INPUT)
        chunk = self.chunk_size
        q, k, v = (to_chunks(t, chunk) for t in (q, k, v))
        # padded steps past T: no input, no decay
        log_i = to_chunks(log_i, chunk, _NO_INPUT)
        b = to_chunks(log_f, chunk).cumsum(-1)  # [B, h, n, L]
        end = b[..., -1:]
        # within the chunk: D[t, s] = b_t - b_s + log i_s (s <= t), stabilised by its row max
        scores = b.unsqueeze(-1) - b.unsqueeze(-2) + log_i.unsqueeze(-2)
        scores = scores.masked_fill(~causal_mask(chunk, px.device), -math.inf)
        # what each chunk adds to (C, n), relative to its own maximum
        into = end - b + log_i  # [B, h, n, L]
        top = into.amax(-1, keepdim=True)
        weights = torch.exp(into - top).unsqueeze(-1) * k
        delta_c = weights.transpose(-1, -2) @ v  # [B, h, n, d_k, d_v]
        delta_n = weights.sum(-2)  # [B, h, n, d_k]
        carry = Carry(tuple(state), restarts)
        entering_c, entering_n, entering_m = [], [], []
        chunks = zip(
            *(t.unbind(2) for t in (end[..., 0], top[..., 0], delta_c, delta_n)), strict=True
        )
        for j, (e, t, dc, dn) in enumerate(chunks):
            c, n, m = carry.enter(j)
            entering_c.append(c)
            entering_n.append(n)
            entering_m.append(m)
            m_new = torch.maximum(e + m, t)
            old, new = torch.exp(e + m - m_new), torch.exp(t - m_new)
            c = old[..., None, None] * c + new[..., None, None] * dc
            n = old[..., None] * n + new[..., None] * dn
            carry.leave(j, (c, n, m_new))
        c0, n0, m0 = (torch.stack(s, 2) for s in (entering_c, entering_n, entering_m))
        carried = b + m0.unsqueeze(-1)  # [B, h, n, L]: log weight of the entering state
        m_t = torch.maximum(carried, scores.amax(-1))
        w_in = torch.exp(carried - m_t).unsqueeze(-1)
        w = torch.exp(scores - m_t.unsqueeze(-1)) * (q @ k.transpose(-1, -2))
        num = w_in * (q @ c0) + w @ v
        den = w_in.squeeze(-1) * (q * n0.unsqueeze(-2)).sum(-1) + w.sum(-1)
        den = torch.maximum(den.abs(), torch.exp(-m_t)).unsqueeze(-1)
        c, n, m = carry.final()
        return o * from_chunks(num / den, steps), (c, n, m)
