"""ListOps recipe: a Tree-LSTM on gold trees against an LSTM on the flat tokens.

Nangia & Bowman (2018) report, on about 90k training / 10k test expressions: Tree-LSTM on gold
trees 98.7 % test accuracy, LSTM 71.5 %. :func:`run_listops` makes a seeded split with
:func:`rnnkit.data.listops.generate_listops`, trains both models with Adam, and reports test
accuracy beside the majority-class rate. From the command line::

    python -m rnnkit.tasks.trees --train 90000 --test 10000 --epochs 10

Both models embed the 15 ListOps tokens; the Tree-LSTM (``NaryTreeLSTMCell``, n = 2, over the
binary left-branching gold tree, tokens as leaf inputs and zero inputs at internal nodes)
classifies from the root's ``h``, the LSTM (``Fold(LSTMCell)``) from the last step's ``h``.
The data is made into batches once (one :class:`TreeBatch` or :class:`SequenceBatch` per
minibatch); each epoch visits the batches in a new order. Optional training settings (all off
by default): a per-step warm-up / hold / cosine learning-rate schedule (:func:`lr_factor`),
dropout on the representation the classifier reads, and decoupled weight decay (AdamW).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import LSTMCell
from rnnkit.data.listops import LISTOPS_VOCAB, ListOpsConfig, ListOpsExample, generate_listops
from rnnkit.recurrence import Fold
from rnnkit.recursive import NaryTreeLSTMCell, Recursive
from rnnkit.sequences import SequenceBatch
from rnnkit.trees import Tree, TreeBatch

__all__ = [
    "ListOpsResult",
    "ListOpsRun",
    "SequenceClassifier",
    "TreeClassifier",
    "listops_split",
    "lr_factor",
    "majority_rate",
    "make_optimizer",
    "run_listops",
    "train_listops_model",
]

NUM_CLASSES = 10


@dataclass(frozen=True)
class ListOpsRun:
    """What to generate and how to train.

    Attributes:
        num_train, num_test: sizes of the split (distinct expressions, disjoint).
        data: the generator's parameters (Nangia & Bowman's by default).
        seed: seeds the data, the initial weights and the batch order.
        embedding_size, hidden_size: of both models.
        batch_size: trees (or sequences) per minibatch.
        epochs: passes over the training set.
        learning_rate: Adam's (the peak, with ``lr_schedule="cosine"``).
        lr_schedule: ``"exponential"`` (times ``lr_decay`` after every epoch) or ``"cosine"``
            (per step: linear warm-up, hold, cosine to zero at the end; :func:`lr_factor`).
        lr_decay: the exponential schedule's factor per epoch (1: constant).
        warmup_epochs: cosine schedule: epochs of linear warm-up from 0 to the peak.
        hold_epochs: cosine schedule: the decay starts after this many epochs (or after the
            warm-up, whichever is later).
        dropout: dropout probability on the representation the classifier reads (the root's
            ``h`` or the LSTM's last ``h``); 0 disables it.
        weight_decay: decoupled weight decay (AdamW) when > 0, else plain Adam.
        max_seconds: stop a model's training after the batch that passes this budget.
    """

    num_train: int = 90_000
    num_test: int = 10_000
    data: ListOpsConfig = field(default_factory=ListOpsConfig)
    seed: int = 0
    embedding_size: int = 128
    hidden_size: int = 128
    batch_size: int = 128
    epochs: int = 10
    learning_rate: float = 1e-3
    lr_schedule: str = "exponential"
    lr_decay: float = 1.0
    warmup_epochs: float = 0.0
    hold_epochs: float = 0.0
    dropout: float = 0.0
    weight_decay: float = 0.0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("exponential", "cosine"):
            raise ValueError(
                f"lr_schedule: expected 'exponential' or 'cosine', found {self.lr_schedule!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), found {self.dropout}")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.hold_epochs < 0:
            raise ValueError(
                "weight_decay, warmup_epochs, hold_epochs: expected >= 0, found "
                f"{self.weight_decay}, {self.warmup_epochs}, {self.hold_epochs}"
            )


@dataclass(frozen=True)
class ListOpsResult:
    """One trained model's figures (accuracies in [0, 1])."""

    model: str
    test_accuracy: float
    train_accuracy: float
    majority_rate: float
    epochs_run: float
    seconds: float


def listops_split(run: ListOpsRun) -> tuple[list[ListOpsExample], list[ListOpsExample]]:
    """``num_train + num_test`` distinct examples from ``run.seed``, the first for training.

    >>> train, test = listops_split(ListOpsRun(num_train=5, num_test=2, seed=1))
    >>> len(train), len(test), not set(train) & set(test)
    (5, 2, True)
    """
    examples = generate_listops(run.num_train + run.num_test, run.data, seed=run.seed)
    return examples[: run.num_train], examples[run.num_train :]


def majority_rate(examples: Sequence[ListOpsExample]) -> float:
    """The share of the most frequent label.

    >>> majority_rate([ListOpsExample(3, "3"), ListOpsExample(3, "3"), ListOpsExample(1, "1")])
    0.6666666666666666
    """
    counts = Counter(ex.label for ex in examples)
    return max(counts.values()) / len(examples)


class TreeClassifier(nn.Module):
    """Embedding, a Tree-LSTM over the gold tree, a linear layer on the root's ``h``.

    ``forward(batch)`` maps a :class:`TreeBatch` of token ids to logits ``[num_trees, 10]``.
    ``dropout`` (in training mode only) drops units of the root's ``h`` before the linear layer.
    """

    def __init__(self, embedding_size: int, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(LISTOPS_VOCAB), embedding_size)
        self.encoder = Recursive(NaryTreeLSTMCell(embedding_size, hidden_size, n=2))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, NUM_CLASSES)

    def forward(self, batch: TreeBatch) -> Tensor:
        h, _ = self.encoder.root_states(batch, batch.embed(self.embedding))
        return self.output(self.dropout(h))


