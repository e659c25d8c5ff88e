"""Recurrent cells: step functions ``cell(x[B, I], state=None) -> state``.

Every cell uses PyTorch's parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``) and gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``), so ``torch.nn`` cells are
test oracles and the fused kernels run our parameters unchanged. A state is a tensor, or a
tuple of tensors whose first element is the output (``(h, c)`` for the LSTM).

Each cell splits itself in two, and the engine uses the split: ``input_projection(x)`` is the
part that depends on the input only (run on all N steps of a batch in one matrix product),
``step(px, state)`` the part that depends on the previous state. ``cell(x, state)`` is
``step(input_projection(x), state)``.

A cell that a PyTorch fused kernel computes exactly says so (``fused_kernel()``, see
:class:`Cell`); the engine asks the cell and keeps no list of cell classes.

>>> import torch
>>> cell = RNNCell(1, 1, nonlinearity="relu")
>>> with torch.no_grad():
...     _ = cell.weight_ih.fill_(1.0), cell.weight_hh.fill_(1.0)
...     _ = cell.bias_ih.zero_(), cell.bias_hh.zero_()
>>> h = cell(torch.tensor([[2.0]]))          # h1 = relu(2 + 0) = 2
>>> cell(torch.tensor([[3.0]]), h).item()   # h2 = relu(3 + 2) = 5
5.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Cell",
    "FusedKernel",
    "GRUCell",
    "GRUDCell",
    "LSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "RNNCell",
    "State",
    "check_cell",
]

State: TypeAlias = Tensor | tuple[Tensor, ...]
FusedKernelName: TypeAlias = Literal["lstm", "gru", "rnn_tanh", "rnn_relu"]


@runtime_checkable
class Cell(Protocol):
    """The step-function contract every combinator checks when it is built.

    ``__call__(x[B, I], state=None) -> state`` and ``initial_state(batch_size, device, dtype)``;
    ``hidden_size`` is the size of the output (the first state tensor). Optionally a cell
    splits itself into ``input_projection(x[N, I]) -> [N, G]`` and ``step(px[B, G], state)``.

    Optionally ``fused_kernel() -> FusedKernel | str``: the PyTorch fused kernel that computes
    the cell exactly (a :class:`FusedKernel`), or a phrase saying why none does (the engine
    puts it in its error for ``backend='fused'``). A cell with a kernel has torch's parameters
    ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (both biases or neither) in torch's
    gate order; the engine runs a cell without the method on the loop. rnnkit's RNN/LSTM/GRU
    cells answer with a kernel for their own computation only: a subclass that redefines
    ``forward``, ``input_projection`` or ``step`` gets a reason instead, so it never inherits
    the fused path silently.
    """

    hidden_size: int

    def __call__(self, x: Tensor, state: State | None = None) -> State: ...

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> State: ...


def check_cell(cell: object, argument: str = "cell") -> None:
    """Raise ``TypeError`` naming what ``cell`` lacks to be a step function."""
    missing = [
        name for name in ("__call__", "initial_state") if not callable(getattr(cell, name, None))
    ]
    if not isinstance(getattr(cell, "hidden_size", None), int):
        missing.append("hidden_size (an int)")
    if missing:
        raise TypeError(
            f"{argument}: expected a cell (a step function `cell(x, state=None) -> state` with "
            f"`initial_state(batch_size, device, dtype)` and `hidden_size`), found "
            f"{type(cell).__name__} without {', '.join(missing)}"
        )


def as_tuple(state: State) -> tuple[Tensor, ...]:
    """A state as a tuple of tensors."""
    return state if isinstance(state, tuple) else (state,)


@dataclass(frozen=True)
class FusedKernel:
    """A PyTorch fused kernel that computes a cell exactly (the answer of ``fused_kernel()``).

    ``name`` is the function of ``torch._VF`` behind ``torch.nn.LSTM``, ``GRU`` and ``RNN``
    (oneDNN on CPU, cuDNN on GPU), run on the cell's own ``weight_ih [G*H, I]``,
    ``weight_hh [G*H, H]``, ``bias_ih [G*H]`` and ``bias_hh [G*H]``.
    """

    name: FusedKernelName

    @property
    def pair(self) -> bool:
        """Whether the state is a pair ``(h, c)`` (the LSTM kernel)."""
        return self.name == "lstm"


# What a fused kernel stands in for: a subclass that redefines one of these computes
# something else than its parent, so it does not inherit its parent's kernel.
_FUSED_METHODS = ("forward", "input_projection", "step")


def _own_kernel(
    cell: nn.Module, owner: type, name: FusedKernelName, unfit: str | None
) -> FusedKernel | str:
    """``fused_kernel()`` of ``owner``'s cells: the kernel ``name`` unless the cell is
    ``unfit`` (a reason) or its class redefines one of ``owner``'s :data:`_FUSED_METHODS`."""
    cls = type(cell)
    for method in _FUSED_METHODS:
        if getattr(cls, method) is not getattr(owner, method):
            return f"{cls.__name__}, which redefines {owner.__name__}.{method}"
    return FusedKernel(name) if unfit is None else unfit


