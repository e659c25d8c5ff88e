"""Many series in one long-format table, and the examples one global model trains on.

A *panel* is a table with one row per series and time (``series_id, time, value(s),
covariates...``), as M1/M4, darts and NeuralForecast keep many series. `load_panel` reads it
from a CSV file (rnnkit's CSV helpers, no pandas needed) or a pandas DataFrame into a `Panel`:
per series its rows in time order as a `TimeSeries` (targets, past-only covariates, known-future
covariates; NaN where missing), its times (integers such as years, or dates) and the file line of
each row. Series may have different lengths and start dates, and their rows may interleave in the
file (``T1, T2, T1, ...``); within each series the rows must be sorted by time.

`split_panel` cuts each series by time: its last ``horizon`` steps are the test part (M1's
convention, "the last 6 held out"), the ``validation`` steps before them the validation part, the
rest the training part; each series is scaled with a `Scaler` fitted on its own training part.
`panel_windows` then cuts examples for one global model across all series: each carries its
series index, its static covariates, an input window with its mask (NaN kept, masked) and the
horizon.

Rows after a series' last observed target are its *future part*: the steps a forecast past the
end of the data covers, where known-future covariates must be given.

>>> import pathlib, tempfile
>>> text = "id,year,y\\nA,2001,1\\nB,1990,5\\nA,2002,2\\nB,1991,6\\nA,2003,4\\nB,1992,7\\n"
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "p.csv"
...     _ = path.write_text(text)
...     panel = load_panel(path, id_column="id", time_column="year", targets=["y"])
>>> panel.ids, panel.times[0].tolist(), panel.series[1].values[:, 0].tolist()
(('A', 'B'), [2001, 2002, 2003], [5.0, 6.0, 7.0])
>>> panel.lines[1].tolist()
[3, 5, 7]
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import csv_row, end_of, read_lines
from rnnkit.data.timeseries import MISSING, Scaler, TimeSeries, parse_time, windows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Panel",
    "PanelSplit",
    "PanelWarning",
    "load_panel",
    "panel_windows",
    "split_panel",
]

PathArg = Union[str, "os.PathLike[str]"]
TimeKind = Literal["auto", "integer", "date"]
Part = Literal["train", "validation", "test", "future"]
Short = Literal["pad", "drop"]
Example = dict[str, Tensor]


class PanelWarning(UserWarning):
    """A series that gives no window for a part (too short for it), named with its length."""


@dataclass(frozen=True, eq=False)
class Panel:
    """S series read from one long-format table.

    Attributes:
        ids: the S series ids, in the order of their first row in the table.
        series: per series, a `TimeSeries` ``[T_s, F]`` of the columns ``targets + past +
            known`` (NaN where missing), every row of the series in time order, its future part
            included; its ``times`` are the dates (None for integer times: see ``times``).
        times: per series, its times ``[T_s]``: int64 (integer times) or ``datetime64[us]``.
        lines: per series, int64 ``[T_s]``: the file line of each row (a frame: its 0-based
            position).
        history: int64 ``[S]``: the rows of each series up to its last observed target; the
            rows after it are its future part.
        static: float64 ``[S, F_s]``: the static covariates, one row per series.
        targets, past, known, static_columns: the column names of each role.
        source: the path read, or ``"frame"``.
    """

    ids: tuple[str, ...]
    series: tuple[TimeSeries, ...]
    times: tuple[np.ndarray, ...]
    lines: tuple[np.ndarray, ...]
    history: np.ndarray
    static: np.ndarray
    targets: tuple[str, ...]
    past: tuple[str, ...]
    known: tuple[str, ...]
    static_columns: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, index: int, row: int | None = None) -> str:
        """``series 'ID' (path:line)`` of row ``row`` of series ``index`` (its first row by
        default), as error messages name a row."""
        line = int(self.lines[index][0 if row is None else row])
        place = f"row {line}" if self.source == "frame" else f"{self.source}:{line}"
        return f"series {self.ids[index]!r} ({place})"


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Table:
    """The columns of a table as read, before grouping: one entry per row."""

    ids: list[str]
    times: np.ndarray  # int64: integer times, or microseconds since 1970
    dated: bool
    time_text: list[str]
    values: np.ndarray  # float64 [R, F]: targets + past + known
    static: np.ndarray  # float64 [R, F_s]
    lines: np.ndarray  # int64 [R]
    row_word: str  # how a place in ``lines`` is named: "line" (a file) or "row" (a frame)
    locate: Callable[[int, str, str], Exception]  # (row, column name, message) -> error


def _names(argument: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"{argument}: expected a list of column names, found the string {names!r}")
    return tuple(names)


def _csv_table(
    path: PathArg,
    columns: dict[str, tuple[str, ...]],
    times: TimeKind,
    time_format: str | None,
    delimiter: str,
    missing: Sequence[str],
) -> _Table:
    lines = read_lines(path)
    header: list[str] | None = None
    header_line = 1
    rows: list[list[str]] = []
    starts: list[list[int]] = []
    numbers: list[int] = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields, where = csv_row(line, delimiter, path, line_no)
        if header is None:
            header, header_line = fields, line_no
            continue
        if len(fields) != len(header):
            raise ReaderError(
                f"expected {len(header)} fields as in the header, found {len(fields)}",
                path=path,
                line=line_no,
                column=where[len(header)] if len(fields) > len(header) else len(line) + 1,
            )
        rows.append(fields)
        starts.append(where)
        numbers.append(line_no)
    if header is None or not rows:
        line_no, column = end_of(lines)
        found = "an empty file" if header is None else "the end of the file"
        expected = "a header row" if header is None else "rows after the header"
        raise ReaderError(
            f"expected {expected}, found {found}", path=path, line=line_no, column=column
        )
    for role, names in columns.items():
        for name in names:
            if header.count(name) != 1:
                found = "it twice" if name in header else "no such column"
                raise ReaderError(
                    f"{role}: expected one column {name!r} in the header {header}, found {found}",
                    path=path,
                    line=header_line,
                    column=1,
                )
    position = {name: header.index(name) for names in columns.values() for name in names}

    def locate(r: int, name: str, message: str) -> Exception:
        return ReaderError(message, path=path, line=numbers[r], column=starts[r][position[name]])

    def numeric(names: Sequence[str], allow_missing: bool) -> np.ndarray:
        out = np.empty((len(rows), len(names)), dtype=np.float64)
        marks = set(missing)
        for r, fields in enumerate(rows):
            for c, name in enumerate(names):
                text = fields[position[name]].strip()
                if allow_missing and text in marks:
                    out[r, c] = math.nan
                    continue
                try:
                    out[r, c] = float(text)
                except ValueError:
                    expected = f"a number or a missing marker {list(missing)}"
                    if not allow_missing:
                        expected = "a number (a static covariate; encode a category as numbers)"
                    raise locate(
                        r, name, f"column {name!r}: expected {expected}, found {text!r}"
                    ) from None
                if not allow_missing and math.isnan(out[r, c]):
                    raise locate(r, name, f"column {name!r}: expected a number, found {text!r}")
        return out

    (id_column,) = columns["id_column"]
    (time_column,) = columns["time_column"]
    time_text = [fields[position[time_column]].strip() for fields in rows]
    as_dates = times == "date" or (times == "auto" and time_format is not None)
    integers = None if as_dates else _integer_times(time_text)
    if times == "integer" and integers is None:
        bad = next(r for r, text in enumerate(time_text) if not _is_integer(text))
        raise locate(
            bad,
            time_column,
            f"column {time_column!r}: expected an integer time, found {time_text[bad]!r}",
        )
    if integers is not None:
        stamps, dated = integers, False
    else:
        moments = []
        for r, text in enumerate(time_text):
            try:
                moments.append(parse_time(text, time_format))
            except (ValueError, OverflowError):
                expected = "ISO 8601" if time_format is None else f"the format {time_format!r}"
                raise locate(
                    r,
                    time_column,
                    f"column {time_column!r}: expected an integer time or a date in "
                    f"{expected}, found {text!r}",
                ) from None
        stamps = np.array(moments, dtype="datetime64[us]").astype(np.int64)
        dated = True
    ids = [fields[position[id_column]].strip() for fields in rows]
    if "" in ids:
        r = ids.index("")
        raise locate(r, id_column, f"column {id_column!r}: expected a series id, found none")
    value_names = [*columns["targets"], *columns["past"], *columns["known"]]
    return _Table(
        ids=ids,
        times=stamps,
        dated=dated,
        time_text=time_text,
        values=numeric(value_names, allow_missing=True),
        static=numeric(columns["static"], allow_missing=False),
        lines=np.array(numbers, dtype=np.int64),
        row_word="line",
        locate=locate,
    )


def _is_integer(text: str) -> bool:
    """An integer time: ASCII digits with an optional sign, within int64."""
    return re.fullmatch(r"[+-]?[0-9]{1,18}", text) is not None


def _integer_times(texts: list[str]) -> np.ndarray | None:
    """int64 times when every text is an integer (a year, a step number), else None."""
    if not texts or not all(_is_integer(t) for t in texts):
        return None
    return np.array([int(t) for t in texts], dtype=np.int64)


def _frame_table(
    frame: pd.DataFrame,
    columns: dict[str, tuple[str, ...]],
    times: TimeKind,
    time_format: str | None,
) -> _Table:
    import pandas as pd

    wanted = [name for names in columns.values() for name in names]
    absent = [name for name in wanted if name not in frame.columns]
    if absent:
        raise ValueError(
            f"columns: expected columns of the frame {list(frame.columns)}, found {absent} missing"
        )

    def locate(r: int, name: str, message: str) -> Exception:
        return ValueError(f"row {r}: {message}")

    def numeric(names: Sequence[str]) -> np.ndarray:
        out = np.empty((len(frame), len(names)), dtype=np.float64)
        for c, name in enumerate(names):
            try:
                out[:, c] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as e:
                raise ValueError(f"column {name!r}: expected numbers, found {e}") from None
        return out

    (id_column,) = columns["id_column"]
    (time_column,) = columns["time_column"]
    column = frame[time_column]
    integer = pd.api.types.is_integer_dtype(column.dtype)
    if times == "integer" and not integer:
        raise ValueError(
            f"column {time_column!r}: expected integer times, found dtype {column.dtype}"
        )
    if integer and times != "date":
        stamps, dated = column.to_numpy(dtype=np.int64), False
    else:
        parsed = pd.to_datetime(column, format=time_format)
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        moments = parsed.to_numpy().astype("datetime64[us]")
        bad = np.flatnonzero(np.isnat(moments))
        if bad.size:
            raise locate(int(bad[0]), time_column, f"column {time_column!r}: expected a date")
        stamps, dated = moments.astype(np.int64), True
    static = numeric(columns["static"])
    missing_static = np.argwhere(np.isnan(static))
    if missing_static.size:
        r, c = (int(i) for i in missing_static[0])
        name = columns["static"][c]
        raise locate(r, name, f"column {name!r}: expected a number (static), found it missing")
    return _Table(
        ids=[str(i) for i in frame[id_column].tolist()],
        times=stamps,
        dated=dated,
        time_text=[str(t) for t in column.tolist()],
        values=numeric([*columns["targets"], *columns["past"], *columns["known"]]),
        static=static,
        lines=np.arange(len(frame), dtype=np.int64),
        row_word="row",
        locate=locate,
    )


def _group(table: _Table, columns: dict[str, tuple[str, ...]], source: str) -> Panel:
    """The rows of ``table`` per series, checked: times strictly increasing within a series,
    static covariates constant, known covariates present in the future part."""
    (time_column,) = columns["time_column"]
    targets, past, known = columns["targets"], columns["past"], columns["known"]
    static_names = columns["static"]
    rows: dict[str, list[int]] = {}
    for r, sid in enumerate(table.ids):
        rows.setdefault(sid, []).append(r)
    if not rows:
        raise ValueError(f"{source}: expected rows after the header, found none")
    ids = tuple(rows)
    series, times, lines, history, static = [], [], [], [], []
    names = (*targets, *past, *known)
    first_known = len(targets) + len(past)
    for sid in ids:
        index = np.array(rows[sid], dtype=np.int64)
        stamps = table.times[index]
        steps = np.diff(stamps)
        if (steps <= 0).any():
            k = int(np.flatnonzero(steps <= 0)[0])
            r, before = int(index[k + 1]), int(index[k])
            here = table.time_text[r]
            if steps[k] == 0:
                problem = (
                    f"expected one row per time within a series, found {here!r} again "
                    f"(first at {table.row_word} {table.lines[before]})"
                )
            else:
                problem = (
                    f"expected times increasing within a series (each series sorted by time; "
                    f"series may interleave), found {here!r} after "
                    f"{table.time_text[before]!r} ({table.row_word} {table.lines[before]})"
                )
            raise table.locate(r, time_column, f"series {sid!r}: column {time_column!r}: {problem}")
        values = table.values[index]
        for c, name in enumerate(static_names):
            column = table.static[index, c]
            differs = np.flatnonzero(column != column[0])
            if differs.size:
                r = int(index[differs[0]])
                raise table.locate(
                    r,
                    name,
                    f"series {sid!r}: column {name!r}: expected a static covariate, one value "
                    f"per series, found {column[differs[0]]:g} after {column[0]:g} "
                    f"({table.row_word} {table.lines[index[0]]})",
                )
        observed = np.flatnonzero(~np.isnan(values[:, : len(targets)]).all(axis=1))
        end = int(observed[-1]) + 1 if observed.size else 0
        if known:
            future = values[end:, first_known:]
            gaps = np.argwhere(np.isnan(future))
            if gaps.size:
                k, c = (int(i) for i in gaps[0])
                name = known[c]
                raise table.locate(
                    int(index[end + k]),
                    name,
                    f"series {sid!r}: column {name!r}: expected a value in every row after the "
                    f"last target (the future part, declared known), found it missing",
                )
        series.append(
            TimeSeries(values, names, stamps.astype("datetime64[us]") if table.dated else None)
        )
        times.append(stamps.astype("datetime64[us]") if table.dated else stamps)
        lines.append(table.lines[index])
        history.append(end)
        static.append(table.static[index[0]])
    return Panel(
        ids=ids,
        series=tuple(series),
        times=tuple(times),
        lines=tuple(lines),
        history=np.array(history, dtype=np.int64),
        static=np.array(static, dtype=np.float64).reshape(len(ids), len(static_names)),
        targets=targets,
        past=past,
        known=known,
        static_columns=static_names,
        source=source,
    )


def load_panel(
    source: PathArg | pd.DataFrame,
    *,
    id_column: str = "series_id",
    time_column: str = "time",
    targets: Sequence[str] = ("value",),
    past: Sequence[str] = (),
    known: Sequence[str] = (),
    static: Sequence[str] = (),
    times: TimeKind = "auto",
    time_format: str | None = None,
    delimiter: str = ",",
    missing: Sequence[str] = MISSING,
) -> Panel:
    """Read many series from a long-format CSV file (no pandas needed) or a pandas DataFrame.

    One row per series and time; the rows of a series must be in increasing time order, the
    rows of different series may interleave. Columns not named are ignored.

    Args:
        source: a CSV file with a header row, or a DataFrame.
        id_column: the series id (read as text).
        time_column: the time of each row.
        targets: the columns to forecast; a row whose targets are all missing after a series'
            last observed target belongs to its future part.
        past: covariates observed only up to the present (input window only).
        known: covariates known in advance (given over the horizon); every row of a series'
            future part must have them.
        static: covariates constant per series (numbers; encode a category as numbers).
        times: ``"integer"`` (years, step numbers), ``"date"`` (ISO 8601 or ``time_format``),
            or ``"auto"``: integers when every time is an integer and no ``time_format`` is
            given, else dates.
        time_format: a `datetime.strptime` format for dates.
        delimiter: the CSV field separator.
        missing: the CSV fields that mean "missing" (NaN) in targets and covariates.

    Raises:
        ReaderError: CSV input, at ``path:line:column`` with the series id: a duplicate time or
            a time going backwards within a series, a static covariate that varies within a
            series, a known covariate missing in the future part, a malformed field.
        ValueError: the same for a frame, located by its row position.

    >>> import pathlib, tempfile
    >>> text = "series_id,time,value\\nA,2001,1\\nA,2001,2\\n"
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "dup.csv"
    ...     _ = path.write_text(text)
    ...     try:
    ...         load_panel(path)
    ...     except ReaderError as e:
    ...         print(e.line, e.column, e.message.replace(", ", ",\\n"))
    3 3 series 'A': column 'time': expected one row per time within a series,
    found '2001' again (first at line 2)
    """
    columns = {
        "id_column": (id_column,),
        "time_column": (time_column,),
        "targets": _names("targets", targets),
        "past": _names("past", past),
        "known": _names("known", known),
        "static": _names("static", static),
    }
    if not columns["targets"]:
        raise ValueError("targets: expected at least one column name, found none")
    named = [name for names in columns.values() for name in names]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise ValueError(f"columns: expected each column in one role only, found {repeated} twice")
    if times not in ("auto", "integer", "date"):
        raise ValueError(f"times: expected 'auto', 'integer' or 'date', found {times!r}")
    if isinstance(source, (str, os.PathLike)):
        if len(delimiter) != 1:
            raise ValueError(f"delimiter: expected one character, found {delimiter!r}")
        table = _csv_table(source, columns, times, time_format, delimiter, missing)
        return _group(table, columns, str(source))
    if not hasattr(source, "columns"):
        raise TypeError(f"source: expected a path or a pandas DataFrame, found {type(source)}")
    return _group(_frame_table(source, columns, times, time_format), columns, "frame")


# ---------------------------------------------------------------------------------------------
# Splitting and scaling


@dataclass(frozen=True, eq=False)
class PanelSplit:
    """A panel cut per series by time and scaled per series.

    Attributes:
        panel: the panel cut.
        horizon: H, the forecast horizon (the test part's length too, unless ``split_panel``
            was given a longer ``test``: ``bounds`` has each part's end).
        validation: V, the validation part's length in every series (0: none).
        bounds: int64 ``[S, 3]``: per series, the end rows of its training, validation and
            test parts (the last is its history; the future part follows).
        scalers: per series, a `Scaler` of all its columns fitted on its training part only.
        scaled: per series, `TimeSeries` ``[T_s, F]`` scaled with its own scaler, every row.
        static_scaler: fitted on the static covariates of all series (standard), or None.
        static: float64 ``[S, F_s]``, scaled with ``static_scaler``.
    """

    panel: Panel
    horizon: int
    validation: int
    bounds: np.ndarray
    scalers: tuple[Scaler, ...]
    scaled: tuple[TimeSeries, ...]
    static_scaler: Scaler | None
    static: np.ndarray


def split_panel(
    panel: Panel,
    horizon: int,
    validation: int | None = None,
    kind: Literal["standard", "minmax"] = "standard",
    test: int | None = None,
) -> PanelSplit:
    """Cut every series of ``panel`` into training, validation and test parts by time, and
    scale each series with a `Scaler` fitted on its own training part.

    Args:
        horizon: H, the forecast horizon; the last H steps of each series' history are its
            test part unless ``test`` says more.
        validation: V, the V steps before the test part its validation part (0 for none, at
            least H otherwise, so that a validation window fits); None means H.
        kind: the scaling (`Scaler.fit`).
        test: N >= H, the last N steps of each series' history are its test part, which
            then holds N - H + 1 forecast windows (origins one step apart); None means H.

    Raises:
        ValueError: a series with no rows in its training part, or with a column that has no
            observed value there (its scaling cannot be fitted), named with its id and line.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"series_id": ["a"] * 5 + ["b"] * 4,
    ...                       "time": [1, 2, 3, 4, 5, 1, 2, 3, 4],
    ...                       "value": [1.0, 3, 5, 7, 9, 10, 30, 0, 0]})
    >>> s = split_panel(load_panel(frame), horizon=1, validation=1)
    >>> s.bounds.tolist(), s.scalers[0].center.tolist(), s.scalers[1].scale.tolist()
    ([[3, 4, 5], [2, 3, 4]], [3.0], [10.0])
    """
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon: expected an integer >= 1, found {horizon!r}")
    v = horizon if validation is None else validation
    if not isinstance(v, int) or not (v == 0 or v >= horizon):
        raise ValueError(
            f"validation: expected 0 or an integer >= horizon = {horizon}, found {validation!r}"
        )
    n = horizon if test is None else test
    if not isinstance(n, int) or isinstance(n, bool) or n < horizon:
        raise ValueError(f"test: expected an integer >= horizon = {horizon}, found {test!r}")
    word = "row" if panel.source == "frame" else "line"
    bounds, scalers, scaled = [], [], []
    for i, (series, history) in enumerate(zip(panel.series, panel.history, strict=True)):
        history = int(history)
        train_end = history - v - n
        if train_end <= 0:
            raise ValueError(
                f"{panel.where(i)}: expected rows in the training part (before the last "
                f"validation + test = {v + n} steps of its history), found "
                f"{history} steps of history"
            )
        train = series[:train_end]
        empty = [
            c
            for c, seen in zip(series.columns, np.asarray(train.mask.any(axis=0)), strict=True)
            if not seen
        ]
        if empty:
            raise ValueError(
                f"{panel.where(i)}: expected an observed value of each column in the training "
                f"part (rows 1-{train_end} of the series, up to {word} "
                f"{panel.lines[i][train_end - 1]}) to fit its scaling, found none in {empty}"
            )
        scaler = Scaler.fit(train, kind)
        bounds.append((train_end, train_end + v, history))
        scalers.append(scaler)
        scaled.append(scaler.transform(series))
    static_scaler = None
    static = panel.static
    if panel.static_columns:
        static_scaler = Scaler.fit(TimeSeries(panel.static, panel.static_columns))
        static = static_scaler.transform(TimeSeries(panel.static, panel.static_columns)).values
    return PanelSplit(
        panel=panel,
        horizon=horizon,
        validation=v,
        bounds=np.array(bounds, dtype=np.int64),
        scalers=tuple(scalers),
        scaled=tuple(scaled),
        static_scaler=static_scaler,
        static=static,
    )


# ---------------------------------------------------------------------------------------------
# Windows


def _clock(times: np.ndarray, extra: int) -> np.ndarray:
    """int64 ``[T + extra]``: integer times, or microseconds since 1970; the ``extra`` steps
    after the last row continue its last interval (one step for a single row)."""
    stamps = times.astype(np.int64)
    default = 86_400_000_000 if times.dtype.kind == "M" else 1
    step = int(stamps[-1] - stamps[-2]) if len(stamps) > 1 else default
    return np.concatenate([stamps, stamps[-1] + step * np.arange(1, extra + 1, dtype=np.int64)])


def _ends(split: PanelSplit, i: int, part: Part, input_length: int, stride: int) -> range:
    """The window ends (first horizon row) of series ``i`` whose horizon lies in ``part``."""
    h = split.horizon
    train_end, validation_end, history = (int(b) for b in split.bounds[i])
    if part == "train":
        last = train_end - h
        return range(max(1, min(input_length, last)), last + 1, stride)
    if part == "validation":
        return range(train_end, validation_end - h + 1, stride)
    if part == "test":
        return range(validation_end, history - h + 1, stride)
    return range(history, history + 1)


def panel_windows(
    split: PanelSplit,
    part: Part,
    input_length: int,
    *,
    stride: int = 1,
    short: Short = "pad",
) -> list[Example]:
    """The examples of ``part`` for one global model: every series' windows whose horizon lies
    in that part, series by series.

    A window ending at row e (its first horizon row) has the input rows ``e - T_in .. e - 1``,
    which may reach back into earlier parts (the test window's input is the history before
    it); the training windows lie wholly in the training part, ends ``T_in, T_in + stride, ...``.
    ``"future"`` is one window per series past the end of its history (targets NaN, masked; the
    known covariates of its future part, which must have H rows when known columns are
    declared).

    A series too short for ``T_in`` input steps before a horizon: ``short="pad"`` (default)
    pads its input in front with NaN rows (``mask`` and ``in_series`` 0); in the training part
    such a series gives one window, its training part's last H steps as horizon. ``"drop"``
    leaves it out of the part. Either way a series that gives no window for the part (with
    ``"pad"``: a training part of H steps or fewer) is named in a `PanelWarning`.

    Returns:
        dicts of tensors, with F = targets + past + known columns (scaled per series), n
        targets, K known and F_s static columns: ``"features"`` ``[T_in, F]`` (NaN where
        missing or padded), ``"mask"`` ``[T_in, F]`` (1 observed), ``"in_series"`` ``[T_in, 1]``
        (0 on padding), ``"target"`` ``[H, n]`` (NaN where missing), ``"target_mask"``
        ``[H, n]``, ``"known"`` ``[H, K]`` when declared, ``"static"`` ``[1, F_s]`` when
        declared (scaled across series), ``"series"`` int64 ``[1]`` (the index into
        ``split.panel.ids``) and ``"when"`` int64 ``[1, H]`` (the horizon's times: integers,
        or microseconds since 1970).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"series_id": ["a"] * 6 + ["b"] * 5,
    ...                       "time": [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5],
    ...                       "value": [0.0, 1, 0, 1, 0, 1, 1, 3, 1, 3, 9]})
    >>> s = split_panel(load_panel(frame), horizon=1, validation=0)
    >>> w = panel_windows(s, "test", input_length=5)
    >>> [e["series"].item() for e in w], w[1]["in_series"][:, 0].tolist()
    ([0, 1], [0.0, 1.0, 1.0, 1.0, 1.0])
    >>> w[1]["features"][:, 0].tolist(), w[1]["mask"][:, 0].tolist()
    ([nan, -1.0, 1.0, -1.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0])
    >>> w[1]["target"].tolist(), w[1]["when"].tolist()
    ([[7.0]], [[5]])
    """
    if part not in ("train", "validation", "test", "future"):
        raise ValueError(
            f"part: expected 'train', 'validation', 'test' or 'future', found {part!r}"
        )
    if short not in ("pad", "drop"):
        raise ValueError(f"short: expected 'pad' or 'drop', found {short!r}")
    for name, value in (("input_length", input_length), ("stride", stride)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, found {value!r}")
    if part == "validation" and split.validation == 0:
        raise ValueError("part: expected a part of the split, found 'validation' (validation=0)")
    panel, h = split.panel, split.horizon
    targets, known = list(panel.targets), list(panel.known)
    examples: list[Example] = []
    left_out: list[str] = []
    for i in range(len(panel)):
        ends = _ends(split, i, part, input_length, stride)
        if short == "drop":
            ends = range(max(ends.start, input_length), ends.stop, ends.step)
        if not ends:
            train_end, _, history = (int(b) for b in split.bounds[i])
            left_out.append(f"{panel.ids[i]!r} ({history} rows, {train_end} in training)")
            continue
        if part == "future":
            _check_future(split, i)
        scaled = split.scaled[i].values
        lo, hi = ends[0] - input_length, ends[-1] + h
        pad_front, pad_back = max(0, -lo), max(0, hi - len(scaled))
        width = scaled.shape[1]
        rows = np.concatenate(
            [
                np.full((pad_front, width), np.nan),
                scaled[max(lo, 0) : hi],
                np.full((pad_back, width), np.nan),
            ]
        )
        cut = windows(
            TimeSeries(rows, split.scaled[i].columns),
            input_length,
            h,
            targets,
            known=known,
            stride=stride,
        )
        clock = _clock(panel.times[i], max(0, hi - len(scaled)))
        static = torch.tensor(split.static[i], dtype=torch.float32).unsqueeze(0)
        for e, example in zip(ends, cut, strict=True):
            inside = np.arange(e - input_length, e) >= 0
            example["in_series"] = torch.from_numpy(inside.astype(np.float32)[:, None])
            example["series"] = torch.tensor([i], dtype=torch.int64)
            example["when"] = torch.from_numpy(clock[e : e + h].copy()).unsqueeze(0)
            if panel.static_columns:
                example["static"] = static
            examples.append(example)
    if left_out:
        if part != "train":
            need = f"input_length {input_length} rows before its {part} horizon"
        elif short == "drop":
            need = f"input_length {input_length} + horizon {h} rows in its training part"
        else:
            need = f"more than horizon {h} rows in its training part"
        warnings.warn(
            f"short={short!r}: series left out of the {part} windows (each needs {need}): "
            + ", ".join(left_out),
            PanelWarning,
            stacklevel=2,
        )
    return examples


def _check_future(split: PanelSplit, i: int) -> None:
    """A series' future part has H rows when known covariates are declared."""
    panel, h = split.panel, split.horizon
    history = int(split.bounds[i, 2])
    rows = len(panel.series[i]) - history
    if panel.known and rows < h:
        last = len(panel.series[i]) - 1
        raise ValueError(
            f"{panel.where(i, last)}: expected {h} rows after the last target (the future "
            f"part, horizon {h}) with the known covariates {list(panel.known)}, found {rows}"
        )
