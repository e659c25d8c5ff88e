"""Combinators over a cell, after CNTK's layers library, and the engine that runs them.

* :class:`Recurrence` is a scan: the output of the cell at every step (a SequenceBatch).
* :class:`Fold` is Recurrence followed by "last" (the first step's output when backwards).
* :class:`RecurrenceFrom` is a Recurrence whose initial state is data: ``(state, x)``.
* :class:`Unfold` generates a sequence from a state (one-to-many).
* :class:`Bidirectional` runs a forward and a backward Recurrence and merges them.

The engine (:func:`run_recurrence`) has four execution paths, proven equal by the tests:

``'fused'``
    A cell whose ``fused_kernel()`` names a PyTorch fused kernel (rnnkit's standard
    RNN/LSTM/GRU cells, see :class:`rnnkit.cells.Cell`) runs on it (oneDNN on CPU, cuDNN on
    GPU) with the cell's own parameters. On CPU a ragged batch is padded time-major, because
    the CPU kernel leaves oneDNN for packed input and becomes slower than padding; the
    outputs at padded steps are never read. When the final cell state of an LSTM is needed
    the batch goes in packed (exact at each sequence's end). For ``need='last'`` (a Fold)
    a batch that fits one padded segment is one kernel call and one gather.
``'scan'``
    A cell whose recurrence has a parallel form runs it: ``cell.parallel(px, state,
    lengths)`` when the cell has one (see :func:`run_recurrence`), else the prefix scan of a
    cell linear in the state (a ``scan`` method, as minGRU and minLSTM have).
``'loop'``
    Any cell: the input projection of all N steps in one matrix product, then one step per
    time step over the active rows only (``torch.split`` of the projection, whose backward
    is one concatenation, so backward stays linear in T).
``'reference'``
    The plainest loop: padded input, every row at every step, ``torch.where`` on a mask.

Running sum and max, as in CNTK's docstrings:

>>> import torch
>>> from rnnkit import SequenceBatch
>>> class Sum(torch.nn.Module):
...     hidden_size = 1
...     def initial_state(self, batch_size, device=None, dtype=None):
...         return torch.zeros(batch_size, 1, device=device, dtype=dtype)
...     def forward(self, x, state=None):
...         return x if state is None else state + x
>>> x = SequenceBatch.from_list([torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[4.0]])])
>>> [s.squeeze(1).tolist() for s in Recurrence(Sum())(x).to_list()]
[[1.0, 3.0, 6.0], [4.0]]
>>> Fold(Sum())(x).squeeze(1).tolist()
[6.0, 4.0]
"""

from __future__ import annotations

import functools
import itertools
import weakref
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor, nn

from rnnkit import lstm_kernel
from rnnkit.cells import FusedKernel, State, as_tuple, check_cell
from rnnkit.compiled_ops import fused_rnn
from rnnkit.layers import Layer
from rnnkit.lazy import materialize_input
from rnnkit.sequences import SequenceBatch

__all__ = [
    "Backend",
    "Bidirectional",
    "Fold",
    "InitialState",
    "Need",
    "Recurrence",
    "RecurrenceFrom",
    "RecurrenceResult",
    "Unfold",
    "loop_step",
    "run_recurrence",
    "select_backend",
    "state_from_data",
]

Backend: TypeAlias = Literal["auto", "fused", "scan", "loop", "reference"]
_BACKENDS = ("auto", "fused", "scan", "loop", "reference")
Need: TypeAlias = Literal["outputs", "states", "final", "last"]
_NEEDS = ("outputs", "states", "final", "last")
InitialSpec: TypeAlias = float | Tensor | tuple[Tensor, ...] | Literal["learned"] | None


def _check_sequence_batch(x: object, argument: str = "x") -> SequenceBatch:
    if not isinstance(x, SequenceBatch):
        raise TypeError(
            f"{argument}: expected a SequenceBatch (build one with SequenceBatch.from_list or "
            f".from_padded), found {type(x).__name__}"
            + (f" of shape {tuple(x.shape)}" if isinstance(x, Tensor) else "")
        )
    return x


# ---------------------------------------------------------------------------- engine


@dataclass(frozen=True, slots=True)
class RecurrenceResult:
    """What :func:`run_recurrence` gives for a ``need``.

    ``outputs``: packed ``[N, ...]`` data, one tensor per state tensor kept, rows in the order
    of the ``x`` that ran: ``(h,)`` for ``'outputs'`` and ``'final'``, every state tensor for
    ``'states'``, ``()`` for ``'last'``. ``final_state``: ``[B, ...]`` per tensor in the
    caller's order: the whole final state for ``'final'``, the last output ``(h,)`` for
    ``'last'``, ``()`` for ``'outputs'`` and ``'states'``.
    """

    outputs: tuple[Tensor, ...]
    final_state: tuple[Tensor, ...]


def declared_kernel(cell: Any) -> FusedKernel | str:
    """The fused kernel ``cell`` declares (its ``fused_kernel()``), or why it cannot run on
    one (a phrase)."""
    declare = getattr(cell, "fused_kernel", None)
    if not callable(declare):
        return f"{type(cell).__name__}, which declares no fused kernel (no fused_kernel method)"
    answer = declare()
    if not isinstance(answer, (FusedKernel, str)):
        raise TypeError(
            f"cell: expected {type(cell).__name__}.fused_kernel() to return a FusedKernel or a "
            f"reason (str), found {type(answer).__name__}"
        )
    return answer


