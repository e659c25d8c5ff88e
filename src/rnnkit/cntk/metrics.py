"""``cntk.metrics``: metrics as graph nodes (sums over samples, like the losses).

>>> import numpy as np
>>> from rnnkit.cntk.graph import input_variable
>>> z, t = input_variable(2), input_variable(2)
>>> err = classification_error(z, t)
>>> float(err.eval({z: np.array([[2.0, 0.0], [0.0, 1.0]], np.float32),
...                 t: np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)}))
1.0
"""

from __future__ import annotations

from typing import Any

from rnnkit.cntk.graph import Function
from rnnkit.cntk.losses import measure
from rnnkit.training import criteria

__all__ = ["classification_error"]


def classification_error(
    output_vector: Any,
    target_vector: Any,
    axis: int = -1,
    topN: int = 1,
    name: str = "",
) -> Function:
    """CNTK's ``classification_error``: the samples whose highest score is not the target's
    class; only ``topN=1`` and ``axis=-1`` exist here."""
    if topN != 1 or axis != -1:
        raise ValueError(f"topN, axis: expected 1 and -1, found {topN!r} and {axis!r}")
    return measure(criteria.classification_error, output_vector, target_vector, name)
