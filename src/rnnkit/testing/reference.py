"""NumPy reference implementations of backpropagation through time and through structure.

This module is written to be read. Every function is an explicit loop over time steps (or
over tree nodes) with the gates named as in the equations of its docstring, in float64. The
torch code of rnnkit is tested against it, and ``docs/concepts.md`` explains the algorithms
with links back to the functions here.

Contents:

- Recurrent networks, one sequence at a time: the Elman network (:func:`rnn_forward`,
  :func:`rnn_backward`), the LSTM (:func:`lstm_forward`, :func:`lstm_backward`) and the GRU
  (:func:`gru_forward`, :func:`gru_backward`). Parameters (:class:`CellParams`) use PyTorch's
  names, shapes and gate orders, so ``torch.nn.RNN``/``LSTM``/``GRU`` can run them unchanged.
- The recursive network over binary trees (:func:`recursive_forward`,
  :func:`recursive_backward`, :func:`recursive_gradient_check`), with
  :class:`RecursiveParams`.
- Training helpers shared by both: :func:`sgd_update`, :func:`clip_by_global_norm`,
  :func:`half_squared_error`.

Conventions. Shapes: T time steps, I input features, H hidden features, G gate blocks
("chunks": 1 Elman, 3 GRU, 4 LSTM), d the vector size of a tree node. The equations count
time from 1: ``h_0`` is the initial state and ``x_1 .. x_T`` the inputs. In the arrays,
``x[t - 1]`` is ``x_t`` and ``h[t]`` is ``h_t`` (``h`` holds ``T + 1`` rows, ``h[0] = h_0``),
so ``trace.h[1:]`` is the output sequence that ``torch.nn.RNN`` returns. ``*`` is the
element-wise product, ``@`` the matrix product, ``sigma`` the logistic sigmoid.

A forward pass returns a *trace*: every quantity the backward pass needs. A backward pass
takes ``dh[t - 1] = dL/dh_t`` for every step (the gradient the loss sends into each output
directly; zeros where a step has no loss), walks back from ``t = T`` to ``t = 1`` computing
the error term ``delta_t`` of each step, and returns the parameter gradients summed over
time together with ``dL/dx`` and ``dL/dh_0``.

>>> rng = np.random.default_rng(0)
>>> params = CellParams.uniform(input_size=3, hidden_size=2, num_chunks=1, rng=rng)
>>> trace = rnn_forward(params, rng.normal(size=(5, 3)))
>>> trace.h.shape  # h_0 .. h_5
(6, 2)
>>> grads = rnn_backward(params, trace, dh=np.ones((5, 2)))  # L = sum_t sum_j h_t[j]
>>> grads.params.weight_hh.shape, grads.x.shape, grads.h0.shape
((2, 2), (5, 3), (2,))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "BPTTGradients",
    "CellParams",
    "GRUTrace",
    "GradientCheckError",
    "LSTMTrace",
    "RNNTrace",
    "RecursiveGradients",
    "RecursiveParams",
    "Tree",
    "TreeTrace",
    "clip_by_global_norm",
    "gru_backward",
    "gru_forward",
    "half_squared_error",
    "lstm_backward",
    "lstm_forward",
    "recursive_backward",
    "recursive_forward",
    "recursive_gradient_check",
    "rnn_backward",
    "rnn_forward",
    "sgd_update",
]

Array: TypeAlias = npt.NDArray[np.float64]

NONLINEARITIES = ("tanh", "relu", "sigmoid")


# ---------------------------------------------------------------------------- helpers


def _array(name: str, value: npt.ArrayLike, shape: tuple[int | None, ...], legend: str) -> Array:
    """``value`` as a float64 array of ``shape`` (``None`` matches any size), else ValueError."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != len(shape) or any(
        want is not None and have != want for have, want in zip(array.shape, shape, strict=True)
    ):
        raise ValueError(f"{name}: expected shape {legend}, found {array.shape}")
    return array


def _sigmoid(a: Array) -> Array:
    """The logistic sigmoid ``1 / (1 + exp(-a))``, written as ``(1 + tanh(a/2)) / 2``.

    The two are equal; the tanh form never overflows for large negative ``a``.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * a))


# ---------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class CellParams:
    """The parameters of one recurrent layer, in PyTorch's names and shapes.

    Attributes:
        weight_ih: ``[G*H, I]`` input-to-hidden weights, the G gate blocks stacked.
        weight_hh: ``[G*H, H]`` hidden-to-hidden (recurrent) weights.
        bias_ih: ``[G*H]`` input bias.
        bias_hh: ``[G*H]`` recurrent bias.

    G ("chunks", PyTorch's ``num_chunks``) is 1 for the Elman network, 4 for the LSTM (blocks
    in the order i, f, g, o) and 3 for the GRU (r, z, n). The same class holds gradients:
    the backward functions return a ``CellParams`` whose arrays are ``dL/dweight_ih`` etc.

    >>> rng = np.random.default_rng(0)
    >>> p = CellParams.uniform(input_size=3, hidden_size=2, num_chunks=4, rng=rng)
    >>> p.weight_ih.shape, p.weight_hh.shape, p.bias_ih.shape, p.num_chunks
    ((8, 3), (8, 2), (8,), 4)
    """

    weight_ih: Array
    weight_hh: Array
    bias_ih: Array
    bias_hh: Array

    def __post_init__(self) -> None:
        weight_hh = np.asarray(self.weight_hh, dtype=np.float64)
        if (
            weight_hh.ndim != 2
            or weight_hh.shape[1] == 0
            or weight_hh.shape[0] % weight_hh.shape[1]
        ):
            raise ValueError(
                "weight_hh: expected shape [G*H, H] (G gate blocks of H rows), "
                f"found {weight_hh.shape}"
            )
        rows = weight_hh.shape[0]
        object.__setattr__(self, "weight_hh", weight_hh)
        object.__setattr__(
            self, "weight_ih", _array("weight_ih", self.weight_ih, (rows, None), f"[{rows}, I]")
        )
        object.__setattr__(self, "bias_ih", _array("bias_ih", self.bias_ih, (rows,), f"[{rows}]"))
        object.__setattr__(self, "bias_hh", _array("bias_hh", self.bias_hh, (rows,), f"[{rows}]"))

    @property
    def input_size(self) -> int:
        """I, the number of input features."""
        return int(self.weight_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        """H, the number of hidden features."""
        return int(self.weight_hh.shape[1])

    @property
    def num_chunks(self) -> int:
        """G, the number of gate blocks (1 Elman, 3 GRU, 4 LSTM)."""
        return int(self.weight_hh.shape[0] // self.weight_hh.shape[1])

    @classmethod
    def uniform(
        cls, input_size: int, hidden_size: int, num_chunks: int, rng: np.random.Generator
    ) -> CellParams:
        """PyTorch's default initialisation: every entry uniform in ``[-1/sqrt(H), 1/sqrt(H)]``."""
        bound = 1.0 / np.sqrt(hidden_size)
        rows = num_chunks * hidden_size
        return cls(
            weight_ih=rng.uniform(-bound, bound, size=(rows, input_size)),
            weight_hh=rng.uniform(-bound, bound, size=(rows, hidden_size)),
            bias_ih=rng.uniform(-bound, bound, size=rows),
            bias_hh=rng.uniform(-bound, bound, size=rows),
        )

    def _expect_chunks(self, num_chunks: int, model: str) -> None:
        if self.num_chunks != num_chunks:
            raise ValueError(
                f"params: expected {model} parameters with {num_chunks} gate block(s), "
                f"weight_hh of shape [{num_chunks}*H, H]; found weight_hh of shape "
                f"{self.weight_hh.shape} ({self.num_chunks} block(s))"
            )


