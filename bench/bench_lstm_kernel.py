"""rnnkit's small-layer LSTM kernel (``rnnkit.lstm_kernel``) against torch's (oneDNN) on CPU.

For each layer shape (steps T, batch B, inputs I, hidden H) and torch thread count, both
kernels run one layer over the same padded ``[T, B, I]`` input from a zero state:
``train`` is the forward and the backward of the sum of the outputs and the final state (the
gradients of the input, the state and the four weight tensors), ``infer`` the forward under
``torch.no_grad()``. Before timing, the outputs and the gradients of the two are compared
(largest difference relative to the largest value). Each time is the best of 5 repeats of
enough calls to fill about 0.2 s; ``ratio`` is torch's time over the kernel's (above 1: the
kernel is faster). ``chosen`` is what the engine runs for that shape (``lstm_kernel.pays``).

    python bench/bench_lstm_kernel.py [--threads 1,2] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit import lstm_kernel

SHAPES = [  # (T, B, I, H)
    (18, 32, 40, 32),  # rnnkit forecast's demand window: 18 segments of 8 steps x 5 variables
    (26, 32, 16, 32),  # its CO2 window: 26 segments of 4 weeks x 4 variables
    (6, 128, 2, 32),  # its M1 window on a long file: 6 years, minibatches of 128
    (100, 1, 16, 16),
    (100, 8, 16, 16),
    (100, 32, 32, 32),
    (100, 32, 32, 48),
    (100, 32, 32, 64),
    (100, 128, 64, 64),
    (50, 32, 64, 96),
    (50, 32, 128, 128),
    (50, 64, 128, 128),
]
QUICK = SHAPES[:2]


def _time(fn: Callable[[], Any], budget: float = 0.2, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(3, int(budget / once))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _torch_lstm(x: Tensor, hx: tuple[Tensor, Tensor], weights: list[Tensor]) -> tuple[Tensor, ...]:
    vf: Any = torch._VF
    return tuple(vf.lstm(x, list(hx), weights, True, 1, 0.0, True, False, False))


def _largest_difference(a: list[Tensor], b: list[Tensor]) -> float:
    pairs = [(p.detach(), q.detach()) for p, q in zip(a, b, strict=True)]
    return max(float((p - q).abs().max() / q.abs().max().clamp(min=1e-30)) for p, q in pairs)


def measure(shape: tuple[int, int, int, int], threads: int) -> dict[str, Any]:
    """Times and differences of the two kernels at one shape and thread count."""
    torch.set_num_threads(threads)
    steps, batch, inputs, hidden = shape
    torch.manual_seed(0)
    layer = torch.nn.LSTM(inputs, hidden)
    weights = list(layer.parameters())
    x = torch.randn(steps, batch, inputs, requires_grad=True)
    zero = torch.zeros(1, batch, hidden)
    hx = (zero.clone().requires_grad_(), zero.clone().requires_grad_())
    wanted = [x, *hx, *weights]
    runs = {"torch": _torch_lstm, "kernel": lstm_kernel.lstm}
    found: dict[str, list[Tensor]] = {}
    for name, run in runs.items():
        out, h, c = run(x, hx, weights)
        found[name] = [out, h, c, *torch.autograd.grad(out.sum() + h.sum() + c.sum(), wanted)]
    row: dict[str, Any] = {
        "T": steps, "B": batch, "I": inputs, "H": hidden, "threads": threads,
        "largest_difference": _largest_difference(found["kernel"], found["torch"]),
        "chosen": "kernel" if lstm_kernel.pays(x, hidden, weights) else "torch",
    }  # fmt: skip
    for name, run in runs.items():

        def train(run: Callable[..., tuple[Tensor, ...]] = run) -> None:
            out, h, c = run(x, hx, weights)
            torch.autograd.grad(out.sum() + h.sum() + c.sum(), wanted)

        def infer(run: Callable[..., tuple[Tensor, ...]] = run) -> None:
            with torch.no_grad():
                run(x, hx, weights)

        row[f"{name}_train_ms"] = _time(train) * 1e3
        row[f"{name}_infer_ms"] = _time(infer) * 1e3
    row["train_ratio"] = row["torch_train_ms"] / row["kernel_train_ms"]
    row["infer_ratio"] = row["torch_infer_ms"] / row["kernel_infer_ms"]
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| T | B | I | H | threads | torch train ms | kernel train ms | ratio | torch infer ms "
        "| kernel infer ms | ratio | chosen | largest difference |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['B']} | {r['I']} | {r['H']} | {r['threads']} "
            f"| {r['torch_train_ms']:.3f} | {r['kernel_train_ms']:.3f} | {r['train_ratio']:.2f} "
            f"| {r['torch_infer_ms']:.3f} | {r['kernel_infer_ms']:.3f} | {r['infer_ratio']:.2f} "
            f"| {r['chosen']} | {r['largest_difference']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help="the first two shapes only")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args(argv)
    if not lstm_kernel.available():
        raise SystemExit("the native LSTM kernel is not available here (see rnnkit.lstm_kernel)")
    threads = [int(t) for t in args.threads.split(",")]
    rows = [measure(shape, t) for t in threads for shape in (QUICK if args.quick else SHAPES)]
    print(markdown(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
