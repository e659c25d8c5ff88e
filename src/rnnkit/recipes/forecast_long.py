"""``rnnkit forecast --series-id COLUMN``: many series in one long-format table (one row per
series and time), one global window model across them.

The table is read with :func:`rnnkit.data.panel.load_panel` (its checks name the series, the
row and what was expected) and cut per series with :func:`~rnnkit.data.panel.split_panel`: the
last ``--horizon`` steps of each series' history are its test part (its last ``--test-steps``
steps, when more: one test window per origin, one step apart), the ``--horizon`` steps before
them its validation part, the rest its training part, each series scaled with its own
training part's statistics. Each series gives the window model's examples
(:func:`rnnkit.forecasting.forecast_windows`: inputs and targets relative to the window's last
value, masks, the ``H`` horizon steps with the known covariates) with its past-only covariates
and its static covariates appended to every input step and its index as the ``series`` stream.
A series shorter than the input window is padded in front (``--short pad``, the padded steps
masked) or left out of the parts it is too short for (``--short drop``); a
:class:`~rnnkit.data.panel.PanelWarning` names the series a part leaves out.

Figures: MAE and MAPE over every observed test target of every series (in each series' units),
MASE the mean over the series of each one's MASE, whose scale is the series' in-sample
seasonal-naive MAE over its history before the test part (the M competitions' convention).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from torch import Tensor, nn

    from rnnkit.data.panel import PanelSplit
    from rnnkit.recipes.forecast import ForecastConfig, ForecastRecipe
    from rnnkit.recipes.forecast_outputs import FutureForecast
    from rnnkit.recipes.harness import RecipeData

__all__ = [
    "inputs_of",
    "load_long",
    "long_examples",
    "long_future",
    "long_inputs",
    "long_plot_forecast",
]

Example = dict[str, "Tensor"]
Part = str


def inputs_of(config: ForecastConfig) -> int:
    """Features per step of the long-format window model: each target's value and mask, the
    known covariates and the horizon flag (with ``--known``), the past and static covariates."""
    n, k = len(config.target), len(config.known)
    return 2 * n + (k + 1 if k else 0) + len(config.past) + len(config.static)


def _clock(times: np.ndarray, extra: int) -> np.ndarray:
    """int64 ``[T + extra]``: integer times, or microseconds since 1970; the ``extra`` steps
    after the last row continue its last interval (a day, or 1, after a single row)."""
    stamps = times.astype("datetime64[us]").astype(np.int64) if times.dtype.kind == "M" else times
    stamps = stamps.astype(np.int64)
    default = 86_400_000_000 if times.dtype.kind == "M" else 1
    step = int(stamps[-1] - stamps[-2]) if len(stamps) > 1 else default
    return np.concatenate([stamps, stamps[-1] + step * np.arange(1, extra + 1, dtype=np.int64)])


def _ends(split: PanelSplit, i: int, part: Part, input_length: int, short: str) -> range:
    """The first horizon rows of series ``i``'s windows in ``part``."""
    h = split.horizon
    train_end, validation_end, history = (int(b) for b in split.bounds[i])
    if part == "train":
        last = train_end - h
        low = input_length if short == "drop" else max(1, min(input_length, last))
        return range(low, last + 1)
    if part == "validation":
        ends = range(train_end, validation_end - h + 1)
    elif part == "test":
        ends = range(validation_end, history - h + 1)
    else:
        ends = range(history, history + 1)
    if short == "drop":
        return range(max(ends.start, input_length), ends.stop)
    return ends


