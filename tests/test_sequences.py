"""SequenceBatch against plain per-sequence Python lists and torch's own packing."""

import pytest
import torch
from conftest import random_sequences
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rnnkit import SequenceBatch


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=7))
@example([4, 4, 4])  # one length: from_list's stacking path
def test_list_round_trip_and_indexing(lengths):
    seqs = random_sequences(lengths)
    x = SequenceBatch.from_list(seqs)
    assert x.lengths.tolist() == lengths
    for got, want in zip(x.to_list(), seqs, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(x.first(), torch.stack([s[0] for s in seqs]))
    assert torch.equal(x.last(), torch.stack([s[-1] for s in seqs]))
    for got, want in zip(x.reverse().to_list(), seqs, strict=True):
        assert torch.equal(got, want.flip(0))
    # the same layout as torch's PackedSequence
    ref = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    assert torch.equal(x.data, ref.data)
    assert torch.equal(x.batch_sizes, ref.batch_sizes)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=7), st.booleans())
@example([4, 4, 4], False)  # one length: from_list's stacking path
@example([4, 4, 4], True)  # one length, no padding: from_padded's stacking path
def test_layout_facts_from_packing_match_a_plain_derivation(lengths, padded):
    """Packing stores the index facts the engine reads (lengths, padded positions, each
    sequence's last padded row); they must equal what a plain loop over the lengths gives."""
    seqs = random_sequences(lengths)
    if padded:
        x = SequenceBatch.from_padded(
            torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths
        )
    else:
        x = SequenceBatch.from_list(seqs)
    b, order = len(lengths), sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sorted_lengths = [lengths[i] for i in order]  # stable: ties keep the caller's order
    positions = [t * b + j for t in range(max(lengths)) for j in range(b) if sorted_lengths[j] > t]
    last = [(n - 1) * b + j for j, n in enumerate(sorted_lengths)]
    assert x.batch_size == b
    assert x.sorted_lengths.tolist() == sorted_lengths
    assert x.padded_index.tolist() == positions
    assert x.last_padded_index.tolist() == last
    assert x.last_padded_index_caller.tolist() == [last[order.index(i)] for i in range(b)]
    assert x.in_caller_order == (order == list(range(b)))
    assert x.with_data(x.data * 2).in_caller_order == x.in_caller_order
    # and they equal what a batch built from the bare layout computes lazily
    bare = SequenceBatch(x.data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    assert "padded_index" not in bare.__dict__
    assert bare.in_caller_order == x.in_caller_order
    for name in ("sorted_lengths", "padded_index", "last_padded_index", "last_padded_index_caller"):
        assert torch.equal(getattr(bare, name), getattr(x, name)), name
        assert getattr(bare, name).dtype == getattr(x, name).dtype, name


def test_padded_round_trip_and_map():
    seqs = random_sequences([3, 1, 4], features=(2, 2))
    x = SequenceBatch.from_list(seqs)
    padded, lengths = x.to_padded(padding_value=-1.0)
    assert padded.shape == (3, 4, 2, 2)
    assert lengths.tolist() == [3, 1, 4]
    assert torch.all(padded[1, 1:] == -1.0)
    y = SequenceBatch.from_padded(padded, lengths)
    for a, b in zip(y.to_list(), seqs, strict=True):
        assert torch.equal(a, b)
    doubled = x.map(lambda d: d.sum((1, 2)) * 2)
    for a, b in zip(doubled.to_list(), seqs, strict=True):
        assert torch.allclose(a, b.sum((1, 2)) * 2)


def test_from_padded_time_major():
    padded = torch.arange(12.0).view(4, 3, 1)  # [T=4, B=3, 1]
    x = SequenceBatch.from_padded(padded, [4, 2, 1], batch_first=False)
    assert [s.squeeze(1).tolist() for s in x.to_list()] == [
        [0.0, 3.0, 6.0, 9.0],
        [1.0, 4.0],
        [2.0],
    ]


def test_gradients_flow_through_packing():
    seqs = [s.requires_grad_() for s in random_sequences([2, 5, 3])]
    x = SequenceBatch.from_list(seqs)
    (x.last().sum() + 2 * x.reverse().first().sum()).backward()
    for s in seqs:
        want = torch.zeros_like(s)
        want[-1] = 3.0  # last() and reverse().first() both pick the last step
        assert torch.equal(s.grad, want)


def test_zero_length_refused_with_index():
    with pytest.raises(ValueError, match=r"sequences\[1\]: has zero steps \(shape \(0, 3\)\)"):
        SequenceBatch.from_list([torch.zeros(2, 3), torch.zeros(0, 3)])
    with pytest.raises(ValueError, match=r"lengths\[2\]: sequence 2 has length 0"):
        SequenceBatch.from_padded(torch.zeros(3, 4, 1), [1, 2, 0])


def test_mismatched_features_refused_with_shapes():
    with pytest.raises(ValueError, match=r"sequences\[2\]: feature shape \(4,\) differs .*\(3,\)"):
        SequenceBatch.from_list([torch.zeros(2, 3), torch.zeros(1, 3), torch.zeros(5, 4)])


def test_non_tensor_refused_with_index():
    with pytest.raises(TypeError, match=r"sequences\[1\]: expected a torch.Tensor .* found list"):
        SequenceBatch.from_list([torch.zeros(2, 3), [[1.0, 2.0, 3.0]]])
    with pytest.raises(TypeError, match="expected a list of"):
        SequenceBatch.from_list(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one sequence"):
        SequenceBatch.from_list([])


def test_lengths_longer_than_padding_refused():
    with pytest.raises(ValueError, match=r"lengths\[0\]: sequence 0 has length 5 .* only 4 steps"):
        SequenceBatch.from_padded(torch.zeros(2, 4, 1), [5, 1])
    with pytest.raises(ValueError, match=r"expected 2 integers .* found shape \(3,\)"):
        SequenceBatch.from_padded(torch.zeros(2, 4, 1), [1, 1, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip():
    seqs = random_sequences([3, 1, 4])
    x = SequenceBatch.from_list(seqs).to("cuda")
    assert x.data.is_cuda
    for a, b in zip(x.reverse().to_list(), seqs, strict=True):
        assert torch.equal(a.cpu(), b.flip(0))
    assert torch.equal(x.last().cpu(), torch.stack([s[-1] for s in seqs]))


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_padded_without_lengths_is_all_steps(batch_first: bool) -> None:
    """``lengths=None`` means no padding: the same batch as the lengths all ``T`` (and as
    ``from_list``), and a time-major grid is used as the packed data without a copy."""
    grid = torch.randn(4, 3, 2)  # [T, B, F]
    padded = grid.transpose(0, 1).contiguous() if batch_first else grid
    got = SequenceBatch.from_padded(padded, None, batch_first)
    want = SequenceBatch.from_list(list(grid.transpose(0, 1)))
    for fact in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(got, fact), getattr(want, fact)), fact
    assert got.in_caller_order and got.lengths.tolist() == [4, 4, 4]
    if not batch_first:
        assert got.data.data_ptr() == grid.data_ptr()


def test_batches_of_one_shape_share_the_layout_facts_a_fresh_batch_computes() -> None:
    """``_pack_equal`` takes its index tensors and layout facts from a cache per (T, B,
    device); each must equal what the cached properties compute from scratch on a batch
    built from the same tensors, for every shape, also after the cache is cleared when full
    (70 layouts, more than it keeps)."""
    shapes = [(4, 3), (2, 3), (4, 3), (4, 5), (1, 1)] + [(t, 2) for t in range(1, 70)] + [(4, 3)]
    facts = ("batch_size", "in_caller_order", "padded_index", "last_padded_index_caller")
    batches = []
    for t, b in shapes:
        got = SequenceBatch.from_padded(torch.randn(t, b, 2), None, batch_first=False)
        fresh = SequenceBatch(
            got.data,
            got.batch_sizes.clone(),
            got.sorted_indices.clone(),
            got.unsorted_indices.clone(),
        )
        assert got.batch_sizes.tolist() == [b] * t
        assert got.sorted_indices.tolist() == got.unsorted_indices.tolist() == list(range(b))
        for fact in facts:
            a, e = getattr(got, fact), getattr(fresh, fact)
            assert torch.equal(a, e) if isinstance(a, torch.Tensor) else a == e, (t, b, fact)
        assert got.sorted_lengths.tolist() == fresh.sorted_lengths.tolist() == [t] * b
        assert got.lengths.tolist() == [t] * b
        assert torch.equal(got.last(), got.data.view(t, b, 2)[-1])
        batches.append(got)
    assert batches[2].batch_sizes is batches[0].batch_sizes  # one shape: shared, not rebuilt
    assert batches[1].batch_sizes is not batches[0].batch_sizes
