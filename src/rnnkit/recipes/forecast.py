"""``rnnkit forecast``: forecast columns of a CSV file the next ``horizon`` steps, beside two
baselines on the same targets: persistence (the last observed value repeated over the horizon)
and seasonal naive (the value one season before each target step).

The series is split in time order (0.8 / 0.1 / 0.1) and scaled with the training part's
statistics; missing values are filled for the input (last observation), flagged by a mask and
left out of the loss and of every error. ``--model window``: ``Fold(cell) >> Dense(hidden, H
n)`` on each input window, inputs and targets relative to the window's last value; with
``--known`` columns each window is followed by its ``H`` horizon steps carrying their known
values; ``--residual`` learns the difference from seasonal naive, which is added back.
``--patch P`` (default: the largest of 1, 2, 4 and 8 that leaves at least 16 steps; 1 for
the residual model) has the cell read each window ``P`` steps at a time, ``Segments(P) >>
Fold(cell)`` (SegRNN's segments; zeros in front where the window's length is not a multiple
of ``P``).
``--model stream``: ``Recurrence(cell) >> Dense`` forecasts the next ``H`` steps at every step,
trained on chunks of ``input_length`` steps and tested from every origin whose horizon lies in
the test part, the state carried from the first step. ``--model auto`` (default): the window,
stream and residual window models are each trained briefly (a quarter of the epochs, at least
100 updates, never more than the full run) and the one with the lowest validation MASE
(averaged over the targets) is trained with the full settings. Early stopping keeps the
weights of the best validation epoch. Figures: MAE, MAPE % and MASE (over the training part's
in-sample seasonal-naive MAE) per target, on the observed validation and test values; the
report says when the model does not beat a baseline on the validation part, and when the
training part shows no seasonality at ``--season``.

Also (docs/forecast.md): ``--loss quantile|gaussian|student-t`` for probabilistic forecasts,
whose ``--level`` intervals are calibrated on the validation part (``--calibrate``); ``--revin``
(reversible instance normalisation, chosen on validation by default); ``--series-id`` for many
series in one long-format table (one global model, ``--past`` and ``--static`` covariates);
``--backtest`` (rolling origins over the test part, ``--refit-every``); and every run writes
``forecast.csv`` and ``future.png``, the forecast past the end of the data.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.forecast_models import (
    CANDIDATES,
    candidates,
    chosen_config,
    info_head,
    loss_info,
    selection_line,
    spec_of,
    with_choice,
)
from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from torch import nn

    from rnnkit.forecasting import Forecasts, PreparedSeries
    from rnnkit.recipes.rundir import RunDirectory
    from rnnkit.training import Callback

__all__ = ["RECIPE", "ForecastConfig", "ForecastRecipe", "co2_csv"]


def co2_csv() -> Path:
    """The weekly Mauna Loa CO2 series shipped inside the package (``rnnkit demo``)."""
    return Path(str(resources.files("rnnkit") / "datasets" / "co2-weekly.csv"))


LOSSES = ("mse", "quantile", "gaussian", "student-t")
"""``--loss``: a point forecast, or a probabilistic head (:mod:`rnnkit.probabilistic`)."""


AUTO_PATCHES = (1, 2, 4, 8)
"""``--patch 0``: the window model reads the largest of these many steps at a time ..."""
AUTO_PATCH_STEPS = 16
"""... that leaves its cell at least this many steps (docs/forecast.md has the measurements
on the validation parts this rule comes from)."""


def window_steps(config: ForecastConfig) -> int:
    """The steps of one window model input: the input window, then its horizon steps when
    known covariates are given."""
    return config.input_length + (config.horizon if config.known else 0)


def patch_length(config: ForecastConfig) -> int:
    """The steps the window model's cell reads at a time (``--patch``, 0 resolved); 1 for the
    stream model, and by default for the residual window model (``--residual``)."""
    if config.model == "stream":
        return 1
    if config.patch:
        return config.patch
    if config.residual:
        return 1
    steps = window_steps(config)
    return max(p for p in AUTO_PATCHES if p == 1 or -(-steps // p) >= AUTO_PATCH_STEPS)


@dataclass(frozen=True)
class ForecastConfig:
    """One forecast run (see the module docstring)."""

    csv: Path = option(help="the CSV file, with a header row", positional=True)
    target: tuple[str, ...] = option(help="the column(s) to forecast, comma-separated")
    known: tuple[str, ...] = option(
        (), "columns known in advance over the horizon (a calendar, a weather forecast)"
    )
    time_column: str | None = option(None, "the column of timestamps (none: rows are the steps)")
    time_format: str | None = option(
        None,
        "strptime format of the timestamps, e.g. %%Y%%m%%d (default: none, ISO 8601; "
        "%%Y%%m%%d under --preset co2)",
    )
    model: str = option(
        "auto",
        "window: Fold over each input window; stream: Recurrence, a forecast at every step; "
        "auto: window, stream or residual window, whichever a short run finds best on the "
        "validation part",
        choices=("auto", "window", "stream"),
    )
    residual: bool = option(
        False, "window model: learn the difference from seasonal naive (names the model)"
    )
    input_length: int = option(
        104, "steps of the input window (stream: of a training chunk)", low=1
    )
    patch: int = option(
        0,
        "window model: steps the recurrent cell reads at a time (the window in segments of "
        "this many steps, as SegRNN); 0: the largest of 1, 2, 4, 8 that leaves the cell at "
        f"least {AUTO_PATCH_STEPS} steps (the input window, and the horizon with --known); "
        "1 with --residual",
        low=0,
    )
    horizon: int = option(52, "steps to forecast", low=1)
    season: int = option(52, "steps in a season (the seasonal-naive forecast)", low=1)
    stride: int = option(1, "steps between windows and between test origins", low=1)
    loss: str = option(
        "mse",
        "mse: point forecasts; quantile: the --quantiles (pinball loss); gaussian, student-t: a "
        "distribution per step (negative log-likelihood); the last three report --level "
        "intervals, coverage, pinball loss and CRPS",
        choices=LOSSES,
    )
    quantiles: tuple[float, ...] = option(
        (0.1, 0.5, 0.9), "--loss quantile: the quantile levels, comma-separated"
    )
    level: float = option(
        0.8,
        "the central interval reported (0.8: from the 0.1 to the 0.9 quantile)",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    calibrate: str = option(
        "validation",
        "probabilistic losses: stretch or shrink the --level interval, per horizon step, so "
        "that it covers --level of the validation targets (split conformal), or off",
        choices=("validation", "off"),
    )
    revin: str = option(
        "auto",
        "reversible instance normalisation of each input window (window model): on, off, or "
        "auto: with and without, whichever a short run finds best on the validation part",
        choices=("auto", "on", "off"),
    )
    backtest: bool = option(
        False,
        "also forecast from every --stride-th origin across the test part (the input windows "
        "reaching back into the validation part), with figures per horizon step and target: "
        "backtest.csv; long format: every origin of each series' test part (one, unless "
        "--test-steps is longer than --horizon), figures per step and per series",
    )
    refit_every: int = option(
        0, "--backtest: train further on the data up to every k-th origin (0: never)", low=0
    )
    series_id: str | None = option(
        None,
        "long format: the column of series ids (one row per series and time); one global "
        "model over every series, each scaled with its own training part",
    )
    past: tuple[str, ...] = option(
        (), "long format: covariates observed only up to the present (input window only)"
    )
    static: tuple[str, ...] = option((), "long format: covariates constant within a series")
    test_steps: int = option(
        0,
        "long format: the last N steps of each series are its test part (0: --horizon); "
        "N > --horizon gives N - H + 1 test windows per series, origins one step apart, "
        "which --backtest reports origin by origin",
        low=0,
    )
    short: str = option(
        "pad",
        "long format: a series shorter than the input window is padded in front (masked) or "
        "dropped from the parts it is too short for",
        choices=("pad", "drop"),
    )
    panel_scale: int = option(
        4,
        "long format: minibatches of this many times --minibatch-size windows at this many "
        "times --learning-rate (1: as for one series)",
        low=1,
    )
    cell: str = option("lstm", "the recurrent cell", choices=("lstm", "gru"))
    hidden_size: int = option(32, "hidden units", low=1)
    split: tuple[float, ...] = option(
        (0.8, 0.1, 0.1), "shares of the train, validation and test parts", cli=False
    )
    train: TrainSettings = option(
        TrainSettings(epochs=20, minibatch_size=32, learning_rate=0.005, patience=5),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if not self.target:
            raise ValueError("target: expected one column name or more, found none")
        both = sorted(set(self.target) & set(self.known))
        if both:
            raise ValueError(f"known: expected columns that are not targets, found {both}")
        if self.residual and self.model == "stream":
            raise ValueError(
                "residual: a window-model option (--model window, or auto, which it then "
                f"names), found model {self.model!r}"
            )
        if self.model == "stream" and self.patch > 1:
            raise ValueError(
                f"patch: a window-model option (the stream model reads one step at a time), "
                f"found {self.patch} with model 'stream'"
            )
        if self.patch > self.input_length:
            raise ValueError(
                f"patch: expected at most input_length = {self.input_length} steps, found "
                f"{self.patch}"
            )
        if self.model == "stream" and self.input_length < 2:
            raise ValueError(
                f"input_length: the stream model trains on chunks of >= 2 steps, found "
                f"{self.input_length}"
            )
        if self.season > self.input_length:
            raise ValueError(
                f"season: expected at most input_length = {self.input_length} (seasonal naive "
                f"reads one season back inside the window), found {self.season}"
            )
        if self.loss == "quantile":
            from rnnkit.probabilistic import check_quantiles

            levels = check_quantiles(self.quantiles)
            low, high = (1 - self.level) / 2, (1 + self.level) / 2
            if not (levels[0] <= low + 1e-9 and high - 1e-9 <= levels[-1]):
                raise ValueError(
                    f"level: expected an interval within the quantiles {list(levels)}, found "
                    f"{self.level} (from the {low:g} to the {high:g} quantile)"
                )
        if self.refit_every and not self.backtest:
            raise ValueError(
                f"refit_every: a --backtest option, found {self.refit_every} without --backtest"
            )
        if self.series_id is None:
            for name in ("past", "static"):
                if getattr(self, name):
                    raise ValueError(
                        f"{name}: a long-format option (with --series-id), found "
                        f"{list(getattr(self, name))}"
                    )
        elif self.model == "stream" or self.residual:
            raise ValueError(
                "series_id: long format trains the window model (--model window or auto), found "
                + ("--residual" if self.residual else f"model {self.model!r}")
            )
        if self.series_id is not None and self.refit_every:
            raise ValueError(
                f"refit_every: with --series-id the backtest forecasts every origin of the "
                f"test part with the trained model (refitting one global model series by "
                f"series is not supported); found {self.refit_every}"
            )
        if self.test_steps and self.series_id is None:
            raise ValueError(
                f"test_steps: a long-format option (with --series-id; a single table is split "
                f"by --split), found {self.test_steps}"
            )
        if self.test_steps and self.test_steps < self.horizon:
            raise ValueError(
                f"test_steps: expected 0 or at least horizon = {self.horizon} steps (one "
                f"forecast window), found {self.test_steps}"
            )
        if self.revin == "on" and (self.model == "stream" or self.residual):
            raise ValueError(
                "revin: normalises the plain window model's inputs, found "
                + ("--residual" if self.residual else f"model {self.model!r}")
            )
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(
                f"split: expected three positive shares summing to 1, found {self.split}"
            )


CO2 = {"csv": co2_csv(), "target": ("co2",), "time_column": "date", "time_format": "%Y%m%d"}


SCREEN_SHARE = 4
"""A candidate's short run: 1 / SCREEN_SHARE of the epochs (and of the time budget) ..."""
SCREEN_UPDATES = 100
"""... but at least this many updates, and never more epochs than the full run."""

