"""``rnnkit tree``: ListOps (Nangia & Bowman 2018), a Tree-LSTM on the gold trees against an
LSTM on the flat tokens.

The expressions are generated with the paper's parameters (:mod:`rnnkit.data.listops`) from
``--seed``: the first ``--train-size`` for training, the next ``--test-size`` for the test
part, then ``--validation-size`` for validation (the test part of a size is the same whatever
the validation part). ``--model tree-lstm`` embeds the 15 tokens and runs a binary Tree-LSTM
over the left-branching gold tree, classifying from the root's ``h``; ``--model lstm`` folds an
LSTM over the tokens (:mod:`rnnkit.layers.trees`). With ``--compare`` (the default) the other
model is trained the same way on the same split and reported beside the majority class.
The paper: Tree-LSTM 98.7 %, LSTM 71.5 % test accuracy on 90k / 10k expressions
(``--preset paper`` and ``--preset paper-lstm``). ``rnnkit predict`` reads ListOps TSV files
(``label TAB expression``).

Schedules: ``--schedule cosine`` is per step, a linear warm-up over ``--warmup-epochs``, the
peak rate until epoch ``max(warmup, hold)`` (``--hold-epochs``), then a cosine to 0 at the
last step (:func:`lr_factor`); ``--schedule constant`` with ``--epoch-decay F`` multiplies the
rate by F after every epoch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from torch import nn

__all__ = ["RECIPE", "TreeConfig", "TreeRecipe", "lr_factor"]

PAPER = {"tree-lstm": 0.987, "lstm": 0.715}
OTHER = {"tree-lstm": "lstm", "lstm": "tree-lstm"}


@dataclass(frozen=True)
class TreeConfig:
    """One ListOps run (see the module docstring)."""

    model: str = option(
        "tree-lstm",
        "tree-lstm: a Tree-LSTM on the gold trees; lstm: an LSTM on the flat tokens",
        choices=("tree-lstm", "lstm"),
    )
    compare: bool = option(True, "also train the other model on the same split, as a baseline")
    train_size: int = option(6000, "training expressions (--train)", low=1)
    test_size: int = option(1000, "test expressions (--test)", low=1)
    validation_size: int = option(500, "validation expressions", low=1)
    max_depth: int = option(20, "generator: a digit is forced at this depth", low=1)
    max_args: int = option(5, "generator: an operator takes 2 to this many arguments", low=2)
    max_length: int = option(100, "generator: longest expression kept, in tokens", low=2)
    embedding_size: int = option(128, "token embedding size", low=1)
    hidden_size: int = option(128, "hidden units of the Tree-LSTM or the LSTM", low=1)
    dropout: float = option(0.0, "dropout on the state the classifier reads", low=0.0, high=1.0)
    warmup_epochs: float = option(0.0, "cosine schedule: epochs of linear warm-up", low=0.0)
    hold_epochs: float = option(0.0, "cosine schedule: the decay starts after these", low=0.0)
    epoch_decay: float = option(
        1.0,
        "constant schedule: multiply the rate by this after every epoch",
        low=0.0,
        low_open=True,
    )
    train: TrainSettings = option(
        TrainSettings(epochs=6, minibatch_size=128, learning_rate=1e-3, clip_norm=5.0, threads=1),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.dropout >= 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), found {self.dropout!r}")
        schedule = self.train.schedule
        if schedule != "cosine" and (self.warmup_epochs > 0 or self.hold_epochs > 0):
            raise ValueError(
                f"warmup_epochs, hold_epochs: expected 0 unless --schedule cosine, found "
                f"{self.warmup_epochs}, {self.hold_epochs} with --schedule {schedule}"
            )
        if schedule != "constant" and self.epoch_decay != 1.0:
            raise ValueError(
                f"epoch_decay: expected 1 unless --schedule constant, found {self.epoch_decay} "
                f"with --schedule {schedule}"
            )


def lr_factor(
    step: int, steps_per_epoch: int, epochs: float, warmup_epochs: float, hold_epochs: float
) -> float:
    """The cosine schedule's multiplier of the learning rate for optimizer step ``step``.

    With ``t = step / steps_per_epoch`` (epochs done) and ``d = max(warmup, hold)``: linear
    warm-up ``(step + 1) / (warmup * steps_per_epoch)`` while below 1, then 1 until ``t = d``,
    then ``(1 + cos(pi (t - d) / (epochs - d))) / 2``, which reaches 0 at ``t = epochs``.

    >>> [lr_factor(s, 10, 4, 0, 2) for s in (0, 19, 20, 30, 40)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    t = step / steps_per_epoch
    if warmup_epochs > 0:
        warm = (step + 1) / (warmup_epochs * steps_per_epoch)
        if warm < 1.0:
            return warm
    start = max(warmup_epochs, hold_epochs)
    if t <= start or epochs <= start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - start) / (epochs - start))))


_PAPER_SPLIT = {"train_size": 90_000, "test_size": 10_000, "validation_size": 2000}


