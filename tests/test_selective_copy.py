"""rnnkit.data.synthetic.selective_copy (Gu & Dao 2023): every sequence against a plain Python
reconstruction of the task from its own input, the draws against their uniform laws, the
seed, the baseline and the refused arguments."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.data.synthetic import selective_copy, selective_copy_baseline


def reconstruct(row: list[int], length: int, num_copy: int, vocab_size: int) -> list[int]:
    """The target the task defines for ``row``, in plain Python: zeros over the first
    ``length`` steps, then the non-noise tokens of those steps in order; checks the row's
    form on the way."""
    data = [t for t in row[:length] if t != 0]
    assert len(data) == num_copy
    assert all(1 <= t <= vocab_size - 2 for t in data)
    assert row[length:] == [vocab_size - 1] * num_copy
    return [0] * length + data


@pytest.mark.parametrize(
    ("length", "num_copy", "vocab_size"), [(40, 16, 16), (16, 16, 16), (7, 3, 5), (5, 1, 3)]
)
def test_every_sequence_matches_the_plain_reconstruction(length, num_copy, vocab_size):
    x, y = selective_copy(50, length, num_copy, vocab_size, seed=3)
    assert x.dtype == y.dtype == torch.int64
    assert x.shape == y.shape == (50, length + num_copy)
    for row, target in zip(x.tolist(), y.tolist(), strict=True):
        assert target == reconstruct(row, length, num_copy, vocab_size)


def test_the_papers_setting():
    x, y = selective_copy(2, 4096, seed=0)  # 16 tokens, vocabulary 16
    assert x.shape == (2, 4112)
    for row, target in zip(x.tolist(), y.tolist(), strict=True):
        assert target == reconstruct(row, 4096, 16, 16)


def test_positions_and_tokens_are_uniform():
    n, length, num_copy, vocab_size = 4000, 20, 5, 8
    x, y = selective_copy(n, length, num_copy, vocab_size, seed=11)
    # each position holds a data token with probability K / L; 4 standard deviations
    p = num_copy / length
    share = (x[:, :length] > 0).double().mean(dim=0)
    assert float((share - p).abs().max()) < 4 * math.sqrt(p * (1 - p) / n)
    # each data token 1..V-2 with probability 1 / (V - 2)
    counts = torch.bincount(y[:, length:].reshape(-1), minlength=vocab_size).double()
    assert counts[0] == 0 and counts[vocab_size - 1] == 0
    q, m = 1 / (vocab_size - 2), n * num_copy
    assert float((counts[1:-1] / m - q).abs().max()) < 4 * math.sqrt(q * (1 - q) / m)


def test_seed_gives_the_same_data_and_another_seed_other_data():
    a = selective_copy(8, 30, seed=5)
    b = selective_copy(8, 30, seed=5)
    c = selective_copy(8, 30, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_baseline_is_a_uniform_guess_among_the_data_tokens():
    assert selective_copy_baseline() == pytest.approx(1 / 14)
    assert selective_copy_baseline(3) == 1.0
    # a guess drawn uniformly scores the baseline on average
    _, y = selective_copy(2000, 20, 4, 6, seed=1)
    g = torch.Generator().manual_seed(0)
    guess = torch.randint(1, 5, y[:, -4:].shape, generator=g)
    accuracy = float((guess == y[:, -4:]).double().mean())
    assert accuracy == pytest.approx(
        selective_copy_baseline(6), abs=4 * math.sqrt(0.25 * 0.75 / 8000)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_examples": 0}, r"num_examples: expected an integer >= 1, found 0"),
        ({"num_examples": 2.0}, r"num_examples: expected an integer >= 1, found 2.0"),
        ({"length": 0}, r"length: expected an integer >= 1, found 0"),
        ({"length": True}, r"length: expected an integer >= 1, found True"),
        ({"length": 15}, r"length: expected at least num_copy = 16 steps .*found 15"),
        ({"num_copy": 0}, r"num_copy: expected an integer >= 1, found 0"),
        ({"vocab_size": 2}, r"vocab_size: expected an integer >= 3, found 2"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_expected(kwargs, message):
    arguments = {"num_examples": 2, "length": 32, "num_copy": 16, "vocab_size": 16, **kwargs}
    with pytest.raises(ValueError, match=message):
        selective_copy(**arguments, seed=0)


def test_bad_baseline_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"vocab_size: expected an integer >= 3, found 2"):
        selective_copy_baseline(2)
