"""`SequenceBatch`: B sequences of different lengths, stored packed and time-major.

Shape legend used across rnnkit: B batch, T time (longest sequence), N total steps of a
batch (sum of lengths), I input features, H hidden features, F any feature shape.

The layout is the one of PyTorch's ``PackedSequence``: sequences are sorted by decreasing
length, and ``data`` holds all first steps, then all second steps, and so on, so that
``batch_sizes[t]`` rows are active at step ``t``. A per-step function applies to ``data``
directly, and a recurrence processes step ``t`` as one contiguous block of rows.

>>> import torch
>>> x = SequenceBatch.from_list([torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0], [5.0]])])
>>> x.lengths.tolist(), x.batch_sizes.tolist()
([2, 3], [2, 2, 1])
>>> x.data.squeeze(1).tolist()  # steps of the longest first: 3, 1, then 4, 2, then 5
[3.0, 1.0, 4.0, 2.0, 5.0]
>>> x.last().squeeze(1).tolist(), x.first().squeeze(1).tolist()
([2.0, 5.0], [1.0, 3.0])
>>> [s.squeeze(1).tolist() for s in x.reverse().to_list()]
[[2.0, 1.0], [5.0, 4.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

__all__ = ["Lanes", "SequenceBatch"]

_T = TypeVar("_T")


class cached_property(Generic[_T]):
    """``functools.cached_property`` without the lock Python 3.11 takes on every first
    computation (3.12 removed it): ``torch.compile(fullgraph=True)`` cannot trace a lock, and a
    backward layer computes ``reverse_index`` inside the compiled graph. The value is stored in
    the instance's ``__dict__`` on first access, which later lookups find first."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


def _check_lengths(lengths: Tensor, batch: int, max_steps: int | None) -> None:
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(
            f"lengths: expected {batch} integers (one per sequence), "
            f"found shape {tuple(lengths.shape)}"
        )
    for i, n in enumerate(lengths.tolist()):
        if n <= 0:
            raise ValueError(
                f"lengths[{i}]: sequence {i} has length {n}; zero-length sequences are refused "
                "(drop them before batching)"
            )
        if max_steps is not None and n > max_steps:
            raise ValueError(
                f"lengths[{i}]: sequence {i} has length {n} but the padded input has only "
                f"{max_steps} steps"
            )


@dataclass(frozen=True)
class Lanes:
    """A ragged batch laid out in ``width`` lanes of ``steps`` steps each, time-major, with
    no padding between the sequences that share a lane (:attr:`SequenceBatch.lanes`).

    A lane holds one or more sequences one after another; it is as long as the batch's
    longest sequence, so the grid ``[steps, width]`` has as many steps as the padding
    ``[T, B]`` and at most as many lanes (sequences that fit together share one: first fit,
    longest first). Position ``t * width + w`` is step ``t`` of lane ``w``.

    ``index [N]``: the grid position of each packed row; ``starts [B]`` and ``ends [B]``: the
    grid positions of each sorted sequence's first and last steps (index tensors on the
    batch's device). A scan over the grid is exact where the state is reset at ``starts``.
    """

    width: int
    steps: int
    index: Tensor
    starts: Tensor
    ends: Tensor

    def grid(self, rows: Tensor) -> Tensor:
        """``rows [N, *F]`` (packed rows) in the grid ``[steps, width, *F]``, zeros in the
        positions no sequence fills."""
        out = rows.new_zeros((self.steps * self.width, *rows.shape[1:]))
        return out.index_copy(0, self.index, rows).view(self.steps, self.width, *rows.shape[1:])


