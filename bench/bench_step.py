"""One training update of a window forecaster: rnnkit's Trainer against a hand-written
PyTorch loop (issue 19's training-time target).

Both train the model that ``rnnkit forecast`` builds with ``--model window --revin on`` on the
settings of bench ``forecast``: for electricity demand (``--data elec``) RevIN around
``Segments(8) >> Fold(LSTMCell(40, 32)) >> Dense(32, 48)``, for M1 yearly (``--data m1``, 181
series) RevIN around ``Fold(LSTMCell(2, 32)) >> Dense(32, 6)``; the squared error over the
observed targets, Adam 0.005 in its fused form. They start from the same initial weights
and see the same minibatches of 32 windows in the same order. The plain loop gets the windows
stacked into tensors before timing and cuts each minibatch by index. It computes RevIN (with
its rule for windows of fewer than 2 observed values), the segments, the LSTM, the inverse and
the loss as plainly as PyTorch allows. rnnkit draws its minibatches from its
``MinibatchSource`` inside the timed loop, as ``rnnkit forecast`` does, and its Trainer also
measures the gradient norm and counts samples.

Reported: milliseconds per update (the median of the repeats, each a fresh copy of the initial
weights), the ratio, and the largest difference between the two losses over the first 20
updates (it shows the two compute the same model).

    python bench/bench_step.py [--data elec|m1] [--updates 4000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit import LSTMCell, Segments
from rnnkit.layers.revin import RevIN
from rnnkit.recipes.forecast import RECIPE, ForecastConfig
from rnnkit.recipes.harness import adam
from rnnkit.training import Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "timeseries"
COMPARED = 20  # the first updates whose losses are compared


SETTINGS: dict[str, dict[str, Any]] = {
    "elec": {
        "csv": DATA / "elecdemand-2014.csv",
        "target": ("Demand",),
        "known": ("WorkDay", "Temperature"),
        "input_length": 96,
        "horizon": 48,
        "season": 48,
    },
    "m1": {
        "csv": DATA / "m1-yearly.csv",
        "series_id": "series_id",
        "time_column": "time",
        "target": ("value",),
        "input_length": 6,
        "horizon": 6,
        "season": 1,
    },
}
"""bench_forecast.py's settings per data set."""


def window_config(data: str, threads: int) -> ForecastConfig:
    """The bench's settings for ``data``, with the model fixed to the window model with RevIN."""
    config = ForecastConfig(**SETTINGS[data], model="window", revin="on")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, threads=threads))


