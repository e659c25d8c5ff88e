"""CNTK's graph model over torch modules: input variables, composed functions, evaluation.

A CNTK program builds a graph before it sees data: ``input_variable`` makes a typed input,
``Dense(1)(x)`` applies a layer to it and returns a :class:`Function` (a node of the graph),
and ``model(data)`` evaluates it. Here a node holds the torch module (an rnnkit layer) that
computes it and the nodes it reads, so the graph is a deferred composition of rnnkit's own
modules and nothing else: the numerics are rnnkit's layers, the training rnnkit's
:class:`~rnnkit.Trainer` (see :meth:`Function.train`).

Values inside the graph are rnnkit's: a :class:`~rnnkit.SequenceBatch` on a node with a
sequence axis, a tensor ``[B, *shape]`` on a node with the batch axis only. Data handed to a
function is converted on the way in (a list of arrays ``[T_i, *shape]`` per sequence, or one
array ``[B, T, *shape]``, for a sequence input; an array ``[B, *shape]`` otherwise) and on the
way out (a list of arrays, one per sequence; or an array ``[B, *shape]``).

>>> import numpy as np
>>> x = input_variable(2, name="x")
>>> y = x * 3.0 + 1.0
>>> y.eval({x: np.array([[1.0, 2.0]], np.float32)}).tolist()
[[4.0, 7.0]]
>>> y.arguments[0].name, y.shape, [a.name for a in y.dynamic_axes]
('x', (2,), ['defaultBatchAxis'])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.sequence_ops import broadcast_as
from rnnkit.sequences import SequenceBatch

__all__ = [
    "Axis",
    "Function",
    "Variable",
    "as_function",
    "combine",
    "constant",
    "input_variable",
    "op",
    "register_training",
    "to_numpy",
    "to_value",
]

Value = Tensor | SequenceBatch
_ids = itertools.count()


@dataclass(frozen=True)
class Axis:
    """A dynamic axis: CNTK's batch axis or its default sequence axis.

    >>> Axis.default_batch_axis(), Axis.default_dynamic_axis().is_sequence_axis
    (Axis(name='defaultBatchAxis'), True)
    """

    name: str

    @staticmethod
    def default_batch_axis() -> Axis:
        return Axis("defaultBatchAxis")

    @staticmethod
    def default_dynamic_axis() -> Axis:
        return Axis("defaultDynamicAxis")

    @property
    def is_sequence_axis(self) -> bool:
        return self.name != "defaultBatchAxis"


BATCH_AXES = (Axis.default_batch_axis(),)
SEQUENCE_AXES = (Axis.default_batch_axis(), Axis.default_dynamic_axis())


def _shape(shape: int | Sequence[int], argument: str = "shape") -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{argument}: expected a positive int or a tuple of them, found {shape!r}")
    return dims


class Function:
    """A node of a CNTK graph: what computes it, the nodes it reads, its shape and axes.

    ``Function(python_function)`` (CNTK's ``@Function`` decorator) returns a factory that,
    called with graph nodes, runs the Python function on them and combines what it returns
    (a tuple of nodes becomes one function with several outputs, as a criterion's
    ``(loss, metric)``).

    Attributes:
        shape: the shape of one sample (no batch or sequence axis).
        dynamic_axes: ``(batch,)`` or ``(batch, sequence)``.
        inputs: the nodes this one reads.
        name: the name given, or ``''``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Function and len(args) == 1 and not kwargs and _is_python_function(args[0]):
            return _Decorated(args[0])
        return super().__new__(cls)

    def __init__(
        self,
        compute: Callable[..., Any],
        inputs: Sequence[Function],
        shape: tuple[int, ...],
        dynamic_axes: tuple[Axis, ...],
        *,
        modules: Iterable[nn.Module] = (),
        name: str = "",
        op_name: str = "",
        label_index: int | None = None,
    ) -> None:
        self.compute = compute
        self.inputs = tuple(inputs)
        self.shape = shape
        self.dynamic_axes = dynamic_axes
        self.modules = tuple(modules)
        self.name = name
        self.op_name = op_name or getattr(compute, "__name__", "op")
        self.label_index = label_index  # a loss or metric: which input holds the labels
        self.block: Any = None  # the layer (rnnkit.cntk.layers) that made this node, if any
        self.uid = next(_ids)

    # ------------------------------------------------------------------ facts
    @property
    def is_sequence(self) -> bool:
        """True when the node has a sequence axis."""
        return any(a.is_sequence_axis for a in self.dynamic_axes)

    @property
    def outputs(self) -> tuple[Function, ...]:
        """The output nodes (one, or several for a combined function)."""
        return (self,)

    @property
    def output(self) -> Function:
        """The only output; an error for a function with several."""
        outs = self.outputs
        if len(outs) != 1:
            raise ValueError(f"output: this function has {len(outs)} outputs; use .outputs")
        return outs[0]

    def _walk(self) -> list[Function]:
        """Every node this one depends on (itself included), each once, inputs first."""
        seen: dict[int, Function] = {}

        def visit(node: Function) -> None:
            if node.uid in seen:
                return
            for child in node.inputs:
                visit(child)
            seen[node.uid] = node

        for out in self.outputs:
            visit(out)
        return list(seen.values())

    @property
    def arguments(self) -> tuple[Variable, ...]:
        """The input variables the function reads, in order of first use."""
        return tuple(n for n in self._walk() if isinstance(n, Variable) and not n.is_constant)

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of every module in the graph, each once (a fixed table,
        ``Embedding(weights=...)``, is a constant, as in CNTK)."""
        found: dict[int, nn.Parameter] = {}
        for module in self.torch_modules():
            for p in module.parameters():
                if p.requires_grad:
                    found.setdefault(id(p), p)
        return list(found.values())

    def torch_modules(self) -> list[nn.Module]:
        """The modules that compute the graph, each once."""
        found: dict[int, nn.Module] = {}
        for node in self._walk():
            for module in node.modules:
                found.setdefault(id(module), module)
        return list(found.values())

    def __repr__(self) -> str:
        axes = "sequence" if self.is_sequence else "batch"
        label = f" {self.name!r}" if self.name else ""
        return f"Function({self.op_name}{label}: shape {self.shape}, {axes} axes)"

    def __getattr__(self, name: str) -> Any:
        """A parameter of the layer that made this node (``dense.W``, ``embed.E``) or a named
        layer of the graph (``model.classify`` for ``Dense(..., name='classify')``), as CNTK
        gives them."""
        if name.startswith("_") or "inputs" not in self.__dict__:
            raise AttributeError(name)
        own = self.__dict__.get("block")
        if own is not None and hasattr(own, name):  # the layer's parameters: W, b, E
            return getattr(own, name)
        for node in self._walk():
            if node.name == name and node.block is not None:
                return node.block
        raise AttributeError(f"{self!r} has no attribute and no layer named {name!r}")

    # ------------------------------------------------------------------ use
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """With graph nodes: the same function applied to them (its arguments replaced,
        its parameters shared). With data: :meth:`eval` of the data, one value per
        argument in :attr:`arguments` order."""
        if kwargs:
            raise TypeError(f"{self!r}: expected positional arguments, found {sorted(kwargs)}")
        arguments = self.arguments
        if len(args) != len(arguments):
            raise TypeError(
                f"{self!r}: expected {len(arguments)} argument(s) "
                f"({[a.name or 'unnamed' for a in arguments]}), found {len(args)}"
            )
        if all(isinstance(a, Function) for a in args):
            return self.clone(dict(zip(arguments, args, strict=True)))
        return self.eval(dict(zip(arguments, args, strict=True)))

    def clone(self, substitutions: Mapping[Variable, Function]) -> Function:
        """This graph with some input variables replaced by other nodes (modules shared)."""
        made: dict[int, Function] = {}

        def copy(node: Function) -> Function:
            if isinstance(node, Variable):
                return substitutions.get(node, node)
            if node.uid not in made:
                inputs = [copy(i) for i in node.inputs]
                if all(a is b for a, b in zip(inputs, node.inputs, strict=True)):
                    made[node.uid] = node
                else:
                    made[node.uid] = node._rebuilt(inputs)
            return made[node.uid]

        outs = [copy(o) for o in self.outputs]
        return outs[0] if len(outs) == 1 else combine(outs)

    def _rebuilt(self, inputs: list[Function]) -> Function:
        for old, new in zip(self.inputs, inputs, strict=True):
            if old.shape != new.shape or old.is_sequence != new.is_sequence:
                raise ValueError(
                    f"{self!r}: an input of shape {old.shape} ({_axes_text(old)}) cannot be "
                    f"replaced by one of shape {new.shape} ({_axes_text(new)})"
                )
        return Function(
            self.compute,
            inputs,
            self.shape,
            self.dynamic_axes,
            modules=self.modules,
            name=self.name,
            op_name=self.op_name,
            label_index=self.label_index,
        )

    @property
    def label(self) -> Function | None:
        """For a loss or a metric, the node of its labels (whose samples it counts)."""
        return None if self.label_index is None else self.inputs[self.label_index]

    def forward_values(self, feed: Mapping[Variable, Value]) -> tuple[Value, ...]:
        """Every output's value (rnnkit's representation) for values of the arguments."""
        cache: dict[int, Any] = {}
        for node in self._walk():
            if isinstance(node, Variable):
                if node.is_constant:
                    cache[node.uid] = node.value
                    continue
                if node not in feed:
                    raise ValueError(
                        f"arguments: no value given for the input {node!r}; expected one per "
                        f"argument {[a.name or 'unnamed' for a in self.arguments]}"
                    )
                cache[node.uid] = feed[node]
            else:
                cache[node.uid] = node.compute(*(cache[i.uid] for i in node.inputs))
        return tuple(cache[o.uid] for o in self.outputs)

    def eval(self, arguments: Any = None) -> Any:
        """Evaluate on data, without gradients and with dropout off.

        ``arguments``: a dict ``{variable: data}``, or the data alone for a function with
        one argument. Returns NumPy: an array ``[B, *shape]`` for an output without a
        sequence axis, a list of arrays ``[T_i, *shape]`` for one with; a dict
        ``{output: value}`` for a function with several outputs.
        """
        feed = self._feed(arguments)
        modules = self.torch_modules()
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            with torch.no_grad():
                values = self.forward_values(feed)
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)
        if len(values) == 1:
            return to_numpy(values[0])
        return {out: to_numpy(v) for out, v in zip(self.outputs, values, strict=True)}

    def _feed(self, arguments: Any) -> dict[Variable, Value]:
        args = self.arguments
        if not isinstance(arguments, Mapping):
            if len(args) != 1:
                raise TypeError(
                    f"arguments: expected a dict {{variable: data}} for a function of "
                    f"{len(args)} arguments, found {type(arguments).__name__}"
                )
            arguments = {args[0]: arguments}
        feed: dict[Variable, Value] = {}
        for var, data in arguments.items():
            if not isinstance(var, Variable):
                raise TypeError(f"arguments: expected input variables as keys, found {var!r}")
            feed[var] = to_value(var, data)
        return feed

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other: Any) -> Function:
        return _binary(torch.add, "plus", self, other)

    def __radd__(self, other: Any) -> Function:
        return _binary(torch.add, "plus", other, self)

    def __sub__(self, other: Any) -> Function:
        return _binary(torch.sub, "minus", self, other)

    def __rsub__(self, other: Any) -> Function:
        return _binary(torch.sub, "minus", other, self)

    def __mul__(self, other: Any) -> Function:
        return _binary(torch.mul, "element_times", self, other)

    def __rmul__(self, other: Any) -> Function:
        return _binary(torch.mul, "element_times", other, self)

    def __truediv__(self, other: Any) -> Function:
        return _binary(torch.div, "element_divide", self, other)

    def __neg__(self) -> Function:
        return op(torch.neg, self, op_name="negate")

    # ------------------------------------------------------------------ training
    def train(self, minibatch_source: Any, **options: Any) -> Any:
        """CNTK's ``Function.train``: see :func:`rnnkit.cntk.train.train_function`."""
        return _training("train")(self, minibatch_source, **options)

    def test(self, minibatch_source: Any, **options: Any) -> Any:
        """CNTK's ``Function.test``: see :func:`rnnkit.cntk.train.test_function`."""
        return _training("test")(self, minibatch_source, **options)

    def save(self, path: Any) -> None:
        """Not CNTK's model format: refused, naming what to use instead."""
        raise TypeError(
            f"save({path!r}): rnnkit.cntk functions are not saved in CNTK's format; save the "
            "weights with safetensors.torch.save_file(GraphModule(function).state_dict(), "
            "path) (rnnkit.cntk.graph.GraphModule) and load them into the same graph"
        )


