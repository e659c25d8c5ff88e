"""Every reader refuses malformed input with a ReaderError at ``path:line:column`` (IDX files:
``path: byte N``) saying what it expected and what it found: regressions found by fuzzing."""

from __future__ import annotations

import bz2
import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import ReaderError, load_series, read_idx, read_ts, write_idx
from rnnkit.data.classify import idx_data, read_labelled_ts, text_data, ts_series
from rnnkit.data.listops import read_listops_tsv
from rnnkit.data.missing import read_series
from rnnkit.data.synthetic import read_adding_csv, read_copy_file
from rnnkit.data.tagging import TagVocabularies
from rnnkit.data.text import Vocabulary
from rnnkit.data.verses import read_verse_lines
from rnnkit.data.visits import read_visits
from rnnkit.trees import Tree


def refused(call, *args, **kwargs) -> ReaderError:  # type: ignore[no-untyped-def]
    """The ReaderError ``call`` raises: exactly that type, nothing else."""
    with pytest.raises(Exception) as info:
        call(*args, **kwargs)
    assert type(info.value) is ReaderError, f"{type(info.value).__name__}: {info.value}"
    return info.value


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ the reproducers of #17


def test_listops_tsv_bad_utf8_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "l.tsv", b"0\t[MAX 1 ]\xff\n")
    err = refused(read_listops_tsv, path)
    assert str(err) == f"{path}:1:11: expected UTF-8 text, found the byte 0xff"


def test_visits_quote_inside_a_field_does_not_break_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", b'patient_id,visit_time,codes\na"b,1,x,y\n')
    err = refused(read_visits, path)
    # fields: 'a"b' (column 1), '1' (5), 'x' (7), 'y' (9); the third field is at column 7
    assert str(err).startswith(f"{path}:2:7: expected 3 fields")
    assert "found 4" in str(err)


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("2 0 3", 5, ["parents[2]", "own head"]),
        ("0 0", 3, ["expected exactly one root", "found 2"]),
        ("5 5 6 7 0 7 6", 5, ["expected every node connected", "not connected"]),
        ("1" * 5000 + " 0", 1, ["expected a head in 0..2", "more than 18 digits"]),
    ],
)
def test_from_parents_errors_are_reader_errors_with_a_column(
    text: str, column: int, words: list[str]
) -> None:
    err = refused(Tree.from_parents, text, path="t.parents")
    assert (err.path, err.line, err.column) == ("t.parents", 1, column)
    assert str(err).startswith(f"t.parents:1:{column}: ")
    for word in words:
        assert word in str(err)
    assert refused(Tree.from_parents, text).path is None


def test_ts_without_data_gives_the_end_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.ts", b"@problemName a\n@univariate true\n")
    err = refused(read_ts, path)
    assert str(err) == f"{path}:2:17: expected an @data line, found the end of the file"


@pytest.mark.parametrize(
    ("data", "place", "found"),
    [
        (b't,x\n2024-01-02,"1\n', "2:14", "unexpected end of data"),  # unclosed quote
        (b't,x\n"2024-01-02" ,1\n', "2:13", "',' expected after"),  # text after a quote
        (b"t,x\n2024-01-02,1\r2\n", "2:13", "new-line character"),  # CR in a field
        (b"t,x\n2024-01-02," + b"1" * 200000 + b"\n", "2:12", "field larger"),
        (b"\n\n", "2:1", "empty file"),
    ],
)
def test_load_series_csv_errors_have_a_column(
    tmp_path: Path, data: bytes, place: str, found: str
) -> None:
    path = write(tmp_path, "s.csv", data)
    err = refused(load_series, path, "t", ["x"])
    assert str(err).startswith(f"{path}:{place}: ") and found in str(err)


