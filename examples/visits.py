"""Diagnosis prediction on synthetic visits (docs/results.md, "## Diagnosis prediction").

Writes 2,000 synthetic patients (seed 0; the rules are in
:func:`rnnkit.data.visits.synthetic_visits`) to a CSV, then for each seed runs the recipe's
defaults through :func:`rnnkit.recipes.harness.run_recipe` (patients split 80/10/10 at random
by the seed, the Doctor AI-style GRU, one thread) and prints one JSON line with recall@10/20/30
of the model, of the patient's own past codes and of the most frequent codes, and R² of the
log time to the next visit; at the end, the mean ± std (ddof 0) over the seeds. No real
patient data is used::

    nice -n 10 python examples/visits.py --seeds 0 1 2

One run from the command line: ``rnnkit visits generate synthetic.csv`` then
``rnnkit visits train synthetic.csv --seed 0 --threads 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnkit.data.visits import KS, synthetic_visits, write_visits
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.visits import RECIPE, VisitsConfig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "visits-synthetic")
    args = parser.parse_args(argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    data = args.run_dir / "synthetic.csv"
    write_visits(data, synthetic_visits(args.patients, seed=0))
    defaults = VisitsConfig.__dataclass_fields__["train"].default
    assert isinstance(defaults, TrainSettings)
    lines = []
    for seed in args.seeds:
        started = time.perf_counter()
        train = dataclasses.replace(defaults, epochs=args.epochs, seed=seed, threads=1)
        run = run_recipe(
            RECIPE,
            VisitsConfig(csv=data, train=train),
            args.run_dir / f"seed-{seed}",
            progress=False,
        )
        line = {"seed": seed, **run.figures, "total_seconds": time.perf_counter() - started}
        print(json.dumps(line), flush=True)
        lines.append(line)
    print()
    print("| predictor | " + " | ".join(f"recall@{k}" for k in KS) + " |")
    print("|---|" + "---|" * len(KS))
    for name in ("rnnkit GRU over visits", "patient's past codes", "most frequent codes"):
        cells = []
        for k in KS:
            values = np.array(
                [
                    ln[f"recall@{k}"]
                    if name.startswith("rnnkit")
                    else ln["baselines"][name][f"recall@{k}"]
                    for ln in lines
                ]
            )
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    r2 = np.array([ln["time_r2"] for ln in lines])
    print(f"\ntime to next visit, R² of log(1 + days): {r2.mean():.3f} ± {r2.std():.3f}")
    print("epochs:", [ln["epochs"][0] for ln in lines])


if __name__ == "__main__":
    main()
