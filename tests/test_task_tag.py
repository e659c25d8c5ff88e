"""The tagging recipe and the CoNLL-2005 SRL reader: hand-made files, golden tags, learning."""

import json
import random

import pytest
import torch
from conftest import SHARED_DATA
from torch import nn

import rnnkit.cli
from rnnkit import SequenceBatch
from rnnkit.data.errors import ReaderError
from rnnkit.data.srl import bio_to_spans, brackets_to_spans, read_srl, span_scores, spans_to_bio
from rnnkit.tasks.tag import (
    TagConfig,
    TokenFeatures,
    most_frequent_tag_accuracy,
    read_documents,
    split_documents,
    tag,
    token_features,
    token_shape,
)

BROWN = SHARED_DATA / "brown"
needs_brown = pytest.mark.skipif(not BROWN.is_dir(), reason="../shared/data is not present")


pytestmark = pytest.mark.usefixtures("one_thread")


# A CoNLL-2005 style file: word, POS, parse, NE, predicate lemma, one argument column per
# predicate. Sentence 1 has two predicates ("said", "rose"); sentence 2 has none.
CONLL05 = """\
Sales     NNS  (S1(S(NP*)  *  -     (A1*)   (A1*
rose      VBD  (VP*        *  rise  (V*)    *
,         ,    *           *  -     *       *
the       DT   (NP*        *  -     (A4*    *
company   NN   *)          *  -     *)      *)
said      VBD  (VP*)       *  say   *       (V*)
.         .    *))         *  -     *       *

Hello     UH   (S1(INTJ*))  *  -
"""


def test_srl_reader_gives_one_bio_example_per_predicate(tmp_path):
    path = tmp_path / "test.wsj"
    path.write_text(CONLL05)
    examples = read_srl(path)
    assert len(examples) == 2
    rose, said = examples  # in the order of the predicates
    assert said["words"][:2] == ["Sales", "rose"] and said["pos"][1] == "VBD"
    assert said["predicate"] == ["0", "0", "0", "0", "0", "1", "0"]
    assert said["tags"] == ["B-A1", "I-A1", "I-A1", "I-A1", "I-A1", "B-V", "O"]
    assert rose["predicate"] == ["0", "1", "0", "0", "0", "0", "0"]
    assert rose["tags"] == ["B-A1", "B-V", "O", "B-A4", "I-A4", "O", "O"]
    assert bio_to_spans(rose["tags"]) == [("A1", 0, 1), ("V", 1, 2), ("A4", 3, 5)]


def test_srl_reader_errors_name_line_and_column(tmp_path):
    bad = tmp_path / "bad.wsj"
    bad.write_text(CONLL05.replace("(A1*)   (A1*", "(A1*)   *   "))  # A1 of "said" unopened
    column = CONLL05.splitlines()[4].rindex("*)") + 1
    with pytest.raises(
        ReaderError, match=rf"bad\.wsj:5:{column}: argument column 2: '\*\)' closes"
    ):
        read_srl(bad)
    short = tmp_path / "short.wsj"
    short.write_text(
        CONLL05.replace("said      VBD  (VP*)       *  say   *       (V*)", "said VBD")
    )
    with pytest.raises(ReaderError, match=r"short\.wsj:6:1: expected 7 columns"):
        read_srl(short)
    extra = tmp_path / "extra.wsj"
    extra.write_text("a DT * * - (A0*)\n")
    with pytest.raises(ReaderError, match="one argument column per predicate"):
        read_srl(extra)


def test_brackets_bio_and_spans_round_trip_on_random_spans():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        cuts = sorted(rng.sample(range(n + 1), rng.randint(0, min(n + 1, 6))))
        spans = [
            (rng.choice(["A0", "A1", "AM-TMP", "C-A1"]), a, b)
            for a, b in zip(cuts[::2], cuts[1::2], strict=False)
            if a < b
        ]
        column = ["*"] * n
        for label, a, b in spans:
            column[a] = f"({label}" + column[a]
            column[b - 1] = column[b - 1] + ")"
        assert brackets_to_spans(column) == spans
        assert bio_to_spans(spans_to_bio(spans, n)) == spans
    assert brackets_to_spans(["(A0*", "*A0)"]) == [("A0", 0, 2)]  # CoNLL-2004 closing form


def test_span_scores_by_hand():
    gold = [["B-A0", "I-A0", "B-V", "B-A1", "I-A1"], ["B-A2", "O", "B-V"]]
    pred = [["B-A0", "I-A0", "B-V", "B-A1", "O"], ["B-A2", "B-A3", "B-V"]]
    # gold spans (V excluded): A0, A1, A2 = 3; predicted: A0, A1', A2, A3 = 4; right: A0, A2
    p, r, f = span_scores(gold, pred)
    assert (p, r) == (2 / 4, 2 / 3) and f == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_token_features_golden():
    assert token_features("Atlanta's") == ("atlanta's", "'s", "a's", "Xx.")
    assert [token_shape(w) for w in ("THE", "iPod", "1,000", "well-known", ".", "A-1")] == [
        "X",
        "xX",
        "d.",
        "x-",
        ".",
        "Xd-",
    ]


