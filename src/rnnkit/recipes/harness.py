"""The one training path every recipe shares, and the run directory it writes.

A recipe (:class:`Recipe`) says what is particular to its task: its settings (a frozen
dataclass with a :class:`~rnnkit.recipes.options.TrainSettings` field named ``train``), how to
read its data (:meth:`Recipe.load_data`), its model, criterion and baselines, how to score and
show its predictions, and how to read new inputs for ``rnnkit predict``. :func:`run_recipe`
does the rest, the same way for all of them:

1. sets the threads and the seed, reads the data, checks that no part is empty;
2. trains ``ensemble`` models through :class:`~rnnkit.training.Trainer` (progress on the
   terminal or CNTK's table, ``metrics.csv``, early stopping with the best weights kept, the
   time budget shared between the members), and averages them when there are several;
3. evaluates on the validation and test parts, predicts the test part in batches
   (:meth:`~rnnkit.training.Trainer.predict` over a source), scores the predictions and the
   baselines;
4. writes the run directory (:class:`~rnnkit.recipes.rundir.RunDirectory`): ``run.json``,
   ``model.safetensors`` + ``model.json``, ``metrics.csv``, ``predictions.csv``,
   ``report.md`` and the plots.

This module imports torch only inside its functions, so that the command line can print its
help without it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from rnnkit.recipes.options import TrainSettings, config_from_dict, config_to_dict

if TYPE_CHECKING:
    from torch import nn

    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.recipes.rundir import RunDirectory
    from rnnkit.training import Callback, Trainer

__all__ = [
    "Metric",
    "Recipe",
    "RecipeData",
    "RunResult",
    "diagnose_run",
    "load_run",
    "predict_examples",
    "predict_files",
    "run_recipe",
]

C = TypeVar("C")
Example = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Metric:
    """How the criterion's metric is named and shown: ``Metric("error rate", percent=True)``
    prints ``error rate = 12.50%``; ``Metric("mse")`` prints ``mse = 0.054700``."""

    name: str = "metric"
    percent: bool = False


@dataclasses.dataclass
class RecipeData:
    """The examples of one run and what a reader of the results needs to know about them.

    Attributes:
        train, validation, test: examples (dicts of streams) for :class:`MinibatchSource`.
        inputs: the files read (``run.json`` records their sizes and sha256).
        ids: one identifier per test example (default: its position).
        info: JSON-ready facts that prediction on new files needs (vocabularies, scales,
            sizes), saved in ``run.json`` and handed back to :meth:`Recipe.read_inputs`.
        description: one line printed before training ("1,040 days, 2 features ...").
        extra: anything else the recipe's hooks share (not saved).
    """

    train: Sequence[Example]
    validation: Sequence[Example]
    test: Sequence[Example]
    inputs: list[Path] = dataclasses.field(default_factory=list)
    ids: list[str] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def test_ids(self) -> list[str]:
        """The test examples' identifiers."""
        return self.ids if self.ids is not None else [str(i) for i in range(len(self.test))]


@dataclasses.dataclass
class RunResult:
    """What :func:`run_recipe` returns: the figures (also the JSON line printed last), the
    run directory, the trained model and the test predictions."""

    figures: dict[str, Any]
    run_dir: Path
    model: Any
    predictions: list[Any]
    data: RecipeData


