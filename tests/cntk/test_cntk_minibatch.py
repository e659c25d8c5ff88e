"""MinibatchSource with CNTK's semantics: cases translated from CNTK's own tests.

The cases come from microsoft/CNTK ``bindings/python/cntk/io/tests/io_tests.py`` (their data
strings, minibatch sizes and expected counts, values and flags), read here through
``read_ctf``; CNTK's ``randomize=False`` / ``randomization_window_in_chunks=0`` is
``randomize=False`` and a stream with ``defines_mb_size=True`` is ``size_stream``. Each CNTK
behaviour is an option (``cntk_compatible=True`` turns them all on); the last tests check that
rnnkit's defaults are unchanged.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from rnnkit.data.ctf import Stream, read_ctf
from rnnkit.data.minibatch import Minibatch, MinibatchSource

# io_tests.py's data strings.
MBDATA_DENSE_1 = """0  |S0 0   |S1 0
0   |S0 1   |S1 1
0   |S0 2
0   |S0 3   |S1 3
1   |S0 4
1   |S0 5   |S1 1
1   |S0 6   |S1 2
"""
MBDATA_DENSE_2 = """0  |S0 0   |S1 0
0   |S0 1   |S1 1
0   |S0 2
0   |S0 3   |S1 3
0   |S0 4
0   |S0 5   |S1 1
0   |S0 6   |S1 2
"""
MBDATA_SPARSE = """0\t|x 560:1\t|y 1 0 0 0 0
0\t|x 0:1
0\t|x 0:1
1\t|x 560:1\t|y 0 1 0 0 0
1\t|x 0:1
1\t|x 0:1
1\t|x 424:1
"""
FOUR_SAMPLES = "|S0 1\n|S0 2\n|S0 3\n|S0 4"  # create_temp_file: no id, no last newline


def ctf(tmp_path: Path, text: str, streams: dict[str, Stream]) -> list[dict[str, Tensor]]:
    path = tmp_path / "mbdata.txt"
    path.write_text(text)
    return read_ctf(path, streams)


def four(tmp_path: Path) -> list[dict[str, Tensor]]:
    return ctf(tmp_path, FOUR_SAMPLES, {"features": Stream("S0", 1)})


def dense_streams() -> dict[str, Stream]:
    return {"features": Stream("S0", 1), "labels": Stream("S1", 1)}


def sparse_streams() -> dict[str, Stream]:
    return {"features": Stream("x", 1000, sparse=True), "labels": Stream("y", 5)}


def counts(mb: Minibatch) -> tuple[int, bool]:
    return mb.num_samples, mb.end_of_sweep


# ------------------------------------------------------------- io_tests.py, translated


def test_max_samples(tmp_path: Path) -> None:
    """test_max_samples: max_samples=1, next_minibatch(10) gives 1 sample, then nothing."""
    source = MinibatchSource(four(tmp_path), 10, max_samples=1, cntk_compatible=True)
    assert counts(source.next_minibatch(10)) == (1, False)  # type: ignore[arg-type]
    assert source.next_minibatch(10) is None
    default = MinibatchSource(four(tmp_path), 10, max_samples=1)
    assert [counts(mb) for mb in default] == [(4, True)]  # rnnkit: one whole minibatch


def test_max_sweeps(tmp_path: Path) -> None:
    """test_max_sweeps: three sweeps of 4 samples in minibatches of 5 are 5, 5, 2."""
    source = MinibatchSource(four(tmp_path), 5, max_sweeps=3, cntk_compatible=True)
    got = [counts(source.next_minibatch(5)) for _ in range(3)]  # type: ignore[arg-type]
    assert got == [(5, True), (5, True), (2, True)]
    assert source.next_minibatch(1) is None
    only = MinibatchSource(four(tmp_path), 5, max_sweeps=3, cross_sweeps=True)
    assert [counts(mb) for mb in only] == [(5, True), (5, True), (2, True)]
    default = MinibatchSource(four(tmp_path), 5, max_sweeps=3)
    assert [counts(mb) for mb in default] == [(4, True)] * 3


def test_max_samples_over_several_sweeps(tmp_path: Path) -> None:
    """test_max_samples_over_several_sweeps: max_samples=11 in minibatches of 5: 5, 5, 1."""
    source = MinibatchSource(four(tmp_path), 5, max_samples=11, cntk_compatible=True)
    got = [counts(source.next_minibatch(5)) for _ in range(3)]  # type: ignore[arg-type]
    assert got == [(5, True), (5, True), (1, False)]
    assert source.next_minibatch(1) is None
    assert source.samples_seen == 11
    crossing = MinibatchSource(four(tmp_path), 5, max_samples=11, cross_sweeps=True)
    assert [mb.num_samples for mb in crossing] == [5, 5, 5]  # whole minibatches: 15 > 11
    exact = MinibatchSource(four(tmp_path), 5, max_samples=11, exact_limits=True)
    assert [counts(mb) for mb in exact] == [(4, True), (4, True), (3, False)]
    default = MinibatchSource(four(tmp_path), 5, max_samples=11)
    assert [counts(mb) for mb in default] == [(4, True)] * 3


def test_one_sweep(tmp_path: Path) -> None:
    """test_one_sweep (max_sweeps=1): a minibatch of 100 holds the 4 samples, then nothing."""
    for options in ({}, {"cntk_compatible": True}):
        source = MinibatchSource(four(tmp_path), 100, max_sweeps=1, **options)
        assert counts(source.next_minibatch(100)) == (4, True)  # type: ignore[arg-type]
        assert source.next_minibatch(100) is None


def test_random_seed(tmp_path: Path) -> None:
    """test_random_seed: 100 samples from seeds (default), 123, 0 and 1; after the first sweep
    (4 samples) the default source is the seed-1 source."""
    data = []
    for seed in (None, 123, 0, 1):
        options = {} if seed is None else {"seed": seed}
        source = MinibatchSource(four(tmp_path), 100, cntk_compatible=True, **options)
        mb = source.next_minibatch(100)
        assert mb is not None and mb.num_samples == 100
        data.append(mb["features"].squeeze(1))
    assert not torch.equal(data[0], data[1])
    assert torch.equal(data[0], data[2])
    assert torch.equal(data[0][4:], data[3][:-4])


@pytest.mark.parametrize("seed", [0, 5])
def test_consecutive_seeds_shift_by_one_sweep(seed: int) -> None:
    """The rule behind test_random_seed, sweep by sweep, and the rule rnnkit uses instead."""
    examples = [{"x": torch.full((1, 1), float(i))} for i in range(9)]

    def orders(seed: int, **options: bool) -> list[tuple[int, ...]]:
        source = MinibatchSource(examples, 9, seed=seed, max_sweeps=4, **options)
        return [mb.indices for mb in source]

    shifted = orders(seed, consecutive_seeds=True)
    assert shifted[1:] == orders(seed + 1, consecutive_seeds=True)[:-1]
    assert shifted == [
        tuple(np.random.default_rng(seed + k).permutation(9).tolist()) for k in range(4)
    ]
    default = orders(seed)
    assert default == [
        tuple(np.random.default_rng((seed, k)).permutation(9).tolist()) for k in range(4)
    ]
    assert default[1:] != orders(seed + 1)[:-1]


def test_large_minibatch(tmp_path: Path) -> None:
    """test_large_minibatch: one 7-sample sequence; a minibatch of 1000 takes it from 142
    sweeps (994 feature samples, 5 * 142 label samples)."""
    examples = ctf(tmp_path, MBDATA_DENSE_2, dense_streams())
    source = MinibatchSource(examples, 1000, randomize=False, cntk_compatible=True)
    mb = source.next_minibatch(1000)
    assert mb is not None and mb.end_of_sweep
    assert mb.stream_samples == {"features": 1000 - 1000 % 7, "labels": 5 * (1000 // 7)}
    assert mb.num_samples == 994
    assert mb.num_sequences == 1000 // 7
    assert (mb.sweep, source.sweep) == (0, 142)
    default = MinibatchSource(examples, 1000, randomize=False)
    assert default.next_minibatch().num_sequences == 1  # type: ignore[union-attr]


def test_text_format(tmp_path: Path) -> None:
    """test_text_format: next_minibatch(7) holds both sequences; next_minibatch(1) one."""
    source = MinibatchSource(
        ctf(tmp_path, MBDATA_SPARSE, sparse_streams()), 7, randomize=False, cntk_compatible=True
    )
    mb = source.next_minibatch(7)
    assert mb is not None
    features, lengths = mb["features"].to_padded()
    assert tuple(features.shape) == (2, 4, 1000) and lengths.tolist() == [3, 4]
    assert (mb.end_of_sweep, mb.num_sequences) == (True, 2)
    assert mb.stream_samples == {"features": 7, "labels": 2}
    assert mb["labels"].tolist() == [[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]]
    mb = source.next_minibatch(1)
    assert mb is not None and not mb.end_of_sweep
    assert mb.stream_samples["features"] < 7 and mb.stream_samples["labels"] == 1


def test_usermbsource_against_the_native_source(tmp_path: Path) -> None:
    """test_usermbsource: next_minibatch(2) is sequence 0 alone (shape (1, 3, 1000), not the
    end of the sweep); next_minibatch(10) is sequence 1 and sequence 0 of the next sweep."""
    source = MinibatchSource(
        ctf(tmp_path, MBDATA_SPARSE, sparse_streams()), 2, randomize=False, cntk_compatible=True
    )
    mb = source.next_minibatch(2)
    assert mb is not None
    assert tuple(mb["features"].to_padded()[0].shape) == (1, 3, 1000)
    assert (mb.end_of_sweep, mb.num_sequences, mb.stream_samples["features"]) == (False, 1, 3)
    assert mb["labels"].tolist() == [[1.0, 0, 0, 0, 0]]
    mb = source.next_minibatch(10)
    assert mb is not None
    assert mb["labels"].tolist() == [[0, 1.0, 0, 0, 0], [1.0, 0, 0, 0, 0]]
    assert (mb.end_of_sweep, mb.num_sequences, mb.stream_samples["features"]) == (True, 2, 7)


def test_full_sweep_minibatch(tmp_path: Path) -> None:
    """test_full_sweep_minibatch: the values and lengths of both streams, in both modes."""
    examples = ctf(tmp_path, MBDATA_DENSE_1, dense_streams())
    for options in ({}, {"cntk_compatible": True}):
        source = MinibatchSource(examples, 1000, randomize=False, max_sweeps=1, **options)
        mb = source.next_minibatch(1000)
        assert mb is not None and mb.end_of_sweep and mb.num_sequences == 2
        features = [t.squeeze(1).tolist() for t in mb["features"].to_list()]
        labels = [t.squeeze(1).tolist() for t in mb["labels"].to_list()]
        assert features == [[0, 1, 2, 3], [4, 5, 6]]
        assert labels == [[0, 1, 3], [1, 2]]


def test_minibatch_defined_by_labels(tmp_path: Path) -> None:
    """test_minibatch_defined_by_labels: the labels define the size; 2 sequences (7 feature
    samples), then 3 (10 feature samples, across the sweep's end)."""
    source = MinibatchSource(
        ctf(tmp_path, MBDATA_SPARSE, sparse_streams()),
        2,
        randomize=False,
        size_stream="labels",
        cntk_compatible=True,
    )
    mb = source.next_minibatch(2)
    assert mb is not None and mb.end_of_sweep
    assert (mb.num_sequences, mb.stream_samples) == (2, {"features": 7, "labels": 2})
    mb = source.next_minibatch(3)
    assert mb is not None
    assert mb.stream_samples == {"features": 10, "labels": 3}


def test_prefetch_with_unpacking(tmp_path: Path) -> None:
    """test_prefetch_with_unpacking: ten one-line sequences in minibatches of 3 (the last of
    1): each minibatch's features are rows of 1s, 2s and 3s."""
    values = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    labels = [1000, 100, 100, 10, 1, 2000, 200, 200, 20, 2]
    pairs = enumerate(zip(values, labels, strict=True))
    lines = [f"{i} |S0 {v} {v} {v} {v} |S1 {s}" for i, (v, s) in pairs]
    examples = ctf(
        tmp_path, "\n".join(lines) + "\n", {"S0": Stream("S0", 4), "S1": Stream("S1", 1)}
    )
    expected = torch.tensor([[1.0] * 4, [2.0] * 4, [3.0] * 4])
    for options in ({}, {"cntk_compatible": True}):
        source = MinibatchSource(examples, 3, randomize=False, max_sweeps=1, **options)
        got = [mb["S0"] for mb in source]
        assert [len(g) for g in got] == [3, 3, 3, 1]
        for g in got:
            assert torch.equal(g, expected[: len(g)])


def _generated(num_chunks: int, num_sequences: int, max_len: int) -> list[dict[str, Tensor]]:
    """io_tests.py's GenDeserializer: chunk c holds num_sequences sequences filled with c;
    with max_len > 1 each stream draws its lengths from random.seed(c), x first, then y."""
    examples: list[dict[str, Tensor]] = []
    for chunk in range(num_chunks):
        random.seed(chunk)
        lengths = {
            name: [random.randint(1, max_len) if max_len > 1 else 1 for _ in range(num_sequences)]
            for name in ("x", "y")
        }
        for i in range(num_sequences):
            examples.append(
                {
                    "x": torch.full((lengths["x"][i], 2, 3), float(chunk)),
                    "y": torch.full((lengths["y"][i], 3), float(chunk)),
                }
            )
    return examples


def _count_with_checkpoints(source: MinibatchSource, num_values: int, per: str) -> np.ndarray:
    """io_tests.py's run_minibatch_source: every tenth call saves the state, reads three
    minibatches, restores the state; returns how often each value was seen (per sample or
    per sequence)."""
    seen = np.zeros((2, num_values), dtype=np.int64)
    calls = 0
    while True:
        if calls % 10 == 1:
            state = source.state_dict()
            for _ in range(3):
                source.next_minibatch(20)
            source.load_state_dict(state)
            calls += 1
            continue
        mb = source.next_minibatch(20)
        calls += 1
        if mb is None:
            return seen
        for row, name in enumerate(("x", "y")):
            for sequence in mb[name].to_list():
                values = sequence.reshape(len(sequence), -1)[:, 0].long()
                if per == "sample":
                    np.add.at(seen[row], values.numpy(), 1)
                else:
                    seen[row, int(values[0])] += 1


@pytest.mark.parametrize("randomize", [False, True])
def test_user_deserializer_sample_mode(randomize: bool) -> None:
    """test_user_deserializer_sample_mode: with checkpoints taken and restored, every sample
    is seen once per sweep (20 chunks of 100, 2 sweeps: 200 each; 20 of 1, 3 sweeps: 3)."""
    for chunks, sequences, sweeps_, expected in ((20, 100, 2, 200), (20, 1, 3, 3)):
        source = MinibatchSource(
            _generated(chunks, sequences, 1),
            20,
            randomize=randomize,
            max_sweeps=sweeps_,
            stack_single=False,
            cntk_compatible=True,
        )
        seen = _count_with_checkpoints(source, chunks, "sample")
        assert (seen == expected).all()


@pytest.mark.parametrize("randomize", [False, True])
def test_user_deserializer_sequence_mode(randomize: bool) -> None:
    """test_user_deserializer_sequence_mode: sequences of 1-10 samples, x and y of different
    lengths, counted per stream; with checkpoints every sequence is seen once per sweep."""
    for chunks, sequences, sweeps_, expected in ((15, 100, 2, 200), (15, 1, 3, 3)):
        examples = _generated(chunks, sequences, 10)
        source = MinibatchSource(
            examples, 20, randomize=randomize, max_sweeps=sweeps_, cntk_compatible=True
        )
        seen = _count_with_checkpoints(source, chunks, "sequence")
        assert (seen == expected).all()


# ------------------------------------------------------------- per-stream counting


def test_per_stream_counting_when_the_longest_stream_alternates() -> None:
    """x is longest in even sequences, y in odd ones: the longest-stream sum fills a
    minibatch of 6 after one sequence, per-stream counts take two (4 + 1 <= 6, 1 + 4 <= 6)."""
    examples = [
        {"x": torch.zeros(4 if i % 2 == 0 else 1, 1), "y": torch.zeros(1 if i % 2 == 0 else 4, 1)}
        for i in range(6)
    ]
    per_stream = MinibatchSource(examples, 6, randomize=False, max_sweeps=1, count_per_stream=True)
    got = [(mb.indices, mb.num_samples, mb.stream_samples) for mb in per_stream]
    assert got == [((0, 1), 5, {"x": 5, "y": 5}), ((2, 3), 5, {"x": 5, "y": 5}),
                   ((4, 5), 5, {"x": 5, "y": 5})]  # fmt: skip
    longest = MinibatchSource(examples, 6, randomize=False, max_sweeps=1)
    assert [mb.indices for mb in longest] == [(0,), (1,), (2,), (3,), (4,), (5,)]


def _reference_cntk(
    sizes: list[list[int]], order: list[int], calls: list[int], max_samples: int | None
) -> list[tuple[list[int], int]]:
    """CNTK's reader as plainly as possible: an endless stream of sweeps (the same order each
    sweep), a sequence added while no stream passes the call's size (at least one), the size
    cut to what max_samples leaves."""
    out, stream, seen = [], [i for _ in range(50) for i in order], 0
    for size in calls:
        if max_samples is not None:
            if seen >= max_samples:
                break
            size = min(size, max_samples - seen)
        taken: list[int] = []
        totals = [0] * len(sizes[0])
        while stream:
            item = stream[0]
            if taken and any(t + s > size for t, s in zip(totals, sizes[item], strict=True)):
                break
            taken.append(stream.pop(0))
            totals = [t + s for t, s in zip(totals, sizes[item], strict=True)]
        seen += max(totals)
        out.append((taken, max(totals)))
    return out


def test_cursor_against_a_plain_loop() -> None:
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 9, (13, 2), generator=g).tolist()
    examples = [{"a": torch.zeros(a, 1), "b": torch.zeros(b, 2)} for a, b in sizes]
    calls = torch.randint(1, 30, (40,), generator=g).tolist()
    for max_samples in (None, 173):
        source = MinibatchSource(
            examples, 10, randomize=False, max_samples=max_samples, cntk_compatible=True
        )
        got = []
        for size in calls:
            mb = source.next_minibatch(size)
            if mb is None:
                break
            got.append((list(mb.indices), mb.num_samples))
        assert got == _reference_cntk(sizes, list(range(13)), calls, max_samples)


