"""A small seeded training run, for the tests that need separate processes.

    python tests/training_script.py OUT [--every N] [--pause-after K] [--resume] [--minibatch M]
                                        [--dropout P] [--float64] [--epochs E]

Trains ``Fold(LSTMCell(2, 8)) >> Dropout(p) >> Dense(8, 1)`` with Adam, a StepLR schedule and
gradient clipping on 48 synthetic sequences (lengths 2..9), 8 sequences per minibatch per
process, shuffled per sweep. Writes ``OUT/steps.csv`` (one row per step),
``OUT/checkpoints/`` (every ``--every`` steps and at each epoch end) and ``OUT/final.safetensors``
(the final weights). ``--pause-after K`` writes ``OUT/paused`` after step K and then sleeps, so
a test can kill the process at a known point. Under ``torchrun`` each process trains on its
share of every sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from rnnkit import Dense, Dropout, Fold, LSTMCell
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.training import (
    Callback,
    Checkpoint,
    Criterion,
    CSVLogger,
    StepInfo,
    Trainer,
    squared_error,
)


def make_examples(n: int = 48, dtype: torch.dtype = torch.float32) -> list[dict[str, Tensor]]:
    """``features`` [L, 2] with L in 2..9, ``labels`` [1, 1]: a smooth function of them."""
    g = torch.Generator().manual_seed(1234)
    examples = []
    for _ in range(n):
        length = int(torch.randint(2, 10, (1,), generator=g))
        x = torch.rand(length, 2, generator=g, dtype=torch.float64)
        y = x[:, 0].mean() + 0.5 * x[-1, 1]
        examples.append({"features": x.to(dtype), "labels": y.view(1, 1).to(dtype)})
    return examples


class Pause(Callback):
    """After step ``step``: leave a marker file and sleep until killed."""

    rank_zero_only = True

    def __init__(self, step: int, marker: Path) -> None:
        self.step, self.marker = step, marker

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        if step.step == self.step:
            self.marker.write_text(str(step.step))
            time.sleep(600)


def run(
    out: Path,
    *,
    every: int | None = None,
    pause_after: int | None = None,
    resume: bool = False,
    minibatch: int = 8,
    dropout: float = 0.2,
    dtype: torch.dtype = torch.float32,
    epochs: int = 3,
) -> Trainer:
    """Build and train; returns the trainer (its model holds the final weights)."""
    torch.manual_seed(7)
    model = (Fold(LSTMCell(2, 8)) >> Dropout(dropout) >> Dense(8, 1)).to(dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    callbacks: list[Callback] = [CSVLogger(out / "steps.csv", per="step")]
    if pause_after is not None:
        callbacks.append(Pause(pause_after, out / "paused"))
    trainer = Trainer(
        model,
        Criterion(squared_error),
        optimizer,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5),
        clip_norm=1.0,
        callbacks=callbacks,
        checkpoint=Checkpoint(out / "checkpoints", every_steps=every, keep=2),
    )
    source = MinibatchSource(make_examples(dtype=dtype), minibatch, unit="sequences", seed=3)
    trainer.fit(source, epochs=epochs, resume=resume)
    return trainer


def main(argv: list[str]) -> Trainer:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=None)
    parser.add_argument("--pause-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--minibatch", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same reduction order in every process
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = run(
        args.out,
        every=args.every,
        pause_after=args.pause_after,
        resume=args.resume,
        minibatch=args.minibatch,
        dropout=args.dropout,
        dtype=torch.float64 if args.float64 else torch.float32,
        epochs=args.epochs,
    )
    if trainer.processes.is_main:
        from safetensors.torch import save_file

        save_file(trainer.model.state_dict(), str(args.out / "final.safetensors"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return trainer


if __name__ == "__main__":
    # Under torchrun, freeing the DDP reducer (and with it the gloo process group) can
    # deadlock in torch 2.13: the main thread holds the GIL while ~ProcessGroupGloo joins a
    # worker that waits for the GIL to free its last work item (about 1 run in 10 here). So
    # the trainer is kept alive and the process leaves without that teardown; every file is
    # written and closed by then.
    kept = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
