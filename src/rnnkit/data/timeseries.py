"""Time series from CSV files or pandas frames, and the examples a forecaster trains on.

`load_series` reads a table into a `TimeSeries`: real timestamps (regular or not), float values
``[T, F]`` with ``NaN`` where a value is missing (missing values are kept, never dropped), and the
mask of observed values. `split_series` cuts it in time order; `Scaler` is fitted on the training
part only and applied unchanged to the others; `windows` turns a part into examples: an input
window ``[T_in, F]`` with its mask and the time since each variable was last observed (the
``values, mask, delta`` triple GRU-D needs), and the forecast horizon ``[H, F_target]``.

pandas is optional: CSV files are read with the `csv` module and NumPy; pandas is imported only
when a frame is given.

>>> import numpy as np
>>> times = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T03"], dtype="datetime64[us]")
>>> s = TimeSeries(np.array([[1.0], [np.nan], [3.0]]), ("x",), times)
>>> s.mask[:, 0].tolist(), s.deltas("h")[:, 0].tolist()
([True, False, True], [0.0, 1.0, 3.0])
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal, Union, overload

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import csv_row, end_of, read_lines

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Scaler",
    "TimeSeries",
    "load_series",
    "parse_time",
    "split_series",
    "time_since_observed",
    "windows",
]

PathArg = Union[str, "os.PathLike[str]"]
TimeUnit = Literal["s", "min", "h", "D", "W", "steps"]
_UNIT_LENGTHS = {
    "s": np.timedelta64(1, "s"),
    "min": np.timedelta64(1, "m"),
    "h": np.timedelta64(1, "h"),
    "D": np.timedelta64(1, "D"),
    "W": np.timedelta64(1, "W"),
}
MISSING = ("", "NA", "NaN", "nan", "N/A", "null", "?")


@dataclass(frozen=True, eq=False)
class TimeSeries:
    """F variables observed at T times.

    Attributes:
        values: float64 ``[T, F]``, ``NaN`` where a value is missing.
        columns: the F variable names.
        times: ``datetime64[us]`` ``[T]``, strictly increasing, or None for a series known only
            by its order (its gaps are then counted in steps).
    """

    values: np.ndarray
    columns: tuple[str, ...]
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ValueError(
                f"values: expected shape [T, {len(self.columns)}] (one column per name), "
                f"found {list(self.values.shape)}"
            )
        if self.times is not None:
            if self.times.shape != (self.values.shape[0],):
                raise ValueError(
                    f"times: expected shape [{self.values.shape[0]}] (one per row of values), "
                    f"found {list(self.times.shape)}"
                )
            if self.times.dtype != np.dtype("datetime64[us]"):
                raise ValueError(f"times: expected datetime64[us], found {self.times.dtype}")
            if np.isnat(self.times).any() or (np.diff(self.times) <= np.timedelta64(0)).any():
                raise ValueError("times: expected strictly increasing timestamps without NaT")

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, rows: slice) -> TimeSeries:
        """The rows ``rows`` (a slice), in time order."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"rows: expected a slice with step 1, found {rows!r}")
        times = None if self.times is None else self.times[rows]
        return TimeSeries(self.values[rows], self.columns, times)

    @property
    def mask(self) -> np.ndarray:
        """bool ``[T, F]``: True where a value was observed."""
        return ~np.isnan(self.values)

    def column_indices(self, names: Sequence[str], argument: str = "columns") -> list[int]:
        """Positions of ``names`` among `columns`; ValueError naming ``argument`` otherwise."""
        missing = [n for n in names if n not in self.columns]
        if isinstance(names, str) or missing:
            raise ValueError(
                f"{argument}: expected a list of names from {list(self.columns)}, found {names!r}"
            )
        return [self.columns.index(n) for n in names]

    def select(self, names: Sequence[str]) -> TimeSeries:
        """The series of the variables ``names`` only."""
        return TimeSeries(self.values[:, self.column_indices(names)], tuple(names), self.times)

    def deltas(self, unit: TimeUnit) -> np.ndarray:
        """float64 ``[T, F]``: `time_since_observed` over the whole series."""
        return time_since_observed(self.times, self.mask, unit)


def _elapsed(times: np.ndarray | None, length: int, unit: TimeUnit) -> np.ndarray:
    """float64 ``[T]``: the time of each step since the first, in ``unit``."""
    if unit == "steps":
        return np.arange(length, dtype=np.float64)
    if unit not in _UNIT_LENGTHS:
        raise ValueError(f"unit: expected one of {[*_UNIT_LENGTHS, 'steps']}, found {unit!r}")
    if times is None:
        raise ValueError(f"unit: a series without times has gaps in 'steps' only, found {unit!r}")
    if length == 0:
        return np.zeros(0)
    return (times - times[0]) / _UNIT_LENGTHS[unit]


