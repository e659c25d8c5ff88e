"""CNTK parameters (NumPy arrays, in CNTK's layout) into rnnkit cells and layers.

CNTK computes ``x @ W`` with ``W [I, G*C]`` and one bias ``b [G*C]``; rnnkit (and PyTorch)
compute ``x @ weight_ih.T`` with ``weight_ih [G*C, I]`` and two biases. So each matrix is
transposed, the gate blocks are put in PyTorch's order, CNTK's bias becomes ``bias_ih`` and
``bias_hh`` is zero:

=========  ====================================  ============================================
block      CNTK (``layers/blocks.py``)           rnnkit
=========  ====================================  ============================================
LSTM       ``W [I, 4C]``, ``H [S, 4C]``, ``b``;   ``LSTMCell``: ``weight_ih``, ``weight_hh``,
           blocks ``(i, g, f, o)``; ``Ci``,      ``bias_ih`` in ``(i, f, g, o)``,
           ``Cf``, ``Co [C]``; ``P [C, S]``      ``weight_ci/cf/co``, ``weight_hr = P.T``
GRU        ``W [I, 3C]``, ``b`` in ``(z, r, c)``; ``GRUCell(reset='before')``: ``(r, z, n)``,
           ``H [S, 2C]`` ``(z, r)``, ``H1 [S, C]`` ``weight_hh = [H_r; H_z; H1].T``
RNNStep    ``W [I, C]``, ``H [S, C]``, ``b [C]``   ``RNNCell``: ``weight_ih = W.T``, ...
Dense      ``W [I, O]``, ``b [O]``                 ``Dense``: ``weight = W.T``, ``bias = b``
Embedding  ``E [V, D]``                           ``Dense(V, D, bias=False)``: ``weight = E.T``
=========  ====================================  ============================================

CNTK's stabilisers (``dh_stabilizer``, ``dc_stabilizer``, ``c_stabilizer``,
``P_stabilizer``: one scalar each, ``beta = softplus(4 s) / 4``) become the cell's
``stabilizer_dh``, ``stabilizer_dc``, ``stabilizer_c``, ``stabilizer_p``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> W, H, b = rng.normal(size=(2, 12)), rng.normal(size=(3, 12)), rng.normal(size=12)
>>> cell = lstm_from_cntk(W, H, b)
>>> (cell.input_size, cell.hidden_size), tuple(cell.weight_ih.shape)
((2, 3), (12, 2))
>>> bool(np.allclose(cell.weight_ih[3:6].detach().numpy(), W[:, 6:9].T))  # f is CNTK's 3rd
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.cells import Activation, GRUCell, LSTMCell, RNNCell
from rnnkit.layers import Dense, Sequential
from rnnkit.recurrence import Fold, Recurrence

__all__ = [
    "dense_from_cntk",
    "embedding_from_cntk",
    "gru_from_cntk",
    "lstm_from_cntk",
    "model_from_cntk",
    "rnn_step_from_cntk",
]

_STABILIZERS = {
    "dh_stabilizer": "stabilizer_dh",
    "dc_stabilizer": "stabilizer_dc",
    "c_stabilizer": "stabilizer_c",
    "P_stabilizer": "stabilizer_p",
}


def _array(value: Any, name: str, dims: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != dims:
        raise ValueError(f"{name}: expected a {dims}-d array, found shape {array.shape}")
    return array


def _blocks(matrix: np.ndarray, count: int, name: str) -> list[np.ndarray]:
    """The ``count`` gate blocks along the last axis of ``matrix``."""
    if matrix.shape[-1] % count:
        raise ValueError(
            f"{name}: expected a last axis of {count} gate blocks, found shape {matrix.shape}"
        )
    return np.split(matrix, count, axis=-1)


def _set(p: Tensor | None, value: np.ndarray, name: str) -> None:
    if p is None:
        raise ValueError(f"{name}: the rnnkit cell has no such parameter")
    if tuple(p.shape) != value.shape:
        raise ValueError(f"{name}: expected shape {tuple(p.shape)}, found {value.shape}")
    with torch.no_grad():
        p.copy_(torch.as_tensor(value, dtype=p.dtype))


def _stabilize(cell: nn.Module, stabilizers: Mapping[str, Any] | None) -> None:
    for cntk_name, value in (stabilizers or {}).items():
        if cntk_name not in _STABILIZERS:
            raise ValueError(
                f"stabilizers: expected names among {sorted(_STABILIZERS)}, found {cntk_name!r}"
            )
        target = _STABILIZERS[cntk_name]
        _set(getattr(cell, target, None), np.asarray(value, np.float64).reshape(1), cntk_name)


def _cell_dtype(cell: nn.Module, dtype: torch.dtype) -> nn.Module:
    return cell.to(dtype)


def lstm_from_cntk(
    W: Any,
    H: Any,
    b: Any,
    *,
    Ci: Any = None,
    Cf: Any = None,
    Co: Any = None,
    P: Any = None,
    stabilizers: Mapping[str, Any] | None = None,
    activation: Activation = "tanh",
    dtype: torch.dtype = torch.float32,
) -> LSTMCell:
    """An :class:`~rnnkit.LSTMCell` computing CNTK's ``LSTM`` with these parameters.

    Shapes (CNTK's): ``W [I, 4C]``, ``H [S, 4C]``, ``b [4C]``, peepholes ``Ci, Cf, Co [C]``
    (all three or none), projection ``P [C, S]`` (``S = C`` without it).
    """
    w, h, bias = _array(W, "W", 2), _array(H, "H", 2), _array(b, "b", 1)
    size = w.shape[1] // 4
    if w.shape[1] != 4 * size or h.shape[1] != 4 * size or bias.shape != (4 * size,):
        raise ValueError(
            f"W, H, b: expected [I, 4C], [S, 4C] and [4C], found {w.shape}, {h.shape}, {bias.shape}"
        )
    peep = [v for v in (Ci, Cf, Co) if v is not None]
    if len(peep) not in (0, 3):
        raise ValueError("Ci, Cf, Co: expected all three peepholes or none")
    proj = None if P is None else _array(P, "P", 2)
    out = size if proj is None else proj.shape[1]
    if h.shape[0] != out or (proj is not None and proj.shape[0] != size):
        raise ValueError(
            f"H, P: expected H [{out}, {4 * size}] and P [{size}, S], found H {h.shape}"
            + ("" if proj is None else f" and P {proj.shape}")
        )
    names = set((stabilizers or {}).keys())
    cell = LSTMCell(
        w.shape[0],
        size,
        proj_size=0 if proj is None else out,
        peepholes=bool(peep),
        activation=activation,
        self_stabilization=bool(names),
    )
    _cell_dtype(cell, dtype)

    def order(m: np.ndarray, name: str) -> np.ndarray:
        i, g, f, o = _blocks(m, 4, name)
        return np.concatenate([i, f, g, o], axis=-1)

    _set(cell.weight_ih, order(w, "W").T, "W")
    _set(cell.weight_hh, order(h, "H").T, "H")
    _set(cell.bias_ih, order(bias, "b"), "b")
    _set(cell.bias_hh, np.zeros(4 * size), "bias_hh")
    if peep:
        for name, value in (("Ci", Ci), ("Cf", Cf), ("Co", Co)):
            _set(getattr(cell, f"weight_c{name[1]}"), _array(value, name, 1), name)
    if proj is not None:
        _set(cell.weight_hr, proj.T, "P")
    _stabilize(cell, stabilizers)
    return cell


def gru_from_cntk(
    W: Any,
    H: Any,
    H1: Any,
    b: Any,
    *,
    stabilizers: Mapping[str, Any] | None = None,
    activation: Activation = "tanh",
    dtype: torch.dtype = torch.float32,
) -> GRUCell:
    """A :class:`~rnnkit.GRUCell` (``reset='before'``) computing CNTK's ``GRU``.

    Shapes (CNTK's): ``W [I, 3C]`` and ``b [3C]`` in ``(z, r, c)``, ``H [C, 2C]`` in
    ``(z, r)``, ``H1 [C, C]``.
    """
    w, h, h1, bias = _array(W, "W", 2), _array(H, "H", 2), _array(H1, "H1", 2), _array(b, "b", 1)
    size = w.shape[1] // 3
    if (
        w.shape[1] != 3 * size
        or h.shape != (size, 2 * size)
        or h1.shape != (size, size)
        or bias.shape != (3 * size,)
    ):
        raise ValueError(
            f"W, H, H1, b: expected [I, 3C], [C, 2C], [C, C] and [3C] with C = {size}, found "
            f"{w.shape}, {h.shape}, {h1.shape}, {bias.shape}"
        )
    cell = GRUCell(
        w.shape[0],
        size,
        reset="before",
        activation=activation,
        self_stabilization=bool(stabilizers),
    )
    _cell_dtype(cell, dtype)
    wz, wr, wc = _blocks(w, 3, "W")
    hz, hr = _blocks(h, 2, "H")
    bz, br, bc = _blocks(bias, 3, "b")
    _set(cell.weight_ih, np.concatenate([wr, wz, wc], axis=1).T, "W")
    _set(cell.weight_hh, np.concatenate([hr, hz, h1], axis=1).T, "H, H1")
    _set(cell.bias_ih, np.concatenate([br, bz, bc]), "b")
    _set(cell.bias_hh, np.zeros(3 * size), "bias_hh")
    _stabilize(cell, stabilizers)
    return cell


def rnn_step_from_cntk(
    W: Any,
    H: Any,
    b: Any,
    *,
    activation: Activation = "sigmoid",
    stabilizers: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> RNNCell:
    """An :class:`~rnnkit.RNNCell` computing CNTK's ``RNNStep`` (sigmoid by default, as
    CNTK's): ``W [I, C]``, ``H [C, C]``, ``b [C]``."""
    w, h, bias = _array(W, "W", 2), _array(H, "H", 2), _array(b, "b", 1)
    size = w.shape[1]
    if h.shape != (size, size) or bias.shape != (size,):
        raise ValueError(
            f"H, b: expected [{size}, {size}] and [{size}], found {h.shape} and {bias.shape}"
        )
    cell = RNNCell(w.shape[0], size, nonlinearity=activation, self_stabilization=bool(stabilizers))
    _cell_dtype(cell, dtype)
    _set(cell.weight_ih, w.T, "W")
    _set(cell.weight_hh, h.T, "H")
    _set(cell.bias_ih, bias, "b")
    _set(cell.bias_hh, np.zeros(size), "bias_hh")
    _stabilize(cell, stabilizers)
    return cell


def dense_from_cntk(W: Any, b: Any = None, dtype: torch.dtype = torch.float32) -> Dense:
    """An :class:`~rnnkit.Dense` computing ``x @ W + b``: ``W [I, O]``, ``b [O]`` or None."""
    w = _array(W, "W", 2)
    dense = Dense(w.shape[0], w.shape[1], bias=b is not None).to(dtype)
    _set(dense.weight, w.T, "W")
    if b is not None:
        _set(dense.bias, _array(b, "b", 1), "b")
    return dense


def embedding_from_cntk(E: Any, dtype: torch.dtype = torch.float32) -> Dense:
    """CNTK's ``Embedding`` (``x @ E`` on one-hot or any inputs): ``E [V, D]``."""
    return dense_from_cntk(E, None, dtype)


_CELLS: dict[str, Callable[..., nn.Module]] = {
    "LSTM": lstm_from_cntk,
    "GRU": gru_from_cntk,
    "RNNStep": rnn_step_from_cntk,
}


def model_from_cntk(
    layers: Sequence[tuple[str, Mapping[str, Any]]], dtype: torch.dtype = torch.float32
) -> Sequential:
    """A model from CNTK layers given as ``(kind, parameters)`` in order, ``kind`` one of
    ``'Dense'``, ``'Embedding'``, ``'Recurrence(LSTM)'``, ``'Fold(LSTM)'`` (and GRU,
    RNNStep), ``parameters`` CNTK's names -> arrays (plus ``initial_state``, a number, and
    ``go_backwards`` for the recurrences, ``activation`` for a cell).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> model = model_from_cntk([
    ...     ("Fold(LSTM)", {"W": rng.normal(size=(1, 60)), "H": rng.normal(size=(15, 60)),
    ...                     "b": np.zeros(60), "initial_state": 0.1}),
    ...     ("Dense", {"W": rng.normal(size=(15, 1)), "b": np.zeros(1)}),
    ... ])
    >>> [type(m).__name__ for m in model.layers], model.layers[0].initial.constant
    (['Fold', 'Dense'], 0.1)
    """
    built: list[nn.Module] = []
    for k, (kind, params) in enumerate(layers):
        options = dict(params)
        if kind == "Dense":
            built.append(dense_from_cntk(options.pop("W"), options.pop("b", None), dtype))
        elif kind == "Embedding":
            built.append(embedding_from_cntk(options.pop("E"), dtype))
        elif kind.endswith(")") and "(" in kind:
            outer, inner = kind[:-1].split("(", 1)
            if outer not in ("Recurrence", "Fold") or inner not in _CELLS:
                raise ValueError(
                    f"layers[{k}]: expected Recurrence(...) or Fold(...) of LSTM, GRU or "
                    f"RNNStep, found {kind!r}"
                )
            state = options.pop("initial_state", None)
            backwards = bool(options.pop("go_backwards", False))
            cell = _CELLS[inner](**options, dtype=dtype)
            combinator = Recurrence if outer == "Recurrence" else Fold
            built.append(combinator(cell, go_backwards=backwards, initial_state=state or None))
            options = {}
        else:
            raise ValueError(
                f"layers[{k}]: expected 'Dense', 'Embedding', 'Recurrence(LSTM)', "
                f"'Fold(GRU)', ..., found {kind!r}"
            )
        if options:
            raise ValueError(f"layers[{k}] ({kind}): unexpected parameters {sorted(options)}")
    return Sequential(built)
