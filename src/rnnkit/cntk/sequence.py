"""``cntk.sequence``: sequence inputs and the operations on the sequence axis, as graph
nodes over :mod:`rnnkit.sequence_ops` (which holds their CNTK examples and semantics).

>>> import numpy as np
>>> x = input_variable(1)
>>> last(x).eval([np.array([[1.0], [2.0]], np.float32), np.array([[5.0]], np.float32)])
array([[2.],
       [5.]], dtype=float32)
>>> first(x).eval([np.array([[1.0], [2.0]], np.float32)]).tolist()
[[1.0]]

CNTK's ``past_value`` example (a sequence of four ``[3, 2]`` steps), and a sum over steps:

>>> y = input_variable((3, 2))
>>> data = [np.arange(24, dtype=np.float32).reshape(4, 3, 2)]
>>> past_value(y).eval(data)[0][:, 0].tolist()
[[0.0, 0.0], [0.0, 1.0], [6.0, 7.0], [12.0, 13.0]]
>>> reduce_sum(y).eval(data)[0, 0].tolist()
[36.0, 40.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rnnkit import sequence_ops
from rnnkit.cntk.graph import BATCH_AXES, SEQUENCE_AXES, Axis, Function, Variable, op
from rnnkit.cntk.graph import input_variable as _input_variable
from rnnkit.sequences import SequenceBatch

__all__ = [
    "broadcast_as",
    "delay",
    "first",
    "future_value",
    "gather",
    "input_variable",
    "is_first",
    "is_last",
    "last",
    "past_value",
    "reduce_max",
    "reduce_sum",
    "slice",
    "where",
]

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


def _dummy(node: Function) -> Any:
    zeros = torch.zeros(1, *node.shape)
    return SequenceBatch.from_list([zeros]) if node.is_sequence else zeros


def _node(fn: Any, inputs: Sequence[Function], axes: Any, name: str, op_name: str) -> Function:
    """A node ``fn(*values)``; its sample shape from one call on zero samples."""
    with torch.no_grad():
        out = fn(*(_dummy(i) for i in inputs))
    shape = tuple(out.feature_shape) if isinstance(out, SequenceBatch) else tuple(out.shape[1:])
    return op(fn, *inputs, shape=shape, dynamic_axes=axes, op_name=op_name, name=name)


def _shifted(kind: str, x: Any, initial_state: Any, time_step: int, name: str) -> Function:
    node = _sequence_node(x, kind)
    shift = getattr(sequence_ops, kind)
    if isinstance(initial_state, Function):

        def with_state(v: SequenceBatch, s: Any) -> SequenceBatch:
            return shift(v, s, time_step)

        return op(with_state, node, initial_state, op_name=kind, name=name)

    def fixed(v: SequenceBatch) -> SequenceBatch:
        return shift(v, initial_state, time_step)

    return op(fixed, node, op_name=kind, name=name)


def past_value(x: Any, initial_state: Any = 0.0, time_step: int = 1, name: str = "") -> Function:
    """Each step replaced by the one ``time_step`` before it (``initial_state`` before the
    start: a number, or a node, per sequence or a sequence whose last step is used)."""
    return _shifted("past_value", x, initial_state, time_step, name)


def future_value(x: Any, initial_state: Any = 0.0, time_step: int = 1, name: str = "") -> Function:
    """Each step replaced by the one ``time_step`` after it (``initial_state`` past the end)."""
    return _shifted("future_value", x, initial_state, time_step, name)


def delay(x: Any, initial_state: Any = 0.0, time_step: int = 1, name: str = "") -> Function:
    """``past_value`` for ``time_step > 0``, ``future_value`` of ``-time_step`` below 0."""
    return _shifted("delay", x, initial_state, time_step, name)


def broadcast_as(operand: Any, broadcast_as_operand: Any, name: str = "") -> Function:
    """A per-sequence value ``[B, *F]`` repeated at every step of the other's sequences."""
    like = _sequence_node(broadcast_as_operand, "broadcast_as")
    if not isinstance(operand, Function) or operand.is_sequence:
        raise TypeError(f"broadcast_as: expected a node without a sequence axis, found {operand!r}")
    return op(
        sequence_ops.broadcast_as,
        operand,
        like,
        shape=operand.shape,
        dynamic_axes=like.dynamic_axes,
        op_name="broadcast_as",
        name=name,
    )


def reduce_sum(seq: Any, name: str = "") -> Function:
    """The sum of each sequence's steps, ``[B, *F]``."""
    node = _sequence_node(seq, "reduce_sum")
    return op(
        sequence_ops.reduce_sum, node, dynamic_axes=BATCH_AXES, op_name="reduce_sum", name=name
    )


def reduce_max(seq: Any, name: str = "") -> Function:
    """The maximum over each sequence's steps, ``[B, *F]``."""
    node = _sequence_node(seq, "reduce_max")
    return op(
        sequence_ops.reduce_max, node, dynamic_axes=BATCH_AXES, op_name="reduce_max", name=name
    )


def is_first(seq: Any, name: str = "") -> Function:
    """1 at each sequence's first step, else 0 (one scalar per step)."""
    node = _sequence_node(seq, "is_first")
    return _node(sequence_ops.is_first, [node], node.dynamic_axes, name, "is_first")


def is_last(seq: Any, name: str = "") -> Function:
    """1 at each sequence's last step, else 0 (one scalar per step)."""
    node = _sequence_node(seq, "is_last")
    return _node(sequence_ops.is_last, [node], node.dynamic_axes, name, "is_last")


def slice(seq: Any, begin_index: int, end_index: int, name: str = "") -> Function:
    """Steps ``begin_index:end_index`` of every sequence (negative: from its end; 0 as the
    end: its end)."""
    node = _sequence_node(seq, "slice")

    def cut(v: SequenceBatch) -> SequenceBatch:
        return sequence_ops.slice(v, begin_index, end_index)

    return op(cut, node, op_name="slice", name=name)


def where(condition: Any, name: str = "") -> Function:
    """The step indices where ``condition`` is nonzero (repeated by factors above 1)."""
    node = _sequence_node(condition, "where")
    return _node(sequence_ops.where, [node], node.dynamic_axes, name, "where")


def gather(seq: Any, condition: Any, name: str = "") -> Function:
    """The steps of ``seq`` where ``condition`` (one scalar per step) is nonzero."""
    node, cond = _sequence_node(seq, "gather"), _sequence_node(condition, "gather")
    return op(sequence_ops.gather, node, cond, op_name="gather", name=name)
