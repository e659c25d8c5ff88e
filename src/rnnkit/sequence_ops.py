"""Operations over the steps of each sequence of a :class:`SequenceBatch`, after CNTK's
``cntk.sequence`` namespace (``past_value``, ``future_value``, ``delay``, ``broadcast_as``,
``reduce_sum``, ``reduce_max``, ``where``, ``gather``, ``slice``, ``is_first``, ``is_last``,
``first``, ``last``).

Every operation works on the packed rows (see :mod:`rnnkit.sequences`): each sequence sees
only its own steps, so a shift never reads another sequence's step or a padding value, a
reduction covers exactly ``L_i`` steps, and a selection keeps its steps in order. Shapes: B
sequences, N packed steps, F the shape of one step; per-sequence results are ``[B, *F]`` in
the caller's order.

The examples are CNTK's docstring examples: one sequence of 4 steps of shape ``(3, 2)``
holding ``0 .. 23``.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
>>> reduce_sum(x).tolist()
[[[36.0, 40.0], [44.0, 48.0], [52.0, 56.0]]]
>>> first(x).tolist(), last(x).tolist()
([[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]], [[[18.0, 19.0], [20.0, 21.0], [22.0, 23.0]]])
>>> is_first(x).to_list()[0].tolist(), is_last(x).to_list()[0].tolist()
([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])

Where CNTK would return an empty sequence (``gather`` or ``where`` keeping no step of a
sequence, a ``slice`` outside it), these functions raise a ``ValueError`` naming the
sequence: a :class:`SequenceBatch` holds no empty sequences.
"""

from __future__ import annotations

import builtins
import math

import numpy as np
import torch
from torch import Tensor

from rnnkit.sequences import SequenceBatch

__all__ = [
    "broadcast_as",
    "check_batch",
    "delay",
    "first",
    "future_value",
    "gather",
    "is_first",
    "is_last",
    "last",
    "past_value",
    "reduce_max",
    "reduce_sum",
    "repeat_length",
    "slice",
    "where",
]

InitialValue = float | Tensor | SequenceBatch

# where()'s running sums of repeat factors are rounded to this many decimals before ``ceil``,
# so that ten factors of 1.2 (1.2000000476837158 in float32) make 12 steps, not 13.
_ROUNDING_DECIMALS = 6


def check_batch(x: object, argument: str) -> SequenceBatch:
    """``x`` when it is a SequenceBatch, else a TypeError naming ``argument``."""
    if not isinstance(x, SequenceBatch):
        raise TypeError(f"{argument}: expected a SequenceBatch, found {type(x).__name__}")
    return x


def _check_steps(time_step: object, argument: str = "time_step") -> int:
    if isinstance(time_step, bool) or not isinstance(time_step, int) or time_step < 0:
        raise ValueError(f"{argument}: expected an integer >= 0, found {time_step!r}")
    return time_step


# ---------------------------------------------------------------------------- shifts


def _initial_rows(x: SequenceBatch, initial_state: InitialValue, future: bool) -> Tensor:
    """``[B, *F]`` (sorted order) the value a shift reads before the start (after the end)."""
    b, features, data = x.batch_size, tuple(x.feature_shape), x.data
    expected = (
        "initial_state: expected a number, a tensor broadcastable to one step's shape "
        f"{features}, a [B={b}, *{features}] tensor or a SequenceBatch of B={b} sequences"
    )
    if isinstance(initial_state, SequenceBatch):
        if initial_state.batch_size != b:
            raise ValueError(f"{expected}, found a SequenceBatch of {initial_state.batch_size}")
        initial_state = initial_state.first() if future else initial_state.last()
        if tuple(initial_state.shape[1:]) != features:
            raise ValueError(
                f"{expected}, found a SequenceBatch of steps {tuple(initial_state.shape[1:])}"
            )
    if isinstance(initial_state, bool) or not isinstance(initial_state, (int, float, Tensor)):
        raise TypeError(f"{expected}, found {type(initial_state).__name__}")
    if not isinstance(initial_state, Tensor):
        return data.new_full((b, *features), float(initial_state))
    state = initial_state.to(device=data.device, dtype=data.dtype)
    if state.dim() == len(features) + 1 and tuple(state.shape) == (b, *features):
        return state.index_select(0, x.sorted_indices)
    try:
        step = torch.broadcast_to(state, features)
    except RuntimeError:
        raise ValueError(f"{expected}, found shape {tuple(state.shape)}") from None
    return step.unsqueeze(0).expand(b, *features)


