"""Recurrent layers against their peers, side by side in one run (issue 6).

Each case times a *subject* (rnnkit) and its *peer* (``torch.nn``, or another rnnkit path)
on the same data with the same weights, interleaved (A B, B A, A B, ... so that drifting
machine load hits both alike), and reports the median and interquartile range of each side
and the median of the per-round ratio ``subject / peer``. A case with a target passes when
that ratio is at most the target. Memory cases run each configuration in a fresh subprocess
and compare the growth of its peak resident set (``ru_maxrss``; on CUDA the peak allocated).

    .venv/bin/python bench/run.py                    # all cases, print the table
    .venv/bin/python bench/run.py --write            # also bench/results/<machine>.json and
                                                     # the "## Recurrent layers" section of
                                                     # bench/README.md
    .venv/bin/python bench/run.py --quick --cases lstm ragged   # fewer repeats, some cases
    .venv/bin/python bench/run.py --check            # exit 1 when a ratio misses its target
    .venv/bin/python bench/run.py --device cuda      # the same cases on the GPU (cuDNN peer)
    .venv/bin/python bench/run.py --json out.json    # write the results there, README untouched

Shapes: main B=64, T=100, I=128, H=256; tiny B=19 sequences of 2..13 steps, I=1, H=15;
ragged B=64 with lengths uniform in 10..100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit import (
    Bidirectional,
    Fold,
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    RecurrenceFrom,
    RNNCell,
    SequenceBatch,
)
from rnnkit.cells import State
from rnnkit.recurrence import select_backend
from rnnkit.truncation import carry_state, truncated_chunks

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
SECTION = "## Recurrent layers"
MAIN = (64, 100, 128, 256)  # B, T, I, H
TINY_B, TINY_T, TINY_I, TINY_H = 19, (2, 13), 1, 15
STANDARD_TARGET = 1 / 0.95  # time ratio for >= 0.95x the peer's throughput
BATCH1_TARGET = 2.0  # batch-1 streaming of a custom cell: within 2x nn.LSTM's time per step
TIE = 1.15  # scan vs loop within 15 % of each other: either choice is right

Fn = Callable[[], object]
NOTES_START = "Notes ("  # the notes under the table are kept by --write (profiles, caveats)
NO_NOTES = "Notes (none yet: explain each missed target here, with the profile behind it)."


@dataclass
class Case:
    """A subject and its peer, built lazily; ``target`` bounds ``subject / peer``."""

    name: str
    subject: str
    peer: str
    build: Callable[[torch.device], tuple[Fn, Fn]]
    target: float | None = None
    note: str = ""
    per_step: int = 0  # report subject and peer time per step (batch-1 cases)
    limit_per_step: float | None = None  # an absolute bound in seconds per step
    auto: Callable[[], str] | None = None  # scan cases: the engine's automatic choice
    facts: dict[str, object] = field(default_factory=dict)  # filled by build (compile time)


@dataclass
class Result:
    name: str
    subject: str
    peer: str
    subject_s: float
    subject_iqr: tuple[float, float]
    peer_s: float
    peer_iqr: tuple[float, float]
    ratio: float
    ratio_iqr: tuple[float, float]
    rounds: int
    target: float | None
    passed: bool | None
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------- data


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lengths(batch: int, low: int, high: int, seed: int) -> list[int]:
    return torch.randint(low, high + 1, (batch,), generator=_generator(seed)).tolist()


def _sequences(lengths: list[int], size: int, device: torch.device, seed: int) -> list[Tensor]:
    gen = _generator(seed)
    return [torch.randn(n, size, generator=gen).to(device) for n in lengths]


def _padded_time_major(seqs: list[Tensor], steps: int) -> Tensor:
    out = seqs[0].new_zeros(steps, len(seqs), seqs[0].shape[1])
    for j, s in enumerate(seqs):
        out[: s.shape[0], j] = s
    return out


def _torch_twin(cell: Any) -> nn.Module:
    """``torch.nn.LSTM/GRU/RNN`` holding a copy of ``cell``'s parameters (time-major input)."""
    if isinstance(cell, LSTMCell):
        twin: nn.Module = nn.LSTM(cell.input_size, cell.hidden_size)
    elif isinstance(cell, GRUCell):
        twin = nn.GRU(cell.input_size, cell.hidden_size)
    else:
        twin = nn.RNN(cell.input_size, cell.hidden_size, nonlinearity=cell.nonlinearity)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(twin, f"{name}_l0").copy_(getattr(cell, name))
    return twin.to(cell.weight_ih.device)


