"""Tag every step (many-to-many): a bidirectional LSTM tagger for ``word/tag`` and CoNLL files.

Each token becomes a few categorical features (:func:`token_features`): the lower-cased word,
its last two and last three letters, its shape (capitalisation, digits, hyphen, punctuation)
and any extra per-token columns the data has (a part of speech, or the predicate indicator of
semantic role labelling, see :mod:`rnnkit.data.srl`). Each feature has its own embedding
(:class:`TokenFeatures`); the concatenation runs through a bidirectional LSTM and a Dense
layer gives the scores of every tag at every step. The suffix and shape features are what let
the tagger label words it never saw in training.

The recipe (:func:`tag`): split the documents (files) into train / validation / test with a
seed, build every vocabulary from the training part only, train with early stopping on the
validation loss, and report the test token accuracy next to the most-frequent-tag baseline
computed on the same split (each known word gets its most frequent training tag, an unknown
word the most frequent tag overall). A test tag never seen in training cannot be predicted:
such tokens count as errors and their number is reported.

>>> token_shape("McCarthy"), token_shape("1960s"), token_shape("--"), token_shape("U.S.")
('Xx', 'xd', '.', 'X.')
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnkit.data.files import Sentence
from rnnkit.data.text import Vocabulary
from rnnkit.layers import Embedding, Layer
from rnnkit.saving import register_module
from rnnkit.sequences import SequenceBatch

__all__ = [
    "TagConfig",
    "TagResult",
    "TagVocabularies",
    "TokenFeatures",
    "most_frequent_tag_accuracy",
    "predict_tags",
    "read_documents",
    "split_documents",
    "tag",
    "tagger",
    "token_features",
    "token_shape",
]

Example = dict[str, Tensor]
Format = Literal["tagged", "conll", "srl"]


def token_shape(word: str) -> str:
    """A coarse shape: ``X`` / ``Xx`` / ``x`` / ``xX`` for the letters' case, ``d`` for a digit,
    ``-`` for a hyphen, ``.`` for other punctuation (``.`` alone: no letter or digit)."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        case = ""
    elif all(c.isupper() for c in letters):
        case = "X"
    elif letters[0].isupper():
        case = "Xx"
    elif any(c.isupper() for c in letters):
        case = "xX"
    else:
        case = "x"
    digit = "d" if any(c.isdigit() for c in word) else ""
    hyphen = "-" if "-" in word and (case or digit) else ""
    other = "." if any(not (c.isalnum() or c == "-") for c in word) or not (case or digit) else ""
    return case + digit + hyphen + other


def token_features(word: str) -> tuple[str, str, str, str]:
    """``(lower-cased word, last 2 letters, last 3 letters, shape)`` of a word.

    >>> token_features("Running")
    ('running', 'ng', 'ing', 'Xx')
    """
    lower = word.lower()
    return lower, lower[-2:], lower[-3:], token_shape(word)


FEATURES = ("word", "suffix2", "suffix3", "shape")