def time_since_observed(times: np.ndarray | None, mask: np.ndarray, unit: TimeUnit) -> np.ndarray:
    """GRU-D's ``delta``: per variable, the time since its last observation before each step.

    With ``s_t`` the time of step t and ``m_t`` the mask (Che et al. 2018, eq. 2)::

        delta_1 = 0
        delta_t = s_t - s_{t-1}                if m_{t-1} = 1
        delta_t = s_t - s_{t-1} + delta_{t-1}  if m_{t-1} = 0

    Args:
        times: ``datetime64`` ``[T]``, or None to count steps.
        mask: bool ``[T, F]``, True where observed.
        unit: ``"s"``, ``"min"``, ``"h"``, ``"D"``, ``"W"``, or ``"steps"`` (one per row,
            whatever the timestamps).

    Returns:
        float64 ``[T, F]``.

    >>> t = np.array(["2024-01-01", "2024-01-02", "2024-01-05", "2024-01-06"], "datetime64[D]")
    >>> m = np.array([[1, 1], [0, 1], [0, 1], [1, 0]], dtype=bool)
    >>> time_since_observed(t, m, "D").tolist()
    [[0.0, 0.0], [1.0, 1.0], [4.0, 3.0], [5.0, 1.0]]
    """
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"mask: expected bool [T, F], found {mask.dtype} {list(mask.shape)}")
    if times is not None and times.shape != mask.shape[:1]:
        raise ValueError(
            f"times: expected shape [{mask.shape[0]}] (one per row of mask), "
            f"found {list(times.shape)}"
        )
    elapsed = _elapsed(times, mask.shape[0], unit)
    gaps = np.diff(elapsed)
    delta = np.zeros(mask.shape, dtype=np.float64)
    for t in range(1, mask.shape[0]):
        delta[t] = gaps[t - 1] + np.where(mask[t - 1], 0.0, delta[t - 1])
    return delta


# ---------------------------------------------------------------------------------------------
# Loading


def parse_time(text: str, time_format: str | None) -> datetime:
    """One timestamp: ISO 8601 when ``time_format`` is None, else `datetime.strptime`."""
    text = text.strip()
    moment = (
        datetime.fromisoformat(text)
        if time_format is None
        else datetime.strptime(text, time_format)
    )
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _load_csv(
    path: PathArg,
    time_column: str | None,
    value_columns: Sequence[str],
    time_format: str | None,
    delimiter: str,
    missing: Sequence[str],
) -> TimeSeries:
    lines = read_lines(path)
    rows: list[list[str]] = []
    starts: list[list[int]] = []  # the 1-based column of each field of each row
    line_numbers: list[int] = []
    header: list[str] | None = None
    header_line = 1
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields, columns = csv_row(line, delimiter, path, line_no)
        if header is None:
            header, header_line = fields, line_no
        elif len(fields) != len(header):
            raise ReaderError(
                f"expected {len(header)} fields as in the header, found {len(fields)}",
                path=path,
                line=line_no,
                column=columns[len(header)] if len(fields) > len(header) else len(line) + 1,
            )
        else:
            rows.append(fields)
            starts.append(columns)
            line_numbers.append(line_no)
    if header is None:
        line_no, column = end_of(lines)
        raise ReaderError(
            "expected a header row, found an empty file", path=path, line=line_no, column=column
        )
    wanted = [*value_columns] if time_column is None else [time_column, *value_columns]
    for name in wanted:
        if header.count(name) != 1:
            found = "twice" if name in header else "no such column"
            raise ReaderError(
                f"expected one column {name!r} in the header {header}, found {found}",
                path=path,
                line=header_line,
                column=1,
            )
    missing_set = set(missing)
    positions = [header.index(name) for name in value_columns]

    def located(message: str, r: int, position: int) -> ReaderError:
        return ReaderError(message, path=path, line=line_numbers[r], column=starts[r][position])

    values = np.empty((len(rows), len(value_columns)), dtype=np.float64)
    for r, fields in enumerate(rows):
        for c, position in enumerate(positions):
            text = fields[position].strip()
            if text in missing_set:
                values[r, c] = math.nan
                continue
            try:
                values[r, c] = float(text)
            except ValueError:
                raise located(
                    f"column {value_columns[c]!r}: expected a number or a missing marker "
                    f"{list(missing)}, found {fields[position]!r}",
                    r,
                    position,
                ) from None
    times = None
    if time_column is not None:
        position = header.index(time_column)
        stamps = []
        for r, fields in enumerate(rows):
            try:
                stamps.append(parse_time(fields[position], time_format))
            except (ValueError, OverflowError):
                expected = "an ISO 8601 timestamp" if time_format is None else repr(time_format)
                raise located(
                    f"column {time_column!r}: expected a timestamp in {expected}, "
                    f"found {fields[position]!r}",
                    r,
                    position,
                ) from None
        times = np.array(stamps, dtype="datetime64[us]")
        backwards = np.flatnonzero(np.diff(times) <= np.timedelta64(0))
        if backwards.size:
            r = int(backwards[0]) + 1
            raise located(
                f"column {time_column!r}: expected timestamps in increasing order, found "
                f"{rows[r][position]!r} after {rows[r - 1][position]!r}",
                r,
                position,
            )
    return TimeSeries(values, tuple(value_columns), times)