def _step(module: nn.Module, loss: Callable[[], Tensor], train: bool) -> Fn:
    """Forward only (under no_grad), or forward and backward with fresh gradients."""
    params = list(module.parameters())

    def forward() -> object:
        with torch.no_grad():
            return loss()

    def train_step() -> object:
        for p in params:
            p.grad = None
        loss().backward()
        return None

    return train_step if train else forward


def _check_equal(a: Tensor, b: Tensor, what: str, tol: float = 1e-5) -> None:
    if not torch.allclose(a, b, rtol=10 * tol, atol=tol):
        raise RuntimeError(f"{what}: subject and peer disagree by {float((a - b).abs().max())}")


# ---------------------------------------------------------------------------- cases


def standard_case(kind: str, shape: str, train: bool) -> Case:
    make = {"lstm": LSTMCell, "gru": GRUCell, "rnn": RNNCell}[kind]
    peer_name = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}[kind]
    mode = "forward+backward" if train else "forward"

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        if shape == "main":
            b, t, i, h = MAIN
            cell = make(i, h).to(device)
            seqs = _sequences([t] * b, i, device, 1)
            x = SequenceBatch.from_list(seqs)
            padded = _padded_time_major(seqs, t)
            twin = _torch_twin(cell)
            layer: nn.Module = Recurrence(cell)

            def ours() -> Tensor:
                return layer(x).data.sum()

            def theirs() -> Tensor:
                return twin(padded)[0].sum()
        else:
            lengths = _lengths(TINY_B, *TINY_T, seed=2)
            cell = make(TINY_I, TINY_H).to(device)
            seqs = _sequences(lengths, TINY_I, device, 3)
            x = SequenceBatch.from_list(seqs)
            padded = _padded_time_major(seqs, max(lengths))
            last = torch.tensor(lengths, device=device) - 1
            rows = torch.arange(TINY_B, device=device)
            twin = _torch_twin(cell)
            layer = Fold(cell)

            def ours() -> Tensor:
                return layer(x).sum()

            def theirs() -> Tensor:  # a hand-written loop: padded input, gather the last step
                return twin(padded)[0][last, rows].sum()

        with torch.no_grad():
            _check_equal(ours(), theirs(), f"{kind}/{shape}")
        return _step(layer, ours, train), _step(twin, theirs, train)

    described = (
        "Recurrence, B=64 T=100 I=128 H=256"
        if shape == "main"
        else "Fold, B=19 ragged T=2..13 I=1 H=15; peer padded + gather"
    )
    return Case(
        f"{kind}/{shape}/{'train' if train else 'forward'}",
        f"rnnkit {kind.upper()} {mode}",
        f"{peer_name} {mode}",
        build,
        STANDARD_TARGET,
        described,
    )


