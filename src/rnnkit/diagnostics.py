"""Seeing vanishing and exploding gradients: ``dL/dh_t`` at every step of every recurrent layer.

:func:`gradient_flow` runs a model once on a batch, takes the gradient of a loss with respect
to the state each recurrent layer produced at each step, and reports, per layer and step, the
mean over the batch of ``||dL/dh_t||``: the total derivative, through the later steps and
every layer above, as backpropagation through time computes it. A tanh RNN shows the norm
decaying geometrically from the last step back to the first (vanishing gradients); an LSTM
whose forget gates are open keeps it nearly flat (see ``docs/gradients.md``).

How the states are observed. For the duration of the call, each :class:`~rnnkit.Recurrence`
(also ``Fold``, ``RecurrenceFrom``, and the two inside a ``Bidirectional``) found by walking
``model.modules()`` runs on the ``'loop'`` backend (the same function as the fused kernel,
one Python step per time step), and its cell's ``step`` is wrapped so that the state tensor
returned at every step is kept; then one ``torch.autograd.grad`` of the loss with respect to
all of them gives every ``dL/dh_t`` exactly, without touching the parameters' ``.grad``.
Everything patched is restored when the call returns. A :class:`~rnnkit.recursive.Recursive`
is observed the same way one tree height at a time (its ``leaf`` and cell calls), so its
report is per height.

Gate activations are recomputed from the captured step inputs, exactly as the cell computes
them (the cell's own parameters, the projected input ``px`` the engine passed to ``step`` and
the state before the step): for an ``LSTMCell`` the input, forget and output gates, for a
``GRUCell`` the reset and update gates (either reset placement), for an ``RNNCell`` the slope
of the nonlinearity ``f'(a_t)`` (``1 - h_t^2`` for tanh, ``[h_t > 0]`` for relu,
``h_t (1 - h_t)`` for sigmoid), the factor that multiplies the gradient at each step. Each is
averaged over the sequences active at the step and over the hidden units. Other cells report
no activations.

A linear recurrence ``h_t = w h_{t-1} + x_t`` with ``w = 0.5`` and the loss ``h_T``:
``dL/dh_t = 0.5^(T-1-t)``.

>>> import torch
>>> from rnnkit import Fold, SequenceBatch
>>> class Halve(torch.nn.Module):
...     hidden_size = 1
...     def initial_state(self, batch_size, device=None, dtype=None):
...         return torch.zeros(batch_size, 1, device=device, dtype=dtype)
...     def forward(self, x, state=None):
...         return x if state is None else 0.5 * state + x
>>> x = SequenceBatch.from_list([torch.ones(4, 1, requires_grad=True)])
>>> flow = gradient_flow(Fold(Halve()), x, lambda h: h.sum())
>>> flow.layers[0].grad_norm.tolist()
[0.125, 0.25, 0.5, 1.0]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell, State, as_tuple
from rnnkit.recurrence import Recurrence
from rnnkit.recursive import Recursive

__all__ = ["GradientFlow", "LayerFlow", "gradient_flow"]


@dataclass(frozen=True)
class LayerFlow:
    """The gradient flow through one call of one recurrent layer.

    Attributes:
        name: the layer's path in the model (``"layers.0"``, ``"layers.1.backward_layer"``;
            ``"(model)"`` for the model itself), with ``" (call k)"`` from its second call on.
        kind: the layer and cell types, ``"Fold(LSTMCell)"``.
        axis: ``"step"`` for a recurrence, ``"height"`` for a Recursive.
        go_backwards: the recurrence ran from each sequence's end; ``steps`` then count in
            the order the cell ran (step 0 is each sequence's last element).
        steps: ``[T]`` 0, 1, ..., T - 1 (the heights 0..height for a Recursive).
        active: ``[T]`` the number of sequences (nodes) at each step (height).
        grad_norm: ``[T]`` the mean, over the active sequences, of ``||dL/dh_t||``, the
            gradient of the loss with respect to the output state at step ``t``.
        state_grad_norms: one ``[T]`` array per state tensor (``h`` then ``c`` for an LSTM),
            the same mean norm; the first is ``grad_norm``.
        activations: gate name -> ``[T]`` mean activation (see the module docstring).
    """

    name: str
    kind: str
    axis: str
    go_backwards: bool
    steps: np.ndarray
    active: np.ndarray
    grad_norm: np.ndarray
    state_grad_norms: tuple[np.ndarray, ...]
    activations: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class GradientFlow:
    """What :func:`gradient_flow` measured: the loss and one :class:`LayerFlow` per layer call,
    in the order the layers ran."""

    loss: float
    layers: tuple[LayerFlow, ...]

    def layer(self, name: str) -> LayerFlow:
        """The report of the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"name: expected one of {[la.name for la in self.layers]}, found {name!r}")

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Write a PNG: ``||dL/dh_t||`` over ``t`` on a log scale, and below it the gate
        activations when there are any. Needs matplotlib (drawn with its Agg backend, no
        display). Returns the path written."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        gated = [la for la in self.layers if la.activations]
        fig = Figure(figsize=(7.0, 5.6 if gated else 3.4), dpi=80)
        FigureCanvasAgg(fig)
        top = fig.add_subplot(2 if gated else 1, 1, 1)
        colors = [f"C{i % 10}" for i in range(len(self.layers))]
        positive = False
        for layer, color in zip(self.layers, colors, strict=True):
            norm = np.where(layer.grad_norm > 0, layer.grad_norm, np.nan)
            positive = positive or bool(np.any(layer.grad_norm > 0))
            top.plot(layer.steps, norm, color=color, label=f"{layer.name}: {layer.kind}")
        if positive:
            top.set_yscale("log")
        axes = sorted({la.axis for la in self.layers})
        top.set_xlabel(" / ".join("step t" if a == "step" else "tree height" for a in axes))
        top.set_ylabel("mean ||dL/dh_t||")
        top.set_title(title or f"gradient flow (loss {self.loss:.4g})")
        top.legend(fontsize="small")
        top.grid(True, which="major", alpha=0.3)
        if gated:
            bottom = fig.add_subplot(2, 1, 2, sharex=top)
            styles = ("-", "--", ":", "-.")
            for layer, color in zip(self.layers, colors, strict=True):
                for k, (gate, values) in enumerate(layer.activations.items()):
                    bottom.plot(
                        layer.steps,
                        values,
                        color=color,
                        linestyle=styles[k % len(styles)],
                        label=f"{layer.name}: {gate}",
                    )
            bottom.set_ylim(-0.02, 1.02)
            bottom.set_ylabel("mean gate activation")
            bottom.set_xlabel(top.get_xlabel())
            bottom.legend(fontsize="small", ncol=2)
            bottom.grid(True, alpha=0.3)
        fig.tight_layout()
        target = Path(path)
        fig.savefig(target, format="png")
        return target


