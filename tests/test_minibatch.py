"""MinibatchSource against plain reference loops, the real solar data and hand-made cases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import shared_data
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from rnnkit import SequenceBatch
from rnnkit.data.minibatch import Minibatch, MinibatchSource


def make_examples(lengths: list[int], features: int = 2) -> list[dict[str, Tensor]]:
    """Example i: ``x`` [L_i, features] with distinct values, ``y`` [1, 1] holding i."""
    out = []
    for i, n in enumerate(lengths):
        x = torch.arange(n * features, dtype=torch.float32).view(n, features) + 1000.0 * i
        out.append({"x": x, "y": torch.tensor([[float(i)]])})
    return out


def lengths_2_to_13(n: int) -> list[int]:
    g = torch.Generator().manual_seed(5)
    return torch.randint(2, 14, (n,), generator=g).tolist()


def reference_pack(order: list[int], sizes: list[int], limit: int) -> list[list[int]]:
    """CNTK's rule, written as plainly as possible: add while the total stays <= limit."""
    batches: list[list[int]] = [[]]
    for i in order:
        if batches[-1] and sum(sizes[j] for j in batches[-1]) + sizes[i] > limit:
            batches.append([])
        batches[-1].append(i)
    return batches


def sweeps(source: MinibatchSource) -> list[list[Minibatch]]:
    """All minibatches of a finite source, grouped by sweep."""
    out: list[list[Minibatch]] = []
    for mb in source:
        if not out or out[-1][-1].end_of_sweep:
            out.append([])
        out[-1].append(mb)
    return out


def assert_same_minibatch(a: Minibatch, b: Minibatch) -> None:
    assert (a.indices, a.sweep, a.end_of_sweep, a.repeated) == (
        b.indices,
        b.sweep,
        b.end_of_sweep,
        b.repeated,
    )
    assert (a.num_samples, a.num_sequences) == (b.num_samples, b.num_sequences)
    assert torch.equal(a["x"].data, b["x"].data)
    assert torch.equal(a["y"], b["y"])


# ---------------------------------------------------------------------- one sweep, each once
@pytest.mark.parametrize("randomize", [False, True])
@pytest.mark.parametrize("unit", ["samples", "sequences"])
def test_every_example_once_per_sweep_with_its_own_data(randomize: bool, unit: str) -> None:
    lengths = lengths_2_to_13(97)
    examples = make_examples(lengths)
    size = 30 if unit == "samples" else 4
    source = MinibatchSource(examples, size, unit=unit, randomize=randomize, seed=3, max_sweeps=3)
    orders = []
    for k, sweep in enumerate(sweeps(source)):
        order = [i for mb in sweep for i in mb.indices]
        assert sorted(order) == list(range(len(examples)))
        assert all(mb.sweep == k for mb in sweep)
        orders.append(order)
        units = lengths if unit == "samples" else [1] * len(lengths)
        assert [list(mb.indices) for mb in sweep] == reference_pack(order, units, size)
        for mb in sweep:
            expected = [examples[i]["x"] for i in mb.indices]
            got = mb["x"].to_list()
            assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
            assert mb["y"].view(-1).tolist() == [float(i) for i in mb.indices]
            assert mb.num_samples == sum(lengths[i] for i in mb.indices)
            assert mb.num_sequences == len(mb.indices)
            per_stream = {"x": sum(lengths[i] for i in mb.indices), "y": len(mb.indices)}
            assert mb.stream_samples == per_stream
            mb.stream_samples["x"] = -1  # a caller's dict: the plan the next sweep reads stays
    assert len(orders) == 3
    if randomize:
        assert orders[0] != orders[1] != orders[2]
    else:
        assert orders[0] == orders[1] == orders[2] == list(range(len(examples)))


