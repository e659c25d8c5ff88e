"""The CNTK book's solar example, reproduced and then done honestly (three seeds each).

    python examples/cntk_solar.py            # all runs, one JSON line each, then the medians
    python examples/cntk_solar.py --quick    # one seed

Runs: (a) the book's model and settings on the book's CTF files (conformance; those files
leak the target), (b) the same model on sequences rebuilt from solar.csv with a split by days
in time order, (c) a better model from rnnkit's parts on the same honest split. Each run uses
one thread (``torch.set_num_threads(1)``) so that the figures do not depend on the machine's
load. The same runs from the command line: ``rnnkit solar --data book|days --model book|better``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.solar import RECIPE, SolarConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed instead of three")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    for data, model in (("book", "book"), ("days", "book"), ("days", "better")):
        results = []
        for seed in seeds:
            train = TrainSettings(
                epochs=10,
                minibatch_size=140,
                learning_rate=0.005,
                patience=4 if model == "better" else 0,
                seed=seed,
                threads=1,
            )
            config = SolarConfig(data=data, model=model, train=train)
            run = run_recipe(
                RECIPE, config, f"runs/cntk_solar/{data}-{model}-{seed}", progress=False
            )
            result = {
                "data": data,
                "model": model,
                "seed": seed,
                "val_mse": round(run.figures["val_loss"], 5),
                "test_mse": None if data == "book" else round(run.figures["test_mse"], 5),
                "epochs": run.figures["epochs"][0],
            }
            print(json.dumps(result), flush=True)
            results.append(result)
        summary: dict[str, object] = {
            "data": data,
            "model": model,
            "median_val_mse": statistics.median(float(r["val_mse"]) for r in results),
        }
        if data == "days":
            summary["median_test_mse"] = statistics.median(float(r["test_mse"]) for r in results)
        print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