def ragged_case(train: bool, packed_peer: bool = False) -> Case:
    b, t, i, h = MAIN
    mode = "forward+backward" if train else "forward"

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        lengths = _lengths(b, 10, t, seed=4)
        seqs = _sequences(lengths, i, device, 5)
        x = SequenceBatch.from_list(seqs)
        padded = _padded_time_major(seqs, t)  # padded to 100 whatever the longest
        mask = (torch.arange(t).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)).to(device)
        cell = LSTMCell(i, h).to(device)
        twin = _torch_twin(cell)
        layer = Recurrence(cell)
        packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)

        def ours() -> Tensor:
            return layer(x).data.sum()

        def padded_peer() -> Tensor:
            return (twin(padded)[0] * mask.unsqueeze(2)).sum()

        def packed_run() -> Tensor:
            return twin(packed)[0].data.sum()

        with torch.no_grad():
            _check_equal(ours(), padded_peer(), "ragged")
        subject = _step(twin, packed_run, train) if packed_peer else _step(layer, ours, train)
        return subject, _step(twin, padded_peer, train)

    if packed_peer:
        return Case(
            f"ragged/packed/{'train' if train else 'forward'}",
            f"nn.LSTM on PackedSequence {mode}",
            f"nn.LSTM padded to 100 {mode}",
            build,
            None,
            "for reference: PyTorch's own packed path",
        )
    return Case(
        f"ragged/lstm/{'train' if train else 'forward'}",
        f"rnnkit LSTM {mode}",
        f"nn.LSTM padded to 100 {mode}",
        build,
        0.65,
        "B=64, lengths uniform in 10..100 (ideal = real-token fraction)",
    )


def _custom_cell(kind: str, i: int, h: int) -> nn.Module:
    if kind == "lnlstm":
        return LSTMCell(i, h, layer_norm=True)
    if kind == "cntkgru":
        return GRUCell(i, h, reset="before")
    return GRUDCell(i, h)


def _custom_input(kind: str, lengths: list[int], i: int, device: torch.device) -> SequenceBatch:
    if kind != "grud":
        return SequenceBatch.from_list(_sequences(lengths, i, device, 6))
    gen = _generator(6)
    seqs = []
    for n in lengths:
        values = torch.randn(n, i, generator=gen)
        mask = torch.rand(n, i, generator=gen) < 0.7
        delta = torch.rand(n, i, generator=gen) * 3
        seqs.append(GRUDCell.pack_inputs(values, mask, delta).to(device))
    return SequenceBatch.from_list(seqs)


CUSTOM_NAMES = {
    "lnlstm": "layer-norm LSTM",
    "cntkgru": "GRUCell(reset='before')",
    "grud": "GRUDCell (D=128, input 3D)",
}


def custom_case(kind: str) -> Case:
    b, t, i, h = MAIN

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = _custom_cell(kind, i, h).to(device)
        x = _custom_input(kind, [t] * b, i, device)
        layer = Recurrence(cell)
        peer_cell = LSTMCell(i, h).to(device)
        twin = _torch_twin(peer_cell)
        padded = _padded_time_major(_sequences([t] * b, i, device, 1), t)
        return (
            _step(layer, lambda: layer(x).data.sum(), True),
            _step(twin, lambda: twin(padded)[0].sum(), True),
        )

    return Case(
        f"custom/{kind}/train",
        f"rnnkit {CUSTOM_NAMES[kind]} forward+backward (loop)",
        "nn.LSTM forward+backward",
        build,
        1.35,
        "B=64 T=100 I=128 H=256",
    )


def custom_batch1_case(kind: str) -> Case:
    _, t, i, h = MAIN

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = _custom_cell(kind, i, h).to(device)
        x = _custom_input(kind, [t], i, device)
        layer = Recurrence(cell)
        twin = _torch_twin(LSTMCell(i, h).to(device))
        padded = _padded_time_major(_sequences([t], i, device, 1), t)
        return (
            _step(layer, lambda: layer(x).data.sum(), False),
            _step(twin, lambda: twin(padded)[0].sum(), False),
        )

    return Case(
        f"custom/{kind}/batch1",
        f"rnnkit {CUSTOM_NAMES[kind]} forward, B=1 (eager loop)",
        "nn.LSTM forward, B=1",
        build,
        BATCH1_TARGET,
        "T=100 I=128 H=256; times per step",
        per_step=t,
    )


def _lstm_batch1(device: torch.device, t: int, i: int, h: int) -> Fn:
    """The batch-1 peer: nn.LSTM's forward over one sequence of ``t`` steps."""
    twin = _torch_twin(LSTMCell(i, h).to(device))
    peer = _padded_time_major(_sequences([t], i, device, 1), t)
    return _step(twin, lambda: twin(peer)[0].sum(), False)