@dataclass(frozen=True)
class BPTTGradients:
    """What a BPTT backward pass returns.

    Attributes:
        params: gradients of the loss with respect to every parameter, summed over time.
        x: ``[T, I]`` ``dL/dx_t`` for every step.
        h0: ``[H]`` ``dL/dh_0``.
        c0: ``[H]`` ``dL/dc_0`` for the LSTM; ``None`` for the Elman network and the GRU.
        deltas: ``[T, G*H]`` the error term of each step: ``deltas[t - 1]`` is the gradient
            of the loss with respect to the net input of the gate blocks at step ``t`` (the
            input-side net input for the GRU's ``n`` block). ``dL/dweight_ih`` is
            ``sum_t deltas[t - 1] x_t^T``.
    """

    params: CellParams
    x: Array
    h0: Array
    c0: Array | None
    deltas: Array


def _start_backward(
    params: CellParams, steps: int, dh: npt.ArrayLike, dh_final: npt.ArrayLike | None
) -> tuple[Array, Array, dict[str, Array]]:
    """Check ``dh`` and ``dh_final`` and allocate zeroed gradients."""
    hidden = params.hidden_size
    dh_arr = _array("dh", dh, (steps, hidden), f"[T, H] = [{steps}, {hidden}]")
    carry = np.zeros(hidden)
    if dh_final is not None:
        carry = _array("dh_final", dh_final, (hidden,), f"[H] = [{hidden}]").copy()
    zeros = {f.name: np.zeros_like(getattr(params, f.name)) for f in fields(params)}
    return dh_arr, carry, zeros


def _inputs(params: CellParams, x: npt.ArrayLike) -> Array:
    """Check ``x`` ``[T, I]`` with ``T >= 1``."""
    x_arr = _array("x", x, (None, params.input_size), f"[T, I] = [T, {params.input_size}]")
    if x_arr.shape[0] == 0:
        raise ValueError("x: expected at least one time step, found T = 0")
    return x_arr


def _initial_state(params: CellParams, state: npt.ArrayLike | None, name: str) -> Array:
    """Check an initial state ``[H]``; zeros when ``None``."""
    hidden = params.hidden_size
    if state is None:
        return np.zeros(hidden)
    return _array(name, state, (hidden,), f"[H] = [{hidden}]")


# ---------------------------------------------------------------------------- Elman network


@dataclass(frozen=True)
class RNNTrace:
    """Everything the Elman backward pass needs from the forward pass.

    Attributes:
        x: ``[T, I]`` the inputs.
        h: ``[T+1, H]`` the states, ``h[0] = h_0``.
        net: ``[T, H]`` the net inputs ``a_t`` (before the nonlinearity).
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
    """

    x: Array
    h: Array
    net: Array
    nonlinearity: str


def rnn_forward(
    params: CellParams,
    x: npt.ArrayLike,
    h0: npt.ArrayLike | None = None,
    nonlinearity: str = "tanh",
) -> RNNTrace:
    """Run the Elman network (Elman 1990, "Finding structure in time") over one sequence.

    For ``t = 1 .. T``::

        a_t = weight_ih @ x_t + bias_ih + weight_hh @ h_{t-1} + bias_hh     (net input)
        h_t = f(a_t)                          f = tanh, relu or sigmoid

    This is ``torch.nn.RNN`` for ``tanh`` and ``relu``. ``sigmoid`` is the default of CNTK's
    ``RNNStep``; PyTorch has no such option.

    Args:
        params: Elman parameters (one gate block): ``weight_ih [H, I]``, ``weight_hh [H, H]``.
        x: ``[T, I]`` the inputs.
        h0: ``[H]`` the initial state; zeros when ``None``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.

    Returns:
        The trace; ``trace.h[1:]`` ``[T, H]`` is the output sequence.

    With one unit, ``weight_ih = 1`` and ``weight_hh = 0.5``: ``h_1 = tanh(1) = 0.7616`` and
    ``h_2 = tanh(0 + 0.5 * 0.7616) = 0.3634``.

    >>> p = CellParams([[1.0]], [[0.5]], [0.0], [0.0])
    >>> np.round(rnn_forward(p, [[1.0], [0.0]]).h[1:, 0], 4)
    array([0.7616, 0.3634])
    """
    params._expect_chunks(1, "Elman")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"nonlinearity: expected one of {', '.join(NONLINEARITIES)}; found {nonlinearity!r}"
        )
    x_arr, h_start = _inputs(params, x), _initial_state(params, h0, "h0")
    steps, hidden = x_arr.shape[0], params.hidden_size
    h = np.zeros((steps + 1, hidden))
    net = np.zeros((steps, hidden))
    h[0] = h_start
    for t in range(1, steps + 1):
        a = params.weight_ih @ x_arr[t - 1] + params.bias_ih
        a = a + params.weight_hh @ h[t - 1] + params.bias_hh
        net[t - 1] = a
        if nonlinearity == "tanh":
            h[t] = np.tanh(a)
        elif nonlinearity == "relu":
            h[t] = np.maximum(a, 0.0)
        else:
            h[t] = _sigmoid(a)
    return RNNTrace(x=x_arr, h=h, net=net, nonlinearity=nonlinearity)


