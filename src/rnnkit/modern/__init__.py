"""Modern recurrences in rnnkit's engine: diagonal linear RNNs and selective state spaces.

Each cell has three exact forms, proven equal by the tests: ``step`` (one input, state in and
out: streaming), the loop (``Recurrence(cell, backend='loop')``) and the parallel form
(``backend='scan'``: the cell's ``parallel(px, state, lengths)``, chosen by ``'auto'`` where
its measured rule ``parallel_pays`` says it beats the loop).

* :mod:`rnnkit.modern.scan`: :func:`linear_scan` (``h_t = a_t ⊙ h_{t-1} + b_t``, real or
  complex, with resets) and the packed stream of a ragged batch.
* :mod:`rnnkit.modern.diagonal`: :class:`LRUCell` (Orvieto et al. 2023), :class:`RGLRUCell`
  (De et al. 2024), :class:`S6Cell` (Gu & Dao 2023), and the mixers with a short causal
  convolution (:class:`ShortConv`, cached in the state for streaming): :class:`MambaCell`,
  :class:`HawkCell`.
* :mod:`rnnkit.modern.matrix` and :mod:`rnnkit.modern.delta`: matrix-state cells, each with a
  chunked parallel form: :class:`GLACell` (Yang et al. 2024), :class:`Mamba2Cell` (Dao & Gu
  2024), :class:`MLSTMCell` (Beck et al. 2024), :class:`DeltaNetCell` and
  :class:`GatedDeltaNetCell` (Yang et al. 2024-25, the WY representation).
* :mod:`rnnkit.modern.blocks`: :class:`ResidualBlock` (RMSNorm, mixer, gated MLP), the named
  builders :func:`Mamba`, :func:`Hawk`, :func:`LRU`, and :class:`SequenceModel` /
  :func:`stack`; :mod:`rnnkit.modern.matrix_blocks`: :class:`MatrixMixer` and the builders
  :func:`GLA`, :func:`Mamba2`, :func:`MLSTM`, :func:`DeltaNet`. One line builds a model of
  any kind: ``stack("gla", d_model=64, layers=4, input_size=I, output_size=O)``.

:func:`saved_modules` lists every savable class here, which :mod:`rnnkit.saving` registers, so
:func:`rnnkit.load` reads a saved model without importing this package first.
"""

from typing import Any

from rnnkit.modern import blocks, matrix_blocks
from rnnkit.modern.blocks import (
    BUILDERS,
    LRU,
    GatedMLP,
    Hawk,
    Mamba,
    ResidualBlock,
    RMSNorm,
    SequenceModel,
    SequenceStep,
    stack,
)
from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell, ShortConv
from rnnkit.modern.matrix import GLACell, Mamba2Cell, MatrixCell, MLSTMCell
from rnnkit.modern.matrix_blocks import (
    GLA,
    MATRIX_BUILDERS,
    MLSTM,
    DeltaNet,
    Mamba2,
    MatrixMixer,
    deltanet_mixer,
    gla_mixer,
    mamba2_mixer,
    mlstm_mixer,
)
from rnnkit.modern.scan import PackedStream, linear_scan, packed_stream, scan_packed


def saved_modules() -> list[tuple[type, Any, str]]:
    """``(class, to_config, name)`` of every savable class of this package, for
    :mod:`rnnkit.saving`."""
    return [*blocks.saved_modules(), *matrix_blocks.saved_modules()]


__all__ = [
    "BUILDERS",
    "GLA",
    "LRU",
    "MATRIX_BUILDERS",
    "MLSTM",
    "DeltaNet",
    "DeltaNetCell",
    "GLACell",
    "GatedDeltaNetCell",
    "GatedMLP",
    "Hawk",
    "HawkCell",
    "LRUCell",
    "MLSTMCell",
    "Mamba",
    "Mamba2",
    "Mamba2Cell",
    "MambaCell",
    "MatrixCell",
    "MatrixMixer",
    "PackedStream",
    "RGLRUCell",
    "RMSNorm",
    "ResidualBlock",
    "S6Cell",
    "SequenceModel",
    "SequenceStep",
    "ShortConv",
    "deltanet_mixer",
    "gla_mixer",
    "linear_scan",
    "mamba2_mixer",
    "mlstm_mixer",
    "packed_stream",
    "saved_modules",
    "scan_packed",
    "stack",
]
