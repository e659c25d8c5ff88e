"""GRU-D against three GRU baselines on series with missing values and irregular times.

Che et al. 2018 (arXiv:1606.01865) compare GRU-D with a GRU on imputed input. This recipe
(:func:`compare_missing`) does the same on any series with real timestamps, with four inputs
(:data:`KINDS`):

* ``"grud"``: :class:`~rnnkit.cells.GRUDCell` on ``[x, m, δ]`` (values, mask, time since each
  variable was last observed, from the real timestamps) with ``x_mean`` = the training means;
* ``"forward"``: a GRU on the values filled forward (the training mean before the first
  observation) -- no mask, no times;
* ``"mean"``: a GRU on the values with every gap filled by the training mean;
* ``"mask_delta"``: a GRU on ``[forward-filled x, m, δ]`` (GRU-Simple in Che et al.).

The task: for each *target time* τ on the series' grid, read the observations of the ``span``
grid steps that end ``lead`` steps before τ (whatever rows of them exist), add a *query step* at
τ with every variable unobserved (so δ at the query step carries the time from the last
observation to τ), and forecast the target variable at τ. Every model ends in
``Dense(hidden, 1)``; the loss is the squared error; training stops early on the validation
loss. Errors (MAE, RMSE, in the series' units) are on the test part only, next to persistence
(the last observed target value of the window).

Splits are in time order over the grid (fractions of its rows); the scaler and the training
means come from the observed values of the training part only. For an experiment that removes
data (:func:`remove_data`: single values, or whole rows so that sampling becomes irregular),
the model trains and stops early on the data that remain (targets only where the value
remains), and is tested on the TRUE values at the test target times, removed or not; values
missing in the original file are never scored.

>>> times = np.array(["2024-01-01", "2024-01-02", "2024-01-05"], dtype="datetime64[us]")
>>> ex = grud_examples([np.array([[1.0, np.nan], [np.nan, 2.0], [3.0, 4.0]])], [times], unit="D")
>>> ex[0]["mask"].tolist(), ex[0]["delta"].tolist()
([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [4.0, 3.0]])
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.timeseries import TimeSeries, TimeUnit, time_since_observed

__all__ = [
    "KINDS",
    "MissingConfig",
    "MissingResult",
    "compare_missing",
    "grud_examples",
    "missing_model",
    "model_inputs",
    "remove_data",
    "training_means",
]

Kind = Literal["grud", "forward", "mean", "mask_delta"]
KINDS: tuple[Kind, ...] = ("grud", "forward", "mean", "mask_delta")
NAMES = {
    "grud": "GRU-D",
    "forward": "GRU, forward-filled",
    "mean": "GRU, mean-filled",
    "mask_delta": "GRU + mask + gaps",
}


# ---------------------------------------------------------------------------------------------
# Examples


def _name(names: Sequence[str] | None, i: int) -> str:
    return f"sequence {names[i]!r}" if names is not None else f"sequence {i}"


def grud_examples(
    values: Sequence[np.ndarray],
    times: Sequence[np.ndarray | None],
    *,
    unit: TimeUnit,
    masks: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Tensor]]:
    """GRU-D's ``values, mask, delta`` for each of several sequences, checked one by one.

    Args:
        values: per sequence, ``[T_i, D]`` floats, NaN where unobserved.
        times: per sequence, ``datetime64`` ``[T_i]`` strictly increasing, or None to count
            steps (then ``unit`` must be ``"steps"``).
        unit: the unit of δ (see :func:`~rnnkit.data.timeseries.time_since_observed`).
        masks: per sequence, ``[T_i, D]`` (1 or True = observed); None derives it from NaN.
        names: a name per sequence for the messages (default: its position).
        columns: the D variable names for the messages.

    Returns:
        per sequence, float32 ``"values"`` ``[T_i, D]`` (NaN where unobserved), ``"mask"`` and
        ``"delta"`` ``[T_i, D]`` (δ is 0 at each sequence's first step, as in GRU-D).

    Raises:
        ValueError: naming the sequence (and the variable): a mask whose shape differs from the
            values, a value marked observed that is NaN, a number of variables that differs from
            the first sequence's, timestamps that do not increase, an empty sequence.
    """
    if len(values) != len(times) or (masks is not None and len(masks) != len(values)):
        raise ValueError(
            f"values, times, masks: expected one per sequence, found {len(values)}, "
            f"{len(times)} and {'-' if masks is None else len(masks)}"
        )
    width = None
    examples = []
    for i, (x, t) in enumerate(zip(values, times, strict=True)):
        x = np.asarray(x, dtype=np.float64)
        where = _name(names, i)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{where}: expected values [T, D] with T >= 1, found {list(x.shape)}")
        width = x.shape[1] if width is None else width
        cols = list(columns) if columns is not None else [str(c) for c in range(width)]
        if x.shape[1] != width or len(cols) != width:
            raise ValueError(
                f"{where}: expected {len(cols)} variables {cols}, found {x.shape[1]} columns"
            )
        m = ~np.isnan(x) if masks is None else np.asarray(masks[i])
        if m.shape != x.shape:
            raise ValueError(
                f"{where}: expected a mask of the values' shape {list(x.shape)}, "
                f"found {list(m.shape)}"
            )
        m = m.astype(bool)
        bad = np.argwhere(m & np.isnan(x))
        if bad.size:
            step, var = (int(v) for v in bad[0])
            raise ValueError(
                f"{where}, variable {cols[var]!r}: marked observed at step {step} but the "
                "value is NaN"
            )
        if t is not None:
            t = np.asarray(t)
            if t.shape != (x.shape[0],):
                raise ValueError(
                    f"{where}: expected {x.shape[0]} timestamps (one per step), "
                    f"found shape {list(t.shape)}"
                )
            back = np.flatnonzero(np.diff(t) <= np.zeros((), dtype=np.diff(t).dtype))
            if back.size:
                k = int(back[0]) + 1
                raise ValueError(
                    f"{where}: expected increasing timestamps, found {t[k]} at step {k} "
                    f"after {t[k - 1]}"
                )
        delta = time_since_observed(t, m, unit)
        examples.append(
            {
                "values": torch.from_numpy(np.where(m, x, np.nan).astype(np.float32)),
                "mask": torch.from_numpy(m.astype(np.float32)),
                "delta": torch.from_numpy(delta.astype(np.float32)),
            }
        )
    return examples


def training_means(examples: Sequence[dict[str, Tensor]], columns: Sequence[str]) -> Tensor:
    """``[D]``: the mean of each variable over the observed values of ``examples`` (the
    training part); ValueError naming the variables that are never observed there.

    >>> ex = grud_examples([np.array([[1.0, np.nan], [3.0, 5.0]])], [None], unit="steps")
    >>> training_means(ex, ["a", "b"]).tolist()
    [2.0, 5.0]
    """
    if not examples:
        raise ValueError("examples: expected at least one training sequence, found none")
    total = torch.stack([torch.nan_to_num(e["values"]).sum(0) for e in examples]).sum(0)
    count = torch.stack([e["mask"].sum(0) for e in examples]).sum(0)
    empty = [c for c, n in zip(columns, count.tolist(), strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"variables {empty}: expected observed values in the training split, found none "
            "(drop the variable, or move the split so that training data observe it)"
        )
    return total / count


def _fill_forward(values: Tensor, mask: Tensor, means: Tensor) -> Tensor:
    """``[T, D]``: each gap filled with the last observation before it (``means`` before the
    first one)."""
    out = torch.empty_like(values)
    last = means.clone()
    for t in range(values.shape[0]):
        last = torch.where(mask[t] > 0, values[t], last)
        out[t] = last
    return out


def model_inputs(example: dict[str, Tensor], kind: Kind, means: Tensor) -> Tensor:
    """The input sequence of model ``kind`` for one example of :func:`grud_examples`:
    ``[T, 3D]`` for ``"grud"`` and ``"mask_delta"``, ``[T, D]`` for ``"forward"`` and ``"mean"``.

    >>> ex = grud_examples([np.array([[1.0], [np.nan]])], [None], unit="steps")[0]
    >>> [model_inputs(ex, k, torch.tensor([0.5]))[:, 0].tolist() for k in KINDS]
    [[1.0, 0.0], [1.0, 1.0], [1.0, 0.5], [1.0, 1.0]]
    """
    from rnnkit.cells import GRUDCell

    values, mask, delta = example["values"], example["mask"], example["delta"]
    if kind == "grud":
        return GRUDCell.pack_inputs(values, mask, delta)
    if kind == "mean":
        return torch.where(mask > 0, values, means)
    filled = _fill_forward(values, mask, means)
    if kind == "forward":
        return filled
    if kind == "mask_delta":
        return torch.cat([filled, mask, delta], dim=-1)
    raise ValueError(f"kind: expected one of {list(KINDS)}, found {kind!r}")


def missing_model(kind: Kind, num_variables: int, hidden_size: int, means: Tensor) -> nn.Module:
    """``Fold(cell) >> Dense(hidden_size, 1)`` with the cell of ``kind``: ``GRUDCell(D, H,
    x_mean=means)`` for ``"grud"``, else ``GRUCell`` over the input of :func:`model_inputs`."""
    from rnnkit.cells import GRUCell, GRUDCell
    from rnnkit.layers import Dense
    from rnnkit.recurrence import Fold

    d, h = num_variables, hidden_size
    if kind == "grud":
        return Fold(GRUDCell(d, h, x_mean=means)) >> Dense(h, 1)
    sizes = {"forward": d, "mean": d, "mask_delta": 3 * d}
    if kind not in sizes:
        raise ValueError(f"kind: expected one of {list(KINDS)}, found {kind!r}")
    return Fold(GRUCell(sizes[kind], h)) >> Dense(h, 1)


# ---------------------------------------------------------------------------------------------
# Removing data


def remove_data(
    series: TimeSeries, removal: Literal["values", "rows"], rate: float, seed: int
) -> TimeSeries:
    """``series`` with a share ``rate`` of its data removed at random (seeded).

    ``"values"``: each value becomes NaN with probability ``rate``, independently (the rows
    stay, the sampling stays regular). ``"rows"``: each row but the first is dropped with
    probability ``rate``, so the remaining timestamps are irregular.

    >>> s = TimeSeries(np.arange(8.0).reshape(4, 2), ("a", "b"))
    >>> remove_data(s, "values", 0.5, seed=0).mask.astype(int).tolist()
    [[1, 0], [0, 0], [1, 1], [1, 1]]
    >>> remove_data(s, "rows", 0.5, seed=0)  # a series known by its order only
    Traceback (most recent call last):
    ...
    ValueError: removal='rows': the series needs timestamps, found none
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate: expected a share in [0, 1), found {rate!r}")
    rng = np.random.default_rng(seed)
    if removal == "values":
        drop = rng.random(series.values.shape) < rate
        return TimeSeries(np.where(drop, np.nan, series.values), series.columns, series.times)
    if removal == "rows":
        if series.times is None:
            raise ValueError("removal='rows': the series needs timestamps, found none")
        keep = rng.random(len(series)) >= rate
        keep[0] = True
        return TimeSeries(series.values[keep], series.columns, series.times[keep])
    raise ValueError(f"removal: expected 'values' or 'rows', found {removal!r}")


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class MissingConfig:
    """Settings of :func:`compare_missing`; every field goes to the run's ``config.json``.

    ``span``: grid steps of observations in each input window; ``lead``: grid steps from the
    window's end to the target time (1 = the next step); ``stride``: grid steps between target
    times; ``relative``: subtract from each window its last observed value of every variable
    (and from the target that of the target variable), for series with a trend.
    """

    target: str
    span: int = 48
    lead: int = 1
    stride: int = 1
    delta_unit: TimeUnit = "h"
    relative: bool = False
    hidden_size: int = 32
    epochs: int = 30
    patience: int = 6
    minibatch_size: int = 64
    learning_rate: float = 0.005
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("span", "lead", "stride", "hidden_size", "epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if len(self.split) != 3 or any(f <= 0 for f in self.split):
            raise ValueError(f"split: expected three positive shares, found {self.split}")
        if abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(f"split: expected shares summing to 1, found {self.split}")


@dataclass
class MissingResult:
    """Test errors in the series' units: per model ``{"mae", "rmse", "epochs", "seconds"}``,
    and persistence's; the counts of examples and of scored test targets."""

    models: dict[str, dict[str, float]]
    persistence_mae: float
    persistence_rmse: float
    train_examples: int
    test_targets: int
    observed_share: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Part:
    examples: list[dict[str, Tensor]]
    labels: np.ndarray  # [n] scaled (relative when asked), NaN where not scored
    levels: np.ndarray  # [n] the level of the target in scaled units (0 unless relative)
    persistence: np.ndarray  # [n] scaled: the last observed target value of the window


def _grid_parts(length: int, split: Sequence[float]) -> list[range]:
    cuts = [0, *(math.floor(c * length + 1e-9) for c in np.cumsum(split)[:-1]), length]
    return [range(a, b) for a, b in itertools.pairwise(cuts)]


def _windows(
    observed: TimeSeries,
    grid: TimeSeries,
    rows: range,
    config: MissingConfig,
    column: int,
    labels: np.ndarray,
    columns: Sequence[str],
) -> _Part:
    """Examples for the target grid rows ``rows`` (see the module docstring); ``labels [G]``
    holds the value to score at each grid row (NaN: not scored)."""
    first = config.span + config.lead - 1
    seqs: list[np.ndarray] = []
    stamps: list[np.ndarray | None] = []
    names: list[str] = []
    kept: list[int] = []
    for g in range(max(rows.start, first), rows.stop, config.stride):
        if math.isnan(labels[g]):
            continue
        lo, hi = g - first, g - config.lead  # grid rows of the window
        if observed.times is None or grid.times is None:
            a, b, t = lo, hi + 1, None
        else:
            a = int(np.searchsorted(observed.times, grid.times[lo], "left"))
            b = int(np.searchsorted(observed.times, grid.times[hi], "right"))
            t = np.append(observed.times[a:b], grid.times[g])
        if b <= a:
            continue
        x = np.vstack([observed.values[a:b], np.full((1, observed.values.shape[1]), np.nan)])
        seqs.append(x)
        stamps.append(t)
        names.append(str(g) if grid.times is None else str(grid.times[g]))
        kept.append(g)
    unit: TimeUnit = "steps" if grid.times is None else config.delta_unit
    examples = grud_examples(seqs, stamps, unit=unit, names=names, columns=columns)
    levels, persistence = np.zeros(len(examples)), np.zeros(len(examples))
    for i, e in enumerate(examples):
        last = _fill_forward(e["values"], e["mask"], torch.zeros(len(columns)))[-1]
        persistence[i] = float(last[column])
        if config.relative:
            e["values"] = e["values"] - last
            levels[i] = float(last[column])
    return _Part(examples, labels[kept] - levels, levels, persistence)


def compare_missing(
    series: TimeSeries,
    config: MissingConfig,
    *,
    removal: Literal["values", "rows"] | None = None,
    rate: float = 0.0,
    kinds: Sequence[Kind] = KINDS,
    run_dir: str | Path | None = None,
    progress: bool = False,
) -> MissingResult:
    """Train and test each model of ``kinds`` on ``series`` (see the module docstring).

    Args:
        series: the series on its regular grid (missing values NaN); with timestamps unless
            ``config.delta_unit == "steps"``.
        removal, rate: remove a share of the data first (:func:`remove_data`, seeded by
            ``config.seed``); the test scores the true values.
        kinds: the models to compare.
        run_dir: where ``config.json``, ``metrics_<kind>.csv``, ``model_<kind>/``,
            ``errors.png`` and ``report.md`` go.

    Raises:
        ValueError: an unknown target, a variable never observed in the training part, a
            part without examples.
    """
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.data.timeseries import Scaler
    from rnnkit.training import (
        Criterion,
        CSVLogger,
        EarlyStopping,
        ProgressPrinter,
        Trainer,
        squared_error,
    )

    column = series.column_indices([config.target], "target")[0]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds: expected some of {list(KINDS)}, found {list(kinds)}")
    if series.times is None and config.delta_unit != "steps":
        raise ValueError(
            f"delta_unit: a series without timestamps has gaps in 'steps' only, found "
            f"{config.delta_unit!r}"
        )
    observed = series if removal is None else remove_data(series, removal, rate, config.seed)
    parts = _grid_parts(len(series), config.split)
    cut = parts[1].start
    n_train = cut
    if series.times is not None and observed.times is not None:
        n_train = int(np.searchsorted(observed.times, series.times[cut]))
    train_part = observed[0:n_train]
    seen = np.asarray(train_part.mask.any(axis=0)).tolist()
    never = [c for c, s in zip(series.columns, seen, strict=True) if not s]
    if never:
        raise ValueError(
            f"variables {never}: expected observed values in the training split (the first "
            f"{n_train} rows), found none; drop them or move the split"
        )
    scaler = Scaler.fit(train_part)
    scaled_obs = scaler.transform(observed)
    truth = scaler.transform(series).values[:, column]
    # Targets for training and validation: what remains after removal, at grid times.
    remaining = np.full(len(series), np.nan)
    if series.times is None or observed.times is None:
        remaining = scaled_obs.values[:, column].copy()
    else:
        at = np.searchsorted(series.times, observed.times)
        remaining[at] = scaled_obs.values[:, column]
    sets = []
    for name, rows, labels in zip(
        ("train", "validation", "test"), parts, (remaining, remaining, truth), strict=True
    ):
        part = _windows(scaled_obs, series, rows, config, column, labels, series.columns)
        if not part.examples:
            raise ValueError(
                f"split: the {name} part has no target with a window of span {config.span} "
                f"and lead {config.lead}; use a longer series or a shorter span"
            )
        sets.append(part)
    means = training_means(sets[0].examples, series.columns)
    to_units = lambda v: scaler.inverse_transform(v[:, None], [config.target])[:, 0]  # noqa: E731
    test = sets[2]
    truth_u = to_units(test.labels + test.levels)
    run = Path(run_dir) if run_dir is not None else None
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    predictions: dict[str, np.ndarray] = {}
    for kind in kinds:
        torch.manual_seed(config.seed)
        streams = [
            [
                {
                    "features": model_inputs(e, kind, means),
                    "labels": torch.tensor([[y]], dtype=torch.float32),
                }
                for e, y in zip(p.examples, p.labels, strict=True)
            ]
            for p in sets
        ]
        model = missing_model(kind, len(series.columns), config.hidden_size, means)
        callbacks: list[Any] = [EarlyStopping(patience=config.patience, restore_best=True)]
        if progress:
            callbacks.insert(
                0, ProgressPrinter(freq=0, tag=kind, num_epochs=config.epochs, metric_is_pct=False)
            )
        if run is not None:
            callbacks.append(CSVLogger(run / f"metrics_{kind}.csv"))
        trainer = Trainer(
            model,
            Criterion(squared_error, squared_error),
            torch.optim.Adam(model.parameters(), lr=config.learning_rate),
            callbacks=callbacks,
            clip_norm=5.0,
        )

        def source(examples: list[dict[str, Tensor]], train: bool) -> MinibatchSource:
            return MinibatchSource.for_fit(
                examples, config.minibatch_size, training=train, unit="sequences", seed=config.seed
            )

        started = time.perf_counter()
        summary = trainer.fit(
            source(streams[0], True), epochs=config.epochs, validation=source(streams[1], False)
        )
        seconds = time.perf_counter() - started
        pred = _predict(trainer, streams[2], config.minibatch_size)
        pred_u = to_units(pred + test.levels)
        predictions[kind] = pred_u
        err = pred_u - truth_u
        results[kind] = {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "epochs": len(summary.history),
            "seconds": round(seconds, 1),
        }
        if run is not None:
            from rnnkit.saving import save

            save(model, run / f"model_{kind}")
    naive = to_units(test.persistence) - truth_u
    result = MissingResult(
        results,
        float(np.abs(naive).mean()),
        float(np.sqrt((naive**2).mean())),
        len(sets[0].examples),
        len(test.examples),
        float(observed.mask.sum() / series.values.size),
    )
    if run is not None:
        _write_run(run, config, result, removal, rate, predictions, truth_u)
    return result


def _predict(trainer: Any, examples: list[dict[str, Tensor]], size: int) -> np.ndarray:
    from rnnkit.sequences import SequenceBatch

    out = []
    for i in range(0, len(examples), size):
        x = SequenceBatch.from_list([e["features"] for e in examples[i : i + size]])
        out.append(trainer.predict(x)[:, 0].numpy())
    return np.concatenate(out)


def _write_run(
    run: Path,
    config: MissingConfig,
    result: MissingResult,
    removal: str | None,
    rate: float,
    predictions: dict[str, np.ndarray],
    truth: np.ndarray,
) -> None:
    from rnnkit.tasks.rundir import RunDirectory

    folder = RunDirectory(run)
    folder.write_config({**asdict(config), "removal": removal, "rate": rate})
    rows: list[tuple[Any, ...]] = [
        (NAMES[k], r["mae"], r["rmse"], r["epochs"]) for k, r in result.models.items()
    ]
    rows.append(("persistence", result.persistence_mae, result.persistence_rmse, "-"))
    removed = "none" if removal is None else f"{rate:.0%} of the {removal} removed at random"
    folder.write_report(
        f"Missing values: forecasts of `{config.target}`",
        rows,
        header=("model", "test MAE", "test RMSE", "epochs"),
        notes=[
            f"Removal: {removed}; {result.observed_share:.1%} of the grid's values observed.",
            f"Training examples {result.train_examples}; test targets {result.test_targets} "
            "(true values, in the series' units).",
        ],
    )
    (run / "result.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    shown = slice(0, min(len(truth), 200))
    ax.plot(truth[shown], color="black", lw=1, label="true")
    for kind, pred in predictions.items():
        ax.plot(pred[shown], lw=1, label=NAMES[kind])
    ax.set_xlabel("test target")
    ax.set_ylabel(config.target)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run / "errors.png", dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The three real series of the comparison, and the command


@dataclass(frozen=True)
class Preset:
    """A real series of the comparison: its file under ``../shared/data/timeseries``, how to
    read it, and the settings used for it in docs/results.md."""

    file: str
    target: str
    settings: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "airquality": Preset(
        "nyc-airquality-1973.csv",
        "Ozone",
        {
            "span": 7,
            "delta_unit": "D",
            "hidden_size": 16,
            "epochs": 80,
            "patience": 15,
            "minibatch_size": 16,
            "learning_rate": 0.01,
            "split": (0.6, 0.2, 0.2),
        },
    ),
    "co2": Preset(
        "co2-weekly.csv",
        "co2",
        {
            "span": 52,
            "delta_unit": "W",
            "relative": True,
            "epochs": 30,
            "patience": 6,
            "minibatch_size": 64,
        },
    ),
    "elecdemand": Preset(
        "elecdemand-2014.csv",
        "Demand",
        {
            "span": 48,
            "lead": 4,
            "stride": 6,
            "delta_unit": "h",
            "epochs": 25,
            "patience": 5,
            "minibatch_size": 64,
        },
    ),
}


def default_data_dir() -> Path:
    """``../shared/data/timeseries`` beside the working directory or the repository."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / "data" / "timeseries"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data" / "timeseries"


def load_preset(name: str, path: str | Path | None = None) -> TimeSeries:
    """The series of preset ``name`` with real timestamps.

    ``airquality``: Ozone, Solar.R, Wind, Temp, daily from 1973-05-01 (dates from the Month and
    Day columns). ``co2``: weekly CO2 (``date`` as ``%Y%m%d``). ``elecdemand``: Demand,
    WorkDay, Temperature, every 30 minutes from 2014-01-01 00:00 (the file has no timestamps;
    row ``k`` is ``00:00 + 30 min * (k - 1)``).
    """
    from rnnkit.data.timeseries import load_series

    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {list(PRESETS)}, found {name!r}")
    file = Path(path) if path is not None else default_data_dir() / PRESETS[name].file
    if name == "co2":
        return load_series(file, "date", ["co2"], time_format="%Y%m%d")
    if name == "airquality":
        columns = ["Ozone", "Solar.R", "Wind", "Temp"]
        raw = load_series(file, None, [*columns, "Month", "Day"])
        month, day = raw.values[:, 4], raw.values[:, 5]
        if np.isnan(month).any() or np.isnan(day).any():
            raise ValueError(f"{file}: expected a Month and a Day on every row, found gaps")
        stamps = [f"1973-{int(m):02d}-{int(d):02d}" for m, d in zip(month, day, strict=True)]
        times = np.array(stamps, dtype="datetime64[D]").astype("datetime64[us]")
        return TimeSeries(raw.values[:, :4], tuple(columns), times)
    columns = ["Demand", "WorkDay", "Temperature"]
    raw = load_series(file, None, ["rownames", *columns])
    rows = raw.values[:, 0]
    if np.isnan(rows).any() or (np.diff(rows) != 1).any() or rows[0] != 1:
        raise ValueError(f"{file}: expected rownames 1, 2, 3, ... (one row per half hour)")
    minutes = (rows.astype(np.int64) - 1) * 30
    times = np.datetime64("2014-01-01T00:00", "us") + minutes.astype("timedelta64[m]")
    return TimeSeries(raw.values[:, 1:], tuple(columns), times)


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit grud``: GRU-D against three GRU baselines on a CSV file or a preset series."""
    p = sub.add_parser(
        "grud",
        help="GRU-D vs GRUs on filled input, on a series with missing values",
        description="Forecast a variable of a series with missing values (and, with --removal, "
        "values or rows removed at random) with GRU-D, a GRU on forward-filled input, a GRU on "
        "mean-filled input and a GRU given the mask and gaps; test errors are on true values.",
    )
    p.add_argument("csv", nargs="?", type=Path, help="a CSV file with a header row")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a real series and its settings")
    p.add_argument("--time-column", help="the column of timestamps (CSV input)")
    p.add_argument("--time-format", default=None, help="strptime format, e.g. %%Y%%m%%d")
    p.add_argument("--target", help="the variable to forecast (CSV input)")
    p.add_argument("--columns", nargs="+", help="the input variables (default: the target)")
    p.add_argument("--delta-unit", choices=("s", "min", "h", "D", "W", "steps"))
    p.add_argument("--removal", choices=("none", "values", "rows"), default="none")
    p.add_argument("--rate", type=float, default=0.5, help="share removed with --removal")
    p.add_argument("--models", nargs="+", choices=KINDS, default=list(KINDS))
    for name in ("span", "lead", "stride", "epochs", "hidden-size"):
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=Path("runs") / "grud")

    def run(args: Any) -> int:
        if args.preset is not None:
            series = load_preset(args.preset, args.csv)
            settings = dict(PRESETS[args.preset].settings, target=PRESETS[args.preset].target)
        else:
            if args.csv is None or args.target is None or args.time_column is None:
                raise ValueError(
                    "csv, --time-column, --target: expected a CSV file with its time column "
                    "and target (or --preset), found some missing"
                )
            from rnnkit.data.timeseries import load_series

            columns = args.columns or [args.target]
            if args.target not in columns:
                columns = [args.target, *columns]
            series = load_series(args.csv, args.time_column, columns, time_format=args.time_format)
            settings = {"target": args.target}
        overrides = {
            "span": args.span,
            "lead": args.lead,
            "stride": args.stride,
            "epochs": args.epochs,
            "hidden_size": args.hidden_size,
            "delta_unit": args.delta_unit,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        config = MissingConfig(**settings, seed=args.seed)
        removal = None if args.removal == "none" else args.removal
        missing = int((~series.mask).sum())
        print(
            f"{len(series)} steps of {list(series.columns)}, {missing} values missing; "
            f"removal: {args.removal}" + ("" if removal is None else f" {args.rate:.0%}")
        )
        result = compare_missing(
            series,
            config,
            removal=removal,
            rate=args.rate if removal is not None else 0.0,
            kinds=args.models,
            run_dir=args.run_dir,
        )
        for kind, r in result.models.items():
            print(f"{NAMES[kind]:>22}: test MAE {r['mae']:.4g}  RMSE {r['rmse']:.4g}")
        print(
            f"{'persistence':>22}: test MAE {result.persistence_mae:.4g}  "
            f"RMSE {result.persistence_rmse:.4g}"
        )
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"split": list(config.split), **result.as_dict(), "seed": args.seed}))
        return 0

    return {"grud": run}