class TokenFeatures(Layer):
    """One embedding per categorical column, concatenated.

    Input: a SequenceBatch (or a tensor ``[N, K]``) of int64 ids ``[K]`` per step, column
    ``k`` indexing ``sizes[k]`` values. Output: ``[sum(dims)]`` per step.

    >>> layer = TokenFeatures([5, 3], [2, 1])
    >>> x = SequenceBatch.from_list([torch.tensor([[4, 2], [0, 1]])])
    >>> tuple(layer(x).data.shape)
    (2, 3)
    """

    def __init__(self, sizes: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) != len(dims) or not sizes:
            raise ValueError(
                f"sizes and dims: expected one dim per column, found {len(sizes)} sizes and "
                f"{len(dims)} dims"
            )
        self.sizes, self.dims = [int(s) for s in sizes], [int(d) for d in dims]
        self.embeddings = nn.ModuleList(Embedding(s, d) for s, d in zip(sizes, dims, strict=True))

    def _embed(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2 or ids.shape[1] != len(self.sizes):
            raise ValueError(
                f"TokenFeatures input: expected ids [N, {len(self.sizes)}], found "
                f"{tuple(ids.shape)}"
            )
        return torch.cat([e(ids[:, k]) for k, e in enumerate(self.embeddings)], dim=-1)

    def forward(self, x: SequenceBatch | Tensor) -> SequenceBatch | Tensor:
        if isinstance(x, SequenceBatch):
            return x.map(self._embed)
        return self._embed(x)


register_module(
    TokenFeatures,
    lambda m: {"sizes": m.sizes, "dims": m.dims},
    name="rnnkit.tasks.tag.TokenFeatures",
)


# --------------------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class TagVocabularies:
    """The vocabularies of one tagger, built from its training sentences only.

    ``columns`` are the input columns in order (the four word features, then the extra
    columns); ``tags`` has the unknown tag ``<unseen>`` (id 0), which no training token has,
    for test tags never seen in training.
    """

    columns: tuple[str, ...]
    inputs: tuple[Vocabulary, ...]
    tags: Vocabulary

    @classmethod
    def build(
        cls,
        sentences: Sequence[Sentence],
        *,
        tag_column: str = "tags",
        extra_columns: Sequence[str] = (),
        min_freq: int = 2,
    ) -> TagVocabularies:
        """Words seen ``min_freq`` times or more; every suffix, shape, extra value and tag."""
        features = [[token_features(w) for w in s["words"]] for s in sentences]
        inputs = [
            Vocabulary.build(
                ([f[k] for f in fs] for fs in features), min_freq=min_freq if k == 0 else 1
            )
            for k in range(len(FEATURES))
        ]
        inputs += [Vocabulary.build(s[c] for s in sentences) for c in extra_columns]
        tags = Vocabulary.build((s[tag_column] for s in sentences), pad=None, unk="<unseen>")
        return cls((*FEATURES, *extra_columns), tuple(inputs), tags)

    def encode(self, sentence: Sentence, tag_column: str = "tags") -> Example:
        """``{"tokens": int64 [T, K], "tags": int64 [T]}`` (no ``"tags"`` without the column)."""
        features = list(zip(*(token_features(w) for w in sentence["words"]), strict=True))
        extra = [sentence[c] for c in self.columns[len(FEATURES) :]]
        columns = [v.encode(c) for v, c in zip(self.inputs, [*features, *extra], strict=True)]
        example = {"tokens": torch.stack(columns, dim=1)}
        if tag_column in sentence:
            example["tags"] = self.tags.encode(sentence[tag_column])
        return example

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the columns and every vocabulary."""
        return {
            "columns": list(self.columns),
            "inputs": [v.to_dict() for v in self.inputs],
            "tags": self.tags.to_dict(),
        }


def split_documents(
    documents: Sequence[Any], split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[Any], list[Any], list[Any]]:
    """Shuffle ``documents`` with ``random.Random(seed)`` and cut them in the ``split``
    proportions (rounded), so no document has sentences in two parts.

    >>> split_documents(list("abcdefghij"), seed=1)
    (['g', 'i', 'j', 'h', 'f', 'd', 'a', 'e'], ['b'], ['c'])
    """
    if len(documents) < 3:
        raise ValueError(
            f"documents: expected at least 3 documents to split by documents, found "
            f"{len(documents)}; give separate validation and test files instead"
        )
    order = list(documents)
    random.Random(seed).shuffle(order)
    a = min(len(order) - 2, max(1, round(split[0] * len(order))))
    b = min(len(order) - 1, max(a + 1, a + round(split[1] * len(order))))
    return order[:a], order[a:b], order[b:]


def most_frequent_tag_accuracy(
    train: Iterable[Sentence], test: Iterable[Sentence], tag_column: str = "tags"
) -> float:
    """Token accuracy of tagging each word with its most frequent training tag (ties: the tag
    seen first) and an unknown word with the most frequent training tag overall.

    >>> train = [{"words": ["the", "run", "run", "run"], "tags": ["at", "nn", "vb", "vb"]}]
    >>> most_frequent_tag_accuracy(train, [{"words": ["run", "dog"], "tags": ["vb", "vb"]}])
    1.0
    """
    per_word: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for s in train:
        for w, t in zip(s["words"], s[tag_column], strict=True):
            per_word.setdefault(w, Counter())[t] += 1
            overall[t] += 1
    best = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
    default = overall.most_common(1)[0][0]
    right = total = 0
    for s in test:
        for w, t in zip(s["words"], s[tag_column], strict=True):
            right += best.get(w, default) == t
            total += 1
    return right / total


# ------------------------------------------------------------------------------ model, training


@dataclass(frozen=True)
class TagConfig:
    """Settings of :func:`tag`; written whole to the run's ``config.json``.

    ``minibatch_size`` counts tokens; ``word_dim`` is the word embedding, ``affix_dim`` each
    suffix embedding, ``small_dim`` the shape and each extra column.
    """

    hidden_size: int = 100
    layers: int = 1
    word_dim: int = 64
    affix_dim: int = 24
    small_dim: int = 8
    min_freq: int = 2
    dropout: float = 0.3
    epochs: int = 4
    patience: int = 2
    minibatch_size: int = 2000
    learning_rate: float = 0.003
    clip_norm: float = 5.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "layers", "word_dim", "affix_dim", "small_dim", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), found {self.dropout!r}")


def tagger(config: TagConfig, vocabularies: TagVocabularies) -> nn.Module:
    """``TokenFeatures >> Dropout >> Bidirectional(LSTM) x layers >> Dropout >> Dense``.

    Input: a SequenceBatch of int64 ``[K]`` token ids; output: a SequenceBatch of ``[C]`` tag
    scores per step.
    """
    from rnnkit.cells import LSTMCell
    from rnnkit.layers import Dense, Dropout, Sequential
    from rnnkit.recurrence import Bidirectional

    dims = [config.word_dim, config.affix_dim, config.affix_dim, config.small_dim]
    dims += [config.small_dim] * (len(vocabularies.columns) - len(FEATURES))
    layers: list[nn.Module] = [
        TokenFeatures([len(v) for v in vocabularies.inputs], dims),
        Dropout(config.dropout),
    ]
    size, h = sum(dims), config.hidden_size
    for _ in range(config.layers):
        layers.append(Bidirectional(LSTMCell(size, h), LSTMCell(size, h)))
        size = 2 * h
    layers += [Dropout(config.dropout), Dense(size, len(vocabularies.tags))]
    return Sequential(layers)


def predict_tags(model: nn.Module, examples: Sequence[Example], batch: int = 256) -> list[Tensor]:
    """The highest-scoring tag id ``[T_i]`` at every step of every example (eval mode)."""
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch):
                x = SequenceBatch.from_list([e["tokens"] for e in examples[start : start + batch]])
                out += [s.argmax(-1) for s in model(x).to_list()]
    finally:
        model.train(was_training)
    return out


@dataclass(frozen=True)
class TagResult:
    """Test token accuracy next to the baseline, and how the run went."""

    accuracy: float
    baseline: float
    unknown_accuracy: float
    unknown_tokens: int
    unseen_tag_tokens: int
    validation_accuracy: float
    epochs: int
    seconds: float
    tokens: tuple[int, int, int]
    span_f1: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Rounded figures for a JSON line."""
        out: dict[str, Any] = {
            "test_accuracy": round(self.accuracy, 4),
            "most_frequent_tag_accuracy": round(self.baseline, 4),
            "unknown_word_accuracy": round(self.unknown_accuracy, 4),
            "unknown_words": self.unknown_tokens,
            "unseen_tag_tokens": self.unseen_tag_tokens,
            "val_accuracy": round(self.validation_accuracy, 4),
            "train/val/test_tokens": "/".join(str(n) for n in self.tokens),
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
        }
        if self.span_f1 is not None:
            out["span_f1"] = round(self.span_f1, 4)
        return out


def tag(
    parts: tuple[Sequence[Sentence], Sequence[Sentence], Sequence[Sentence]],
    config: TagConfig,
    run_dir: str | Path | None = None,
    *,
    tag_column: str = "tags",
    extra_columns: Sequence[str] = (),
    split: str = "",
    progress: bool = True,
) -> TagResult:
    """Train a tagger on ``parts[0]``, stop early on ``parts[1]``, test on ``parts[2]``.

    Sentences are dicts of token lists: ``"words"``, the ``tag_column`` and each of
    ``extra_columns`` (extra inputs, e.g. ``"predicate"``). When the tags are BIO
    (``B-X``/``I-X``/``O``) the span F1 of :func:`rnnkit.data.srl.span_scores` is reported too.
    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``vocabularies.json``, ``metrics.csv``, ``curves.png`` and ``report.md``.
    """
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.data.srl import span_scores
    from rnnkit.tasks.rundir import RunDirectory
    from rnnkit.training import (
        Criterion,
        CSVLogger,
        EarlyStopping,
        ProgressPrinter,
        Trainer,
        classification_error,
        cross_entropy_with_softmax,
    )

    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if not part:
            raise ValueError(f"parts: the {name} part has no sentences")
        missing = {tag_column, "words", *extra_columns} - set(part[0])
        if missing:
            raise ValueError(
                f"parts: {name} sentences lack the columns {sorted(missing)}; they have "
                f"{sorted(part[0])}"
            )
    vocabularies = TagVocabularies.build(
        parts[0], tag_column=tag_column, extra_columns=extra_columns, min_freq=config.min_freq
    )
    train, val, test = ([vocabularies.encode(s, tag_column) for s in p] for p in parts)
    torch.manual_seed(config.seed)
    model = tagger(config, vocabularies)
    run = RunDirectory(run_dir) if run_dir is not None else None
    callbacks: list[Any] = []
    if progress:
        callbacks.append(ProgressPrinter(freq=None, num_epochs=config.epochs))
    callbacks.append(EarlyStopping(patience=config.patience, restore_best=True))
    if run is not None:
        callbacks.append(CSVLogger(run.metrics_csv))
    trainer = Trainer(
        model,
        Criterion(cross_entropy_with_softmax, classification_error),
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        input_streams=("tokens",),
        target_stream="tags",
        callbacks=callbacks,
        clip_norm=config.clip_norm,
    )

    def source(examples: list[Example], training: bool) -> MinibatchSource:
        return MinibatchSource(
            examples,
            config.minibatch_size if training else 8000,
            size_stream="tags",
            randomize=training,
            seed=config.seed,
            max_sweeps=None if training else 1,
            stack_single=False,
        )

    started = time.perf_counter()
    summary = trainer.fit(source(train, True), epochs=config.epochs, validation=source(val, False))
    seconds = time.perf_counter() - started
    val_accuracy = 1.0 - trainer.evaluate(source(val, False))["metric"]
    predicted = predict_tags(model, test)
    gold = torch.cat([e["tags"] for e in test])
    guess = torch.cat(predicted)
    unk_word = vocabularies.inputs[0].id("<unk>")
    unknown = torch.cat([e["tokens"][:, 0].eq(unk_word) for e in test])
    right = guess == gold
    span_f1 = None
    tags = vocabularies.tags.tokens
    if any(t.startswith("B-") for t in tags):
        span_f1 = span_scores(
            [vocabularies.tags.decode(e["tags"]) for e in test],
            [vocabularies.tags.decode(p) for p in predicted],
        )[2]
    result = TagResult(
        accuracy=float(right.double().mean()),
        baseline=most_frequent_tag_accuracy(parts[0], parts[2], tag_column),
        unknown_accuracy=float(right[unknown].double().mean()) if unknown.any() else float("nan"),
        unknown_tokens=int(unknown.sum()),
        unseen_tag_tokens=int(gold.eq(vocabularies.tags.id("<unseen>")).sum()),
        validation_accuracy=val_accuracy,
        epochs=len(summary.history),
        seconds=seconds,
        tokens=tuple(sum(len(e["tags"]) for e in p) for p in (train, val, test)),  # type: ignore[arg-type]
        span_f1=span_f1,
    )
    if run is not None:
        run.write_config({**asdict(config), "split": split, "extra_columns": list(extra_columns)})
        run.save_model(model)
        (run.path / "vocabularies.json").write_text(json.dumps(vocabularies.to_dict()) + "\n")
        run.plot_curves(title="tagger")
        rows: list[tuple[str, float]] = [
            ("rnnkit BiLSTM tagger", result.accuracy),
            ("most frequent tag", result.baseline),
        ]
        run.write_report(
            "Tagging",
            rows,
            header=("tagger", "test token accuracy"),
            notes=[
                f"Split: {split}.",
                f"Words unknown to the training vocabulary: {result.unknown_tokens} test tokens, "
                f"tagged with accuracy {result.unknown_accuracy:.4f}.",
                f"Test tokens whose tag never occurs in training (counted as errors): "
                f"{result.unseen_tag_tokens}.",
                *([f"Span F1 (BIO, V excluded): {span_f1:.4f}."] if span_f1 is not None else []),
                f"{result.epochs} epochs in {result.seconds:.1f} s.",
            ],
        )
    return result


# ---------------------------------------------------------------------------------- command


def read_documents(
    paths: Sequence[str | Path],
    fmt: Format = "tagged",
    columns: Sequence[str | None] = ("words", "tags"),
) -> list[tuple[str, list[Sentence]]]:
    """``(file name, sentences)`` of each file: ``word/tag`` lines (``'tagged'``), CoNLL
    columns named by ``columns`` (``'conll'``) or CoNLL-2005 SRL columns, one example per
    predicate (``'srl'``, see :func:`rnnkit.data.srl.read_srl`)."""
    from rnnkit.data.srl import read_srl
    from rnnkit.data.text import read_conll, read_tagged

    documents = []
    for path in paths:
        if fmt == "tagged":
            sentences = read_tagged(path)
        elif fmt == "conll":
            sentences = read_conll(path, columns)
        elif fmt == "srl":
            sentences = read_srl(path, columns)
        else:
            raise ValueError(f"fmt: expected 'tagged', 'conll' or 'srl', found {fmt!r}")
        documents.append((Path(path).name, sentences))
    return documents


def _columns(text: str) -> list[str | None]:
    return [None if c in ("", "_", "-") else c for c in text.split(",")]


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit tag FILES...``: a tag for every token (POS tags, BIO roles)."""
    p = sub.add_parser(
        "tag",
        help="tag every token of word/tag, CoNLL or CoNLL-2005 SRL files with a BiLSTM",
        description="Train a bidirectional LSTM tagger. The files are documents, shuffled "
        "(--seed) and split 0.8/0.1/0.1 by document, unless --validation and --test name "
        "separate files. Prints the test token accuracy next to the most-frequent-tag "
        "baseline on the same split.",
    )
    p.add_argument("files", nargs="+", type=Path, help="training files, or all documents")
    p.add_argument("--format", choices=("tagged", "conll", "srl"), default="tagged")
    p.add_argument(
        "--columns",
        type=_columns,
        default=None,
        help="conll/srl: comma-separated column names, '_' drops one; 'words' required; "
        "conll default words,tags; srl default words,pos,_,_,predicate",
    )
    p.add_argument("--tag-column", default="tags", help="conll: the column to predict")
    p.add_argument("--validation", type=Path, nargs="+", default=None)
    p.add_argument("--test", type=Path, nargs="+", default=None)
    p.add_argument("--hidden-size", type=int, default=TagConfig.hidden_size)
    p.add_argument("--epochs", type=int, default=TagConfig.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=Path("runs") / "tag")

    def run(args: Any) -> int:
        fmt: Format = args.format
        default = ["words", "pos", None, None, "predicate"] if fmt == "srl" else ["words", "tags"]
        columns = args.columns or default
        tag_column = "tags" if fmt != "conll" else args.tag_column
        if fmt == "conll" and tag_column not in columns:
            raise ValueError(f"--tag-column: {tag_column!r} is not among --columns {columns}")
        for path in [*args.files, *(args.validation or []), *(args.test or [])]:
            if not path.is_file():
                raise ValueError(f"files: no such file: {str(path)!r}")
        documents = read_documents(args.files, fmt, columns)
        if (args.validation is None) != (args.test is None):
            raise ValueError("--validation and --test: give both or neither")
        if args.test is None:
            kept, held, tested = split_documents(documents, seed=args.seed)
            split = (
                f"by documents: {len(documents)} files shuffled (seed {args.seed}) and cut "
                f"0.8/0.1/0.1 into {len(kept)}/{len(held)}/{len(tested)} files"
            )
        else:
            kept = documents
            held = read_documents(args.validation, fmt, columns)
            tested = read_documents(args.test, fmt, columns)
            split = "training files as given; --validation and --test files"
        parts = tuple([s for _, doc in part for s in doc] for part in (kept, held, tested))
        named = [c for c in columns if c is not None]
        extra = [c for c in named if c not in ("words", tag_column)]
        if fmt == "srl":
            extra = [c for c in extra if c != "predicate"] + ["predicate"]
        config = TagConfig(hidden_size=args.hidden_size, epochs=args.epochs, seed=args.seed)
        print(f"{len(documents)} training document(s); split: {split}; extra inputs: {extra}")
        result = tag(
            parts,  # type: ignore[arg-type]
            config,
            args.run_dir,
            tag_column=tag_column,
            extra_columns=extra,
            split=split,
        )
        print(
            f"test token accuracy {result.accuracy:.4f} (most frequent tag "
            f"{result.baseline:.4f}); unknown words {result.unknown_accuracy:.4f} "
            f"over {result.unknown_tokens} tokens"
        )
        if result.unseen_tag_tokens:
            print(
                f"note: {result.unseen_tag_tokens} test tokens carry tags never seen in "
                "training; they count as errors"
            )
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"split": split, **result.as_dict()}))
        return 0

    return {"tag": run}