def test_token_features_layer_matches_torch_embeddings():
    torch.manual_seed(0)
    layer = TokenFeatures([7, 4, 3], [5, 2, 1])
    ids = [torch.tensor([[6, 0, 2], [1, 3, 0]]), torch.tensor([[2, 2, 1]])]
    out = layer(SequenceBatch.from_list(ids)).to_list()
    tables = [e.weight for e in layer.embeddings]
    for got, x in zip(out, ids, strict=True):
        want = torch.cat([nn.functional.embedding(x[:, k], tables[k]) for k in range(3)], 1)
        torch.testing.assert_close(got, want)


def test_most_frequent_tag_by_hand():
    train = [{"words": ["a", "run", "run", "run", "dog"], "tags": ["at", "vb", "nn", "vb", "nn"]}]
    test = [{"words": ["run", "a", "cat", "dog"], "tags": ["nn", "at", "nn", "nn"]}]
    # run -> vb (wrong), a -> at, cat unknown -> most frequent overall (vb, 2 of 5: wrong), dog
    assert most_frequent_tag_accuracy(train, test) == 2 / 4


def test_split_documents_is_disjoint_and_seeded():
    docs = [f"c{i:03d}" for i in range(500)]
    a, b, c = split_documents(docs, seed=0)
    assert (len(a), len(b), len(c)) == (400, 50, 50)
    assert sorted(a + b + c) == docs
    assert split_documents(docs, seed=0) == (a, b, c) != split_documents(docs, seed=1)


def srl_like(rng: random.Random, n: int) -> list[dict[str, list[str]]]:
    """Same words, different predicate positions: the tags follow the indicator column only.
    The token before the predicate is B-A0, the predicate B-V, the two after it B-A1 I-A1."""
    vocab = ["saw", "the", "dog", "ran", "cat", "ate", "a", "fish"]
    out = []
    for _ in range(n):
        words = [rng.choice(vocab) for _ in range(rng.randint(5, 9))]
        p = rng.randrange(1, len(words) - 2)
        tags = ["O"] * len(words)
        tags[p - 1], tags[p], tags[p + 1], tags[p + 2] = "B-A0", "B-V", "B-A1", "I-A1"
        indicator = ["1" if i == p else "0" for i in range(len(words))]
        out.append({"words": words, "predicate": indicator, "tags": tags})
    return out


def test_tagger_uses_the_predicate_column(tmp_path):
    rng = random.Random(0)
    parts = (srl_like(rng, 300), srl_like(rng, 40), srl_like(rng, 60))
    config = TagConfig(
        hidden_size=16,
        word_dim=8,
        affix_dim=4,
        epochs=12,
        patience=12,
        minibatch_size=200,
        learning_rate=0.02,
        dropout=0.0,
    )
    result = tag(parts, config, tmp_path / "run", extra_columns=["predicate"], progress=False)
    # the words alone say nothing (most-frequent tag ~0.45); measured 1.00 and span F1 1.00
    assert result.baseline < 0.6
    assert result.accuracy >= 0.95 and result.span_f1 is not None and result.span_f1 >= 0.9
    assert (tmp_path / "run" / "vocabularies.json").is_file()


@needs_brown
def test_tagger_beats_most_frequent_tag_on_a_brown_slice():
    files = [BROWN / f"ca{i:02d}" for i in range(1, 13)] + [BROWN / "cb01", BROWN / "cb02"]
    docs = read_documents(files)
    parts = (
        [s for _, d in docs[:11] for s in d],
        [s for _, d in docs[11:12] for s in d],
        [s for _, d in docs[12:] for s in d],
    )
    config = TagConfig(
        hidden_size=32,
        word_dim=32,
        affix_dim=16,
        epochs=3,
        patience=3,
        minibatch_size=500,
        learning_rate=0.01,
        dropout=0.1,
    )
    result = tag(parts, config, progress=False)
    # measured: baseline 0.7869 (11 news files to train, 2 editorials to test), tagger 0.858
    # after 3 epochs (0.711 on the 1,003 unknown words)
    assert result.baseline == pytest.approx(0.7869, abs=1e-4)
    assert result.accuracy > result.baseline + 0.05


def test_command_on_brown_files_and_bad_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rnnkit.cli, "TASK_MODULES", ("rnnkit.tasks.tag",))
    files = [str(BROWN / f"cr0{i}") for i in range(1, 4)]
    if not BROWN.is_dir():
        pytest.skip("../shared/data is not present")
    argv = ["tag", *files, "--epochs", "1", "--hidden-size", "8", "--run-dir", str(tmp_path / "r")]
    assert rnnkit.cli.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        line["split"].startswith("by documents: 3 files") and "most_frequent_tag_accuracy" in line
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("The/at cat/nn\nsat on/in\n")
    assert rnnkit.cli.main(["tag", str(bad), *files[:2]]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"rnnkit tag: error: {bad}:2:1: expected word/tag with a non-empty word and tag, "
        "found 'sat'\n"
    )
