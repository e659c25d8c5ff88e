"""Shape inference: layers and cells built without their input size.

A cell or layer built without its input size (``LSTMCell(hidden_size=15)``,
``Dense(out_features=1)``, ``Embedding(embedding_dim=50)`` on one-hot input) holds a
:class:`torch.nn.parameter.UninitializedParameter` for each weight whose shape depends on it,
and materialises it at its first call from the input's last dimension, as torch's Lazy modules
(and CNTK, and Keras' ``build``) do; the new weights are drawn by the module's own
initialisation. Materialising keeps each parameter object (it changes in place), so anything
that holds the parameters before the first call holds the materialised ones after it; still,
build the optimizer after a first call (a dummy forward, as CNTK programs do implicitly), since
an optimizer sizes its state from the shapes. Loading a ``state_dict`` into a module that has
not run yet materialises it from the stored shapes.

After the first call a model saves, loads and exports as usual. Before it, :func:`rnnkit.save`,
:func:`rnnkit.export_onnx`, :func:`rnnkit.export_step_onnx` and :func:`count_parameters` raise
:class:`UninitializedModelError`, naming the layer.

>>> import torch
>>> from rnnkit import Dense
>>> dense = Dense(out_features=2)
>>> try:
...     count_parameters(dense)
... except UninitializedModelError as error:
...     print(str(error)[:78])
cannot count the parameters of model before its first call: model.linear (Lazy
>>> dense(torch.ones(4, 3)).shape, dense.in_features, count_parameters(dense)
(torch.Size([4, 2]), 3, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter, is_lazy

__all__ = [
    "UninitializedModelError",
    "check_initialized",
    "count_parameters",
    "input_weight",
    "is_initialized",
    "materialize_input",
    "take_input_size",
]


class UninitializedModelError(ValueError):
    """A model was saved, exported or counted before the first call of a layer built without
    its input size."""


def input_weight(rows: tuple[int, ...], input_size: int | None) -> nn.Parameter:
    """A weight ``[*rows, input_size]``: empty (to be drawn by the owner), or uninitialised
    (materialised at the first call) when ``input_size`` is None."""
    if input_size is None:
        return cast(nn.Parameter, UninitializedParameter())
    return nn.Parameter(torch.empty(*rows, input_size))


def take_input_size(module: Any, weight: Tensor, rows: int, input_size: int) -> bool:
    """The shared part of a cell's ``materialize(input_size)``: a module that has its input
    size already must be given the same one (else ValueError); one without it gets
    ``weight [rows, input_size]`` materialised (its values still to be drawn) and its
    ``input_size`` set. True when the weight was materialised now, for the caller to draw."""
    if module.input_size is not None:
        if input_size != module.input_size:
            raise ValueError(
                f"input_size: {type(module).__name__} has input size {module.input_size}, "
                f"found {input_size}"
            )
        return False
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size: expected a positive integer, found {input_size!r}")
    if isinstance(weight, UninitializedParameter):
        weight.materialize((rows, input_size))
    module.input_size = input_size
    return True


def is_initialized(module: nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` (and its children) has a shape."""
    return not any(is_lazy(t) for t in (*module.parameters(), *module.buffers()))


def _first_lazy(model: nn.Module, root: str) -> tuple[str, nn.Module] | None:
    for name, module in model.named_modules():
        own = (*module.parameters(recurse=False), *module.buffers(recurse=False))
        if any(is_lazy(t) for t in own):
            return (f"{root}.{name}" if name else root), module
    return None


def check_initialized(model: nn.Module, action: str, root: str = "model") -> None:
    """Raise :class:`UninitializedModelError` naming the first layer of ``model`` that has not
    inferred its input size yet (``action``: what was asked, e.g. ``'save'``)."""
    found = _first_lazy(model, root)
    if found is None:
        return
    where, module = found
    raise UninitializedModelError(
        f"cannot {action} {root} before its first call: {where} ({type(module).__name__}) "
        "infers its input size from its first input; run a batch through the model first"
    )


def count_parameters(model: nn.Module, trainable: bool = False) -> int:
    """The number of parameter elements of ``model`` (each shared tensor once); ``trainable``:
    only those that require a gradient. Raises :class:`UninitializedModelError` before the
    first call of a layer built without its input size."""
    check_initialized(model, "count the parameters of")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def materialize_input(module: Any, x: Tensor) -> int | None:
    """Give ``module`` its input size from its first input ``x [..., I]`` if it was built
    without one (its ``input_size`` is None and it has ``materialize(input_size)``); returns
    the module's ``input_size`` (None for a module without that attribute)."""
    size = getattr(module, "input_size", None)
    materialize: Callable[[int], None] | None = getattr(module, "materialize", None)
    if size is None and callable(materialize) and hasattr(module, "input_size"):
        if x.dim() == 0:
            raise ValueError(
                f"x: {type(module).__name__} infers its input size from the last dimension of "
                "its first input, found a scalar"
            )
        materialize(int(x.shape[-1]))
        size = module.input_size
    return size
