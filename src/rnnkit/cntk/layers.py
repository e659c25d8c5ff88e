"""``cntk.layers``: CNTK's layers as blocks that become rnnkit modules when applied.

A block (``Dense(1)``, ``Fold(LSTM(15))``, ``Sequential([...])``) is a layer that has not
seen its input yet, as a CNTK layer with a placeholder is. Applying it to a graph node
(``Dense(1)(x)``) builds the rnnkit module from the node's shape (``rnnkit.Dense(I, 1)``,
``rnnkit.Fold(cell)``, ...), materialises its weights with one dry call on a zero sample
(so ``model.parameters`` exist before training, as in CNTK) and returns a new node. A block
is built once: applying it again (to another input of the same shape) shares its weights.

Initialisation follows CNTK: ``glorot_uniform()`` weights and zero biases for ``Dense`` and
``Embedding``. The recurrent blocks ``LSTM``, ``GRU``, ``RNNStep`` are CNTK's constructors
over rnnkit's cells (:mod:`rnnkit.cntk.blocks`). ``default_options(...)`` (from
:mod:`rnnkit.cntk.defaults`) sets the defaults of the blocks made inside its ``with``
block, e.g. ``initial_state=0.1`` for ``Recurrence`` and ``Fold``.

>>> import numpy as np, torch
>>> from rnnkit.cntk import sequence
>>> from rnnkit.cells import LSTMCell
>>> x = sequence.input_variable(1)
>>> with default_options(initial_state=0.1):
...     model = Sequential([Fold(LSTMCell(1, 15)), Dense(1)])(x)
>>> model.shape, [a.name for a in model.dynamic_axes], len(model.parameters)
((1,), ['defaultBatchAxis'], 6)
>>> model.torch_modules()[0].initial.constant
0.1
>>> model([np.zeros((3, 1), np.float32), np.ones((5, 1), np.float32)]).shape
(2, 1)
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit import layers as rnnkit_layers
from rnnkit import recurrence
from rnnkit.cntk.blocks import GRU, LSTM, RNNStep
from rnnkit.cntk.defaults import default_options, default_override_or, resolve
from rnnkit.cntk.graph import BATCH_AXES, Axis, Function, combine, op
from rnnkit.cntk.initializer import apply_init, glorot_uniform
from rnnkit.layers import sequence as sequence_layers
from rnnkit.sequences import SequenceBatch

__all__ = [
    "GRU",
    "LSTM",
    "Block",
    "Delay",
    "Dense",
    "Dropout",
    "Embedding",
    "Fold",
    "LayerNormalization",
    "RNNStep",
    "Recurrence",
    "SeededDropout",
    "Sequential",
    "Stabilizer",
    "default_options",
]


# The defaults of the signatures (CNTK's), which default_options may replace.
_GLOROT = default_override_or(glorot_uniform())
_NONE = default_override_or(None)
_TRUE = default_override_or(True)
_FALSE = default_override_or(False)
_ZERO = default_override_or(0)
_EPSILON = default_override_or(1e-5)


def _dummy(node: Function) -> Any:
    """One zero sample for ``node``: a sequence of length 1, or a batch of one."""
    zeros = torch.zeros(1, *node.shape)
    return SequenceBatch.from_list([zeros]) if node.is_sequence else zeros


def _shape_of(value: Any, who: str) -> tuple[int, ...]:
    if isinstance(value, SequenceBatch):
        return tuple(value.feature_shape)
    if isinstance(value, Tensor):
        return tuple(value.shape[1:])
    raise TypeError(f"{who}: expected a tensor or a SequenceBatch output, found {value!r}")


def dry_run(module: Callable[[Any], Any], node: Function) -> Any:
    """Call ``module`` once on a zero sample for ``node`` (eval mode, no gradient): lazy
    weights take their shapes; returns the output."""
    modes = [(m, m.training) for m in module.modules()] if isinstance(module, nn.Module) else []
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            return module(_dummy(node))
    finally:
        for m, mode in modes:
            m.train(mode)


class Block:
    """A layer not yet applied to an input (a CNTK layer with a placeholder).

    ``block(node)`` builds the module at the first call (see the module doc) and returns
    the node ``module(node)``; ``block(other_block)`` composes (``other_block`` first), as
    ``a >> b`` does.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.module: nn.Module | None = None
        self._input: tuple[tuple[int, ...], bool] | None = None
        self._output_shape: tuple[int, ...] = ()

    def _make(self, node: Function) -> nn.Module:
        raise TypeError(f"{type(self).__name__} cannot be applied")  # every block overrides

    def _axes(self, node: Function) -> tuple[Axis, ...]:
        return node.dynamic_axes

    def _module_for(self, node: Function) -> nn.Module:
        key = (node.shape, node.is_sequence)
        if self.module is None:
            module = self._make(node)
            self._output_shape = _shape_of(dry_run(module, node), self._label())
            self.module, self._input = module, key
        elif key != self._input:
            assert self._input is not None
            raise ValueError(
                f"{self._label()}: built for inputs of shape {self._input[0]} "
                f"({'sequences' if self._input[1] else 'no sequence axis'}), applied to "
                f"{node!r}; a block shares its weights, so each input must have that shape"
            )
        return self.module

    def _label(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else type(self).__name__

    def __call__(self, x: Any) -> Any:
        if isinstance(x, Block):
            return Sequential([x, self])
        if not isinstance(x, Function):
            raise TypeError(
                f"{self._label()}: expected a graph node (an input_variable or a Function) "
                f"or a layer, found {type(x).__name__}; apply the layer to an input first"
            )
        module = self._module_for(x)
        node = op(
            module,
            x,
            shape=self._output_shape,
            dynamic_axes=self._axes(x),
            modules=[module],
            op_name=type(self).__name__,
            name=self.name,
        )
        node.block = self
        return node

    def __rshift__(self, other: Any) -> Sequential:
        return Sequential([self, other])

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The block's parameters (none before it is applied)."""
        return [] if self.module is None else list(self.module.parameters())

    def __repr__(self) -> str:
        built = "" if self._input is None else f" on {self._input[0]}"
        return f"{self._label()}{built}"


def _in_features(node: Function, who: str) -> int:
    if len(node.shape) != 1:
        raise ValueError(
            f"{who}: expected an input with one axis of features, found shape {node.shape}"
        )
    return node.shape[0]


class ParameterView:
    """A layer's parameter in CNTK's layout (``[in, out]`` for a matrix): ``shape`` (``-1``
    for the input size before the layer is applied, as CNTK shows it) and ``value`` (NumPy)."""

    def __init__(self, shape: tuple[int, ...], value: Callable[[], Any]) -> None:
        self.shape = shape
        self._value = value

    @property
    def value(self) -> Any:
        return self._value()

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape})"


