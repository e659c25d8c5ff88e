"""``rnnkit grud``: GRU-D against GRU baselines on a series with missing values.

For every target time of the series' grid (every --stride steps), a model reads what was
observed in the --span grid steps that end --lead steps before it, then a query step at the
target time with every variable unobserved (so δ there is the real time to the target), and
forecasts --target there. --model grud is GRUDCell (Che et al. 2018) on [x, m, δ] (values,
mask, time since each variable was last observed); forward and mean are a GRU on the values
filled forward or with the training means; mask_delta a GRU on [forward-filled x, m, δ]
(GRU-Simple). Each ends in Dense(1) and is next to persistence (the window's last observed
target). `rnnkit grud compare` trains several --models through the same path and tables them.

Splits in time order over the grid; the scaler and the training means come from the observed
training values only. --removal removes values or rows at random (seeded by --seed): the model
trains on what remains; the test scores the TRUE values. Errors are in the series' units.
"""

from __future__ import annotations

import dataclasses
import json
from argparse import ArgumentTypeError
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, config_from_args, option

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from torch import nn

    from rnnkit.data.timeseries import TimeSeries
    from rnnkit.recipes.rundir import RunDirectory

__all__ = ["RECIPE", "GrudConfig", "GrudRecipe", "compare", "preset_config"]

KINDS = ("grud", "forward", "mean", "mask_delta")  # rnnkit.data.missing.KINDS, without torch
LAYOUTS = ("csv", "airquality", "co2", "elecdemand")  # "csv" and rnnkit.data.missing.SERIES


