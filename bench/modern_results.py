"""Results on the same budget (issue 20, item 5): LSTM, GRU and minGRU against LRU, Hawk
(RG-LRU), Mamba, GLA, mLSTM and DeltaNet on four tasks.

Every model trains on the same budget: at most ``--updates`` Adam updates and at most
``--budget-seconds`` of training wall-clock time, whichever ends first, on 1 thread
(``--threads``), at about the same parameter count (``--params``: each model's width is the
one whose count comes closest). The classic cells run through ``Recurrence`` (two layers, a
linear head); the modern ones are two of their paper's residual blocks, built in one line
(``rnnkit.modern.stack``, every kind). Validation is scored half-way through the budget and at
its end; the test figures are those of the state that scored best on validation (validation
and test time is not counted in the budget).

Tasks:

* ``selective_copy``: Gu & Dao (2023)'s selective copying, 16 tokens of a vocabulary of 16
  among ``--copy-length`` steps of noise, then 16 markers (the paper: 4,096 steps); accuracy
  on the copied tokens. Fresh training data at every update, fixed validation and test sets.
* ``listops``: the Long Range Arena form of ListOps (``ListOpsConfig.long_range_arena()``:
  depth 10, up to 10 arguments, 500-2,000 tokens), accuracy of the 10 classes; outputs
  averaged over time before the softmax (``--readout last``: the last step's outputs).
  ``--listops-curriculum 20-100:30000,100-500:20000`` trains first on shorter expressions
  of the same generator (depth 10, up to 10 arguments), each stage and then the LRA-length
  training part for an equal share of the budget; validation and test stay LRA-length.
* ``fashion_mnist``: Fashion-MNIST read one pixel a step (784 steps), accuracy; the last
  5,000 training images are the validation set.
* ``lm``: bits per character on ``hamlet.txt`` split 90/5/5 % as ``rnnkit lm`` splits it
  (at paragraph or line starts), the held-out parts scored as 16 contiguous streams from a
  fresh state (every character predicted once, unknown characters spelled as ``rnnkit lm``
  spells them).

Each run's figures (with its test predictions, so they can be checked) are cached as JSON in
``--cache-dir`` (``bench/results/modern/``); a rerun with the same settings reads the cache
unless ``--force``. The script prints two markdown tables: one row per task and model, and
models against tasks (``test figure (updates)``).

    .venv/bin/python bench/modern_results.py                     # every task and model
    .venv/bin/python bench/modern_results.py --tasks listops --models lstm,hawk
    .venv/bin/python bench/modern_results.py --quick --cache-dir /tmp/q   # what a test runs
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import Recurrence, SequenceBatch
from rnnkit.cells import GRUCell, LSTMCell, MinGRUCell
from rnnkit.data.idx import read_idx
from rnnkit.data.listops import (
    LISTOPS_VOCAB,
    NUM_CLASSES,
    ListOpsConfig,
    ListOpsExample,
    generate_listops,
    listops_token_ids,
    read_listops_tsv,
    write_listops_tsv,
)
from rnnkit.data.plaintext import Corpus, read_plain_text, split_fractions, unknown_bits
from rnnkit.data.synthetic import selective_copy, selective_copy_baseline
from rnnkit.data.text import TextVocabulary
from rnnkit.data.verses import text_streams
from rnnkit.lazy import count_parameters
from rnnkit.modern import stack
from rnnkit.modern.matrix_blocks import MATRIX_BUILDERS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench" / "results" / "modern"
TASKS = ("selective_copy", "listops", "fashion_mnist", "lm")
CLASSIC = {"lstm": LSTMCell, "gru": GRUCell, "mingru": MinGRUCell}
MODERN = {"lru": "lru", "hawk": "hawk", "mamba": "mamba", "gla": "gla", "mlstm": "mlstm"}
MODERN["deltanet"] = "deltanet"
MODELS = (*CLASSIC, *MODERN)
PUBLISHED = {
    "selective_copy": "S4 18.3 %, Mamba (S6) 99.8 % (Gu & Dao 2023, Table 1; 4,096 steps)",
    "listops": "Transformer 36.37, S4 59.60, S5 62.15, LRU 60.2 % (LRA test set)",
    "fashion_mnist": "none in issue 20 for pixel-by-pixel Fashion-MNIST",
    "lm": "none in issue 20 for hamlet.txt; `rnnkit lm` reports xz/bzip2/gzip on the same text",
}


@dataclass(frozen=True)
class Settings:
    """What a run depends on; a cached run is reused only when its settings are equal."""

    params: int = 30_000
    layers: int = 2
    updates: int = 2_000
    budget_seconds: float = 40.0
    threads: int = 1
    rate: float = 2e-3
    clip: float = 1.0
    seed: int = 0
    copy_length: int = 256
    listops_min_length: int = 500
    listops_max_length: int = 2_000
    listops_train: int = 1_200
    listops_curriculum: str = ""
    readout: str = "mean"
    schedule: str = "constant"
    validations: int = 2
    quick: bool = False

    def suffix(self, task: str) -> str:
        """What a cache file's name adds after the task: ``-quick``, or what a variant
        changes (``-L64``: selective copy over 64 steps; ``-100-400``: ListOps of 100-400
        tokens; ``-train12000``: ListOps with 12,000 training expressions; ``-c20-100x30000``:
        ListOps trained first on a curriculum stage of 30,000 expressions of 20-100 tokens;
        ``-last``: classification from the last step's logits; ``-cosine``: the learning
        rate's schedule; ``-l1``: one layer;
        ``-p120000``: models of about 120,000 parameters; ``-b1500s``: a budget of 1,500 s;
        ``-v10``: 10 validations)."""
        if self.quick:
            return "-quick"
        out = ""
        if task == "selective_copy" and self.copy_length != Settings.copy_length:
            out += f"-L{self.copy_length}"
        lengths = (self.listops_min_length, self.listops_max_length)
        if task == "listops" and lengths != (
            Settings.listops_min_length,
            Settings.listops_max_length,
        ):
            out += f"-{lengths[0]}-{lengths[1]}"
        if task == "listops" and self.listops_train != Settings.listops_train:
            out += f"-train{self.listops_train}"
        if task == "listops":
            out += "".join(f"-c{low}-{high}x{n}" for low, high, n in self.stages())
        if task in ("listops", "fashion_mnist") and self.readout != Settings.readout:
            out += f"-{self.readout}"
        if self.schedule != Settings.schedule:
            out += f"-{self.schedule}"
        if self.layers != Settings.layers:
            out += f"-l{self.layers}"
        if self.params != Settings.params:
            out += f"-p{self.params}"
        if self.budget_seconds != Settings.budget_seconds:
            out += f"-b{self.budget_seconds:g}s"
        if self.validations != Settings.validations:
            out += f"-v{self.validations}"
        return out

    def stages(self) -> list[tuple[int, int, int]]:
        """The ListOps curriculum ``MIN-MAX:COUNT,...`` as ``(MIN, MAX, COUNT)`` stages."""
        return parse_curriculum(self.listops_curriculum)


def parse_curriculum(text: str) -> list[tuple[int, int, int]]:
    """``"20-100:30000,100-500:20000"`` -> ``[(20, 100, 30000), (100, 500, 20000)]``."""
    stages = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            lengths, count = part.split(":")
            low, high = (int(v) for v in lengths.split("-"))
            stage = (low, high, int(count))
        except ValueError:
            raise SystemExit(
                f"--listops-curriculum: expected stages MIN-MAX:COUNT separated by commas, "
                f"found {part!r}"
            ) from None
        if not 1 <= low <= high or stage[2] < 1:
            raise SystemExit(
                f"--listops-curriculum: expected 1 <= MIN <= MAX and COUNT >= 1, found {part!r}"
            )
        stages.append(stage)
    return stages


# ---------------------------------------------------------------------------- models


class ClassicStack(nn.Module):
    """``layers`` ``Recurrence(cell)`` of width ``width`` (the first from ``input_size``),
    then ``nn.Linear(width, output_size)`` at every step."""

    def __init__(
        self, kind: str, width: int, layers: int, input_size: int, output_size: int
    ) -> None:
        super().__init__()
        cells = [CLASSIC[kind](input_size if i == 0 else width, width) for i in range(layers)]
        self.layers = nn.ModuleList(Recurrence(c) for c in cells)
        self.head = nn.Linear(width, output_size)

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        for layer in self.layers:
            x = layer(x)
        return x.map(self.head)


class Net(nn.Module):
    """Token ids (``vocab`` > 0: an ``nn.Embedding`` of the body's width) or features
    ``[N, F]`` in, per-step logits ``[N, O]`` out (a SequenceBatch)."""

    def __init__(self, body: nn.Module, embed: nn.Embedding | None) -> None:
        super().__init__()
        self.embed = embed
        self.body = body

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        if self.embed is not None:
            x = x.map(self.embed)
        out: SequenceBatch = self.body(x)
        return out


def build(model: str, width: int, layers: int, vocab: int, features: int, out: int) -> Net:
    """``model`` of ``width`` on ids of ``vocab`` tokens (``vocab > 0``) or ``features``."""
    embed = nn.Embedding(vocab, width) if vocab else None
    size = width if vocab else features
    if model in CLASSIC:
        return Net(ClassicStack(model, width, layers, size, out), embed)
    kind = MODERN[model]
    given = None if vocab else features
    return Net(stack(kind, d_model=width, layers=layers, input_size=given, output_size=out), embed)


def sized(model: str, target: int, layers: int, vocab: int, features: int, out: int) -> Net:
    """The model whose parameter count is closest to ``target`` over widths up to 256: even
    widths for the classic cells, multiples of 4 for LRU, Hawk and Mamba, of 8 for the matrix
    kinds (whose 4 heads split keys of half the width)."""
    step = 2 if model in CLASSIC else 8 if MODERN[model] in MATRIX_BUILDERS else 4
    best: tuple[int, int] | None = None
    for width in range(8, 257, step):
        torch.manual_seed(0)
        count = count_parameters(build(model, width, layers, vocab, features, out))
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (width, count)
        if count > target:
            break
    assert best is not None
    return build(model, best[0], layers, vocab, features, out)


def model_width(net: Net) -> int:
    body = net.body
    if isinstance(body, ClassicStack):
        return body.head.in_features
    width = body.d_model
    assert isinstance(width, int)
    return width


# ---------------------------------------------------------------------------- tasks


Batch = tuple[SequenceBatch, Tensor]


@dataclass
class Task:
    """A task: its inputs (``vocab`` ids or ``features``), ``classes`` outputs, a training
    batch for update ``k`` once a fraction ``progress`` of the budget is spent, and
    ``evaluate(net, split) -> (figures, predictions)``."""

    name: str
    metric: str
    higher_is_better: bool
    vocab: int
    features: int
    classes: int
    train_batch: Callable[[int, float], Batch]
    evaluate: Callable[[Net, str], tuple[dict[str, float], dict[str, Any]]]
    loss: Callable[[Net, Batch], Tensor]
    description: str
    baseline: dict[str, float]


def pooled_logits(net: Net, x: SequenceBatch, readout: str = "mean") -> Tensor:
    """``[B, O]``: each sequence's per-step logits averaged over its own steps
    (``readout="mean"``), or those of its last step (``"last"``)."""
    out = net(x)
    if readout == "last":
        return out.last()
    padded, lengths = out.to_padded()
    return padded.sum(dim=1) / lengths.to(padded.dtype).unsqueeze(1)


def classify_batches(
    net: Net, inputs: Sequence[Tensor], labels: Tensor, batch: int, readout: str = "mean"
) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy (percent) of the pooled-logit classifier over ``inputs`` in batches."""
    predictions = []
    with torch.no_grad():
        for a in range(0, len(inputs), batch):
            chosen = SequenceBatch.from_list(list(inputs[a : a + batch]))
            logits = pooled_logits(net, chosen, readout)
            predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = 100.0 * float((predicted == labels).double().mean())
    return {"accuracy": accuracy}, {"predicted": predicted.tolist(), "labels": labels.tolist()}


def selective_copy_task(settings: Settings) -> Task:
    num_copy, vocab = (4, 6) if settings.quick else (16, 16)
    length = 12 if settings.quick else settings.copy_length
    batch = 8 if settings.quick else 32
    sizes = {"validation": 32, "test": 64} if settings.quick else {"validation": 256, "test": 512}
    held = {
        split: selective_copy(n, length, num_copy, vocab, seed=s)
        for (split, n), s in zip(sizes.items(), (1, 2), strict=True)
    }

    def train_batch(k: int, progress: float) -> Batch:
        x, y = selective_copy(batch, length, num_copy, vocab, seed=1_000 + settings.seed + k)
        return SequenceBatch.from_padded(x, [x.shape[1]] * batch), y[:, -num_copy:]

    def copied_logits(net: Net, x: SequenceBatch) -> Tensor:
        padded, _ = net(x).to_padded()
        return padded[:, -num_copy:]

    def loss(net: Net, b: Batch) -> Tensor:
        logits = copied_logits(net, b[0])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[1].reshape(-1))

    def evaluate(net: Net, split: str) -> tuple[dict[str, float], dict[str, Any]]:
        x, y = held[split]
        predicted = []
        with torch.no_grad():
            for a in range(0, x.shape[0], 64):
                xb = x[a : a + 64]
                sb = SequenceBatch.from_padded(xb, [xb.shape[1]] * xb.shape[0])
                predicted.append(copied_logits(net, sb).argmax(dim=-1))
        guess = torch.cat(predicted)
        target = y[:, -num_copy:]
        accuracy = 100.0 * float((guess == target).double().mean())
        return {"accuracy": accuracy}, {"predicted": guess.tolist(), "labels": target.tolist()}

    return Task(
        "selective_copy",
        "accuracy %",
        True,
        vocab,
        0,
        vocab,
        train_batch,
        evaluate,
        loss,
        f"{num_copy} tokens of a vocabulary of {vocab} among {length} steps, then "
        f"{num_copy} markers ({length + num_copy} steps); fresh training batches of {batch}; "
        f"validation {sizes['validation']}, test {sizes['test']} sequences",
        {"chance accuracy %": 100.0 * selective_copy_baseline(vocab)},
    )