# ------------------------------------------------------------- resuming


@pytest.mark.parametrize("stop_after", [1, 3, 7])
def test_state_dict_resumes_with_cntk_options(stop_after: int) -> None:
    g = torch.Generator().manual_seed(1)
    examples = [
        {"a": torch.zeros(int(a), 1), "b": torch.zeros(int(b), 1)}
        for a, b in torch.randint(1, 7, (9, 2), generator=g)
    ]
    calls = [5, 11, 3, 8, 20, 4, 9, 6, 13, 7, 10, 2]

    def make() -> MinibatchSource:
        return MinibatchSource(examples, 8, seed=4, max_samples=70, cntk_compatible=True)

    whole = make()
    expected = [whole.next_minibatch(n) for n in calls]
    first = make()
    for n in calls[:stop_after]:
        first.next_minibatch(n)
    second = make()
    second.load_state_dict(first.state_dict())
    rest = [second.next_minibatch(n) for n in calls[stop_after:]]
    key = [(mb.indices, mb.num_samples, mb.sweep, mb.end_of_sweep) if mb else None
           for mb in expected[stop_after:]]  # fmt: skip
    assert [(mb.indices, mb.num_samples, mb.sweep, mb.end_of_sweep) if mb else None
            for mb in rest] == key  # fmt: skip
    assert second.samples_seen == whole.samples_seen


