"""The ``rnnkit`` command: ready recipes over the user's files, each writing a run directory.

Every subcommand has ``--help``; a bad argument gives one line naming the argument and what
it accepts, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["TASK_MODULES", "main"]

# Each module's ``add_commands(subparsers) -> {name: handler}`` adds its subcommands; a handler
# takes the parsed arguments and returns the exit status. Heavy imports stay inside handlers.
TASK_MODULES: tuple[str, ...] = ()


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump): ``rnnkit tree: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


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