def _rnn_derivative(nonlinearity: str, net: Array, out: Array) -> Array:
    """``f'(a)`` for the Elman nonlinearity, from the net input ``a`` and the output ``f(a)``."""
    if nonlinearity == "tanh":
        return 1.0 - out**2  # tanh'(a) = 1 - tanh(a)^2
    if nonlinearity == "relu":
        return (net > 0.0).astype(np.float64)  # relu'(a) = 1 if a > 0 else 0
    return out * (1.0 - out)  # sigma'(a) = sigma(a) (1 - sigma(a))


def rnn_backward(
    params: CellParams,
    trace: RNNTrace,
    dh: npt.ArrayLike,
    dh_final: npt.ArrayLike | None = None,
) -> BPTTGradients:
    """Backpropagation through time for the Elman network (Werbos 1990).

    The loss reaches ``h_t`` two ways: directly (``dh[t - 1] = dL/dh_t``, given) and through
    ``h_{t+1}``, which depends on ``h_t`` via ``weight_hh``. Going back from ``t = T``::

        g_t     = dh_t + weight_hh^T @ delta_{t+1}        (total dL/dh_t; delta_{T+1} = 0,
                                                           plus dh_final at t = T)
        delta_t = g_t * f'(a_t)                           (the error term, dL/da_t)

        dweight_ih = sum_t delta_t x_t^T       dbias_ih = sum_t delta_t
        dweight_hh = sum_t delta_t h_{t-1}^T   dbias_hh = sum_t delta_t
        dx_t       = weight_ih^T @ delta_t     dh_0     = weight_hh^T @ delta_1

    Unrolled, ``dL/dh_t`` receives ``dL/dh_k`` for every later ``k`` times the product of the
    Jacobians ``prod_{j=t+1..k} diag(f'(a_j)) weight_hh``: the product that vanishes or
    explodes (see ``docs/concepts.md``).

    Args:
        params: the parameters the forward pass used.
        trace: the result of :func:`rnn_forward`.
        dh: ``[T, H]`` ``dL/dh_t`` from the loss at each step.
        dh_final: ``[H]`` an extra ``dL/dh_T`` from a loss on the final state, or ``None``.

    Returns:
        Gradients of the parameters (summed over time), the inputs and ``h_0``, and the error
        terms ``deltas [T, H]``.

    With ``h_1 = tanh(x_1)`` (all weights 1, biases 0, ``h_0 = 0``) and ``L = h_1``:
    ``dL/dweight_ih = tanh'(x_1) x_1 = (1 - tanh(1)^2) * 1 = 0.42``.

    >>> p = CellParams([[1.0]], [[1.0]], [0.0], [0.0])
    >>> g = rnn_backward(p, rnn_forward(p, [[1.0]]), dh=[[1.0]])
    >>> round(float(g.params.weight_ih[0, 0]), 4), round(float(g.params.weight_hh[0, 0]), 4)
    (0.42, 0.0)
    """
    params._expect_chunks(1, "Elman")
    steps = trace.x.shape[0]
    dh_arr, carry, grads = _start_backward(params, steps, dh, dh_final)
    dx = np.zeros_like(trace.x)
    deltas = np.zeros_like(trace.net)
    for t in range(steps, 0, -1):
        g = dh_arr[t - 1] + carry
        delta = g * _rnn_derivative(trace.nonlinearity, trace.net[t - 1], trace.h[t])
        deltas[t - 1] = delta
        grads["weight_ih"] += np.outer(delta, trace.x[t - 1])
        grads["weight_hh"] += np.outer(delta, trace.h[t - 1])
        grads["bias_ih"] += delta
        grads["bias_hh"] += delta
        dx[t - 1] = params.weight_ih.T @ delta
        carry = params.weight_hh.T @ delta
    return BPTTGradients(CellParams(**grads), x=dx, h0=carry, c0=None, deltas=deltas)


# ---------------------------------------------------------------------------- LSTM


@dataclass(frozen=True)
class LSTMTrace:
    """Everything the LSTM backward pass needs from the forward pass.

    Attributes:
        x: ``[T, I]`` the inputs.
        h: ``[T+1, H]`` the outputs, ``h[0] = h_0``.
        c: ``[T+1, H]`` the cell states, ``c[0] = c_0``.
        i, f, g, o: ``[T, H]`` the input gate, forget gate, candidate and output gate
            (after their nonlinearities) at each step.
    """

    x: Array
    h: Array
    c: Array
    i: Array
    f: Array
    g: Array
    o: Array


