"""Training throughput of Recursive(ChildSumTreeLSTMCell) on ListOps trees.

Compares, in one run with the same trees and the same weights:

- **batched**: ``Recursive`` over a ``TreeBatch`` of 128 trees, one height at a time;
- **per node**: a plain recursion over each ``Tree``, the cell called on one node at a time
  (how a one-tree-at-a-time PyTorch Tree-LSTM is usually written).

Both do forward and backward of a cross-entropy loss on the roots; the gradients of the two
are compared and their largest difference printed. Then the batched cost as the forest grows
(64, 256, 1024 trees), with total nodes and height. Batch construction (``TreeBatch.from_trees``,
once per batch in the data layer) is timed apart.

    python bench/bench_trees.py            # print the markdown table
    python bench/bench_trees.py --write    # also put it in bench/README.md, section "## Trees"
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.listops import LISTOPS_VOCAB, generate_listops
from rnnkit.recursive import ChildSumTreeLSTMCell, Recursive
from rnnkit.trees import Tree, TreeBatch

SECTION = "## Trees"


class Model(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(LISTOPS_VOCAB), size)
        self.cell = ChildSumTreeLSTMCell(size, size)
        self.recursive = Recursive(self.cell)
        self.output = nn.Linear(size, 10)

    def batched_loss(self, batch: TreeBatch, labels: Tensor) -> Tensor:
        h, _ = self.recursive.root_states(batch, batch.embed(self.embedding))
        return F.cross_entropy(self.output(h), labels, reduction="sum")

    def per_node_loss(self, trees: list[Tree], labels: Tensor) -> Tensor:
        zero_x = torch.zeros(1, self.cell.input_size)
        total = torch.zeros(())
        for tree, label in zip(trees, labels, strict=True):
            states: dict[int, tuple[Tensor, Tensor]] = {}
            for node in tree.postorder():
                if node.token is None:
                    x = zero_x
                else:
                    x = self.embedding(torch.tensor([LISTOPS_VOCAB[node.token]]))
                if not node.children:
                    states[id(node)] = self.cell.leaf(x)
                    continue
                kids = [states[id(c)] for c in node.children]
                h = torch.stack([k[0] for k in kids], dim=1)
                c = torch.stack([k[1] for k in kids], dim=1)
                mask = torch.ones(1, len(kids), dtype=torch.bool)
                states[id(node)] = self.cell(x, (h, c), mask)
            logits = self.output(states[id(tree)][0])
            total = total + F.cross_entropy(logits, label.view(1), reduction="sum")
        return total


def grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Best of ``repeats`` wall-clock runs of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="embedding and hidden size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    examples = generate_listops(1024, seed=args.seed)
    trees = [Tree.from_listops(ex.sequence) for ex in examples]
    labels = torch.tensor([ex.label for ex in examples])
    model = Model(args.size)

    # Batched against per node, 128 trees, same weights.
    n = 128
    build = timed(lambda: TreeBatch.from_trees(trees[:n], LISTOPS_VOCAB), 3)
    batch = TreeBatch.from_trees(trees[:n], LISTOPS_VOCAB)

    def step_batched() -> None:
        model.zero_grad()
        model.batched_loss(batch, labels[:n]).backward()

    def step_per_node() -> None:
        model.zero_grad()
        model.per_node_loss(trees[:n], labels[:n]).backward()

    step_per_node()
    g_node = grads(model)
    step_batched()
    g_batch = grads(model)
    diff = max(float((a - b).abs().max()) for a, b in zip(g_node, g_batch, strict=True))
    t_batched = timed(step_batched, 5)
    t_node = timed(step_per_node, 2)

    rows = [
        "| path | trees | nodes | height | seconds (fwd+bwd) | trees/s | speed-up |",
        "|---|---|---|---|---|---|---|",
        f"| per node (recursion over each Tree) | {n} | {batch.num_nodes} | {batch.height} | "
        f"{t_node:.3f} | {n / t_node:.0f} | 1.0x |",
        f"| batched Recursive (one height at a time) | {n} | {batch.num_nodes} | "
        f"{batch.height} | {t_batched:.3f} | {n / t_batched:.0f} | {t_node / t_batched:.1f}x |",
    ]
    growth = [
        "| trees | nodes | height | seconds (fwd+bwd) | trees/s | nodes/s | TreeBatch build s |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in (64, 256, 1024):
        build_s = timed(lambda size=size: TreeBatch.from_trees(trees[:size], LISTOPS_VOCAB), 2)
        forest = TreeBatch.from_trees(trees[:size], LISTOPS_VOCAB)

        def step(forest: TreeBatch = forest, size: int = size) -> None:
            model.zero_grad()
            model.batched_loss(forest, labels[:size]).backward()

        seconds = timed(step, 3)
        growth.append(
            f"| {size} | {forest.num_nodes} | {forest.height} | {seconds:.3f} | "
            f"{size / seconds:.0f} | {forest.num_nodes / seconds:.0f} | {build_s:.3f} |"
        )

    text = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/bench_trees.py --size {args.size} --threads {args.threads}`: "
            f"child-sum Tree-LSTM (input and hidden {args.size}), ListOps trees from "
            f"`generate_listops(1024, seed={args.seed})` (Nangia & Bowman parameters), "
            f"cross-entropy on the roots, forward + backward, best of several runs; "
            f"{args.threads} CPU thread(s), {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}. Times are wall clock on whatever else the machine runs; "
            "the speed-up is the ratio of two measurements made in the same run.",
            "",
            *rows,
            "",
            f"Largest gradient difference between the two paths: {diff:.1e} (float32). "
            f"Building that TreeBatch of {n} trees took {build:.3f} s (data layer, once).",
            "",
            "Cost as the forest grows (batched):",
            "",
            *growth,
            "",
        ]
    )
    print(text)
    if args.write:
        write_section(Path(__file__).with_name("README.md"), text)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the ``## Trees`` section of ``path``, leaving the others alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
