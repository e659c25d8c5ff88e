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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from rnnkit.sequences import SequenceBatch

__all__ = [
    "Activation",
    "Average",
    "Dense",
    "Dropout",
    "Embedding",
    "Lambda",
    "Layer",
    "Sequential",
    "saved_modules",
]

# Submodules with recipe layers; each defines SAVED_MODULES = [(cls, to_config, name), ...].
SUBMODULES: tuple[str, ...] = (
    "trees",
    "tokens",
    "visits",
    "conv",
    "attention",
    "rocket",
    "sequence",
    "revin",
    "rnnkit.probabilistic",  # outside rnnkit.layers: named in full
)

SavedModule = tuple[type, Callable[[Any], Mapping[str, Any]], str]

Data = TypeVar("Data", Tensor, SequenceBatch)


class Layer(nn.Module):
    """Base of rnnkit's modules: ``a >> b`` composes them into a :class:`Sequential`."""

    def __rshift__(self, other: nn.Module | Callable[[Any], Any]) -> Sequential:
        return Sequential([self, other])


def _per_step(fn: Callable[[Tensor], Tensor], x: Data) -> Data:
    if isinstance(x, SequenceBatch):
        return x.map(fn)
    if isinstance(x, Tensor):
        return fn(x)
    raise TypeError(f"input: expected a Tensor or a SequenceBatch, found {type(x).__name__}")


def _positive(name: str, value: int | None, inferred: str | None = None) -> int:
    """``value``, refused unless a positive integer (None too when it can be ``inferred``:
    then 0 comes back)."""
    if value is None and inferred is not None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = f" (or None: {inferred})" if inferred is not None else ""
        raise ValueError(f"{name}: expected a positive integer{hint}, found {value!r}")
    return value