def lstm_forward(
    params: CellParams,
    x: npt.ArrayLike,
    h0: npt.ArrayLike | None = None,
    c0: npt.ArrayLike | None = None,
) -> LSTMTrace:
    """Run the LSTM (Hochreiter & Schmidhuber 1997, forget gate of Gers et al. 2000).

    PyTorch's formulation and gate order (i, f, g, o); for ``t = 1 .. T``, with
    ``[W_i; W_f; W_g; W_o] = weight_ih`` and ``[U_i; U_f; U_g; U_o] = weight_hh``::

        i_t = sigma(W_i x_t + b_ii + U_i h_{t-1} + b_hi)     input gate
        f_t = sigma(W_f x_t + b_if + U_f h_{t-1} + b_hf)     forget gate
        g_t = tanh (W_g x_t + b_ig + U_g h_{t-1} + b_hg)     candidate
        o_t = sigma(W_o x_t + b_io + U_o h_{t-1} + b_ho)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    Args:
        params: LSTM parameters (four gate blocks): ``weight_ih [4H, I]``,
            ``weight_hh [4H, H]``.
        x: ``[T, I]`` the inputs.
        h0, c0: ``[H]`` the initial output and cell state; zeros when ``None``.

    Returns:
        The trace; ``trace.h[1:]`` ``[T, H]`` is the output sequence.

    With every weight and bias 0 each gate is ``sigma(0) = 0.5`` and ``g = 0``, so the cell
    state halves each step: ``c_1 = 0.5 c_0``.

    >>> p = CellParams(np.zeros((4, 1)), np.zeros((4, 1)), np.zeros(4), np.zeros(4))
    >>> trace = lstm_forward(p, [[3.0], [3.0]], c0=[2.0])
    >>> trace.c[:, 0].tolist(), np.round(trace.h[1:, 0], 4).tolist()
    ([2.0, 1.0, 0.5], [0.3808, 0.2311])
    """
    params._expect_chunks(4, "LSTM")
    x_arr = _inputs(params, x)
    h_start, c_start = _initial_state(params, h0, "h0"), _initial_state(params, c0, "c0")
    steps, hidden = x_arr.shape[0], params.hidden_size
    h = np.zeros((steps + 1, hidden))
    c = np.zeros((steps + 1, hidden))
    i, f, g, o = (np.zeros((steps, hidden)) for _ in range(4))
    h[0], c[0] = h_start, c_start
    for t in range(1, steps + 1):
        net = params.weight_ih @ x_arr[t - 1] + params.bias_ih
        net = net + params.weight_hh @ h[t - 1] + params.bias_hh
        a_i, a_f, a_g, a_o = np.split(net, 4)
        i[t - 1], f[t - 1], g[t - 1], o[t - 1] = (
            _sigmoid(a_i),
            _sigmoid(a_f),
            np.tanh(a_g),
            _sigmoid(a_o),
        )
        c[t] = f[t - 1] * c[t - 1] + i[t - 1] * g[t - 1]
        h[t] = o[t - 1] * np.tanh(c[t])
    return LSTMTrace(x=x_arr, h=h, c=c, i=i, f=f, g=g, o=o)


def lstm_backward(
    params: CellParams,
    trace: LSTMTrace,
    dh: npt.ArrayLike,
    dh_final: npt.ArrayLike | None = None,
    dc_final: npt.ArrayLike | None = None,
) -> BPTTGradients:
    """Backpropagation through time for the LSTM of :func:`lstm_forward`.

    Two quantities flow back in time: ``dL/dh_t`` (through the recurrent weights) and
    ``dL/dc_t`` (through the forget gate alone). Going back from ``t = T``::

        gh_t  = dh_t + weight_hh^T @ delta_{t+1}                  (total dL/dh_t)
        gc_t  = f_{t+1} * gc_{t+1} + gh_t * o_t * (1 - tanh(c_t)^2)   (total dL/dc_t)
        do_t  = gh_t * tanh(c_t)      di_t = gc_t * g_t
        dg_t  = gc_t * i_t            df_t = gc_t * c_{t-1}
        delta_t = [di_t * i_t (1 - i_t);  df_t * f_t (1 - f_t);        (error terms of the
                   dg_t * (1 - g_t^2);    do_t * o_t (1 - o_t)]         four net inputs, [4H])

        dweight_ih = sum_t delta_t x_t^T       dbias_ih = dbias_hh = sum_t delta_t
        dweight_hh = sum_t delta_t h_{t-1}^T
        dx_t = weight_ih^T @ delta_t     dh_0 = weight_hh^T @ delta_1     dc_0 = f_1 * gc_1

    ``dh_final`` and ``dc_final`` seed ``gh_T`` and the ``c`` path at ``t = T``. The cell
    path multiplies by ``f_t`` only, with no squashing derivative and no weight matrix: with
    forget gates near 1 the gradient travels far back unchanged.

    Args:
        params: the parameters the forward pass used.
        trace: the result of :func:`lstm_forward`.
        dh: ``[T, H]`` ``dL/dh_t`` from the loss at each step.
        dh_final: ``[H]`` an extra ``dL/dh_T`` from a loss on the final state, or ``None``.
        dc_final: ``[H]`` ``dL/dc_T`` from a loss on the final cell state, or ``None``.

    Returns:
        Gradients of the parameters (summed over time), the inputs, ``h_0`` and ``c_0``, and
        the error terms ``deltas [T, 4H]``.

    With all weights 0, ``c_1 = 0.5 c_0`` (see :func:`lstm_forward`), so ``dL/dc_0 = 0.5``
    for ``L = c_1``:

    >>> p = CellParams(np.zeros((4, 1)), np.zeros((4, 1)), np.zeros(4), np.zeros(4))
    >>> g = lstm_backward(p, lstm_forward(p, [[3.0]], c0=[2.0]), dh=[[0.0]], dc_final=[1.0])
    >>> g.c0.tolist(), g.h0.tolist()
    ([0.5], [0.0])
    """
    params._expect_chunks(4, "LSTM")
    steps, hidden = trace.x.shape[0], params.hidden_size
    dh_arr, carry_h, grads = _start_backward(params, steps, dh, dh_final)
    carry_c = np.zeros(hidden)
    if dc_final is not None:
        carry_c = _array("dc_final", dc_final, (hidden,), f"[H] = [{hidden}]").copy()
    dx = np.zeros_like(trace.x)
    deltas = np.zeros((steps, 4 * hidden))
    for t in range(steps, 0, -1):
        i, f, g, o = trace.i[t - 1], trace.f[t - 1], trace.g[t - 1], trace.o[t - 1]
        tanh_c = np.tanh(trace.c[t])
        gh = dh_arr[t - 1] + carry_h
        gc = carry_c + gh * o * (1.0 - tanh_c**2)
        do = gh * tanh_c
        di = gc * g
        dg = gc * i
        df = gc * trace.c[t - 1]
        delta = np.concatenate(
            [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)]
        )
        deltas[t - 1] = delta
        grads["weight_ih"] += np.outer(delta, trace.x[t - 1])
        grads["weight_hh"] += np.outer(delta, trace.h[t - 1])
        grads["bias_ih"] += delta
        grads["bias_hh"] += delta
        dx[t - 1] = params.weight_ih.T @ delta
        carry_h = params.weight_hh.T @ delta
        carry_c = gc * f
    return BPTTGradients(CellParams(**grads), x=dx, h0=carry_h, c0=carry_c, deltas=deltas)