class Recipe(ABC, Generic[C]):
    """One task: subclass it, set the class attributes, implement the hooks.

    Class attributes:
        name: the command (``rnnkit NAME``).
        summary: one line for ``rnnkit --help``.
        description: the paragraph of ``rnnkit NAME --help``.
        config: the settings dataclass (with a ``train: TrainSettings`` field).
        presets: named sets of defaults (``--preset NAME``), e.g. the published settings;
            keys are field names of the config or of its ``train`` settings.
        preset_help: one phrase per preset for ``--help``.
        input_streams, target_stream: what the trainer feeds the model and the criterion.
        size_stream, unit: how :class:`MinibatchSource` counts a minibatch.
        metric: how the criterion's metric is shown.
        selection: the figure of ``figures`` the report leads with, and whether lower is better.
        stop_on, stack_single: see below.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config: ClassVar[type]
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    preset_help: ClassVar[Mapping[str, str]] = {}
    input_streams: ClassVar[tuple[str, ...]] = ("features",)
    target_stream: ClassVar[str] = "labels"
    size_stream: ClassVar[str | None] = None
    unit: ClassVar[str] = "sequences"
    metric: ClassVar[Metric] = Metric()
    stop_on: ClassVar[tuple[str, str]] = ("val_loss", "min")
    """The epoch figure early stopping and the best weights follow (an entry of metrics.csv,
    e.g. ``"val_metric"``) and ``"min"`` or ``"max"``: which way is better."""
    stack_single: ClassVar[bool] = True
    """False: every tensor stream comes as a SequenceBatch, even from a source whose examples
    all have one step (models that run over the steps of every example)."""

    validation_optional: ClassVar[bool] = False
    """True: the validation part may be empty (a recipe that can train on all its training
    data); then each model trains all its epochs, keeps its last weights, and no validation
    loss is reported. False: an empty validation part is refused, as the other parts."""

    predict_streams: ClassVar[tuple[str, ...] | None] = None
    """The streams the model reads to predict (``None``: ``input_streams``). A model whose
    prediction is another pass than its training one (an encoder-decoder trained with the
    reference as decoder input, decoding greedily without it) predicts from these alone."""
    bucket: ClassVar[int | None] = None
    """Training minibatches drawn from buckets of this many minibatches of similar length
    (:class:`~rnnkit.data.MinibatchSource`'s ``bucket``; ``None``: no bucketing)."""

    # ------------------------------------------------------------------ hooks to implement
    @abstractmethod
    def load_data(self, config: C) -> RecipeData:
        """Read or make the examples of the three parts."""

    @abstractmethod
    def build_model(self, config: C, data: RecipeData) -> nn.Module:
        """A fresh, untrained model (called once per ensemble member, after seeding)."""

    @abstractmethod
    def criterion(self, config: C, data: RecipeData) -> Callable[[Any, Any], Any]:
        """``(output, target) -> (loss_sum, metric_sum)`` (see :mod:`rnnkit.training`)."""

    @abstractmethod
    def score(self, config: C, data: RecipeData, predictions: list[Any]) -> dict[str, float]:
        """The figures of the trained model on the test part, from its predictions."""

    def baselines(self, config: C, data: RecipeData) -> dict[str, dict[str, float]]:
        """Simple methods' figures on the same test part: ``{name: {figure: value}}``."""
        return {}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Example], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """One dict per example for the CSV: by default its ``target`` (when the example has
        the target stream) and the model's ``prediction``, as numbers (a list for several)."""
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            row: dict[str, Any] = {}
            if self.target_stream in example:
                row["target"] = _numbers(example[self.target_stream])
            row["prediction"] = _numbers(prediction)
            rows.append(row)
        return rows

    def prediction_table(
        self,
        info: Mapping[str, Any],
        ids: Sequence[str],
        examples: Sequence[Example],
        predictions: Sequence[Any],
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The ids and rows of a predictions CSV: by default one row per example, from
        :meth:`prediction_rows`; a recipe whose examples hold several predictions (one per
        step) may give a row, with its own id, to each."""
        return list(ids), self.prediction_rows(info, examples, predictions)

    @abstractmethod
    def read_inputs(
        self, info: Mapping[str, Any], config: C, paths: Sequence[Path]
    ) -> tuple[list[str], list[Example]]:
        """New inputs in the recipe's file format, for ``rnnkit predict``: ids and examples."""

    # ------------------------------------------------------------------ hooks with defaults
    def settings(self, config: C) -> TrainSettings:
        """The training settings inside ``config`` (its ``train`` field)."""
        return config.train  # type: ignore[attr-defined]

    def metric_for(self, config: C) -> Metric:
        """How the criterion's metric is shown for this config (default: :attr:`metric`; a
        recipe whose tasks measure different things, an error rate or a squared error, says
        which here)."""
        return self.metric

    def source(
        self, config: C, examples: Sequence[Example], *, training: bool, seed: int = 0
    ) -> MinibatchSource:
        """The minibatches over ``examples`` (shuffled and endless when ``training``)."""
        from rnnkit.data.minibatch import MinibatchSource

        return MinibatchSource.for_fit(
            examples,
            self.settings(config).minibatch_size
            if training
            else self.eval_minibatch_size(config, examples),
            training=training,
            unit=self.unit,
            size_stream=self.size_stream,
            seed=seed,
            stack_single=self.stack_single,
            bucket=self.bucket if training else None,
        )

    def eval_minibatch_size(self, config: C, examples: Sequence[Example]) -> int:
        """The minibatch size of validation and prediction (default: the training one). A
        recipe may read larger ones there: no graph is kept for a backward pass, and the
        figures are the same (the sums run in another order)."""
        return self.settings(config).minibatch_size

    def optimizer(self, config: C, model: nn.Module) -> Any:
        """Adam (AdamW when ``weight_decay`` > 0) at the settings' learning rate."""
        s = self.settings(config)
        return adam(model, s.learning_rate, s.weight_decay, decoupled=s.weight_decay > 0)

    def scheduler(self, config: C, optimizer: Any, steps: int) -> Any:
        """The learning-rate schedule over ``steps`` updates (``None`` for a constant rate)."""
        import torch

        s = self.settings(config)
        if s.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
        return None

    def epoch_size(self, config: C, data: RecipeData) -> int | None:
        """Samples per epoch: the config's ``epoch_size`` field when it has one, else ``None``
        (one sweep of the training part)."""
        value = getattr(config, "epoch_size", None)
        return value if isinstance(value, int) else None

    def fit_directly(self, config: C, model: nn.Module, data: RecipeData) -> bool:
        """Fit ``model`` (fresh from :meth:`build_model`) without gradient steps, e.g. in
        closed form; True when it did, and the trainer then does not run for it. Default:
        False (train)."""
        return False

    def callbacks(self, config: C, data: RecipeData) -> list[Callback]:
        """More callbacks for the trainer (after the harness's own)."""
        return []

    def combine(self, models: list[nn.Module]) -> nn.Module:
        """One model from an ensemble's members (the mean of their outputs)."""
        from rnnkit.layers import Average

        return models[0] if len(models) == 1 else Average(models)

    def plot(self, config: C, data: RecipeData, predictions: list[Any], run: RunDirectory) -> None:
        """Recipe plots beside the curves (never empty; none by default)."""

    def finish(
        self, config: C, data: RecipeData, model: nn.Module, run: RunDirectory
    ) -> dict[str, Any]:
        """Work with the trained model after the test figures (forecasts past the end of the
        data, a backtest): files into ``run``; the figures returned go into ``run.json``'s
        ``result`` (none by default)."""
        return {}

    def notes(self, config: C, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        """Sentences for the report under its table."""
        return []

    def train_settings_for(self, config: C, epochs: int) -> dict[str, Any]:
        """``Trainer`` options beyond the defaults (``clip_norm``)."""
        s = self.settings(config)
        return {"clip_norm": s.clip_norm}

    # ------------------------------------------------------------------ more commands
    actions: ClassVar[Mapping[str, str]] = {}
    """Commands beside training, ``rnnkit NAME ACTION ...`` (name -> one line of help)."""

    training_actions: ClassVar[frozenset[str]] = frozenset()
    """Actions whose parser starts as the training command's (``--preset``, ``--run-dir``
    defaulting to ``runs/NAME-ACTION``, ``--quiet`` and every config option, with the preset's
    defaults) before :meth:`add_action_arguments` adds the action's own; ``run_action`` builds
    the config with :func:`~rnnkit.recipes.options.config_from_args`."""

    def add_action_arguments(self, action: str, parser: Any) -> None:
        """The arguments of ``rnnkit NAME ACTION`` (an argparse parser)."""

    def run_action(self, action: str, args: Any) -> int:
        """Run ``rnnkit NAME ACTION``; returns the exit status."""
        raise ValueError(
            f"action: rnnkit {self.name} has no action {action!r}; it has {sorted(self.actions)}"
        )

    def default_preset(self, argv: Sequence[str]) -> str | None:
        """The preset used when ``--preset`` is not given (may depend on the input files)."""
        return None

    # ------------------------------------------------------------------ configs
    def config_from_run(self, values: Mapping[str, Any], data_info: Mapping[str, Any]) -> C:
        """The config recorded in a run's ``run.json`` (``values``), with any choice the run
        made while loading its data (``data_info``, run.json's ``data``) fixed, so that
        rebuilding the run's data (``rnnkit diagnose``) does not make it again."""
        return config_from_dict(self.config, values)


def _numbers(value: Any) -> Any:
    """A tensor (or the first of a tuple of them) as a number or a list of numbers."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    items = value.detach().reshape(-1).tolist()
    return items[0] if len(items) == 1 else items


# ---------------------------------------------------------------------------- the one path


def _set_threads(threads: int | None) -> int:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def _check_parts(data: RecipeData, validation_optional: bool = False) -> None:
    for name in ("train", "validation", "test"):
        if not getattr(data, name) and not (name == "validation" and validation_optional):
            raise ValueError(f"data: the {name} part is empty; give more data or change the split")
    if data.ids is not None and len(data.ids) != len(data.test):
        raise ValueError(
            f"data: expected one id per test example ({len(data.test)}), found {len(data.ids)}"
        )


def _train_member(
    recipe: Recipe[Any],
    config: Any,
    data: RecipeData,
    run: RunDirectory,
    member: int,
    epochs: int,
    budget: float | None,
    progress: bool,
) -> tuple[Any, Trainer, dict[str, Any]]:
    import torch

    from rnnkit.training import (
        CSVLogger,
        EarlyStopping,
        LearningRateLogger,
        PlateauSchedule,
        TimeBudget,
        Trainer,
        auto_progress,
    )

    settings = recipe.settings(config)
    seed = settings.seed + member
    torch.manual_seed(seed)
    model = recipe.build_model(config, data)
    if recipe.fit_directly(config, model, data):
        trainer = evaluator(recipe, config, data, model, recipe.input_streams, settings.device)
        facts = {
            "member": member + 1,
            "seed": seed,
            "epochs_run": 0,
            "steps": 0,
            "stop": "fitted without gradient steps",
            "best_epoch": None,
            "best_weights_kept": False,
            "time_budget_reached": False,
        }
        return model, trainer, facts
    optimizer = recipe.optimizer(config, model)
    train_source = recipe.source(config, data.train, training=True, seed=seed)
    validation = None
    if data.validation:
        validation = recipe.source(config, data.validation, training=False)
    epoch_size = recipe.epoch_size(config, data)
    steps_per_epoch = _steps_per_epoch(train_source, epoch_size, recipe.target_stream)
    scheduler = recipe.scheduler(config, optimizer, steps_per_epoch * epochs)
    callbacks: list[Any] = []
    if progress:
        metric = recipe.metric_for(config)
        callbacks += auto_progress(metric.name, metric.percent)
    # The best validation epoch's weights are kept when early stopping or a time budget can
    # end the run; otherwise the model is the one after its last epoch.
    keep_best = (settings.patience > 0 or budget is not None) and validation is not None
    monitor, mode = recipe.stop_on
    stopper = EarlyStopping(
        monitor, patience=settings.patience or epochs + 1, mode=mode, restore_best=keep_best
    )
    timer = TimeBudget(budget) if budget is not None else None
    callbacks.append(LearningRateLogger())
    if validation is not None:
        callbacks.append(stopper)
    if timer is not None:
        callbacks.append(timer)
    name = "metrics.csv" if member == 0 else f"metrics-{member + 1}.csv"
    callbacks.append(CSVLogger(run.path / name))
    callbacks += recipe.callbacks(config, data)
    if settings.schedule == "plateau":
        callbacks.append(PlateauSchedule(optimizer))
    trainer = Trainer(
        model,
        recipe.criterion(config, data),
        optimizer,
        input_streams=recipe.input_streams,
        target_stream=recipe.target_stream,
        lr_scheduler=scheduler,
        callbacks=callbacks,
        device=settings.device,
        **recipe.train_settings_for(config, epochs),
    )
    summary = trainer.fit(train_source, epochs=epochs, epoch_size=epoch_size, validation=validation)
    facts = {
        "member": member + 1,
        "seed": seed,
        "epochs_run": len(summary.history),
        "steps": summary.steps,
        "stop": summary.stop_reason,
        "best_epoch": stopper.best_epoch,
        "best_weights_kept": keep_best,
        f"best_{monitor}": stopper.best if math.isfinite(stopper.best) else None,
        "time_budget_reached": bool(timer is not None and timer.reached),
    }
    return model, trainer, facts


def _steps_per_epoch(source: MinibatchSource, epoch_size: int | None, target_stream: str) -> int:
    """Updates in one epoch: a sweep's minibatches, or as many as ``epoch_size`` label samples
    take (the trainer counts an epoch in samples of the target stream, which differ from the
    source's own count, its longest stream's steps, when there is one label a sequence)."""
    steps = max(1, source.minibatches_per_sweep)
    if epoch_size is None:
        return steps
    labels = sum(
        int(v.shape[0]) if getattr(v, "ndim", 0) > 0 else int(getattr(v, "num_samples", 1))
        for v in (example[target_stream] for example in source.examples)
    )
    return max(1, math.ceil(epoch_size * steps / max(1, labels)))


def adam(model: nn.Module, lr: float, weight_decay: float = 0.0, *, decoupled: bool = False) -> Any:
    """``torch.optim.Adam`` (``AdamW`` when ``decoupled``) over ``model``'s parameters, in its
    fused form when every parameter allows it: one kernel updates all of them, where the
    default form runs a handful of operations per tensor (for the 8 tensors of the demand
    forecaster of docs/forecast.md, 0.044 ms an update against 0.147 ms on one CPU thread).
    The two forms compute the same update, to floating-point rounding."""
    import torch
    from torch.nn.parameter import UninitializedParameter

    params = list(model.parameters())
    fused = bool(params) and all(
        not isinstance(p, UninitializedParameter)
        and p.is_floating_point()
        and p.device.type in ("cpu", "cuda")
        for p in params
    )
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def evaluator(
    recipe: Recipe[Any],
    config: Any,
    data: RecipeData,
    model: nn.Module,
    input_streams: Sequence[str],
    device: str | None,
) -> Trainer:
    """A trainer that only evaluates and predicts ``model`` (its optimiser never steps)."""
    import torch

    from rnnkit.training import Trainer

    return Trainer(
        model,
        recipe.criterion(config, data),
        torch.optim.SGD(model.parameters(), lr=0.0),
        input_streams=input_streams,
        target_stream=recipe.target_stream,
        device=device,
    )


def _evaluate(trainer: Trainer, recipe: Recipe[Any], config: Any, examples: Any) -> float:
    return float(trainer.evaluate(recipe.source(config, examples, training=False))["loss"])


def run_recipe(
    recipe: Recipe[C],
    config: C,
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train, evaluate, predict and write the run directory (see the module docstring).

    Prints progress (``progress=False``: none) and a few lines through ``log`` (default: print
    to stdout); returns the figures, also written to ``run.json``.
    """
    import torch

    from rnnkit.recipes.rundir import RunDirectory, describe_inputs, machine

    say = log if log is not None else (lambda line: print(line, flush=True))
    settings = recipe.settings(config)
    started = time.perf_counter()
    threads = _set_threads(settings.threads)
    # Building the first torch optimizer imports torch._dynamo (about 1 s, once per process);
    # done here it counts as set-up (data_seconds), as the peers' libraries import it before
    # their training clocks start, and train_seconds is the training alone.
    import torch._dynamo

    torch.manual_seed(settings.seed)
    data = recipe.load_data(config)
    _check_parts(data, recipe.validation_optional)
    data_seconds = time.perf_counter() - started
    if data.description:
        say(data.description)
    say(
        f"{len(data.train)} training, {len(data.validation)} validation and {len(data.test)} "
        f"test examples"
    )
    run = RunDirectory(run_dir)
    run.clear()
    members: list[Any] = []
    facts: list[dict[str, Any]] = []
    epochs = settings.member_epochs
    train_start = time.perf_counter()
    trainer: Trainer | None = None
    for member in range(settings.ensemble):
        budget = settings.time_budget
        if budget is not None and settings.ensemble > 1:
            left = budget - (time.perf_counter() - train_start)
            budget = max(left / (settings.ensemble - member), 1e-3)
        if settings.ensemble > 1:
            say(f"model {member + 1} of {settings.ensemble}: {epochs} epochs")
        model, trainer, fact = _train_member(
            recipe, config, data, run, member, epochs, budget, progress
        )
        members.append(model)
        facts.append(fact)
        if fact["time_budget_reached"]:
            kept = f"best weights (epoch {fact['best_epoch']})" if data.validation else "weights"
            say(
                f"time budget reached: model {member + 1} stopped after epoch "
                f"{fact['epochs_run']}, its {kept} kept"
            )
    train_seconds = time.perf_counter() - train_start
    assert trainer is not None
    model = recipe.combine(members)
    if model is not members[0]:
        trainer = evaluator(recipe, config, data, model, recipe.input_streams, settings.device)
    evaluate_start = time.perf_counter()
    val_loss = _evaluate(trainer, recipe, config, data.validation) if data.validation else None
    test_loss = _evaluate(trainer, recipe, config, data.test)
    predictor = trainer
    if recipe.predict_streams is not None:
        predictor = evaluator(recipe, config, data, model, recipe.predict_streams, settings.device)
    predictions = predictor.predict(recipe.source(config, data.test, training=False))
    figures: dict[str, Any] = dict(recipe.score(config, data, predictions))
    baselines = recipe.baselines(config, data)
    evaluate_seconds = time.perf_counter() - evaluate_start

    run.save_model(model)
    run.write_predictions(
        *recipe.prediction_table(data.info, data.test_ids(), data.test, predictions)
    )
    run.plot_curves(title=f"rnnkit {recipe.name}")
    recipe.plot(config, data, predictions, run)
    finish_start = time.perf_counter()
    finished = recipe.finish(config, data, model, run)
    finish_seconds = time.perf_counter() - finish_start
    reached = any(f["time_budget_reached"] for f in facts)
    result = {
        "recipe": recipe.name,
        **figures,
        **finished,
        "baselines": baselines,
        "val_loss": val_loss,
        "test_loss": test_loss,
        "epochs": [f["epochs_run"] for f in facts],
        "time_budget_reached": reached,
    }
    timings = {
        "data_seconds": round(data_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "evaluate_seconds": round(evaluate_seconds, 3),
        "finish_seconds": round(finish_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    run.write_run_json(
        {
            "recipe": recipe.name,
            "rnnkit_version": _version(),
            "config": config_to_dict(config),
            "inputs": describe_inputs(data.inputs),
            "data": data.info,
            "result": result,
            "training": facts,
            "timings": timings,
            "seed": settings.seed,
            "threads": threads,
            "machine": machine(),
        }
    )
    notes = list(recipe.notes(config, data, figures))
    if reached:
        notes.append(
            f"The time budget of {settings.time_budget:g} s stopped training; the weights of "
            + ("the best validation epoch were kept." if data.validation else "its end were kept.")
        )
    for fact in facts:
        if fact["stop"] and fact["stop"].startswith("early stopping"):
            notes.append(f"Model {fact['member']}: {fact['stop']}; its best weights were kept.")
    run.write_report(
        f"rnnkit {recipe.name}",
        figures,
        baselines,
        notes=notes,
        facts={
            "validation loss": val_loss,
            "test loss": test_loss,
            "training seconds": round(train_seconds, 1),
            "epochs": ", ".join(str(f["epochs_run"]) for f in facts),
        },
    )
    summary = ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items() if _is_number(v))
    say(f"test: {summary}")
    for name, values in baselines.items():
        say(f"  {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()))
    say(f"run directory: {run.path}")
    return RunResult(result, run.path, model, predictions, data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _version() -> str:
    from rnnkit.recipes import version

    return version()


# ---------------------------------------------------------------------------- saved runs


def load_run(run_dir: str | Path) -> tuple[Recipe[Any], Any, dict[str, Any]]:
    """The recipe, config and ``run.json`` of a run directory."""
    from rnnkit.recipes import get_recipe
    from rnnkit.serialization import read_json

    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"run_dir: expected {path} (written by every rnnkit recipe), not found"
        )
    info = read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("recipe"), str):
        raise ValueError(f"{path}: expected an object with a 'recipe' name")
    recipe = get_recipe(info["recipe"])
    config = recipe.config_from_run(info.get("config", {}), info.get("data", {}))
    return recipe, config, info


def predict_files(
    run_dir: str | Path, paths: Sequence[Path]
) -> tuple[list[str], list[dict[str, Any]]]:
    """``rnnkit predict``: the rows of a predictions CSV for new inputs of a saved run."""
    recipe, config, info = load_run(run_dir)
    ids, examples = recipe.read_inputs(info.get("data", {}), config, paths)
    if not examples:
        raise ValueError(f"{', '.join(map(str, paths))}: no examples to predict")
    return predict_examples(run_dir, ids, examples)


def predict_examples(
    run_dir: str | Path, ids: Sequence[str], examples: Sequence[Example]
) -> tuple[list[str], list[dict[str, Any]]]:
    """The ids and rows of a predictions CSV for examples already made (by a recipe's
    action, say) in the form its :meth:`Recipe.read_inputs` gives."""

    from rnnkit.saving import load

    recipe, config, info = load_run(run_dir)
    model = load(run_dir)
    data = RecipeData([], [], [], info=info.get("data", {}))
    streams = recipe.predict_streams or recipe.input_streams
    trainer = evaluator(recipe, config, data, model, streams, None)
    predictions = trainer.predict(_input_source(recipe, config, examples))
    return recipe.prediction_table(info.get("data", {}), ids, examples, predictions)


def diagnose_run(run_dir: str | Path, out_png: str | Path, examples: int = 200) -> Any:
    """``rnnkit diagnose``: the gradient flow of a saved run's model on (up to ``examples`` of)
    its validation part (its training part when a recipe with ``validation_optional`` gave
    none), rebuilt by its recipe from the files and settings in ``run.json``;
    the plot goes to ``out_png``. Returns the :class:`~rnnkit.diagnostics.GradientFlow`."""
    from rnnkit.diagnostics import gradient_flow
    from rnnkit.saving import load
    from rnnkit.training import count_samples

    recipe, config, _ = load_run(run_dir)
    data = recipe.load_data(config)
    part = data.validation if data.validation or not recipe.validation_optional else data.train
    if not part:
        raise ValueError(f"{run_dir}: the run's recipe gives no validation examples")
    # one minibatch holding all the chosen examples
    source = _input_source(recipe, config, list(part)[:examples], minibatch_size=1 << 62)
    mb = next(iter(source))
    inputs = tuple(mb[name] for name in recipe.input_streams)
    target = mb[recipe.target_stream]
    criterion = recipe.criterion(config, data)
    model = load(run_dir)

    def loss(output: Any) -> Any:
        return criterion(output, target)[0] / count_samples(target)

    flow = gradient_flow(model, inputs if len(inputs) > 1 else inputs[0], loss)
    flow.plot(out_png, title=f"{Path(run_dir).name}: gradient flow (loss {flow.loss:.4g})")
    return flow


def _input_source(
    recipe: Recipe[Any], config: Any, examples: Iterable[Example], minibatch_size: int | None = None
) -> Any:
    from rnnkit.data.minibatch import MinibatchSource

    examples = list(examples)
    return MinibatchSource.for_fit(
        examples,
        minibatch_size or recipe.eval_minibatch_size(config, examples),
        training=False,
        unit=recipe.unit,
        size_stream=recipe.size_stream,
        stack_single=recipe.stack_single,
    )


def write_csv(path: Path | None, ids: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as CSV with an ``id`` column first (``path=None``: standard output)."""
    from rnnkit.recipes.rundir import csv_text

    text = csv_text(ids, rows)
    if path is None:
        sys.stdout.write(text)
    else:
        path.write_text(text, encoding="utf-8")
