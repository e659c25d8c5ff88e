"""``rnnkit forecast --backtest``: the trained model forecasts from every ``--stride``-th
origin across the test part (:func:`rnnkit.backtesting.backtest`: the first origin is the row
before the test part, the input windows reach back into the validation part as a forecaster in
service would), optionally trained further on the data up to every ``--refit-every``-th origin.

``backtest.csv`` has one row per origin, horizon step and target (``origin``, ``step``,
``when``, ``series``, ``prediction``, ``truth``, ``error``, and ``naive``, the seasonal-naive
forecast of the same step); ``run.json``'s ``result.backtest`` holds the figures per target
(MAE, MASE, observed targets, seasonal naive's MAE) and per horizon step (MAE and MASE, per
target). A probabilistic model is backtested on its point forecast (the median, or the mean).

A long-format run (``--series-id``) forecasts from every origin of each series' test part, its
last ``--test-steps`` rows (default ``--horizon``: one origin, the row before them), one step
apart: :func:`long_backtest` writes the same ``backtest.csv`` with the series id in
``series`` (``id:target`` with several targets) and gives the figures per horizon step and per
series, MASE scaled by each series' own in-sample seasonal-naive MAE; the overall MASE is the
mean over the series of each one's MASE, as the run's test figure.
"""

from __future__ import annotations

import copy
import csv
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import Tensor, nn

    from rnnkit.backtesting import Backtest
    from rnnkit.recipes.forecast import ForecastConfig, ForecastRecipe
    from rnnkit.recipes.harness import RecipeData
    from rnnkit.recipes.rundir import RunDirectory

__all__ = ["REFIT_SHARE", "long_backtest", "run_backtest", "write_backtest_csv"]

REFIT_SHARE = 4
"""A refit trains 1 / REFIT_SHARE of ``--epochs`` (at least one) on the data up to its origin,
from the weights it has: a fresh optimizer, no early stopping (the origin's future is unseen)."""


def run_backtest(
    recipe: ForecastRecipe,
    config: ForecastConfig,
    data: RecipeData,
    model: nn.Module,
    run: RunDirectory,
) -> tuple[dict[str, Any], str]:
    """The backtest of the trained model (a copy, when it is refit): ``backtest.csv`` in
    ``run``, the figures for ``run.json`` and a sentence for the report."""
    from rnnkit.backtesting import backtest, model_predictor
    from rnnkit.recipes.forecast_models import chosen_config, info_head, spec_of
    from rnnkit.training import Trainer

    info = data.info
    chosen = chosen_config(config, info)
    spec = spec_of(chosen)
    refit = chosen.refit_every or None
    model = copy.deepcopy(model) if refit else model
    raw = model_predictor(model)
    head: Any = info_head(info) if info.get("loss", "mse") != "mse" else None

    def predict(examples: list[dict[str, Tensor]]) -> Sequence[Any]:
        """The model's point forecasts (a head's median or mean)."""
        outputs = raw(examples)
        return outputs if head is None else [head.point(o) for o in outputs]

    fit = None
    settings = chosen.train
    epochs = max(1, math.ceil(settings.member_epochs / REFIT_SHARE))
    if refit:

        def fit(examples: list[dict[str, Tensor]], origin: int) -> None:
            trainer = Trainer(
                model,
                recipe.criterion(chosen, data),
                recipe.optimizer(chosen, model),
                input_streams=recipe.input_streams,
                target_stream=recipe.target_stream,
                device=settings.device,
                **recipe.train_settings_for(chosen, epochs),
            )
            source = recipe.source(chosen, examples, training=True, seed=settings.seed + origin)
            trainer.fit(source, epochs=epochs)

    result = backtest(data.extra["prepared"], spec, predict, fit=fit, refit_every=refit)
    write_backtest_csv(run.path / "backtest.csv", result)
    figures = _figures(result)
    names = ", ".join(
        f"{t} MAE {f['mae']:.4g} (MASE {f['mase']:.4g}; seasonal naive {f['naive_mae']:.4g})"
        for t, f in figures["summary"].items()
    )
    refits = (
        f", trained further ({epochs} epochs each) at {len(result.fits)} origins" if refit else ""
    )
    return figures, (
        f"Backtest (backtest.csv): {len(result.origins)} origins every {spec.stride} steps "
        f"from the row before the test part{refits}: {names}; figures per horizon step in "
        "run.json (result.backtest.per_step)."
    )