class PlainForecaster(nn.Module):
    """The recipe's model written by hand over ``[B, T, F]`` windows of one target (its value,
    its mask, then any known columns and the horizon flag): RevIN over the observed values,
    ``patch`` steps a segment, an LSTM from zeros, a linear layer, the inverse of RevIN."""

    def __init__(
        self, features: int, patch: int, hidden: int, horizon: int, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.patch, self.eps = patch, eps
        self.lstm = nn.LSTM(features * patch, hidden)
        self.dense = nn.Linear(hidden, horizon)
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        value, seen = x[..., :1], x[..., 1:2]
        count = seen.sum(1, keepdim=True)
        enough = count >= 2  # RevIN's rule: fewer than 2 observed values leave a window as it is
        per = count.clamp(min=1)
        mean = torch.where(enough, (value * seen).sum(1, keepdim=True) / per, 0.0)
        var = ((value - mean) * seen).square().sum(1, keepdim=True) / per
        std = torch.where(enough, torch.sqrt(var + self.eps), 1.0)
        normed = (value - mean) / std * self.weight + self.bias
        z = torch.cat([normed, x[..., 1:]], -1)
        b, t, f = z.shape
        segments = z.reshape(b, t // self.patch, self.patch * f).transpose(0, 1)
        _, (h, _) = self.lstm(segments)
        y = self.dense(h[0])
        y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std[:, 0] + mean[:, 0]


def plain_model(model: nn.Module, features: int) -> PlainForecaster:
    """A PlainForecaster with the recipe model's sizes and weights (torch's LSTM has the
    layout of rnnkit's LSTMCell)."""
    cells = [m for m in model.modules() if isinstance(m, LSTMCell)]
    denses = [m for m in model.modules() if isinstance(m, nn.Linear)]
    segments = [m for m in model.modules() if isinstance(m, Segments)]
    cell, dense = cells[0], denses[0]
    patch = segments[0].length if segments else 1
    plain = PlainForecaster(features, patch, cell.hidden_size, dense.out_features)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(plain.lstm, f"{name}_l0").copy_(getattr(cell, name))
        plain.dense.weight.copy_(dense.weight)
        plain.dense.bias.copy_(dense.bias)
        revin = next(m for m in model.modules() if isinstance(m, RevIN))
        assert revin.weight is not None and revin.bias is not None  # the recipe's is affine
        plain.weight.copy_(revin.weight)
        plain.bias.copy_(revin.bias)
    return plain


def time_rnnkit(model: nn.Module, criterion: Any, source: Any, updates: int, lr: float) -> float:
    """Seconds per update of ``Trainer.fit`` over ``updates`` minibatches of ``source``."""
    trainer = Trainer(
        model,
        criterion,
        adam(model, lr),
        input_streams=RECIPE.input_streams,
        target_stream=RECIPE.target_stream,
    )
    started = time.perf_counter()
    trainer.fit(source, max_samples=updates * source.minibatch_size)
    return (time.perf_counter() - started) / trainer.state.step


def time_plain(
    plain: PlainForecaster, x: Tensor, y: Tensor, order: list[Tensor], lr: float
) -> tuple[float, list[float]]:
    """Seconds per update of a hand-written loop over the same minibatches, and its losses."""
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr, fused=True)
    losses: list[float] = []
    started = time.perf_counter()
    for rows in order:
        target = y.index_select(0, rows)
        out = plain(x.index_select(0, rows))
        seen = ~torch.isnan(target)
        diff = torch.where(seen, out - torch.nan_to_num(target), torch.zeros_like(out))
        loss = (diff.square().sum(-1) / seen.sum(-1).clamp(min=1)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if len(losses) < COMPARED:
            losses.append(float(loss.detach()))
    return (time.perf_counter() - started) / len(order), losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", choices=sorted(SETTINGS), default="elec")
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = window_config(args.data, args.threads)
    data = RECIPE.load_data(config)
    torch.manual_seed(0)
    initial = RECIPE.build_model(config, data)
    criterion = RECIPE.criterion(config, data)
    lr = RECIPE.settings(config).learning_rate  # the recipe's, with --panel-scale on M1
    examples = data.train
    x = torch.stack([e["features"] for e in examples])
    y = torch.cat([e["labels"] for e in examples])
    drawn = RECIPE.source(config, examples, training=True, seed=0)
    order = []
    for _ in range(args.updates):
        mb = drawn.next_minibatch()
        assert mb is not None  # a training source is endless
        order.append(torch.tensor(mb.indices))

    # Record the Trainer's losses of the first updates through its criterion.
    def recording(output: Any, target: Any) -> Any:
        loss_sum, metric_sum = criterion(output, target)
        if len(recorded) < COMPARED:
            recorded.append(float(loss_sum.detach()) / target.shape[0])
        return loss_sum, metric_sum

    ours, theirs = [], []
    recorded: list[float] = []
    plain_losses: list[float] = []
    for _ in range(args.repeats):
        recorded.clear()
        model = copy.deepcopy(initial)
        source = RECIPE.source(config, examples, training=True, seed=0)
        ours.append(time_rnnkit(model, recording, source, args.updates, lr))
        plain = plain_model(initial, x.shape[-1])
        seconds, plain_losses = time_plain(plain, x, y, order, lr)
        theirs.append(seconds)
    gap = max(abs(a - b) for a, b in zip(recorded, plain_losses, strict=True))
    result = {
        "data": args.data,
        "updates": args.updates,
        "repeats": args.repeats,
        "threads": args.threads,
        "rnnkit_ms": round(1e3 * statistics.median(ours), 3),
        "rnnkit_ms_all": [round(1e3 * s, 3) for s in ours],
        "plain_ms": round(1e3 * statistics.median(theirs), 3),
        "plain_ms_all": [round(1e3 * s, 3) for s in theirs],
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
        "largest_loss_difference_first_updates": gap,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
