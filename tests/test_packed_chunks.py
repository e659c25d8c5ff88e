"""A ragged batch in chunk lanes (``SequenceBatch.chunk_lanes``) and the matrix-state cells'
chunked form over them (``MatrixCell.parallel_packed``, chosen by ``packing_pays``): the
layout against its definition, and GLA, Mamba-2, the mLSTM, DeltaNet, Gated DeltaNet and their
mixers against each sequence run alone through the loop, in float64 (outputs, final states and
gradients to 1e-10)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    assert_packed_equals_alone,
    assert_scan_outputs_equal_alone,
    ragged_batch,
    random_states,
)
from torch import nn

from rnnkit import Recurrence, RecurrenceFrom, SequenceBatch
from rnnkit.modern.delta import DeltaNetCell, GatedDeltaNetCell
from rnnkit.modern.matrix import GLACell, Mamba2Cell, MLSTMCell, Restarts
from rnnkit.modern.matrix_blocks import deltanet_mixer, gla_mixer, mamba2_mixer, mlstm_mixer
from rnnkit.recurrence import packing_pays

TOL = {"atol": 1e-10, "rtol": 1e-10}
CHUNK = 4


def _batch(lengths: tuple[int, ...], features: int, seed: int = 0) -> SequenceBatch:
    return ragged_batch(lengths, features, seed)


@pytest.mark.parametrize(
    "lengths", [(4, 1, 3), (9, 2, 7, 7, 1, 5, 3), (5, 5, 5), (1,), tuple(range(1, 30))]
)
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_chunk_lanes_start_every_sequence_at_a_chunk_boundary_in_one_lane_in_order(
    lengths: tuple[int, ...], chunk: int
) -> None:
    x = _batch(lengths, 1)
    lanes = x.chunk_lanes(chunk)
    room = [math.ceil(n / chunk) * chunk for n in lengths]
    assert lanes.steps == max(room) and lanes.steps % chunk == 0
    assert math.ceil(sum(room) / max(room)) <= lanes.width <= len(lengths)
    index = lanes.index.tolist()
    assert len(set(index)) == len(index) == sum(lengths)
    seq, step = x._row_position
    for j, n in enumerate(x.sorted_lengths.tolist()):
        mine = sorted((int(s), index[r]) for r, s in enumerate(step) if int(seq[r]) == j)
        lane, first = mine[0][1] % lanes.width, mine[0][1] // lanes.width
        assert first % chunk == 0
        assert [p for _, p in mine] == [(first + s) * lanes.width + lane for s in range(n)]
        assert lanes.starts[j].item() == mine[0][1] and lanes.ends[j].item() == mine[-1][1]
    # no two sequences of a lane share a chunk
    owner = {}
    for r, p in enumerate(index):
        key = (p % lanes.width, p // lanes.width // chunk)
        assert owner.setdefault(key, int(seq[r])) == int(seq[r])
    if chunk == 1:  # the steps are the chunks: the lanes of SequenceBatch.lanes
        assert lanes.index.tolist() == x.lanes.index.tolist() and lanes.width == x.lanes.width


def test_chunk_lanes_are_cached_per_chunk_and_refuse_a_chunk_that_is_not_positive() -> None:
    x = _batch((6, 2, 4, 3, 3), 1)
    assert x.chunk_lanes(4) is x.chunk_lanes(4) is x.map(torch.neg).chunk_lanes(4)
    assert x.chunk_lanes(4).width == 3  # rooms 8 | 4 + 4 | 4 + 4
    assert x.chunk_lanes(2).width == 4  # rooms 6 | 4 + 2 | 4 | 4 (first fit, longest first)
    y = _batch((8, 5, 3), 1)  # steps: 8 | 5 + 3; chunks of 4: rooms 8 | 8 | 4
    assert (y.lanes.width, y.chunk_lanes(4).width, y.chunk_lanes(8).width) == (2, 3, 3)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=rf"chunk: expected a positive int, found {bad!r}"):
            x.chunk_lanes(bad)  # type: ignore[arg-type]


def test_restarts_name_each_sequences_first_and_last_chunk() -> None:
    x = _batch((7, 3, 1, 6, 2), 1)  # rooms 8, 4, 4, 8, 4: lanes 8 | 8 | 4 + 4 | 4
    lanes = x.chunk_lanes(CHUNK)
    restarts = Restarts.of(lanes, CHUNK)
    assert restarts.width == lanes.width == 4
    chunk_of = {}
    for c, (lane, rows) in restarts.starts.items():
        for w, j in zip(lane.tolist(), rows.tolist(), strict=True):
            assert lanes.starts[j].item() == c * CHUNK * lanes.width + w
            chunk_of[j] = c
    ends = {}
    for c, (lane, rows) in restarts.ends.items():
        for w, j in zip(lane.tolist(), rows.tolist(), strict=True):
            assert lanes.ends[j].item() // lanes.width // CHUNK == c
            assert lanes.ends[j].item() % lanes.width == w
            ends[j] = c
    assert sorted(chunk_of) == sorted(ends) == list(range(5))
    read = torch.cat([rows for _, rows in restarts.ends.values()])
    assert read[restarts.order].tolist() == list(range(5))


CELLS = {
    "gla": lambda: GLACell(3, 4, heads=2, key_size=2, chunk_size=CHUNK, sub_chunk=2),
    "mamba2": lambda: Mamba2Cell(3, 4, heads=2, state_size=3, chunk_size=CHUNK),
    "mlstm": lambda: MLSTMCell(3, 4, heads=2, key_size=2, chunk_size=CHUNK),
    "mlstm-exp": lambda: MLSTMCell(3, 4, heads=2, key_size=2, chunk_size=CHUNK, forget="exp"),
    "deltanet": lambda: DeltaNetCell(3, 4, heads=2, key_size=2, chunk_size=CHUNK),
    "gated-deltanet": lambda: GatedDeltaNetCell(3, 4, heads=2, key_size=2, chunk_size=CHUNK),
    "gla-mixer": lambda: gla_mixer(4, heads=2, chunk_size=CHUNK),
    "mamba2-mixer": lambda: mamba2_mixer(4, heads=2, state_size=2, chunk_size=CHUNK),
    "mlstm-mixer": lambda: mlstm_mixer(4, heads=2, chunk_size=CHUNK),
    "deltanet-mixer": lambda: deltanet_mixer(4, heads=2, chunk_size=CHUNK, gated=True),
}


def _features(cell: nn.Module) -> int:
    return int(cell.input_size)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("lengths", [(7, 3, 1, 6, 2), (12, 1, 11, 5, 6, 4, 8, 3)])
@pytest.mark.parametrize("start", ["zeros", "given"])
def test_packed_chunks_equal_each_sequence_alone_with_states_and_gradients(
    name: str, lengths: tuple[int, ...], start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several sequences share a lane (one after another, each from a chunk boundary), and
    each starts from its own state: zeros, or a given one that takes gradients."""
    torch.manual_seed(0)
    cell = CELLS[name]().double()
    x = _batch(lengths, _features(cell), seed=1)
    assert cell.packing_lanes(x).width < x.batch_size and packing_pays(cell, x)

    def no_padding(*args: object) -> None:
        raise AssertionError("the padded chunked form ran")

    h0 = random_states(cell, len(lengths), seed=2)
    if name.startswith("mlstm") and start == "given":  # the stabiliser m: a log scale
        h0 = (*h0[:-1], h0[-1].abs())
    if start == "zeros":
        h0 = tuple(torch.zeros_like(h) for h in h0)
    else:
        h0 = tuple(h.requires_grad_() for h in h0)
    inner = getattr(cell, "cell", cell)

    def run(batch: SequenceBatch) -> tuple[SequenceBatch, object]:
        with monkeypatch.context() as m:
            m.setattr(type(cell), "parallel", no_padding)
            m.setattr(type(inner), "parallel", no_padding)
            return RecurrenceFrom(cell, backend="scan").with_final_state(h0, batch)

    assert_packed_equals_alone(cell, x, h0, run)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_the_padding_stays_where_no_chunk_lane_is_shared(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = CELLS[name]().double()
    x = _batch((7, 6, 5), _features(cell))  # rooms 8, 8, 8: no two share a lane
    assert x.lanes.width == 3 and not packing_pays(cell, x)
    y = _batch((8, 3, 1), _features(cell))  # shares a lane in steps, but the 3 and 1 take 8
    assert y.lanes.width == 2 and cell.packing_lanes(y).width == 2 and packing_pays(cell, y)
    z = _batch((8, 5, 3), _features(cell))  # lanes of steps share (5 + 3), chunk lanes not
    assert z.lanes.width == 2 and not packing_pays(cell, z)

    def no_lanes(*args: object) -> None:
        raise AssertionError("the packed chunked form ran")

    monkeypatch.setattr(type(cell), "parallel_packed", no_lanes)
    h0 = random_states(cell, 3, seed=3)
    if name.startswith("mlstm"):
        h0 = (*h0[:-1], h0[-1].abs())
    for batch in (x, z):
        assert_scan_outputs_equal_alone(cell, batch, h0)


def test_float32_packed_chunks_stay_within_1e_5_of_the_float64_loop() -> None:
    """The issue's tolerance, at the default chunk sizes, over sequences of 5 to 300 steps."""
    torch.manual_seed(6)
    lengths = (300, 40, 250, 5, 60, 180, 100, 17)
    for make in (GLACell, Mamba2Cell, MLSTMCell, DeltaNetCell, GatedDeltaNetCell):
        cell = make(8, 16, heads=2)
        x = _batch(lengths, 8, seed=7)
        assert packing_pays(cell, x)
        got = Recurrence(cell, backend="scan")(x.map(lambda t: t.float())).data
        want = Recurrence(cell.double(), backend="loop")(x).data
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        cell.float()
