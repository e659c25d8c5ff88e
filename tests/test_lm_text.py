"""rnnkit lm on plain text: the contiguous split at paragraph, line, word and character starts,
several files, --valid/--test files, unknown characters, the word level with a vocabulary
limit, other encodings and empty parts; figures recomputed from the saved model step by step
and the compressors called directly on the held-out text."""

import bz2
import csv
import gzip
import itertools
import json
import lzma
import math
import random
import re
from pathlib import Path

import pytest
import torch

import rnnkit.cli
from rnnkit.data.errors import ReaderError
from rnnkit.data.plaintext import Corpus, Speller, read_plain_text, split_fractions
from rnnkit.recipes.lm import sample
from rnnkit.saving import load

WORDS = ["the", "king", "and", "queen", "of", "a", "castle", "ghost", "night", "watch"]
WORDS += ["sword", "poison", "ear", "cup", "play"]
TINY = ["--embedding-size", "6", "--hidden-size", "12", "--window", "16", "--epochs", "2"]
TINY += ["--epoch-chars", "2000", "--threads", "1", "--quiet"]


def _paragraphs(rng: random.Random, count: int, lines: tuple[int, int] = (1, 4)) -> str:
    """``count`` paragraphs of seeded word salad, one to four lines each, a blank line after
    each."""
    out = []
    for _ in range(count):
        body = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for _ in range(rng.randint(*lines))
        ]
        out.append("\n".join(body) + "\n\n")
    return "".join(out)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "predictions.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _paragraph_of(text: str, position: int) -> tuple[int, int]:
    """``[start, end)`` of the paragraph (text between blank lines) holding ``position``."""
    start = text.rfind("\n\n", 0, position)
    end = text.find("\n\n", position)
    return (0 if start < 0 else start + 2), (len(text) if end < 0 else end + 2)


# ---------------------------------------------------------------------------- the split


def test_the_split_cuts_at_paragraph_starts_within_one_paragraph_of_the_targets():
    rng = random.Random(1)
    texts = [("a.txt", _paragraphs(rng, 60)), ("b.txt", _paragraphs(rng, 40))]
    corpus = Corpus.from_texts(texts)
    assert corpus.text == texts[0][1] + texts[1][1]
    split = split_fractions(corpus, (0.8, 0.1, 0.1))
    assert split.level == "paragraph"
    assert "".join(split.parts) == corpus.text  # contiguous: every character once, in order
    n = len(corpus.text)
    for cut, target in zip(split.bounds, (0.8 * n, 0.9 * n), strict=True):
        assert corpus.text[cut - 2 : cut] == "\n\n" and corpus.text[cut] != "\n"
        start, end = _paragraph_of(corpus.text, int(target))
        assert start <= cut <= end, (cut, target, start, end)  # the paragraph of the target
    # the reported places name the file, line and column of the cuts
    a = split.bounds[0] - len(texts[0][1])
    assert a > 0 and corpus.locate(split.bounds[0]) == (
        f"b.txt:{texts[1][1].count(chr(10), 0, a) + 1}:1"
    )


def test_the_split_falls_back_to_lines_then_words_then_characters():
    one_paragraph = "".join(f"line {i} of the speech\n" for i in range(200))
    split = split_fractions(Corpus.from_texts([("p.txt", one_paragraph)]), (0.9, 0.05, 0.05))
    assert split.level == "line"
    assert all(one_paragraph[b - 1] == "\n" for b in split.bounds)
    one_line = " ".join(f"w{i}" for i in range(2000))
    split = split_fractions(Corpus.from_texts([("l.txt", one_line)]), (0.9, 0.05, 0.05))
    assert split.level == "word" and "".join(split.parts) == one_line + "\n"
    assert all(one_line[b - 1] == " " and one_line[b] != " " for b in split.bounds)
    n = len(one_line) + 1
    assert abs(split.bounds[0] - 0.9 * n) < 8 and abs(split.bounds[1] - 0.95 * n) < 8
    split = split_fractions(Corpus.from_texts([("c.txt", "x" * 99)]), (0.9, 0.05, 0.05))
    assert split.level == "character" and split.bounds == (90, 95)
    with pytest.raises(ValueError, match=r"split: a text of 3 characters cannot give"):
        split_fractions(Corpus.from_texts([("t.txt", "ab")]), (0.9, 0.05, 0.05))