def listops_data(settings: Settings, cache: Path) -> dict[str, list[ListOpsExample]]:
    """The ListOps examples, generated once (distinct across splits) and kept as TSV files in
    ``cache/data/`` (generating a 500-2,000-token expression takes about 20 ms). With
    ``listops_train`` above 1,200 the validation and test parts stay those of 1,200, and the
    training part adds expressions drawn from the next seed, none of them also in those
    parts."""
    config = listops_config(settings)
    if settings.quick:
        sizes = {"train": 96, "validation": 24, "test": 32}
    else:
        sizes = {"train": 1_200, "validation": 100, "test": 400}
    extra = 0 if settings.quick else max(0, settings.listops_train - sizes["train"])
    low, high = config.min_length, config.max_length
    standard = (low, high) == (Settings.listops_min_length, Settings.listops_max_length)
    tag = "quick" if settings.quick else "lra" + ("" if standard else f"-{low}-{high}")
    tag += f"-train{settings.listops_train}" if extra else ""
    paths = {split: cache / "data" / f"listops-{tag}-{split}.tsv" for split in sizes}
    if all(p.is_file() for p in paths.values()):
        return {split: read_listops_tsv(p) for split, p in paths.items()}
    examples = generate_listops(sum(sizes.values()), config, seed=settings.seed)
    parts, start = {}, 0
    for split, n in sizes.items():
        parts[split] = examples[start : start + n]
        start += n
    if extra:
        taken = {e.sequence for ex in parts.values() for e in ex}
        added: list[ListOpsExample] = []
        seed = settings.seed + 1
        while len(added) < extra:
            for e in generate_listops(extra - len(added), config, seed=seed):
                if e.sequence not in taken:
                    taken.add(e.sequence)
                    added.append(e)
            seed += 1
        parts["train"] = parts["train"] + added
    (cache / "data").mkdir(parents=True, exist_ok=True)
    for split, p in paths.items():
        write_listops_tsv(p, parts[split])
    return parts


