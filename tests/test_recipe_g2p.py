"""rnnkit g2p: Attention against a per-sequence loop, greedy decoding against the
teacher-forced pass, the dictionary reader, split and scores, and the recipe end to end (run
directory, predict, the predict action, a fresh rnnkit.load, diagnose, argument errors)."""

import csv
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

import rnnkit.cli
from rnnkit import SequenceBatch
from rnnkit.data.cmudict import edit_distance, read_cmudict, read_words, score, split_words
from rnnkit.layers.attention import Attention, G2PModel
from rnnkit.recipes.g2p import RECIPE, G2PConfig
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT

CMUDICT = SHARED_DATA / "cmudict" / "dict.txt"
SOUNDS = {"A": "AE1", "B": "B", "C": "K", "D": "D", "E": "EH0", "F": "F", "G": "G", "H": "HH"}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _reference_attention(attend: Attention, query: torch.Tensor, keys: torch.Tensor):
    """One query [Q] over one sequence's keys [S, K], written out per kind."""
    if attend.kind == "dot":
        scores = keys @ query
    elif attend.kind == "general":
        scores = keys @ (query @ attend.weight)
    else:
        hidden = torch.tanh(attend.query_proj.weight @ query + attend.key_proj(keys))
        scores = hidden @ attend.v
    weights = torch.softmax(scores, dim=0)
    return weights @ keys, weights


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_equals_a_loop_over_each_sequence(kind):
    torch.manual_seed(0)
    attend = Attention(4, 4, kind, attention_size=3).double()
    keys_list = [torch.randn(n, 4, dtype=torch.float64) for n in (3, 5, 1)]
    query_list = [torch.randn(n, 4, dtype=torch.float64) for n in (2, 1, 4)]
    keys = SequenceBatch.from_list(keys_list)
    queries = SequenceBatch.from_list(query_list)
    context = attend(queries, keys).to_list()
    weights = attend.weights(queries, keys).to_list()
    for q, k, c, w in zip(query_list, keys_list, context, weights, strict=True):
        for t in range(q.shape[0]):
            ref_c, ref_w = _reference_attention(attend, q[t], k)
            torch.testing.assert_close(c[t], ref_c, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(w[t, : len(k)], ref_w, rtol=1e-10, atol=1e-12)
            assert not w[t, len(k) :].detach().any()
    # one [B, Q] query per sequence: the first query of each
    firsts = torch.stack([q[0] for q in query_list])
    torch.testing.assert_close(attend(firsts, keys), torch.stack([c[0] for c in context]))
    torch.autograd.gradcheck(
        lambda q, k: attend(q, SequenceBatch.from_list([k[:3], k[3:]])),
        (
            torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 4, dtype=torch.float64, requires_grad=True),
        ),
    )


def test_attention_rejects_mismatched_queries():
    keys = SequenceBatch.from_list([torch.ones(2, 3)])
    with pytest.raises(ValueError, match=r"query: expected 1 queries .* of size 3, found"):
        Attention(3, 3)(torch.ones(2, 3), keys)
    with pytest.raises(ValueError, match=r"kind='dot': expected query_size == key_size"):
        Attention(2, 3, "dot")


def test_greedy_decoding_agrees_with_the_teacher_forced_pass():
    # Feeding the greedy choices back as the decoder input, the teacher-forced pass (RecurrenceFrom
    # over all steps) must choose the same phonemes: the step loop and the scan are one model.
    torch.manual_seed(0)
    model = G2PModel(letters=7, phonemes=9, embedding_size=5, hidden_size=6).eval()
    words = [torch.tensor(w) for w in ([1, 2, 3], [4, 5], [6, 0, 1, 2, 3])]
    letters = SequenceBatch.from_list(words)
    bos, eos = 7, 8
    with torch.no_grad():
        chosen = model.greedy(letters, bos, eos, max_length=6)
        for word, ids in zip(words, chosen, strict=True):
            steps = ids if len(ids) == 6 else [*ids, eos]
            x = SequenceBatch.from_list([word])
            y = SequenceBatch.from_list([torch.tensor([bos, *steps[:-1]])])
            assert model(x, y).data.argmax(-1).tolist() == steps
        # and the batch does not mix its rows: each word alone decodes the same
        alone = [model.greedy(SequenceBatch.from_list([w]), bos, eos, 6)[0] for w in words]
        # model(letters) without a decoder input: the same choices (<s>, </s> the last two
        # ids), each cut at 2 * its letters + 5, then </s> to the width of the batch
        decoded = model(letters)
        long = model.greedy(letters, bos, eos, max_length=15)
    assert alone == chosen
    for row, ids, word in zip(decoded.tolist(), long, words, strict=True):
        cut = ids[: 2 * len(word) + 5]
        assert row[: len(cut)] == cut and set(row[len(cut) :]) == {eos}
    cuts = [ids[: 2 * len(w) + 5] for ids, w in zip(long, words, strict=True)]
    assert decoded.shape[1] == 1 + max(map(len, cuts))


