"""``rnnkit lm``: a character-level LSTM language model on a verse file, in bits per character.

After Karpathy's char-rnn and Graves (2013). Reads one verse a line (``Ge1:1 In the beginning``;
default: the King James Bible in ../shared/data/text) and splits it by book: whole books are
held out for validation and test, so no held-out verse has a neighbour in training. A part's
text is its verses without references, each followed by a newline; the vocabulary is the
training text's characters. ``Embedding >> Recurrence(LSTMCell) >> Dense`` trains on windows
of the training text (next character at every step). The held-out texts are cut into 16
contiguous streams, each run from a fresh state with its state carried from character to
character, so every character is predicted once (the first from a newline): bits per character
= summed cross entropy / ln 2 / characters, next to xz -9e on the same text.
``rnnkit lm sample RUN_DIR --prompt TEXT`` continues a prompt with a trained run.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option, require_one_model

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import Tensor, nn

__all__ = ["RECIPE", "LMConfig", "LMRecipe", "sample"]


@dataclass(frozen=True)
class LMConfig:
    """One language-model run (see the module docstring)."""

    text: Path | None = option(
        None, "verse file, 'BookC:V text' a line (default: ../shared/data/text/kjv-verses.txt)"
    )
    validation_books: tuple[str, ...] = option(
        ("Ruth", "Joel", "Gal", "1Pet"), "books held out for validation"
    )
    test_books: tuple[str, ...] = option(("Eccl", "Mark", "Rom"), "books held out for the test")
    embedding_size: int = option(32, "character embedding size", low=1)
    hidden_size: int = option(256, "LSTM hidden units", low=1)
    window: int = option(128, "characters per training window", low=1)
    epoch_chars: int = option(
        500_000, "training characters per epoch (one validation pass each)", low=1
    )
    train_chars: int | None = option(
        None, "train on the first N characters of the training books (none: all)", low=2
    )
    train: TrainSettings = option(
        TrainSettings(epochs=8, minibatch_size=32, learning_rate=0.003, clip_norm=1.0, patience=3),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.train_chars is not None and self.train_chars <= self.window:
            raise ValueError(
                f"train_chars: expected more than window={self.window}, found {self.train_chars}"
            )
        require_one_model(self.train, "sampling needs one model")


class LMRecipe(Recipe[LMConfig]):
    name = "lm"
    summary = "character language model on verses, split by book, against xz"
    description = __doc__ or ""
    config = LMConfig
    presets = {"published": {"epochs": 5}}
    preset_help = {"published": "docs/results.md: 5 epochs of 500,000 characters"}
    input_streams = ("input",)
    target_stream = "target"
    metric = Metric("bits per character")
    actions = {"sample": "continue a prompt with a trained run"}

    def epoch_size(self, config: LMConfig, data: RecipeData) -> int:
        return config.epoch_chars

    def load_data(self, config: LMConfig) -> RecipeData:
        from rnnkit.data.text import TextVocabulary, text_windows
        from rnnkit.data.verses import (
            default_text,
            read_verses,
            split_by_book,
            stream_bounds,
            text_streams,
        )

        path = config.text if config.text is not None else default_text()
        verses = read_verses(path)
        texts = split_by_book(verses, config.validation_books, config.test_books)
        train_text = texts[0][: config.train_chars] if config.train_chars else texts[0]
        vocab = TextVocabulary.characters(train_text)
        if "\n" not in vocab.vocabulary:
            raise ValueError("train_chars: expected at least one whole training verse")
        for name, text in (("validation", texts[1]), ("test", texts[2])):
            unseen = sorted(set(text) - set(vocab.vocabulary.tokens))
            if unseen:
                raise ValueError(
                    f"{path}: the {name} books hold characters never seen in training: "
                    f"{unseen}; hold out other books or train on more text"
                )
        newline = vocab.vocabulary.id("\n")
        held_out = set(config.validation_books) | set(config.test_books)
        books = len({b for b, _ in verses} - held_out)
        sizes = {"train": len(train_text), "validation": len(texts[1]), "test": len(texts[2])}
        return RecipeData(
            text_windows(vocab.encode(train_text), config.window),
            text_streams(vocab.encode(texts[1]), newline),
            text_streams(vocab.encode(texts[2]), newline),
            inputs=[path],
            ids=[f"{a}:{b}" for a, b in stream_bounds(len(texts[2]))],
            info={"vocabulary": vocab.vocabulary.to_dict(), "characters": sizes},
            description=f"{path.name} split by book: training {books} books "
            f"({sizes['train']:,} characters), validation {', '.join(config.validation_books)} "
            f"({sizes['validation']:,}), test {', '.join(config.test_books)} "
            f"({sizes['test']:,}); {len(vocab)} characters",
            extra={"test_text": texts[2]},
        )

    def build_model(self, config: LMConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import LSTMCell
        from rnnkit.layers import Dense, Embedding
        from rnnkit.recurrence import Recurrence

        size = len(data.info["vocabulary"]["tokens"])
        e, h = config.embedding_size, config.hidden_size
        return Embedding(size, e) >> Recurrence(LSTMCell(e, h)) >> Dense(h, size)

    def criterion(self, config: LMConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, cross_entropy_with_softmax

        return Criterion(cross_entropy_with_softmax, _bits)

    def score(self, config: LMConfig, data: RecipeData, predictions: list[Any]) -> dict[str, float]:
        nats = sum(_nats(p, e["target"]) for p, e in zip(predictions, data.test, strict=True))
        chars = sum(len(e["target"]) for e in data.test)
        return {"test_bpc": nats / math.log(2) / chars, "test_chars": chars}

    def baselines(self, config: LMConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data.verses import xz_bits_per_character

        return {"xz -9e": {"test_bpc": xz_bits_per_character(data.extra["test_text"])}}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Per stream: its characters, the model's bits per character on them, the share whose
        most likely next character was right, the text and those most likely characters."""
        vocab = _vocabulary(info)
        rows = []
        for example, logits in zip(examples, predictions, strict=True):
            target, guess = example["target"], logits.argmax(-1)
            rows.append(
                {
                    "chars": len(target),
                    "bits_per_character": _nats(logits, target) / math.log(2) / len(target),
                    "accuracy": float((guess == target).float().mean()),
                    "target": vocab.decode(target),
                    "prediction": vocab.decode(guess),
                }
            )
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: LMConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Verse files, each scored as the test books are: its verses' text in 16 streams."""
        from rnnkit.data.errors import ReaderError
        from rnnkit.data.verses import read_verse_lines, stream_bounds, text_streams

        vocab = _vocabulary(info)
        known = set(vocab.vocabulary.tokens)
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            verses = read_verse_lines(path)
            for verse in verses:
                for i, char in enumerate(verse.text):
                    if char not in known:
                        raise ReaderError(
                            f"expected characters of the run's vocabulary, found {char!r}",
                            path=path,
                            line=verse.line,
                            column=verse.column + i,
                        )
            text = "".join(v.text + "\n" for v in verses)
            examples += text_streams(vocab.encode(text), vocab.vocabulary.id("\n"))
            ids += [f"{path.name}:{a}:{b}" for a, b in stream_bounds(len(text))]
        return ids, examples

    def notes(self, config: LMConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        return [
            f"{data.description}. Bits per character of the held-out streams, each carrying "
            "its state across its characters; the validation loss is in nats per character "
            "(divide by ln 2 for bits).",
            f"Model: Embedding >> Recurrence(LSTMCell({config.embedding_size}, "
            f"{config.hidden_size})) >> Dense; windows of {config.window}, "
            f"{config.epoch_chars:,} training characters per epoch.",
        ]

    def add_action_arguments(self, action: str, parser: Any) -> None:
        parser.add_argument("run_dir", type=Path, help="a run directory of rnnkit lm")
        parser.add_argument("--prompt", default="", help="text to continue (default: none)")
        parser.add_argument(
            "--temperature",
            type=_number(float, 0, strict=True),
            default=1.0,
            help="softmax temperature (default: 1.0)",
        )
        parser.add_argument(
            "--length", type=_number(int, 1), default=200, help="characters (default: 200)"
        )
        parser.add_argument("--seed", type=_number(int, 0), default=0, help="seed (default: 0)")

    def run_action(self, action: str, args: Any) -> int:
        print(sample(args.run_dir, args.prompt, args.temperature, args.length, args.seed))
        return 0


def _bits(output: Any, target: Any) -> Tensor:
    from rnnkit.training import cross_entropy_with_softmax

    return cross_entropy_with_softmax(output, target) / math.log(2)


def _nats(logits: Tensor, target: Tensor) -> float:
    import torch

    return float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))