def listops_config(settings: Settings) -> ListOpsConfig:
    """The generator's depth and arguments: LRA's (10, 10), or (3, 4) for ``--quick``."""
    if settings.quick:
        return ListOpsConfig(max_depth=3, max_args=4, min_length=5, max_length=40)
    lra = ListOpsConfig.long_range_arena()
    return ListOpsConfig(
        max_depth=lra.max_depth,
        max_args=lra.max_args,
        min_length=settings.listops_min_length,
        max_length=settings.listops_max_length,
    )


def curriculum_data(
    settings: Settings, cache: Path, held_out: Sequence[ListOpsExample]
) -> list[list[ListOpsExample]]:
    """The training expressions of each curriculum stage: the generator's depth and arguments
    (those of the task), the stage's lengths, seed ``seed + 100 + i`` for stage ``i``, none of
    them in ``held_out``; cached as TSV files in ``cache/data/``."""
    base = listops_config(settings)
    taken = {e.sequence for e in held_out}
    stages = []
    for i, (low, high, count) in enumerate(settings.stages()):
        seed = settings.seed + 100 + i
        path = cache / "data" / f"listops-curriculum-{low}-{high}-n{count}-seed{seed}.tsv"
        if path.is_file():
            stages.append(read_listops_tsv(path))
            continue
        config = ListOpsConfig(
            max_depth=base.max_depth, max_args=base.max_args, min_length=low, max_length=high
        )
        found = [e for e in generate_listops(count, config, seed=seed) if e.sequence not in taken]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_listops_tsv(path, found)
        stages.append(found)
    return stages


