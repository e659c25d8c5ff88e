"""Time series from CSV and pandas: loading against pandas as an oracle, golden counts of the
real files in ../shared/data/timeseries, gaps against hand-computed numbers, windows against a
plain loop, the scaler against NumPy on the training part only, and a fuzz test of the CSV path."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data.errors import ReaderError
from rnnkit.data.timeseries import (
    Scaler,
    TimeSeries,
    load_series,
    split_series,
    time_since_observed,
    windows,
)


def co2() -> TimeSeries:
    return load_series(
        shared_data("timeseries", "co2-weekly.csv"), "date", ["co2"], time_format="%Y%m%d"
    )


def write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------
# Loading


def test_co2_golden_counts_and_pandas_oracle() -> None:
    series = co2()
    assert len(series) == 2284 and series.columns == ("co2",)
    assert int(np.isnan(series.values).sum()) == 59 == int((~series.mask).sum())
    frame = pd.read_csv(shared_data("timeseries", "co2-weekly.csv"))
    expected_times = pd.to_datetime(frame["date"].astype(str), format="%Y%m%d").to_numpy()
    assert np.array_equal(series.times, expected_times.astype("datetime64[us]"))
    np.testing.assert_array_equal(series.values[:, 0], frame["co2"].to_numpy())
    assert str(series.times[0])[:10] == "1958-03-29" and str(series.times[-1])[:10] == "2001-12-29"
    assert set(np.diff(series.times).astype("timedelta64[D]").astype(int).tolist()) == {7}


def test_airquality_missing_counts() -> None:
    path = shared_data("timeseries", "nyc-airquality-1973.csv")
    series = load_series(path, None, ["Ozone", "Solar.R", "Wind", "Temp"])
    assert len(series) == 153 and series.times is None
    assert np.isnan(series.values).sum(axis=0).tolist() == [37, 7, 0, 0]
    frame = pd.read_csv(path)
    expected = frame[["Ozone", "Solar.R", "Wind", "Temp"]].to_numpy(dtype=float)
    np.testing.assert_array_equal(series.values, expected)


def test_elecdemand_rows_and_frame_path_agree() -> None:
    path = shared_data("timeseries", "elecdemand-2014.csv")
    series = load_series(path, None, ["Demand", "WorkDay", "Temperature"])
    assert series.values.shape == (17520, 3)
    frame = pd.read_csv(path)
    from_frame = load_series(frame, None, ["Demand", "WorkDay", "Temperature"])
    np.testing.assert_array_equal(series.values, from_frame.values)
    # half-hourly 2014 built with pandas: the frame path parses real timestamps
    frame["time"] = pd.date_range("2014-01-01", periods=len(frame), freq="30min")
    timed = load_series(frame, "time", ["Demand"])
    assert timed.deltas("h")[1:].tolist() == [[0.5]] * 17519


def test_frame_and_csv_paths_agree_with_time_zones(tmp_path: Path) -> None:
    text = "t,x,y\n2024-03-01T00:00:00+01:00,1.5,NA\n2024-03-01T01:30:00+01:00,,2\n"
    path = write(tmp_path, text)
    from_csv = load_series(path, "t", ["y", "x"])
    frame = pd.read_csv(path)
    from_frame = load_series(frame, "t", ["y", "x"])
    assert np.array_equal(from_csv.times, from_frame.times)
    np.testing.assert_array_equal(from_csv.values, from_frame.values)
    assert str(from_csv.times[0]) == "2024-02-29T23:00:00.000000"  # converted to UTC
    np.testing.assert_array_equal(from_csv.values, [[np.nan, 1.5], [2.0, np.nan]])


def test_csv_reading_does_not_need_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # any `import pandas` now fails
    with pytest.raises(ImportError):
        import pandas  # noqa: F401
    path = write(tmp_path, "date,v\n2000/01/02,1\n2000/01/09,?\n")
    series = load_series(path, "date", ["v"], time_format="%Y/%m/%d")
    assert series.deltas("D").tolist() == [[0.0], [7.0]]
    assert series.mask.tolist() == [[True], [False]]


@pytest.mark.parametrize(
    ("text", "kwargs", "line", "column", "found"),
    [
        ("t,x\n2024-01-01,1\n2024-01-02,abc\n", {}, 3, 12, "found 'abc'"),
        ("t,x\n2024-01-01,1\n2024-01-02\n", {}, 3, 11, "expected 2 fields"),
        ('t,x\n2024-01-01,1,"a,b"\n', {}, 2, 14, "found 3"),
        ("t,x\n2024-13-01,1\n", {}, 2, 1, "'2024-13-01'"),
        ("t,x\n20240101,1\n20240102,2\n", {"time_format": "%Y-%m-%d"}, 2, 1, "'%Y-%m-%d'"),
        ("t,x\n2024-01-02,1\n2024-01-01,2\n", {}, 3, 1, "increasing order"),
        ("t,x\n2024-01-02,1\n2024-01-02,2\n", {}, 3, 1, "increasing order"),
        ("time,x\n2024-01-02,1\n", {}, 1, 1, "no such column"),
        ("t,x,x\n2024-01-02,1,2\n", {}, 1, 1, "twice"),
        ("\n\n", {}, 2, 1, "empty file"),  # located at the end of the file
        ('t,x\n2024-01-02,"1\n', {}, 2, 14, "CSV"),  # at the quote left open
    ],
)
def test_csv_errors_are_located(
    tmp_path: Path, text: str, kwargs: dict[str, str], line: int, column: int, found: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ReaderError, match=re.escape(found)) as excinfo:
        load_series(path, "t", ["x"], **kwargs)
    assert (excinfo.value.line, excinfo.value.column) == (line, column)
    assert str(excinfo.value).startswith(str(path))


def test_frame_errors() -> None:
    frame = pd.DataFrame({"t": ["2024-01-02", "2024-01-01"], "x": [1.0, 2.0], "s": ["a", "b"]})
    with pytest.raises(ValueError, match="increasing"):
        load_series(frame, "t", ["x"])
    with pytest.raises(ValueError, match=r"\['y'\] missing"):
        load_series(frame, None, ["y"])
    with pytest.raises(ValueError, match="numbers in column 's'"):
        load_series(frame, None, ["s"])
    with pytest.raises(ValueError, match="value_columns"):
        load_series(frame, None, "x")


# ---------------------------------------------------------------------------------------------
# Gaps


IRREGULAR = (
    "when,a,b\n"
    "2024-05-01 00:00,1.0,\n"
    "2024-05-01 00:30,,2.0\n"
    "2024-05-01 02:00,,\n"
    "2024-05-01 02:15,4.0,\n"
    "2024-05-01 05:00,5.0,6.0\n"
)
# by hand, in hours: a observed at 0 and 2.25 and 5; b at 0.5 and 5
# delta_t = time since the last observation strictly before step t (0 at the first step)
HAND_HOURS = [[0.0, 0.0], [0.5, 0.5], [2.0, 1.5], [2.25, 1.75], [2.75, 4.5]]


def test_gaps_on_irregular_timestamps_by_hand(tmp_path: Path) -> None:
    series = load_series(write(tmp_path, IRREGULAR), "when", ["a", "b"])
    assert series.mask.astype(int).tolist() == [[1, 0], [0, 1], [0, 0], [1, 0], [1, 1]]
    assert series.deltas("h").tolist() == HAND_HOURS
    assert series.deltas("min").tolist() == [[60 * v for v in row] for row in HAND_HOURS]
    assert series.deltas("steps").tolist() == [[0, 0], [1, 1], [2, 1], [3, 2], [1, 3]]
    with pytest.raises(ValueError, match="unit"):
        series.deltas("month")  # type: ignore[arg-type]
    untimed = series.select(["b"])
    assert untimed.columns == ("b",)
    no_times = TimeSeries(series.values, series.columns)
    with pytest.raises(ValueError, match="steps"):
        no_times.deltas("h")


def reference_delta(times: np.ndarray, mask: np.ndarray, hours_per_unit: float) -> np.ndarray:
    """Time since the last observation strictly before each step: a direct search backwards."""
    hours = (times - times[0]) / np.timedelta64(1, "h")
    out = np.zeros(mask.shape)
    for t in range(mask.shape[0]):
        for f in range(mask.shape[1]):
            seen = [k for k in range(t) if mask[k, f]]
            since = hours[seen[-1]] if seen else hours[0]
            out[t, f] = (hours[t] - since) / hours_per_unit
    return out


def test_gaps_match_a_direct_search_on_co2() -> None:
    series = co2()[:400]
    got = time_since_observed(series.times, series.mask, "D")
    np.testing.assert_allclose(got, reference_delta(series.times, series.mask, 24.0), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Split and scaling


def test_split_by_fractions_and_dates() -> None:
    series = co2()
    train, val, test = split_series(series, [0.7, 0.15, 0.15])
    assert (len(train), len(val), len(test)) == (1598, 343, 343)  # floor(0.7 T), floor(0.85 T)
    assert np.array_equal(np.concatenate([train.times, val.times, test.times]), series.times)
    before, after = split_series(series, at=["1990-01-01"])
    cut = np.datetime64("1990-01-01")
    assert len(before) == int((series.times < cut).sum()) and (before.times < cut).all()
    assert (after.times >= cut).all() and len(before) + len(after) == len(series)
    with pytest.raises(ValueError, match="exactly one"):
        split_series(series)
    with pytest.raises(ValueError, match="summing to 1"):
        split_series(series, [0.5, 0.4])
    with pytest.raises(ValueError, match="empty"):
        split_series(series, at=["1900-01-01"])


def test_scaler_statistics_from_the_training_part_only() -> None:
    train, val, _ = split_series(co2(), [0.7, 0.15, 0.15])
    scaler = Scaler.fit(train)
    values = train.values[~np.isnan(train.values)]
    np.testing.assert_allclose(scaler.center, [values.mean()], rtol=1e-12)
    np.testing.assert_allclose(scaler.scale, [values.std()], rtol=1e-12)
    everything = co2().values
    assert abs(np.nanmean(everything) - scaler.center[0]) > 1.0  # the trend: test data not used
    scaled = scaler.transform(val)
    expected = (val.values - values.mean()) / values.std()
    np.testing.assert_allclose(scaled.values, expected, rtol=1e-12)
    assert np.array_equal(np.isnan(scaled.values), np.isnan(val.values))
    np.testing.assert_allclose(scaler.inverse_transform(scaled.values), val.values, rtol=1e-12)
    minmax = Scaler.fit(train, "minmax")
    unit = minmax.transform(train).values
    assert (np.nanmin(unit), np.nanmax(unit)) == (0.0, 1.0)


def test_scaler_columns_tensors_and_constants() -> None:
    series = TimeSeries(
        np.array([[1.0, 5.0, 2.0], [3.0, 5.0, np.nan], [5.0, 5.0, 4.0]]), ("a", "c", "b")
    )
    scaler = Scaler.fit(series)
    assert scaler.scale.tolist()[1] == 1.0  # a constant column is not divided by zero
    prediction = torch.tensor([[0.5, -1.0]], dtype=torch.float64)  # columns b, a
    back = scaler.inverse_transform(prediction, ["b", "a"])
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, torch.tensor([[3.5, 3.0 - math.sqrt(8 / 3)]]).double())
    with pytest.raises(ValueError, match="last axis of 2"):
        scaler.inverse_transform(np.zeros((1, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="fitted columns"):
        scaler.transform(series.select(["a", "b"]))
    with pytest.raises(ValueError, match=r"none in \['x'\]"):
        Scaler.fit(TimeSeries(np.array([[np.nan]]), ("x",)))


# ---------------------------------------------------------------------------------------------
# Windows


@pytest.mark.parametrize(("length", "horizon", "stride"), [(10, 3, 1), (52, 4, 7), (1, 1, 5)])
def test_windows_against_a_plain_loop(length: int, horizon: int, stride: int) -> None:
    series = co2()[:300]
    wide = TimeSeries(
        np.stack([series.values[:, 0], np.arange(300.0)], axis=1), ("co2", "week"), series.times
    )
    got = windows(wide, length, horizon, ["co2"], known=["week"], stride=stride, delta_unit="D")
    starts = list(range(0, 300 - length - horizon + 1, stride))
    assert len(got) == len(starts)
    for example, s in zip(got, starts, strict=True):
        x = wide.values[s : s + length]
        y = wide.values[s + length : s + length + horizon, :1]
        np.testing.assert_array_equal(example["features"].numpy(), x.astype(np.float32))
        np.testing.assert_array_equal(example["mask"].numpy(), ~np.isnan(x))
        np.testing.assert_array_equal(example["target"].numpy(), y.astype(np.float32))
        np.testing.assert_array_equal(example["target_mask"].numpy(), ~np.isnan(y))
        np.testing.assert_array_equal(
            example["known"].numpy(), np.arange(s + length, s + length + horizon)[:, None]
        )
        window = wide[s : s + length]
        expected = reference_delta(window.times, window.mask, 24.0)
        np.testing.assert_allclose(example["delta"].numpy(), expected, atol=1e-6)
        assert all(v.dtype == torch.float32 for v in example.values())


def test_windows_keep_missing_values_and_restart_gaps(tmp_path: Path) -> None:
    series = load_series(write(tmp_path, IRREGULAR), "when", ["a", "b"])
    got = windows(series, 3, 1, ["b"], delta_unit="h")
    assert len(got) == 2  # windows with missing values are kept
    assert got[0]["delta"].tolist() == HAND_HOURS[:3]
    # the second window starts at 00:30 and its gaps count from there, not from 00:00
    assert got[1]["delta"].tolist() == [[0.0, 0.0], [1.5, 1.5], [1.75, 1.75]]
    assert got[1]["target"].tolist() == [[6.0]] and set(got[0]) == {
        "features",
        "mask",
        "delta",
        "target",
        "target_mask",
    }
    with pytest.raises(ValueError, match="targets"):
        windows(series, 2, 1, ["zzz"])
    with pytest.raises(ValueError, match="horizon"):
        windows(series, 2, 0, ["a"])


# ---------------------------------------------------------------------------------------------
# Fuzz


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == 0:
            data[at : at + len(chunk)] = chunk
        elif kind == 1:
            data[at:at] = chunk
        elif kind == 2:
            del data[at : at + len(chunk)]
        else:
            del data[at:]
    return bytes(data)


EDITS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 1 << 20),
        st.one_of(st.binary(min_size=1, max_size=6), st.sampled_from([b",", b'"', b"\n", b"\0"])),
    ),
    max_size=6,
)


@pytest.mark.parametrize("timed", [True, False])
def test_fuzz_csv_parses_or_raises_reader_error(
    timed: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lines = shared_data("timeseries", "co2-weekly.csv").read_bytes().split(b"\n")
    seed = b"\n".join(lines[:12]) + b"\n"
    path = tmp_path_factory.mktemp("fuzz") / "input.csv"

    def read() -> None:
        if timed:
            load_series(path, "date", ["co2"], time_format="%Y%m%d")
        else:
            load_series(path, None, ["co2"])

    path.write_bytes(seed)
    read()

    @settings(
        max_examples=100,
        deadline=2000,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.one_of(st.binary(max_size=200), EDITS.map(lambda e: mutate(seed, e))))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            read()
        except ReaderError as e:
            assert str(e).startswith(str(path))

    check()


def test_header_only_csv_is_an_empty_series(tmp_path: Path) -> None:
    series = load_series(write(tmp_path, "t,x\n"), "t", ["x"])
    assert series.values.shape == (0, 1) and series.times is not None and len(series.times) == 0
    assert series.deltas("h").shape == (0, 1)
    assert windows(series, 1, 1, ["x"], delta_unit="h") == []
