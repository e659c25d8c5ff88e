"""Encode and decode with attention: grapheme-to-phoneme conversion on the CMU dictionary.

The model (:class:`G2PModel`), after Luong et al. (2015), "Effective approaches to
attention-based neural machine translation", as used for G2P by Yao & Zweig (2015):

* encoder: the letters' embeddings through a :class:`~rnnkit.Bidirectional` LSTM;
* decoder: an LSTM run by :class:`~rnnkit.RecurrenceFrom` from a state made of the encoder's
  ends (teacher forcing: its inputs are the reference phonemes shifted by one, after ``<s>``);
* :class:`Attention` of each decoder output over the encoder states, the context and the
  output combined (``tanh(W [h; c])``) and read out to phoneme scores.

Greedy decoding (:meth:`G2PModel.greedy`) runs the same cell one step at a time, feeding back
the phoneme it chose, until ``</s>``.

The recipe (:func:`train_g2p`): the dictionary's words are split at random (seeded) **by word**,
so every pronunciation of a word (``WORD``, ``WORD(1)``, ...) lies in one part; stress digits
are removed by default (39 phonemes, as is usual for this benchmark). A predicted
pronunciation counts as correct when it equals any of the word's pronunciations; the phoneme
error rate is the edit distance to the nearest pronunciation over that pronunciation's length,
summed over the test words.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnkit.data.errors import ReaderError
from rnnkit.layers import Layer
from rnnkit.sequences import SequenceBatch

__all__ = [
    "PUBLISHED_PER",
    "PUBLISHED_WER",
    "Attention",
    "G2PConfig",
    "G2PModel",
    "G2PResult",
    "default_dictionary",
    "edit_distance",
    "predict",
    "pronounce",
    "read_cmudict",
    "score",
    "split_words",
    "train_g2p",
]

PUBLISHED_PER = 5.45  # Yao & Zweig 2015, bi-directional LSTM, % (their own split)
PUBLISHED_WER = 23.55
_ALTERNATE = re.compile(r"\(\d+\)$")
BOS, EOS = "<s>", "</s>"


class Attention(Layer):
    """Attention of queries over a SequenceBatch of keys (e.g. encoder states).

    For a query ``q`` and the keys ``k_1..k_S`` of its sequence: scores ``e_s``, weights
    ``a = softmax(e)`` over the ``S`` real steps (never padding), context ``sum_s a_s k_s``.

    * ``'dot'`` (Luong): ``e_s = q . k_s`` (needs ``query_size == key_size``);
    * ``'general'`` (Luong): ``e_s = q W k_s``, ``weight [Q, K]``;
    * ``'additive'`` (Bahdanau): ``e_s = v . tanh(W_q q + W_k k_s)``, ``W_q [A, Q]``,
      ``W_k [A, K]``, ``v [A]``.

    ``forward(query, keys)``: ``query`` is ``[B, Q]`` (one query per sequence of ``keys``) or
    a SequenceBatch of ``B`` sequences of ``[Q]`` (a decoder's outputs); the context has the
    query's layout with ``[K]`` per row. :meth:`weights` gives ``a`` (``[B, S]`` or a
    SequenceBatch of ``[S]``, zero past each key sequence's end).

    >>> keys = SequenceBatch.from_list([torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    ...                                 torch.tensor([[2.0, 2.0]])])
    >>> attend = Attention(2, 2, "dot")
    >>> attend.weights(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), keys).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    >>> attend(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), keys).tolist()
    [[0.5, 0.5], [2.0, 2.0]]
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        kind: Literal["dot", "general", "additive"] = "general",
        attention_size: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("dot", "general", "additive"):
            raise ValueError(f"kind: expected 'dot', 'general' or 'additive', found {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"kind='dot': expected query_size == key_size, found {query_size} and "
                f"{key_size}; use 'general' or 'additive'"
            )
        self.query_size, self.key_size, self.kind = query_size, key_size, kind
        self.attention_size = attention_size if attention_size is not None else key_size
        if kind == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size))
            nn.init.xavier_uniform_(self.weight)
        elif kind == "additive":
            self.query_proj = nn.Linear(query_size, self.attention_size, bias=False)
            self.key_proj = nn.Linear(key_size, self.attention_size)
            self.v = nn.Parameter(torch.empty(self.attention_size).uniform_(-0.1, 0.1))

    def _scores(self, q: Tensor, keys: Tensor) -> Tensor:
        """``q [B, T, Q]``, ``keys [B, S, K]`` -> ``[B, T, S]``."""
        if self.kind == "dot":
            return q @ keys.transpose(1, 2)
        if self.kind == "general":
            return (q @ self.weight) @ keys.transpose(1, 2)
        hidden = self.query_proj(q).unsqueeze(2) + self.key_proj(keys).unsqueeze(1)
        return torch.tanh(hidden) @ self.v

    def _attend(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> tuple[Tensor, Tensor]:
        """``(weights [B, T, S], padded keys [B, S, K])`` with the query rows as ``[B, T, Q]``
        in the caller's order (``T = 1`` for a ``[B, Q]`` query)."""
        if not isinstance(keys, SequenceBatch):
            raise TypeError(f"keys: expected a SequenceBatch, found {type(keys).__name__}")
        if isinstance(query, SequenceBatch):
            q, _ = query.to_padded()
        elif isinstance(query, Tensor) and query.dim() == 2:
            q = query.unsqueeze(1)
        else:
            found = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise TypeError(f"query: expected a [B, Q] tensor or a SequenceBatch, found {found}")
        if q.shape[0] != keys.batch_size or q.shape[-1] != self.query_size:
            raise ValueError(
                f"query: expected {keys.batch_size} queries (one per key sequence) of size "
                f"{self.query_size}, found shape {tuple(q.shape)}"
            )
        padded, lengths = keys.to_padded()
        real = torch.arange(padded.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # [B, S]
        scores = self._scores(q, padded)
        scores = scores.masked_fill(~real.to(scores.device).unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=-1), padded

    @staticmethod
    def _like_query(query: Tensor | SequenceBatch, padded: Tensor) -> Tensor | SequenceBatch:
        """``[B, T, F]`` (caller order) back to the query's layout."""
        if isinstance(query, Tensor):
            return padded.squeeze(1)
        time_major = padded.index_select(0, query.sorted_indices).transpose(0, 1)
        return query.with_data(time_major.flatten(0, 1).index_select(0, query.padded_index))

    def forward(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> Any:
        weights, padded = self._attend(query, keys)
        return self._like_query(query, weights @ padded)

    def weights(self, query: Tensor | SequenceBatch, keys: SequenceBatch) -> Any:
        """The attention weights, in the query's layout with ``[S]`` per row."""
        return self._like_query(query, self._attend(query, keys)[0])


class G2PModel(nn.Module):
    """Bidirectional-LSTM encoder, LSTM decoder with attention (see the module docstring).

    Shapes: ``letters`` a SequenceBatch of ids ``[]`` per step (alphabet ``L``);
    ``decoder_input`` a SequenceBatch of phoneme ids (``<s>`` then the reference); the output
    is a SequenceBatch of ``[P]`` scores, one row per decoder input step.
    """

    def __init__(
        self,
        letters: int,
        phonemes: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        attention: Literal["dot", "general", "additive"] = "general",
    ) -> None:
        super().__init__()
        from rnnkit.cells import LSTMCell
        from rnnkit.layers import Dense, Embedding
        from rnnkit.recurrence import Bidirectional, RecurrenceFrom

        h, d = hidden_size, 2 * hidden_size
        self.letters, self.phonemes = letters, phonemes
        self.embedding_size, self.hidden_size, self.attention_kind = (
            embedding_size,
            hidden_size,
            attention,
        )
        self.letter_embedding = Embedding(letters, embedding_size)
        self.encoder = Bidirectional(LSTMCell(embedding_size, h), LSTMCell(embedding_size, h))
        self.bridge = Dense(d, 2 * d, activation=torch.tanh)
        self.phoneme_embedding = Embedding(phonemes, embedding_size)
        self.decoder = RecurrenceFrom(LSTMCell(embedding_size, d))
        self.attention = Attention(d, d, attention)
        self.combine = Dense(2 * d, d, activation=torch.tanh)
        self.readout = Dense(d, phonemes)

    def encode(self, letters: SequenceBatch) -> tuple[SequenceBatch, tuple[Tensor, Tensor]]:
        """Encoder states ``[2H]`` per letter and the decoder's initial ``(h, c)`` ``[B, 2H]``,
        from the forward direction's last output and the backward direction's first."""
        states = self.encoder(self.letter_embedding(letters))
        h = self.hidden_size
        ends = torch.cat([states.last()[:, :h], states.first()[:, h:]], dim=1)
        start_h, start_c = self.bridge(ends).chunk(2, dim=1)
        return states, (start_h.contiguous(), start_c.contiguous())

    def _scores(self, output: Any, keys: SequenceBatch) -> Any:
        context = self.attention(output, keys)
        joined: Any
        if isinstance(output, SequenceBatch):
            joined = output.with_data(torch.cat([output.data, context.data], dim=1))
        else:
            joined = torch.cat([output, context], dim=1)
        return self.readout(self.combine(joined))

    def forward(self, letters: SequenceBatch, decoder_input: SequenceBatch) -> SequenceBatch:
        keys, state = self.encode(letters)
        outputs = self.decoder(state, self.phoneme_embedding(decoder_input))
        return self._scores(outputs, keys)

    def greedy(
        self, letters: SequenceBatch, bos: int, eos: int, max_length: int
    ) -> list[list[int]]:
        """The phoneme ids chosen one step at a time (argmax), each list up to its ``eos``
        (left out) or ``max_length`` ids, in the caller's order."""
        keys, state = self.encode(letters)
        cell = self.decoder.cell
        batch = letters.batch_size
        item = torch.full((batch,), bos, dtype=torch.int64)
        chosen: list[Tensor] = []
        done = torch.zeros(batch, dtype=torch.bool)
        current: Any = state
        for _ in range(max_length):
            current = cell(self.phoneme_embedding(item), current)
            item = self._scores(current[0], keys).argmax(-1)
            chosen.append(item)
            done |= item == eos
            if bool(done.all()):
                break
        rows = torch.stack(chosen, dim=1).tolist()
        return [row[: row.index(eos)] if eos in row else row for row in rows]


def _register() -> None:
    from rnnkit.saving import register_module

    register_module(
        Attention,
        lambda m: {
            "query_size": m.query_size,
            "key_size": m.key_size,
            "kind": m.kind,
            "attention_size": m.attention_size,
        },
        name="rnnkit.tasks.seq2seq.Attention",
    )
    register_module(
        G2PModel,
        lambda m: {
            "letters": m.letters,
            "phonemes": m.phonemes,
            "embedding_size": m.embedding_size,
            "hidden_size": m.hidden_size,
            "attention": m.attention_kind,
        },
        name="rnnkit.tasks.seq2seq.G2PModel",
    )


_register()


def default_dictionary() -> Path:
    """``../shared/data/cmudict/dict.txt`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "cmudict" / "dict.txt"
        if candidate.is_file():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "cmudict" / "dict.txt"


def read_cmudict(path: str | Path, *, stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """``word -> its pronunciations`` from a CMUdict file (``WORD  PH1 PH2``, ``;;;`` comments).

    ``WORD(1)``, ``WORD(2)`` are alternates of ``WORD``; ``stress=False`` removes the stress
    digits (``AH0`` -> ``AH``); equal pronunciations are kept once.

    Raises:
        ReaderError: a line without phonemes, with its line number.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "d.txt"
    ...     _ = path.write_text(";;; c\\nA  AH0\\nA(1)  EY1\\nAB  AE1 B\\n")
    ...     read_cmudict(path)
    {'A': [('AH',), ('EY',)], 'AB': [('AE', 'B')]}
    """
    path = Path(path)
    words: dict[str, list[tuple[str, ...]]] = {}
    with path.open(encoding="latin-1") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(";;;"):
                continue
            fields = line.split()
            if len(fields) < 2:
                raise ReaderError(
                    f"expected 'WORD  PH1 PH2 ...', found {line.strip()!r}",
                    path=path,
                    line=line_no,
                    column=1,
                )
            word = _ALTERNATE.sub("", fields[0])
            phones = tuple(fields[1:] if stress else (p.rstrip("012") for p in fields[1:]))
            known = words.setdefault(word, [])
            if phones not in known:
                known.append(phones)
    if not words:
        raise ReaderError("expected dictionary entries, found none", path=path, line=1, column=1)
    return words


def split_words(
    words: Sequence[str], fractions: tuple[float, float, float], seed: int
) -> tuple[list[str], list[str], list[str]]:
    """Train / validation / test words: a seeded shuffle of the sorted words, cut by fractions.

    >>> split_words([f"w{i}" for i in range(10)], (0.8, 0.1, 0.1), seed=0)[1:]
    (['w9'], ['w6'])
    """
    if abs(sum(fractions) - 1) > 1e-9 or any(f <= 0 for f in fractions):
        raise ValueError(f"split: expected three positive shares summing to 1, found {fractions}")
    order = sorted(words)
    random.Random(seed).shuffle(order)
    a = round(fractions[0] * len(order))
    b = a + round(fractions[1] * len(order))
    return order[:a], order[a:b], order[b:]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1).

    >>> edit_distance(["K", "AE", "T"], ["K", "AA", "T", "S"])
    2
    """
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def score(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[tuple[str, ...]]]
) -> tuple[float, float]:
    """``(PER %, WER %)``: per word the nearest reference (smallest edit distance, then the
    shortest); PER sums the distances over the sum of those references' lengths; WER is the
    share of words whose prediction equals none of their references.

    >>> score([["K", "AE", "T"], ["D", "AO"]], [[("K", "AE", "T")], [("D", "AO", "G")]])
    (16.666666666666668, 50.0)
    """
    errors = length = wrong = 0
    for guess, refs in zip(predictions, references, strict=True):
        distance, size = min((edit_distance(guess, r), len(r)) for r in refs)
        errors, length, wrong = errors + distance, length + size, wrong + (distance > 0)
    return 100 * errors / length, 100 * wrong / len(predictions)


@dataclass(frozen=True)
class G2PConfig:
    """One G2P run; every field goes to ``config.json``. ``max_train_words`` caps the
    training words (the first of the shuffled split) to size a run, ``max_test_words`` the
    validation and test words; the alphabets are those of the whole training part."""

    embedding_size: int = 64
    hidden_size: int = 128
    attention: Literal["dot", "general", "additive"] = "general"
    epochs: int = 10
    minibatch_size: int = 64
    learning_rate: float = 0.003
    clip_norm: float = 5.0
    patience: int = 3
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    max_train_words: int | None = None
    max_test_words: int | None = None
    stress: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("embedding_size", "hidden_size", "epochs", "minibatch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")


@dataclass
class G2PResult:
    """Test phoneme and word error rates (%) next to the published bi-LSTM figures."""

    per: float
    wer: float
    published_per: float
    published_wer: float
    test_words: int
    train_words: int
    epochs: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _examples(
    words: Sequence[str],
    lexicon: dict[str, list[tuple[str, ...]]],
    letters: Any,
    phonemes: Any,
) -> list[dict[str, Tensor]]:
    """One example per (word, pronunciation): ``letters``, ``decoder_input`` and ``phones``
    (the reference then ``</s>``), int64 ``[T]`` each."""
    examples = []
    for word in words:
        x = letters.encode(list(word))
        for pron in lexicon[word]:
            ids = phonemes.encode([BOS, *pron, EOS])
            examples.append({"letters": x, "decoder_input": ids[:-1], "phones": ids[1:]})
    return examples


def predict(
    model: G2PModel, words: Sequence[str], letters: Any, phonemes: Any, minibatch_size: int = 256
) -> list[list[str]]:
    """Greedy pronunciations of ``words`` (letters known to ``letters``)."""
    model.eval()
    out: list[list[str]] = []
    bos, eos = phonemes.id(BOS), phonemes.id(EOS)
    with torch.no_grad():
        for i in range(0, len(words), minibatch_size):
            chunk = words[i : i + minibatch_size]
            x = SequenceBatch.from_list([letters.encode(list(w)) for w in chunk])
            limit = 2 * max(len(w) for w in chunk) + 5
            out += [phonemes.decode(ids) for ids in model.greedy(x, bos, eos, limit)]
    return out


def train_g2p(
    config: G2PConfig,
    dictionary: str | Path | None = None,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> G2PResult:
    """Train on the training words, report test PER and WER (see the module docstring).

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``vocabularies.json``, ``metrics.csv``, ``curves.png``, ``predictions.tsv`` and
    ``report.md``.
    """
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.data.text import Vocabulary
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

    path = Path(dictionary) if dictionary is not None else default_dictionary()
    lexicon = read_cmudict(path, stress=config.stress)
    train, val, test = split_words(list(lexicon), config.split, config.seed)
    letters = Vocabulary.build([list(w) for w in train], pad=None, unk=None)
    phonemes = Vocabulary.build([p for w in train for p in lexicon[w]], pad=None, unk=None)
    phonemes = Vocabulary([*phonemes.tokens, BOS, EOS], pad=None, unk=None)
    # the symbols come from the whole training part; a cap only shortens what is trained on
    if config.max_train_words is not None:
        train = train[: config.max_train_words]
    if config.max_test_words is not None:
        test, val = test[: config.max_test_words], val[: config.max_test_words]
    for name, part in (("validation", val), ("test", test)):
        for word in part:
            unseen = sorted(set(word) - set(letters.tokens))
            unseen_p = sorted({p for pr in lexicon[word] for p in pr} - set(phonemes.tokens))
            if unseen or unseen_p:
                raise ValueError(
                    f"{path}: the {name} word {word!r} holds {unseen or unseen_p}, never seen "
                    "in the training words; use another seed or split"
                )
    sets = [_examples(p, lexicon, letters, phonemes) for p in (train, val)]
    torch.manual_seed(config.seed)
    model = G2PModel(
        len(letters), len(phonemes), config.embedding_size, config.hidden_size, config.attention
    )
    run = RunDirectory(run_dir) if run_dir is not None else None
    callbacks: list[Any] = [EarlyStopping(patience=config.patience, restore_best=True)]
    if progress:
        callbacks.insert(0, ProgressPrinter(freq=0, num_epochs=config.epochs, tag="g2p"))
    if run is not None:
        callbacks.append(CSVLogger(run.metrics_csv))
    trainer = Trainer(
        model,
        Criterion(cross_entropy_with_softmax, classification_error),
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        input_streams=("letters", "decoder_input"),
        target_stream="phones",
        clip_norm=config.clip_norm,
        callbacks=callbacks,
    )

    def source(examples: list[dict[str, Tensor]], training: bool) -> MinibatchSource:
        return MinibatchSource(
            examples,
            config.minibatch_size,
            unit="sequences",
            randomize=training,
            seed=config.seed,
            max_sweeps=None if training else 1,
            bucket=8 if training else None,
        )

    started = time.perf_counter()
    summary = trainer.fit(
        source(sets[0], True), epochs=config.epochs, validation=source(sets[1], False)
    )
    seconds = time.perf_counter() - started
    guesses = predict(model, test, letters, phonemes)
    per, wer = score(guesses, [lexicon[w] for w in test])
    result = G2PResult(
        per, wer, PUBLISHED_PER, PUBLISHED_WER, len(test), len(train), len(summary.history), seconds
    )
    if run is not None:
        run.write_config({**asdict(config), "dictionary": str(path)})
        run.save_model(model)
        (run.path / "vocabularies.json").write_text(
            json.dumps({"letters": letters.to_dict(), "phonemes": phonemes.to_dict()}) + "\n"
        )
        (run.path / "predictions.tsv").write_text(
            "".join(
                f"{w}\t{' '.join(g)}\t{' | '.join(' '.join(r) for r in lexicon[w])}\n"
                for w, g in zip(test, guesses, strict=True)
            )
        )
        run.plot_curves(title="G2P (cross entropy per phoneme)")
        run.write_report(
            "Grapheme to phoneme (CMUdict)",
            [
                ("rnnkit bi-LSTM + attention, greedy", round(per, 2), round(wer, 2)),
                ("Yao & Zweig 2015 bi-LSTM (their split)", PUBLISHED_PER, PUBLISHED_WER),
            ],
            header=("model", "PER %", "WER %"),
            notes=[
                f"Split by word, seeded ({config.seed}): {len(train)} training, {len(val)} "
                f"validation, {len(test)} test words; all pronunciations of a word in one part; "
                "a prediction is correct when it equals any of the word's pronunciations.",
                f"Stress digits {'kept' if config.stress else 'removed'}; "
                f"{result.epochs} epochs, {seconds:.0f} s.",
            ],
        )
    return result


def _load_run(run_dir: Path) -> tuple[G2PModel, Any, Any]:
    from rnnkit.data.text import Vocabulary
    from rnnkit.saving import load

    vocab_file = run_dir / "vocabularies.json"
    if not vocab_file.is_file():
        raise ValueError(
            f"{run_dir}: expected a run directory of 'rnnkit g2p train' (with "
            "vocabularies.json), found none"
        )
    state = json.loads(vocab_file.read_text())
    model = load(run_dir)
    if not isinstance(model, G2PModel):
        raise ValueError(f"{run_dir}: expected a G2P model, found {type(model).__name__}")
    return model, Vocabulary.from_dict(state["letters"]), Vocabulary.from_dict(state["phonemes"])


def pronounce(run_dir: str | Path, words: Sequence[str]) -> list[list[str]]:
    """Greedy pronunciations of ``words`` (upper-cased) by a trained run.

    Raises:
        ValueError: a word with letters the run never saw, naming the word and the letters.
    """
    model, letters, phonemes = _load_run(Path(run_dir))
    upper = [w.upper() for w in words]
    for word in upper:
        unseen = sorted(set(word) - set(letters.tokens))
        if unseen or not word:
            raise ValueError(
                f"word {word!r}: expected letters of the training words "
                f"({''.join(letters.tokens)!r}), found {unseen or 'an empty word'}"
            )
    return predict(model, upper, letters, phonemes)


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit g2p train`` and ``rnnkit g2p predict RUN_DIR WORD...``."""
    p = sub.add_parser(
        "g2p",
        help="grapheme to phoneme on CMUdict: train an encoder-decoder, or predict",
        description="Train a bidirectional-LSTM encoder and an attention LSTM decoder on a "
        "CMUdict-format dictionary (split by word) and report phoneme and word error rates, "
        "or pronounce words with a trained run.",
    )
    actions = p.add_subparsers(dest="g2p_action", required=True)
    t = actions.add_parser("train", help="train and score on held-out words")
    t.add_argument("--dictionary", type=Path, default=None, help="default: CMUdict")
    t.add_argument("--hidden-size", type=int, default=128)
    t.add_argument("--attention", choices=("dot", "general", "additive"), default="general")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--max-train-words", type=int, default=None)
    t.add_argument("--stress", action="store_true", help="keep the stress digits")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--run-dir", type=Path, default=Path("runs") / "g2p")
    r = actions.add_parser("predict", help="pronounce words with a trained run")
    r.add_argument("run_dir", type=Path)
    r.add_argument("words", nargs="+")

    def run(args: Any) -> int:
        if args.g2p_action == "predict":
            for word, phones in zip(args.words, pronounce(args.run_dir, args.words), strict=True):
                print(f"{word.upper()}\t{' '.join(phones)}")
            return 0
        config = G2PConfig(
            hidden_size=args.hidden_size,
            attention=args.attention,
            epochs=args.epochs,
            max_train_words=args.max_train_words,
            stress=args.stress,
            seed=args.seed,
        )
        result = train_g2p(config, args.dictionary, args.run_dir)
        print(
            f"test PER {result.per:.2f} % WER {result.wer:.2f} % (Yao & Zweig 2015 bi-LSTM, "
            f"their split: PER {PUBLISHED_PER} % WER {PUBLISHED_WER} %)"
        )
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"data": "cmudict", "split": "by word", **result.as_dict()}))
        return 0

    return {"g2p": run}