def test_shuffle_is_a_function_of_seed_and_sweep() -> None:
    examples = make_examples(lengths_2_to_13(40))

    def order(seed: int, skip_sweeps: int) -> list[int]:
        source = MinibatchSource(examples, 20, seed=seed)
        source.load_state_dict({**source.state_dict(), "sweep": skip_sweeps})
        batch_list = []
        while True:
            mb = source.next_minibatch()
            assert mb is not None
            batch_list.extend(mb.indices)
            if mb.end_of_sweep:
                return batch_list

    # sweep 2 reached directly equals sweep 2 reached by iterating
    walked = sweeps(MinibatchSource(examples, 20, seed=11, max_sweeps=3))[2]
    assert order(11, 2) == [i for mb in walked for i in mb.indices]
    assert order(11, 0) == order(11, 0)
    assert order(11, 0) != order(12, 0)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=30),
    size=st.integers(1, 20),
    seed=st.integers(0, 2**32),
)
def test_packing_rule_and_coverage_property(lengths: list[int], size: int, seed: int) -> None:
    source = MinibatchSource(make_examples(lengths), size, seed=seed, max_sweeps=1)
    batches = [mb.indices for mb in source]
    order = [i for b in batches for i in b]
    assert sorted(order) == list(range(len(lengths)))
    for k, batch in enumerate(batches):
        total = sum(lengths[i] for i in batch)
        assert total <= size or len(batch) == 1
        if k + 1 < len(batches):  # greedy: the next sequence did not fit
            assert total + lengths[batches[k + 1][0]] > size


def test_iterable_is_materialised_once() -> None:
    examples = make_examples([2, 3, 1])
    calls = Counter[str]()

    def generate() -> Any:
        calls["started"] += 1
        yield from examples

    source = MinibatchSource(generate(), 3, randomize=False, max_sweeps=2)
    assert [mb.indices for mb in source] == [(0,), (1,), (2,), (0,), (1,), (2,)]
    assert calls["started"] == 1


# ---------------------------------------------------------------------- the book's solar data
def read_solar(path: Path) -> list[dict[str, Tensor]]:
    """A plain reader for the dense one-value CTF lines of solar_*.ctf (independent of rnnkit)."""
    rows: dict[str, dict[str, list[float]]] = {}
    for line in path.read_text().splitlines():
        seq_id, *fields = line.split("|")
        example = rows.setdefault(seq_id.strip(), {"target": [], "features": []})
        for field in fields:
            name, value = field.split()
            example[name].append(float(value))
    return [
        {
            "target": torch.tensor(r["target"]).view(-1, 1),
            "features": torch.tensor(r["features"]).view(-1, 1),
        }
        for r in rows.values()
    ]


@pytest.fixture(scope="module")
def solar() -> list[dict[str, Tensor]]:
    return read_solar(shared_data("cntk-book", "solar_train.ctf"))


