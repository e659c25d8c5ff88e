"""Diagonal linear recurrences: LRU, RG-LRU, S6 (Mamba-1), and the mixers with a short causal
convolution, :class:`MambaCell` (Mamba's block) and :class:`HawkCell` (Griffin's recurrent block).

Each cell follows the step protocol of :class:`rnnkit.cells.Cell`, split in two:
``input_projection(x [N, I]) -> [N, G]`` (everything that depends on the input only, for all
steps at once) and ``step(px [B, G], state) -> state`` with ``state[0]`` the output
``[B, H]``; and it has a parallel form ``parallel(px [T, B, G], state, lengths) ->
(outputs [T, B, H], final state)`` over a padded, sorted batch, which the engine's
``'scan'`` backend runs (see :func:`rnnkit.recurrence.run_recurrence`). The three forms
compute the same numbers; the parallel one runs the recurrence as
:func:`~rnnkit.modern.scan.linear_scan` (complex for LRU; S6 and Mamba as
:func:`~rnnkit.modern.scan.selective_scan`, fused step by step, which on a CPU beats a scan
over materialised ``[T, B, D, N]`` tensors) and reads each sequence's final state at its own
last step; every input-only computation (gates, Δ, B, C, the convolution) runs on all steps
at once. A ``step``
handed a state of the wrong shape raises ``ValueError`` naming the cell and both shapes.

``parallel_pays(x)`` is each cell's measured rule for ``backend='auto'`` (see
``bench/modern_cases.py``).

>>> import torch
>>> from rnnkit import Recurrence, SequenceBatch
>>> cell = RGLRUCell(4)
>>> x = SequenceBatch.from_list([torch.randn(6, 4), torch.randn(3, 4)])
>>> a = Recurrence(cell, backend="loop")(x).data
>>> b = Recurrence(cell, backend="scan")(x).data
>>> bool(torch.allclose(a, b, atol=1e-6))
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnkit.cells import State, StepCell, as_tuple, check_state
from rnnkit.modern.scan import linear_scan, scan_packed, selective_scan
from rnnkit.sequences import SequenceBatch

__all__ = ["HawkCell", "LRUCell", "MambaCell", "RGLRUCell", "S6Cell", "ShortConv"]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return value


def _last(h: Tensor, lengths: Tensor) -> Tensor:
    """``h [T, B, ...]`` at each sequence's own last step ``lengths - 1``: ``[B, ...]``."""
    rows = torch.arange(h.shape[1], device=h.device)
    return h[(lengths - 1).to(h.device), rows]


# The parallel (fast) form from this many steps. Measured for training (forward and
# backward, ``bench/modern_cases.py --tune``, 1 thread of the 2-core AMD EPYC, B = 1, 16, 64,
# the bench's widths), parallel/loop time: T=2: 0.1-8 (S6 at B=1: 8.3); T=4: 0.1-1.2;
# T=8: 0.3-1.16; T=16: 0.25-0.95 (LRU 0.49-0.83, RG-LRU 0.49-0.95, S6 0.49-0.52, Mamba
# 0.28-0.50, Hawk 0.25-0.67); T=64: 0.10-0.88. From 16 steps it never lost.
PARALLEL_FROM = 16


def _pays(x: SequenceBatch) -> bool:
    return x.data.is_cuda or x.max_length >= PARALLEL_FROM