def scan_pays(x: SequenceBatch, hidden_size: int) -> bool:
    """Whether the parallel scan beats the loop for this batch.

    On a GPU it always does. On a CPU the loop costs T small steps (a fixed overhead each
    plus ``B * H`` work), the scan (:func:`rnnkit.scan.linear_scan`: chunks of 32 steps
    below 4,096 elements a step, one sequential pass above) a few passes over all ``T x B x
    H`` elements, so which wins depends on the size of a step, ``B * H``, and hardly on T.
    Measured for training (forward and backward, ``bench/run.py --cases scan/min``, 1 thread
    of a 2-core AMD EPYC, 2026-12-04, minGRU and minLSTM), scan/loop time: 0.015-0.020 at
    ``B * H = 64``, 0.33-0.36 at 1,024, 0.74-0.76 at 4,096, 0.97-0.98 at 8,192, 0.95 at
    16,384 (T = 100), 1.02-1.14 at 32,768 (T = 100) and 2.3-2.4 at 32,768 (T = 512); so the
    scan is chosen below ``B * H = 16384``. (The log-space scan it replaced lost from 1,024.)
    """
    return x.data.is_cuda or x.batch_size * hidden_size < 16384


def has_parallel(cell: Any) -> bool:
    """Whether ``cell`` has a parallel form the ``'scan'`` path runs: a ``parallel`` method
    (any state) or a ``scan`` method (a single state linear in itself), looked up on the
    class."""
    return callable(getattr(type(cell), "parallel", None)) or callable(
        getattr(type(cell), "scan", None)
    )


def has_packed(cell: Any) -> bool:
    """Whether ``cell`` has a parallel form over a ragged batch's packed rows:
    ``parallel_packed(px [N, ...], state, x) -> (outputs [N, ...], final)``, looked up on
    the class."""
    return callable(getattr(type(cell), "parallel_packed", None))


def packing_pays(cell: Any, x: SequenceBatch) -> bool:
    """Whether the ``'scan'`` path runs ``cell``'s parallel form on ``x``'s packed rows, in
    :attr:`SequenceBatch.lanes` (no padding), rather than on the padding ``[T, B, ...]``.

    It does on a CPU when the cell has that form (:func:`has_packed`) and the lanes are fewer
    than the sequences (some share a lane, so the grid is narrower than the padding).
    Measured for training (forward and backward from the input projection on,
    ``bench/modern_cases.py --packed``, 1 thread of a 2-core Intel Xeon, three runs, nine
    ragged batches, B=4 to 128, lengths 10 to 4,000, widths 16 to 256), packed/padded time:
    with fewer lanes than sequences RG-LRU 0.51-0.83, LRU 0.56-1.05 (1.00-1.05 at B=128,
    lengths 10-100, width 32), Hawk 0.65-0.81, S6 0.48-0.81 and Mamba 0.58-0.77; with as many
    (lengths 900-1,000 at B=32, or B=4) RG-LRU 0.94-1.04, LRU 1.00-1.16, Hawk 0.89-1.02, S6
    1.01-1.03 and Mamba 0.97-1.00, so there the padding stays. A cell with
    ``packing_lanes(x)`` (the matrix cells: :meth:`SequenceBatch.chunk_lanes`, each sequence
    from a chunk boundary) is judged by those lanes: measured the same way
    (``bench/modern_matrix_cases.py --packed``, two runs), GLA, Mamba-2, mLSTM, DeltaNet and
    Gated DeltaNet took 0.21-0.80 of the padded time with fewer chunk lanes than sequences and
    0.91-1.10 with as many; minGRU and minLSTM (their scan, one run) 0.55-0.78 and 0.93-0.98.
    On a GPU it was not measured: the padded path stays."""
    if not has_packed(cell) or x.data.is_cuda or x._sizes[0] == x._sizes[-1]:
        return False
    own = callable(getattr(type(cell), "packing_lanes", None))
    lanes = cell.packing_lanes(x) if own else x.lanes
    return bool(lanes.width < x.batch_size)


def parallel_pays(cell: Any, x: SequenceBatch) -> bool:
    """Whether the parallel form of ``cell`` beats its loop on ``x``: the cell's own measured
    rule (``cell.parallel_pays(x)``) when it has one, else :func:`scan_pays`."""
    rule = getattr(cell, "parallel_pays", None)
    if callable(rule):
        return bool(rule(x))
    return scan_pays(x, cell.hidden_size)


