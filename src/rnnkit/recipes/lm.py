"""``rnnkit lm``: an LSTM language model on any text, in bits per character, against xz, bzip2
and gzip on the same held-out text.

After Karpathy's char-rnn and Graves (2013). Reads one or more plain text files (``--text
A,B``; default: the King James Bible in ../shared/data/text) and cuts their joined text into
contiguous parts, 90 / 5 / 5 % by default (``--split``), at the paragraph or line start nearest
each target (:mod:`rnnkit.data.plaintext`); ``--valid FILE --test FILE`` give the held-out
parts as files instead, and ``--split-by book`` (presets ``kjv`` and ``published``) holds out
whole books of a verse file (``Ge1:1 In the beginning``, one verse a line). A verse file's
references are dropped (``--format``). The vocabulary is the training text's characters
(``--unit char``) or its most frequent words, whitespace runs and punctuation marks
(``--unit word``, ``--vocab-size``); a held-out character or word outside it is read as
``<unk>``, counted, and coded as a compressor codes a new symbol (which earlier unknown token
it repeats, or a new one spelled out) so that the bits still code the text exactly.
``Embedding >> Recurrence(LSTMCell) >> Dense`` trains on windows of the training text (next
token at every step). The held-out texts are cut into 16
contiguous streams, each run from a fresh state with its state carried from token to token, so
every token is predicted once: bits per character = (summed cross entropy / ln 2 + spelling
bits) / characters, next to the compressors on exactly that text.
``rnnkit lm sample RUN_DIR --prompt TEXT`` continues a prompt with a trained run.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option, require_one_model

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import Tensor, nn

    from rnnkit.data.plaintext import Corpus

__all__ = ["RECIPE", "LMConfig", "LMRecipe", "sample"]

UNKNOWN = "<unk>"
_BOOK_MODEL = {
    "split_by": "book",
    "embedding_size": 32,
    "hidden_size": 256,
    "window": 128,
    "epoch_chars": 500_000,
    "schedule": "constant",
    "time_budget": None,
}


@dataclass(frozen=True)
class LMConfig:
    """One language-model run (see the module docstring)."""

    text: tuple[Path, ...] = option(
        (),
        "text files, comma-separated, joined in order (default: "
        "../shared/data/text/kjv-verses.txt)",
        metavar="FILES",
    )
    valid: tuple[Path, ...] = option(
        (),
        "validation files, comma-separated (with --test; --text is then all training)",
        metavar="FILES",
    )
    test: tuple[Path, ...] = option(
        (), "test files, comma-separated (with --valid)", metavar="FILES"
    )
    split: tuple[float, ...] = option(
        (0.9, 0.05, 0.05),
        "training, validation and test fractions of the text, contiguous, cut at paragraph "
        "or line starts",
        metavar="F,F,F",
    )
    split_by: str = option(
        "fraction",
        "fraction: --split (or --valid/--test); book: whole books of a verse file held out",
        choices=("fraction", "book"),
    )
    validation_books: tuple[str, ...] = option(
        ("Ruth", "Joel", "Gal", "1Pet"), "--split-by book: books held out for validation"
    )
    test_books: tuple[str, ...] = option(
        ("Eccl", "Mark", "Rom"), "--split-by book: books held out for the test"
    )
    format: str = option(
        "auto",
        "plain, or verses ('Ge1:1 text' lines, references dropped); auto: verses when every "
        "non-blank line has a reference",
        choices=("auto", "plain", "verses"),
    )
    encoding: str = option("utf-8", "the files' encoding (a Python codec: latin-1, cp1252, ...)")
    lowercase: bool = option(False, "lowercase the text first (the compressors see it too)")
    unit: str = option(
        "char",
        "char, or word: words, whitespace runs and punctuation marks",
        choices=("char", "word"),
    )
    vocab_size: int = option(
        10_000, "--unit word: tokens kept, <unk> included (the most frequent in training)", low=2
    )
    embedding_size: int = option(32, "token embedding size", low=1)
    hidden_size: int = option(256, "LSTM hidden units", low=1)
    window: int = option(128, "tokens per training window", low=1)
    epoch_chars: int = option(
        500_000, "training tokens (characters) per epoch (one validation pass each)", low=1
    )
    train_chars: int | None = option(
        None, "train on the first N characters of the training text (none: all)", low=2
    )
    train: TrainSettings = option(
        TrainSettings(
            epochs=20,
            minibatch_size=32,
            learning_rate=0.003,
            schedule="cosine",
            clip_norm=1.0,
            patience=3,
            threads=1,  # two threads on a shared machine wait on each other (docs/lm.md)
            time_budget=540.0,  # a run stays under 10 minutes on a loaded machine
        ),
        "training settings",
    )

    def __post_init__(self) -> None:
        for name in ("text", "valid", "test"):
            value = getattr(self, name)
            paths = () if value is None else (value,) if isinstance(value, (str, Path)) else value
            object.__setattr__(self, name, tuple(Path(p) for p in paths))
        object.__setattr__(self, "split", _fractions(self.split))
        check_config(self)
        import codecs

        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(
                f"encoding: expected the name of a Python codec (utf-8, latin-1, cp1252, ...), "
                f"found {self.encoding!r}"
            ) from None
        if bool(self.valid) != bool(self.test):
            given, missing = ("valid", "test") if self.valid else ("test", "valid")
            raise ValueError(f"{missing}: expected files with --{given}, found none")
        if self.split_by == "book" and (self.valid or self.format == "plain"):
            why = "--valid/--test files" if self.valid else "--format plain"
            raise ValueError(f"split_by: 'book' holds out books of a verse file, found {why}")
        if self.train_chars is not None and self.train_chars <= self.window:
            raise ValueError(
                f"train_chars: expected more than window={self.window}, found {self.train_chars}"
            )
        require_one_model(self.train, "sampling needs one model")


def _fractions(value: Any) -> tuple[float, ...]:
    """``--split`` as numbers: three fractions > 0 summing to 1."""
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    ok = len(numbers) == 3 and all(math.isfinite(f) and f > 0 for f in numbers)
    if not ok or abs(sum(numbers) - 1) > 1e-6:
        shown = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value
        raise ValueError(
            "split: expected three fractions > 0 summing to 1 (training, validation, test), "
            f"found {shown!r}"
        )
    return numbers


class LMRecipe(Recipe[LMConfig]):
    name = "lm"
    summary = "LSTM language model on any text, in bits per character against xz, bzip2, gzip"
    description = __doc__ or ""
    config = LMConfig
    presets = {
        "kjv": {**_BOOK_MODEL, "epochs": 8},
        "published": {**_BOOK_MODEL, "epochs": 5},
    }
    preset_help = {
        "kjv": "a verse file split by book; the model, 8 constant-rate epochs of docs/results.md",
        "published": "docs/results.md: the kjv preset, 5 epochs of 500,000 characters",
    }
    input_streams = ("input",)
    target_stream = "target"
    stack_single = False  # a text of 16 tokens or fewer gives streams of one token
    metric = Metric("bits per token")
    actions = {"sample": "continue a prompt with a trained run"}

    def epoch_size(self, config: LMConfig, data: RecipeData) -> int:
        return config.epoch_chars

    # ------------------------------------------------------------------ data
    def load_data(self, config: LMConfig) -> RecipeData:
        from rnnkit.data.plaintext import Speller, split_fractions
        from rnnkit.data.text import text_windows
        from rnnkit.data.verses import default_text, read_verses, split_by_book, stream_bounds

        paths = config.text or (default_text(),)
        fmt = _resolve_format(config, paths)
        where: dict[str, str] = {}
        if config.split_by == "book":
            verses = [v for p in paths for v in read_verses(p)]
            if config.lowercase:
                verses = [(b, t.lower()) for b, t in verses]
            texts = split_by_book(verses, config.validation_books, config.test_books)
            books = len({b for b, _ in verses} - set(config.validation_books + config.test_books))
            how = (
                f"split by book: training {books} books, validation "
                f"{', '.join(config.validation_books)}, test {', '.join(config.test_books)}"
            )
        elif config.valid:
            corpora = [_corpus(files, fmt, config) for files in (paths, config.valid, config.test)]
            texts = (corpora[0].text, corpora[1].text, corpora[2].text)
            how = "held-out parts from --valid and --test"
        else:
            corpus = _corpus(paths, fmt, config)
            split = split_fractions(corpus, config.split)
            texts = split.parts
            where = {
                "validation": corpus.locate(split.bounds[0]),
                "test": corpus.locate(split.bounds[1]),
            }
            shares = "/".join(f"{100 * len(t) / len(corpus.text):.1f}" for t in texts)
            how = (
                f"split {shares} % at {split.level} starts (validation from {where['validation']}"
                f", test from {where['test']})"
            )
        train_text = texts[0][: config.train_chars] if config.train_chars else texts[0]
        vocab = _build_vocabulary(config, train_text, texts[1:])
        speller = Speller(Counter(train_text))
        start = _start_token(vocab)
        train_ids = vocab.encode(train_text)
        if len(train_ids) <= config.window:
            raise ValueError(
                f"window: expected fewer than the {len(train_ids)} training tokens, found "
                f"{config.window}; give more text or a smaller --window"
            )
        held = [_streams(vocab, text, start, speller) for text in texts[1:]]
        spans = stream_bounds(sum(len(e["target"]) for e in held[1]))
        unit = "characters" if config.unit == "char" else "tokens"
        sizes = {"train": len(train_text), "validation": len(texts[1]), "test": len(texts[2])}
        unknown = {
            part: _count_unknown(examples, vocab)
            for part, examples in zip(("validation", "test"), held, strict=True)
        }
        info = {
            "files": [str(p) for p in paths],
            "valid_files": [str(p) for p in config.valid],
            "test_files": [str(p) for p in config.test],
            "format": fmt,
            "encoding": config.encoding,
            "lowercase": config.lowercase,
            "unit": config.unit,
            "start": start,
            "vocabulary": vocab.vocabulary.to_dict(),
            "spelling": speller.counts,
            "characters": sizes,
            "tokens": {
                "train": len(train_ids),
                "validation": sum(len(e["target"]) for e in held[0]),
                "test": sum(len(e["target"]) for e in held[1]),
            },
            "unknown": unknown,
            "held_out_from": where,
        }
        names = ", ".join(Path(p).name for p in paths)
        return RecipeData(
            text_windows(train_ids, config.window),
            held[0],
            held[1],
            inputs=[*paths, *config.valid, *config.test],
            ids=[f"{a}:{b}" for a, b in spans],
            info=info,
            description=f"{names}, {how}: training {sizes['train']:,}, validation "
            f"{sizes['validation']:,}, test {sizes['test']:,} characters; {len(vocab)} "
            f"{unit} in the vocabulary; unknown in validation {unknown['validation']:,}, "
            f"in test {unknown['test']:,}",
            extra={"texts": texts},
        )

    def source(
        self, config: LMConfig, examples: Sequence[Any], *, training: bool, seed: int = 0
    ) -> Any:
        """Minibatches of the model's streams only (the held-out streams also carry the
        characters and spelling bits of each token, for scoring)."""
        kept = [{"input": e["input"], "target": e["target"]} for e in examples]
        return super().source(config, kept, training=training, seed=seed)

    def config_from_run(self, values: Mapping[str, Any], data_info: Mapping[str, Any]) -> LMConfig:
        """A run recorded before ``split_by`` existed split its one verse file (``text``, a
        path or null) by book."""
        from rnnkit.recipes.options import config_from_dict

        if "split_by" not in values:
            text = values.get("text")
            values = {**values, "split_by": "book", "text": [] if text is None else [text]}
        return config_from_dict(LMConfig, values)

    # ------------------------------------------------------------------ model
    def build_model(self, config: LMConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import LSTMCell
        from rnnkit.layers import Dense, Embedding
        from rnnkit.recurrence import Recurrence

        size = len(data.info["vocabulary"]["tokens"]) + (data.info["vocabulary"]["unk"] is not None)
        e, h = config.embedding_size, config.hidden_size
        model = Embedding(size, e) >> Recurrence(LSTMCell(e, h)) >> Dense(h, size)
        data.extra["model"] = model  # score() predicts the validation part with it
        return model

    def criterion(self, config: LMConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, cross_entropy_with_softmax

        return Criterion(cross_entropy_with_softmax, _bits)

    # ------------------------------------------------------------------ figures
    def score(self, config: LMConfig, data: RecipeData, predictions: list[Any]) -> dict[str, float]:
        from rnnkit.recipes.harness import evaluator

        vocab = _vocabulary(data.info)
        figures = _part_figures("test", data.test, predictions, vocab)
        model = data.extra.get("model")
        if model is not None and data.validation:
            trainer = evaluator(self, config, data, model, self.input_streams, config.train.device)
            source = self.source(config, data.validation, training=False)
            figures.update(
                _part_figures("validation", data.validation, trainer.predict(source), vocab)
            )
        return figures

    def baselines(self, config: LMConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data.plaintext import compressed_bits

        _, validation, test = data.extra["texts"]
        on_test, on_validation = compressed_bits(test), compressed_bits(validation)
        return {
            name: {"test_bpc": on_test[name], "validation_bpc": on_validation[name]}
            for name in on_test
        }

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Per stream: its characters and tokens, the model's bits per character on them
        (spelling of unknown tokens included), the share of tokens that were the model's most
        likely next one, the text (unknown tokens as ``<unk>``) and those most likely tokens."""
        vocab = _vocabulary(info)
        rows = []
        for example, logits in zip(examples, predictions, strict=True):
            target, guess = example["target"], logits.argmax(-1)
            chars = int(example["chars"].sum())
            bits = _nats(logits, target) / math.log(2) + float(example["spell"].sum())
            rows.append(
                {
                    "chars": chars,
                    "tokens": len(target),
                    "bits_per_character": bits / chars,
                    "accuracy": float((guess == target).float().mean()),
                    "target": vocab.decode(target),
                    "prediction": vocab.decode(guess),
                }
            )
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: LMConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Text files read as the run read its own (format, encoding, lowercasing), each
        scored as the test part is: 16 streams."""
        from rnnkit.data.errors import ReaderError
        from rnnkit.data.plaintext import Speller
        from rnnkit.data.verses import stream_bounds

        vocab = _vocabulary(info)
        speller = Speller(info.get("spelling", {}))
        fmt = info.get("format", "verses")
        settings = _ReadSettings(fmt, info.get("encoding", "utf-8"), info.get("lowercase", False))
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            corpus = _corpus((path,), fmt, settings)
            if vocab.vocabulary.unk is None:
                known = set(vocab.vocabulary.tokens)
                for i, char in enumerate(corpus.text):
                    if char not in known:
                        place = corpus.locate(i)
                        _, line, column = place.rsplit(":", 2)
                        raise ReaderError(
                            f"expected characters of the run's vocabulary, found {char!r}",
                            path=path,
                            line=int(line),
                            column=int(column),
                        )
            streams = _streams(vocab, corpus.text, info.get("start", "\n"), speller)
            examples += streams
            tokens = sum(len(e["target"]) for e in streams)
            ids += [f"{path.name}:{a}:{b}" for a, b in stream_bounds(tokens)]
        return ids, examples

    def notes(self, config: LMConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        unit = "character" if config.unit == "char" else "token"
        return [
            f"{data.description}.",
            f"Bits per character of the held-out parts, each in 16 streams carrying the state "
            f"across their {unit}s; what each unknown {unit} is costs the bits of an adaptive "
            "code (docs/lm.md). The compressors compress each held-out text alone (whole "
            f"files, headers included). The validation loss is in nats per {unit}.",
            f"Model: Embedding >> Recurrence(LSTMCell({config.embedding_size}, "
            f"{config.hidden_size})) >> Dense; windows of {config.window} {unit}s, "
            f"{config.epoch_chars:,} training {unit}s per epoch.",
        ]

    # ------------------------------------------------------------------ sample
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
            "--length",
            type=_number(int, 1),
            default=200,
            help="characters (tokens at the word level) to draw (default: 200)",
        )
        parser.add_argument("--seed", type=_number(int, 0), default=0, help="seed (default: 0)")

    def run_action(self, action: str, args: Any) -> int:
        print(sample(args.run_dir, args.prompt, args.temperature, args.length, args.seed))
        return 0


# ---------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _ReadSettings:
    format: str
    encoding: str
    lowercase: bool


def _resolve_format(config: LMConfig, paths: Sequence[Path]) -> str:
    """``verses`` or ``plain``: ``auto`` is verses when the first file is a UTF-8 verse file."""
    if config.split_by == "book":
        return "verses"
    if config.format != "auto":
        return config.format
    from rnnkit.data.verses import is_verse_text

    try:
        head = paths[0].read_bytes().decode("utf-8-sig")
    except (UnicodeDecodeError, OSError):
        return "plain"  # the reader says what is wrong
    return "verses" if is_verse_text(head) else "plain"


def _corpus(paths: Sequence[Path], fmt: str, settings: Any) -> Corpus:
    """The files joined (:class:`~rnnkit.data.plaintext.Corpus`); a verse file's text is its
    verses without references, one a line."""
    from rnnkit.data.plaintext import Corpus, read_plain_text
    from rnnkit.data.verses import read_verse_lines

    texts, places = [], []
    for path in paths:
        if fmt == "verses":
            verses = read_verse_lines(path)
            text = "".join(v.text + "\n" for v in verses)
            place = (tuple(v.line for v in verses), tuple(v.column for v in verses))
        else:
            text, place = read_plain_text(path, settings.encoding), None
        texts.append((str(path), text.lower() if settings.lowercase else text))
        places.append(place)
    return Corpus.from_texts(texts, places)


def _build_vocabulary(config: LMConfig, train_text: str, held_out: Sequence[str]) -> Any:
    """Characters of the training text (with ``<unk>`` only when a held-out part has others),
    or its ``vocab_size - 1`` most frequent word pieces and ``<unk>``."""
    from rnnkit.data.text import TextVocabulary

    if config.unit == "word":
        return TextVocabulary.words(train_text, max_size=config.vocab_size - 1, unk=UNKNOWN)
    vocab = TextVocabulary.characters(train_text)
    known = set(vocab.vocabulary.tokens)
    if any(c not in known for text in held_out for c in set(text)):
        vocab = TextVocabulary.characters(train_text, unk=UNKNOWN)
    return vocab


def _start_token(vocab: Any) -> str:
    """What the model reads before a stream's first token: ``"\\n"``, else ``" "``, else the
    most frequent training token."""
    tokens = vocab.vocabulary
    for candidate in ("\n", " "):
        if candidate in tokens:
            return candidate
    return str(tokens.tokens[1 if tokens.unk is not None else 0])


def _streams(vocab: Any, text: str, start: str, speller: Any) -> list[dict[str, Any]]:
    """``text`` in 16 contiguous scoring streams (:func:`~rnnkit.data.verses.text_streams`),
    each with its tokens' characters (``"chars"``) and the bits that say what its unknown
    tokens are (``"spell"``, :func:`~rnnkit.data.plaintext.unknown_bits`, fresh for each
    stream): a new unknown character is spelled as ``log2`` of the number of Unicode code
    points outside the vocabulary (which one it is, uniformly), a new word piece by
    ``speller``."""
    import torch

    from rnnkit.data.plaintext import unknown_bits
    from rnnkit.data.verses import stream_bounds, text_streams

    pieces = vocab.tokenize(text)
    ids = vocab.encode(text)
    unk = vocab.vocabulary.unk_id
    chars = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
    if vocab.level == "characters":
        outside = math.log2(0x110000 - len(vocab))

        def spelled(piece: str) -> float:
            return outside  # which of the code points outside the vocabulary, uniformly

    else:
        spelled = speller.bits
    streams = text_streams(ids, vocab.vocabulary.id(start))
    is_unknown = (ids == unk).tolist() if unk is not None else [False] * len(pieces)
    for stream, (a, b) in zip(streams, stream_bounds(len(ids)), strict=True):
        where = [i for i in range(a, b) if is_unknown[i]]
        spell = torch.zeros(b - a, dtype=torch.float64)
        for i, bits in zip(where, unknown_bits([pieces[i] for i in where], spelled), strict=True):
            spell[i - a] = bits
        stream.update(chars=chars[a:b], spell=spell)
    return streams


def _part_figures(
    part: str, examples: Sequence[Any], predictions: Sequence[Any], vocab: Any
) -> dict[str, float]:
    """Bits per character of one held-out part (spelling included), its characters and
    unknown tokens; at the word level its tokens and the perplexity per word."""
    nats = sum(_nats(p, e["target"]) for p, e in zip(predictions, examples, strict=True))
    spell = sum(float(e["spell"].sum()) for e in examples)
    chars = sum(int(e["chars"].sum()) for e in examples)
    unknown = _count_unknown(examples, vocab)
    bits = nats / math.log(2) + spell
    figures = {f"{part}_bpc": bits / chars, f"{part}_chars": chars, f"{part}_unknown": unknown}
    if vocab.level == "words":
        blank = [t.isspace() for t in vocab.vocabulary.tokens]
        words = sum(sum(not blank[i] for i in e["target"].tolist()) for e in examples)
        tokens = sum(len(e["target"]) for e in examples)
        figures.update(
            {
                f"{part}_tokens": tokens,
                f"{part}_words": words,
                f"{part}_word_perplexity": 2 ** (nats / math.log(2) / max(1, words)),
            }
        )
    return figures


def _count_unknown(examples: Sequence[Any], vocab: Any) -> int:
    unk = vocab.vocabulary.unk_id
    return 0 if unk is None else sum(int((e["target"] == unk).sum()) for e in examples)


def _bits(output: Any, target: Any) -> Tensor:
    from rnnkit.training import cross_entropy_with_softmax

    return cross_entropy_with_softmax(output, target) / math.log(2)


def _nats(logits: Tensor, target: Tensor) -> float:
    import torch

    return float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))


def _vocabulary(info: Mapping[str, Any]) -> Any:
    from rnnkit.data.text import TextVocabulary, Vocabulary

    vocabulary = Vocabulary.from_dict(info["vocabulary"])
    if info.get("unit") == "word":
        return TextVocabulary(vocabulary, "words")
    return TextVocabulary(vocabulary, "characters")


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
    """The prompt followed by ``length`` tokens (characters, or word pieces) drawn from a
    trained run.

    Before the prompt the model reads the run's start token (a newline in most texts); the
    prompt runs through the recurrence, then :class:`~rnnkit.Unfold` draws each next token from
    ``softmax(logits / temperature)`` and feeds it back, carrying the state. At the word level a
    piece of the prompt outside the vocabulary is read as ``<unk>``.

    Raises:
        ValueError: characters of ``prompt`` outside a character run's vocabulary (all of them
            named), a non-positive temperature or length, or a run of another recipe.
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
    data = info["data"]
    vocab = _vocabulary(data)
    if vocab.level == "characters":
        known = set(vocab.vocabulary.tokens) - {vocab.vocabulary.unk}
        unknown = sorted({c for c in prompt if c not in known})
        if unknown:
            shown = "".join(sorted(known - {chr(10)}))
            raise ValueError(
                f"prompt: the characters {unknown} are not in the vocabulary of {run_dir} (it "
                f"has {len(known)} characters, e.g. {shown!r}); leave them out"
            )
    if data.get("lowercase"):
        prompt = prompt.lower()
    model: Any = load(run_dir).eval()
    embed, recurrence, readout = model.layers
    start = data.get("start", "\n")
    ids = torch.cat([torch.tensor([vocab.vocabulary.id(start)]), vocab.encode(prompt)])
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