def _shift(
    x: SequenceBatch, initial_state: InitialValue, steps: int, future: bool
) -> SequenceBatch:
    """Every row replaced by the row ``steps`` earlier (later when ``future``) in its own
    sequence, or by the initial value where there is none."""
    init = _initial_rows(x, initial_state, future)
    if steps == 0:
        return x
    seq, step = x._row_position
    source = step + steps if future else step - steps
    inside = source < x.sorted_lengths[seq] if future else source >= 0
    offsets = x.step_offsets[source.clamp(0, x.max_length - 1)]
    rows = torch.where(inside, offsets + seq, x.data.shape[0] + seq)
    return x.with_data(torch.cat([x.data, init]).index_select(0, rows.to(x.data.device)))


def past_value(
    x: SequenceBatch, initial_state: InitialValue = 0.0, time_step: int = 1
) -> SequenceBatch:
    """Each step replaced by the step ``time_step`` before it in the same sequence; the first
    ``time_step`` steps of a sequence read ``initial_state``.

    ``initial_state``: a number, a tensor broadcastable to a step's shape ``F``, a
    ``[B, *F]`` tensor (one value per sequence, caller order, e.g. an encoder's final state;
    gradients flow into it), or a SequenceBatch, whose last step per sequence is used (as
    CNTK does with a sequence as initial state).

    CNTK's example, then with a per-sequence initial state ``s0`` (the second call):

    >>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
    >>> past_value(x).to_list()[0].tolist()
    [[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], \
[[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]], [[12.0, 13.0], [14.0, 15.0], [16.0, 17.0]]]
    >>> s0 = (torch.arange(6.0) / 2).reshape(1, 3, 2)
    >>> past_value(x, initial_state=s0).to_list()[0][0].tolist()
    [[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]]
    """
    return _shift(check_batch(x, "x"), initial_state, _check_steps(time_step), future=False)


def future_value(
    x: SequenceBatch, initial_state: InitialValue = 0.0, time_step: int = 1
) -> SequenceBatch:
    """Each step replaced by the step ``time_step`` after it in the same sequence; the last
    ``time_step`` steps read ``initial_state`` (as :func:`past_value`; a SequenceBatch gives
    its *first* step per sequence).

    CNTK's example:

    >>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
    >>> future_value(x).to_list()[0].tolist()
    [[[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]], [[12.0, 13.0], [14.0, 15.0], [16.0, 17.0]], \
[[18.0, 19.0], [20.0, 21.0], [22.0, 23.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
    """
    return _shift(check_batch(x, "x"), initial_state, _check_steps(time_step), future=True)


def delay(x: SequenceBatch, initial_state: InitialValue = 0.0, time_step: int = 1) -> SequenceBatch:
    """CNTK's ``sequence.delay``: :func:`past_value` for ``time_step > 0``,
    :func:`future_value` of ``-time_step`` for ``time_step < 0``, ``x`` itself for 0.

    >>> x = SequenceBatch.from_list([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0])])
    >>> [s.tolist() for s in delay(x, -1, time_step=2).to_list()]
    [[-1.0, -1.0, 1.0], [-1.0]]
    >>> [s.tolist() for s in delay(x, time_step=-1).to_list()]
    [[2.0, 3.0, 0.0], [0.0]]
    """
    if isinstance(time_step, bool) or not isinstance(time_step, int):
        raise ValueError(f"time_step: expected an integer, found {time_step!r}")
    x = check_batch(x, "x")
    return _shift(x, initial_state, abs(time_step), future=time_step < 0)


# ---------------------------------------------------------------------------- per sequence


def broadcast_as(operand: Tensor, like: SequenceBatch) -> SequenceBatch:
    """``operand`` ``[B, *F]`` (one value per sequence, caller order) repeated at every step
    of the matching sequence of ``like``: a SequenceBatch with ``like``'s lengths.

    CNTK's example: the last step broadcast over the sequence.

    >>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
    >>> y = broadcast_as(last(x), is_first(x))
    >>> [step.tolist() == last(x)[0].tolist() for step in y.to_list()[0]]
    [True, True, True, True]
    """
    like = check_batch(like, "like")
    if not isinstance(operand, Tensor) or operand.dim() == 0 or operand.shape[0] != like.batch_size:
        found = tuple(operand.shape) if isinstance(operand, Tensor) else type(operand).__name__
        raise ValueError(
            f"operand: expected a tensor [B={like.batch_size}, ...] (one value per sequence), "
            f"found {found}"
        )
    seq, _ = like._row_position
    rows = like.sorted_indices.index_select(0, seq.to(like.sorted_indices.device))
    return like.with_data(operand.index_select(0, rows.to(operand.device)))


def reduce_sum(x: SequenceBatch) -> Tensor:
    """``[B, *F]`` the sum of each sequence's steps, caller order (CNTK's example in the
    module docstring)."""
    x = check_batch(x, "x")
    seq, _ = x._row_position
    total = x.data.new_zeros((x.batch_size, *x.feature_shape))
    total = total.index_add(0, seq.to(x.data.device), x.data)
    return total.index_select(0, x.unsorted_indices)


