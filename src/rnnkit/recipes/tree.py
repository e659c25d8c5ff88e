"""``rnnkit tree``: a Tree-LSTM on trees against an LSTM on their tokens, on ListOps
(Nangia & Bowman 2018) generated from a seed or on the user's files of labelled trees.

Without ``--train``, the expressions are generated with the paper's parameters
(:mod:`rnnkit.data.listops`) from ``--seed``: the first ``--generated-train`` for training, the
next ``--generated-test`` for the test part, then ``--generated-validation`` for validation.
With ``--train FILE --test FILE [--valid FILE]`` (``--train`` is short for ``--train-file``),
the trees are read from files, one tree a line (:mod:`rnnkit.data.treefiles`): ListOps TSV
(``label TAB [MAX 2 [MIN 4 7 ] ]``), brackets with the label at the root as in sentiment
treebanks (``(3 (2 It) (4 (2 's) (3 good)))``), or ``label TAB tree``; ``--format`` names it or
it is told from the first line. Without ``--valid``, ``--valid-fraction`` of the training
file (drawn with ``--seed``) is the validation part. Classes are the training file's labels
(ListOps: the 10 values), the vocabulary its tokens (ListOps: the 15 tokens); a test label
that is no class is refused with its ``path:line:column``, a token not in the vocabulary reads
as ``<unk>``.

``--model tree-lstm`` embeds the tokens and runs a Tree-LSTM over the tree (N-ary with two
ordered children when no node of the training trees has more, Child-Sum otherwise),
classifying from the root's ``h``; ``--model lstm`` folds an LSTM over the leaves' tokens
(:mod:`rnnkit.layers.trees`). With ``--compare`` (the default) the other model is trained the
same way on the same split and reported beside the majority class. The paper: Tree-LSTM
98.7 %, LSTM 71.5 % test accuracy on 90k / 10k expressions (``--preset paper`` and
``--preset paper-lstm``). ``rnnkit predict RUN_DIR FILE`` reads files in the run's format,
labels optional.

Schedules: ``--schedule cosine`` is per step, a linear warm-up over ``--warmup-epochs``, the
peak rate until epoch ``max(warmup, hold)`` (``--hold-epochs``), then a cosine to 0 at the
last step (:func:`lr_factor`); ``--schedule constant`` with ``--epoch-decay F`` multiplies the
rate by F after every epoch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

    from rnnkit.data.treefiles import TreeLine

__all__ = ["RECIPE", "TreeConfig", "TreeRecipe", "lr_factor"]

PAPER = {"tree-lstm": 0.987, "lstm": 0.715}
OTHER = {"tree-lstm": "lstm", "lstm": "tree-lstm"}
FILE_FORMATS = ("listops", "brackets", "labelled")  # rnnkit.data.treefiles (imports torch)
_OLD_NAMES = {
    "train_size": "generated_train",
    "test_size": "generated_test",
    "validation_size": "generated_validation",
}


@dataclass(frozen=True)
class TreeConfig:
    """One ListOps run (see the module docstring)."""

    model: str = option(
        "tree-lstm",
        "tree-lstm: a Tree-LSTM on the trees; lstm: an LSTM on the leaves' tokens",
        choices=("tree-lstm", "lstm"),
    )
    compare: bool = option(True, "also train the other model on the same split, as a baseline")
    train_file: Path | None = option(
        None,
        "training trees, one a line (--train FILE); none: ListOps generated from --seed",
        metavar="FILE",
    )
    test: Path | None = option(None, "test trees (with --train)", metavar="FILE")
    valid: Path | None = option(
        None, "validation trees (with --train; none: cut from the training file)", metavar="FILE"
    )
    format: str = option(
        "auto",
        "the files' format (auto: told from the first line)",
        choices=("auto", *FILE_FORMATS),
    )
    valid_fraction: float = option(
        0.1,
        "without --valid, this share of the training file (drawn with --seed) validates",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    generated_train: int = option(6000, "generated training expressions", low=1)
    generated_test: int = option(1000, "generated test expressions", low=1)
    generated_validation: int = option(500, "generated validation expressions", low=1)
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
        if self.train_file is None:
            given = [n for n in ("test", "valid") if getattr(self, n) is not None]
            if given:
                raise ValueError(
                    f"{given[0]}: expected --train FILE with --{given[0]}, found no --train"
                )
        elif self.test is None:
            raise ValueError("test: expected --test FILE with --train FILE, found none")
        if self.valid_fraction >= 1.0:
            raise ValueError(
                f"valid_fraction: expected a number in (0, 1), found {self.valid_fraction!r}"
            )
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


_PAPER_SPLIT = {"generated_train": 90_000, "generated_test": 10_000, "generated_validation": 2000}


class TreeRecipe(Recipe[TreeConfig]):
    name = "tree"
    summary = "trees (ListOps or your files): a Tree-LSTM against an LSTM on the tokens"
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
        "20k": {"generated_train": 20_000, "generated_test": 2000, "epochs": 10},
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
        if config.train_file is not None:
            return _load_files(config)
        from rnnkit.data.listops import ListOpsConfig, generate_listops

        generator = ListOpsConfig(
            max_depth=config.max_depth, max_args=config.max_args, max_length=config.max_length
        )
        n, m = config.generated_train, config.generated_test
        examples = generate_listops(
            n + m + config.generated_validation, generator, seed=config.train.seed
        )
        train, test, validation = examples[:n], examples[n : n + m], examples[n + m :]
        train_examples = _examples(config, train)
        return RecipeData(
            train_examples,
            _examples(config, validation),
            _examples(config, test),
            info={"model": config.model, "majority_class": _majority(train_examples, 10)},
            description=f"ListOps generated from seed {config.train.seed} (Nangia & Bowman's "
            f"parameters{'' if generator == ListOpsConfig() else ', changed'}); {config.model}",
        )

    def build_model(self, config: TreeConfig, data: RecipeData) -> nn.Module:
        from rnnkit.layers.trees import SequenceClassifier, TreeClassifier

        info = data.info
        sizes: dict[str, Any] = {}
        if "classes" in info:
            sizes["num_classes"] = len(info["classes"])
        if "vocabulary" in info:
            sizes["vocab_size"] = len(info["vocabulary"])
        if config.model == "lstm":
            return SequenceClassifier(
                config.embedding_size, config.hidden_size, config.dropout, **sizes
            )
        return TreeClassifier(
            config.embedding_size,
            config.hidden_size,
            config.dropout,
            max_children=info.get("max_children", 2),
            **sizes,
        )

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
        if config.model == "lstm":
            kind = "an LSTM on the tokens"
        elif data.info.get("max_children", 2) is None:
            kind = "a Child-Sum Tree-LSTM"
        else:
            kind = "a binary (N-ary, n = 2) Tree-LSTM"
        if config.train_file is None:
            lines = [
                f"Model: {kind} on the gold trees. Test accuracy on {len(data.test)} generated "
                f"expressions. The paper (Nangia & Bowman 2018, 90k / 10k): Tree-LSTM "
                f"{PAPER['tree-lstm']:.1%}, LSTM {PAPER['lstm']:.1%}.",
            ]
        else:
            lines = [
                f"Model: {kind}. Test accuracy on the {len(data.test)} trees of {config.test} "
                f"({data.info['format']}); {len(data.info['classes'])} classes from "
                f"{config.train_file}; {data.info['validation']}.",
            ]
        lines.append("The majority class is the training part's most frequent label.")
        if config.compare:
            lines.append(
                f"The {OTHER[config.model]} row is a second model trained with the same settings "
                "on the same split."
            )
        return lines

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """The true label (when the tree has one), the predicted label and the tree's text
        (``expression`` for ListOps, ``tree`` otherwise)."""
        classes = info.get("classes", list(range(10)))
        column = "expression" if info.get("format", "listops") == "listops" else "tree"
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            row: dict[str, Any] = {}
            target = int(example["label"][0])
            if target >= 0:
                row["target"] = classes[target]
            row["prediction"] = classes[int(prediction.argmax())]
            row[column] = _text(example)
            rows.append(row)
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: TreeConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Files of trees in the run's format (ListOps TSV for a generated run), labels
        optional; a label that is no class of the run is refused with its place."""
        from rnnkit.data.treefiles import read_tree_file

        fmt = info.get("format", "listops")
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            lines = read_tree_file(path, fmt, labels_required=False)
            ids += [f"{path.name}:{line.line}" for line in lines]
            examples += _file_examples(config, info, path, lines)
        return ids, examples

    def config_from_run(
        self, values: Mapping[str, Any], data_info: Mapping[str, Any]
    ) -> TreeConfig:
        """The run's config; runs written before the file options name the generated sizes
        ``train_size``, ``test_size`` and ``validation_size``."""
        renamed = {_OLD_NAMES.get(k, k): v for k, v in values.items()}
        return super().config_from_run(renamed, data_info)


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


