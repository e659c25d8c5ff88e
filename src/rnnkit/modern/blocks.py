"""Residual blocks of the modern recurrences and a sequence model stacked in one line.

.. code-block:: text

    x = x + mixer(RMSNorm(x))          the recurrence (a cell, run through Recurrence)
    x = x + MLP(RMSNorm(x))            gated MLP (Griffin): W_o (GeLU(W_g x) ⊙ W_u x)

Named builders: :func:`Mamba` (the Mamba block: :class:`~rnnkit.modern.diagonal.MambaCell`,
no MLP, as in the paper), :func:`Hawk` (Griffin's recurrent block,
:class:`~rnnkit.modern.diagonal.HawkCell`, with the gated MLP), :func:`LRU`
(:class:`~rnnkit.modern.diagonal.LRUCell` with the gated MLP). :func:`stack` builds a
:class:`SequenceModel` of one kind in one line:

>>> import torch
>>> from rnnkit import SequenceBatch
>>> model = stack("hawk", d_model=8, layers=2, input_size=3, output_size=5)
>>> x = SequenceBatch.from_list([torch.randn(6, 3), torch.randn(2, 3)])
>>> model(x).data.shape
torch.Size([8, 5])

**The mixer interface.** :class:`ResidualBlock` takes any module that follows rnnkit's step
protocol (:class:`rnnkit.cells.Cell`) with ``input_size == hidden_size == d_model``:
``initial_state(batch_size, device, dtype)`` (a tensor or a tuple of tensors, the first the
output ``[B, d_model]``), ``input_projection(x [N, d_model]) -> [N, G]`` and ``step(px [B,
G], state) -> state``; optionally ``parallel(px [T, B, G], state, lengths) -> (outputs
[T, B, d_model], final state)`` and ``parallel_pays(x) -> bool``, which the engine's
``'scan'``/``'auto'`` backends use (see :func:`rnnkit.recurrence.run_recurrence`). The block
runs the mixer through ``Recurrence(mixer, backend=backend)``, so every engine path, ragged
batches and streaming work as for any cell. A new kind is a builder ``fn(d_model, **options)
-> ResidualBlock`` added to :data:`BUILDERS` (with its cell registered for saving:
:func:`rnnkit.saving.register_module`). :mod:`rnnkit.modern.matrix_blocks` adds GLA,
Mamba-2, mLSTM and DeltaNet to :data:`BUILDERS` when imported (``import rnnkit.modern`` does).

A model saves and loads with :func:`rnnkit.save` / :func:`rnnkit.load` (:mod:`rnnkit.saving`
registers these types, :func:`saved_modules`), and its step form
(:meth:`SequenceModel.step_cell`, a cell whose state holds every block's state) exports with
:func:`rnnkit.onnx_export.export_step_onnx`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.cells import State, as_tuple
from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell
from rnnkit.recurrence import Backend, Recurrence
from rnnkit.sequences import SequenceBatch

__all__ = [
    "BUILDERS",
    "LRU",
    "GatedMLP",
    "Hawk",
    "Mamba",
    "RMSNorm",
    "ResidualBlock",
    "SequenceModel",
    "SequenceStep",
    "saved_modules",
    "stack",
]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return value


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation (Zhang & Sennrich 2019): ``x / sqrt(mean(x²) + eps) ⊙
    weight`` over the last dim; ``weight [d]`` starts at 1."""

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.d_model, self.eps = _positive("d_model", d_model), float(eps)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedMLP(nn.Module):
    r"""Griffin's gated MLP: ``W_o (GeLU(W_g x) ⊙ (W_u x))``, hidden width ``expansion *
    d_model``. Shapes: ``gate``, ``up [E, d]``, ``down [d, E]`` (``nn.Linear`` each)."""

    def __init__(self, d_model: int, expansion: int = 3) -> None:
        super().__init__()
        self.d_model, self.expansion = (
            _positive("d_model", d_model),
            _positive("expansion", expansion),
        )
        width = expansion * d_model
        self.gate = nn.Linear(d_model, width)
        self.up = nn.Linear(d_model, width)
        self.down = nn.Linear(width, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(nn.functional.gelu(self.gate(x)) * self.up(x))


class ResidualBlock(nn.Module):
    """``x + mixer(RMSNorm(x))``, then ``x + GatedMLP(RMSNorm(x))`` (no MLP when
    ``mlp_expansion=0``); ``mixer`` follows the mixer interface of the module docstring.

    ``forward`` maps a SequenceBatch of ``[d_model]`` steps to one; :meth:`step` is one step,
    ``(x [B, d_model], state) -> (y [B, d_model], state)`` with the mixer's state.
    """

    def __init__(
        self,
        mixer: nn.Module,
        d_model: int,
        mlp_expansion: int = 3,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.d_model = _positive("d_model", d_model)
        for name in ("input_size", "hidden_size"):
            if getattr(mixer, name, None) != d_model:
                raise ValueError(
                    f"mixer: expected a cell with {name} == d_model = {d_model}, found "
                    f"{type(mixer).__name__} with {name} {getattr(mixer, name, None)!r}"
                )
        if isinstance(mlp_expansion, bool) or not isinstance(mlp_expansion, int):
            raise ValueError(f"mlp_expansion: expected an int >= 0, found {mlp_expansion!r}")
        if mlp_expansion < 0:
            raise ValueError(f"mlp_expansion: expected an int >= 0, found {mlp_expansion!r}")
        self.mlp_expansion, self.backend = mlp_expansion, backend
        self.norm = RMSNorm(d_model)
        self.recurrence = Recurrence(mixer, backend=backend)
        self.mlp_norm = RMSNorm(d_model) if mlp_expansion else None
        self.mlp = GatedMLP(d_model, mlp_expansion) if mlp_expansion else None

    @property
    def mixer(self) -> Any:
        """The mixer cell (held by the block's Recurrence)."""
        return self.recurrence.cell

    def _mlp(self, h: Tensor) -> Tensor:
        if self.mlp is None or self.mlp_norm is None:
            return h
        return h + self.mlp(self.mlp_norm(h))

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        h = x.data
        mixed = self.recurrence(x.with_data(self.norm(h))).data
        return x.with_data(self._mlp(h + mixed))

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        return as_tuple(self.mixer.initial_state(batch_size, device, dtype))

    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        mixer = self.mixer
        new = as_tuple(mixer.step(mixer.input_projection(self.norm(x)), _unwrap(state)))
        return self._mlp(x + new[0]), new


def _unwrap(state: tuple[Tensor, ...]) -> State:
    return state[0] if len(state) == 1 else state


class SequenceModel(nn.Module):
    """A stack of :class:`ResidualBlock` s between an optional input projection
    (``nn.Linear(input_size, d_model)``) and a final RMSNorm and optional head
    (``nn.Linear(d_model, output_size)``): SequenceBatch of ``[input_size or d_model]`` steps
    in, SequenceBatch of ``[output_size or d_model]`` steps out."""

    def __init__(
        self,
        blocks: list[ResidualBlock],
        d_model: int,
        input_size: int | None = None,
        output_size: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model = _positive("d_model", d_model)
        self.input_size = None if input_size is None else _positive("input_size", input_size)
        self.output_size = None if output_size is None else _positive("output_size", output_size)
        for k, block in enumerate(blocks):
            if not isinstance(block, ResidualBlock) or block.d_model != d_model:
                raise ValueError(
                    f"blocks[{k}]: expected a ResidualBlock of d_model {d_model}, found "
                    f"{type(block).__name__}"
                    + (f" of d_model {block.d_model}" if isinstance(block, ResidualBlock) else "")
                )
        self.embed = None if input_size is None else nn.Linear(input_size, d_model)
        self.blocks = nn.ModuleList(blocks)
        self.norm = RMSNorm(d_model)
        self.head = None if output_size is None else nn.Linear(d_model, output_size)

    def _in(self, x: Tensor) -> Tensor:
        return x if self.embed is None else self.embed(x)

    def _out(self, h: Tensor) -> Tensor:
        h = self.norm(h)
        return h if self.head is None else self.head(h)

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        h = x.with_data(self._in(x.data))
        for block in self.blocks:
            h = block(h)
        return x.with_data(self._out(h.data))

    def step_cell(self) -> SequenceStep:
        """The step form: a cell (shares this model's parameters) for streaming and ONNX."""
        return SequenceStep(self)


class SequenceStep(nn.Module):
    """One step of a :class:`SequenceModel` as a cell: ``cell(x [B, I], state) -> state``
    with ``state = (y [B, O], *block 1's state, *block 2's state, ...)``, ``y`` the model's
    output; for streaming (``rnnkit.serving``) and :func:`rnnkit.onnx_export.export_step_onnx`.
    """

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model
        self.input_size = model.d_model if model.input_size is None else model.input_size
        self.hidden_size = model.d_model if model.output_size is None else model.output_size
        self._blocks: list[ResidualBlock] = list(model.blocks)  # type: ignore[arg-type]
        one = [block.initial_state(1) for block in self._blocks]
        self._counts = [len(s) for s in one]

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        weight = self.model.norm.weight
        device, dtype = device or weight.device, dtype or weight.dtype
        states: list[Tensor] = [
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        ]
        for block in self._blocks:
            states += block.initial_state(batch_size, device, dtype)
        return tuple(states)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, ...]:
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        parts = as_tuple(state)
        expected = 1 + sum(self._counts)
        if len(parts) != expected:
            raise ValueError(
                f"state: SequenceStep expected {expected} tensors (the output and each block's "
                f"state), found {len(parts)}"
            )
        h = self.model._in(x)
        new: list[Tensor] = []
        offset = 1
        for block, count in zip(self._blocks, self._counts, strict=True):
            h, block_state = block.step(h, parts[offset : offset + count])
            new += block_state
            offset += count
        return (self.model._out(h), *new)


# ---------------------------------------------------------------------------- builders


def Mamba(
    d_model: int,
    state_size: int = 16,
    expand: int = 2,
    conv_width: int = 4,
    backend: Backend = "auto",
) -> ResidualBlock:
    """The Mamba block (Gu & Dao 2023): ``x + MambaCell(RMSNorm(x))``, no MLP."""
    cell = MambaCell(d_model, state_size, expand, conv_width)
    return ResidualBlock(cell, d_model, mlp_expansion=0, backend=backend)


def Hawk(
    d_model: int,
    rnn_size: int | None = None,
    conv_width: int = 4,
    mlp_expansion: int = 3,
    backend: Backend = "auto",
) -> ResidualBlock:
    """Hawk's residual block (De et al. 2024): Griffin's recurrent block (RG-LRU with its
    conv and GeLU gate) then the gated MLP (expansion 3)."""
    cell = HawkCell(d_model, rnn_size, conv_width)
    return ResidualBlock(cell, d_model, mlp_expansion=mlp_expansion, backend=backend)


def LRU(
    d_model: int,
    state_size: int | None = None,
    r_min: float = 0.9,
    r_max: float = 0.999,
    mlp_expansion: int = 2,
    backend: Backend = "auto",
) -> ResidualBlock:
    """An LRU layer (Orvieto et al. 2023) in the residual block, then the gated MLP;
    ``state_size`` N defaults to ``d_model``."""
    cell = LRUCell(d_model, d_model if state_size is None else state_size, r_min, r_max)
    return ResidualBlock(cell, d_model, mlp_expansion=mlp_expansion, backend=backend)


BUILDERS: dict[str, Callable[..., ResidualBlock]] = {"mamba": Mamba, "hawk": Hawk, "lru": LRU}


def stack(
    kind: str,
    d_model: int,
    layers: int,
    input_size: int | None = None,
    output_size: int | None = None,
    **options: Any,
) -> SequenceModel:
    """``layers`` blocks of ``kind`` (a key of :data:`BUILDERS`, given ``d_model`` and
    ``options``) in a :class:`SequenceModel`."""
    if kind not in BUILDERS:
        raise ValueError(f"kind: expected one of {sorted(BUILDERS)}, found {kind!r}")
    _positive("layers", layers)
    blocks = [BUILDERS[kind](d_model, **options) for _ in range(layers)]
    return SequenceModel(blocks, d_model, input_size, output_size)


# ---------------------------------------------------------------------------- saving


def _attributes(*names: str) -> Callable[[Any], dict[str, Any]]:
    return lambda module: {name: getattr(module, name) for name in names}


SAVED_MODULES: list[tuple[type[nn.Module], Callable[[Any], dict[str, Any]], str]] = [
    (LRUCell, _attributes("hidden_size", "state_size", "r_min", "r_max", "max_phase"), "LRUCell"),
    (RGLRUCell, _attributes("hidden_size", "c", "a_min", "a_max"), "RGLRUCell"),
    (S6Cell, _attributes("hidden_size", "state_size", "dt_rank", "dt_min", "dt_max"), "S6Cell"),
    (MambaCell, _attributes("hidden_size", "state_size", "expand", "conv_width"), "MambaCell"),
    (HawkCell, _attributes("hidden_size", "rnn_size", "conv_width"), "HawkCell"),
    (RMSNorm, _attributes("d_model", "eps"), "RMSNorm"),
    (GatedMLP, _attributes("d_model", "expansion"), "GatedMLP"),
    (
        ResidualBlock,
        lambda m: {
            "mixer": m.mixer,
            "d_model": m.d_model,
            "mlp_expansion": m.mlp_expansion,
            "backend": m.backend,
        },
        "ResidualBlock",
    ),
    (
        SequenceModel,
        lambda m: {
            "blocks": list(m.blocks),
            "d_model": m.d_model,
            "input_size": m.input_size,
            "output_size": m.output_size,
        },
        "SequenceModel",
    ),
]
_RENAMED = {"hidden_size": "d_model"}  # MambaCell and HawkCell take d_model


def _renamed(to_config: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    return lambda m: {_RENAMED.get(k, k): v for k, v in to_config(m).items()}


def saved_modules() -> list[tuple[type[nn.Module], Callable[[Any], dict[str, Any]], str]]:
    """``(class, to_config, name)`` of this module's savable classes, named
    ``rnnkit.modern.<Name>``, for :mod:`rnnkit.saving` (which registers them)."""
    out = []
    for cls, to_config, name in SAVED_MODULES:
        if cls in (MambaCell, HawkCell):
            to_config = _renamed(to_config)
        out.append((cls, to_config, f"rnnkit.modern.{name}"))
    return out