def encoded(examples: Sequence[ListOpsExample]) -> tuple[list[Tensor], Tensor]:
    """The examples' token ids and their labels ``[N]``."""
    return [listops_token_ids(e.sequence) for e in examples], torch.tensor(
        [e.label for e in examples]
    )


def listops_task(settings: Settings, cache: Path) -> Task:
    data = listops_data(settings, cache)
    parts = {split: encoded(ex) for split, ex in data.items()}
    ids = {split: part[0] for split, part in parts.items()}
    labels = {split: part[1] for split, part in parts.items()}
    stages = curriculum_data(settings, cache, data["validation"] + data["test"])
    pools = [*(encoded(ex) for ex in stages), parts["train"]]
    batch = 4 if settings.quick else 16
    rng = random.Random(settings.seed)
    orders: list[list[int]] = [[] for _ in pools]

    def train_batch(k: int, progress: float) -> Batch:
        """From stage ``i`` of the ``S`` pools (the curriculum's, then the training part)
        while ``i / S <= progress < (i + 1) / S``."""
        stage = min(int(progress * len(pools)), len(pools) - 1)
        inputs, targets = pools[stage]
        order = orders[stage]
        while len(order) < batch:
            more = list(range(len(inputs)))
            rng.shuffle(more)
            order.extend(more)
        chosen = [order.pop() for _ in range(batch)]
        return SequenceBatch.from_list([inputs[i] for i in chosen]), targets[chosen]

    def loss(net: Net, b: Batch) -> Tensor:
        return F.cross_entropy(pooled_logits(net, b[0], settings.readout), b[1])

    def evaluate(net: Net, split: str) -> tuple[dict[str, float], dict[str, Any]]:
        return classify_batches(net, ids[split], labels[split], 16, settings.readout)

    lengths = [len(t) for t in ids["train"]]
    counts = torch.bincount(labels["train"], minlength=NUM_CLASSES)
    majority = int(counts.argmax())
    return Task(
        "listops",
        "accuracy %",
        True,
        len(LISTOPS_VOCAB),
        0,
        NUM_CLASSES,
        train_batch,
        evaluate,
        loss,
        f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
        f"train {len(ids['train'])}, validation {len(ids['validation'])}, test "
        f"{len(ids['test'])} expressions; batches of {batch}"
        + (
            f"; before them, for 1/{len(pools)} of the budget each, a curriculum of "
            + ", then ".join(
                f"{len(ex)} expressions of {low}-{high} tokens"
                for (low, high, _), ex in zip(settings.stages(), stages, strict=True)
            )
            if stages
            else ""
        ),
        {
            "majority class (train) test accuracy %": 100.0
            * float((labels["test"] == majority).double().mean())
        },
    )