def test_a_per_call_size_in_the_default_mode_then_resume() -> None:
    """A size given to one call continues from the same place of the same sweep (without
    cross_sweeps it stops at the sweep's end); the state then records the cursor."""
    sizes = [2, 3, 1, 4, 2, 2]
    examples = [{"x": torch.zeros(n, 1)} for n in sizes]
    order = np.random.default_rng((2, 0)).permutation(6).tolist()

    def greedy(start: int, limit: int) -> list[int]:
        taken = [order[start]]
        for i in order[start + 1 :]:
            if sum(sizes[j] for j in taken) + sizes[i] > limit:
                break
            taken.append(i)
        return taken

    a = MinibatchSource(examples, 4, seed=2)
    first = a.next_minibatch()
    assert first is not None and list(first.indices) == greedy(0, 4)
    second = a.next_minibatch(7)
    assert second is not None and list(second.indices) == greedy(len(first.indices), 7)
    state = a.state_dict()
    assert state["round"] is None
    assert state["position"] == (len(first.indices) + len(second.indices)) % 6
    c = MinibatchSource(examples, 4, seed=2)
    c.load_state_dict(state)
    assert [mb.indices for mb in itertools.islice(c, 5)] == [
        mb.indices for mb in itertools.islice(a, 5)
    ]


