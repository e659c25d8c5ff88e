"""CNTK's recurrent blocks, ``LSTM``, ``GRU`` and ``RNNStep``, as rnnkit cells.

Each constructor takes CNTK's arguments (``layers/blocks.py``) and returns an rnnkit cell
built without its input size (inferred at the first call, :mod:`rnnkit.lazy`), drawn as CNTK
draws its parameters: ``init`` (Glorot uniform by default) for every weight, ``init_bias``
for the bias, 1 for each stabiliser. Options not passed are read from
:func:`rnnkit.cntk.defaults.default_options` (only these constructors read it; rnnkit's own
cells take every option explicitly).

What each returns, with CNTK's parameters in rnnkit's layout (C = ``cell_shape``, or
``shape`` when None; S = ``shape``; CNTK computes ``x @ W`` with ``W [I, G*C]``):

- ``LSTM``: ``LSTMCell(hidden_size=C, proj_size=S if cell_shape else 0, peepholes,
  activation, self_stabilization)``. CNTK's gate blocks ``(i, g, f, o)`` are torch's
  ``(i, f, g, o)``: ``weight_ih = W.T``, ``weight_hh = H.T`` with the blocks reordered,
  ``bias_ih = b`` (reordered), ``bias_hh = 0``, ``weight_ci/cf/co = Ci/Cf/Co``,
  ``weight_hr = P.T``.
- ``GRU``: ``GRUCell(hidden_size=C, reset='before', activation, proj_size,
  self_stabilization)``; CNTK's ``(z, r, c)`` blocks are torch's ``(r, z, n)``, ``H`` and
  ``H1`` together are ``weight_hh``. CNTK's GRU mixes its cell with the previous output
  elementwise, so a ``cell_shape`` must equal ``shape`` (a square projection).
- ``RNNStep``: ``RNNCell(hidden_size=C, nonlinearity=activation, proj_size)``; sigmoid by
  default, as CNTK's.

``enable_self_stabilization`` gives the cell CNTK's trained stabilisers (``stabilizer_dh``,
``stabilizer_dc``, ``stabilizer_c``, ``stabilizer_p`` for CNTK's ``dh_stabilizer``,
``dc_stabilizer``, ``c_stabilizer``, ``P_stabilizer``): like CNTK's blocks.py, they scale the
recurrent state, not the data input. ``activation`` is ``tanh``, ``relu`` or ``sigmoid`` (a
name, the torch function or the ``rnnkit.cntk`` one). ``name`` is accepted and not used:
rnnkit names a module by its attribute path.

>>> import torch
>>> from rnnkit import Fold, SequenceBatch
>>> cell = LSTM(15)
>>> cell.input_size is None, cell.hidden_size
(True, 15)
>>> x = SequenceBatch.from_list([torch.ones(4, 1), torch.ones(2, 1)])
>>> Fold(cell)(x).shape, cell.input_size, bool((cell.bias_ih == 0).all())
(torch.Size([2, 15]), 1, True)
>>> bound = (6 / (1 + 4 * 15)) ** 0.5                     # Glorot: fan-in 1, fan-out 4 * 15
>>> bool(cell.weight_ih.abs().max() <= bound)
True
>>> from rnnkit.cntk.defaults import default_options
>>> with default_options(enable_self_stabilization=True, activation="relu"):
...     gru = GRU(8)
>>> gru.self_stabilization, gru.activation, gru.reset
(True, 'relu', 'before')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import STABILIZER_INIT, Activation, GRUCell, LSTMCell, RNNCell
from rnnkit.cntk.defaults import default_override_or, resolve

__all__ = ["GRU", "LSTM", "RNNStep", "glorot_uniform"]


def glorot_uniform(weight: Tensor) -> None:
    """CNTK's ``glorot_uniform()`` in place: ``U(-s, s)``, ``s = sqrt(6 / (fan_in + fan_out))``
    (a vector ``[C]`` has fan-in 1 and fan-out C, as CNTK counts it)."""
    fan_out, fan_in = (weight.shape[0], 1) if weight.dim() == 1 else weight.shape[:2]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


_NAMES = ("tanh", "relu", "sigmoid")
_TORCH_FUNCTIONS: dict[Any, str] = {
    torch.tanh: "tanh",
    torch.relu: "relu",
    torch.sigmoid: "sigmoid",
    F.tanh: "tanh",
    F.relu: "relu",
    F.sigmoid: "sigmoid",
}


def _activation_name(activation: Any, owner: str) -> Activation:
    """``activation`` as the name an rnnkit cell takes."""
    if isinstance(activation, str) and activation in _NAMES:
        return activation  # type: ignore[return-value]
    for fn, name in _TORCH_FUNCTIONS.items():
        if activation is fn:
            return name  # type: ignore[return-value]
    module = getattr(activation, "__module__", "") or ""
    fn_name = getattr(activation, "__name__", None)
    if callable(activation) and module.startswith("rnnkit.cntk") and fn_name in _NAMES:
        return fn_name
    raise ValueError(
        f"{owner}: activation: expected tanh, relu or sigmoid (a name, torch's function or "
        f"rnnkit.cntk's), found {getattr(activation, '__qualname__', repr(activation))}"
    )


def _size(value: Any, argument: str, owner: str) -> int:
    """CNTK's ``shape``: an int or a one-element tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(
                f"{owner}: {argument}: expected a vector shape (an int or a 1-tuple), found "
                f"{tuple(value)}"
            )
        (value,) = value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {argument}: expected a positive integer, found {value!r}")
    return value


