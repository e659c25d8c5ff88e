"""The CNTK book's solar data: a day's first readings and its maximum output.

Data: ``solar.csv`` from the CNTK book (``time, solar.current, solar.total``, every 30 minutes).
The book builds, for every day, one sequence per prefix of its first readings (lengths 2..13)
with the day's maximum ``solar.total / 19100`` as the target, and trains
``Fold(LSTM(15)) >> Dense(1)`` on them.

Two data sets come out of this module:

* :func:`book_examples` reads the book's own CTF files. In those the day boundaries are shifted
  by about 7 hours, so about 55 % of the sequences hold their own target among their inputs:
  a model fit on them measures conformance with CNTK, not forecasting skill.
* :func:`solar_days` / :func:`day_examples` rebuild the sequences from ``solar.csv`` with
  correct day grouping (local date = the first 10 characters of the time stamp), and
  :func:`split_days` splits by days in time order (832 / 104 / 104 days).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError

__all__ = [
    "NORMALIZE",
    "SolarDay",
    "book_examples",
    "day_examples",
    "default_data_dir",
    "solar_days",
    "split_days",
]

NORMALIZE = 19100.0  # the maximum of solar.total, the book's scale
MIN_READINGS = 8
KEEP_READINGS = 14


@dataclass(frozen=True)
class SolarDay:
    """One day: its date, its first readings ``[n, 2]`` (current, total; normalised), the
    half-hour of day of each reading ``[n]``, and the target (max of total / 19100)."""

    date: str
    readings: Tensor
    half_hours: Tensor
    target: float


def default_data_dir() -> Path:
    """``../shared/data/cntk-book`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "cntk-book"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "cntk-book"


def solar_days(path: str | Path) -> list[SolarDay]:
    """Read ``solar.csv`` and group by local date (the first 10 characters of the time stamp).

    As in the book, days with fewer than 8 readings are left out (7 of the 1,047 days of the
    book's file; the tests check the 1,040 that remain) and each day keeps its first 14
    readings; the target is the day's maximum ``solar.total / 19100`` over all its readings.
    """
    path = Path(path)
    grouped: dict[str, list[tuple[int, float, float]]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != [
            "time",
            "solar.current",
            "solar.total",
        ]:
            raise ReaderError(
                f"expected the header 'time,solar.current,solar.total', found {header!r}",
                path=path,
                line=1,
                column=1,
            )
        for line, row in enumerate(reader, start=2):
            if len(row) < 3:
                raise ReaderError(
                    f"expected 3 fields, found {len(row)}", path=path, line=line, column=1
                )
            stamp = row[0][:19]
            try:
                hour, minute = int(stamp[11:13]), int(stamp[14:16])
                current, total = float(row[1]), float(row[2])
            except ValueError as err:
                raise ReaderError(
                    f"expected 'YYYY-MM-DD HH:MM:SS,number,number', found {','.join(row)!r}",
                    path=path,
                    line=line,
                    column=1,
                ) from err
            if not (math.isfinite(current) and math.isfinite(total)):
                raise ReaderError(
                    f"expected finite readings, found {row[1]!r}, {row[2]!r}",
                    path=path,
                    line=line,
                    column=len(row[0]) + 2,
                )
            grouped.setdefault(stamp[:10], []).append((hour * 2 + minute // 30, current, total))
    days = []
    for date, rows in grouped.items():
        if len(rows) < MIN_READINGS:
            continue
        target = max(r[2] for r in rows) / NORMALIZE
        first = rows[:KEEP_READINGS]
        readings = torch.tensor([[r[1], r[2]] for r in first]) / NORMALIZE
        half_hours = torch.tensor([r[0] for r in first], dtype=torch.float32)
        days.append(SolarDay(date, readings, half_hours, target))
    return days


def split_days(
    days: list[SolarDay], sizes: tuple[int, int, int] = (832, 104, 104)
) -> tuple[list[SolarDay], list[SolarDay], list[SolarDay]]:
    """Train / validation / test by days in time order (no day in two parts)."""
    if sum(sizes) != len(days):
        raise ValueError(f"sizes: expected parts adding up to {len(days)} days, found {sizes}")
    ordered = sorted(days, key=lambda d: d.date)
    a, b = sizes[0], sizes[0] + sizes[1]
    return ordered[:a], ordered[a:b], ordered[b:]


def day_examples(days: list[SolarDay], features: str = "book") -> list[dict[str, Tensor]]:
    """Every prefix of length 2..n-1 of each day (n <= 14 readings) as one example.

    ``features='book'``: the input is ``solar.total / 19100`` alone (``[T, 1]``), as in the book.
    ``features='rich'``: current, total, time of day (sin, cos) and day of year (sin, cos),
    ``[T, 6]``. The target is ``[1, 1]``, the day's maximum total.
    """
    if features not in ("book", "rich"):
        raise ValueError(f"features: expected 'book' or 'rich', found {features!r}")
    examples = []
    for day in days:
        if features == "book":
            inputs = day.readings[:, 1:2]
        else:
            tod = day.half_hours * (2 * math.pi / 48)
            doy = _day_of_year(day.date) * (2 * math.pi / 365.25)
            seasonal = torch.tensor([math.sin(doy), math.cos(doy)]).expand(len(tod), 2)
            inputs = torch.cat(
                [day.readings, torch.stack([tod.sin(), tod.cos()], 1), seasonal], dim=1
            )
        target = torch.tensor([[day.target]])
        for length in range(2, len(day.readings)):
            examples.append({"features": inputs[:length].clone(), "target": target})
    return examples


def _day_of_year(date: str) -> int:
    import datetime

    return datetime.date.fromisoformat(date).timetuple().tm_yday


def book_examples(path: str | Path) -> list[dict[str, Tensor]]:
    """The book's CTF file (``solar_train.ctf`` / ``solar_val.ctf``): ``features [T, 1]`` and
    ``target [1, 1]`` per sequence."""
    from rnnkit.data.ctf import Stream, read_ctf

    streams = {"features": Stream("features", 1), "target": Stream("target", 1)}
    return read_ctf(path, streams)