def long_examples(split: PanelSplit, part: Part, config: ForecastConfig) -> list[Example]:
    """The window examples of ``part`` (``"train"``, ``"validation"``, ``"test"`` or
    ``"future"``: one window per series past the end of its history) of every series, series
    by series (the module docstring says what they hold)."""
    from rnnkit.data.panel import PanelWarning
    from rnnkit.forecasting import fill_forward, forecast_windows

    panel, h, t_in = split.panel, split.horizon, config.input_length
    n, p, k = len(panel.targets), len(panel.past), len(panel.known)
    targets, past = list(range(n)), list(range(n, n + p))
    known = list(range(n + p, n + p + k))
    examples: list[Example] = []
    left_out = []
    for i in range(len(panel)):
        ends = _ends(split, i, part, t_in, config.short)
        if not ends:
            history = int(split.bounds[i, 2])
            left_out.append(f"{panel.ids[i]!r} ({history} steps)")
            continue
        scaled = split.scaled[i].values
        if part == "future":
            rows = len(scaled) - int(split.bounds[i, 2])
            if k and rows < h:
                raise ValueError(
                    f"{panel.where(i, len(scaled) - 1)}: expected {h} rows after the last "
                    f"target (the future part, horizon {h}) with the known covariates "
                    f"{list(panel.known)}, found {rows}"
                )
            scaled = scaled[: int(split.bounds[i, 2]) + (h if k else 0)]
        filled = fill_forward(scaled, np.zeros(scaled.shape[1]))
        pad = max(0, t_in - ends.start)
        if pad:  # the padded steps repeat the first row, masked (NaN in ``scaled``)
            scaled = np.concatenate([np.full((pad, scaled.shape[1]), np.nan), scaled])
            filled = np.concatenate([np.repeat(filled[:1], pad, axis=0), filled])
        clock = _clock(panel.times[i], pad + ends[-1] + h)
        clock = np.concatenate([np.full(pad, clock[0], dtype=np.int64), clock])
        windows = forecast_windows(
            scaled,
            filled,
            targets,
            known,
            input_length=t_in,
            horizon=h,
            season=config.season,
            clock=clock,
            starts=[e + pad - t_in for e in ends],
        )
        static = torch.tensor(split.static[i], dtype=torch.float32)
        for e, example in zip(ends, windows, strict=True):
            columns = [example["features"]]
            steps = example["features"].shape[0]
            if p:
                start = e + pad - t_in
                block = torch.zeros(steps, p)
                block[:t_in] = torch.tensor(filled[start : start + t_in][:, past])
                columns.append(block)
            if len(panel.static_columns):
                columns.append(static.expand(steps, -1))
            example["features"] = torch.cat(columns, dim=1) if len(columns) > 1 else columns[0]
            example["series"] = torch.tensor([i], dtype=torch.int64)
            examples.append(example)
    if left_out:
        need = (
            f"input_length {t_in} rows before its horizon"
            if config.short == "drop" or part != "train"
            else f"more than horizon {h} rows in its training part"
        )
        warnings.warn(
            f"--short {config.short}: series left out of the {part} windows (each needs "
            f"{need}): " + ", ".join(left_out),
            PanelWarning,
            stacklevel=2,
        )
    return examples


def _mase_scales(split: PanelSplit, season: int) -> dict[str, list[float]]:
    """Per target, each series' in-sample seasonal-naive MAE over its history before the test
    part (the scale of its MASE); ValueError naming a series where it is 0 or undefined."""
    from rnnkit.forecasting import seasonal_naive

    panel = split.panel
    out: dict[str, list[float]] = {}
    for j, name in enumerate(panel.targets):
        scales = []
        for i in range(len(panel)):
            before = int(split.bounds[i, 1])
            errors = seasonal_naive(panel.series[i].values[:before, j], season)
            value = float(np.nanmean(errors)) if np.isfinite(errors).any() else float("nan")
            if not value > 0:
                raise ValueError(
                    f"{panel.where(i)}: target {name!r}: expected a series that changes "
                    f"within its history before the test part (the scale of its MASE, the "
                    f"in-sample seasonal-naive MAE at season {season}), found "
                    f"{'no pair ' + str(season) + ' steps apart' if value != value else 0}"
                )
            scales.append(value)
        out[name] = scales
    return out