def _check_input(name: str, x: Tensor, size: int) -> None:
    if x.dim() != 2 or x.shape[1] != size:
        raise ValueError(f"{name}: expected input of shape [B, {size}], found {tuple(x.shape)}")


def _check_sizes(**sizes: int) -> None:
    """Refuse a size that is not a positive integer, naming the argument."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, found {value!r}")


class _StepCell(nn.Module):
    """Shared parts: uniform init (as torch.nn), ``__call__`` = step(input_projection(x))."""

    input_size: int
    hidden_size: int
    weight_ih: nn.Parameter
    bias_ih: nn.Parameter | None
    step: Callable[[Tensor, State], State]

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every weight, as ``torch.nn`` cells do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("layer_norm") or name == "stabilizer":
                continue
            nn.init.uniform_(p, -bound, bound)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zeros ``[B, H]`` (cells with more state tensors return a tuple)."""
        return self._zeros(batch_size, self.hidden_size, device, dtype)

    def input_projection(self, x: Tensor) -> Tensor:
        """``[N, I] -> [N, G*H]``: ``x W_ih^T + b_ih`` for all steps at once."""
        _check_input(f"{type(self).__name__} input", x, self.input_size)
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def fused_kernel(self) -> FusedKernel | str:
        """The fused kernel that computes this cell, or why none does (see :class:`Cell`):
        none for a cell that does not declare its own."""
        return f"{type(self).__name__}, which has no fused kernel"

    def forward(self, x: Tensor, state: State | None = None) -> State:
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self.step(self.input_projection(x), state)

    def _zeros(
        self, batch_size: int, size: int, device: torch.device | None, dtype: torch.dtype | None
    ) -> Tensor:
        dtype = dtype or self.weight_ih.dtype
        device = device or self.weight_ih.device
        return torch.zeros(batch_size, size, device=device, dtype=dtype)


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class RNNCell(_StepCell):
    r"""Elman cell: ``h' = f(W_ih x + b_ih + W_hh h + b_hh)``.

    ``nonlinearity`` is ``'tanh'`` (default, as ``torch.nn.RNNCell``), ``'relu'`` (IRNN when
    ``weight_hh`` is the identity, Le et al. 2015) or ``'sigmoid'`` (CNTK's ``RNNStep``).

    Shapes: ``weight_ih [H, I]``, ``weight_hh [H, H]``, biases ``[H]``; x ``[B, I]``,
    state ``[B, H]``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Literal["tanh", "relu", "sigmoid"] = "tanh",
    ) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size)
        if nonlinearity not in _ACTIVATIONS:
            raise ValueError(
                f"nonlinearity: expected one of {sorted(_ACTIVATIONS)}, found {nonlinearity!r}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity = nonlinearity
        self.activation = _ACTIVATIONS[nonlinearity]
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.reset_parameters()

    def step(self, px: Tensor, state: State) -> Tensor:
        (h,) = as_tuple(state)
        return self.activation(px + nn.functional.linear(h, self.weight_hh, self.bias_hh))

    def fused_kernel(self) -> FusedKernel | str:
        """``rnn_tanh`` or ``rnn_relu`` (``torch.nn.RNN``); none for ``'sigmoid'``."""
        unfit = "a sigmoid RNNCell" if self.nonlinearity == "sigmoid" else None
        name: FusedKernelName = "rnn_relu" if self.nonlinearity == "relu" else "rnn_tanh"
        return _own_kernel(self, RNNCell, name, unfit)


class LSTMCell(_StepCell):
    r"""Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's form and gate order.

    .. code-block:: text

        i = σ(W_ii x + b_ii + W_hi h + b_hi [+ p_i ⊙ c])      input gate
        f = σ(W_if x + b_if + W_hf h + b_hf [+ p_f ⊙ c])      forget gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)               candidate
        c' = f ⊙ c + i ⊙ g
        o = σ(W_io x + b_io + W_ho h + b_ho [+ p_o ⊙ c'])     output gate
        h' = o ⊙ tanh(c')            [then h' = W_hr h' when proj_size > 0]

    Options: ``peepholes`` (Gers & Schmidhuber 2000; diagonal weights ``weight_ci``,
    ``weight_cf``, ``weight_co`` of shape ``[H]``), ``proj_size`` (Sak et al. 2014, as
    ``torch.nn.LSTM``: ``weight_hr [P, H]``, the output and recurrent state have size P), and
    ``layer_norm`` (Ba et al. 2016: the input and recurrent gate pre-activations and the cell
    are normalised separately, each with its own gain and bias).

    Shapes: ``weight_ih [4H, I]``, ``weight_hh [4H, P or H]``, biases ``[4H]``.
    State: ``(h [B, P or H], c [B, H])``; ``hidden_size`` of the cell is the output size.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        peepholes: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size)
        if proj_size < 0 or (proj_size >= hidden_size and proj_size != 0):
            raise ValueError(
                f"proj_size: expected 0 (no projection) or 0 < proj_size < hidden_size="
                f"{hidden_size}, found {proj_size}"
            )
        self.input_size, self.cell_size, self.proj_size = input_size, hidden_size, proj_size
        self.hidden_size = proj_size or hidden_size
        self.peepholes, self.layer_norm = peepholes, layer_norm
        h, r = hidden_size, self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * h, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * h, r))
        self.bias_ih = nn.Parameter(torch.empty(4 * h)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * h)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(r, h)) if proj_size else None
        if peepholes:
            self.weight_ci = nn.Parameter(torch.empty(h))
            self.weight_cf = nn.Parameter(torch.empty(h))
            self.weight_co = nn.Parameter(torch.empty(h))
        if layer_norm:
            self.layer_norm_ih = nn.LayerNorm(4 * h)
            self.layer_norm_hh = nn.LayerNorm(4 * h)
            self.layer_norm_c = nn.LayerNorm(h)
        self.reset_parameters()

    @property
    def is_standard(self) -> bool:
        """True when ``torch.nn.LSTM``'s oneDNN/cuDNN kernel computes exactly this cell
        (oneDNN has no projection kernel, so a projected LSTM runs on the loop)."""
        return not (self.peepholes or self.layer_norm or self.proj_size)

    def fused_kernel(self) -> FusedKernel | str:
        """``lstm`` (``torch.nn.LSTM``) when :attr:`is_standard`."""
        unfit = None if self.is_standard else "an LSTMCell with peepholes, layer_norm or proj_size"
        return _own_kernel(self, LSTMCell, "lstm", unfit)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        return (
            self._zeros(batch_size, self.hidden_size, device, dtype),
            self._zeros(batch_size, self.cell_size, device, dtype),
        )

    def input_projection(self, x: Tensor) -> Tensor:
        px = super().input_projection(x)
        return self.layer_norm_ih(px) if self.layer_norm else px

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        h, c = as_tuple(state)
        ph = nn.functional.linear(h, self.weight_hh, self.bias_hh)
        gates = px + (self.layer_norm_hh(ph) if self.layer_norm else ph)
        i, f, g, o = gates.chunk(4, dim=1)
        if self.peepholes:
            i, f = i + self.weight_ci * c, f + self.weight_cf * c
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peepholes:
            o = o + self.weight_co * c_next
        c_out = self.layer_norm_c(c_next) if self.layer_norm else c_next
        h_next = torch.sigmoid(o) * torch.tanh(c_out)
        if self.weight_hr is not None:
            h_next = nn.functional.linear(h_next, self.weight_hr)
        return h_next, c_next