def onnx_batch1_case(kind: str) -> Case:
    """The same cell's step exported with ``export_step_onnx`` and streamed step by step
    through onnxruntime (``OnnxStepper.run``, one intra-op thread), against nn.LSTM."""
    _, t, i, h = MAIN

    def build(device: torch.device) -> tuple[Fn, Fn]:
        import tempfile

        import numpy as np

        from rnnkit import export_step_onnx
        from rnnkit.serving import OnnxStepper

        torch.manual_seed(0)
        cell = _custom_cell(kind, i, h)
        x = _custom_input(kind, [t], i, torch.device("cpu"))
        path = Path(tempfile.mkdtemp(prefix="rnnkit-bench-")) / "step.onnx"
        export_step_onnx(cell, path)
        stepper = OnnxStepper(path, threads=1)
        padded = x.data.numpy()[None]
        lengths = np.array([t])
        with torch.no_grad():
            want = Recurrence(cell)(x).data.numpy()
        got = stepper.run(padded, lengths)[0][0]
        if not np.allclose(got, want, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"onnx/{kind}: onnxruntime and eager disagree")
        return lambda: stepper.run(padded, lengths), _lstm_batch1(device, t, i, h)

    return Case(
        f"onnx/{kind}/batch1",
        f"{CUSTOM_NAMES[kind]} step in onnxruntime, streamed, B=1",
        "nn.LSTM forward, B=1",
        build,
        BATCH1_TARGET,
        "T=100 I=128 H=256; times per step; the step model includes the input projection",
        per_step=t,
    )


def onnx_scan_batch1_case(kind: str) -> Case:
    """``Recurrence(cell)`` exported whole with ``export_onnx`` (the input projection over all
    steps, then an ONNX Scan over the cell's step graph) and run by onnxruntime in one call
    per sequence (one intra-op thread), against nn.LSTM."""
    _, t, i, h = MAIN

    def build(device: torch.device) -> tuple[Fn, Fn]:
        import tempfile

        import numpy as np
        import onnxruntime

        from rnnkit import export_onnx

        torch.manual_seed(0)
        model = Recurrence(_custom_cell(kind, i, h)).eval()
        x = _custom_input(kind, [t], i, torch.device("cpu"))
        path = Path(tempfile.mkdtemp(prefix="rnnkit-bench-")) / "model.onnx"
        export_onnx(model, path, x)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        padded, lengths = x.to_padded()
        feed = {"x": padded.numpy(), "lengths": lengths.numpy()}
        with torch.no_grad():
            want = model(x).data.numpy()
        if not np.allclose(session.run(None, feed)[0][0], want, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"onnx-scan/{kind}: onnxruntime and eager disagree")
        return lambda: session.run(None, feed), _lstm_batch1(device, t, i, h)

    return Case(
        f"onnx-scan/{kind}/batch1",
        f"{CUSTOM_NAMES[kind]} sequence in onnxruntime (export_onnx, Scan), B=1",
        "nn.LSTM forward, B=1",
        build,
        BATCH1_TARGET,
        "T=100 I=128 H=256; times per step; one call per sequence",
        per_step=t,
    )


def compile_case() -> Case:
    """``torch.compile(Bidirectional(LSTM, LSTM))`` against the eager layer, training on a
    ragged batch; the first call (which compiles) is timed apart, in the facts."""
    b, t, i, h = MAIN
    facts: dict[str, object] = {}

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        layer = Bidirectional(LSTMCell(i, h), LSTMCell(i, h)).to(device)
        lengths = _lengths(b, 10, t, seed=7)
        x = SequenceBatch.from_list(_sequences(lengths, i, device, 8))
        compiled = torch.compile(layer)
        torch._dynamo.reset()
        start = time.perf_counter()
        got = compiled(x).data
        _sync(device)
        facts["compile_s"] = time.perf_counter() - start
        _check_equal(got, layer(x).data, "compile/bidirectional")
        return (
            _step(layer, lambda: compiled(x).data.sum(), True),
            _step(layer, lambda: layer(x).data.sum(), True),
        )

    return Case(
        "compile/bidirectional-lstm/train",
        "torch.compile(Bidirectional(LSTM, LSTM)) forward+backward",
        "the same layer eager",
        build,
        None,
        "B=64 ragged T=10..100 I=128 H=256; the first (compiling) call apart",
        facts=facts,
    )


