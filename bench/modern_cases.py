"""Diagonal recurrences (LRU, RG-LRU, S6, the Mamba and Hawk mixers): the parallel form
(``Recurrence(cell, backend='scan')``) against the loop (``backend='loop'``) and against the
plainest PyTorch for-loop of the same equations, training (forward and backward of a sum of
the outputs), issue 20.

Config (small, as the papers' smallest): B=4 sequences of T steps; LRU H=128, N=128; RG-LRU
H=256; S6 D=128, N=16 (the SSM of a Mamba with d_model 64); Mamba d_model 64 (E=128, N=16);
Hawk d_model 128. Each case is ``ModernCase(name, subject, peer, build, target, note)``, the
first fields of ``bench/run.py``'s ``Case``; ``build(device) -> (subject_fn, peer_fn)``
checks that both sides agree before timing.

    .venv/bin/python bench/modern_cases.py                       # T = 1024, 4096, 16384
    .venv/bin/python bench/modern_cases.py --steps 4096 --cells lru --peer plain
    .venv/bin/python bench/modern_cases.py --tune                # where 'auto' switches
    .venv/bin/python bench/modern_cases.py --memory --steps 4096 # peak memory, scan vs loop
    .venv/bin/python bench/modern_cases.py --packed              # ragged: packed vs padded
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit import Recurrence, SequenceBatch
from rnnkit.cells import MinGRUCell, MinLSTMCell, as_tuple
from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell
from rnnkit.recurrence import packing_pays

Fn = Callable[[], object]
B = 4
STEPS = (1024, 4096, 16384)
TARGET = 1 / 5  # parallel at least 5x faster than the loop at T = 4096 (issue 20)
CELLS: dict[str, Callable[[], nn.Module]] = {
    "lru": lambda: LRUCell(128, 128),
    "rglru": lambda: RGLRUCell(256),
    "s6": lambda: S6Cell(128, 16),
    "mamba": lambda: MambaCell(64, 16),
    "hawk": lambda: HawkCell(128),
}


@dataclass(frozen=True)
class ModernCase:
    name: str
    subject: str
    peer: str
    build: Callable[[torch.device], tuple[Fn, Fn]]
    target: float | None = None
    note: str = ""


def plain_loop(cell: nn.Module, x: Tensor) -> Tensor:
    """The plainest PyTorch loop of the cell's equations over ``x [T, B, I]`` (equal
    lengths), written out here, not through the cell's step: the outputs ``[T, B, H]``."""
    steps, batch = x.shape[:2]
    outs = []
    if isinstance(cell, LRUCell):
        n = cell.state_size
        lam = torch.exp(torch.complex(-torch.exp(cell.nu_log), torch.exp(cell.theta_log)))
        b_mat = torch.complex(cell.weight_ih[:n], cell.weight_ih[n:])
        c_mat = torch.complex(cell.C_re, cell.C_im)
        gamma = torch.exp(cell.gamma_log)
        h = torch.zeros(batch, n, dtype=torch.complex64, device=x.device)
        for t in range(steps):
            h = lam * h + gamma * (x[t].to(torch.complex64) @ b_mat.t())
            outs.append((h @ c_mat.t()).real + cell.D * x[t])
    elif isinstance(cell, RGLRUCell):
        hsz = cell.hidden_size
        h = x.new_zeros(batch, hsz)
        for t in range(steps):
            gates = torch.sigmoid(x[t] @ cell.weight_ih.t() + cell.bias_ih)
            r, i = gates[:, :hsz], gates[:, hsz:]
            a = torch.sigmoid(cell.log_lambda) ** (cell.c * r)
            h = a * h + torch.sqrt(1 - a**2) * (i * x[t])
            outs.append(h)
    elif isinstance(cell, S6Cell):
        r, n = cell.dt_rank, cell.state_size
        a_mat = -torch.exp(cell.A_log)
        h = x.new_zeros(batch, cell.hidden_size, n)
        for t in range(steps):
            proj = x[t] @ cell.weight_ih.t()
            delta, b_t, c_t = proj[:, :r], proj[:, r : r + n], proj[:, r + n :]
            dt = nn.functional.softplus(delta @ cell.weight_dt.t() + cell.bias_dt)
            h = torch.exp(dt[..., None] * a_mat) * h + (dt * x[t])[..., None] * b_t[:, None]
            outs.append((h * c_t[:, None]).sum(-1) + cell.D_skip * x[t])
    else:
        raise TypeError(f"cell: no plain loop for {type(cell).__name__}")
    return torch.stack(outs)


def _train(module: nn.Module, loss: Callable[[], Tensor]) -> Fn:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        loss().backward()

    return run


