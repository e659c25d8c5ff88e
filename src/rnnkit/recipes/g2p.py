"""``rnnkit g2p``: grapheme to phoneme on a CMUdict-format dictionary, with attention.

The model (:class:`~rnnkit.layers.attention.G2PModel`, after Luong et al. 2015 as used for G2P
by Yao & Zweig 2015): letter embeddings through a bidirectional LSTM, an LSTM decoder started
from the encoder's ends and trained with the reference phonemes as its input (teacher
forcing), attention of each decoder output over the encoder states; greedy decoding up to
</s>. The words are split at random (seeded) by word, so every pronunciation of a word lies in
one part; stress digits are removed by default (39 phonemes). A predicted pronunciation is
correct when it equals any of the word's pronunciations; PER is the edit distance to the
nearest one over its length, summed over the test words; WER the share of words with no exact
match. ``rnnkit g2p predict RUN_DIR WORD...`` pronounces words; ``rnnkit predict RUN_DIR FILE``
reads one word a line (or CMUdict lines, whose pronunciations become the targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option, require_one_model

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import Tensor, nn

__all__ = ["PUBLISHED", "RECIPE", "G2PConfig", "G2PRecipe", "pronounce"]

PUBLISHED = {"per": 5.45, "wer": 23.55}  # Yao & Zweig 2015, bi-directional LSTM, their split
_PUBLISHED_NAME = "Yao & Zweig 2015 bi-LSTM, published (their own split)"


@dataclass(frozen=True)
class G2PConfig:
    """One G2P run (see the module docstring)."""

    dictionary: Path | None = option(
        None, "CMUdict-format dictionary (default: ../shared/data/cmudict/dict.txt)"
    )
    stress: bool = option(False, "keep the stress digits of the phonemes")
    validation_fraction: float = option(
        0.05, "share of the words held out for validation", low=0.0, high=1.0, low_open=True
    )
    test_fraction: float = option(
        0.05, "share of the words held out for the test", low=0.0, high=1.0, low_open=True
    )
    max_train_words: int | None = option(
        None, "train on the first N training words (none: all of them)", low=1
    )
    max_test_words: int | None = option(
        None, "keep the first N validation and N test words (none: all)", low=1
    )
    embedding_size: int = option(64, "letter and phoneme embedding size", low=1)
    hidden_size: int = option(128, "encoder units per direction (the decoder has twice)", low=1)
    attention: str = option(
        "general",
        "attention scores (Luong dot/general, Bahdanau additive)",
        choices=("dot", "general", "additive"),
    )
    train: TrainSettings = option(
        TrainSettings(epochs=2, minibatch_size=128, learning_rate=0.003, clip_norm=5.0, patience=3),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "validation_fraction + test_fraction: expected less than 1, found "
                f"{self.validation_fraction + self.test_fraction:g}"
            )
        require_one_model(self.train, "greedy decoders do not average")


class G2PRecipe(Recipe[G2PConfig]):
    name = "g2p"
    summary = "grapheme to phoneme: encoder-decoder with attention on CMUdict"
    description = __doc__ or ""
    config = G2PConfig
    presets = {
        "published": {"max_train_words": 40_000},
        "full": {"epochs": 20},
    }
    preset_help = {
        "published": "docs/results.md row 1: 2 epochs over the first 40,000 training words",
        "full": "docs/results.md row 2: up to 20 epochs over all training words",
    }
    input_streams = ("letters", "decoder_input")
    predict_streams = ("letters",)
    target_stream = "phones"
    bucket = 8
    metric = Metric("token error (teacher forced)", percent=True)
    actions = {"predict": "pronounce words with a trained run"}

    def load_data(self, config: G2PConfig) -> RecipeData:
        from rnnkit.data.cmudict import (
            BOS,
            EOS,
            default_dictionary,
            pronunciation_examples,
            read_cmudict,
            split_words,
        )
        from rnnkit.data.text import Vocabulary

        path = config.dictionary if config.dictionary is not None else default_dictionary()
        lexicon = read_cmudict(path, stress=config.stress)
        v, t = config.validation_fraction, config.test_fraction
        train, val, test = split_words(list(lexicon), (1 - v - t, v, t), config.train.seed)
        letters = Vocabulary.build([list(w) for w in train], pad=None, unk=None)
        phonemes = Vocabulary.build([p for w in train for p in lexicon[w]], pad=None, unk=None)
        phonemes = Vocabulary([*phonemes.tokens, BOS, EOS], pad=None, unk=None)
        # the symbols come from the whole training part; a cap only shortens what is trained on
        train = train[: config.max_train_words]
        val, test = val[: config.max_test_words], test[: config.max_test_words]
        for name, part in (("validation", val), ("test", test)):
            for word in part:
                unseen = sorted(set(word) - set(letters.tokens))
                unseen += sorted({p for pr in lexicon[word] for p in pr} - set(phonemes.tokens))
                if unseen:
                    raise ValueError(
                        f"{path}: the {name} word {word!r} holds {unseen}, never seen in the "
                        "training words; use another seed or split"
                    )
        info = {"letters": letters.to_dict(), "phonemes": phonemes.to_dict()}
        return RecipeData(
            pronunciation_examples(train, lexicon, letters, phonemes),
            pronunciation_examples(val, lexicon, letters, phonemes),
            [_word_example((letters, phonemes), w, lexicon[w]) for w in test],
            inputs=[path],
            ids=list(test),
            info=info,
            description=f"{path.name}: {len(lexicon):,} words split by word (seed "
            f"{config.train.seed}): {len(train):,} training, {len(val):,} validation, "
            f"{len(test):,} test; {len(letters)} letters, {len(phonemes) - 2} phonemes",
        )

    def build_model(self, config: G2PConfig, data: RecipeData) -> nn.Module:
        from rnnkit.layers.attention import G2PModel

        sizes = (len(data.info["letters"]["tokens"]), len(data.info["phonemes"]["tokens"]))
        e, h, kind = config.embedding_size, config.hidden_size, config.attention
        return G2PModel(*sizes, e, h, kind)  # type: ignore[arg-type]

    def criterion(self, config: G2PConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, classification_error, cross_entropy_with_softmax

        return Criterion(cross_entropy_with_softmax, classification_error)

    def score(
        self, config: G2PConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        from rnnkit.data.cmudict import score

        phonemes = _vocabularies(data.info)[1]
        guesses = [_phones(phonemes, p) for p in predictions]
        references = [_references(phonemes, e["references"]) for e in data.test]
        per, wer = score(guesses, references)
        return {"per": per, "wer": wer, "test_words": len(guesses)}

    def baselines(self, config: G2PConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        return {_PUBLISHED_NAME: dict(PUBLISHED)}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Per word: its pronunciations (``|`` between them, none for a plain word list), the
        greedy guess, the edit distance to the nearest pronunciation and whether it is one."""
        from rnnkit.data.cmudict import nearest

        phonemes = _vocabularies(info)[1]
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            guess = _phones(phonemes, prediction)
            refs = _references(phonemes, example["references"])
            row: dict[str, Any] = {"target": " | ".join(" ".join(r) for r in refs)}
            row["prediction"] = " ".join(guess)
            if refs:
                distance = nearest(guess, refs)[0]
                row.update(edit_distance=distance, correct=int(distance == 0))
            rows.append(row)
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: G2PConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """One word a line, or CMUdict lines (their pronunciations become the targets)."""
        from rnnkit.data.cmudict import read_words
        from rnnkit.data.errors import ReaderError

        vocabularies = _vocabularies(info)
        letters, phonemes = (set(v.tokens) for v in vocabularies)
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            for entry in read_words(path, stress=config.stress):
                unseen = [(i, c) for i, c in enumerate(entry.word) if c not in letters]
                unseen += [(0, p) for r in entry.pronunciations for p in r if p not in phonemes]
                if unseen:
                    raise ReaderError(
                        f"word {entry.word!r}: expected letters and phonemes of the run's "
                        f"training words, found {unseen[0][1]!r}",
                        path=path,
                        line=entry.line,
                        column=entry.column + unseen[0][0],
                    )
                ids.append(entry.word)
                examples.append(
                    _word_example(vocabularies, entry.word, entry.pronunciations, False)
                )
        return ids, examples

    def notes(self, config: G2PConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        return [
            f"{data.description}; all pronunciations of a word lie in one part, and a "
            "prediction is correct when it equals any of them; greedy decoding. Stress digits "
            f"{'kept' if config.stress else 'removed'}.",
            f"The published row ({_PUBLISHED_NAME}) was measured on another split of CMUdict: "
            "it is a reference figure, not a result on this test part.",
        ]

    def add_action_arguments(self, action: str, parser: Any) -> None:
        parser.add_argument("run_dir", type=Path, help="a run directory of rnnkit g2p")
        parser.add_argument("words", nargs="+", help="words to pronounce (upper-cased)")

    def run_action(self, action: str, args: Any) -> int:
        for word, phones in zip(args.words, pronounce(args.run_dir, args.words), strict=True):
            print(f"{word.upper()}\t{phones}")
        return 0


def pronounce(run_dir: str | Path, words: Sequence[str]) -> list[str]:
    """Greedy pronunciations (phonemes joined by spaces) of ``words`` (upper-cased) by a
    trained run, predicted in batches by the harness.

    Raises:
        ValueError: a word with letters the run never saw, naming the word and the letters.
    """
    from rnnkit.recipes.harness import load_run, predict_examples

    recipe, _, run = load_run(run_dir)
    if recipe.name != "g2p":
        raise ValueError(f"run_dir: expected a run of rnnkit g2p, found one of {recipe.name}")
    vocabularies = _vocabularies(run["data"])
    upper = [w.upper() for w in words]
    for word in upper:
        unseen = sorted(set(word) - set(vocabularies[0].tokens))
        if unseen or not word:
            raise ValueError(
                f"word {word!r}: expected letters of the training words "
                f"({''.join(vocabularies[0].tokens)!r}), found {unseen or 'an empty word'}"
            )
    examples = [_word_example(vocabularies, w, (), False) for w in upper]
    return [row["prediction"] for row in predict_examples(run_dir, upper, examples)[1]]


def _vocabularies(info: Mapping[str, Any]) -> tuple[Any, Any]:
    """The letters and phonemes of a run."""
    from rnnkit.data.text import Vocabulary

    return Vocabulary.from_dict(info["letters"]), Vocabulary.from_dict(info["phonemes"])


def _word_example(
    vocabularies: tuple[Any, Any],
    word: str,
    prons: Sequence[Sequence[str]],
    teacher: bool = True,
) -> dict[str, Any]:
    """``letters`` and ``references`` (every pronunciation followed by </s>); with
    ``teacher`` also the first pronunciation as ``decoder_input`` and ``phones``."""
    from rnnkit.data.cmudict import BOS, EOS

    letters, phonemes = vocabularies
    example = {
        "letters": letters.encode(list(word)),
        "references": phonemes.encode([p for pron in prons for p in (*pron, EOS)] or [EOS]),
    }
    if teacher:
        ids = phonemes.encode([BOS, *prons[0], EOS])
        example.update(decoder_input=ids[:-1], phones=ids[1:])
    return example


def _phones(phonemes: Any, ids: Tensor) -> list[str]:
    """The phonemes of a decoded row, up to its first </s>."""
    from rnnkit.data.cmudict import EOS

    out: list[str] = phonemes.decode(ids)
    return out[: out.index(EOS)] if EOS in out else out


def _references(phonemes: Any, ids: Tensor) -> list[tuple[str, ...]]:
    """The pronunciations of a ``references`` stream (each ended by </s>)."""
    from rnnkit.data.cmudict import EOS

    refs: list[tuple[str, ...]] = []
    current: list[str] = []
    for p in phonemes.decode(ids):
        if p == EOS:
            if current:
                refs.append(tuple(current))
            current = []
        else:
            current.append(p)
    return refs


RECIPE = G2PRecipe()
