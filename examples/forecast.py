"""Forecasting on real series: CO2 (weekly), electricity demand (half-hourly, with the working
day and the temperature known in advance) and solar output (half-hourly, two series at once),
each run through the forecast recipe (:func:`rnnkit.recipes.harness.run_recipe`, the path of
``rnnkit forecast``), one run directory each under ``--run-dir``.

Each run prints one JSON line: test MAE, MAPE and MASE of the model and of the seasonal-naive
forecast (splits in time order 0.8 / 0.1 / 0.1, scaler fitted on the training part; the
weights of the best validation epoch kept).

* ``co2``: the demo's window model (input 104 weeks, horizon 52; ``--preset co2-long``) and
  the stream model;
* ``elecdemand``: horizon 48 half-hours, season 48, ``known=("WorkDay", "Temperature")``
  (the temperature of the next day taken as known, i.e. a perfect weather forecast);
* ``solar``: ``solar.csv`` on a regular half-hourly grid, written to ``solar-grid.csv`` in
  ``--run-dir``: the hours before a day's first and after its last reading hold
  ``solar.current = 0`` and ``solar.total`` = 0 before the first reading and the day's last
  total after the last; days with no reading stay missing; targets ``solar.current`` and
  ``solar.total`` forecast together, horizon 48; the window model also with ``residual=True``
  (trained on the difference from seasonal naive).

One thread (``threads=1``); fixed seeds.

    nice -n 10 python examples/forecast.py [--only co2|elecdemand|solar]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rnnkit.recipes.forecast import RECIPE, ForecastConfig
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_solar_grid(source: Path, out: Path) -> Path:
    """solar.csv on a half-hourly grid (see the module docstring), as a CSV file."""
    with source.open(newline="") as f:
        rows = [
            (datetime.fromisoformat(r[0][:19]), float(r[1]), float(r[2]))
            for r in list(csv.reader(f))[1:]
        ]
    first = rows[0][0].replace(hour=0, minute=0)
    days = (rows[-1][0].date() - first.date()).days + 1
    values = [[math.nan, math.nan] for _ in range(days * 48)]
    by_day: dict[int, list[tuple[int, float, float]]] = {}
    for t, current, total in rows:
        slot = (t.hour * 60 + t.minute) // 30
        by_day.setdefault((t.date() - first.date()).days, []).append((slot, current, total))
    for day, readings in by_day.items():
        base = day * 48
        for slot in range(48):
            values[base + slot] = [0.0, 0.0]
        for slot, current, total in readings:
            values[base + slot] = [current, total]
        last_slot, _, last_total = readings[-1]
        for slot in range(last_slot + 1, 48):
            values[base + slot][1] = last_total
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time", "solar.current", "solar.total"])
        for i, (current, total) in enumerate(values):
            moment = (first + timedelta(minutes=30 * i)).isoformat(sep=" ")
            writer.writerow([moment, *("" if math.isnan(v) else repr(v) for v in (current, total))])
    return out


def runs(run_dir: Path) -> list[tuple[str, ForecastConfig]]:
    co2 = {"csv": DATA / "timeseries" / "co2-weekly.csv", "target": ("co2",)}
    co2.update(time_column="date", time_format="%Y%m%d")
    elec: dict[str, Any] = {
        "csv": DATA / "timeseries" / "elecdemand-2014.csv",
        "target": ("Demand",),
        "known": ("WorkDay", "Temperature"),
        "input_length": 96,
    }
    half_hourly: dict[str, Any] = {"horizon": 48, "season": 48, "hidden_size": 64}
    solar: dict[str, Any] = {
        "csv": run_dir / "solar-grid.csv",
        "target": ("solar.current", "solar.total"),
        "time_column": "time",
        "input_length": 96,
    }

    def train(epochs: int, patience: int, minibatch_size: int = 32) -> TrainSettings:
        return TrainSettings(
            epochs=epochs,
            patience=patience,
            minibatch_size=minibatch_size,
            learning_rate=0.005,
            threads=1,
        )

    return [
        ("co2", ForecastConfig(**co2, model="window", train=train(40, 10))),
        ("co2", ForecastConfig(**co2, model="stream", train=train(150, 20, 8))),
        (
            "elecdemand",
            ForecastConfig(**elec, **half_hourly, model="window", stride=4, train=train(30, 10)),
        ),
        (
            "elecdemand",
            ForecastConfig(**elec, **half_hourly, model="stream", train=train(100, 10, 8)),
        ),
        (
            "solar",
            ForecastConfig(**solar, **half_hourly, model="window", stride=4, train=train(30, 10)),
        ),
        (
            "solar",
            ForecastConfig(
                **solar, **half_hourly, model="window", stride=4, residual=True, train=train(30, 10)
            ),
        ),
        ("solar", ForecastConfig(**solar, **half_hourly, model="stream", train=train(60, 10, 8))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "forecast")
    parser.add_argument("--only", default=None, help="run only this data set")
    args = parser.parse_args()
    if args.only in (None, "solar"):
        write_solar_grid(DATA / "cntk-book" / "solar.csv", args.run_dir / "solar-grid.csv")
    for i, (name, config) in enumerate(runs(args.run_dir)):
        if args.only not in (None, name):
            continue
        residual = "-residual" if config.residual else ""
        run = args.run_dir / f"{i}-{name}-{config.model}{residual}"
        result = run_recipe(RECIPE, config, run, progress=False, log=lambda _: None)
        info = json.loads((run / "run.json").read_text())
        line = {
            "task": "forecast",
            "data": name,
            "model": config.model,
            "residual": config.residual,
            "targets": list(config.target),
            "known": list(config.known),
            "horizon": config.horizon,
            "split": "time 0.8/0.1/0.1",
            **result.figures,
            "seconds": info["timings"]["train_seconds"],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