# Function.train and .test are rnnkit.cntk.train's functions, which import this module: it
# gives them here when it is imported (the package rnnkit.cntk imports it).
_TRAINING: dict[str, Callable[..., Any]] = {}


def register_training(train: Callable[..., Any], test: Callable[..., Any]) -> None:
    """Give :meth:`Function.train` and :meth:`Function.test` their implementations."""
    _TRAINING.update(train=train, test=test)


def _training(kind: str) -> Callable[..., Any]:
    if kind not in _TRAINING:
        raise RuntimeError(f"Function.{kind}: import rnnkit.cntk (its train module gives it)")
    return _TRAINING[kind]


class Variable(Function):
    """An input of the graph (``input_variable``), or a constant.

    Attributes:
        is_sparse: the data is one-hot or sparse (stored dense here: same values).
        needs_gradient: always False for an input.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dynamic_axes: tuple[Axis, ...],
        *,
        is_sparse: bool = False,
        name: str = "",
        value: Tensor | None = None,
    ) -> None:
        super().__init__(_no_compute, (), shape, dynamic_axes, name=name, op_name="Input")
        self.is_sparse = is_sparse
        self.value = value
        self.needs_gradient = False

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    def __hash__(self) -> int:
        return self.uid

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        kind = "Constant" if self.is_constant else "Input"
        label = f" {self.name!r}" if self.name else ""
        sparse = ", sparse" if self.is_sparse else ""
        return f"{kind}{label}(shape {self.shape}, {_axes_text(self)}{sparse})"


def _no_compute(*inputs: Any) -> Any:
    raise RuntimeError("an input variable is fed, never computed")


def _axes_text(node: Function) -> str:
    return "sequence axis" if node.is_sequence else "batch axis only"


def input_variable(
    shape: int | Sequence[int],
    dtype: Any = np.float32,
    needs_gradient: bool = False,
    is_sparse: bool = False,
    dynamic_axes: Sequence[Axis] = BATCH_AXES,
    name: str = "",
) -> Variable:
    """CNTK's ``input_variable``: one sample has ``shape``; ``dynamic_axes`` the batch axis
    (the default) or the batch and sequence axes (see :func:`rnnkit.cntk.sequence.input_variable`).

    Only float32 inputs without gradients exist here (``dtype`` float32/float64 is accepted,
    the graph computes in float32, as rnnkit's layers do by default).

    >>> t = input_variable(1, name="t")
    >>> t.shape, t.is_sequence
    ((1,), False)
    """
    if needs_gradient:
        raise ValueError("needs_gradient: expected False (inputs are data here), found True")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected np.float32 (or float64), found {dtype!r}")
    axes = tuple(dynamic_axes)
    if not axes or axes[0] != Axis.default_batch_axis() or len(axes) > 2:
        raise ValueError(
            f"dynamic_axes: expected (batch axis,) or (batch axis, sequence axis), found {axes!r}"
        )
    return Variable(_shape(shape), axes, is_sparse=is_sparse, name=name)


def constant(value: Any, name: str = "") -> Variable:
    """A constant tensor in the graph (no batch axis of its own: it broadcasts)."""
    tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
    return Variable(tuple(tensor.shape) or (1,), BATCH_AXES, name=name, value=tensor)


def as_function(value: Any) -> Function:
    """A node for ``value``: a node itself, or a constant for a number or an array."""
    return value if isinstance(value, Function) else constant(value)


def op(
    fn: Callable[..., Any],
    *inputs: Any,
    shape: tuple[int, ...] | None = None,
    dynamic_axes: tuple[Axis, ...] | None = None,
    modules: Iterable[nn.Module] = (),
    op_name: str = "",
    name: str = "",
    label_index: int | None = None,
) -> Function:
    """A node computing ``fn(*values of inputs)``; shape and axes default to the first
    input's."""
    nodes = [as_function(i) for i in inputs]
    first = next((n for n in nodes if not (isinstance(n, Variable) and n.is_constant)), nodes[0])
    return Function(
        fn,
        nodes,
        first.shape if shape is None else shape,
        first.dynamic_axes if dynamic_axes is None else dynamic_axes,
        modules=modules,
        name=name,
        op_name=op_name,
        label_index=label_index,
    )


def _elementwise(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, SequenceBatch) and isinstance(b, SequenceBatch):
            if not torch.equal(a.lengths, b.lengths):
                raise ValueError(
                    f"{fn.__name__}: the two sequences' lengths differ: {a.lengths.tolist()} "
                    f"and {b.lengths.tolist()}"
                )
            return a.with_data(fn(a.data, b.data))
        if isinstance(a, SequenceBatch):
            return a.with_data(fn(a.data, _per_step(b, a)))
        if isinstance(b, SequenceBatch):
            return b.with_data(fn(_per_step(a, b), b.data))
        return fn(a, b)

    apply.__name__ = fn.__name__
    return apply


def _per_step(value: Tensor, like: SequenceBatch) -> Tensor:
    """A per-sequence tensor ``[B, ...]`` repeated over each sequence's steps (a constant
    without a batch axis broadcasts as it is)."""
    if value.dim() < like.data.dim() or value.shape[0] != like.batch_size:
        return value
    return broadcast_as(value, like).data


def _binary(fn: Callable[[Tensor, Tensor], Tensor], name: str, a: Any, b: Any) -> Function:
    na, nb = as_function(a), as_function(b)
    main = nb if isinstance(na, Variable) and na.is_constant else na
    if na.is_sequence or nb.is_sequence:
        main = na if na.is_sequence else nb
    return op(
        _elementwise(fn),
        na,
        nb,
        shape=main.shape,
        dynamic_axes=main.dynamic_axes,
        op_name=name,
    )


class _Combined(Function):
    """Several outputs as one function (CNTK's ``combine``)."""

    def __init__(self, outputs: Sequence[Function]) -> None:
        super().__init__(_no_compute, outputs, outputs[0].shape, outputs[0].dynamic_axes)
        self._outputs = tuple(outputs)
        self.op_name = "Combine"

    @property
    def outputs(self) -> tuple[Function, ...]:
        return self._outputs

    def _walk(self) -> list[Function]:
        return Function._walk(self)


def combine(outputs: Iterable[Any]) -> Function:
    """One function with the given outputs (a criterion's loss and metric, say)."""
    nodes: list[Function] = []
    for out in outputs:
        nodes.extend(as_function(out).outputs)
    if not nodes:
        raise ValueError("combine: expected at least one output, found none")
    return nodes[0] if len(nodes) == 1 else _Combined(nodes)


def _is_python_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, (Function, nn.Module, type))