class GRUCell(_StepCell):
    r"""Gated recurrent unit (Cho et al. 2014), PyTorch's gate order ``r, z, n``.

    .. code-block:: text

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        reset='after' (cuDNN, PyTorch, Keras; default):
            n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        reset='before' (CNTK, and Cho et al.'s paper):
            n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
        h' = (1 - z) ⊙ n + z ⊙ h

    Shapes: ``weight_ih [3H, I]``, ``weight_hh [3H, H]``, biases ``[3H]``; state ``[B, H]``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset: Literal["after", "before"] = "after",
    ) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size)
        if reset not in ("after", "before"):
            raise ValueError(f"reset: expected 'after' or 'before', found {reset!r}")
        self.input_size, self.hidden_size, self.reset = input_size, hidden_size, reset
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.reset_parameters()

    @property
    def is_standard(self) -> bool:
        """True when ``torch.nn.GRU``'s fused kernel computes exactly this cell."""
        return self.reset == "after"

    def fused_kernel(self) -> FusedKernel | str:
        """``gru`` (``torch.nn.GRU``) when :attr:`is_standard`."""
        unfit = None if self.is_standard else "a GRUCell with reset='before'"
        return _own_kernel(self, GRUCell, "gru", unfit)

    def step(self, px: Tensor, state: State) -> Tensor:
        (h,) = as_tuple(state)
        x_r, x_z, x_n = px.chunk(3, dim=1)
        hidden = self.hidden_size
        if self.reset == "after":
            h_r, h_z, h_n = nn.functional.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            w_rz, w_n = self.weight_hh[: 2 * hidden], self.weight_hh[2 * hidden :]
            b_rz = None if self.bias_hh is None else self.bias_hh[: 2 * hidden]
            b_n = None if self.bias_hh is None else self.bias_hh[2 * hidden :]
            h_r, h_z = nn.functional.linear(h, w_rz, b_rz).chunk(2, dim=1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + nn.functional.linear(r * h, w_n, b_n))
        return (1 - z) * n + z * h


