"""Model and generate text: a character-level LSTM language model, scored in bits per character.

The recipe (:func:`train_lm`), after Karpathy's char-rnn and Graves (2013), "Generating
sequences with recurrent neural networks":

1. read a verse file (``Ge1:1 In the beginning ...``, one verse a line; the reference's letters
   name the book) and split it **by book**: whole books are held out for validation and test,
   so no held-out verse has a neighbour in training;
2. the text of a part is its verses without references, one per line (``"\\n"`` ends a verse);
   the vocabulary is the training text's characters;
3. train ``Embedding >> Recurrence(LSTMCell) >> Dense`` on windows of the training text (next
   character at every step, cross entropy);
4. score the held-out test text in bits per character, carrying the state from each chunk to
   the next (:class:`~rnnkit.RecurrenceFrom`), every character predicted once (the first from
   a ``"\\n"``), next to what ``xz`` (preset 9 | extreme) compresses the same bytes to.

:func:`sample` continues a prompt with a trained run: the prompt runs through the recurrence
(:meth:`~rnnkit.Recurrence.with_final_state`), then :class:`~rnnkit.Unfold` draws each next
character from ``softmax(logits / temperature)`` and feeds it back, carrying the state.
"""

from __future__ import annotations

import itertools
import json
import lzma
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from rnnkit.data.errors import ReaderError
from rnnkit.layers import Dense, Embedding, Sequential
from rnnkit.recurrence import Recurrence

__all__ = [
    "TEST_BOOKS",
    "VALIDATION_BOOKS",
    "LMConfig",
    "LMResult",
    "bits_per_character",
    "default_text",
    "lm_model",
    "read_verses",
    "sample",
    "split_by_book",
    "train_lm",
    "xz_bits_per_character",
]

VALIDATION_BOOKS = ("Ruth", "Joel", "Gal", "1Pet")
TEST_BOOKS = ("Eccl", "Mark", "Rom")
_REFERENCE = re.compile(r"(\d?[A-Za-z]+)(\d+):(\d+) ")


