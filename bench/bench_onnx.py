"""Batch-1 streaming through ONNX Runtime beside eager PyTorch, per step (issue 18, item 3).

Each cell's step function is exported with ``rnnkit.export_step_onnx`` and run with
``rnnkit.serving.OnnxStepper`` (onnxruntime, 1 intra-op thread), feeding each new state back,
as a streaming server does; the same cell runs eagerly in PyTorch (1 thread, ``no_grad``,
``cell(x, state)`` per step). References: ``nn.LSTM`` called on one step at a time,
``nn.LSTMCell`` per step, and ``nn.LSTM`` over a whole T=100 sequence divided by T (the
figure ``bench/run.py``'s batch1 cases compare against). Shapes as ``bench/run.py``'s batch1
cases: B=1, I=128, H=256 (GRU-D: D=128 variables, input 3D). Each round runs a cell eagerly,
then streamed step by step through ONNX Runtime, then as a whole sequence through ONNX Runtime:
``Recurrence(cell)`` exported with ``rnnkit.export_onnx`` (ONNX's own LSTM/GRU/RNN operator
for a standard cell, a Scan over the step graph for any other) and run in one call per
sequence; medians of ``--rounds`` rounds.

    .venv/bin/python bench/bench_onnx.py              # the table, Markdown
    .venv/bin/python bench/bench_onnx.py --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit import (
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    RNNCell,
    SequenceBatch,
    export_onnx,
    export_step_onnx,
)
from rnnkit.cells import as_tuple
from rnnkit.serving import OnnxStepper
from rnnkit.testing import CoupledLSTMCell

SIZE, H, T = 128, 256, 100


CELLS: dict[str, Callable[[], nn.Module]] = {
    "RNNCell (tanh)": lambda: RNNCell(SIZE, H),
    "LSTMCell": lambda: LSTMCell(SIZE, H),
    "LSTMCell (peepholes)": lambda: LSTMCell(SIZE, H, peepholes=True),
    "LSTMCell (layer_norm)": lambda: LSTMCell(SIZE, H, layer_norm=True),
    "GRUCell (reset='after')": lambda: GRUCell(SIZE, H),
    "GRUCell (reset='before', CNTK)": lambda: GRUCell(SIZE, H, reset="before"),
    "MinGRUCell": lambda: MinGRUCell(SIZE, H),
    "MinLSTMCell": lambda: MinLSTMCell(SIZE, H),
    "GRUDCell (D=128)": lambda: GRUDCell(SIZE, H),
    "user CoupledLSTMCell": lambda: CoupledLSTMCell(SIZE, H),
}


def _per_step(run: Callable[[], None], steps: int) -> float:
    """Microseconds per step of ``run`` (which does ``steps`` steps)."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / steps * 1e6


def _inputs(cell: nn.Module, gen: torch.Generator) -> Tensor:
    size = int(getattr(cell, "input_size", 0))
    if not isinstance(cell, GRUDCell):
        return torch.randn(T, 1, size, generator=gen)
    d = size // 3
    mask = (torch.rand(T, 1, d, generator=gen) < 0.7).float()
    values = torch.randn(T, 1, d, generator=gen) * mask
    return torch.cat([values, mask, torch.rand(T, 1, d, generator=gen) * 3], dim=-1)


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    folder = Path(tempfile.mkdtemp())
    lstm = nn.LSTM(SIZE, H).eval()
    seq = torch.randn(T, 1, SIZE, generator=gen)

    def lstm_steps() -> None:
        state = None
        for t in range(T):
            _, state = lstm(seq[t : t + 1], state)

    def lstm_sequence() -> None:
        lstm(seq)

    lstm_cell = nn.LSTMCell(SIZE, H).eval()

    def lstm_cell_steps() -> None:
        state = None
        for t in range(T):
            state = lstm_cell(seq[t], state)

    rows = []
    with torch.no_grad():
        ref_step = statistics.median(_per_step(lstm_steps, T) for _ in range(args.rounds))
        ref_seq = statistics.median(_per_step(lstm_sequence, T) for _ in range(args.rounds))
        ref_cell = statistics.median(_per_step(lstm_cell_steps, T) for _ in range(args.rounds))
        for name, build in CELLS.items():
            cell = build().eval()
            path = folder / "step.onnx"
            export_step_onnx(cell, path)
            stepper = OnnxStepper(path, threads=1)
            x = _inputs(cell, gen)
            xs = [x[t].numpy() for t in range(T)]

            def eager(cell: nn.Module = cell, x: Tensor = x) -> None:
                state = as_tuple(cell.initial_state(1))  # type: ignore[operator]
                for t in range(T):
                    state = as_tuple(cell(x[t], state if len(state) > 1 else state[0]))

            def onnx(stepper: OnnxStepper = stepper, xs: list[Any] = xs) -> None:
                state = stepper.initial_state(1)
                for step in xs:
                    state = stepper.step(step, state)

            model = Recurrence(cell)
            export_onnx(model, folder / "model.onnx", SequenceBatch.from_list([x[:, 0]]))
            session = _session(folder / "model.onnx")
            feed = {"x": x.transpose(0, 1).numpy(), "lengths": np.array([T], dtype=np.int64)}
            got = session.run(None, feed)[0][0]
            want = model(SequenceBatch.from_list([x[:, 0]])).data.numpy()
            if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
                raise RuntimeError(f"{name}: the exported sequence differs from the model")

            def sequence(session: Any = session, feed: dict[str, Any] = feed) -> None:
                session.run(None, feed)

            eager_us, onnx_us, sequence_us = [], [], []
            for _ in range(args.rounds):
                eager_us.append(_per_step(eager, T))
                onnx_us.append(_per_step(onnx, T))
                sequence_us.append(_per_step(sequence, T))
            rows.append(
                (
                    name,
                    statistics.median(eager_us),
                    statistics.median(onnx_us),
                    statistics.median(sequence_us),
                )
            )
    print(
        f"B=1, I={SIZE}, H={H}; microseconds per step, median of {args.rounds} rounds of {T} steps"
    )
    print(
        f"nn.LSTM eager, one step per call: {ref_step:.1f} us; over T={T} in one call: "
        f"{ref_seq:.1f} us per step; nn.LSTMCell: {ref_cell:.1f} us per step\n"
    )
    print(
        "| cell | eager PyTorch (us/step) | ONNX Runtime (us/step) | ORT / eager | "
        "ORT / nn.LSTMCell | ORT / nn.LSTM sequence | ORT whole sequence (us/step) | "
        "whole / nn.LSTM sequence |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, e, o, w in rows:
        print(
            f"| {name} | {e:.1f} | {o:.1f} | {o / e:.2f} | {o / ref_cell:.2f} | "
            f"{o / ref_seq:.2f} | {w:.1f} | {w / ref_seq:.2f} |"
        )


if __name__ == "__main__":
    main()
