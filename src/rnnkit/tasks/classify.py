"""Classify whole sequences (many-to-one): series, images read row by row, sentences.

The recipe (:func:`classify`):

1. read the user's files into a :class:`ClassifyData` (``train`` / ``validation`` / ``test``
   examples, each ``"features"`` ``[T_i, D]`` float or ``[T_i]`` word ids, and ``"label"``
   ``[1]``): :func:`ts_data` (UEA/UCR ``.ts``, official train/test files, optionally each
   series z-normalised on its own, then every channel normalised with the training mean and
   deviation; a stratified seeded validation part carved from the training file, or none),
   :func:`idx_data` (the MNIST family, 28 steps of 28 pixels; the
   last ``validation`` training images are the validation part) and :func:`text_data` (a CSV of
   labelled sentences split by a group column, e.g. by movie, so no group is in two parts;
   the word vocabulary comes from the training part only);
2. train ``[Embedding >>] [Conv >> ...] Bidirectional(cell) [>> Bidirectional(cell)] >> Pool
   >> Dropout >> Dense`` with the Trainer (cross entropy, optionally label-smoothed; early
   stopping on the validation loss when there is a validation part, else a fixed number of
   epochs, optionally on a cosine learning-rate schedule), ``ensemble`` times with seeds
   ``seed, seed + 1, ...`` whose class probabilities are averaged;
3. report the test accuracy next to simple baselines: the majority class always; for series
   the 1-nearest-neighbour rule in Euclidean distance (:func:`nearest_neighbour_accuracy`);
   for sentences a bag-of-words logistic regression (:func:`bag_of_words_accuracy`).

:func:`ts_cross_validation` scores a configuration by stratified k-fold cross-validation on a
``.ts`` training file alone (the test file is not read), the way to choose settings.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> x = SequenceBatch.from_list([torch.tensor([[1.0], [3.0]]), torch.tensor([[-2.0]])])
>>> Pool()(x).tolist()  # [mean, max] of each sequence
[[2.0, 3.0], [-2.0, -2.0]]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnkit.data.errors import ReaderError
from rnnkit.data.text import Vocabulary
from rnnkit.layers import Layer
from rnnkit.saving import register_module
from rnnkit.sequences import SequenceBatch
from rnnkit.training.criteria import classification_error, smoothed_cross_entropy

__all__ = [
    "ClassifyConfig",
    "ClassifyData",
    "ClassifyResult",
    "Conv",
    "Ensemble",
    "Pool",
    "bag_of_words_accuracy",
    "classifier",
    "classify",
    "idx_data",
    "majority_accuracy",
    "nearest_neighbour_accuracy",
    "series_normalise",
    "smoothed_cross_entropy",
    "stratified_folds",
    "stratified_split",
    "text_data",
    "tokenize",
    "ts_cross_validation",
    "ts_data",
]

Example = dict[str, Tensor]
Format = Literal["ts", "idx", "text"]


class Pool(Layer):
    """The mean and the maximum of every feature over the steps of each sequence.

    Input: a SequenceBatch of ``[F]`` steps. Output: ``[B, 2F]`` (means, then maxima), caller
    order.
    """

    def forward(self, x: SequenceBatch) -> Tensor:
        if not isinstance(x, SequenceBatch):
            raise TypeError(f"Pool input: expected a SequenceBatch, found {type(x).__name__}")
        padded, lengths = x.to_padded()
        steps = torch.arange(padded.shape[1], device=padded.device)
        inside = (steps[None, :] < lengths.to(padded.device)[:, None]).unsqueeze(-1)
        mean = padded.sum(1) / lengths.to(padded)[:, None]
        peak = padded.masked_fill(~inside, -math.inf).amax(1)
        return torch.cat([mean, peak], dim=-1)


register_module(Pool, lambda m: {}, name="rnnkit.tasks.classify.Pool")


class Conv(Layer):
    """A 1-D convolution over the steps of each sequence, batch normalisation, ReLU.

    ``Conv1d(in_channels, out_channels, kernel_size, padding="same")`` sees each sequence on
    its own, with zeros before its first and after its last step (never another sequence's
    steps or the padding of a longer one), so the output has the input's lengths. Batch
    normalisation pools the real steps of the minibatch only. The convolution blocks of the
    FCN of Wang et al. (2017), the front end of LSTM-FCN (Karim et al. 2018).

    Input: a SequenceBatch of ``[in_channels]`` steps; output: the same layout, of
    ``[out_channels]`` steps.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        if not isinstance(x, SequenceBatch):
            raise TypeError(f"Conv input: expected a SequenceBatch, found {type(x).__name__}")
        padded = x.to_padded_time_major()  # [T, B, F], zeros after each sequence's end
        t, b = padded.shape[:2]
        k = self.kernel_size - 1  # "same": (k // 2) zeros before, the rest after, as torch's
        out = self.conv(nn.functional.pad(padded.permute(1, 2, 0), (k // 2, k - k // 2)))
        rows = out.permute(2, 0, 1).reshape(t * b, self.out_channels)
        steps = rows.index_select(0, x.padded_index)  # the real steps, packed as x
        return x.with_data(torch.relu(self.norm(steps)))


register_module(
    Conv,
    lambda m: {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": m.kernel_size,
    },
    name="rnnkit.tasks.classify.Conv",
)


class Ensemble(Layer):
    """Classifiers whose class probabilities are averaged.

    Output: ``[B, C]`` the logarithm of the members' mean softmax probabilities (so its
    ``argmax`` is the averaged vote and its softmax the averaged probabilities).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("members: expected at least one classifier, found none")
        self.members = nn.ModuleList(members)

    def forward(self, x: Any) -> Tensor:
        probabilities = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members])
        return probabilities.mean(0).log()


register_module(
    Ensemble, lambda m: {"members": list(m.members)}, name="rnnkit.tasks.classify.Ensemble"
)


# --------------------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class ClassifyData:
    """Examples ready for training, with what a reader of the results needs to know.

    Attributes:
        train, validation, test: examples ``{"features": [T_i, D] float or [T_i] int64,
            "label": int64 [1]}``.
        class_names: label ``i`` is ``class_names[i]``.
        split: the split, in words (written to the report).
        source: the files read.
        vocabulary: the word vocabulary for sentences (then ``features`` are ids), else None.
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    class_names: tuple[str, ...]
    split: str
    source: str
    vocabulary: Vocabulary | None = None

    @property
    def input_size(self) -> int:
        """D for series, the vocabulary size for sentences."""
        if self.vocabulary is not None:
            return len(self.vocabulary)
        return int(self.train[0]["features"].shape[1])


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """``(kept, held_out)``: about ``fraction`` of each class held out (at least one example
    of every class with two or more), chosen by ``random.Random(seed)``; ``fraction=0`` holds
    out nothing.

    >>> xs = [{"label": torch.tensor([i % 2])} for i in range(10)]
    >>> kept, held = stratified_split(xs, 0.2, seed=0)
    >>> len(kept), sorted(int(e["label"]) for e in held)
    (8, [0, 1])
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a number in [0, 1), found {fraction!r}")
    if fraction == 0:
        return list(examples), []
    by_class: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_class.setdefault(int(e["label"]), []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        n = round(fraction * len(indices)) if len(indices) > 1 else 0
        held.update(indices[: max(n, 1 if len(indices) > 1 else 0)])
    kept = [e for i, e in enumerate(examples) if i not in held]
    return kept, [e for i, e in enumerate(examples) if i in held]


def stratified_folds(examples: Sequence[Example], folds: int, seed: int) -> list[list[int]]:
    """``folds`` disjoint lists of example indices covering ``examples``: the indices of each
    class, shuffled by ``random.Random(seed)``, are dealt to the folds in turn (the class
    counts of any two folds differ by at most one).

    >>> xs = [{"label": torch.tensor([i % 3])} for i in range(9)]
    >>> [sorted(int(xs[i]["label"]) for i in f) for f in stratified_folds(xs, 3, seed=0)]
    [[0, 1, 2], [0, 1, 2], [0, 1, 2]]
    """
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an integer of at least 2, found {folds!r}")
    if folds > len(examples):
        raise ValueError(f"folds: expected at most {len(examples)} (the examples), found {folds}")
    by_class: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_class.setdefault(int(e["label"]), []).append(i)
    rng = random.Random(seed)
    out: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        for i in indices:
            out[dealt % folds].append(i)
            dealt += 1
    return [sorted(f) for f in out]


def series_normalise(examples: Sequence[Example]) -> list[Example]:
    """Every series z-normalised on its own: each channel minus its mean over the series'
    steps, divided by its (population) standard deviation there (a constant channel is only
    centred); missing values (NaN) are ignored and stay missing.

    >>> x = {"features": torch.tensor([[1.0], [3.0]]), "label": torch.tensor([0])}
    >>> series_normalise([x])[0]["features"].flatten().tolist()
    [-1.0, 1.0]
    """

    def scale(x: Tensor) -> Tensor:
        seen = ~x.isnan()
        count = seen.sum(0).clamp(min=1)
        mean = x.nan_to_num().sum(0) / count
        deviation = ((x - mean).nan_to_num().pow(2).sum(0) / count).sqrt()
        return (x - mean) / torch.where(deviation > 0, deviation, torch.ones_like(deviation))

    return [{**e, "features": scale(e["features"])} for e in examples]


def _normalise(
    train: list[Example], others: Sequence[list[Example]], path: Path
) -> list[list[Example]]:
    """Every channel scaled by the mean and deviation of the training steps; NaN becomes 0."""
    steps = torch.cat([e["features"] for e in train])
    if not torch.isfinite(steps).any(0).all():
        raise ValueError(f"{path}: a channel has no observed value in the training series")
    mean = torch.nanmean(steps, 0)
    deviation = (steps - mean).nan_to_num().pow(2).sum(0) / (~steps.isnan()).sum(0).clamp(min=1)
    deviation = deviation.sqrt()
    if bool((deviation == 0).all()):
        raise ValueError(
            f"{path}: every training series is constant ({mean.tolist()}); there is nothing "
            "to learn a class from"
        )
    deviation = torch.where(deviation > 0, deviation, torch.ones_like(deviation))

    def scale(e: Example) -> Example:
        return {**e, "features": ((e["features"] - mean) / deviation).nan_to_num(0.0)}

    return [[scale(e) for e in part] for part in (train, *others)]


def _read_ts_train(train_path: Path) -> tuple[list[Example], tuple[str, ...], Any]:
    """The labelled series of a ``.ts`` training file, labels renumbered to the classes that
    occur (in the file's order), and the parsed file."""
    from rnnkit.data.uea import read_ts

    train_ts = read_ts(train_path)
    if not train_ts.class_names:
        raise ValueError(f"{train_path}: expected '@classLabel true ...', found no class labels")
    seen = Counter(train_ts.class_names[int(e["label"])] for e in train_ts.examples)
    names = tuple(n for n in train_ts.class_names if n in seen)
    index = {n: i for i, n in enumerate(names)}
    train = [
        {"features": e["features"], "label": torch.tensor([index[n]])}
        for e, n in ((e, train_ts.class_names[int(e["label"])]) for e in train_ts.examples)
    ]
    return train, names, train_ts


def ts_data(
    train_path: str | Path,
    test_path: str | Path,
    *,
    validation: float = 0.2,
    seed: int = 0,
    series_norm: bool = False,
) -> ClassifyData:
    """A UEA/UCR problem on its official train/test files.

    With ``series_norm`` every series is first z-normalised on its own
    (:func:`series_normalise`). The validation part is a stratified ``validation`` fraction of
    the training file (seeded); ``validation=0`` holds out nothing (the validation part is
    empty). Every channel is then normalised with the mean and standard deviation of the steps
    of the training series left after that carve; a missing value (``?``) becomes the training
    mean (0 after scaling).

    Raises:
        ReaderError: a malformed file (see :func:`rnnkit.data.read_ts`).
        ValueError: files without class labels, a test label that never occurs in training,
            training series that are all constant.
    """
    from rnnkit.data.uea import read_ts

    train_path, test_path = Path(train_path), Path(test_path)
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation: expected a fraction in [0, 1), found {validation!r}")
    train, names, train_ts = _read_ts_train(train_path)
    test_ts = read_ts(test_path)
    if not test_ts.class_names:
        raise ValueError(f"{test_path}: expected '@classLabel true ...', found no class labels")
    if train_ts.num_dimensions != test_ts.num_dimensions:
        raise ValueError(
            f"{test_path}: expected {train_ts.num_dimensions} dimensions as in {train_path}, "
            f"found {test_ts.num_dimensions}"
        )
    index = {n: i for i, n in enumerate(names)}
    test = []
    for k, e in enumerate(test_ts.examples):
        name = test_ts.class_names[int(e["label"])]
        if name not in index:
            raise ValueError(
                f"{test_path}: series {k + 1} has the label {name!r}, which no training series "
                f"in {train_path} has (training labels: {list(names)}); a classifier cannot "
                "predict it"
            )
        test.append({"features": e["features"], "label": torch.tensor([index[name]])})
    if series_norm:
        train, test = series_normalise(train), series_normalise(test)
    kept, held = stratified_split(train, validation, seed)
    carve = (
        f"validation: a stratified {validation:.0%} of train (seed {seed}), {len(kept)}/{len(held)}"
        if held
        else "no validation part (the whole training file trains)"
    )
    kept, held, test = _normalise(kept, (held, test), train_path)
    return ClassifyData(
        kept,
        held,
        test,
        names,
        f"official train/test ({len(train)}/{len(test)}); "
        + ("each series z-normalised; " if series_norm else "")
        + carve,
        f"{train_path.name}, {test_path.name}",
    )


def ts_cross_validation(
    train_path: str | Path,
    config: ClassifyConfig,
    *,
    folds: int = 5,
    seed: int = 0,
    series_norm: bool = False,
    progress: bool = False,
) -> list[float]:
    """The accuracy of ``config`` on each of ``folds`` stratified folds of a ``.ts`` training
    file (:func:`stratified_folds`, ``seed``), trained on the other folds. Only the training
    file is read.

    Each fold is prepared as :func:`ts_data` prepares the official split: optionally every
    series z-normalised on its own, a stratified ``config.validation`` part of the training
    folds held out (none when 0), channels normalised with the statistics of the training
    folds only.
    """
    train_path = Path(train_path)
    examples, names, _ = _read_ts_train(train_path)
    if series_norm:
        examples = series_normalise(examples)
    scores = []
    for k, fold in enumerate(stratified_folds(examples, folds, seed)):
        inside = set(fold)
        rest = [e for i, e in enumerate(examples) if i not in inside]
        rest, held = stratified_split(rest, config.validation, config.seed)
        rest, held, tested = _normalise(rest, (held, [examples[i] for i in fold]), train_path)
        data = ClassifyData(rest, held, tested, names, f"fold {k + 1} of {folds}", train_path.name)
        scores.append(classify(data, config, progress=progress).accuracy)
    return scores


def idx_data(
    train_images: str | Path,
    train_labels: str | Path,
    test_images: str | Path,
    test_labels: str | Path,
    *,
    validation: int = 5000,
) -> ClassifyData:
    """Images of the MNIST family as sequences of rows (pixels in [0, 1]); the last
    ``validation`` training images are the validation part; the official test files test."""
    from rnnkit.data.idx import mnist_sequences

    train = mnist_sequences(train_images, train_labels)
    test = mnist_sequences(test_images, test_labels)
    if not 0 < validation < len(train):
        raise ValueError(
            f"validation: expected between 1 and {len(train) - 1} images, found {validation}"
        )
    labels = sorted({int(e["label"]) for e in train})
    if labels != list(range(len(labels))):
        raise ValueError(f"{train_labels}: expected labels 0..C-1, found {labels}")
    for k, e in enumerate(test):
        if int(e["label"]) not in labels:
            raise ValueError(
                f"{test_labels}: image {k} has the label {int(e['label'])}, which no training "
                f"image has (training labels: {labels})"
            )
    cut = len(train) - validation
    return ClassifyData(
        train[:cut],
        train[cut:],
        test,
        tuple(str(c) for c in labels),
        f"official train/test ({len(train)}/{len(test)}); validation: the last {validation} "
        "training images",
        f"{Path(train_images).name}, {Path(test_images).name}",
    )


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with a clitic such as ``'s``) and single punctuation marks.

    >>> tokenize("It's a dull, DULL film!")
    ["it's", 'a', 'dull', ',', 'dull', 'film', '!']
    """
    return _WORD.findall(text.lower())


def text_data(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "category",
    group_column: str = "movie_name",
    drop_labels: Sequence[str] = ("plot",),
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    min_freq: int = 2,
    seed: int = 0,
) -> ClassifyData:
    """Labelled sentences of a CSV file (``.csv`` or ``.csv.bz2``/``.gz``), split by groups.

    The distinct values of ``group_column`` are shuffled with ``random.Random(seed)`` and cut
    in the ``split`` proportions, so every group's sentences land in one part only (by movie,
    for the Rotten Tomatoes snippets: no film is seen in training and tested). Rows whose label
    is in ``drop_labels`` are skipped (the corpus's ``plot`` sentences). The vocabulary holds
    the training words seen at least ``min_freq`` times; other words map to ``<unk>``.
    """
    path = Path(path)
    rows = _read_csv(path, (text_column, label_column, group_column))
    rows = [(line, row) for line, row in rows if row[1] not in drop_labels]
    if not rows:
        raise ValueError(f"{path}: no rows left after dropping the labels {list(drop_labels)}")
    groups = sorted({row[2] for _, row in rows})
    random.Random(seed).shuffle(groups)
    a = round(split[0] * len(groups))
    b = a + round(split[1] * len(groups))
    if not 0 < a < b < len(groups):
        raise ValueError(
            f"split: {split} of {len(groups)} groups leaves a part empty; give more groups"
        )
    part_of = {g: (0 if i < a else 1 if i < b else 2) for i, g in enumerate(groups)}
    parts: list[list[tuple[list[str], str, int]]] = [[], [], []]
    for line, (text, label, group) in rows:
        words = tokenize(text)
        if words:
            parts[part_of[group]].append((words, label, line))
    names = tuple(sorted({label for _, label, _ in parts[0]}))
    if len(names) < 2:
        raise ValueError(f"{path}: expected at least two labels in training, found {names}")
    vocabulary = Vocabulary.build((w for w, _, _ in parts[0]), min_freq=min_freq)
    index = {n: i for i, n in enumerate(names)}
    examples: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for part, encoded in zip(parts, examples, strict=True):
        for words, label, line in part:
            if label not in index:
                raise ReaderError(
                    f"the label {label!r} occurs in no training row (training labels "
                    f"{list(names)}); drop it with drop_labels",
                    path=path,
                    line=line,
                )
            encoded.append(
                {"features": vocabulary.encode(words), "label": torch.tensor([index[label]])}
            )
    counts = ", ".join(str(len(p)) for p in examples)
    return ClassifyData(
        *examples,
        names,
        f"by {group_column}, {len(groups)} groups shuffled (seed {seed}) and cut "
        f"{'/'.join(f'{s:g}' for s in split)}: {counts} sentences",
        path.name,
        vocabulary,
    )


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, tuple[str, ...]]]:
    """``(line, (value of each column))`` for every row of a CSV with a header."""
    import bz2
    import gzip
    import io

    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ReaderError("expected a header row, found an empty file", path=path, line=1)
            missing = [c for c in columns if c not in header]
            if missing:
                raise ReaderError(
                    f"expected the columns {list(columns)}, found {header}", path=path, line=1
                )
            at = [header.index(c) for c in columns]
            rows = []
            for row in reader:
                if len(row) != len(header):
                    raise ReaderError(
                        f"expected {len(header)} fields, found {len(row)}",
                        path=path,
                        line=reader.line_num,
                    )
                rows.append((reader.line_num, tuple(row[i] for i in at)))
    except (UnicodeDecodeError, OSError, EOFError, io.UnsupportedOperation) as error:
        raise ReaderError(f"cannot read the file as CSV text: {error}", path=path) from error
    return rows


# --------------------------------------------------------------------------------- baselines


def majority_accuracy(train: Sequence[Example], test: Sequence[Example]) -> float:
    """Accuracy on ``test`` of always answering the most frequent training class.

    >>> tr = [{"label": torch.tensor([c])} for c in (0, 1, 1)]
    >>> majority_accuracy(tr, [{"label": torch.tensor([c])} for c in (1, 0, 1, 1)])
    0.75
    """
    top = Counter(int(e["label"]) for e in train).most_common(1)[0][0]
    return sum(int(e["label"]) == top for e in test) / len(test)


def _resample(x: Tensor, length: int) -> Tensor:
    """``[T, D]`` linearly interpolated to ``[length, D]``."""
    if x.shape[0] == length:
        return x
    return torch.nn.functional.interpolate(
        x.T[None], size=length, mode="linear", align_corners=True
    )[0].T


def nearest_neighbour_accuracy(train: Sequence[Example], test: Sequence[Example]) -> float:
    """The 1-nearest-neighbour rule in Euclidean distance over whole series.

    Series of different lengths are first resampled (linear interpolation) to the longest
    training length, so the distance compares the same relative times.

    >>> tr = [{"features": torch.tensor([[0.0], [0.0]]), "label": torch.tensor([0])},
    ...       {"features": torch.tensor([[5.0], [5.0]]), "label": torch.tensor([1])}]
    >>> te = [{"features": torch.tensor([[4.0], [6.0], [5.0]]), "label": torch.tensor([1])}]
    >>> nearest_neighbour_accuracy(tr, te)
    1.0
    """
    length = max(int(e["features"].shape[0]) for e in train)
    flat = [
        torch.stack([_resample(e["features"], length).flatten() for e in s]) for s in (train, test)
    ]
    nearest = torch.cdist(flat[1].double(), flat[0].double()).argmin(1)
    labels = torch.tensor([int(e["label"]) for e in train])
    truth = torch.tensor([int(e["label"]) for e in test])
    return float((labels[nearest] == truth).double().mean())


def bag_of_words_accuracy(
    data: ClassifyData, *, decays: Sequence[float] = (1e-5, 1e-4, 1e-3), seed: int = 0
) -> float:
    """Test accuracy of a logistic regression on word presence (the training vocabulary).

    One model per weight decay in ``decays`` (Adam, 30 epochs of minibatches of 64); the
    one with the best validation accuracy is tested.
    """
    if data.vocabulary is None:
        raise ValueError("data: expected sentences (a vocabulary), found series")
    size, classes = len(data.vocabulary), len(data.class_names)

    def tensors(part: list[Example]) -> tuple[Tensor, Tensor, Tensor]:
        ids = [e["features"].unique() for e in part]
        offsets = torch.tensor([0, *[len(i) for i in ids[:-1]]]).cumsum(0)
        return torch.cat(ids), offsets, torch.cat([e["label"] for e in part])

    def accuracy(
        model: nn.EmbeddingBag, bias: Tensor, part: tuple[Tensor, Tensor, Tensor]
    ) -> float:
        with torch.no_grad():
            scores = model(part[0], part[1]) + bias
        return float((scores.argmax(1) == part[2]).double().mean())

    train, val, test = (tensors(p) for p in (data.train, data.validation, data.test))
    words = [e["features"].unique() for e in data.train]
    best: tuple[float, float] = (-1.0, 0.0)
    for decay in decays:
        torch.manual_seed(seed)
        model, bias = nn.EmbeddingBag(size, classes, mode="sum"), torch.zeros(classes)
        nn.init.zeros_(model.weight)
        bias.requires_grad_(True)
        optimizer = torch.optim.Adam([*model.parameters(), bias], lr=0.01, weight_decay=decay)
        for _ in range(30):
            for rows in torch.randperm(len(words)).split(64):
                ids = [words[int(r)] for r in rows]
                offsets = torch.tensor([0, *[len(i) for i in ids[:-1]]]).cumsum(0)
                scores = model(torch.cat(ids), offsets) + bias
                loss = nn.functional.cross_entropy(scores, train[2][rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        val_accuracy = accuracy(model, bias, val)
        if val_accuracy > best[0]:
            best = (val_accuracy, accuracy(model, bias, test))
    return best[1]


# ------------------------------------------------------------------------------ model, training


@dataclass(frozen=True)
class ClassifyConfig:
    """Settings of :func:`classify`; written whole to the run's ``config.json``.

    ``minibatch_size`` counts sequences; ``embedding_dim`` is used for sentences only;
    ``validation`` is the fraction of a ``.ts`` training file held out (the other formats
    state their own validation part) and ``series_norm`` whether :func:`ts_data` z-normalises
    each series: both are settings of the data, recorded here for the run's ``config.json``.

    ``conv_channels`` puts a :class:`Conv` block per entry (its output channels, kernel sizes
    from ``conv_kernels`` in turn) before the recurrent layers; empty: none. ``schedule`` is
    ``"constant"`` or ``"cosine"`` (the learning rate falls from ``learning_rate`` to 0 over
    the ``epochs``, step by step). With a validation part training stops early on its loss
    (``patience``) and keeps the best epoch; without one it runs all ``epochs``.
    ``label_smoothing`` is the probability mass spread evenly over all classes in the target
    of the cross entropy. ``ensemble`` models are trained, with seeds ``seed``, ``seed + 1``,
    ..., and their class probabilities averaged.
    """

    cell: Literal["lstm", "gru"] = "gru"
    hidden_size: int = 64
    layers: int = 1
    embedding_dim: int = 100
    dropout: float = 0.2
    epochs: int = 150
    patience: int = 30
    minibatch_size: int = 16
    learning_rate: float = 0.003
    weight_decay: float = 0.0
    clip_norm: float = 5.0
    validation: float = 0.2
    seed: int = 0
    conv_channels: tuple[int, ...] = ()
    conv_kernels: tuple[int, ...] = (8, 5, 3)
    schedule: Literal["constant", "cosine"] = "constant"
    label_smoothing: float = 0.0
    ensemble: int = 1
    series_norm: bool = False

    def __post_init__(self) -> None:
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell: expected 'lstm' or 'gru', found {self.cell!r}")
        for name in ("hidden_size", "layers", "embedding_dim", "epochs", "patience", "ensemble"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), found {self.dropout!r}")
        if not 0.0 <= self.validation < 1.0:
            raise ValueError(
                f"validation: expected a fraction in [0, 1), found {self.validation!r}"
            )
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule: expected 'constant' or 'cosine', found {self.schedule!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing: expected a number in [0, 1), found {self.label_smoothing!r}"
            )
        for name in ("conv_channels", "conv_kernels"):
            values = tuple(getattr(self, name))
            if not all(isinstance(v, int) and v >= 1 for v in values):
                raise ValueError(f"{name}: expected positive integers, found {values!r}")
            object.__setattr__(self, name, values)
        if len(self.conv_kernels) < len(self.conv_channels):
            raise ValueError(
                f"conv_kernels: expected a kernel size for each of the {len(self.conv_channels)} "
                f"conv_channels, found {self.conv_kernels!r}"
            )

    @classmethod
    def for_format(cls, fmt: Format, **changes: Any) -> ClassifyConfig:
        """The defaults used for each input format, with ``changes`` applied."""
        return replace(_PRESETS[fmt], **changes)


_PRESETS: dict[str, ClassifyConfig] = {
    # chosen by 5-fold cross-validation on the four UEA training files (examples/classify.py
    # --only uea-cv, docs/classify.md); the ensemble of 5 was fixed beforehand
    "ts": ClassifyConfig(
        conv_channels=(64, 64, 64),
        validation=0.0,
        epochs=100,
        schedule="cosine",
        label_smoothing=0.1,
        ensemble=5,
    ),
    "idx": ClassifyConfig(
        hidden_size=128,
        epochs=15,
        patience=3,
        minibatch_size=128,
        learning_rate=0.002,
        dropout=0.1,
    ),
    "text": ClassifyConfig(
        cell="lstm",
        hidden_size=64,
        dropout=0.5,
        epochs=12,
        patience=3,
        minibatch_size=32,
        learning_rate=0.001,
        weight_decay=1e-5,
    ),
}


@dataclass(frozen=True)
class ClassifyResult:
    """Test accuracy next to the baselines' test accuracies, and how the run went."""

    accuracy: float
    baselines: dict[str, float]
    validation_accuracy: float
    epochs: int
    seconds: float
    sizes: tuple[int, int, int] = field(default=(0, 0, 0))

    def as_dict(self) -> dict[str, Any]:
        """Rounded figures for a JSON line."""
        return {
            "test_accuracy": round(self.accuracy, 4),
            **{f"{k}_accuracy": round(v, 4) for k, v in self.baselines.items()},
            "val_accuracy": None
            if math.isnan(self.validation_accuracy)
            else round(self.validation_accuracy, 4),
            "train/val/test": "/".join(str(n) for n in self.sizes),
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
        }


def classifier(
    config: ClassifyConfig, input_size: int, num_classes: int, *, words: bool = False
) -> nn.Module:
    """``[Embedding >> Dropout >>] [Conv x len(conv_channels) >>] Bidirectional(cell) x layers
    >> Pool >> Dropout >> Dense``.

    ``input_size`` is D for series and the vocabulary size when ``words``. Input: a
    SequenceBatch of ``[D]`` steps (or of int64 ids); output ``[B, num_classes]`` scores.

    >>> model = classifier(ClassifyConfig(hidden_size=4), 3, 2)
    >>> x = SequenceBatch.from_list([torch.randn(5, 3), torch.randn(2, 3)])
    >>> tuple(model(x).shape)
    (2, 2)
    """
    from rnnkit.cells import GRUCell, LSTMCell
    from rnnkit.layers import Dense, Dropout, Embedding, Sequential
    from rnnkit.recurrence import Bidirectional

    cell = LSTMCell if config.cell == "lstm" else GRUCell
    h = config.hidden_size
    layers: list[nn.Module] = []
    size = input_size
    if words:
        layers += [Embedding(input_size, config.embedding_dim), Dropout(config.dropout)]
        size = config.embedding_dim
    for channels, kernel in zip(config.conv_channels, config.conv_kernels, strict=False):
        layers.append(Conv(size, channels, kernel))
        size = channels
    for _ in range(config.layers):
        layers.append(Bidirectional(cell(size, h), cell(size, h)))
        size = 2 * h
    layers += [Pool(), Dropout(config.dropout), Dense(2 * size, num_classes)]
    return Sequential(layers)


def classify(
    data: ClassifyData,
    config: ClassifyConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> ClassifyResult:
    """Train on ``data.train`` (stopping early on ``data.validation`` when it is not empty),
    ``config.ensemble`` times; test the averaged model on ``data.test``.

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` +
    ``model.json`` (the :class:`Ensemble` when ``config.ensemble > 1``), ``vocabulary.json``
    (sentences), ``metrics.csv`` (with the learning rate ``lr`` at each epoch's end) and
    ``curves.png`` of the first model, and ``report.md``.
    """
    from rnnkit.tasks.rundir import RunDirectory

    words = data.vocabulary is not None
    run = RunDirectory(run_dir) if run_dir is not None else None
    members: list[nn.Module] = []
    epochs = 0
    started = time.perf_counter()
    for k in range(config.ensemble):
        seed = config.seed + k
        torch.manual_seed(seed)
        model = classifier(config, data.input_size, len(data.class_names), words=words)
        epochs += _fit(model, data, config, seed, run if k == 0 else None, progress)
        members.append(model.eval())
    seconds = time.perf_counter() - started
    model = members[0] if len(members) == 1 else Ensemble(members).eval()
    accuracy = _accuracy(model, data.test)
    val_accuracy = _accuracy(model, data.validation) if data.validation else math.nan
    baselines = {"majority": majority_accuracy(data.train, data.test)}
    if words:
        baselines["bag_of_words"] = bag_of_words_accuracy(data, seed=config.seed)
    else:
        baselines["1nn_euclidean"] = nearest_neighbour_accuracy(
            data.train + data.validation, data.test
        )
    result = ClassifyResult(
        accuracy,
        baselines,
        val_accuracy,
        epochs,
        seconds,
        (len(data.train), len(data.validation), len(data.test)),
    )
    if run is not None:
        _write_run(run, model, data, config, result)
    return result


def _fit(
    model: nn.Module,
    data: ClassifyData,
    config: ClassifyConfig,
    seed: int,
    run: Any,
    progress: bool,
) -> int:
    """Train ``model`` on ``data.train`` as ``config`` says; the number of epochs run."""
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.training import (
        Criterion,
        CSVLogger,
        EarlyStopping,
        LearningRateLogger,
        ProgressPrinter,
        Trainer,
        cross_entropy_with_softmax,
    )

    callbacks: list[Any] = []
    if progress:
        callbacks.append(ProgressPrinter(freq=None, num_epochs=config.epochs))
    if data.validation:
        callbacks.append(EarlyStopping(patience=config.patience, restore_best=True))
    if run is not None:
        callbacks += [LearningRateLogger(), CSVLogger(run.metrics_csv)]
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = None
    if config.schedule == "cosine":
        total = config.epochs * math.ceil(len(data.train) / config.minibatch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    loss = (
        smoothed_cross_entropy(config.label_smoothing)
        if config.label_smoothing > 0
        else cross_entropy_with_softmax
    )
    trainer = Trainer(
        model,
        Criterion(loss, classification_error),
        optimizer,
        lr_scheduler=scheduler,
        input_streams=("features",),
        target_stream="label",
        callbacks=callbacks,
        clip_norm=config.clip_norm,
    )

    def source(examples: list[Example], training: bool) -> MinibatchSource:
        return MinibatchSource(
            examples,
            config.minibatch_size if training else 256,
            unit="sequences",
            randomize=training,
            seed=seed,
            max_sweeps=None if training else 1,
        )

    validation = source(data.validation, False) if data.validation else None
    summary = trainer.fit(source(data.train, True), epochs=config.epochs, validation=validation)
    return len(summary.history)


def _accuracy(model: nn.Module, examples: list[Example]) -> float:
    """1 - the training metric ``classification_error`` over ``examples`` (eval mode, 256 at
    once); used instead of ``Trainer.evaluate`` because an ensemble is no trainer's model."""
    model.eval()
    wrong = 0.0
    with torch.no_grad():
        for i in range(0, len(examples), 256):
            part = examples[i : i + 256]
            scores = model(SequenceBatch.from_list([e["features"] for e in part]))
            wrong += float(classification_error(scores, torch.cat([e["label"] for e in part])))
    return 1.0 - wrong / len(examples)


def _write_run(
    run: Any, model: nn.Module, data: ClassifyData, config: ClassifyConfig, result: ClassifyResult
) -> None:
    run.write_config(
        {**asdict(config), "data": data.source, "split": data.split, "classes": data.class_names}
    )
    run.save_model(model)
    if data.vocabulary is not None:
        (run.path / "vocabulary.json").write_text(json.dumps(data.vocabulary.to_dict()) + "\n")
    run.plot_curves(title=f"classify {data.source}")
    rows = [("rnnkit", result.accuracy)] + [(k, v) for k, v in result.baselines.items()]
    run.write_report(
        f"Classification of {data.source}",
        rows,
        header=("classifier", "test accuracy"),
        notes=[
            f"Split: {data.split}.",
            f"Classes: {len(data.class_names)}; validation accuracy "
            f"{result.validation_accuracy:.4f}; {result.epochs} epochs "
            f"({config.ensemble} model(s)) in {result.seconds:.1f} s.",
            "1nn_euclidean: 1-nearest neighbour in Euclidean distance, training and validation "
            "series as references (resampled to one length); bag_of_words: logistic regression "
            "on word presence, weight decay chosen on the validation part.",
        ],
    )


# ---------------------------------------------------------------------------------- command


def _guess_format(paths: Sequence[Path]) -> Format:
    name = paths[0].name.lower()
    if name.endswith(".ts"):
        return "ts"
    if "ubyte" in name or name.endswith((".idx", ".idx.gz")):
        return "idx"
    if name.endswith((".csv", ".csv.bz2", ".csv.gz")):
        return "text"
    raise ValueError(
        f"{paths[0]}: cannot tell the format from the name; give --format ts, idx or text"
    )


_FILES = {
    "ts": "TRAIN.ts TEST.ts",
    "idx": "TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS",
    "text": "one CSV file (split by --group-column)",
}


def load_data(fmt: Format, paths: Sequence[Path], args: Any) -> ClassifyData:
    """The :class:`ClassifyData` of the command's files (see ``rnnkit classify --help``)."""
    wanted = len(_FILES[fmt].split()) if fmt != "text" else 1
    if len(paths) != wanted:
        raise ValueError(f"files: --format {fmt} expects {_FILES[fmt]}, found {len(paths)} file(s)")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"files: no such file: {str(path)!r}")
    if fmt == "ts":
        return ts_data(
            paths[0],
            paths[1],
            validation=args.validation,
            seed=args.seed,
            series_norm=args.series_norm,
        )
    if fmt == "idx":
        return idx_data(*paths, validation=args.validation_images)
    return text_data(
        paths[0],
        text_column=args.text_column,
        label_column=args.label_column,
        group_column=args.group_column,
        drop_labels=tuple(args.drop_label),
        seed=args.seed,
    )


def _int_list(text: str) -> tuple[int, ...]:
    """``"64,64"`` -> ``(64, 64)``; ``"0"`` or ``""`` -> ``()``."""
    values = tuple(int(v) for v in text.split(",") if v.strip())
    return () if values == (0,) else values


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit classify FILES...``: one label per sequence (series, images, sentences)."""
    p = sub.add_parser(
        "classify",
        help="classify whole sequences: .ts series, IDX images as rows, CSV sentences",
        description="Train a bidirectional recurrent classifier and report its test accuracy "
        "next to baselines. Files: --format ts: TRAIN.ts TEST.ts; --format idx: TRAIN_IMAGES "
        "TRAIN_LABELS TEST_IMAGES TEST_LABELS; --format text: one CSV of labelled sentences, "
        "split 0.8/0.1/0.1 by --group-column. The format is guessed from the first name.",
    )
    p.add_argument("files", nargs="+", type=Path, help="the data files (see above)")
    p.add_argument("--format", choices=("ts", "idx", "text"), default=None)
    p.add_argument("--cell", choices=("lstm", "gru"), default=None)
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--validation",
        type=float,
        default=None,
        help="ts: fraction of train held out for early stopping (0: none, train all epochs; "
        "default: the ts preset's)",
    )
    p.add_argument(
        "--series-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ts: z-normalise each series on its own before the channel normalisation "
        "(default: the ts preset's)",
    )
    p.add_argument(
        "--conv-channels",
        type=_int_list,
        default=None,
        help="output channels of the convolution blocks before the recurrent layers, "
        "comma-separated (kernel sizes 8, 5, 3, ...); 0: no convolution",
    )
    p.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default=None,
        help="learning rate: constant, or cosine from the start value to 0 over the epochs",
    )
    p.add_argument(
        "--learning-rate", type=float, default=None, help="Adam's (the start, with cosine)"
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help="probability mass of the target spread evenly over the classes (0: none)",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        default=None,
        help="models trained with seeds SEED, SEED+1, ...; their probabilities are averaged",
    )
    p.add_argument(
        "--cv",
        type=int,
        default=None,
        metavar="K",
        help="ts: instead of testing, print the accuracy of stratified K-fold "
        "cross-validation on the training file (the test file is not read)",
    )
    p.add_argument(
        "--validation-images", type=int, default=5000, help="idx: last training images held out"
    )
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="category")
    p.add_argument("--group-column", default="movie_name")
    p.add_argument(
        "--drop-label", action="append", default=None, help="text: a label to skip (repeatable)"
    )
    p.add_argument("--run-dir", type=Path, default=Path("runs") / "classify")

    def run(args: Any) -> int:
        if args.drop_label is None:
            args.drop_label = ["plot"]
        fmt: Format = args.format or _guess_format(args.files)
        preset = ClassifyConfig.for_format(fmt)
        for name in ("validation", "series_norm"):
            if getattr(args, name) is None:
                setattr(args, name, 0.2 if fmt != "ts" else getattr(preset, name))
        names = (
            *("cell", "hidden_size", "layers", "epochs", "conv_channels", "schedule"),
            *("learning_rate", "label_smoothing", "ensemble", "validation", "series_norm"),
        )
        changes = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
        config = replace(preset, seed=args.seed, **changes)
        if args.cv is not None:
            if fmt != "ts":
                raise ValueError("--cv: cross-validation is for --format ts only")
            if not args.files[0].is_file():
                raise ValueError(f"files: no such file: {str(args.files[0])!r}")
            scores = ts_cross_validation(
                args.files[0], config, folds=args.cv, seed=args.seed, series_norm=args.series_norm
            )
            mean = sum(scores) / len(scores)
            print(f"{args.cv}-fold cross-validation accuracy {mean:.4f} on {args.files[0].name}")
            print(
                json.dumps(
                    {
                        "data": args.files[0].name,
                        "cv_folds": [round(a, 4) for a in scores],
                        "cv_accuracy": round(mean, 4),
                    }
                )
            )
            return 0
        data = load_data(fmt, args.files, args)
        print(f"{data.source}: {len(data.class_names)} classes; split: {data.split}")
        result = classify(data, config, args.run_dir)
        baselines = ", ".join(f"{k} {v:.4f}" for k, v in result.baselines.items())
        print(f"test accuracy {result.accuracy:.4f} ({baselines})")
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"data": data.source, "split": data.split, **result.as_dict()}))
        return 0

    return {"classify": run}