def test_visits_csv_error_has_a_column(tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", b'patient_id,visit_time,codes\np,"1" x,A\n')
    err = refused(read_visits, path)
    assert str(err).startswith(f"{path}:2:6: expected a CSV row, found")


def test_text_csv_errors_have_line_and_column_even_inside_a_quoted_record(
    tmp_path: Path,
) -> None:
    rows = 'category,text,movie_name\nfresh,"good\nfilm",A\nrotten,"bad" x,B\n'
    path = write(tmp_path, "r.csv", rows.encode())
    err = refused(text_data, path)
    # the record on line 4 (after a record that spans lines 2-3); its quote closes at column 12
    assert str(err).startswith(f"{path}:4:13: expected a CSV row, found")
    short = write(tmp_path, "s.csv", b'category,text,movie_name\nfresh,"a\nb"\n')
    err = refused(text_data, short)
    assert str(err).startswith(f"{short}:2:7: expected 3 fields as in the header, found 2")


@pytest.mark.parametrize(
    ("data", "byte", "found"),
    [
        (b"", 0, "found nothing"),
        (bytes.fromhex("0000 0701 00000001 07"), 2, "found 0x07"),
        (bytes.fromhex("0000 0800"), 3, "found 0"),
        (bytes.fromhex("0000 0802 00000001"), 8, "ends at byte 8"),
        (bytes.fromhex("0000 0801 00000001 0102"), 9, "found 2"),
    ],
)
def test_idx_errors_give_the_byte(tmp_path: Path, data: bytes, byte: int, found: str) -> None:
    path = write(tmp_path, "x.idx", data)
    err = refused(read_idx, path)
    assert err.byte == byte
    assert str(err).startswith(f"{path}: byte {byte}: expected") and found in str(err)


def test_corrupt_gzip_idx_names_the_path_and_byte(tmp_path: Path) -> None:
    write_idx(tmp_path / "ok.idx.gz", np.arange(200, dtype=np.uint8).reshape(10, 20))
    raw = (tmp_path / "ok.idx.gz").read_bytes()
    truncated = write(tmp_path, "t.idx.gz", raw[:-5])
    err = refused(read_idx, truncated)
    assert str(err).startswith(f"{truncated}: byte {len(raw) - 5}: expected the rest of the gzip")
    flipped = bytearray(raw)
    flipped[len(raw) - 6] ^= 0xFF  # in the CRC of the trailer
    bad = write(tmp_path, "b.idx.gz", bytes(flipped))
    err = refused(read_idx, bad)
    assert err.byte is not None and len(raw) - 8 <= err.byte < len(raw)
    assert "damaged" in str(err) and str(err).startswith(f"{bad}: byte ")
    trailing = write(tmp_path, "j.idx.gz", raw + b"junk")
    assert str(refused(read_idx, trailing)).startswith(f"{trailing}: byte {len(raw)}: ")
    padded = write(tmp_path, "p.idx.gz", raw + b"\0\0\0")  # zero padding, as gzip allows
    assert read_idx(padded).shape == (10, 20)
    twice = write(tmp_path, "m.idx.gz", gzip.compress(raw[:0]) + raw)  # two members
    assert read_idx(twice).shape == (10, 20)


def test_idx_labels_that_no_training_image_has_are_located(tmp_path: Path) -> None:
    images = np.zeros((6, 2, 2), np.uint8)
    for name in ("tr", "te"):
        write_idx(tmp_path / f"{name}-images.idx", images)
    write_idx(tmp_path / "tr-labels.idx", np.array([0, 1, 0, 1, 0, 1], np.uint8))
    write_idx(tmp_path / "te-labels.idx", np.array([0, 1, 0, 7, 0, 1], np.uint8))
    p = [tmp_path / n for n in ("tr-images.idx", "tr-labels.idx", "te-images.idx")]
    err = refused(idx_data, *p, tmp_path / "te-labels.idx", validation=2)
    assert str(err).startswith(f"{tmp_path / 'te-labels.idx'}: byte 11: label 3: expected")
    assert "found 7" in str(err)


# ------------------------------------------------------------------ further classes of bug


@pytest.mark.parametrize(
    ("parse", "text", "place"),
    [
        (Tree.from_brackets, "(S (NP a)\n  (VP b)) )", (2, 11)),
        (Tree.from_brackets, "(S\n (NP a", (2, 7)),
        (Tree.from_listops, "[MAX 1\n 2 ] ]", (2, 6)),
        (Tree.from_parents, "2 0\n 0", (2, 2)),
    ],
)
def test_text_parsers_give_the_line_of_a_multiline_text(parse, text: str, place) -> None:  # type: ignore[no-untyped-def]
    err = refused(parse, text, path="f.txt")
    assert (err.line, err.column) == place
    assert str(err).startswith(f"f.txt:{place[0]}:{place[1]}: ")


def test_deep_nesting_is_read_or_refused_never_a_crash() -> None:
    deep = Tree.from_brackets("(" * 20000 + "a" + ")" * 20000)  # far past the recursion limit
    assert deep.height() == 20000 - 1  # (a) is a labelled leaf, the rest wrap it
    assert Tree.from_listops("[MAX " * 5000 + "1" + " ]" * 5000).height() == 2 * 5000
    err = refused(Tree.from_brackets, "(" * 20000)
    assert err.column == 20001 and "not closed" in str(err)
    with pytest.raises(SyntaxError) as info:
        Tree.from_python("-" * 100000 + "1", path="deep.py")
    assert (info.value.filename, info.value.lineno) == ("deep.py", 1)


def test_python_null_byte_is_a_located_syntax_error() -> None:
    with pytest.raises(SyntaxError, match="null byte") as info:
        Tree.from_python("x = 1\ny = \0\n", path="n.py")
    assert (info.value.filename, info.value.lineno, info.value.offset) == ("n.py", 2, 5)


def test_bracket_label_with_more_digits_than_int_converts_is_text() -> None:
    tree = Tree.from_brackets(f"({'1' * 5000} a)")
    assert tree.label == "1" * 5000 and tree.token == "a"


def test_copy_file_huge_or_non_ascii_digits(tmp_path: Path) -> None:
    for piece, column in ((b"1" * 5000, 3), ("\u00b2".encode(), 3)):
        path = write(tmp_path, "c.txt", b"1 " + piece + b" 2\n")
        err = refused(read_copy_file, path)
        assert str(err).startswith(f"{path}:1:{column}: expected a symbol id 0-9, found")


def test_copy_file_zeros_beyond_int_digit_limit(tmp_path: Path) -> None:
    """The long fuzz run's finding: 20,000 zeros are the symbol 0 (int() refuses them)."""
    path = write(tmp_path, "c.txt", b"1 " + b"0" * 20000 + b" 2\n3 " + b"0" * 5000 + b"4\n")
    first, second = read_copy_file(path)
    assert first.tolist() == [1, 0, 2]
    assert str(refused(read_copy_file, write(tmp_path, "d.txt", b"0" * 5000 + b"12\n"))).startswith(
        f"{tmp_path / 'd.txt'}:1:1: expected a symbol id 0-9, found"
    )
    assert second.tolist() == [3, 4]


def test_listops_label_digit_that_int_refuses(tmp_path: Path) -> None:
    path = write(tmp_path, "l.tsv", "\u00b2\t[MAX 1 ]\n".encode())
    assert str(refused(read_listops_tsv, path)).startswith(f"{path}:1:1: expected a label 0-9")


def test_empty_synthetic_files_give_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", b"value,marker\n\n")
    assert str(refused(read_adding_csv, path)).startswith(f"{path}:2:1: expected at least one")
    assert str(refused(read_copy_file, write(tmp_path, "c.txt", b""))).startswith(
        f"{tmp_path / 'c.txt'}:1:1: expected at least one"
    )


def test_verse_lines_bad_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "v.txt", b"Ge1:1 In the\nGe1:2 beg\xc3\x28inning\n")
    assert str(refused(read_verse_lines, path)) == (
        f"{path}:2:10: expected UTF-8 text, found the byte 0xc3"
    )


