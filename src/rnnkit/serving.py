"""Serving a cell's step function with onnxruntime (``rnnkit.serving.OnnxStepper``).

:func:`rnnkit.export_step_onnx` writes one step of a cell (state in, state out, dynamic
batch); :class:`OnnxStepper` runs it: :meth:`~OnnxStepper.step` for streaming, one step at a
time, and :meth:`~OnnxStepper.run` for whole padded batches ``x [B, T, I]`` with ``lengths``
(dynamic batch and length), each row's state frozen after its last step, as a Recurrence
gives. Checked against Recurrence in ``tests/test_onnx_cells.py``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["OnnxStepper"]

Array = NDArray[Any]


class OnnxStepper:
    """The step model at ``path`` in an onnxruntime session (``threads`` intra-op threads).

    States are tuples of ``[B, H_k]`` float arrays in the order of the cell's
    ``initial_state``; the first is the output.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "rnnkit.initial_state" not in meta:
            raise ValueError(
                f"path: expected a step model written by rnnkit.export_step_onnx (with "
                f"rnnkit.initial_state metadata), found {os.fspath(path)!r} without it"
            )
        self.dtype = np.float32 if "float)" in self.session.get_inputs()[0].type else np.float64
        self._initial = [
            np.asarray(v, dtype=self.dtype) for v in json.loads(meta["rnnkit.initial_state"])
        ]
        # state_k for every state tensor; the graph reads only some (an unread one is dropped)
        self.state_names = [f"state_{k}" for k in range(len(self._initial))]
        self._reads = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def initial_state(self, batch_size: int) -> tuple[Array, ...]:
        """The cell's initial state for ``batch_size`` rows."""
        return tuple(np.repeat(v[None], batch_size, axis=0) for v in self._initial)

    def step(self, x: Array, state: tuple[Array, ...] | None = None) -> tuple[Array, ...]:
        """One step: ``x [B, I]`` and the state (the initial state when None) -> new state."""
        if state is None:
            state = self.initial_state(x.shape[0])
        if len(state) != len(self.state_names):
            raise ValueError(
                f"state: expected {len(self.state_names)} state tensors, found {len(state)}"
            )
        feed = {"x": np.ascontiguousarray(x, dtype=self.dtype)}
        feed.update(
            (n, s) for n, s in zip(self.state_names, state, strict=True) if n in self._reads
        )
        return tuple(self.session.run(self.output_names, feed))

    def run(
        self, x: Array, lengths: Array, state: tuple[Array, ...] | None = None
    ) -> tuple[Array, tuple[Array, ...]]:
        """Padded ``x [B, T, I]`` and ``lengths [B]`` (each in ``1..T``) -> outputs
        ``[B, T, H]`` (zeros at padding) and each row's state after its last step.

        Step ``t`` runs on the rows still going (``t < length``); the batch shrinks as rows
        end when the longest come first, and every row's state stays as it was after its end.
        """
        if x.ndim != 3:
            raise ValueError(f"x: expected a padded batch [B, T, I], found shape {list(x.shape)}")
        batch, steps = x.shape[:2]
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > steps).any():
            raise ValueError(
                f"lengths: expected {batch} lengths in 1..{steps}, found {lengths.tolist()}"
            )
        states = [s.copy() for s in (self.initial_state(batch) if state is None else state)]
        outputs = np.zeros((batch, steps, states[0].shape[1]), dtype=self.dtype)
        for t in range(int(lengths.max())):
            rows = np.flatnonzero(lengths > t)
            active = rows.size == batch
            new = self.step(
                x[:, t] if active else x[rows, t], tuple(s if active else s[rows] for s in states)
            )
            for s, n in zip(states, new, strict=True):
                s[rows] = n
            outputs[rows, t] = new[0]
        return outputs, tuple(states)
