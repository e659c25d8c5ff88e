"""GRU-D against three GRU baselines on real series with missing values (docs/results.md).

Settings (the presets of ``rnnkit grud``; every run seeded, the seed also draws the removed
data):

* ``airquality``: next-day Ozone from the last 7 days of Ozone, Solar.R, Wind, Temp
  (New York, May-September 1973; Ozone and Solar.R have real gaps);
* ``co2``: next-week CO2 from the last 26 weeks (59 weeks missing), relative to the window's
  last value;
* ``elecdemand``: Demand 2 hours ahead (lead 4 half-hours) from the last 12 hours of Demand,
  WorkDay and Temperature, with 50 % or 80 % of the values removed at random (``values``) or
  of the rows dropped (``rows``: irregular sampling); tested on the true values.

Each setting is ``rnnkit grud compare --preset P [--removal R --rate X] --seeds 0,1,2``: every
model trained through the recipe harness (``run_recipe``) into
``runs/grud-results/SETTING/MODEL-seedS``, then a table per setting (``comparison.md``) and one
Markdown row per setting here. Run with one thread, as in docs/results.md::

    nice -n 10 python examples/grud.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnkit.data.missing import KINDS, NAMES
from rnnkit.recipes.grud import compare, preset_config

# (label, preset, changes of the preset's settings)
SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("airquality (real gaps)", "airquality", {}),
    ("co2 (real gaps)", "co2", {}),
    *[
        (
            f"elecdemand, {rate:.0%} {removal} removed",
            "elecdemand",
            {"removal": removal, "rate": rate},
        )
        for removal in ("values", "rows")
        for rate in (0.5, 0.8)
    ],
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default=None, help="run only the settings whose label has it")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "grud-results")
    args = parser.parse_args(argv)
    lines = []
    for label, preset, changes in SETTINGS:
        if args.only is not None and args.only not in label:
            continue
        config = preset_config(preset, threads=1, **changes)
        folder = args.run_dir / label.split(" (")[0].replace(", ", "-").replace(" ", "-")
        rows = compare(config, KINDS, args.seeds, folder, progress=False, log=lambda _: None)
        cells = []
        for name in [*KINDS, "persistence"]:
            key, kind = (
                ("persistence_mae", KINDS[0]) if name == "persistence" else ("test_mae", name)
            )
            maes = [r[key] for r in rows if r["model"] == kind]
            mean = sum(maes) / len(maes)
            std = (sum((m - mean) ** 2 for m in maes) / len(maes)) ** 0.5
            std = 0.0 if std < 1e-9 * abs(mean) else std  # equal up to rounding
            cells.append(f"{mean:.3g} ± {std:.2g}")
        seconds = sum(r["seconds"] for r in rows)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seconds:.0f} |")
        print(lines[-1], flush=True)
    print()
    print("| data | " + " | ".join(NAMES[k] for k in KINDS) + " | persistence | training s |")
    print("|---|" + "---|" * (len(KINDS) + 2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
