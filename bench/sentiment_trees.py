"""Trees over real sentences for ``rnnkit tree``: the Rotten Tomatoes snippets of
``../shared/data/sentiment`` (``fresh`` / ``rotten``) as ``label TAB tree`` files, and a
multinomial naive Bayes on the same tokens as a bag-of-words reference.

The scheme (no treebank with gold parses is on these machines): lower-case; tokens are
``[a-z0-9']+`` or one other non-space character, parentheses written ``-lrb-`` / ``-rrb-``; a
balanced binary tree over the tokens (halving, the left half the larger), each token in a
preterminal ``(W token)``, internal nodes labelled ``X`` (neither is a class); the lines are
shuffled with ``random.Random(0)``, the first 80 % for training, the rest for the test.

    python bench/sentiment_trees.py OUT_DIR [CSV]
    rnnkit tree --train OUT_DIR/rt-train.tsv --test OUT_DIR/rt-test.tsv
"""

from __future__ import annotations

import bz2
import collections
import csv
import io
import math
import random
import re
import sys
from pathlib import Path

DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared/data/sentiment/rotten_tomatoes_corpus.csv.bz2"
)


def tokens(text: str) -> list[str]:
    found = re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())
    return [{"(": "-lrb-", ")": "-rrb-"}.get(t, t) for t in found]


def tree(words: list[str]) -> str:
    if len(words) == 1:
        return f"(W {words[0]})"
    k = (len(words) + 1) // 2
    return f"(X {tree(words[:k])} {tree(words[k:])})"


def naive_bayes(train: list[tuple[str, list[str]]], test: list[tuple[str, list[str]]]) -> float:
    """Test accuracy of multinomial naive Bayes with add-one smoothing."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    prior = collections.Counter(label for label, _ in train)
    for label, words in train:
        counts[label].update(words)
    vocab = set().union(*counts.values())

    def score(label: str, words: list[str]) -> float:
        total = sum(counts[label].values()) + len(vocab)
        known = [w for w in words if w in vocab]
        return math.log(prior[label]) + sum(math.log((counts[label][w] + 1) / total) for w in known)

    right = sum(max(counts, key=lambda c: score(c, words)) == label for label, words in test)
    return right / len(test)


def main(out: Path, source: Path) -> None:
    with bz2.open(source) as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    items = [(r["category"], tokens(r["text"])) for r in rows if r["category"] != "plot"]
    items = [(label, words) for label, words in items if words]
    random.Random(0).shuffle(items)
    n = int(0.8 * len(items))
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("rt-train.tsv", items[:n]), ("rt-test.tsv", items[n:])):
        lines = [f"{label}\t{tree(words)}\n" for label, words in part]
        (out / name).write_text("".join(lines), encoding="utf-8")
    accuracy = naive_bayes(items[:n], items[n:])
    print(f"{n} training and {len(items) - n} test trees in {out}")
    print(f"naive Bayes (add-one, same tokens): test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT)