def _load_frame(
    frame: pd.DataFrame,
    time_column: str | None,
    value_columns: Sequence[str],
    time_format: str | None,
) -> TimeSeries:
    import pandas as pd

    wanted = [*value_columns] if time_column is None else [time_column, *value_columns]
    absent = [name for name in wanted if name not in frame.columns]
    if absent:
        raise ValueError(
            f"time_column/value_columns: expected columns of the frame {list(frame.columns)}, "
            f"found {absent} missing"
        )
    columns = []
    for name in value_columns:
        try:
            columns.append(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"value_columns: expected numbers in column {name!r}, found {e}"
            ) from None
    values = np.stack(columns, axis=1)
    times = None
    if time_column is not None:
        stamps = pd.to_datetime(frame[time_column], format=time_format)
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        times = stamps.to_numpy().astype("datetime64[us]")
        bad = np.flatnonzero(np.isnat(times))
        if bad.size:
            raise ValueError(
                f"time_column {time_column!r}: expected timestamps, found none at row {bad[0]}"
            )
        backwards = np.flatnonzero(np.diff(times) <= np.timedelta64(0))
        if backwards.size:
            r = int(backwards[0]) + 1
            raise ValueError(
                f"time_column {time_column!r}: expected increasing timestamps, found "
                f"{times[r]} after {times[r - 1]} at row {r}"
            )
    return TimeSeries(values, tuple(value_columns), times)


def load_series(
    source: PathArg | pd.DataFrame,
    time_column: str | None,
    value_columns: Sequence[str],
    *,
    time_format: str | None = None,
    delimiter: str = ",",
    missing: Sequence[str] = MISSING,
) -> TimeSeries:
    """Read a time series from a CSV file (no pandas needed) or a pandas DataFrame.

    Args:
        source: a CSV file with a header row, or a DataFrame.
        time_column: the column of timestamps, or None for a series known only by its row order.
            Timestamps must be strictly increasing; time zones are converted to UTC.
        value_columns: the variables to read, in order.
        time_format: a `datetime.strptime` format such as ``"%Y%m%d"``; None reads ISO 8601
            (``2014-01-01 00:30:00``).
        delimiter: the CSV field separator.
        missing: the CSV fields (after stripping spaces) that mean "missing"; they become NaN.

    Raises:
        ReaderError: CSV input: a row with the wrong number of fields, a value that is neither a
            number nor a missing marker, a bad or decreasing timestamp (``path:line:column``).
        ValueError: frame input with missing columns, non-numeric values or bad timestamps.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "t.csv"
    ...     _ = path.write_text("day,temp,rain\\n2024-01-01,3.5,0\\n2024-01-03,,1.2\\n")
    ...     s = load_series(path, "day", ["temp", "rain"])
    >>> s.values.tolist(), s.times.astype("datetime64[D]").tolist()
    ([[3.5, 0.0], [nan, 1.2]], [datetime.date(2024, 1, 1), datetime.date(2024, 1, 3)])
    """
    if isinstance(value_columns, str) or not value_columns:
        raise ValueError(
            f"value_columns: expected a non-empty list of names, found {value_columns!r}"
        )
    if isinstance(source, (str, os.PathLike)):
        if len(delimiter) != 1:
            raise ValueError(f"delimiter: expected one character, found {delimiter!r}")
        return _load_csv(source, time_column, value_columns, time_format, delimiter, missing)
    if not hasattr(source, "columns"):
        raise TypeError(f"source: expected a path or a pandas DataFrame, found {type(source)}")
    return _load_frame(source, time_column, value_columns, time_format)


