"""Sequence classification on real data: UEA series, Fashion-MNIST rows, sentence sentiment.

Runs the experiments of ``docs/classify.md`` through the ``classify`` recipe
(:func:`rnnkit.recipes.harness.run_recipe`) with fixed seeds on one thread and prints one JSON
line per run (test accuracy next to the baselines, CPU seconds of the process):

    nice -n 10 python examples/classify.py                  # the published figures
    nice -n 10 python examples/classify.py --only uea       # GunPoint, ... (ts-rnn-published)
    nice -n 10 python examples/classify.py --only uea-all   # every set, the ts-rnn preset
    nice -n 10 python examples/classify.py --only uea-cv    # how the ts-rnn preset was chosen
    nice -n 10 python examples/classify.py --only fashion   # Fashion-MNIST (idx-published)
    nice -n 10 python examples/classify.py --only sentiment # Rotten Tomatoes (text)

Data: ``../shared/data/{uea,fashion-mnist,sentiment}`` beside the repository (``--data``).

``--only uea-cv`` reads the UEA training files only: it scores each of ``CANDIDATES`` by
stratified 5-fold cross-validation (fold seed 0, model seed 0, one model per fold) and prints
one JSON line per candidate and data set, then the mean over the four data sets. The
candidate with the highest mean (ties: the first in the list) is the ``ts-rnn`` preset (the
``ts`` default before the convolutional families, see ``examples/classify_uea.py``), which
``--only uea`` then trains on each whole training file (an ensemble of 5 seeds) and tests
once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rnnkit.recipes.classify import RECIPE, config_for, cross_validate
from rnnkit.recipes.harness import run_recipe

UEA = ("GunPoint", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels")
UNIVARIATE_ZNORMALISED = ("GunPoint", "ItalyPowerDemand")  # each series already mean 0, sd 1

# Fixed before any cross-validation was run: the whole training file trains (no validation
# part), 100 epochs, cosine schedule from 0.003, label smoothing 0.1, bidirectional GRU 64.
_COMMON: dict[str, Any] = {
    "validation": 0.0,
    "epochs": 100,
    "schedule": "cosine",
    "learning_rate": 0.003,
    "label_smoothing": 0.1,
    "conv_channels": (),
    "ensemble": 1,
}
CANDIDATES: dict[str, dict[str, Any]] = {
    "gru": _COMMON,
    "gru+series_norm": {**_COMMON, "series_norm": True},
    "conv+gru": {**_COMMON, "conv_channels": (64, 64, 64)},
    "conv+gru+series_norm": {**_COMMON, "conv_channels": (64, 64, 64), "series_norm": True},
}


def run(name: str, files: list[Path], runs: Path, preset: str | None = None) -> None:
    """One run of the recipe; prints its JSON line."""
    cpu, wall = time.process_time(), time.perf_counter()
    config = config_for(files, preset, threads=1)
    result = run_recipe(RECIPE, config, runs / name, progress=False, log=lambda _: None)
    line = {"run": name, "preset": preset or RECIPE.default_preset([str(f) for f in files])}
    line["test_accuracy"] = round(result.figures["test_accuracy"], 4)
    for baseline, values in result.figures["baselines"].items():
        line[baseline] = round(values["test_accuracy"], 4)
    line["epochs"] = result.figures["epochs"]
    line["cpu_seconds"] = round(time.process_time() - cpu, 1)
    line["wall_seconds"] = round(time.perf_counter() - wall, 1)
    print(json.dumps(line), flush=True)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    choices = ("uea", "uea-all", "uea-cv", "fashion", "sentiment")
    parser.add_argument("--only", choices=choices, default=None)
    parser.add_argument("--runs", type=Path, default=here / "runs" / "classify")
    args = parser.parse_args()
    uea = args.data / "uea"
    if args.only == "uea-cv":
        select(uea, args.runs / "cv")
        return
    if args.only == "uea-all":
        for folder in sorted(p for p in uea.iterdir() if p.is_dir()):
            n = folder.name
            files = [folder / f"{n}_TRAIN.ts", folder / f"{n}_TEST.ts"]
            run(n, files, args.runs / "default", "ts-rnn")
        return
    if args.only in (None, "uea"):
        for n in UEA:
            files = [uea / n / f"{n}_TRAIN.ts", uea / n / f"{n}_TEST.ts"]
            run(n, files, args.runs, "ts-rnn-published")
    if args.only in (None, "fashion"):
        folder = args.data / "fashion-mnist"
        names = ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
        files = [folder / f"{name}-ubyte.gz" for name in names]
        run("fashion-mnist", files, args.runs, "idx-published")
    if args.only in (None, "sentiment"):
        files = [args.data / "sentiment" / "rotten_tomatoes_corpus_full.csv.bz2"]
        run("sentiment", files, args.runs, "text")


def select(folder: Path, runs: Path) -> None:
    """Cross-validate every candidate on every UEA training file; print the means."""
    means: dict[str, list[float]] = {}
    done: dict[tuple[str, str], list[float]] = {}
    for label, changes in CANDIDATES.items():
        for name in UEA:
            if changes.get("series_norm") and name in UNIVARIATE_ZNORMALISED:
                # z-normalising a series that is already z-normalised changes nothing: the
                # scores are those of the same candidate without series_norm
                scores = done[(label.replace("+series_norm", ""), name)]
            else:
                cpu = time.process_time()
                config = config_for(
                    [folder / name / f"{name}_TRAIN.ts"], "ts-rnn", folds=5, threads=1, **changes
                )
                result = cross_validate(config, 5, runs / label / name)
                scores = result["cv_folds"]
                done[(label, name)] = scores
                line = {"candidate": label, "data": name, "folds": scores}
                line["cv_accuracy"] = result["cv_accuracy"]
                line["cpu_seconds"] = round(time.process_time() - cpu, 1)
                print(json.dumps(line), flush=True)
            means.setdefault(label, []).append(sum(scores) / len(scores))
    for label, values in means.items():
        print(json.dumps({"candidate": label, "mean_cv_accuracy": round(sum(values) / 4, 4)}))
    best = max(means, key=lambda k: sum(means[k]))  # the first of equals
    print(json.dumps({"chosen": best}), flush=True)


if __name__ == "__main__":
    main()