def select_backend(
    cell: Any, backend: Backend, every_state: bool = False, x: SequenceBatch | None = None
) -> str:
    """The execution path for ``cell``: the requested one, checked, or the automatic one
    (for a cell with a parallel form it depends on the batch ``x`` when given, see
    :func:`parallel_pays`). ``every_state``: every state tensor of a state with several is
    wanted at every step, which a cell's ``parallel`` does not give (the loop does)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {_BACKENDS}, found {backend!r}")
    kernel = declared_kernel(cell)
    if backend == "fused" and isinstance(kernel, str):
        raise ValueError(f"backend='fused' cannot run {kernel}; use 'loop' or 'auto'")
    if backend == "fused" and every_state:
        raise ValueError(
            "backend='fused' gives the output of every step, not every state tensor; "
            "use 'loop' or 'auto' for states()"
        )
    scannable = has_parallel(cell)
    if backend == "scan" and not scannable:
        raise ValueError(
            f"backend='scan' needs a cell whose recurrence is linear in the state (a `scan` "
            f"method, as MinGRUCell and MinLSTMCell have, or a `parallel` method); "
            f"{type(cell).__name__} has none"
        )
    if backend == "scan" and every_state:
        raise ValueError(
            f"backend='scan' gives the output of every step, not every state tensor of "
            f"{type(cell).__name__}; use 'loop' or 'auto' for states()"
        )
    if backend != "auto":
        return backend
    if scannable:
        if every_state:
            return "loop"
        return "scan" if x is None or parallel_pays(cell, x) else "loop"
    # Only the output h of every step comes out of the fused kernel; every state needs a loop.
    return "fused" if isinstance(kernel, FusedKernel) and not every_state else "loop"


@dataclass(frozen=True)
class _FusedPlan:
    """What a fused call of one cell needs, looked up once: the kernel, its flat weights and
    whether the state is a pair (an LSTM's ``(h, c)``)."""

    kernel: Any
    weights: list[Tensor]
    has_bias: bool
    pair: bool
    parameters: tuple[Tensor | None, ...]
    costs: tuple[float, float, float]  # _segment_costs of the weights' shapes


_PLANS: weakref.WeakKeyDictionary[nn.Module, _FusedPlan] = weakref.WeakKeyDictionary()
_FUSED_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _fused_plan(cell: Any) -> _FusedPlan:
    """The cell's :class:`_FusedPlan`, cached; rebuilt when a parameter object is replaced (a
    new ``nn.Parameter`` assigned, ``load_state_dict(assign=True)``)."""
    params = cell._parameters
    plan = _PLANS.get(cell)
    if plan is not None:
        w_ih, w_hh, b_ih, b_hh = plan.parameters
        if (
            params.get("weight_ih") is w_ih
            and params.get("weight_hh") is w_hh
            and params.get("bias_ih") is b_ih
            and params.get("bias_hh") is b_hh
        ):
            return plan
    plan = _build_plan(cell)
    _PLANS[cell] = plan
    return plan


def _build_plan(cell: Any) -> _FusedPlan:
    """The cell's :class:`_FusedPlan`, built now (not cached)."""
    current = tuple(cell._parameters.get(name) for name in _FUSED_NAMES)
    weights: list[Tensor] = [cell.weight_ih, cell.weight_hh]
    if cell.bias_ih is not None:
        weights += [cell.bias_ih, cell.bias_hh]
    kernel = declared_kernel(cell)
    if isinstance(kernel, str):
        raise ValueError(f"backend='fused' cannot run {kernel}; use 'loop' or 'auto'")
    vf: Any = torch._VF
    return _FusedPlan(
        getattr(vf, kernel.name),
        weights,
        len(weights) == 4,
        kernel.pair,
        current,
        _segment_costs(weights),
    )


def _fused_call(
    cell: Any,
    x: Tensor,
    batch_sizes: Tensor | None,
    hx: tuple[Tensor, ...],
    plan: _FusedPlan,
    final: bool = True,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer, one direction of ``torch``'s fused RNN on padded ``[T, B, I]`` or packed data
    from ``hx`` (the state in the kernel's layout, ``[1, B, ...]`` per tensor); the final state
    (``[B, ...]`` per tensor) too unless ``final=False``. Under ``torch.compile`` the kernel
    runs as the custom operator ``rnnkit::fused_rnn``, which Dynamo keeps whole
    (:mod:`rnnkit.compiled_ops`)."""
    if torch.compiler.is_compiling():
        name = plan.kernel.__name__
        out = fused_rnn(name, x, batch_sizes, list(hx), plan.weights, cell.training)
        return out[0], tuple(s.squeeze(0) for s in out[1:]) if final else ()
    if x.device.type == "cpu" and _cpu_bf16_refused():
        # oneDNN has no bfloat16 RNN on this CPU (torch.nn.LSTM fails under autocast here):
        # the kernel runs in float32, as autocast does for the operators it leaves alone.
        with torch.autocast("cpu", enabled=False):
            state = tuple(h.float() for h in hx)
            return _fused_call(cell, x.float(), batch_sizes, state, plan, final)
    if batch_sizes is None and plan.pair and lstm_kernel.pays(x, hx[0].shape[-1], plan.weights):
        # a small LSTM layer on the CPU: rnnkit's kernel (rnnkit.lstm_kernel), same equations
        found, h, c = lstm_kernel.run(x, (hx[0], hx[1]), plan.weights)
        return found, (h, c) if final else ()
    args: tuple[Any, ...] = (
        list(hx) if plan.pair else hx[0],
        plan.weights,
        plan.has_bias,
        1,
        0.0,
        cell.training,
        False,
    )
    fn = plan.kernel
    out = fn(x, *args, False) if batch_sizes is None else fn(x, batch_sizes, *args)
    return out[0], tuple(s.squeeze(0) for s in out[1:]) if final else ()


def _cpu_bf16_refused() -> bool:
    """Whether CPU autocast asks for bfloat16 on a CPU whose oneDNN has no bfloat16 kernels."""
    return (
        torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not onednn_runs_bf16()
    )


@functools.cache
def onednn_runs_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU (asked once, when first needed: the first
    question costs milliseconds)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _kernel_state(state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A state (``[B, ...]`` per tensor) in the fused kernel's layout (``[1, B, ...]``)."""
    return tuple(s.unsqueeze(0) for s in state)


def plan_segments(
    batch_sizes: Tensor, step_cost: float, row_cost: float, call_cost: float
) -> list[int]:
    """Time boundaries ``[0, t_1, ..., T]`` of the padded segments a ragged batch runs in.

    Sequences are sorted by decreasing length, so a segment starting at step ``t`` needs only
    the first ``batch_sizes[t]`` rows. Cutting time into more segments skips more padding but
    costs one more kernel call each; the plan minimises the modelled time
    ``sum(len_s * (step_cost + row_cost * rows_s)) + call_cost * segments`` over evenly spaced
    cuts (1 to 16 segments).
    """
    sizes = batch_sizes.tolist()
    t = len(sizes)
    # One segment wins outright when all of its padding costs less than one more call.
    if row_cost * (t * sizes[0] - sum(sizes)) <= call_cost:
        return [0, t]
    best, best_cost = [0, t], float("inf")
    for k in (1, 2, 3, 4, 6, 8, 12, 16):
        if k > t:
            break
        bounds = sorted({round(i * t / k) for i in range(k + 1)})
        cost = call_cost * (len(bounds) - 1)
        for a, b in itertools.pairwise(bounds):
            cost += (b - a) * (step_cost + row_cost * sizes[a])
        if cost < best_cost:
            best, best_cost = bounds, cost
    return best


def _segment_costs(weights: list[Tensor]) -> tuple[float, float, float]:
    """Modelled seconds per time step, per row-step and per call of the CPU fused kernel
    (``weights``: ``[weight_ih, weight_hh, ...]``); computed once per plan."""
    gates, inputs = weights[0].shape
    flops = 2.0 * gates * (inputs + weights[1].shape[1])
    return 4e-6, flops / 40e9, 60e-6


def _run_fused(
    cell: Any,
    x: SequenceBatch,
    hx: tuple[Tensor, ...],
    need: Need,
    plan: _FusedPlan | None = None,
) -> RecurrenceResult:
    """The fused path from ``hx``, the state (sorted order) in the kernel's layout
    (:func:`_kernel_state`); ``plan`` the cell's plan when the caller has it."""
    if torch.compiler.is_compiling():
        # Dynamo misreads the cache of plans (a WeakKeyDictionary keyed by cells gave one
        # cell's plan to another), so a compiled graph builds the plan from the cell.
        plan = _build_plan(cell)
        # One call whatever the lengths, so the graph holds no choice made from their values
        # (the segments below are planned from them): padded (oneDNN's fast path on CPU),
        # packed where the final state is more than the last output (an LSTM's c) or on CUDA.
        if x.data.is_cuda or (need == "final" and plan.pair):
            out, final = _fused_call(cell, x.data, x.batch_sizes, hx, plan)
            return _fused_result(out, final, x, need)
        out, _ = _fused_call(cell, x.to_padded_time_major(), None, hx, plan, final=False)
        flat = out.reshape(-1, out.shape[-1])
        if need == "last":
            return RecurrenceResult((), (flat.index_select(0, x.last_padded_index_caller),))
        picked = flat.index_select(0, x.padded_index)
        if need != "final":
            return RecurrenceResult((picked,), ())
        return RecurrenceResult((picked,), _to_caller((picked[x.last_rows_sorted()],), x))
    if plan is None:
        plan = _fused_plan(cell)
    sizes = x._sizes
    t, b = len(sizes), x.batch_size
    equal = sizes[0] == sizes[-1]
    if x.data.is_cuda or (need == "final" and plan.pair and not equal):
        # cuDNN skips finished rows itself; on CPU only packing gives an LSTM's exact final c.
        out, final = _fused_call(cell, x.data, x.batch_sizes, hx, plan)
        return _fused_result(out, final, x, need)
    if equal:  # the packed data is the time-major padding; a Fold's rows are the final h
        out, final = _fused_call(cell, x.data.view(t, b, -1), None, hx, plan)
        return _fused_result(out.reshape(t * b, -1), final, x, need)
    # Ragged on CPU: padded segments of decreasing width (the CPU kernel is slower on packed
    # input than on padded input); rows that end inside a segment run on into padding there,
    # but those outputs are never read and those rows leave before the next segment.
    if _one_segment(x, plan):
        bounds, padded = [0, t], x.to_padded_time_major()
    else:
        bounds = plan_segments(x.batch_sizes, *plan.costs)
        padded = x.to_padded_time_major()
    if len(bounds) == 2:
        out, _ = _fused_call(cell, padded, None, hx, plan, final=False)
        flat = out.reshape(t * b, -1)
        if need == "last":  # a Fold: one call, one gather into the caller's order
            return RecurrenceResult((), (flat.index_select(0, x.last_padded_index_caller),))
        picked = flat.index_select(0, x.padded_index)
    elif need == "last":  # only each sequence's last row, gathered in the caller's order
        seq = x.unsorted_indices.cpu()
        rows = (seq, x.sorted_lengths[seq] - 1)
        return RecurrenceResult((), (_run_segments(cell, x, padded, bounds, hx, plan, rows),))
    else:
        picked = _run_segments(cell, x, padded, bounds, hx, plan, x._row_position)
    if need != "final":
        return RecurrenceResult((picked,), ())
    last = picked.index_select(0, x.last_rows_sorted())
    return RecurrenceResult((picked,), _to_caller((last,), x))


def _fused_result(
    out: Tensor, final: tuple[Tensor, ...], x: SequenceBatch, need: Need
) -> RecurrenceResult:
    """The result of one fused call over the whole batch: packed outputs ``[N, H]`` (in the
    rows of ``x``) and the final state in sorted order."""
    if need == "last":
        return RecurrenceResult((), _to_caller(final[:1], x))
    return RecurrenceResult((out,), _to_caller(final, x) if need == "final" else ())


def _one_segment(x: SequenceBatch, plan: _FusedPlan) -> bool:
    """Whether all the padding of ``x`` costs less than one more kernel call
    (:func:`plan_segments`' first test, in O(1): padded rows minus real rows)."""
    _, row_cost, call_cost = plan.costs
    return row_cost * (x.max_length * x.batch_size - x.data.shape[0]) <= call_cost


def _run_segments(
    cell: Any,
    x: SequenceBatch,
    padded: Tensor,
    bounds: list[int],
    hx: tuple[Tensor, ...],
    plan: _FusedPlan,
    rows: tuple[Tensor, Tensor],
) -> Tensor:
    """The outputs at ``rows`` (sorted sequence, step) of a ragged batch run as padded
    segments cut at ``bounds``, from ``hx`` (kernel layout)."""
    outs, offsets = [], []
    offset = 0
    sizes = x.batch_sizes.tolist()
    for a, z in itertools.pairwise(bounds):
        active = sizes[a]
        hx = tuple(h[:, :active] for h in hx)
        out, final = _fused_call(cell, padded[a:z, :active], None, hx, plan)
        hx = tuple(f.unsqueeze(0) for f in final)
        outs.append(out.reshape((z - a) * active, -1))
        offsets.append((offset, active))
        offset += (z - a) * active
    seq, step = rows
    segment = torch.bucketize(step, torch.tensor(bounds[1:-1]), right=True)
    base = torch.tensor([o for o, _ in offsets])[segment]
    width = torch.tensor([r for _, r in offsets])[segment]
    start = torch.tensor(bounds[:-1])[segment]
    index = (base + (step - start) * width + seq).to(padded.device)
    return torch.cat(outs).index_select(0, index)


def _run_scan(
    cell: Any, x: SequenceBatch, state: tuple[Tensor, ...]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The cell's parallel form over the padded (sorted) batch: ``cell.parallel(px, state,
    lengths)`` (outputs ``[T, B, H]`` and each sequence's final state) when it has one, else
    the prefix scan ``cell.scan(px, h0)`` of a single state; each sequence's output at step t
    depends on its steps up to t only, so padding is never read."""
    projected = cell.input_projection(x.data)
    if packing_pays(cell, x):
        out, final = cell.parallel_packed(projected, state, x)
        return out, _checked_final(cell, "parallel_packed", final, state)
    if callable(getattr(type(cell), "parallel", None)):
        sizes = x._sizes
        equal = sizes[0] == sizes[-1]  # the packed data is then the time-major padding
        steps, batch = len(sizes), x.batch_size
        if equal:
            px = projected.view(steps, batch, -1)
        else:
            px = x.with_data(projected).to_padded_time_major()
        out, final = cell.parallel(px, state, x.sorted_lengths)
        final = _checked_final(cell, "parallel", final, state)
        flat = out.flatten(0, 1)
        return (flat if equal else flat.index_select(0, x.padded_index)), final
    px = x.with_data(projected).to_padded_time_major()
    out = cell.scan(px, state[0])
    data = out.flatten(0, 1).index_select(0, x.padded_index)
    return data, (data.index_select(0, x.last_rows_sorted()),)


def _checked_final(
    cell: Any, method: str, final: Any, state: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    final = as_tuple(final)
    if len(final) != len(state):
        raise ValueError(
            f"{type(cell).__name__}.{method}: expected a final state of {len(state)} "
            f"tensor(s), as its initial state, found {len(final)}"
        )
    return final


def loop_step(cell: Any, steps: int) -> Any:
    """The cell's step for one run: its ``step_function()`` (the per-run work done once) when
    the class that defines ``step`` defines it too (a subclass that redefines ``step`` keeps
    its own, and so does an instance whose ``step`` was replaced), else ``step``."""
    if "step" in vars(cell):
        return cell.step
    for klass in type(cell).__mro__:
        if "step" in vars(klass):
            return cell.step_function(steps) if "step_function" in vars(klass) else cell.step
    return cell.step


def _run_loop(
    cell: Any, x: SequenceBatch, state: tuple[Tensor, ...], kept: int
) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """One step per time step over the active rows; the packed data of the first ``kept``
    state tensors at every step and the final state (sorted order)."""
    split = callable(getattr(cell, "input_projection", None)) and callable(
        getattr(cell, "step", None)
    )
    inputs = cell.input_projection(x.data) if split else x.data
    step = loop_step(cell, x.max_length) if split else cell
    sizes = x.batch_sizes.tolist()
    finished: list[tuple[Tensor, ...]] = []
    outputs: list[list[Tensor]] = [[] for _ in range(kept)]
    for chunk, b in zip(inputs.split_with_sizes(sizes), sizes, strict=True):
        if state[0].shape[0] > b:
            finished.append(tuple(s[b:] for s in state))
            state = tuple(s[:b] for s in state)
        current = _unwrap(state)
        state = as_tuple(step(chunk, current))
        for k, out in enumerate(outputs):
            out.append(state[k])
    finished.append(state)
    final = tuple(torch.cat([f[k] for f in reversed(finished)]) for k in range(len(state)))
    return [torch.cat(out) for out in outputs], final


def _run_reference(
    cell: Any, x: SequenceBatch, state: tuple[Tensor, ...]
) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    padded = x.to_padded_time_major()
    steps = torch.arange(x.max_length).unsqueeze(1)
    mask = (steps < x.sorted_lengths.unsqueeze(0)).to(padded.device)  # [T, B]
    outputs: list[list[Tensor]] = [[] for _ in state]
    for t in range(x.max_length):
        new = as_tuple(cell(padded[t], _unwrap(state)))
        keep = mask[t]
        state = tuple(
            torch.where(keep.view(-1, *(1,) * (s.dim() - 1)), n, s)
            for n, s in zip(new, state, strict=True)
        )
        for k, s in enumerate(state):
            outputs[k].append(s)
    index = x.padded_index
    return [torch.stack(o).flatten(0, 1).index_select(0, index) for o in outputs], state


def run_recurrence(
    cell: Any, x: SequenceBatch, state: tuple[Tensor, ...], backend: str, need: Need = "outputs"
) -> RecurrenceResult:
    """Run ``cell`` over the packed ``x`` from ``state`` (``[B, ...]`` per state tensor, rows
    in *sorted* order) on ``backend``, a resolved path (see :func:`select_backend`).

    ``need`` says what comes back (see :class:`RecurrenceResult`): ``'outputs'``, the output
    at every step; ``'states'``, every state tensor at every step; ``'final'``, the output at
    every step and the whole final state; ``'last'``, each sequence's last output only (a
    Fold: no path keeps the per-step outputs).
    """
    if need not in _NEEDS:
        raise ValueError(f"need: expected one of {_NEEDS}, found {need!r}")
    if backend == "fused":
        if need == "states" and len(state) > 1:
            raise ValueError(
                "backend='fused' gives the output of every step, not every state tensor; "
                "use 'loop' or 'auto' for need='states'"
            )
        return _run_fused(cell, x, _kernel_state(state), need)
    kept = len(state) if need == "states" else 0 if need == "last" else 1
    if backend == "scan":
        out, final = _run_scan(cell, x, state)
        outs = [out][:kept]
    elif backend == "loop":
        outs, final = _run_loop(cell, x, state, kept)
    else:
        outs, final = _run_reference(cell, x, state)
        outs = outs[:kept]
    if need == "final":
        return RecurrenceResult(tuple(outs), _to_caller(final, x))
    return RecurrenceResult(tuple(outs), _to_caller(final[:1], x) if need == "last" else ())


# ---------------------------------------------------------------------------- initial state


class InitialState(nn.Module):
    """The state a recurrence starts from.

    ``None`` zeros; a float, every state tensor filled with it (CNTK's ``initial_state=0.1``);
    a tensor (or a tuple, one per state tensor) of shape ``[H]`` or ``[B, H]``; ``'learned'``,
    one trainable vector per state tensor, starting at zero. ``Recurrence`` turns a
    SequenceBatch given as initial state into its last steps (:func:`state_from_data`).
    """

    def __init__(self, cell: Any, spec: InitialSpec) -> None:
        super().__init__()
        self.cell = [cell]  # a list so the cell is not registered twice
        self.constant: float | None = None
        self.shapes = [tuple(s.shape[1:]) for s in as_tuple(cell.initial_state(1))]
        self.learned = nn.ParameterList()
        self.is_learned = isinstance(spec, str) and spec == "learned"  # len(ParameterList) is slow
        self.fixed: tuple[Tensor, ...] | None = None
        if spec is None:
            return
        if isinstance(spec, str):
            if spec != "learned":
                raise ValueError(
                    "initial_state: expected None, a float, a tensor, a tuple of tensors or "
                    f"'learned', found {spec!r}"
                )
            for s in as_tuple(cell.initial_state(1)):
                self.learned.append(nn.Parameter(torch.zeros(s.shape[1:], dtype=s.dtype)))
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            self.constant = float(spec)
        elif isinstance(spec, (Tensor, tuple)):
            self.fixed = as_tuple(spec)
            shapes = [tuple(s.shape[1:]) for s in as_tuple(cell.initial_state(1))]
            if len(self.fixed) != len(shapes) or any(
                not isinstance(f, Tensor) or tuple(f.shape[-1:]) != sh[-1:]
                for f, sh in zip(self.fixed, shapes, strict=True)
            ):
                found = [
                    tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                    for f in self.fixed
                ]
                raise ValueError(
                    f"initial_state: expected {len(shapes)} tensor(s) of shapes "
                    f"{['[H]' if len(sh) == 1 else sh for sh in shapes]} (or [B, ...]) matching "
                    f"the cell's state {shapes}, found {found}"
                )
        else:
            raise TypeError(
                "initial_state: expected None, a float, a tensor, a tuple of tensors or "
                f"'learned', found {type(spec).__name__}"
            )

    def make(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """The state in the caller's order, ``[B, ...]`` per state tensor (the engine calls it
        for every batch that comes without a state)."""
        if self.constant is not None:
            c = self.constant
            return tuple(
                torch.full((batch, *s), c, device=device, dtype=dtype) for s in self.shapes
            )
        zeros = as_tuple(self.cell[0].initial_state(batch, device, dtype))
        if self.is_learned:
            return tuple(p.to(dtype).expand_as(z) for p, z in zip(self.learned, zeros, strict=True))
        if self.fixed is not None:
            return tuple(
                f.to(device, dtype).expand_as(z) for f, z in zip(self.fixed, zeros, strict=True)
            )
        return zeros


def state_from_data(state: Any, go_backwards: bool = False) -> tuple[Tensor, ...]:
    """A state given as data, as a tuple of ``[B, ...]`` tensors: a SequenceBatch (alone or in
    the tuple) stands for its last step per sequence, its first when ``go_backwards``, as CNTK
    uses a sequence as initial state.

    >>> s = SequenceBatch.from_list([torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0]])])
    >>> [t.squeeze(1).tolist() for t in state_from_data(s)]
    [[2.0, 3.0]]
    """
    parts = state if isinstance(state, tuple) else (state,)
    return tuple(
        (p.first() if go_backwards else p.last()) if isinstance(p, SequenceBatch) else p
        for p in parts
    )


def _to_sorted(state: tuple[Tensor, ...], x: SequenceBatch, argument: str) -> tuple[Tensor, ...]:
    for k, s in enumerate(state):
        if s.dim() < 2 or s.shape[0] != x.batch_size:
            raise ValueError(
                f"{argument}[{k}]: expected a state of shape [B={x.batch_size}, ...], "
                f"found {tuple(s.shape)}"
            )
    return tuple(s.index_select(0, x.sorted_indices) for s in state)


def _to_caller(state: tuple[Tensor, ...], x: SequenceBatch) -> tuple[Tensor, ...]:
    if not torch.compiler.is_compiling() and x.in_caller_order:
        return state
    return tuple(s.index_select(0, x.unsorted_indices) for s in state)


def _check_parameters(cell: nn.Module, data: Tensor, weight: Tensor | None = None) -> None:
    """A one-line error when ``data`` and ``cell``'s parameters (``weight``, or its first
    parameter) differ in dtype (outside autocast, which casts inside the operations) or
    device."""
    if weight is None:
        weight = next(cell.parameters(), None)
        if weight is None:
            return
    if weight.dtype != data.dtype and not torch.is_autocast_enabled(data.device.type):
        raise TypeError(
            f"x: {type(cell).__name__} expected input of dtype {weight.dtype} (its "
            f"parameters'), found {data.dtype}"
        )
    if weight.device != data.device:
        raise ValueError(
            f"x: {type(cell).__name__} expected input on device {weight.device} (its "
            f"parameters'), found {data.device}"
        )


def _unwrap(state: tuple[Tensor, ...]) -> State:
    return state[0] if len(state) == 1 else state


# ---------------------------------------------------------------------------- combinators


class Recurrence(Layer):
    """The output of ``cell`` at every step of every sequence (a scan).

    Args:
        cell: a step function (see :class:`rnnkit.cells.Cell`).
        go_backwards: run each sequence from its last step to its first; the output at step
            ``t`` has then seen steps ``t..T_i-1``.
        initial_state: None (zeros), a float, a tensor ``[H]``/``[B, H]`` (a tuple for several
            state tensors) or ``'learned'``.
        backend: ``'auto'``, ``'fused'``, ``'scan'``, ``'loop'`` or ``'reference'`` (see the module
            doc).

    Input: a SequenceBatch of ``[I]`` steps. Output: a SequenceBatch of ``[H]`` steps.
    :meth:`states` gives every state tensor at every step; :meth:`with_final_state` also
    returns the state after each sequence's last step.
    """

    def __init__(
        self,
        cell: nn.Module,
        go_backwards: bool = False,
        initial_state: InitialSpec = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_cell(cell)
        self.cell = cell
        self.go_backwards = go_backwards
        if isinstance(initial_state, (SequenceBatch, tuple)):
            initial_state = state_from_data(initial_state, go_backwards)
        self.initial = InitialState(cell, initial_state)
        select_backend(cell, backend)
        self.backend = backend
        # select_backend's answer for a cell that cannot scan depends only on the cell, the
        # backend asked for and every_state: resolved once per (backend, every_state)
        self._resolved: dict[tuple[str, bool], str] = {}
        self._input_size = getattr(cell, "input_size", None)
        self._scannable = has_parallel(cell)
        self._state_tensors = len(self.initial.shapes)
        self._constant_start: tuple[tuple[Any, ...], tuple[Tensor, ...]] | None = None

    def _backend(self, x: SequenceBatch, every_state: bool) -> str:
        if self._scannable:
            return select_backend(self.cell, self.backend, every_state, x)
        key = (self.backend, every_state)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = select_backend(self.cell, self.backend, every_state, x)
            self._resolved[key] = resolved
        return resolved

    def _start(self, x: SequenceBatch, state: State | None) -> tuple[Tensor, ...]:
        if state is None:
            initial = self.initial
            start = initial.make(x.batch_size, x.data.device, x.data.dtype)
            # Zeros, a constant or a learned vector are the same in every row: no reordering.
            return start if initial.fixed is None else _to_sorted(start, x, "state")
        return _to_sorted(state_from_data(state, self.go_backwards), x, "initial_state")

    def _fused_start(self, x: SequenceBatch, state: State | None) -> tuple[Tensor, ...]:
        """:meth:`_start` in the fused kernel's layout. Zeros and a constant are made once per
        batch size, dtype and device and reused: the kernel only reads them, and they hold no
        gradient (a small batch pays for every tensor operation)."""
        initial = self.initial
        if state is not None or initial.fixed is not None or initial.is_learned:
            return _kernel_state(self._start(x, state))
        data = x.data
        key = (x.batch_size, data.dtype, data.device, torch.is_inference_mode_enabled())
        cached = self._constant_start
        if cached is not None and cached[0] == key:
            return cached[1]
        hx = _kernel_state(initial.make(x.batch_size, data.device, data.dtype))
        self._constant_start = (key, hx)
        return hx

    def _run(self, x: SequenceBatch, state: State | None, need: Need) -> RecurrenceResult:
        """:func:`run_recurrence` on ``x`` (reversed and back when ``go_backwards``) from
        ``state`` (caller order; None: the initial state); the outputs in the rows of ``x``."""
        x = _check_sequence_batch(x)
        size = self._input_size
        if size is None:  # a cell built without its input size takes it from its first input
            size = self._input_size = materialize_input(self.cell, x.data)
        if isinstance(size, int) and x.data.shape[1:] != (size,):
            raise ValueError(
                f"x: {type(self.cell).__name__} expected input of shape [B, {size}] per step, "
                f"found steps of shape {tuple(x.feature_shape)}"
            )
        cell = self.cell
        backend = self._backend(x, need == "states" and self._state_tensors > 1)
        if backend == "fused" and not torch.compiler.is_compiling():
            # The fused path's own lookups: the plan holds the weights to check against.
            plan = _fused_plan(cell)
            _check_parameters(cell, x.data, plan.weights[0])
            hx = self._fused_start(x, state)
            if not self.go_backwards:
                return _run_fused(cell, x, hx, need, plan)
            result = _run_fused(cell, x.reverse(), hx, need, plan)
        else:
            _check_parameters(cell, x.data)
            start = self._start(x, state)
            if not self.go_backwards:
                return run_recurrence(cell, x, start, backend, need)
            result = run_recurrence(cell, x.reverse(), start, backend, need)
        back = x.reverse_index  # reversing is its own inverse
        return RecurrenceResult(
            tuple(o.index_select(0, back) for o in result.outputs), result.final_state
        )

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        (out,) = self._run(x, None, "outputs").outputs  # x is checked there
        return x.with_data(out)

    def states(self, x: SequenceBatch) -> tuple[SequenceBatch, ...]:
        """Every state tensor at every step (``(h, c)`` for an LSTM), one SequenceBatch each."""
        outs = self._run(x, None, "states").outputs
        return tuple(x.with_data(o) for o in outs)

    def with_final_state(self, x: SequenceBatch) -> tuple[SequenceBatch, State]:
        """The outputs and the final state (caller order; a tuple for several state tensors)."""
        result = self._run(x, None, "final")
        return x.with_data(result.outputs[0]), _unwrap(result.final_state)


class RecurrenceFrom(Recurrence):
    """A :class:`Recurrence` whose initial state is data, called as ``(initial_state, x)``.

    ``initial_state`` is a tensor ``[B, H]`` or a tuple of them in the caller's order, e.g. an
    encoder's final state (``Fold.final_state``) for a decoder. A SequenceBatch in its place
    stands for its last step per sequence (its first when ``go_backwards``), as in CNTK.
    """

    def __init__(self, cell: nn.Module, go_backwards: bool = False, backend: Backend = "auto"):
        super().__init__(cell, go_backwards=go_backwards, backend=backend)

    def forward(  # type: ignore[override]
        self, initial_state: State, x: SequenceBatch
    ) -> SequenceBatch:
        (out,) = self._run(x, initial_state, "outputs").outputs
        return x.with_data(out)

    def states(  # type: ignore[override]
        self, initial_state: State, x: SequenceBatch
    ) -> tuple[SequenceBatch, ...]:
        """Every state tensor at every step, one SequenceBatch each."""
        outs = self._run(x, initial_state, "states").outputs
        return tuple(x.with_data(o) for o in outs)

    def with_final_state(  # type: ignore[override]
        self, initial_state: State, x: SequenceBatch
    ) -> tuple[SequenceBatch, State]:
        """The outputs and the final state (caller order)."""
        result = self._run(x, initial_state, "final")
        return x.with_data(result.outputs[0]), _unwrap(result.final_state)


class Fold(Recurrence):
    """Recurrence followed by "last": ``[B, H]``, the output after each sequence's last step
    (after its first step when ``go_backwards``), in the caller's order.

    :meth:`final_state` returns every state tensor (``(h, c)`` for an LSTM).
    """

    def forward(self, x: SequenceBatch) -> Tensor:  # type: ignore[override]
        return self._run(x, None, "last").final_state[0]

    def final_state(self, x: SequenceBatch) -> State:
        """The whole final state, caller order; a tuple for several state tensors."""
        return self.with_final_state(x)[1]


class Bidirectional(Layer):
    """A forward and a backward recurrence over the same input, merged per step.

    ``forward`` and ``backward`` are Recurrence modules (or cells: a forward cell is wrapped in
    ``Recurrence(cell)``, a backward one in ``Recurrence(cell, go_backwards=True)``).
    ``merge='concat'`` gives ``[H_f + H_b]`` per step, ``'sum'`` gives ``[H]``.
    """

    def __init__(
        self,
        forward: nn.Module,
        backward: nn.Module,
        merge: Literal["concat", "sum"] = "concat",
    ) -> None:
        super().__init__()
        if merge not in ("concat", "sum"):
            raise ValueError(f"merge: expected 'concat' or 'sum', found {merge!r}")
        self.forward_layer = forward if isinstance(forward, Recurrence) else Recurrence(forward)
        self.backward_layer = (
            backward
            if isinstance(backward, Recurrence)
            else Recurrence(backward, go_backwards=True)
        )
        if not self.backward_layer.go_backwards:
            raise ValueError(
                "backward: expected a Recurrence with go_backwards=True (or a cell), found one "
                "running forwards"
            )
        self.merge = merge

    def _merged(self, f: SequenceBatch, b: SequenceBatch) -> SequenceBatch:
        if self.merge == "sum":
            return f.with_data(f.data + b.data)
        return f.with_data(torch.cat([f.data, b.data], dim=-1))

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        return self._merged(self.forward_layer(x), self.backward_layer(x))

    def with_final_state(self, x: SequenceBatch) -> tuple[SequenceBatch, tuple[State, State]]:
        """The merged outputs and ``(forward final state, backward final state)``, caller
        order; the backward one is the state after each sequence's *first* step."""
        f, f_state = self.forward_layer.with_final_state(x)
        b, b_state = self.backward_layer.with_final_state(x)
        return self._merged(f, b), (f_state, b_state)