EVAL_SCALE = 16
"""Validation and prediction read this many times the training minibatch of windows ..."""
EVAL_ACTIVATIONS = 1 << 24
"""... unless a minibatch's window steps times hidden units would pass this (16M floats,
64 MB of outputs a forward pass keeps)."""


class ForecastRecipe(Recipe[ForecastConfig]):
    name = "forecast"
    summary = "forecast columns of a CSV file against persistence and seasonal naive"
    description = __doc__ or ""
    config = ForecastConfig
    presets = {"co2": CO2, "co2-long": {**CO2, "epochs": 40, "patience": 10}}
    preset_help = {
        "co2": "the CO2 series shipped with rnnkit (rnnkit demo)",
        "co2-long": "the same, 40 epochs, patience 10 (docs/results.md)",
    }
    target_stream = "labels"
    metric = Metric("mse")

    def settings(self, config: ForecastConfig) -> TrainSettings:
        """``config.train``; in long format (several series) with ``panel_scale`` k > 1,
        minibatches of k times as many windows at k times the learning rate (a global model
        sees more of the series in each update; docs/forecast.md has the validation figures
        the default comes from)."""
        s, k = config.train, config.panel_scale
        if config.series_id is None or k == 1:
            return s
        return dataclasses.replace(
            s, minibatch_size=s.minibatch_size * k, learning_rate=s.learning_rate * k
        )

    def eval_minibatch_size(self, config: ForecastConfig, examples: Sequence[Any]) -> int:
        """16 times the training minibatch (512 windows at the default 32), fewer where a
        window's steps times ``hidden_size`` would pass ``EVAL_ACTIVATIONS`` values a
        minibatch (the outputs a forward pass keeps), never fewer than the training size."""
        size = self.settings(config).minibatch_size
        features = examples[0].get("features") if examples else None
        steps = features.shape[0] if features is not None else 1
        room = EVAL_ACTIVATIONS // max(1, steps * config.hidden_size)
        return max(size, min(EVAL_SCALE * size, room))

    def config_from_run(
        self, values: Mapping[str, Any], data_info: Mapping[str, Any]
    ) -> ForecastConfig:
        """The run's config with ``--model auto``'s choice (run.json's ``data.model`` and
        ``data.residual``) in its place: rebuilding the data screens nothing again."""
        config = super().config_from_run(values, data_info)
        if isinstance(data_info.get("model"), str):
            return chosen_config(config, data_info)
        return config

    def load_data(self, config: ForecastConfig) -> RecipeData:
        import numpy as np

        from rnnkit import forecasting as fc
        from rnnkit.data.timeseries import load_series
        from rnnkit.recipes.forecast_outputs import future_part

        if config.series_id is not None:
            from rnnkit.recipes.forecast_long import load_long

            return load_long(self, config)
        columns = [*config.target, *config.known]
        whole = load_series(config.csv, config.time_column, columns, time_format=config.time_format)
        series, ahead = future_part(whole, len(config.target), len(config.known))
        data = fc.prepare_series(series, config.target, config.known, config.split, config.horizon)
        scales = fc.mase_scales(data, config.target, config.season)
        selection = None
        names = candidates(config)
        if len(names) > 1:

            def parts_for(candidate: ForecastConfig) -> RecipeData:
                spec = spec_of(candidate)
                return RecipeData(
                    *fc.part_examples(data, spec),
                    info=_model_info(candidate, data, scales),
                    extra={"validation": fc.validation_examples(data, spec)},
                )

            selection = self.select(config, names, parts_for)
        model, residual, revin = CANDIDATES[selection["chosen"] if selection else names[0]]
        chosen = with_choice(config, model, residual, revin)
        train, val, test = fc.part_examples(data, spec_of(chosen))
        timed = series.times is not None
        info: dict[str, Any] = {
            "model": model,
            "residual": residual,
            "revin": revin,
            **loss_info(config),
            "targets": list(config.target),
            "known": list(config.known),
            "horizon": config.horizon,
            "time_unit": fc.time_unit(data.clock[0][: len(series)]) if timed else None,
            "scaler": fc.scaler_to_dict(data.scaler),
            "mase_scale": scales,
            "steps": [len(p) for p in data.parts],
            "selection": selection,
            "seasonality": seasonality(data, config),
        }
        known = f", known in advance {list(config.known)}" if config.known else ""
        lines = [
            f"{config.csv.name}: {len(series)} steps of {list(config.target)}{known}, "
            f"{int(np.isnan(series.values).sum())} missing (filled for the input, flagged by a "
            "mask, left out of every error); parts in time order "
            f"{'/'.join(str(len(p)) for p in data.parts)} steps",
            *([selection_line(selection)] if selection else []),
            *seasonality_lines(info["seasonality"], config),
        ]
        return RecipeData(
            train,
            val,
            test,
            inputs=[config.csv],
            info=info,
            description="\n".join(lines),
            extra={
                "validation": fc.validation_examples(data, spec_of(chosen)),
                "members": [],
                "future": (whole, ahead),
                "prepared": data,
            },
        )

    def select(
        self,
        config: ForecastConfig,
        names: Sequence[str],
        parts_for: Callable[[ForecastConfig], RecipeData],
    ) -> dict[str, Any]:
        """``--model auto`` and ``--revin auto``: each candidate trained briefly
        (:data:`SCREEN_SHARE`, :data:`SCREEN_UPDATES`), scored on the validation part; the
        lowest mean validation MASE over the targets is chosen. ``parts_for(candidate)``: the
        candidate's examples, ``info`` and ``extra["validation"]``."""
        started = time.perf_counter()
        screened: dict[str, Any] = {}
        for name in names:
            model, residual, revin = CANDIDATES[name]
            if model == "stream" and config.input_length < 2:
                continue  # the stream model trains on chunks of >= 2 steps
            candidate = with_choice(config, model, residual, revin)
            screened[name] = self._screen(candidate, parts_for(candidate), len(names))
        chosen = min(screened, key=lambda name: screened[name]["score"])
        return {
            "rule": "lowest validation MASE, averaged over the targets, after a short run "
            f"(1/{SCREEN_SHARE} of the epochs, at least {SCREEN_UPDATES} updates, at most all "
            "the epochs)",
            "candidates": screened,
            "chosen": chosen,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _screen(self, config: ForecastConfig, part: RecipeData, count: int) -> dict[str, Any]:
        """One candidate's short run and its validation figures."""
        import torch

        from rnnkit.training import EarlyStopping, PlateauSchedule, TimeBudget, Trainer

        started = time.perf_counter()
        s = config.train
        train, val = part.train, part.validation
        torch.manual_seed(s.seed)
        model = self.build_model(config, part)
        optimizer = self.optimizer(config, model)
        source = self.source(config, train, training=True, seed=s.seed)
        steps = max(1, source.minibatches_per_sweep)
        epochs = min(
            s.member_epochs,
            max(math.ceil(s.member_epochs / SCREEN_SHARE), math.ceil(SCREEN_UPDATES / steps)),
        )
        keep_best = s.patience > 0 or s.time_budget is not None  # as the full run keeps them
        stopper = EarlyStopping(patience=s.patience or epochs + 1, restore_best=keep_best)
        callbacks: list[Any] = [stopper]
        if s.time_budget is not None:
            callbacks.append(TimeBudget(s.time_budget / SCREEN_SHARE / count))
        if s.schedule == "plateau":
            callbacks.append(PlateauSchedule(optimizer))
        trainer = Trainer(
            model,
            self.criterion(config, part),
            optimizer,
            input_streams=self.input_streams,
            target_stream=self.target_stream,
            lr_scheduler=self.scheduler(config, optimizer, steps * epochs),
            callbacks=callbacks,
            device=s.device,
            **self.train_settings_for(config, epochs),
        )
        summary = trainer.fit(
            source, epochs=epochs, validation=self.source(config, val, training=False)
        )
        examples = part.extra["validation"]
        predictions = trainer.predict(self.source(config, examples, training=False))
        result = self.forecasts_in_units(part.info, examples, predictions)
        figures = self._figures(
            config, part, result.pred, result.truth, "validation ", series_of(examples)
        )
        return {
            "score": _mean_mase(figures, config),
            "validation": figures,
            "epochs": len(summary.history),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def build_model(self, config: ForecastConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import GRUCell, LSTMCell
        from rnnkit.layers.revin import RevINForecaster
        from rnnkit.layers.sequence import Segments
        from rnnkit.recurrence import Fold, Recurrence

        config = chosen_config(config, data.info)
        cell = LSTMCell if config.cell == "lstm" else GRUCell
        n, hidden = len(config.target), config.hidden_size
        recurrence = Fold if config.model == "window" else Recurrence
        inputs, patch = data.info.get("inputs", _inputs(config)), patch_length(config)
        model = recurrence(cell(inputs * patch, hidden)) >> _head(config, hidden)
        if patch > 1:
            model = Segments(patch) >> model
        if config.revin == "on":
            # a head's scale must stay positive: no learned (possibly negative) RevIN gain
            return RevINForecaster(model, targets=n, affine=config.loss == "mse")
        return model

    def criterion(self, config: ForecastConfig, data: RecipeData) -> Any:
        from rnnkit.forecasting import masked_squared_error
        from rnnkit.training import Criterion

        if config.loss == "mse":
            return Criterion(masked_squared_error, masked_squared_error)
        head: Any = _head(config, 1)
        return Criterion(head.loss, head.loss)

    def callbacks(self, config: ForecastConfig, data: RecipeData) -> list[Callback]:
        """One that predicts the validation forecasts (:func:`validation_examples`) with each
        trained model, its best weights restored, for the validation figures."""
        return [_validation_forecasts(self, config, data)]

    def forecasts_in_units(
        self,
        info: Mapping[str, Any],
        examples: Sequence[Any],
        predictions: Sequence[Any] | None,
        residual: bool | None = None,
    ) -> Forecasts:
        from rnnkit.forecasting import forecasts

        if predictions is not None and info.get("loss", "mse") != "mse":
            head = info_head(info)
            predictions = [head.point(_tensor(p)) for p in predictions]  # type: ignore[operator]
        if "series_scalers" in info:
            return _per_series_forecasts(info, examples, predictions, residual)
        scaler = info["scaler"]
        index = [scaler["columns"].index(t) for t in info["targets"]]
        return forecasts(
            examples,
            predictions,
            horizon=info["horizon"],
            center=_at(scaler["center"], index),
            scale=_at(scaler["scale"], index),
            residual=info["residual"] if residual is None else residual,
        )

    def probabilistic_in_units(
        self,
        info: Mapping[str, Any],
        examples: Sequence[Any],
        predictions: Sequence[Any],
        calibrated: bool = True,
    ) -> dict[str, Any]:
        """A probabilistic run's forecasts in the series' units: ``lower`` and ``upper``
        ``[O, H, n]`` (the ``level`` interval), ``quantiles`` ``[O, H, n, Q]`` (at the
        ``quantiles`` levels) and, for a distribution head, ``loc``, ``scale`` (and ``df``);
        every quantity a positive affine map of the head's (quantiles are equivariant), so
        each goes through :meth:`forecasts_in_units` as a point forecast would. With
        ``calibrated`` and the run's ``interval_scale`` (``--calibrate validation``, set by
        :meth:`score`), the interval is stretched about the point forecast by those factors,
        one per target and horizon step."""
        import numpy as np

        from rnnkit.probabilistic import scale_interval

        head: Any = info_head(info)
        outputs = [_tensor(p) for p in predictions]

        def units(values: list[Any]) -> np.ndarray:
            raw = {**info, "loss": "mse"}  # the values are point-like already
            pred = self.forecasts_in_units(raw, examples, [v.numpy() for v in values]).pred
            assert pred is not None
            return pred

        bounds = [head.interval(o, info["level"]) for o in outputs]
        out: dict[str, Any] = {
            "lower": units([b[0] for b in bounds]),
            "upper": units([b[1] for b in bounds]),
        }
        factors = info.get("interval_scale")
        if calibrated and factors is not None:
            center = self.forecasts_in_units(info, examples, predictions).pred
            assert center is not None
            for j, factor in enumerate(factors):
                out["lower"][..., j], out["upper"][..., j] = scale_interval(
                    center[..., j], out["lower"][..., j], out["upper"][..., j], factor
                )
        levels = list(info["quantiles"])
        out["quantiles"] = np.stack(
            [units([head.quantile(o, q) for o in outputs]) for q in levels], axis=-1
        )
        if info["loss"] != "quantile":
            # units(x) - units(0) is x times the target's scale: the unit of a spread
            out["loc"] = units([o[..., 0] for o in outputs])
            zero = units([o[..., 0] * 0 for o in outputs])
            out["scale"] = units([o[..., 1] for o in outputs]) - zero
            if info["loss"] == "student-t":
                one = units([o[..., 0] * 0 + 1 for o in outputs]) - zero
                out["df"] = (units([o[..., 2] for o in outputs]) - zero) / one
        return out

    def _interval_figures(
        self,
        config: ForecastConfig,
        info: Mapping[str, Any],
        values: Mapping[str, Any],
        truth: Any,
        part: str = "",
    ) -> dict[str, float]:
        """Per target: ``coverage`` and ``width`` of the ``level`` interval, the mean pinball
        loss at the ``quantiles`` and the CRPS (closed form for a distribution head, from the
        quantiles for a quantile head), in the series' units over the observed targets."""
        from rnnkit import probabilistic as pr

        out: dict[str, float] = {}
        for j, name in enumerate(config.target):
            y = truth[..., j]
            low, high = values["lower"][..., j], values["upper"][..., j]
            q = values["quantiles"][..., j, :]
            if info["loss"] == "quantile":
                crps = pr.crps_from_quantiles(y, q, info["quantiles"])
            elif info["loss"] == "gaussian":
                crps = pr.crps_gaussian(y, values["loc"][..., j], values["scale"][..., j])
            else:
                crps = pr.crps_student_t(
                    y, values["loc"][..., j], values["scale"][..., j], values["df"][..., j]
                )
            prefix = part + ("" if len(config.target) == 1 else f"{name} ")
            out[f"{prefix}coverage"] = pr.interval_coverage(y, low, high)
            out[f"{prefix}width"] = pr.interval_width(y, low, high)
            out[f"{prefix}pinball"] = pr.mean_pinball_loss(y, q, info["quantiles"])
            out[f"{prefix}crps"] = crps
        return out

    def _persistence(self, info: Mapping[str, Any], examples: Sequence[Any]) -> Forecasts:
        """The last observed value (the level of each forecast) repeated over the horizon: a
        zero change from the level."""
        import torch

        zeros = [torch.zeros_like(e["labels"]) for e in examples]
        return self.forecasts_in_units({**info, "loss": "mse"}, examples, zeros, residual=False)

    def _figures(
        self,
        config: ForecastConfig,
        data: RecipeData,
        values: Any,
        truth: Any,
        part: str = "",
        series: Any = None,
    ) -> dict[str, float]:
        """MAE, MAPE and MASE per target; with ``series`` (each row's series index, long
        format) MAE and MAPE over every observed target and MASE the mean over the series of
        each one's MASE (its own scale), as the M competitions average it."""
        from rnnkit.forecasting import forecast_errors

        out: dict[str, float] = {}
        for j, name in enumerate(config.target):
            scale = data.info["mase_scale"][name]
            if series is None:
                errors = forecast_errors(values[..., j], truth[..., j], scale)
            else:
                errors = _pooled_errors(values[..., j], truth[..., j], series, scale)
            prefix = part + ("" if len(config.target) == 1 else f"{name} ")
            out.update(
                {f"{prefix}{k}": v for k, v in zip(("mae", "mape", "mase"), errors, strict=True)}
            )
        return out

    def score(
        self, config: ForecastConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, Any]:
        """The test figures, the validation figures (``validation mae``, ...: the models'
        mean forecast, as the ensemble's), the model chosen and whether it beats persistence
        and seasonal naive on every target's validation MAE."""
        import numpy as np

        result = self.forecasts_in_units(data.info, data.test, predictions)
        test_series, validation = series_of(data.test), data.extra["validation"]
        figures: dict[str, Any] = self._figures(
            config, data, result.pred, result.truth, series=test_series
        )
        members = data.extra["members"]
        mean = [np.mean([m[i] for m in members], axis=0) for i in range(len(validation))]
        val = self.forecasts_in_units(data.info, validation, mean)
        figures.update(
            self._figures(config, data, val.pred, val.truth, "validation ", series_of(validation))
        )
        if config.loss != "mse":
            values = self.probabilistic_in_units(data.info, validation, mean, calibrated=False)
            if config.calibrate == "validation":
                data.info["interval_scale"] = _interval_scales(data.info, values, val)
                raw = self.probabilistic_in_units(data.info, data.test, predictions, False)
                uncalibrated = self._interval_figures(config, data.info, raw, result.truth)
                figures.update(
                    {f"uncalibrated {k}": v for k, v in uncalibrated.items() if "coverage" in k}
                )
                values = self.probabilistic_in_units(data.info, validation, mean)
            figures.update(
                self._interval_figures(config, data.info, values, val.truth, "validation ")
            )
            values = self.probabilistic_in_units(data.info, data.test, predictions)
            figures.update(self._interval_figures(config, data.info, values, result.truth))
        lost = _losses(config, figures, self.baselines(config, data))
        figures["model"] = _model_name(data.info)
        figures["beats_persistence"] = not lost["persistence"]
        figures["beats_seasonal_naive"] = not lost[_naive_name(config)]
        return figures

    def baselines(self, config: ForecastConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        """Persistence and seasonal naive on the test and the validation forecasts."""
        out: dict[str, dict[str, float]] = {"persistence": {}, _naive_name(config): {}}
        for examples, part in ((data.test, ""), (data.extra["validation"], "validation ")):
            persistence = self._persistence(data.info, examples)
            rows = series_of(examples)
            out["persistence"].update(
                self._figures(config, data, persistence.pred, persistence.truth, part, rows)
            )
            naive = persistence.naive
            out[_naive_name(config)].update(
                self._figures(config, data, naive, persistence.truth, part, rows)
            )
        return out

    def prediction_table(
        self,
        info: Mapping[str, Any],
        ids: Sequence[str],
        examples: Sequence[Any],
        predictions: Sequence[Any],
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """One row per forecast origin and target: ``id`` the time (or row) of the first
        forecast step, ``series`` the target, then ``target``, ``prediction`` and ``naive``,
        each the ``H`` horizon values separated by spaces (``nan``: missing or past the end);
        a probabilistic run adds ``lower`` and ``upper``, the ``level`` interval."""
        from rnnkit.forecasting import forecast_table

        result = self.forecasts_in_units(info, examples, predictions)
        ids, rows = forecast_table(result, info["targets"], info["time_unit"])
        series = series_of(examples)
        if series is not None:  # long format: the series id (and the target, if several)
            n, names = len(info["targets"]), info["series_ids"]
            for r, row in enumerate(rows):
                o, j = divmod(r, n)
                row["series"] = names[series[o]] + (f":{row['series']}" if n > 1 else "")
        if info.get("loss", "mse") != "mse":
            values = self.probabilistic_in_units(info, examples, predictions)
            n = len(info["targets"])
            for r, row in enumerate(rows):
                o, j = divmod(r, n)
                row["lower"] = values["lower"][o, :, j].tolist()
                row["upper"] = values["upper"][o, :, j].tolist()
        return ids, rows

    def read_inputs(
        self, info: Mapping[str, Any], config: ForecastConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """CSV files with the training file's columns: forecasts from the last row and every
        ``stride``-th row before it (see :func:`rnnkit.forecasting.file_examples`), for the
        model the run trained (the one ``--model auto`` chose). A long-format run reads
        long-format files (:func:`rnnkit.recipes.forecast_long.long_inputs`)."""
        from rnnkit import forecasting as fc
        from rnnkit.data.timeseries import load_series

        if info.get("layout") == "long":
            from rnnkit.recipes.forecast_long import long_inputs

            return long_inputs(info, config, paths)

        config = chosen_config(config, info)
        scaler = fc.scaler_from_dict(info["scaler"])
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            series = load_series(
                path, config.time_column, list(scaler.columns), time_format=config.time_format
            )
            try:
                part = fc.file_examples(
                    series, scaler, config.target, config.known, spec_of(config)
                )
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            ids += [f"{path.name}:{i}" for i in range(len(part))]
            examples += part
        return ids, examples

    def plot(
        self, config: ForecastConfig, data: RecipeData, predictions: list[Any], run: RunDirectory
    ) -> None:
        from rnnkit.forecasting import plot_forecasts

        if data.info.get("layout") == "long":
            from rnnkit.recipes.forecast_long import long_plot_forecast

            long_plot_forecast(self, config, data, predictions, run.path / "forecast.png")
            return
        plot_forecasts(
            run.path / "forecast.png",
            self.forecasts_in_units(data.info, data.test, predictions),
            config.target,
            timed=data.info["time_unit"] is not None,
            title=f"rnnkit {self.name}: {config.csv.name}, test part",
        )

    def finish(
        self, config: ForecastConfig, data: RecipeData, model: nn.Module, run: RunDirectory
    ) -> dict[str, Any]:
        """The forecast past the end of the data (``forecast.csv``, ``future.png``) and, with
        ``--backtest``, the backtest (:mod:`rnnkit.recipes.forecast_outputs`)."""
        from rnnkit.recipes.forecast_outputs import single_table_future, write_future

        if config.series_id is not None:
            from rnnkit.recipes.forecast_long import long_future

            forecast, note = long_future(self, config, data, model)
        else:
            forecast, note = single_table_future(self, config, data, model)
        return write_future(self, config, data, model, run, forecast, note)

    def notes(
        self, config: ForecastConfig, data: RecipeData, figures: Mapping[str, Any]
    ) -> list[str]:
        """The report's sentences; the warnings (a baseline not beaten on the validation part)
        are printed as well."""
        import numpy as np

        result = self.forecasts_in_units(data.info, data.test, None)
        config = chosen_config(config, data.info)
        n, h = len(config.target), config.horizon
        cell = f"{config.cell.upper()}Cell"
        inputs = data.info.get("inputs", _inputs(config))
        fold = "Fold" if config.model == "window" else "Recurrence"
        patch = patch_length(config)
        net = f"{fold}({cell}({inputs * patch}, {config.hidden_size}))"
        if patch > 1:
            net = f"Segments({patch}) >> {net}"
        head = {
            "mse": f"Dense({config.hidden_size}, {h * n})",
            "quantile": f"QuantileHead({config.hidden_size}, {h}, {list(config.quantiles)})",
            "gaussian": f"GaussianHead({config.hidden_size}, {h})",
            "student-t": f"StudentTHead({config.hidden_size}, {h})",
        }[config.loss]
        net = f"RevINForecaster({net} >> {head})" if config.revin == "on" else f"{net} >> {head}"
        known = f" Known in advance: {', '.join(config.known)}." if config.known else ""
        if data.info.get("layout") == "long":
            known += "".join(
                f" {what}: {', '.join(names)}."
                for what, names in (("Past only", config.past), ("Static", config.static))
                if names
            )
            if config.panel_scale > 1:
                trained = self.settings(config)
                known += (
                    f" Minibatches of {trained.minibatch_size} windows at learning rate "
                    f"{trained.learning_rate:g} (--panel-scale {config.panel_scale})."
                )
        residual = ", trained on the difference from seasonal naive" if config.residual else ""
        s = config.train
        best = s.patience > 0 or s.time_budget is not None
        kept = "of the best validation epoch" if best else "after the last epoch"
        selection = data.info["selection"]
        warnings = warning_lines(config, figures, self.baselines(config, data))
        for line in warnings:
            print(line, flush=True)
        validation = self.forecasts_in_units(data.info, data.extra["validation"], None)
        observed = int((~np.isnan(result.truth)).sum())
        return [
            f"Model: {net}{residual}; the weights {kept} kept.{known}",
            *([selection_line(selection)] if selection else []),
            f"Test: {len(result.when)} forecast origins, {observed} observed target values, "
            f"horizon {h} steps. Validation: {len(validation.when)} forecast "
            "origins (the validation windows, the same for every model).",
            "Persistence repeats the last observed value over the horizon; seasonal naive "
            f"takes the value {config.season} steps (one season) before each target step. MASE "
            "divides by the mean absolute error of the seasonal-naive forecast on the training "
            "part."
            if data.info.get("layout") != "long"
            else "Persistence repeats each series' last observed value over the horizon; "
            f"seasonal naive takes the value {config.season} steps before each target step. "
            "MAE pools every observed test target of every series (each in its own units); "
            "MASE is the mean over the series of each one's MAE over its in-sample "
            "seasonal-naive MAE (its history before the test part).",
            *seasonality_lines(data.info["seasonality"], config),
            *data.extra.get("finish", ()),
            *warnings,
        ]


def _validation_forecasts(
    recipe: ForecastRecipe, config: ForecastConfig, data: RecipeData
) -> Callback:
    from rnnkit.recipes.harness import evaluator
    from rnnkit.training import Callback
    from rnnkit.training.callbacks import TrainerView

    class ValidationForecasts(Callback):
        """At the end of a model's training (after the best weights are restored), its
        forecasts of ``data.extra["validation"]``, appended to ``data.extra["members"]``."""

        def on_fit_end(self, trainer: TrainerView) -> None:
            if trainer.failed:
                return
            predictor = evaluator(
                recipe, config, data, trainer.model, recipe.input_streams, config.train.device
            )
            source = recipe.source(config, data.extra["validation"], training=False)
            data.extra["members"].append(predictor.predict(source))

    return ValidationForecasts()


def _interval_scales(
    info: Mapping[str, Any], values: Mapping[str, Any], validation: Forecasts
) -> list[list[float]]:
    """Per target, one split-conformal factor per horizon step from the validation
    forecasts (:func:`rnnkit.probabilistic.interval_scale`)."""
    from rnnkit.probabilistic import interval_scale

    assert validation.pred is not None
    return [
        [
            round(float(f), 6)
            for f in interval_scale(
                validation.truth[..., j],
                validation.pred[..., j],
                values["lower"][..., j],
                values["upper"][..., j],
                info["level"],
            )
        ]
        for j in range(len(info["targets"]))
    ]


def series_of(examples: Sequence[Any]) -> Any:
    """Each example's series index (long format: its ``series`` stream), or None."""
    import numpy as np

    if not examples or "series" not in examples[0]:
        return None
    return np.array([int(e["series"].reshape(-1)[0]) for e in examples])


def _pooled_errors(
    values: Any, truth: Any, series: Any, scales: Sequence[float]
) -> tuple[float, float, float]:
    """MAE and MAPE over every observed target of every series, and the mean over the series
    with an observed target of each one's MASE (``scales[s]``)."""
    import numpy as np

    from rnnkit.forecasting import forecast_errors

    mae, mape, _ = forecast_errors(values, truth, 1.0)
    mases = []
    for s in np.unique(series):
        rows = series == s
        if (~np.isnan(truth[rows])).any():
            mases.append(forecast_errors(values[rows], truth[rows], scales[int(s)])[2])
    return mae, mape, float(np.mean(mases))


def _per_series_forecasts(
    info: Mapping[str, Any],
    examples: Sequence[Any],
    predictions: Sequence[Any] | None,
    residual: bool | None,
) -> Forecasts:
    """:func:`~rnnkit.forecasting.forecasts` of long-format examples, each scaled back with
    its own series' scaler (``info["series_scalers"]``: per series the targets' ``center``
    and ``scale``), in the examples' order."""
    import numpy as np

    from rnnkit.forecasting import Forecasts, forecasts

    rows = series_of(examples)
    centers, scales = info["series_scalers"]["center"], info["series_scalers"]["scale"]
    parts, order = [], []
    for s in np.unique(rows):
        index = np.flatnonzero(rows == s)
        parts.append(
            forecasts(
                [examples[int(i)] for i in index],
                None if predictions is None else [predictions[int(i)] for i in index],
                horizon=info["horizon"],
                center=np.asarray(centers[int(s)], dtype=float),
                scale=np.asarray(scales[int(s)], dtype=float),
                residual=info["residual"] if residual is None else residual,
            )
        )
        order.append(index)
    back = np.argsort(np.concatenate(order), kind="stable")

    def joined(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts])[back]

    pred = joined("pred") if predictions is not None else None
    return Forecasts(joined("when"), joined("truth"), joined("naive"), pred)


def _tensor(value: Any) -> Any:
    import torch

    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _inputs(config: ForecastConfig) -> int:
    """The features per step of a single-table model (:func:`~rnnkit.forecasting.
    forecast_windows`, :func:`~rnnkit.forecasting.stream_inputs`)."""
    n, k, h = len(config.target), len(config.known), config.horizon
    if config.model == "window":
        return 2 * n + (k + 1 if k else 0)
    return 2 * n + h * k


def _head(config: ForecastConfig, hidden: int) -> nn.Module:
    """The model's last layer: ``Dense(hidden, H n)`` (``--loss mse``), or a head of
    :mod:`rnnkit.probabilistic` of ``[H, n, P]`` per forecast."""
    from rnnkit import probabilistic as pr
    from rnnkit.layers import Dense

    n, h = len(config.target), config.horizon
    if config.loss == "quantile":
        return pr.QuantileHead(hidden, h, config.quantiles, targets=n)
    if config.loss == "gaussian":
        return pr.GaussianHead(hidden, h, targets=n)
    if config.loss == "student-t":
        return pr.StudentTHead(hidden, h, targets=n)
    return Dense(hidden, h * n)


def _model_info(
    config: ForecastConfig, data: PreparedSeries, scales: Mapping[str, float]
) -> dict[str, Any]:
    """What the hooks read of ``RecipeData.info`` for one candidate of ``--model auto``."""
    from rnnkit.forecasting import scaler_to_dict

    return {
        "model": config.model,
        "residual": config.residual,
        "revin": config.revin == "on",
        **loss_info(config),
        "targets": list(config.target),
        "horizon": config.horizon,
        "scaler": scaler_to_dict(data.scaler),
        "mase_scale": dict(scales),
    }


def _model_name(info: Mapping[str, Any]) -> str:
    if info["residual"]:
        return "window residual"
    return f"{info['model']}{' revin' if info.get('revin') else ''}"


def _naive_name(config: ForecastConfig) -> str:
    return f"seasonal naive (season {config.season})"


def _prefix(config: ForecastConfig, name: str) -> str:
    return "" if len(config.target) == 1 else f"{name} "


def _mean_mase(figures: Mapping[str, float], config: ForecastConfig) -> float:
    """The validation MASE averaged over the targets (``--model auto``'s figure)."""
    values = [figures[f"validation {_prefix(config, t)}mase"] for t in config.target]
    return sum(values) / len(values)


def _losses(
    config: ForecastConfig,
    figures: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, float]],
    part: str = "validation ",
) -> dict[str, list[tuple[str, float, float]]]:
    """Per baseline, the targets whose MAE on ``part`` (``"validation "`` or ``""``, the
    test part) the model does not beat (is not below), with the model's and the baseline's."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    for name, values in baselines.items():
        out[name] = []
        for target in config.target:
            key = f"{part}{_prefix(config, target)}mae"
            if not figures[key] < values[key]:
                out[name].append((target, float(figures[key]), float(values[key])))
    return out


def warning_lines(
    config: ForecastConfig,
    figures: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, float]],
) -> list[str]:
    """One line per baseline the model does not beat on the validation part (its MAE not
    below the baseline's on some target), e.g. ``Warning: the model (window) does not beat
    persistence on the validation part: MAE of co2 0.512 against 0.498.``; then one per
    baseline it does not beat on the test part (``On the test part, ...``: a fact, not what
    the choices were made on)."""
    lines = []
    for part, start in (("validation ", "Warning: the model"), ("", "On the test part, the model")):
        for name, lost in _losses(config, figures, baselines, part).items():
            if lost:
                what = "; ".join(f"MAE of {t} {m:.4g} against {b:.4g}" for t, m, b in lost)
                where = " on the validation part" if part else ""
                lines.append(f"{start} ({figures['model']}) does not beat {name}{where}: {what}.")
    return lines


def seasonality(data: PreparedSeries, config: ForecastConfig) -> dict[str, dict[str, Any]]:
    """Per target, whether its training part shows a season at ``config.season``: the
    autocorrelation of its changes at that lag (:func:`~rnnkit.forecasting.
    change_autocorrelation`) above the white-noise band ``1.96 / sqrt(n)``; and the lag from
    2 to ``input_length`` (or half the part) whose autocorrelation is highest, named when it
    passes twice the band (one lag among many passes the band alone by chance)."""
    import numpy as np

    from rnnkit.forecasting import change_autocorrelation

    out = {}
    for name, column in zip(config.target, data.targets, strict=True):
        values = data.parts[0].values[:, column]
        changes = int((~np.isnan(np.diff(values))).sum())
        band = 1.96 / math.sqrt(max(changes, 1))
        (at_season,) = change_autocorrelation(values, [config.season])
        lags = list(range(2, max(2, min(config.input_length, len(values) // 2)) + 1))
        r = change_autocorrelation(values, lags)
        best = int(np.argmax(r))
        out[name] = {
            "season": config.season,
            "autocorrelation": round(float(at_season), 4),
            "band": round(band, 4),
            "changes": changes,
            "detected": bool(at_season > band),
            "strongest_lag": lags[best] if r[best] > 2 * band else None,
            "strongest_autocorrelation": round(float(r[best]), 4),
        }
    return out


def seasonality_lines(found: Mapping[str, Mapping[str, Any]], config: ForecastConfig) -> list[str]:
    """A line for each target without a detectable season at ``--season``."""
    lines = []
    for name, f in found.items():
        if f["detected"]:
            continue
        if f["strongest_lag"] is not None:
            hint = (
                f"the strongest lag up to --input-length {config.input_length} is "
                f"{f['strongest_lag']} ({f['strongest_autocorrelation']:+.3f}): try --season "
                f"{f['strongest_lag']}"
            )
        else:
            hint = (
                f"no lag up to --input-length {config.input_length} stands out either: give "
                "--season the length of the series' cycle if it has one (24 for hourly data "
                "with a daily cycle, 7 for daily data with a weekly one), else persistence is "
                "the baseline to beat"
            )
        lines.append(
            f"No seasonality detected in {name} at --season {f['season']}: on the training "
            f"part its changes correlate {f['autocorrelation']:+.3f} with those {f['season']} "
            f"steps before, inside the white-noise band of +-{f['band']:.3f} "
            f"(1.96/sqrt({f['changes']})), so seasonal naive repeats noise; {hint}."
        )
    return lines


def _at(values: Sequence[float], index: Sequence[int]) -> Any:
    import numpy as np

    return np.array(values, dtype=float)[list(index)]


RECIPE = ForecastRecipe()
