"""Reversible instance normalisation on the CO2 forecast: the window model with and without it.

    python examples/forecast_revin.py            # seeds 0, 1, 2
    python examples/forecast_revin.py --quick    # seed 0

The forecast recipe's `--preset co2 --model window` settings (its own training defaults, one
thread), once as the recipe builds the model and once wrapped in `RevINForecaster`. RevIN is
to be chosen on the validation part; the test figures are reported, not used to choose. One
JSON line per run, then the means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from typing import Any

import torch
from torch import nn

from rnnkit.layers.revin import RevINForecaster
from rnnkit.recipes.forecast import CO2, ForecastConfig, ForecastRecipe
from rnnkit.recipes.harness import RecipeData, run_recipe


class WithRevIN(ForecastRecipe):
    """The forecast recipe, its window model wrapped in reversible instance normalisation."""

    def build_model(self, config: ForecastConfig, data: RecipeData) -> nn.Module:
        return RevINForecaster(super().build_model(config, data), targets=len(config.target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[dict[str, Any]]] = {"window": [], "window + RevIN": []}
    for seed in [0] if args.quick else [0, 1, 2]:
        base = ForecastConfig(**CO2, model="window")  # type: ignore[arg-type]
        config = dataclasses.replace(
            base, train=dataclasses.replace(base.train, seed=seed, threads=1)
        )
        for name, recipe in (("window", ForecastRecipe()), ("window + RevIN", WithRevIN())):
            slug = name.replace(" + ", "-").lower()
            run = run_recipe(recipe, config, f"runs/forecast_revin/{slug}-{seed}", progress=False)
            row = {
                "model": name,
                "seed": seed,
                "validation_mae": round(run.figures["validation mae"], 3),
                "test_mae": round(run.figures["mae"], 3),
            }
            print(json.dumps(row), flush=True)
            results[name].append(row)
    for name, rows in results.items():
        summary = {
            "model": name,
            "mean_validation_mae": round(statistics.mean(r["validation_mae"] for r in rows), 3),
            "mean_test_mae": round(statistics.mean(r["test_mae"] for r in rows), 3),
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
