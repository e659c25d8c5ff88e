"""Trains a forecasting peer (darts or NeuralForecast) on rnnkit's own split, scaling, filling
and windows, and writes its test figures as JSON (issue 19, item 6).

Runs in ``.venv-bench`` (``bash bench/forecast_env.sh``)::

    .venv-bench/bin/python bench/forecast_peers.py --data co2 --library darts --seed 0 \\
        --loss point --out /tmp/co2-darts-0-point.json

The data come from rnnkit's functions, never re-derived here: ``prepare_series`` and the window
model's examples (``part_examples``) for co2 and elec, ``load_panel`` / ``split_panel`` for m1.
Each peer fits on the training part (scaled with the training statistics, NaN filled as rnnkit
fills them), stops early on the validation part, and forecasts every test window's horizon from
that window's own input. Figures are in the series' units over the observed targets: MAE, MASE
(rnnkit's scale: the in-sample seasonal-naive MAE of the training part; m1: per series over its
history before the test part, averaged over series), and for ``--loss quantile`` the 80 %
interval (quantiles 0.1 and 0.9) coverage and mean width and the median's MAE.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.data.panel import load_panel, split_panel
from rnnkit.data.timeseries import load_series
from rnnkit.forecasting import (
    ForecastSpec,
    fill_forward,
    forecast_errors,
    forecasts,
    mase_scales,
    part_examples,
    prepare_series,
    seasonal_naive,
)
from rnnkit.probabilistic import interval_coverage, interval_width

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "timeseries"
QUANTILES = (0.1, 0.5, 0.9)
EPOCHS, PATIENCE = 20, 5


@dataclass
class Piece:
    """One series handed to a peer, scaled and filled: ``values`` ``[T]`` (the target),
    ``observed`` ``[T]`` (1 where the target was observed), ``covariates`` ``[T, K]``."""

    values: np.ndarray
    observed: np.ndarray
    covariates: np.ndarray


@dataclass
class Task:
    """What a peer trains on and forecasts: the training and validation series, one test
    input per window (``future`` ``[H, K]``: its horizon's known covariates), and how the
    scaled forecasts ``[W, H]`` become figures (:meth:`score`)."""

    name: str
    input_length: int
    horizon: int
    known: tuple[str, ...]
    train: list[Piece]
    validation: list[Piece]
    history: list[Piece]  # per series the training and validation parts together
    val_size: int  # the validation part's length at the end of each history
    test: list[Piece]
    future: list[np.ndarray]
    truth: np.ndarray  # [W, H] in the series' units, NaN where unobserved
    naive: np.ndarray  # [W, H] the baseline (co2, elec: seasonal naive; m1: the last value)
    center: np.ndarray  # [W] per window: the scale back to the series' units
    scale: np.ndarray  # [W]
    group: np.ndarray  # [W] the series of each window (its MASE scale)
    mase_scale: np.ndarray  # [S]
    train_windows: int
    categorical: tuple[str, ...] = ()  # known columns that take a few levels (WorkDay)

    def units(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled forecasts ``[W, H]`` in the series' units."""
        return scaled * self.scale[:, None] + self.center[:, None]

    def errors(self, pred: np.ndarray) -> tuple[float, float]:
        """MAE over every observed target and the mean over series of each one's MASE."""
        mae = forecast_errors(pred.ravel(), self.truth.ravel(), 1.0)[0]
        mases = []
        for s, m in enumerate(self.mase_scale):
            rows = self.group == s
            if (~np.isnan(self.truth[rows])).any():
                mases.append(forecast_errors(pred[rows].ravel(), self.truth[rows].ravel(), m)[2])
        return mae, float(np.mean(mases))


def _pieces_of_window(example: dict[str, torch.Tensor], t_in: int, k: int) -> Piece:
    """A window model's input back as a scaled series: features hold the filled target minus
    the level, then the mask, then (with known columns) the known values."""
    features = example["features"].numpy().astype(float)
    level = float(example["level"].reshape(-1)[0])
    return Piece(features[:t_in, 0] + level, features[:t_in, 1], features[:t_in, 2 : 2 + k])


def single_task(
    name: str,
    path: Path,
    time_column: str | None,
    target: str,
    known: Sequence[str],
    time_format: str | None,
    t_in: int,
    h: int,
    season: int,
    categorical: Sequence[str] = (),
) -> Task:
    """A one-series data set on rnnkit's split (0.8 / 0.1 / 0.1) and window examples."""
    series = load_series(path, time_column, [target, *known], time_format=time_format)
    data = prepare_series(series, [target], list(known), split=(0.8, 0.1, 0.1))
    spec = ForecastSpec("window", t_in, h, season, 1)
    train_examples, _, test_examples = part_examples(data, spec)
    k = len(known)

    def whole(part: int | slice) -> Piece:
        scaled = np.concatenate(
            data.scaled[part] if isinstance(part, slice) else [data.scaled[part]]
        )
        filled = np.concatenate(
            data.filled[part] if isinstance(part, slice) else [data.filled[part]]
        )
        return Piece(
            filled[:, data.targets[0]],
            (~np.isnan(scaled[:, data.targets[0]])).astype(float),
            filled[:, data.known],
        )

    test = [_pieces_of_window(e, t_in, k) for e in test_examples]
    future = [e["features"].numpy()[t_in:, 2 : 2 + k].astype(float) for e in test_examples]
    center = data.scaler.center[data.targets]
    scale = data.scaler.scale[data.targets]
    back = forecasts(test_examples, None, horizon=h, center=center, scale=scale)
    windows = len(test)
    return Task(
        name=name,
        input_length=t_in,
        horizon=h,
        known=tuple(known),
        train=[whole(0)],
        validation=[whole(1)],
        history=[whole(slice(0, 2))],
        val_size=len(data.scaled[1]),
        test=test,
        future=future,
        truth=back.truth[:, :, 0],
        naive=back.naive[:, :, 0],
        center=np.full(windows, float(center[0])),
        scale=np.full(windows, float(scale[0])),
        group=np.zeros(windows, dtype=int),
        mase_scale=np.array([mase_scales(data, [target], season)[target]]),
        train_windows=len(train_examples),
        categorical=tuple(categorical),
    )


def _cutter(filled: np.ndarray, observed: np.ndarray) -> Any:
    """``piece(a, b)``: rows ``a .. b - 1`` of one series without covariates."""

    def piece(a: int, b: int) -> Piece:
        return Piece(filled[a:b], observed[a:b], np.zeros((b - a, 0)))

    return piece


def m1_task() -> Task:
    """M1 yearly: 181 series, the last 6 values of each the test part, the 6 before them the
    validation part, each series scaled on its own training part; one test window per series
    (input: the 6 values before it). MASE per series over its in-sample naive (lag 1) MAE on
    its history before the test part (with it the naive forecast scores 4.894)."""
    panel = load_panel(
        DATA / "m1-yearly.csv", id_column="series_id", time_column="time", targets=["value"]
    )
    split = split_panel(panel, horizon=6, validation=6)
    h = t_in = 6
    train, validation, history, test = [], [], [], []
    truth, naive, center, scale, mase = [], [], [], [], []
    train_windows = 0
    for i, scaled_series in enumerate(split.scaled):
        train_end, validation_end, end = (int(b) for b in split.bounds[i])
        scaled = scaled_series.values[:, :1]
        filled = fill_forward(scaled, np.zeros(1))[:, 0]
        observed = (~np.isnan(scaled[:, 0])).astype(float)
        piece = _cutter(filled, observed)

        train.append(piece(0, train_end))
        validation.append(piece(max(0, train_end - t_in), validation_end))
        history.append(piece(0, validation_end))
        test.append(piece(0, validation_end))
        truth.append(panel.series[i].values[validation_end:end, 0])
        naive.append(np.repeat(panel.series[i].values[validation_end - 1, 0], h))
        center.append(float(split.scalers[i].center[0]))
        scale.append(float(split.scalers[i].scale[0]))
        values = panel.series[i].values[:validation_end, 0]
        mase.append(float(seasonal_naive(values, 1).mean()))
        train_windows += max(1, train_end - h - t_in + 1)
    windows = len(test)
    return Task(
        name="m1",
        input_length=t_in,
        horizon=h,
        known=(),
        train=train,
        validation=validation,
        history=history,
        val_size=6,
        test=test,
        future=[np.zeros((h, 0))] * windows,
        truth=np.array(truth),
        naive=np.array(naive),
        center=np.array(center),
        scale=np.array(scale),
        group=np.arange(windows),
        mase_scale=np.array(mase),
        train_windows=train_windows,
    )


def load_task(name: str) -> Task:
    if name == "co2":
        return single_task("co2", DATA / "co2-weekly.csv", "date", "co2", (), "%Y%m%d", 104, 52, 52)
    if name == "elec":
        return single_task(
            "elec",
            DATA / "elecdemand-2014.csv",
            None,
            "Demand",
            ("WorkDay", "Temperature"),
            None,
            96,
            48,
            48,
            categorical=("WorkDay",),
        )
    if name == "m1":
        return m1_task()
    raise ValueError(f"--data: expected co2, elec or m1, found {name!r}")


# ---------------------------------------------------------------------------------------------
# The peers. Each returns (scaled forecasts {"point": [W, H], and for quantiles "q0.1" ...},
# train seconds, predict seconds, epochs, settings).

Run = tuple[dict[str, np.ndarray], float, float, dict[str, Any], dict[str, Any]]


def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "darts", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run_darts(task: Task, seed: int, loss: str, epochs: int, work: Path) -> Run:
    """darts ``BlockRNNModel`` (LSTM 32, reversible instance normalisation). Known columns as
    future covariates: darts 0.48's BlockRNNModel reads them over the input window (beside the
    target) and over the horizon (each output step's values joined to its RNN output before
    the final Linear)."""
    from darts import TimeSeries
    from darts.models import BlockRNNModel
    from darts.utils.likelihood_models import QuantileRegression
    from pytorch_lightning.callbacks import EarlyStopping

    t_in, h = task.input_length, task.horizon
    need = t_in + h

    def series(piece: Piece) -> Any:
        return TimeSeries.from_values(piece.values.astype(np.float32)[:, None])

    def covariates(piece: Piece, future: np.ndarray | None = None) -> Any:
        values = piece.covariates if future is None else np.concatenate([piece.covariates, future])
        return TimeSeries.from_values(values.astype(np.float32))

    train = [p for p in task.train if len(p.values) >= need]
    validation = [p for p in task.validation if len(p.values) >= need]
    settings: dict[str, Any] = {
        "model": "BlockRNNModel",
        "rnn": "LSTM",
        "hidden_dim": 32,
        "input_chunk_length": t_in,
        "output_chunk_length": h,
        "use_reversible_instance_norm": True,
        "loss": "MSELoss" if loss == "point" else f"QuantileRegression{list(QUANTILES)}",
        "n_epochs": epochs,
        "early_stopping": {"monitor": "val_loss", "patience": PATIENCE},
        "restore": "best validation checkpoint",
        "batch_size": 32,
        "random_state": seed,
        "covariates": "future_covariates (input window and horizon)" if task.known else "none",
        "train_series": f"{len(train)} of {len(task.train)} (those with input + horizon steps)",
    }
    kwargs: dict[str, Any] = {}
    if loss == "quantile":
        kwargs["likelihood"] = QuantileRegression(quantiles=list(QUANTILES))
    model = BlockRNNModel(
        model="LSTM",
        hidden_dim=32,
        input_chunk_length=t_in,
        output_chunk_length=h,
        use_reversible_instance_norm=True,
        n_epochs=epochs,
        batch_size=32,
        random_state=seed,
        model_name="peer",
        work_dir=str(work),
        save_checkpoints=True,
        force_reset=True,
        pl_trainer_kwargs={
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": False,
            "callbacks": [EarlyStopping("val_loss", patience=PATIENCE, mode="min")],
        },
        **kwargs,
    )
    fit: dict[str, Any] = {
        "series": [series(p) for p in train],
        "val_series": [series(p) for p in validation],
        "verbose": False,
        "dataloader_kwargs": {"num_workers": 0},
    }
    if task.known:
        fit["future_covariates"] = [covariates(p) for p in train]
        fit["val_future_covariates"] = [covariates(p) for p in validation]
    start = time.perf_counter()
    model.fit(**fit)
    train_seconds = time.perf_counter() - start
    epochs_run = int(model.epochs_trained)
    model = BlockRNNModel.load_from_checkpoint("peer", work_dir=str(work), best=True)
    inputs = [series(p) for p in task.test]
    extra: dict[str, Any] = {}
    if task.known:
        extra["future_covariates"] = [
            covariates(p, f) for p, f in zip(task.test, task.future, strict=True)
        ]
    start = time.perf_counter()
    if loss == "quantile":
        out = model.predict(
            n=h, series=inputs, predict_likelihood_parameters=True, verbose=False, **extra
        )
        values = np.stack([o.values() for o in out])  # [W, H, 3]: q0.1, q0.5, q0.9
        result = {f"q{q}": values[:, :, j] for j, q in enumerate(QUANTILES)}
        result["point"] = result["q0.5"]
    else:
        out = model.predict(n=h, series=inputs, verbose=False, **extra)
        result = {"point": np.stack([o.values()[:, 0] for o in out])}
    predict_seconds = time.perf_counter() - start
    return result, train_seconds, predict_seconds, {"epochs": epochs_run}, settings


def _frame(pieces: Sequence[Piece], known: Sequence[str], levels: Levels) -> Any:
    import pandas as pd

    parts = []
    for i, p in enumerate(pieces):
        part = pd.DataFrame(
            {
                "unique_id": i,
                "ds": np.arange(len(p.values)),
                "y": p.values.astype(np.float32),
                "available_mask": p.observed.astype(np.float32),
            }
        )
        for j, name in enumerate(known):
            part[name] = _column(p.covariates[:, j], levels.get(name))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


Levels = dict[str, np.ndarray]


def _column(values: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """A covariate as NeuralForecast takes it: float32, or a categorical one as its codes
    ``1 .. K`` (0: a level the training part does not have)."""
    if levels is None:
        return values.astype(np.float32)
    at = np.searchsorted(levels, values).clip(0, len(levels) - 1)
    return np.where(levels[at] == values, at + 1, 0).astype(np.int64)


def run_neuralforecast(task: Task, seed: int, loss: str, epochs: int, work: Path) -> Run:
    """NeuralForecast ``LSTM`` (input ``T_in``, encoder and decoder 32), known covariates as
    ``futr_exog_list``, missing targets through ``available_mask``. A categorical covariate
    (WorkDay) goes in ``cat_exog_list`` (an embedding): NeuralForecast's window scaler
    (``robust``) would divide a covariate by its spread over the input window, which is 0 for
    WorkDay over a weekend (96 half-hours), and the next workday's 1 becomes about 1e6 (the
    quantile model then forecast a demand of about 40 on 15 % of the test windows).
    NeuralForecast counts steps, not epochs: one epoch here is ``ceil(training windows /
    windows_batch_size)`` steps, validated once per epoch, stopped after ``PATIENCE`` checks
    without improvement."""
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MSE, MQLoss
    from neuralforecast.models import LSTM

    t_in, h = task.input_length, task.horizon
    windows_batch = 128
    per_epoch = max(1, math.ceil(task.train_windows / windows_batch))
    criterion = MSE() if loss == "point" else MQLoss(quantiles=list(QUANTILES))
    columns = {name: j for j, name in enumerate(task.known)}
    levels = {
        name: np.unique(np.concatenate([p.covariates[:, columns[name]] for p in task.train]))
        for name in task.categorical
    }
    model = LSTM(
        h=h,
        input_size=t_in,
        encoder_hidden_size=32,
        decoder_hidden_size=32,
        futr_exog_list=list(task.known) or None,
        cat_exog_list=list(task.categorical) or None,
        categorical_cardinalities={name: len(v) for name, v in levels.items()} or None,
        loss=criterion,
        valid_loss=criterion,
        max_steps=epochs * per_epoch,
        val_check_steps=per_epoch,
        early_stop_patience_steps=PATIENCE,
        windows_batch_size=windows_batch,
        start_padding_enabled=task.name == "m1",
        random_seed=seed,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(work),
    )
    settings: dict[str, Any] = {
        "model": "LSTM",
        "h": h,
        "input_size": t_in,
        "encoder_hidden_size": 32,
        "decoder_hidden_size": 32,
        "encoder_n_layers": model.encoder_n_layers,
        "scaler_type": getattr(model, "scaler_type", None) or "default",
        "loss": "MSE" if loss == "point" else f"MQLoss{list(QUANTILES)}",
        "futr_exog_list": list(task.known),
        "cat_exog_list": list(task.categorical),
        "available_mask": True,
        "max_steps": epochs * per_epoch,
        "steps_per_epoch": per_epoch,
        "val_check_steps": per_epoch,
        "early_stop_patience_steps": PATIENCE,
        "windows_batch_size": windows_batch,
        "start_padding_enabled": task.name == "m1",
        "random_seed": seed,
        "validation": "the last validation-part steps of each series (val_size)",
        "restore": "none (NeuralForecast keeps the last weights)",
    }
    fit_frame = _frame(task.history, task.known, levels)
    nf = NeuralForecast(models=[model], freq=1)
    start = time.perf_counter()
    nf.fit(df=fit_frame, val_size=task.val_size)
    train_seconds = time.perf_counter() - start
    trained = nf.models[0]
    steps = len(trained.train_trajectories)  # one entry per training step
    test_frame = _frame(task.test, task.known, levels)
    futr = None
    if task.known:
        rows = []
        for i, (p, f) in enumerate(zip(task.test, task.future, strict=True)):
            part = pd.DataFrame({"unique_id": i, "ds": len(p.values) + np.arange(h)})
            for j, name in enumerate(task.known):
                part[name] = _column(f[:, j], levels.get(name))
            rows.append(part)
        futr = pd.concat(rows, ignore_index=True)
    start = time.perf_counter()
    out = nf.predict(df=test_frame, futr_df=futr)
    predict_seconds = time.perf_counter() - start
    out = out.sort_values(["unique_id", "ds"])
    w = len(task.test)

    def column(name: str) -> np.ndarray:
        return out[name].to_numpy(dtype=float).reshape(w, h)

    if loss == "quantile":
        result = {
            "q0.1": column(_named(out.columns, "LSTM-lo-80")),
            "q0.5": column("LSTM-median"),
            "q0.9": column(_named(out.columns, "LSTM-hi-80")),
        }
        result["point"] = result["q0.5"]
    else:
        result = {"point": column("LSTM")}
    run = {"epochs": round(steps / per_epoch, 2), "steps": steps}
    return result, train_seconds, predict_seconds, run, settings


def _named(columns: Sequence[str], prefix: str) -> str:
    """The one column named ``prefix`` or ``prefix`` followed by decimals (``-lo-80.0``)."""
    found = [c for c in columns if c == prefix or c.startswith(prefix + ".")]
    if len(found) != 1:
        raise ValueError(f"forecast columns: expected one {prefix!r}, found {list(columns)}")
    return found[0]


PEERS = {"darts": run_darts, "neuralforecast": run_neuralforecast}


def score(task: Task, result: dict[str, np.ndarray], loss: str) -> dict[str, float]:
    """The test figures in the series' units (observed targets only), with the baseline's
    (``naive_mae``, ``naive_mase``: co2 1.308, m1 MASE 4.894); ``crossed``: the
    fraction of forecast steps whose quantiles were out of order (sorted before scoring)."""
    point = task.units(result["point"])
    mae, mase = task.errors(point)
    figures = {"mae": mae, "mase": mase}
    figures["naive_mae"], figures["naive_mase"] = task.errors(task.naive)
    if loss == "quantile":
        stacked = np.stack([result[f"q{q}"] for q in QUANTILES])
        figures["crossed"] = float((np.diff(stacked, axis=0) < 0).any(axis=0).mean())
        ordered = np.sort(stacked, axis=0)  # a peer's quantiles may cross: taken in order
        lower, upper = task.units(ordered[0]), task.units(ordered[-1])
        figures["coverage"] = interval_coverage(task.truth, lower, upper)
        figures["width"] = interval_width(task.truth, lower, upper)
        figures["median_mae"] = mae
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, choices=["co2", "elec", "m1"])
    parser.add_argument("--library", required=True, choices=sorted(PEERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="point", choices=["point", "quantile"])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="at most (default 20)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _quiet()
    task = load_task(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        result, train_s, predict_s, run, settings = PEERS[args.library](
            task, args.seed, args.loss, args.epochs, Path(tmp)
        )
    figures = score(task, result, args.loss)
    record = {
        "data": args.data,
        "library": args.library,
        "seed": args.seed,
        "loss": args.loss,
        "result": figures,
        "train_seconds": train_s,
        "predict_seconds": predict_s,
        **run,
        "test_windows": len(task.test),
        "test_targets": int((~np.isnan(task.truth)).sum()),
        "threads": torch.get_num_threads(),
        "settings": settings,
        "versions": _versions(args.library),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("data", "library", "seed", "loss", "result")}))
    return record


def _versions(library: str) -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", library, "rnnkit")}


if __name__ == "__main__":
    main()