def default_text() -> Path:
    """``../shared/data/text/kjv-verses.txt`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "text" / "kjv-verses.txt"
        if candidate.is_file():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "text" / "kjv-verses.txt"


def read_verses(path: str | Path) -> list[tuple[str, str]]:
    """``(book, verse text)`` per line of a file of ``BookC:V text`` lines (e.g. ``Ge1:1 In``).

    Raises:
        ReaderError: a non-empty line without a reference, with its line number.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "v.txt"
    ...     _ = path.write_text("Ge1:1 In the beginning\\n1Sm2:3 Talk no more\\n")
    ...     read_verses(path)
    [('Ge', 'In the beginning'), ('1Sm', 'Talk no more')]
    """
    path = Path(path)
    verses = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            match = _REFERENCE.match(line)
            if match is None:
                raise ReaderError(
                    f"expected a verse reference such as 'Ge1:1 ' before the text, found "
                    f"{line[:20]!r}",
                    path=path,
                    line=line_no,
                    column=1,
                )
            verses.append((match.group(1), line[match.end() :]))
    if not verses:
        raise ReaderError("expected verse lines, found an empty file", path=path, line=1, column=1)
    return verses


def split_by_book(
    verses: list[tuple[str, str]],
    validation: tuple[str, ...] = VALIDATION_BOOKS,
    test: tuple[str, ...] = TEST_BOOKS,
) -> tuple[str, str, str]:
    """The training, validation and test texts: verses joined by ``"\\n"`` (one after each).

    >>> v = [("Ge", "a"), ("Ruth", "b"), ("Mark", "c"), ("Ge", "d")]
    >>> split_by_book(v, validation=("Ruth",), test=("Mark",))
    ('a\\nd\\n', 'b\\n', 'c\\n')
    """
    books = {b for b, _ in verses}
    for name, chosen in (("validation", validation), ("test", test)):
        missing = [b for b in chosen if b not in books]
        if missing or not chosen:
            raise ValueError(
                f"{name} books: expected books of the file (it has {sorted(books)}), found "
                f"{list(chosen)}"
            )
    if set(validation) & set(test):
        raise ValueError(
            f"validation and test books: expected no book in both, found "
            f"{sorted(set(validation) & set(test))}"
        )
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for book, text in verses:
        part = 1 if book in validation else 2 if book in test else 0
        parts[part].append(text + "\n")
    if not parts[0]:
        raise ValueError("books: every book is held out; leave some for training")
    return "".join(parts[0]), "".join(parts[1]), "".join(parts[2])


def xz_bits_per_character(text: str) -> float:
    """``8 * len(xz(text)) / len(text)``, xz (LZMA2, .xz container) at preset 9 | extreme."""
    compressed = lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    return 8 * len(compressed) / len(text)


@dataclass(frozen=True)
class LMConfig:
    """One language-model run; every field goes to ``config.json``.

    ``train_chars`` caps the training text (its first characters; ``None`` keeps all) and
    ``epoch_chars`` is how many training characters make one epoch (one validation pass each).
    """

    embedding_size: int = 32
    hidden_size: int = 256
    window: int = 128
    minibatch_size: int = 32
    epochs: int = 8
    epoch_chars: int = 500_000
    train_chars: int | None = None
    learning_rate: float = 0.003
    clip_norm: float = 1.0
    patience: int = 3
    validation_books: tuple[str, ...] = VALIDATION_BOOKS
    test_books: tuple[str, ...] = TEST_BOOKS
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "window", "minibatch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if self.train_chars is not None and self.train_chars <= self.window:
            raise ValueError(
                f"train_chars: expected None or more than window={self.window}, found "
                f"{self.train_chars}"
            )


@dataclass
class LMResult:
    """Held-out figures: bits per character of the model and of xz on the same test text."""

    test_bpc: float
    xz_bpc: float
    validation_bpc: float
    test_chars: int
    train_chars: int
    vocabulary: int
    epochs: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lm_model(vocabulary: int, config: LMConfig) -> Sequential:
    """``Embedding(V, E) >> Recurrence(LSTMCell(E, H)) >> Dense(H, V)``: logits at every step."""
    from rnnkit.cells import LSTMCell

    return (
        Embedding(vocabulary, config.embedding_size)
        >> Recurrence(LSTMCell(config.embedding_size, config.hidden_size))
        >> Dense(config.hidden_size, vocabulary)
    )


def _parts(model: Sequential) -> tuple[Embedding, Recurrence, Dense]:
    """The three layers of :func:`lm_model`, checked."""
    layers = tuple(model.layers)
    if len(layers) == 3:
        embed, recurrence, readout = layers
        if (
            isinstance(embed, Embedding)
            and isinstance(recurrence, Recurrence)
            and isinstance(readout, Dense)
        ):
            return embed, recurrence, readout
    raise ValueError(
        "model: expected Embedding >> Recurrence >> Dense, found "
        f"{' >> '.join(type(m).__name__ for m in layers)}"
    )


def bits_per_character(model: Sequential, ids: Tensor, start: int, chunk: int = 256) -> float:
    """Bits per character of ``ids`` ``[N]`` under ``model`` (Embedding >> Recurrence >> Dense).

    Every id is predicted once, the first from ``start`` (the id of ``"\\n"``): the text is cut
    into 16 contiguous streams scored side by side, each carrying its state from one chunk of
    ``chunk`` steps to the next with a :class:`~rnnkit.RecurrenceFrom` over the model's cell.
    """
    from rnnkit.recurrence import RecurrenceFrom
    from rnnkit.sequences import SequenceBatch

    embed, recurrence, readout = _parts(model)
    stepper = RecurrenceFrom(recurrence.cell)
    inputs = torch.cat([torch.tensor([start]), ids[:-1]])
    streams = min(16, len(ids))
    bounds = [round(i * len(ids) / streams) for i in range(streams + 1)]
    pieces = [(inputs[a:b], ids[a:b]) for a, b in itertools.pairwise(bounds)]
    cell: Any = recurrence.cell
    state: Any = cell.initial_state(streams)
    total = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for offset in range(0, max(len(p[0]) for p in pieces), chunk):
            alive = [i for i, p in enumerate(pieces) if len(p[0]) > offset]
            x = SequenceBatch.from_list([pieces[i][0][offset : offset + chunk] for i in alive])
            rows = torch.tensor(alive)
            start_state = tuple(s.index_select(0, rows) for s in state)
            out, final = stepper.with_final_state(start_state, embed(x))
            logits = readout(out)
            targets = SequenceBatch.from_list(
                [pieces[i][1][offset : offset + chunk] for i in alive]
            )
            total += float(nn.functional.cross_entropy(logits.data, targets.data, reduction="sum"))
            state = tuple(s.index_copy(0, rows, f) for s, f in zip(state, final, strict=True))
    model.train(was_training)
    return total / math.log(2) / len(ids)


def train_lm(
    config: LMConfig,
    text_path: str | Path | None = None,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> LMResult:
    """Train on the training books, report test bits per character next to xz (module doc).

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``vocabulary.json``, ``metrics.csv``, ``curves.png`` and ``report.md``.
    """
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.data.text import TextVocabulary, text_windows
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

    path = Path(text_path) if text_path is not None else default_text()
    train_text, val_text, test_text = split_by_book(
        read_verses(path), config.validation_books, config.test_books
    )
    if config.train_chars is not None:
        train_text = train_text[: config.train_chars]
    vocab = TextVocabulary.characters(train_text)
    encoded = []
    for name, text in (("validation", val_text), ("test", test_text)):
        unseen = sorted(set(text) - set(vocab.vocabulary.tokens))
        if unseen:
            raise ValueError(
                f"{path}: the {name} books hold characters never seen in training: {unseen}; "
                "hold out other books or train on more text"
            )
        encoded.append(vocab.encode(text))
    val_ids, test_ids = encoded
    train_ids = vocab.encode(train_text)
    torch.manual_seed(config.seed)
    model = lm_model(len(vocab), config)
    run = RunDirectory(run_dir) if run_dir is not None else None
    callbacks: list[Any] = [EarlyStopping(patience=config.patience, restore_best=True)]
    if progress:
        callbacks.insert(0, ProgressPrinter(freq=0, num_epochs=config.epochs, tag="lm"))
    if run is not None:
        callbacks.append(CSVLogger(run.metrics_csv))
    trainer = Trainer(
        model,
        Criterion(cross_entropy_with_softmax, classification_error),
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        input_streams=("input",),
        target_stream="target",
        clip_norm=config.clip_norm,
        callbacks=callbacks,
    )
    windows = text_windows(train_ids, config.window)
    source = MinibatchSource(
        windows, config.minibatch_size, unit="sequences", seed=config.seed, randomize=True
    )
    validation = MinibatchSource(
        text_windows(val_ids, config.window),
        config.minibatch_size,
        unit="sequences",
        randomize=False,
        max_sweeps=1,
    )
    started = time.perf_counter()
    summary = trainer.fit(
        source, epochs=config.epochs, epoch_size=config.epoch_chars, validation=validation
    )
    seconds = time.perf_counter() - started
    newline = vocab.vocabulary.id("\n")
    result = LMResult(
        test_bpc=bits_per_character(model, test_ids, newline),
        xz_bpc=xz_bits_per_character(test_text),
        validation_bpc=bits_per_character(model, val_ids, newline),
        test_chars=len(test_text),
        train_chars=len(train_text),
        vocabulary=len(vocab),
        epochs=len(summary.history),
        seconds=seconds,
    )
    if run is not None:
        run.write_config({**asdict(config), "text": str(path)})
        run.save_model(model)
        (run.path / "vocabulary.json").write_text(json.dumps(vocab.vocabulary.to_dict()) + "\n")
        run.plot_curves(title="character LM (nats per character)")
        run.write_report(
            "Character language model",
            [
                ("rnnkit LSTM", round(result.test_bpc, 4)),
                ("xz -9e", round(result.xz_bpc, 4)),
            ],
            header=("model", "test bits per character"),
            notes=[
                f"Split by book: test {', '.join(config.test_books)} ({result.test_chars} "
                f"characters); validation {', '.join(config.validation_books)}; training the "
                f"other books ({result.train_chars} characters).",
                f"Model: Embedding({len(vocab)}, {config.embedding_size}) >> "
                f"Recurrence(LSTMCell({config.embedding_size}, {config.hidden_size})) >> "
                f"Dense({config.hidden_size}, {len(vocab)}); {result.epochs} epochs of "
                f"{config.epoch_chars} characters, {result.seconds:.0f} s.",
            ],
        )
    return result


def _load_run(run_dir: Path) -> tuple[Sequential, Any]:
    from rnnkit.data.text import TextVocabulary, Vocabulary
    from rnnkit.saving import load

    vocab_file = run_dir / "vocabulary.json"
    if not vocab_file.is_file():
        raise ValueError(
            f"{run_dir}: expected a run directory of 'rnnkit lm train' (with vocabulary.json), "
            "found none"
        )
    vocabulary = Vocabulary.from_dict(json.loads(vocab_file.read_text()))
    model = load(run_dir)
    if not isinstance(model, Sequential):
        raise ValueError(
            f"{run_dir}: expected the model Embedding >> Recurrence >> Dense, found "
            f"{type(model).__name__}"
        )
    return model, TextVocabulary(vocabulary, "characters")


def sample(
    run_dir: str | Path,
    prompt: str = "",
    *,
    temperature: float = 1.0,
    length: int = 200,
    seed: int = 0,
) -> str:
    """The prompt followed by ``length`` characters drawn from a trained run.

    The text before the prompt is a verse boundary (``"\\n"``); the state carries from the
    prompt into generation and from each drawn character to the next.

    Raises:
        ValueError: characters of ``prompt`` outside the run's vocabulary (all of them named),
            a non-positive temperature or length.
    """
    from rnnkit.recurrence import Unfold
    from rnnkit.sequences import SequenceBatch

    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, found {temperature}")
    if length < 1:
        raise ValueError(f"length: expected a positive integer, found {length}")
    model, vocab = _load_run(Path(run_dir))
    known = set(vocab.vocabulary.tokens)
    unknown = sorted({c for c in prompt if c not in known})
    if unknown:
        raise ValueError(
            f"prompt: the characters {unknown} are not in the vocabulary of {run_dir} (it has "
            f"{len(known)} characters, e.g. {''.join(sorted(known - {chr(10)}))!r}); leave "
            "them out"
        )
    embed, recurrence, readout = _parts(model)
    ids = vocab.encode("\n" + prompt)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if len(ids) > 1:
            x = SequenceBatch.from_list([ids[:-1]])
            _, state = recurrence.with_final_state(embed(x))
        else:
            state = cast(Any, recurrence.cell).initial_state(1)
        unfold = Unfold(
            recurrence.cell,
            readout,
            embed,
            max_length=length,
            mode="sample",
            temperature=temperature,
        )
        drawn = unfold(state, embed(ids[-1:]), generator=generator)
    return prompt + vocab.decode(drawn.data)


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit lm train`` and ``rnnkit lm sample RUN_DIR``."""
    p = sub.add_parser(
        "lm",
        help="character language model: train on a verse file, sample from a run",
        description="Train a character-level LSTM language model on a verse file (split by "
        "book) and report bits per character next to xz, or sample text from a trained run.",
    )
    actions = p.add_subparsers(dest="lm_action", required=True)
    t = actions.add_parser("train", help="train and score a language model")
    t.add_argument("--text", type=Path, default=None, help="verse file (default: KJV)")
    t.add_argument("--hidden-size", type=int, default=256)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--epoch-chars", type=int, default=500_000)
    t.add_argument("--train-chars", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--run-dir", type=Path, default=Path("runs") / "lm")
    s = actions.add_parser("sample", help="continue a prompt with a trained run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--prompt", default="")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--length", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)

    def run(args: Any) -> int:
        if args.lm_action == "sample":
            print(
                sample(
                    args.run_dir,
                    args.prompt,
                    temperature=args.temperature,
                    length=args.length,
                    seed=args.seed,
                )
            )
            return 0
        config = LMConfig(
            hidden_size=args.hidden_size,
            epochs=args.epochs,
            epoch_chars=args.epoch_chars,
            train_chars=args.train_chars,
            seed=args.seed,
        )
        result = train_lm(config, args.text, args.run_dir)
        print(
            f"test bits per character {result.test_bpc:.3f} (xz -9e on the same text "
            f"{result.xz_bpc:.3f})"
        )
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"data": "kjv-verses.txt", "split": "by book", **result.as_dict()}))
        return 0

    return {"lm": run}