class ShortConv(nn.Module):
    r"""A short causal depthwise convolution over time, with a cache for streaming.

    .. code-block:: text

        y_t = Σ_{k<W} w[:, k] ⊙ x_{t-W+1+k} + bias        (x before the first step: the cache)

    Shapes: ``weight [D, W]``, ``bias [D]``; the cache ``[B, D, W-1]`` holds the last ``W-1``
    inputs, oldest first (zeros at the start).
    """

    def __init__(self, channels: int, width: int = 4) -> None:
        super().__init__()
        self.channels, self.width = _positive("channels", channels), _positive("width", width)
        self.weight = nn.Parameter(torch.empty(channels, width))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(W), 1/sqrt(W)), as ``torch.nn.Conv1d`` with one input channel."""
        bound = 1.0 / math.sqrt(self.width)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def step(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, D]``, ``cache [B, D, W-1]`` -> ``(y [B, D], cache')``."""
        window = torch.cat([cache, x.unsqueeze(-1)], dim=-1)
        return (window * self.weight).sum(-1) + self.bias, window[..., 1:]

    def parallel(self, x: Tensor, cache: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x [T, B, D]`` padded, ``cache [B, D, W-1]`` -> ``(y [T, B, D], cache [B, D,
        W-1])``, the cache after each sequence's own last step."""
        seq = torch.cat([cache, x.permute(1, 2, 0)], dim=-1)  # [B, D, W-1+T]
        y = nn.functional.conv1d(seq, self.weight.unsqueeze(1), self.bias, groups=self.channels)
        # x_t sits at W-1+t, so the last W-1 inputs of a sequence of length L at L..L+W-2.
        ends = lengths.to(x.device).unsqueeze(1) + torch.arange(self.width - 1, device=x.device)
        index = ends.unsqueeze(1).expand(-1, self.channels, -1)  # [B, D, W-1]
        return y.permute(2, 0, 1), seq.gather(2, index)

    def packed(self, rows: Tensor, cache: Tensor, x: SequenceBatch) -> tuple[Tensor, Tensor]:
        """:meth:`parallel` of a ragged batch's packed rows ``rows [N, D]``, run over the
        padding (each sequence needs its own past): ``(y [N, D], cache after each
        sequence)``."""
        padded, cache = self.parallel(
            x.with_data(rows).to_padded_time_major(), cache, x.sorted_lengths
        )
        return padded.flatten(0, 1).index_select(0, x.padded_index), cache


class LRUCell(StepCell):
    r"""Linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks
    for Long Sequences"): a complex diagonal recurrence with an exponential parametrisation.

    .. code-block:: text

        λ = exp(-exp(ν) + i exp(θ))                      ν, θ [N]: |λ| in (0, 1)
        h' = λ ⊙ h + γ ⊙ (B x)                          B = B_re + i B_im [N, H], γ = exp(γ_log) [N]
        y  = Re(C h') + D ⊙ x                            C = C_re + i C_im [H, N], D [H]

    Initialisation (the paper's): ``|λ|`` uniform on the ring ``r_min <= |λ| <= r_max``
    (``|λ|² ~ U(r_min², r_max²)``), ``arg λ ~ U(0, max_phase)``, ``γ = sqrt(1 - |λ|²)`` (the
    normalisation, trained from there, as in the paper), ``B`` and ``C`` Glorot-like normal,
    ``D ~ N(0, 1)``.

    Shapes: ``weight_ih [2N, H]`` (rows ``B_re`` then ``B_im``), ``nu_log``, ``theta_log``,
    ``gamma_log [N]``, ``C_re``, ``C_im [H, N]``, ``D [H]``. The input
    and output have ``H = hidden_size`` features; the state is ``(y [B, H], Re h [B, N],
    Im h [B, N])`` (real tensors, so it saves, streams and exports as any state).
    """

    def __init__(
        self,
        hidden_size: int,
        state_size: int,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        self.hidden_size = self.input_size = _positive("hidden_size", hidden_size)
        self.state_size = _positive("state_size", state_size)
        for name, r in (("r_min", r_min), ("r_max", r_max)):
            if not 0.0 < r <= 1.0:
                raise ValueError(
                    f"{name}: expected a decay modulus in (0, 1] (|λ| = exp(-exp(ν))), found {r!r}"
                )
        if r_min > r_max:
            raise ValueError(f"r_min: expected r_min <= r_max = {r_max!r}, found {r_min!r}")
        if not max_phase > 0:
            raise ValueError(f"max_phase: expected a positive angle, found {max_phase!r}")
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        n, h = state_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2 * n, h))
        self.bias_ih = None
        self.nu_log = nn.Parameter(torch.empty(n))
        self.theta_log = nn.Parameter(torch.empty(n))
        self.gamma_log = nn.Parameter(torch.empty(n))
        self.C_re = nn.Parameter(torch.empty(h, n))
        self.C_im = nn.Parameter(torch.empty(h, n))
        self.D = nn.Parameter(torch.empty(h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation (see the class docstring)."""
        n, h = self.state_size, self.hidden_size
        with torch.no_grad():
            u1, u2 = torch.rand(n), torch.rand(n)
            modulus_sq = u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2
            # |λ| = exp(-exp(ν)), so ν = log(-log|λ|) = log(-log(|λ|²) / 2); |λ| = 1 -> tiny ν.
            self.nu_log.copy_(torch.log((-0.5 * torch.log(modulus_sq)).clamp(min=1e-12)))
            self.theta_log.copy_(torch.log((self.max_phase * u2).clamp(min=1e-12)))
            self.gamma_log.copy_(0.5 * torch.log((1 - modulus_sq).clamp(min=1e-12)))
            nn.init.normal_(self.weight_ih, std=1 / math.sqrt(2 * h))
            nn.init.normal_(self.C_re, std=1 / math.sqrt(n))
            nn.init.normal_(self.C_im, std=1 / math.sqrt(n))
            nn.init.normal_(self.D)

    def decay(self) -> tuple[Tensor, Tensor]:
        """``(Re λ, Im λ)``, ``[N]`` each."""
        modulus = torch.exp(-torch.exp(self.nu_log))
        phase = torch.exp(self.theta_log)
        return modulus * torch.cos(phase), modulus * torch.sin(phase)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n = self.state_size
        return (
            self._zeros(batch_size, self.hidden_size, device, dtype),
            self._zeros(batch_size, n, device, dtype),
            self._zeros(batch_size, n, device, dtype),
        )

    def input_projection(self, x: Tensor) -> Tensor:
        """``[..., H] -> [..., 2N + H]``: ``γ ⊙ Re(B x)``, ``γ ⊙ Im(B x)``, ``D ⊙ x``."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"LRUCell input: expected input of shape [B, {self.hidden_size}], found "
                f"{tuple(x.shape)}"
            )
        gamma = torch.exp(self.gamma_log).repeat(2)
        bx = nn.functional.linear(x, self.weight_ih) * gamma
        return torch.cat([bx, self.D * x], dim=-1)

    def _output(self, h_re: Tensor, h_im: Tensor, dx: Tensor) -> Tensor:
        return h_re @ self.C_re.t() - h_im @ self.C_im.t() + dx

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor]:
        n = self.state_size
        _, h_re, h_im = self._checked(state)
        bx_re, bx_im, dx = px.split_with_sizes([n, n, self.hidden_size], dim=-1)
        l_re, l_im = self.decay()
        new_re = l_re * h_re - l_im * h_im + bx_re
        new_im = l_re * h_im + l_im * h_re + bx_im
        return self._output(new_re, new_im, dx), new_re, new_im

    def _checked(self, state: State) -> tuple[Tensor, ...]:
        state = as_tuple(state)
        n = self.state_size
        check_state(self, state, ((self.hidden_size,), (n,), (n,)))
        return state

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        n = self.state_size
        _, h_re, h_im = self._checked(state)
        bx_re, bx_im, dx = px.split_with_sizes([n, n, self.hidden_size], dim=-1)
        lam = torch.complex(*self.decay())
        h = linear_scan(lam.unsqueeze(0), torch.complex(bx_re, bx_im), torch.complex(h_re, h_im))
        y = self._output(h.real, h.imag, dx)
        last = _last(h, lengths)
        return y, (_last(y, lengths), last.real, last.imag)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The parallel form over a ragged batch's packed rows ``px [N, 2N+H]``, in the
        batch's lanes (:func:`~rnnkit.modern.scan.scan_packed`, no padding)."""
        n = self.state_size
        _, h_re, h_im = self._checked(state)
        bx_re, bx_im, dx = px.split_with_sizes([n, n, self.hidden_size], dim=-1)
        lam = torch.complex(*self.decay())
        h, last = scan_packed(
            lam.unsqueeze(0), torch.complex(bx_re, bx_im), torch.complex(h_re, h_im), x
        )
        y = self._output(h.real, h.imag, dx)
        return y, (y.index_select(0, x.last_rows_sorted()), last.real, last.imag)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """The parallel form from :data:`PARALLEL_FROM` (16) steps, measured."""
        return _pays(x)


