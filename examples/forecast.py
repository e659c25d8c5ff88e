"""Forecasting on real series: CO2 (weekly), electricity demand (half-hourly, with the working
day and the temperature known in advance) and solar output (half-hourly, two series at once).

Each run prints one JSON line: test MAE, MAPE and MASE of the model and of the seasonal-naive
forecast (splits in time order 0.8 / 0.1 / 0.1, scaler fitted on the training part).

* ``co2``: the demo's window model (input 104 weeks, horizon 52) and the stream model;
* ``elecdemand``: horizon 48 half-hours, season 48, ``known=("WorkDay", "Temperature")``
  (the temperature of the next day taken as known, i.e. a perfect weather forecast);
* ``solar``: ``solar.csv`` on a regular half-hourly grid: the hours before a day's first and
  after its last reading hold ``solar.current = 0`` and ``solar.total`` = 0 before the first
  reading and the day's last total after the last; days with no reading stay missing;
  targets ``solar.current`` and ``solar.total`` forecast together, horizon 48; the window
  model also with ``residual=True`` (trained on the difference from seasonal naive).

One thread (``torch.set_num_threads(1)``); fixed seeds.

    nice -n 10 python examples/forecast.py
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.data.timeseries import TimeSeries, load_series
from rnnkit.tasks.forecast import ForecastConfig, forecast

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def solar_grid(path: Path) -> TimeSeries:
    """solar.csv on a half-hourly grid (see the module docstring)."""
    with path.open(newline="") as f:
        rows = [
            (datetime.fromisoformat(r[0][:19]), float(r[1]), float(r[2]))
            for r in list(csv.reader(f))[1:]
        ]
    first = rows[0][0].replace(hour=0, minute=0)
    days = (rows[-1][0].date() - first.date()).days + 1
    values = np.full((days * 48, 2), np.nan)
    by_day: dict[int, list[tuple[int, float, float]]] = {}
    for t, current, total in rows:
        slot = (t.hour * 60 + t.minute) // 30
        by_day.setdefault((t.date() - first.date()).days, []).append((slot, current, total))
    for day, readings in by_day.items():
        base = day * 48
        values[base : base + 48] = 0.0
        for slot, current, total in readings:
            values[base + slot] = (current, total)
        last_slot, _, last_total = readings[-1]
        values[base + last_slot + 1 : base + 48, 1] = last_total
    times = np.arange(days * 48) * np.timedelta64(30, "m") + np.datetime64(first, "us")
    return TimeSeries(values, ("solar.current", "solar.total"), times)


def runs() -> list[tuple[str, TimeSeries, ForecastConfig]]:
    co2 = load_series(DATA / "timeseries" / "co2-weekly.csv", "date", ["co2"], time_format="%Y%m%d")
    elec = load_series(
        DATA / "timeseries" / "elecdemand-2014.csv", None, ["Demand", "WorkDay", "Temperature"]
    )
    solar = solar_grid(DATA / "cntk-book" / "solar.csv")
    half_hourly = dict(horizon=48, season=48, hidden_size=64, patience=10)
    solar_window: dict[str, Any] = dict(
        target=("solar.current", "solar.total"), input_length=96, stride=4, epochs=30
    )
    solar_window.update(half_hourly)
    return [
        ("co2", co2, ForecastConfig(target="co2", epochs=40, patience=10)),
        (
            "co2",
            co2,
            ForecastConfig(target="co2", model="stream", minibatch_size=8, epochs=150, patience=20),
        ),
        (
            "elecdemand",
            elec,
            ForecastConfig(
                target="Demand",
                known=("WorkDay", "Temperature"),
                input_length=96,
                stride=4,
                epochs=30,
                **half_hourly,
            ),
        ),
        (
            "elecdemand",
            elec,
            ForecastConfig(
                target="Demand",
                known=("WorkDay", "Temperature"),
                input_length=96,
                model="stream",
                minibatch_size=8,
                epochs=100,
                **half_hourly,
            ),
        ),
        ("solar", solar, ForecastConfig(**solar_window)),
        ("solar", solar, ForecastConfig(**solar_window, residual=True)),
        (
            "solar",
            solar,
            ForecastConfig(
                target=("solar.current", "solar.total"),
                input_length=96,
                model="stream",
                minibatch_size=8,
                epochs=60,
                **half_hourly,
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "forecast")
    parser.add_argument("--only", default=None, help="run only this data set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for i, (name, series, config) in enumerate(runs()):
        if args.only not in (None, name):
            continue
        result = forecast(
            series,
            config,
            args.run_dir / f"{i}-{name}-{config.model}{'-residual' if config.residual else ''}",
            progress=False,
        )
        line = {
            "task": "forecast",
            "data": name,
            "model": config.model,
            "residual": config.residual,
            "targets": list(config.targets),
            "known": list(config.known),
            "horizon": config.horizon,
            "split": "time 0.8/0.1/0.1",
            **result.as_dict(),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
