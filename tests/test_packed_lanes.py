"""A ragged batch in lanes (``SequenceBatch.lanes``) and the ``'scan'`` path that runs a
cell's parallel form on the packed rows in them (``parallel_packed``, chosen by
``packing_pays``): the layout against its definition, and LRU, RG-LRU, S6, the Hawk and Mamba
mixers, minGRU and minLSTM against each sequence run alone through the loop, in float64
(outputs, final states and gradients to 1e-10)."""

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
from torch import Tensor

from rnnkit import Bidirectional, Recurrence, RecurrenceFrom, SequenceBatch
from rnnkit.cells import MinGRUCell, MinLSTMCell
from rnnkit.modern.delta import GatedDeltaNetCell
from rnnkit.modern.diagonal import HawkCell, LRUCell, MambaCell, RGLRUCell, S6Cell
from rnnkit.modern.matrix import GLACell
from rnnkit.modern.scan import selective_scan
from rnnkit.recurrence import packing_pays

F64 = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-10}


def _batch(lengths: tuple[int, ...], features: int, seed: int = 0) -> SequenceBatch:
    return ragged_batch(lengths, features, seed)


@pytest.mark.parametrize(
    "lengths",
    [(4, 1, 3), (9, 2, 7, 7, 1, 5, 3), (5, 5, 5), (1,), tuple(range(1, 40)), (100, 99, 2, 1, 1)],
)
def test_lanes_hold_every_step_once_each_sequence_in_one_lane_in_order(
    lengths: tuple[int, ...],
) -> None:
    x = _batch(lengths, 1)
    lanes = x.lanes
    longest, batch = max(lengths), len(lengths)
    assert lanes.steps == longest
    assert math.ceil(sum(lengths) / longest) <= lanes.width <= batch
    index = lanes.index.tolist()
    assert len(set(index)) == len(index) == sum(lengths)
    assert all(0 <= p < longest * lanes.width for p in index)
    seq, step = x._row_position
    for j, n in enumerate(x.sorted_lengths.tolist()):
        mine = sorted((int(s), index[r]) for r, s in enumerate(step) if int(seq[r]) == j)
        lane = mine[0][1] % lanes.width
        first = mine[0][1] // lanes.width
        assert [p for _, p in mine] == [(first + s) * lanes.width + lane for s in range(n)]
        assert lanes.starts[j].item() == mine[0][1] and lanes.ends[j].item() == mine[-1][1]
    grid = lanes.grid(x.data)  # the rows land where index says, zeros elsewhere
    assert grid.shape == (longest, lanes.width, 1)
    flat = grid.view(-1)
    torch.testing.assert_close(flat[lanes.index], x.data.view(-1))
    empty = torch.ones(flat.shape[0], dtype=torch.bool)
    empty[lanes.index] = False
    assert torch.count_nonzero(flat[empty]) == 0


def test_lanes_share_where_sequences_fit_first_fit_longest_first() -> None:
    assert _batch((6, 2, 4, 3, 3), 1).lanes.width == 3  # 6 | 4 + 2 | 3 + 3
    assert _batch((6, 2, 4, 3, 3, 1), 1).lanes.width == 4  # 19 steps: the 1 needs a fourth
    assert _batch((6, 1, 4, 3, 3), 1).lanes.width == 3  # 6 | 4 + 1 | 3 + 3
    assert _batch((5, 5, 5), 1).lanes.width == 3  # nothing shares: as wide as the padding