def fashion_task(settings: Settings) -> Task:
    root = SHARED / "fashion-mnist"
    images = read_idx(root / "train-images-idx3-ubyte.gz")
    labels = torch.from_numpy(read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    test_labels = torch.from_numpy(read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    side = 8 if settings.quick else 28

    def pixels(a: np.ndarray) -> Tensor:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
        if side != 28:
            x = F.interpolate(x.unsqueeze(1), size=(side, side), mode="area").squeeze(1)
        return x.reshape(x.shape[0], side * side, 1)

    held_out = 5_000
    n_val, n_test = (32, 64) if settings.quick else (300, 1_000)
    train_x, train_y = images[:-held_out], labels[:-held_out]
    val_x, val_y = pixels(images[-held_out:][:n_val]), labels[-held_out:][:n_val]
    test_x, test_y = pixels(test_images[:n_test]), test_labels[:n_test]
    batch = 8 if settings.quick else 32
    g = torch.Generator().manual_seed(settings.seed)

    def train_batch(k: int, progress: float) -> Batch:
        chosen = torch.randint(0, train_x.shape[0], (batch,), generator=g)
        x = pixels(train_x[chosen.numpy()])
        return SequenceBatch.from_padded(x, [x.shape[1]] * batch), train_y[chosen]

    def loss(net: Net, b: Batch) -> Tensor:
        return F.cross_entropy(pooled_logits(net, b[0], settings.readout), b[1])

    def evaluate(net: Net, split: str) -> tuple[dict[str, float], dict[str, Any]]:
        x, y = (val_x, val_y) if split == "validation" else (test_x, test_y)
        return classify_batches(net, list(x), y, 100, settings.readout)

    return Task(
        "fashion_mnist",
        "accuracy %",
        True,
        0,
        1,
        10,
        train_batch,
        evaluate,
        loss,
        f"{side}x{side} pixels, one a step ({side * side} steps); batches of {batch} from "
        f"{train_x.shape[0]:,} training images; validation {n_val} of the last {held_out:,} "
        f"training images, test the first {n_test:,} of the 10,000 test images",
        {"chance accuracy %": 10.0},
    )


def lm_task(settings: Settings) -> Task:
    path = SHARED / "text" / "hamlet.txt"
    text = read_plain_text(path)
    if settings.quick:
        text = text[:6_000]
    corpus = Corpus.from_texts([(str(path), text)])
    train, validation, test = split_fractions(corpus, (0.9, 0.05, 0.05)).parts
    vocab = TextVocabulary.characters(train)
    known = set(vocab.vocabulary.tokens)
    if any(c not in known for part in (validation, test) for c in part):
        vocab = TextVocabulary.characters(train, unk="<unk>")
    start = vocab.vocabulary.id("\n")
    train_ids = vocab.encode(train)
    outside = math.log2(0x110000 - len(vocab))
    held = {}
    for split, part in (("validation", validation), ("test", test)):
        ids = vocab.encode(part)
        unk = vocab.vocabulary.unk_id
        spell = 0.0
        if unk is not None:
            unknown = [c for c, i in zip(part, ids.tolist(), strict=True) if i == unk]
            spell = sum(unknown_bits(unknown, lambda _: outside))
        held[split] = (text_streams(ids, start), spell, len(part))
    window, batch = (16, 4) if settings.quick else (128, 32)
    g = torch.Generator().manual_seed(settings.seed)

    def train_batch(k: int, progress: float) -> Batch:
        starts = torch.randint(0, len(train_ids) - window - 1, (batch,), generator=g)
        x = torch.stack([train_ids[s : s + window] for s in starts.tolist()])
        y = torch.stack([train_ids[s + 1 : s + window + 1] for s in starts.tolist()])
        return SequenceBatch.from_padded(x, [window] * batch), y

    def loss(net: Net, b: Batch) -> Tensor:
        padded, _ = net(b[0]).to_padded()
        return F.cross_entropy(padded.reshape(-1, padded.shape[-1]), b[1].reshape(-1))

    def evaluate(net: Net, split: str) -> tuple[dict[str, float], dict[str, Any]]:
        streams, spell, chars = held[split]
        x = SequenceBatch.from_list([s["input"] for s in streams])
        with torch.no_grad():
            logits = net(x).data.double()
        target = SequenceBatch.from_list([s["target"] for s in streams]).data
        nats = F.cross_entropy(logits, target, reduction="none")
        per_stream = [float(n.sum()) for n in x.with_data(nats).to_list()]
        bits = sum(per_stream) / math.log(2) + spell
        figures = {"bpc": bits / chars}
        return figures, {"stream_nats": per_stream, "spell_bits": spell, "characters": chars}

    return Task(
        "lm",
        "bits per character",
        False,
        len(vocab),
        0,
        len(vocab),
        train_batch,
        evaluate,
        loss,
        f"hamlet.txt split 90/5/5 %: training {len(train):,}, validation {len(validation):,}, "
        f"test {len(test):,} characters; {len(vocab)} characters in the vocabulary; windows of "
        f"{window}, batches of {batch}; held-out parts as 16 streams from a fresh state",
        {"uniform bpc": math.log2(len(vocab))},
    )


def make_task(name: str, settings: Settings, cache: Path) -> Task:
    if name == "selective_copy":
        return selective_copy_task(settings)
    if name == "listops":
        return listops_task(settings, cache)
    if name == "fashion_mnist":
        return fashion_task(settings)
    return lm_task(settings)


# ---------------------------------------------------------------------------- training


def learning_rate(settings: Settings, progress: float) -> float:
    """Adam's rate once a fraction ``progress`` of the budget is spent: ``rate`` throughout
    (``schedule="constant"``), or decayed from ``rate`` to 0 along half a cosine
    (``"cosine"``)."""
    if settings.schedule == "cosine":
        return settings.rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return settings.rate


def train_and_test(task: Task, model: str, settings: Settings) -> dict[str, Any]:
    """Train ``model`` on ``task`` within the budget; the test figures of the best validated
    state."""
    torch.manual_seed(settings.seed)
    target = 2_000 if settings.quick else settings.params
    net = sized(model, target, settings.layers, task.vocab, task.features, task.classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.rate)
    n = settings.validations
    checks = [settings.budget_seconds * i / n for i in range(1, n)]
    sign = 1.0 if task.higher_is_better else -1.0
    best: tuple[float, dict[str, Tensor], int] | None = None
    history, train_seconds, eval_seconds, updates, losses = [], 0.0, 0.0, 0, []
    load_start = list(os.getloadavg())

    def validate() -> None:
        nonlocal best, eval_seconds
        began = time.perf_counter()
        net.eval()
        figures, _ = task.evaluate(net, "validation")
        net.train()
        eval_seconds += time.perf_counter() - began
        value = next(iter(figures.values()))
        history.append({"updates": updates, "train_seconds": train_seconds, **figures})
        if best is None or sign * value > sign * best[0]:
            best = (value, copy.deepcopy(net.state_dict()), updates)

    net.train()
    while updates < settings.updates and train_seconds < settings.budget_seconds:
        spent = max(updates / settings.updates, train_seconds / settings.budget_seconds)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, spent)
        batch = task.train_batch(updates, spent)
        began = time.perf_counter()
        loss = task.loss(net, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), settings.clip)
        optimizer.step()
        train_seconds += time.perf_counter() - began
        updates += 1
        losses.append(float(loss.detach()))
        if checks and train_seconds >= checks[0]:
            checks = [c for c in checks if c > train_seconds]
            validate()
    validate()
    assert best is not None
    net.load_state_dict(best[1])
    net.eval()
    began = time.perf_counter()
    test, predictions = task.evaluate(net, "test")
    test_seconds = time.perf_counter() - began
    return {
        "task": task.name,
        "variant": "" if settings.quick else settings.suffix(task.name),
        "model": model,
        "settings": asdict(settings),
        "description": task.description,
        "metric": task.metric,
        "parameters": count_parameters(net),
        "width": model_width(net),
        "updates": updates,
        "train_seconds": round(train_seconds, 2),
        "validation_seconds": round(eval_seconds, 2),
        "test_seconds": round(test_seconds, 2),
        "chosen_at_update": best[2],
        "validation_history": history,
        "final_train_loss": float(np.mean(losses[-20:])),
        "test": test,
        "predictions": predictions,
        "baseline": task.baseline,
        "published": PUBLISHED[task.name],
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------- table


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| task | model | test | parameters | updates | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        value = next(iter(r["test"].values()))
        shown = f"{value:.3f}" if r["task"] == "lm" else f"{value:.1f} %"
        lines.append(
            f"| {r['task']}{r['variant']} | {r['model']} | {shown} | {r['parameters']:,} | "
            f"{r['updates']} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def matrix(results: Sequence[dict[str, Any]]) -> str:
    """Models as rows, tasks as columns: ``test metric (updates)``; parameters per model."""
    tasks = list(dict.fromkeys(r["task"] + r["variant"] for r in results))
    models = list(dict.fromkeys(r["model"] for r in results))
    found = {(r["task"] + r["variant"], r["model"]): r for r in results}
    heads = [f"{t} ({'bpc' if t == 'lm' else 'accuracy %'})" for t in tasks]
    lines = ["| model | parameters | " + " | ".join(heads) + " |", "|---" * (len(tasks) + 2) + "|"]
    for model in models:
        counts = [found[t, model]["parameters"] for t in tasks if (t, model) in found]
        cells = []
        for t in tasks:
            r = found.get((t, model))
            if r is None:
                cells.append("")
                continue
            value = next(iter(r["test"].values()))
            cells.append(
                f"{value:.3f} ({r['updates']})" if t == "lm" else f"{value:.1f} ({r['updates']})"
            )
        shown = (
            f"{min(counts):,}-{max(counts):,}" if min(counts) != max(counts) else f"{counts[0]:,}"
        )
        lines.append(f"| {model} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def names(text: str, allowed: Sequence[str], what: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in chosen if n not in allowed]
    if wrong or not chosen:
        raise SystemExit(f"--{what}: expected names from {', '.join(allowed)}, found {text!r}")
    return chosen


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budget-seconds", type=float, default=Settings.budget_seconds)
    parser.add_argument("--updates", type=int, default=Settings.updates)
    parser.add_argument("--params", type=int, default=Settings.params)
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument(
        "--copy-length", type=int, default=Settings.copy_length, help="selective copy: steps"
    )
    parser.add_argument(
        "--listops-lengths",
        default=f"{Settings.listops_min_length},{Settings.listops_max_length}",
        help="ListOps: shortest and longest expression in tokens (LRA: 500,2000)",
    )
    parser.add_argument(
        "--listops-train",
        type=int,
        default=Settings.listops_train,
        help="ListOps: training expressions (above 1,200: the same validation and test parts)",
    )
    parser.add_argument(
        "--listops-curriculum",
        default=Settings.listops_curriculum,
        help="ListOps: stages MIN-MAX:COUNT of shorter expressions trained on first, each "
        "for an equal share of the budget (e.g. 20-100:30000,100-500:20000)",
    )
    parser.add_argument(
        "--readout",
        choices=("mean", "last"),
        default=Settings.readout,
        help="ListOps and Fashion-MNIST: classify from the per-step logits averaged over "
        "the sequence, or from the last step's",
    )
    parser.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        default=Settings.schedule,
        help="Adam's learning rate: constant, or decayed to 0 along half a cosine over the "
        "budget (its time or its updates, whichever is spent faster)",
    )
    parser.add_argument("--layers", type=int, default=Settings.layers, help="layers per model")
    parser.add_argument(
        "--validations",
        type=int,
        default=Settings.validations,
        help="validation scores over the budget (at its i/N for i = 1..N)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few updates")
    parser.add_argument("--force", action="store_true", help="rerun cached runs")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    tasks = names(args.tasks, TASKS, "tasks")
    models = names(args.models, MODELS, "models")
    if args.budget_seconds <= 0 or args.updates < 1:
        raise SystemExit(
            f"--budget-seconds, --updates: expected > 0 and >= 1, found "
            f"{args.budget_seconds}, {args.updates}"
        )
    if args.layers < 1:
        raise SystemExit(f"--layers: expected >= 1, found {args.layers}")
    parse_curriculum(args.listops_curriculum)
    if args.listops_train < 1 or args.validations < 1:
        raise SystemExit(
            f"--listops-train, --validations: expected >= 1, found {args.listops_train}, "
            f"{args.validations}"
        )
    try:
        shortest, longest = (int(v) for v in args.listops_lengths.split(","))
    except ValueError:
        raise SystemExit(
            f"--listops-lengths: expected two integers MIN,MAX, found {args.listops_lengths!r}"
        ) from None
    settings = Settings(
        params=args.params,
        updates=3 if args.quick else args.updates,
        budget_seconds=args.budget_seconds,
        threads=args.threads,
        copy_length=args.copy_length,
        listops_min_length=shortest,
        listops_max_length=longest,
        listops_train=args.listops_train,
        listops_curriculum=args.listops_curriculum,
        readout=args.readout,
        schedule=args.schedule,
        layers=args.layers,
        validations=args.validations,
        quick=args.quick,
    )
    torch.set_num_threads(settings.threads)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in tasks:
        task: Task | None = None
        for model in models:
            path = args.cache_dir / f"{name}{settings.suffix(name)}-{model}.json"
            if path.is_file() and not args.force:
                cached = json.loads(path.read_text())
                # a run cached before a setting existed ran with its default
                written = {**asdict(Settings()), **cached.get("settings", {})}
                if written == json.loads(json.dumps(asdict(settings))):
                    results.append(cached)
                    continue
            task = task or make_task(name, settings, args.cache_dir)
            result = train_and_test(task, model, settings)
            path.write_text(json.dumps(result, indent=1) + "\n")
            value = next(iter(result["test"].values()))
            print(
                f"{name} {model}: test {value:.3f}, {result['parameters']:,} parameters, "
                f"{result['updates']} updates in {result['train_seconds']:.0f} s",
                flush=True,
            )
            results.append(result)
    print(table(results))
    print()
    print(matrix(results))
    return results


if __name__ == "__main__":
    main()