# ---------------------------------------------------------------------------- GRU


@dataclass(frozen=True)
class GRUTrace:
    """Everything the GRU backward pass needs from the forward pass.

    Attributes:
        x: ``[T, I]`` the inputs.
        h: ``[T+1, H]`` the states, ``h[0] = h_0``.
        r, z, n: ``[T, H]`` the reset gate, update gate and candidate at each step.
        hn: ``[T, H]`` the recurrent part of the candidate's net input,
            ``U_n h_{t-1} + b_hn``, before the reset gate multiplies it.
    """

    x: Array
    h: Array
    r: Array
    z: Array
    n: Array
    hn: Array


def gru_forward(params: CellParams, x: npt.ArrayLike, h0: npt.ArrayLike | None = None) -> GRUTrace:
    """Run the GRU (Cho et al. 2014) in PyTorch's formulation.

    Gate order r, z, n; ``[W_r; W_z; W_n] = weight_ih``, ``[U_r; U_z; U_n] = weight_hh``;
    for ``t = 1 .. T``::

        r_t = sigma(W_r x_t + b_ir + U_r h_{t-1} + b_hr)            reset gate
        z_t = sigma(W_z x_t + b_iz + U_z h_{t-1} + b_hz)            update gate
        n_t = tanh (W_n x_t + b_in + r_t * (U_n h_{t-1} + b_hn))    candidate
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    The reset gate multiplies the recurrent product *after* it is computed, as in PyTorch,
    cuDNN and Keras (``reset_after=True``). Cho et al. and CNTK apply it *before*:
    ``U_n (r_t * h_{t-1})``. The two are different models with the same parameter shapes.

    Args:
        params: GRU parameters (three gate blocks): ``weight_ih [3H, I]``,
            ``weight_hh [3H, H]``.
        x: ``[T, I]`` the inputs.
        h0: ``[H]`` the initial state; zeros when ``None``.

    Returns:
        The trace; ``trace.h[1:]`` ``[T, H]`` is the output sequence.

    With all weights 0, ``z = 0.5`` and ``n = 0``: each step halves the state.

    >>> p = CellParams(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3))
    >>> gru_forward(p, [[1.0], [1.0]], h0=[4.0]).h[:, 0].tolist()
    [4.0, 2.0, 1.0]
    """
    params._expect_chunks(3, "GRU")
    x_arr, h_start = _inputs(params, x), _initial_state(params, h0, "h0")
    steps, hidden = x_arr.shape[0], params.hidden_size
    h = np.zeros((steps + 1, hidden))
    r, z, n, hn = (np.zeros((steps, hidden)) for _ in range(4))
    h[0] = h_start
    for t in range(1, steps + 1):
        xr, xz, xn = np.split(params.weight_ih @ x_arr[t - 1] + params.bias_ih, 3)
        hr, hz, hn[t - 1] = np.split(params.weight_hh @ h[t - 1] + params.bias_hh, 3)
        r[t - 1] = _sigmoid(xr + hr)
        z[t - 1] = _sigmoid(xz + hz)
        n[t - 1] = np.tanh(xn + r[t - 1] * hn[t - 1])
        h[t] = (1.0 - z[t - 1]) * n[t - 1] + z[t - 1] * h[t - 1]
    return GRUTrace(x=x_arr, h=h, r=r, z=z, n=n, hn=hn)


