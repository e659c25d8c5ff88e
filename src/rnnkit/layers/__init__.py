"""Layers that apply per step, and composition: ``Sequential`` and ``a >> b``.

The submodules hold the layers the recipes are built from (convolutions, attention, ...);
each lists its savable classes in ``SAVED_MODULES``, which :func:`saved_modules` gathers
for :mod:`rnnkit.saving`, so a saved model loads without importing any recipe.

``Dense``, ``Embedding`` and ``Dropout`` accept a plain tensor or a :class:`SequenceBatch`; on a
SequenceBatch they apply to its packed ``data`` (every real step, no padding), so a per-step
layer costs the same as on one big tensor.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> dense = Dense(2, 1)
>>> with torch.no_grad():
...     _ = dense.weight.copy_(torch.tensor([[1.0, 10.0]])), dense.bias.zero_()
>>> x = SequenceBatch.from_list([torch.tensor([[1.0, 2.0]]),
...                              torch.tensor([[3.0, 4.0], [5.0, 6.0]])])
>>> [s.squeeze(1).tolist() for s in dense(x).to_list()]
[[21.0], [43.0, 65.0]]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from rnnkit.sequences import SequenceBatch

__all__ = [
    "Activation",
    "Average",
    "Dense",
    "Dropout",
    "Embedding",
    "Layer",
    "Sequential",
    "saved_modules",
]

# Submodules with recipe layers; each defines SAVED_MODULES = [(cls, to_config, name), ...].
SUBMODULES: tuple[str, ...] = ("trees", "tokens", "visits", "conv", "attention", "rocket")

SavedModule = tuple[type, Callable[[Any], Mapping[str, Any]], str]

Data = TypeVar("Data", Tensor, SequenceBatch)


class Layer(nn.Module):
    """Base of rnnkit's modules: ``a >> b`` composes them into a :class:`Sequential`."""

    def __rshift__(self, other: nn.Module) -> Sequential:
        return Sequential([self, other])


def _per_step(fn: Callable[[Tensor], Tensor], x: Data) -> Data:
    if isinstance(x, SequenceBatch):
        return x.map(fn)
    if isinstance(x, Tensor):
        return fn(x)
    raise TypeError(f"input: expected a Tensor or a SequenceBatch, found {type(x).__name__}")


class Dense(Layer):
    """``y = x W^T + b`` on the last axis, with an optional activation.

    Shapes: ``weight [O, I]``, ``bias [O]``; input ``[..., I]`` or a SequenceBatch of ``[I]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias

    def _apply_dense(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Dense input: expected last dimension {self.in_features}, "
                f"found shape {tuple(x.shape)}"
            )
        y = self.linear(x)
        return y if self.activation is None else self.activation(y)

    def forward(self, x: Data) -> Data:
        return _per_step(self._apply_dense, x)


class Embedding(Layer):
    """Token ids ``[...]`` (int64) to vectors ``[..., D]``; ``weight [V, D]``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def _lookup(self, ids: Tensor) -> Tensor:
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"Embedding input: expected integer token ids, found {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise ValueError(
                f"Embedding input: ids must lie in [0, {self.num_embeddings}), found "
                f"min {int(ids.min())} and max {int(ids.max())}"
            )
        return self.embedding(ids)

    def forward(self, x: Data) -> Data:
        return _per_step(self._lookup, x)


class Dropout(Layer):
    """Dropout on every step independently (no-op in eval mode)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a probability in [0, 1), found {p}")
        self.dropout = nn.Dropout(p)

    def forward(self, x: Data) -> Data:
        return _per_step(self.dropout, x)


class Activation(Layer):
    """A per-step function (``torch.tanh``, ``torch.relu``, ...) as a layer."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Data) -> Data:
        return _per_step(self.fn, x)


class Sequential(Layer):
    """Apply layers in turn; ``a >> b >> c`` builds the same flat ``Sequential``.

    >>> from rnnkit import Recurrence, Fold, LSTMCell, GRUCell
    >>> model = Recurrence(LSTMCell(1, 15)) >> Fold(GRUCell(15, 15)) >> Dense(15, 1)
    >>> len(model.layers)
    3
    """

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        flat: list[nn.Module] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, Sequential):
                flat.extend(iter(layer.layers))
            elif isinstance(layer, nn.Module):
                flat.append(layer)
            else:
                raise TypeError(
                    f"layers[{i}]: expected a torch.nn.Module, found {type(layer).__name__}"
                )
        self.layers: nn.ModuleList = nn.ModuleList(flat)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, index: int) -> nn.Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)


class Average(Layer):
    """The mean of several models' outputs (an ensemble of regressors).

    >>> a, b = Dense(2, 1), Dense(2, 1)
    >>> x = torch.randn(3, 2)
    >>> bool(torch.allclose(Average([a, b])(x), (a(x) + b(x)) / 2))
    True
    """

    def __init__(self, members: Iterable[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        if len(self.members) == 0:
            raise ValueError("members: expected at least one model, found none")

    def forward(self, x: Any) -> Any:
        outputs = [m(x) for m in self.members]
        if isinstance(outputs[0], SequenceBatch):
            mean = torch.stack([o.data for o in outputs]).mean(0)
            return outputs[0].with_data(mean)
        return torch.stack(outputs).mean(0)


def saved_modules() -> list[SavedModule]:
    """``(class, to_config, name)`` for every layer of the submodules, for ``rnnkit.saving``."""
    out: list[SavedModule] = []
    for name in SUBMODULES:
        out += importlib.import_module(f"rnnkit.layers.{name}").SAVED_MODULES
    return out
