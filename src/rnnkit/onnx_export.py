"""ONNX export of recurrent models (``rnnkit.export_onnx``).

The exported graph takes padded input ``x [B, T, I]`` (or token ids ``[B, T]``) and
``lengths [B]`` (int64), with dynamic batch and length, and returns what the model returns:
padded outputs ``[B, T, H]`` (zeros at padding) or ``[B, O]`` for a model ending in a Fold.
Recurrent layers over standard RNN (tanh/relu), LSTM and GRU cells are re-expressed with
``torch.lstm``/``gru``/``rnn_*`` over padded input and become ONNX's RNN operators; any
other cell becomes an ONNX ``Scan`` whose body is the cell's step graph, each row's state
frozen after its last step. Backward layers reverse each sequence within its length by index
arithmetic; a Fold takes each sequence's last valid step. Supported: Recurrence, Fold and
Bidirectional over any cell built from standard torch operations, in either direction, with
Embedding, Dense, Dropout, Activation and the per-step ``torch.nn`` layers; anything else is
refused naming the layer. The outputs are checked against onnxruntime in
``tests/test_saving.py`` and ``tests/test_onnx_scan.py``.

:func:`export_step_onnx` exports the step function of any cell built from standard torch
operations (state in, state out, dynamic batch) for streaming; :mod:`rnnkit.serving` drives
it over whole padded batches. Checked against onnxruntime in ``tests/test_onnx_cells.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from rnnkit.cells import FusedKernel
from rnnkit.layers import Activation, Dense, Dropout, Embedding, Sequential
from rnnkit.lazy import check_initialized
from rnnkit.recurrence import Bidirectional, Fold, Recurrence, loop_step
from rnnkit.saving import NAMED_FUNCTIONS, function_to_config, qualified_name
from rnnkit.sequences import SequenceBatch

__all__ = ["export_onnx", "export_step_onnx"]

INITIAL_STATE_KEY = "rnnkit.initial_state"


def _fused_kind(cell: nn.Module) -> str | None:
    """The torch function computing ``cell`` over a padded batch (the kernel the cell
    declares, see :class:`~rnnkit.cells.FusedKernel`), or None if there is none."""
    declare = getattr(cell, "fused_kernel", None)
    kernel = declare() if callable(declare) else None
    return kernel.name if isinstance(kernel, FusedKernel) else None


def _time_index(lengths: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``t [1, T]`` and ``L [B, 1]`` for masks and index arithmetic."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return t, lengths.unsqueeze(1)


def _gather_time(x: Tensor, index: Tensor) -> Tensor:
    """``x [B, T, F]``, ``index [B, T']`` -> ``[B, T', F]``: ``out[b, s] = x[b, index[b, s]]``."""
    return x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


def _initial_vectors(layer: Recurrence, where: str) -> list[Tensor]:
    """The layer's initial state for one row, one tensor per state tensor (``[H]``, or the
    state's shape without the batch), for every batch size."""
    zeros = [z[0] for z in _tuple(cast(Any, layer.cell).initial_state(1))]
    initial = layer.initial
    if initial.constant is not None:
        return [torch.full_like(z, initial.constant) for z in zeros]
    if len(initial.learned):
        return [p.detach().clone() for p in initial.learned]
    if initial.fixed is not None:
        vectors = []
        for k, f in enumerate(initial.fixed):
            if f.dim() > 1 and f.shape[0] != 1:
                raise ValueError(
                    f"{where}.initial_state[{k}]: export_onnx needs one initial state for "
                    f"every batch size ([H] or [1, H]), found shape {list(f.shape)}"
                )
            vectors.append(f.detach().reshape(zeros[k].shape))
        return vectors
    return zeros