def _matrix_view(block: Block, out: int) -> ParameterView:
    def value() -> Any:
        if block.module is None:
            raise ValueError(
                f"{block._label()}: the weights take their shape when the layer is applied"
            )
        weight = block.module.weight
        assert isinstance(weight, Tensor)
        return weight.detach().T.numpy().copy()

    rows = -1 if block.module is None else int(block.module.weight.shape[1])  # type: ignore[index]
    return ParameterView((rows, out), value)


class Dense(Block):
    """CNTK's ``Dense(shape, activation=identity, init=glorot_uniform(), bias=True,
    init_bias=0)`` over :class:`rnnkit.Dense` (``y = activation(x W + b)``)."""

    def __init__(
        self,
        shape: int,
        activation: Any = _NONE,
        init: Any = _GLOROT,
        input_rank: int | None = None,
        map_rank: int | None = None,
        bias: Any = _TRUE,
        init_bias: Any = _ZERO,
        name: str = "",
    ) -> None:
        super().__init__(name)
        if not isinstance(shape, int) or isinstance(shape, bool) or shape < 1:
            raise ValueError(f"shape: expected a positive int, found {shape!r}")
        if input_rank is not None or map_rank is not None:
            raise ValueError("input_rank, map_rank: expected None (one feature axis here)")
        self.shape = shape
        self.activation = resolve(Dense, activation=activation)
        self.init = resolve(Dense, init=init)
        self.bias = bool(resolve(Dense, bias=bias))
        self.init_bias = resolve(Dense, init_bias=init_bias)

    def _make(self, node: Function) -> nn.Module:
        dense = rnnkit_layers.Dense(
            _in_features(node, self._label()),
            self.shape,
            bias=self.bias,
            activation=self.activation,
        )
        apply_init(dense.weight, self.init)
        if dense.bias is not None:
            apply_init(dense.bias, self.init_bias, "init_bias")
        return dense

    @property
    def W(self) -> ParameterView:
        """The weight ``[I, shape]`` (CNTK's layout)."""
        return _matrix_view(self, self.shape)

    @property
    def b(self) -> ParameterView:
        """The bias ``[shape]``; before the layer is applied, the value it starts from."""
        if not self.bias:
            raise AttributeError(f"{self._label()} has no bias (bias=False)")

        def value() -> Any:
            if self.module is None:
                if not isinstance(self.init_bias, (int, float)):
                    raise ValueError(
                        f"{self._label()}: the bias is drawn when the layer is applied"
                    )
                return np.full(self.shape, float(self.init_bias), np.float32)
            bias = self.module.bias
            assert isinstance(bias, Tensor)
            return bias.detach().numpy().copy()

        return ParameterView((self.shape,), value)


