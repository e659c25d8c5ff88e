"""CTF reader and writer: real files against an independent line-by-line reading, the grammar's
corner cases, every error kind, skip_bad, a write/read round trip and a fuzz test."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data import ctf
from rnnkit.data.ctf import CTFReader, Stream, iter_ctf, read_ctf, write_ctf
from rnnkit.data.errors import ReaderError

SOLAR = {"features": Stream("features", 1), "target": Stream("target", 1)}
IRIS = {"features": Stream("features", 4), "labels": Stream("labels", 3)}


# The three ways a block is read (CTFReader's scanner=): the C scanner, the Python fast path
# (what runs where the extension could not be built) and the plain scanner that locates errors.
ENGINES = ("c", "python", "plain")


def read_with(
    engine: str, path: Path, streams: Mapping[str, Stream], **kwargs: Any
) -> list[dict[str, torch.Tensor]]:
    return list(CTFReader(path, streams, scanner=engine, **kwargs))


def write(tmp_path: Path, text: str | bytes, name: str = "a.ctf") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def as_lists(examples: list[dict[str, torch.Tensor]]) -> list[dict[str, list]]:
    return [{k: v.tolist() for k, v in ex.items()} for ex in examples]


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype == torch.float32
            assert x[k].shape == y[k].shape, k
            assert torch.equal(x[k], y[k]), k


def reference_solar(path: Path) -> list[dict[str, list[float]]]:
    """An independent reading of the solar files: every line is ``id |name v ...`` with ids."""
    sequences: list[tuple[str, dict[str, list[float]]]] = []
    for line in path.read_text().splitlines():
        sid, *fields = line.split("|")
        if not sequences or sequences[-1][0] != sid.strip():
            sequences.append((sid.strip(), {"features": [], "target": []}))
        for field in fields:
            name, value = field.split()
            sequences[-1][1][name].append(float(np.float32(value)))
    return [s for _, s in sequences]


# -- real files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count", "lines"), [("solar_train.ctf", 8952, 66589), ("solar_val.ctf", 2239, 16691)]
)
def test_solar_golden(name: str, count: int, lines: int) -> None:
    path = shared_data("cntk-book", name)
    data = read_ctf(path, SOLAR)
    assert len(data) == count
    assert sum(len(ex["features"]) for ex in data) == lines
    assert {len(ex["features"]) for ex in data} == set(range(2, 14))
    assert all(ex["target"].shape == (1, 1) for ex in data)
    reference = reference_solar(path)
    assert [{k: v.squeeze(1).tolist() for k, v in ex.items()} for ex in data] == reference


def test_solar_first_sequence_by_hand() -> None:
    first = read_ctf(shared_data("cntk-book", "solar_train.ctf"), SOLAR)[0]
    assert first["target"].item() == np.float32(0.8219895287958116)
    expected = [0.7137870855148344, 0.7731239092495635, 0.806282722513089, 0.8167539267015707]
    assert first["features"][:4, 0].tolist() == np.float32(expected).tolist()


@pytest.mark.parametrize(("name", "count"), [("iris.ctf", 150), ("iris_train.ctf", 120),
                                             ("iris_test.ctf", 30)])  # fmt: skip
def test_iris_golden(name: str, count: int) -> None:
    path = shared_data("cntk-book", name)
    data = read_ctf(path, IRIS)
    assert len(data) == count
    rows = [line.split("|") for line in path.read_text().splitlines()]
    features = np.array([r[1].split()[1:] for r in rows], dtype=np.float32)
    labels = np.array([r[2].split()[1:] for r in rows], dtype=np.float32)
    assert torch.equal(torch.cat([ex["features"] for ex in data]), torch.from_numpy(features))
    assert torch.equal(torch.cat([ex["labels"] for ex in data]), torch.from_numpy(labels))
    assert all(ex["features"].shape == (1, 4) for ex in data)


def test_iris_first_rows_by_hand() -> None:
    data = read_ctf(shared_data("cntk-book", "iris.ctf"), IRIS)
    assert data[0]["features"].tolist() == [np.float32([5.1, 3.5, 1.4, 0.2]).tolist()]
    assert data[0]["labels"].tolist() == [[1.0, 0.0, 0.0]]


def test_native_scanner_is_built() -> None:
    # pip builds it with the C compiler (setup.py); without one the Python paths read alone.
    assert ctf._ctfscan is not None, "rnnkit.data._ctfscan is missing: reinstall with a compiler"


def test_native_scanner_reads_the_solar_file_itself() -> None:
    # The C scanner must read well-formed blocks itself, not hand them all to the Python paths.
    assert ctf._ctfscan is not None
    data = shared_data("cntk-book", "solar_val.ctf").read_bytes()
    specs = ((b"features", 1, False), (b"target", 1, False))
    scanned = ctf._ctfscan.scan(data, specs, -1, None)
    assert scanned is not None
    values, starts, continues, ids, cur_id, new_ids, lines = scanned
    assert (continues, ids, lines) == (False, 1, 16691)
    assert len(np.frombuffer(new_ids, dtype=np.uint64)) == 2239
    assert cur_id == int(data.rsplit(b"\n", 2)[-2].split(b"|")[0])
    rows = np.frombuffer(starts, dtype=np.int64).reshape(-1, 2)
    reference = reference_solar(shared_data("cntk-book", "solar_val.ctf"))
    features = np.frombuffer(values[0], dtype=np.float32)
    assert len(rows) == len(reference) and len(features) == 16691  # a feature on every line
    assert len(np.frombuffer(values[1], dtype=np.float32)) == 2239  # one target per sequence
    for i in (0, 1, 1000, len(rows) - 1):
        stop = rows[i + 1, 0] if i + 1 < len(rows) else len(features)
        assert features[rows[i, 0] : stop].tolist() == reference[i]["features"]


NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.6g}"),
    st.builds(
        lambda sign, whole, frac, exp: f"{sign}{whole}.{frac}e{exp}",
        st.sampled_from(["", "+", "-"]),
        st.from_regex(r"[0-9]{1,25}", fullmatch=True),
        st.from_regex(r"[0-9]{0,25}", fullmatch=True),
        st.integers(-340, 330),
    ),
    st.from_regex(r"[+-]?\.[0-9]{1,20}", fullmatch=True),
)


@settings(max_examples=300, deadline=2000)
@given(numbers=st.lists(NUMBER_TEXT, min_size=1, max_size=6))
def test_native_numbers_round_like_python_float(numbers: list[str]) -> None:
    # float() rounds correctly to float64; the scanner must give the same float32 bits.
    assert ctf._ctfscan is not None
    line = f"|x {' '.join(numbers)}\n".encode()
    scanned = ctf._ctfscan.scan(line, ((b"x", len(numbers), False),), -1, None)
    assert scanned is not None
    with np.errstate(over="ignore"):
        expected = np.array([float(n) for n in numbers], dtype=np.float64).astype(np.float32)
    got = np.frombuffer(scanned[0][0], dtype=np.float32)
    assert got.tobytes() == expected.tobytes(), numbers


def test_all_engines_agree_on_real_files() -> None:
    path = shared_data("cntk-book", "solar_val.ctf")
    native = read_with("c", path, SOLAR)
    for engine in ENGINES[1:]:
        assert_same(native, read_with(engine, path, SOLAR))
    for engine in ENGINES:  # sequences cut across many blocks
        assert_same(native, read_with(engine, path, SOLAR, block_bytes=97))


def test_iter_ctf_streams_lazily(tmp_path: Path) -> None:
    path = write(tmp_path, "1 |x 1\n2 |x 2\n3 |x oops\n")
    examples = iter_ctf(path, {"x": Stream("x", 1)})
    assert next(examples)["x"].tolist() == [[1.0]]
    with pytest.raises(ReaderError, match="oops"):
        list(examples)


# -- grammar --------------------------------------------------------------------------------

AB = {"a": Stream("a", 3), "b": Stream("b", 2)}


def test_cntk_documentation_example(tmp_path: Path) -> None:
    text = (
        "100 |a 1 2 3 |b 100 200\n100 |a 4 5 6 |b 101 201\n100 |b 102983 14532 |a 7 8 9 \n"
        "100 |a 7 8 9\n200 |b 300 400 |a 10 20 30\n333 |b 500 100 \n333 |b 600 -900\n"
        "400 |a 1 2 3 |b 100 200\n|a 4 5 6 |b 101 201\n|a 4 5 6 |b 101 201\n"
        "500 |a 1 2 3 |b 100 200\n\n"
    )
    data = as_lists(read_ctf(write(tmp_path, text), AB))
    assert [(len(ex["a"]), len(ex["b"])) for ex in data] == [(4, 3), (1, 1), (0, 2), (3, 3), (1, 1)]
    assert data[0]["a"] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [7, 8, 9]]
    assert data[2] == {"a": [], "b": [[500, 100], [600, -900]]}
    assert read_ctf(write(tmp_path, text), AB)[2]["a"].shape == (0, 3)


def test_first_line_without_id_makes_every_line_a_sequence(tmp_path: Path) -> None:
    text = "|a 1 2 3 |b 100 200\n100 |a 4 5 6 |b 101 201\n100 |b 102983 14532 |a 7 8 9\n"
    data = as_lists(read_ctf(write(tmp_path, text), AB))
    assert [ex["a"] for ex in data] == [[[1, 2, 3]], [[4, 5, 6]], [[7, 8, 9]]]


def test_equal_ids_compare_as_numbers(tmp_path: Path) -> None:
    data = read_ctf(write(tmp_path, "7 |b 1 2\n007 |b 3 4\n8 |b 5 6\n"), {"b": AB["b"]})
    assert as_lists(data) == [{"b": [[1, 2], [3, 4]]}, {"b": [[5, 6]]}]


def test_comments_and_escaped_pipes(tmp_path: Path) -> None:
    text = (
        "|# a header comment\n"
        "0 |# note with an escaped pipe |# still the comment |b 1 2 |a 1 2 3 |#tail |# more\n"
        "\n"
        "0 |a 4 5 6|# glued |#|#\n"
        "   \t \n"
        "1 |# only a comment on this line\n"
        "1 |b 3 4\n"
    )
    for engine in ENGINES:
        data = as_lists(read_with(engine, write(tmp_path, text), AB))
        assert data == [{"a": [[1, 2, 3], [4, 5, 6]], "b": [[1, 2]]}, {"a": [], "b": [[3, 4]]}]


def test_crlf_tabs_and_missing_last_newline(tmp_path: Path) -> None:
    text = "0\t|a\t1\t2  3 |b 1e2\t-2.5E-1\r\n0|a +1 .5 6.\r\n1 |b 0 0"
    for engine in ENGINES:
        data = as_lists(read_with(engine, write(tmp_path, text), AB))
        assert data == [{"a": [[1, 2, 3], [1, 0.5, 6]], "b": [[100, -0.25]]},
                        {"a": [], "b": [[0, 0]]}]  # fmt: skip


def test_sparse_samples(tmp_path: Path) -> None:
    streams = {"w": Stream("w", 5, sparse=True), "y": Stream("y", 1)}
    text = "0 |w 3:1 0:-2.5 |y 1\n0 |w\n0 |w 4:1e-3|y 0\n1 |y 7\n"
    for engine in ENGINES:
        data = as_lists(read_with(engine, write(tmp_path, text), streams))
        w = np.float32([[-2.5, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1e-3]]).tolist()
        assert data == [{"w": w, "y": [[1], [0]]}, {"w": [], "y": [[7]]}]


def test_values_beyond_float32_become_infinite(tmp_path: Path) -> None:
    data = read_ctf(write(tmp_path, "|b 1e39 -1e999\n"), {"b": AB["b"]})
    assert data[0]["b"].tolist() == [[float("inf"), float("-inf")]]


# -- errors ---------------------------------------------------------------------------------

ERRORS = [
    # (file text, line, column, stream, what the message must contain)
    ("0 |a 1 2 3\n0 |z 2\n", 2, 4, "z", "unknown stream 'z'"),
    ("|w 1:1 5:2\n", 1, 8, "w", "below dim 5, found '5:2'"),
    ("|w 1:1 1:2\n", 1, 8, "w", "index 1 appears twice in one sample, found '1:2'"),
    ("|w 1:1 x:2\n", 1, 8, "w", "expected index:value, found 'x:2'"),
    ("|w 1:1 3\n", 1, 8, "w", "expected index:value, found '3'"),
    ("|b 1 abc\n", 1, 6, "b", "expected a number, found 'abc'"),
    ("|b 1 nan\n", 1, 6, "b", "expected a number, found 'nan'"),
    ("|b 1 1_0\n", 1, 6, "b", "expected a number, found '1_0'"),
    ("|b 1 2\r3\n", 1, 6, "b", "expected a number, found '2\\r3'"),
    ("|a 1 2 3\n|b 1 2 3\n", 2, 1, "b", "expected 2 values, found 3"),
    ("|b\n", 1, 1, "b", "expected 2 values, found 0"),
    ("|b 1 2 |b 3 4\n", 1, 8, "b", "stream appears twice on one line (first at column 1)"),
    ("1 |b 1 2\n2 |b 1 2\n1 |b 1 2\n", 3, 1, None, "sequence id 1 was used by an earlier"),
    ("a1 |b 1 2\n", 1, 1, None, "found 'a1'"),
    ("0 |b 1 2\n-1 |b 1 2\n", 2, 1, None, "found '-1'"),
    ("0 |b 1 2\n18446744073709551616 |b 1 2\n", 2, 1, None, "below 2**64"),
    ("0 1 |b 1 2\n", 1, 3, None, "expected '|' before a stream name, found '1'"),
    ("0 | b 1 2\n", 1, 4, None, "expected a stream name after '|', found ' '"),
    ("0 |b 1 2 |\n", 1, 11, None, "expected a stream name after '|', found end of line"),
    ("0 |b 1 2 |# comment |\n", 1, 22, None, "found end of line"),
]


@pytest.mark.parametrize(("text", "line", "column", "stream", "found"), ERRORS)
@pytest.mark.parametrize("engine", ENGINES)
def test_errors_name_place_stream_and_what_was_found(
    tmp_path: Path, text: str, line: int, column: int, stream: str | None, found: str, engine: str
) -> None:
    streams = {**AB, "w": Stream("w", 5, sparse=True)}
    path = write(tmp_path, text)
    with pytest.raises(ReaderError) as caught:
        read_with(engine, path, streams)
    error = caught.value
    assert (error.path, error.line, error.column, error.stream) == (str(path), line, column, stream)
    message = str(error)
    assert message.startswith(f"{path}:{line}:{column}: ")
    if stream is not None:
        assert f"stream '{stream}'" in message
    assert found in message


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, b"0 |b 1 2\n0 |b 1 \xff\n0 |b 1 2 |# \xfe comments may hold anything\n")
    with pytest.raises(ReaderError, match=r":2:8: stream 'b': expected a number, found '\\udcff'"):
        read_ctf(path, {"b": AB["b"]})


def test_skip_bad_skips_whole_sequences_and_reports_them(tmp_path: Path) -> None:
    text = (
        "0 |b 1 2\n"
        "1 |b 3 4\n1 |b 5\n1 |b 6 7\n"  # bad on its second line: all of sequence 1 goes
        "2 |b 8 9\n"
        "x |b 0 0\n"  # a bad id: a sequence of its own
        "3 |b 1 1\n"
        "2 |b 2 2\n2 |b 3 3\n"  # id 2 again, not consecutive: one bad sequence
        "4 |b 4 4 |z 1\n"
    )
    path = write(tmp_path, text)
    for engine in ENGINES:
        reader = CTFReader(path, {"b": AB["b"]}, skip_bad=True, scanner=engine)
        data = as_lists(list(reader))
        assert [ex["b"] for ex in data] == [[[1, 2]], [[8, 9]], [[1, 1]]]
        assert reader.skipped == 4
        assert [(e.line, e.column) for e in reader.errors] == [(3, 3), (6, 1), (8, 1), (10, 11)]
    errors: list[ReaderError] = []
    assert len(read_ctf(path, {"b": AB["b"]}, skip_bad=True, errors=errors)) == 3
    assert [e.line for e in errors] == [3, 6, 8, 10]
    with pytest.raises(ValueError, match="skip_bad=True needs an errors list"):
        read_ctf(path, {"b": AB["b"]}, skip_bad=True)


def test_skip_bad_across_blocks(tmp_path: Path) -> None:
    lines = [f"{i} |b {i} 1\n{i} |b {i} 2\n" for i in range(40)]
    lines[7] = "7 |b 7 1\n7 |b 7\n"
    lines[30] = "30 |b x 1\n30 |b 30 2\n"
    path = write(tmp_path, "".join(lines))
    reader = CTFReader(path, {"b": AB["b"]}, skip_bad=True, block_bytes=13)
    data = list(reader)
    assert [int(ex["b"][0, 0]) for ex in data] == [i for i in range(40) if i not in (7, 30)]
    assert all(ex["b"][:, 1].tolist() == [1, 2] for ex in data)
    assert [e.line for e in reader.errors] == [16, 61]


def test_stream_and_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="dim: expected a positive integer below 2[*][*]61 .*, found 0"
    ):
        Stream("x", 0)
    with pytest.raises(ValueError, match="field: .* found 'a b'"):
        Stream("a b", 1)
    with pytest.raises(ValueError, match="both read field 'x'"):
        read_ctf(write(tmp_path, "|x 1\n"), {"p": Stream("x", 1), "q": Stream("x", 1)})


def test_scanner_and_block_bytes_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "0 |x 1\n0 |x 2\n1 |x 3\n")
    x = {"x": Stream("x", 1)}
    reader = CTFReader(path, x, block_bytes=5)
    assert (reader.scanner, reader.block_bytes) == ("c", 5)
    assert CTFReader(path, x, fast=False).scanner == "plain"
    assert CTFReader(path, x).block_bytes == 1 << 20
    for wrong, match in [
        ({"scanner": "fast"}, "scanner: expected one of auto, c, python, plain, found 'fast'"),
        ({"fast": False, "scanner": "c"}, "scanner: fast=False reads with the plain path only"),
        ({"fast": 1}, "fast: expected a bool, found 1"),
        ({"block_bytes": 0}, "block_bytes: expected an integer >= 1 or None, found 0"),
        ({"block_bytes": True}, "block_bytes: .* found True"),
        ({"block_bytes": 1.5}, "block_bytes: .* found 1.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            CTFReader(path, x, **wrong)
        with pytest.raises(ValueError, match=match):
            read_ctf(path, x, **wrong)
    # read_ctf and iter_ctf forward the options to the reader.
    expected = [{"x": [[1.0], [2.0]]}, {"x": [[3.0]]}]
    assert as_lists(read_ctf(path, x, scanner="python", block_bytes=1)) == expected
    assert as_lists(list(iter_ctf(path, x, fast=False, block_bytes=3))) == expected
    monkeypatch.setattr(ctf, "_ctfscan", None)  # as where the extension could not be built
    with pytest.raises(ValueError, match="scanner: 'c' needs the extension rnnkit.data._ctfscan"):
        CTFReader(path, x, scanner="c")
    assert CTFReader(path, x).scanner == "python"
    assert as_lists(read_ctf(path, x)) == expected


def test_stream_fields_with_undecodable_bytes(tmp_path: Path) -> None:
    # A field may hold an undecodable byte, spelt as Python decodes it (surrogateescape).
    path = write(tmp_path, b"|\xff 1 |\xc3\xa9 2\n")
    streams = {"ff": Stream("\udcff", 1), "e": Stream("\u00e9", 1)}
    for engine in ENGINES:
        assert as_lists(read_with(engine, path, streams)) == [{"ff": [[1.0]], "e": [[2.0]]}]
    with pytest.raises(ValueError, match="field: .* found '\\\\ud800'"):
        Stream("\ud800", 1)


# -- the three scanners agree ---------------------------------------------------------------


def test_bad_id_before_a_block_for_the_c_scanner(tmp_path: Path) -> None:
    # Issue #17.1: a bad sequence id left the open sequence's id at -1, and the next block's
    # C scan raised OverflowError. The bad id's line is a bad sequence of its own; so is the next.
    path = write(tmp_path, b"x\nx")
    reader = CTFReader(path, {"x": Stream("x", 1)}, skip_bad=True)
    assert list(reader) == []
    found = "expected a sequence id (an unsigned integer below 2**64) or '|', found 'x'"
    assert [str(e) for e in reader.errors] == [f"{path}:1:1: {found}", f"{path}:2:1: {found}"]
    # After a bad id, a line without one still belongs to the bad sequence; an id opens another.
    path = write(tmp_path, b"x |b 1 2\n|b 3 4\n5 |b 5 6\n5 |b 7 8\n")
    for engine in ENGINES:
        reader = CTFReader(path, {"b": AB["b"]}, skip_bad=True, scanner=engine, block_bytes=1)
        assert as_lists(list(reader)) == [{"b": [[5, 6], [7, 8]]}]
        assert [(e.line, e.column) for e in reader.errors] == [(1, 1)]


def test_sparse_index_with_leading_zeros(tmp_path: Path) -> None:
    # Issue #17.2: the plain path refused "00:1" (an index below dim 3, as 007 is the id 7)
    # while the fast paths read it; now every path reads it.
    path = write(tmp_path, b"|w 00:1\n")
    for engine in ENGINES:
        data = read_with(engine, path, {"w": Stream("w", 3, sparse=True)})
        assert as_lists(data) == [{"w": [[1.0, 0.0, 0.0]]}]
    path = write(tmp_path, b"|w 0000000000000000000000000002:5 1:1\n|w 0:1 000:2\n")
    for engine in ENGINES:
        with pytest.raises(ReaderError, match=r":2:8: stream 'w': sparse index 0 appears twice"):
            read_with(engine, path, {"w": Stream("w", 3, sparse=True)})


MIXED = {**AB, "w": Stream("w", 5, sparse=True)}
DIFF_STREAMS: dict[str, dict[str, Stream]] = {
    "mixed": MIXED,
    "x": {"x": Stream("x", 1)},
    "w3": {"w": Stream("w", 3, sparse=True)},
    "huge": {"x": Stream("x", 10**12), "w": Stream("w", 2, sparse=True)},
}
GOOD_LINE = b"|b 1 2 |a 1 2 3 |w 0:1\n"
TRICKY: list[tuple[str, bytes]] = [
    # the reproducers, and the block-size dependence of the second
    ("x", b"x\nx"),
    ("w3", b"|w 00:1\n"),
    ("mixed", GOOD_LINE * 12 + b"|w 00:1\n" + GOOD_LINE * 7 + b"|w 5:1\n" + GOOD_LINE),
    # sparse indices: leading zeros, repeats, bounds, malformed pairs
    ("mixed", b"|w 0:1 00:2\n"),
    ("mixed", b"|w 0000000000000000000000004:1 |b 1 2\n|w 04:-0\n"),
    ("mixed", b"|w 5:1\n"),
    ("mixed", b"|w 99999999999999999999:1\n"),
    ("mixed", b"|w 1:1:1\n|w :1\n"),
    ("mixed", b"|w 1:\n"),
    ("mixed", b"|w -0:1 +1:1\n"),
    ("mixed", b"|w\n|w 4:1 3:2 2:3 1:4 0:5\n"),
    # sequence ids: bad ones, reuse, leading zeros, the 2**64 bound
    ("mixed", b"x |b 1 2\n|b 3 4\n5 |b 5 6\n"),
    ("mixed", b"0 |b 1 2\nx |b 1 2\n0 |b 1 2\n"),
    ("mixed", b"0 |b 1 2\nx |b 1 2\n|b 3 4\n1 |b 5 6\n"),
    ("mixed", b"0000000000000000000000007 |b 1 2\n7 |b 3 4\n8 |b 5 6\n"),
    ("mixed", b"18446744073709551615 |b 1 2\n018446744073709551616 |b 1 2\n"),
    ("mixed", b"0 |b 1 2\n1 |b 3 4\n0 |b 5 6\n"),
    ("mixed", b"0 |b 1 2\n0 |b 3\n0 |b 4 5\n1 |b 6 7\n"),
    ("mixed", b"5 |# c\n5 |b 1 2\n6 |b 3 4\n5 |b 5 6\n"),
    ("mixed", b"|b 1 2\n7 |b 3 4\nx |b 5 6\n7 |b 7 8\n"),
    ("mixed", b"1 2 |b 1 2\n"),
    ("mixed", b"-1 |b 1 2\n+1 |b 1 2\n"),
    ("mixed", b"\xef\xbb\xbf0 |b 1 2\n"),
    ("mixed", b"0 |b 1 2\n\x00 |b 1 2\n"),
    # numbers: the grammar's edges and rounding
    ("mixed", b"0 |b 1e999 -1e999\n0 |b 1e-999 -0\n"),
    ("mixed", b"|b nan 1\n|b inf 1\n"),
    ("mixed", b"|b 1_0 1\n"),
    ("mixed", b"|b 0x10 1\n"),
    ("mixed", b"|b + 1\n|b - 1\n"),
    ("mixed", b"|b .5 5.\n|b +.5 -.5e-3\n"),
    ("mixed", b"|b 1e 1\n"),
    ("mixed", b"|b .e5 1\n"),
    ("mixed", b"|b 3.4028235e38 3.4028236e38\n|b 1.401298464324817e-45 7.006492321624086e-46\n"),
    ("mixed", b"|b 9007199254740993 123456789012345678901234567890\n"),
    ("mixed", b"|b 0." + b"0" * 200 + b"1 1e0000000000000000000000000001\n"),
    ("mixed", b"|b 1e100000 1.e5\n"),
    # separators, line ends, bytes
    ("mixed", b"|b 1\t2\r\n|b 3 4\r\n"),
    ("mixed", b"|b 1 2\r3\n"),
    ("mixed", b"|b 1 2\r\r\n"),
    ("mixed", b"|b 1 2 |# comment \r with cr\n"),
    ("mixed", b"|b 1\x0b2\n"),
    ("mixed", b"|b 1\x1c2\n"),
    ("mixed", b"|b 1 \xff\n"),
    ("mixed", b"|b 1 2 |# \xfe ok |# \xff\n"),
    ("mixed", b"0\t|b\t1\t2\t\n"),
    ("mixed", b"|b 1 2"),
    ("mixed", b"|b 1 2\r"),
    # structure: comments, blank lines, empty and repeated fields, unknown streams
    ("mixed", b"|# only\n\n   \n0 |b 1 2\n"),
    ("mixed", b"|\n"),
    ("mixed", b"|b 1 2 |\n"),
    ("mixed", b"| b 1 2\n"),
    ("mixed", b"|b 1 2 ||a 1 2 3\n"),
    ("mixed", b"|#a| b 1 2\n"),
    ("mixed", b"|b 1 2 |b 3 4\n"),
    ("mixed", b"|z 1\n|b 1 2\n"),
    ("mixed", b"1 |z 1\n|b 1 2\n2 |b 3 4\n"),
    ("mixed", b"|a 1 2 3" + b" 4" * 3000 + b"\n" + GOOD_LINE),
    ("mixed", b"|b\n|a\n"),
    # a dense dim no line can hold (the C scanner reserved room for it, then failed)
    ("huge", b"|x 1 2\n|w 1:1\n"),
    ("huge", b"|w 1:1\n"),
]
BLOCK_SIZES = (1, 7, 64, None)


def scan_outcome(
    path: Path, streams: Mapping[str, Stream], scanner: str, block: int | None, skip_bad: bool
) -> tuple[list[dict[str, torch.Tensor]], str | None, list[str]]:
    """The examples yielded, the error that ended the pass (or None) and the skipped errors."""
    reader = CTFReader(path, streams, skip_bad=skip_bad, scanner=scanner, block_bytes=block)
    examples: list[dict[str, torch.Tensor]] = []
    end = None
    try:
        for example in reader:
            examples.append(example)
    except ReaderError as error:
        end = str(error)
    return examples, end, [str(e) for e in reader.errors]


def assert_same_bits(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert_same(a, b)
    for x, y in zip(a, b, strict=True):  # -0.0 and 0.0 too
        assert all(torch.equal(x[k].view(torch.int32), y[k].view(torch.int32)) for k in x)


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize(("layout", "text"), TRICKY, ids=[str(i) for i in range(len(TRICKY))])
def test_scanners_agree_at_every_block_size(
    tmp_path: Path, layout: str, text: bytes, skip_bad: bool
) -> None:
    path = write(tmp_path, text)
    streams = DIFF_STREAMS[layout]
    examples, end, errors = scan_outcome(path, streams, "plain", None, skip_bad)
    for engine in ENGINES:
        for block in BLOCK_SIZES:
            got, got_end, got_errors = scan_outcome(path, streams, engine, block, skip_bad)
            assert (got_end, got_errors) == (end, errors), (engine, block)
            assert_same_bits(got, examples)


def test_tricky_inputs_reach_the_c_scanner(tmp_path: Path) -> None:
    # Agreement proves little if the fast paths hand every block to the plain path: many of the
    # tricky files are read by the C scanner itself, and many are refused.
    assert ctf._ctfscan is not None
    by_c = refused = 0
    for layout, text in TRICKY:
        specs = CTFReader(tmp_path, DIFF_STREAMS[layout])._native_specs
        data = text if text.endswith(b"\n") else text + b"\n"
        by_c += ctf._ctfscan.scan(data, specs, -1, None) is not None
        refused += (
            scan_outcome(write(tmp_path, text), DIFF_STREAMS[layout], "c", None, False)[1]
            is not None
        )
    assert by_c >= 15 and refused >= 30, (by_c, refused)


# -- writing --------------------------------------------------------------------------------


def test_write_checks(tmp_path: Path) -> None:
    streams = {"x": Stream("x", 2)}
    path = tmp_path / "out.ctf"
    with pytest.raises(ValueError, match="one line per sequence, found 2 steps"):
        write_ctf(path, [{"x": torch.zeros(2, 2)}], streams, ids=False)
    with pytest.raises(ValueError, match="found nan or inf"):
        write_ctf(path, [{"x": torch.tensor([[1.0, float("nan")]])}], streams)
    with pytest.raises(ValueError, match=r"expected shape \[T, 2\], found \[1, 3\]"):
        write_ctf(path, [{"x": torch.zeros(1, 3)}], streams)
    with pytest.raises(ValueError, match="no sample in any stream"):
        write_ctf(path, [{"x": torch.zeros(0, 2)}], streams)


FIXTURE = HealthCheck.function_scoped_fixture
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[dict[str, Stream], list[dict[str, torch.Tensor]], bool]:
    nstreams = draw(st.integers(1, 3))
    streams = {
        f"s{k}": Stream(f"f{k}", draw(st.integers(1, 4)), draw(st.booleans()))
        for k in range(nstreams)
    }
    ids = draw(st.booleans())
    examples = []
    for _ in range(draw(st.integers(1, 6))):
        lengths = [draw(st.integers(0, 3 if ids else 1)) for _ in streams]
        if max(lengths) == 0:
            lengths[0] = 1
        example = {}
        for (name, spec), steps in zip(streams.items(), lengths, strict=True):
            values = draw(st.lists(FLOATS, min_size=steps * spec.dim, max_size=steps * spec.dim))
            array = np.array(values, dtype=np.float32).reshape(steps, spec.dim)
            if spec.sparse:
                zeros = draw(st.lists(st.booleans(), min_size=array.size, max_size=array.size))
                array[np.array(zeros, dtype=bool).reshape(array.shape)] = 0
            example[name] = torch.from_numpy(array)
        examples.append(example)
    return streams, examples, ids


@settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=datasets())
def test_write_read_round_trip(
    tmp_path: Path, data: tuple[dict[str, Stream], list[dict[str, torch.Tensor]], bool]
) -> None:
    streams, examples, ids = data
    path = tmp_path / "round.ctf"
    assert write_ctf(path, examples, streams, ids=ids) == len(examples)
    assert_same(read_ctf(path, streams), examples)
    for engine in ENGINES[1:]:
        assert_same(read_with(engine, path, streams), examples)


# -- fuzzing --------------------------------------------------------------------------------

FUZZ_STREAMS = {**SOLAR, "w": Stream("w", 5, sparse=True)}
SEED_LINES = [
    "0 |target 0.8219895287958116 |features 0.7137870855148344\n",
    "0 |features 0.7731239092495635\n",
    "1 |features -1.5e-3 |w 0:1 4:2.5\n",
    "1 |w |features 2 |# a comment |# with an escaped pipe\n",
    "|features 5.1 |w 3:1\r\n",
    "2\t|target\t1|features .5\n",
]
ALPHABET = [*"0123456789|#: \t\r\n.eE+-_xw", "|features ", "|target ", "|w ", "\xff", "\x0b"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.sampled_from(SEED_LINES), min_size=1, max_size=8))
    text = bytearray("".join(lines).encode())
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(ALPHABET)).encode("utf-8", "surrogateescape")
        if op == "insert":
            text[at:at] = piece
        elif op == "delete":
            del text[at : at + draw(st.integers(1, 5))]
        else:
            text[at : at + 1] = piece
    return bytes(text)


def read_or_error(path: Path, engine: str) -> list[dict[str, torch.Tensor]] | tuple:
    try:
        return read_with(engine, path, FUZZ_STREAMS)
    except ReaderError as error:
        return (error.line, error.column, error.stream, error.message)


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(mutated(), st.binary(max_size=200)))
def test_fuzz_parses_or_raises_reader_error(tmp_path: Path, text: bytes) -> None:
    path = write(tmp_path, text, "fuzz.ctf")
    plain = read_or_error(path, "plain")
    for engine in ENGINES[:2]:
        fast = read_or_error(path, engine)
        if isinstance(fast, tuple) or isinstance(plain, tuple):
            assert fast == plain, engine
        else:
            assert_same(fast, plain)


def test_fuzz_small_blocks_match_whole_file(tmp_path: Path) -> None:
    rng = random.Random(0)
    templates = [
        "{i} |target 0.82 |features 0.71\n",
        "{i} |features -1.5e-3 |w 0:1 4:2.5\r\n",
        "{i}\t|w |features 2 |# a comment |# with an escaped pipe\n",
        "|# a comment line\n",
        "\n",
    ]
    text = "".join(rng.choice(templates).format(i=i // 3) for i in range(300))
    path = write(tmp_path, text)
    whole = list(CTFReader(path, FUZZ_STREAMS))
    assert len(whole) > 10
    for size in (1, 5, 64):
        assert_same(list(CTFReader(path, FUZZ_STREAMS, block_bytes=size)), whole)
