"""bench/listops_levels.py: evaluation to a depth against hand-worked values, the full depth
against the library's own evaluator, and the rules' accuracies counted in plain Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rnnkit.data.listops import ListOpsConfig, evaluate_listops, generate_listops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import listops_levels as ll
finally:
    sys.path.remove(str(ROOT / "bench"))

MODES = {"[MAX": 9, "[MIN": 0, "[MED": 4, "[SM": 5}


def test_lists_below_the_depth_take_their_operators_mode() -> None:
    tree = ll.parse("[MAX 2 [MIN 4 7 [SM 8 8 ] ] 1 ]")
    # depth 0: the root itself is replaced; 1: MAX(2, mode MIN = 0, 1); 2: MAX(2, MIN(4, 7,
    # mode SM = 5), 1) = 4; 3: MAX(2, MIN(4, 7, 6), 1) = 4, the exact value
    assert [ll.value(tree, d - 1, MODES) for d in range(4)] == [9, 2, 4, 4]
    assert ll.value(ll.parse("[MED 1 2 ]"), 0, MODES) == 1 == evaluate_listops("[MED 1 2 ]")
    assert ll.value(ll.parse("7"), -1, MODES) == 7


def test_the_full_depth_is_the_expressions_value() -> None:
    examples = generate_listops(60, ListOpsConfig(max_depth=6, max_args=5), seed=3)
    for e in examples:
        assert ll.value(ll.parse(e.sequence), 6, MODES) == e.label == evaluate_listops(e.sequence)


def test_the_rules_accuracies_are_counted_over_the_sample() -> None:
    sequences = ["[MAX 2 9 ]", "[MAX 1 [MIN 3 4 ] ]", "[MIN 5 6 ]", "[MIN 0 [SM 1 2 ] ]"]
    labels = [evaluate_listops(s) for s in sequences]  # 9, 3, 5, 0
    # modes over every list: MAX {9, 3} -> 3, MIN {3, 5, 0} -> 0, SM {3} -> 3
    assert ll.list_modes([ll.parse(s) for s in sequences]) == {"[MAX": 3, "[MIN": 0, "[SM": 3}
    got = ll.levels(sequences, labels, 2)
    # top operator: MAX's values {9, 3} -> 1 of 2, MIN's {5, 0} -> 1 of 2
    # depth 0: MAX -> 3, 3, MIN -> 0, 0: hits "[MAX 1 ..." and "[MIN 0 ..." -> 2 of 4
    # depth 1: 9, MAX(1, 0) = 1, 5, MIN(0, 3) = 0 -> 3 of 4; depth 2: every one
    assert got == {"top operator": 50.0, "depth 0": 50.0, "depth 1": 75.0, "depth 2": 100.0}


def test_a_broken_expression_or_a_bad_count_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one complete expression"):
        ll.parse("[MAX 1 2")
    with pytest.raises(SystemExit, match="--examples: expected >= 1, found 0"):
        ll.main(["--examples", "0"])
