"""What ``rnnkit forecast`` does with the trained model after its test figures: the forecast
past the end of the data (``forecast.csv``, ``future.png``) and, with ``--backtest``, the
rolling-origin backtest over the test part (``backtest.csv``).

``forecast.csv`` has one row per series (or target) and horizon step: ``series``, ``origin``
(the time of the last row the forecast reads), ``step`` (1..H), ``time`` (the step's date, or
its row or integer time), ``prediction``, and for a probabilistic run ``lower`` and ``upper``
(the ``--level`` interval) and one ``q<level>`` column per ``--quantiles`` level.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from rnnkit.data.timeseries import TimeSeries
    from rnnkit.recipes.forecast import ForecastConfig, ForecastRecipe
    from rnnkit.recipes.harness import RecipeData
    from rnnkit.recipes.rundir import RunDirectory

__all__ = [
    "FutureForecast",
    "future_part",
    "plot_future",
    "single_table_future",
    "write_forecast_csv",
    "write_future",
]


@dataclass(frozen=True)
class FutureForecast:
    """Forecasts past the end of the data, one row per series (or target): ``names`` ``[R]``,
    ``origin`` int64 ``[R]`` (the last row's time), ``when`` int64 ``[R, H]``, ``pred``
    ``[R, H]``; a probabilistic run's ``lower``, ``upper`` ``[R, H]`` and ``quantiles``
    ``[R, H, Q]`` at ``levels``; ``history`` per row, the observed ``(when, values)`` before it
    (what the plot draws); ``unit`` as :func:`~rnnkit.forecasting.time_unit` (None: rows or
    integer times); ``truth`` ``[R, H]`` when the steps were observed (a test part's
    forecast), drawn beside the forecast."""

    names: tuple[str, ...]
    origin: np.ndarray
    when: np.ndarray
    pred: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    quantiles: np.ndarray | None
    levels: tuple[float, ...]
    history: tuple[tuple[np.ndarray, np.ndarray], ...]
    unit: str | None
    truth: np.ndarray | None = None


def future_part(series: TimeSeries, targets: int, known: int) -> tuple[TimeSeries, int]:
    """``(history, ahead)``: with known columns, the rows after the last observed target are
    the future part (they carry the known values a forecast past the end reads) and are cut
    off the history; ``ahead`` counts them. Without known columns nothing is cut (trailing
    missing targets are missing values of the series, masked as any other)."""
    if not known:
        return series, 0
    observed = ~np.isnan(series.values[:, :targets]).all(axis=1)
    if not observed.any():
        raise ValueError("target: expected at least one observed value, found none")
    last = int(np.flatnonzero(observed)[-1])
    return series[: last + 1], len(series) - last - 1


def single_table_future(
    recipe: ForecastRecipe, config: ForecastConfig, data: RecipeData, model: nn.Module
) -> tuple[FutureForecast | None, str]:
    """The forecast from the end of a single table (its first ``H`` steps past the last
    observed row), and a sentence for the report."""
    from rnnkit import forecasting as fc
    from rnnkit.backtesting import model_predictor
    from rnnkit.recipes.forecast_models import chosen_config, spec_of

    info = data.info
    chosen = chosen_config(config, info)
    whole, ahead = data.extra["future"]
    h = chosen.horizon
    history = len(whole) - ahead
    if chosen.known and ahead < h:
        return None, (
            f"No forecast past the end: the known columns {list(chosen.known)} need {h} rows "
            f"after the last observed target (the future part, empty targets), found {ahead}."
        )
    series = whole[: history + (h if chosen.known else 0)]
    scaler = fc.scaler_from_dict(info["scaler"])
    examples = fc.file_examples(series, scaler, chosen.target, chosen.known, spec_of(chosen))
    if chosen.model == "window":
        examples = examples[-1:]
    outputs = model_predictor(model)([{"features": e["features"]} for e in examples])
    result = recipe.forecasts_in_units(info, examples, outputs)
    assert result.pred is not None
    clock = fc.series_clock(series, h)
    names = tuple(chosen.target)
    n = len(names)
    origin = np.full(n, clock[history - 1], dtype=np.int64)
    when = np.repeat(result.when[-1:], n, axis=0)
    values = series.values[:history]
    past = tuple(
        (clock[:history][~np.isnan(values[:, j])], values[~np.isnan(values[:, j]), j])
        for j in range(n)
    )
    lower = upper = quantiles = None
    if info.get("loss", "mse") != "mse":
        prob = recipe.probabilistic_in_units(info, examples, outputs)
        lower, upper = prob["lower"][-1].T, prob["upper"][-1].T
        quantiles = prob["quantiles"][-1].transpose(1, 0, 2)
    forecast = FutureForecast(
        names=names,
        origin=origin,
        when=when,
        pred=result.pred[-1].T,
        lower=lower,
        upper=upper,
        quantiles=quantiles,
        levels=tuple(info.get("quantiles", ())),
        history=past,
        unit=info["time_unit"],
    )
    return forecast, (
        f"forecast.csv: the next {h} steps after the last row "
        f"({fc.when_text(int(origin[0]), forecast.unit)}), from the trained model"
        + (f", with the {info['level']:g} interval" if lower is not None else "")
        + "; future.png draws them."
    )


def write_forecast_csv(path: Path, forecast: FutureForecast) -> Path:
    """``forecast.csv`` (the module docstring has its columns), written atomically."""
    from rnnkit.forecasting import when_text
    from rnnkit.serialization import replacing

    header = ["series", "origin", "step", "time", "prediction"]
    if forecast.lower is not None:
        header += ["lower", "upper", *(f"q{q:g}" for q in forecast.levels)]
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r, name in enumerate(forecast.names):
            origin = when_text(int(forecast.origin[r]), forecast.unit)
            for k in range(forecast.when.shape[1]):
                row: list[Any] = [
                    name,
                    origin,
                    k + 1,
                    when_text(int(forecast.when[r, k]), forecast.unit),
                    _num(forecast.pred[r, k]),
                ]
                if forecast.lower is not None and forecast.upper is not None:
                    assert forecast.quantiles is not None
                    row += [_num(forecast.lower[r, k]), _num(forecast.upper[r, k])]
                    row += [_num(v) for v in forecast.quantiles[r, k]]
                writer.writerow(row)
    return path


def _num(value: float) -> str:
    return f"{float(value):.6g}"


PLOT_LIMIT = 200
"""At most this many series in ``future.png`` (the first ones; the report names the rest)."""


def plot_future(
    path: Path, forecast: FutureForecast, *, title: str = "", context: int | None = None
) -> tuple[Path, int]:
    """``future.png``: one axis per series (or target), its last observed values (``context``
    of them, default three horizons) and the forecast past the end with its interval as a
    band, dates on the axis for a dated series. Returns the path and the series drawn (at most
    :data:`PLOT_LIMIT`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import MaxNLocator

    rows = min(len(forecast.names), PLOT_LIMIT)
    h = forecast.when.shape[1]
    keep = context if context is not None else 3 * h
    columns = 1 if rows <= 4 else int(np.ceil(np.sqrt(rows)))
    lines = int(np.ceil(rows / columns))
    small = columns > 1
    size = (9, 3.0 * lines) if not small else (2.2 * columns, 1.6 * lines)
    fig, axes = plt.subplots(lines, columns, figsize=size, squeeze=False)
    timed = forecast.unit is not None

    def axis(when: np.ndarray) -> np.ndarray:
        return when.astype("datetime64[us]") if timed else when

    for r in range(lines * columns):
        ax = axes[r // columns, r % columns]
        if r >= rows:
            ax.axis("off")
            continue
        when, values = forecast.history[r]
        ax.plot(axis(when[-keep:]), values[-keep:], color="black", lw=1, label="observed")
        x = axis(forecast.when[r])
        if forecast.lower is not None and forecast.upper is not None:
            ax.fill_between(
                x, forecast.lower[r], forecast.upper[r], color="tab:blue", alpha=0.25, lw=0
            )
        if forecast.truth is not None:
            ax.plot(x, forecast.truth[r], color="black", lw=1, ls=":", label="observed after")
        ax.plot(x, forecast.pred[r], color="tab:blue", lw=1.2, label="forecast")
        if small:
            # the name inside the axis and three ticks a side: a title's placement and each
            # tick's label are measured at every draw, most of a many-series figure's time
            ax.text(0.03, 0.97, forecast.names[r], transform=ax.transAxes, fontsize=6, va="top")
            ax.tick_params(labelsize=5)
            ax.yaxis.set_major_locator(MaxNLocator(3))
            if timed:
                dates = AutoDateLocator(maxticks=4)
                ax.xaxis.set_major_locator(dates)
                ax.xaxis.set_major_formatter(ConciseDateFormatter(dates))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(3, integer=True))
        else:
            ax.set_title(forecast.names[r], fontsize=10)
        if not small and r == 0:
            ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    if timed:
        fig.autofmt_xdate()
    if small:
        # fixed margins: tight_layout measures every axis' text again, seconds per figure
        # for a table of many series
        top = 1 - 0.5 / size[1] if title else 0.99
        fig.subplots_adjust(left=0.03, right=0.99, bottom=0.03, top=top, wspace=0.35, hspace=0.45)
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path, rows


def write_future(
    recipe: ForecastRecipe,
    config: ForecastConfig,
    data: RecipeData,
    model: nn.Module,
    run: RunDirectory,
    forecast: FutureForecast | None,
    note: str,
) -> dict[str, Any]:
    """``rnnkit forecast``'s work after the test figures, given its forecast past the end
    (:func:`single_table_future`, or the long format's): ``forecast.csv``, ``future.png`` and,
    with ``--backtest``, the backtest; the report's sentences go to ``data.extra["finish"]``."""
    lines = [note]
    out: dict[str, Any] = {}
    if forecast is not None:
        write_forecast_csv(run.path / "forecast.csv", forecast)
        _, drawn = plot_future(
            run.path / "future.png",
            forecast,
            title=f"rnnkit {recipe.name}: {config.csv.name}, past the end",
        )
        if drawn < len(forecast.names):
            lines.append(
                f"future.png draws the first {drawn} of {len(forecast.names)} series; "
                "forecast.csv has them all."
            )
        out["forecast_rows"] = int(forecast.pred.size)
    if config.backtest:
        from rnnkit.recipes.forecast_backtest import long_backtest, run_backtest

        if config.series_id is None:
            figures, sentence = run_backtest(recipe, config, data, model, run)
        else:
            figures, sentence = long_backtest(recipe, data, model, run)
        out["backtest"] = figures
        lines.append(sentence)
    data.extra["finish"] = lines
    return out