# ---------------------------------------------------------------------------- observation


class _Observer:
    """The states one layer call produced, step by step (or height by height)."""

    def __init__(self, name: str, kind: str, axis: str, go_backwards: bool) -> None:
        self.name, self.kind, self.axis, self.go_backwards = name, kind, axis, go_backwards
        self.states: list[tuple[Tensor, ...]] = []
        self.gates: list[dict[str, Tensor]] = []

    def observe(self, after: State, gates: dict[str, Tensor]) -> None:
        self.states.append(as_tuple(after))
        self.gates.append(gates)


_MISSING = object()


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value`` (an instance attribute) for the duration of the block."""
    own = vars(obj).get(name, _MISSING)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if own is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, own)


def _mean(t: Tensor) -> Tensor:
    return t.detach().double().mean()


def _gate_means(cell: nn.Module, px: Tensor, before: tuple[Tensor, ...], after: State) -> dict:
    """Mean gate activations of one step, recomputed with the cell's own equations."""
    new = as_tuple(after)
    with torch.no_grad():
        if type(cell) is LSTMCell:
            h, c = before
            ph = nn.functional.linear(h, cell.weight_hh, cell.bias_hh)
            pre = px + (cell.layer_norm_hh(ph) if cell.layer_norm else ph)
            i, f, _, o = pre.chunk(4, dim=1)
            if cell.peepholes:
                i, f = i + cell.weight_ci * c, f + cell.weight_cf * c
                o = o + cell.weight_co * new[1]
            return {
                "input": _mean(torch.sigmoid(i)),
                "forget": _mean(torch.sigmoid(f)),
                "output": _mean(torch.sigmoid(o)),
            }
        if type(cell) is GRUCell:
            x_r, x_z, _ = px.chunk(3, dim=1)
            hidden = cell.hidden_size
            bias = None if cell.bias_hh is None else cell.bias_hh[: 2 * hidden]
            h_r, h_z = nn.functional.linear(before[0], cell.weight_hh[: 2 * hidden], bias).chunk(
                2, dim=1
            )
            return {
                "reset": _mean(torch.sigmoid(x_r + h_r)),
                "update": _mean(torch.sigmoid(x_z + h_z)),
            }
        if type(cell) is RNNCell:
            out = new[0]
            slope = {
                "tanh": lambda: 1 - out**2,
                "relu": lambda: (out > 0).to(out.dtype),
                "sigmoid": lambda: out * (1 - out),
            }[cell.nonlinearity]()
            return {"slope": _mean(slope)}
    return {}