def test_airquality_dates_out_of_range_or_repeated(tmp_path: Path) -> None:
    head = b'"rownames","Ozone","Solar.R","Wind","Temp","Month","Day"\n'
    for row, found in (
        (b"1,41,190,7.4,67,1e999,1\n", "found inf and 1"),
        (b"1,41,190,7.4,67,13,1\n", "found 13 and 1"),
        (b"1,41,190,7.4,67,5,1.5\n", "found 5 and 1.5"),
    ):
        path = write(tmp_path, "air.csv", head + b"\n" + row)
        err = refused(read_series, "airquality", path)
        assert str(err).startswith(f"{path}:3:1: expected a Month and a Day") and found in str(err)
    path = write(tmp_path, "air.csv", head + b"1,41,190,7.4,67,5,2\n2,36,118,8,72,5,2\n")
    err = refused(read_series, "airquality", path)
    assert str(err).startswith(f"{path}:3:1: expected dates in increasing order")


def test_visits_time_zone_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", b"patient_id,visit_time,codes\np,0001-01-01T00:00+01:00,A\n")
    err = refused(read_visits, path)
    assert str(err).startswith(f"{path}:2:3: patient 'p': expected a visit time")


def test_ts_consumers_locate_their_refusals(tmp_path: Path) -> None:
    unlabelled = write(tmp_path, "u.ts", b"@univariate true\n@data\n1,2\n")
    err = refused(read_labelled_ts, unlabelled)
    assert str(err).startswith(f"{unlabelled}:2:1: expected '@classLabel true")
    labelled = write(
        tmp_path, "l.ts", b"@univariate true\n@classLabel true a b c\n@data\n1,2:a\n\n3,4:c\n"
    )
    err = refused(ts_series, labelled, ["a", "b"])
    assert str(err).startswith(f"{labelled}:6:1: series 2 has the label 'c'")
    err = refused(ts_series, labelled, ["a", "b", "c"], dimensions=2)
    assert str(err).startswith(f"{labelled}:4:1: expected 2 dimensions")


