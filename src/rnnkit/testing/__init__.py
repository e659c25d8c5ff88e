"""Test oracles: code that the rest of rnnkit is checked against, never used by it.

:mod:`rnnkit.testing.reference` holds NumPy backpropagation through time and through structure,
written to be read; the torch cells, combinators and recursive networks are tested against it.
:class:`RunningSum` is a cell whose states can be checked by hand (the doctests use it);
:class:`CoupledLSTMCell` is a cell as a user would write one, outside rnnkit's cells (the
ONNX export tests and bench use it).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CoupledLSTMCell", "RunningSum"]


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


class CoupledLSTMCell(torch.nn.Module):
    """A user's cell on the step protocol: an LSTM whose input gate is ``1 - f``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = torch.nn.Linear(input_size + hidden_size, 3 * hidden_size)

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        h, c = self.initial_state(x.shape[0], x.device, x.dtype) if state is None else state
        f, g, o = self.linear(torch.cat([x, h], dim=-1)).chunk(3, dim=-1)
        f = torch.sigmoid(f)
        c = f * c + (1 - f) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
