"""Would compiling a custom cell meet the batch-1 target? A probe, not a case of the suite.

The layer-normalised LSTM (I=128, H=256) at batch 1 over T=100 steps, forward without
gradients, one torch thread. Three ways, all from the same weights and checked equal:

* ``eager``: ``Recurrence(cell)``, the engine's loop (one ``cell.step`` call per step);
* ``compiled step``: the same loop with ``cell.step`` replaced by ``torch.compile(cell.step)``;
* ``compiled loop``: the whole 100-step loop written out in one function and compiled as one
  graph (the inductor backend fuses each step's element-wise work into C++ kernels);
* ``compiled scan``: the cell's step function inside torch's ``scan`` operator
  (``torch._higher_order_ops.scan``, a prototype), compiled whole: one step's graph, fused
  once and run T times, so the compilation does not grow with T;
* ``nn.LSTM``: torch's own LSTM (no layer norm) on the same input, the batch-1 reference.

    python bench/probe_compile.py [--steps 100] [--repeats 20]

Prints one JSON line: microseconds per step for each, and the seconds each compilation took.
The figures are quoted in bench/README.md (batch 1). Needs a C++ compiler for inductor.

    python bench/probe_compile.py --train [--repeats 10]

The training case instead (issue 18, item 1): ``torch.compile(Bidirectional(LSTMCell,
LSTMCell))`` against the eager layer, forward and backward over a ragged batch (B=64, lengths
10..100, I=128, H=256), both on the fused kernel (compiled: the custom operator
``rnnkit::fused_rnn``). One JSON line: seconds per step of each, the first compiled call (the
compile time) and the number of steps after which compiling has paid for itself, if it does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._higher_order_ops import scan

from rnnkit import Bidirectional, LSTMCell, Recurrence, SequenceBatch


def per_step(fn: Callable[[], Tensor], steps: int, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats / steps * 1e6


def train_case(repeats: int) -> dict[str, object]:
    """Eager against compiled Bidirectional LSTM training steps, the compile time included."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(10, 101, (64,), generator=g).tolist()
    x = SequenceBatch.from_list([torch.randn(n, 128, generator=g) for n in lengths])
    layer = Bidirectional(LSTMCell(128, 256), LSTMCell(128, 256))
    compiled = torch.compile(layer)

    def step(fn: Callable[[SequenceBatch], SequenceBatch]) -> Tensor:
        layer.zero_grad()
        out = fn(x).data
        out.square().sum().backward()
        return out.detach()

    start = time.perf_counter()
    got = step(compiled)
    compile_s = time.perf_counter() - start
    want = step(layer)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    times = {}
    for name, fn in (("eager", layer), ("compiled", compiled)):
        step(fn)
        start = time.perf_counter()
        for _ in range(repeats):
            step(fn)
        times[name] = (time.perf_counter() - start) / repeats
    saved = times["eager"] - times["compiled"]
    return {
        "case": "Bidirectional LSTM B=64 T=10..100 I=128 H=256, forward+backward",
        "threads": torch.get_num_threads(),
        "eager_s_per_step": round(times["eager"], 4),
        "compiled_s_per_step": round(times["compiled"], 4),
        "first_compiled_call_s": round(compile_s, 1),
        "break_even_steps": round(compile_s / saved) if saved > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train", action="store_true", help="the training case instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.train:
        print(json.dumps(train_case(args.repeats)))
        return
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

        step_fn = cell.step_function()

        def combine(state: tuple[Tensor, Tensor], px: Tensor) -> tuple[Any, Tensor]:
            h, c = step_fn(px, state)
            return (h, c), h.clone()  # scan refuses an output that aliases the carry

        def scanned() -> Tensor:
            proj = cell.input_projection(xs).unsqueeze(1)  # [T, 1, 4H]
            return scan(combine, cell.initial_state(1), proj)[1].squeeze(1)

        compiled_scan = torch.compile(scanned, dynamic=False, fullgraph=True)
        start = time.perf_counter()
        got = compiled_scan()
        row["compiled_scan_compile_s"] = round(time.perf_counter() - start, 1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        row["compiled_scan_us_per_step"] = round(per_step(compiled_scan, t, args.repeats), 1)
        lstm = torch.nn.LSTM(128, 256)
        row["nn_lstm_us_per_step"] = round(
            per_step(lambda: lstm(xs.unsqueeze(1))[0], t, args.repeats), 1
        )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
