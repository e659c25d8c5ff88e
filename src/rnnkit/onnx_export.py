"""ONNX export of the standard recurrent models (``rnnkit.export_onnx``).

The exported graph takes padded input ``x [B, T, I]`` (or token ids ``[B, T]``) and
``lengths [B]`` (int64), with dynamic batch and length, and returns what the model returns:
padded outputs ``[B, T, H]`` (zeros at padding) or ``[B, O]`` for a model ending in a Fold.
Recurrent layers are re-expressed with ``torch.lstm``/``gru``/``rnn_*`` over padded input;
backward layers reverse each sequence within its length by index arithmetic; a Fold takes
each sequence's last valid step with a gather. Supported: Recurrence, Fold and Bidirectional
over standard RNN (tanh/relu), LSTM and GRU cells, in either direction, with Embedding,
Dense, Dropout, Activation and the per-step ``torch.nn`` layers; anything else is refused
naming the layer. The outputs are checked against onnxruntime in ``tests/test_saving.py``.

:func:`export_step_onnx` exports the step function of any cell built from standard torch
operations (state in, state out, dynamic batch) for streaming; :mod:`rnnkit.serving` drives
it over whole padded batches. Checked against onnxruntime in ``tests/test_onnx_cells.py``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from rnnkit.cells import FusedKernel
from rnnkit.layers import Activation, Dense, Dropout, Embedding, Sequential
from rnnkit.lazy import check_initialized
from rnnkit.recurrence import Bidirectional, Fold, Recurrence
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
        if kind is None:
            raise ValueError(
                f"{where}: export_onnx supports Recurrence/Fold over a standard RNNCell "
                "(tanh or relu), LSTMCell (no peepholes, layer_norm or proj_size) or GRUCell "
                f"(reset='after'), found {qualified_name(type(layer.cell))} with other options"
            )
        self.kind, self.fold, self.go_backwards = kind, isinstance(layer, Fold), layer.go_backwards
        self.cell = layer.cell
        zeros = [z[0] for z in _tuple(cast(Any, layer.cell).initial_state(1))]
        initial = layer.initial
        if initial.constant is not None:
            vectors = [torch.full_like(z, initial.constant) for z in zeros]
        elif len(initial.learned):
            vectors = [p.detach().clone() for p in initial.learned]
        elif initial.fixed is not None:
            vectors = []
            for k, f in enumerate(initial.fixed):
                if f.dim() > 1 and f.shape[0] != 1:
                    raise ValueError(
                        f"{where}.initial_state[{k}]: export_onnx needs one initial state for "
                        f"every batch size ([H] or [1, H]), found shape {list(f.shape)}"
                    )
                vectors.append(f.detach().reshape(-1))
        else:
            vectors = zeros
        weight = cast(Any, layer.cell).weight_ih
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


class _ExportBidirectional(nn.Module):
    def __init__(self, layer: Bidirectional, where: str) -> None:
        super().__init__()
        self.forward_layer = _ExportRecurrence(layer.forward_layer, f"{where}.forward_layer")
        self.backward_layer = _ExportRecurrence(layer.backward_layer, f"{where}.backward_layer")
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
                    else _ExportRecurrence(cast(Recurrence, layer), where)
                ]
                sequence = type(layer) is not Fold
            else:
                found = _per_step(layer, where)
            stages.extend(found)
            self.recurrent.extend(
                isinstance(s, (_ExportRecurrence, _ExportBidirectional)) for s in found
            )
        self.stages = nn.ModuleList(stages)
        self.sequence_output = sequence

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
    standard cells (``RNNCell`` tanh/relu, ``LSTMCell`` without peepholes, layer_norm or
    proj_size, ``GRUCell`` with ``reset='after'``), in either direction, with zero, constant,
    learned or fixed ``[H]`` initial states, and per-step ``Dense``, ``Dropout`` (exported as
    the identity), ``Activation`` (tanh, relu, sigmoid) and torch.nn Linear, Identity, Tanh,
    ReLU, Sigmoid, Dropout, LayerNorm. Anything else is refused with ``ValueError`` naming the
    layer. The recurrent layers become ONNX LSTM/GRU/RNN operators. A model with a layer
    built without its input size exports after its first call (before it, the error names
    the layer: :mod:`rnnkit.lazy`).

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
    with warnings.catch_warnings():
        # Expected and harmless here: the TorchScript exporter announces its deprecation, and
        # warns that an RNN's initial state may fix the batch size; ours is expanded from the
        # input's batch size in the graph (the tests run other batch sizes through it).
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\."
        )
        warnings.filterwarnings(
            "ignore", "Exporting a model to ONNX with a batch_size other than 1", UserWarning
        )
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
    names = [f"state_{k}" for k in range(len(states))]
    outputs = [f"new_{n}" for n in names]
    wrapper = _ExportStep(cell, len(states))
    torch.onnx.register_custom_op_symbolic("aten::logaddexp", _logaddexp_symbolic, 15)
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1_symbolic, 9)
    modes = [(module, module.training) for module in cell.modules()]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "You are using the legacy TorchScript", DeprecationWarning
            )
            warnings.filterwarnings(
                "ignore", "The feature will be removed", DeprecationWarning, r"torch\.onnx\."
            )
            # Shape checks warn while traced; a value read through Python is caught below,
            # where the graph is run against the cell on other inputs and another batch size.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (x, *states),
                str(path),
                dynamo=False,
                input_names=["x", *names],
                output_names=outputs,
                dynamic_axes={n: {0: "batch"} for n in ["x", *names, *outputs]},
                opset_version=opset_version,
            )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cell: {name} cannot be exported to ONNX as a step function: {first}"
        ) from e
    finally:
        for module, training in modes:
            module.training = training
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
