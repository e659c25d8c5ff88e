"""The ``rnnkit`` command: ready recipes over the user's files, each writing a run directory.

``rnnkit demo`` forecasts the weekly Mauna Loa CO2 series shipped inside the package. Every
subcommand has ``--help``; a bad argument gives one line naming the argument and what it
accepts, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["TASK_MODULES", "main"]

# Each module's ``add_commands(subparsers) -> {name: handler}`` adds its subcommands; a handler
# takes the parsed arguments and returns the exit status. Heavy imports stay inside handlers.
TASK_MODULES: tuple[str, ...] = (
    "rnnkit.tasks.lm",
    "rnnkit.tasks.seq2seq",
    "rnnkit.tasks.classify",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump): ``rnnkit demo: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def _print_result(result: dict[str, Any]) -> None:
    print(json.dumps(result, sort_keys=False))


# ----------------------------------------------------------------------------- demo / forecast


def co2_csv() -> Path:
    """The CO2 series shipped inside the package."""
    return Path(str(resources.files("rnnkit") / "datasets" / "co2-weekly.csv"))


def _add_forecast_options(p: argparse.ArgumentParser, demo: bool) -> None:
    p.add_argument("--input-length", type=_positive_int, default=104, help="input window steps")
    p.add_argument("--horizon", type=_positive_int, default=52, help="steps to forecast")
    p.add_argument("--season", type=_positive_int, default=52, help="steps in a season")
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--hidden-size", type=_positive_int, default=32)
    p.add_argument("--epochs", type=_positive_int, default=20 if demo else 40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs") / ("demo" if demo else "forecast"),
        help="where config.json, model.safetensors, metrics.csv, forecast.png, report.md go",
    )


def _run_forecast(
    args: argparse.Namespace, path: Path, time_column: str, target: str, time_format: str | None
) -> int:
    from rnnkit.data.timeseries import load_series
    from rnnkit.tasks.forecast import ForecastConfig, forecast

    series = load_series(path, time_column, [target], time_format=time_format)
    config = ForecastConfig(
        target=target,
        input_length=args.input_length,
        horizon=args.horizon,
        season=args.season,
        cell=args.cell,
        hidden_size=args.hidden_size,
        epochs=args.epochs,
        patience=max(3, args.epochs // 4),
        seed=args.seed,
    )
    missing = int((series.mask == 0).sum())
    print(
        f"{path.name}: {len(series)} steps of {target!r}, {missing} missing (filled for the "
        "input, flagged by a mask, left out of every error)"
    )
    source = {"csv": str(path.resolve()), "time_column": time_column, "time_format": time_format}
    result = forecast(series, config, args.run_dir, data_source=source)
    print(
        f"test MAE {result.mae:.3f} (seasonal naive {result.naive_mae:.3f}); "
        f"MASE {result.mase:.3f} (seasonal naive {result.naive_mase:.3f})"
    )
    print(f"run directory: {args.run_dir}")
    _print_result(
        {"data": path.name, "split": "time 0.8/0.1/0.1", **result.as_dict(), "seed": args.seed}
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    return _run_forecast(args, co2_csv(), "date", "co2", "%Y%m%d")


def _diagnose(args: argparse.Namespace) -> int:
    from rnnkit.diagnostics import diagnose_run

    out = args.out or args.run_dir / "gradients.png"
    flow = diagnose_run(args.run_dir, out)
    for layer in flow.layers:
        norms = layer.grad_norm
        print(f"{layer.name}: |dL/dh_t| from {norms[0]:.3g} (first step) to {norms[-1]:.3g} (last)")
    print(f"plot: {out}")
    return 0


# ----------------------------------------------------------------------------- the parser


def build_legacy_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnkit",
        description="Recurrent and recursive networks: ready recipes over your files, each "
        "training, comparing with a baseline and writing a run directory.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    demo = sub.add_parser("demo", help="forecast the CO2 series shipped with rnnkit")
    _add_forecast_options(demo, demo=True)
    commands["demo"] = _demo

    fc = sub.add_parser("forecast", help="forecast columns of a CSV file")
    fc.add_argument("csv", type=_existing_file, help="a CSV file with a header row")
    fc.add_argument(
        "--time-column", default=None, help="the column of timestamps (default: row order)"
    )
    fc.add_argument("--target", required=True, help="the column(s) to forecast, comma-separated")
    fc.add_argument(
        "--known", default="", help="columns known in advance over the horizon, comma-separated"
    )
    fc.add_argument(
        "--model",
        choices=("window", "stream"),
        default="window",
        help="window: Fold over each input window; stream: a forecast at every step",
    )
    fc.add_argument("--stride", type=_positive_int, default=1, help="steps between windows")
    fc.add_argument(
        "--residual",
        action="store_true",
        help="window model: learn the difference from the seasonal-naive forecast",
    )
    fc.add_argument("--time-format", default=None, help="strptime format, e.g. %%Y%%m%%d")
    _add_forecast_options(fc, demo=False)
    commands["forecast"] = lambda args: importlib.import_module(
        "rnnkit.tasks.forecast"
    ).forecast_command(args)

    diag = sub.add_parser(
        "diagnose",
        help="draw the gradient flow of a saved run on its validation data",
        description="Norm of dLoss/dh_t for every step t of every recurrent layer (and the "
        "mean gate activations) of the model saved in RUN_DIR, on the validation data its "
        "config.json names (runs written by rnnkit.tasks.longrange).",
    )
    diag.add_argument("run_dir", type=Path, help="a run directory with model.json and config.json")
    diag.add_argument(
        "--out", type=Path, default=None, help="the PNG (default RUN_DIR/gradients.png)"
    )
    commands["diagnose"] = _diagnose

    for name in TASK_MODULES:
        commands.update(importlib.import_module(name).add_commands(sub))
    parser.set_defaults(_commands=commands)
    return parser


def _legacy_main(argv: Sequence[str]) -> int:
    parser = build_legacy_parser()
    args = parser.parse_args(argv)
    try:
        return args._commands[args.command](args)
    except (ValueError, OSError) as error:
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    from rnnkit.recipes.command import LEGACY_COMMANDS, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LEGACY_COMMANDS:
        return _legacy_main(argv)
    return run_command(argv)