def test_reading_other_encodings_and_empty_files(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("first line\nsecond caf\xe9 line\r\n".encode("latin-1"))
    with pytest.raises(
        ReaderError, match=r"latin.txt:2:11: expected UTF-8 text, found the byte 0xe9"
    ):
        read_plain_text(path)
    assert read_plain_text(path, "latin-1") == "first line\nsecond café line\n"
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ReaderError, match=r"empty.txt:1:1: expected text, found an empty file"):
        read_plain_text(tmp_path / "empty.txt")


# ---------------------------------------------------------------------------- runs


def _step_bits(run: Path, text: str, train_text: str) -> float:
    """The reference: the held-out ``text`` scored character by character through the saved
    model's cell, 16 streams each from a fresh state, ``<unk>`` for characters outside the
    vocabulary plus the bits of :func:`_cache_bits` for what each stream's unknown characters
    are, a new one costing ``log2`` of the code points it could be."""
    info = json.loads((run / "run.json").read_text())["data"]
    vocab = info["vocabulary"]
    tokens = ([vocab["unk"]] if vocab["unk"] else []) + vocab["tokens"]
    ids = [tokens.index(c) if c in tokens else 0 for c in text]
    model = load(run)
    embed, recurrence, readout = model.layers
    bounds = [round(i * len(ids) / 16) for i in range(17)]
    total = 0.0
    outside = math.log2(0x110000 - len(tokens))
    with torch.no_grad():
        for a, b in itertools.pairwise(bounds):
            unknown = [c for c in text[a:b] if c not in train_text]
            total += sum(_cache_bits(unknown, lambda _: outside))
            state, prev = None, tokens.index(info["start"]) if a == 0 else ids[a - 1]
            for i in range(a, b):
                state = recurrence.cell(embed(torch.tensor([prev])), state)
                logp = torch.log_softmax(readout(state[0]), -1)[0]
                total -= float(logp[ids[i]]) / math.log(2)
                prev = ids[i]
    return total / len(text)


def _cache_bits(unknown, spell):
    """The reference code of a stream's unknown tokens, in order: the n-th (from 0) is an
    earlier one seen k times with probability k / (n + 1), else new (1 / (n + 1)) and spelled."""
    bits, seen = [], {}
    for n, token in enumerate(unknown):
        if token in seen:
            bits.append(math.log2((n + 1) / seen[token]))
        else:
            bits.append(math.log2(n + 1) + spell(token))
        seen[token] = seen.get(token, 0) + 1
    return bits


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """Two files of paragraphs; the last paragraphs (the test part) hold 'Z' and 'é', never
    seen in training."""
    folder = tmp_path_factory.mktemp("plain")
    rng = random.Random(0)
    first, second = _paragraphs(rng, 50), _paragraphs(rng, 30)
    second += "the Zealous queen\nof the café\n\nthe ghost Zed\nZZ\n"
    (folder / "a.txt").write_text(first)
    (folder / "b.txt").write_text(second)
    run = folder / "run"
    files = f"{folder / 'a.txt'},{folder / 'b.txt'}"
    assert rnnkit.cli.main(["lm", "--text", files, *TINY, "--run-dir", str(run)]) == 0
    return run, first + second, folder


