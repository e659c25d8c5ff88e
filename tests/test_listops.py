"""ListOps: generator against an independent evaluator, TSV round trip (the recipe, ``rnnkit
tree``: tests/test_recipe_tree.py)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from rnnkit.data.errors import ReaderError
from rnnkit.data.listops import (
    LISTOPS_VOCAB,
    ListOpsConfig,
    evaluate_listops,
    generate_listops,
    read_listops_tsv,
    write_listops_tsv,
)


def prefix_eval(tokens: list[str], i: int = 0) -> tuple[int, int, int]:
    """Recursive-descent evaluator over the flat tokens: (value, next index, depth).

    Independent of the gold tree: MED is the median truncated (statistics.median of the
    sorted arguments, then int), SM the sum mod 10.
    """
    token = tokens[i]
    if token.isdigit():
        return int(token), i + 1, 1
    args, depth, i = [], 0, i + 1
    while tokens[i] != "]":
        value, i, d = prefix_eval(tokens, i)
        args.append(value)
        depth = max(depth, d)
    ops = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda a: int(statistics.median(a)),
        "[SM": lambda a: sum(a) % 10,
    }
    return ops[token](args), i + 1, depth + 1


def list_sizes(tokens: list[str]) -> list[int]:
    sizes, stack = [], []
    for token in tokens:
        if token.startswith("["):
            stack.append(0)
        elif token == "]":
            sizes.append(stack.pop())
        if token != "]" and len(stack) > (1 if token.startswith("[") else 0):
            stack[-2 if token.startswith("[") else -1] += 1
    return sizes


@pytest.mark.parametrize(
    ("sequence", "value"),
    [
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[MED 1 2 ]", 1),  # int(1.5)
        ("[MED 3 8 2 5 ]", 4),  # median of 2 3 5 8 is 4.0
        ("[MED 9 1 5 ]", 5),
        ("[SM 8 7 6 ]", 1),
        ("[MIN [SM 9 9 ] [MAX 3 1 ] ]", 3),
        ("7", 7),
    ],
)
def test_evaluate_hand_computed(sequence: str, value: int) -> None:
    assert evaluate_listops(sequence) == value


def test_generated_labels_equal_an_independent_evaluation_and_parameters_hold() -> None:
    examples = generate_listops(3000, seed=3)
    assert len({ex.sequence for ex in examples}) == len(examples)
    depths, sizes = [], []
    for label, sequence in examples:
        tokens = sequence.split()
        value, end, depth = prefix_eval(tokens)
        assert (label, end) == (value, len(tokens))
        assert 2 <= len(tokens) <= 100
        assert set(tokens) <= set(LISTOPS_VOCAB)
        depths.append(depth)
        sizes.extend(list_sizes(tokens))
    assert max(depths) <= 20 and min(depths) == 2
    assert min(sizes) == 2 and max(sizes) == 5
    labels = [ex.label for ex in examples]
    counts = [labels.count(k) for k in range(10)]
    assert min(counts) > 0.05 * len(examples)  # all ten classes present
    assert max(counts) < 0.2 * len(examples)
    # Nested lists exist: a node is an operator with probability 0.25 below the root.
    assert sum(d >= 3 for d in depths) > 0.3 * len(examples)


def test_generation_is_seeded() -> None:
    assert generate_listops(20, seed=4) == generate_listops(20, seed=4)
    assert generate_listops(20, seed=4) != generate_listops(20, seed=5)


def test_long_range_arena_preset() -> None:
    config = ListOpsConfig.long_range_arena()
    assert (config.max_depth, config.max_args, config.min_length, config.max_length) == (
        10,
        10,
        500,
        2000,
    )
    for label, sequence in generate_listops(3, config, seed=0):
        tokens = sequence.split()
        value, _, depth = prefix_eval(tokens)
        assert label == value and 500 <= len(tokens) <= 2000 and depth <= 10
        assert max(list_sizes(tokens)) <= 10


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="max_args: expected >= 2"):
        ListOpsConfig(max_args=1)
    with pytest.raises(ValueError, match="operator_p"):
        ListOpsConfig(operator_p=1.5)
    with pytest.raises(ValueError, match="min_length, max_length"):
        ListOpsConfig(min_length=10, max_length=5)


def test_tsv_round_trip(tmp_path: Path) -> None:
    examples = generate_listops(50, seed=1)
    path = tmp_path / "train.tsv"
    write_listops_tsv(path, examples)
    assert path.read_text().splitlines()[0] == f"{examples[0].label}\t{examples[0].sequence}"
    assert read_listops_tsv(path) == examples


@pytest.mark.parametrize(
    ("line", "column", "message"),
    [
        ("9 [MAX 1 9 ]", 13, "found no tab"),
        ("12\t[MAX 1 9 ]", 1, "expected a label 0-9"),
        ("9\t[MAX 1 9 ] ]", 14, "expected the end"),
        ("9\t[MAX 1 9", 11, "not closed"),
    ],
)
def test_tsv_errors_carry_path_line_column(
    tmp_path: Path, line: str, column: int, message: str
) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(f"3\t[SM 1 2 ]\n\n{line}\n")
    with pytest.raises(ReaderError, match=message) as err:
        read_listops_tsv(path)
    assert (err.value.line, err.value.column) == (3, column)
    assert str(err.value).startswith(f"{path}:3:{column}: ")


def test_evaluate_refuses_a_malformed_tree() -> None:
    with pytest.raises(ValueError, match="expected a digit"):
        evaluate_listops("[MAX 2 x ]")
    with pytest.raises(ValueError, match="operator: expected one of"):
        evaluate_listops("[FIRST 2 3 ]")