class RGLRUCell(StepCell):
    r"""Real-gated linear recurrent unit (De et al. 2024, Griffin and Hawk).

    .. code-block:: text

        r = σ(W_a x + b_a)              recurrence gate
        i = σ(W_x x + b_x)              input gate
        log a = -c r ⊙ softplus(-Λ)      a = σ(Λ)^(c r), c = 8
        h' = a ⊙ h + sqrt(1 - a²) ⊙ (i ⊙ x)

    ``Λ`` starts where ``a^c = σ(Λ)^c`` is uniform in ``[a_min, a_max]`` (the paper's 0.9,
    0.999); the decay ``a`` is in (0, 1) for any parameters. ``sqrt(1 - a²)`` is computed as
    ``sqrt(-expm1(2 log a))``, floored at 1e-12 under the root so the gradient stays finite
    where ``a`` rounds to 1.

    Shapes: ``weight_ih [2H, H]`` (rows ``W_a`` then ``W_x``), ``bias_ih [2H]``,
    ``log_lambda [H]`` (``Λ``); input, output and state ``[B, H]``.
    """

    def __init__(
        self, hidden_size: int, c: float = 8.0, a_min: float = 0.9, a_max: float = 0.999
    ) -> None:
        super().__init__()
        self.hidden_size = self.input_size = _positive("hidden_size", hidden_size)
        if not c > 0:
            raise ValueError(f"c: expected a positive exponent scale, found {c!r}")
        for name, a in (("a_min", a_min), ("a_max", a_max)):
            if not 0.0 < a < 1.0:
                raise ValueError(f"{name}: expected a decay a^c in (0, 1), found {a!r}")
        if a_min > a_max:
            raise ValueError(f"a_min: expected a_min <= a_max = {a_max!r}, found {a_min!r}")
        self.c, self.a_min, self.a_max = float(c), float(a_min), float(a_max)
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2 * h, h))
        self.bias_ih = nn.Parameter(torch.empty(2 * h))
        self.log_lambda = nn.Parameter(torch.empty(h))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gates as ``torch.nn.Linear``; ``Λ`` so that ``σ(Λ)^c ~ U(a_min, a_max)``."""
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.hidden_size)
            nn.init.uniform_(self.weight_ih, -bound, bound)
            if self.bias_ih is not None:
                nn.init.uniform_(self.bias_ih, -bound, bound)
            a_c = torch.empty(self.hidden_size).uniform_(self.a_min, self.a_max)
            self.log_lambda.copy_(torch.logit(a_c ** (1.0 / self.c)))

    def input_projection(self, x: Tensor) -> Tensor:
        """``[..., H] -> [..., 3H]``: the gates' pre-activations and ``x``."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"RGLRUCell input: expected input of shape [B, {self.hidden_size}], found "
                f"{tuple(x.shape)}"
            )
        return torch.cat([nn.functional.linear(x, self.weight_ih, self.bias_ih), x], dim=-1)

    def coefficients(self, px: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, sqrt(1 - a²) ⊙ i ⊙ x)`` of ``h' = a ⊙ h + b``, ``[..., H]`` each."""
        gate_a, gate_x, x = px.chunk(3, dim=-1)
        log_a = -self.c * torch.sigmoid(gate_a) * nn.functional.softplus(-self.log_lambda)
        multiplier = torch.sqrt((-torch.expm1(2 * log_a)).clamp(min=1e-12))
        return torch.exp(log_a), multiplier * torch.sigmoid(gate_x) * x

    def step(self, px: Tensor, state: State) -> Tensor:
        (h,) = as_tuple(state)
        check_state(self, (h,), ((self.hidden_size,),))
        a, b = self.coefficients(px)
        return torch.addcmul(b, a, h)

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor]]:
        check_state(self, state, ((self.hidden_size,),))
        a, b = self.coefficients(px)
        h = linear_scan(a, b, state[0])
        return h, (_last(h, lengths),)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor]]:
        """The parallel form over a ragged batch's packed rows ``px [N, 3H]``, in the
        batch's lanes (:func:`~rnnkit.modern.scan.scan_packed`, no padding)."""
        check_state(self, state, ((self.hidden_size,),))
        a, b = self.coefficients(px)
        h, last = scan_packed(a, b, state[0], x)
        return h, (last,)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """The parallel form from :data:`PARALLEL_FROM` (16) steps, measured."""
        return _pays(x)