def test_compressed_csv_damage_is_located(tmp_path: Path) -> None:
    good = bz2.compress(b"category,text,movie_name\nfresh,good,A\n")
    path = write(tmp_path, "r.csv.bz2", good[:-10])
    err = refused(text_data, path)
    assert str(err).startswith(f"{path}: byte 0: expected a bz2 stream, found a damaged one")
    path = write(tmp_path, "r.csv.gz", b"\x1f\x8b\x08\x00garbage")
    assert "expected a gz stream" in str(refused(text_data, path))


@pytest.mark.parametrize(
    ("state", "found"),
    [
        ([1, 2], "state: expected a vocabulary"),
        ({"tokens": "ab"}, "state['tokens']: expected a list of strings"),
        ({"tokens": ["a"], "pad": 3}, "state['pad']: expected a string or None"),
        ({"tokens": ["a", "a"]}, "state: expected a valid vocabulary"),
    ],
)
def test_vocabulary_from_bad_json(state: object, found: str) -> None:
    err = refused(Vocabulary.from_dict, state, path="run.json")
    assert str(err).startswith(f"run.json: {found}")


@pytest.mark.parametrize(
    ("state", "found"),
    [
        (None, "state: expected a mapping"),
        ({"columns": "ab"}, "state['columns']: expected a list of strings"),
        ({"columns": ["w"], "inputs": [{}, {}]}, "state['inputs']: expected a list of one"),
        ({"columns": ["w"], "inputs": [{"tokens": [1]}]}, "state['inputs'][0]['tokens']"),
        ({"columns": ["w"], "inputs": [{"tokens": []}]}, "state['tags']: expected a vocabulary"),
    ],
)
def test_tag_vocabularies_from_bad_json(state: object, found: str) -> None:
    err = refused(TagVocabularies.from_dict, state, path="run.json")  # type: ignore[arg-type]
    assert re.match(re.escape(f"run.json: {found}"), str(err))


def test_a_long_line_parses_and_leaves_the_collector_running() -> None:
    import gc

    tree = Tree.from_listops("[SM " + "1 " * 100000 + "]")
    assert len(tree.leaves()) == 100002
    refused(Tree.from_listops, "[MAX 1")
    refused(Tree.from_brackets, "(a")
    assert gc.isenabled()