def _fill(p: Tensor, init: Any, argument: str, owner: str) -> None:
    """``init`` (a function filling a weight in place, or a number) into ``p``; a vector is
    given to a function as a ``[C, 1]`` view, so Glorot-type initialisers see CNTK's fans."""
    with torch.no_grad():
        if isinstance(init, (int, float)) and not isinstance(init, bool):
            p.fill_(float(init))
        elif callable(init):
            init(p.view(-1, 1) if p.dim() == 1 else p)
        else:
            raise ValueError(
                f"{owner}: {argument}: expected an initialiser (a function filling a weight in "
                f"place, as rnnkit.cntk.initializer's) or a number, found "
                f"{type(init).__name__}"
            )


def _cntk_initializer(init: Any, init_bias: Any, owner: str) -> Callable[[str, nn.Parameter], None]:
    """The cell's ``initializer``: ``init`` for every weight, ``init_bias`` for ``bias_ih``,
    0 for ``bias_hh`` (CNTK has one bias), 1 for each stabiliser's scale."""

    def initialize(name: str, p: nn.Parameter) -> None:
        if name.startswith("stabilizer"):
            nn.init.constant_(p, STABILIZER_INIT)
        elif name == "bias_hh":
            nn.init.zeros_(p)
        elif name == "bias_ih":
            _fill(p, init_bias, "init_bias", owner)
        else:
            _fill(p, init, "init", owner)

    return initialize


def _with_cntk_init(cell: Any, init: Any, init_bias: Any, owner: str) -> Any:
    cell.initializer = _cntk_initializer(init, init_bias, owner)
    cell.reset_parameters()
    return cell


# The defaults of the signatures (CNTK's), which default_options may replace.
_GLOROT = default_override_or(glorot_uniform)
_TANH = default_override_or(torch.tanh)
_SIGMOID = default_override_or(torch.sigmoid)
_FALSE = default_override_or(False)
_ZERO = default_override_or(0)


def LSTM(
    shape: int | tuple[int],
    cell_shape: int | tuple[int] | None = None,
    activation: Any = _TANH,
    use_peepholes: Any = _FALSE,
    init: Any = _GLOROT,
    init_bias: Any = _ZERO,
    enable_self_stabilization: Any = _FALSE,
    name: str = "",
) -> LSTMCell:
    """CNTK's ``LSTM(shape, cell_shape=None, activation=tanh, use_peepholes=False,
    init=glorot_uniform(), init_bias=0, enable_self_stabilization=False)``: an
    :class:`~rnnkit.LSTMCell` with output ``[B, S]`` and state ``(h [B, S], c [B, C])``."""
    out = _size(shape, "shape", "LSTM")
    cell = out if cell_shape is None else _size(cell_shape, "cell_shape", "LSTM")
    act = _activation_name(resolve(LSTM, activation=activation), "LSTM")
    return _with_cntk_init(
        LSTMCell(
            None,
            cell,
            proj_size=0 if cell_shape is None else out,
            peepholes=bool(resolve(LSTM, use_peepholes=use_peepholes)),
            activation=act,
            self_stabilization=bool(
                resolve(LSTM, enable_self_stabilization=enable_self_stabilization)
            ),
        ),
        resolve(LSTM, init=init),
        resolve(LSTM, init_bias=init_bias),
        "LSTM",
    )


def GRU(
    shape: int | tuple[int],
    cell_shape: int | tuple[int] | None = None,
    activation: Any = _TANH,
    init: Any = _GLOROT,
    init_bias: Any = _ZERO,
    enable_self_stabilization: Any = _FALSE,
    name: str = "",
) -> GRUCell:
    """CNTK's ``GRU(shape, cell_shape=None, activation=tanh, init=glorot_uniform(),
    init_bias=0, enable_self_stabilization=False)``: a :class:`~rnnkit.GRUCell` with
    ``reset='before'`` (CNTK's form), state ``[B, S]``."""
    out = _size(shape, "shape", "GRU")
    cell = out if cell_shape is None else _size(cell_shape, "cell_shape", "GRU")
    if cell != out:
        raise ValueError(
            f"GRU: cell_shape: the GRU's update mixes its cell with its previous output "
            f"elementwise, so expected cell_shape equal to shape ({out}), found {cell}"
        )
    return _with_cntk_init(
        GRUCell(
            None,
            cell,
            reset="before",
            activation=_activation_name(resolve(GRU, activation=activation), "GRU"),
            proj_size=0 if cell_shape is None else out,
            self_stabilization=bool(
                resolve(GRU, enable_self_stabilization=enable_self_stabilization)
            ),
        ),
        resolve(GRU, init=init),
        resolve(GRU, init_bias=init_bias),
        "GRU",
    )


def RNNStep(
    shape: int | tuple[int],
    cell_shape: int | tuple[int] | None = None,
    activation: Any = _SIGMOID,
    init: Any = _GLOROT,
    init_bias: Any = _ZERO,
    enable_self_stabilization: Any = _FALSE,
    name: str = "",
) -> RNNCell:
    """CNTK's ``RNNStep(shape, cell_shape=None, activation=sigmoid, init=glorot_uniform(),
    init_bias=0, enable_self_stabilization=False)``: ``h' = activation(x W + h H + b)``, an
    :class:`~rnnkit.RNNCell`, state ``[B, S]``."""
    out = _size(shape, "shape", "RNNStep")
    cell = out if cell_shape is None else _size(cell_shape, "cell_shape", "RNNStep")
    return _with_cntk_init(
        RNNCell(
            None,
            cell,
            nonlinearity=_activation_name(resolve(RNNStep, activation=activation), "RNNStep"),
            proj_size=0 if cell_shape is None else out,
            self_stabilization=bool(
                resolve(RNNStep, enable_self_stabilization=enable_self_stabilization)
            ),
        ),
        resolve(RNNStep, init=init),
        resolve(RNNStep, init_bias=init_bias),
        "RNNStep",
    )
