"""``rnnkit longrange``: the adding problem and the copy task for RNN, IRNN, LSTM and GRU.

The adding problem (Hochreiter & Schmidhuber 1997, as in Le, Jaitly & Hinton 2015): T steps of
a value from U(0, 1) and a marker that is 1 once in each half; the target is the sum of the two
marked values (squared error; always answering 1.0 scores 1/6). The copy task (Arjovsky, Shah
& Bengio 2016): 10 symbols from 8, a delay, a delimiter, then the 10 symbols back
(cross-entropy per step; blanks then a uniform guess score ``10 ln 8 / (delay + 20)``).

Training sees a fresh seeded minibatch at every step (``epochs x eval_every`` steps), as in
the papers; an epoch is ``eval_every`` steps, after which the validation part is measured, and
training stops once it is solved (adding: MSE < 0.01; copy: at most 1 % of the recalled
symbols wrong). Models (:mod:`rnnkit.layers.longrange`): ``Fold(cell) >> Dense(H, 1)`` for
adding, ``Embedding >> Recurrence(cell) >> Dense(H, S + 2)`` for copy. ``rnnkit predict`` reads
adding-problem CSV (``value,marker`` per line, a blank line between sequences) or copy-task
lines of symbol ids (:mod:`rnnkit.data.synthetic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from torch import nn

__all__ = ["RECIPE", "LongRangeConfig", "LongRangeRecipe"]

SOLVED_MSE = 0.01
SOLVED_RECALL = 0.99


@dataclass(frozen=True)
class LongRangeConfig:
    """One run of the adding problem or the copy task (see the module docstring)."""

    task: str = option("adding", "adding problem or copy task", choices=("adding", "copy"))
    cell: str = option(
        "gru", "rnn (tanh), irnn (Le et al.), lstm or gru", choices=("rnn", "irnn", "lstm", "gru")
    )
    length: int = option(100, "T, the steps of a sequence (adding) or the delay (copy)", low=1)
    hidden_size: int = option(64, "hidden units of the cell", low=1)
    eval_every: int = option(50, "training steps per epoch (validated after each)", low=1)
    until_solved: bool = option(True, "stop once the validation part is solved")
    validation_size: int = option(500, "validation sequences (seeded apart)", low=1)
    test_size: int = option(500, "test sequences (seeded apart)", low=1)
    num_copy: int = option(10, "copy task: symbols to remember (K)", low=1)
    num_symbols: int = option(8, "copy task: symbols to draw them from (S)", low=1)
    train: TrainSettings = option(
        TrainSettings(epochs=12, minibatch_size=50, learning_rate=0.01, threads=1),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.task == "adding" and self.length < 2:
            raise ValueError(
                f"length: expected an integer >= 2 for the adding problem (a marker in each "
                f"half), found {self.length}"
            )

    @property
    def steps(self) -> int:
        """Training steps in all (``epochs x eval_every``)."""
        return self.train.epochs * self.eval_every

    @property
    def test_seed(self) -> int:
        """The test part's seed (the old recipe's), apart from the training batches'
        ``seed * 1_000_003 + step`` and the validation part's."""
        return 1_000_000_007 + self.train.seed