class TreeRecipe(Recipe[TreeConfig]):
    name = "tree"
    summary = "ListOps: a Tree-LSTM on gold trees against an LSTM on the tokens"
    description = __doc__ or ""
    config = TreeConfig
    presets = {
        "paper": {
            **_PAPER_SPLIT,
            "compare": False,
            "epochs": 12,
            "schedule": "cosine",
            "hold_epochs": 6.0,
            "weight_decay": 0.1,
        },
        "paper-adam": {**_PAPER_SPLIT, "compare": False, "epochs": 12},
        "paper-lstm": {**_PAPER_SPLIT, "compare": False, "model": "lstm", "epochs": 10},
        "20k": {"train_size": 20_000, "test_size": 2000, "epochs": 10},
    }
    preset_help = {
        "paper": "90k / 10k, Tree-LSTM, 12 epochs, cosine held 6, AdamW 0.1 (test accuracy 0.988)",
        "paper-adam": "the same at a constant rate with Adam (0.979)",
        "paper-lstm": "the LSTM on 90k / 10k, 10 epochs (0.618)",
        "20k": "both models on 20k / 2k, 10 epochs",
    }
    input_streams = ("expression",)
    target_stream = "label"
    metric = Metric("error rate", percent=True)

    def load_data(self, config: TreeConfig) -> RecipeData:
        from rnnkit.data.listops import ListOpsConfig, generate_listops

        generator = ListOpsConfig(
            max_depth=config.max_depth, max_args=config.max_args, max_length=config.max_length
        )
        n, m = config.train_size, config.test_size
        examples = generate_listops(
            n + m + config.validation_size, generator, seed=config.train.seed
        )
        train, test, validation = examples[:n], examples[n : n + m], examples[n + m :]
        labels = [ex.label for ex in train]
        majority = max(range(10), key=labels.count)
        return RecipeData(
            _examples(config, train),
            _examples(config, validation),
            _examples(config, test),
            info={"model": config.model, "majority_class": majority},
            description=f"ListOps generated from seed {config.train.seed} (Nangia & Bowman's "
            f"parameters{'' if generator == ListOpsConfig() else ', changed'}); {config.model}",
        )

    def build_model(self, config: TreeConfig, data: RecipeData) -> nn.Module:
        from rnnkit.layers.trees import SequenceClassifier, TreeClassifier

        kind = TreeClassifier if config.model == "tree-lstm" else SequenceClassifier
        return kind(config.embedding_size, config.hidden_size, config.dropout)

    def criterion(self, config: TreeConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, classification_error, cross_entropy_with_softmax

        return Criterion(cross_entropy_with_softmax, classification_error)

    def scheduler(self, config: TreeConfig, optimizer: Any, steps: int) -> Any:
        import torch

        epochs = config.train.member_epochs
        per_epoch = max(1, steps // epochs)
        if config.train.schedule == "cosine":
            warm, hold = config.warmup_epochs, config.hold_epochs
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda k: lr_factor(k, per_epoch, epochs, warm, hold)
            )
        if config.train.schedule == "constant" and config.epoch_decay != 1.0:
            decay = config.epoch_decay
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: decay ** (k // per_epoch))
        return super().scheduler(config, optimizer, steps)

    def score(
        self, config: TreeConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        return {"test_accuracy": _accuracy(data.test, [int(p.argmax()) for p in predictions])}

    def baselines(self, config: TreeConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        majority = int(data.info["majority_class"])
        out = {
            "majority class": {"test_accuracy": _accuracy(data.test, [majority] * len(data.test))}
        }
        if config.compare:
            out[OTHER[config.model]] = self._train_other(config)
        return out

    def _train_other(self, config: TreeConfig) -> dict[str, float]:
        """The other model, trained through the harness on the same split (its run directory
        is temporary: ``rnnkit tree --model OTHER --no-compare`` keeps one)."""
        import tempfile

        from rnnkit.recipes.harness import run_recipe

        other = dataclasses.replace(config, model=OTHER[config.model], compare=False)
        print(f"baseline: {other.model} on the same split", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_recipe(self, other, tmp, log=_indented)
        return {"test_accuracy": float(result.figures["test_accuracy"])}

    def notes(self, config: TreeConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        kind = "a Tree-LSTM on the gold trees" if config.model == "tree-lstm" else "an LSTM"
        lines = [
            f"Model: {kind}. Test accuracy on {len(data.test)} generated expressions. The "
            f"paper (Nangia & Bowman 2018, 90k / 10k): Tree-LSTM {PAPER['tree-lstm']:.1%}, LSTM "
            f"{PAPER['lstm']:.1%}.",
            "The majority class is the training part's most frequent value.",
        ]
        if config.compare:
            lines.append(
                f"The {OTHER[config.model]} row is a second model trained with the same settings "
                "on the same split."
            )
        return lines

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        return [
            {"target": int(e["label"][0]), "prediction": int(p.argmax()), "expression": _text(e)}
            for e, p in zip(examples, predictions, strict=True)
        ]

    def read_inputs(
        self, info: Mapping[str, Any], config: TreeConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """ListOps TSV files, ``label TAB expression`` a line."""
        from rnnkit.data.listops import read_listops_tsv

        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            part = read_listops_tsv(path)
            ids += [f"{path.name}:{i + 1}" for i in range(len(part))]
            examples += _examples(config, part)
        return ids, examples


def _indented(line: str) -> None:
    if not line.startswith("run directory:"):  # the baseline's is temporary
        print(f"  {line}", flush=True)


def _examples(config: TreeConfig, part: Sequence[Any]) -> list[dict[str, Any]]:
    """The streams of each expression: its gold tree (``ListOpsExpression``, collated into a
    TreeBatch) or its token ids, and its value."""
    import torch

    from rnnkit.data.listops import ListOpsExpression, listops_token_ids

    make = ListOpsExpression if config.model == "tree-lstm" else listops_token_ids
    return [{"expression": make(ex.sequence), "label": torch.tensor([ex.label])} for ex in part]


def _text(example: Mapping[str, Any]) -> str:
    from rnnkit.data.listops import LISTOPS_VOCAB

    value = example["expression"]
    if hasattr(value, "sequence"):
        return str(value.sequence)
    tokens = list(LISTOPS_VOCAB)
    return " ".join(tokens[i] for i in value.tolist())


def _accuracy(examples: Sequence[Any], labels: Sequence[int]) -> float:
    right = sum(int(e["label"][0]) == y for e, y in zip(examples, labels, strict=True))
    return right / len(examples)


RECIPE = TreeRecipe()
