"""Long-range memory recipes: the adding problem and the copy task for RNN, IRNN, LSTM, GRU.

The adding problem (Hochreiter & Schmidhuber 1997; the form of Le, Jaitly & Hinton 2015) asks
for the sum of the two values marked among ``T`` (one marker in each half): a model must keep
a value for up to ``T`` steps. The copy task (Arjovsky, Shah & Bengio 2016) asks for 10
symbols back after a delay. Data comes from :mod:`rnnkit.data.synthetic`, a fresh seeded
minibatch every step (as in the papers), and a fixed seeded test set.

Models: ``Fold(cell) >> Dense(H, 1)`` for adding (the last state reads out the sum),
``Embedding >> Recurrence(cell) >> Dense(H, S + 2)`` for copy (a symbol at every step). The
cells: ``'rnn'`` (tanh), ``'irnn'`` (relu with ``weight_hh = I``, zero biases and input
weights drawn from N(0, 0.001^2), Le et al. 2015), ``'lstm'`` and ``'gru'``; all run on the
fused kernel. Training: Adam, optionally clipping the gradient norm, and the test loss
measured every ``eval_every`` steps; a run stops when it is solved (adding: test MSE below
0.01; copy: at least 99 % of the recalled symbols right) or after ``max_steps`` steps.

From the command line (the whole table: ``examples/long_range.py``)::

    python -m rnnkit.tasks.longrange --task adding --cell lstm --length 100 --clip 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.data.synthetic import ADDING_BASELINE_MSE, adding_problem, copy_baseline, copy_task
from rnnkit.layers import Dense, Embedding, Sequential
from rnnkit.recurrence import Fold, Recurrence
from rnnkit.sequences import SequenceBatch

__all__ = [
    "CELLS",
    "LongRangeResult",
    "LongRangeRun",
    "adding_model",
    "copy_model",
    "irnn_cell",
    "make_cell",
    "train_long_range",
]

CellKind = Literal["rnn", "irnn", "lstm", "gru"]
CELLS: tuple[str, ...] = ("rnn", "irnn", "lstm", "gru")
SOLVED_MSE = 0.01
SOLVED_RECALL = 0.99


def irnn_cell(input_size: int, hidden_size: int, input_std: float = 1e-3) -> RNNCell:
    """Le et al.'s IRNN: a relu RNNCell with ``weight_hh = I``, zero biases, and input weights
    drawn from N(0, ``input_std``^2) (from torch's global generator).

    >>> cell = irnn_cell(2, 3)
    >>> cell.weight_hh.tolist(), cell.bias_hh.tolist(), cell.nonlinearity
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [0.0, 0.0, 0.0], 'relu')
    """
    cell = RNNCell(input_size, hidden_size, nonlinearity="relu")
    with torch.no_grad():
        cell.weight_hh.copy_(torch.eye(hidden_size))
        nn.init.normal_(cell.weight_ih, 0.0, input_std)
        for bias in (cell.bias_ih, cell.bias_hh):
            if bias is not None:
                bias.zero_()
    return cell


def make_cell(kind: str, input_size: int, hidden_size: int) -> nn.Module:
    """A cell of one of the :data:`CELLS` kinds, with torch's default initialisation (the
    IRNN's own for ``'irnn'``)."""
    if kind == "rnn":
        return RNNCell(input_size, hidden_size)
    if kind == "irnn":
        return irnn_cell(input_size, hidden_size)
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size)
    if kind == "gru":
        return GRUCell(input_size, hidden_size)
    raise ValueError(f"kind: expected one of {list(CELLS)}, found {kind!r}")


def adding_model(kind: str, hidden_size: int) -> Sequential:
    """``Fold(cell) >> Dense(H, 1)``: the sum read out from the last state."""
    return Fold(make_cell(kind, 2, hidden_size)) >> Dense(hidden_size, 1)


def copy_model(kind: str, hidden_size: int, num_symbols: int = 8) -> Sequential:
    """``Embedding(S + 2, S + 2) >> Recurrence(cell) >> Dense(H, S + 2)``: a symbol per step."""
    vocab = num_symbols + 2
    return Sequential(
        [
            Embedding(vocab, vocab),
            Recurrence(make_cell(kind, vocab, hidden_size)),
            Dense(hidden_size, vocab),
        ]
    )