class S6Cell(StepCell):
    r"""The selective state space of Mamba-1 (Gu & Dao 2023, "Mamba: Linear-Time Sequence
    Modeling with Selective State Spaces"), input-dependent Δ, B and C.

    .. code-block:: text

        [δ, B_t, C_t] = W_x x               δ [R], B_t, C_t [N]
        Δ = softplus(W_Δ δ + b_Δ)            [D]
        A = -exp(A_log)                      [D, N]
        h' = exp(Δ A) ⊙ h + (Δ ⊙ x) B_tᵀ     [D, N] (zero-order hold of A, Euler step of B)
        y = h' C_t + D_skip ⊙ x             [D]

    Initialisation as the paper's code: ``A_log[d, n] = log(n + 1)`` (S4D-real),
    ``softplus(b_Δ)`` log-uniform in ``[dt_min, dt_max]``, ``D_skip = 1``.

    Shapes: ``weight_ih [R + 2N, D]`` (``W_x``, rows δ, B, C), ``weight_dt [D, R]``,
    ``bias_dt [D]``, ``A_log [D, N]``, ``D_skip [D]``; input and output ``[B, D]``
    (``hidden_size`` D), state ``(y [B, D], h [B, D, N])``. ``dt_rank`` R defaults to
    ``ceil(D / 16)``.
    """

    def __init__(
        self,
        hidden_size: int,
        state_size: int = 16,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
    ) -> None:
        super().__init__()
        self.hidden_size = self.input_size = _positive("hidden_size", hidden_size)
        self.state_size = _positive("state_size", state_size)
        self.dt_rank = _positive(
            "dt_rank", math.ceil(hidden_size / 16) if dt_rank is None else dt_rank
        )
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(
                f"dt_min, dt_max: expected 0 < dt_min <= dt_max (the step Δ's initial range), "
                f"found {dt_min!r}, {dt_max!r}"
            )
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        d, n, r = hidden_size, state_size, self.dt_rank
        self.weight_ih = nn.Parameter(torch.empty(r + 2 * n, d))
        self.bias_ih = None
        self.weight_dt = nn.Parameter(torch.empty(d, r))
        self.bias_dt = nn.Parameter(torch.empty(d))
        self.A_log = nn.Parameter(torch.empty(d, n))
        self.D_skip = nn.Parameter(torch.empty(d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's code's initialisation (see the class docstring)."""
        d, n, r = self.hidden_size, self.state_size, self.dt_rank
        with torch.no_grad():
            bound = 1.0 / math.sqrt(d)
            nn.init.uniform_(self.weight_ih, -bound, bound)
            nn.init.uniform_(self.weight_dt, -(r**-0.5), r**-0.5)
            log_dt = torch.rand(d) * (math.log(self.dt_max) - math.log(self.dt_min))
            dt = torch.exp(log_dt + math.log(self.dt_min)).clamp(min=1e-4)
            self.bias_dt.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(d, n))
            self.D_skip.fill_(1.0)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        y = self._zeros(batch_size, self.hidden_size, device, dtype)
        return y, y.new_zeros(batch_size, self.hidden_size, self.state_size)

    def input_projection(self, x: Tensor) -> Tensor:
        """``[..., D] -> [..., 2D + 2N]``: ``Δ``, ``B_t``, ``C_t`` and ``x``."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"S6Cell input: expected input of shape [B, {self.hidden_size}], found "
                f"{tuple(x.shape)}"
            )
        n, r = self.state_size, self.dt_rank
        delta, b, c = nn.functional.linear(x, self.weight_ih).split_with_sizes([r, n, n], -1)
        dt = nn.functional.softplus(nn.functional.linear(delta, self.weight_dt, self.bias_dt))
        return torch.cat([dt, b, c, x], dim=-1)

    def _split(self, px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(exp(Δ A), (Δ ⊙ x) B_tᵀ, C_t, x)`` and ``Δ``: ``[..., D, N]`` twice, ``[..., N]``,
        ``[..., D]``, ``[..., D]``."""
        d, n = self.hidden_size, self.state_size
        dt, b, c, x = px.split_with_sizes([d, n, n, d], dim=-1)
        decay = torch.exp(dt.unsqueeze(-1) * -torch.exp(self.A_log))
        return decay, (dt * x).unsqueeze(-1) * b.unsqueeze(-2), c, x, dt

    def advance(self, px: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One step from ``h [B, D, N]``: ``(y [B, D], h' [B, D, N])``."""
        check_state(self, (h,), ((self.hidden_size, self.state_size),))
        decay, bx, c, x, _ = self._split(px)
        h = torch.addcmul(bx, decay, h)
        return (h @ c.unsqueeze(-1)).squeeze(-1) + self.D_skip * x, h

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        state = as_tuple(state)
        check_state(self, state, ((self.hidden_size,), (self.hidden_size, self.state_size)))
        return self.advance(px, state[1])

    def scan_states(self, px: Tensor, h0: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The fast form from ``h0 [B, D, N]``: ``(y [T, B, D], final h [B, D, N])``, by
        :func:`~rnnkit.modern.scan.selective_scan` (fused step by step: on a CPU it beats the
        vectorised scan over ``[T, B, D, N]`` tensors, see its docstring)."""
        check_state(self, (h0,), ((self.hidden_size, self.state_size),))
        d, n = self.hidden_size, self.state_size
        dt, b, c, x = px.split_with_sizes([d, n, n, d], dim=-1)
        y, h = selective_scan(dt, -torch.exp(self.A_log), b, c, x, h0)
        return torch.addcmul(y, self.D_skip, x), _last(h, lengths)

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        check_state(self, state, ((self.hidden_size,), (self.hidden_size, self.state_size)))
        y, h = self.scan_states(px, state[1], lengths)
        return y, (_last(y, lengths), h)

    def scan_packed_states(self, px: Tensor, h0: Tensor, x: SequenceBatch) -> tuple[Tensor, Tensor]:
        """:meth:`scan_states` over a ragged batch's packed rows ``px [N, 2D+2N]``: ``(y [N,
        D], final h [B, D, N])``. From zero states the sequences run in the batch's lanes
        with resets at their starts (no padding); from any other ``h0`` (a carried or
        learned state) on the padding, as :meth:`scan_states`."""
        check_state(self, (h0,), ((self.hidden_size, self.state_size),))
        if h0.requires_grad or bool(h0.any()):
            y, h = self.scan_states(x.with_data(px).to_padded_time_major(), h0, x.sorted_lengths)
            return y.flatten(0, 1).index_select(0, x.padded_index), h
        lanes = x.lanes
        d, n = self.hidden_size, self.state_size
        resets = torch.zeros(lanes.steps * lanes.width, dtype=torch.bool, device=px.device)
        resets[lanes.starts] = True
        dt, b, c, u = lanes.grid(px).split_with_sizes([d, n, n, d], dim=-1)
        start = h0.new_zeros(lanes.width, d, n)
        y, h = selective_scan(
            dt, -torch.exp(self.A_log), b, c, u, start, resets.view(lanes.steps, lanes.width)
        )
        y = y.flatten(0, 1).index_select(0, lanes.index)
        last = h.flatten(0, 1).index_select(0, lanes.ends)
        return torch.addcmul(y, self.D_skip, px[:, d + 2 * n :]), last

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The parallel form over a ragged batch's packed rows (:meth:`scan_packed_states`)."""
        check_state(self, state, ((self.hidden_size,), (self.hidden_size, self.state_size)))
        y, h = self.scan_packed_states(px, state[1], x)
        return y, (y.index_select(0, x.last_rows_sorted()), h)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """The parallel form from :data:`PARALLEL_FROM` (16) steps, measured."""
        return _pays(x)


class _ConvMixer(StepCell):
    """What :class:`MambaCell` and :class:`HawkCell` share: an input projection of
    ``d_model``, a short convolution whose cache is in the state, a recurrence of width
    ``inner`` and an output projection; the state ``(out [B, d_model], conv cache [B, inner,
    W-1], recurrent state [B, inner, ...])``. Subclasses give :meth:`_shapes`."""

    hidden_size: int
    conv_width: int
    conv: ShortConv
    _inner: int  # the recurrence's width, set by each subclass
    _recurrent: tuple[int, ...]  # the recurrence's state shape after the batch dimension

    def _shapes(self) -> tuple[tuple[int, ...], ...]:
        return (self.hidden_size,), (self._inner, self.conv_width - 1), self._recurrent

    def _draw_input(self) -> None:
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.hidden_size)
            nn.init.uniform_(self.weight_ih, -bound, bound)
            if self.bias_ih is not None:
                nn.init.uniform_(self.bias_ih, -bound, bound)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        out = self._zeros(batch_size, self.hidden_size, device, dtype)
        return (out, *(out.new_zeros(batch_size, *shape) for shape in self._shapes()[1:]))

    def input_projection(self, x: Tensor) -> Tensor:
        """``[..., d_model] -> [..., 2 inner]``: the two branches."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{type(self).__name__} input: expected input of shape [B, "
                f"{self.hidden_size}], found {tuple(x.shape)}"
            )
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """The parallel form from :data:`PARALLEL_FROM` (16) steps, measured."""
        return _pays(x)


class MambaCell(_ConvMixer):
    r"""Mamba's mixer (Gu & Dao 2023, the Mamba block) as one cell, streamable.

    .. code-block:: text

        [u, z] = W_in x                         u, z [E], E = expand * d_model
        u = SiLU(conv(u))                       short causal depthwise conv, width W
        y = S6(u)                               (:class:`S6Cell`, state [E, N])
        out = W_out (y ⊙ SiLU(z))               [d_model]

    Shapes: ``weight_ih [2E, d_model]`` (``W_in``, no bias), ``conv`` (:class:`ShortConv`
    ``[E, W]``), ``s6`` (:class:`S6Cell` of width E), ``out_proj [d_model, E]`` (no bias).
    State: ``(out [B, d_model], conv cache [B, E, W-1], h [B, E, N])``.
    """

    def __init__(
        self, d_model: int, state_size: int = 16, expand: int = 2, conv_width: int = 4
    ) -> None:
        super().__init__()
        self.hidden_size = self.input_size = _positive("d_model", d_model)
        self.expand = _positive("expand", expand)
        self.state_size = _positive("state_size", state_size)
        self.conv_width = _positive("conv_width", conv_width)
        inner = self.inner_size = self._inner = expand * d_model
        self._recurrent = (inner, state_size)
        self.weight_ih = nn.Parameter(torch.empty(2 * inner, d_model))
        self.bias_ih = None
        self.conv = ShortConv(inner, conv_width)
        self.s6 = S6Cell(inner, state_size)
        self.out_proj = nn.Linear(inner, d_model, bias=False)
        self._draw_input()

    def reset_parameters(self) -> None:
        """Every part drawn again (torch.nn's uniform for the projections)."""
        self._draw_input()
        self.conv.reset_parameters()
        self.s6.reset_parameters()
        self.out_proj.reset_parameters()

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor]:
        state = as_tuple(state)
        check_state(self, state, self._shapes())
        u, z = px.chunk(2, dim=-1)
        u, cache = self.conv.step(u, state[1])
        y, h = self.s6.advance(self.s6.input_projection(nn.functional.silu(u)), state[2])
        return self.out_proj(y * nn.functional.silu(z)), cache, h

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        check_state(self, state, self._shapes())
        u, z = px.chunk(2, dim=-1)
        u, cache = self.conv.parallel(u, state[1], lengths)
        y, h = self.s6.scan_states(
            self.s6.input_projection(nn.functional.silu(u)), state[2], lengths
        )
        out = self.out_proj(y * nn.functional.silu(z))
        return out, (_last(out, lengths), cache, h)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The parallel form over a ragged batch's packed rows ``px [N, 2E]``: the short
        convolution over the padding (it needs each sequence's own past), the selective scan
        in the batch's lanes (:meth:`S6Cell.scan_packed_states`) and the gating and output
        projection on the packed rows."""
        check_state(self, state, self._shapes())
        u, z = px.chunk(2, dim=-1)
        u, cache = self.conv.packed(u, state[1], x)
        y, h = self.s6.scan_packed_states(
            self.s6.input_projection(nn.functional.silu(u)), state[2], x
        )
        out = self.out_proj(y * nn.functional.silu(z))
        return out, (out.index_select(0, x.last_rows_sorted()), cache, h)


class HawkCell(_ConvMixer):
    r"""Griffin's recurrent block (De et al. 2024; the mixer of Hawk) as one cell, streamable.

    .. code-block:: text

        g = GeLU(W_g x + b_g)                   [R]
        u = conv(W_u x + b_u)                   short causal depthwise conv, width W
        h' = RG-LRU(u)                          (:class:`RGLRUCell`, state [R])
        out = W_out (h' ⊙ g) + b_out            [d_model]

    Shapes: ``weight_ih [2R, d_model]``, ``bias_ih [2R]`` (rows ``g`` then ``u``), ``conv``
    (:class:`ShortConv` ``[R, W]``), ``rglru`` (:class:`RGLRUCell` of width R),
    ``out_proj [d_model, R]``. ``rnn_size`` R defaults to ``d_model``. State:
    ``(out [B, d_model], conv cache [B, R, W-1], h [B, R])``.
    """

    def __init__(self, d_model: int, rnn_size: int | None = None, conv_width: int = 4) -> None:
        super().__init__()
        self.hidden_size = self.input_size = _positive("d_model", d_model)
        self.rnn_size = _positive("rnn_size", d_model if rnn_size is None else rnn_size)
        self.conv_width = _positive("conv_width", conv_width)
        r = self._inner = self.rnn_size
        self._recurrent = (r,)
        self.weight_ih = nn.Parameter(torch.empty(2 * r, d_model))
        self.bias_ih = nn.Parameter(torch.empty(2 * r))
        self.conv = ShortConv(r, conv_width)
        self.rglru = RGLRUCell(r)
        self.out_proj = nn.Linear(r, d_model)
        self._draw_input()

    def reset_parameters(self) -> None:
        """Every part drawn again."""
        self._draw_input()
        self.conv.reset_parameters()
        self.rglru.reset_parameters()
        self.out_proj.reset_parameters()

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor]:
        state = as_tuple(state)
        check_state(self, state, self._shapes())
        g, u = px.chunk(2, dim=-1)
        u, cache = self.conv.step(u, state[1])
        h = self.rglru.step(self.rglru.input_projection(u), state[2])
        return self.out_proj(h * nn.functional.gelu(g)), cache, h

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        check_state(self, state, self._shapes())
        g, u = px.chunk(2, dim=-1)
        u, cache = self.conv.parallel(u, state[1], lengths)
        h, (h_last,) = self.rglru.parallel(self.rglru.input_projection(u), (state[2],), lengths)
        out = self.out_proj(h * nn.functional.gelu(g))
        return out, (_last(out, lengths), cache, h_last)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The parallel form over a ragged batch's packed rows ``px [N, 2R]``: the short
        convolution over the padding (it is cheap and needs each sequence's own past), the
        RG-LRU in the batch's lanes and the gating and output projection on the packed rows
        (no padding)."""
        check_state(self, state, self._shapes())
        g, u = px.chunk(2, dim=-1)
        u, cache = self.conv.packed(u, state[1], x)
        h, (h_last,) = self.rglru.parallel_packed(self.rglru.input_projection(u), (state[2],), x)
        out = self.out_proj(h * nn.functional.gelu(g))
        return out, (out.index_select(0, x.last_rows_sorted()), cache, h_last)