def reduce_max(x: SequenceBatch) -> Tensor:
    """``[B, *F]`` the elementwise maximum over each sequence's steps, caller order.

    CNTK builds it from ``future_value`` with a 0 initial state, so its result is never below
    0; this is the true maximum (a sequence of negative steps gives a negative maximum).

    >>> x = SequenceBatch.from_list([torch.tensor([[1.0, -2.0], [6.0, -3.0], [4.0, -5.0]]),
    ...                              torch.tensor([[-1.0, -1.0]])])
    >>> reduce_max(x).tolist()
    [[6.0, -2.0], [-1.0, -1.0]]
    """
    x = check_batch(x, "x")
    seq, _ = x._row_position
    data = x.data
    index = seq.to(data.device).view(-1, *([1] * (data.dim() - 1))).expand_as(data)
    out = data.new_zeros((x.batch_size, *x.feature_shape))
    out = out.scatter_reduce(0, index, data, reduce="amax", include_self=False)
    return out.index_select(0, x.unsorted_indices)


def first(x: SequenceBatch) -> Tensor:
    """``[B, *F]`` each sequence's first step (:meth:`SequenceBatch.first`)."""
    return check_batch(x, "x").first()


def last(x: SequenceBatch) -> Tensor:
    """``[B, *F]`` each sequence's last step (:meth:`SequenceBatch.last`)."""
    return check_batch(x, "x").last()


def _flag_dtype(x: SequenceBatch) -> torch.dtype:
    return x.data.dtype if x.data.is_floating_point() else torch.get_default_dtype()


def is_first(x: SequenceBatch) -> SequenceBatch:
    """A SequenceBatch of scalars (``[N]`` data): 1 at each sequence's first step, else 0."""
    x = check_batch(x, "x")
    _, step = x._row_position
    return x.with_data((step == 0).to(device=x.data.device, dtype=_flag_dtype(x)))


def is_last(x: SequenceBatch) -> SequenceBatch:
    """A SequenceBatch of scalars (``[N]`` data): 1 at each sequence's last step, else 0."""
    x = check_batch(x, "x")
    seq, step = x._row_position
    flags = step == x.sorted_lengths[seq] - 1
    return x.with_data(flags.to(device=x.data.device, dtype=_flag_dtype(x)))


# ---------------------------------------------------------------------------- selections


def _check_condition(condition: object, argument: str) -> SequenceBatch:
    condition = check_batch(condition, argument)
    if condition.feature_shape not in (torch.Size([]), torch.Size([1])):
        raise ValueError(
            f"{argument}: expected one scalar per step (steps of shape () or (1,)), found "
            f"steps of shape {tuple(condition.feature_shape)}"
        )
    return condition


def _repeat_counts(condition: SequenceBatch, argument: str) -> np.ndarray:
    """``[B, T]`` (caller order) how many times ``where`` emits each step: CNTK's rule, 0 or 1
    filters, a larger value repeats, and a fractional value rounds up and deducts the
    overshoot from the next step's count (the running sum of the values, ceiled)."""
    values = condition.data.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()
    if values.size and (not np.isfinite(values).all() or values.min() < 0):
        bad = values[~np.isfinite(values) | (values < 0)][0]
        raise ValueError(
            f"{argument}: expected values >= 0 (0/1 to filter, larger to repeat), found {bad}"
        )
    seq, step = condition._positions
    padded = np.zeros((condition.batch_size, condition.max_length))
    padded[seq, step] = values
    padded = padded[condition.unsorted_indices.cpu().numpy()]
    totals = np.ceil(np.round(np.cumsum(padded, axis=1), _ROUNDING_DECIMALS))
    return np.diff(totals, axis=1, prepend=0.0).astype(np.int64)


