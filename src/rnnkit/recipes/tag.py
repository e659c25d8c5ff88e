"""``rnnkit tag``: a tag for every token of word/tag text, CoNLL columns or CoNLL-2005 roles.

Each token is four categorical features (the lower-cased word, its last two and last three
letters, its shape) plus the extra columns of the data (a part of speech, the predicate
indicator of semantic role labelling), each with its own embedding:
``TokenFeatures >> Dropout >> Bidirectional(LSTM) x layers >> Dropout >> Dense(tags)``, cross
entropy per token. The files are documents, shuffled (--seed) and cut 0.8/0.1/0.1 by file,
unless --validation and --test name separate files; every vocabulary comes from the training
part. The test token accuracy is reported beside the most-frequent-tag baseline on the same
split; a test tag never seen in training counts as an error. Minibatches count tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

__all__ = ["RECIPE", "TagConfig", "TagRecipe"]

_FORMATS = ("tagged", "conll", "srl")  # rnnkit.data.tagging.FORMATS, without importing torch


@dataclass(frozen=True)
class TagConfig:
    """One tagging run (see the module docstring)."""

    files: tuple[Path, ...] = option(
        help="training files, or all the documents to split", positional=True, metavar="FILE"
    )
    format: str = option(
        "tagged",
        "tagged: word/tag lines; conll: token columns; srl: CoNLL-2005 roles",
        choices=_FORMATS,
    )
    columns: tuple[str, ...] = option(
        ("words", "tags"),
        "conll/srl: the columns' names, comma-separated, '_' drops one; 'words' is needed",
        metavar="NAMES",
    )
    tag_column: str = option("tags", "conll: the column to predict")
    validation: tuple[Path, ...] = option(
        (), "validation files, comma-separated (with --test)", metavar="FILES"
    )
    test: tuple[Path, ...] = option(
        (), "test files, comma-separated (with --validation)", metavar="FILES"
    )
    hidden_size: int = option(100, "LSTM units per direction", low=1)
    layers: int = option(1, "bidirectional LSTM layers", low=1)
    word_dim: int = option(64, "word embedding size", low=1)
    affix_dim: int = option(24, "embedding size of each suffix", low=1)
    small_dim: int = option(8, "embedding size of the shape and of each extra column", low=1)
    min_freq: int = option(2, "training count from which a word is in the vocabulary", low=1)
    dropout: float = option(0.3, "dropout before and after the LSTMs, in [0, 1)", low=0.0)
    train: TrainSettings = option(
        TrainSettings(
            epochs=3,
            patience=2,
            minibatch_size=2000,
            learning_rate=0.003,
            clip_norm=5.0,
            threads=1,  # one Brown epoch: 12 min of CPU on 2 threads, 1.5 on one (shared machine)
        ),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        for name in ("files", "validation", "test"):
            object.__setattr__(self, name, tuple(Path(p) for p in getattr(self, name)))
        if not self.files:
            raise ValueError("files: expected at least one file, found none")
        if self.dropout >= 1:
            raise ValueError(f"dropout: expected a number in [0, 1), found {self.dropout!r}")
        if bool(self.validation) != bool(self.test):
            raise ValueError("validation and test: give both or neither")
        named = [c for c in self.columns if c not in ("", "_", "-")]
        if self.format != "tagged" and "words" not in named:
            raise ValueError(f"columns: expected a 'words' column, found {list(self.columns)}")
        if self.format == "conll" and self.tag_column not in named:
            raise ValueError(
                f"tag_column: expected one of the columns {named}, found {self.tag_column!r}"
            )
        if self.format == "srl" and "predicate" not in named:
            raise ValueError(
                f"columns: srl needs a 'predicate' column (the preset srl gives "
                f"words,pos,_,_,predicate), found {list(self.columns)}"
            )


class TagRecipe(Recipe[TagConfig]):
    name = "tag"
    summary = "tag every token: word/tag text or CoNLL columns"
    description = __doc__ or ""
    config = TagConfig
    presets = {
        "tagged": {},
        "conll": {"format": "conll"},
        "srl": {"format": "srl", "columns": ("words", "pos", "_", "_", "predicate")},
        "brown": {"epochs": 4},
    }
    preset_help = {
        "tagged": "word/tag lines",
        "conll": "CoNLL columns words,tags",
        "srl": "CoNLL-2005 columns words,pos,_,_,predicate and one argument column per predicate",
        "brown": "word/tag lines, 4 epochs: the published Brown figure (docs/results.md)",
    }
    input_streams = ("tokens",)
    target_stream = "tags"
    size_stream = "tokens"
    unit = "samples"  # minibatches count tokens
    metric = Metric("token error", percent=True)
    stack_single = False  # a source of one-token sentences still gives sequences

    def default_preset(self, argv: Sequence[str]) -> str | None:
        """The preset named like the --format given (its columns); ``tagged`` without one."""
        for i, arg in enumerate(argv):
            value = argv[i + 1] if arg == "--format" and i + 1 < len(argv) else None
            if arg.startswith("--format="):
                value = arg.split("=", 1)[1]
            if value is not None:
                return value if value in self.presets else None
        return "tagged"

    def load_data(self, config: TagConfig) -> RecipeData:
        from rnnkit.data.tagging import (
            TagVocabularies,
            extra_columns,
            read_documents,
            split_documents,
        )

        documents = read_documents(config.files, config.format, config.columns)
        if config.test:
            parts = (
                documents,
                read_documents(config.validation, config.format, config.columns),
                read_documents(config.test, config.format, config.columns),
            )
            split = "training files as given; --validation and --test files"
        else:
            parts = split_documents(documents, seed=config.train.seed)
            split = (
                f"by documents: {len(documents)} files shuffled (seed {config.train.seed}) and "
                f"cut 0.8/0.1/0.1 into {'/'.join(str(len(p)) for p in parts)} files"
            )
        sentences = [[s for _, doc in part for s in doc] for part in parts]
        tag_column = config.tag_column if config.format == "conll" else "tags"
        extra = extra_columns(config.format, config.columns, tag_column)
        vocab = TagVocabularies.build(
            sentences[0], tag_column=tag_column, extra_columns=extra, min_freq=config.min_freq
        )
        train, val, test = ([vocab.encode(s, tag_column) for s in p] for p in sentences)
        tokens = "/".join(str(sum(len(s["words"]) for s in p)) for p in sentences)
        return RecipeData(
            train,
            val,
            test,
            inputs=[*config.files, *config.validation, *config.test],
            ids=[f"{name}:{k + 1}" for name, doc in parts[2] for k in range(len(doc))],
            info={"vocabularies": vocab.to_dict(), "tag_column": tag_column, "split": split},
            description=f"split {split}; {tokens} train/validation/test tokens; "
            f"{len(vocab.tags) - 1} tags; extra inputs: {extra or 'none'}",
            extra={"sentences": sentences, "vocab": vocab},
        )

    def build_model(self, config: TagConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import LSTMCell
        from rnnkit.layers import Dense, Dropout, Sequential
        from rnnkit.layers.tokens import TokenFeatures
        from rnnkit.recurrence import Bidirectional

        vocab = data.extra["vocab"]
        dims = [config.word_dim, config.affix_dim, config.affix_dim, config.small_dim]
        dims += [config.small_dim] * len(vocab.extra_columns)
        layers: list[Any] = [
            TokenFeatures([len(v) for v in vocab.inputs], dims),
            Dropout(config.dropout),
        ]
        size, h = sum(dims), config.hidden_size
        for _ in range(config.layers):
            layers.append(Bidirectional(LSTMCell(size, h), LSTMCell(size, h)))
            size = 2 * h
        layers += [Dropout(config.dropout), Dense(size, len(vocab.tags))]
        return Sequential(layers)

    def criterion(self, config: TagConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, classification_error, cross_entropy_with_softmax

        return Criterion(cross_entropy_with_softmax, classification_error)

    def score(self, config: TagConfig, data: RecipeData, predictions: list[Any]) -> dict[str, Any]:
        import torch

        from rnnkit.data.srl import span_scores

        vocab = data.extra["vocab"]
        gold = torch.cat([e["tags"] for e in data.test])
        guesses = [p.argmax(-1) for p in predictions]
        right = torch.cat(guesses) == gold
        unk = vocab.inputs[0].id("<unk>")
        unknown = torch.cat([e["tokens"][:, 0].eq(unk) for e in data.test])
        figures: dict[str, Any] = {
            "test_accuracy": float(right.double().mean()),
            "unknown_word_accuracy": float(right[unknown].double().mean())
            if unknown.any()
            else float("nan"),
            "unknown_words": int(unknown.sum()),
            "unseen_tag_tokens": int(gold.eq(vocab.tags.id("<unseen>")).sum()),
        }
        if any(t.startswith("B-") for t in vocab.tags.tokens):
            gold_tags = [vocab.tags.decode(e["tags"]) for e in data.test]
            figures["span_f1"] = span_scores(gold_tags, [vocab.tags.decode(g) for g in guesses])[2]
        return figures

    def baselines(self, config: TagConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data.tagging import most_frequent_tag_accuracy

        train, _, test = data.extra["sentences"]
        accuracy = most_frequent_tag_accuracy(train, test, data.info["tag_column"])
        return {"most frequent tag": {"test_accuracy": accuracy}}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        from rnnkit.data.text import Vocabulary

        tags = Vocabulary.from_dict(info["vocabularies"]["tags"])
        rows = []
        for example, scores in zip(examples, predictions, strict=True):
            sentence = example.sentence
            rows.append(
                {
                    "words": sentence["words"],
                    "target": sentence.get(info["tag_column"], ""),
                    "prediction": tags.decode(scores.argmax(-1)),
                }
            )
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: TagConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Files in the run's format; their tags, when present, are shown, not read."""
        from rnnkit.data.tagging import TaggedExample, TagVocabularies, read_sentences

        vocab = TagVocabularies.from_dict(info["vocabularies"])
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            sentences = read_sentences(path, config.format, config.columns, info["tag_column"])
            for k, sentence in enumerate(sentences):
                tokens = vocab.encode(sentence, info["tag_column"])["tokens"]
                examples.append(TaggedExample({"tokens": tokens}, sentence))
                ids.append(f"{path.name}:{k + 1}")
        return ids, examples

    def notes(self, config: TagConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        return [
            f"Split: {data.info['split']}.",
            f"Words unknown to the training vocabulary: {figures['unknown_words']} test tokens, "
            f"tagged with accuracy {figures['unknown_word_accuracy']:.4f}.",
            f"Test tokens whose tag never occurs in training (counted as errors): "
            f"{figures['unseen_tag_tokens']}.",
            "The most frequent tag: a known word gets its most frequent training tag, an "
            "unknown word the most frequent tag overall.",
        ]


RECIPE = TagRecipe()