def load_long(recipe: ForecastRecipe, config: ForecastConfig) -> RecipeData:
    """The long-format run's data: examples, the model choice (``--revin auto``) and what
    the other hooks read."""
    from rnnkit.data.panel import load_panel, split_panel
    from rnnkit.forecasting import scaler_to_dict, time_unit
    from rnnkit.recipes.forecast_models import (
        CANDIDATES,
        candidates,
        loss_info,
        selection_line,
        with_choice,
    )
    from rnnkit.recipes.harness import RecipeData

    panel = load_panel(
        config.csv,
        id_column=config.series_id or "",
        time_column=config.time_column or "time",
        targets=config.target,
        past=config.past,
        known=config.known,
        static=config.static,
        time_format=config.time_format,
    )
    test_steps = config.test_steps or config.horizon
    split = split_panel(panel, horizon=config.horizon, validation=config.horizon, test=test_steps)
    scales = _mase_scales(split, config.season)
    index = list(range(len(config.target)))
    dated = panel.times[0].dtype.kind == "M"
    base: dict[str, Any] = {
        "layout": "long",
        "targets": list(config.target),
        "known": list(config.known),
        "past": list(config.past),
        "static": list(config.static),
        "series_ids": list(panel.ids),
        "horizon": config.horizon,
        "inputs": inputs_of(config),
        "time_unit": time_unit(_clock(panel.times[0], 0)) if dated else None,
        "series_scalers": {
            "center": [s.center[index].tolist() for s in split.scalers],
            "scale": [s.scale[index].tolist() for s in split.scalers],
        },
        "panel_scalers": [scaler_to_dict(s) for s in split.scalers],
        "static_scaler": None
        if split.static_scaler is None
        else scaler_to_dict(split.static_scaler),
        "mase_scale": scales,
        "steps": [[int(b) for b in bounds] for bounds in split.bounds],
        "seasonality": {},
    }

    def parts(candidate: ForecastConfig) -> RecipeData:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warned once, for the run's own examples
            train, val, test = (long_examples(split, q, candidate) for q in _PARTS)
        info = {
            **base,
            "model": candidate.model,
            "residual": False,
            "revin": candidate.revin == "on",
            **loss_info(candidate),
        }
        return RecipeData(train, val, test, info=info, extra={"validation": val})

    names = candidates(config)
    selection = recipe.select(config, names, parts) if len(names) > 1 else None
    model, residual, revin = CANDIDATES[selection["chosen"] if selection else names[0]]
    chosen = with_choice(config, model, residual, revin)
    train, val, test = (long_examples(split, q, chosen) for q in _PARTS)
    info = {**base, "model": model, "residual": residual, "revin": revin, **loss_info(chosen)}
    info["selection"] = selection
    lengths = [int(b[2]) for b in split.bounds]
    covariates = [
        f"{what} {names_}"
        for what, names_ in (
            ("known in advance", list(config.known)),
            ("past only", list(config.past)),
            ("static", list(config.static)),
        )
        if names_
    ]
    lines = [
        f"{config.csv.name}: {len(panel)} series of {list(config.target)} in long format, "
        f"{min(lengths)}-{max(lengths)} steps of history each, "
        f"{int(sum(np.isnan(s.values[:, : len(index)]).sum() for s in panel.series))} missing "
        "target values (masked); per series the last "
        f"{test_steps} steps are the test part"
        + (
            f" ({test_steps - config.horizon + 1} origins one step apart)"
            if test_steps > config.horizon
            else ""
        )
        + f", the {config.horizon} before them the validation part, each series scaled with "
        "its own training part" + (f"; covariates: {', '.join(covariates)}" if covariates else ""),
        *([selection_line(selection)] if selection else []),
    ]
    return RecipeData(
        train,
        val,
        test,
        inputs=[config.csv],
        info=info,
        description="\n".join(lines),
        extra={"validation": val, "members": [], "split": split},
    )


_PARTS = ("train", "validation", "test")


def long_future(
    recipe: ForecastRecipe, config: ForecastConfig, data: RecipeData, model: nn.Module
) -> tuple[FutureForecast | None, str]:
    """Each series' forecast past the end of its history, and a sentence for the report."""
    from rnnkit.backtesting import model_predictor
    from rnnkit.recipes.forecast_models import chosen_config
    from rnnkit.recipes.forecast_outputs import FutureForecast

    info = data.info
    chosen = chosen_config(config, info)
    split = data.extra["split"]
    try:
        examples = long_examples(split, "future", chosen)
    except ValueError as error:
        return None, f"No forecast past the end: {error}."
    outputs = model_predictor(model)([{"features": e["features"]} for e in examples])
    result = recipe.forecasts_in_units(info, examples, outputs)
    assert result.pred is not None
    rows = [int(e["series"]) for e in examples]
    names, history, origin = [], [], []
    panel, n = split.panel, len(chosen.target)
    for i in rows:
        end = int(split.bounds[i, 2])
        clock = _clock(panel.times[i], 0)
        for t in range(n):
            values = panel.series[i].values[:end, t]
            seen = ~np.isnan(values)
            names.append(panel.ids[i] if n == 1 else f"{panel.ids[i]}:{chosen.target[t]}")
            history.append((clock[:end][seen], values[seen]))
            origin.append(clock[end - 1])

    def by_row(values: np.ndarray) -> np.ndarray:  # [O, H, n] -> [O n, H]
        return values.transpose(0, 2, 1).reshape(-1, values.shape[1])

    lower = upper = quantiles = None
    if info.get("loss", "mse") != "mse":
        prob = recipe.probabilistic_in_units(info, examples, outputs)
        lower, upper = by_row(prob["lower"]), by_row(prob["upper"])
        q = prob["quantiles"]
        quantiles = q.transpose(0, 2, 1, 3).reshape(-1, q.shape[1], q.shape[3])
    forecast = FutureForecast(
        names=tuple(names),
        origin=np.array(origin, dtype=np.int64),
        when=np.repeat(result.when, n, axis=0),
        pred=by_row(result.pred),
        lower=lower,
        upper=upper,
        quantiles=quantiles,
        levels=tuple(info.get("quantiles", ())),
        history=tuple(history),
        unit=info["time_unit"],
    )
    missing = len(panel) - len(set(rows))
    return forecast, (
        f"forecast.csv: the next {chosen.horizon} steps after each series' last observed "
        f"target, {len(set(rows))} series"
        + (f" ({missing} left out: see the warning)" if missing else "")
        + (f", with the {info['level']:g} interval" if lower is not None else "")
        + "; future.png draws them."
    )


