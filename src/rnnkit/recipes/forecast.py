"""``rnnkit forecast``: forecast columns of a CSV file the next ``horizon`` steps, against the
seasonal-naive forecast (the value one season before each target step).

The series is split in time order (0.8 / 0.1 / 0.1) and scaled with the training part's
statistics; missing values are filled for the input (last observation), flagged by a mask and
left out of the loss and of every error. ``--model window`` (default): ``Fold(cell) >>
Dense(hidden, H n)`` on each input window, inputs and targets relative to the window's last
value; with ``--known`` columns each window is followed by its ``H`` horizon steps carrying
their known values; ``--residual`` learns the difference from seasonal naive, which is added
back. ``--model stream``: ``Recurrence(cell) >> Dense`` forecasts the next ``H`` steps at every
step, trained on chunks of ``input_length`` steps and tested from every origin whose horizon
lies in the test part, the state carried from the first step. Early stopping keeps the weights
of the best validation epoch. Figures: MAE, MAPE % and MASE (over the training part's in-sample
seasonal-naive MAE) per target, on the observed test values.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

    from rnnkit.forecasting import Forecasts
    from rnnkit.recipes.rundir import RunDirectory

__all__ = ["RECIPE", "ForecastConfig", "ForecastRecipe", "co2_csv"]


def co2_csv() -> Path:
    """The weekly Mauna Loa CO2 series shipped inside the package (``rnnkit demo``)."""
    return Path(str(resources.files("rnnkit") / "datasets" / "co2-weekly.csv"))


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
        "window",
        "window: Fold over each input window; stream: Recurrence, a forecast at every step",
        choices=("window", "stream"),
    )
    residual: bool = option(False, "window model: learn the difference from seasonal naive")
    input_length: int = option(
        104, "steps of the input window (stream: of a training chunk)", low=1
    )
    horizon: int = option(52, "steps to forecast", low=1)
    season: int = option(52, "steps in a season (the seasonal-naive forecast)", low=1)
    stride: int = option(1, "steps between windows and between test origins", low=1)
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
        if self.residual and self.model != "window":
            raise ValueError(
                f"residual: a window-model option (--model window), found model {self.model!r}"
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
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(
                f"split: expected three positive shares summing to 1, found {self.split}"
            )


CO2 = {"csv": co2_csv(), "target": ("co2",), "time_column": "date", "time_format": "%Y%m%d"}


class ForecastRecipe(Recipe[ForecastConfig]):
    name = "forecast"
    summary = "forecast columns of a CSV file against seasonal naive"
    description = __doc__ or ""
    config = ForecastConfig
    presets = {"co2": CO2, "co2-long": {**CO2, "epochs": 40, "patience": 10}}
    preset_help = {
        "co2": "the CO2 series shipped with rnnkit (rnnkit demo)",
        "co2-long": "the same, 40 epochs, patience 10 (docs/results.md)",
    }
    target_stream = "labels"
    metric = Metric("mse")

    def load_data(self, config: ForecastConfig) -> RecipeData:
        import numpy as np

        from rnnkit import forecasting as fc
        from rnnkit.data.timeseries import load_series

        columns = [*config.target, *config.known]
        series = load_series(
            config.csv, config.time_column, columns, time_format=config.time_format
        )
        data = fc.prepare_series(series, config.target, config.known, config.split, config.horizon)
        train, val, test = fc.part_examples(data, _spec(config))
        timed = series.times is not None
        info = {
            "model": config.model,
            "residual": config.residual,
            "targets": list(config.target),
            "known": list(config.known),
            "horizon": config.horizon,
            "time_unit": fc.time_unit(data.clock[0][: len(series)]) if timed else None,
            "scaler": fc.scaler_to_dict(data.scaler),
            "mase_scale": fc.mase_scales(data, config.target, config.season),
            "steps": [len(p) for p in data.parts],
        }
        known = f", known in advance {list(config.known)}" if config.known else ""
        return RecipeData(
            train,
            val,
            test,
            inputs=[config.csv],
            info=info,
            description=f"{config.csv.name}: {len(series)} steps of {list(config.target)}{known}, "
            f"{int(np.isnan(series.values).sum())} missing (filled for the input, flagged by a "
            "mask, left out of every error); parts in time order "
            f"{'/'.join(str(len(p)) for p in data.parts)} steps",
        )

    def build_model(self, config: ForecastConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import GRUCell, LSTMCell
        from rnnkit.layers import Dense
        from rnnkit.recurrence import Fold, Recurrence

        cell = LSTMCell if config.cell == "lstm" else GRUCell
        n, k, h = len(config.target), len(config.known), config.horizon
        if config.model == "window":
            inputs = 2 * n + (k + 1 if k else 0)
            return Fold(cell(inputs, config.hidden_size)) >> Dense(config.hidden_size, h * n)
        return Recurrence(cell(2 * n + h * k, config.hidden_size)) >> Dense(
            config.hidden_size, h * n
        )

    def criterion(self, config: ForecastConfig, data: RecipeData) -> Any:
        from rnnkit.forecasting import masked_squared_error
        from rnnkit.training import Criterion

        return Criterion(masked_squared_error, masked_squared_error)

    def _forecasts(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any] | None
    ) -> Forecasts:
        from rnnkit.forecasting import forecasts

        scaler = info["scaler"]
        index = [scaler["columns"].index(t) for t in info["targets"]]
        return forecasts(
            examples,
            predictions,
            horizon=info["horizon"],
            center=_at(scaler["center"], index),
            scale=_at(scaler["scale"], index),
            residual=info["residual"],
        )

    def _figures(
        self, config: ForecastConfig, data: RecipeData, values: Any, truth: Any
    ) -> dict[str, float]:
        from rnnkit.forecasting import forecast_errors

        out: dict[str, float] = {}
        for j, name in enumerate(config.target):
            errors = forecast_errors(values[..., j], truth[..., j], data.info["mase_scale"][name])
            prefix = "" if len(config.target) == 1 else f"{name} "
            out.update(
                {f"{prefix}{k}": v for k, v in zip(("mae", "mape", "mase"), errors, strict=True)}
            )
        return out

    def score(
        self, config: ForecastConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        result = self._forecasts(data.info, data.test, predictions)
        return self._figures(config, data, result.pred, result.truth)

    def baselines(self, config: ForecastConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        result = self._forecasts(data.info, data.test, None)
        return {
            f"seasonal naive (season {config.season})": self._figures(
                config, data, result.naive, result.truth
            )
        }

    def prediction_table(
        self,
        info: Mapping[str, Any],
        ids: Sequence[str],
        examples: Sequence[Any],
        predictions: Sequence[Any],
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """One row per forecast origin and target: ``id`` the time (or row) of the first
        forecast step, ``series`` the target, then ``target``, ``prediction`` and ``naive``,
        each the ``H`` horizon values separated by spaces (``nan``: missing or past the end)."""
        from rnnkit.forecasting import forecast_table

        result = self._forecasts(info, examples, predictions)
        return forecast_table(result, info["targets"], info["time_unit"])

    def read_inputs(
        self, info: Mapping[str, Any], config: ForecastConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """CSV files with the training file's columns: forecasts from the last row and every
        ``stride``-th row before it (see :func:`rnnkit.forecasting.file_examples`)."""
        from rnnkit import forecasting as fc
        from rnnkit.data.timeseries import load_series

        scaler = fc.scaler_from_dict(info["scaler"])
        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            series = load_series(
                path, config.time_column, list(scaler.columns), time_format=config.time_format
            )
            try:
                part = fc.file_examples(series, scaler, config.target, config.known, _spec(config))
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            ids += [f"{path.name}:{i}" for i in range(len(part))]
            examples += part
        return ids, examples

    def plot(
        self, config: ForecastConfig, data: RecipeData, predictions: list[Any], run: RunDirectory
    ) -> None:
        from rnnkit.forecasting import plot_forecasts

        plot_forecasts(
            run.path / "forecast.png",
            self._forecasts(data.info, data.test, predictions),
            config.target,
            timed=data.info["time_unit"] is not None,
            title=f"rnnkit {self.name}: {config.csv.name}, test part",
        )

    def notes(
        self, config: ForecastConfig, data: RecipeData, figures: Mapping[str, Any]
    ) -> list[str]:
        import numpy as np

        result = self._forecasts(data.info, data.test, None)
        n, k, h = len(config.target), len(config.known), config.horizon
        cell = f"{config.cell.upper()}Cell"
        if config.model == "window":
            net = f"Fold({cell}({2 * n + (k + 1 if k else 0)}, {config.hidden_size}))"
        else:
            net = f"Recurrence({cell}({2 * n + h * k}, {config.hidden_size}))"
        known = f" Known in advance: {', '.join(config.known)}." if config.known else ""
        residual = ", trained on the difference from seasonal naive" if config.residual else ""
        s = config.train
        best = s.patience > 0 or s.time_budget is not None
        kept = "of the best validation epoch" if best else "after the last epoch"
        return [
            f"Model: {net} >> Dense({config.hidden_size}, {h * n}){residual}; the weights "
            f"{kept} kept.{known}",
            f"Test: {len(result.when)} forecast origins, {int((~np.isnan(result.truth)).sum())} "
            f"observed target values, horizon {h} steps.",
            "MASE divides by the mean absolute error of the seasonal-naive forecast on the "
            "training part.",
        ]


def _spec(config: ForecastConfig) -> Any:
    from rnnkit.forecasting import ForecastSpec

    return ForecastSpec(
        config.model,
        config.input_length,
        config.horizon,
        config.season,
        config.stride,
        config.residual,
    )


def _at(values: Sequence[float], index: Sequence[int]) -> Any:
    import numpy as np

    return np.array(values, dtype=float)[list(index)]


RECIPE = ForecastRecipe()
