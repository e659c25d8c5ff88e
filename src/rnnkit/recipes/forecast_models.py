"""The models ``rnnkit forecast`` chooses between and what a run records of its choice: the
candidates of ``--model auto`` and ``--revin auto``, the config of the model a run trained,
its examples' spec and its probabilistic head's kind (shared by :mod:`rnnkit.recipes.forecast`
and the modules it calls: :mod:`~rnnkit.recipes.forecast_long`,
:mod:`~rnnkit.recipes.forecast_outputs`, :mod:`~rnnkit.recipes.forecast_backtest`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from rnnkit.recipes.forecast import ForecastConfig

__all__ = [
    "CANDIDATES",
    "candidates",
    "chosen_config",
    "info_head",
    "loss_info",
    "selection_line",
    "spec_of",
    "with_choice",
]


CANDIDATES = {
    "window": ("window", False, False),
    "window revin": ("window", False, True),
    "stream": ("stream", False, False),
    "window residual": ("window", True, False),
}
"""The models a short run can choose from: name -> (model, residual, revin)."""


def candidates(config: ForecastConfig) -> list[str]:
    """The candidates of ``config``'s choices (``--model auto``, ``--revin auto``), in order;
    one name when nothing is left to choose."""
    if config.residual:
        return ["window residual"]
    if config.model == "stream":
        return ["stream"]
    windows = {"auto": ["window", "window revin"], "on": ["window revin"], "off": ["window"]}
    names = list(windows[config.revin])
    if config.model == "auto" and config.series_id is None:
        names += ["stream", "window residual"]
    return names


def info_head(info: Mapping[str, Any]) -> nn.Module:
    """A head of the run's kind (``info``'s ``loss``, ``quantiles``, ``horizon`` and targets)
    for its methods (point, quantiles, intervals), which read no weights."""
    from rnnkit import probabilistic as pr

    n, h = len(info["targets"]), info["horizon"]
    if info["loss"] == "quantile":
        return pr.QuantileHead(1, h, info["quantiles"], targets=n)
    if info["loss"] == "gaussian":
        return pr.GaussianHead(1, h, targets=n)
    return pr.StudentTHead(1, h, targets=n)


def loss_info(config: ForecastConfig) -> dict[str, Any]:
    return {"loss": config.loss, "quantiles": list(config.quantiles), "level": config.level}


def with_choice(config: ForecastConfig, model: str, residual: bool, revin: bool) -> ForecastConfig:
    """``config`` with a model chosen: nothing left to choose."""
    patch = 0 if model == "stream" else config.patch  # the stream model reads single steps
    return dataclasses.replace(
        config, model=model, residual=residual, revin="on" if revin else "off", patch=patch
    )


def chosen_config(config: ForecastConfig, info: Mapping[str, Any]) -> ForecastConfig:
    """``config`` with the model the run trained (``--model auto``, ``--revin auto``
    resolved; a run of an rnnkit without RevIN has ``revin`` off)."""
    return with_choice(config, info["model"], bool(info["residual"]), bool(info.get("revin")))


def selection_line(selection: Mapping[str, Any]) -> str:
    """What ``--model auto`` (or ``--revin auto``) chose, with each candidate's validation
    MASE."""
    parts = ", ".join(
        f"{name} {c['score']:.4g} ({c['epochs']} epochs)"
        for name, c in selection["candidates"].items()
    )
    model = any(not name.startswith("window") for name in selection["candidates"])
    flags = "--model auto" if model else "--revin auto"
    return (
        f"{flags} chose {selection['chosen']} by the {selection['rule']}: {parts}; "
        f"{selection['seconds']:.1f} s, then the full run of {selection['chosen']}."
    )


def spec_of(config: ForecastConfig) -> Any:
    from rnnkit.forecasting import ForecastSpec

    return ForecastSpec(
        config.model,
        config.input_length,
        config.horizon,
        config.season,
        config.stride,
        config.residual,
    )
