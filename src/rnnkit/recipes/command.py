"""The ``rnnkit`` command line, generated from the recipes' settings.

``rnnkit NAME [--preset P] [options]`` trains recipe NAME and writes its run directory;
``rnnkit predict RUN_DIR FILE...`` labels new inputs with a saved run; ``rnnkit diagnose
RUN_DIR`` draws a saved run's gradient flow on its validation data; ``rnnkit --version``.

Printing help imports neither torch nor any recipe's code beyond its settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rnnkit.recipes import RECIPES, get_recipe, version
from rnnkit.recipes.options import add_options, config_from_args

__all__ = ["build_recipe_parser", "run_command"]


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump): ``rnnkit solar: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


_FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _top_parser() -> Parser:
    lines = [f"  {name:<10} {entry.summary}" for name, entry in sorted(RECIPES.items())]
    lines.append(f"  {'predict':<10} predictions for new files from a saved run")
    lines.append(f"  {'diagnose':<10} the gradient flow of a saved run on its validation data")
    parser = Parser(
        prog="rnnkit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Recurrent and recursive networks: ready recipes over your files, each "
        "training, comparing with a baseline and writing a run directory.",
        epilog="commands:\n" + "\n".join(lines) + "\n\n`rnnkit COMMAND --help` for its options.",
        usage="rnnkit [--version] COMMAND [options]",
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {version()}")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    return parser


def _preset_of(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def build_recipe_parser(
    name: str, argv: Sequence[str] = (), action: str | None = None
) -> tuple[Parser, Any]:
    """The parser of ``rnnkit NAME``; a ``--preset`` in ``argv`` sets its defaults. With
    ``action`` (one of the recipe's ``training_actions``), that of ``rnnkit NAME ACTION``."""
    recipe = get_recipe(name)
    preset = _preset_of(argv) or recipe.default_preset(argv)
    presets = recipe.presets
    command = name if action is None else f"{name} {action}"
    parser = Parser(
        prog=f"rnnkit {command}",
        description=recipe.description or recipe.summary
        if action is None
        else recipe.actions[action],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if preset is not None and preset not in presets:
        choices = ", ".join(repr(p) for p in presets) or "none"
        parser.error(f"argument --preset: expected one of {choices}, found {preset!r}")
    defaults = dict(presets.get(preset, {})) if preset is not None else {}
    if presets:
        parser.add_argument(
            "--preset",
            choices=tuple(presets),
            default=preset,
            help="named defaults: "
            + "; ".join(f"{p}: {recipe.preset_help.get(p, '')}".rstrip(": ") for p in presets)
            + f" (default: {preset or 'none'})",
        )
    run_dir = name if action is None else f"{name}-{action}"
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs") / run_dir,
        help=f"where the run directory goes (default: runs/{run_dir})",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar or table (default: off)"
    )
    add_options(parser, recipe.config, defaults)
    return parser, recipe


def _run_action(name: str, action: str, argv: Sequence[str]) -> int:
    recipe = get_recipe(name)
    if action in recipe.training_actions:
        parser, _ = build_recipe_parser(name, argv, action)
    else:
        parser = Parser(prog=f"rnnkit {name} {action}", description=recipe.actions[action])
    recipe.add_action_arguments(action, parser)
    return recipe.run_action(action, parser.parse_args(argv))


def _run_recipe(name: str, argv: Sequence[str]) -> int:
    recipe = get_recipe(name)
    if argv and argv[0] in recipe.actions:
        return _run_action(name, argv[0], argv[1:])
    if argv and argv[0] == "train" and "train" not in recipe.actions:
        argv = argv[1:]  # ``rnnkit lm train ...`` reads as ``rnnkit lm ...``
    parser, recipe = build_recipe_parser(name, argv)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(recipe.config, args)
    except ValueError as error:
        parser.error(str(error))
    from rnnkit.recipes.harness import run_recipe

    result = run_recipe(recipe, config, args.run_dir, progress=not args.quiet)
    import json

    print(json.dumps(result.figures, default=str))
    return 0


def _predict(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="rnnkit predict",
        description="Predictions of the model saved in RUN_DIR for new inputs in its recipe's "
        "file format, one CSV row per example (id, prediction, ...).",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory written by an rnnkit recipe")
    parser.add_argument("files", type=Path, nargs="+", help="inputs in the recipe's format")
    parser.add_argument(
        "--out", type=Path, default=None, help="the CSV to write (default: standard output)"
    )
    args = parser.parse_args(argv)
    for path in args.files:
        if not path.is_file():
            parser.error(f"argument files: no such file: {str(path)!r}")
    from rnnkit.recipes.harness import predict_files, write_csv

    ids, rows = predict_files(args.run_dir, args.files)
    write_csv(args.out, ids, rows)
    if args.out is not None:
        print(f"{len(rows)} predictions: {args.out}", file=sys.stderr)
    return 0


def _diagnose(argv: Sequence[str]) -> int:
    parser = Parser(
        prog="rnnkit diagnose",
        description="Norm of dLoss/dh_t for every step t of every recurrent layer (and the mean "
        "gate activations) of the model saved in RUN_DIR, on the validation data its recipe "
        "rebuilds from run.json.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory written by an rnnkit recipe")
    parser.add_argument(
        "--out", type=Path, default=None, help="the PNG (default: RUN_DIR/gradients.png)"
    )
    args = parser.parse_args(argv)
    from rnnkit.recipes.harness import diagnose_run

    out = args.out or args.run_dir / "gradients.png"
    flow = diagnose_run(args.run_dir, out)
    for layer in flow.layers:
        norms = layer.grad_norm
        print(f"{layer.name}: |dL/dh_t| from {norms[0]:.3g} (first step) to {norms[-1]:.3g} (last)")
    print(f"plot: {out}")
    return 0


_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "predict": _predict,
    "diagnose": _diagnose,
}


def run_command(argv: Sequence[str]) -> int:
    """``rnnkit ...`` without the program name; returns the exit status."""
    argv = list(argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    if name not in RECIPES and name not in _COMMANDS:
        known = sorted([*RECIPES, *_COMMANDS])
        top.error(f"argument command: invalid choice: {name!r} (choose from {', '.join(known)})")
    try:
        if name in _COMMANDS:
            return _COMMANDS[name](argv[1:])
        return _run_recipe(name, argv[1:])
    except (ValueError, OSError) as error:
        print(f"rnnkit {name}: error: {error}", file=sys.stderr)
        return 1