def test_state_and_option_errors() -> None:
    examples = [{"x": torch.zeros(n, 1)} for n in (2, 3, 1)]
    cntk = MinibatchSource(examples, 4, cntk_compatible=True)
    with pytest.raises(ValueError, match=r"state\['cross_sweeps'\]: .*cross_sweeps=True"):
        MinibatchSource(examples, 4).load_state_dict(cntk.state_dict())
    with pytest.raises(ValueError, match=r"state\['position'\]: expected 0 <= position < 3"):
        cntk.load_state_dict({**cntk.state_dict(), "position": 3})
    with pytest.raises(ValueError, match=r"state\['position'\]: expected the cursor"):
        cntk.load_state_dict({**cntk.state_dict(), "position": None, "round": 0})
    old = MinibatchSource(examples, 4).state_dict()  # a state saved before the options
    for key in (
        "position",
        "cross_sweeps",
        "exact_limits",
        "consecutive_seeds",
        "count_per_stream",
    ):
        old.pop(key)
    MinibatchSource(examples, 4).load_state_dict(old)
    with pytest.raises(ValueError, match=r"cross_sweeps: .*partition=\(0, 1\) and bucket=None"):
        MinibatchSource(examples, 4, cross_sweeps=True, partition=(0, 2))
    with pytest.raises(ValueError, match=r"count_per_stream: .*found partition=\(0, 1\), bucket=2"):
        MinibatchSource(examples, 4, count_per_stream=True, bucket=2)
    with pytest.raises(ValueError, match=r"exact_limits: .*unit='samples', found unit='sequences'"):
        MinibatchSource(examples, 4, exact_limits=True, unit="sequences")
    with pytest.raises(ValueError, match=r"cntk_compatible: expected a bool, found 1"):
        MinibatchSource(examples, 4, cntk_compatible=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"minibatch_size: expected a positive integer"):
        cntk.next_minibatch(0)
    bucketed = MinibatchSource(examples, 4, bucket=2)
    with pytest.raises(ValueError, match=r"minibatch_size: a size per call .*bucket=2"):
        bucketed.next_minibatch(3)
    assert bucketed.next_minibatch(4) is not None  # the source's own size is fine