@dataclass(frozen=True)
class LongRangeRun:
    """One training run.

    Attributes:
        task: ``'adding'`` or ``'copy'``.
        cell: one of :data:`CELLS`.
        length: the sequence length T (adding) or the delay (copy).
        clip: the largest gradient norm (``torch.nn.utils.clip_grad_norm_``); None: no clipping.
        hidden_size, batch_size: of the model and of every training minibatch.
        max_steps: the step budget; ``eval_every``: steps between test evaluations.
        learning_rate: Adam's.
        num_test: test sequences (fixed, seeded apart from the training data).
        num_copy, num_symbols: the copy task's K and S.
        seed: seeds the initial weights, the training data and the test set.
    """

    task: Literal["adding", "copy"] = "adding"
    cell: CellKind = "lstm"
    length: int = 100
    clip: float | None = 1.0
    hidden_size: int = 64
    batch_size: int = 50
    max_steps: int = 500
    eval_every: int = 50
    learning_rate: float = 1e-3
    num_test: int = 500
    num_copy: int = 10
    num_symbols: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in ("adding", "copy"):
            raise ValueError(f"task: expected 'adding' or 'copy', found {self.task!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {list(CELLS)}, found {self.cell!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip: expected a positive norm or None, found {self.clip}")
        for name in ("length", "hidden_size", "batch_size", "max_steps", "eval_every", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")

    @property
    def test_seed(self) -> int:
        """The test set's seed, apart from the training batches' ``seed * 1_000_003 + step``."""
        return 1_000_000_007 + self.seed

    def validation(self) -> dict[str, object]:
        """The test set as a generator call, the ``"validation"`` entry of a run's config.json
        (what :func:`rnnkit.diagnostics.diagnose_run` reads)."""
        seed = self.test_seed
        if self.task == "adding":
            return {
                "generator": "adding_problem",
                "num_examples": self.num_test,
                "length": self.length,
                "seed": seed,
            }
        return {
            "generator": "copy_task",
            "num_examples": self.num_test,
            "delay": self.length,
            "num_copy": self.num_copy,
            "num_symbols": self.num_symbols,
            "seed": seed,
        }


@dataclass(frozen=True)
class LongRangeResult:
    """The figures of one run.

    Attributes:
        test_loss: test MSE (adding) or cross-entropy per step in nats (copy) at the end (the
            step it was solved, or the last); NaN after divergence.
        baseline: the loss of the trivial answer (1.0 for adding, blanks then a uniform guess
            for copy).
        recall_accuracy: copy only, the share of the K recalled symbols right.
        solved, steps_to_solve: whether (and at which step) the criterion was met.
        steps_run: training steps taken; ``diverged``: the loss became NaN or infinite.
        max_grad_norm: the largest gradient norm seen (before clipping).
        seconds: wall-clock time of the run.
    """

    run: LongRangeRun
    test_loss: float
    baseline: float
    recall_accuracy: float | None
    solved: bool
    steps_to_solve: int | None
    steps_run: int
    diverged: bool
    max_grad_norm: float
    seconds: float


def _batch(ids_or_values: Tensor) -> SequenceBatch:
    b, t = ids_or_values.shape[:2]
    return SequenceBatch.from_padded(ids_or_values, [t] * b)


def _data(run: LongRangeRun, num: int, seed: int) -> tuple[SequenceBatch, Tensor]:
    if run.task == "adding":
        x, y = adding_problem(num, run.length, seed=seed)
        return _batch(x), y
    ids, target = copy_task(num, run.length, run.num_copy, run.num_symbols, seed=seed)
    return _batch(ids), target


def _loss(run: LongRangeRun, output: Tensor | SequenceBatch, target: Tensor) -> Tensor:
    if isinstance(output, SequenceBatch):  # copy: Recurrence >> Dense, a symbol per step
        return nn.functional.cross_entropy(output.data, _batch(target).data)
    return nn.functional.mse_loss(output, target)


def _evaluate(
    run: LongRangeRun, model: nn.Module, test: tuple[SequenceBatch, Tensor]
) -> tuple[float, float | None]:
    x, target = test
    with torch.no_grad():
        output = model(x)
        loss = float(_loss(run, output, target))
        if run.task == "adding":
            return loss, None
        if not isinstance(output, SequenceBatch):
            raise TypeError(f"model: expected per-step logits for copy, found {type(output)}")
        logits, _ = output.to_padded()
        recalled = logits[:, -run.num_copy :].argmax(-1) == target[:, -run.num_copy :]
        return loss, float(recalled.double().mean())


def train_long_range(run: LongRangeRun, run_dir: str | Path | None = None) -> LongRangeResult:
    """Train one model as ``run`` says and report it; with ``run_dir``, save the model
    (:func:`rnnkit.saving.save`) and a ``config.json`` holding the run, its validation data
    and the result."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(run.seed)
        if run.task == "adding":
            model: nn.Module = adding_model(run.cell, run.hidden_size)
        else:
            model = copy_model(run.cell, run.hidden_size, run.num_symbols)
    test = _data(run, run.num_test, run.test_seed)
    baseline = (
        ADDING_BASELINE_MSE
        if run.task == "adding"
        else copy_baseline(run.length, run.num_copy, run.num_symbols)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=run.learning_rate)
    max_norm = run.clip if run.clip is not None else math.inf
    largest, steps, diverged = 0.0, 0, False
    solved_at: int | None = None
    test_loss, recall = _evaluate(run, model, test)
    for step in range(1, run.max_steps + 1):
        x, target = _data(run, run.batch_size, run.seed * 1_000_003 + step)
        loss = _loss(run, model(x), target)
        optimizer.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        steps = step
        if not (math.isfinite(float(loss.detach())) and math.isfinite(norm)):
            diverged, test_loss, recall = True, math.nan, None
            break
        largest = max(largest, norm)
        optimizer.step()
        if step % run.eval_every == 0 or step == run.max_steps:
            test_loss, recall = _evaluate(run, model, test)
            if not math.isfinite(test_loss):
                diverged = True
                break
            done = test_loss < SOLVED_MSE if recall is None else recall >= SOLVED_RECALL
            if done:
                solved_at = step
                break
    result = LongRangeResult(
        run=run,
        test_loss=test_loss,
        baseline=baseline,
        recall_accuracy=recall,
        solved=solved_at is not None,
        steps_to_solve=solved_at,
        steps_run=steps,
        diverged=diverged,
        max_grad_norm=largest,
        seconds=time.perf_counter() - start,
    )
    if run_dir is not None:
        _save_run(Path(run_dir), model, result)
    return result


def _save_run(directory: Path, model: nn.Module, result: LongRangeResult) -> None:
    from rnnkit.saving import save

    save(model, directory)
    record = dataclasses.asdict(result)
    config = {
        "run": record.pop("run"),
        "validation": result.run.validation(),
        "result": {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _add_options(parser: Any) -> None:
    parser.add_argument("--task", choices=("adding", "copy"), default="adding")
    parser.add_argument("--cell", choices=CELLS, default="lstm")
    parser.add_argument("--length", type=int, default=100, help="T (adding) or delay (copy)")
    parser.add_argument("--clip", type=float, default=None, help="max gradient norm")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)


def _run(args: Any) -> int:
    run = LongRangeRun(
        task=args.task,
        cell=args.cell,
        length=args.length,
        clip=args.clip,
        hidden_size=args.hidden,
        max_steps=args.steps,
        learning_rate=args.lr,
        seed=args.seed,
    )
    result = train_long_range(run, args.run_dir)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit longrange``: one run of the adding problem or the copy task."""
    parser = sub.add_parser(
        "longrange",
        help="the adding problem or the copy task for RNN, IRNN, LSTM, GRU",
        description=__doc__.split("\n")[0],
    )
    _add_options(parser)
    return {"longrange": _run}


def main(argv: Sequence[str] | None = None) -> None:
    """Train one run from the command line and print its result (as ``rnnkit longrange``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _add_options(parser)
    _run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