def _majority(examples: Sequence[Any], num_classes: int) -> int:
    """The most frequent class of ``examples`` (the lowest index on a tie)."""
    labels = [int(e["label"][0]) for e in examples]
    return max(range(num_classes), key=labels.count)


def _load_files(config: TreeConfig) -> RecipeData:
    """The three parts from ``--train``, ``--test`` and ``--valid`` (or a cut of ``--train``)."""
    from rnnkit.data.treefiles import (
        detect_format,
        parse_tree,
        read_tree_file,
        vocabulary,
    )

    train_path, test_path = config.train_file, config.test
    assert train_path is not None and test_path is not None  # checked by TreeConfig
    for flag, path in (("--train", train_path), ("--test", test_path), ("--valid", config.valid)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(
                f"{flag}: expected a file of trees, found no file {str(path)!r}"
            )
    fmt = detect_format(train_path) if config.format == "auto" else config.format
    train_lines = read_tree_file(train_path, fmt)
    test_lines = read_tree_file(test_path, fmt)
    inputs = [train_path, test_path]
    if config.valid is not None:
        valid_lines = read_tree_file(config.valid, fmt)
        inputs.append(config.valid)
        how = f"validation on {config.valid}"
        part = train_lines
    else:
        part, valid_lines = _cut(train_path, train_lines, config.valid_fraction, config.train.seed)
        how = (
            f"validation: {len(valid_lines)} trees ({config.valid_fraction:g} of the file) "
            f"drawn with seed {config.train.seed}"
        )
    info: dict[str, Any] = {"model": config.model, "format": fmt, "validation": how}
    if fmt == "listops":
        info["classes"] = list(range(10))
        info["max_children"] = 2
    else:
        from rnnkit.data.treefiles import class_list

        info["classes"] = class_list(t.label for t in train_lines if t.label is not None)
        trees = [parse_tree(line.text, fmt) for line in part]
        info["vocabulary"] = vocabulary(trees)
        widest = max(len(node.children) for tree in trees for node in tree.nodes())
        info["max_children"] = 2 if widest <= 2 else None
    train = _file_examples(config, info, train_path, part)
    validation = _file_examples(config, info, config.valid or train_path, valid_lines)
    test = _file_examples(config, info, test_path, test_lines)
    info["majority_class"] = _majority(train, len(info["classes"]))
    return RecipeData(
        train,
        validation,
        test,
        inputs=inputs,
        ids=[f"{test_path.name}:{line.line}" for line in test_lines],
        info=info,
        description=f"{fmt} trees: {len(part)} for training from {train_path}, "
        f"{len(test_lines)} for testing from {test_path}; {how}; {len(info['classes'])} "
        f"classes; {config.model}",
    )


def _cut(
    path: Path, lines: Sequence[TreeLine], fraction: float, seed: int
) -> tuple[list[TreeLine], list[TreeLine]]:
    """The training file's lines less a validation part of ``round(fraction * n)`` lines (at
    least one) drawn with ``seed``; both parts keep the file's order."""
    import random

    if len(lines) < 2:
        raise ValueError(
            f"{path}: expected at least 2 trees to cut a validation part from, found "
            f"{len(lines)}; give --valid FILE"
        )
    k = min(len(lines) - 1, max(1, round(fraction * len(lines))))
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:k])
    return (
        [line for i, line in enumerate(lines) if i not in chosen],
        [line for i, line in enumerate(lines) if i in chosen],
    )