def gru_backward(
    params: CellParams,
    trace: GRUTrace,
    dh: npt.ArrayLike,
    dh_final: npt.ArrayLike | None = None,
) -> BPTTGradients:
    """Backpropagation through time for the GRU of :func:`gru_forward`.

    Going back from ``t = T``, with ``gh_t`` the total ``dL/dh_t``::

        gh_t   = dh_t + z_{t+1} * gh_{t+1} + weight_hh^T @ deltah_{t+1}
        dn_t   = gh_t * (1 - z_t)         dz_t = gh_t * (h_{t-1} - n_t)
        delta_n = dn_t * (1 - n_t^2)                         (candidate's net input)
        delta_r = delta_n * hn_t * r_t (1 - r_t)             (hn_t = U_n h_{t-1} + b_hn)
        delta_z = dz_t * z_t (1 - z_t)

        delta_t  = [delta_r; delta_z; delta_n]               input side,   [3H]
        deltah_t = [delta_r; delta_z; r_t * delta_n]         recurrent side (the reset gate
                                                             scales U_n's contribution)
        dweight_ih = sum_t delta_t x_t^T        dbias_ih = sum_t delta_t
        dweight_hh = sum_t deltah_t h_{t-1}^T   dbias_hh = sum_t deltah_t
        dx_t = weight_ih^T @ delta_t     dh_0 = z_1 * gh_1 + weight_hh^T @ deltah_1

    The direct path ``z_t * gh_t`` is the GRU's counterpart of the LSTM's cell path: when
    the update gate is near 1 the gradient passes back almost unchanged.

    Args:
        params: the parameters the forward pass used.
        trace: the result of :func:`gru_forward`.
        dh: ``[T, H]`` ``dL/dh_t`` from the loss at each step.
        dh_final: ``[H]`` an extra ``dL/dh_T`` from a loss on the final state, or ``None``.

    Returns:
        Gradients of the parameters (summed over time), the inputs and ``h_0``, and the
        input-side error terms ``deltas [T, 3H]``.

    With all weights 0, ``h_1 = h_0 / 2`` (see :func:`gru_forward`), so ``dL/dh_0 = 0.5``
    for ``L = h_1``:

    >>> p = CellParams(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3))
    >>> gru_backward(p, gru_forward(p, [[1.0]], h0=[4.0]), dh=[[1.0]]).h0.tolist()
    [0.5]
    """
    params._expect_chunks(3, "GRU")
    steps = trace.x.shape[0]
    dh_arr, carry, grads = _start_backward(params, steps, dh, dh_final)
    dx = np.zeros_like(trace.x)
    deltas = np.zeros((steps, 3 * params.hidden_size))
    for t in range(steps, 0, -1):
        r, z, n, hn, h_prev = (
            trace.r[t - 1],
            trace.z[t - 1],
            trace.n[t - 1],
            trace.hn[t - 1],
            trace.h[t - 1],
        )
        gh = dh_arr[t - 1] + carry
        dn = gh * (1.0 - z)
        dz = gh * (h_prev - n)
        delta_n = dn * (1.0 - n**2)
        delta_r = delta_n * hn * r * (1.0 - r)
        delta_z = dz * z * (1.0 - z)
        delta_input = np.concatenate([delta_r, delta_z, delta_n])
        delta_hidden = np.concatenate([delta_r, delta_z, r * delta_n])
        deltas[t - 1] = delta_input
        grads["weight_ih"] += np.outer(delta_input, trace.x[t - 1])
        grads["weight_hh"] += np.outer(delta_hidden, h_prev)
        grads["bias_ih"] += delta_input
        grads["bias_hh"] += delta_hidden
        dx[t - 1] = params.weight_ih.T @ delta_input
        carry = gh * z + params.weight_hh.T @ delta_hidden
    return BPTTGradients(CellParams(**grads), x=dx, h0=carry, c0=None, deltas=deltas)


# ---------------------------------------------------------------------------- recursive network

Tree: TypeAlias = npt.ArrayLike | tuple["Tree", "Tree"]
"""A binary tree: a leaf is a vector of size d (a NumPy array or a list, never a tuple); an
internal node is a pair ``(left, right)`` of trees."""