@dataclass(frozen=True)
class GrudConfig:
    """One GRU-D (or baseline) run (see the module docstring)."""

    csv: Path | None = option(
        None, "the file to read (default: the shared copy of --series's file)", positional=True
    )
    series: str = option(
        "csv",
        "the file's layout: csv (--time-column, --target, --columns) or a real series",
        choices=LAYOUTS,
    )
    time_column: str | None = option(None, "csv: the timestamps (none: row order, δ in steps)")
    time_format: str | None = option(None, "csv: strptime format, e.g. %%Y%%m%%d (none: ISO)")
    target: str | None = option(None, "the variable to forecast (default: the series' own)")
    columns: tuple[str, ...] = option((), "csv: more input variables, comma-separated")
    model: str = option(
        "grud",
        "grud: GRU-D; forward / mean: a GRU on forward- / mean-filled values; mask_delta: "
        "a GRU on [forward-filled x, m, δ]",
        choices=KINDS,
    )
    span: int = option(48, "grid steps of observations in each input window", low=1)
    lead: int = option(1, "grid steps from the window's end to the target time", low=1)
    stride: int = option(1, "grid steps between target times", low=1)
    delta_unit: str = option("h", "the unit of δ", choices=("s", "min", "h", "D", "W", "steps"))
    relative: bool = option(False, "subtract each window's last observed values (a trend)")
    hidden_size: int = option(32, "hidden units of the recurrent cell", low=1)
    val_share: float = option(0.15, "share of the grid for validation", low=0, low_open=True)
    test_share: float = option(0.15, "share of the grid for test (last)", low=0, low_open=True)
    removal: str = option(
        "none", "remove each value or each row at random first", choices=("none", "values", "rows")
    )
    rate: float = option(0.5, "the share removed by --removal", low=0, high=0.99)
    data_dir: Path | None = option(
        None, "folder of the real series (default: ../shared/data/timeseries)"
    )
    train: TrainSettings = option(
        TrainSettings(epochs=30, learning_rate=0.005, patience=6, clip_norm=5.0, threads=1),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.val_share + self.test_share >= 0.9:
            raise ValueError(
                f"val_share, test_share: expected a sum below 0.9 (training comes first), "
                f"found {self.val_share + self.test_share:g}"
            )
        if self.series != "csv":
            if self.time_column is not None or self.columns:
                raise ValueError(f"time_column, columns: the {self.series} layout fixes them")
            return
        if self.csv is None:
            raise ValueError("csv: expected a CSV file (or --preset NAME for a real series)")
        if self.target is None:
            raise ValueError(f"target: expected the column of {self.csv.name} to forecast")
        if self.time_column is None and self.delta_unit != "steps":
            raise ValueError("delta_unit: without --time-column gaps count in 'steps' only")
        if self.time_column is None and self.removal == "rows":
            raise ValueError("removal: 'rows' needs timestamps (--time-column)")


def preset_config(name: str, **changes: Any) -> GrudConfig:
    """The config of preset ``name`` with ``changes`` (flat keys, as the presets')."""
    values = {**GrudRecipe.presets[name], **changes}
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    train = TrainSettings(
        **{
            **dataclasses.asdict(GrudConfig.train),
            **{k: v for k, v in values.items() if k in names},
        }
    )
    return GrudConfig(**{k: v for k, v in values.items() if k not in names}, train=train)


class GrudRecipe(Recipe[GrudConfig]):
    name = "grud"
    summary = "GRU-D against GRU baselines on series with missing values"
    description = __doc__ or ""
    config = GrudConfig
    presets = {
        "airquality": {
            "series": "airquality", "span": 7, "delta_unit": "D", "hidden_size": 16,
            "epochs": 80, "patience": 15, "minibatch_size": 16, "learning_rate": 0.01,
            "val_share": 0.2, "test_share": 0.2,
        },
        "co2": {
            "series": "co2", "span": 26, "stride": 2, "delta_unit": "W", "relative": True,
            "epochs": 25,
        },
        "elecdemand": {
            "series": "elecdemand", "span": 24, "lead": 4, "stride": 12, "delta_unit": "h",
            "epochs": 20, "patience": 5, "removal": "values", "rate": 0.5,
        },
        "csv": {},
    }  # fmt: skip
    preset_help = {
        "airquality": "next-day Ozone, New York 1973 (real gaps; the default without a file)",
        "co2": "next-week CO2 from 26 weeks (59 weeks missing)",
        "elecdemand": "Demand 2 h ahead from 12 h, 50 %% of the values removed",
        "csv": "your own CSV (the default with a file)",
    }
    metric = Metric("mse")
    actions = {
        "compare": "train each of --models through the same path, seeds --seeds, into "
        "RUN_DIR/MODEL[-seedS], and write RUN_DIR/comparison.md and comparison.csv"
    }
    training_actions = frozenset({"compare"})

    def default_preset(self, argv: Sequence[str]) -> str | None:
        """--series's preset, else csv when a file is given, else airquality."""
        flags = {"--quiet", "--relative", "--no-relative", "-h", "--help"}
        series, i, positional = None, 0, False
        while i < len(argv):
            arg = argv[i]
            if arg == "--series" and i + 1 < len(argv):
                series = argv[i + 1]
            elif arg.startswith("--series="):
                series = arg.split("=", 1)[1]
            positional = positional or not arg.startswith("-")
            i += 2 if arg.startswith("-") and arg not in flags and "=" not in arg else 1
        if series in self.presets:
            return series
        return "csv" if positional else "airquality"

    # ------------------------------------------------------------------ data
    def load_data(self, config: GrudConfig) -> RecipeData:
        from rnnkit.data.missing import NAMES, missing_data, time_labels

        path, series = _read(config)
        removal = None if config.removal == "none" else config.removal
        d = missing_data(
            series,
            _target(config),
            _spec(config),
            val_share=config.val_share,
            test_share=config.test_share,
            removal=removal,  # type: ignore[arg-type]
            rate=config.rate,
            seed=config.train.seed,
        )
        missing = int((~series.mask).sum())
        train, validation, test = d.examples(config.model)
        return RecipeData(
            train,
            validation,
            test,
            inputs=[path],
            ids=time_labels(series, d.test.rows),
            info=d.info(),
            description=f"{path.name}: {len(series)} steps of {list(series.columns)}, {missing} "
            f"values missing, removed: {_removed(config)}; {NAMES[config.model]} forecasts "
            f"{d.target!r}",
            extra={"times": None if series.times is None else series.times[d.test.rows]},
        )

    def read_inputs(
        self, info: Mapping[str, Any], config: GrudConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Files in the run's layout: a forecast at every grid time with an observation in its
        window (the target column is empty where the file has no value there)."""
        from rnnkit.data.missing import new_examples, time_labels

        ids: list[str] = []
        examples: list[Any] = []
        for path in paths:
            series = _read(config, path)[1]
            windows, part = new_examples(series, info, _spec(config), config.model)
            labels = time_labels(series, windows.rows)
            ids += labels if len(paths) == 1 else [f"{path.name}:{t}" for t in labels]
            examples += part
        return ids, examples

    # ------------------------------------------------------------------ model
    def build_model(self, config: GrudConfig, data: RecipeData) -> nn.Module:
        import torch

        from rnnkit.cells import GRUCell, GRUDCell
        from rnnkit.layers import Dense
        from rnnkit.recurrence import Fold

        d, h = len(data.info["columns"]), config.hidden_size
        if config.model == "grud":
            means = torch.tensor(data.info["means"], dtype=torch.float32)
            return Fold(GRUDCell(d, h, x_mean=means)) >> Dense(h, 1)
        width = 3 * d if config.model == "mask_delta" else d
        return Fold(GRUCell(width, h)) >> Dense(h, 1)

    def criterion(self, config: GrudConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, squared_error

        return Criterion(squared_error, squared_error)

    # ------------------------------------------------------------------ figures
    def score(
        self, config: GrudConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        from rnnkit.data.missing import forecast_errors

        rows = self.prediction_rows(data.info, data.test, predictions)
        return forecast_errors([r["prediction"] for r in rows], [r["target"] for r in rows])

    def baselines(self, config: GrudConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data.missing import forecast_errors

        last = [float(e["persistence"]) for e in data.test]
        return {"persistence": forecast_errors(last, [float(e["truth"]) for e in data.test])}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        i = info["columns"].index(info["target"])
        center, scale = info["center"][i], info["scale"][i]
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            truth = float(example["truth"])
            level = float(example["level"])
            rows.append(
                {
                    "target": "" if truth != truth else truth,
                    "prediction": (float(prediction.reshape(-1)[0]) + level) * scale + center,
                    "persistence": float(example["persistence"]),
                }
            )
        return rows

    def notes(self, config: GrudConfig, data: RecipeData, figures: Mapping[str, Any]) -> list[str]:
        return [
            f"Model {config.model!r}; errors of {data.info['target']!r} in the series' units, on "
            f"the true values of {len(data.test)} test targets ({len(data.train)} training "
            f"examples). Removed at random: {_removed(config)}; "
            f"{data.info['observed_share']:.1%} of the grid's values observed."
        ]

    def plot(
        self, config: GrudConfig, data: RecipeData, predictions: list[Any], run: RunDirectory
    ) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnnkit.data.missing import NAMES

        rows = self.prediction_rows(data.info, data.test, predictions)
        times = data.extra["times"]
        x = times.astype("datetime64[ms]").tolist() if times is not None else range(len(rows))
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(x, [r["target"] for r in rows], color="black", lw=1, marker=".", label="true")
        ax.plot(x, [r["prediction"] for r in rows], lw=1, label=NAMES[config.model])
        ax.plot(x, [r["persistence"] for r in rows], lw=1, ls=":", label="persistence")
        ax.set_xlabel("target time" if times is not None else "test target")
        ax.set_ylabel(data.info["target"])
        ax.set_title(f"rnnkit grud: test forecasts of {data.info['target']}")
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(run.path / "forecast.png", dpi=80)
        plt.close(fig)

    # ------------------------------------------------------------------ compare
    def add_action_arguments(self, action: str, parser: Any) -> None:
        parser.add_argument(
            "--models",
            type=_models,
            default=KINDS,
            metavar="A,B",
            help=f"the models, comma-separated; replaces --model (default: {','.join(KINDS)})",
        )
        parser.add_argument(
            "--seeds",
            type=_seeds,
            default=(0,),
            metavar="A,B",
            help="the seeds, comma-separated; replaces --seed (default: 0)",
        )
        parser.set_defaults(parser_error=parser.error)

    def run_action(self, action: str, args: Any) -> int:
        try:
            config = config_from_args(GrudConfig, args)
        except ValueError as error:
            args.parser_error(str(error))
        compare(config, args.models, args.seeds, args.run_dir, progress=not args.quiet)
        return 0


def compare(
    config: GrudConfig,
    models: Sequence[str],
    seeds: Sequence[int],
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``config`` once per model and seed through :func:`run_recipe` into
    ``run_dir/MODEL`` (``run_dir/MODEL-seedS`` with several seeds); write ``comparison.csv``
    (one row per run) and ``comparison.md`` (test MAE and RMSE, mean ± std over the seeds,
    persistence last); return the rows."""
    from rnnkit.data.missing import comparison_table
    from rnnkit.recipes.harness import run_recipe
    from rnnkit.recipes.rundir import csv_text

    say = log if log is not None else (lambda line: print(line, flush=True))
    out = Path(run_dir)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for model in models:
            train = dataclasses.replace(config.train, seed=seed)
            sub = dataclasses.replace(config, model=model, train=train)
            name = model if len(seeds) == 1 else f"{model}-seed{seed}"
            result = run_recipe(RECIPE, sub, out / name, progress=progress, log=log).figures
            timings = json.loads((out / name / "run.json").read_text())["timings"]
            rows.append(
                {
                    "model": model,
                    "seed": seed,
                    "test_mae": result["test_mae"],
                    "test_rmse": result["test_rmse"],
                    "persistence_mae": result["baselines"]["persistence"]["test_mae"],
                    "persistence_rmse": result["baselines"]["persistence"]["test_rmse"],
                    "epochs": result["epochs"][0],
                    "seconds": timings["train_seconds"],
                    "run": name,
                }
            )
    (out / "comparison.csv").write_text(csv_text([str(i) for i in range(len(rows))], rows))
    table = comparison_table(rows, models)
    (out / "comparison.md").write_text(table)
    say(table)
    return rows


def _models(text: str) -> tuple[str, ...]:
    models = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not models or any(m not in KINDS for m in models):
        raise ArgumentTypeError(f"expected some of {', '.join(KINDS)}, found {text!r}")
    return models


def _seeds(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ArgumentTypeError(f"expected comma-separated integers >= 0, found {text!r}")
    return tuple(int(p) for p in parts)


def _read(config: GrudConfig, path: Path | None = None) -> tuple[Path, TimeSeries]:
    from rnnkit.data.missing import input_path, read_input

    path = input_path(config.series, path or config.csv, config.data_dir)
    options = {"time_column": config.time_column, "time_format": config.time_format}
    series = read_input(config.series, path, _target(config), columns=config.columns, **options)
    return path, series


def _target(config: GrudConfig) -> str:
    from rnnkit.data.missing import SERIES

    return config.target if config.target is not None else SERIES[config.series].target


def _spec(config: GrudConfig) -> Any:
    from rnnkit.data.missing import WindowSpec

    c = config
    return WindowSpec(c.span, c.lead, c.stride, c.delta_unit, c.relative)  # type: ignore[arg-type]


def _removed(config: GrudConfig) -> str:
    return "none" if config.removal == "none" else f"{config.rate:.0%} of the {config.removal}"


RECIPE = GrudRecipe()