class Unfold(Layer):
    """Generate a sequence from a state (one-to-many decoding).

    At each step: ``out = readout(h)``; the emitted item is ``out`` itself (``mode='value'``,
    for real-valued series), its argmax (``'greedy'``) or a draw from ``softmax(out / T)``
    (``'sample'``); the next input is ``feedback(item)``; the state advances with the cell.
    A sequence stops after it emits ``stop`` (a token id, or a function of the emitted items
    returning a ``[B]`` bool) or at ``max_length`` steps.

    ``forward(state, first_input)`` takes the initial state (caller order) and the first input
    ``[B, I]`` and returns a SequenceBatch of the emitted items (ids ``[N]`` or values ``[N, O]``).
    """

    def __init__(
        self,
        cell: nn.Module,
        readout: nn.Module,
        feedback: nn.Module,
        max_length: int,
        stop: int | Any = None,
        mode: Literal["greedy", "sample", "value"] = "greedy",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        check_cell(cell)
        if max_length < 1:
            raise ValueError(f"max_length: expected at least 1, found {max_length}")
        if mode not in ("greedy", "sample", "value"):
            raise ValueError(f"mode: expected 'greedy', 'sample' or 'value', found {mode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature: expected a positive number, found {temperature}")
        self.cell, self.readout, self.feedback = cell, readout, feedback
        self.max_length, self.stop, self.mode, self.temperature = (
            max_length,
            stop,
            mode,
            temperature,
        )

    def _emit(self, out: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.mode == "value":
            return out
        if self.mode == "greedy":
            return out.argmax(-1)
        probs = torch.softmax(out / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def _stopped(self, item: Tensor) -> Tensor:
        if self.stop is None:
            return torch.zeros(item.shape[0], dtype=torch.bool, device=item.device)
        if callable(self.stop):
            return torch.as_tensor(self.stop(item), dtype=torch.bool, device=item.device)
        return item == self.stop

    def forward(
        self, state: State, first_input: Tensor, generator: torch.Generator | None = None
    ) -> SequenceBatch:
        current = as_tuple(state)
        batch = current[0].shape[0]
        x = first_input
        items: list[Tensor] = []
        lengths = torch.full((batch,), self.max_length, dtype=torch.int64)
        alive = torch.ones(batch, dtype=torch.bool)
        for t in range(self.max_length):
            current = as_tuple(self.cell(x, _unwrap(current)))
            item = self._emit(self.readout(current[0]), generator)
            items.append(item)
            ended = self._stopped(item).cpu() & alive
            lengths[ended] = t + 1
            alive &= ~ended
            if not bool(alive.any()):
                break
            x = self.feedback(item)
        padded = torch.stack(items, dim=1)
        return SequenceBatch.from_padded(padded, lengths)