def _vocabulary(info: Mapping[str, Any]) -> Any:
    from rnnkit.data.text import TextVocabulary, Vocabulary

    return TextVocabulary(Vocabulary.from_dict(info["vocabulary"]), "characters")


def _number(kind: type, low: float, *, strict: bool = False) -> Any:
    """An argparse type: ``kind`` >= ``low`` (> with ``strict``), a one-line error otherwise."""
    wanted = f"a number > {low}" if strict else f"an integer >= {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, found {text!r}") from None
        if value < low or (strict and value == low) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, found {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def sample(
    run_dir: str | Path,
    prompt: str = "",
    temperature: float = 1.0,
    length: int = 200,
    seed: int = 0,
) -> str:
    """The prompt followed by ``length`` characters drawn from a trained run.

    The text before the prompt is a verse boundary (a newline); the prompt runs through the
    recurrence, then :class:`~rnnkit.Unfold` draws each next character from
    ``softmax(logits / temperature)`` and feeds it back, carrying the state.

    Raises:
        ValueError: characters of ``prompt`` outside the run's vocabulary (all of them named),
            a non-positive temperature or length, or a run of another recipe.
    """
    import torch

    from rnnkit.recipes.harness import load_run
    from rnnkit.recurrence import Unfold
    from rnnkit.saving import load
    from rnnkit.sequences import SequenceBatch

    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, found {temperature}")
    if length < 1:
        raise ValueError(f"length: expected a positive integer, found {length}")
    recipe, _, info = load_run(run_dir)
    if recipe.name != "lm":
        raise ValueError(f"run_dir: expected a run of rnnkit lm, found one of {recipe.name}")
    vocab = _vocabulary(info["data"])
    known = set(vocab.vocabulary.tokens)
    unknown = sorted({c for c in prompt if c not in known})
    if unknown:
        raise ValueError(
            f"prompt: the characters {unknown} are not in the vocabulary of {run_dir} (it has "
            f"{len(known)} characters, e.g. {''.join(sorted(known - {chr(10)}))!r}); leave "
            "them out"
        )
    model: Any = load(run_dir).eval()
    embed, recurrence, readout = model.layers
    ids = vocab.encode("\n" + prompt)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if len(ids) > 1:
            _, state = recurrence.with_final_state(embed(SequenceBatch.from_list([ids[:-1]])))
        else:
            state = recurrence.cell.initial_state(1)
        unfold = Unfold(
            recurrence.cell, readout, embed, length, mode="sample", temperature=temperature
        )
        drawn = unfold(state, embed(ids[-1:]), generator=generator)
    return str(prompt + vocab.decode(drawn.data))


RECIPE = LMRecipe()