@dataclass(frozen=True)
class RecursiveParams:
    """The parameters of the textbook recursive network, shared by every internal node.

    Attributes:
        weight: ``[d, 2d]`` maps the concatenated children ``[c1; c2]`` to the parent.
        bias: ``[d]``.

    The same class holds gradients (see :func:`recursive_backward`).

    >>> RecursiveParams.uniform(size=3, rng=np.random.default_rng(0)).weight.shape
    (3, 6)
    """

    weight: Array
    bias: Array

    def __post_init__(self) -> None:
        weight = np.asarray(self.weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != 2 * weight.shape[0]:
            raise ValueError(f"weight: expected shape [d, 2d], found {weight.shape}")
        size = weight.shape[0]
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", _array("bias", self.bias, (size,), f"[d] = [{size}]"))

    @property
    def size(self) -> int:
        """d, the vector size of every node."""
        return int(self.weight.shape[0])

    @classmethod
    def uniform(cls, size: int, rng: np.random.Generator) -> RecursiveParams:
        """Every entry uniform in ``[-1/sqrt(2d), 1/sqrt(2d)]`` (fan-in ``2d``)."""
        bound = 1.0 / np.sqrt(2 * size)
        return cls(
            weight=rng.uniform(-bound, bound, size=(size, 2 * size)),
            bias=rng.uniform(-bound, bound, size=size),
        )


@dataclass(frozen=True)
class TreeTrace:
    """A tree after the forward pass, its nodes in post-order (children before parents).

    Attributes:
        vectors: ``[N, d]`` every node's vector: the input vector at a leaf, ``p`` at an
            internal node. The root is the last row.
        nets: ``[N, d]`` the net input ``W [c1; c2] + b`` of each internal node (rows of
            leaves are zero and unused).
        children: for each node, the row indices ``(left, right)`` of its children, or
            ``None`` for a leaf.
        leaf_nodes: the row index of each leaf, leaves numbered from left to right.
    """

    vectors: Array
    nets: Array
    children: tuple[tuple[int, int] | None, ...]
    leaf_nodes: tuple[int, ...]

    @property
    def root(self) -> Array:
        """``[d]`` the root's vector, the network's output."""
        return self.vectors[-1]


@dataclass(frozen=True)
class RecursiveGradients:
    """What :func:`recursive_backward` returns.

    Attributes:
        params: ``dL/dweight`` ``[d, 2d]`` and ``dL/dbias`` ``[d]``, summed over internal nodes.
        leaves: ``[L, d]`` ``dL/d(leaf vector)`` for each leaf, left to right.
        deltas: ``[N, d]`` the error term of every node in the trace's order: ``dL/dnet`` at an
            internal node, ``dL/d(vector)`` at a leaf.
    """

    params: RecursiveParams
    leaves: Array
    deltas: Array


def _post_order(tree: Tree, size: int) -> tuple[list[tuple[int, int] | None], list[Array]]:
    """Flatten a nested-tuple tree into post-order children indices and leaf vectors.

    Iterative, so that deep (e.g. left-branching) trees do not hit Python's recursion limit.
    """
    children: list[tuple[int, int] | None] = []
    leaves: list[Array] = []
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    done: list[int] = []  # row indices of finished subtrees, in order
    while stack:
        node, expanded = stack.pop()
        if isinstance(node, tuple):
            if len(node) != 2:
                raise ValueError(
                    f"tree: expected an internal node to be a pair (left, right); found a "
                    f"tuple of {len(node)}"
                )
            if expanded:
                right, left = done.pop(), done.pop()
                children.append((left, right))
                done.append(len(children) - 1)
            else:
                stack.extend([(node, True), (node[1], False), (node[0], False)])
        else:
            vector = _array(f"tree leaf {len(leaves)}", node, (size,), f"[d] = [{size}]")
            leaves.append(vector)
            children.append(None)
            done.append(len(children) - 1)
    return children, leaves


def _forward_rows(
    params: RecursiveParams, children: tuple[tuple[int, int] | None, ...], leaves: Array
) -> TreeTrace:
    """The forward pass over a flattened tree: one row per node, children before parents."""
    vectors = np.zeros((len(children), params.size))
    nets = np.zeros_like(vectors)
    leaf_nodes = tuple(k for k, pair in enumerate(children) if pair is None)
    vectors[list(leaf_nodes)] = leaves
    for k, pair in enumerate(children):
        if pair is None:
            continue
        left, right = pair
        nets[k] = params.weight @ np.concatenate([vectors[left], vectors[right]]) + params.bias
        vectors[k] = np.tanh(nets[k])
    return TreeTrace(vectors=vectors, nets=nets, children=children, leaf_nodes=leaf_nodes)


def recursive_forward(params: RecursiveParams, tree: Tree) -> TreeTrace:
    """Evaluate the recursive network bottom-up over a binary tree.

    Every internal node with children vectors ``c1`` and ``c2`` computes::

        net_p = W [c1; c2] + b          (W: [d, 2d], [c1; c2]: the two vectors stacked, [2d])
        p     = tanh(net_p)

    The same ``W`` and ``b`` serve every node; a tree is a "network unfolded over
    structure" as a sequence is one unfolded over time (Goller & Küchler 1996; Socher et al.
    2011). Nodes are visited in post-order, so both children are ready before their parent.

    Args:
        params: ``W`` ``[d, 2d]`` and ``b`` ``[d]``.
        tree: a leaf vector ``[d]`` or a pair ``(left, right)`` of trees (see :data:`Tree`).

    Returns:
        The trace; ``trace.root`` ``[d]`` is the output.

    With ``W = [1, 1]`` and ``b = 0`` (d = 1), the root of ``((0.5, 0.5), 1.0)`` is
    ``tanh(tanh(1) + 1) = tanh(1.7616) = 0.9427``:

    >>> p = RecursiveParams([[1.0, 1.0]], [0.0])
    >>> np.round(recursive_forward(p, (([0.5], [0.5]), [1.0])).root, 4)
    array([0.9427])
    """
    children, leaves = _post_order(tree, params.size)
    return _forward_rows(params, tuple(children), np.array(leaves))


def recursive_backward(
    params: RecursiveParams, trace: TreeTrace, droot: npt.ArrayLike
) -> RecursiveGradients:
    """Backpropagation through structure: the error terms flow from the root to the leaves.

    With ``droot = dL/d(root vector)`` supplied by the loss::

        delta_root = droot * tanh'(net_root) = droot * (1 - root^2)
        [e1; e2]   = W^T delta_p                  (split into one [d] half per child)
        delta_c    = e_c * (1 - c^2)              for an internal child c (times f'(net_c))
        delta_c    = e_c                          for a leaf: the gradient w.r.t. its vector
        dW = sum over internal p of delta_p [c1; c2]^T
        db = sum over internal p of delta_p

    Nodes are visited in reverse post-order, so a parent's error term is complete before its
    children need it. A tree that is a single leaf has no internal node: ``dW = 0`` and the
    leaf's gradient is ``droot``.

    Args:
        params: the parameters the forward pass used.
        trace: the result of :func:`recursive_forward`.
        droot: ``[d]`` ``dL/d(root vector)``, e.g. ``root - target`` for
            ``L = 0.5 ||root - target||^2`` (:func:`half_squared_error`).

    Returns:
        ``dW``, ``db``, the gradient of each leaf vector and every node's error term.

    One parent over two leaves, ``W = [1, 1]``, ``b = 0``, ``L = p``: ``delta_p =
    1 - tanh(1)^2 = 0.42``, ``dW = 0.42 * [0.5, 0.5]``, each leaf receives ``W^T delta_p``:

    >>> p = RecursiveParams([[1.0, 1.0]], [0.0])
    >>> g = recursive_backward(p, recursive_forward(p, ([0.5], [0.5])), droot=[1.0])
    >>> np.round(g.params.weight, 4), np.round(g.leaves[:, 0], 4)
    (array([[0.21, 0.21]]), array([0.42, 0.42]))
    """
    size = params.size
    deltas = np.zeros_like(trace.vectors)
    root = len(trace.children) - 1
    deltas[root] = _array("droot", droot, (size,), f"[d] = [{size}]")
    if trace.children[root] is not None:
        deltas[root] = deltas[root] * (1.0 - trace.vectors[root] ** 2)
    d_weight = np.zeros_like(params.weight)
    d_bias = np.zeros_like(params.bias)
    for k in range(root, -1, -1):
        pair = trace.children[k]
        if pair is None:
            continue  # a leaf: its error term is final
        left, right = pair
        delta = deltas[k]
        d_weight += np.outer(delta, np.concatenate([trace.vectors[left], trace.vectors[right]]))
        d_bias += delta
        e_left, e_right = np.split(params.weight.T @ delta, 2)
        for child, error in ((left, e_left), (right, e_right)):
            internal = trace.children[child] is not None
            deltas[child] = error * (1.0 - trace.vectors[child] ** 2) if internal else error
    return RecursiveGradients(
        params=RecursiveParams(d_weight, d_bias),
        leaves=deltas[list(trace.leaf_nodes)],
        deltas=deltas,
    )


class GradientCheckError(Exception):
    """An analytic gradient disagrees with its central-difference estimate."""


LossFn: TypeAlias = Callable[[Array], tuple[float, Array]]
"""A loss on the root: maps ``root [d]`` to ``(L, dL/d(root) [d])``."""

BackwardFn: TypeAlias = Callable[[RecursiveParams, TreeTrace, Array], RecursiveGradients]


def _relative_error(analytic: Array, numeric: Array) -> float:
    """``||a - n|| / (||a|| + ||n||)``, 0 when both are zero."""
    scale = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    return 0.0 if scale == 0.0 else float(np.linalg.norm(analytic - numeric)) / scale


def recursive_gradient_check(
    params: RecursiveParams,
    tree: Tree,
    loss: LossFn,
    *,
    backward: BackwardFn = recursive_backward,
    eps: float = 1e-5,
    tolerance: float = 1e-6,
) -> float:
    """Check a BPTS gradient against central differences, for ``W``, ``b`` and every leaf.

    For every entry ``theta`` of ``W``, ``b`` and the leaf vectors::

        dL/dtheta ~ (L(theta + eps) - L(theta - eps)) / (2 eps)      (error O(eps^2))

    and, per array, the relative error ``||analytic - numeric|| / (||analytic|| +
    ||numeric||)`` is compared with ``tolerance``.

    Args:
        params: the parameters at which to check.
        tree: the tree (see :data:`Tree`).
        loss: maps the root ``[d]`` to ``(L, dL/d(root))``, e.g.
            ``lambda root: half_squared_error(root, target)``.
        backward: the backward function under test; :func:`recursive_backward` by default.
        eps: the finite-difference step.
        tolerance: the largest relative error accepted.

    Returns:
        The largest relative error over ``W``, ``b`` and the leaves.

    Raises:
        GradientCheckError: if an array's relative error exceeds ``tolerance``; the message
            names the array.

    >>> rng = np.random.default_rng(0)
    >>> params = RecursiveParams.uniform(size=2, rng=rng)
    >>> tree = ((rng.normal(size=2), rng.normal(size=2)), rng.normal(size=2))
    >>> error = recursive_gradient_check(params, tree, lambda r: half_squared_error(r, [0.5, -0.5]))
    >>> error < 1e-8
    True
    """
    children_list, leaf_list = _post_order(tree, params.size)
    children = tuple(children_list)
    leaves = np.array(leaf_list)

    def loss_at(p: RecursiveParams, leaf_vectors: Array) -> float:
        return loss(_forward_rows(p, children, leaf_vectors).root)[0]

    trace = _forward_rows(params, children, leaves)
    _, droot = loss(trace.root)
    analytic = backward(params, trace, np.asarray(droot, dtype=np.float64))

    def numeric(name: str) -> Array:
        base = leaves if name == "leaves" else getattr(params, name)
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for step in (eps, -eps):
                moved = base.copy()
                moved[index] += step
                if name == "leaves":
                    values.append(loss_at(params, moved))
                else:
                    values.append(loss_at(replace(params, **{name: moved}), leaves))
            grad[index] = (values[0] - values[1]) / (2.0 * eps)
        return grad

    errors = {
        "weight": _relative_error(analytic.params.weight, numeric("weight")),
        "bias": _relative_error(analytic.params.bias, numeric("bias")),
        "leaves": _relative_error(analytic.leaves, numeric("leaves")),
    }
    worst = max(errors, key=errors.__getitem__)
    if errors[worst] > tolerance:
        raise GradientCheckError(
            f"gradient of {worst}: relative error {errors[worst]:.3g} against central "
            f"differences (eps={eps}) exceeds tolerance {tolerance}; all errors: "
            + ", ".join(f"{k}={v:.3g}" for k, v in errors.items())
        )
    return errors[worst]


# ---------------------------------------------------------------------------- training helpers

ParamsT = TypeVar("ParamsT", CellParams, RecursiveParams)


def half_squared_error(output: npt.ArrayLike, target: npt.ArrayLike) -> tuple[float, Array]:
    """``L = 0.5 ||output - target||^2`` and its gradient ``dL/doutput = output - target``.

    >>> half_squared_error([1.0, 2.0], [0.0, 0.0])
    (2.5, array([1., 2.]))
    """
    out = np.asarray(output, dtype=np.float64)
    tgt = _array("target", target, out.shape, f"{list(out.shape)} (the output's shape)")
    diff = out - tgt
    return 0.5 * float(np.sum(diff**2)), diff


def sgd_update(params: ParamsT, grads: ParamsT, lr: float) -> ParamsT:
    """One step of plain gradient descent: ``theta <- theta - lr * dL/dtheta`` for every array.

    Returns new parameters; ``params`` is left unchanged.

    >>> p = RecursiveParams([[1.0, 1.0]], [0.0])
    >>> g = RecursiveParams([[2.0, 0.0]], [1.0])
    >>> new = sgd_update(p, g, lr=0.1)
    >>> new.weight.tolist(), new.bias.tolist()
    ([[0.8, 1.0]], [-0.1])
    """
    if type(grads) is not type(params):
        raise TypeError(
            f"grads: expected {type(params).__name__} (the type of params), "
            f"found {type(grads).__name__}"
        )
    updates = {}
    for field in fields(params):
        value, grad = getattr(params, field.name), getattr(grads, field.name)
        if grad.shape != value.shape:
            raise ValueError(
                f"grads.{field.name}: expected shape {value.shape}, found {grad.shape}"
            )
        updates[field.name] = value - lr * grad
    return replace(params, **updates)


def clip_by_global_norm(grads: ParamsT, max_norm: float) -> ParamsT:
    """Rescale gradients whose global norm exceeds ``max_norm`` (Pascanu et al. 2013).

    The global norm is ``sqrt(sum over arrays of ||g||^2)``; if it exceeds ``max_norm`` every
    array is multiplied by ``max_norm / norm``, which keeps the direction of the step and
    bounds its length. Gradients within the bound are returned unchanged.

    >>> g = clip_by_global_norm(RecursiveParams([[3.0, 0.0]], [4.0]), max_norm=1.0)  # norm 5
    >>> np.round(g.weight, 6).tolist(), np.round(g.bias, 6).tolist()
    ([[0.6, 0.0]], [0.8])
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm: expected a positive number, found {max_norm}")
    arrays = {field.name: getattr(grads, field.name) for field in fields(grads)}
    norm = float(np.sqrt(sum(float(np.sum(a**2)) for a in arrays.values())))
    if norm <= max_norm:
        return grads
    return replace(grads, **{name: a * (max_norm / norm) for name, a in arrays.items()})
