"""Character language model on the King James Bible, split by book, against xz.

Trains ``Embedding(63, 32) >> Recurrence(LSTMCell(32, 256)) >> Dense(256, 63)`` on every
book except the held-out ones (validation: Ruth, Joel, Galatians, 1 Peter; test: Ecclesiastes,
Mark, Romans), prints one JSON line with the test bits per character next to xz -9e on the same
text, then three samples (temperature 0.5, 0.8, 1.0) from the prompt "And God said".

Sized for one thread (``torch.set_num_threads(1)``): 5 epochs of 500,000 characters (2.5 M
characters, about 0.6 of a pass over the 3.9 M training characters); the recorded run took
22 minutes of wall time on a heavily shared 2-core machine (docs/results.md).

    nice -n 10 python examples/lm.py --run-dir runs/lm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rnnkit.tasks.lm import LMConfig, sample, train_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=None, help="verse file (default: KJV)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "lm")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = LMConfig(epochs=args.epochs, seed=0)
    result = train_lm(config, args.text, args.run_dir)
    print(
        json.dumps(
            {
                "task": "char-lm",
                "data": "kjv-verses.txt",
                "split": "by book",
                **result.as_dict(),
                "seed": config.seed,
            }
        )
    )
    for temperature in (0.5, 0.8, 1.0):
        text = sample(args.run_dir, "And God said", temperature=temperature, length=160)
        print(json.dumps({"temperature": temperature, "sample": text}))


if __name__ == "__main__":
    main()