@contextlib.contextmanager
def _observing_cell(cell: nn.Module, observer: _Observer) -> Iterator[None]:
    """Record every state the cell returns while the block runs (the loop backend calls
    ``cell.step`` for a split cell, ``cell(x, state)`` otherwise)."""
    split = callable(getattr(cell, "input_projection", None)) and callable(
        getattr(cell, "step", None)
    )
    if split:
        step = cast(Callable[[Tensor, State], State], cell.step)

        def observed_step(px: Tensor, state: State) -> State:
            new = step(px, state)
            observer.observe(new, _gate_means(cell, px, as_tuple(state), new))
            return new

        with _patched(cell, "step", observed_step):
            yield
        return
    forward = cell.forward

    def observed_forward(x: Tensor, state: State | None = None) -> State:
        new = forward(x, state)
        observer.observe(new, {})
        return new

    with _patched(cell, "forward", observed_forward):
        yield


def _observed_recurrence(module: Recurrence, name: str, observers: list[_Observer]) -> Any:
    run = module._run
    kind = f"{type(module).__name__}({type(module.cell).__name__})"

    def observed_run(*args: Any, **kwargs: Any) -> Any:
        observer = _Observer(name, kind, "step", module.go_backwards)
        observers.append(observer)
        with _patched(module, "backend", "loop"), _observing_cell(module.cell, observer):
            return run(*args, **kwargs)

    return observed_run


def _observed_recursive(module: Recursive, name: str, observers: list[_Observer]) -> Any:
    forward = module.forward
    cell = module.cell
    kind = f"Recursive({type(cell).__name__})"

    def observed_forward(batch: Any, inputs: Tensor) -> State:
        observer = _Observer(name, kind, "height", False)
        observers.append(observer)
        leaf = cast(Callable[[Tensor], State], cell.leaf)
        combine = cast(Callable[[Tensor, State, Tensor], State], cell.forward)

        def observed_leaf(x: Tensor) -> State:
            out = leaf(x)
            observer.observe(out, {})
            return out

        def observed_combine(x: Tensor, children: State, mask: Tensor) -> State:
            out = combine(x, children, mask)
            observer.observe(out, {})
            return out

        with _patched(cell, "leaf", observed_leaf), _patched(cell, "forward", observed_combine):
            return forward(batch, inputs)

    return observed_forward