def test_solar_140_samples_is_about_19_sequences(solar: list[dict[str, Tensor]]) -> None:
    assert len(solar) == 8952  # REFERENCES.md: solar_train.ctf holds 8,952 sequences
    lengths = [len(e["features"]) for e in solar]
    assert set(lengths) == set(range(2, 14))
    # target (1 sample) comes first in the file: the size is the longest stream, as in CNTK
    source = MinibatchSource(solar, 140, seed=1, max_sweeps=1)
    batches = list(source)
    order = [i for mb in batches for i in mb.indices]
    assert [list(mb.indices) for mb in batches] == reference_pack(order, lengths, 140)
    assert sum(mb.num_samples for mb in batches) == sum(lengths) == source.samples_per_sweep
    per_batch = len(solar) / len(batches)
    # each full minibatch holds between 140 - 12 and 140 samples of mean length sum/len
    mean_length = sum(lengths) / len(lengths)
    assert (140 - 12) / mean_length <= per_batch <= 140 / mean_length
    assert 18.0 <= per_batch <= 19.0  # the book's "about 19 sequences"
    mb = batches[0]
    assert isinstance(mb["features"], SequenceBatch)
    assert isinstance(mb["target"], Tensor)
    assert mb["target"].shape == (mb.num_sequences, 1)
    assert mb["target"].view(-1).tolist() == [solar[i]["target"].item() for i in mb.indices]
    # counting the target stream instead: 140 samples are 140 sequences
    by_target = MinibatchSource(solar, 140, size_stream="target", randomize=False, max_sweeps=1)
    assert [b.num_sequences for b in by_target][:-1] == [140] * (len(solar) // 140)


# ---------------------------------------------------------------------- stopping
def test_max_samples_stops_after_the_minibatch_that_reaches_it() -> None:
    lengths = lengths_2_to_13(50)
    source = MinibatchSource(make_examples(lengths), 25, seed=4, max_samples=700)
    counts = [mb.num_samples for mb in source]
    assert sum(counts[:-1]) < 700 <= sum(counts)
    assert source.samples_seen == sum(counts) and source.exhausted
    assert source.next_minibatch() is None
    assert sum(lengths) < 700  # so it ran into a second sweep


def test_max_sweeps_and_infinite_iteration() -> None:
    examples = make_examples([3, 3, 3, 3])
    finite = MinibatchSource(examples, 6, max_sweeps=2)
    assert sum(mb.num_sequences for mb in finite) == 8
    endless = MinibatchSource(examples, 6)
    taken = [next(endless) for _ in range(20)]  # 2 minibatches per sweep, 10 sweeps
    assert [mb.sweep for mb in taken] == [k // 2 for k in range(20)]
    assert endless.samples_seen == 20 * 6


# ---------------------------------------------------------------------- partitions
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("bucket", [None, 2])
def test_partitions_are_disjoint_cover_and_have_equal_counts(
    world_size: int, bucket: int | None
) -> None:
    lengths = lengths_2_to_13(61)
    examples = make_examples(lengths)
    kwargs: dict[str, Any] = {"seed": 9, "max_sweeps": 3, "bucket": bucket}
    single = sweeps(MinibatchSource(examples, 20, **kwargs))  # what one process does
    ranks = [
        sweeps(MinibatchSource(examples, 20, partition=(r, world_size), **kwargs))
        for r in range(world_size)
    ]
    for k in range(3):
        per_rank = [ranks[r][k] for r in range(world_size)]
        assert len({len(p) for p in per_rank}) == 1  # same number of minibatches on every rank
        fresh = [mb.indices for p in per_rank for mb in p if not mb.repeated]
        flat = [i for b in fresh for i in b]
        assert sorted(flat) == list(range(len(examples)))  # disjoint and covering
        # the shares interleave to the minibatches of the single process, in its order
        interleaved = [
            per_rank[r][j].indices
            for j in range(len(per_rank[0]))
            for r in range(world_size)
            if not per_rank[r][j].repeated
        ]
        assert interleaved == [mb.indices for mb in single[k]]
        repeats = [mb for p in per_rank for mb in p if mb.repeated]
        assert len(repeats) == (-len(fresh)) % world_size
        for mb in repeats:  # a repeat is the last round's filler, copied from the same sweep
            assert mb.indices in fresh and mb.end_of_sweep
    states = [
        MinibatchSource(examples, 20, partition=(r, world_size), **kwargs)
        for r in range(world_size)
    ]
    for s in states:
        for _ in range(5):
            s.next_minibatch()
    assert all(s.state_dict() == states[0].state_dict() for s in states)


def test_tiny_source_on_more_ranks_than_minibatches_repeats_instead_of_hanging() -> None:
    examples = make_examples([4])
    got = [list(MinibatchSource(examples, 10, partition=(r, 3), max_sweeps=2)) for r in range(3)]
    assert [[(mb.indices, mb.repeated) for mb in g] for g in got] == [
        [((0,), False), ((0,), False)],
        [((0,), True), ((0,), True)],
        [((0,), True), ((0,), True)],
    ]


# ---------------------------------------------------------------------- resuming
@pytest.mark.parametrize("stop_after", [0, 1, 4, 7, 13])
@pytest.mark.parametrize(("bucket", "partition"), [(None, (0, 1)), (3, (1, 2))])
def test_resume_equals_uninterrupted(
    stop_after: int, bucket: int | None, partition: tuple[int, int]
) -> None:
    examples = make_examples(lengths_2_to_13(45))
    kwargs: dict[str, Any] = {
        "seed": 21,
        "max_sweeps": 3,
        "bucket": bucket,
        "partition": partition,
    }
    reference = MinibatchSource(examples, 40, **kwargs)
    uninterrupted = list(reference)
    first = MinibatchSource(examples, 40, **kwargs)
    head = [first.next_minibatch() for _ in range(stop_after)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = MinibatchSource(examples, 40, **kwargs)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(uninterrupted)
    for a, b in zip([*head, *tail], uninterrupted, strict=True):
        assert a is not None
        assert_same_minibatch(a, b)
    assert resumed.state_dict() == reference.state_dict()


def test_resume_counts_samples_seen_like_uninterrupted() -> None:
    examples = make_examples(lengths_2_to_13(30))
    a = MinibatchSource(examples, 25, seed=2, max_samples=400)
    total = sum(mb.num_samples for mb in a)
    b = MinibatchSource(examples, 25, seed=2, max_samples=400)
    for _ in range(6):
        b.next_minibatch()
    c = MinibatchSource(examples, 25, seed=2, max_samples=400)
    c.load_state_dict(b.state_dict())
    rest = sum(mb.num_samples for mb in c)
    assert c.samples_seen == a.samples_seen == total
    assert total - rest == b.samples_seen


# ---------------------------------------------------------------------- stream types
def test_single_sample_streams_become_plain_tensors() -> None:
    examples = [
        {
            "x": torch.randn(n, 3),
            "label": torch.tensor([[i % 2]]),
            "pair": torch.full((1, 2, 2), float(i)),
            "ragged": torch.ones(1 if i < 4 else 2, 1),
        }
        for i, n in enumerate([2, 5, 1, 3, 4, 2])
    ]
    source = MinibatchSource(examples, 100, randomize=False, max_sweeps=1)
    mb = next(source)
    assert mb.indices == tuple(range(6))
    assert torch.equal(mb["label"], torch.tensor([[0], [1], [0], [1], [0], [1]]))
    assert torch.equal(mb["pair"], torch.stack([e["pair"][0] for e in examples]))
    assert isinstance(mb["x"], SequenceBatch)
    # "ragged" has one sample in the first four examples only: always a SequenceBatch,
    # even in a minibatch where every member happens to have one sample
    first_two = next(MinibatchSource(examples, 2, unit="sequences", randomize=False))
    assert first_two.indices == (0, 1)
    assert isinstance(first_two["ragged"], SequenceBatch)
    plain = next(MinibatchSource(examples, 100, stack_single=False))
    assert isinstance(plain["label"], SequenceBatch)
    assert plain["label"].lengths.tolist() == [1] * 6
    assert "x" in mb and "z" not in mb and list(mb.streams) == ["x", "label", "pair", "ragged"]


@pytest.mark.parametrize("stack_single", [True, False])
@pytest.mark.parametrize("randomize", [False, True])
def test_streams_of_one_shape_come_from_one_block(
    stack_single: bool, randomize: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams whose examples share one shape are stacked once and cut by index; every
    minibatch must hold the examples' own values, with the layout the example-by-example
    collation gives (which a block too large for ``_BLOCK_BYTES`` falls back to)."""
    import rnnkit.data.minibatch as minibatch

    torch.manual_seed(3)
    examples = [
        {
            "x": torch.randn(6, 3),
            "label": torch.tensor([[i % 3]]),
            "pair": torch.randn(1, 2, 2, dtype=torch.float64),
            "ragged": torch.randn(2 + i % 3, 1),
        }
        for i in range(11)
    ]

    def batches() -> list[Minibatch]:
        source = MinibatchSource(
            examples, 4, randomize=randomize, max_sweeps=2, stack_single=stack_single, seed=1
        )
        out = list(source)
        stacked = {"x", "label", "pair"} if minibatch._BLOCK_BYTES else set()
        assert set(source._blocks()) == stacked  # "ragged" differs in length
        return out

    blocked = batches()
    monkeypatch.setattr(minibatch, "_BLOCK_BYTES", 0)
    plain = batches()
    assert [mb.indices for mb in blocked] == [mb.indices for mb in plain]
    for a, b in zip(blocked, plain, strict=True):
        for name in ("x", "label", "pair", "ragged"):
            got, want = a[name], b[name]
            assert type(got) is type(want), name
            if isinstance(want, SequenceBatch):
                for fact in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
                    assert torch.equal(getattr(got, fact), getattr(want, fact)), (name, fact)
                    assert getattr(got, fact).dtype == getattr(want, fact).dtype, (name, fact)
                own = [examples[i][name] for i in a.indices]
                assert all(torch.equal(g, w) for g, w in zip(got.to_list(), own, strict=True))
            else:
                assert torch.equal(got, want) and got.dtype == want.dtype, name
                assert torch.equal(got, torch.cat([examples[i][name] for i in a.indices]))


def test_examples_that_carry_gradients_are_not_stacked() -> None:
    """A block would cut the examples off from their gradients: such streams are collated
    example by example, and the gradient reaches each example's tensor."""
    leaves = [torch.randn(3, 2, requires_grad=True) for _ in range(4)]
    examples = [{"x": v, "y": torch.tensor([[float(i)]])} for i, v in enumerate(leaves)]
    source = MinibatchSource(examples, 100, randomize=False, max_sweeps=1)
    mb = next(source)
    assert set(source._blocks()) == {"y"}
    mb["x"].data.sum().backward()
    assert all(v.grad is not None and torch.equal(v.grad, torch.ones(3, 2)) for v in leaves)


class Bag:
    """A stand-in for a tree: a set of node values that batches itself."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.num_samples = len(values)

    @classmethod
    def collate(cls, items: list[Bag]) -> tuple[Tensor, Tensor]:
        sizes = torch.tensor([len(b.values) for b in items])
        return torch.tensor([v for b in items for v in b.values]), sizes


def test_objects_with_collate_are_batched_by_their_type() -> None:
    bags = [Bag([1.0, 2.0]), Bag([3.0]), Bag([4.0, 5.0, 6.0]), Bag([7.0])]
    examples = [{"tree": b, "y": torch.tensor([[float(i)]])} for i, b in enumerate(bags)]
    batches = list(MinibatchSource(examples, 3, randomize=False, max_sweeps=1))
    assert [mb.indices for mb in batches] == [(0, 1), (2,), (3,)]  # counted by num_samples
    values, sizes = batches[0]["tree"]
    assert values.tolist() == [1.0, 2.0, 3.0] and sizes.tolist() == [2, 1]
    assert batches[0].num_samples == 3


def test_minibatch_to_moves_every_stream() -> None:
    examples = make_examples([2, 3])
    mb = next(MinibatchSource(examples, 10, randomize=False)).to(torch.float64)
    assert mb["x"].data.dtype == torch.float64 and mb["y"].dtype == torch.float64
    assert mb["x"].to_list()[1].tolist() == examples[1]["x"].double().tolist()


# ---------------------------------------------------------------------- bucketing
def padding(batches: list[Minibatch], lengths: list[int]) -> int:
    return sum(
        len(mb.indices) * max(lengths[i] for i in mb.indices) - sum(lengths[i] for i in mb.indices)
        for mb in batches
    )


def test_bucketing_keeps_every_example_once_and_reduces_padding() -> None:
    lengths = lengths_2_to_13(400)
    examples = make_examples(lengths)
    plain = sweeps(MinibatchSource(examples, 60, seed=5, max_sweeps=2))
    bucketed = sweeps(MinibatchSource(examples, 60, seed=5, max_sweeps=2, bucket=4))
    again = sweeps(MinibatchSource(examples, 60, seed=5, max_sweeps=2, bucket=4))
    for k in range(2):
        assert sorted(i for mb in bucketed[k] for i in mb.indices) == list(range(400))
        assert [mb.indices for mb in bucketed[k]] == [mb.indices for mb in again[k]]
        for mb in bucketed[k]:
            assert mb.num_samples <= 60
        # measured with seed 5, sweep 0: 488 padded steps bucketed against 1778 without
        assert padding(bucketed[k], lengths) < padding(plain[k], lengths) / 2
    assert [mb.indices for mb in bucketed[0]] != [mb.indices for mb in bucketed[1]]


# ---------------------------------------------------------------------- errors
def test_errors_name_the_argument() -> None:
    ok = make_examples([2, 3])
    cases: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
        ([], {}, ValueError, r"examples: expected at least one example, found none"),
        (iter([]), {}, ValueError, r"examples: expected at least one example"),
        ([ok[0], {"x": ok[1]["x"]}], {}, ValueError, r"examples\[1\]: .*missing \['y'\]"),
        ([ok[0], {**ok[1], "z": ok[1]["y"]}], {}, ValueError, r"examples\[1\]: .*extra \['z'\]"),
        ([ok[0], 5], {}, TypeError, r"examples\[1\]: expected a dict .* found int"),
        ([{"x": torch.tensor(1.0)}], {}, ValueError, r"examples\[0\]\['x'\]: .*scalar"),
        ([{"x": torch.ones(0, 2)}], {}, ValueError, r"examples\[0\]\['x'\]: .*at least one"),
        (
            [ok[0], {"x": torch.ones(2, 5), "y": ok[1]["y"]}],
            {},
            ValueError,
            r"examples\[1\]\['x'\]: expected tensor \[T, \*\(2,\)\] torch.float32 .* found "
            r"tensor \(2, 5\)",
        ),
        ([{"x": 3}], {}, TypeError, r"examples\[0\]\['x'\]: .*classmethod collate.*found int"),
        (ok, {"minibatch_size": 0}, ValueError, r"minibatch_size: expected a positive integer"),
        (ok, {"minibatch_size": -3}, ValueError, r"minibatch_size: .*found -3"),
        (ok, {"minibatch_size": 2.5}, ValueError, r"minibatch_size: .*found 2.5"),
        (ok, {"unit": "frames"}, ValueError, r"unit: expected one of .* found 'frames'"),
        (ok, {"size_stream": "z"}, ValueError, r"size_stream: expected one of the streams"),
        (ok, {"partition": (2, 2)}, ValueError, r"partition: .*rank=2, world_size=2"),
        (ok, {"partition": (0, 0)}, ValueError, r"partition: .*world_size=0"),
        (ok, {"partition": (1,)}, ValueError, r"partition: expected a tuple \(rank, world_size\)"),
        (ok, {"seed": -1}, ValueError, r"seed: expected a non-negative integer, found -1"),
        (ok, {"max_sweeps": 0}, ValueError, r"max_sweeps: expected a positive integer"),
        (ok, {"max_samples": -5}, ValueError, r"max_samples: expected a positive integer"),
        (ok, {"bucket": 0}, ValueError, r"bucket: expected a positive integer"),
    ]
    for examples, kwargs, error, message in cases:
        kwargs = {"minibatch_size": 4, **kwargs}
        with pytest.raises(error, match=message):
            MinibatchSource(examples, **kwargs)


def test_state_and_stream_errors() -> None:
    examples = make_examples([2, 3, 4])
    source = MinibatchSource(examples, 4, seed=1)
    state = source.state_dict()
    with pytest.raises(ValueError, match=r"state\['seed'\]: .*seed=1, this source has seed=2"):
        MinibatchSource(examples, 4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state\['num_examples'\]"):
        MinibatchSource(examples[:2], 4, seed=1).load_state_dict(state)
    with pytest.raises(KeyError, match=r"state: missing key 'round'"):
        source.load_state_dict({k: v for k, v in state.items() if k != "round"})
    with pytest.raises(ValueError, match=r"state\['round'\]: expected 0 <= round < 3"):
        source.load_state_dict({**state, "round": 3})
    mb = next(source)
    with pytest.raises(
        KeyError, match=r"no stream 'z' in this minibatch; streams are \['x', 'y'\]"
    ):
        mb["z"]


class _Counted:
    """An object stream that counts how often a minibatch of it is collated."""

    calls = 0

    def __init__(self, value: int) -> None:
        self.value = value

    @classmethod
    def collate(cls, items: list[_Counted]) -> list[int]:
        cls.calls += 1
        return [item.value for item in items]


def test_a_stream_is_collated_when_first_read_and_once() -> None:
    """A minibatch collates each stream on first reading: a stream nobody reads costs
    nothing, a stream read twice is collated once, and every stream is listed from the
    start (iterating the streams collates them all, with the values a direct read gives)."""
    _Counted.calls = 0
    examples = [{"x": torch.full((2, 1), float(i)), "tag": _Counted(i)} for i in range(5)]
    source = MinibatchSource(examples, 2, unit="sequences", randomize=False, max_sweeps=1)
    first = next(source)
    assert list(first.streams) == ["x", "tag"] and len(first.streams) == 2
    assert "tag" in first and "y" not in first
    assert first["x"].lengths.tolist() == [2, 2] and _Counted.calls == 0
    assert first["tag"] == [0, 1] and first["tag"] is first["tag"] and _Counted.calls == 1
    second = next(source)
    assert dict(second.streams.items())["tag"] == [2, 3] and _Counted.calls == 2
    with pytest.raises(KeyError, match="no stream 'y' in this minibatch; streams are"):
        second["y"]