def long_inputs(
    info: Mapping[str, Any], config: ForecastConfig, paths: Sequence[Path]
) -> tuple[list[str], list[Example]]:
    """``rnnkit predict`` on long-format files with the training file's columns: each series'
    forecast past the end of its history (the windows :func:`long_future` forecasts from),
    scaled with the scalers the run fitted on that series' training part, so the training file
    itself gives ``forecast.csv``'s forecasts again and a file with more rows forecasts from its
    new end. Ids are ``file:series``.

    Raises:
        ValueError: a series the run did not train on (it has no scaler for it), named with
            the file, or a file without the run's columns (:func:`rnnkit.data.panel.load_panel`).
    """
    from rnnkit.data.panel import PanelSplit, load_panel
    from rnnkit.data.timeseries import TimeSeries
    from rnnkit.forecasting import scaler_from_dict
    from rnnkit.recipes.forecast_models import chosen_config

    config = chosen_config(config, info)
    known_ids = {name: i for i, name in enumerate(info["series_ids"])}
    static = None if info["static_scaler"] is None else scaler_from_dict(info["static_scaler"])
    ids: list[str] = []
    examples: list[Example] = []
    for path in paths:
        panel = load_panel(
            path,
            id_column=config.series_id or "",
            time_column=config.time_column or "time",
            targets=config.target,
            past=config.past,
            known=config.known,
            static=config.static,
            time_format=config.time_format,
        )
        unknown = [name for name in panel.ids if name not in known_ids]
        if unknown:
            raise ValueError(
                f"{path}: expected series the run trained on (each is scaled with its own "
                f"training part's statistics, kept for the run's {len(known_ids)} series), "
                f"found {len(unknown)} new: {unknown[:5]}"
            )
        scalers = tuple(scaler_from_dict(info["panel_scalers"][known_ids[i]]) for i in panel.ids)
        history = [int(h) for h in panel.history]
        split = PanelSplit(
            panel=panel,
            horizon=config.horizon,
            validation=config.horizon,
            bounds=np.array([[h, h, h] for h in history], dtype=np.int64),
            scalers=scalers,
            scaled=tuple(sc.transform(x) for sc, x in zip(scalers, panel.series, strict=True)),
            static_scaler=static,
            static=panel.static
            if static is None
            else static.transform(TimeSeries(panel.static, panel.static_columns)).values,
        )
        for example in long_examples(split, "future", config):
            name = panel.ids[int(example["series"])]
            example["series"] = torch.tensor([known_ids[name]], dtype=torch.int64)
            ids.append(f"{path.name}:{name}")
            examples.append(example)
    return ids, examples


def long_plot_forecast(
    recipe: ForecastRecipe,
    config: ForecastConfig,
    data: RecipeData,
    predictions: Sequence[Any],
    path: Any,
) -> None:
    """``forecast.png`` of a long-format run: each series' test horizon (observed, forecast
    and its interval) after its last input steps."""
    from rnnkit.recipes.forecast_outputs import FutureForecast, plot_future

    info = data.info
    split = data.extra["split"]
    panel = split.panel
    result = recipe.forecasts_in_units(info, data.test, predictions)
    assert result.pred is not None
    every = [int(e["series"]) for e in data.test]
    # each series' first test window (the origin before its test part), when it has several
    first = [o for o, i in enumerate(every) if o == 0 or every[o - 1] != i]
    rows = [every[o] for o in first]
    history, truth = [], []
    for o, i in zip(first, rows, strict=True):
        end = int(split.bounds[i, 1])
        clock = _clock(panel.times[i], 0)
        values = panel.series[i].values[:end, 0]
        seen = ~np.isnan(values)
        history.append((clock[:end][seen], values[seen]))
        truth.append(result.truth[o, :, 0])
    lower = upper = None
    if info.get("loss", "mse") != "mse":
        prob = recipe.probabilistic_in_units(info, data.test, predictions)
        lower, upper = prob["lower"][first, :, 0], prob["upper"][first, :, 0]
    forecast = FutureForecast(
        names=tuple(panel.ids[i] for i in rows),
        origin=np.array([h[0][-1] if len(h[0]) else 0 for h in history], dtype=np.int64),
        when=result.when[first],
        pred=result.pred[first, :, 0],
        lower=lower,
        upper=upper,
        quantiles=None,
        levels=(),
        history=tuple(history),
        unit=info["time_unit"],
        truth=np.array(truth),
    )
    plot_future(
        path,
        forecast,
        title=f"rnnkit {recipe.name}: {config.csv.name}, test part ({config.target[0]})",
    )
