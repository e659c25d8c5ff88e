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
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from rnnkit.lazy import input_weight, take_input_size
from rnnkit.scan import linear_scan, scan_packed

if TYPE_CHECKING:
    from rnnkit.sequences import SequenceBatch

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
StepFunction: TypeAlias = Callable[[Tensor, State], State]
# Runs of at least this many steps copy their recurrent weights transposed once, outside
# training (bench/run.py custom/*/batch1: a one-row product reads [H, G*H] faster than a view
# of its transpose).
_COPY_WEIGHTS_FROM = 4


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

    Optionally ``step_function(steps) -> StepFunction``: :meth:`step` with its per-run work
    done once (weights split and transposed, stabiliser scales computed), for the loop, which
    asks for it once per run of ``steps`` time steps and calls it at every step. It must
    compute exactly what ``step`` does; rnnkit's cells define ``step`` through it, so there is
    one implementation.
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


def check_state(
    cell: object, state: tuple[Tensor, ...], expected: tuple[tuple[int, ...], ...]
) -> None:
    """Raise ``ValueError`` naming ``cell``, the expected and the found shapes unless
    ``state`` holds one tensor per entry of ``expected``, each ``[B, *shape]`` with one
    batch size ``B`` (a ``step`` checks the state it is handed so)."""
    found = tuple(tuple(s.shape) for s in state)
    batch = found[0][0] if found and found[0] else None
    if len(found) != len(expected) or any(
        f != (batch, *e) for f, e in zip(found, expected, strict=False)
    ):
        want = ", ".join(f"[B, {', '.join(map(str, e))}]" for e in expected)
        raise ValueError(
            f"state: {type(cell).__name__} expected a state of {len(expected)} tensor(s) of "
            f"shapes ({want}), found {found}"
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


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


def _check_input(name: str, x: Tensor, size: int | None) -> None:
    if x.dim() != 2 or x.shape[1] != size:
        raise ValueError(f"{name}: expected input of shape [B, {size}], found {tuple(x.shape)}")


def _check_sizes(**sizes: int | None) -> None:
    """Refuse a size that is not a positive integer, naming the argument."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, found {value!r}")


def _required_size(name: str, value: int | None) -> int:
    """``value``, refused unless a positive integer (a size that cannot be inferred)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return value


def _check_input_size(input_size: int | None) -> None:
    """None (inferred at the first call) or a positive integer."""
    if input_size is not None:
        _check_sizes(input_size=input_size)


def _activation(argument: str, name: str) -> Callable[[Tensor], Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"{argument}: expected one of {sorted(_ACTIVATIONS)}, found {name!r}")
    return _ACTIVATIONS[name]


# Droppo's self-stabiliser (CNTK's Stabilizer): beta = softplus(4 p) / 4, a scalar per use,
# starting at p = log(e^4 - 1) / 4, where beta = 1.
STABILIZER_STEEPNESS = 4.0
STABILIZER_INIT = math.log(math.expm1(STABILIZER_STEEPNESS)) / STABILIZER_STEEPNESS


def stabilizer_scale(p: Tensor) -> Tensor:
    """``beta = log(1 + exp(4 p)) / 4`` (CNTK's ``Stabilizer`` with steepness 4): positive,
    about linear near ``p = 1``, and 1 at the initial ``p``."""
    return nn.functional.softplus(p, beta=STABILIZER_STEEPNESS)


ParameterInit: TypeAlias = Callable[[str, nn.Parameter], None]


class _StepCell(nn.Module):
    """Shared parts: uniform init (as torch.nn), ``__call__`` = step(input_projection(x)),
    shape inference (``input_size=None``: ``weight_ih`` materialised at the first call).

    ``initializer``: None (torch.nn's uniform) or ``fn(name, parameter)`` drawing one
    parameter in place; :meth:`reset_parameters` and the first call of a cell built without
    its input size use it (``rnnkit.cntk``'s blocks set CNTK's Glorot initialisation so).
    """

    input_size: int | None
    hidden_size: int
    weight_ih: nn.Parameter
    bias_ih: nn.Parameter | None
    step: Callable[[Tensor, State], State]
    initializer: ParameterInit | None = None
    # weight_ih's rows, [rows, input_size]; set by each cell from its sizes
    _input_rows: int

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(_materialize_from_state)

    def _input_weight(self, rows: int, input_size: int | None) -> nn.Parameter:
        """``weight_ih [rows, I]``, uninitialised until the first call when I is not known."""
        self._input_rows = rows
        return input_weight((rows,), input_size)

    def materialize(self, input_size: int) -> None:
        """Give a cell built without its input size its ``weight_ih [G*H, input_size]``, drawn
        by the cell's initialisation (what its first call does with the input's size)."""
        if take_input_size(self, self.weight_ih, self._input_rows, input_size):
            with torch.no_grad():
                self._init_parameter("weight_ih", self.weight_ih)

    def reset_parameters(self) -> None:
        """Draw every parameter: with :attr:`initializer` when set, else Uniform(-1/sqrt(H),
        1/sqrt(H)) for every weight, as ``torch.nn`` cells do (a stabiliser starts at 1, a
        layer norm at its own reset). A weight that waits for the input size is drawn at the
        first call."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if not is_lazy(p):
                    self._init_parameter(name, p)

    def _init_parameter(self, name: str, p: nn.Parameter) -> None:
        if self.initializer is not None:
            self.initializer(name, p)
        elif name.startswith("stabilizer"):
            nn.init.constant_(p, STABILIZER_INIT)
        elif not name.startswith("layer_norm"):
            bound = 1.0 / math.sqrt(self.hidden_size)
            nn.init.uniform_(p, -bound, bound)

    def _stabilizer(self, name: str, enabled: bool) -> None:
        """Register the scalar stabiliser parameter ``name`` when ``enabled``, None otherwise."""
        value = nn.Parameter(torch.full((1,), STABILIZER_INIT)) if enabled else None
        self.register_parameter(name, value)

    @staticmethod
    def _transposed(weight: Tensor, steps: int) -> Tensor:
        """``weight.t()`` for ``x @ weight.t()``; outside training, for a run of many steps, a
        contiguous copy made once, which a one-row product (batch 1) reads about 1.4x as fast
        (and a 64-row one 1.15x); in training the copy's layout slows the weight gradient of
        a 64-row batch by about 10 %, so there the view stays."""
        training = torch.is_grad_enabled() and weight.requires_grad
        if steps >= _COPY_WEIGHTS_FROM and not training:
            return weight.t().contiguous()
        return weight.t()

    def _scale(self, name: str) -> Tensor | None:
        """``beta`` of the stabiliser ``name`` (once per run), or None when the cell has none."""
        p = self._parameters.get(name)
        return None if p is None else stabilizer_scale(p)

    def _stabilized(self, name: str, x: Tensor) -> Tensor:
        """``beta * x`` with the stabiliser ``name``, or ``x`` when the cell has none."""
        p = getattr(self, name)
        return x if p is None else stabilizer_scale(p) * x

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """Zeros ``[B, H]`` (cells with more state tensors return a tuple)."""
        return self._zeros(batch_size, self.hidden_size, device, dtype)

    def input_projection(self, x: Tensor) -> Tensor:
        """``[N, I] -> [N, G*H]``: ``x W_ih^T + b_ih`` for all steps at once (the first call
        of a cell built without its input size takes I from ``x``)."""
        if self.input_size is None and x.dim() == 2:
            self.materialize(x.shape[1])
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


StepCell = _StepCell
"""The shared base of rnnkit's cells (public name for cells defined in other modules):
``input_projection``, ``step``, ``__call__`` as ``step(input_projection(x))``, torch.nn's
uniform initialisation and shape inference from the first call."""


def _materialize_from_state(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object
) -> None:
    """Before ``load_state_dict``: a cell that has not run yet takes its input size from the
    stored ``weight_ih``."""
    stored = state_dict.get(f"{prefix}weight_ih")
    if isinstance(module, _StepCell) and module.input_size is None and stored is not None:
        module.materialize(int(stored.shape[-1]))


Activation: TypeAlias = Literal["tanh", "relu", "sigmoid"]


class RNNCell(_StepCell):
    r"""Elman cell: ``h' = f(W_ih x + b_ih + W_hh h + b_hh)``.

    ``nonlinearity`` is ``'tanh'`` (default, as ``torch.nn.RNNCell``), ``'relu'`` (IRNN when
    ``weight_hh`` is the identity, Le et al. 2015) or ``'sigmoid'`` (CNTK's ``RNNStep``).
    ``input_size=None``: inferred at the first call. ``proj_size > 0`` (CNTK's ``cell_shape``):
    the output is ``h' = W_hr f(...)``, ``weight_hr [P, H]``, and the recurrent state has size
    P. ``self_stabilization`` (CNTK's ``enable_self_stabilization``, Droppo's stabiliser): the
    previous state is scaled by a trained scalar ``softplus(4 s) / 4`` before its product,
    ``stabilizer_dh``, and the output before its projection, ``stabilizer_p``.

    Shapes: ``weight_ih [H, I]``, ``weight_hh [H, P or H]``, biases ``[H]``; x ``[B, I]``,
    state ``[B, P or H]``; ``hidden_size`` is the output size (P when projected).
    """

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        nonlinearity: Activation = "tanh",
        proj_size: int = 0,
        self_stabilization: bool = False,
    ) -> None:
        super().__init__()
        _check_input_size(input_size)
        hidden_size = _required_size("hidden_size", hidden_size)
        self.activation = _activation("nonlinearity", nonlinearity)
        _check_projection(proj_size, hidden_size, square=False)
        self.input_size, self.cell_size, self.proj_size = input_size, hidden_size, proj_size
        self.hidden_size = proj_size or hidden_size
        self.nonlinearity, self.self_stabilization = nonlinearity, self_stabilization
        h, r = hidden_size, self.hidden_size
        self.weight_ih = self._input_weight(h, input_size)
        self.weight_hh = nn.Parameter(torch.empty(h, r))
        self.bias_ih = nn.Parameter(torch.empty(h)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(h)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(r, h)) if proj_size else None
        self._stabilizer("stabilizer_dh", self_stabilization)
        self._stabilizer("stabilizer_p", self_stabilization and proj_size > 0)
        self.reset_parameters()

    def step(self, px: Tensor, state: State) -> Tensor:
        return self.step_function(1)(px, state)  # type: ignore[return-value]

    def step_function(self, steps: int = 1) -> StepFunction:
        """:meth:`step` with the weights transposed and the stabilisers computed once."""
        w_t, bias, act = self._transposed(self.weight_hh, steps), self.bias_hh, self.activation
        s_dh, s_p = self._scale("stabilizer_dh"), self._scale("stabilizer_p")
        w_hr_t = None if self.weight_hr is None else self._transposed(self.weight_hr, steps)

        def step(px: Tensor, state: State) -> Tensor:
            h = state if isinstance(state, Tensor) else state[0]
            if s_dh is not None:
                h = s_dh * h
            pre = torch.addmm(px, h, w_t)
            h_next = act(pre if bias is None else pre + bias)
            if w_hr_t is not None:
                h_next = (h_next if s_p is None else s_p * h_next) @ w_hr_t
            return h_next

        return step

    def fused_kernel(self) -> FusedKernel | str:
        """``rnn_tanh`` or ``rnn_relu`` (``torch.nn.RNN``); none for ``'sigmoid'``, a
        projection or self-stabilisation."""
        unfit = None
        if self.nonlinearity == "sigmoid":
            unfit = "a sigmoid RNNCell"
        elif self.proj_size or self.self_stabilization:
            unfit = "an RNNCell with proj_size or self_stabilization"
        name: FusedKernelName = "rnn_relu" if self.nonlinearity == "relu" else "rnn_tanh"
        return _own_kernel(self, RNNCell, name, unfit)


def _check_projection(proj_size: int, hidden_size: int, square: bool) -> None:
    """``proj_size``: 0 (none) or a positive size (equal to ``hidden_size`` when ``square``)."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
        raise ValueError(
            f"proj_size: expected 0 (no projection) or a positive integer, found {proj_size!r}"
        )
    if square and proj_size not in (0, hidden_size):
        raise ValueError(
            f"proj_size: a GRU's update mixes its cell and its previous output elementwise, so "
            f"its projection is square: expected 0 or hidden_size={hidden_size}, found "
            f"{proj_size}"
        )


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
    ``weight_cf``, ``weight_co`` of shape ``[H]``), ``proj_size`` (Sak et al. 2014:
    ``weight_hr [P, H]``, the output and recurrent state have size P; torch.nn.LSTM wants
    ``P < H``, CNTK's ``cell_shape`` allows any P), ``layer_norm`` (Ba et al. 2016: the input
    and recurrent gate pre-activations and the cell are normalised separately, each with its
    own gain and bias), ``activation`` (in place of both tanh, as CNTK's ``activation=``) and
    ``self_stabilization`` (CNTK's ``enable_self_stabilization``: trained scalars
    ``beta = softplus(4 s) / 4`` scale the previous ``h`` before its product,
    ``stabilizer_dh``, the previous ``c`` in the input and forget peepholes, ``stabilizer_dc``,
    the new ``c`` in the output peephole, ``stabilizer_c``, and ``h`` before the projection,
    ``stabilizer_p``; the forget product ``f ⊙ c`` keeps the raw ``c``, as CNTK's blocks.py).
    ``input_size=None``: inferred at the first call.

    Shapes: ``weight_ih [4H, I]``, ``weight_hh [4H, P or H]``, biases ``[4H]``.
    State: ``(h [B, P or H], c [B, H])``; ``hidden_size`` of the cell is the output size.
    """

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        proj_size: int = 0,
        peepholes: bool = False,
        layer_norm: bool = False,
        activation: Activation = "tanh",
        self_stabilization: bool = False,
    ) -> None:
        super().__init__()
        _check_input_size(input_size)
        hidden_size = _required_size("hidden_size", hidden_size)
        _check_projection(proj_size, hidden_size, square=False)
        self._activate = _activation("activation", activation)
        self.input_size, self.cell_size, self.proj_size = input_size, hidden_size, proj_size
        self.hidden_size = proj_size or hidden_size
        self.peepholes, self.layer_norm = peepholes, layer_norm
        self.activation, self.self_stabilization = activation, self_stabilization
        h, r = hidden_size, self.hidden_size
        self.weight_ih = self._input_weight(4 * h, input_size)
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
        self._stabilizer("stabilizer_dh", self_stabilization)
        self._stabilizer("stabilizer_dc", self_stabilization and peepholes)
        self._stabilizer("stabilizer_c", self_stabilization and peepholes)
        self._stabilizer("stabilizer_p", self_stabilization and proj_size > 0)
        self.reset_parameters()

    @property
    def is_standard(self) -> bool:
        """True when ``torch.nn.LSTM``'s oneDNN/cuDNN kernel computes exactly this cell
        (oneDNN has no projection kernel, so a projected LSTM runs on the loop)."""
        options = (self.peepholes, self.layer_norm, self.proj_size, self.self_stabilization)
        return not any(options) and self.activation == "tanh"

    def fused_kernel(self) -> FusedKernel | str:
        """``lstm`` (``torch.nn.LSTM``) when :attr:`is_standard`."""
        unfit = (
            None
            if self.is_standard
            else "an LSTMCell with peepholes, layer_norm or proj_size (or self_stabilization, "
            "or an activation other than tanh)"
        )
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
        return self.step_function(1)(px, state)  # type: ignore[return-value]

    def step_function(self, steps: int = 1) -> StepFunction:
        """:meth:`step` with the weights transposed and the stabilisers computed once."""
        w_t, b_hh, act = self._transposed(self.weight_hh, steps), self.bias_hh, self._activate
        s_dh, s_dc = self._scale("stabilizer_dh"), self._scale("stabilizer_dc")
        s_c, s_p = self._scale("stabilizer_c"), self._scale("stabilizer_p")
        w_hr_t = None if self.weight_hr is None else self._transposed(self.weight_hr, steps)
        peep = (self.weight_ci, self.weight_cf, self.weight_co) if self.peepholes else None
        ln_hh = _norm_args(self.layer_norm_hh) if self.layer_norm else None
        ln_c = _norm_args(self.layer_norm_c) if self.layer_norm else None
        layer_norm = nn.functional.layer_norm
        gate_sizes = [self.weight_hh.shape[0] // 4] * 4  # sizes, not chunk(4): a static ONNX Split

        def step(px: Tensor, state: State) -> tuple[Tensor, Tensor]:
            h, c = state
            if s_dh is not None:
                h = s_dh * h
            if ln_hh is not None:
                ph = h @ w_t if b_hh is None else torch.addmm(b_hh, h, w_t)
                gates = px + layer_norm(ph, *ln_hh)
            else:
                gates = torch.addmm(px, h, w_t)
                if b_hh is not None:
                    gates = gates + b_hh
            i, f, g, o = gates.split_with_sizes(gate_sizes, dim=1)
            if peep is not None:
                cs = c if s_dc is None else s_dc * c
                i, f = torch.addcmul(i, peep[0], cs), torch.addcmul(f, peep[1], cs)
            c_next = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), act(g))
            if peep is not None:
                o = torch.addcmul(o, peep[2], c_next if s_c is None else s_c * c_next)
            c_out = c_next if ln_c is None else layer_norm(c_next, *ln_c)
            h_next = torch.sigmoid(o) * act(c_out)
            if w_hr_t is not None:
                h_next = (h_next if s_p is None else s_p * h_next) @ w_hr_t
            return h_next, c_next

        return step


def _lerp(start: Tensor, end: Tensor, weight: Tensor) -> Tensor:
    """``start + weight ⊙ (end - start)`` in one ``torch.lerp``, with the arithmetic's type
    promotion, which lerp lacks (under autocast the products come out in bfloat16 while the
    state stays float32)."""
    if start.dtype == end.dtype == weight.dtype:
        return torch.lerp(start, end, weight)
    dtype = torch.promote_types(torch.promote_types(start.dtype, end.dtype), weight.dtype)
    return torch.lerp(start.to(dtype), end.to(dtype), weight.to(dtype))


def _norm_args(norm: nn.Module) -> tuple[Any, ...]:
    """``nn.functional.layer_norm``'s arguments after the input, from an ``nn.LayerNorm``."""
    return (norm.normalized_shape, norm.weight, norm.bias, norm.eps)


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

    Options: ``activation`` (in place of tanh, CNTK's ``activation=``), ``proj_size``
    (CNTK's ``cell_shape``: ``h' = W_hr ((1 - z) ⊙ n + z ⊙ h)``, ``weight_hr [H, H]``; square,
    since the update mixes the cell with the previous output elementwise) and
    ``self_stabilization`` (CNTK's ``enable_self_stabilization``: the previous ``h`` is scaled
    by a trained ``beta = softplus(4 s) / 4``, ``stabilizer_dh``, everywhere it is used, in the
    products and in ``z ⊙ h``, and the output before its projection, ``stabilizer_p``; the
    ``z ⊙ h`` term is why no fixed weights can stand in for a trained stabiliser).
    ``input_size=None``: inferred at the first call.

    Shapes: ``weight_ih [3H, I]``, ``weight_hh [3H, H]``, biases ``[3H]``; state ``[B, H]``.
    """

    def __init__(
        self,
        input_size: int | None = None,
        hidden_size: int | None = None,
        bias: bool = True,
        reset: Literal["after", "before"] = "after",
        activation: Activation = "tanh",
        proj_size: int = 0,
        self_stabilization: bool = False,
    ) -> None:
        super().__init__()
        _check_input_size(input_size)
        hidden_size = _required_size("hidden_size", hidden_size)
        if reset not in ("after", "before"):
            raise ValueError(f"reset: expected 'after' or 'before', found {reset!r}")
        self._activate = _activation("activation", activation)
        _check_projection(proj_size, hidden_size, square=True)
        self.input_size, self.hidden_size, self.reset = input_size, hidden_size, reset
        self.activation, self.proj_size = activation, proj_size
        self.self_stabilization = self_stabilization
        self.weight_ih = self._input_weight(3 * hidden_size, input_size)
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(hidden_size, hidden_size)) if proj_size else None
        self._stabilizer("stabilizer_dh", self_stabilization)
        self._stabilizer("stabilizer_p", self_stabilization and proj_size > 0)
        self.reset_parameters()

    @property
    def is_standard(self) -> bool:
        """True when ``torch.nn.GRU``'s fused kernel computes exactly this cell."""
        options = (self.proj_size, self.self_stabilization)
        return self.reset == "after" and self.activation == "tanh" and not any(options)

    def fused_kernel(self) -> FusedKernel | str:
        """``gru`` (``torch.nn.GRU``) when :attr:`is_standard`."""
        unfit = (
            None
            if self.is_standard
            else "a GRUCell with reset='before', proj_size, self_stabilization or an "
            "activation other than tanh"
        )
        return _own_kernel(self, GRUCell, "gru", unfit)

    def step(self, px: Tensor, state: State) -> Tensor:
        return self.step_function(1)(px, state)  # type: ignore[return-value]

    def step_function(self, steps: int = 1) -> StepFunction:
        """:meth:`step` with the weights split and transposed and the stabilisers computed
        once; ``h' = (1 - z) ⊙ n + z ⊙ h`` as one ``lerp``."""
        hid, act, bias = self.hidden_size, self._activate, self.bias_hh
        s_dh, s_p = self._scale("stabilizer_dh"), self._scale("stabilizer_p")
        w_hr_t = None if self.weight_hr is None else self._transposed(self.weight_hr, steps)
        split, halves = [2 * hid, hid], [hid, hid]  # sizes: static Splits in ONNX
        if self.reset == "after":
            w_t = self._transposed(self.weight_hh, steps)

            def products(x_rz: Tensor, x_n: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
                ph = h @ w_t if bias is None else torch.addmm(bias, h, w_t)
                h_rz, h_n = ph.split_with_sizes(split, dim=1)
                r, z = torch.sigmoid(x_rz + h_rz).split_with_sizes(halves, dim=1)
                return act(torch.addcmul(x_n, r, h_n)), z

        else:
            w_rz_t, w_n_t = (self._transposed(w, steps) for w in self.weight_hh.split(split))
            b_rz, b_n = (None, None) if bias is None else bias.split(split)

            def products(x_rz: Tensor, x_n: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
                rz = torch.addmm(x_rz, h, w_rz_t)
                gates = torch.sigmoid(rz if b_rz is None else rz + b_rz)
                r, z = gates.split_with_sizes(halves, dim=1)
                pn = torch.addmm(x_n, r * h, w_n_t)
                return act(pn if b_n is None else pn + b_n), z

        def step(px: Tensor, state: State) -> Tensor:
            h = state if isinstance(state, Tensor) else state[0]
            if s_dh is not None:
                h = s_dh * h
            x_rz, x_n = px.split_with_sizes(split, dim=1)
            n, z = products(x_rz, x_n, h)
            h_next = _lerp(n, h, z)
            if w_hr_t is not None:
                h_next = (h_next if s_p is None else s_p * h_next) @ w_hr_t
            return h_next

        return step


def _log_positive(v: Tensor) -> Tensor:
    """``log g(v)``, with ``g(v)`` ``v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` below (Feng
    et al. 2024), computed without forming ``g(v)``."""
    return torch.where(v >= 0, torch.log(v.clamp(min=0) + 0.5), -nn.functional.softplus(-v))


class _LinearRecurrenceCell(_StepCell):
    """A cell whose update is ``h' = a ⊙ h + b`` with ``a, b`` functions of ``x`` only.

    Such a recurrence runs as a parallel scan (:meth:`scan`): :func:`rnnkit.scan.linear_scan`,
    exact (no division by the cumulative products ``a_1 ⋯ a_t``, so no error growing with T),
    with a backward of its own. It replaced the log-space form ``h_t = A_t h_0 + A_t Σ_{k≤t}
    b_k / A_k`` (``logcumsumexp``), which was 3-5x slower on a CPU and drifted by up to 1e-3
    from it in float32 at T=4096 (forward and backward, 1 thread, B*H from 64 to 16,384:
    linear/log-space time 0.21-0.36). A ragged batch runs in its lanes
    (:meth:`parallel_packed`). Subclasses define ``log_coefficients(px) -> (log a, log b)``,
    ``[..., H]`` each.
    """

    log_coefficients: Callable[[Tensor], tuple[Tensor, Tensor]]
    gates: int  # rows of weight_ih per hidden unit

    def __init__(
        self, input_size: int | None = None, hidden_size: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        _check_input_size(input_size)
        hidden_size = _required_size("hidden_size", hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = self._input_weight(self.gates * hidden_size, input_size)
        self.bias_ih = nn.Parameter(torch.empty(self.gates * hidden_size)) if bias else None
        self.reset_parameters()

    def step(self, px: Tensor, state: State) -> Tensor:
        (h,) = as_tuple(state)
        log_a, log_b = self.log_coefficients(px)
        return torch.exp(log_a) * h + torch.exp(log_b)

    def scan(self, px: Tensor, h0: Tensor) -> Tensor:
        """All states ``[T, B, H]`` from the projected inputs ``[T, B, G*H]`` and ``h0 [B, H]``."""
        log_a, log_b = self.log_coefficients(px)
        return linear_scan(torch.exp(log_a), torch.exp(log_b), h0)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor]]:
        """The scan over a ragged batch's packed rows ``px [N, G*H]``, in the batch's lanes
        (:func:`rnnkit.scan.scan_packed`, no padding): every state ``[N, H]`` and each
        sequence's last."""
        (h0,) = state
        log_a, log_b = self.log_coefficients(px)
        h, last = scan_packed(torch.exp(log_a), torch.exp(log_b), h0, x)
        return h, (last,)


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
        """``[N, 3D] -> [N, 4D + H + 3H]``: what each step needs of its own inputs, computed
        for all steps at once: ``x̂ = c + a ⊙ x_last`` with ``a = (1 - m) ⊙ γ_x`` and
        ``c = m ⊙ x + (1 - m) ⊙ (1 - γ_x) ⊙ x_mean``; ``x_last' = m ⊙ x + (1 - m) ⊙ x_last``;
        ``γ_h``; and ``V m + b``."""
        _check_input("GRUDCell input", x, self.input_size)
        values, mask, delta = x.chunk(3, dim=-1)  # values are m ⊙ x already (pack_inputs)
        gamma_x = torch.exp(-torch.relu(self.weight_decay_x * delta + self.bias_decay_x))
        gamma_h = torch.exp(
            -torch.relu(nn.functional.linear(delta, self.weight_decay_h, self.bias_decay_h))
        )
        vm = nn.functional.linear(mask, self.weight_mh, self.bias_ih)
        unobserved = 1 - mask
        held = unobserved * gamma_x
        c = values + (unobserved - held) * self.x_mean
        return torch.cat([c, held, values, unobserved, gamma_h, vm], dim=-1)

    def step(self, px: Tensor, state: State) -> tuple[Tensor, Tensor]:
        return self.step_function(1)(px, state)  # type: ignore[return-value]

    def step_function(self, steps: int = 1) -> StepFunction:
        """:meth:`step` with the weights split and transposed once."""
        d, hid = self.num_variables, self.hidden_size
        w_t = self._transposed(self.weight_ih, steps)
        rz_n, halves = [2 * hid, hid], [hid, hid]  # sizes: static Splits in ONNX
        u_rz_t, u_n_t = (self._transposed(u, steps) for u in self.weight_hh.split(rz_n))
        parts = [d, d, d, d, hid, 3 * hid]

        def step(px: Tensor, state: State) -> tuple[Tensor, Tensor]:
            h, x_last = state
            c, held, mx, unobserved, gamma_h, vm = px.split_with_sizes(parts, dim=-1)
            x_hat = torch.addcmul(c, held, x_last)
            h_hat = gamma_h * h
            wx_rz, wx_n = torch.addmm(vm, x_hat, w_t).split_with_sizes(rz_n, dim=-1)
            gates = torch.sigmoid(torch.addmm(wx_rz, h_hat, u_rz_t))
            r, z = gates.split_with_sizes(halves, dim=-1)
            n = torch.tanh(torch.addmm(wx_n, r * h_hat, u_n_t))
            return _lerp(h_hat, n, z), torch.addcmul(mx, unobserved, x_last)

        return step
