"""Data for classifying whole sequences: series (UEA/UCR ``.ts``), images read row by row (IDX,
the MNIST family) and sentences (a CSV of labelled texts), with their splits and baselines.

Every builder returns a :class:`ClassifyData`: ``train`` / ``validation`` / ``test`` examples,
each ``{"features": [T_i, D] float or [T_i] int64 word ids, "label": int64 [1]}``, the class
names, the split in words, and what prediction on new files needs (:meth:`ClassifyData.info`):

* :func:`ts_data`: the official train/test files; optionally every series z-normalised on its
  own (:func:`series_normalise`); a stratified seeded validation part carved from the
  training file (:func:`stratified_split`), or none; every channel then scaled with the
  training mean and deviation (:func:`channel_scale`). :func:`ts_fold_data` prepares one fold
  of a cross-validation on a training file alone (:func:`stratified_folds`).
* :func:`idx_data`: 28 steps of 28 pixels; the last ``validation`` training images validate.
* :func:`text_data`: sentences split by a group column (e.g. by movie, so no movie is in two
  parts); the word vocabulary comes from the training part only (:func:`tokenize`).

:func:`ts_series`, :func:`idx_images` and :func:`text_sentences` read new files the same way
for prediction. Baselines on the same test part: :func:`majority_accuracy`,
:func:`nearest_neighbour_accuracy` (series and images), :func:`bag_of_words_accuracy`
(sentences).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.data.errors import ReaderError
from rnnkit.data.text import Vocabulary

__all__ = [
    "ClassifyData",
    "bag_of_words_accuracy",
    "channel_scale",
    "idx_data",
    "idx_images",
    "majority_accuracy",
    "nearest_neighbour_accuracy",
    "read_labelled_ts",
    "read_new",
    "scale_series",
    "series_normalise",
    "stratified_folds",
    "stratified_split",
    "text_data",
    "text_sentences",
    "tokenize",
    "ts_data",
    "ts_fold_data",
    "ts_series",
]

Example = dict[str, Tensor]


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
        test_ids: one identifier per test example (``file:series``, ``file:line``, ...).
        scale: series: the training ``(mean, deviation)`` of every channel, else None.
        series_norm: series: whether each series was z-normalised on its own first.
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    class_names: tuple[str, ...]
    split: str
    source: str
    vocabulary: Vocabulary | None = None
    test_ids: list[str] | None = None
    scale: tuple[list[float], list[float]] | None = None
    series_norm: bool = False

    @property
    def input_size(self) -> int:
        """D for series, the vocabulary size for sentences."""
        if self.vocabulary is not None:
            return len(self.vocabulary)
        return int(self.train[0]["features"].shape[1])

    def info(self) -> dict[str, Any]:
        """JSON-ready facts that reading new files like these needs."""
        out: dict[str, Any] = {"classes": list(self.class_names), "input_size": self.input_size}
        if self.vocabulary is not None:
            out["vocabulary"] = self.vocabulary.to_dict()
        if self.scale is not None:
            out["mean"], out["deviation"] = self.scale
            out["series_norm"] = self.series_norm
        return out


# ------------------------------------------------------------------------------------ splits


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


# ------------------------------------------------------------------------------------ series


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


def channel_scale(train: Sequence[Example], path: Path | str) -> tuple[list[float], list[float]]:
    """``(mean, deviation)`` of every channel over the observed steps of ``train`` (a constant
    channel's deviation is 1); ``path`` names the file in errors.

    Raises:
        ValueError: a channel without any observed value; training series all constant.
    """
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
    return mean.tolist(), deviation.tolist()


def _scaled(examples: Sequence[Example], scale: tuple[list[float], list[float]]) -> list[Example]:
    """Every channel minus the mean, over the deviation; a missing value (NaN) becomes 0."""
    mean, deviation = torch.tensor(scale[0]), torch.tensor(scale[1])
    return [
        {**e, "features": ((e["features"] - mean) / deviation).nan_to_num(0.0)} for e in examples
    ]


def read_labelled_ts(path: Path | str) -> tuple[list[Example], tuple[str, ...], int]:
    """The labelled series of a ``.ts`` training file, labels renumbered to the classes that
    occur (in the file's order), and the number of channels.

    Raises:
        ReaderError: a malformed file, or one without ``@classLabel true ...``.
    """
    from rnnkit.data.uea import read_ts

    data = read_ts(path)
    if not data.class_names:
        raise ReaderError(
            "expected '@classLabel true ...' in the header before @data, found no class labels",
            path=path,
            line=data.data_line,
            column=1,
        )
    seen = Counter(data.class_names[int(e["label"])] for e in data.examples)
    names = tuple(n for n in data.class_names if n in seen)
    index = {n: i for i, n in enumerate(names)}
    out = [
        {"features": e["features"], "label": torch.tensor([index[n]])}
        for e, n in ((e, data.class_names[int(e["label"])]) for e in data.examples)
    ]
    return out, names, data.num_dimensions


def ts_series(
    path: Path | str, class_names: Sequence[str], *, dimensions: int | None = None
) -> list[Example]:
    """The series of a ``.ts`` file, labelled with the index into ``class_names`` when the file
    has class labels (every label must be one of them), unlabelled otherwise.

    Raises:
        ReaderError: a malformed file, a label outside ``class_names``, a number of channels
            other than ``dimensions``.
    """
    from rnnkit.data.uea import read_ts

    data = read_ts(path)
    if dimensions is not None and data.num_dimensions != dimensions:
        raise ReaderError(
            f"expected {dimensions} dimensions as in training, found {data.num_dimensions}",
            path=path,
            line=data.lines[0] if data.lines else data.data_line,
            column=1,
        )
    index = {n: i for i, n in enumerate(class_names)}
    out = []
    for k, e in enumerate(data.examples):
        if "label" not in e:
            out.append({"features": e["features"]})
            continue
        name = data.class_names[int(e["label"])]
        if name not in index:
            raise ReaderError(
                f"series {k + 1} has the label {name!r}, which no training series has "
                f"(expected one of the training labels {list(class_names)}); a classifier "
                "cannot predict it",
                path=path,
                line=data.lines[k],
                column=1,
            )
        out.append({"features": e["features"], "label": torch.tensor([index[name]])})
    return out


def scale_series(
    examples: Sequence[Example], scale: tuple[list[float], list[float]], series_norm: bool
) -> list[Example]:
    """New series prepared as :func:`ts_data` prepared the training ones."""
    return _scaled(series_normalise(examples) if series_norm else examples, scale)


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
        ReaderError: a malformed file (see :func:`rnnkit.data.read_ts`), files without class
            labels, a test label that never occurs in training.
        ValueError: training series that are all constant.
    """
    train_path, test_path = Path(train_path), Path(test_path)
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation: expected a fraction in [0, 1), found {validation!r}")
    train, names, dimensions = read_labelled_ts(train_path)
    test = ts_series(test_path, names, dimensions=dimensions)
    if any("label" not in e for e in test):
        raise ReaderError(
            "expected '@classLabel true ...' in the header before @data, found no class labels",
            path=test_path,
            line=1,
            column=1,
        )
    if series_norm:
        train, test = series_normalise(train), series_normalise(test)
    kept, held = stratified_split(train, validation, seed)
    carve = (
        f"validation: a stratified {validation:.0%} of train (seed {seed}), {len(kept)}/{len(held)}"
        if held
        else "no validation part (the whole training file trains)"
    )
    scale = channel_scale(kept, train_path)
    return ClassifyData(
        _scaled(kept, scale),
        _scaled(held, scale),
        _scaled(test, scale),
        names,
        f"official train/test ({len(train)}/{len(test)}); "
        + ("each series z-normalised; " if series_norm else "")
        + carve,
        f"{train_path.name}, {test_path.name}",
        test_ids=[f"{test_path.name}:{k + 1}" for k in range(len(test))],
        scale=scale,
        series_norm=series_norm,
    )


def ts_fold_data(
    train_path: str | Path,
    fold: int,
    folds: int,
    *,
    seed: int = 0,
    validation: float = 0.0,
    series_norm: bool = False,
) -> ClassifyData:
    """Fold ``fold`` (1-based) of ``folds`` stratified folds of a ``.ts`` training file
    (:func:`stratified_folds` with ``seed``) as the test part, the other folds training; only
    the training file is read. Prepared as :func:`ts_data` prepares the official split:
    optionally every series z-normalised, a stratified ``validation`` part of the training
    folds held out (none when 0), channels scaled with the training folds' statistics."""
    train_path = Path(train_path)
    if not 1 <= fold <= folds:
        raise ValueError(f"fold: expected an integer in [1, {folds}], found {fold}")
    examples, names, _ = read_labelled_ts(train_path)
    if series_norm:
        examples = series_normalise(examples)
    inside = stratified_folds(examples, folds, seed)[fold - 1]
    rest = [e for i, e in enumerate(examples) if i not in set(inside)]
    rest, held = stratified_split(rest, validation, seed)
    scale = channel_scale(rest, train_path)
    return ClassifyData(
        _scaled(rest, scale),
        _scaled(held, scale),
        _scaled([examples[i] for i in inside], scale),
        names,
        f"fold {fold} of {folds} of {train_path.name} (folds seed {seed})",
        train_path.name,
        test_ids=[f"{train_path.name}:{i + 1}" for i in inside],
        scale=scale,
        series_norm=series_norm,
    )


# ------------------------------------------------------------------------------------ images


def idx_images(images: str | Path, labels: str | Path | None = None) -> list[Example]:
    """Images of an IDX file as 28 steps of 28 pixels in [0, 1] (with their labels when a
    labels file is given)."""
    from rnnkit.data.idx import mnist_sequences, read_idx

    if labels is not None:
        return mnist_sequences(images, labels)
    array = read_idx(images)
    if array.ndim != 3 or str(array.dtype) != "uint8":
        raise ReaderError(
            f"expected uint8 images [n, rows, cols], found {array.dtype} {list(array.shape)}",
            path=images,
        )
    pixels = torch.from_numpy(array.astype("float32") / 255.0)
    return [{"features": x} for x in pixels.unbind(0)]


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
    train = idx_images(train_images, train_labels)
    test = idx_images(test_images, test_labels)
    if not 0 < validation < len(train):
        raise ValueError(
            f"validation: expected between 1 and {len(train) - 1} images, found {validation}"
        )
    labels = sorted({int(e["label"]) for e in train})
    if labels != list(range(len(labels))):
        gap = next(c for c in range(len(labels) + 1) if c not in labels)
        first = next(k for k, e in enumerate(train) if int(e["label"]) > gap)
        raise ReaderError(
            f"label {first}: expected labels 0..C-1 with none missing, found {labels} "
            f"(no {gap}, but {int(train[first]['label'])})",
            path=train_labels,
            byte=8 + first,
        )
    for k, e in enumerate(test):
        if int(e["label"]) not in labels:
            raise ReaderError(
                f"label {k}: expected a label of the training images {labels}, found "
                f"{int(e['label'])}",
                path=test_labels,
                byte=8 + k,
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
        test_ids=[f"{Path(test_images).name}:{k}" for k in range(len(test))],
    )


# --------------------------------------------------------------------------------- sentences

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
    header, rows = _read_csv(path)
    at = _columns(path, header, (text_column, label_column, group_column))
    picked = [(line, tuple(row[i] for i in at)) for line, row in rows]
    picked = [(line, row) for line, row in picked if row[1] not in drop_labels]
    if not picked:
        last = rows[-1][0] if rows else 1
        raise ReaderError(
            f"expected rows with labels other than {list(drop_labels)}, found none",
            path=path,
            line=last,
            column=1,
        )
    groups = sorted({row[2] for _, row in picked})
    random.Random(seed).shuffle(groups)
    a = round(split[0] * len(groups))
    b = a + round(split[1] * len(groups))
    if not 0 < a < b < len(groups):
        raise ValueError(
            f"split: {split} of {len(groups)} groups leaves a part empty; give more groups"
        )
    part_of = {g: (0 if i < a else 1 if i < b else 2) for i, g in enumerate(groups)}
    parts: list[list[tuple[list[str], str, int]]] = [[], [], []]
    for line, (text, label, group) in picked:
        words = tokenize(text)
        if words:
            parts[part_of[group]].append((words, label, line))
    names = tuple(sorted({label for _, label, _ in parts[0]}))
    if len(names) < 2:
        raise ReaderError(
            f"expected at least two labels in the training rows, found {list(names)}",
            path=path,
            line=picked[0][0],
            column=1,
        )
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
                    column=1,
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
        test_ids=[f"{path.name}:{line}" for _, _, line in parts[2]],
    )


def text_sentences(
    path: str | Path,
    vocabulary: Vocabulary,
    class_names: Sequence[str],
    *,
    text_column: str = "text",
    label_column: str = "category",
) -> tuple[list[str], list[Example]]:
    """New sentences for prediction, ``(ids, examples)``: a CSV with a ``text_column`` (and,
    when it has a ``label_column`` whose values are all classes, the labels), or any other
    file read as one sentence per line; lines without a word are skipped. Ids are
    ``file:line``."""
    from rnnkit.data.files import read_lines

    path = Path(path)
    items: list[tuple[int, str, str | None]] = []
    if path.name.lower().endswith((".csv", ".csv.bz2", ".csv.gz")):
        header, rows = _read_csv(path)
        (text_at,) = _columns(path, header, (text_column,))
        label_at = header.index(label_column) if label_column in header else None
        for line, row in rows:
            items.append((line, row[text_at], None if label_at is None else row[label_at]))
        if any(label not in class_names for _, _, label in items):
            items = [(line, text, None) for line, text, _ in items]
    else:
        items = [(k + 1, text, None) for k, text in enumerate(read_lines(path))]
    ids, examples = [], []
    index = {n: i for i, n in enumerate(class_names)}
    for line, text, label in items:
        words = tokenize(text)
        if not words:
            continue
        example = {"features": vocabulary.encode(words)}
        if label is not None:
            example["label"] = torch.tensor([index[label]])
        ids.append(f"{path.name}:{line}")
        examples.append(example)
    return ids, examples


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and ``(line, fields)`` of every row of a CSV file (``.bz2``/``.gz`` read
    compressed; lines and columns are then those of the decompressed text)."""
    import bz2
    import gzip
    import zlib

    from rnnkit.data.files import csv_records, decode_text

    data = path.read_bytes()
    try:
        if path.suffix == ".bz2":
            data = bz2.decompress(data)
        elif path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise ReaderError(
            f"expected a {path.suffix[1:]} stream, found a damaged one ({error})",
            path=path,
            byte=0,
        ) from None
    records = csv_records(decode_text(data, path), path)
    first = next(records, None)
    if first is None:
        raise ReaderError("expected a header row, found an empty file", path=path, line=1, column=1)
    header = first[1]
    rows = []
    for line, row, places in records:
        if len(row) != len(header):
            where = places[len(header)] if len(row) > len(header) else places[-1]
            raise ReaderError(
                f"expected {len(header)} fields as in the header, found {len(row)}",
                path=path,
                line=where[0],
                column=where[1],
            )
        rows.append((line, row))
    return header, rows


def _columns(path: Path, header: Sequence[str], columns: Sequence[str]) -> list[int]:
    missing = [c for c in columns if c not in header]
    if missing:
        raise ReaderError(
            f"expected the columns {list(columns)}, found {list(header)}",
            path=path,
            line=1,
            column=1,
        )
    return [list(header).index(c) for c in columns]


# --------------------------------------------------------------------------------- baselines


def majority_accuracy(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]
) -> float:
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


def nearest_neighbour_accuracy(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], *, block: int = 1000
) -> float:
    """The 1-nearest-neighbour rule in Euclidean distance over whole series.

    Series of different lengths are first resampled (linear interpolation) to the longest
    training length, so the distance compares the same relative times. The distances are
    computed ``block`` test series at a time (memory ``block x len(train)`` numbers).

    >>> tr = [{"features": torch.tensor([[0.0], [0.0]]), "label": torch.tensor([0])},
    ...       {"features": torch.tensor([[5.0], [5.0]]), "label": torch.tensor([1])}]
    >>> te = [{"features": torch.tensor([[4.0], [6.0], [5.0]]), "label": torch.tensor([1])}]
    >>> nearest_neighbour_accuracy(tr, te)
    1.0
    """
    length = max(int(e["features"].shape[0]) for e in train)
    flat = [
        torch.stack([_resample(e["features"], length).flatten() for e in s]).double()
        for s in (train, test)
    ]
    nearest = torch.cat([torch.cdist(part, flat[0]).argmin(1) for part in flat[1].split(block)])
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


def read_new(
    info: Mapping[str, Any],
    paths: Sequence[Path],
    *,
    text_column: str = "text",
    label_column: str = "category",
) -> tuple[list[str], list[Example]]:
    """New inputs prepared as the training data of a run whose :meth:`ClassifyData.info` is
    ``info`` (plus its ``"format"``), for prediction: ``(ids, examples)``.

    ``ts``: ``.ts`` files (``file:series``, from 1), scaled with the training statistics;
    ``idx``: image files, each optionally followed by its labels file (``file:image``, from
    0); ``text``: :func:`text_sentences` of each file (``file:line``).
    """
    from rnnkit.data.idx import read_idx

    ids: list[str] = []
    examples: list[Example] = []
    classes, fmt, paths = info["classes"], info["format"], list(paths)
    while paths:
        path = Path(paths.pop(0))
        if fmt == "idx":
            labels = paths.pop(0) if paths and read_idx(paths[0]).ndim == 1 else None
            part = idx_images(path, labels)
            ids += [f"{path.name}:{k}" for k in range(len(part))]
        elif fmt == "ts":
            part = ts_series(path, classes, dimensions=int(info["input_size"]))
            scale = (list(info["mean"]), list(info["deviation"]))
            part = scale_series(part, scale, bool(info["series_norm"]))
            ids += [f"{path.name}:{k + 1}" for k in range(len(part))]
        else:
            vocabulary = Vocabulary.from_dict(info["vocabulary"])
            more, part = text_sentences(
                path, vocabulary, classes, text_column=text_column, label_column=label_column
            )
            ids += more
        examples += part
    return ids, examples
