"""Truncated BPTT: windows cover the sequences exactly, and the gradients equal full BPTT (one
window) or a hand-written loop that detaches the state at every window boundary."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import random_sequences

from rnnkit import GRUCell, LSTMCell, RecurrenceFrom, SequenceBatch
from rnnkit.cells import as_tuple
from rnnkit.truncation import carry_state, truncated_chunks

LENGTHS = [7, 1, 12, 5, 12, 3, 9]


def _batch(lengths: list[int], features: int, dtype: torch.dtype = torch.float64):
    seqs = random_sequences(lengths, features, seed=sum(lengths), dtype=dtype)
    return seqs, SequenceBatch.from_list(seqs)


@pytest.mark.parametrize("length", [1, 2, 4, 5, 11, 12, 40])
def test_chunks_cover_each_sequence_exactly_in_caller_order(length):
    seqs, x = _batch(LENGTHS, 2)
    covered: list[list[torch.Tensor]] = [[] for _ in seqs]
    chunks = list(truncated_chunks(x, length))
    assert len(chunks) == -(-max(LENGTHS) // length)
    for k, chunk in enumerate(chunks):
        start = k * length
        active = [i for i, n in enumerate(LENGTHS) if n > start]
        pieces = chunk.to_list()
        assert len(pieces) == len(active)
        for i, piece in zip(active, pieces, strict=True):
            torch.testing.assert_close(piece, seqs[i][start : start + length], rtol=0, atol=0)
            covered[i].append(piece)
    for i, seq in enumerate(seqs):
        torch.testing.assert_close(torch.cat(covered[i]), seq, rtol=0, atol=0)


def test_carry_state_keeps_the_rows_of_the_sequences_that_go_on():
    _, x = _batch(LENGTHS, 1)
    chunks = list(truncated_chunks(x, 4))
    state = (torch.arange(7.0).unsqueeze(1), -torch.arange(7.0).unsqueeze(1))
    for chunk, following in itertools.pairwise(chunks):
        ids = [int(v[0]) for v in state[0]]
        carried = carry_state(state, chunk, following)
        start = chunks.index(following) * 4
        want = [i for i in ids if LENGTHS[i] > start]  # state rows named by sequence id
        assert [int(v[0]) for v in carried[0]] == want
        assert [-int(v[0]) for v in carried[1]] == want
        assert not carried[0].requires_grad
        state = carried


def _loss_weights(lengths: list[int], size: int) -> SequenceBatch:
    gen = torch.Generator().manual_seed(7)
    return SequenceBatch.from_list(
        [torch.randn(n, size, generator=gen, dtype=torch.float64) for n in lengths]
    )


def _tbptt_grads(cell, x, weights, length, backend):
    layer = RecurrenceFrom(cell, backend=backend)
    cell.zero_grad(set_to_none=True)
    chunks = list(truncated_chunks(x, length))
    targets = list(truncated_chunks(weights, length))
    state = cell.initial_state(x.batch_size, dtype=torch.float64)
    for k, chunk in enumerate(chunks):
        out, final = layer.with_final_state(state, chunk)
        (out.data * targets[k].data).sum().backward()
        if k + 1 < len(chunks):
            state = carry_state(final, chunk, chunks[k + 1])
    return {n: p.grad.clone() for n, p in cell.named_parameters()}


def _hand_detached_grads(cell, seqs, weights, length):
    """One sequence at a time, one step at a time, the state detached every ``length`` steps."""
    cell.zero_grad(set_to_none=True)
    loss = torch.zeros((), dtype=torch.float64)
    for seq, w in zip(seqs, weights.to_list(), strict=True):
        state = cell.initial_state(1, dtype=torch.float64)
        for t in range(seq.shape[0]):
            if t > 0 and t % length == 0:
                state = tuple(s.detach() for s in as_tuple(state))
                state = state if len(state) > 1 else state[0]
            state = cell(seq[t : t + 1], state)
            loss = loss + (as_tuple(state)[0][0] * w[t]).sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in cell.named_parameters()}


@pytest.mark.parametrize("backend", ["fused", "loop"])
@pytest.mark.parametrize("make", [lambda: LSTMCell(3, 4), lambda: GRUCell(3, 4)])
def test_window_covering_the_sequence_equals_full_bptt(make, backend):
    torch.manual_seed(0)
    cell = make().double()
    _, x = _batch(LENGTHS, 3)
    weights = _loss_weights(LENGTHS, 4)
    got = _tbptt_grads(cell, x, weights, max(LENGTHS), backend)
    cell.zero_grad(set_to_none=True)
    out = RecurrenceFrom(cell, backend="reference")(cell.initial_state(7, dtype=torch.float64), x)
    (out.data * weights.data).sum().backward()
    for name, p in cell.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("length", [1, 3, 5])
@pytest.mark.parametrize("backend", ["fused", "loop"])
@pytest.mark.parametrize("make", [lambda: LSTMCell(3, 4), lambda: GRUCell(3, 4)])
def test_short_windows_equal_a_hand_detached_loop(make, backend, length):
    torch.manual_seed(1)
    cell = make().double()
    seqs, x = _batch(LENGTHS, 3)
    weights = _loss_weights(LENGTHS, 4)
    got = _tbptt_grads(cell, x, weights, length, backend)
    want = _hand_detached_grads(cell, seqs, weights, length)
    full = _tbptt_grads(cell, x, weights, max(LENGTHS), backend)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
    # Truncation changes the gradient (else the comparison above could not fail).
    assert any(not torch.allclose(got[n], full[n], rtol=1e-6, atol=1e-9) for n in want)


def test_bad_arguments_are_named():
    _, x = _batch(LENGTHS, 1)
    with pytest.raises(ValueError, match=r"length: expected a positive int .* found 0"):
        next(truncated_chunks(x, 0))
    with pytest.raises(TypeError, match="x: expected a SequenceBatch, found Tensor"):
        next(truncated_chunks(torch.zeros(3, 1), 2))  # type: ignore[arg-type]
    first, second = list(truncated_chunks(x, 6))
    with pytest.raises(ValueError, match=r"state\[0\]: expected 7 rows .* found shape \(5, 1\)"):
        carry_state(torch.zeros(5, 1), first, second)
    with pytest.raises(ValueError, match="next_chunk: expected at most chunk's 4 sequences"):
        carry_state(torch.zeros(4, 1), second, first)
