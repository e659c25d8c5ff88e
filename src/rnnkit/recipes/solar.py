"""``rnnkit solar``: the CNTK book's solar forecaster, as the book runs it and done honestly.

``--data book`` trains on the book's CTF files (``solar_train.ctf``; evaluated on
``solar_val.ctf``, which serves as both validation and test: the book has no third part, and
its split leaks the target, so this measures conformance with CNTK, not skill). ``--data days``
rebuilds the sequences from ``solar.csv`` and splits by days in time order (832/104/104).
``--model book`` is ``Fold(LSTM(15), initial_state=0.1) >> Dense(1)`` on the total alone;
``better`` stacks two LSTM layers over six inputs (both readings, time of day, day of year).
Units: squared error of the day's maximum ``solar.total / 19100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

__all__ = ["RECIPE", "SolarConfig", "SolarRecipe"]


@dataclass(frozen=True)
class SolarConfig:
    """One solar run (see the module docstring)."""

    data: str = option(
        "book", "book: the book's CTF files; days: solar.csv by days", choices=("book", "days")
    )
    model: str = option(
        "book",
        "book: Fold(LSTM(15)) >> Dense(1); better: two layers, six inputs",
        choices=("book", "better"),
    )
    hidden_size: int = option(32, "hidden units of the better model", low=1)
    epoch_size: int = option(12434, "samples (time steps) per epoch, as the book", low=1)
    data_dir: Path | None = option(
        None, "folder with solar.csv and the CTF files (default: ../shared/data/cntk-book)"
    )
    train: TrainSettings = option(
        TrainSettings(epochs=10, minibatch_size=140, learning_rate=0.005),
        "training settings",
    )

    def __post_init__(self) -> None:
        check_config(self)
        if self.data == "book" and self.model != "book":
            raise ValueError("model: the book's CTF files hold only the total; use --data days")


class SolarRecipe(Recipe[SolarConfig]):
    name = "solar"
    summary = "the CNTK book's solar example: the book's files (conformance) or days (honest)"
    description = __doc__ or ""
    config = SolarConfig
    presets = {
        "book": {},
        "honest": {"data": "days"},
        "better": {"data": "days", "model": "better", "patience": 4},
    }
    preset_help = {
        "book": "the book's files and model",
        "honest": "the book's model on days in time order",
        "better": "the better model on days, early stopping",
    }
    target_stream = "target"
    size_stream = "features"
    unit = "samples"  # the book counts a minibatch in time steps
    metric = Metric("mse")

    def load_data(self, config: SolarConfig) -> RecipeData:
        from rnnkit.data.solar import (
            book_examples,
            day_examples,
            default_data_dir,
            solar_days,
            split_days,
        )

        folder = config.data_dir if config.data_dir is not None else default_data_dir()
        if config.data == "book":
            files = [folder / "solar_train.ctf", folder / "solar_val.ctf"]
            train, val = book_examples(files[0]), book_examples(files[1])
            return RecipeData(
                train,
                val,
                val,
                inputs=files,
                description="the book's CTF files (random split over sequences; leaks the "
                "target): solar_val.ctf is both validation and test",
            )
        days = solar_days(folder / "solar.csv")
        parts = split_days(days)
        features = "book" if config.model == "book" else "rich"
        train, val, test = (day_examples(p, features) for p in parts)
        ids = [f"{d.date}/{n}" for d in parts[2] for n in range(2, len(d.readings))]
        return RecipeData(
            train,
            val,
            test,
            inputs=[folder / "solar.csv"],
            ids=ids,
            description=f"solar.csv: {len(days)} days in time order 832/104/104",
        )

    def build_model(self, config: SolarConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import LSTMCell
        from rnnkit.layers import Dense
        from rnnkit.recurrence import Fold, Recurrence

        if config.model == "book":
            return Fold(LSTMCell(1, 15), initial_state=0.1) >> Dense(15, 1)
        h = config.hidden_size
        return Recurrence(LSTMCell(6, h)) >> Fold(LSTMCell(h, h)) >> Dense(h, 1)

    def criterion(self, config: SolarConfig, data: RecipeData) -> Any:
        from rnnkit.training import Criterion, squared_error

        return Criterion(squared_error, squared_error)

    def score(
        self, config: SolarConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        return {"test_mse": _mse([float(p) for p in predictions], data.test)}

    def baselines(self, config: SolarConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        total = 0 if config.model == "book" else 1  # the column of solar.total
        last = [float(e["features"][-1, total]) for e in data.test]
        return {"last reading": {"test_mse": _mse(last, data.test)}}

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        rows = []
        for example, prediction in zip(examples, predictions, strict=True):
            row: dict[str, Any] = {"steps": int(example["features"].shape[0])}
            if "target" in example:
                row["target"] = float(example["target"].reshape(-1)[0])
            row["prediction"] = float(prediction.reshape(-1)[0])
            rows.append(row)
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: SolarConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """CTF files like the book's (``|features`` per step), or CSV files like solar.csv."""
        from rnnkit.data.solar import book_examples, day_examples, solar_days

        ids: list[str] = []
        examples: list[Any] = []
        features = "book" if config.model == "book" else "rich"
        for path in paths:
            if path.suffix.lower() == ".ctf":
                part = book_examples(path)
                ids += [f"{path.name}:{i}" for i in range(len(part))]
            else:
                days = solar_days(path)
                part = day_examples(days, features)
                ids += [f"{d.date}/{n}" for d in days for n in range(2, len(d.readings))]
            examples += part
        return ids, examples


def _mse(predictions: list[float], examples: Sequence[Any]) -> float:
    targets = [float(e["target"].reshape(-1)[0]) for e in examples]
    return sum((p - t) ** 2 for p, t in zip(predictions, targets, strict=True)) / len(targets)


RECIPE = SolarRecipe()
