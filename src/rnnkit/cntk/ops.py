"""CNTK's element-wise operations, usable on graph nodes and as a layer's ``activation``.

Each takes a :class:`~rnnkit.cntk.graph.Function` (and returns a new node), or a tensor or
:class:`~rnnkit.SequenceBatch` (and returns its value), so ``Dense(3, activation=relu)`` and
``relu(dense_output)`` both work, as in CNTK.

>>> import numpy as np
>>> from rnnkit.cntk.graph import input_variable
>>> x = input_variable(3)
>>> relu(x).eval(np.array([[-1.0, 0.0, 2.0]], np.float32)).tolist()
[[0.0, 0.0, 2.0]]
>>> [round(float(v), 4) for v in softmax(x).eval(np.zeros((1, 3), np.float32))[0]]
[0.3333, 0.3333, 0.3333]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rnnkit.cntk.graph import Function, combine, op
from rnnkit.sequences import SequenceBatch

__all__ = [
    "combine",
    "element_times",
    "exp",
    "identity",
    "log",
    "minus",
    "plus",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
]


def _unary(fn: Callable[[Tensor], Tensor], name: str) -> Callable[..., Any]:
    def apply(x: Any, name_: str = "") -> Any:
        if isinstance(x, Function):
            return op(
                lambda v: v.map(fn) if isinstance(v, SequenceBatch) else fn(v),
                x,
                op_name=name,
                name=name_,
            )
        if isinstance(x, SequenceBatch):
            return x.map(fn)
        if isinstance(x, Tensor):
            return fn(x)
        raise TypeError(f"{name}: expected a graph node or a tensor, found {type(x).__name__}")

    apply.__name__ = name
    apply.__doc__ = f"CNTK's ``{name}``, element-wise (a node, a tensor or a SequenceBatch)."
    return apply


relu = _unary(torch.relu, "relu")
sigmoid = _unary(torch.sigmoid, "sigmoid")
tanh = _unary(torch.tanh, "tanh")
exp = _unary(torch.exp, "exp")
log = _unary(torch.log, "log")
identity = _unary(lambda t: t, "identity")
softmax = _unary(lambda t: torch.softmax(t, dim=-1), "softmax")


def plus(a: Any, b: Any) -> Function:
    """``a + b`` (nodes or numbers)."""
    return _node(a) + b


def minus(a: Any, b: Any) -> Function:
    """``a - b`` (nodes or numbers)."""
    return _node(a) - b


def element_times(a: Any, b: Any) -> Function:
    """``a * b`` element-wise (nodes or numbers)."""
    return _node(a) * b


def _node(value: Any) -> Function:
    from rnnkit.cntk.graph import as_function

    return as_function(value)