class LongRangeRecipe(Recipe[LongRangeConfig]):
    name = "longrange"
    summary = "the adding and copy tasks with long time lags"
    description = __doc__ or ""
    config = LongRangeConfig
    presets = {
        "adding": {},
        "copy": {"task": "copy", "length": 10, "epochs": 6, "eval_every": 100},
    }
    preset_help = {
        "adding": "docs/results.md's adding runs (600 steps, validated every 50)",
        "copy": "its copy runs (600 steps, validated every 100)",
    }
    input_streams = ("x",)
    target_stream = "y"
    size_stream = "y"  # epochs are counted in label samples
    metric = Metric("mse")

    def metric_for(self, config: LongRangeConfig) -> Metric:
        return Metric("mse") if config.task == "adding" else Metric("step error", percent=True)

    def epoch_size(self, config: LongRangeConfig, data: RecipeData) -> int:
        per_sequence = 1 if config.task == "adding" else config.length + 2 * config.num_copy
        return config.eval_every * config.train.minibatch_size * per_sequence

    def load_data(self, config: LongRangeConfig) -> RecipeData:
        from rnnkit.data.synthetic import as_examples

        batch, seed = config.train.minibatch_size, config.train.seed
        train = []
        for step in range(1, config.steps + 1):  # the batch of every step, as it was seeded
            train += as_examples(*_generate(config, batch, seed * 1_000_003 + step))
        validation = as_examples(*_generate(config, config.validation_size, 3_000_000_019 + seed))
        test = as_examples(*_generate(config, config.test_size, config.test_seed))
        what = (
            f"adding problem, T = {config.length}"
            if config.task == "adding"
            else f"copy task, delay {config.length}, {config.num_copy} of {config.num_symbols} "
            "symbols"
        )
        return RecipeData(
            train,
            validation,
            test,
            info={
                "task": config.task,
                "num_copy": config.num_copy,
                "num_symbols": config.num_symbols,
            },
            description=f"{what}: a fresh batch of {batch} for each of {config.steps} steps",
        )

    def build_model(self, config: LongRangeConfig, data: RecipeData) -> nn.Module:
        from rnnkit.layers.longrange import adding_model, copy_model

        if config.task == "adding":
            return adding_model(config.cell, config.hidden_size)
        return copy_model(config.cell, config.hidden_size, config.num_symbols)

    def criterion(self, config: LongRangeConfig, data: RecipeData) -> Any:
        from rnnkit.training import (
            Criterion,
            classification_error,
            cross_entropy_with_softmax,
            squared_error,
        )

        if config.task == "adding":
            return Criterion(squared_error)
        return Criterion(cross_entropy_with_softmax, classification_error)

    def train_settings_for(self, config: LongRangeConfig, epochs: int) -> dict[str, Any]:
        # A non-finite step is dropped and counted (skipped_steps), as a diverging run is a
        # result here, not a failure.
        return {"clip_norm": config.train.clip_norm, "on_nonfinite": "skip"}

    def callbacks(self, config: LongRangeConfig, data: RecipeData) -> list[Any]:
        monitor = _monitor(config)
        data.extra.setdefault("monitors", []).append(monitor)
        return [monitor]

    def score(
        self, config: LongRangeConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, Any]:
        import torch

        monitors = data.extra.get("monitors", [])
        if config.task == "adding":
            y = torch.cat([e["y"] for e in data.test]).reshape(-1)
            out = torch.stack([p.reshape(-1)[0] for p in predictions])
            mse = float(((out - y) ** 2).mean())
            figures: dict[str, Any] = {"test_mse": mse, "solved": mse < SOLVED_MSE}
        else:
            ce, recall = _copy_figures(config, data.test, predictions)
            figures = {"test_ce": ce, "recall_accuracy": recall, "solved": recall >= SOLVED_RECALL}
        figures["steps_to_solve"] = next((m.solved_at for m in monitors if m.solved_at), None)
        figures["steps_run"] = sum(m.steps for m in monitors)
        figures["max_grad_norm"] = max((m.max_grad_norm for m in monitors), default=0.0)
        figures["skipped_steps"] = sum(m.skipped for m in monitors)
        return figures

    def baselines(self, config: LongRangeConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data.synthetic import copy_baseline

        if config.task == "adding":
            y = [float(e["y"].reshape(-1)[0]) for e in data.test]
            return {"always 1.0": {"test_mse": sum((v - 1.0) ** 2 for v in y) / len(y)}}
        ce = copy_baseline(config.length, config.num_copy, config.num_symbols)
        return {
            "blanks, then a uniform guess": {
                "test_ce": ce,
                "recall_accuracy": 1 / config.num_symbols,
            }
        }

    def notes(
        self, config: LongRangeConfig, data: RecipeData, figures: Mapping[str, Any]
    ) -> list[str]:
        steps = figures.get("steps_to_solve")
        done = (
            f"The validation part was solved after {steps} steps; training stopped there."
            if steps
            else f"The validation part was not solved within {config.steps} steps."
        )
        rule = (
            "Solved: test MSE below 0.01 (always answering 1.0 scores 1/6 in expectation)."
            if config.task == "adding"
            else "Solved: at least 99 % of the recalled symbols right; the uniform guess's "
            "recall accuracy is its expectation, 1/S."
        )
        return [done, rule, "max_grad_norm is the largest gradient norm before clipping."]

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        rows = []
        k = int(info.get("num_copy", 10))
        for example, prediction in zip(examples, predictions, strict=True):
            steps = int(example["x"].shape[0])
            if info.get("task", "adding") == "adding":
                target, guess = float(example["y"].reshape(-1)[0]), float(prediction.reshape(-1)[0])
                rows.append({"steps": steps, "target": target, "prediction": guess})
                continue
            wanted = example["y"][-k:].tolist()
            got = prediction[-k:].argmax(-1).tolist()
            right = sum(a == b for a, b in zip(wanted, got, strict=True))
            rows.append(
                {"steps": steps, "target": wanted, "prediction": got, "recalled_right": right}
            )
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: LongRangeConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Adding: CSV blocks of ``value,marker`` lines; copy: lines of symbol ids. The target
        follows from the inputs by the task's definition (the sum of the marked values; the
        first K symbols, repeated at the end)."""
        import torch

        from rnnkit.data.synthetic import read_adding_csv, read_copy_file

        ids: list[str] = []
        examples: list[Any] = []
        k = config.num_copy
        for path in paths:
            if config.task == "adding":
                part = read_adding_csv(path)
                targets = [(x[:, 0] * x[:, 1]).sum().reshape(1, 1) for x in part]
            else:
                part = read_copy_file(path, config.num_symbols)
                for i, x in enumerate(part):
                    if len(x) < 2 * k:
                        raise ValueError(
                            f"{path}: sequence {i + 1}: expected at least 2 x {k} steps (the "
                            f"symbols, then their recall), found {len(x)}"
                        )
                targets = [
                    torch.cat([torch.zeros(len(x) - k, dtype=torch.int64), x[:k]]) for x in part
                ]
            ids += [f"{path.name}:{i + 1}" for i in range(len(part))]
            examples += [{"x": x, "y": y} for x, y in zip(part, targets, strict=True)]
        return ids, examples


def _generate(config: LongRangeConfig, num: int, seed: int) -> tuple[Any, Any]:
    from rnnkit.data.synthetic import adding_problem, copy_task

    if config.task == "adding":
        return adding_problem(num, config.length, seed=seed)
    return copy_task(num, config.length, config.num_copy, config.num_symbols, seed=seed)


def _copy_figures(
    config: LongRangeConfig, examples: Sequence[Any], logits: Sequence[Any]
) -> tuple[float, float]:
    """Cross-entropy per step (nats) and the share of the K recalled symbols right."""
    import torch

    k = config.num_copy
    out, target = torch.cat(list(logits)), torch.cat([e["y"] for e in examples])
    ce = float(torch.nn.functional.cross_entropy(out, target))
    right = sum(
        int((p[-k:].argmax(-1) == e["y"][-k:]).sum()) for p, e in zip(logits, examples, strict=True)
    )
    return ce, right / (k * len(examples))


def _monitor(config: LongRangeConfig) -> Any:
    """A callback that records the largest gradient norm and skipped steps, and stops training
    once the validation part is solved (when ``until_solved``)."""
    from rnnkit.training import Callback

    # The copy task's metric is the share of wrong steps; a recalled symbol is wrong at most
    # once per K of them, so K / (T + 2K) of wrong steps bound a wrong recall share of 1 %.
    per_recalled = (config.length + 2 * config.num_copy) / config.num_copy

    class Monitor(Callback):
        def __init__(self) -> None:
            self.max_grad_norm, self.steps, self.skipped = 0.0, 0, 0
            self.solved_at: int | None = None

        def on_step_end(self, trainer: Any, step: Any) -> None:
            self.steps = step.step
            self.skipped += int(step.skipped)
            if math.isfinite(step.grad_norm):
                self.max_grad_norm = max(self.max_grad_norm, step.grad_norm)

        def on_epoch_end(self, trainer: Any, epoch: Any) -> None:
            if self.solved_at is not None or "val_loss" not in epoch.metrics:
                return
            if config.task == "adding":
                solved = epoch.metrics["val_loss"] < SOLVED_MSE
            else:
                solved = epoch.metrics["val_metric"] * per_recalled <= 1 - SOLVED_RECALL
            if solved:
                self.solved_at = trainer.state.step
                if config.until_solved:
                    trainer.stop(f"solved on the validation part after {self.solved_at} steps")

    return Monitor()


RECIPE = LongRangeRecipe()
