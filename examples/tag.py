"""Part-of-speech tagging of the Brown corpus with the BiLSTM tagger, split by documents.

Runs the full experiment of ``docs/tag.md`` (seed 0, one thread) and prints one JSON line:
test token accuracy next to the most-frequent-tag baseline on the same split, and the CPU
seconds of the process.

    nice -n 10 python examples/tag.py

Data: the 500 files ``ca01 .. cr09`` of ``../shared/data/brown`` (``--data``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from rnnkit.tasks.tag import TagConfig, read_documents, split_documents, tag


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "data" / "brown")
    parser.add_argument("--run-dir", type=Path, default=here / "runs" / "tag-brown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = time.process_time()
    files = sorted(p for p in args.data.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    documents = read_documents(files)
    kept, held, tested = split_documents(documents, seed=args.seed)
    split = (
        f"by documents: {len(files)} files shuffled (seed {args.seed}), "
        f"{len(kept)}/{len(held)}/{len(tested)}"
    )
    parts = tuple([s for _, doc in part for s in doc] for part in (kept, held, tested))
    result = tag(parts, TagConfig(seed=args.seed), args.run_dir, split=split)  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "run": "Brown POS",
                "split": split,
                **result.as_dict(),
                "cpu_seconds": round(time.process_time() - cpu, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