class Embedding(Block):
    """CNTK's ``Embedding(shape, init=glorot_uniform(), weights=None)``: ``x E`` with
    ``E [I, shape]``, for one-hot (or any) inputs; ``weights`` (an array ``[I, shape]``)
    gives a fixed, untrained ``E``. Built as a bias-free :class:`rnnkit.Dense`."""

    def __init__(
        self,
        shape: int | None = None,
        init: Any = _GLOROT,
        weights: Any = None,
        name: str = "",
    ) -> None:
        super().__init__(name)
        if weights is None and (not isinstance(shape, int) or isinstance(shape, bool) or shape < 1):
            raise ValueError(f"shape: expected a positive int (or weights=...), found {shape!r}")
        self.shape, self.weights = shape, weights
        self.init = resolve(Embedding, init=init)

    def _make(self, node: Function) -> nn.Module:
        size = _in_features(node, self._label())
        if self.weights is not None:
            table = torch.as_tensor(self.weights, dtype=torch.float32)
            if table.dim() != 2 or table.shape[0] != size:
                raise ValueError(
                    f"weights: expected an array [{size}, D] for inputs of {size} features, "
                    f"found shape {tuple(table.shape)}"
                )
            dense = rnnkit_layers.Dense(size, int(table.shape[1]), bias=False)
            with torch.no_grad():
                dense.weight.copy_(table.T)
            dense.weight.requires_grad_(False)
            return dense
        assert self.shape is not None
        dense = rnnkit_layers.Dense(size, self.shape, bias=False)
        apply_init(dense.weight, self.init)
        return dense

    @property
    def E(self) -> ParameterView:
        """The table ``[I, D]`` (CNTK's layout; ``I`` is ``-1`` before the layer is applied)."""
        size = self.shape if self.weights is None else int(np.shape(self.weights)[1])
        assert size is not None
        return _matrix_view(self, size)


class SeededDropout(nn.Module):
    """Dropout whose masks come from its own generator, seeded once (CNTK's ``seed=``):
    each step keeps a value with probability ``1 - p`` and scales it by ``1 / (1 - p)``, as
    ``torch.nn.Dropout``; identity in eval mode. A tensor or a SequenceBatch (its steps).

    >>> drop = SeededDropout(0.5, seed=1)
    >>> a = drop(torch.ones(2, 4))
    >>> b = SeededDropout(0.5, seed=1)(torch.ones(2, 4))
    >>> bool(torch.equal(a, b)), sorted(set(a.flatten().tolist())) == [0.0, 2.0]
    (True, True)
    """

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        self.p, self.seed = p, seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _mask(self, x: Tensor) -> Tensor:
        g = self._generators.get(x.device)
        if g is None:
            g = self._generators[x.device] = torch.Generator(x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            return x
        if isinstance(x, SequenceBatch):
            return x.with_data(self._mask(x.data))
        return self._mask(x)


class Dropout(Block):
    """CNTK's ``Dropout(dropout_rate=None, keep_prob=None, seed=None)`` over
    :class:`rnnkit.Dropout` (masks from torch's global generator), or with ``seed`` a
    :class:`SeededDropout` (masks from the layer's own generator, as CNTK's)."""

    def __init__(
        self,
        dropout_rate: float | None = None,
        keep_prob: float | None = None,
        seed: int | None = None,
        name: str = "",
    ) -> None:
        super().__init__(name)
        if (dropout_rate is None) == (keep_prob is None):
            raise ValueError(
                f"dropout_rate, keep_prob: expected exactly one, found {dropout_rate!r} and "
                f"{keep_prob!r}"
            )
        self.p = float(dropout_rate) if dropout_rate is not None else 1.0 - float(keep_prob or 0)
        self.seed = seed
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"dropout_rate: expected a probability in [0, 1), found {self.p}")

    def _make(self, node: Function) -> nn.Module:
        if self.seed is not None:
            return SeededDropout(self.p, self.seed)
        return rnnkit_layers.Dropout(self.p)


