"""The CTF reader with CNTK's semantics: cases translated from CNTK's own reader tests.

The files and the faults CNTK reports come from microsoft/CNTK
``Tests/UnitTests/ReaderTests``: ``Data/CNTKTextFormatReader/invalid_inputs.txt`` with its
control output ``Control/CNTKTextFormatReader/invalid_inputs_Control.txt`` (CNTK's warnings,
located by byte offset, here turned into line numbers), ``contains_blank_lines.txt``,
``duplicate_inputs.txt`` and ``missing_trailing_newline.txt`` with the expectations of
``CNTKTextFormatReaderTests.cpp`` and ``Config/CNTKTextFormatReader/edge_cases.cntk``. CNTK's
reader (``Source/Readers/CNTKTextFormatReader/TextParser.cpp``) drops a malformed sample and
keeps the rest of its row, zero-pads a short dense sample, skips an unknown input and counts an
empty row as an error; each is an option here, and the defaults stay strict.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from rnnkit.data.ctf import CTFReader, CTFWarning, Stream, iter_ctf, read_ctf
from rnnkit.data.errors import ReaderError

# invalid_inputs.txt, line by line (922 bytes; no newline after the last line).
INVALID_INPUTS = [
    "1 |A 1.0 |B 1:1     |# one of the samples in each sequence has to be valid,",
    "1 |A 1.0 |B 10:1    |# otherwise the sequence would be empty and the reader",
    "1 |A 1.0 1.0 |B 1:1 |# will raise an exception",
    "2 |A 2.0 |B 2:2",
    "2 |A 2,0 |B 2:2",
    "2 |A 2.0 |B 2::2",
    "2 |A 20. |B 2:2",
    "2 |A 2:0 |B 2:2",
    "2 |A 2.0 |B 2 ",
    "2 |A 2.0 |B 2.2",
    "2 |A 2.0 |B 2;2",
    "2 |A 2#0 |B 2:2",
    "2 |#AAAA 20 |B 2:2",
    "2 |A 2.0f |B 2:2",
    "2 |A 02.0 |B 2.2",
    "2 |A 2.0 |B 2.0:2.0",
    "2 |A 2.0 |B -2:2.0",
    "3 |A 3.0 |B 3:3",
    "3 | A 3.0 |B 3:3",
    "|A 3.0 |B 3:3",
    "| A 3.0 |B 3:3",
    " |A 3.0 |B 3:3",
    "3\t|A 3.0 |B 3:3",
    "|B 3:3",
    "|A 3.0",
    "|C 3.0",
    "4 |A 4.0 |B 4:4",
    "4| ",
    "|A 4.0 |B 4:4",
    "",
    "|",
    "|#",
    "|####\t|A 4.0|####|B 4:4",
    "5|A 5.|# the only well-formed sequence in this file|B 5:5",
    "123 |A 123 |B 1:23",
    "123 |A 124",
    "123 |B 1:24 |# sequence length will be mis-calculated here (3 instead of 2).",
    "6 |A 6.0 |B 6:6",
    "|# sparse suffix in A (totally fine, but should print a warning anyways) |A |B 6:6",
    "|A 6.0 6.0 |B 6:6",
    "|A 6.0 |B 6:6",
    "|A 6.0 |B 6:6",
]
# CNTKTextFormatReader_invalid_inputs: A dense of dim 1, B sparse of dim 10.
AB = {"A": Stream("A", 1), "B": Stream("B", 10, sparse=True)}
# The lines of the faults CNTK counts in invalid_inputs_Control.txt (each warning's byte
# offset turned into its line): bad samples, bad names after '|', empty rows, and line 42,
# which lacks its newline.
CNTK_FAULT_LINES = [2, 3, 5, 6, 8, 9, 10, 11, 12, 14, 15, 16, 19, 21, 26, 28, 30, 31, 32, 40, 42]
# CNTK's sample counts per sequence ("Maximum per-input number of samples ... (n vs. rows)").
CNTK_MAX_SAMPLES = {1: 2, 2: 9, 3: 7, 4: 3, 5: 1, 123: 2, 6: 4}


def write(tmp_path: Path, text: str, name: str = "data.ctf") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def one_hot(index: int, value: float, dim: int = 10) -> list[float]:
    row = [0.0] * dim
    row[index] = value
    return row


def as_lists(examples: list[dict[str, Tensor]]) -> list[dict[str, list[list[float]]]]:
    return [{k: v.tolist() for k, v in ex.items()} for ex in examples]


# The examples CNTK's rules give for invalid_inputs.txt, sequence by sequence (ids 1, 2, 3,
# 4, 5, 123, 6): the samples left once each bad one is dropped.
EXPECTED = [
    {"A": [[1.0], [1.0]], "B": [one_hot(1, 1.0)] * 2},
    {"A": [[2.0], [2.0], [20.0]] + [[2.0]] * 6, "B": [one_hot(2, 2.0)] * 7},
    {"A": [[3.0]] * 5, "B": [one_hot(3, 3.0)] * 7},
    {"A": [[4.0]] * 3, "B": [one_hot(4, 4.0)] * 3},
    {"A": [[5.0]], "B": [one_hot(5, 5.0)]},
    {"A": [[123.0], [124.0]], "B": [one_hot(1, 23.0), one_hot(1, 24.0)]},
    # line 39's "|A" is padded to [0]; CNTK loses line 42 (no newline), rnnkit reads it
    {"A": [[6.0], [0.0], [6.0], [6.0]], "B": [one_hot(6, 6.0)] * 5},
]


@pytest.mark.parametrize("scanner", ["c", "python", "plain"])
@pytest.mark.parametrize("block_bytes", [None, 40])
def test_invalid_inputs(tmp_path: Path, scanner: str, block_bytes: int | None) -> None:
    path = write(tmp_path, "\n".join(INVALID_INPUTS))
    errors: list[ReaderError] = []
    with pytest.warns(CTFWarning, match=r":26:2: skipped the stream 'C'") as caught:
        examples = read_ctf(
            path,
            AB,
            skip_bad=True,
            errors=errors,
            cntk_compatible=True,
            scanner=scanner,
            block_bytes=block_bytes,
        )
    assert len(caught) == 1
    assert as_lists(examples) == EXPECTED
    # CNTK's per-sequence sample counts, but for sequence 6 (line 42, read here)
    counts = [max(len(ex["A"]), len(ex["B"])) for ex in examples]
    assert counts[:-1] == [CNTK_MAX_SAMPLES[i] for i in (1, 2, 3, 4, 5, 123)]
    assert counts[-1] == CNTK_MAX_SAMPLES[6] + 1
    # the faults are CNTK's, less line 42 and plus line 17 ("-2:2.0": CNTK drops the sample,
    # an index must be digits, but its control file carries no warning for it)
    lines = [e.line for e in errors]
    assert lines == sorted({*CNTK_FAULT_LINES, 17} - {42})
    by_line = {e.line: e for e in errors}
    assert (by_line[2].stream, by_line[2].column) == ("B", 13)
    assert "sparse index must be below dim 10, found '10:1'" in str(by_line[2])
    assert "expected 1 values, found 2" in str(by_line[3])
    assert "expected a number, found '2,0'" in str(by_line[5])
    assert "expected a stream name after '|', found ' '" in str(by_line[19])
    assert "found none in '|C 3.0'" in str(by_line[26])
    assert "found a blank line" in str(by_line[30])
    assert "found none in '|#'" in str(by_line[32])


def test_invalid_inputs_with_rnnkit_defaults(tmp_path: Path) -> None:
    """rnnkit raises at the first fault; skip_bad=True skips each sequence that holds one."""
    path = write(tmp_path, "\n".join(INVALID_INPUTS))
    with pytest.raises(ReaderError, match=r"data.ctf:2:13: stream 'B': sparse index must be"):
        read_ctf(path, AB)
    errors: list[ReaderError] = []
    examples = read_ctf(path, AB, skip_bad=True, errors=errors)
    assert as_lists(examples) == [EXPECTED[4], EXPECTED[5]]  # sequences 5 and 123
    assert [e.line for e in errors] == [2, 5, 19, 28, 39]  # each skipped sequence's first
    sequences = read_ctf(path, AB, skip_bad="sequence", errors=[])
    assert as_lists(sequences) == as_lists(examples)


def test_blank_lines(tmp_path: Path) -> None:
    """CNTKTextFormatReader_blank_lines: with no errors allowed a blank line fails the read;
    _blank_lines_ignored (errors allowed): both sequences are read."""
    path = write(tmp_path, "1 |features 1.0\n\n2 |features 2.0\n")
    streams = {"features": Stream("features", 1)}
    with pytest.raises(ReaderError, match=r"data.ctf:2:1: expected at least one sample .*blank"):
        read_ctf(path, streams, cntk_compatible=True)
    for skip_bad in (True, "sequence", "sample"):
        errors: list[ReaderError] = []
        examples = read_ctf(path, streams, skip_bad=skip_bad, errors=errors, cntk_compatible=True)
        assert as_lists(examples) == [{"features": [[1.0]]}, {"features": [[2.0]]}]
        assert [(e.line, e.column) for e in errors] == [(2, 1)]
    assert as_lists(read_ctf(path, streams)) == [{"features": [[1.0]]}, {"features": [[2.0]]}]


def test_duplicate_inputs(tmp_path: Path) -> None:
    """CNTKTextFormatReader_duplicate_inputs: a stream twice on a line is an error (CNTK: the
    maximum number of errors); dropping samples keeps the first."""
    path = write(tmp_path, "1 |F1 1.0 |F2 2.0 |F2 3.0\n")
    streams = {"f1": Stream("F1", 1), "f2": Stream("F2", 1)}
    message = r"data.ctf:1:19: stream 'F2': stream appears twice on one line \(first at column 11"
    for options in ({}, {"cntk_compatible": True}):
        with pytest.raises(ReaderError, match=message):
            read_ctf(path, streams, **options)  # type: ignore[arg-type]
    errors: list[ReaderError] = []
    examples = read_ctf(path, streams, skip_bad="sample", errors=errors)
    assert as_lists(examples) == [{"f1": [[1.0]], "f2": [[2.0]]}]
    assert [(e.line, e.column) for e in errors] == [(1, 19)]


def test_missing_trailing_newline(tmp_path: Path) -> None:
    """CNTKTextFormatReader_missing_trailing_newline(_ignored): the output holds 1.0 and 2.0,
    not 3.0. CNTK loses 3.0 to the missing newline; here the last line is read and 3.0 is
    dropped as a second sample of the stream on one line."""
    path = write(tmp_path, "1|features 1.0\n1|features 2.0|features 3.0")
    streams = {"features": Stream("features", 1)}
    with pytest.raises(ReaderError, match=r":2:15: stream 'features': stream appears twice"):
        read_ctf(path, streams, cntk_compatible=True)
    errors: list[ReaderError] = []
    examples = read_ctf(path, streams, skip_bad=True, errors=errors, cntk_compatible=True)
    assert as_lists(examples) == [{"features": [[1.0], [2.0]]}]
    assert [e.line for e in errors] == [2]


# ------------------------------------------------------------- each option alone


def test_pad_dense(tmp_path: Path) -> None:
    path = write(tmp_path, "0 |x 1 |y 5\n0 |x\n1 |x 1 2 3 |y 6\n")
    streams = {"x": Stream("x", 3), "y": Stream("y", 1)}
    with pytest.raises(ReaderError, match=r"data.ctf:1:3: stream 'x': expected 3 values, found 1"):
        read_ctf(path, streams)
    examples = read_ctf(path, streams, pad_dense=True)
    assert as_lists(examples) == [
        {"x": [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "y": [[5.0]]},
        {"x": [[1.0, 2.0, 3.0]], "y": [[6.0]]},
    ]
    long = write(tmp_path, "0 |x 1 2 3 4\n", "long.ctf")
    with pytest.raises(ReaderError, match=r"long.ctf:1:3: stream 'x': expected 3 values, found 4"):
        read_ctf(long, streams, pad_dense=True)


def test_skip_unknown_warns_once_per_stream_and_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "0 |x 1 |u 9 9 |v 3\n0 |u 1 |x 2\n1 |x 3 |v\n")
    streams = {"x": Stream("x", 1)}
    with pytest.raises(ReaderError, match=r"data.ctf:1:9: stream 'u': unknown stream 'u'"):
        read_ctf(path, streams)
    reader = CTFReader(path, streams, skip_unknown=True)
    for _ in range(2):  # each pass warns again
        with pytest.warns(CTFWarning) as caught:
            examples = list(reader)
        assert [str(w.message).split(str(path))[1][:30] for w in caught] == [
            ":1:9: skipped the stream 'u', ",
            ":1:16: skipped the stream 'v',",
        ]
        assert as_lists(examples) == [{"x": [[1.0], [2.0]]}, {"x": [[3.0]]}]


def test_blank_line_errors_alone(tmp_path: Path) -> None:
    streams = {"x": Stream("x", 1)}
    cases = [
        ("0 |x 1\n\n", 2, "found a blank line"),
        ("0 |x 1\n   \t\n", 2, "found a blank line"),
        ("|# only a comment\n0 |x 1\n", 1, "found none in '|# only a comment'"),
        ("0 |x 1\n7\n", 2, "found none in '7'"),
        ("0 |x 1\n0 |# a comment |#\n", 2, "found none in '0 |# a comment |#'"),
    ]
    for text, line, found in cases:
        path = write(tmp_path, text)
        assert len(read_ctf(path, streams)) == 1  # rnnkit: such a line belongs to no sequence
        with pytest.raises(ReaderError, match=rf"data.ctf:{line}:1: .*\(blank_line_errors=True\)"):
            read_ctf(path, streams, blank_line_errors=True)
        with pytest.raises(ReaderError, match=found):
            read_ctf(path, streams, blank_line_errors=True)


def test_skip_bad_by_sample_keeps_the_rest_of_the_line(tmp_path: Path) -> None:
    text = "0 |x 1 |y 2\n0 |x oops |y 3\n1 |x 4 |y 5 6\nbad |x 7 |y 8\n1 |x 9 |y 10\n"
    path = write(tmp_path, text)
    streams = {"x": Stream("x", 1), "y": Stream("y", 1)}
    errors: list[ReaderError] = []
    examples = read_ctf(path, streams, skip_bad="sample", errors=errors)
    assert as_lists(examples) == [
        {"x": [[1.0]], "y": [[2.0], [3.0]]},
        {"x": [[4.0], [9.0]], "y": [[10.0]]},
    ]
    assert [(e.line, e.column, e.stream) for e in errors] == [
        (2, 6, "x"),
        (3, 8, "y"),
        (4, 1, None),  # a bad id: the whole line is dropped
    ]
    errors = []
    sequences = read_ctf(path, streams, skip_bad=True, errors=errors)
    assert sequences == []  # rnnkit's default skips every sequence with a bad line
    assert [e.line for e in errors] == [2, 3, 4, 5]  # line 5 reuses the id 1 of line 3


def test_reused_id_drops_the_line_by_sample(tmp_path: Path) -> None:
    path = write(tmp_path, "0 |x 1\n1 |x 2\n0 |x 3\n|x 4\n2 |x 5\n")
    errors: list[ReaderError] = []
    examples = read_ctf(path, {"x": Stream("x", 1)}, skip_bad="sample", errors=errors)
    assert as_lists(examples) == [{"x": [[1.0]]}, {"x": [[2.0], [4.0]]}, {"x": [[5.0]]}]
    assert [(e.line, "sequence id 0 was used" in str(e)) for e in errors] == [(3, True)]


def test_every_path_and_block_size_agree_with_the_options(tmp_path: Path) -> None:
    lines = []
    for i in range(60):
        lines.append(f"{i} |x {i} {i + 1} |y {i % 7}:1")
        lines.append(["|x 1", "", "|u 3 |x 2 2", "|x 1 bad", "|y 99:1 |x 5 5", "|# c"][i % 6])
    path = write(tmp_path, "\n".join(lines) + "\n")
    streams = {"x": Stream("x", 2), "y": Stream("y", 8, sparse=True)}
    results = []
    for scanner in ("c", "python", "plain"):
        for block_bytes in (None, 1, 57, 300):
            errors: list[ReaderError] = []
            with pytest.warns(CTFWarning):
                examples = read_ctf(
                    path,
                    streams,
                    skip_bad=True,
                    errors=errors,
                    cntk_compatible=True,
                    scanner=scanner,
                    block_bytes=block_bytes,
                )
            results.append((as_lists(examples), [str(e) for e in errors]))
    assert all(r == results[0] for r in results)
    examples, messages = results[0]
    assert len(examples) == 60 and len(messages) == 40  # 10 each: blank, bad, index, comment


def test_iter_ctf_and_reader_take_the_options(tmp_path: Path) -> None:
    path = write(tmp_path, "|x 1\n|x 2 |z 0\n")
    streams = {"x": Stream("x", 2)}
    with pytest.warns(CTFWarning):
        lazy = list(iter_ctf(path, streams, skip_unknown=True, pad_dense=True))
    assert as_lists(lazy) == [{"x": [[1.0, 0.0]]}, {"x": [[2.0, 0.0]]}]
    reader = CTFReader(path, streams, cntk_compatible=True, skip_bad=True)
    assert (reader.skip_mode, reader.skip_unknown, reader.pad_dense) == ("sample", True, True)
    assert CTFReader(path, streams, skip_bad=True).skip_mode == "sequence"
    assert CTFReader(path, streams).skip_mode is None


def test_option_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "|x 1\n")
    streams = {"x": Stream("x", 1)}
    with pytest.raises(ValueError, match=r"skip_bad: expected a bool, 'sequence' or 'sample'"):
        CTFReader(path, streams, skip_bad="value")
    with pytest.raises(ValueError, match=r"pad_dense: expected a bool, found 'yes'"):
        CTFReader(path, streams, pad_dense="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"read_ctf: skip_bad='sample' needs an errors list"):
        read_ctf(path, streams, skip_bad="sample")


def test_defaults_unchanged(tmp_path: Path) -> None:
    """Without options an unknown stream, a short dense sample and a stray '| ' raise; blank
    and comment-only lines belong to no sequence."""
    streams = {"x": Stream("x", 2)}
    for text, message in [
        ("|x 1 2 |u 3\n", r":1:9: stream 'u': unknown stream 'u' \(expected one of 'x'\)"),
        ("|x 1\n", r":1:1: stream 'x': expected 2 values, found 1"),
        ("|x 1 2 | x 3 4\n", r":1:9: expected a stream name after '\|', found ' '"),
    ]:
        with pytest.raises(ReaderError, match=message):
            read_ctf(write(tmp_path, text), streams)
    path = write(tmp_path, "0 |x 1 2\n\n|# note\n0 |x 3 4\n")
    assert as_lists(read_ctf(path, streams)) == [{"x": [[1.0, 2.0], [3.0, 4.0]]}]
    assert torch.equal(read_ctf(path, streams)[0]["x"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


_PIECES = [
    "0 ", "1 ", "7\t", "x ", "|a ", "|b ", "|u ", "|# c ", "| ", "|", "1.5 ", "2 ", "-3e1 ",
    "oops ", "2:1 ", "9:1 ", "3:x ", "\n", "\n", "\r\n", "\n\n", "\udcff",  # an invalid byte
]  # fmt: skip


@settings(
    max_examples=80, deadline=4000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=40))
def test_dropping_samples_never_raises_and_every_path_agrees(
    tmp_path: Path, pieces: list[str]
) -> None:
    """skip_bad='sample' records every fault instead of raising (CNTK with maxErrors high),
    and the C, Python and plain paths give the same examples and errors at any block size."""
    path = tmp_path / "fuzz.ctf"
    path.write_bytes("".join(pieces).encode("utf-8", "surrogateescape"))
    streams = {"a": Stream("a", 2), "b": Stream("b", 4, sparse=True)}
    results = []
    for scanner, block_bytes in (("plain", None), ("c", None), ("python", 7), ("c", 3)):
        errors: list[ReaderError] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CTFWarning)
            examples = read_ctf(
                path,
                streams,
                skip_bad=True,
                errors=errors,
                cntk_compatible=True,
                scanner=scanner,
                block_bytes=block_bytes,
            )
        results.append((as_lists(examples), [str(e) for e in errors]))
    assert all(r == results[0] for r in results)