class _ExportRecurrence(nn.Module):
    """A Recurrence or Fold of a standard cell, on padded ``x [B, T, I]`` and ``lengths [B]``.

    Forwards, the fused function runs over the padding, which no valid step reads. Backwards,
    each sequence is reversed within its length (``t -> L - 1 - t`` for ``t < L``, padding
    left in place), run forwards, and reversed back. A Fold reads each sequence's step
    ``L - 1`` of that run (for a backward Fold: the output after the sequence's first step).
    """

    def __init__(self, layer: Recurrence, where: str) -> None:
        super().__init__()
        kind = _fused_kind(layer.cell)
        assert kind is not None, "_recurrent_stage sends other cells to _ExportScan"
        self.kind, self.fold, self.go_backwards = kind, isinstance(layer, Fold), layer.go_backwards
        self.cell = layer.cell
        weight = cast(Any, layer.cell).weight_ih
        vectors = _initial_vectors(layer, where)
        for k, v in enumerate(vectors):
            self.register_buffer(f"initial_{k}", v.to(weight, copy=True))
        self.num_states = len(vectors)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        t, ends = _time_index(lengths, x.shape[1])
        reverse = torch.where(t < ends, ends - 1 - t, t)
        if self.go_backwards:
            x = _gather_time(x, reverse)
        cell: Any = self.cell
        batch = x.shape[0]
        states = [getattr(self, f"initial_{k}") for k in range(self.num_states)]
        hx = tuple(s.expand(1, batch, s.shape[0]).contiguous() for s in states)
        weights = [cell.weight_ih, cell.weight_hh]
        has_bias = cell.bias_ih is not None
        if has_bias:
            weights += [cell.bias_ih, cell.bias_hh]
        run: Any = getattr(torch, self.kind)
        flags = (has_bias, 1, 0.0, False, False, True)  # bias, layers, dropout, train, bidi, bf
        out = (
            run(x, hx, weights, *flags)[0]
            if self.kind == "lstm"
            else run(x, hx[0], weights, *flags)[0]
        )
        if self.fold:
            return _gather_time(out, ends - 1).squeeze(1)
        return _gather_time(out, reverse) if self.go_backwards else out


def _dtype_of(module: nn.Module) -> torch.dtype:
    weights = next(iter(module.parameters()), None)
    return weights.dtype if weights is not None else torch.float32


class _ExportScan(nn.Module):
    """A Recurrence or Fold of any other cell, on padded ``x [B, T, I]`` and ``lengths [B]``.

    The cell's input projection (when it splits itself, see :class:`~rnnkit.cells.Cell`) runs
    over all steps at once; the steps run in an ONNX ``Scan`` whose body is the cell's step
    graph, each row's state kept as it was after its last step (``Where`` on the step mask)
    and its outputs zero past it. While traced, the scan is one ``rnnkit::Scan`` node
    (:class:`_ScanNode`); :func:`_write_scans` puts the real ``Scan`` in its place.
    Backwards, sequences are reversed within their lengths as in :class:`_ExportRecurrence`.
    """

    def __init__(self, layer: Recurrence, where: str) -> None:
        super().__init__()
        self.cell, self.where = layer.cell, where
        self.fold, self.go_backwards = isinstance(layer, Fold), layer.go_backwards
        cell: Any = layer.cell
        self.split = callable(getattr(cell, "input_projection", None)) and callable(
            getattr(cell, "step", None)
        )
        dtype = _dtype_of(cell)
        vectors = _initial_vectors(layer, where)
        for k, v in enumerate(vectors):
            self.register_buffer(f"initial_{k}", v.to(dtype, copy=True))
        self.num_states = len(vectors)
        self.index = 0  # this stage's place among the model's scans, set by _ExportModel
        self.step_size = 0  # the width of what one step reads, seen when traced

    def step(self) -> Callable[..., Any]:
        """What one step runs: the engine's step of the projected input, or the cell."""
        return loop_step(self.cell, 1) if self.split else self.cell

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        t, ends = _time_index(lengths, x.shape[1])
        reverse = torch.where(t < ends, ends - 1 - t, t)
        if self.go_backwards:
            x = _gather_time(x, reverse)
        batch, steps = x.shape[0], x.shape[1]
        cell: Any = self.cell
        if self.split:
            x = cell.input_projection(x.reshape(batch * steps, x.shape[2]))
            x = x.reshape(batch, steps, x.shape[1])
        self.step_size = int(x.shape[2])
        states = [getattr(self, f"initial_{k}") for k in range(self.num_states)]
        h0 = [s.unsqueeze(0).expand(batch, *s.shape).contiguous() for s in states]
        mask = (t < ends).transpose(0, 1).unsqueeze(2)  # [T, B, 1]
        *final, ys = _ScanNode.apply(self.index, x.transpose(0, 1), mask, *h0)
        if self.fold:
            return cast(Tensor, final[0])
        out = ys.transpose(0, 1)
        return _gather_time(out, reverse) if self.go_backwards else out


