"""``cntk.sequence``: sequence inputs and the operations on the sequence axis.

>>> import numpy as np
>>> x = input_variable(1)
>>> last(x).eval([np.array([[1.0], [2.0]], np.float32), np.array([[5.0]], np.float32)])
array([[2.],
       [5.]], dtype=float32)
>>> first(x).eval([np.array([[1.0], [2.0]], np.float32)]).tolist()
[[1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnkit.cntk.graph import BATCH_AXES, SEQUENCE_AXES, Axis, Function, Variable, op
from rnnkit.cntk.graph import input_variable as _input_variable
from rnnkit.sequences import SequenceBatch

__all__ = ["first", "input_variable", "last"]

_DEFAULT_AXIS = Axis.default_dynamic_axis()


def input_variable(
    shape: int | Sequence[int],
    is_sparse: bool = False,
    sequence_axis: Axis = _DEFAULT_AXIS,
    dtype: Any = np.float32,
    needs_gradient: bool = False,
    name: str = "",
) -> Variable:
    """A sequence input: samples of ``shape`` along the batch and the sequence axes.

    >>> x = input_variable(1)
    >>> x.shape, x.is_sequence
    ((1,), True)
    """
    if sequence_axis != Axis.default_dynamic_axis():
        raise ValueError(
            f"sequence_axis: only the default sequence axis exists here, found {sequence_axis!r}"
        )
    return _input_variable(
        shape,
        dtype=dtype,
        needs_gradient=needs_gradient,
        is_sparse=is_sparse,
        dynamic_axes=SEQUENCE_AXES,
        name=name,
    )


def _sequence_node(x: Any, who: str) -> Function:
    if not isinstance(x, Function) or not x.is_sequence:
        raise TypeError(f"{who}: expected a graph node with a sequence axis, found {x!r}")
    return x


def _last(value: SequenceBatch) -> Any:
    return value.last()


def _first(value: SequenceBatch) -> Any:
    return value.first()


def last(seq: Any, name: str = "") -> Function:
    """The last sample of each sequence: ``[B, *shape]``, no sequence axis."""
    node = _sequence_node(seq, "last")
    return op(_last, node, dynamic_axes=BATCH_AXES, op_name="last", name=name)


def first(seq: Any, name: str = "") -> Function:
    """The first sample of each sequence: ``[B, *shape]``, no sequence axis."""
    node = _sequence_node(seq, "first")
    return op(_first, node, dynamic_axes=BATCH_AXES, op_name="first", name=name)