# ------------------------------------------------------------- defaults unchanged


def test_defaults_unchanged() -> None:
    """Without options: minibatches end at each sweep, the limits pass by whole minibatches,
    seeds are (seed, sweep) pairs and each example counts its longest stream."""
    examples = [{"x": torch.zeros(n, 1), "y": torch.zeros(5 - n, 1)} for n in (1, 4, 2, 3)]
    source = MinibatchSource(examples, 5, seed=3, max_samples=13)
    got = [(mb.indices, mb.num_samples, mb.sweep, mb.end_of_sweep) for mb in source]
    orders = [np.random.default_rng((3, k)).permutation(4).tolist() for k in range(3)]
    sizes = [4, 4, 3, 3]  # the longest stream of each example
    expected = []
    seen = 0
    for k, order in enumerate(orders):
        batches: list[list[int]] = [[]]
        for i in order:
            if batches[-1] and sum(sizes[j] for j in batches[-1]) + sizes[i] > 5:
                batches.append([])
            batches[-1].append(i)
        for j, batch in enumerate(batches):
            if seen >= 13:
                break
            total = sum(sizes[i] for i in batch)
            seen += total
            expected.append((tuple(batch), total, k, j == len(batches) - 1))
    assert got == expected
    state = MinibatchSource(examples, 5).state_dict()
    assert state["position"] is None and state["round"] == 0
    assert not any(state[k] for k in ("cross_sweeps", "exact_limits", "consecutive_seeds"))