def custom_linear_case(kind: str) -> Case:
    _, _, i, h = MAIN
    batch = 16

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = _custom_cell(kind, i, h).to(device)
        layer = Recurrence(cell)
        params = list(cell.parameters())

        def backward_time(steps: int) -> Fn:
            x = _custom_input(kind, [steps] * batch, i, device)

            def run() -> float:
                for p in params:
                    p.grad = None
                loss = layer(x).data.sum()
                _sync(device)
                start = time.perf_counter()
                loss.backward()
                _sync(device)
                return time.perf_counter() - start

            return run

        return backward_time(1000), backward_time(100)

    return Case(
        f"custom/{kind}/linear",
        f"rnnkit {CUSTOM_NAMES[kind]} backward, T=1000",
        "the same, T=100",
        build,
        11.0,
        "B=16 I=128 H=256; backward pass only",
    )


SCAN_SHAPES = [  # B, T, H (I = H)
    (1, 4096, 64),
    (4, 4096, 256),
    (16, 1024, 256),
    (32, 512, 256),
    (64, 100, 256),
    (128, 100, 256),
    (64, 512, 512),
]


def scan_case(kind: str, b: int, t: int, h: int) -> Case:
    make = MinGRUCell if kind == "mingru" else MinLSTMCell
    x_holder: list[SequenceBatch] = []
    cell_holder: list[nn.Module] = []

    def build(device: torch.device) -> tuple[Fn, Fn]:
        torch.manual_seed(0)
        cell = make(h, h).to(device)
        x = SequenceBatch.from_list(_sequences([t] * b, h, device, 7))
        x_holder[:] = [x]
        cell_holder[:] = [cell]
        scan, loop = Recurrence(cell, backend="scan"), Recurrence(cell, backend="loop")
        with torch.no_grad():
            _check_equal(scan(x).data, loop(x).data, f"{kind} scan", tol=1e-4)
        return (
            _step(cell, lambda: scan(x).data.sum(), True),
            _step(cell, lambda: loop(x).data.sum(), True),
        )

    def auto() -> str:
        return select_backend(cell_holder[0], "auto", x=x_holder[0])

    return Case(
        f"scan/{kind}/B{b}-T{t}-H{h}",
        f"{kind} 'scan' forward+backward",
        "'loop' forward+backward",
        build,
        None,
        f"B*H={b * h}",
        auto=auto,
    )


def all_cases() -> list[Case]:
    cases = [
        standard_case(kind, shape, train)
        for shape in ("main", "tiny")
        for kind in ("lstm", "gru", "rnn")
        for train in (False, True)
    ]
    cases += [ragged_case(False), ragged_case(True)]
    cases += [ragged_case(False, packed_peer=True), ragged_case(True, packed_peer=True)]
    for kind in CUSTOM_NAMES:
        cases += [custom_case(kind), custom_batch1_case(kind), custom_linear_case(kind)]
    cases += [onnx_batch1_case(kind) for kind in CUSTOM_NAMES]
    cases += [onnx_scan_batch1_case(kind) for kind in CUSTOM_NAMES]
    cases.append(compile_case())
    cases += [scan_case(k, *s) for k in ("mingru", "minlstm") for s in SCAN_SHAPES]
    return cases


def modern_recurrence_cases() -> list[Case]:
    """Issue 20's cases (``bench/modern_cases.py``, ``bench/modern_matrix_cases.py``): each
    modern cell's parallel form against its loop and the plainest for-loop of its equations,
    training, at T = 1,024, 4,096 and 16,384. Run only when asked (``--cases modern``): the
    loops at T = 16,384 take minutes."""
    sys.path.insert(0, str(HERE))
    from modern_cases import cases as diagonal_cases
    from modern_matrix_cases import matrix_cases

    picked = [*diagonal_cases(), *matrix_cases()]
    return [Case(c.name, c.subject, c.peer, c.build, c.target, c.note) for c in picked]