CELLS = {
    "lru": lambda: LRUCell(3, 4),
    "rglru": lambda: RGLRUCell(3),
    "hawk": lambda: HawkCell(3, 4, 3),
    "s6": lambda: S6Cell(3, 2),
    "mamba": lambda: MambaCell(3, state_size=2, expand=2, conv_width=3),
    "mingru": lambda: MinGRUCell(3, 4),
    "minlstm": lambda: MinLSTMCell(3, 4),
}


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("lengths", [(7, 3, 1, 6, 2), (12, 1, 11, 5, 6, 4, 8, 3)])
@pytest.mark.parametrize("start", ["zeros", "given"])
def test_packed_path_equals_each_sequence_alone_with_states_and_gradients(
    name: str, lengths: tuple[int, ...], start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From zeros every cell runs in lanes. From a given state (learned or carried) LRU,
    RG-LRU and Hawk still do; S6's scan (in S6 and Mamba) then runs on the padding."""
    torch.manual_seed(0)
    cell = CELLS[name]().double()
    x = _batch(lengths, 3, seed=1)
    assert x.lanes.width < x.batch_size and packing_pays(cell, x)

    def no_padding(*args: object) -> None:
        raise AssertionError("the padded parallel form ran")

    h0 = random_states(cell, len(lengths), seed=2)
    if start == "zeros":
        h0 = tuple(torch.zeros_like(h) for h in h0)
    else:
        h0 = tuple(h.requires_grad_() for h in h0)

    def run(batch: SequenceBatch) -> tuple[SequenceBatch, object]:
        with monkeypatch.context() as m:
            # the padded form: a cell's parallel, or the scan of minGRU and minLSTM
            m.setattr(type(cell), "parallel" if hasattr(cell, "parallel") else "scan", no_padding)
            if start == "zeros":
                m.setattr(S6Cell, "scan_states", no_padding)
            return RecurrenceFrom(cell, backend="scan").with_final_state(h0, batch)

    assert_packed_equals_alone(cell, x, h0, run)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_the_padding_stays_where_no_lane_is_shared(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = CELLS[name]().double()
    x = _batch((6, 5, 4), 3)  # no two fit in 6 steps: as many lanes as sequences
    assert x.lanes.width == 3 and not packing_pays(cell, x)
    assert not packing_pays(cell, _batch((4, 4, 4), 3))  # equal lengths: no padding at all

    def no_lanes(*args: object) -> None:
        raise AssertionError("the packed parallel form ran")

    monkeypatch.setattr(type(cell), "parallel_packed", no_lanes)
    assert_scan_outputs_equal_alone(cell, x, random_states(cell, 3, seed=3))


@pytest.mark.parametrize(
    "pair",
    [
        (lambda: RGLRUCell(3), lambda: LRUCell(3, 2)),
        # the matrix cells, in chunk lanes (tests/test_packed_chunks.py)
        (
            lambda: GLACell(3, 4, 2, 2, chunk_size=4, sub_chunk=2),
            lambda: GatedDeltaNetCell(3, 4, 2, 2, 4),
        ),
    ],
)
def test_both_directions_of_a_ragged_batch_run_packed_as_the_loop(pair: tuple) -> None:
    torch.manual_seed(4)
    forward, backward = (make().double() for make in pair)
    x = _batch((9, 2, 7, 4, 1), 3, seed=5)
    assert packing_pays(forward, x) and packing_pays(backward, x.reverse())

    def both(backend: str) -> SequenceBatch:
        layer = Bidirectional(
            Recurrence(forward, backend=backend),  # type: ignore[arg-type]
            Recurrence(backward, go_backwards=True, backend=backend),  # type: ignore[arg-type]
        )
        return layer(x)

    got, want = both("scan"), both("loop")
    torch.testing.assert_close(got.data, want.data, **TOL)


@pytest.mark.parametrize(
    "resets", [torch.zeros(5, 2, dtype=torch.float32), torch.zeros(4, 2, dtype=torch.bool)]
)
def test_selective_scan_refuses_resets_of_another_shape_or_dtype(resets: Tensor) -> None:
    t, b, d, n = 5, 2, 3, 4
    delta, u = torch.rand(t, b, d), torch.randn(t, b, d)
    bc = torch.randn(t, b, n)
    with pytest.raises(ValueError, match=r"resets: expected a bool tensor \[T, B\] = \[5, 2\]"):
        selective_scan(delta, -torch.rand(d, n), bc, bc, u, torch.zeros(b, d, n), resets)