def test_a_plain_run_splits_several_files_and_maps_unseen_characters(plain_run):
    run, text, folder = plain_run
    info = json.loads((run / "run.json").read_text())
    data, result = info["data"], info["result"]
    assert data["files"] == [str(folder / "a.txt"), str(folder / "b.txt")]
    assert [Path(i["path"]).name for i in info["inputs"]] == ["a.txt", "b.txt"]
    sizes = data["characters"]
    assert sizes["train"] + sizes["validation"] + sizes["test"] == len(text)
    train, test = text[: sizes["train"]], text[len(text) - sizes["test"] :]
    validation = text[sizes["train"] : len(text) - sizes["test"]]
    assert text[sizes["train"] - 1] == "\n" and text[len(text) - sizes["test"] - 1] == "\n"
    assert abs(sizes["test"] - 0.05 * len(text)) < 0.0125 * len(text)
    assert data["vocabulary"]["unk"] == "<unk>" and "Z" not in data["vocabulary"]["tokens"]
    assert result["test_unknown"] == test.count("Z") + test.count("é") == 5
    assert result["test_chars"] == len(test) and result["validation_chars"] == len(validation)
    # the compressors, called directly on the held-out text
    for name, call in (
        ("xz -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
        ("bzip2 -9", lambda b: bz2.compress(b, 9)),
        ("gzip -9", lambda b: gzip.compress(b, 9, mtime=0)),
    ):
        for part, held in (("test", test), ("validation", validation)):
            expected = 8 * len(call(held.encode())) / len(held)
            assert result["baselines"][name][f"{part}_bpc"] == pytest.approx(expected, abs=1e-12)
    # bits per character recomputed step by step from the saved model
    assert result["test_bpc"] == pytest.approx(_step_bits(run, test, train), rel=1e-4)
    assert result["validation_bpc"] == pytest.approx(_step_bits(run, validation, train), rel=1e-4)
    rows = _rows(run)
    assert "".join(r["target"] for r in rows) == test.replace("Z", "<unk>").replace("é", "<unk>")
    assert any("<unk><unk>" in r["target"] for r in rows)  # a repeat, coded from the cache


def test_predict_and_sample_on_a_plain_run(plain_run, tmp_path):
    run, _, _ = plain_run
    new = tmp_path / "new.txt"
    new.write_text("the Zealous king\n")
    out = tmp_path / "p.csv"
    assert rnnkit.cli.main(["predict", str(run), str(new), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert "".join(r["target"] for r in rows) == "the <unk>ealous king\n"
    drawn = sample(run, "the queen", length=30, seed=1)
    assert drawn.startswith("the queen") and len(drawn) >= len("the queen") + 30


def test_valid_and_test_files_are_the_held_out_parts(tmp_path):
    rng = random.Random(2)
    for name, count in (("train.txt", 60), ("valid.txt", 5), ("test.txt", 6)):
        (tmp_path / name).write_text(_paragraphs(rng, count))
    run = tmp_path / "run"
    argv = ["lm", "--text", str(tmp_path / "train.txt"), "--valid", str(tmp_path / "valid.txt")]
    argv += ["--test", str(tmp_path / "test.txt"), *TINY, "--run-dir", str(run)]
    assert rnnkit.cli.main(argv) == 0
    result = json.loads((run / "run.json").read_text())["result"]
    test = (tmp_path / "test.txt").read_text()
    assert "".join(r["target"] for r in _rows(run)) == test
    assert result["validation_chars"] == len((tmp_path / "valid.txt").read_text())
    assert result["test_bpc"] == pytest.approx(
        _step_bits(run, test, (tmp_path / "train.txt").read_text()), rel=1e-4
    )


def test_one_long_line_and_a_latin1_file_with_its_encoding(tmp_path):
    rng = random.Random(3)
    line = " ".join(rng.choices(WORDS, k=900)) + " café"
    (tmp_path / "line.txt").write_bytes(line.encode("latin-1"))
    run = tmp_path / "run"
    argv = ["lm", "--text", str(tmp_path / "line.txt"), "--encoding", "latin-1", *TINY]
    assert rnnkit.cli.main([*argv, "--run-dir", str(run)]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["start"] == " "  # no line break in training: a space starts a stream
    sizes = info["data"]["characters"]
    assert line[sizes["train"] - 1] == " " and line[len(line) + 1 - sizes["test"] - 1] == " "
    # "é" and the line break added at the end of the file are never seen in training
    assert "".join(r["target"] for r in _rows(run)).endswith("caf<unk><unk>")
    assert info["result"]["test_unknown"] == 2


def test_word_level_with_a_vocabulary_limit(tmp_path):
    rng = random.Random(4)
    extra = [f"rare{i}" for i in range(40)]
    text = "".join(
        " ".join(rng.choices(WORDS + extra, k=8)) + ".\n" + ("\n" if i % 3 == 2 else "")
        for i in range(300)
    )
    (tmp_path / "w.txt").write_text(text)
    run = tmp_path / "run"
    argv = ["lm", "--text", str(tmp_path / "w.txt"), "--unit", "word", "--vocab-size", "12"]
    assert rnnkit.cli.main([*argv, *TINY, "--run-dir", str(run)]) == 0
    info = json.loads((run / "run.json").read_text())
    data, result = info["data"], info["result"]
    vocabulary = data["vocabulary"]
    assert vocabulary["unk"] == "<unk>" and len(vocabulary["tokens"]) == 11
    sizes = data["characters"]
    train, test = text[: sizes["train"]], text[len(text) - sizes["test"] :]
    pieces = re.findall(r"\w+|\s+|[^\w\s]", test)
    assert result["test_tokens"] == len(pieces)
    assert result["test_words"] == sum(not p.isspace() for p in pieces)
    assert result["test_unknown"] == sum(p not in vocabulary["tokens"] for p in pieces) > 0
    # perplexity per word and bits per character from the same model bits (the harness's test
    # loss, nats per token), the unknown pieces spelled by the unigram of training characters
    nats = result["test_loss"] * len(pieces)
    speller = Speller({c: train.count(c) for c in set(train)})
    bounds = [round(i * len(pieces) / 16) for i in range(17)]
    spell = sum(
        sum(_cache_bits([p for p in pieces[a:b] if p not in vocabulary["tokens"]], speller.bits))
        for a, b in itertools.pairwise(bounds)
    )
    assert result["test_word_perplexity"] == pytest.approx(
        math.exp(nats / result["test_words"]), rel=1e-6
    )
    bpc = (nats / math.log(2) + spell) / len(test)
    assert result["test_bpc"] == pytest.approx(bpc, rel=1e-6)
    new = tmp_path / "new.txt"
    new.write_text("the king, the unheard-of queen.\n")
    out = tmp_path / "p.csv"
    assert rnnkit.cli.main(["predict", str(run), str(new), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        targets = "".join(r["target"] for r in csv.DictReader(f))
    known = set(vocabulary["tokens"])
    pieces = re.findall(r"\w+|\s+|[^\w\s]", new.read_text())
    assert targets == "".join(p if p in known else "<unk>" for p in pieces)
    drawn = sample(run, "the unheard king", length=5, seed=0)
    assert drawn.startswith("the unheard king") and len(drawn) > len("the unheard king")


@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        (b"", [], r"empty.txt:1:1: expected text, found an empty file"),
        (b"abc\ncaf\xe9\n", [], r"empty.txt:2:4: expected UTF-8 text, found the byte 0xe9"),
        (b"a b\n", [], r"split: a text of 4 characters cannot give"),
        (b"a b c d e f g h i j\n" * 30, ["--split", "0.9,0.1"], r"split: expected three"),
        (b"a b\n", ["--valid", "x.txt"], r"test: expected files with --valid"),
        (b"a b\n", ["--encoding", "klingon"], r"encoding: expected the name of a Python codec"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_or_the_argument(
    tmp_path, capsys, content, argv, message
):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    try:
        run = str(tmp_path / "run")
        code = rnnkit.cli.main(["lm", "--text", str(path), *argv, *TINY, "--run-dir", run])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (1, 2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