def _selected(counts: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The (caller sequence, step) of every emitted step in caller order, and the lengths;
    a ValueError for a sequence that keeps no step."""
    lengths = counts.sum(axis=1)
    for i, n in enumerate(lengths.tolist()):
        if n == 0:
            raise ValueError(
                f"{what}: sequence {i} keeps no step (CNTK would give an empty sequence); a "
                "SequenceBatch holds no empty sequences, so select at least one step of each"
            )
    t = counts.shape[1]
    emitted = np.repeat(np.arange(counts.size), counts.reshape(-1))
    return emitted // t, emitted % t, lengths.tolist()


def _pick(x: SequenceBatch, seq: np.ndarray, step: np.ndarray, lengths: list[int]) -> SequenceBatch:
    """A new SequenceBatch of the rows of ``x`` at (caller sequence, step), in order."""
    sorted_position = x.unsorted_indices.cpu().numpy()[seq]
    rows = torch.from_numpy(x._step_offsets[step] + sorted_position)
    flat = x.data.index_select(0, rows.to(x.data.device))
    return SequenceBatch.from_list(list(flat.split(lengths)))


def where(condition: SequenceBatch) -> SequenceBatch:
    """The step indices (int64 scalars) where ``condition`` is nonzero, one new sequence per
    sequence of ``condition`` (steps of shape ``()`` or ``(1,)``).

    A value above 1 repeats its index; a fractional value rounds up and deducts the overshoot
    from the next (CNTK's rule), so a factor of 1.2 on every step stretches by 1.2. CNTK's
    examples:

    >>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
    >>> z = x.map(lambda d: (d.sum((1, 2)) > 60).float().unsqueeze(1))
    >>> where(z).to_list()[0].tolist()
    [2, 3]
    >>> factors = SequenceBatch.from_list([torch.tensor([[1.0], [2.0], [1.0], [3.0], [2.0]])])
    >>> where(factors).to_list()[0].tolist()
    [0, 1, 1, 2, 3, 3, 3, 4, 4]
    >>> where(SequenceBatch.from_list([torch.full((10, 1), 1.2)])).to_list()[0].tolist()
    [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    """
    condition = _check_condition(condition, "condition")
    _, step, lengths = _selected(_repeat_counts(condition, "condition"), "where")
    indices = torch.from_numpy(step).to(condition.data.device)
    return SequenceBatch.from_list(list(indices.split(lengths)))


def gather(x: SequenceBatch, condition: SequenceBatch) -> SequenceBatch:
    """The steps of each sequence of ``x`` where ``condition`` (same lengths, one scalar per
    step) is nonzero, in order: a new, shorter SequenceBatch (stream compaction). Repeat
    factors above 1 repeat a step, as in :func:`where`. Gradients flow into the kept steps.

    CNTK's example: the steps whose sum exceeds 60.

    >>> x = SequenceBatch.from_list([torch.arange(24.0).reshape(4, 3, 2)])
    >>> z = x.map(lambda d: (d.sum((1, 2)) > 60).float().unsqueeze(1))
    >>> gather(x, z).to_list()[0].tolist()
    [[[12.0, 13.0], [14.0, 15.0], [16.0, 17.0]], [[18.0, 19.0], [20.0, 21.0], [22.0, 23.0]]]
    """
    x = check_batch(x, "x")
    condition = _check_condition(condition, "condition")
    if not torch.equal(condition.lengths, x.lengths):
        raise ValueError(
            f"condition: expected the lengths of x {x.lengths.tolist()}, found "
            f"{condition.lengths.tolist()}"
        )
    seq, step, lengths = _selected(_repeat_counts(condition, "condition"), "gather")
    return _pick(x, seq, step, lengths)


def _bound(index: int, length: int, is_end: bool) -> int:
    if is_end and index == 0:
        return length
    return min(index, length) if index >= 0 else max(length + index, 0)


def slice(x: SequenceBatch, begin_index: int, end_index: int) -> SequenceBatch:
    """Steps ``begin_index:end_index`` of every sequence, as CNTK's ``sequence.slice``: a
    negative index counts from the sequence's own end, indices are clipped to it, and
    ``end_index=0`` means the end (so ``slice(x, -2, 0)`` is each sequence's last two steps).

    >>> x = SequenceBatch.from_list([torch.arange(5.0), torch.arange(10.0, 13.0)])
    >>> [s.tolist() for s in slice(x, 1, 0).to_list()]
    [[1.0, 2.0, 3.0, 4.0], [11.0, 12.0]]
    >>> [s.tolist() for s in slice(x, -2, 0).to_list()]
    [[3.0, 4.0], [11.0, 12.0]]
    >>> [s.tolist() for s in slice(x, 0, -1).to_list()]
    [[0.0, 1.0, 2.0, 3.0], [10.0, 11.0]]
    """
    x = check_batch(x, "x")
    for name, value in (("begin_index", begin_index), ("end_index", end_index)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, found {value!r}")
    lengths = x.lengths.tolist()
    counts = np.zeros((len(lengths), x.max_length), dtype=np.int64)
    for i, n in enumerate(lengths):
        begin, end = _bound(begin_index, n, False), _bound(end_index, n, True)
        counts[i, builtins.slice(begin, max(begin, end))] = 1
    seq, step, kept = _selected(counts, f"slice({begin_index}, {end_index})")
    return _pick(x, seq, step, kept)


def repeat_length(length: int, factor: float) -> int:
    """How many steps ``where`` emits for ``length`` steps of ``factor`` each (CNTK's rule;
    what :class:`rnnkit.layers.sequence.UnfoldFrom` uses for its ``length_increase``)."""
    return math.ceil(round(length * factor, _ROUNDING_DECIMALS))
