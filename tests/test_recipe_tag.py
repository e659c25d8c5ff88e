"""The tagging recipe (``rnnkit tag``) and its pieces: the CoNLL-2005 SRL reader, the token
features, the split by documents and the most-frequent-tag baseline, by hand; the recipe end
to end on a Brown slice (the run directory, predict, a fresh-interpreter load, diagnose); and
learning checks against the baseline."""

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit import SequenceBatch, load
from rnnkit.cli import main
from rnnkit.data.errors import ReaderError
from rnnkit.data.srl import bio_to_spans, brackets_to_spans, read_srl, span_scores, spans_to_bio
from rnnkit.data.tagging import (
    TagVocabularies,
    most_frequent_tag_accuracy,
    read_documents,
    read_sentences,
    split_documents,
    token_features,
    token_shape,
)
from rnnkit.data.text import read_tagged
from rnnkit.layers.tokens import TokenFeatures
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.recipes.tag import RECIPE, TagConfig

BROWN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brown"
needs_brown = pytest.mark.skipif(not BROWN.is_dir(), reason="../shared/data is not present")
SLICE = [BROWN / f"cr0{i}" for i in range(1, 5)]
TINY = ["--epochs", "1", "--hidden-size", "8", "--threads", "1", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def brown_run(tmp_path_factory):
    if not BROWN.is_dir():
        pytest.skip("../shared/data is not present")
    run = tmp_path_factory.mktemp("runs") / "tag"
    assert main(["tag", *map(str, SLICE), *TINY, "--run-dir", str(run)]) == 0
    return run


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


def test_vocabularies_round_trip_and_encode_by_hand():
    sentences = [{"words": ["The", "cat", "the"], "pos": ["D", "N", "D"], "tags": ["a", "b", "a"]}]
    vocab = TagVocabularies.build(sentences, extra_columns=["pos"], min_freq=2)
    again = TagVocabularies.from_dict(json.loads(json.dumps(vocab.to_dict())))
    example = again.encode({"words": ["THE", "dog"], "pos": ["D", "X"], "tags": ["a", "z"]})
    words, suffix2, suffix3, shape, _ = (v.tokens for v in again.inputs)
    assert words == ("<pad>", "<unk>", "the")  # "cat" once: below min_freq
    rows = example["tokens"].tolist()
    # "THE": its word and suffixes known, its shape X never seen in training (<unk>), POS D
    assert "X" not in shape
    assert rows[0] == [2, suffix2.index("he"), suffix3.index("the"), 1, 2]
    assert rows[1][0] == 1 and rows[1][4] == 1  # unknown word, unknown POS
    assert example["tags"].tolist() == [again.tags.tokens.index("a"), 0]  # 0: <unseen>
    assert example.sentence["words"] == ["THE", "dog"]


def test_read_sentences_with_and_without_tags(tmp_path):
    tagged = tmp_path / "t.txt"
    tagged.write_text("The/at cat/nn\n")
    assert read_sentences(tagged) == [{"words": ["The", "cat"], "tags": ["at", "nn"]}]
    plain = tmp_path / "p.txt"
    plain.write_text("The cat\n1/2 of it\n")
    assert read_sentences(plain) == [{"words": ["The", "cat"]}, {"words": ["1/2", "of", "it"]}]
    conll = tmp_path / "c.conll"
    conll.write_text("EU NNP\nrejects VBZ\n\nPeter NNP\n")
    columns = ["words", "pos", "ner"]
    assert read_sentences(conll, "conll", columns, "ner") == [
        {"words": ["EU", "rejects"], "pos": ["NNP", "VBZ"]},
        {"words": ["Peter"], "pos": ["NNP"]},
    ]
    with pytest.raises(ReaderError, match=r"c\.conll:1:7: expected 4 columns"):
        read_sentences(conll, "conll", ["words", "pos", "chunk", "ner"], "ner")


# ----------------------------------------------------------------------------- the recipe


@needs_brown
def test_run_directory_holds_the_contract(brown_run):
    assert {p.name for p in brown_run.iterdir()} == set(CONTRACT)
    info = json.loads((brown_run / "run.json").read_text())
    assert info["recipe"] == "tag" and info["config"]["train"]["epochs"] == 1
    assert {Path(f["path"]).name for f in info["inputs"]} == {p.name for p in SLICE}
    assert info["data"]["split"].startswith("by documents: 4 files shuffled (seed 0)")
    report = (brown_run / "report.md").read_text()
    assert "| most frequent tag |" in report and "Test tokens whose tag never occurs" in report


@needs_brown
def test_predictions_are_the_saved_models_tags(brown_run):
    """Each row against the test file read independently and the reloaded model applied to
    that sentence alone; the test accuracy recomputed from the rows."""
    rows = rows_of(brown_run / "predictions.csv")
    info = json.loads((brown_run / "run.json").read_text())
    name = rows[0]["id"].split(":")[0]
    sentences = read_tagged(BROWN / name)
    assert [r["id"] for r in rows] == [f"{name}:{k + 1}" for k in range(len(sentences))]
    vocab = TagVocabularies.from_dict(info["data"]["vocabularies"])
    model = load(brown_run).eval()
    for k in (0, 1, len(sentences) - 1):
        assert rows[k]["words"].split() == sentences[k]["words"]
        assert rows[k]["target"].split() == sentences[k]["tags"]
        x = SequenceBatch.from_list([vocab.encode(sentences[k])["tokens"]])
        with torch.no_grad():
            ids = model(x).to_list()[0].argmax(-1)
        assert rows[k]["prediction"].split() == vocab.tags.decode(ids)
    pairs = [
        (t, p)
        for r in rows
        for t, p in zip(r["target"].split(), r["prediction"].split(), strict=True)
    ]
    accuracy = sum(t == p for t, p in pairs) / len(pairs)
    assert info["result"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    baseline = info["result"]["baselines"]["most frequent tag"]["test_accuracy"]
    assert 0.5 < baseline < 1


@needs_brown
def test_predict_on_new_files_with_and_without_tags(brown_run, tmp_path):
    rows = rows_of(brown_run / "predictions.csv")
    name = rows[0]["id"].split(":")[0]
    sentences = read_tagged(BROWN / name)[:3]
    tagged = tmp_path / "tagged.txt"
    tagged.write_text(
        "\n".join(" ".join(f"{w}/{t}" for w, t in zip(*s.values(), strict=True)) for s in sentences)
    )
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(" ".join(s["words"]) for s in sentences) + "\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(brown_run), str(tagged), str(plain), "--out", str(out)]) == 0
    got = rows_of(out)
    assert [r["id"] for r in got] == [
        f"{f}:{k}" for f in ("tagged.txt", "plain.txt") for k in (1, 2, 3)
    ]
    for new, saved in zip(got, rows[:3] * 2, strict=True):
        assert new["prediction"] == saved["prediction"] and new["words"] == saved["words"]
    assert [r["target"] for r in got[:3]] == [r["target"] for r in rows[:3]]
    assert [r["target"] for r in got[3:]] == ["", "", ""]


@needs_brown
def test_load_in_a_fresh_interpreter_without_the_recipe(brown_run):
    rows = rows_of(brown_run / "predictions.csv")
    code = (
        "import json, sys, torch, rnnkit\n"
        "from rnnkit.data.tagging import TagVocabularies\n"
        f"run = {str(brown_run)!r}\n"
        "model = rnnkit.load(run).eval()\n"
        "info = json.load(open(run + '/run.json'))['data']\n"
        "vocab = TagVocabularies.from_dict(info['vocabularies'])\n"
        f"words = {rows[1]['words'].split()!r}\n"
        "x = rnnkit.SequenceBatch.from_list([vocab.encode({'words': words})['tokens']])\n"
        "with torch.no_grad():\n"
        "    print(' '.join(vocab.tags.decode(model(x).to_list()[0].argmax(-1))))\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    tags, imported = result.stdout.strip().splitlines()
    assert imported == "False" and tags == rows[1]["prediction"]


@needs_brown
def test_diagnose_a_saved_run(brown_run, capsys):
    assert main(["diagnose", str(brown_run)]) == 0
    assert "forward_layer: |dL/dh_t| from" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--hidden-size", "-1"], "argument --hidden-size: expected an integer >= 1, found -1"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["--dropout", "1"], "dropout: expected a number in [0, 1), found 1.0"),
        (["--test", "a.txt"], "validation and test: give both or neither"),
        (["--format", "conll", "--tag-column", "ner"], "tag_column: expected one of the columns"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tag", "x.txt", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_bad_file_is_one_located_error(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("The/at cat/nn\nsat on/in\n")
    good = tmp_path / "good.txt"
    good.write_text("The/at cat/nn\n")
    assert main(["tag", str(bad), str(good), str(good), "--run-dir", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err == (
        f"rnnkit tag: error: {bad}:2:1: expected word/tag with a non-empty word and tag, "
        "found 'sat'\n"
    )


def srl_like(rng: random.Random, n: int) -> list[str]:
    """CoNLL lines (word, predicate indicator, tag) of ``n`` sentences: same words, different
    predicate positions, so the tags follow the indicator column only. The token before the
    predicate is B-A0, the predicate B-V, the two after it B-A1 I-A1."""
    vocab = ["saw", "the", "dog", "ran", "cat", "ate", "a", "fish"]
    lines = []
    for _ in range(n):
        words = [rng.choice(vocab) for _ in range(rng.randint(5, 9))]
        p = rng.randrange(1, len(words) - 2)
        tags = ["O"] * len(words)
        tags[p - 1], tags[p], tags[p + 1], tags[p + 2] = "B-A0", "B-V", "B-A1", "I-A1"
        lines += [
            f"{w} {int(i == p)} {t}" for i, (w, t) in enumerate(zip(words, tags, strict=True))
        ] + [""]
    return lines


def test_tagger_uses_the_predicate_column(tmp_path):
    rng = random.Random(0)
    files = []
    for name, n in (("train", 300), ("val", 40), ("test", 60)):
        files.append(tmp_path / f"{name}.conll")
        files[-1].write_text("\n".join(srl_like(rng, n)))
    config = TagConfig(
        files=(files[0],),
        validation=(files[1],),
        test=(files[2],),
        format="conll",
        columns=("words", "predicate", "tags"),
        hidden_size=16,
        word_dim=8,
        affix_dim=4,
        dropout=0.0,
        train=TrainSettings(epochs=12, patience=12, minibatch_size=200, learning_rate=0.02),
    )
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    figures = result.figures
    # the words alone say nothing (most-frequent tag ~0.45); measured 1.00 and span F1 1.00
    assert figures["baselines"]["most frequent tag"]["test_accuracy"] < 0.6
    assert figures["test_accuracy"] >= 0.95 and figures["span_f1"] >= 0.9


@needs_brown
def test_tagger_beats_most_frequent_tag_on_a_brown_slice(tmp_path):
    files = [BROWN / f"ca{i:02d}" for i in range(1, 13)] + [BROWN / "cb01", BROWN / "cb02"]
    assert len(read_documents(files)) == 14
    config = TagConfig(
        files=tuple(files[:11]),
        validation=(files[11],),
        test=tuple(files[12:]),
        hidden_size=32,
        word_dim=32,
        affix_dim=16,
        dropout=0.1,
        train=TrainSettings(epochs=3, patience=3, minibatch_size=500, learning_rate=0.01),
    )
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    baseline = result.figures["baselines"]["most frequent tag"]["test_accuracy"]
    # measured: baseline 0.7869 (11 news files to train, 2 editorials to test), tagger 0.858
    # after 3 epochs (0.711 on the 1,003 unknown words)
    assert baseline == pytest.approx(0.7869, abs=1e-4)
    assert result.figures["test_accuracy"] > baseline + 0.05
