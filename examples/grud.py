"""GRU-D against three GRU baselines on real series with missing values (docs/results.md).

Settings (every run seeded; the seed also draws the removed data):

* ``airquality``: next-day Ozone from the last 7 days of Ozone, Solar.R, Wind, Temp
  (New York, May-September 1973; Ozone and Solar.R have real gaps);
* ``co2``: next-week CO2 from the last 26 weeks (59 weeks missing), relative to the window's
  last value;
* ``elecdemand``: Demand 2 hours ahead (lead 4 half-hours) from the last 12 hours of Demand,
  WorkDay and Temperature, with 50 % or 80 % of the values removed at random (``values``) or
  of the rows dropped (``rows``: irregular sampling); tested on the true values.

Prints one JSON line per (setting, seed) run, then a Markdown table of mean ± std over the
seeds. Run with one thread per process, as in docs/results.md::

    nice -n 10 python examples/grud.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rnnkit.tasks.missing import KINDS, NAMES, PRESETS, MissingConfig, compare_missing, load_preset

# (label, preset, removal, rate, overrides of the preset's settings)
SETTINGS: list[tuple[str, str, str | None, float, dict[str, Any]]] = [
    ("airquality (real gaps)", "airquality", None, 0.0, {}),
    ("co2 (real gaps)", "co2", None, 0.0, {"span": 26, "stride": 2, "epochs": 25}),
    *[
        (
            f"elecdemand, {rate:.0%} {removal} removed",
            "elecdemand",
            removal,
            rate,
            {"span": 24, "stride": 12, "epochs": 20},
        )
        for removal in ("values", "rows")
        for rate in (0.5, 0.8)
    ],
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default=None, help="run only the settings whose label has it")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table: dict[str, list[dict[str, Any]]] = {}
    for label, preset, removal, rate, overrides in SETTINGS:
        if args.only is not None and args.only not in label:
            continue
        series = load_preset(preset)
        settings = {**PRESETS[preset].settings, **overrides}
        for seed in args.seeds:
            config = MissingConfig(target=PRESETS[preset].target, seed=seed, **settings)
            started = time.perf_counter()
            result = compare_missing(series, config, removal=removal, rate=rate)  # type: ignore[arg-type]
            line = {
                "setting": label,
                "seed": seed,
                **result.as_dict(),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(line), flush=True)
            table.setdefault(label, []).append(line)
    print()
    print("| data | " + " | ".join(NAMES[k] for k in KINDS) + " | persistence | seconds |")
    print("|---|" + "---|" * (len(KINDS) + 2))
    for label, lines in table.items():
        cells = []
        for kind in KINDS:
            maes = np.array([ln["models"][kind]["mae"] for ln in lines])
            cells.append(f"{maes.mean():.3g} ± {maes.std():.2g}")
        naive = np.array([ln["persistence_mae"] for ln in lines])
        seconds = sum(ln["seconds"] for ln in lines)
        print(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {naive.mean():.3g} ± {naive.std():.2g} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