class _ScanNode(torch.autograd.Function):
    """The scan of the :class:`_ExportScan` stage ``index``, traced as one ``rnnkit::Scan``
    node: ``(xs [T, B, G], mask [T, B, 1], *h0) -> (*final, ys [T, B, H])``. Its values while
    traced are placeholders of the right shapes (the tracer cannot follow a cell's parameters
    into a custom function); the real graph's values are checked against the model once it is
    written (:func:`_check_model`)."""

    @staticmethod
    def forward(ctx: Any, index: int, xs: Tensor, mask: Tensor, *h0: Tensor) -> tuple[Tensor, ...]:
        ys = h0[0].unsqueeze(0).expand(xs.shape[0], *h0[0].shape)
        return (*(h.clone() for h in h0), ys.clone())

    @staticmethod
    def symbolic(g: Any, index: int, xs: Any, mask: Any, *h0: Any) -> Any:
        return g.op("rnnkit::Scan", *h0, xs, mask, stage_i=index, outputs=len(h0) + 1)


class _BodyStep(nn.Module):
    """``(px [B, G], state_0, ...) -> (new_state_0, ...)``: one step as the Scan body runs it."""

    def __init__(self, stage: _ExportScan) -> None:
        super().__init__()
        self.cell, self.stage = stage.cell, [stage]  # a list: the stage is not a submodule

    def forward(self, px: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        return _tuple(self.stage[0].step()(px, states if len(states) > 1 else states[0]))


def _export_step_graph(
    wrapper: nn.Module,
    cell: nn.Module,
    args: tuple[Tensor, ...],
    target: Any,
    input_name: str,
    where: str,
    opset_version: int,
) -> None:
    """Trace ``wrapper(input, state_0, ..) -> (new_state_0, ..)`` into ``target`` (a path or
    a file object) with a dynamic batch; the cell's modes are restored afterwards, and an
    exporter failure becomes ``ValueError(where: <its first line>)``."""
    names = [f"state_{k}" for k in range(len(args) - 1)]
    new_names = [f"new_{n}" for n in names]
    modes = [(module, module.training) for module in cell.modules()]
    try:
        with _quiet_exporter():
            torch.onnx.export(
                wrapper,
                args,
                cast(Any, target),  # the TorchScript exporter writes to a file object too
                dynamo=False,
                input_names=[input_name, *names],
                output_names=new_names,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *names, *new_names]},
                opset_version=opset_version,
            )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{where}: {first}") from e
    finally:
        for module, training in modes:
            module.training = training


