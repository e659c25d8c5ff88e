"""``cntk.losses``: losses as graph nodes, over rnnkit's measures.

A loss node evaluates to the **sum over the samples** of the minibatch (a scalar), which is
what CNTK's trainer aggregates; CNTK's own node gives one value per sample. Its samples are
counted on its labels (the second argument), as CNTK's trainer counts them.

>>> import numpy as np
>>> from rnnkit.cntk.graph import input_variable
>>> z, t = input_variable(1), input_variable(1)
>>> loss = squared_error(z, t)
>>> float(loss.eval({z: np.array([[0.5], [2.0]], np.float32),
...                  t: np.array([[1.0], [1.0]], np.float32)}))
1.25
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from rnnkit.cntk.graph import BATCH_AXES, Function, as_function, op
from rnnkit.training import criteria

__all__ = ["cross_entropy_with_softmax", "measure", "squared_error"]


def measure(fn: Callable[[Any, Any], Tensor], output: Any, target: Any, name: str) -> Function:
    """A node ``fn(output, target)`` summed over samples, counting ``target``'s samples."""
    out, tgt = as_function(output), as_function(target)
    if out.is_sequence != tgt.is_sequence:
        raise ValueError(
            f"{fn.__name__}: output {out!r} and target {tgt!r} must both have a sequence axis "
            "or both not (give the target dynamic_axes=model.dynamic_axes)"
        )
    return op(
        fn,
        out,
        tgt,
        shape=(),
        dynamic_axes=BATCH_AXES,
        op_name=fn.__name__,
        name=name,
        label_index=1,
    )


def squared_error(output: Any, target: Any, name: str = "") -> Function:
    """CNTK's ``squared_error``: ``sum (output - target)^2`` over samples and features."""
    return measure(criteria.squared_error, output, target, name)


def cross_entropy_with_softmax(
    output_vector: Any, target_vector: Any, axis: int = -1, name: str = ""
) -> Function:
    """CNTK's ``cross_entropy_with_softmax`` against one-hot (or soft) targets, summed over
    samples; only ``axis=-1`` (the class axis last) exists here."""
    if axis != -1:
        raise ValueError(f"axis: expected -1 (classes on the last axis), found {axis!r}")
    return measure(criteria.cross_entropy_with_softmax, output_vector, target_vector, name)