@contextlib.contextmanager
def _instrumented(model: nn.Module) -> Iterator[list[_Observer]]:
    observers: list[_Observer] = []
    with contextlib.ExitStack() as stack:
        for name, module in model.named_modules():
            path = name or "(model)"
            if isinstance(module, Recurrence):
                # the loop, observed step by step (and never Fold's single-call fused path)
                stack.enter_context(_patched(module, "backend", "loop"))
                stack.enter_context(
                    _patched(module, "_run", _observed_recurrence(module, path, observers))
                )
            elif isinstance(module, Recursive):
                stack.enter_context(
                    _patched(module, "forward", _observed_recursive(module, path, observers))
                )
        yield observers


def _report(observer: _Observer, grads: Mapping[int, Tensor], call: int) -> LayerFlow:
    num_states = len(observer.states[0])
    norms = np.zeros((num_states, len(observer.states)))
    for t, state in enumerate(observer.states):
        for k, s in enumerate(state):
            g = grads.get(id(s))
            if g is not None and g.shape[0]:
                norms[k, t] = float(g.detach().double().flatten(1).norm(dim=1).mean())
    gates: dict[str, np.ndarray] = {}
    for gate in observer.gates[0]:
        gates[gate] = np.array([float(step[gate]) for step in observer.gates])
    return LayerFlow(
        name=observer.name if call == 1 else f"{observer.name} (call {call})",
        kind=observer.kind,
        axis=observer.axis,
        go_backwards=observer.go_backwards,
        steps=np.arange(len(observer.states)),
        active=np.array([s[0].shape[0] for s in observer.states]),
        grad_norm=norms[0],
        state_grad_norms=tuple(norms),
        activations=gates,
    )


def gradient_flow(model: nn.Module, batch: Any, loss_fn: Callable[[Any], Tensor]) -> GradientFlow:
    """Measure ``||dL/dh_t||`` at every step of every recurrent layer of ``model``.

    Args:
        model: any module; its Recurrence, Fold, RecurrenceFrom, Bidirectional and Recursive
            layers are found by walking ``model.modules()``.
        batch: the model's input, passed as ``model(batch)``, or as ``model(*batch)`` when it
            is a tuple (a Recursive takes ``(tree_batch, inputs)``, a RecurrenceFrom
            ``(state, x)``).
        loss_fn: maps the model's output to a scalar loss, e.g.
            ``lambda out: torch.nn.functional.mse_loss(out, y)``.

    Returns:
        A :class:`GradientFlow`: the loss and one :class:`LayerFlow` per layer call. The
        model's mode (train/eval) is left as it is, and no parameter's ``.grad`` is changed.

    Raises:
        ValueError: the model has no recurrent layer, or none of its states needs a gradient
            (parameters frozen, or called under ``torch.no_grad()``); TypeError: the loss is
            not a scalar tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
    with torch.enable_grad(), _instrumented(model) as observers:
        output = model(*batch) if isinstance(batch, tuple) else model(batch)
    if not observers:
        raise ValueError(
            f"model: expected at least one Recurrence, Fold, RecurrenceFrom, Bidirectional or "
            f"Recursive layer among its modules, found none in {type(model).__name__}"
        )
    with torch.enable_grad():
        loss = loss_fn(output)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        found = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn: expected to return a scalar tensor, found {found}")
    tensors = [s for o in observers for state in o.states for s in state if s.requires_grad]
    if not tensors or not loss.requires_grad:
        raise ValueError(
            "model: no recurrent state needs a gradient; are its parameters frozen "
            "(requires_grad=False) or was it called under torch.no_grad()?"
        )
    unique = list({id(t): t for t in tensors}.values())
    found_grads = torch.autograd.grad(loss, unique, allow_unused=True)
    grads = {id(t): g for t, g in zip(unique, found_grads, strict=True) if g is not None}
    calls: dict[str, int] = {}
    layers = []
    for observer in observers:
        calls[observer.name] = calls.get(observer.name, 0) + 1
        layers.append(_report(observer, grads, calls[observer.name]))
    return GradientFlow(loss=float(loss.detach()), layers=tuple(layers))
