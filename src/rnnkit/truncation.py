"""Truncated backpropagation through time (Williams & Peng 1990): long sequences in windows.

Backpropagating through all T steps of a sequence keeps every step's activations alive until
the backward pass, so memory grows with T. Truncated BPTT cuts time into windows of at most
``length`` steps, runs each window forward from the state the previous one ended in, and
backpropagates within the window only; the state crosses the boundary detached, so peak memory
is bounded by the window, not by T.

* :func:`truncated_chunks` cuts a SequenceBatch into consecutive time windows, each itself a
  SequenceBatch of the sequences still running (a sequence that has ended drops out);
* :func:`carry_state` turns the final state of one window into the initial state of the next:
  detached, and restricted to the sequences that go on.

The pattern, with :class:`rnnkit.RecurrenceFrom` (here two sequences of 5 and 3 steps, windows
of 2 steps, and a cumulative-sum "cell" so the numbers can be checked by hand):

>>> import torch
>>> from rnnkit import RecurrenceFrom, SequenceBatch
>>> from rnnkit.testing import RunningSum as Sum  # h_t = h_{t-1} + x_t
>>> x = SequenceBatch.from_list([torch.ones(5, 1), 10 * torch.ones(3, 1)])
>>> chunks = list(truncated_chunks(x, 2))
>>> [c.lengths.tolist() for c in chunks]
[[2, 2], [2, 1], [1]]
>>> layer = RecurrenceFrom(Sum())
>>> state = torch.zeros(2, 1)
>>> for chunk, following in zip(chunks, chunks[1:] + [None]):
...     out, final = layer.with_final_state(state, chunk)
...     print([s.squeeze(1).tolist() for s in out.to_list()])
...     # a training step would go here: loss(out, targets of this window).backward()
...     if following is not None:
...         state = carry_state(final, chunk, following)
[[1.0, 2.0], [10.0, 20.0]]
[[3.0, 4.0], [30.0]]
[[5.0]]

Targets cut with the same ``length`` line up with each window's output row for row
(``truncated_chunks(y, length)`` for a SequenceBatch ``y`` of the same lengths).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rnnkit.cells import State, as_tuple
from rnnkit.sequences import SequenceBatch

__all__ = ["carry_state", "truncated_chunks"]


def truncated_chunks(x: SequenceBatch, length: int) -> Iterator[SequenceBatch]:
    """Consecutive windows of at most ``length`` steps of every sequence of ``x``.

    Window ``k`` holds steps ``k*length .. (k+1)*length - 1`` of each sequence longer than
    ``k*length``, those sequences in the caller's order of ``x``; its data is a view of
    ``x.data`` (rows ``[N_k, *F]``), so gradients flow back to ``x``. Together the windows
    cover every step of ``x`` exactly once. With ``length >= T`` the only window is ``x``'s
    layout itself.

    >>> x = SequenceBatch.from_list([torch.arange(3.0)[:, None], torch.arange(7.0)[:, None]])
    >>> [[s.squeeze(1).tolist() for s in c.to_list()] for c in truncated_chunks(x, 3)]
    [[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], [[3.0, 4.0, 5.0]], [[6.0]]]
    """
    if not isinstance(x, SequenceBatch):
        raise TypeError(f"x: expected a SequenceBatch, found {type(x).__name__}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length: expected a positive int (steps per window), found {length!r}")
    sizes = x.batch_sizes.tolist()
    offsets = x.step_offsets.tolist()
    sorted_ids = x.sorted_indices.cpu()
    device = x.data.device
    for start in range(0, len(sizes), length):
        stop = min(start + length, len(sizes))
        rows = sizes[start]
        # Window caller position p holds sorted sequence order[p]; its inverse sorts the window.
        order = torch.argsort(sorted_ids[:rows])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows)
        first = offsets[start]
        data = x.data[first : first + sum(sizes[start:stop])]
        yield SequenceBatch(data, x.batch_sizes[start:stop], inverse.to(device), order.to(device))


def carry_state(state: State, chunk: SequenceBatch, next_chunk: SequenceBatch) -> State:
    """The initial state of ``next_chunk`` from the final ``state`` of ``chunk`` (both windows
    from :func:`truncated_chunks`, consecutive): detached from the graph, and only the rows
    (caller order) of the sequences that go on into ``next_chunk``.

    ``state`` is a tensor ``[B_k, ...]`` or a tuple of them (``(h, c)`` for an LSTM); the
    result has the same structure with ``B_{k+1}`` rows.

    >>> x = SequenceBatch.from_list([torch.zeros(1, 1), torch.zeros(4, 1), torch.zeros(3, 1)])
    >>> first, second = list(truncated_chunks(x, 2))
    >>> carry_state(torch.tensor([[0.0], [1.0], [2.0]]), first, second).squeeze(1).tolist()
    [1.0, 2.0]
    """
    tensors = as_tuple(state)
    if next_chunk.batch_size > chunk.batch_size:
        raise ValueError(
            f"next_chunk: expected at most chunk's {chunk.batch_size} sequences (the window "
            f"that follows it), found {next_chunk.batch_size}"
        )
    for k, s in enumerate(tensors):
        if s.dim() < 1 or s.shape[0] != chunk.batch_size:
            raise ValueError(
                f"state[{k}]: expected {chunk.batch_size} rows (one per sequence of chunk), "
                f"found shape {tuple(s.shape)}"
            )
    keep = torch.sort(chunk.sorted_indices[: next_chunk.batch_size]).values
    carried = tuple(s.detach().index_select(0, keep.to(s.device)) for s in tensors)
    return carried if isinstance(state, tuple) else carried[0]