# ---------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Fn, device: torch.device, inner: int) -> float:
    """Seconds per call of ``fn`` (its own figure when it returns a float)."""
    _sync(device)
    start = time.perf_counter()
    own = 0.0
    for _ in range(inner):
        out = fn()
        if isinstance(out, float):
            own += out
    _sync(device)
    return (own or time.perf_counter() - start) / inner


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def measure(case: Case, device: torch.device, rounds: int, min_sample: float) -> Result:
    subject, peer = case.build(device)
    for fn in (subject, peer, subject, peer):  # warm up (oneDNN primitives, caches)
        _timed(fn, device, 1)
    # Enough calls per sample that one sample lasts at least `min_sample` seconds.
    once = max(_timed(subject, device, 1), _timed(peer, device, 1), 1e-6)
    inner = max(1, min(1000, int(min_sample / once)))
    a_times, b_times, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = _timed(subject, device, inner), _timed(peer, device, inner)
        else:
            b, a = _timed(peer, device, inner), _timed(subject, device, inner)
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    ratio = statistics.median(ratios)
    subject_s = statistics.median(a_times)
    passed: bool | None = None if case.target is None else ratio <= case.target
    extra: dict[str, object] = {"inner_calls": inner, **case.facts}
    if case.per_step:
        extra["subject_per_step_s"] = subject_s / case.per_step
        extra["peer_per_step_s"] = statistics.median(b_times) / case.per_step
    if case.limit_per_step is not None:
        per_step = subject_s / case.per_step
        extra["limit_per_step_s"] = case.limit_per_step
        passed = per_step <= case.limit_per_step
    if case.auto is not None:
        chosen = case.auto()
        faster = "scan" if ratio < 1 else "loop"
        extra["auto"] = chosen
        extra["faster"] = faster
        passed = chosen == faster or max(ratio, 1 / ratio) <= TIE
    return Result(
        case.name,
        case.subject,
        case.peer,
        subject_s,
        _quartiles(a_times),
        statistics.median(b_times),
        _quartiles(b_times),
        ratio,
        _quartiles(ratios),
        rounds,
        case.target,
        passed,
        case.note,
        extra,
    )


# ---------------------------------------------------------------------------- memory

MEMORY = {"batch": 16, "input": 32, "hidden": 128, "window": 100}


