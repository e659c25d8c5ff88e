"""Grapheme to phoneme on CMUdict: bi-LSTM encoder, LSTM decoder with attention, greedy decoding.

Splits the dictionary's words at random (seed 0) 90 / 5 / 5 by word (every pronunciation of a
word in one part), removes stress digits, trains ``G2PModel(hidden_size=128)`` (encoder 2 x 128,
decoder 256, Luong 'general' attention) and prints one JSON line with the test phoneme and word
error rates next to Yao & Zweig (2015): PER 5.45 %, WER 23.55 % (their own split).

Sized for one thread (``torch.set_num_threads(1)``): by default 2 epochs over the first 40,000
of the 112,504 training words (minibatches of 128 pronunciations), 16 minutes of wall time on a
heavily shared 2-core machine; ``--max-train-words 0`` trains on all of them.

    nice -n 10 python examples/g2p.py --run-dir runs/g2p
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rnnkit.tasks.seq2seq import G2PConfig, pronounce, train_g2p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictionary", type=Path, default=None, help="default: CMUdict")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "g2p")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--max-train-words", type=int, default=40_000, help="cap the training words (0: all)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = G2PConfig(
        epochs=args.epochs, minibatch_size=128, max_train_words=args.max_train_words or None, seed=0
    )
    result = train_g2p(config, args.dictionary, args.run_dir)
    print(
        json.dumps(
            {
                "task": "g2p",
                "data": "cmudict",
                "split": "by word 0.9/0.05/0.05 seed 0",
                **result.as_dict(),
                "seed": config.seed,
            }
        )
    )
    words = ["rnnkit", "bahdanau", "pytorch"]
    guesses = pronounce(args.run_dir, words)
    print(json.dumps({w: " ".join(g) for w, g in zip(words, guesses, strict=True)}))


if __name__ == "__main__":
    main()