def _log_positive(v: Tensor) -> Tensor:
    """``log g(v)``, with ``g(v)`` ``v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` below (Feng
    et al. 2024), computed without forming ``g(v)``."""
    return torch.where(v >= 0, torch.log(v.clamp(min=0) + 0.5), -nn.functional.softplus(-v))


class _LinearRecurrenceCell(_StepCell):
    """A cell whose update is ``h' = a ⊙ h + b`` with ``a, b`` functions of ``x`` only.

    Such a recurrence runs as a parallel prefix scan (:meth:`scan`): with ``A_t = a_1 ⋯ a_t``,
    ``h_t = A_t h_0 + A_t Σ_{k≤t} b_k / A_k``, computed in log space (``logcumsumexp``) for
    stability, so its sequential depth is that of one cumulative sum instead of T steps.
    Subclasses define ``log_coefficients(px) -> (log a, log b)``, ``[..., H]`` each.
    """

    log_coefficients: Callable[[Tensor], tuple[Tensor, Tensor]]
    gates: int  # rows of weight_ih per hidden unit

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.gates * hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(self.gates * hidden_size)) if bias else None
        self.reset_parameters()

    def step(self, px: Tensor, state: State) -> Tensor:
        (h,) = as_tuple(state)
        log_a, log_b = self.log_coefficients(px)
        return torch.exp(log_a) * h + torch.exp(log_b)

    def scan(self, px: Tensor, h0: Tensor) -> Tensor:
        """All states ``[T, B, H]`` from the projected inputs ``[T, B, G*H]`` and ``h0 [B, H]``."""
        log_a, log_b = self.log_coefficients(px)
        a_star = torch.cumsum(log_a, dim=0)
        return torch.exp(a_star) * h0 + torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 0))


