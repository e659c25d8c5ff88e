"""The convolutional series classifiers on every development set of ``../shared/data/uea``.

Three steps, in this order, each printing one JSON line per data set (CPU and wall seconds
beside the figures):

    python examples/classify_uea.py cv --candidate fcn --folds 2 --scale 0.25   # TRAIN files only
    python examples/classify_uea.py cv --candidate inception --folds 2 --scale 0.25
    python examples/classify_uea.py cv --candidate rocket --folds 2
    python examples/classify_uea.py table              # the ts default, trained and tested once
    python examples/classify_uea.py baselines          # 1-NN Euclidean and 1-NN DTW

``cv`` scores a candidate by stratified K-fold cross-validation (fold seed 0, model seed 0)
on each training file (:func:`rnnkit.recipes.classify.cross_validate`); no test file is
read. The candidates (``CANDIDATES``, fixed before the first fold ran) cost about the same
CPU time (each a budget of series steps in proportion to its speed); ``--scale`` multiplies
the budgets (0.25 and 2 folds: what the shared machine allowed, docs/classify.md). The one
with the highest mean accuracy over the 16 sets (ties: the first) is the ``ts`` preset.
``table`` trains the ``ts`` preset on each whole training file and tests it once;
``baselines`` computes the two 1-NN baselines on the official split (full-window DTW; PigCVP's
2,000-step series averaged in windows of 4 first). ``--sets`` runs some of the sets only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from rnnkit.recipes.classify import RECIPE, config_for, cross_validate
from rnnkit.recipes.harness import run_recipe

SETS = (
    "AllGestureWiimoteX",
    "BasicMotions",
    "CBF",
    "Car",
    "Chinatown",
    "Coffee",
    "DodgerLoopDay",
    "ECG200",
    "FiftyWords",
    "GunPoint",
    "ItalyPowerDemand",
    "JapaneseVowels",
    "Lightning7",
    "PickupGestureWiimoteZ",
    "PigCVP",
    "Trace",
)

# Fixed before the first fold ran. Equal cost: FCN processes about 23 us per series step
# (forward and backward, one thread), InceptionTime with kernels 20/10/5 about 56 us.
CANDIDATES: dict[str, dict[str, Any]] = {
    "fcn": {"model": "fcn", "train_steps": 1_000_000},
    "inception": {"model": "inception", "inception_kernel": 20, "train_steps": 400_000},
    # Added with rocket (no budget: fitted in closed form, seconds per set; docs/classify.md).
    "rocket": {"model": "rocket"},
    "rocket-series-norm": {"model": "rocket", "series_norm": True},
}

DTW_AVERAGE = {"PigCVP": 4}  # full-window DTW of 2,000 x 2,000 steps per pair is out of reach


def files(folder: Path, name: str) -> list[Path]:
    return [folder / name / f"{name}_{part}.ts" for part in ("TRAIN", "TEST")]


def cv(
    folder: Path, runs: Path, candidate: str, folds: int, scale: float, sets: tuple[str, ...]
) -> None:
    scores = []
    settings = dict(CANDIDATES[candidate])
    if "train_steps" in settings:
        settings["train_steps"] = round(settings["train_steps"] * scale)
    for name in sets:
        cpu, wall = time.process_time(), time.perf_counter()
        config = config_for(files(folder, name), "ts", threads=1, **settings)
        result = cross_validate(config, folds, runs / f"cv-{candidate}" / name)
        scores.append(result["cv_accuracy"])
        line = {"candidate": candidate, "set": name, **result}
        line |= {
            "cpu_s": round(time.process_time() - cpu),
            "wall_s": round(time.perf_counter() - wall),
        }
        print(json.dumps(line), flush=True)
    print(
        json.dumps(
            {"candidate": candidate, "mean_cv_accuracy": round(sum(scores) / len(scores), 4)}
        )
    )


def table(
    folder: Path, runs: Path, sets: tuple[str, ...], train_steps: int | None, preset: str
) -> None:
    changes = {"train_steps": train_steps} if train_steps else {}
    for name in sets:
        cpu, wall = time.process_time(), time.perf_counter()
        config = config_for(files(folder, name), preset, threads=1, **changes)
        result = run_recipe(
            RECIPE, config, runs / "table" / name, progress=False, log=lambda _: None
        )
        line = {"set": name, "test_accuracy": round(result.figures["test_accuracy"], 4)}
        line |= {
            "cpu_s": round(time.process_time() - cpu),
            "wall_s": round(time.perf_counter() - wall),
        }
        print(json.dumps(line), flush=True)


def averaged(examples: list[dict[str, Any]], factor: int) -> list[dict[str, Any]]:
    """The examples with their series averaged in windows of ``factor`` steps."""
    from rnnkit.layers.timeconv import Downsample
    from rnnkit.sequences import SequenceBatch

    x = Downsample(factor)(SequenceBatch.from_list([e["features"] for e in examples]))
    return [{**e, "features": s} for e, s in zip(examples, x.to_list(), strict=True)]


def baselines(folder: Path, sets: tuple[str, ...]) -> None:
    from rnnkit.data.classify import nearest_neighbour_accuracy, ts_data
    from rnnkit.data.nearest import nearest_neighbour_dtw_accuracy

    for name in sets:
        cpu, wall = time.process_time(), time.perf_counter()
        data = ts_data(*files(folder, name), validation=0.0)
        euclid = nearest_neighbour_accuracy(data.train, data.test)
        train, test = data.train, data.test
        factor = DTW_AVERAGE.get(name, 1)
        if factor > 1:
            train, test = averaged(train, factor), averaged(test, factor)
        dtw = nearest_neighbour_dtw_accuracy(train, test, block=1024)
        line = {"set": name, "1nn_euclidean": round(euclid, 4), "1nn_dtw": round(dtw, 4)}
        line |= {"dtw_average": factor, "cpu_s": round(time.process_time() - cpu)}
        line |= {"wall_s": round(time.perf_counter() - wall)}
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("cv", "table", "baselines"))
    parser.add_argument("--candidate", choices=tuple(CANDIDATES), default="fcn")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="cv: the candidates' budgets times this"
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/uea"))
    parser.add_argument("--runs", type=Path, default=Path("runs/classify-uea"))
    parser.add_argument(
        "--train-steps", type=int, default=None, help="table: instead of the preset's budget"
    )
    parser.add_argument(
        "--preset", default="ts", help="table: the preset (ts-fcn: the FCN default before ROCKET)"
    )
    parser.add_argument("--sets", nargs="+", choices=SETS, help="only these sets (default: all)")
    args = parser.parse_args()
    sets = tuple(args.sets or SETS)
    torch.set_num_threads(1)
    if args.step == "cv":
        cv(args.data, args.runs, args.candidate, args.folds, args.scale, sets)
    elif args.step == "table":
        table(args.data, args.runs, sets, args.train_steps, args.preset)
    else:
        baselines(args.data, sets)


if __name__ == "__main__":
    main()
