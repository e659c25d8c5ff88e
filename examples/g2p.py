"""Grapheme to phoneme on CMUdict: bi-LSTM encoder, LSTM decoder with attention, greedy decoding.

Splits the dictionary's words at random (seed 0) 90 / 5 / 5 by word (every pronunciation of a
word in one part), removes stress digits, trains ``G2PModel(hidden_size=128)`` (encoder 2 x 128,
decoder 256, Luong 'general' attention) through the ``g2p`` recipe and prints one JSON line
with the test phoneme and word error rates next to Yao & Zweig (2015): PER 5.45 %, WER 23.55 %
(their own split), then three words pronounced by the trained run.

By default the settings of docs/results.md's first row (``rnnkit g2p --preset published
--threads 1``): 2 epochs over the first 40,000 of the 112,504 training words, minibatches of
128 pronunciations, one thread; ``--max-train-words 0 --epochs 20`` is the second row.

    python examples/g2p.py --run-dir runs/g2p
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit.recipes.g2p import RECIPE, G2PConfig, pronounce
from rnnkit.recipes.harness import run_recipe
from rnnkit.recipes.options import TrainSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dictionary", type=Path, default=None, help="default: CMUdict")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "g2p")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--max-train-words", type=int, default=40_000, help="cap the training words (0: all)"
    )
    args = parser.parse_args()
    settings = TrainSettings(
        epochs=args.epochs,
        minibatch_size=128,
        learning_rate=0.003,
        clip_norm=5.0,
        patience=3,
        seed=0,
        threads=1,
    )
    config = G2PConfig(
        dictionary=args.dictionary, max_train_words=args.max_train_words or None, train=settings
    )
    result = run_recipe(RECIPE, config, args.run_dir)
    print(json.dumps({"task": "g2p", "split": "by word 0.9/0.05/0.05 seed 0", **result.figures}))
    words = ["rnnkit", "bahdanau", "pytorch"]
    print(json.dumps(dict(zip(words, pronounce(args.run_dir, words), strict=True))))


if __name__ == "__main__":
    main()
