"""Series with missing values and irregular times: the data of GRU-D and its GRU baselines.

Che et al. 2018 (arXiv:1606.01865) compare GRU-D with a GRU on imputed input. The four inputs
(:data:`KINDS`, built by :func:`model_inputs` from the ``values, mask, delta`` of
:func:`grud_examples`):

* ``"grud"``: ``[x, m, δ]`` for :class:`~rnnkit.cells.GRUDCell` (values, mask, time since each
  variable was last observed, from the real timestamps);
* ``"forward"``: the values filled forward (the training mean before the first observation);
* ``"mean"``: the values with every gap filled by the training mean;
* ``"mask_delta"``: ``[forward-filled x, m, δ]`` (GRU-Simple in Che et al.).

The forecasting task (:func:`window_examples`): for each *target time* τ on the series' grid,
read the observations of the ``span`` grid steps that end ``lead`` steps before τ (whatever rows
of them exist), add a *query step* at τ with every variable unobserved (so δ at the query step
carries the time from the last observation to τ), and forecast the target variable at τ.

:func:`missing_data` cuts a series in time order over its grid, removes data when asked
(:func:`remove_data`), fits the scaler and the training means on the observed training values
only, and builds the windows of the three parts: training and validation targets only where a
value remains after removal, test targets at the TRUE values (removed or not); values missing in
the file itself are never targets.

:data:`SERIES` names the real series of the comparison under ``../shared/data/timeseries``,
read in their layout by :func:`read_series`.

>>> times = np.array(["2024-01-01", "2024-01-02", "2024-01-05"], dtype="datetime64[us]")
>>> ex = grud_examples([np.array([[1.0, np.nan], [np.nan, 2.0], [3.0, 4.0]])], [times], unit="D")
>>> ex[0]["mask"].tolist(), ex[0]["delta"].tolist()
([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [4.0, 3.0]])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import read_lines
from rnnkit.data.timeseries import Scaler, TimeSeries, TimeUnit, load_series, time_since_observed

__all__ = [
    "KINDS",
    "NAMES",
    "SERIES",
    "MissingData",
    "SeriesLayout",
    "WindowSpec",
    "Windows",
    "comparison_table",
    "default_data_dir",
    "fill_forward",
    "forecast_errors",
    "grid_parts",
    "grud_examples",
    "input_path",
    "missing_data",
    "model_examples",
    "model_inputs",
    "new_examples",
    "read_input",
    "read_series",
    "remove_data",
    "time_labels",
    "training_means",
    "window_examples",
]

Kind = Literal["grud", "forward", "mean", "mask_delta"]
KINDS: tuple[Kind, ...] = ("grud", "forward", "mean", "mask_delta")
NAMES = {
    "grud": "GRU-D",
    "forward": "GRU, forward-filled",
    "mean": "GRU, mean-filled",
    "mask_delta": "GRU + mask + gaps",
}


# ---------------------------------------------------------------------------------------------
# Examples


def _name(names: Sequence[str] | None, i: int) -> str:
    return f"sequence {names[i]!r}" if names is not None else f"sequence {i}"


def grud_examples(
    values: Sequence[np.ndarray],
    times: Sequence[np.ndarray | None],
    *,
    unit: TimeUnit,
    masks: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Tensor]]:
    """GRU-D's ``values, mask, delta`` for each of several sequences, checked one by one.

    Args:
        values: per sequence, ``[T_i, D]`` floats, NaN where unobserved.
        times: per sequence, ``datetime64`` ``[T_i]`` strictly increasing, or None to count
            steps (then ``unit`` must be ``"steps"``).
        unit: the unit of δ (see :func:`~rnnkit.data.timeseries.time_since_observed`).
        masks: per sequence, ``[T_i, D]`` (1 or True = observed); None derives it from NaN.
        names: a name per sequence for the messages (default: its position).
        columns: the D variable names for the messages.

    Returns:
        per sequence, float32 ``"values"`` ``[T_i, D]`` (NaN where unobserved), ``"mask"`` and
        ``"delta"`` ``[T_i, D]`` (δ is 0 at each sequence's first step, as in GRU-D).

    Raises:
        ValueError: naming the sequence (and the variable): a mask whose shape differs from the
            values, a value marked observed that is NaN, a number of variables that differs from
            the first sequence's, timestamps that do not increase, an empty sequence.
    """
    if len(values) != len(times) or (masks is not None and len(masks) != len(values)):
        raise ValueError(
            f"values, times, masks: expected one per sequence, found {len(values)}, "
            f"{len(times)} and {'-' if masks is None else len(masks)}"
        )
    width = None
    examples = []
    for i, (x, t) in enumerate(zip(values, times, strict=True)):
        x = np.asarray(x, dtype=np.float64)
        where = _name(names, i)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{where}: expected values [T, D] with T >= 1, found {list(x.shape)}")
        width = x.shape[1] if width is None else width
        cols = list(columns) if columns is not None else [str(c) for c in range(width)]
        if x.shape[1] != width or len(cols) != width:
            raise ValueError(
                f"{where}: expected {len(cols)} variables {cols}, found {x.shape[1]} columns"
            )
        m = ~np.isnan(x) if masks is None else np.asarray(masks[i])
        if m.shape != x.shape:
            raise ValueError(
                f"{where}: expected a mask of the values' shape {list(x.shape)}, "
                f"found {list(m.shape)}"
            )
        m = m.astype(bool)
        bad = np.argwhere(m & np.isnan(x))
        if bad.size:
            step, var = (int(v) for v in bad[0])
            raise ValueError(
                f"{where}, variable {cols[var]!r}: marked observed at step {step} but the "
                "value is NaN"
            )
        if t is not None:
            t = np.asarray(t)
            if t.shape != (x.shape[0],):
                raise ValueError(
                    f"{where}: expected {x.shape[0]} timestamps (one per step), "
                    f"found shape {list(t.shape)}"
                )
            back = np.flatnonzero(np.diff(t) <= np.zeros((), dtype=np.diff(t).dtype))
            if back.size:
                k = int(back[0]) + 1
                raise ValueError(
                    f"{where}: expected increasing timestamps, found {t[k]} at step {k} "
                    f"after {t[k - 1]}"
                )
        delta = time_since_observed(t, m, unit)
        examples.append(
            {
                "values": torch.from_numpy(np.where(m, x, np.nan).astype(np.float32)),
                "mask": torch.from_numpy(m.astype(np.float32)),
                "delta": torch.from_numpy(delta.astype(np.float32)),
            }
        )
    return examples


def training_means(examples: Sequence[dict[str, Tensor]], columns: Sequence[str]) -> Tensor:
    """``[D]``: the mean of each variable over the observed values of ``examples`` (the
    training part); ValueError naming the variables that are never observed there.

    >>> ex = grud_examples([np.array([[1.0, np.nan], [3.0, 5.0]])], [None], unit="steps")
    >>> training_means(ex, ["a", "b"]).tolist()
    [2.0, 5.0]
    """
    if not examples:
        raise ValueError("examples: expected at least one training sequence, found none")
    total = torch.stack([torch.nan_to_num(e["values"]).sum(0) for e in examples]).sum(0)
    count = torch.stack([e["mask"].sum(0) for e in examples]).sum(0)
    empty = [c for c, n in zip(columns, count.tolist(), strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"variables {empty}: expected observed values in the training split, found none "
            "(drop the variable, or move the split so that training data observe it)"
        )
    return total / count


def fill_forward(values: Tensor, mask: Tensor, means: Tensor) -> Tensor:
    """``[T, D]``: each gap filled with the last observation before it (``means`` before the
    first one)."""
    out = torch.empty_like(values)
    last = means.clone()
    for t in range(values.shape[0]):
        last = torch.where(mask[t] > 0, values[t], last)
        out[t] = last
    return out


def model_inputs(example: dict[str, Tensor], kind: str, means: Tensor) -> Tensor:
    """The input sequence of model ``kind`` for one example of :func:`grud_examples`:
    ``[T, 3D]`` for ``"grud"`` and ``"mask_delta"``, ``[T, D]`` for ``"forward"`` and ``"mean"``.

    >>> ex = grud_examples([np.array([[1.0], [np.nan]])], [None], unit="steps")[0]
    >>> [model_inputs(ex, k, torch.tensor([0.5]))[:, 0].tolist() for k in KINDS]
    [[1.0, 0.0], [1.0, 1.0], [1.0, 0.5], [1.0, 1.0]]
    """
    from rnnkit.cells import GRUDCell

    values, mask, delta = example["values"], example["mask"], example["delta"]
    if kind == "grud":
        return GRUDCell.pack_inputs(values, mask, delta)
    if kind == "mean":
        return torch.where(mask > 0, values, means)
    filled = fill_forward(values, mask, means)
    if kind == "forward":
        return filled
    if kind == "mask_delta":
        return torch.cat([filled, mask, delta], dim=-1)
    raise ValueError(f"kind: expected one of {list(KINDS)}, found {kind!r}")


# ---------------------------------------------------------------------------------------------
# Removing data


def remove_data(
    series: TimeSeries, removal: Literal["values", "rows"], rate: float, seed: int
) -> TimeSeries:
    """``series`` with a share ``rate`` of its data removed at random (seeded).

    ``"values"``: each value becomes NaN with probability ``rate``, independently (the rows
    stay, the sampling stays regular). ``"rows"``: each row but the first is dropped with
    probability ``rate``, so the remaining timestamps are irregular.

    >>> s = TimeSeries(np.arange(8.0).reshape(4, 2), ("a", "b"))
    >>> remove_data(s, "values", 0.5, seed=0).mask.astype(int).tolist()
    [[1, 0], [0, 0], [1, 1], [1, 1]]
    >>> remove_data(s, "rows", 0.5, seed=0)  # a series known by its order only
    Traceback (most recent call last):
    ...
    ValueError: removal='rows': the series needs timestamps, found none
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate: expected a share in [0, 1), found {rate!r}")
    rng = np.random.default_rng(seed)
    if removal == "values":
        drop = rng.random(series.values.shape) < rate
        return TimeSeries(np.where(drop, np.nan, series.values), series.columns, series.times)
    if removal == "rows":
        if series.times is None:
            raise ValueError("removal='rows': the series needs timestamps, found none")
        keep = rng.random(len(series)) >= rate
        keep[0] = True
        return TimeSeries(series.values[keep], series.columns, series.times[keep])
    raise ValueError(f"removal: expected 'values' or 'rows', found {removal!r}")


# ---------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True)
class WindowSpec:
    """How targets and their input windows are laid on the grid.

    ``span``: grid steps of observations in each window; ``lead``: grid steps from the window's
    end to the target time (1 = the next step); ``stride``: grid steps between target times;
    ``unit``: the unit of δ; ``relative``: subtract from each window its last observed value of
    every variable (and from the target that of the target variable), for series with a trend.
    """

    span: int
    lead: int = 1
    stride: int = 1
    unit: TimeUnit = "h"
    relative: bool = False


@dataclass
class Windows:
    """The examples of one part, with what scoring them needs (all in scaled units).

    Attributes:
        examples: per target, :func:`grud_examples`'s ``values, mask, delta`` (query step last).
        labels: ``[n]`` the target (minus ``levels``), NaN where there is none to score.
        levels: ``[n]`` the level subtracted from the target (0 unless relative).
        persistence: ``[n]`` the last observed target value of the window.
        rows: ``[n]`` the grid row of each target.
    """

    examples: list[dict[str, Tensor]]
    labels: np.ndarray
    levels: np.ndarray
    persistence: np.ndarray
    rows: np.ndarray


def grid_parts(length: int, val_share: float, test_share: float) -> list[range]:
    """The grid rows of the training, validation and test parts, in time order.

    >>> grid_parts(10, 0.2, 0.2)
    [range(0, 6), range(6, 8), range(8, 10)]
    """
    shares = (1.0 - val_share - test_share, val_share, test_share)
    cuts = [0, *(math.floor(c * length + 1e-9) for c in np.cumsum(shares)[:-1]), length]
    return [range(a, b) for a, b in itertools.pairwise(cuts)]


def window_examples(
    observed: TimeSeries,
    grid: TimeSeries,
    rows: range,
    spec: WindowSpec,
    column: int,
    labels: np.ndarray,
    *,
    keep_unlabelled: bool = False,
) -> Windows:
    """The examples for the target grid rows ``rows`` (see the module docstring).

    ``observed`` holds what remains of ``grid`` (its rows at some of the grid's times);
    ``labels [G]`` the value to score at each grid row (NaN: no target there, skipped unless
    ``keep_unlabelled``, which is for predicting new data). A target without any observation in
    its window is skipped.
    """
    first = spec.span + spec.lead - 1
    seqs: list[np.ndarray] = []
    stamps: list[np.ndarray | None] = []
    names: list[str] = []
    kept: list[int] = []
    for g in range(max(rows.start, first), rows.stop, spec.stride):
        if math.isnan(labels[g]) and not keep_unlabelled:
            continue
        lo, hi = g - first, g - spec.lead  # grid rows of the window
        if observed.times is None or grid.times is None:
            a, b, t = lo, hi + 1, None
        else:
            a = int(np.searchsorted(observed.times, grid.times[lo], "left"))
            b = int(np.searchsorted(observed.times, grid.times[hi], "right"))
            t = np.append(observed.times[a:b], grid.times[g])
        if b <= a:
            continue
        x = np.vstack([observed.values[a:b], np.full((1, observed.values.shape[1]), np.nan)])
        seqs.append(x)
        stamps.append(t)
        names.append(str(g) if grid.times is None else str(grid.times[g]))
        kept.append(g)
    unit: TimeUnit = "steps" if grid.times is None else spec.unit
    examples = grud_examples(seqs, stamps, unit=unit, names=names, columns=grid.columns)
    levels, persistence = np.zeros(len(examples)), np.zeros(len(examples))
    for i, e in enumerate(examples):
        last = fill_forward(e["values"], e["mask"], torch.zeros(len(grid.columns)))[-1]
        persistence[i] = float(last[column])
        if spec.relative:
            e["values"] = e["values"] - last
            levels[i] = float(last[column])
    rows_kept = np.array(kept, dtype=np.int64)
    return Windows(examples, labels[rows_kept] - levels, levels, persistence, rows_kept)


def model_examples(
    windows: Windows, kind: str, means: Tensor, center: float, scale: float
) -> list[dict[str, Tensor]]:
    """The examples a model of ``kind`` trains on and predicts, one per window.

    Streams: ``"features"`` (:func:`model_inputs`), ``"labels"`` ``[1, 1]`` (the scaled target
    minus the level, float32), and float64 ``[1]``: ``"level"`` (scaled), ``"truth"`` and
    ``"persistence"`` in the series' units (``center + scale * v`` for the target's scaler
    statistics; ``truth`` is NaN where there is no value to score).
    """
    out = []
    for e, y, level, last in zip(
        windows.examples, windows.labels, windows.levels, windows.persistence, strict=True
    ):
        out.append(
            {
                "features": model_inputs(e, kind, means),
                "labels": torch.tensor([[y]], dtype=torch.float32),
                "level": torch.tensor([level], dtype=torch.float64),
                "truth": torch.tensor([(y + level) * scale + center], dtype=torch.float64),
                "persistence": torch.tensor([last * scale + center], dtype=torch.float64),
            }
        )
    return out


def new_examples(
    series: TimeSeries, info: Mapping[str, Any], spec: WindowSpec, kind: str
) -> tuple[Windows, list[dict[str, Tensor]]]:
    """The windows and :func:`model_examples` of a new series for a trained model: every grid
    time with an observation in its window is a target (its value or none), scaled with the
    training scaler; ``info`` holds ``columns``, ``target``, ``center``, ``scale`` and
    ``means`` (the training means)."""
    columns = tuple(info["columns"])
    if series.columns != columns:
        raise ValueError(
            f"series: expected the training columns {list(columns)}, found {list(series.columns)}"
        )
    scaler = Scaler("standard", columns, np.array(info["center"]), np.array(info["scale"]))
    scaled = scaler.transform(series)
    column = columns.index(info["target"])
    labels = scaled.values[:, column]
    windows = window_examples(
        scaled, scaled, range(len(series)), spec, column, labels, keep_unlabelled=True
    )
    if not windows.examples:
        raise ValueError(
            f"series: no target time with a window of span {spec.span} and lead {spec.lead} in "
            f"{len(series)} rows"
        )
    means = torch.tensor(info["means"], dtype=torch.float32)
    center, scale = float(scaler.center[column]), float(scaler.scale[column])
    return windows, model_examples(windows, kind, means, center, scale)


def time_labels(series: TimeSeries, rows: np.ndarray) -> list[str]:
    """A label for each grid row: its date (or date and minute where the series has times of
    day), or the row number for a series without timestamps."""
    if series.times is None:
        return [str(int(r)) for r in rows]
    days = series.times.astype("datetime64[D]")
    unit: Literal["D", "m"] = (
        "D" if (series.times == days.astype(series.times.dtype)).all() else "m"
    )
    return [
        str(t)
        for t in np.datetime_as_string(series.times[rows].astype("datetime64[us]"), unit=unit)
    ]


@dataclass
class MissingData:
    """:func:`missing_data`'s three parts (scaled), the scaler and the training means."""

    train: Windows
    validation: Windows
    test: Windows
    scaler: Scaler
    means: Tensor
    observed_share: float
    series: TimeSeries
    target: str

    def examples(self, kind: str) -> tuple[list[dict[str, Tensor]], ...]:
        """:func:`model_examples` of the training, validation and test parts."""
        i = self.series.columns.index(self.target)
        center, scale = float(self.scaler.center[i]), float(self.scaler.scale[i])
        parts = (self.train, self.validation, self.test)
        return tuple(model_examples(w, kind, self.means, center, scale) for w in parts)

    def info(self) -> dict[str, Any]:
        """What :func:`new_examples` needs to prepare new data (JSON-ready)."""
        return {
            "columns": list(self.series.columns),
            "target": self.target,
            "center": self.scaler.center.tolist(),
            "scale": self.scaler.scale.tolist(),
            "means": self.means.tolist(),
            "observed_share": self.observed_share,
        }


def missing_data(
    series: TimeSeries,
    target: str,
    spec: WindowSpec,
    *,
    val_share: float,
    test_share: float,
    removal: Literal["values", "rows"] | None = None,
    rate: float = 0.0,
    seed: int = 0,
) -> MissingData:
    """The three parts of the comparison on ``series`` (see the module docstring).

    Args:
        series: the series on its regular grid (missing values NaN); with timestamps unless
            ``spec.unit == "steps"``.
        target: the variable to forecast.
        spec: the windows.
        val_share, test_share: the shares of the grid's rows for validation and test (the
            training part is the rest, first in time).
        removal, rate, seed: remove a share of the data first (:func:`remove_data`); the test
            scores the true values.

    Raises:
        ValueError: an unknown target, a variable never observed in the training part, a
            part without examples.
    """
    column = series.column_indices([target], "target")[0]
    if series.times is None and spec.unit != "steps":
        raise ValueError(
            f"delta_unit: a series without timestamps has gaps in 'steps' only, found {spec.unit!r}"
        )
    observed = series if removal is None else remove_data(series, removal, rate, seed)
    parts = grid_parts(len(series), val_share, test_share)
    n_train = parts[1].start
    if series.times is not None and observed.times is not None:
        n_train = int(np.searchsorted(observed.times, series.times[n_train]))
    train_part = observed[0:n_train]
    seen = np.asarray(train_part.mask.any(axis=0)).tolist()
    never = [c for c, s in zip(series.columns, seen, strict=True) if not s]
    if never:
        raise ValueError(
            f"variables {never}: expected observed values in the training split (the first "
            f"{n_train} rows), found none; drop them or move the split"
        )
    scaler = Scaler.fit(train_part)
    scaled_obs = scaler.transform(observed)
    truth = scaler.transform(series).values[:, column]
    # Targets for training and validation: what remains after removal, at grid times.
    remaining = np.full(len(series), np.nan)
    if series.times is None or observed.times is None:
        remaining = scaled_obs.values[:, column].copy()
    else:
        remaining[np.searchsorted(series.times, observed.times)] = scaled_obs.values[:, column]
    sets = []
    for name, rows, labels in zip(
        ("train", "validation", "test"), parts, (remaining, remaining, truth), strict=True
    ):
        part = window_examples(scaled_obs, series, rows, spec, column, labels)
        if not part.examples:
            raise ValueError(
                f"split: the {name} part has no target with a window of span {spec.span} "
                f"and lead {spec.lead}; use a longer series or a shorter span"
            )
        sets.append(part)
    means = training_means(sets[0].examples, series.columns)
    share = float(observed.mask.sum() / series.values.size)
    return MissingData(sets[0], sets[1], sets[2], scaler, means, share, series, target)


# ---------------------------------------------------------------------------------------------
# The real series of the comparison


@dataclass(frozen=True)
class SeriesLayout:
    """A real series under ``../shared/data/timeseries``: its file, its variables (in order)
    and the variable forecast in docs/results.md."""

    file: str
    columns: tuple[str, ...]
    target: str


SERIES: dict[str, SeriesLayout] = {
    "airquality": SeriesLayout(
        "nyc-airquality-1973.csv", ("Ozone", "Solar.R", "Wind", "Temp"), "Ozone"
    ),
    "co2": SeriesLayout("co2-weekly.csv", ("co2",), "co2"),
    "elecdemand": SeriesLayout(
        "elecdemand-2014.csv", ("Demand", "WorkDay", "Temperature"), "Demand"
    ),
}


def default_data_dir() -> Path:
    """``../shared/data/timeseries`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "timeseries"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "timeseries"


def read_series(name: str, path: str | Path | None = None) -> TimeSeries:
    """The series ``name`` of :data:`SERIES` with real timestamps, from ``path`` (a file in
    that layout; default: the shared copy).

    ``airquality``: Ozone, Solar.R, Wind, Temp, daily from 1973-05-01 (dates from the Month and
    Day columns). ``co2``: weekly CO2 (``date`` as ``%Y%m%d``). ``elecdemand``: Demand,
    WorkDay, Temperature, every 30 minutes from 2014-01-01 00:00 (the file has no timestamps;
    row ``k`` is ``00:00 + 30 min * (k - 1)``).

    Raises:
        ReaderError: a malformed row (``path:line:column``), a row without Month or Day, row
            names that do not count 1, 2, 3, ...
    """
    if name not in SERIES:
        raise ValueError(f"series: expected one of {list(SERIES)}, found {name!r}")
    file = Path(path) if path is not None else default_data_dir() / SERIES[name].file
    columns = list(SERIES[name].columns)
    if name == "co2":
        return load_series(file, "date", columns, time_format="%Y%m%d")
    if name == "airquality":
        raw = load_series(file, None, [*columns, "Month", "Day"])
        stamps = []
        for r, (month, day) in enumerate(raw.values[:, 4:].tolist()):
            try:
                stamps.append(date(1973, _whole(month), _whole(day)))
            except (ValueError, OverflowError):
                raise _row_error(
                    file,
                    r,
                    f"expected a Month and a Day on every row (a date of 1973), found {month:g} "
                    f"and {day:g}",
                ) from None
            if r and stamps[r] <= stamps[r - 1]:
                raise _row_error(
                    file,
                    r,
                    f"expected dates in increasing order, found {stamps[r]} after {stamps[r - 1]}",
                )
        times = np.array(stamps, dtype="datetime64[D]").astype("datetime64[us]")
        return TimeSeries(raw.values[:, :4], tuple(columns), times)
    raw = load_series(file, None, ["rownames", *columns])
    rows = raw.values[:, 0]
    bad = np.flatnonzero(rows != np.arange(1, len(rows) + 1))
    if bad.size:
        raise _row_error(
            file,
            int(bad[0]),
            f"expected rownames 1, 2, 3, ... (one row per half hour), found {rows[bad[0]]:g}",
        )
    minutes = (rows.astype(np.int64) - 1) * 30
    times = np.datetime64("2014-01-01T00:00", "us") + minutes.astype("timedelta64[m]")
    return TimeSeries(raw.values[:, 1:], tuple(columns), times)


def _whole(value: float) -> int:
    """``value`` as an int; ValueError (NaN, a fraction) or OverflowError (infinite)."""
    if value != int(value):
        raise ValueError(value)
    return int(value)


def _row_error(path: Path, row: int, message: str) -> ReaderError:
    """The error at the start of data row ``row`` (0-based, after the header; blank lines
    skipped) of a CSV file :func:`load_series` read."""
    numbers = [i for i, line in enumerate(read_lines(path), start=1) if line.strip()]
    return ReaderError(message, path=path, line=numbers[row + 1], column=1)


def input_path(layout: str, path: Path | None, data_dir: Path | None = None) -> Path:
    """``path``, or the file of series ``layout`` in ``data_dir`` (default:
    :func:`default_data_dir`)."""
    if path is not None:
        return path
    if layout not in SERIES:
        raise ValueError(f"csv: expected a CSV file for layout {layout!r}, found none")
    return (data_dir if data_dir is not None else default_data_dir()) / SERIES[layout].file


def read_input(
    layout: str,
    path: Path,
    target: str,
    *,
    time_column: str | None = None,
    columns: Sequence[str] = (),
    time_format: str | None = None,
) -> TimeSeries:
    """A file in ``layout``: a series of :data:`SERIES` (:func:`read_series`), or ``"csv"``
    (:func:`~rnnkit.data.timeseries.load_series` of ``target`` and ``columns``; ``target``
    first unless ``columns`` places it)."""
    if layout != "csv":
        return read_series(layout, path)
    names = list(columns) if target in columns else [target, *columns]
    return load_series(path, time_column, names, time_format=time_format)


def forecast_errors(predictions: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
    """``test_mae`` and ``test_rmse`` of ``predictions``.

    >>> forecast_errors([1.0, 2.0], [0.0, 4.0])
    {'test_mae': 1.5, 'test_rmse': 1.5811388300841898}
    """
    errors = [p - t for p, t in zip(predictions, targets, strict=True)]
    return {
        "test_mae": sum(abs(e) for e in errors) / len(errors),
        "test_rmse": (sum(e * e for e in errors) / len(errors)) ** 0.5,
    }


def comparison_table(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> str:
    """Markdown: per model, test MAE and RMSE as mean ± std (ddof 0) over the rows' seeds,
    the epochs run and the training seconds; persistence last (from the first model's rows, one per
    seed: removal depends on the seed).

    >>> rows = [{"model": "grud", "seed": s, "test_mae": m, "test_rmse": m, "epochs": 3,
    ...          "seconds": 1.0, "persistence_mae": 2.0, "persistence_rmse": 2.5}
    ...         for s, m in ((0, 1.0), (1, 2.0))]
    >>> print(comparison_table(rows, ["grud"]).splitlines()[2])
    | GRU-D | 1.5 ± 0.5 | 1.5 ± 0.5 | 3 3 | 2 |
    """

    def spread(values: list[float]) -> str:
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        std = 0.0 if std < 1e-9 * abs(mean) else std  # equal up to rounding
        return f"{mean:.4g} ± {std:.2g}" if len(values) > 1 else f"{mean:.4g}"

    lines = [
        "| model | test MAE | test RMSE | epochs | training seconds |",
        "|---|---|---|---|---|",
    ]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        mae, rmse = spread([r["test_mae"] for r in mine]), spread([r["test_rmse"] for r in mine])
        epochs = " ".join(str(r["epochs"]) for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        lines.append(f"| {NAMES[model]} | {mae} | {rmse} | {epochs} | {seconds:.0f} |")
    first = [r for r in rows if r["model"] == models[0]]
    mae, rmse = (spread([r[f"persistence_{k}"] for r in first]) for k in ("mae", "rmse"))
    lines.append(f"| persistence | {mae} | {rmse} | | |")
    return "\n".join(lines) + "\n"