def split_series(
    series: TimeSeries,
    fractions: Sequence[float] | None = None,
    *,
    at: Sequence[str | datetime | np.datetime64] | None = None,
) -> tuple[TimeSeries, ...]:
    """Cut ``series`` into consecutive parts, in time order (e.g. train, validation, test).

    Args:
        fractions: the share of rows of each part, summing to 1; part i ends at row
            ``floor((f_0 + ... + f_i) * T)``.
        at: instead of fractions, the first timestamp of each part after the first: part i holds
            the rows with ``at[i-1] <= time < at[i]``.

    Raises:
        ValueError: both or neither of ``fractions`` and ``at``, fractions that do not sum to 1,
            or an empty part.

    >>> s = TimeSeries(np.arange(10.0)[:, None], ("x",))
    >>> [len(p) for p in split_series(s, [0.7, 0.2, 0.1])]
    [7, 2, 1]
    """
    if (fractions is None) == (at is None):
        raise ValueError("fractions, at: expected exactly one of them, found both or neither")
    if fractions is not None:
        if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"fractions: expected positive shares summing to 1, found {fractions}")
        cumulative = np.cumsum(fractions)[:-1]
        cuts = [math.floor(c * len(series) + 1e-9) for c in cumulative]
    else:
        if series.times is None:
            raise ValueError("at: splitting by date needs a series with times, found none")
        boundaries = np.array(list(at or ()), dtype="datetime64[us]")
        if (np.diff(boundaries) <= np.timedelta64(0)).any():
            raise ValueError(f"at: expected increasing dates, found {list(at or ())}")
        cuts = np.searchsorted(series.times, boundaries, side="left").tolist()
    edges = [0, *cuts, len(series)]
    parts = tuple(series[a:b] for a, b in itertools.pairwise(edges))
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(f"fractions/at: expected non-empty parts, found part(s) {empty} empty")
    return parts


