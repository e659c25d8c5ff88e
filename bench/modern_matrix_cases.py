"""Matrix-state recurrences (GLA, Mamba-2, mLSTM, DeltaNet, Gated DeltaNet): the chunked
parallel form against the loop and against the plainest PyTorch for-loop (issue 20).

Training (forward and backward of the sum of the outputs) at a small paper-like config:
B=4 sequences of T steps, I=H=256, 4 heads (d_k 32 for GLA's keys and Mamba-2's state, 64
for mLSTM and the delta rule). Each case is ``MatrixCase(name, subject, peer, build, target,
note)``, the first fields of ``bench/run.py``'s ``Case``; ``build(device) -> (subject_fn,
peer_fn)`` checks that both sides agree before timing.

    .venv/bin/python bench/modern_matrix_cases.py                  # T = 1024, 4096, 16384
    .venv/bin/python bench/modern_matrix_cases.py --steps 4096 --cells gla --peer plain
    .venv/bin/python bench/modern_matrix_cases.py --chunks 32 64 128 --steps 4096  # tuning
    .venv/bin/python bench/modern_matrix_cases.py --packed         # ragged: chunk lanes vs padded
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit import Recurrence, SequenceBatch
from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
from rnnkit.modern.matrix import GLACell, Mamba2Cell, MLSTMCell

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modern_cases import (  # bench/ is not a package: its folder is on the path
    PACKED_SHAPES,
    ModernCase,
    packed_and_padded,
)

from rnnkit.recurrence import packing_pays

Fn = Callable[[], object]
B, WIDTH, HEADS = 4, 256, 4
STEPS = (1024, 4096, 16384)
TARGET = 1 / 3  # chunked at least 3x faster than the loop at T = 4096 (issue 20)
# each cell at its default chunk size (GLA 16 with sub-chunks of 8, the others 64)
CELLS: dict[str, Callable[..., nn.Module]] = {
    "gla": lambda **chunk: GLACell(WIDTH, WIDTH, HEADS, 32, **chunk),
    "mamba2": lambda **chunk: Mamba2Cell(WIDTH, WIDTH, HEADS, 32, **chunk),
    "mlstm": lambda **chunk: MLSTMCell(WIDTH, WIDTH, HEADS, 64, **chunk),
    "deltanet": lambda **chunk: DeltaNetCell(WIDTH, WIDTH, HEADS, 64, **chunk),
    "gated_deltanet": lambda **chunk: GatedDeltaNetCell(WIDTH, WIDTH, HEADS, 64, **chunk),
}


MatrixCase = ModernCase  # one case type for both halves of issue 20's bench


def plain_loop(cell: nn.Module, px: Tensor) -> Tensor:
    """The plainest PyTorch loop of the cell's equations over ``px [T, B, G]`` (equal
    lengths): one state update per step, written out with ``einsum``, no chunks. The steps
    are taken by iterating over the tensors (``unbind``): indexing ``q[t]`` instead makes the
    backward quadratic in T (each selection's gradient is a zero tensor of the whole
    ``[T, ...]``): 137 s instead of 5.4 s for GLA at T=4096."""
    steps, batch = px.shape[:2]
    outs = []
    if isinstance(cell, GLACell):
        q, k, v, log_alpha = cell.features(px)
        s = px.new_zeros(batch, cell.heads, cell.key_size, cell.value_size)
        for q_t, k_t, v_t, g_t in zip(q, k, v, log_alpha, strict=True):
            s = torch.exp(g_t).unsqueeze(-1) * s + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
            outs.append(torch.einsum("bhk,bhkv->bhv", q_t, s))
    elif isinstance(cell, Mamba2Cell):
        x, bm, cm, dt = cell.features(px)
        a = torch.exp(dt * -torch.exp(cell.A_log))
        s = px.new_zeros(batch, cell.heads, cell.key_size, cell.value_size)
        for x_t, b_t, c_t, dt_t, a_t in zip(x, bm, cm, dt, a, strict=True):
            u = torch.einsum("bh,bn,bhv->bhnv", dt_t, b_t, x_t)
            s = a_t[..., None, None] * s + u
            outs.append(torch.einsum("bn,bhnv->bhv", c_t, s) + cell.D.unsqueeze(-1) * x_t)
    elif isinstance(cell, MLSTMCell):
        q, k, v, log_i, log_f, o = cell.features(px)
        c = px.new_zeros(batch, cell.heads, cell.key_size, cell.value_size)
        n = px.new_zeros(batch, cell.heads, cell.key_size)
        m = px.new_zeros(batch, cell.heads)
        for q_t, k_t, v_t, li_t, lf_t in zip(q, k, v, log_i, log_f, strict=True):
            m_new = torch.maximum(lf_t + m, li_t)
            f, i = torch.exp(lf_t + m - m_new), torch.exp(li_t - m_new)
            c = f[..., None, None] * c + i[..., None, None] * torch.einsum(
                "bhk,bhv->bhkv", k_t, v_t
            )
            n = f[..., None] * n + i[..., None] * k_t
            den = torch.maximum(torch.einsum("bhk,bhk->bh", q_t, n).abs(), torch.exp(-m_new))
            outs.append(torch.einsum("bhk,bhkv->bhv", q_t, c) / den[..., None])
            m = m_new
        return torch.stack(outs).flatten(2) * o
    else:
        q, k, v, beta, log_alpha = cell.features(px)
        s = px.new_zeros(batch, cell.heads, cell.key_size, cell.value_size)
        gates = [None] * steps if log_alpha is None else log_alpha.unbind(0)
        for q_t, k_t, v_t, beta_t, g_t in zip(q, k, v, beta, gates, strict=True):
            if g_t is not None:
                s = torch.exp(g_t)[..., None, None] * s
            read = torch.einsum("bhk,bhkv->bhv", k_t, s)
            s = s + torch.einsum("bhk,bhv->bhkv", k_t, beta_t[..., None] * (v_t - read))
            outs.append(torch.einsum("bhk,bhkv->bhv", q_t, s))
    return torch.stack(outs).flatten(2)


def _train_step(cell: nn.Module, loss: Callable[[], Tensor]) -> Fn:
    params = list(cell.parameters())

    def step() -> object:
        for p in params:
            p.grad = None
        loss().backward()
        return None

    return step


def matrix_case(kind: str, steps: int, peer: str = "loop", chunk: int | None = None) -> MatrixCase:
    """The chunked form of ``kind`` against ``peer``: ``'loop'`` (Recurrence's loop) or
    ``'plain'`` (:func:`plain_loop`), training at ``T = steps``; ``chunk`` None: the cell's
    default chunk size."""
    sizes = {} if chunk is None else {"chunk_size": chunk}
    if kind == "gla" and chunk is not None:
        sizes["sub_chunk"] = min(8, chunk)

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = CELLS[kind](**sizes).to(device)
        x = SequenceBatch.from_list([torch.randn(steps, WIDTH, device=device) for _ in range(B)])
        chunked = Recurrence(cell, backend="scan")
        if peer == "loop":
            loop = Recurrence(cell, backend="loop")

            def other() -> Tensor:
                return loop(x).data
        else:

            def other() -> Tensor:
                px = cell.input_projection(x.data).view(steps, B, -1)
                return plain_loop(cell, px).flatten(0, 1)

        with torch.no_grad():
            a, b = chunked(x).data, other()
            error = float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
            if error > 1e-4:
                raise RuntimeError(f"{kind}: chunked and {peer} disagree by {error:.2e}")
        return (
            _train_step(cell, lambda: chunked(x).data.sum()),
            _train_step(cell, lambda: other().sum()),
        )

    return MatrixCase(
        f"modern/{kind}/{peer}/B{B}-T{steps}",
        f"{kind} chunked ({'default chunk' if chunk is None else f'L={chunk}'}) forward+backward",
        f"{peer} forward+backward",
        build,
        TARGET if steps == 4096 and peer == "loop" else None,
        f"B={B}, I=H={WIDTH}, heads={HEADS}",
    )


def matrix_cases() -> list[MatrixCase]:
    """Every cell against the loop and the plain loop at T = 1024, 4096, 16384."""
    return [
        matrix_case(kind, steps, peer)
        for kind in CELLS
        for steps in STEPS
        for peer in ("loop", "plain")
    ]


def _timed(fn: Fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(case: MatrixCase, rounds: int) -> tuple[float, float, float]:
    """Median subject and peer seconds and the median per-round ratio, interleaved."""
    subject, peer = case.build(torch.device("cpu"))
    _timed(subject), _timed(peer)
    a_times, b_times, ratios = [], [], []
    for r in range(rounds):
        if r % 2:
            b, a = _timed(peer), _timed(subject)
        else:
            a, b = _timed(subject), _timed(peer)
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    return statistics.median(a_times), statistics.median(b_times), statistics.median(ratios)


def peak_memory(kind: str, steps: int, backend: str) -> float:
    """MiB of peak resident memory that one training step of ``kind`` on ``backend`` adds,
    measured in a fresh interpreter (``ru_maxrss`` after the step minus before it)."""
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import resource, sys, torch; sys.path.insert(0, {here!r}); "
        "from modern_matrix_cases import CELLS, B, WIDTH; "
        "from rnnkit import Recurrence, SequenceBatch; torch.set_num_threads(1); "
        f"cell = CELLS[{kind!r}](); "
        f"x = SequenceBatch.from_list([torch.randn({steps}, WIDTH) for _ in range(B)]); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"Recurrence(cell, backend={backend!r})(x).data.sum().backward(); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def packed_vs_padded(kinds: list[str], rounds: int) -> None:
    """The two chunked forms the ``'scan'`` path has for a ragged batch, forward and backward
    from the input projection on: ``parallel_packed`` in the batch's chunk lanes (each
    sequence from a chunk boundary; what ``packing_pays`` picks where they are fewer than the
    sequences) against ``parallel`` on the padding, over ``modern_cases.PACKED_SHAPES``
    (I = H = width, 4 heads, each cell's default chunk size), outputs and final states
    checked equal first."""
    g = torch.Generator().manual_seed(0)
    for batch, low, high, width in PACKED_SHAPES:
        lengths = torch.randint(low, high + 1, (batch,), generator=g).tolist()
        x = SequenceBatch.from_list([torch.randn(t, width, generator=g) for t in lengths])
        fill = sum(lengths) / (batch * max(lengths))
        for kind in kinds:
            cell = PACKED_CELLS[kind](width)
            lanes = cell.packing_lanes(x)
            pad, pack = packed_and_padded(cell, x, rounds)
            print(
                f"{kind} B={batch} lengths {low}-{high} width {width} (padding {fill:.2f} "
                f"full, {lanes.width} chunk lanes of {cell.chunk_size}): padded "
                f"{pad * 1e3:.1f} ms, packed {pack * 1e3:.1f} ms, packed/padded "
                f"{pack / pad:.2f}; auto runs {'packed' if packing_pays(cell, x) else 'padded'}",
                flush=True,
            )


PACKED_CELLS: dict[str, Callable[[int], nn.Module]] = {
    "gla": lambda w: GLACell(w, w, HEADS),
    "mamba2": lambda w: Mamba2Cell(w, w, HEADS),
    "mlstm": lambda w: MLSTMCell(w, w, HEADS),
    "deltanet": lambda w: DeltaNetCell(w, w, HEADS),
    "gated_deltanet": lambda w: GatedDeltaNetCell(w, w, HEADS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--peer", nargs="+", default=["loop", "plain"], choices=["loop", "plain"])
    parser.add_argument("--chunks", nargs="+", type=int, default=[None])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--memory", action="store_true", help="peak memory of chunked and loop instead"
    )
    parser.add_argument(
        "--packed", action="store_true", help="a ragged batch: chunk lanes against the padding"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.packed:
        packed_vs_padded(args.cells, args.rounds)
        return
    if args.memory:
        print("case | chunked MiB | loop MiB")
        for kind in args.cells:
            for steps in args.steps:
                chunked, loop = (peak_memory(kind, steps, b) for b in ("scan", "loop"))
                print(f"memory/{kind}/T{steps} | {chunked:.0f} | {loop:.0f}", flush=True)
        return
    print("case | chunked s | peer s | chunked/peer | speed-up")
    for kind in args.cells:
        for steps in args.steps:
            for peer in args.peer:
                for chunk in args.chunks:
                    case = matrix_case(kind, steps, peer, chunk)
                    a, b, ratio = run(case, args.rounds)
                    print(
                        f"{case.name} L={chunk or 'default'} | {a:.3f} | {b:.3f} | {ratio:.3f} | "
                        f"{1 / ratio:.1f}x",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