def parallel_case(kind: str, steps: int, peer: str = "loop", batch: int = B) -> ModernCase:
    """``kind``'s parallel form against its loop (``peer='loop'``) or the plain for-loop, on
    ``batch`` sequences of ``steps`` steps."""

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = CELLS[kind]().to(device)
        g = torch.Generator().manual_seed(7)
        x = SequenceBatch.from_list(
            [torch.randn(steps, cell.input_size, generator=g).to(device) for _ in range(batch)]
        )
        scan = Recurrence(cell, backend="scan")
        if peer == "loop":
            other = Recurrence(cell, backend="loop")

            def peer_out() -> Tensor:
                return other(x).data

        else:
            padded = x.to_padded_time_major()

            def peer_out() -> Tensor:
                return plain_loop(cell, padded).flatten(0, 1)

        with torch.no_grad():
            check = min(steps, 256)
            short = SequenceBatch.from_list([s[:check] for s in x.to_list()])
            want = (
                Recurrence(cell, backend="loop")(short).data
                if peer == "loop"
                else plain_loop(cell, short.to_padded_time_major()).flatten(0, 1)
            )
            got = scan(short).data
            if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                raise AssertionError(f"{kind}: parallel and {peer} differ")
        return _train(cell, lambda: scan(x).data.sum()), _train(cell, lambda: peer_out().sum())

    return ModernCase(
        f"modern/{kind}/{peer}/B{batch}-T{steps}",
        f"{kind} 'scan' forward+backward",
        f"{'loop' if peer == 'loop' else 'plain for-loop'} forward+backward",
        build,
        TARGET if steps == 4096 and peer == "loop" else None,
    )


def cases(
    steps: tuple[int, ...] = STEPS, kinds: tuple[str, ...] = tuple(CELLS)
) -> list[ModernCase]:
    out = [parallel_case(k, t) for k in kinds for t in steps]
    out += [
        parallel_case(k, t, "plain") for k in kinds if k in ("lru", "rglru", "s6") for t in steps
    ]
    return out


