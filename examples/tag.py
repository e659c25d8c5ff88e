"""Part-of-speech tagging of the Brown corpus with the BiLSTM tagger, split by documents.

Runs the full experiment of ``docs/tag.md`` (the preset ``brown``: the defaults but 4 epochs;
seed 0, one thread) through :func:`rnnkit.recipes.harness.run_recipe` and prints one JSON
line: test token accuracy next to the most-frequent-tag baseline on the same split, and the
CPU seconds of the process.

    nice -n 10 python examples/tag.py

The same run: ``rnnkit tag ../shared/data/brown/c[a-r][0-9][0-9] --preset brown``.
Data: the 500 files ``ca01 .. cr09`` of ``../shared/data/brown`` (``--data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.tag import RECIPE, TagConfig


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "brown")
    parser.add_argument("--run-dir", type=Path, default=here / "runs" / "tag-brown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cpu = time.process_time()
    files = sorted(p for p in args.data.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    defaults = TagConfig.__dataclass_fields__["train"].default
    assert isinstance(defaults, TrainSettings)
    train = dataclasses.replace(defaults, seed=args.seed, threads=1, **RECIPE.presets["brown"])
    config = TagConfig(files=tuple(files), train=train)
    result = run_recipe(RECIPE, config, args.run_dir, progress=False)
    line = {
        "run": "Brown POS",
        **result.figures,
        "split": result.data.info["split"],
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
