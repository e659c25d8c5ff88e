"""Test oracles: code that the rest of rnnkit is checked against, never used by it.

:mod:`rnnkit.testing.reference` holds NumPy backpropagation through time and through structure,
written to be read; the torch cells, combinators and recursive networks are tested against it.
:class:`RunningSum` is a cell whose states can be checked by hand (the doctests use it).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RunningSum"]


class RunningSum(torch.nn.Module):
    """A "cell" whose state is the running sum of its inputs: ``h_t = h_{t-1} + x_t``."""

    hidden_size = 1

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        return torch.zeros(batch_size, 1, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        return x if state is None else state + x