def _scan_body(stage: _ExportScan, opset_version: int) -> Any:
    """The ONNX graph of one step of ``stage`` as a Scan body: inputs ``state_0 ..``, ``px``,
    ``mask [B, 1]``; outputs each state kept where the mask is false, then the step's output
    (zero where it is false). Names carry the stage's prefix, so none shadows the outer graph's."""
    import io

    import onnx
    from onnx import helper

    dtype = _dtype_of(stage.cell)
    shapes = [tuple(getattr(stage, f"initial_{k}").shape) for k in range(stage.num_states)]
    generator = torch.Generator().manual_seed(0)  # the caller's random state is left alone
    states = tuple(torch.randn(2, *shape, dtype=dtype, generator=generator) for shape in shapes)
    example = torch.randn(2, stage.step_size, dtype=dtype, generator=generator)
    names = [f"state_{k}" for k in range(len(states))]
    buffer = io.BytesIO()
    failure = (
        f"{stage.where}: the step of {qualified_name(type(stage.cell))} cannot be exported to ONNX"
    )
    _export_step_graph(
        _BodyStep(stage), stage.cell, (example, *states), buffer, "px", failure, opset_version
    )
    step = onnx.load_from_string(buffer.getvalue()).graph
    declared = {i.name: i for i in step.input}
    outputs = {o.name: o for o in step.output}

    def typed(name: str, like: Any) -> Any:
        info = onnx.ValueInfoProto()
        info.CopyFrom(like)
        info.name = name
        return info

    inputs = [declared.get(n) or typed(n, outputs[f"new_{n}"]) for n in names]
    element = helper.np_dtype_to_tensor_dtype(torch.empty((), dtype=dtype).numpy().dtype)
    px = declared.get("px") or helper.make_tensor_value_info("px", element, None)
    mask = helper.make_tensor_value_info("mask", onnx.TensorProto.BOOL, ["batch", 1])
    nodes, initializers = list(step.node), list(step.initializer)
    body_outputs = []
    for k, shape in enumerate(shapes):
        rank = len(shape)  # the mask [B, 1] selects rows of [B, H]; [B, 1, 1] of [B, H, N]
        if rank > 1 and all(i.name != f"axes_{rank}" for i in initializers):
            axes = list(range(2, rank + 1))
            initializers.append(
                helper.make_tensor(f"axes_{rank}", onnx.TensorProto.INT64, [rank - 1], axes)
            )
            nodes.append(helper.make_node("Unsqueeze", ["mask", f"axes_{rank}"], [f"mask_{rank}"]))
        where = ["mask" if rank == 1 else f"mask_{rank}", f"new_state_{k}", f"state_{k}"]
        nodes.append(helper.make_node("Where", where, [f"kept_{k}"]))
        body_outputs.append(typed(f"kept_{k}", outputs[f"new_state_{k}"]))
    initializers.append(helper.make_tensor("zero", element, [], [0.0]))
    where = ["mask" if len(shapes[0]) == 1 else f"mask_{len(shapes[0])}", "kept_0", "zero"]
    nodes.append(helper.make_node("Where", where, ["y"]))
    body_outputs.append(typed("y", outputs["new_state_0"]))
    body = helper.make_graph(nodes, "step", [*inputs, px, mask], body_outputs, initializers)
    return onnx.compose.add_prefix_graph(body, f"scan{stage.index}_")


