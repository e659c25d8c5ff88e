"""Many series in one long-format table (rnnkit.data.panel), against plain csv/NumPy readings."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data

from rnnkit.data.errors import ReaderError
from rnnkit.data.panel import (
    Panel,
    PanelSplit,
    PanelWarning,
    load_panel,
    panel_windows,
    split_panel,
)


def m1_rows() -> dict[str, list[tuple[int, float]]]:
    """M1 yearly read with the csv module: per series id, its (year, value) rows."""
    rows: dict[str, list[tuple[int, float]]] = {}
    with open(shared_data("timeseries", "m1-yearly.csv"), newline="") as f:
        for record in csv.DictReader(f):
            rows.setdefault(record["series_id"], []).append(
                (int(record["time"]), float(record["value"]))
            )
    return rows


def write(tmp_path: Path, text: str, name: str = "p.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def test_m1_read_equals_plain_csv() -> None:
    expected = m1_rows()
    panel = load_panel(shared_data("timeseries", "m1-yearly.csv"))
    assert panel.ids == tuple(expected) and len(panel) == 181
    assert panel.times[0].dtype == np.int64 and panel.series[0].times is None
    for i, sid in enumerate(panel.ids):
        years = np.array([t for t, _ in expected[sid]])
        values = np.array([v for _, v in expected[sid]])
        np.testing.assert_array_equal(panel.times[i], years)
        np.testing.assert_array_equal(panel.series[i].values[:, 0], values)
        assert panel.history[i] == len(values)
    # the lines: T1 starts on line 2 (after the header), each series right after the previous
    lengths = np.array([len(expected[s]) for s in panel.ids])
    firsts = [int(panel.lines[i][0]) for i in range(len(panel))]
    assert firsts == (2 + np.concatenate([[0], np.cumsum(lengths)[:-1]])).tolist()


def test_m1_frame_equals_csv() -> None:
    pd = pytest.importorskip("pandas")
    path = shared_data("timeseries", "m1-yearly.csv")
    from_csv = load_panel(path)
    from_frame = load_panel(pd.read_csv(path))
    assert from_frame.ids == from_csv.ids and from_frame.source == "frame"
    for a, b in zip(from_csv.series, from_frame.series, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
    for a, b in zip(from_csv.times, from_frame.times, strict=True):
        np.testing.assert_array_equal(a, b)


def test_interleaved_file_reads_as_the_sorted_one(tmp_path: Path) -> None:
    expected = m1_rows()
    ids = list(expected)[:20]
    # round robin over the series: T1's first year, T2's first year, ..., T1's second year, ...
    records = []
    for k in range(max(len(expected[s]) for s in ids)):
        records += [(s, *expected[s][k]) for s in ids if k < len(expected[s])]
    text = "series_id,time,value\n" + "".join(f"{s},{t},{v:g}\n" for s, t, v in records)
    path = write(tmp_path, text)
    panel = load_panel(path)
    assert panel.ids == tuple(ids)
    file_lines = path.read_text().split("\n")
    for i, sid in enumerate(ids):
        np.testing.assert_array_equal(panel.series[i].values[:, 0], [v for _, v in expected[sid]])
        np.testing.assert_array_equal(panel.times[i], [t for t, _ in expected[sid]])
        # every line recorded holds that row
        for row, line in enumerate(panel.lines[i]):
            s, t, _ = file_lines[line - 1].split(",")
            assert (s, int(t)) == (sid, expected[sid][row][0])


def test_dates_of_different_starts_and_static_covariates(tmp_path: Path) -> None:
    text = (
        "shop,day,sales,promo,holiday,size\n"
        "b,2024-01-03,5,0,0,2.0\n"
        "a,2024-01-01,1,1,0,1\n"
        "a,2024-01-02,,0,1,1\n"
        "b,2024-01-04,7,1,0,2\n"
        "a,2024-01-03,4,0,0,1\n"
    )
    panel = load_panel(
        write(tmp_path, text),
        id_column="shop",
        time_column="day",
        targets=["sales"],
        past=["promo"],
        known=["holiday"],
        static=["size"],
    )
    assert panel.ids == ("b", "a")
    assert panel.series[1].columns == ("sales", "promo", "holiday")
    np.testing.assert_array_equal(panel.series[1].values, [[1, 1, 0], [math.nan, 0, 1], [4, 0, 0]])
    assert panel.times[0].astype("datetime64[D]").astype(str).tolist() == [
        "2024-01-03",
        "2024-01-04",
    ]
    assert panel.series[0].times is not None
    np.testing.assert_array_equal(panel.static, [[2.0], [1.0]])
    assert panel.static_columns == ("size",)


# ---------------------------------------------------------------------------------------------
# Bad input: each refused with the series id, path:line and what was expected


def refusal(path: Path, **options: object) -> str:
    with pytest.raises(ReaderError) as caught:
        load_panel(path, **options)  # type: ignore[arg-type]
    return str(caught.value)


def test_duplicate_time_within_a_series(tmp_path: Path) -> None:
    path = write(tmp_path, "series_id,time,value\nA,1,1\nB,1,2\nA,2,3\nA,2,4\n")
    assert refusal(path) == (
        f"{path}:5:3: series 'A': column 'time': expected one row per time within a series, "
        "found '2' again (first at line 4)"
    )


def test_time_going_backwards_within_a_series(tmp_path: Path) -> None:
    # interleaved series are fine; B going back from 1991 to 1990 is not
    path = write(tmp_path, "series_id,time,value\nA,2001,1\nB,1991,2\nA,2002,3\nB,1990,4\n")
    assert refusal(path) == (
        f"{path}:5:3: series 'B': column 'time': expected times increasing within a series "
        "(each series sorted by time; series may interleave), found '1990' after '1991' "
        "(line 3)"
    )


def test_dates_going_backwards(tmp_path: Path) -> None:
    path = write(tmp_path, "id,t,y\nx,2024-01-02,1\nx,2024-01-01,2\n")
    message = refusal(path, id_column="id", time_column="t", targets=["y"])
    assert message == (
        f"{path}:3:3: series 'x': column 't': expected times increasing within a series "
        "(each series sorted by time; series may interleave), found '2024-01-01' after "
        "'2024-01-02' (line 2)"
    )


def test_static_covariate_varying_within_a_series(tmp_path: Path) -> None:
    path = write(tmp_path, "series_id,time,value,size\nA,1,1,3\nB,1,1,5\nA,2,2,3\nA,3,2,4\n")
    assert refusal(path, static=["size"]) == (
        f"{path}:5:7: series 'A': column 'size': expected a static covariate, one value per "
        "series, found 4 after 3 (line 2)"
    )


def test_known_covariate_missing_in_the_future_part(tmp_path: Path) -> None:
    text = "series_id,time,value,temp\nA,1,1,10\nA,2,2,11\nA,3,,12\nA,4,,\nB,1,5,1\n"
    path = write(tmp_path, text)
    assert refusal(path, known=["temp"]) == (
        f"{path}:5:6: series 'A': column 'temp': expected a value in every row after the last "
        "target (the future part, declared known), found it missing"
    )
    # a missing known value before the last target is a missing observation: kept, masked
    text = "series_id,time,value,temp\nA,1,1,\nA,2,2,11\nA,3,,12\n"
    panel = load_panel(write(tmp_path, text, "ok.csv"), known=["temp"])
    assert panel.history.tolist() == [2]
    assert panel.series[0].mask[:, 1].tolist() == [False, True, True]


def test_future_part_shorter_than_the_horizon(tmp_path: Path) -> None:
    text = (
        "series_id,time,value,temp\n"
        + "".join(f"A,{t},{t},{t}\n" for t in range(1, 9))
        + "A,9,,9\n"
    )
    path = write(tmp_path, text)
    split = split_panel(load_panel(path, known=["temp"]), horizon=2, validation=0)
    with pytest.raises(ValueError) as caught:
        panel_windows(split, "future", input_length=3)
    assert str(caught.value) == (
        f"series 'A' ({path}:10): expected 2 rows after the last target (the future part, "
        "horizon 2) with the known covariates ['temp'], found 1"
    )


def test_a_longer_test_part_moves_validation_and_training_back(tmp_path: Path) -> None:
    text = "series_id,time,value\n" + "".join(f"A,{t},{t}\n" for t in range(12))
    split = split_panel(load_panel(write(tmp_path, text)), horizon=2, test=5)
    assert split.bounds.tolist() == [[5, 7, 12]]  # test rows 7-11, validation 5-6
    assert split.scalers[0].center.tolist() == [2.0]  # fitted on rows 0-4 only
    with pytest.raises(ValueError, match=r"test: expected an integer >= horizon = 2, found 1"):
        split_panel(load_panel(write(tmp_path, text)), horizon=2, test=1)


def test_series_with_no_rows_in_the_training_part(tmp_path: Path) -> None:
    text = "series_id,time,value\n" + "".join(f"A,{t},{t}\n" for t in range(10))
    text += "".join(f"B,{t},{t}\n" for t in range(4))
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        split_panel(load_panel(path), horizon=2)
    assert str(caught.value) == (
        f"series 'B' ({path}:12): expected rows in the training part (before the last "
        "validation + test = 4 steps of its history), found 4 steps of history"
    )
    # a series whose training part has no observed target
    text = "series_id,time,value\n" + "".join(f"A,{t},{t}\n" for t in range(10))
    text += "C,0,\nC,1,\n" + "".join(f"C,{t},{t}\n" for t in range(2, 6))
    path = write(tmp_path, text, "c.csv")
    with pytest.raises(ValueError) as caught:
        split_panel(load_panel(path), horizon=2)
    assert str(caught.value) == (
        f"series 'C' ({path}:12): expected an observed value of each column in the training "
        "part (rows 1-2 of the series, up to line 13) to fit its scaling, found none in "
        "['value']"
    )


def test_frame_refusals_name_the_row() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"series_id": ["A", "B", "A"], "time": [1, 1, 1], "value": [1.0, 2, 3]})
    with pytest.raises(ValueError) as caught:
        load_panel(frame)
    assert str(caught.value) == (
        "row 2: series 'A': column 'time': expected one row per time within a series, found "
        "'1' again (first at row 0)"
    )


def test_bad_fields_and_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "series_id,time,value\nA,1,x\n")
    assert refusal(path) == (
        f"{path}:2:5: column 'value': expected a number or a missing marker "
        "['', 'NA', 'NaN', 'nan', 'N/A', 'null', '?'], found 'x'"
    )
    path = write(tmp_path, "series_id,time,value\nA,1,1\n", "h.csv")
    assert refusal(path, static=["size"]) == (
        f"{path}:1:1: static: expected one column 'size' in the header "
        "['series_id', 'time', 'value'], found no such column"
    )
    path = write(tmp_path, "series_id,time,value\nA,yesterday,1\n", "t.csv")
    assert refusal(path) == (
        f"{path}:2:3: column 'time': expected an integer time or a date in ISO 8601, "
        "found 'yesterday'"
    )
    path = write(tmp_path, "series_id,time,value\nA,1,1\n,2,1\n", "id.csv")
    assert refusal(path) == f"{path}:3:1: column 'series_id': expected a series id, found none"
    with pytest.raises(ValueError, match=r"columns: expected each column in one role only"):
        load_panel(path, past=["value"])


# ---------------------------------------------------------------------------------------------
# Split and scaling


def test_per_series_scaling_against_numpy() -> None:
    expected = m1_rows()
    split = split_panel(load_panel(shared_data("timeseries", "m1-yearly.csv")), horizon=6)
    assert isinstance(split, PanelSplit) and split.validation == 6
    for i, sid in enumerate(split.panel.ids):
        values = np.array([v for _, v in expected[sid]])
        n = len(values)
        assert split.bounds[i].tolist() == [n - 12, n - 6, n]
        train = values[: n - 12]
        mean, std = train.sum() / len(train), math.sqrt(((train - train.mean()) ** 2).mean())
        np.testing.assert_allclose(split.scalers[i].center, [mean], rtol=1e-12)
        np.testing.assert_allclose(split.scalers[i].scale, [std if std > 0 else 1.0], rtol=1e-12)
        np.testing.assert_allclose(
            split.scaled[i].values[:, 0], (values - mean) / std, rtol=1e-10, atol=1e-12
        )


def test_split_arguments() -> None:
    panel = load_panel(shared_data("timeseries", "m1-yearly.csv"))
    with pytest.raises(ValueError, match=r"validation: expected 0 or an integer >= horizon = 6"):
        split_panel(panel, horizon=6, validation=3)
    with pytest.raises(ValueError, match=r"horizon: expected an integer >= 1, found 0"):
        split_panel(panel, horizon=0)


# ---------------------------------------------------------------------------------------------
# Windows, against a plain loop over each series


def loop_windows(split: PanelSplit, part: str, t_in: int, short: str) -> list[dict]:
    """Every window of ``part`` built row by row: ends e (first horizon row) that keep the
    horizon inside the part, the input row r = e - t_in + k read as NaN when r < 0."""
    h, panel = split.horizon, split.panel
    n_target = len(panel.targets)
    known_at = len(panel.targets) + len(panel.past)
    out = []
    for i in range(len(panel)):
        train_end, validation_end, _ = split.bounds[i].tolist()
        x = split.scaled[i].values
        if part == "train":
            ends = [e for e in range(1, train_end - h + 1) if e >= t_in]
            if not ends and short == "pad" and train_end - h >= 1:
                ends = [train_end - h]
        elif part == "validation":
            ends = list(range(train_end, validation_end - h + 1))
        else:
            ends = [validation_end]
        if short == "drop":
            ends = [e for e in ends if e >= t_in]
        for e in ends:
            rows = [x[r] if r >= 0 else np.full(x.shape[1], np.nan) for r in range(e - t_in, e)]
            features = np.array(rows)
            out.append(
                {
                    "series": i,
                    "features": features,
                    "in_series": [1.0 if r >= 0 else 0.0 for r in range(e - t_in, e)],
                    "target": x[e : e + h, :n_target],
                    "known": x[e : e + h, known_at:],
                    "when": panel.times[i][e : e + h].astype(np.int64),
                    "static": split.static[i],
                }
            )
    return out


def assert_same(examples: list, expected: list) -> None:
    assert len(examples) == len(expected)
    for got, want in zip(examples, expected, strict=True):
        assert got["series"].tolist() == [want["series"]]
        f = got["features"].numpy()
        np.testing.assert_allclose(f, want["features"].astype(np.float32), equal_nan=True)
        np.testing.assert_array_equal(got["mask"].numpy(), ~np.isnan(want["features"]))
        assert got["in_series"][:, 0].tolist() == want["in_series"]
        np.testing.assert_allclose(
            got["target"].numpy(), want["target"].astype(np.float32), equal_nan=True
        )
        np.testing.assert_array_equal(got["target_mask"].numpy(), ~np.isnan(want["target"]))
        assert got["when"].tolist() == [want["when"].tolist()]
        if "known" in got:
            np.testing.assert_allclose(got["known"].numpy(), want["known"].astype(np.float32))
        if "static" in got:
            np.testing.assert_allclose(got["static"].numpy()[0], want["static"], rtol=1e-6)


@pytest.mark.parametrize("short", ["pad", "drop"])
def test_m1_windows_against_a_loop(short: str) -> None:
    split = split_panel(load_panel(shared_data("timeseries", "m1-yearly.csv")), horizon=6)
    t_in = 12
    for part in ("train", "validation", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PanelWarning)
            examples = panel_windows(split, part, t_in, short=short)  # type: ignore[arg-type]
        assert_same(examples, loop_windows(split, part, t_in, short))
    # every series has a test window when padded: the global model forecasts all 181
    test = panel_windows(split, "test", t_in)
    assert sorted(e["series"].item() for e in test) == list(range(181))


def test_short_series_warnings() -> None:
    expected = m1_rows()
    split = split_panel(load_panel(shared_data("timeseries", "m1-yearly.csv")), horizon=6)
    lengths = {sid: len(rows) for sid, rows in expected.items()}
    # drop: a test window needs 12 + 6 rows of history before the test part's end
    dropped = [s for s in split.panel.ids if lengths[s] - 6 < 12]
    with pytest.warns(PanelWarning) as caught:
        test = panel_windows(split, "test", 12, short="drop")
    assert len(caught) == 1
    listed = ", ".join(f"{s!r} ({lengths[s]} rows, {lengths[s] - 12} in training)" for s in dropped)
    assert str(caught[0].message) == (
        "short='drop': series left out of the test windows (each needs input_length 12 rows "
        f"before its test horizon): {listed}"
    )
    assert len(test) == 181 - len(dropped)
    # pad: a training part of 6 rows or fewer gives no training window
    no_train = [s for s in split.panel.ids if lengths[s] - 12 <= 6]
    with pytest.warns(PanelWarning) as caught:
        train = panel_windows(split, "train", 12)
    listed = ", ".join(
        f"{s!r} ({lengths[s]} rows, {lengths[s] - 12} in training)" for s in no_train
    )
    assert str(caught[0].message) == (
        "short='pad': series left out of the train windows (each needs more than horizon 6 "
        f"rows in its training part): {listed}"
    )
    assert {e["series"].item() for e in train} == {
        i for i, s in enumerate(split.panel.ids) if s not in no_train
    }


def covariate_panel(tmp_path: Path) -> Panel:
    """Three series of different lengths and starts, with a past, a known and two statics."""
    rng = np.random.default_rng(0)
    lines = ["id,t,y,past,known,size,kind"]
    for sid, start, length, size, kind in (
        ("a", 3, 20, 1.0, 0),
        ("b", 0, 11, 4.0, 1),
        ("c", 7, 30, 2.5, 1),
    ):
        for k in range(length):
            y = "" if rng.random() < 0.1 else f"{rng.normal():.4f}"
            lines.append(f"{sid},{start + k},{y},{rng.normal():.4f},{k % 7},{size},{kind}")
        for k in range(length, length + 3):  # the future part: known only
            lines.append(f"{sid},{start + k},,,{k % 7},{size},{kind}")
    path = write(tmp_path, "\n".join(lines) + "\n")
    return load_panel(
        path,
        id_column="id",
        time_column="t",
        targets=["y"],
        past=["past"],
        known=["known"],
        static=["size", "kind"],
    )


def test_covariate_windows_against_a_loop(tmp_path: Path) -> None:
    panel = covariate_panel(tmp_path)
    split = split_panel(panel, horizon=3, validation=3)
    # statics are scaled across the series
    sizes, kinds = np.array([1.0, 4.0, 2.5]), np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(split.static[:, 0], (sizes - sizes.mean()) / sizes.std())
    np.testing.assert_allclose(split.static[:, 1], (kinds - kinds.mean()) / kinds.std())
    for part in ("train", "validation", "test"):
        examples = panel_windows(split, part, 6)  # type: ignore[arg-type]
        assert set(examples[0]) == {
            "features",
            "mask",
            "target",
            "target_mask",
            "known",
            "in_series",
            "series",
            "when",
            "static",
        }
        assert_same(examples, loop_windows(split, part, 6, "pad"))
    # b (11 rows): training part 5, so one padded training window with horizon rows 2..4
    train = [e for e in panel_windows(split, "train", 6) if e["series"].item() == 1]
    assert len(train) == 1 and train[0]["in_series"][:, 0].tolist() == [0, 0, 0, 0, 1, 1]
    assert train[0]["when"].tolist() == [[2, 3, 4]]


def test_future_windows(tmp_path: Path) -> None:
    panel = covariate_panel(tmp_path)
    split = split_panel(panel, horizon=3, validation=3)
    future = panel_windows(split, "future", 6)
    assert [e["series"].item() for e in future] == [0, 1, 2]
    for i, e in enumerate(future):
        end = int(panel.history[i])
        x = split.scaled[i].values
        assert torch.isnan(e["target"]).all() and (e["target_mask"] == 0).all()
        np.testing.assert_allclose(e["known"].numpy()[:, 0], x[end : end + 3, 2].astype(np.float32))
        np.testing.assert_allclose(
            e["features"].numpy(), x[end - 6 : end].astype(np.float32), equal_nan=True
        )
        assert e["when"].tolist() == [panel.times[i][end : end + 3].tolist()]


def test_future_clock_continues_dates(tmp_path: Path) -> None:
    text = "series_id,time,value\n" + "".join(f"A,2024-01-{d:02d},{d}\n" for d in range(1, 23, 7))
    split = split_panel(load_panel(write(tmp_path, text)), horizon=1, validation=0)
    (e,) = panel_windows(split, "future", 2)
    when = e["when"].numpy().astype("datetime64[us]").astype("datetime64[D]").astype(str)
    assert when.tolist() == [["2024-01-29"]]


def test_drop_in_training_and_no_validation_part() -> None:
    panel = load_panel(shared_data("timeseries", "m1-yearly.csv"))
    split = split_panel(panel, horizon=6, validation=0)
    lengths = [len(s) for s in panel.series]
    # every training part (n - 6 >= 9 rows) gives a padded window; dropped when under 12 + 6
    train = panel_windows(split, "train", 12)
    assert {e["series"].item() for e in train} == set(range(181))
    dropped = [i for i, n in enumerate(lengths) if n - 6 < 18]
    with pytest.warns(PanelWarning, match=r"each needs input_length 12 \+ horizon 6 rows in its "):
        kept = panel_windows(split, "train", 12, short="drop")
    assert {e["series"].item() for e in kept} == set(range(181)) - set(dropped)
    with pytest.raises(ValueError, match=r"found 'validation' \(validation=0\)"):
        panel_windows(split, "validation", 12)


def test_mutated_files_raise_only_reader_errors(tmp_path: Path) -> None:
    """Any damage to a file is a ReaderError (the rule bench/fuzz.py checks for every reader)."""
    rng = np.random.default_rng(1)
    lines = ["series_id,time,value,temp,size"]
    for sid, start in (("A", 1990), ("B", 2001)):
        lines += [f"{sid},{start + k},{k * 1.5},{k % 3},{len(sid)}" for k in range(8)]
        lines += [f"{sid},{start + 8},,1,{len(sid)}"]
    original = "\n".join(lines) + "\n"
    # "\udcff" is written as the byte 0xff (not UTF-8); "\u00b2" is a digit to str.isdigit
    alphabet = [*',"\n\r x-+.:9T0', "\u00b2", "\udcff", "9" * 20]
    path = tmp_path / "m.csv"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(400):
        text = original
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(text)))
            kind = rng.integers(0, 3)
            if kind == 0:
                text = text[:at] + text[at + 1 :]
            elif kind == 1:
                text = text[:at] + alphabet[int(rng.integers(len(alphabet)))] + text[at:]
            else:
                rows = text.split("\n")
                k = int(rng.integers(1, len(rows)))
                rows.insert(int(rng.integers(1, len(rows))), rows[k])
                text = "\n".join(rows)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            load_panel(path, known=["temp"], static=["size"])
            outcomes["read"] += 1
        except ReaderError:
            outcomes["refused"] += 1
    assert outcomes["read"] > 20 and outcomes["refused"] > 100, outcomes