class Dense(Layer):
    """``y = x W^T + b`` on the last axis, with an optional activation.

    ``Dense(in_features, out_features)``, or ``Dense(out_features=O)`` (``in_features=None``):
    the input size is inferred at the first call (the weight is a ``torch.nn.LazyLinear``'s
    until then; see :mod:`rnnkit.lazy`).

    Shapes: ``weight [O, I]``, ``bias [O]``; input ``[..., I]`` or a SequenceBatch of ``[I]``.

    >>> dense = Dense(out_features=1)
    >>> dense(torch.zeros(2, 5)).shape, dense.in_features, tuple(dense.weight.shape)
    (torch.Size([2, 1]), 5, (1, 5))
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | None = None,
        bias: bool = True,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        _positive("in_features", in_features, inferred="inferred at the first call")
        out_features = _positive("out_features", out_features)
        self.linear: nn.Linear = (
            nn.Linear(in_features, out_features, bias=bias)
            if in_features is not None
            else nn.LazyLinear(out_features, bias=bias)
        )
        self.out_features = out_features
        self.activation = activation

    @property
    def in_features(self) -> int | None:
        """The input size; None until the first call of a Dense built without it."""
        weight = self.linear.weight
        return None if is_lazy(weight) else int(weight.shape[1])

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    @property
    def bias(self) -> Tensor | None:
        return self.linear.bias

    def _apply_dense(self, x: Tensor) -> Tensor:
        size = self.in_features
        if size is not None and x.shape[-1] != size:
            raise ValueError(
                f"Dense input: expected last dimension {self.in_features}, "
                f"found shape {tuple(x.shape)}"
            )
        y = self.linear(x)
        return y if self.activation is None else self.activation(y)

    def forward(self, x: Data) -> Data:
        return _per_step(self._apply_dense, x)


class Embedding(Layer):
    """Token ids ``[...]`` (int64) to vectors ``[..., D]``, or one-hot (or any dense) vectors
    ``[..., V]`` (floating point) to ``x @ weight`` ``[..., D]`` as CNTK's ``Embedding`` does;
    ``weight [V, D]``.

    ``num_embeddings=None`` (``Embedding(embedding_dim=D)``): V is inferred from the last
    dimension of the first input, which must then be one-hot vectors (ids do not tell the
    vocabulary's size); the weight is drawn then, N(0, 1) as ``torch.nn.Embedding``'s.

    >>> emb = Embedding(embedding_dim=2)
    >>> one_hot = torch.eye(4)[[3, 0]]                    # two words of a vocabulary of 4
    >>> emb(one_hot).shape, emb.num_embeddings
    (torch.Size([2, 2]), 4)
    >>> torch.equal(emb(one_hot), emb(torch.tensor([3, 0])))
    True
    """

    def __init__(
        self,
        num_embeddings: int | None = None,
        embedding_dim: int | None = None,
        padding_idx: int | None = None,
    ):
        super().__init__()
        _positive("num_embeddings", num_embeddings, inferred="inferred from one-hot input")
        embedding_dim = _positive("embedding_dim", embedding_dim)
        self.num_embeddings: int | None = num_embeddings
        self.embedding_dim = embedding_dim
        if num_embeddings is not None:
            self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        else:
            if padding_idx is not None and padding_idx < 0:
                raise ValueError(
                    "padding_idx: an Embedding that infers num_embeddings takes a padding_idx "
                    f">= 0 (counted from the start), found {padding_idx}"
                )
            self.embedding = nn.Embedding(1, embedding_dim)
            self.embedding.weight = UninitializedParameter()
            self._padding_idx = padding_idx
            self.register_load_state_dict_pre_hook(_embedding_from_state)

    def materialize(self, num_embeddings: int) -> None:
        """Give an Embedding built without ``num_embeddings`` its ``weight [V, D]``, drawn as
        ``torch.nn.Embedding``'s (what its first one-hot input does)."""
        if self.num_embeddings is not None:
            if num_embeddings != self.num_embeddings:
                raise ValueError(
                    f"num_embeddings: the Embedding has {self.num_embeddings}, found "
                    f"{num_embeddings}"
                )
            return
        _positive("num_embeddings", num_embeddings)
        padding = self._padding_idx
        if padding is not None and padding >= num_embeddings:
            raise ValueError(
                f"padding_idx: expected an index below num_embeddings={num_embeddings}, found "
                f"{padding}"
            )
        emb = self.embedding
        weight = emb.weight
        if isinstance(weight, UninitializedParameter):
            weight.materialize((num_embeddings, self.embedding_dim))
        emb.num_embeddings, emb.padding_idx = num_embeddings, padding
        emb.reset_parameters()
        self.num_embeddings = num_embeddings

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def _lookup(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            if self.num_embeddings is None and ids.dim() > 0:
                self.materialize(ids.shape[-1])
            if ids.dim() == 0 or ids.shape[-1] != self.num_embeddings:
                raise ValueError(
                    f"Embedding input: expected one-hot vectors [..., {self.num_embeddings}] "
                    f"(or integer ids), found shape {tuple(ids.shape)}"
                )
            return ids @ self.embedding.weight.to(ids.dtype)
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"Embedding input: expected integer token ids or floating-point one-hot "
                f"vectors, found {ids.dtype}"
            )
        if self.num_embeddings is None:
            raise ValueError(
                "Embedding input: an Embedding built without num_embeddings infers it from "
                "one-hot input [..., V]; its first input was token ids, which do not say V "
                "(pass num_embeddings=V, or one-hot vectors)"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise ValueError(
                f"Embedding input: ids must lie in [0, {self.num_embeddings}), found "
                f"min {int(ids.min())} and max {int(ids.max())}"
            )
        return self.embedding(ids)

    def forward(self, x: Data) -> Data:
        return _per_step(self._lookup, x)


def _embedding_from_state(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object
) -> None:
    """Before ``load_state_dict``: an Embedding that has not run yet takes V from the stored
    weight."""
    stored = state_dict.get(f"{prefix}embedding.weight")
    if isinstance(module, Embedding) and module.num_embeddings is None and stored is not None:
        module.materialize(int(stored.shape[0]))


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


class Lambda(Layer):
    """A plain function as a layer: ``fn(x)`` on the whole input (a Tensor, a SequenceBatch or
    whatever the previous layer gave), as :class:`Sequential` holds a callable that is not a
    module. It has no parameters, and :func:`rnnkit.save` refuses it (a function cannot be
    rebuilt from a file): use a registered module in a model you save.

    >>> Lambda(lambda x: 2 * x)(torch.tensor([1.0, 3.0])).tolist()
    [2.0, 6.0]
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, found {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: Any) -> Any:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


# Elementwise functions Sequential applies per step, as an Activation (saved by name).
_ELEMENTWISE: tuple[Callable[..., Any], ...] = (
    torch.tanh,
    torch.relu,
    torch.sigmoid,
    F.tanh,
    F.relu,
    F.sigmoid,
)


class Sequential(Layer):
    """Apply layers in turn; ``a >> b >> c`` builds the same flat ``Sequential``.

    A callable that is not a module is accepted, as CNTK's ``Sequential`` accepts functions:
    ``tanh``, ``relu`` or ``sigmoid`` (of ``torch`` or ``torch.nn.functional``) becomes an
    :class:`Activation` (per step, savable), any other a :class:`Lambda` (called on the whole
    input; a model holding one cannot be saved).

    >>> from rnnkit import Recurrence, Fold, LSTMCell, GRUCell
    >>> model = Recurrence(LSTMCell(1, 15)) >> Fold(GRUCell(15, 15)) >> Dense(15, 1)
    >>> len(model.layers)
    3
    >>> model = Sequential([Dense(2, 2), torch.relu, lambda x: x.sum(-1)])
    >>> [type(layer).__name__ for layer in model]
    ['Dense', 'Activation', 'Lambda']
    """

    def __init__(self, layers: Iterable[nn.Module | Callable[[Any], Any]]) -> None:
        super().__init__()
        flat: list[nn.Module] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, Sequential):
                flat.extend(iter(layer.layers))
            elif isinstance(layer, nn.Module):
                flat.append(layer)
            elif any(layer is fn for fn in _ELEMENTWISE):
                flat.append(Activation(layer))
            elif callable(layer):
                flat.append(Lambda(layer))
            else:
                raise TypeError(
                    f"layers[{i}]: expected a torch.nn.Module or a function, found "
                    f"{type(layer).__name__}"
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
        module = name if name.startswith("rnnkit.") else f"rnnkit.layers.{name}"
        out += importlib.import_module(module).SAVED_MODULES
    return out
