"""Diagnosis prediction on synthetic visits (docs/results.md, "## Diagnosis prediction").

Generates 2,000 synthetic patients (seed 0; the rules are in
:func:`rnnkit.data.visits.synthetic_visits`), then for each seed splits them 80/10/10 at random,
trains the Doctor AI-style GRU and prints one JSON line with recall@10/20/30 of the model, of
the patient's own past codes and of the most frequent codes, and R² of the log time to the next
visit; at the end, the mean ± std (ddof 0) over the seeds. No real patient data is used::

    nice -n 10 python examples/visits.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch

from rnnkit.data.visits import synthetic_visits
from rnnkit.tasks.visits import KS, VisitsConfig, train_visits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    patients = synthetic_visits(args.patients, seed=0)
    lines = []
    for seed in args.seeds:
        started = time.perf_counter()
        result = train_visits(patients, VisitsConfig(epochs=args.epochs, seed=seed))
        line = {"seed": seed, **result.as_dict(), "total_seconds": time.perf_counter() - started}
        print(json.dumps(line), flush=True)
        lines.append(line)
    print()
    print("| predictor | " + " | ".join(f"recall@{k}" for k in KS) + " |")
    print("|---|" + "---|" * len(KS))
    for name, key in (
        ("rnnkit GRU over visits", "recall"),
        ("patient's past codes", "history_recall"),
        ("most frequent codes", "frequent_recall"),
    ):
        cells = []
        for k in KS:
            values = np.array([ln[key][str(k)] for ln in lines])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    r2 = np.array([ln["time_r2"] for ln in lines])
    print(f"\ntime to next visit, R² of log(1 + days): {r2.mean():.3f} ± {r2.std():.3f}")


if __name__ == "__main__":
    main()
