"""ListOps: generator against an independent evaluator, TSV round trip, a tiny training run."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch

from rnnkit.data.errors import ReaderError
from rnnkit.data.listops import (
    LISTOPS_VOCAB,
    ListOpsConfig,
    ListOpsExample,
    evaluate_listops,
    generate_listops,
    read_listops_tsv,
    write_listops_tsv,
)
from rnnkit.tasks.trees import (
    ListOpsRun,
    TreeClassifier,
    listops_split,
    lr_factor,
    majority_rate,
    make_optimizer,
    train_listops_model,
)
from rnnkit.trees import Tree, TreeBatch


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


def test_tree_lstm_learns_a_tiny_slice_beyond_the_majority_class() -> None:
    """400 shallow trees (one list of digits each), 15 short epochs: a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below; one thread keeps the run the same everywhere
    run = ListOpsRun(
        num_train=400,
        num_test=200,
        data=ListOpsConfig(max_depth=2, max_length=30),
        epochs=15,
        embedding_size=32,
        hidden_size=32,
        batch_size=32,
        learning_rate=1e-2,
        seed=0,
    )
    train, test = listops_split(run)
    majority = majority_rate(test)
    assert majority < 0.2
    try:
        result = train_listops_model("tree-lstm", train, test, run)
    finally:
        torch.set_num_threads(threads)
    assert result.majority_rate == majority
    assert result.test_accuracy > majority + 0.25, result


def test_unknown_model_kind() -> None:
    with pytest.raises(ValueError, match="kind: expected one of"):
        train_listops_model("gru", [ListOpsExample(1, "1")], [ListOpsExample(1, "1")], ListOpsRun())


def _tiny_run(**options: object) -> ListOpsRun:
    return ListOpsRun(
        num_train=64,
        num_test=16,
        data=ListOpsConfig(max_depth=2, max_length=20),
        epochs=3,
        embedding_size=8,
        hidden_size=8,
        batch_size=16,
        learning_rate=1e-2,
        seed=0,
        **options,  # type: ignore[arg-type]
    )


def test_lr_factor_hand_computed() -> None:
    run = ListOpsRun(epochs=5, lr_schedule="cosine", warmup_epochs=1, hold_epochs=2)
    # 10 steps per epoch: warm-up (s + 1) / 10, hold until epoch 2, cosine over epochs 2-5.
    got = [lr_factor(s, 10, run) for s in (0, 4, 9, 15, 20, 35, 50)]
    want = [0.1, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]
    assert got == pytest.approx(want)
    plain = ListOpsRun(epochs=2, lr_schedule="cosine")
    assert lr_factor(5, 10, plain) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_cosine_schedule_sets_the_optimizers_learning_rate() -> None:
    """4 batches per epoch; the logged rate after each epoch is the schedule's, not 1e-2."""
    run = _tiny_run(lr_schedule="cosine", hold_epochs=1)
    train, test = listops_split(run)
    lines: list[str] = []
    train_listops_model("tree-lstm", train, test, run, log=lines.append)
    rates = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert rates == pytest.approx([1e-2, 0.5e-2, 0.0])
    lines.clear()
    train_listops_model("tree-lstm", train, test, _tiny_run(lr_decay=0.5), log=lines.append)
    assert [float(line.rsplit(" ", 1)[1]) for line in lines] == pytest.approx(
        [0.5e-2, 0.25e-2, 0.125e-2]
    )


def test_dropout_on_the_root_state_acts_in_training_only() -> None:
    examples = generate_listops(8, ListOpsConfig(max_depth=3, max_length=30), seed=2)
    batch = TreeBatch.from_trees([Tree.from_listops(ex.sequence) for ex in examples], LISTOPS_VOCAB)
    torch.manual_seed(0)
    model = TreeClassifier(8, 8, dropout=0.5)
    h, _ = model.encoder.root_states(batch, batch.embed(model.embedding))
    model.eval()
    assert torch.allclose(model(batch), model.output(h))
    model.train()
    torch.manual_seed(1)
    logits = model(batch)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones_like(h), 0.5)  # the same draw: kept units x2
    assert torch.allclose(logits, model.output(h * mask), atol=1e-6)
    assert not torch.allclose(logits, model.output(h))


def test_weight_decay_is_decoupled_and_off_by_default() -> None:
    """With zero gradients Adam's step is zero, so AdamW only shrinks: w (1 - lr wd)."""
    layer = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    for run, factor in ((ListOpsRun(weight_decay=0.1), 1 - 1e-3 * 0.1), (ListOpsRun(), 1.0)):
        for p, b in zip(layer.parameters(), before, strict=True):
            p.data.copy_(b)
        optimizer = make_optimizer(layer, run)
        for p in layer.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        for p, b in zip(layer.parameters(), before, strict=True):
            assert torch.allclose(p.detach(), b * factor, rtol=0, atol=1e-7)


def test_run_options_are_checked() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        ListOpsRun(lr_schedule="step")
    with pytest.raises(ValueError, match="dropout"):
        ListOpsRun(dropout=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        ListOpsRun(weight_decay=-1.0)