class MinGRUCell(_LinearRecurrenceCell):
    r"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): gates see ``x`` only.

    .. code-block:: text

        z = σ(W_iz x + b_iz)
        h̃ = g(W_ih x + b_ih)          g(v) = v + 0.5 (v ≥ 0), σ(v) (v < 0)
        h' = (1 - z) ⊙ h + z ⊙ h̃

    Shapes: ``weight_ih [2H, I]`` (rows ``z`` then ``h̃``), ``bias_ih [2H]``; state ``[B, H]``.
    Runs on the ``'scan'`` backend (a parallel prefix scan) or the loop.
    """

    gates = 2

    def log_coefficients(self, px: Tensor) -> tuple[Tensor, Tensor]:
        k, v = px.chunk(2, dim=-1)
        log_z = -nn.functional.softplus(-k)
        log_one_minus_z = -nn.functional.softplus(k)
        return log_one_minus_z, log_z + _log_positive(v)


class MinLSTMCell(_LinearRecurrenceCell):
    r"""minLSTM (Feng et al. 2024): forget and input gates of ``x`` only, normalised to sum 1.

    .. code-block:: text

        f = σ(W_if x + b_if)      i = σ(W_ii x + b_ii)      h̃ = g(W_ih x + b_ih)
        f' = f / (f + i)          i' = i / (f + i)
        h' = f' ⊙ h + i' ⊙ h̃

    Shapes: ``weight_ih [3H, I]`` (rows ``f``, ``i``, ``h̃``), ``bias_ih [3H]``; state ``[B, H]``.
    """

    gates = 3

    def log_coefficients(self, px: Tensor) -> tuple[Tensor, Tensor]:
        f, i, v = px.chunk(3, dim=-1)
        log_f, log_i = -nn.functional.softplus(-f), -nn.functional.softplus(-i)
        log_norm = torch.logaddexp(log_f, log_i)
        return log_f - log_norm, log_i - log_norm + _log_positive(v)


class GRUDCell(_StepCell):
    r"""GRU-D (Che et al. 2018, arXiv:1606.01865): a GRU for series with missing values.

    Each step's input is ``[x, m, δ]`` concatenated (``[B, 3D]``, see :meth:`pack_inputs`):
    the values ``x`` (anything where unobserved), the mask ``m`` (1 = observed) and ``δ``, the
    time since each variable was last observed, in any unit, from real timestamps. The state
    is ``(h [B, H], x_last [B, D])``, the last observed value of each variable (starting at the
    training mean ``x_mean``, a buffer set from the training split only).

    .. code-block:: text

        γ_x = exp(-max(0, w_γx ⊙ δ + b_γx))        input decay, diagonal
        γ_h = exp(-max(0, W_γh δ + b_γh))          hidden decay
        x̂ = m ⊙ x + (1 - m) ⊙ (γ_x ⊙ x_last + (1 - γ_x) ⊙ x_mean)
        ĥ = γ_h ⊙ h
        r = σ(W_r x̂ + U_r ĥ + V_r m + b_r)
        z = σ(W_z x̂ + U_z ĥ + V_z m + b_z)
        h̃ = tanh(W_n x̂ + U_n (r ⊙ ĥ) + V_n m + b_n)
        h' = (1 - z) ⊙ ĥ + z ⊙ h̃                  x_last' = m ⊙ x + (1 - m) ⊙ x_last

    Shapes: ``weight_ih [3H, D]`` (W, gates r, z, n), ``weight_hh [3H, H]`` (U),
    ``weight_mh [3H, D]`` (V), ``bias_ih [3H]``, ``weight_decay_x [D]``, ``bias_decay_x [D]``,
    ``weight_decay_h [H, D]``, ``bias_decay_h [H]``; ``input_size`` is ``3D``.
    """

    x_mean: Tensor

    def __init__(self, num_variables: int, hidden_size: int, x_mean: Tensor | None = None) -> None:
        super().__init__()
        _check_sizes(num_variables=num_variables, hidden_size=hidden_size)
        d, h = num_variables, hidden_size
        self.num_variables, self.hidden_size, self.input_size = d, h, 3 * d
        self.weight_ih = nn.Parameter(torch.empty(3 * h, d))
        self.weight_hh = nn.Parameter(torch.empty(3 * h, h))
        self.weight_mh = nn.Parameter(torch.empty(3 * h, d))
        self.bias_ih = nn.Parameter(torch.empty(3 * h))
        self.weight_decay_x = nn.Parameter(torch.empty(d))
        self.bias_decay_x = nn.Parameter(torch.empty(d))
        self.weight_decay_h = nn.Parameter(torch.empty(h, d))
        self.bias_decay_h = nn.Parameter(torch.empty(h))
        mean = torch.zeros(d) if x_mean is None else torch.as_tensor(x_mean, dtype=torch.float32)
        if mean.shape != (d,) or not bool(torch.isfinite(mean).all()):
            raise ValueError(
                f"x_mean: expected {d} finite training means, found shape {tuple(mean.shape)}"
                + ("" if mean.shape != (d,) else " with NaN/Inf (a variable never observed?)")
            )
        self.register_buffer("x_mean", mean.clone())
        self.reset_parameters()

    @staticmethod
    def pack_inputs(values: Tensor, mask: Tensor, delta: Tensor) -> Tensor:
        """``[T, D]`` values (NaN allowed where unobserved), mask and gaps to ``[T, 3D]``."""
        if values.shape != mask.shape or values.shape != delta.shape:
            raise ValueError(
                f"mask and delta: expected the shape of values {tuple(values.shape)}, found "
                f"{tuple(mask.shape)} and {tuple(delta.shape)}"
            )
        observed = mask.to(values.dtype)
        return torch.cat([torch.nan_to_num(values) * observed, observed, delta], dim=-1)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        h = self._zeros(batch_size, self.hidden_size, device, dtype)
        return h, self.x_mean.to(h).expand(batch_size, -1).clone()

    def input_projection(self, x: Tensor) -> Tensor:
        """``[N, 3D] -> [N, 2D + D + H + 3H]``: x, m, γ_x, γ_h and ``V m + b`` per step."""
        _check_input("GRUDCell input", x, self.input_size)
        values, mask, delta = x.chunk(3, dim=-1)
        gamma_x = torch.exp(-torch.relu(self.weight_decay_x * delta + self.bias_decay_x))
        gamma_h = torch.exp(
            -torch.relu(nn.functional.linear(delta, self.weight_decay_h, self.bias_decay_h))
        )
        vm = nn.functional.linear(mask, self.weight_mh, self.bias_ih)
        return torch.cat([values, mask, gamma_x, gamma_h, vm], dim=-1)

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        h, x_last = as_tuple(state)
        d, hid = self.num_variables, self.hidden_size
        x, m, gamma_x, gamma_h, vm = px.split([d, d, d, hid, 3 * hid], dim=-1)
        x_hat = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * self.x_mean)
        h_hat = gamma_h * h
        wx_r, wx_z, wx_n = nn.functional.linear(x_hat, self.weight_ih).chunk(3, dim=-1)
        vm_r, vm_z, vm_n = vm.chunk(3, dim=-1)
        u_rz, u_n = self.weight_hh[: 2 * hid], self.weight_hh[2 * hid :]
        uh_r, uh_z = nn.functional.linear(h_hat, u_rz).chunk(2, dim=-1)
        r = torch.sigmoid(wx_r + uh_r + vm_r)
        z = torch.sigmoid(wx_z + uh_z + vm_z)
        n = torch.tanh(wx_n + nn.functional.linear(r * h_hat, u_n) + vm_n)
        return (1 - z) * h_hat + z * n, m * x + (1 - m) * x_last