class SequenceClassifier(nn.Module):
    """Embedding, an LSTM folded over the tokens, a linear layer on the last ``h``.

    ``forward(x)`` maps a :class:`SequenceBatch` of token ids (``data [N]``) to ``[B, 10]``.
    ``dropout`` (in training mode only) drops units of the last ``h`` before the linear layer.
    """

    def __init__(self, embedding_size: int, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(LISTOPS_VOCAB), embedding_size)
        self.encoder = Fold(LSTMCell(embedding_size, hidden_size))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, NUM_CLASSES)

    def forward(self, x: SequenceBatch) -> Tensor:
        return self.output(self.dropout(self.encoder(x.with_data(self.embedding(x.data)))))


def lr_factor(step: int, steps_per_epoch: int, run: ListOpsRun) -> float:
    """The cosine schedule's multiplier of ``run.learning_rate`` for optimizer step ``step``.

    With ``t = step / steps_per_epoch`` (epochs done) and ``d = max(warmup, hold)``: linear
    warm-up ``(step + 1) / (warmup * steps_per_epoch)`` while below 1, then 1 until ``t = d``,
    then ``(1 + cos(pi (t - d) / (epochs - d))) / 2``, which reaches 0 at ``t = epochs``.

    >>> run = ListOpsRun(epochs=4, lr_schedule="cosine", hold_epochs=2)
    >>> [lr_factor(s, 10, run) for s in (0, 19, 20, 30, 40)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    t = step / steps_per_epoch
    if run.warmup_epochs > 0:
        warm = (step + 1) / (run.warmup_epochs * steps_per_epoch)
        if warm < 1.0:
            return warm
    start = max(run.warmup_epochs, run.hold_epochs)
    if t <= start or run.epochs <= start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - start) / (run.epochs - start))))


def make_optimizer(model: nn.Module, run: ListOpsRun) -> torch.optim.Optimizer:
    """Adam at ``run.learning_rate``; AdamW (decoupled decay) when ``run.weight_decay > 0``."""
    if run.weight_decay > 0:
        return torch.optim.AdamW(
            model.parameters(), lr=run.learning_rate, weight_decay=run.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=run.learning_rate)


def _tree_batches(examples: Sequence[ListOpsExample], size: int) -> list[tuple[TreeBatch, Tensor]]:
    batches = []
    for a in range(0, len(examples), size):
        chunk = examples[a : a + size]
        batch = TreeBatch.from_trees(
            [Tree.from_listops(ex.sequence) for ex in chunk], LISTOPS_VOCAB
        )
        batches.append((batch, torch.tensor([ex.label for ex in chunk])))
    return batches


def _sequence_batches(
    examples: Sequence[ListOpsExample], size: int
) -> list[tuple[SequenceBatch, Tensor]]:
    batches = []
    for a in range(0, len(examples), size):
        chunk = examples[a : a + size]
        ids = [torch.tensor([LISTOPS_VOCAB[t] for t in ex.sequence.split()]) for ex in chunk]
        batches.append((SequenceBatch.from_list(ids), torch.tensor([ex.label for ex in chunk])))
    return batches


def _accuracy(model: nn.Module, batches: Sequence[tuple[object, Tensor]]) -> float:
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    model.train()
    return correct / total


def train_listops_model(
    kind: str,
    train: Sequence[ListOpsExample],
    test: Sequence[ListOpsExample],
    run: ListOpsRun,
    log: Callable[[str], None] | None = None,
) -> ListOpsResult:
    """Train ``kind`` (``"tree-lstm"`` or ``"lstm"``) on ``train``; evaluate on ``test``."""
    torch.manual_seed(run.seed)
    makers: dict[str, tuple[Callable[..., list], type[nn.Module]]] = {
        "tree-lstm": (_tree_batches, TreeClassifier),
        "lstm": (_sequence_batches, SequenceClassifier),
    }
    if kind not in makers:
        raise ValueError(f"kind: expected one of {sorted(makers)}, found {kind!r}")
    make_batches, model_class = makers[kind]
    train_batches = make_batches(train, run.batch_size)
    test_batches = make_batches(test, 512)
    model = model_class(run.embedding_size, run.hidden_size, run.dropout)
    optimizer = make_optimizer(model, run)
    per_step = run.lr_schedule == "cosine"
    schedule: torch.optim.lr_scheduler.LRScheduler
    if per_step:
        steps_per_epoch = len(train_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, steps_per_epoch, run)
        )
    else:
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=run.lr_decay)
    rng = random.Random(run.seed)
    start = time.perf_counter()
    steps = correct = seen = 0
    out_of_time = False
    for epoch in range(run.epochs):
        order = list(range(len(train_batches)))
        rng.shuffle(order)
        correct = seen = 0
        for b in order:
            x, y = train_batches[b]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            if per_step:
                schedule.step()
            steps += 1
            correct += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
            if run.max_seconds is not None and time.perf_counter() - start > run.max_seconds:
                out_of_time = True
                break
        if not per_step:
            schedule.step()
        if log is not None:
            log(
                f"{kind} epoch {epoch + 1}: train accuracy {correct / max(seen, 1):.4f}, "
                f"next learning rate {optimizer.param_groups[0]['lr']:.3g}"
            )
        if out_of_time:
            break
    seconds = time.perf_counter() - start
    return ListOpsResult(
        model=kind,
        test_accuracy=_accuracy(model, test_batches),
        train_accuracy=correct / max(seen, 1),
        majority_rate=majority_rate(test),
        epochs_run=steps / len(train_batches),
        seconds=seconds,
    )


def run_listops(
    run: ListOpsRun,
    log: Callable[[str], None] | None = None,
    models: Sequence[str] = ("tree-lstm", "lstm"),
) -> list[ListOpsResult]:
    """The split of ``run``, then each of ``models`` trained on it."""
    train, test = listops_split(run)
    return [train_listops_model(kind, train, test, run, log) for kind in models]


def _add_options(parser: Any) -> None:
    parser.add_argument("--train", type=int, default=90_000, help="training trees")
    parser.add_argument("--test", type=int, default=10_000, help="test trees")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop each model then")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--lr-decay", type=float, default=1.0, help="multiply the learning rate by this per epoch"
    )
    parser.add_argument(
        "--lr-schedule",
        choices=["exponential", "cosine"],
        default="exponential",
        help="exponential: --lr-decay per epoch; cosine: per step, warm-up, hold, cosine to 0",
    )
    parser.add_argument("--warmup-epochs", type=float, default=0.0, help="cosine: linear warm-up")
    parser.add_argument(
        "--hold-epochs", type=float, default=0.0, help="cosine: the decay starts after these"
    )
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="on the representation the classifier reads"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.0, help="decoupled (AdamW) when > 0"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", choices=["tree-lstm", "lstm"], default=None)
    parser.add_argument("--run-dir", default=None, help="write config.json and report.md here")


def _run(args: Any) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = ListOpsRun(
        num_train=args.train,
        num_test=args.test,
        epochs=args.epochs,
        embedding_size=args.hidden,
        hidden_size=args.hidden,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        lr_decay=args.lr_decay,
        warmup_epochs=args.warmup_epochs,
        hold_epochs=args.hold_epochs,
        dropout=args.dropout,
        weight_decay=args.weight_decay,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    models = args.models or ["tree-lstm", "lstm"]
    results = run_listops(run, log=lambda line: print(line, flush=True), models=models)
    header = ("model", "test accuracy", "train accuracy", "majority", "epochs", "seconds", "paper")
    paper = {"tree-lstm": "98.7", "lstm": "71.5"}
    rows = [
        (
            r.model,
            f"{100 * r.test_accuracy:.1f}",
            f"{100 * r.train_accuracy:.1f}",
            f"{100 * r.majority_rate:.1f}",
            f"{r.epochs_run:.2f}",
            f"{r.seconds:.0f}",
            paper[r.model],
        )
        for r in results
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)
    if args.run_dir is not None:
        from rnnkit.tasks.rundir import RunDirectory

        out = RunDirectory(args.run_dir)
        out.write_config(vars(args) | {"models": models})
        out.write_report(
            "ListOps: Tree-LSTM on gold trees and LSTM on the flat tokens",
            rows,
            header,
            [
                f"Generated ListOps (Nangia & Bowman 2018 parameters), seed {args.seed}: "
                f"{args.train} training and {args.test} test expressions; accuracy in %.",
            ],
        )
    return 0


def add_commands(sub: Any) -> dict[str, Callable[[Any], int]]:
    """``rnnkit tree``: ListOps with a Tree-LSTM on gold trees and an LSTM on the tokens."""
    parser = sub.add_parser(
        "tree",
        help="ListOps: Tree-LSTM on gold trees vs LSTM on the flat tokens",
        description=__doc__.split("\n")[0],
    )
    _add_options(parser)
    return {"tree": _run}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m rnnkit.tasks.trees --help`` (the same as ``rnnkit tree``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _add_options(parser)
    _run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