def _first_fit(lengths: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Lanes of ``lengths[0]`` (the longest) steps filled first fit, longest first (the
    lengths are sorted): ``(width, lane [B], offset [B])``."""
    capacity = int(lengths[0])
    filled: list[int] = []
    lane = np.empty(len(lengths), dtype=np.int64)
    offset = np.empty(len(lengths), dtype=np.int64)
    for j, n in enumerate(lengths.tolist()):
        for w, used in enumerate(filled):
            if used + n <= capacity:
                lane[j], offset[j] = w, used
                filled[w] = used + n
                break
        else:
            lane[j], offset[j] = len(filled), 0
            filled.append(n)
    return len(filled), lane, offset


class _GridFacts(NamedTuple):
    tensors: tuple[Tensor, Tensor, Tensor]  # batch_sizes, sorted_indices, unsorted_indices
    cached: dict[str, Any]  # the cached properties a batch of this layout would compute


_GRID_FACTS: dict[tuple[int, int, torch.device], _GridFacts] = {}
_GRID_FACTS_KEPT = 64  # layouts remembered (a training run has a few: its minibatch shapes)


def _grid_facts(t: int, b: int, device: torch.device) -> _GridFacts:
    """The layout of B sequences of T steps on ``device``: its index tensors and cached
    properties, made once per layout (a minibatch of forecast windows builds one every step).
    Batches share these tensors: like a PackedSequence's ``batch_sizes``, they are read, not
    written. Under ``torch.compile`` they are made afresh, so no graph reads a cache."""
    key = (t, b, device)
    compiling = torch.compiler.is_compiling()
    facts = None if compiling else _GRID_FACTS.get(key)
    if facts is None:
        order = torch.arange(b, device=device)
        lengths = np.full(b, t, dtype=np.int64)
        cached = {
            "batch_size": b,
            "in_caller_order": True,
            "_sorted_lengths": lengths,
            "sorted_lengths": torch.from_numpy(lengths),
            "padded_index": torch.arange(t * b, device=device),
            "last_padded_index_caller": torch.arange((t - 1) * b, t * b, device=device),
        }
        facts = _GridFacts((torch.full((t,), b, dtype=torch.int64), order, order), cached)
        if not compiling:
            if len(_GRID_FACTS) >= _GRID_FACTS_KEPT:
                _GRID_FACTS.clear()
            _GRID_FACTS[key] = facts
    return facts


class SequenceBatch:
    """B variable-length sequences, packed time-major (see the module docstring).

    Attributes:
        data: ``[N, *F]`` all steps, time-major, sequences sorted by decreasing length.
        batch_sizes: ``[T]`` int64 on the CPU, rows active at each step.
        sorted_indices: ``[B]`` caller index of the sequence at each sorted position.
        unsorted_indices: ``[B]`` sorted position of each caller's sequence.

    Build one with :meth:`from_list` or :meth:`from_padded`; the constructor is for code
    that already holds a valid packed layout (the combinators).
    """

    __slots__ = ("__dict__", "batch_sizes", "data", "sorted_indices", "unsorted_indices")

    def __init__(
        self, data: Tensor, batch_sizes: Tensor, sorted_indices: Tensor, unsorted_indices: Tensor
    ) -> None:
        self.data = data
        self.batch_sizes = batch_sizes
        self.sorted_indices = sorted_indices
        self.unsorted_indices = unsorted_indices

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_list(cls, sequences: Sequence[Tensor]) -> SequenceBatch:
        """Pack a list of ``[T_i, *F]`` tensors (same ``F``, any ``T_i >= 1``, any order)."""
        if isinstance(sequences, Tensor) or not isinstance(sequences, Sequence):
            raise TypeError(
                f"sequences: expected a list of [T_i, *F] tensors, found {type(sequences).__name__}"
            )
        if len(sequences) == 0:
            raise ValueError("sequences: expected at least one sequence, found an empty list")
        first = sequences[0]
        for i, s in enumerate(sequences):
            if not isinstance(s, Tensor):
                raise TypeError(
                    f"sequences[{i}]: expected a torch.Tensor of shape [T_i, *F], "
                    f"found {type(s).__name__}"
                )
            if s.dim() == 0:
                raise ValueError(f"sequences[{i}]: expected shape [T_i, *F], found a scalar")
            if s.shape[0] == 0:
                raise ValueError(
                    f"sequences[{i}]: has zero steps (shape {tuple(s.shape)}); "
                    "zero-length sequences are refused"
                )
            if s.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"sequences[{i}]: feature shape {tuple(s.shape[1:])} differs from "
                    f"sequences[0]'s {tuple(first.shape[1:])} (shapes {tuple(s.shape)} and "
                    f"{tuple(first.shape)})"
                )
            if s.dtype != first.dtype or s.device != first.device:
                raise ValueError(
                    f"sequences[{i}]: dtype/device {s.dtype}/{s.device} differs from "
                    f"sequences[0]'s {first.dtype}/{first.device}"
                )
        steps = [s.shape[0] for s in sequences]
        if min(steps) == max(steps):  # a common case (windows of one length): no sorting
            return cls._pack_equal(torch.stack(list(sequences), dim=1))
        lengths = torch.tensor(steps, dtype=torch.int64)
        order = torch.sort(lengths, descending=True, stable=True).indices
        return cls._pack(torch.cat(list(sequences)), lengths, order)

    @classmethod
    def from_padded(
        cls,
        padded: Tensor,
        lengths: Tensor | Sequence[int] | None,
        batch_first: bool = True,
    ) -> SequenceBatch:
        """Pack ``padded`` ``[B, T, *F]`` (or ``[T, B, *F]`` with ``batch_first=False``);
        ``lengths=None``: every sequence has all ``T`` steps (no padding; a time-major grid is
        then the packed data itself, not copied)."""
        if not isinstance(padded, Tensor) or padded.dim() < 2:
            raise TypeError(
                "padded: expected a tensor of shape [B, T, *F], found "
                + (
                    f"shape {tuple(padded.shape)}"
                    if isinstance(padded, Tensor)
                    else type(padded).__name__
                )
            )
        if lengths is None:
            return cls._pack_equal(padded.transpose(0, 1) if batch_first else padded)
        x = padded if batch_first else padded.transpose(0, 1)
        lengths_t = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        _check_lengths(lengths_t, x.shape[0], x.shape[1])
        if bool((lengths_t == x.shape[1]).all()):  # no padding: the grid is packed already
            return cls._pack_equal(x.transpose(0, 1))
        mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths_t.unsqueeze(1)  # [B, T]
        flat = x[mask.to(x.device)]  # caller order, each sequence's steps in turn
        order = torch.sort(lengths_t, descending=True, stable=True).indices
        return cls._pack(flat, lengths_t, order)

    @classmethod
    def _pack_equal(cls, grid: Tensor) -> SequenceBatch:
        """Pack ``grid`` ``[T, B, *F]``, B sequences of T steps each: it is the packed layout
        already (the stable sort of equal lengths keeps the caller's order), with the layout
        facts :meth:`_pack` computes. Those depend on T, B and the device alone: batches of
        one shape share them (:func:`_grid_facts`), as they share the same layout."""
        t, b = grid.shape[0], grid.shape[1]
        facts = _grid_facts(t, b, grid.device)
        out = cls(grid.reshape(t * b, *grid.shape[2:]), *facts.tensors)
        out.__dict__.update(facts.cached)
        return out

    @classmethod
    def _pack(cls, flat: Tensor, lengths: Tensor, order: Tensor) -> SequenceBatch:
        """Pack ``flat`` (all sequences concatenated in caller order) given the sort order."""
        device = flat.device
        sorted_lengths = lengths[order]
        t_max = int(sorted_lengths[0])
        steps = torch.arange(t_max)
        batch_sizes = (sorted_lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(1)
        starts = torch.cumsum(lengths, 0) - lengths  # offset of each caller sequence in flat
        # Row of (sorted j, step t) in packed data is offset[t] + j; its source is starts[j] + t.
        mask = steps.unsqueeze(1) < sorted_lengths.unsqueeze(0)  # [T, B]
        src = (starts[order].unsqueeze(0) + steps.unsqueeze(1))[mask]
        data = flat.index_select(0, src.to(device))
        unsorted = torch.empty_like(order)
        unsorted[order] = torch.arange(order.numel())
        out = cls(data, batch_sizes, order.to(device), unsorted.to(device))
        # The layout facts the engine reads every step are computed now, from the lengths
        # packing already sorted (as a PackedSequence carries its batch_sizes): a minibatch
        # pays for them when it is built, in the data source, not again inside the model.
        out.__dict__["batch_size"] = order.numel()
        out.__dict__["sorted_lengths"] = sorted_lengths
        out.__dict__["_sorted_lengths"] = sorted_lengths.numpy()
        for name in ("padded_index", "last_padded_index_caller"):
            getattr(out, name)
        return out

    # ------------------------------------------------------------------ shape facts
    @cached_property
    def batch_size(self) -> int:
        """B, the number of sequences."""
        return int(self.batch_sizes[0])

    @cached_property
    def in_caller_order(self) -> bool:
        """Whether the sorted order is the caller's (each sequence at most as long as the one
        before it, as in a batch of one length): then a state in sorted order needs no
        reordering. Known without a look at the indices for a batch of one length; False on
        an accelerator when not known (finding out would wait for the device)."""
        if self.sorted_indices.device.type != "cpu":
            return False
        return bool(np.array_equal(self.sorted_indices.numpy(), np.arange(self.batch_size)))

    @property
    def max_length(self) -> int:
        """T, the length of the longest sequence."""
        return int(self.batch_sizes.numel())

    @property
    def feature_shape(self) -> torch.Size:
        """F, the shape of one step."""
        return self.data.shape[1:]

    # The index arithmetic below runs in NumPy: on the few hundred rows of a typical minibatch
    # one NumPy operation costs a fraction of a torch dispatch, and this runs every step.
    @cached_property
    def _sizes(self) -> np.ndarray:
        """``batch_sizes`` as a NumPy int64 array (shares memory)."""
        return self.batch_sizes.numpy()

    @cached_property
    def _sorted_lengths(self) -> np.ndarray:
        return (self._sizes[:, None] > np.arange(self.batch_size)).sum(0)

    @cached_property
    def sorted_lengths(self) -> Tensor:
        """``[B]`` lengths in sorted (decreasing) order, int64 on the CPU."""
        return torch.from_numpy(self._sorted_lengths)

    @property
    def lengths(self) -> Tensor:
        """``[B]`` lengths in the caller's order, int64 on the CPU."""
        return self.sorted_lengths[self.unsorted_indices.cpu()]

    @cached_property
    def _step_offsets(self) -> np.ndarray:
        return np.cumsum(self._sizes) - self._sizes

    @cached_property
    def step_offsets(self) -> Tensor:
        """``[T]`` first row of each step in ``data`` (CPU int64)."""
        return torch.from_numpy(self._step_offsets)

    @cached_property
    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        step = np.repeat(np.arange(self.max_length), self._sizes)
        seq = np.arange(len(step)) - self._step_offsets[step]
        return seq, step

    @cached_property
    def _row_position(self) -> tuple[Tensor, Tensor]:
        """For every row of ``data``: its sorted sequence index and its step (CPU int64)."""
        seq, step = self._positions
        return torch.from_numpy(seq), torch.from_numpy(step)

    @cached_property
    def last_padded_index(self) -> Tensor:
        """``[B]`` the row ``(L_j - 1) * B + j`` of each sequence's last step in the sorted
        time-major padding (on ``data``'s device)."""
        b = self.batch_size
        index = (self._sorted_lengths - 1) * b + np.arange(b)
        return torch.from_numpy(index).to(self.data.device)

    @cached_property
    def last_padded_index_caller(self) -> Tensor:
        """:attr:`last_padded_index` in the caller's order (each caller's sequence in turn)."""
        return self.last_padded_index.index_select(0, self.unsorted_indices)

    @cached_property
    def padded_index(self) -> Tensor:
        """``[N]`` the row ``t * B + j`` of each packed row in a time-major ``[T*B]`` padding
        whose columns are in sorted order (on ``data``'s device)."""
        seq, step = self._positions
        return torch.from_numpy(step * self.batch_size + seq).to(self.data.device)

    # ------------------------------------------------------------------ conversions
    def with_data(self, data: Tensor) -> SequenceBatch:
        """The same layout with new per-row ``data`` (``[N, *F']``)."""
        if data.shape[0] != self.data.shape[0]:
            raise ValueError(
                f"data: expected {self.data.shape[0]} rows (one per step), found shape "
                f"{tuple(data.shape)}"
            )
        out = SequenceBatch(data, self.batch_sizes, self.sorted_indices, self.unsorted_indices)
        for key in (
            "batch_size",
            "in_caller_order",
            "_sizes",
            "_sorted_lengths",
            "_step_offsets",
            "_positions",
            "_last_rows_sorted",
            "sorted_lengths",
            "step_offsets",
            "_row_position",
            "padded_index",
            "last_padded_index",
            "last_padded_index_caller",
            "reverse_index",
            "lanes",
            "_chunk_lanes",
        ):
            if key in self.__dict__:
                out.__dict__[key] = self.__dict__[key]
        return out

    def map(self, fn: Callable[[Tensor], Tensor]) -> SequenceBatch:
        """Apply a per-step function to ``data`` (``[N, *F] -> [N, *F']``)."""
        return self.with_data(fn(self.data))

    def to(self, *args: object, **kwargs: object) -> SequenceBatch:
        """Move ``data`` and the index tensors (``batch_sizes`` stays on the CPU)."""
        data = self.data.to(*args, **kwargs)  # type: ignore[call-overload]
        if data is self.data:  # already there: keep this batch and its cached indices
            return self
        return SequenceBatch(
            data,
            self.batch_sizes,
            self.sorted_indices.to(data.device),
            self.unsorted_indices.to(data.device),
        )

    def to_padded_time_major(self, padding_value: float = 0.0) -> Tensor:
        """``[T, B, *F]`` with the columns in *sorted* order (the engine's layout)."""
        t, b, features = len(self._sizes), self.batch_size, self.data.shape[1:]
        out = self.data.new_full((t * b, *features), padding_value)
        out.index_copy_(0, self.padded_index, self.data)
        return out.view(t, b, *features)

    def to_padded(
        self, padding_value: float = 0.0, total_length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``([B, T, *F] padded, [B] lengths)``, both in the caller's order.

        ``total_length`` pads the time axis to that many steps (as
        ``torch.nn.utils.rnn.pad_packed_sequence``); it may not be below the longest length.
        """
        padded = self.to_padded_time_major(padding_value).transpose(0, 1)
        if total_length is not None:
            longest = padded.shape[1]
            if total_length < longest:
                raise ValueError(
                    f"total_length: expected at least the longest length {longest}, "
                    f"found {total_length}"
                )
            extra = padded.new_full(
                (padded.shape[0], total_length - longest, *padded.shape[2:]), padding_value
            )
            padded = torch.cat([padded, extra], dim=1)
        return padded.index_select(0, self.unsorted_indices), self.lengths

    def to_list(self) -> list[Tensor]:
        """The sequences as a list of ``[T_i, *F]`` tensors in the caller's order."""
        padded, lengths = self.to_padded()
        return [padded[i, : int(n)] for i, n in enumerate(lengths)]

    def first(self) -> Tensor:
        """``[B, *F]`` the first step of every sequence, caller order."""
        return self.data[: self.batch_size].index_select(0, self.unsorted_indices)

    def last_rows_sorted(self) -> Tensor:
        """``[B]`` the row in ``data`` of each sequence's last step, sorted order."""
        return self._last_rows_sorted

    @cached_property
    def _last_rows_sorted(self) -> Tensor:
        rows = self.step_offsets[self.sorted_lengths - 1] + torch.arange(self.batch_size)
        return rows.to(self.data.device)

    def last_rows(self) -> Tensor:
        """``[B]`` the row in ``data`` of each sequence's last step, caller order."""
        return self.last_rows_sorted().index_select(0, self.unsorted_indices)

    def last(self) -> Tensor:
        """``[B, *F]`` the last step of every sequence, caller order."""
        return self.data.index_select(0, self.last_rows())

    @cached_property
    def reverse_index(self) -> Tensor:
        """``[N]`` the row holding step ``L_j - 1 - t`` of the same sequence, for every row."""
        seq, step = self._row_position
        src_step = self.sorted_lengths[seq] - 1 - step
        return (self.step_offsets[src_step] + seq).to(self.data.device)

    @cached_property
    def lanes(self) -> Lanes:
        """The batch in the fewest lanes of :attr:`max_length` steps (see :class:`Lanes`).

        >>> x = SequenceBatch.from_list([torch.zeros(4, 1), torch.zeros(1, 1), torch.zeros(3, 1)])
        >>> lanes = x.lanes  # lane 0: the 4 steps; lane 1: the 3 steps, then the 1
        >>> lanes.width, lanes.steps, lanes.starts.tolist(), lanes.ends.tolist()
        (2, 4, [0, 1, 7], [6, 5, 7])
        """
        return self._lanes_of(self._sorted_lengths)

    def chunk_lanes(self, chunk: int) -> Lanes:
        """The batch in lanes where every sequence starts at a multiple of ``chunk`` steps:
        :attr:`lanes` with each length rounded up to such a multiple (the steps between a
        sequence's end and the next one's start are empty positions). A chunked scan over
        them restarts each sequence at a chunk boundary, and a sequence's final state is the
        state after its last chunk. Cached per ``chunk`` (and carried by :meth:`with_data`).

        >>> x = SequenceBatch.from_list([torch.zeros(5, 1), torch.zeros(2, 1), torch.zeros(1, 1)])
        >>> lanes = x.chunk_lanes(2)  # lane 0: the 5 steps, 1 empty; lane 1: the 2, then the 1
        >>> lanes.width, lanes.steps, lanes.starts.tolist(), lanes.ends.tolist()
        (2, 6, [0, 1, 5], [8, 3, 5])
        """
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk: expected a positive int, found {chunk!r}")
        cache = self.__dict__.setdefault("_chunk_lanes", {})
        if chunk not in cache:
            rounded = -(-self._sorted_lengths // chunk) * chunk
            cache[chunk] = self._lanes_of(rounded)
        return cache[chunk]

    def _lanes_of(self, room: np.ndarray) -> Lanes:
        """The lanes where sorted sequence ``j`` takes ``room[j] >= its length`` steps (first
        fit, in lanes of ``room[0]`` steps)."""
        width, lane, offset = _first_fit(room)
        seq, step = self._positions
        device = self.data.device
        index = (offset[seq] + step) * width + lane[seq]
        starts = offset * width + lane
        ends = (offset + self._sorted_lengths - 1) * width + lane
        return Lanes(
            width,
            int(room[0]),
            torch.from_numpy(index).to(device),
            torch.from_numpy(starts).to(device),
            torch.from_numpy(ends).to(device),
        )

    def reverse(self) -> SequenceBatch:
        """Each sequence reversed within its own steps (its last step becomes its first)."""
        return self.with_data(self.data.index_select(0, self.reverse_index))

    def __repr__(self) -> str:
        return (
            f"SequenceBatch(batch_size={self.batch_size}, lengths={self.lengths.tolist()}, "
            f"feature_shape={tuple(self.feature_shape)}, dtype={self.data.dtype}, "
            f"device={self.data.device})"
        )
