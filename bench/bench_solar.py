"""End to end: the solar example in rnnkit's Trainer against a hand-written PyTorch loop.

Both train the book's model (``Fold(LSTM(15), initial_state=0.1) >> Dense(1)``, squared error,
Adam lr 0.005) on the honest day split, over the *same* minibatches in the same order (the
minibatches of 140 samples that ``MinibatchSource`` draws; the plain loop gets them as padded
tensors with lengths prepared before timing, as a hand-written loop would). Reported: seconds
per update (median of the repeats), and the test MSE each reaches.

    python bench/bench_solar.py [--updates 6550] [--repeats 3] [--threads 1] [--keras-updates 500]
        [--input total|current] [--unit samples|sequences] [--minibatch 140]

``--input current`` feeds ``solar.current / 19100`` instead of the book's ``solar.total / 19100``;
``--unit sequences --minibatch 19`` draws minibatches of 19 sequences (a new order each sweep), as
a hand-written PyTorch loop usually does, instead of CNTK's 140 samples. Both are departures from
the book, there to show where a figure measured that way comes from (see docs/results.md).

Keras 3 (torch backend) is timed too when it is installed (``pip install keras``; not a
dependency of rnnkit), over the first ``--keras-updates`` of the same minibatches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from rnnkit import Criterion, Dense, Fold, LSTMCell, SequenceBatch, Trainer, squared_error
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.data.solar import SolarDay, day_examples, default_data_dir, solar_days, split_days


class PlainModel(nn.Module):
    """The book's model written by hand: padded input, the last valid output, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 15, batch_first=True)
        self.dense = nn.Linear(15, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h0 = torch.full((1, x.shape[0], 15), 0.1)
        out, _ = self.lstm(x, (h0, h0))
        last = out[torch.arange(x.shape[0]), lengths - 1]
        return self.dense(last)


def minibatches(
    examples: list[dict[str, torch.Tensor]],
    updates: int,
    seed: int,
    size: int = 140,
    unit: str = "samples",
) -> list:
    source = MinibatchSource(examples, size, unit=unit, size_stream="features", seed=seed)
    return [source.next_minibatch() for _ in range(updates)]


def examples(days: list[SolarDay], input_name: str) -> list[dict[str, torch.Tensor]]:
    """The book's prefixes of each day; the input ``solar.total / 19100`` (``'total'``, the
    book's) or ``solar.current / 19100`` (``'current'``, the first column of the rich
    features)."""
    if input_name == "total":
        return day_examples(days)
    return [
        {"features": e["features"][:, 0:1].clone(), "target": e["target"]}
        for e in day_examples(days, "rich")
    ]


def run_plain(batches: list, seed: int) -> tuple[float, nn.Module]:
    torch.manual_seed(seed)
    model = PlainModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    prepared = []
    for mb in batches:
        x, lengths = mb["features"].to_padded()
        prepared.append((x, lengths, mb["target"]))
    start = time.perf_counter()
    for x, lengths, y in prepared:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x, lengths), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - start, model


def run_plain_padding_in_loop(batches: list, seed: int) -> tuple[float, nn.Module]:
    """The hand-written loop again, but padding each minibatch inside the timed loop (as
    rnnkit does inside the model): what the padding itself costs."""
    torch.manual_seed(seed)
    model = PlainModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    start = time.perf_counter()
    for mb in batches:
        x, lengths = mb["features"].to_padded()
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x, lengths), mb["target"])
        loss.backward()
        opt.step()
    return time.perf_counter() - start, model


def run_rnnkit(batches: list, seed: int) -> tuple[float, nn.Module]:
    torch.manual_seed(seed)
    model = Fold(LSTMCell(1, 15), initial_state=0.1) >> Dense(15, 1)
    trainer = Trainer(
        model,
        Criterion(squared_error, squared_error),
        torch.optim.Adam(model.parameters(), lr=0.005),
        target_stream="target",
    )
    start = time.perf_counter()
    for mb in batches:
        trainer._step(mb, first=False)
    return time.perf_counter() - start, model


def run_keras(batches: list, seed: int) -> tuple[float, object] | None:
    """The same model in Keras 3 on its torch backend, when Keras is installed: padded
    input (padding -1, masked), ``train_on_batch`` per minibatch. Keras has no per-layer
    constant initial state, so its LSTM starts at zero (no effect on the time per update)."""
    import importlib.util
    import os

    if importlib.util.find_spec("keras") is None:
        return None
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((None, 1)),
            keras.layers.Masking(mask_value=-1.0),
            keras.layers.LSTM(15),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.005), loss="mse")
    prepared = []
    for mb in batches:
        x, _ = mb["features"].to_padded(padding_value=-1.0)
        prepared.append((x.numpy(), mb["target"].numpy()))
    start = time.perf_counter()
    for x, y in prepared:
        model.train_on_batch(x, y)
    return time.perf_counter() - start, model


def test_mse(model: nn.Module, examples: list[dict[str, torch.Tensor]]) -> float:
    seqs = [e["features"] for e in examples]
    y = torch.cat([e["target"] for e in examples])
    with torch.no_grad():
        if isinstance(model, PlainModel):
            x, lengths = SequenceBatch.from_list(seqs).to_padded()
            pred = model(x, lengths)
        else:
            pred = model(SequenceBatch.from_list(seqs))
    return float(nn.functional.mse_loss(pred, y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6550)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--keras-updates", type=int, default=500, help="updates timed in Keras (0: skip)"
    )
    parser.add_argument("--input", choices=("total", "current"), default="total")
    parser.add_argument("--unit", choices=("samples", "sequences"), default="samples")
    parser.add_argument("--minibatch", type=int, default=140, help="minibatch size in --unit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _, test = split_days(solar_days(default_data_dir() / "solar.csv"))
    train_ex, test_ex = examples(train, args.input), examples(test, args.input)
    runs = {
        "plain": run_plain,
        "plain_padding_in_loop": run_plain_padding_in_loop,
        "rnnkit": run_rnnkit,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    mse: dict[str, list[float]] = {name: [] for name in runs}
    for seed in range(args.repeats):
        batches = minibatches(train_ex, args.updates, seed, args.minibatch, args.unit)
        for name, fn in runs.items():
            seconds, model = fn(batches, seed)
            times[name].append(seconds / args.updates)
            mse[name].append(test_mse(model, test_ex))
    row: dict[str, object] = {
        name: {
            "ms_per_update": round(1e3 * statistics.median(times[name]), 3),
            "spread_ms": [round(1e3 * min(times[name]), 3), round(1e3 * max(times[name]), 3)],
            "test_mse_median": round(statistics.median(mse[name]), 5),
            "test_mse": [round(m, 5) for m in mse[name]],
        }
        for name in times
    }
    row["ratio_rnnkit_to_plain"] = round(
        statistics.median(times["rnnkit"]) / statistics.median(times["plain"]), 3
    )
    if args.keras_updates:
        keras_batches = minibatches(train_ex, args.keras_updates, 0, args.minibatch, args.unit)
        keras_run = run_keras(keras_batches, 0)
        if keras_run is not None:
            ms = 1e3 * keras_run[0] / args.keras_updates
            row["keras"] = {"ms_per_update": round(ms, 3), "updates": args.keras_updates}
            row["ratio_keras_to_rnnkit"] = round(ms / (1e3 * statistics.median(times["rnnkit"])), 2)
    setting: dict[str, object] = {"input": args.input, "minibatch": [args.minibatch, args.unit]}
    setting["updates"] = args.updates
    print(json.dumps({"case": "solar end to end", "threads": args.threads, **setting, **row}))


if __name__ == "__main__":
    main()