def _write_scans(path: str | os.PathLike[str], stages: list[_ExportScan], opset: int) -> None:
    """Replace each traced ``rnnkit::Scan`` node of the model at ``path`` by an ONNX Scan over
    its stage's step graph."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    for position, node in enumerate(list(graph.node)):
        if node.domain != "rnnkit":
            continue
        stage = stages[next(a.i for a in node.attribute if a.name == "stage")]
        scan = helper.make_node(
            "Scan",
            list(node.input),
            list(node.output),
            name=f"scan{stage.index}",
            num_scan_inputs=2,
            body=_scan_body(stage, opset),
        )
        graph.node.remove(node)
        graph.node.insert(position, scan)
    kept = [o for o in model.opset_import if o.domain != "rnnkit"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _recurrent_stage(layer: Recurrence, where: str) -> nn.Module:
    """The export form of a Recurrence or Fold: ONNX's own RNN operator for a standard cell,
    a Scan over the step graph for any other."""
    if _fused_kind(layer.cell) is not None:
        return _ExportRecurrence(layer, where)
    return _ExportScan(layer, where)


class _ExportBidirectional(nn.Module):
    def __init__(self, layer: Bidirectional, where: str) -> None:
        super().__init__()
        self.forward_layer = _recurrent_stage(layer.forward_layer, f"{where}.forward_layer")
        self.backward_layer = _recurrent_stage(layer.backward_layer, f"{where}.backward_layer")
        self.merge = layer.merge

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        f, b = self.forward_layer(x, lengths), self.backward_layer(x, lengths)
        return f + b if self.merge == "sum" else torch.cat([f, b], dim=-1)


class _ExportFunction(nn.Module):
    fn: Callable[[Tensor], Tensor]

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


_PER_STEP_TORCH = (nn.Linear, nn.Identity, nn.Tanh, nn.ReLU, nn.Sigmoid, nn.LayerNorm)


def _per_step(module: Any, where: str) -> list[nn.Module]:
    """The export form of a per-step layer: plain modules applied to ``[..., F]`` tensors."""
    if type(module) in _PER_STEP_TORCH:
        return [module]
    if type(module) in (Dropout, nn.Dropout):
        return []  # the graph is for inference, where dropout is the identity
    if type(module) is Dense:
        activation = function_to_config(module.activation, f"{where}.activation")
        return [module.linear, *_function_for_export(activation, f"{where}.activation")]
    if type(module) is Activation:
        fn = function_to_config(module.fn, f"{where}.fn")
        return _function_for_export(fn, f"{where}.fn")
    raise ValueError(
        f"{where}: export_onnx does not support {qualified_name(type(module))}; supported: "
        "Sequential of Embedding (first), Dense, Dropout, Activation (tanh, relu, sigmoid), "
        "torch.nn Linear/Identity/Tanh/ReLU/Sigmoid/Dropout/LayerNorm, and Recurrence, Fold, "
        "Bidirectional over standard RNN/LSTM/GRU cells"
    )


def _function_for_export(fn: str | nn.Module | None, where: str) -> list[nn.Module]:
    if fn is None:
        return []
    if isinstance(fn, str):
        return [_ExportFunction(NAMED_FUNCTIONS[fn])]
    return _per_step(fn, where)


def _tuple(state: Any) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


class _ExportModel(nn.Module):
    """The model re-expressed on padded tensors: ``(x, lengths) -> output``.

    Per-step stages see ``[B, T, F]`` (or ``[B, F]`` after a Fold), recurrent stages
    ``(x, lengths)``; sequence outputs are zeroed at padded steps, as ``to_padded`` gives.
    """

    def __init__(self, model: nn.Module, token_ids: bool) -> None:
        super().__init__()
        layers = list(model.layers) if type(model) is Sequential else [model]
        stages: list[nn.Module] = []
        self.recurrent: list[bool] = []
        sequence = True
        for i, layer in enumerate(layers):
            where = f"model.layers.{i}" if type(model) is Sequential else "model"
            embedding = type(layer) in (Embedding, nn.Embedding)
            if embedding != (i == 0 and token_ids):
                raise ValueError(
                    f"{where}: export_onnx expects an Embedding as the first layer exactly when "
                    "the example holds token ids (int64 steps), found "
                    f"{qualified_name(type(layer))} at position {i} with "
                    f"{'token ids' if token_ids else 'float steps'}"
                )
            found: list[nn.Module]
            if embedding:
                found = [getattr(layer, "embedding", layer)]
            elif type(layer) in (Recurrence, Fold, Bidirectional):
                if not sequence:
                    raise ValueError(
                        f"{where}: a {type(layer).__name__} after a Fold receives [B, H], not a "
                        "sequence"
                    )
                found = [
                    _ExportBidirectional(layer, where)
                    if isinstance(layer, Bidirectional)
                    else _recurrent_stage(cast(Recurrence, layer), where)
                ]
                sequence = type(layer) is not Fold
            else:
                found = _per_step(layer, where)
            stages.extend(found)
            self.recurrent.extend(
                isinstance(s, (_ExportRecurrence, _ExportScan, _ExportBidirectional)) for s in found
            )
        self.stages = nn.ModuleList(stages)
        self.sequence_output = sequence
        self.scans = [m for m in self.modules() if isinstance(m, _ExportScan)]
        for index, scan in enumerate(self.scans):
            scan.index = index

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        for stage, recurrent in zip(self.stages, self.recurrent, strict=True):
            x = stage(x, lengths) if recurrent else stage(x)
        if not self.sequence_output:
            return x
        t, ends = _time_index(lengths, x.shape[1])
        return torch.where((t < ends).unsqueeze(2), x, torch.zeros((), dtype=x.dtype))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example: SequenceBatch,
    opset_version: int = 17,
) -> None:
    """Write ``model`` as an ONNX graph with dynamic batch size and length.

    The graph's inputs are ``x [B, T, I]`` (float steps) or ``ids [B, T]`` (int64 token ids:
    pad with a valid id, e.g. 0) and ``lengths [B]`` (int64, each in ``1..T``); its output
    ``output`` is what the model returns, padded: ``[B, T, H]`` with zeros at padded steps
    for a sequence (as ``SequenceBatch.to_padded``), ``[B, O]`` for a model ending in a Fold.

    Supported models: a :class:`~rnnkit.layers.Sequential` (or a single layer) of an
    optional first ``Embedding``, then ``Recurrence``, ``Fold`` and ``Bidirectional`` over
    any cell built from standard torch operations (rnnkit's cells, GRU-D, the modern cells of
    :mod:`rnnkit.modern`, or a user's module following the step protocol of
    :class:`~rnnkit.cells.Cell`), in either direction, with zero, constant, learned or fixed
    ``[H]`` initial states, and per-step ``Dense``, ``Dropout`` (exported as the identity),
    ``Activation`` (tanh, relu, sigmoid) and torch.nn Linear, Identity, Tanh, ReLU, Sigmoid,
    Dropout, LayerNorm. Anything else is refused with ``ValueError`` naming the layer. A model
    with a layer built without its input size exports after its first call (before it, the
    error names the layer: :mod:`rnnkit.lazy`).

    Standard cells (``RNNCell`` tanh/relu, ``LSTMCell`` without peepholes, layer_norm or
    proj_size, ``GRUCell`` with ``reset='after'``) become ONNX LSTM/GRU/RNN operators. Any
    other cell becomes a ``Scan``: its input projection (when it splits itself) over all
    steps at once, then its step graph once per step, each row's state kept after its last
    step. Such a graph is run through onnxruntime on ``example`` before it is kept: a step
    whose result depends on a value read through Python (an ``if`` on a tensor, ``.item()``)
    is frozen by the tracer, and the graph is then refused with ``ValueError``.

    ``example`` is a SequenceBatch the model accepts; it fixes the input dtype. The export uses
    torch's TorchScript-based exporter (``dynamo=False``): it maps the fused RNN functions to
    ONNX's RNN operators with a dynamic time axis.
    """
    if not isinstance(example, SequenceBatch):
        raise TypeError(f"example: expected a SequenceBatch, found {type(example).__name__}")
    check_initialized(model, "export")
    token_ids = not example.data.is_floating_point()
    if token_ids and example.data.dim() != 1:
        raise ValueError(
            f"example: token ids must be one id per step ([N]), found steps of shape "
            f"{list(example.feature_shape)}"
        )
    if not token_ids and example.data.dim() != 2:
        raise ValueError(
            f"example: expected float steps of shape [I], found {list(example.feature_shape)}"
        )
    wrapper = _ExportModel(model, token_ids)
    padded, lengths = example.to_padded()
    # The exporter puts the wrapper, which holds the model's modules, in eval mode and back
    # in train mode; the model's own modes are restored afterwards.
    modes = [(module, module.training) for module in model.modules()]
    x_name = "ids" if token_ids else "x"
    output_axes = {0: "batch", 1: "time"} if wrapper.sequence_output else {0: "batch"}
    with _quiet_exporter():
        torch.onnx.export(
            wrapper,
            (padded, lengths.to(torch.int64)),
            str(path),
            dynamo=False,
            input_names=[x_name, "lengths"],
            output_names=["output"],
            dynamic_axes={
                x_name: {0: "batch", 1: "time"},
                "lengths": {0: "batch"},
                "output": output_axes,
            },
            opset_version=opset_version,
        )
    for module, training in modes:
        module.training = training
    if wrapper.scans:
        _write_scans(path, wrapper.scans, opset_version)
        _check_model(model, path, example, x_name)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The TorchScript exporter with rnnkit's symbolics (``logaddexp``, ``expm1``, ``lerp``,
    ``addcmul``) and
    without the warnings that are expected and harmless here: its deprecation notices, the
    warning that an RNN's initial state may fix the batch size (ours is expanded from the
    input's batch size in the graph; the tests run other batch sizes through it), and the
    tracer's shape-check warnings (a value read through Python is caught afterwards, where
    the graph is run against the model on other inputs)."""
    torch.onnx.register_custom_op_symbolic("aten::logaddexp", _logaddexp_symbolic, 15)
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1_symbolic, 9)
    torch.onnx.register_custom_op_symbolic("aten::lerp", _lerp_symbolic, 9)
    torch.onnx.register_custom_op_symbolic("aten::addcmul", _addcmul_symbolic, 15)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\."
        )
        warnings.filterwarnings(
            "ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning
        )
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _check_model(
    model: nn.Module, path: str | os.PathLike[str], example: SequenceBatch, x_name: str
) -> None:
    """Run the written graph against ``model`` (in eval mode) on the example with its float
    steps moved by noise, three times (the step graphs were traced on random inputs, the
    outer graph on the example); remove it and refuse it if they differ: a value read through
    Python in a cell's step is frozen in the traced graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    same = True
    try:
        for _ in range(3 if example.data.is_floating_point() else 1):
            check = example
            if example.data.is_floating_point():
                noise = torch.randn(
                    example.data.shape, generator=generator, dtype=example.data.dtype
                )
                check = example.with_data(example.data + noise)
            padded, lengths = check.to_padded()
            feed = {x_name: padded.numpy(), "lengths": lengths.to(torch.int64).numpy()}
            found = torch.from_numpy(session.run(None, feed)[0])
            with torch.no_grad():
                out = model(check)
            expected = out.to_padded()[0] if isinstance(out, SequenceBatch) else out
            same = same and found.shape == expected.shape
            same = same and bool(torch.allclose(found, expected, rtol=1e-4, atol=1e-4))
    finally:
        for module, training in modes:
            module.training = training
    if not same:
        os.remove(path)
        raise ValueError(
            "model: the exported graph differs from the model on other inputs (a value read "
            "through Python in a cell's step, such as an `if` on a tensor or `.item()`, is "
            "frozen in the traced graph)"
        )


class _ExportStep(nn.Module):
    """``(x [B, I], state_0 [B, H_0], ...) -> (state_0', ...)``: one step of ``cell``."""

    def __init__(self, cell: nn.Module, num_states: int) -> None:
        super().__init__()
        self.cell, self.num_states = cell, num_states

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        state = states if self.num_states > 1 else states[0]
        return _tuple(self.cell(x, state))


def _logaddexp_symbolic(g: Any, a: Any, b: Any) -> Any:
    """``aten::logaddexp`` (minLSTM's gate normaliser), which the TorchScript exporter lacks,
    as ``max(a, b) + log(1 + exp(-|a - b|))``."""
    high = g.op("Max", a, b)
    gap = g.op("Neg", g.op("Abs", g.op("Sub", a, b)))
    one = g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Add", high, g.op("Log", g.op("Add", g.op("CastLike", one, gap), g.op("Exp", gap))))


def _expm1_symbolic(g: Any, x: Any) -> Any:
    """``aten::expm1`` (RG-LRU's ``sqrt(1 - a²)`` in log space), which the TorchScript
    exporter lacks, as ``exp(x) - 1`` (ONNX has no expm1; the absolute error stays that of
    ``exp``, about 1e-7 in float32)."""
    one = g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Sub", g.op("Exp", x), g.op("CastLike", one, x))


def _lerp_symbolic(g: Any, start: Any, end: Any, weight: Any) -> Any:
    """``aten::lerp`` (the GRU update ``h' = lerp(n, h, z)``) as ``start + weight (end -
    start)``: three nodes where torch's own symbolic emits nine (it reproduces the CPU
    kernel's two-branch form, which differs from this one by rounding only)."""
    diff = g.op("Sub", end, start)
    return g.op("Add", start, g.op("Mul", g.op("CastLike", weight, diff), diff))


def _addcmul_symbolic(g: Any, start: Any, a: Any, b: Any, value: Any) -> Any:
    """``aten::addcmul`` as ``start + a b``, with the product scaled only when ``value`` is not
    the constant 1 (torch's own symbolic always multiplies by it: one node more per call)."""
    from torch.onnx import symbolic_helper

    product = g.op("Mul", a, b)
    if symbolic_helper._maybe_get_const(value, "f") != 1:
        product = g.op("Mul", product, g.op("CastLike", value, product))
    return g.op("Add", start, product)


def export_step_onnx(
    cell: nn.Module,
    path: str | os.PathLike[str],
    input_size: int | None = None,
    opset_version: int = 17,
) -> None:
    """Write one step of ``cell`` (``cell(x, state) -> state``) as an ONNX graph, for streaming.

    Inputs ``x [B, I]`` and ``state_0 .. state_{K-1}`` (the cell's K state tensors, in the
    order of ``cell.initial_state``), outputs ``new_state_0 ..`` (``new_state_0`` is the
    output); the batch size is dynamic. A state tensor the step never reads (the previous
    output of a cell whose output is not fed back) is left out of the graph's inputs; the
    model's metadata still counts it, and :class:`rnnkit.serving.OnnxStepper` feeds only
    what the graph reads. Any cell built from standard torch operations
    exports: rnnkit's cells and a user's module following the step protocol (see
    :class:`~rnnkit.cells.Cell`). The cell's initial state for one row is stored in the
    model's metadata (``rnnkit.initial_state``), where :class:`rnnkit.serving.OnnxStepper`
    reads it (GRU-D starts from the training means, not zeros).

    ``input_size`` is needed for a cell without an ``input_size`` attribute. A step whose
    operations depend on values through Python (``if`` on a tensor, ``.item()``) or use an
    operator ONNX lacks is refused with ``ValueError`` naming the cell and the reason.

    >>> import tempfile, os, torch
    >>> from rnnkit import GRUCell
    >>> path = os.path.join(tempfile.mkdtemp(), "step.onnx")
    >>> export_step_onnx(GRUCell(3, 4, reset="before"), path)
    """
    check_initialized(cell, "export", root="cell")
    name = qualified_name(type(cell))
    size = getattr(cell, "input_size", None) if input_size is None else input_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(
            f"input_size: expected a positive integer (the cell {name} has no input_size "
            f"attribute to read), found {size!r}"
        )
    init = getattr(cell, "initial_state", None)
    if not callable(init):
        raise ValueError(f"cell: expected a cell with initial_state(batch_size), found {name}")
    weights = next(iter(cell.parameters()), None)
    dtype = weights.dtype if weights is not None else torch.float32
    one = _tuple(init(1, None, dtype))
    states = tuple(torch.randn(2, *s.shape[1:], dtype=s.dtype) for s in one)
    x = torch.randn(2, size, dtype=dtype)
    wrapper = _ExportStep(cell, len(states))
    failure = f"cell: {name} cannot be exported to ONNX as a step function"
    _export_step_graph(wrapper, cell, (x, *states), str(path), "x", failure, opset_version)
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key = INITIAL_STATE_KEY
    entry.value = json.dumps([s[0].detach().cpu().tolist() for s in one])
    onnx.save(model, str(path))
    _check_step(cell, wrapper, path, size, states, dtype, name)


def _check_step(
    cell: nn.Module,
    wrapper: _ExportStep,
    path: str | os.PathLike[str],
    size: int,
    states: tuple[Tensor, ...],
    dtype: torch.dtype,
    name: str,
) -> None:
    """Run the written graph on 3 fresh rows against the cell; refuse it if they differ."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, size, dtype=dtype, generator=generator)
    fresh = [torch.randn(3, *s.shape[1:], dtype=s.dtype, generator=generator) for s in states]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}  # a state the step never reads is dropped
    feed = {"x": x.numpy(), **{f"state_{k}": s.numpy() for k, s in enumerate(fresh)}}
    feed = {n: v for n, v in feed.items() if n in wanted}
    with torch.no_grad():
        expected = wrapper(x, *fresh)
    found = session.run(None, feed)
    for k, (e, f) in enumerate(zip(expected, found, strict=True)):
        if e.shape != f.shape or not bool(
            torch.allclose(torch.from_numpy(f), e, rtol=1e-4, atol=1e-4)
        ):
            os.remove(path)
            raise ValueError(
                f"cell: {name} cannot be exported to ONNX as a step function: the graph's "
                f"new_state_{k} differs from the cell's on other inputs (a value read through "
                "Python, such as an `if` on a tensor or `.item()`, is frozen in the traced graph)"
            )
