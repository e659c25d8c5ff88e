"""Segments (rnnkit.layers.sequence) against a plain per-sequence reshape: zeros in front of
each sequence up to a multiple of P, then P steps side by side."""

from __future__ import annotations

import pytest
import torch
from conftest import random_sequences
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rnnkit import Fold, LSTMCell, SequenceBatch
from rnnkit.layers.sequence import Segments
from rnnkit.saving import load, save


def reference(sequence: torch.Tensor, p: int) -> torch.Tensor:
    """One ``[L, F]`` sequence as ``[ceil(L / P), P F]``, a loop over its segments."""
    length, features = sequence.shape
    front = -length % p
    steps = [torch.zeros(features, dtype=sequence.dtype)] * front + list(sequence)
    return torch.stack([torch.cat(steps[s : s + p]) for s in range(0, len(steps), p)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 13), min_size=1, max_size=6), st.integers(1, 5))
@example([8, 8, 8], 4)  # one length, a multiple of P
@example([7, 7], 4)  # one length, zeros in front
def test_sequence_batch_matches_the_per_sequence_reshape(lengths, p):
    seqs = random_sequences(lengths, features=(3,))
    out = Segments(p)(SequenceBatch.from_list(seqs))
    assert isinstance(out, SequenceBatch)
    got = out.to_list()
    assert len(got) == len(seqs)
    for g, s in zip(got, seqs, strict=True):
        torch.testing.assert_close(g, reference(s, p), rtol=0, atol=0)


@pytest.mark.parametrize("t", [8, 9, 3])
def test_a_tensor_matches_the_per_sequence_reshape(t):
    x = torch.randn(4, t, 2)
    out = Segments(4)(x)
    want = torch.stack([reference(row, 4) for row in x])
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("lengths", [[5, 2, 7], [5, 5, 5]], ids=["ragged", "one length"])
def test_gradients_are_the_reshape_s(lengths):
    """d(sum(w * out))/dx is w's entry at each step's place, zeros in front never reach x."""
    seqs = [s.double().requires_grad_() for s in random_sequences(lengths, features=(2,))]
    out = Segments(3)(SequenceBatch.from_list(seqs))
    weights = [torch.randn_like(o) for o in out.to_list()]
    sum((w * o).sum() for w, o in zip(weights, out.to_list(), strict=True)).backward()
    for s, w in zip(seqs, weights, strict=True):
        flat = w.reshape(-1, 2)  # back to [steps incl. front zeros, F]
        assert s.grad is not None
        torch.testing.assert_close(s.grad, flat[flat.shape[0] - s.shape[0] :], rtol=0, atol=0)


def test_a_fold_after_it_reads_the_segments_in_order():
    """Fold over Segments(P) equals torch.nn.LSTMCell (the same weights) stepped by hand over
    each reference."""
    torch.manual_seed(0)
    cell = LSTMCell(2 * 4, 5)
    peer = torch.nn.LSTMCell(2 * 4, 5)
    peer.load_state_dict(cell.state_dict())
    seqs = random_sequences([9, 4, 12], features=(2,))
    got = Fold(cell)(Segments(4)(SequenceBatch.from_list(seqs)))
    for i, s in enumerate(seqs):
        h = c = torch.zeros(1, 5)
        for step in reference(s, 4):
            h, c = peer(step.unsqueeze(0), (h, c))
        torch.testing.assert_close(got[i], h[0], rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = Segments(3) >> Fold(LSTMCell(6, 4))
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    x = SequenceBatch.from_list(random_sequences([5, 8], features=(2,)))
    torch.testing.assert_close(back(x), model(x))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"length: expected an integer >= 1, found 0"):
        Segments(0)
    with pytest.raises(ValueError, match=r"length: expected an integer >= 1, found 2.0"):
        Segments(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected a \[B, T, F\] tensor .* found shape \(4, 2\)"):
        Segments(2)(torch.zeros(4, 2))
    x = SequenceBatch.from_list([torch.zeros(3, 2, 2)])
    with pytest.raises(ValueError, match=r"SequenceBatch of \[F\] steps, found steps of shape"):
        Segments(2)(x)