class Delay(Block):
    """CNTK's ``Delay(T=1, initial_state=0)`` over :class:`rnnkit.layers.sequence.Delay`:
    each sequence shifted ``T`` steps (into the past for ``T > 0``)."""

    def __init__(self, T: int = 1, initial_state: Any = _ZERO, name: str = "") -> None:
        super().__init__(name)
        self.T = T
        self.initial_state = resolve(Delay, initial_state=initial_state)

    def _make(self, node: Function) -> nn.Module:
        if not node.is_sequence:
            raise ValueError(f"{self._label()}: expected a sequence input, found {node!r}")
        return sequence_layers.Delay(self.T, self.initial_state)


class Stabilizer(Block):
    """CNTK's ``Stabilizer(steepness=4, enable_self_stabilization=True)`` over
    :class:`rnnkit.layers.sequence.Stabilizer`: a learned scalar ``softplus(4 s) / 4``."""

    def __init__(
        self, steepness: float = 4.0, enable_self_stabilization: Any = _TRUE, name: str = ""
    ) -> None:
        super().__init__(name)
        self.steepness = steepness
        self.enabled = bool(
            resolve(Stabilizer, enable_self_stabilization=enable_self_stabilization)
        )

    def _make(self, node: Function) -> nn.Module:
        return sequence_layers.Stabilizer(self.steepness, self.enabled)