def _file_examples(
    config: TreeConfig, info: Mapping[str, Any], path: Path, lines: Sequence[TreeLine]
) -> list[dict[str, Any]]:
    """The streams of each tree read from ``path`` in the run's format: its tree
    (``ListOpsExpression`` or ``ParsedTree``) or its leaves' token ids, and its class (-1
    when the line has no label). A label that is no class, or a node wider than the run's
    N-ary Tree-LSTM takes, is refused with its place."""
    import torch

    from rnnkit.data.errors import ReaderError
    from rnnkit.data.listops import ListOpsExpression, listops_token_ids
    from rnnkit.data.treefiles import ParsedTree, TokenSequence

    fmt = info.get("format", "listops")
    classes = info.get("classes", list(range(10)))
    index = {label: i for i, label in enumerate(classes)}
    vocab = {token: i for i, token in enumerate(info.get("vocabulary", ()))}
    limit = info.get("max_children", 2)
    out = []
    for line in lines:
        if line.label is not None and line.label not in index:
            shown = ", ".join(repr(c) for c in classes[:12]) + (
                ", ..." if len(classes) > 12 else ""
            )
            raise ReaderError(
                f"expected a label of the training file ({shown}), found {line.label!r}",
                path=path,
                line=line.line,
                column=line.label_column,
            )
        value: Any
        if fmt == "listops":
            make = ListOpsExpression if config.model == "tree-lstm" else listops_token_ids
            value = make(line.text)
        elif config.model == "lstm":
            value = TokenSequence.make(line.text, fmt, vocab)
        else:
            value = ParsedTree.make(line.text, fmt, vocab, index)
            widest = max(len(node.children) for node in value.tree.nodes())
            if limit is not None and widest > limit:
                raise ReaderError(
                    f"expected nodes of at most {limit} children (the run's Tree-LSTM is "
                    f"N-ary, n = {limit}, as its training trees), found one of {widest}",
                    path=path,
                    line=line.line,
                    column=1,
                )
        label = -1 if line.label is None else index[line.label]
        out.append({"expression": value, "label": torch.tensor([label])})
    return out


def _text(example: Mapping[str, Any]) -> str:
    from rnnkit.data.listops import LISTOPS_VOCAB

    value = example["expression"]
    if hasattr(value, "sequence"):
        return str(value.sequence)
    if hasattr(value, "text"):
        return str(value.text)
    tokens = list(LISTOPS_VOCAB)
    return " ".join(tokens[i] for i in value.tolist())


def _accuracy(examples: Sequence[Any], labels: Sequence[int]) -> float:
    right = sum(int(e["label"][0]) == y for e, y in zip(examples, labels, strict=True))
    return right / len(examples)


RECIPE = TreeRecipe()