def memory_probe(mode: str, steps: int, device: torch.device) -> float:
    """Growth of peak memory (bytes) over one forward+backward of an LSTM over ``steps`` steps,
    full BPTT (``mode='full'``) or truncated to ``MEMORY['window']`` steps."""
    torch.manual_seed(0)
    b, i, h, window = (MEMORY[k] for k in ("batch", "input", "hidden", "window"))
    cell = LSTMCell(i, h).to(device)
    x = SequenceBatch.from_list(_sequences([steps] * b, i, device, 8))
    layer = RecurrenceFrom(cell)

    def run(batch: SequenceBatch, length: int) -> None:
        chunks = list(truncated_chunks(batch, length))
        state: State = cell.initial_state(batch.batch_size, device)
        for k, chunk in enumerate(chunks):
            out, final = layer.with_final_state(state, chunk)
            out.data.square().mean().backward()
            if k + 1 < len(chunks):
                state = carry_state(final, chunk, chunks[k + 1])

    warm = SequenceBatch.from_list(_sequences([2] * b, i, device, 9))
    run(warm, 1)  # load the kernels before the baseline, with next to no activations
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
        run(x, steps if mode == "full" else window)
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - before)
    # Reset the high-water mark so that building the input does not count (Linux); elsewhere
    # the process's peak since start (ru_maxrss) is the fallback.
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib(status, "VmRSS")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(x, steps if mode == "full" else window)
    after = (
        _status_kib(status, "VmHWM")
        if status.exists()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return float((after - before) * 1024)


def _status_kib(status: Path, key: str) -> int:
    found = re.search(rf"^{key}:\s*(\d+) kB", status.read_text(), re.M)
    if found is None:
        raise RuntimeError(f"{status}: no {key} line")
    return int(found.group(1))


def _probe_subprocess(mode: str, steps: int, device: str, threads: int) -> float:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        mode,
        str(steps),
        "--device",
        device,
        "--threads",
        str(threads),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_results(device: str, threads: int, rounds: int) -> list[Result]:
    """Full BPTT and TBPTT(100) at T=10,000, and TBPTT(100) at T=1,000, interleaved."""
    configs = {"full-10000": ("full", 10_000), "tbptt-10000": ("tbptt", 10_000)}
    configs["tbptt-1000"] = ("tbptt", 1_000)
    peaks: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for key, (mode, steps) in configs.items():
            peaks[key].append(_probe_subprocess(mode, steps, device, threads))
    shape = "LSTM B=16 I=32 H=128, forward+backward; peak memory growth in bytes"
    pairs = [
        ("memory/tbptt-vs-full", "tbptt-10000", "full-10000", None, "TBPTT(100), T=10,000"),
        ("memory/tbptt-10000-vs-1000", "tbptt-10000", "tbptt-1000", 1.5, "TBPTT(100), T=1,000"),
    ]
    results = []
    for name, a, b, target, peer in pairs:
        ratios = [x / max(y, 1.0) for x, y in zip(peaks[a], peaks[b], strict=True)]
        ratio = statistics.median(ratios)
        results.append(
            Result(
                name,
                "TBPTT(100), T=10,000",
                "full BPTT, T=10,000" if b == "full-10000" else peer,
                statistics.median(peaks[a]),
                _quartiles(peaks[a]),
                statistics.median(peaks[b]),
                _quartiles(peaks[b]),
                ratio,
                _quartiles(ratios),
                rounds,
                target,
                None if target is None else ratio <= target,
                shape,
                {"unit": "bytes"},
            )
        )
    return results


# ---------------------------------------------------------------------------- report


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", info.read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_slug(info: dict[str, object], device: str) -> str:
    name = str(info["gpu"]) if device == "cuda" else f"{info['cpu']}-{info['threads']}t"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def _span(q: tuple[float, float], scale: float = 1e3) -> str:
    return f"{q[0] * scale:.3g}-{q[1] * scale:.3g}"


def table(results: list[Result]) -> str:
    lines = [
        "| case | subject | subject ms (IQR) | peer | peer ms (IQR) | ratio (IQR) | target | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.extra.get("unit") == "bytes":
            a = f"{r.subject_s / 2**20:.1f} MiB ({_span(r.subject_iqr, 2**-20)})"
            b = f"{r.peer_s / 2**20:.1f} MiB ({_span(r.peer_iqr, 2**-20)})"
        elif "subject_per_step_s" in r.extra:
            a = f"{float(r.extra['subject_per_step_s']) * 1e6:.1f} µs/step"  # type: ignore[arg-type]
            b = f"{float(r.extra['peer_per_step_s']) * 1e6:.1f} µs/step"  # type: ignore[arg-type]
        else:
            a = f"{_ms(r.subject_s)} ({_span(r.subject_iqr)})"
            b = f"{_ms(r.peer_s)} ({_span(r.peer_iqr)})"
        if "compile_s" in r.extra:
            a += f"; first call {float(r.extra['compile_s']):.1f} s"  # type: ignore[arg-type]
        target = "—" if r.target is None else f"≤ {r.target:.3g}"
        if "limit_per_step_s" in r.extra:
            target = f"≤ {float(r.extra['limit_per_step_s']) * 1e6:.0f} µs/step"  # type: ignore[arg-type]
        if "auto" in r.extra:
            target = f"auto picks {r.extra['auto']}"
        ok = {None: "", True: "yes", False: "**no**"}[r.passed]
        ratio = f"{r.ratio:.3f} ({r.ratio_iqr[0]:.3f}-{r.ratio_iqr[1]:.3f})"
        lines.append(
            f"| {r.name} | {r.subject} | {a} | {r.peer} | {b} | {ratio} | {target} | {ok} |"
        )
    return "\n".join(lines)


def section(info: dict[str, object], command: str, results: list[Result]) -> str:
    """The "## Recurrent layers" section: how it was run, the machine, the table, notes."""
    gpu = f", GPU {info['gpu']}" if info["gpu"] else ""
    return "\n".join(
        [
            SECTION,
            "",
            f"`.venv/bin/python {command}`: each case runs its subject and its peer in one "
            "process, interleaved (AB, BA, ...), and reports the median and interquartile range "
            "of each and the median of the per-round ratio subject/peer; a target bounds that "
            "ratio (`bench/run.py --check` exits 1 when one is missed). The raw figures are in "
            "`bench/results/`.",
            "",
            f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads"
            f"{gpu}; torch {info['torch']}, Python {info['python']}.",
            "",
            table(results),
            "",
            existing_notes(),
            "",
        ]
    )


def existing_notes() -> str:
    """The notes under the table in bench/README.md's section, kept as they are: they are
    written by hand from profiles, not by the runner."""
    text = README.read_text() if README.exists() else ""
    match = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    if match is None or f"\n{NOTES_START}" not in match.group(0):
        return NO_NOTES
    body = match.group(0)
    return body[body.index(f"\n{NOTES_START}") + 1 :].rstrip("\n")


def _tuples(recorded: dict[str, object]) -> dict[str, object]:
    """The interquartile ranges of a result read back from JSON, as tuples again."""
    return {k: tuple(v) for k, v in recorded.items() if k.endswith("_iqr")}  # type: ignore[arg-type]


def write_section(text: str) -> None:
    """Replace (or append) the ``## Recurrent layers`` section of bench/README.md, leaving the
    other sections alone (the file is read again right before writing)."""
    old = README.read_text() if README.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    README.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, short samples")
    parser.add_argument("--cases", nargs="*", default=[], help="substrings of case names")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=0, help="rounds per case (default 9)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--write", action="store_true", help="write results JSON and README")
    parser.add_argument("--json", type=Path, help="write the results JSON here (no README)")
    parser.add_argument(
        "--render", type=Path, help="rewrite the README section from a results JSON, no run"
    )
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        record = json.loads(args.render.read_text())
        recorded = [Result(**{**r, **_tuples(r)}) for r in record["results"]]
        write_section(section(record["machine"], record["command"], recorded))
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.memory_probe:
        print(memory_probe(args.memory_probe[0], int(args.memory_probe[1]), device))
        return
    rounds = args.rounds or (3 if args.quick else 9)
    min_sample = 0.01 if args.quick else 0.05
    pool = all_cases()
    if args.cases and any(s.startswith("modern") for s in args.cases):
        pool += modern_recurrence_cases()
    cases = [c for c in pool if not args.cases or any(s in c.name for s in args.cases)]
    results: list[Result] = []
    for case in cases:
        result = measure(case, device, rounds, min_sample)
        results.append(result)
        print(
            f"{case.name:32s} {_ms(result.subject_s):>9s} ms  {_ms(result.peer_s):>9s} ms  "
            f"ratio {result.ratio:.3f}  {'' if result.passed is None else result.passed}",
            flush=True,
        )
    if not args.cases or any("memory" in s for s in args.cases):
        for result in memory_results(args.device, args.threads, 1 if args.quick else 3):
            results.append(result)
            print(f"{result.name:32s} ratio {result.ratio:.3f}  {result.passed}", flush=True)
    info = machine()
    print(table(results))
    record = {
        "machine": info,
        "device": args.device,
        "rounds": rounds,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "results": [asdict(r) for r in results],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    if args.write:
        slug = machine_slug(info, args.device)
        out = HERE / "results" / f"{slug}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        write_section(section(info, str(record["command"]), results))
        print(f"wrote {out} and the {SECTION!r} section of {README}")
    if args.check:
        missed = [r.name for r in results if r.passed is False]
        if missed:
            print("missed targets: " + ", ".join(missed), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
