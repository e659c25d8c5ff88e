"""Would compiling a custom cell meet the batch-1 target? A probe, not a case of the suite.

The layer-normalised LSTM (I=128, H=256) at batch 1 over T=100 steps, forward without
gradients, one torch thread. Three ways, all from the same weights and checked equal:

* ``eager``: ``Recurrence(cell)``, the engine's loop (one ``cell.step`` call per step);
* ``compiled step``: the same loop with ``cell.step`` replaced by ``torch.compile(cell.step)``;
* ``compiled loop``: the whole 100-step loop written out in one function and compiled as one
  graph (the inductor backend fuses each step's element-wise work into C++ kernels).

    python bench/probe_compile.py [--steps 100] [--repeats 20]

Prints one JSON line: microseconds per step for each, and the seconds each compilation took.
The figures are quoted in bench/README.md (batch 1). Needs a C++ compiler for inductor.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor

from rnnkit import LSTMCell, Recurrence, SequenceBatch


def per_step(fn: Callable[[], Tensor], steps: int, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = args.steps
    cell = LSTMCell(128, 256, layer_norm=True)
    xs = torch.randn(t, 128)
    x = SequenceBatch.from_list([xs])
    layer = Recurrence(cell)

    def unrolled() -> Tensor:
        proj = cell.input_projection(xs)
        state = cell.initial_state(1)
        outs = []
        for k in range(t):
            state = cell.step(proj[k : k + 1], state)
            outs.append(state[0])
        return torch.cat(outs)

    row: dict[str, object] = {"case": "lnlstm batch 1, forward", "steps": t, "threads": 1}
    with torch.no_grad():
        want = layer(x).data
        row["eager_us_per_step"] = round(per_step(lambda: layer(x).data, t, args.repeats), 1)

        eager_step = cell.step
        start = time.perf_counter()
        cell.step = torch.compile(eager_step, dynamic=False)  # type: ignore[method-assign]
        got = layer(x).data
        row["compiled_step_compile_s"] = round(time.perf_counter() - start, 1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        row["compiled_step_us_per_step"] = round(
            per_step(lambda: layer(x).data, t, args.repeats), 1
        )
        cell.step = eager_step  # type: ignore[method-assign]

        compiled = torch.compile(unrolled, dynamic=False, fullgraph=True)
        start = time.perf_counter()
        got = compiled()
        row["compiled_loop_compile_s"] = round(time.perf_counter() - start, 1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        row["compiled_loop_us_per_step"] = round(per_step(compiled, t, args.repeats), 1)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