def measure(case: ModernCase, device: torch.device, rounds: int) -> tuple[float, float]:
    """Median seconds of subject and peer over ``rounds`` interleaved runs (one warm-up)."""
    subject, peer = case.build(device)
    subject()
    peer()
    s_times, p_times = [], []
    for _ in range(rounds):
        for fn, times in ((subject, s_times), (peer, p_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(s_times), statistics.median(p_times)


def _status_kib(key: str) -> int:
    found = re.search(rf"^{key}:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if found is None:
        raise RuntimeError(f"/proc/self/status: no {key} line")
    return int(found.group(1))


def memory_probe(kind: str, steps: int, backend: str) -> int:
    """Peak resident memory growth (bytes, Linux) of one training step of ``kind`` on
    ``backend`` over B sequences of ``steps`` steps, the model and input built before the
    high-water mark is reset."""
    torch.manual_seed(0)
    cell = CELLS[kind]()
    x = SequenceBatch.from_list([torch.randn(steps, cell.input_size) for _ in range(B)])
    layer = Recurrence(cell, backend=backend)  # type: ignore[arg-type]
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    layer(x).data.sum().backward()
    return (_status_kib("VmHWM") - before) * 1024


def memory(kinds: list[str], steps: list[int]) -> None:
    """Peak memory of a training step, parallel against loop, each in a fresh process."""
    for kind in kinds:
        for t in steps:
            peaks = {}
            for backend in ("scan", "loop"):
                command = [sys.executable, __file__, "--memory-probe", kind, str(t), backend]
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                peaks[backend] = int(out.stdout.strip().splitlines()[-1])
            print(
                f"memory/{kind}/B{B}-T{t}: scan {peaks['scan'] / 2**20:.0f} MiB, loop "
                f"{peaks['loop'] / 2**20:.0f} MiB, ratio {peaks['scan'] / peaks['loop']:.2f}",
                flush=True,
            )


def tune(device: torch.device) -> None:
    """Parallel vs loop at short T, training: where ``parallel_pays`` should switch."""
    for kind in CELLS:
        for steps in (2, 4, 8, 16, 32, 64):
            for batch in (1, 16, 64):
                s, p = measure(parallel_case(kind, steps, batch=batch), device, 5)
                print(f"tune {kind} T={steps} B={batch}: scan/loop {s / p:.2f}", flush=True)


PACKED_SHAPES = (  # B, shortest, longest, width
    (16, 10, 1000, 128),
    (64, 10, 200, 64),
    (8, 500, 4000, 128),
    (32, 100, 1000, 64),
    (32, 900, 1000, 64),
    (4, 100, 1000, 256),
    (128, 10, 100, 32),
    (16, 10, 1000, 16),
    (64, 10, 1000, 128),
)


def packed_vs_padded(rounds: int = 7, only: Sequence[str] | None = None) -> None:
    """The two parallel forms the ``'scan'`` path has for a ragged batch, forward and backward
    from the input projection on: ``parallel_packed`` on the packed rows in the batch's lanes
    (what ``packing_pays`` picks) against ``parallel`` on the padding ``[T, B, H]`` (what it
    ran before), for RG-LRU (width H), LRU (H = N = width), the Hawk mixer (d_model = width),
    S6 (D = width, N = 16) and the Mamba mixer (d_model = width / 2, so E = width),
    interleaved; outputs and final
    states checked equal first."""
    g = torch.Generator().manual_seed(0)
    for batch, low, high, width in PACKED_SHAPES:
        lengths = torch.randint(low, high + 1, (batch,), generator=g).tolist()
        x = SequenceBatch.from_list([torch.randn(t, width, generator=g) for t in lengths])
        lanes = x.lanes
        fill = sum(lengths) / (batch * max(lengths))
        cells = (
            ("RG-LRU", RGLRUCell(width)),
            ("LRU", LRUCell(width, width)),
            ("Hawk", HawkCell(width)),
            ("S6", S6Cell(width)),
            ("Mamba", MambaCell(width // 2)),
            ("minGRU", MinGRUCell(width, width)),
            ("minLSTM", MinLSTMCell(width, width)),
        )
        for name, cell in cells:
            if only and name not in only:
                continue
            inputs = x.with_data(x.data[:, : cell.input_size].contiguous())
            pad, pack = packed_and_padded(cell, inputs, rounds)
            print(
                f"{name} B={batch} lengths {low}-{high} width {width} (padding {fill:.2f} "
                f"full, {lanes.width} lanes): padded {pad * 1e3:.1f} ms, packed "
                f"{pack * 1e3:.1f} ms, packed/padded {pack / pad:.2f}; auto runs "
                f"{'packed' if packing_pays(cell, x) else 'padded'}",
                flush=True,
            )


def packed_and_padded(cell: nn.Module, x: SequenceBatch, rounds: int) -> tuple[float, float]:
    """Median seconds of ``cell``'s padded and packed parallel forms over ``x``."""
    state = as_tuple(cell.initial_state(x.batch_size))
    data = x.data.clone().requires_grad_()

    def padded() -> tuple[Tensor, ...]:
        px = x.with_data(cell.input_projection(data)).to_padded_time_major()
        if not hasattr(cell, "parallel"):  # minGRU, minLSTM: every state, then the last
            rows = cell.scan(px, state[0]).flatten(0, 1)
            return rows.index_select(0, x.padded_index), rows.index_select(0, x.last_padded_index)
        out, final = cell.parallel(px, state, x.sorted_lengths)
        return (out.flatten(0, 1).index_select(0, x.padded_index), *final)

    def packed() -> tuple[Tensor, ...]:
        out, final = cell.parallel_packed(cell.input_projection(data), state, x)
        return (out, *final)

    with torch.no_grad():
        for want, got in zip(padded(), packed(), strict=True):
            if not torch.allclose(want, got, atol=1e-4):
                raise AssertionError("packed and padded parallel forms differ")
    times: dict[str, list[float]] = {"padded": [], "packed": []}
    for _ in range(rounds):
        for name, fn in (("padded", padded), ("packed", packed)):
            start = time.perf_counter()
            sum(t.sum() for t in fn()).backward()  # type: ignore[union-attr]
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["padded"]), statistics.median(times["packed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--peer", choices=["loop", "plain", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak memory, scan vs loop")
    parser.add_argument("--memory-probe", nargs=3, metavar=("CELL", "T", "BACKEND"))
    parser.add_argument(
        "--packed", action="store_true", help="a ragged batch's parallel form, packed vs padded"
    )
    parser.add_argument(
        "--packed-cells", nargs="+", default=None, help="--packed: only these (e.g. minGRU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.packed:
        packed_vs_padded(only=args.packed_cells)
        return
    if args.memory_probe:
        kind, steps, backend = args.memory_probe
        print(memory_probe(kind, int(steps), backend))
        return
    if args.memory:
        memory(args.cells, args.steps)
        return
    device = torch.device(args.device)
    if args.tune:
        tune(device)
        return
    for kind in args.cells:
        for steps in args.steps:
            for peer in ("loop", "plain") if args.peer == "both" else (args.peer,):
                if peer == "plain" and kind not in ("lru", "rglru", "s6"):
                    continue
                case = parallel_case(kind, steps, peer)
                rounds = 1 if steps > 4096 else args.rounds
                s, p = measure(case, device, rounds)
                verdict = (
                    "" if case.target is None else (" PASS" if s / p <= case.target else " MISS")
                )
                print(
                    f"{case.name}: scan {s * 1e3:.0f} ms, {peer} {p * 1e3:.0f} ms, "
                    f"speed-up {p / s:.1f}x{verdict}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
