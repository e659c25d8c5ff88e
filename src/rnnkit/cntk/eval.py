"""``cntk.eval``: CNTK's ``Evaluator`` (the average metric over minibatches, printed by the
progress writers).

>>> import io, numpy as np
>>> import rnnkit.cntk as C
>>> z, t = C.input_variable(1), C.input_variable(1)
>>> out = io.StringIO()
>>> evaluator = Evaluator(C.squared_error(z, t), C.logging.ProgressPrinter(file=out))
>>> zeros = np.zeros((2, 1), np.float32)
>>> evaluator.test_minibatch({z: np.array([[1.0], [2.0]], np.float32), t: zeros})
2.5
>>> evaluator.test_minibatch({z: np.array([[1.0]], np.float32), t: zeros[:1]})
1.0
>>> evaluator.summarize_test_progress()
>>> print(out.getvalue(), end="")
Finished Evaluation [1]: Minibatch[1-2]: metric = 200.00% * 3;
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rnnkit.cntk.graph import Function, GraphModule, to_value
from rnnkit.cntk.train import add_test, as_writers, label_value, summarize_test
from rnnkit.training.criteria import count_samples

__all__ = ["Evaluator"]


class Evaluator:
    """CNTK's ``Evaluator(eval_function, progress_writers=None)``: ``test_minibatch``
    returns the average of ``eval_function`` (a loss or metric of rnnkit.cntk) per label
    sample; ``summarize_test_progress`` prints ``Finished Evaluation [k]: ...``."""

    def __init__(self, eval_function: Function, progress_writers: Any = None) -> None:
        if not isinstance(eval_function, Function) or eval_function.label is None:
            raise TypeError(
                f"eval_function: expected a loss or metric of rnnkit.cntk, found {eval_function!r}"
            )
        self.eval_function = eval_function
        self.module = GraphModule(eval_function)
        self.progress_writers = as_writers(progress_writers)

    def test_minibatch(self, arguments: Mapping[Any, Any], device: Any = None) -> float:
        """The average of ``eval_function`` per label sample on ``arguments``
        (``{variable: data}``), added to each progress writer's test sums."""
        missing = [v for v in self.eval_function.arguments if v not in arguments]
        if missing:
            raise ValueError(f"arguments: no data for {missing}")
        feed = {var: to_value(var, arguments[var]) for var in self.eval_function.arguments}
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                total = float(self.module(*feed.values()))
        finally:
            self.module.train(was)
        samples = count_samples(label_value(self.eval_function, feed))
        add_test(self.progress_writers, samples, total)
        return total / samples

    def summarize_test_progress(self) -> None:
        """Print each writer's ``Finished Evaluation`` line and reset its sums."""
        summarize_test(self.progress_writers)
