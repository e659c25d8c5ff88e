"""Sequence classification on real data: UEA series, Fashion-MNIST rows, sentence sentiment.

Runs the full experiments of ``docs/classify.md`` with fixed seeds on one thread and prints
one JSON line per run (test accuracy next to the baselines, CPU seconds of the process):

    nice -n 10 python examples/classify.py                 # everything
    nice -n 10 python examples/classify.py --only uea      # GunPoint, ItalyPowerDemand, ...
    nice -n 10 python examples/classify.py --only fashion  # Fashion-MNIST (the long one)
    nice -n 10 python examples/classify.py --only sentiment

Data: ``../shared/data/{uea,fashion-mnist,sentiment}`` beside the repository (``--data``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rnnkit.tasks.classify import ClassifyConfig, classify, idx_data, text_data, ts_data

UEA = ("GunPoint", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels")


def report(name: str, data_split: str, result: dict[str, object], cpu: float) -> None:
    print(
        json.dumps({"run": name, "split": data_split, **result, "cpu_seconds": round(cpu, 1)}),
        flush=True,
    )


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    parser.add_argument("--only", choices=("uea", "fashion", "sentiment"), default=None)
    parser.add_argument("--runs", type=Path, default=here / "runs" / "classify")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only in (None, "uea"):
        for name in UEA:
            cpu = time.process_time()
            folder = args.data / "uea" / name
            data = ts_data(folder / f"{name}_TRAIN.ts", folder / f"{name}_TEST.ts", seed=0)
            result = classify(
                data, ClassifyConfig.for_format("ts"), args.runs / name, progress=False
            )
            report(name, data.split, result.as_dict(), time.process_time() - cpu)
    if args.only in (None, "fashion"):
        cpu = time.process_time()
        folder = args.data / "fashion-mnist"
        data = idx_data(
            folder / "train-images-idx3-ubyte.gz",
            folder / "train-labels-idx1-ubyte.gz",
            folder / "t10k-images-idx3-ubyte.gz",
            folder / "t10k-labels-idx1-ubyte.gz",
        )
        result = classify(data, ClassifyConfig.for_format("idx"), args.runs / "fashion-mnist")
        report("Fashion-MNIST", data.split, result.as_dict(), time.process_time() - cpu)
    if args.only in (None, "sentiment"):
        cpu = time.process_time()
        data = text_data(args.data / "sentiment" / "rotten_tomatoes_corpus_full.csv.bz2", seed=0)
        result = classify(data, ClassifyConfig.for_format("text"), args.runs / "sentiment")
        report("Rotten Tomatoes", data.split, result.as_dict(), time.process_time() - cpu)


if __name__ == "__main__":
    main()
