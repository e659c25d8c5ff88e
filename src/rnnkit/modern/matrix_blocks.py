r"""Matrix-state cells as the mixers of residual blocks: GLA, Mamba-2, mLSTM, DeltaNet.

:class:`MatrixMixer` turns a cell of :mod:`rnnkit.modern.matrix` or :mod:`rnnkit.modern.delta`
into a layer's mixer, ``d_model`` in and out, as the papers' layers do around their
recurrence: an optional short causal convolution on the cell's projected inputs (Mamba-2 on
x, B, C; xLSTM on q, k; DeltaNet on q, k, v), the recurrence, a per-head RMS norm, an output
gate and the output projection (GLA's layer; Mamba-2 gates then norms, xLSTM adds a learnable
skip, which this shared form leaves out). It is itself a cell with ``step`` and ``parallel``,
so a block runs it on the engine (loop or chunked) and streams it one step at a time, the
convolution's cache in the state.

.. code-block:: text

    p = cell.input_projection(x);  p[:C] = act(conv(p[:C]))    C = conv_channels (0: none)
    o = cell(p)                                               [H]
    y = W_out (rmsnorm_heads(o) ⊙ w_norm ⊙ SiLU(W_gate x))    [d_model]

The named mixers :func:`gla_mixer`, :func:`mamba2_mixer`, :func:`mlstm_mixer`,
:func:`deltanet_mixer` make each with its paper's sizes; the block builders :func:`GLA`,
:func:`Mamba2`, :func:`MLSTM`, :func:`DeltaNet` put one in
:class:`rnnkit.modern.blocks.ResidualBlock`; :data:`MATRIX_BUILDERS` names them, and importing
this module (which ``import rnnkit.modern`` does) adds them to
:data:`rnnkit.modern.blocks.BUILDERS`, so :func:`rnnkit.modern.stack` builds every kind.
:func:`saved_modules` lists the cells and the mixer for :mod:`rnnkit.saving`.

>>> import torch
>>> from rnnkit import Recurrence, SequenceBatch
>>> mixer = deltanet_mixer(8, heads=2)
>>> x = SequenceBatch.from_list([torch.randn(20, 8), torch.randn(9, 8)])
>>> a = Recurrence(mixer, backend="loop")(x).data
>>> b = Recurrence(mixer, backend="scan")(x).data
>>> bool(torch.allclose(a, b, atol=1e-5))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells import State, StepCell, as_tuple
from rnnkit.modern.blocks import BUILDERS, ResidualBlock
from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
from rnnkit.modern.diagonal import ShortConv
from rnnkit.modern.matrix import (
    GLACell,
    Mamba2Cell,
    MatrixCell,
    MLSTMCell,
    last_outputs,
)
from rnnkit.recurrence import Backend

if TYPE_CHECKING:
    from rnnkit.sequences import Lanes, SequenceBatch

__all__ = [
    "GLA",
    "MATRIX_BUILDERS",
    "MLSTM",
    "DeltaNet",
    "Mamba2",
    "MatrixMixer",
    "deltanet_mixer",
    "gla_mixer",
    "mamba2_mixer",
    "mlstm_mixer",
]


class MatrixMixer(StepCell):
    """A matrix-state cell as a mixer (see the module docstring).

    Shapes: ``cell`` reads ``d_model = cell.input_size`` and gives ``H = cell.hidden_size``;
    ``weight_gate [H, d_model]``, ``weight_norm [H]``, ``out_proj [d_model, H]``, ``conv``
    (:class:`rnnkit.modern.diagonal.ShortConv` of ``conv_channels``, when any). State:
    ``(y [B, d_model], conv cache [B, C, W-1] (when a conv), *the cell's state)``.
    """

    def __init__(
        self,
        cell: MatrixCell,
        conv_channels: int = 0,
        conv_silu: bool = False,
        conv_width: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(cell, MatrixCell):
            raise TypeError(f"cell: expected a MatrixCell, found {type(cell).__name__}")
        if isinstance(conv_channels, bool) or not isinstance(conv_channels, int):
            raise ValueError(f"conv_channels: expected an int, found {conv_channels!r}")
        d_model, width = cell.input_size, cell.hidden_size
        self.cell = cell
        self.input_size = self.hidden_size = d_model
        self.conv_channels, self.conv_silu = conv_channels, conv_silu
        self.conv = ShortConv(conv_channels, conv_width) if conv_channels else None
        self.weight_ih = nn.Parameter(torch.empty(width, d_model))  # the gate, W_gate
        self.bias_ih = None
        self.weight_norm = nn.Parameter(torch.ones(width))
        self.out_proj = nn.Linear(width, d_model, bias=False)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(d_model)
            nn.init.uniform_(self.weight_ih, -bound, bound)

    def reset_parameters(self) -> None:
        """Every part drawn again: the cell's own initialisation, the gate and the output
        projection as linear layers, the norm's weight 1."""
        self.cell.reset_parameters()
        if self.conv is not None:
            self.conv.reset_parameters()
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.weight_ih.shape[1])
            nn.init.uniform_(self.weight_ih, -bound, bound)
            self.weight_norm.fill_(1.0)
        self.out_proj.reset_parameters()

    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """``(y, conv cache (when a conv), *the cell's state)``, after the batch dimension."""
        conv = () if self.conv is None else ((self.conv_channels, self.conv.width - 1),)
        return ((self.hidden_size,), *conv, *self.cell.state_shapes())

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        """Zeros, one tensor per entry of :meth:`state_shapes`."""
        dtype = dtype or self.weight_ih.dtype
        device = device or self.weight_ih.device
        return tuple(
            torch.zeros(batch_size, *shape, device=device, dtype=dtype)
            for shape in self.state_shapes()
        )

    def input_projection(self, x: Tensor) -> Tensor:
        """``[N, d_model] -> [N, G + H]``: the cell's projection, then the gate's."""
        return torch.cat([self.cell.input_projection(x), F.linear(x, self.weight_ih)], -1)

    def _split(self, state: State, batch: int) -> tuple[Tensor | None, tuple[Tensor, ...]]:
        parts = as_tuple(state)
        expected = [(batch, *shape) for shape in self.state_shapes()]
        found = [tuple(s.shape) for s in parts]
        if found != expected:
            raise ValueError(
                f"{type(self).__name__}.step: expected a state of shapes {expected}, found {found}"
            )
        if self.conv is None:
            return None, parts[1:]
        return parts[1], parts[2:]

    def _convolved(self, p: Tensor, conv: Tensor) -> Tensor:
        c = self.conv_channels
        return torch.cat([F.silu(conv) if self.conv_silu else conv, p[..., c:]], -1)

    def _output(self, o: Tensor, gate: Tensor) -> Tensor:
        heads = o.unflatten(-1, (self.cell.heads, self.cell.value_size))
        normed = heads * torch.rsqrt(heads.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.out_proj(normed.flatten(-2) * self.weight_norm * F.silu(gate))

    def step(self, px: Tensor, state: State) -> tuple[Tensor, ...]:
        cache, inner = self._split(state, px.shape[0])
        p, gate = px.split([px.shape[-1] - self.cell.hidden_size, self.cell.hidden_size], -1)
        caches: tuple[Tensor, ...] = ()
        if self.conv is not None and cache is not None:
            conv, cache = self.conv.step(p[..., : self.conv_channels], cache)
            p, caches = self._convolved(p, conv), (cache,)
        inner = as_tuple(self.cell.step(p, inner))
        return (self._output(inner[0], gate), *caches, *inner)

    def parallel(
        self, px: Tensor, state: tuple[Tensor, ...], lengths: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Outputs ``[T, B, d_model]`` and each sequence's final state, from ``px [T, B,
        G + H]`` (sorted by length, descending) and ``state`` (sorted order)."""
        y, rest = self._mixed(
            px,
            state,
            px.shape[1],
            lambda conv, c, cache: conv.parallel(c, cache, lengths),
            lambda p, inner: self.cell.parallel(p, inner, lengths),
        )
        return y, (last_outputs(y, lengths), *rest)

    def _mixed(
        self,
        px: Tensor,
        state: tuple[Tensor, ...],
        batch: int,
        conv: Callable[[ShortConv, Tensor, Tensor], tuple[Tensor, Tensor]],
        cell: Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]],
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """What :meth:`parallel` and :meth:`parallel_packed` share: ``conv`` (the short
        convolution's form, given it, the conv channels and the cache) and ``cell`` (the
        cell's parallel form from its state) over the same layout, then the norm, gate and
        output projection; the outputs and the final state after its output."""
        cache, inner = self._split(state, batch)
        p, gate = px.split([px.shape[-1] - self.cell.hidden_size, self.cell.hidden_size], -1)
        caches: tuple[Tensor, ...] = ()
        if self.conv is not None and cache is not None:
            convolved, cache = conv(self.conv, p[..., : self.conv_channels], cache)
            p, caches = self._convolved(p, convolved), (cache,)
        o, inner = cell(p, inner)
        return self._output(o, gate), (*caches, *inner)

    def packing_lanes(self, x: SequenceBatch) -> Lanes:
        """The cell's lanes (:meth:`rnnkit.modern.matrix.MatrixCell.packing_lanes`)."""
        return self.cell.packing_lanes(x)

    def parallel_packed(
        self, px: Tensor, state: tuple[Tensor, ...], x: SequenceBatch
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The parallel form over a ragged batch's packed rows ``px [N, G + H]``: the short
        convolution over the padding (each sequence needs its own past), the cell in its
        chunk lanes (:meth:`rnnkit.modern.matrix.MatrixCell.parallel_packed`), the norm,
        gate and output projection on the packed rows."""
        y, rest = self._mixed(
            px,
            state,
            x.batch_size,
            lambda conv, c, cache: conv.packed(c, cache, x),
            lambda p, inner: self.cell.parallel_packed(p, inner, x),
        )
        return y, (y.index_select(0, x.last_rows_sorted()), *rest)

    def parallel_pays(self, x: SequenceBatch) -> bool:
        """The cell's rule (:meth:`rnnkit.modern.matrix.MatrixCell.parallel_pays`)."""
        return self.cell.parallel_pays(x)


def gla_mixer(d_model: int, heads: int = 4, chunk_size: int = 16) -> MatrixMixer:
    """GLA's layer (Yang et al. 2024): keys of ``d_model / 2``, values of ``d_model``, no
    convolution; the cell's default sub-chunks (the largest divisor of ``chunk_size`` up to
    :attr:`GLACell.max_sub_chunk`, 8)."""
    key_size = max(1, d_model // (2 * heads))
    return MatrixMixer(GLACell(d_model, d_model, heads, key_size, chunk_size=chunk_size))


def mamba2_mixer(
    d_model: int, heads: int = 4, state_size: int = 32, chunk_size: int = 64
) -> MatrixMixer:
    """Mamba-2's layer (Dao & Gu 2024): inner width ``2 d_model``, a width-4 convolution with
    SiLU on x, B, C."""
    cell = Mamba2Cell(d_model, 2 * d_model, heads, state_size, chunk_size=chunk_size)
    return MatrixMixer(cell, 2 * d_model + 2 * state_size, conv_silu=True)


def mlstm_mixer(d_model: int, heads: int = 4, chunk_size: int = 64) -> MatrixMixer:
    """xLSTM's mLSTM block (Beck et al. 2024): inner width ``2 d_model``, a width-4
    convolution with SiLU on q and k."""
    cell = MLSTMCell(d_model, 2 * d_model, heads, chunk_size=chunk_size)
    return MatrixMixer(cell, 2 * heads * cell.key_size, conv_silu=True)


def deltanet_mixer(
    d_model: int, heads: int = 4, chunk_size: int = 64, gated: bool = False
) -> MatrixMixer:
    """DeltaNet's layer (Yang et al. 2024; Gated DeltaNet, 2025, when ``gated``): a width-4
    convolution on q, k, v (their SiLU is the cell's)."""
    make = GatedDeltaNetCell if gated else DeltaNetCell
    cell = make(d_model, d_model, heads, chunk_size=chunk_size)
    return MatrixMixer(cell, 2 * heads * cell.key_size + d_model)


# ---------------------------------------------------------------------------- blocks


def GLA(
    d_model: int, heads: int = 4, mlp_expansion: int = 3, backend: Backend = "auto"
) -> ResidualBlock:
    """A GLA Transformer block (Yang et al. 2024): ``x + GLA layer(RMSNorm(x))``, then the
    gated MLP."""
    return ResidualBlock(gla_mixer(d_model, heads), d_model, mlp_expansion, backend)


def Mamba2(
    d_model: int, heads: int = 4, state_size: int = 32, backend: Backend = "auto"
) -> ResidualBlock:
    """The Mamba-2 block (Dao & Gu 2024): ``x + Mamba-2 layer(RMSNorm(x))``, no MLP."""
    return ResidualBlock(mamba2_mixer(d_model, heads, state_size), d_model, 0, backend)


def MLSTM(d_model: int, heads: int = 4, backend: Backend = "auto") -> ResidualBlock:
    """xLSTM's mLSTM block (Beck et al. 2024, up-projection inside): ``x + mLSTM
    layer(RMSNorm(x))``, no MLP."""
    return ResidualBlock(mlstm_mixer(d_model, heads), d_model, 0, backend)


def DeltaNet(
    d_model: int,
    heads: int = 4,
    gated: bool = False,
    mlp_expansion: int = 3,
    backend: Backend = "auto",
) -> ResidualBlock:
    """A DeltaNet block (Yang et al. 2024; Gated DeltaNet when ``gated``): ``x + DeltaNet
    layer(RMSNorm(x))``, then the gated MLP."""
    mixer = deltanet_mixer(d_model, heads, gated=gated)
    return ResidualBlock(mixer, d_model, mlp_expansion, backend)


MATRIX_BUILDERS: dict[str, Callable[..., ResidualBlock]] = {
    "gla": GLA,
    "mamba2": Mamba2,
    "mlstm": MLSTM,
    "deltanet": DeltaNet,
}
BUILDERS.update(MATRIX_BUILDERS)  # so that rnnkit.modern.stack("gla", ...) builds them


# ---------------------------------------------------------------------------- saving


def _config(module: nn.Module, *names: str) -> dict[str, object]:
    return {name: getattr(module, name) for name in names}


_SIZES = ("input_size", "hidden_size", "heads", "key_size", "chunk_size")


def saved_modules() -> list[tuple[type[nn.Module], Callable[[Any], dict[str, Any]], str]]:
    """``(class, to_config, name)`` of the matrix cells and the mixer, for
    :mod:`rnnkit.saving` (which registers them)."""
    return [
        (GLACell, lambda m: _config(m, *_SIZES, "sub_chunk", "decay"), "rnnkit.modern.GLACell"),
        (
            Mamba2Cell,
            lambda m: {**_config(m, *_SIZES[:3], "chunk_size"), "state_size": m.key_size},
            "rnnkit.modern.Mamba2Cell",
        ),
        (MLSTMCell, lambda m: _config(m, *_SIZES, "forget", "decay"), "rnnkit.modern.MLSTMCell"),
        (DeltaNetCell, lambda m: _config(m, *_SIZES), "rnnkit.modern.DeltaNetCell"),
        (GatedDeltaNetCell, lambda m: _config(m, *_SIZES), "rnnkit.modern.GatedDeltaNetCell"),
        (
            MatrixMixer,
            lambda m: {
                **_config(m, "cell", "conv_channels", "conv_silu"),
                "conv_width": 4 if m.conv is None else m.conv.width,
            },
            "rnnkit.modern.MatrixMixer",
        ),
    ]