class _Decorated:
    """``@Function`` on a Python function: called with nodes, runs it and combines its
    outputs."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any) -> Function:
        for i, a in enumerate(args):
            if not isinstance(a, Function):
                raise TypeError(
                    f"{self.__name__}: argument {i} must be a graph node (an input_variable "
                    f"or a Function), found {type(a).__name__}"
                )
        result = self.fn(*args)
        parts = result if isinstance(result, (tuple, list)) else (result,)
        return combine(parts)


# ---------------------------------------------------------------------------- data


def _float_tensor(data: Any, where: str) -> Tensor:
    if isinstance(data, Tensor):
        return data.to(torch.float32)
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: expected numbers, found {type(data).__name__}") from error
    return torch.from_numpy(np.ascontiguousarray(array))


def to_value(var: Variable, data: Any) -> Value:
    """``data`` for the input ``var`` in rnnkit's representation (see the module doc)."""
    where = f"data for {var!r}"
    value = getattr(data, "value", data)  # a MinibatchData from rnnkit.cntk.io
    if var.is_sequence:
        if isinstance(value, SequenceBatch):
            steps = value
        elif isinstance(value, Tensor) and value.dim() == len(var.shape) + 1:
            steps = SequenceBatch.from_list(list(value.unsqueeze(1).unbind(0)))  # [B, F]: T=1
        else:
            items = list(value) if isinstance(value, (list, tuple)) else None
            if items is None:
                array = _float_tensor(value, where)
                if array.dim() != len(var.shape) + 2:
                    raise ValueError(
                        f"{where}: expected a list of arrays [T_i, *{var.shape}] or an array "
                        f"[B, T, *{var.shape}], found an array of shape {tuple(array.shape)}"
                    )
                items = list(array.unbind(0))
            if not items:
                raise ValueError(f"{where}: expected at least one sequence, found none")
            seqs = [_float_tensor(s, f"{where}, sequence {i}") for i, s in enumerate(items)]
            for i, s in enumerate(seqs):
                if s.dim() == len(var.shape):  # one sample without its sequence axis
                    seqs[i] = s = s.unsqueeze(0)
                if tuple(s.shape[1:]) != var.shape:
                    raise ValueError(
                        f"{where}: sequence {i}: expected steps of shape {var.shape}, found "
                        f"an array of shape {tuple(s.shape)}"
                    )
            steps = SequenceBatch.from_list(seqs)
        if tuple(steps.feature_shape) != var.shape:
            raise ValueError(
                f"{where}: expected steps of shape {var.shape}, found {tuple(steps.feature_shape)}"
            )
        return steps
    if isinstance(value, SequenceBatch):
        if int(value.lengths.max()) != 1:
            raise ValueError(
                f"{where}: expected one sample per sequence (the input has no sequence axis), "
                f"found sequences of lengths up to {int(value.lengths.max())}"
            )
        value = torch.stack([s[0] for s in value.to_list()])
    tensor = _float_tensor(value, where)
    if tensor.dim() == len(var.shape):
        tensor = tensor.unsqueeze(0)
    if tuple(tensor.shape[1:]) != var.shape:
        raise ValueError(
            f"{where}: expected an array [B, *{var.shape}], found shape {tuple(tensor.shape)}"
        )
    return tensor


def to_numpy(value: Any) -> Any:
    """A graph value as NumPy: a list of arrays for a SequenceBatch, an array otherwise."""
    if isinstance(value, SequenceBatch):
        return [s.detach().cpu().numpy() for s in value.to_list()]
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return value


class GraphModule(nn.Module):
    """A function's graph as one ``nn.Module``: ``forward(*values)`` takes one value per
    argument (in ``arguments`` order) and returns every output's value (a tuple for
    several). Registers the graph's modules, so ``.to``, ``.train()`` and ``.eval()``
    reach them."""

    def __init__(self, function: Function, arguments: Sequence[Variable] | None = None) -> None:
        super().__init__()
        self.function = function
        self.arguments = tuple(function.arguments if arguments is None else arguments)
        self.parts = nn.ModuleList(function.torch_modules())

    def forward(self, *values: Any) -> Any:
        if len(values) != len(self.arguments):
            raise TypeError(
                f"expected {len(self.arguments)} values (one per argument), found {len(values)}"
            )
        feed = {var: to_value(var, v) for var, v in zip(self.arguments, values, strict=True)}
        outs = self.function.forward_values(feed)
        return outs[0] if len(outs) == 1 else outs