def test_reader_split_and_scores(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text(";;; x\nREAD  R IY1 D\nREAD(1)  R EH1 D\nRED  R EH1 D\nBAD\n")
    with pytest.raises(ValueError, match=r"d.txt:5:1: expected 'WORD  PH1 PH2 ...'"):
        read_cmudict(path)
    path.write_text(";;; x\nREAD  R IY1 D\nREAD(1)  R EH1 D\nRED  R EH1 D\n")
    assert read_cmudict(path) == {
        "READ": [("R", "IY", "D"), ("R", "EH", "D")],
        "RED": [("R", "EH", "D")],
    }
    assert read_cmudict(path, stress=True)["READ"][1] == ("R", "EH1", "D")
    assert [(e.word, e.pronunciations) for e in read_words(path)] == [
        ("READ", (("R", "IY", "D"), ("R", "EH", "D"))),
        ("RED", (("R", "EH", "D"),)),
    ]
    words = [f"W{i}" for i in range(100)]
    parts = split_words(words, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert sorted(itertools.chain(*parts)) == sorted(words)
    assert split_words(words, (0.8, 0.1, 0.1), seed=3) == parts
    # either pronunciation of READ is right; PER uses the nearest one
    per, wer = score([["R", "EH", "D"], ["R", "IY"]], [read_cmudict(path)["READ"]] * 2)
    assert (per, wer) == (100 * 1 / 6, 50.0)
    assert edit_distance("kitten", "sitting") == 3


def _dictionary(path: Path) -> dict[str, list[tuple[str, ...]]]:
    """300 words over the letters A-H, each letter one phoneme (stress digits on two); every
    tenth word has a second pronunciation without its last phoneme."""
    rng = random.Random(0)
    words = sorted({"".join(rng.choices("ABCDEFGH", k=rng.randint(2, 6))) for _ in range(400)})
    lines, lexicon = [";;; a made-up dictionary"], {}
    for i, word in enumerate(words[:300]):
        phones = [SOUNDS[c] for c in word]
        lines.append(f"{word}  {' '.join(phones)}")
        lexicon[word] = [tuple(p.rstrip("01") for p in phones)]
        if i % 10 == 0:
            lines.append(f"{word}(1)  {' '.join(phones[:-1])}")
            lexicon[word].append(tuple(p.rstrip("01") for p in phones[:-1]))
    path.write_text("\n".join(lines) + "\n")
    return lexicon


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("g2p")
    lexicon = _dictionary(folder / "dict.txt")
    run = folder / "run"
    argv = ["g2p", "train", "--dictionary", str(folder / "dict.txt"), "--embedding-size", "8"]
    argv += ["--hidden-size", "12", "--validation-fraction", "0.1", "--test-fraction", "0.1"]
    argv += ["--epochs", "3", "--minibatch-size", "16", "--learning-rate", "0.01"]
    assert rnnkit.cli.main([*argv, "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    return run, lexicon, folder


def test_the_run_directory_holds_the_contract_and_the_test_words(g2p_run):
    run, lexicon, _ = g2p_run
    assert sorted(p.name for p in run.iterdir()) == sorted(CONTRACT)
    result = json.loads((run / "run.json").read_text())["result"]
    rows = _read_csv(run / "predictions.csv")
    _, _, test = split_words(list(lexicon), (0.8, 0.1, 0.1), seed=0)
    assert len(lexicon) == 300
    assert [r["id"] for r in rows] == test and result["test_words"] == len(test) == 30
    for row in rows:
        refs = [tuple(t.split()) for t in row["target"].split(" | ")]
        assert refs == lexicon[row["id"]]
        guess = row["prediction"].split()
        distance = min(edit_distance(guess, r) for r in refs)
        assert int(row["edit_distance"]) == distance and int(row["correct"]) == (distance == 0)
    per, wer = score([r["prediction"].split() for r in rows], [lexicon[w] for w in test])
    assert (result["per"], result["wer"]) == pytest.approx((per, wer))
    assert result["baselines"]["Yao & Zweig 2015 bi-LSTM, published (their own split)"] == {
        "per": 5.45,
        "wer": 23.55,
    }


def test_predict_a_word_list_and_a_dictionary_file(g2p_run, tmp_path):
    run, lexicon, _ = g2p_run
    expected = {r["id"]: r for r in _read_csv(run / "predictions.csv")}
    words = list(expected)[:10]
    plain = tmp_path / "words.txt"
    plain.write_text("".join(f"{w.lower()}\n" for w in words))
    out = tmp_path / "p.csv"
    assert rnnkit.cli.main(["predict", str(run), str(plain), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert [r["id"] for r in rows] == words
    assert [r["prediction"] for r in rows] == [expected[w]["prediction"] for w in words]
    assert all(r["target"] == "" for r in rows)
    entries = tmp_path / "entries.txt"
    entries.write_text("".join(f"{w}  {' '.join(lexicon[w][0])}\n" for w in words))
    assert rnnkit.cli.main(["predict", str(run), str(entries), "--out", str(out)]) == 0
    for row in _read_csv(out):
        assert row["target"] == " ".join(lexicon[row["id"]][0])
        assert row["prediction"] == expected[row["id"]]["prediction"]


def test_predict_names_an_unknown_letter(g2p_run, tmp_path, capsys):
    run, _, _ = g2p_run
    bad = tmp_path / "bad.txt"
    bad.write_text("abc\n  abz\n")
    assert rnnkit.cli.main(["predict", str(run), str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.txt:2:5: word 'ABZ'" in err, err


def test_the_predict_action_pronounces_words(g2p_run, capsys):
    run, _, _ = g2p_run
    expected = {r["id"]: r["prediction"] for r in _read_csv(run / "predictions.csv")}
    words = list(expected)[:3]
    assert rnnkit.cli.main(["g2p", "predict", str(run), *[w.lower() for w in words]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{w}\t{expected[w]}" for w in words]
    assert rnnkit.cli.main(["g2p", "predict", str(run), "abz"]) == 1
    err = capsys.readouterr().err
    assert "word 'ABZ'" in err and "['Z']" in err and len(err.strip().splitlines()) == 1


def test_a_fresh_interpreter_loads_the_model_without_the_recipe(g2p_run):
    run, _, _ = g2p_run
    rows = _read_csv(run / "predictions.csv")
    code = f"""
import json, sys
import rnnkit, torch
model = rnnkit.load({str(run)!r}).eval()
assert "rnnkit.recipes" not in sys.modules and "rnnkit.recipes.g2p" not in sys.modules
assert type(model).__module__ == "rnnkit.layers.attention"
data = json.loads(open({str(run / "run.json")!r}).read())["data"]
letters, phonemes = data["letters"]["tokens"], data["phonemes"]["tokens"]
out = []
with torch.no_grad():
    for word in {[r["id"] for r in rows]!r}:
        x = rnnkit.SequenceBatch.from_list([torch.tensor([letters.index(c) for c in word])])
        ids = model.greedy(x, phonemes.index("<s>"), phonemes.index("</s>"), 2 * len(word) + 5)
        out.append(" ".join(phonemes[i] for i in ids[0]))
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [r["prediction"] for r in rows]


def test_diagnose(g2p_run, tmp_path, capsys):
    run, _, _ = g2p_run
    assert rnnkit.cli.main(["diagnose", str(run), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    assert "|dL/dh_t|" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["g2p", "--hidden-size", "-1"], "--hidden-size"),
        (["g2p", "train", "--max-train-words", "0"], "--max-train-words"),
        (["g2p", "--attention", "bilinear"], "--attention"),
        (["g2p", "--test-fraction", "1.5"], "--test-fraction"),
        (["g2p", "--validation-fraction", "0.6", "--test-fraction", "0.5"], "test_fraction"),
        (["g2p", "--preset", "huge"], "--preset"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rnnkit.cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err


@pytest.mark.skipif(not CMUDICT.is_file(), reason="../shared/data/cmudict/dict.txt is absent")
def test_a_short_run_learns_to_pronounce(tmp_path):
    # 3,000 training words, two epochs, 300 held-out words: an empty guess scores PER 100 %,
    # WER 100 %; the threshold is PER < 60 %, WER < 95 %.
    config = G2PConfig(
        embedding_size=32,
        hidden_size=48,
        max_train_words=3000,
        max_test_words=300,
        train=TrainSettings(
            epochs=2, minibatch_size=32, learning_rate=0.01, clip_norm=5.0, patience=3
        ),
    )
    result = run_recipe(RECIPE, config, tmp_path / "run", progress=False, log=lambda _: None)
    assert result.figures["test_words"] == 300
    assert result.figures["per"] < 60.0 and result.figures["wer"] < 95.0, result.figures
    assert len(_read_csv(tmp_path / "run" / "predictions.csv")) == 300
