"""Layers of the sequence classifiers: convolution over each sequence alone, pooling over its
steps, and an ensemble that averages class probabilities.

``Conv`` and ``Pool`` take a :class:`~rnnkit.sequences.SequenceBatch` (variable lengths, never
padded into the computation); ``Ensemble`` takes whatever its members take. All three, and
the convolutional classifiers of :mod:`rnnkit.layers.timeconv` (FCN, ResNet, InceptionTime),
are listed in :data:`SAVED_MODULES`, so :func:`rnnkit.load` restores a saved classifier
without importing the recipe that trained it.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> x = SequenceBatch.from_list([torch.tensor([[1.0], [3.0]]), torch.tensor([[-2.0]])])
>>> Pool()(x).tolist()  # [mean, max] of each sequence
[[2.0, 3.0], [-2.0, -2.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.layers import Layer, SavedModule, timeconv
from rnnkit.sequences import SequenceBatch

__all__ = ["SAVED_MODULES", "Conv", "Ensemble", "Pool"]


class Pool(Layer):
    """The mean and the maximum of every feature over the steps of each sequence.

    Input: a SequenceBatch of ``[F]`` steps. Output: ``[B, 2F]`` (means, then maxima), caller
    order.
    """

    def forward(self, x: SequenceBatch) -> Tensor:
        if not isinstance(x, SequenceBatch):
            raise TypeError(f"Pool input: expected a SequenceBatch, found {type(x).__name__}")
        padded, lengths = x.to_padded()
        steps = torch.arange(padded.shape[1], device=padded.device)
        inside = (steps[None, :] < lengths.to(padded.device)[:, None]).unsqueeze(-1)
        mean = padded.sum(1) / lengths.to(padded)[:, None]
        peak = padded.masked_fill(~inside, -math.inf).amax(1)
        return torch.cat([mean, peak], dim=-1)


class Conv(Layer):
    """A 1-D convolution over the steps of each sequence, batch normalisation, ReLU.

    ``Conv1d(in_channels, out_channels, kernel_size, padding="same")`` sees each sequence on
    its own, with zeros before its first and after its last step (never another sequence's
    steps or the padding of a longer one), so the output has the input's lengths. Batch
    normalisation pools the real steps of the minibatch only. The convolution blocks of the
    FCN of Wang et al. (2017), the front end of LSTM-FCN (Karim et al. 2018).

    Input: a SequenceBatch of ``[in_channels]`` steps; output: the same layout, of
    ``[out_channels]`` steps. ``in_channels=None``: inferred at the first call (a
    ``torch.nn.LazyConv1d`` until then, :mod:`rnnkit.lazy`).

    >>> conv = Conv(None, 4, 3)
    >>> x = SequenceBatch.from_list([torch.randn(5, 2), torch.randn(3, 2)])
    >>> conv(x).feature_shape, conv.in_channels
    (torch.Size([4]), 2)
    """

    def __init__(self, in_channels: int | None, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.out_channels, self.kernel_size = out_channels, kernel_size
        self.conv: nn.Conv1d = (
            nn.Conv1d(in_channels, out_channels, kernel_size)
            if in_channels is not None
            else nn.LazyConv1d(out_channels, kernel_size)
        )
        self.norm = nn.BatchNorm1d(out_channels)

    @property
    def in_channels(self) -> int | None:
        """The input's features; None until the first call of a Conv built without them."""
        weight = self.conv.weight
        return None if nn.parameter.is_lazy(weight) else int(weight.shape[1])

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        if not isinstance(x, SequenceBatch):
            raise TypeError(f"Conv input: expected a SequenceBatch, found {type(x).__name__}")
        padded = x.to_padded_time_major()  # [T, B, F], zeros after each sequence's end
        t, b = padded.shape[:2]
        k = self.kernel_size - 1  # "same": (k // 2) zeros before, the rest after, as torch's
        out = self.conv(nn.functional.pad(padded.permute(1, 2, 0), (k // 2, k - k // 2)))
        rows = out.permute(2, 0, 1).reshape(t * b, self.out_channels)
        steps = rows.index_select(0, x.padded_index)  # the real steps, packed as x
        return x.with_data(torch.relu(self.norm(steps)))


class Ensemble(Layer):
    """Classifiers whose class probabilities are averaged.

    Output: ``[B, C]`` the logarithm of the members' mean softmax probabilities (so its
    ``argmax`` is the averaged vote, its softmax the averaged probabilities, and the cross
    entropy of the scores the negative log of the averaged probability of the class).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("members: expected at least one classifier, found none")
        self.members = nn.ModuleList(members)

    def forward(self, x: Any) -> Tensor:
        probabilities = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members])
        return probabilities.mean(0).log()


SAVED_MODULES: list[SavedModule] = [
    (Pool, lambda m: {}, "rnnkit.Pool"),
    (
        Conv,
        lambda m: {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": m.kernel_size,
        },
        "rnnkit.Conv",
    ),
    (Ensemble, lambda m: {"members": list(m.members)}, "rnnkit.Ensemble"),
    *timeconv.SAVED_MODULES,
]