def long_backtest(
    recipe: ForecastRecipe, data: RecipeData, model: nn.Module, run: RunDirectory
) -> tuple[dict[str, Any], str]:
    """A long-format run's backtest (the module docstring): ``backtest.csv`` in ``run``, the
    figures for ``run.json`` and a sentence for the report."""
    from rnnkit.backtesting import model_predictor
    from rnnkit.forecasting import when_text
    from rnnkit.serialization import replacing

    info = data.info
    examples = [dict(e) for e in data.test]
    result = recipe.forecasts_in_units(info, examples, model_predictor(model)(examples))
    assert result.pred is not None
    series = np.array([int(e["series"].reshape(-1)[0]) for e in examples])
    names, targets = info["series_ids"], info["targets"]
    # A series' test windows come together, one step apart, the last ending at its history's
    # end: each window's origin (the last known row) counted back from there.
    horizon = result.pred.shape[1]
    origins = np.empty(len(series), dtype=np.int64)
    for s in np.unique(series):
        rows = np.flatnonzero(series == s)
        last = info["steps"][s][2] - horizon - 1
        origins[rows] = last - (len(rows) - 1) + np.arange(len(rows))
    error = np.abs(result.pred - result.truth)  # [O, H, n], NaN where unobserved
    naive = np.abs(result.naive - result.truth)
    scales = np.array([info["mase_scale"][t] for t in targets]).T[series]  # [O, n]
    scaled = error / scales[:, None, :]
    figures: dict[str, Any] = {"origins": len(examples), "summary": {}, "per_step": {}}
    figures["per_series"] = {}
    for j, target in enumerate(targets):
        e, q, z = error[..., j], scaled[..., j], naive[..., j]
        with warnings.catch_warnings():  # a step or series with no observed truth: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            per_series = [np.nanmean(q[series == s]) for s in np.unique(series)]
            figures["summary"][target] = {
                "mae": float(np.nanmean(e)),
                "mase": float(np.nanmean(per_series)),
                "observed": int((~np.isnan(e)).sum()),
                "naive_mae": float(np.nanmean(z)),
            }
            figures["per_step"][target] = {
                "mae": [_finite(v) for v in np.nanmean(e, axis=0)],
                "mase": [_finite(v) for v in np.nanmean(q, axis=0)],
            }
            figures["per_series"][target] = {
                names[s]: {
                    "mae": _finite(np.nanmean(e[series == s])),
                    "mase": _finite(np.nanmean(q[series == s])),
                    "origins": int((series == s).sum()),
                }
                for s in np.unique(series)
            }
    path = run.path / "backtest.csv"
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["origin", "step", "when", "series", "prediction", "truth", "error", "naive"]
        )
        for o, s in enumerate(series):
            for h in range(result.pred.shape[1]):
                for j, target in enumerate(targets):
                    truth = result.truth[o, h, j]
                    writer.writerow(
                        [
                            int(origins[o]),
                            h + 1,
                            when_text(int(result.when[o, h]), info["time_unit"]),
                            names[s] + (f":{target}" if len(targets) > 1 else ""),
                            f"{result.pred[o, h, j]:.6g}",
                            f"{truth:.6g}",
                            f"{error[o, h, j]:.6g}",
                            f"{result.naive[o, h, j]:.6g}",
                        ]
                    )
    summary = ", ".join(
        f"{t} MAE {f['mae']:.4g} (MASE {f['mase']:.4g}; seasonal naive {f['naive_mae']:.4g})"
        for t, f in figures["summary"].items()
    )
    counts = np.bincount(series)
    where = (
        f"one origin per series, the row before its last {horizon} steps"
        if counts.max() == 1
        else f"{len(series)} origins one step apart across the test parts"
    )
    return figures, (
        f"Backtest (backtest.csv): {where}, {len(np.unique(series))} series: {summary}; "
        "figures per horizon step and per series in run.json (result.backtest.per_step, "
        ".per_series)."
    )


def _figures(result: Backtest) -> dict[str, Any]:
    summary = result.summary()
    for j, name in enumerate(result.targets):
        seen = ~np.isnan(result.truth[..., j])
        error = np.abs(result.naive[..., j] - result.truth[..., j])[seen]
        summary[name]["naive_mae"] = float(error.mean()) if seen.any() else math.nan
    steps = result.per_step()
    return {
        "origins": len(result.origins),
        "refit_at": list(result.fits),
        "summary": summary,
        "per_step": {
            name: {
                "mae": [_finite(v) for v in steps["mae"][:, j]],
                "mase": [_finite(v) for v in steps["mase"][:, j]],
            }
            for j, name in enumerate(result.targets)
        },
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def write_backtest_csv(path: Any, result: Backtest) -> Any:
    """``backtest.csv`` (the module docstring has its columns), written atomically."""
    from rnnkit.serialization import replacing

    rows = result.table()
    naive = result.naive.reshape(-1)  # the table's order: origin, step, target
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["origin", "step", "when", "series", "prediction", "truth", "error", "naive"]
        )
        for row, value in zip(rows, naive, strict=True):
            writer.writerow(
                [
                    row["origin"],
                    row["step"],
                    row["when"],
                    row["series"],
                    f"{row['prediction']:.6g}",
                    f"{row['truth']:.6g}",
                    f"{row['error']:.6g}",
                    f"{float(value):.6g}",
                ]
            )
    return path