# ---------------------------------------------------------------------------------------------
# Scaling


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-variable scaling ``(x - center) / scale``, fitted on the training part only.

    ``"standard"``: center the mean, scale the standard deviation (ddof 0); ``"minmax"``: center
    the minimum, scale the range, mapping the training data to [0, 1]. Statistics ignore NaN,
    and NaN stays NaN. A constant variable gets scale 1.

    >>> train = TimeSeries(np.array([[1.0], [3.0], [np.nan]]), ("x",))
    >>> scaler = Scaler.fit(train)
    >>> scaler.center.tolist(), scaler.scale.tolist()
    ([2.0], [1.0])
    >>> scaler.transform(TimeSeries(np.array([[5.0]]), ("x",))).values.tolist()
    [[3.0]]
    >>> scaler.inverse_transform(np.array([[3.0]])).tolist()
    [[5.0]]
    """

    kind: Literal["standard", "minmax"]
    columns: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, series: TimeSeries, kind: Literal["standard", "minmax"] = "standard") -> Scaler:
        """Statistics of each variable of ``series`` (the training part), NaN ignored.

        Raises:
            ValueError: an unknown ``kind``, or a variable with no observed value.
        """
        if kind not in ("standard", "minmax"):
            raise ValueError(f"kind: expected 'standard' or 'minmax', found {kind!r}")
        observed = np.asarray(series.mask.any(axis=0))
        empty = [c for i, c in enumerate(series.columns) if not observed[i]]
        if empty:
            raise ValueError(
                f"series: expected observed values in every column, found none in {empty}"
            )
        values = series.values
        if kind == "standard":
            center, scale = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        else:
            center = np.nanmin(values, axis=0)
            scale = np.nanmax(values, axis=0) - center
        return cls(kind, series.columns, center, np.where(scale > 0, scale, 1.0))

    def _stats(self, columns: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
        if columns is None:
            return self.center, self.scale
        if isinstance(columns, str) or any(c not in self.columns for c in columns):
            raise ValueError(
                f"columns: expected a list of names from {list(self.columns)}, found {columns!r}"
            )
        index = [self.columns.index(c) for c in columns]
        return self.center[index], self.scale[index]

    def transform(self, series: TimeSeries) -> TimeSeries:
        """``series`` scaled with the fitted statistics; its columns must be the fitted ones."""
        if series.columns != self.columns:
            raise ValueError(
                f"series: expected the fitted columns {list(self.columns)}, "
                f"found {list(series.columns)}"
            )
        return TimeSeries((series.values - self.center) / self.scale, series.columns, series.times)

    @overload
    def inverse_transform(self, values: Tensor, columns: Sequence[str] | None = None) -> Tensor: ...

    @overload
    def inverse_transform(
        self, values: np.ndarray, columns: Sequence[str] | None = None
    ) -> np.ndarray: ...

    def inverse_transform(
        self, values: Tensor | np.ndarray, columns: Sequence[str] | None = None
    ) -> Tensor | np.ndarray:
        """Scaled values ``[..., F']`` back to the original units.

        Args:
            values: an array or tensor whose last axis holds ``columns`` (e.g. predictions of the
                target variables).
            columns: the variables of the last axis; None means all fitted columns.
        """
        center, scale = self._stats(columns)
        if values.shape[-1] != center.shape[0]:
            raise ValueError(
                f"values: expected a last axis of {center.shape[0]} (the columns), "
                f"found shape {list(values.shape)}"
            )
        if isinstance(values, Tensor):
            c = torch.as_tensor(center, dtype=values.dtype, device=values.device)
            s = torch.as_tensor(scale, dtype=values.dtype, device=values.device)
            return values * s + c
        return values * scale + center


# ---------------------------------------------------------------------------------------------
# Windows


def windows(
    series: TimeSeries,
    input_length: int,
    horizon: int,
    targets: Sequence[str],
    *,
    known: Sequence[str] = (),
    stride: int = 1,
    delta_unit: TimeUnit | None = None,
) -> list[dict[str, Tensor]]:
    """Forecasting examples: an input window of all variables and the next ``horizon`` steps.

    Windows start at rows ``0, stride, 2*stride, ...`` while input and horizon fit in the series.
    Missing values stay NaN and are flagged by the masks (no window is dropped for them); replace
    them (``torch.nan_to_num``) or give them to a model that reads the mask, such as GRU-D.

    Args:
        series: the (scaled) part to cut.
        input_length: T_in, steps of the input window.
        horizon: H, steps to forecast after it.
        targets: the variables to forecast.
        known: variables known in advance (a calendar, a weather forecast): their values over
            the horizon are given as ``"known"``.
        stride: rows between the starts of consecutive windows.
        delta_unit: also give ``"delta"``, the time since each variable's last observation in
            this unit, measured within the window (0 at its first step, as GRU-D does for each
            sequence); see `time_since_observed`.

    Returns:
        dicts of float32 tensors: ``"features"`` ``[T_in, F]`` (NaN where missing), ``"mask"``
        ``[T_in, F]`` (1 observed), ``"delta"`` ``[T_in, F]`` when asked, ``"target"`` ``[H, F_t]``
        (NaN where missing), ``"target_mask"`` ``[H, F_t]``, ``"known"`` ``[H, F_k]`` when asked.

    >>> s = TimeSeries(np.array([[1.0, 10], [2, 20], [np.nan, 30], [4, 40]]), ("y", "hour"))
    >>> w = windows(s, input_length=2, horizon=1, targets=["y"], known=["hour"], delta_unit="steps")
    >>> len(w), w[1]["features"].tolist(), w[1]["target"].tolist(), w[1]["known"].tolist()
    (2, [[2.0, 20.0], [nan, 30.0]], [[4.0]], [[40.0]])
    >>> w[0]["target_mask"].tolist(), w[1]["mask"].tolist(), w[1]["delta"].tolist()
    ([[0.0]], [[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]])
    """
    for name, value, low in (
        ("input_length", input_length, 1),
        ("horizon", horizon, 1),
        ("stride", stride, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
    target_index = series.column_indices(targets, "targets")
    known_index = series.column_indices(known, "known")
    values = torch.from_numpy(series.values.astype(np.float32))
    mask = torch.from_numpy(series.mask.astype(np.float32))
    if delta_unit is not None:
        full = series.deltas(delta_unit)
        elapsed = _elapsed(series.times, len(series), delta_unit)
    examples = []
    for start in range(0, len(series) - input_length - horizon + 1, stride):
        end = start + input_length
        example = {
            "features": values[start:end],
            "mask": mask[start:end],
            "target": values[end : end + horizon, target_index],
            "target_mask": mask[end : end + horizon, target_index],
        }
        if known_index:
            example["known"] = values[end : end + horizon, known_index]
        if delta_unit is not None:
            since_start = (elapsed[start:end] - elapsed[start])[:, None]
            example["delta"] = torch.from_numpy(
                np.minimum(full[start:end], since_start).astype(np.float32)
            )
        examples.append(example)
    return examples
