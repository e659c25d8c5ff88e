"""Readers of .ts, IDX, word/tag, CoNLL and plain text, checked on the real files in
../shared/data against golden counts and independent parses, plus a fuzz test per reader."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_text
from rnnkit.data.idx import mnist_sequences, read_idx, write_idx
from rnnkit.data.text import (
    TextVocabulary,
    Vocabulary,
    encode_sentences,
    read_conll,
    read_tagged,
    text_windows,
)
from rnnkit.data.uea import read_ts


def brown_files() -> list[Path]:
    folder = shared_data("brown")
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))


def write(tmp_path: Path, text: str, name: str = "f.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def error_location(excinfo: pytest.ExceptionInfo[ReaderError]) -> tuple[int | None, int | None]:
    return excinfo.value.line, excinfo.value.column


# ---------------------------------------------------------------------------------------------
# UEA/UCR .ts


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "dims", "min_len", "max_len", "n_classes"),
    [
        ("GunPoint", 50, 150, 1, 150, 150, 2),
        ("ItalyPowerDemand", 67, 1029, 1, 24, 24, 2),
        ("BasicMotions", 40, 40, 6, 100, 100, 4),
        ("JapaneseVowels", 270, 370, 12, 7, 29, 9),
    ],
)
def test_ts_golden_counts(
    name: str, n_train: int, n_test: int, dims: int, min_len: int, max_len: int, n_classes: int
) -> None:
    train = read_ts(shared_data("uea", name, f"{name}_TRAIN.ts"))
    test = read_ts(shared_data("uea", name, f"{name}_TEST.ts"))
    assert (len(train.examples), len(test.examples)) == (n_train, n_test)
    assert train.num_dimensions == test.num_dimensions == dims
    assert train.problem_name == name
    assert len(train.class_names) == n_classes and train.class_names == test.class_names
    lengths = [e["features"].shape[0] for e in train.examples + test.examples]
    assert (min(lengths), max(lengths)) == (min_len, max_len)
    for e in train.examples + test.examples:
        assert e["features"].dtype == torch.float32 and e["features"].shape[1] == dims
        assert e["label"].dtype == torch.int64 and e["label"].shape == (1,)
    labels = torch.cat([e["label"] for e in train.examples])
    assert set(labels.tolist()) == set(range(n_classes))


def test_ts_gunpoint_values_match_numpy_loadtxt() -> None:
    path = shared_data("uea", "GunPoint", "GunPoint_TEST.ts")
    lines = path.read_text().splitlines()
    rows = lines[lines.index("@data") + 1 :]
    table = np.loadtxt([r.replace(":", ",") for r in rows], delimiter=",")  # [150, 151]
    data = read_ts(path)
    features = torch.stack([e["features"][:, 0] for e in data.examples]).double()
    torch.testing.assert_close(features, torch.from_numpy(table[:, :-1]), rtol=0, atol=1e-6)
    labels = [data.class_names[int(e["label"])] for e in data.examples]
    assert labels == [str(int(v)) for v in table[:, -1]]


def test_ts_japanese_vowels_layout_and_balance() -> None:
    path = shared_data("uea", "JapaneseVowels", "JapaneseVowels_TRAIN.ts")
    data = read_ts(path)
    # the file's own comment: 30 utterances for each of the 9 speakers
    labels = torch.cat([e["label"] for e in data.examples])
    assert torch.bincount(labels).tolist() == [30] * 9
    # channel d of example i is the d-th ':'-field of its line, read by a plain split
    rows = [r for r in path.read_text().splitlines() if r and r[0] not in "#@"]
    for i in (0, 137, 269):
        fields = rows[i].split(":")
        expected = np.array([[float(v) for v in f.split(",")] for f in fields[:-1]]).T
        np.testing.assert_allclose(data.examples[i]["features"].numpy(), expected, rtol=1e-6)
        assert data.class_names[int(data.examples[i]["label"])] == fields[-1]


def test_ts_missing_values_variable_length_and_mask(tmp_path: Path) -> None:
    text = (
        "# comment\n@problemName toy\n@missing true\n@univariate false\n@dimensions 2\n"
        "@equalLength false\n@classLabel true a b c\n@data\n"
        "1,?,3:4,5,?:c\r\n\n 7: 8 :a\n"
    )
    data = read_ts(write(tmp_path, text, "any name.data"), with_mask=True)
    first, second = data.examples
    assert first["features"].shape == (3, 2) and second["features"].shape == (1, 2)
    nan = float("nan")
    np.testing.assert_array_equal(first["features"].numpy(), [[1, 4], [nan, 5], [3, nan]])
    assert first["mask"].tolist() == [[1, 1], [0, 1], [1, 0]]
    assert second["features"].tolist() == [[7.0, 8.0]]
    assert (first["label"].tolist(), second["label"].tolist()) == ([2], [0])


def test_ts_regression_target_and_unlabelled(tmp_path: Path) -> None:
    data = read_ts(write(tmp_path, "@targetLabel true\n@data\n1,2:0.5\n3,4:-2\n"))
    assert [e["target"].tolist() for e in data.examples] == [[0.5], [-2.0]]
    assert data.class_names == ()
    data = read_ts(write(tmp_path, "@classLabel false\n@data\n1,2:3,4\n"))
    assert data.num_dimensions == 2 and set(data.examples[0]) == {"features"}


@pytest.mark.parametrize(
    ("text", "line", "column", "found"),
    [
        ("@classLabel true a b\n@data\n1,2,x,4:a\n", 3, 5, "'x'"),
        ("@classLabel true a b\n@data\n1,2:z\n", 3, 5, "'z'"),
        ("@dimensions 2\n@classLabel true a\n@data\n1,2:a\n", 4, 1, "found 1"),
        ("@dimensions 2\n@classLabel false\n@data\n1,2:3\n", 4, 5, "found 1"),
        ("@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n1,2:a\n", 5, 1, "found 2"),
        ("@equalLength true\n@classLabel false\n@data\n1,2\n1,2,3\n", 5, 1, "found 3"),
        ("@timeStamps true\n@data\n", 1, 13, "not supported"),
        ("@dimensions two\n@data\n", 1, 13, "'two'"),
        ("@univariate maybe\n@data\n", 1, 13, "'maybe'"),
        ("@classLabel true\n@data\n", 1, 17, "end of the line"),
        ("@colour blue\n@data\n", 1, 1, "'@colour'"),
        ("1,2,3\n", 1, 1, "'1,2,3'"),
        ("@univariate true\n@dimensions 3\n@data\n", 3, 1, "contradicts"),
        ("@classLabel true a\n@data\n1,2\n", 3, 4, "no ':'"),
    ],
)
def test_ts_errors_are_located(
    tmp_path: Path, text: str, line: int, column: int, found: str
) -> None:
    path = write(tmp_path, text, "bad.ts")
    with pytest.raises(ReaderError, match=re.escape(found)) as excinfo:
        read_ts(path)
    assert error_location(excinfo) == (line, column)
    assert str(excinfo.value).startswith(f"{path}:{line}:{column}: ")


def test_ts_without_data_section_and_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="@data"):
        read_ts(write(tmp_path, "@problemName x\n"))
    path = tmp_path / "latin1.ts"
    path.write_bytes(b"@problemName caf\xe9\n@data\n")
    with pytest.raises(ReaderError, match="0xe9") as excinfo:
        read_ts(path)
    assert error_location(excinfo) == (1, 17)


# ---------------------------------------------------------------------------------------------
# IDX


def test_idx_handmade_bytes(tmp_path: Path) -> None:
    # int16, 2 x 1: 256 and -2, big-endian
    path = tmp_path / "h.idx"
    path.write_bytes(bytes.fromhex("0000 0b02 00000002 00000001 0100 fffe"))
    x = read_idx(path)
    assert x.dtype == np.int16 and x.tolist() == [[256], [-2]]
    # float64 scalar list of 1: 1.5
    path.write_bytes(bytes.fromhex("0000 0e01 00000001 3ff8000000000000"))
    assert read_idx(path).tolist() == [1.5]


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path: Path, dtype: str, name: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    write_idx(tmp_path / name, x)
    y = read_idx(tmp_path / name)
    assert y.dtype == x.dtype and np.array_equal(x, y)
    assert (tmp_path / name).read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\0\0")


def test_fashion_mnist_counts_and_sequences(tmp_path: Path) -> None:
    folder = shared_data("fashion-mnist")
    train_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    # Fashion-MNIST is balanced: 6,000 / 1,000 images of each of the 10 classes
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    assert read_idx(folder / "train-images-idx3-ubyte.gz").shape == (60000, 28, 28)
    # compressed or not, recognised from the content: a plain copy under another name
    plain = tmp_path / "images.bin"
    plain.write_bytes(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes()))
    images = read_idx(plain)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    examples = mnist_sequences(plain, folder / "t10k-labels-idx1-ubyte.gz")
    assert len(examples) == 10000
    raw = np.frombuffer(plain.read_bytes()[16:], dtype=np.uint8).reshape(10000, 28, 28)
    for i in (0, 4321, 9999):
        x, y = examples[i]["features"], examples[i]["label"]
        assert x.shape == (28, 28) and x.dtype == torch.float32
        torch.testing.assert_close(x, torch.from_numpy(raw[i] / 255.0).float(), rtol=0, atol=1e-7)
        assert y.dtype == torch.int64 and y.tolist() == [int(test_labels[i])]
    assert float(torch.stack([e["features"] for e in examples[:100]]).max()) == 1.0


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "found nothing"),
        (bytes.fromhex("0100 0801 00000001 07"), "found 01 00 08 01"),
        (bytes.fromhex("0000 0701 00000001 07"), "found 0x07"),
        (bytes.fromhex("0000 0800"), "found 0"),
        (bytes.fromhex("0000 0802 00000001"), "ends at byte 8"),
        (bytes.fromhex("0000 0801 00000003 0102"), "expected 3 data bytes for shape (3,)"),
        (bytes.fromhex("0000 0c01 00000001 0000000100"), "found 5"),
        (b"\x1f\x8b\x08\x00garbage", "damaged"),
        (bytes.fromhex("0000 0803 ffffffff ffffffff 00000000"), "NumPy can hold"),
    ],
)
def test_idx_errors(tmp_path: Path, data: bytes, found: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(ReaderError, match=re.escape(found)) as excinfo:
        read_idx(path)
    assert excinfo.value.path == str(path)


def test_mnist_sequences_refuses_mismatched_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "i.idx", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "l.idx", np.zeros(4, np.uint8))
    write_idx(tmp_path / "f.idx", np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ReaderError, match=r"expected uint8 labels \[3\]"):
        mnist_sequences(tmp_path / "i.idx", tmp_path / "l.idx")
    with pytest.raises(ReaderError, match="expected uint8 images"):
        mnist_sequences(tmp_path / "f.idx", tmp_path / "l.idx")
    with pytest.raises(ValueError, match="float16"):
        write_idx(tmp_path / "x.idx", np.zeros(2, np.float16))


# ---------------------------------------------------------------------------------------------
# word/tag and CoNLL


def plain_count(path: Path) -> tuple[int, int]:
    lines = [line.split() for line in path.read_text().splitlines()]
    return sum(1 for t in lines if t), sum(len(t) for t in lines)


def test_brown_two_files_golden_counts() -> None:
    ca01, cr09 = shared_data("brown", "ca01"), shared_data("brown", "cr09")
    a, r = read_tagged(ca01), read_tagged(cr09)
    assert (len(a), sum(len(s["words"]) for s in a)) == (98, 2242) == plain_count(ca01)
    assert (len(r), sum(len(s["tags"]) for s in r)) == (99, 2332) == plain_count(cr09)
    assert a[0]["words"][:4] == ["The", "Fulton", "County", "Grand"]
    assert a[0]["tags"][:4] == ["at", "np-tl", "nn-tl", "jj-tl"]
    assert read_tagged([ca01, cr09]) == a + r


def test_brown_totals() -> None:
    sentences = read_tagged(brown_files())
    tokens = sum(len(s["words"]) for s in sentences)
    tags = {t for s in sentences for t in s["tags"]}
    assert (len(sentences), tokens, len(tags)) == (57340, 1161192, 472)


def test_tagged_last_separator_splits_and_errors(tmp_path: Path) -> None:
    sentences = read_tagged(write(tmp_path, "1/2/CD and/CC AC/DC/NP\n  \nx//SYM\n"))
    assert sentences == [
        {"words": ["1/2", "and", "AC/DC"], "tags": ["CD", "CC", "NP"]},
        {"words": ["x/"], "tags": ["SYM"]},
    ]
    assert read_tagged(write(tmp_path, "a_DT b_NN\n"), separator="_")[0]["tags"] == ["DT", "NN"]
    for text, column in (("ok/A bad ok/B\n", 6), ("ok/A /NN\n", 6), ("\tok/A  word/\n", 8)):
        with pytest.raises(ReaderError, match="expected word/tag") as excinfo:
            read_tagged(write(tmp_path, "a/b\n" + text))
        assert error_location(excinfo) == (2, column)


def test_vocabulary_from_training_data_only() -> None:
    train = read_tagged([shared_data("brown", "ca01"), shared_data("brown", "ca02")])
    test = read_tagged(shared_data("brown", "cr09"))
    words = Vocabulary.build((s["words"] for s in train), min_freq=2)
    tags = Vocabulary.build((s["tags"] for s in train), pad=None, unk="<unk>")
    counts = Counter(w for s in train for w in s["words"])
    ordinary = words.tokens[2:]
    assert words.tokens[:2] == ("<pad>", "<unk>") and (words.pad_id, words.unk_id) == (0, 1)
    assert set(ordinary) == {w for w, n in counts.items() if n >= 2}
    assert [counts[w] for w in ordinary] == sorted((counts[w] for w in ordinary), reverse=True)
    examples = encode_sentences(test, {"words": words, "tags": tags})
    assert len(examples) == len(test) == 99
    for sentence, example in zip(test, examples, strict=True):
        assert example["words"].dtype == torch.int64
        assert example["words"].shape == example["tags"].shape == (len(sentence["words"]),)
        expected = [w if w in words else "<unk>" for w in sentence["words"]]
        assert words.decode(example["words"]) == expected
    unseen = {w for s in test for w in s["words"]} - set(counts)
    assert unseen and all(words.id(w) == 1 for w in unseen)
    closed = Vocabulary.build((s["tags"] for s in train), pad=None, unk=None)
    unseen_tags = {t for s in test for t in s["tags"]} - set(closed.tokens)
    assert unseen_tags
    with pytest.raises(ValueError, match="no unk token"):
        encode_sentences(test, {"tags": closed})


def test_vocabulary_reserved_tokens_and_state() -> None:
    v = Vocabulary.build([["a", "<unk>", "b", "a"], ["<pad>"]], max_size=1)
    assert v.tokens == ("<pad>", "<unk>", "a")
    assert v.encode(["<unk>", "b", "a", "<pad>"]).tolist() == [1, 1, 2, 0]
    assert Vocabulary(["x"], pad=None, unk=None).tokens == ("x",)
    assert Vocabulary(["x"], pad="<p>", unk=None).encode(["x"]).tolist() == [1]
    restored = Vocabulary.from_dict(json.loads(json.dumps(v.to_dict())))
    assert restored.tokens == v.tokens and (restored.pad, restored.unk) == (v.pad, v.unk)
    with pytest.raises(ValueError, match="duplicate 'x'"):
        Vocabulary(["x", "x"])
    with pytest.raises(ValueError, match="reserved token '<unk>'"):
        Vocabulary(["<unk>"])
    with pytest.raises(ValueError, match=r"ids\[1\]: expected an integer in \[0, 3\), found 3"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build([["a"]], min_freq=0)


def test_conll_columns_comments_docstart(tmp_path: Path) -> None:
    text = (
        "# sent_id = 1\r\n1\tThe dog\tNN\r\n2\tbarks\tVBZ\r\n\r\n\r\n"
        "-DOCSTART-\t-X-\tO\n3\tStop\tVB\n# comment inside\n4\t!\t.\n"
    )
    path = write(tmp_path, text, "x.conllu")
    sentences = read_conll(path, ["id", "words", "tags"], delimiter="\t", comment="#")
    assert sentences == [
        {"id": ["1", "2"], "words": ["The dog", "barks"], "tags": ["NN", "VBZ"]},
        {"id": ["3", "4"], "words": ["Stop", "!"], "tags": ["VB", "."]},
    ]
    # without comments '#' is an ordinary token
    path = write(tmp_path, "# # B-NP\n$ $ I-NP\n", "chunks.txt")
    assert read_conll(path, ["words", None, "chunks"]) == [
        {"words": ["#", "$"], "chunks": ["B-NP", "I-NP"]}
    ]


def test_conll_agrees_with_tagged_on_brown(tmp_path: Path) -> None:
    sentences = read_tagged(shared_data("brown", "ca01"))
    lines = []
    for s in sentences:
        lines += [f"{w}\t{t}" for w, t in zip(s["words"], s["tags"], strict=True)] + [""]
    path = write(tmp_path, "\n".join(lines), "ca01.conll")
    assert read_conll(path, ["words", "tags"]) == sentences


def test_conll_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a NN O\nb NN\n")
    with pytest.raises(ReaderError, match=re.escape("expected 3 columns")) as excinfo:
        read_conll(path, ["words", "tags", "ner"])
    assert error_location(excinfo) == (2, 5)
    path = write(tmp_path, "a\tNN\tO\tx\n")
    with pytest.raises(ReaderError, match="found 4") as excinfo:
        read_conll(path, ["words", "tags", "ner"], delimiter="\t")
    assert error_location(excinfo) == (1, 8)
    with pytest.raises(ValueError, match="distinct names"):
        read_conll(path, ["w", "w"])


# ---------------------------------------------------------------------------------------------
# Plain text


def test_kjv_character_round_trip_trained_on_the_first_books() -> None:
    text = read_text(shared_data("text", "kjv-verses.txt"))
    lines = text.split("\n")
    assert len([line for line in lines if line]) == 31102
    cut = text.index("\nMat1:1 ")  # Old Testament for training, New Testament held out
    train, held_out = text[:cut], text[cut:]
    chars = TextVocabulary.characters(train)
    assert set(chars.vocabulary.tokens) == set(train)
    ids = chars.encode(held_out)
    assert ids.dtype == torch.int64 and ids.shape == (len(held_out),)
    assert chars.decode(ids) == held_out
    counts = Counter(train)
    assert chars.vocabulary.tokens[0] == counts.most_common(1)[0][0]


def test_kjv_word_round_trip(tmp_path: Path) -> None:
    text = read_text(shared_data("text", "kjv-verses.txt"))[:300_000]
    words = TextVocabulary.words(text)
    ids = words.encode(text)
    assert words.decode(ids) == text
    assert len(ids) == len(re.findall(r"\w+|\s+|[^\w\s]", text))
    assert "God" in words.vocabulary and " " in words.vocabulary
    crlf = write(tmp_path, "In the\r\nbeginning\r\n")
    assert read_text(crlf) == "In the\r\nbeginning\r\n"


def test_text_unknown_symbols() -> None:
    closed = TextVocabulary.characters("abc")
    with pytest.raises(ValueError, match=r"text\[2\]: 'd' is not in the vocabulary"):
        closed.encode("abd")
    open_ = TextVocabulary.characters("abc", unk="<unk>")
    assert open_.decode(open_.encode("abdc")) == "ab<unk>c"
    words = TextVocabulary.words("the cat sat", unk="<unk>", min_freq=1)
    assert words.decode(words.encode("the dog sat")) == "the <unk> sat"
    with pytest.raises(ValueError, match=r"text\[4\]: 'dog'"):
        TextVocabulary.words("the cat").encode("the dog")
    with pytest.raises(ValueError, match="no pad token"):
        TextVocabulary(Vocabulary(["a"]), "characters")


@pytest.mark.parametrize(("length", "stride"), [(5, None), (4, 3), (1, 1), (6, 7)])
def test_text_windows_against_a_loop(length: int, stride: int | None) -> None:
    ids = torch.arange(100, 123)
    got = text_windows(ids, length, stride=stride)
    step = stride or length
    expected = []
    start = 0
    while start + length + 1 <= len(ids):
        expected.append((ids[start : start + length], ids[start + 1 : start + length + 1]))
        start += step
    assert len(got) == len(expected)
    for g, (x, y) in zip(got, expected, strict=True):
        assert torch.equal(g["input"], x) and torch.equal(g["target"], y)
        assert torch.equal(g["input"][1:], g["target"][:-1])
    with pytest.raises(ValueError, match="length"):
        text_windows(ids, 0)


# ---------------------------------------------------------------------------------------------
# Fuzz: random and mutated bytes either parse or raise ReaderError


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == 0:  # overwrite
            data[at : at + len(chunk)] = chunk
        elif kind == 1:  # insert
            data[at:at] = chunk
        elif kind == 2:  # delete
            del data[at : at + len(chunk)]
        else:  # truncate
            del data[at:]
    return bytes(data)


EDITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=6)),
    max_size=6,
)
SPECIAL = st.sampled_from([b":", b",", b"?", b"@data", b"/", b"\t", b"\n", b"\r", b"#", b"\x00"])
FUZZ = settings(
    max_examples=80,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def ts_seed() -> bytes:
    path = shared_data("uea", "JapaneseVowels", "JapaneseVowels_TRAIN.ts")
    lines = path.read_bytes().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"@problemName"))
    return b"".join(lines[start : start + 10])


def idx_seed(compress: bool) -> bytes:
    images = read_idx(shared_data("fashion-mnist", "t10k-images-idx3-ubyte.gz"))[:2, :4, :4]
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    raw = header + images.tobytes()
    return gzip.compress(raw) if compress else raw


def tagged_seed() -> bytes:
    return b"\n".join(shared_data("brown", "ca01").read_bytes().split(b"\n")[:6])


def conll_seed() -> bytes:
    sentences = read_tagged(shared_data("brown", "ca01"))[:2]
    rows = [f"{w}\t{t}\tO" for s in sentences for w, t in zip(s["words"], s["tags"], strict=True)]
    return ("# doc\n" + "\n".join(rows[:12]) + "\n\n" + "\n".join(rows[12:20]) + "\n").encode()


READERS: dict[str, tuple[Callable[[], bytes], Callable[[Path], object]]] = {
    "ts": (ts_seed, lambda p: read_ts(p, with_mask=True)),
    "idx": (lambda: idx_seed(False), read_idx),
    "idx.gz": (lambda: idx_seed(True), read_idx),
    "tagged": (tagged_seed, read_tagged),
    "conll": (conll_seed, lambda p: read_conll(p, ["w", "t", None], comment="#")),
    "conll-tab": (
        conll_seed,
        lambda p: read_conll(p, ["w", None, "n"], delimiter="\t", comment="#"),
    ),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_fuzz_readers_parse_or_raise_reader_error(
    reader: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    make_seed, read = READERS[reader]
    seed = make_seed()
    read(write_bytes(tmp_path_factory, seed))  # the unmutated seed parses

    @FUZZ
    @given(
        data=st.one_of(
            st.binary(max_size=300),
            EDITS.map(lambda edits: mutate(seed, edits)),
            st.lists(SPECIAL, max_size=4).flatmap(
                lambda chunks: EDITS.map(
                    lambda edits: (
                        mutate(seed, [(1, 97 * (i + 1), c) for i, c in enumerate(chunks)])
                        + mutate(b"", edits)
                    )
                )
            ),
        )
    )
    def check(data: bytes) -> None:
        path = write_bytes(tmp_path_factory, data)
        try:
            read(path)
        except ReaderError as e:
            assert str(e).startswith(str(path))

    check()


def write_bytes(factory: pytest.TempPathFactory, data: bytes) -> Path:
    folder = factory.getbasetemp() / "fuzz"
    folder.mkdir(exist_ok=True)
    path = folder / "input"
    path.write_bytes(data)
    return path


def test_reads_copies_from_any_path(tmp_path: Path) -> None:
    source = shared_data("uea", "ItalyPowerDemand", "ItalyPowerDemand_TRAIN.ts")
    copy = tmp_path / "deeper dir" / "no-extension"
    copy.parent.mkdir()
    shutil.copy(source, copy)
    a, b = read_ts(str(copy)), read_ts(source)
    assert len(a.examples) == 67
    assert all(
        torch.equal(x["features"], y["features"])
        for x, y in zip(a.examples, b.examples, strict=True)
    )