class LayerNormalization(Block):
    """CNTK's ``LayerNormalization(initial_scale=1, initial_bias=0, epsilon=1e-5)`` over
    :class:`rnnkit.layers.sequence.LayerNormalization` (CNTK adds ``epsilon`` to the
    standard deviation)."""

    def __init__(
        self,
        initial_scale: float = 1.0,
        initial_bias: float = 0.0,
        epsilon: Any = _EPSILON,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self.initial_scale, self.initial_bias = initial_scale, initial_bias
        self.epsilon = resolve(LayerNormalization, epsilon=epsilon)

    def _make(self, node: Function) -> nn.Module:
        return sequence_layers.LayerNormalization(
            self.initial_scale, self.initial_bias, self.epsilon, normalized_shape=node.shape
        )


class _RecurrenceBlock(Block, abc.ABC):
    combinator: type[recurrence.Recurrence] = recurrence.Recurrence

    def __init__(
        self,
        step_function: Any,
        go_backwards: Any,
        initial_state: Any,
        return_full_state: bool,
        name: str,
        owner: Callable[..., Any],
    ) -> None:
        super().__init__(name)
        if not isinstance(step_function, nn.Module) or not callable(
            getattr(step_function, "initial_state", None)
        ):
            raise TypeError(
                f"{type(self).__name__}: expected a cell (LSTM(...), GRU(...), RNNStep(...) "
                f"or an rnnkit cell), found {type(step_function).__name__}"
            )
        self.cell = step_function
        self.go_backwards = bool(resolve(owner, go_backwards=go_backwards))
        state = resolve(owner, initial_state=initial_state)
        if isinstance(state, Function):
            raise TypeError(
                "initial_state: a graph node as the initial state is not supported by "
                "rnnkit.cntk; use a number, or rnnkit.RecurrenceFrom"
            )
        self.initial_state = None if isinstance(state, (int, float)) and state == 0 else state
        self.return_full_state = return_full_state

    def _make(self, node: Function) -> nn.Module:
        if not node.is_sequence:
            raise ValueError(f"{self._label()}: expected a sequence input, found {node!r}")
        _in_features(node, self._label())
        return self.combinator(
            self.cell, go_backwards=self.go_backwards, initial_state=self.initial_state
        )

    @abc.abstractmethod
    def _full(self, module: nn.Module) -> Callable[[Any], Any]:
        """The combinator's method giving every state (``return_full_state=True``)."""

    def __call__(self, x: Any) -> Any:
        if not self.return_full_state or not isinstance(x, Function):
            return super().__call__(x)
        module = self._module_for(x)
        full = self._full(module)
        values = dry_run(full, x)
        whole = op(
            full,
            x,
            shape=self._output_shape,
            dynamic_axes=self._axes(x),
            modules=[module],
            op_name=f"{type(self).__name__}.states",
            name=self.name,
        )
        parts = [
            op(
                lambda v, k=k: v[k],
                whole,
                shape=_shape_of(v, self._label()),
                dynamic_axes=self._axes(x),
                op_name=f"state{k}",
            )
            for k, v in enumerate(values)
        ]
        return combine(parts)


class Recurrence(_RecurrenceBlock):
    """CNTK's ``Recurrence(step_function, go_backwards=False, initial_state=0,
    return_full_state=False)`` over :class:`rnnkit.Recurrence`: the cell's output at every
    step; ``return_full_state=True`` gives every state tensor at every step (``(h, c)`` of
    an LSTM) as a function with several outputs."""

    combinator = recurrence.Recurrence

    def __init__(
        self,
        step_function: Any,
        go_backwards: Any = _FALSE,
        initial_state: Any = _ZERO,
        return_full_state: bool = False,
        name: str = "",
    ) -> None:
        super().__init__(
            step_function, go_backwards, initial_state, return_full_state, name, Recurrence
        )

    def _full(self, module: nn.Module) -> Callable[[Any], Any]:
        assert isinstance(module, recurrence.Recurrence)
        return module.states


class Fold(_RecurrenceBlock):
    """CNTK's ``Fold(folder_function, go_backwards=False, initial_state=0,
    return_full_state=False)`` over :class:`rnnkit.Fold`: the output after each sequence's
    last step, without a sequence axis; ``return_full_state=True`` gives the whole final
    state."""

    combinator = recurrence.Fold

    def __init__(
        self,
        folder_function: Any,
        go_backwards: Any = _FALSE,
        initial_state: Any = _ZERO,
        return_full_state: bool = False,
        name: str = "",
    ) -> None:
        super().__init__(
            folder_function, go_backwards, initial_state, return_full_state, name, Fold
        )

    def _axes(self, node: Function) -> tuple[Axis, ...]:
        return BATCH_AXES

    def _full(self, module: nn.Module) -> Callable[[Any], Any]:
        assert isinstance(module, recurrence.Fold)

        def final_state(x: Any) -> tuple[Tensor, ...]:
            state = module.final_state(x)
            return state if isinstance(state, tuple) else (state,)

        return final_state


class Sequential(Block):
    """CNTK's ``Sequential(layers)``: the layers (blocks, or functions of a node such as
    ``sequence.last`` or ``relu``) applied in turn."""

    def __init__(self, layers: Iterable[Any], name: str = "") -> None:
        super().__init__(name)
        self.layers: list[Any] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, Sequential):
                self.layers.extend(layer.layers)
            elif isinstance(layer, Block) or callable(layer):
                self.layers.append(layer)
            else:
                raise TypeError(
                    f"layers[{i}]: expected a layer or a function of a graph node, found "
                    f"{type(layer).__name__}"
                )

    def __call__(self, x: Any) -> Any:
        if isinstance(x, Block):
            return Sequential([x, self])
        if not isinstance(x, Function):
            raise TypeError(
                f"Sequential: expected a graph node or a layer, found {type(x).__name__}"
            )
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def parameters(self) -> list[nn.Parameter]:
        found: dict[int, nn.Parameter] = {}
        for layer in self.layers:
            for p in getattr(layer, "parameters", []):
                found.setdefault(id(p), p)
        return list(found.values())

    def __getattr__(self, name: str) -> Any:
        """A layer by its name (``z.embed`` for ``Embedding(..., name='embed')``)."""
        if name.startswith("_") or "layers" not in self.__dict__:
            raise AttributeError(name)
        for layer in self.layers:
            if getattr(layer, "name", None) == name:
                return layer
        raise AttributeError(f"Sequential has no attribute and no layer named {name!r}")

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}])"
