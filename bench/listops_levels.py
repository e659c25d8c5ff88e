"""How much of a ListOps expression a classifier must evaluate to reach a given accuracy.

For ``--examples`` expressions of the Long Range Arena form (``ListOpsConfig
.long_range_arena()``, seed ``--seed``), the script prints the accuracy of two rules that
read no more than the first few levels of each expression:

* the top operator alone: the most frequent value of expressions with that operator;
* evaluation to depth ``d``: lists nested deeper than ``d`` levels below the root are not
  evaluated but replaced by the most frequent value of a list with their operator (over every
  list of the sample, at any depth); depth 0 replaces the root itself.

This tells what a figure means: a model at the top operator's accuracy has learned nothing
but the first token; one at depth 1's evaluates the root's own arguments.

    .venv/bin/python bench/listops_levels.py                  # 3,000 expressions, seed 5
    .venv/bin/python bench/listops_levels.py --examples 500 --seed 1
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rnnkit.data.listops import ListOpsConfig, apply_operator, generate_listops


@dataclass
class Node:
    """One list: its operator and its arguments (digits or lists)."""

    operator: str
    arguments: list[int | Node]


def parse(sequence: str) -> Node | int:
    """The nested lists of an expression (an explicit stack: no recursion limit)."""
    stack: list[Node] = []
    result: Node | int | None = None
    for token in sequence.split():
        if token.startswith("["):
            stack.append(Node(token, []))
            continue
        item: Node | int = stack.pop() if token == "]" else int(token)
        if stack:
            stack[-1].arguments.append(item)
        else:
            result = item
    if result is None or stack:
        raise ValueError(f"sequence: expected one complete expression, found {sequence!r}")
    return result


def value(node: Node | int, depth: int, modes: dict[str, int]) -> int:
    """The value with lists more than ``depth`` levels below ``node`` (``node`` itself when
    ``depth < 0``) replaced by their operator's entry in ``modes``."""
    if isinstance(node, int):
        return node
    if depth < 0:
        return modes[node.operator]
    return apply_operator(node.operator, [value(a, depth - 1, modes) for a in node.arguments])


def list_modes(trees: Sequence[Node | int]) -> dict[str, int]:
    """Each operator's most frequent value over every list of ``trees`` (ties: the smaller)."""
    counts: dict[str, Counter[int]] = defaultdict(Counter)

    def walk(node: Node | int) -> int:
        if isinstance(node, int):
            return node
        v = apply_operator(node.operator, [walk(a) for a in node.arguments])
        counts[node.operator][v] += 1
        return v

    for tree in trees:
        walk(tree)
    return {op: min(c, key=lambda v: (-c[v], v)) for op, c in counts.items()}


def levels(sequences: Sequence[str], labels: Sequence[int], depths: int) -> dict[str, float]:
    """Accuracy (percent) of the top-operator rule and of evaluation to depths 0..depths."""
    trees = [parse(s) for s in sequences]
    by_top: dict[str, Counter[int]] = defaultdict(Counter)
    for tree, label in zip(trees, labels, strict=True):
        by_top[tree.operator if isinstance(tree, Node) else "digit"][label] += 1
    out = {"top operator": 100.0 * sum(max(c.values()) for c in by_top.values()) / len(trees)}
    modes = list_modes(trees)
    for d in range(depths + 1):
        hits = sum(value(t, d - 1, modes) == y for t, y in zip(trees, labels, strict=True))
        out[f"depth {d}"] = 100.0 * hits / len(trees)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.examples < 1:
        raise SystemExit(f"--examples: expected >= 1, found {args.examples}")
    config = ListOpsConfig.long_range_arena()
    examples = generate_listops(args.examples, config, seed=args.seed)
    figures = levels([e.sequence for e in examples], [e.label for e in examples], 10)
    print(f"{args.examples} LRA ListOps expressions, seed {args.seed}")
    print("| rule | accuracy % |\n|---|---|")
    for rule, accuracy in figures.items():
        print(f"| {rule} | {accuracy:.1f} |")
    return figures


if __name__ == "__main__":
    main()
