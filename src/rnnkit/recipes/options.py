"""Recipe settings as typed dataclasses, and the command line generated from them.

A recipe's configuration is a frozen dataclass whose fields are declared with :func:`option`
(help text, an allowed range or choices, an optional short description of the value). The same
declaration gives the Python API its defaults and checks, and the ``rnnkit`` command its
options: every option shows its help and default, numbers are checked when they are parsed,
and an error is one line naming the option, the allowed range and the value found.

This module imports neither torch nor NumPy, so ``rnnkit --help`` stays fast.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy:
...     hidden_size: int = option(32, "hidden units", low=1)
...     cell: str = option("lstm", "the recurrent cell", choices=("lstm", "gru"))
...     def __post_init__(self):
...         check_config(self)
>>> Toy(hidden_size=0)
Traceback (most recent call last):
...
ValueError: hidden_size: expected an integer >= 1, found 0
>>> parser = argparse.ArgumentParser(prog="toy")
>>> add_options(parser, Toy)
>>> config_from_args(Toy, parser.parse_args(["--hidden-size", "8"]))
Toy(hidden_size=8, cell='lstm')
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "TrainSettings",
    "add_options",
    "check_config",
    "config_from_args",
    "option",
    "option_flag",
    "require_one_model",
]

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    positional: bool = False,
    cli: bool = True,
) -> Any:
    """A dataclass field with what the command line needs to know about it.

    Args:
        default: the default value (a list default is copied for each instance).
        help: one line for ``--help`` (the default is appended there).
        low, high: the allowed range of a number (inclusive; ``low_open`` excludes ``low``).
        choices: the allowed values.
        metavar: how ``--help`` names the value.
        positional: a positional argument rather than ``--name`` (files to read).
        cli: False keeps the field out of the command line (API only).
    """
    metadata = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "positional": positional,
        "cli": cli,
    }
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_flag(name: str) -> str:
    """``hidden_size`` -> ``--hidden-size``."""
    return "--" + name.replace("_", "-")


def _range_text(meta: Mapping[str, Any], kind: str) -> str:
    low, high = meta.get("low"), meta.get("high")
    noun = "an integer" if kind == "int" else "a number"
    if low is not None and high is not None:
        left = "(" if meta.get("low_open") else "["
        return f"{noun} in {left}{_num(low)}, {_num(high)}]"
    if low is not None:
        return f"{noun} {'>' if meta.get('low_open') else '>='} {_num(low)}"
    if high is not None:
        return f"{noun} <= {_num(high)}"
    return noun


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _base_type(annotation: Any) -> tuple[str, bool]:
    """``(kind, optional)`` with kind one of int, float, str, bool, path, list."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        optional = "|None" in text or "None|" in text or text.startswith("Optional[")
        core = text.replace("|None", "").replace("None|", "")
        if core.startswith(("tuple[", "list[", "Sequence[")):
            return "list", optional
        for kind, names in (
            ("bool", ("bool",)),
            ("int", ("int",)),
            ("float", ("float",)),
            ("path", ("Path", "pathlib.Path")),
            ("str", ("str",)),
        ):
            if core in names:
                return kind, optional
        return "str", optional
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        kind, _ = _base_type(args[0])
        return kind, True
    if origin in (tuple, list):
        return "list", False
    for kind, cls in (("bool", bool), ("int", int), ("float", float), ("path", Path)):
        if annotation is cls:
            return kind, False
    return "str", False


def _check_value(name: str, value: Any, meta: Mapping[str, Any], kind: str) -> None:
    """Raise ValueError naming ``name`` when ``value`` is outside the declared range/choices."""
    choices = meta.get("choices")
    if choices is not None and value is not None:
        values = value if kind == "list" else (value,)
        for v in values:
            if v not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise ValueError(f"{name}: expected one of {allowed}, found {v!r}")
    if kind not in ("int", "float") or value is None:
        return
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}: expected an integer, found {value!r}")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{name}: expected a number, found {value!r}")
    if kind == "float" and not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, found {value!r}")
    low, high = meta.get("low"), meta.get("high")
    below = low is not None and (value <= low if meta.get("low_open") else value < low)
    above = high is not None and value > high
    if below or above:
        raise ValueError(f"{name}: expected {_range_text(meta, kind)}, found {value!r}")


def check_config(config: Any) -> None:
    """Check every declared range and choice of a config dataclass (call from
    ``__post_init__``); nested dataclass fields are checked too."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value)
            continue
        kind, _ = _base_type(hints.get(f.name, f.type))
        _check_value(f.name, value, f.metadata, kind)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward references the module cannot resolve: keep the strings
        return {f.name: f.type for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What every trained recipe shares: the optimisation, the budget and the machine.

    ``epochs`` bounds the whole run: an ensemble of ``ensemble`` models trains
    ``epochs // ensemble`` epochs each (at least one), and ``time_budget`` is shared the same
    way. ``patience`` > 0 stops a model once its validation loss has not improved for that many
    epochs and keeps its best weights.
    """

    epochs: int = option(20, "training epochs in all (an ensemble shares them)", low=1)
    minibatch_size: int = option(64, "examples (or samples, per recipe) per minibatch", low=1)
    learning_rate: float = option(1e-3, "Adam's learning rate", low=0.0, low_open=True)
    schedule: str = option(
        "constant",
        "learning-rate schedule over the run",
        choices=("constant", "cosine", "plateau"),
    )
    weight_decay: float = option(0.0, "AdamW weight decay (0: plain Adam)", low=0.0)
    clip_norm: float | None = option(
        None, "clip the gradient to this 2-norm", low=0.0, low_open=True
    )
    patience: int = option(0, "stop after this many epochs without improvement (0: never)", low=0)
    seed: int = option(0, "random seed (data order and initial weights)", low=0)
    threads: int | None = option(None, "CPU threads for torch (none: torch's choice)", low=1)
    time_budget: float | None = option(
        None,
        "stop training after this many seconds (at a step boundary, best weights kept)",
        low=0.0,
        low_open=True,
        metavar="SECONDS",
    )
    ensemble: int = option(1, "models to train and average (they share --epochs)", low=1)
    device: str = option("cpu", "where to train: cpu, cuda, cuda:1, ...")

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def member_epochs(self) -> int:
        """Epochs for each model of the ensemble."""
        return max(1, self.epochs // self.ensemble)


def require_one_model(settings: TrainSettings, why: str) -> None:
    """Refuse an ensemble for a recipe whose model cannot be averaged (``why`` says so)."""
    if settings.ensemble != 1:
        raise ValueError(f"ensemble: expected 1 ({why}), found {settings.ensemble}")


def _parse_number(kind: str, meta: Mapping[str, Any], flag: str) -> Any:
    def parse(text: str) -> Any:
        if kind == "int":
            try:
                value: Any = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {_range_text(meta, kind)}, found {text!r}"
                ) from None
        else:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {_range_text(meta, kind)}, found {text!r}"
                ) from None
        try:
            _check_value(flag, value, meta, kind)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None
        return value

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


_METAVARS = {"int": "N", "float": "X", "path": "PATH", "list": "A,B", "str": "TEXT"}


def _with_default(help_text: str, default: Any) -> str:
    if "(default" in help_text:
        return help_text
    shown = _default_text(default).replace("%", "%%")  # argparse formats help with %
    return f"{help_text} (default: {shown})"


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = _hints(cls)
    return [(f, hints.get(f.name, f.type)) for f in dataclasses.fields(cls)]


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    defaults: Mapping[str, Any] | None = None,
    *,
    title: str | None = None,
) -> None:
    """Add one argument per field of the dataclass ``cls`` (nested dataclass fields, such as a
    :class:`TrainSettings`, become a group of their own). ``defaults`` overrides the declared
    defaults (a preset); ``--help`` shows the default in force."""
    defaults = dict(defaults or {})
    group: Any = parser.add_argument_group(title) if title else parser
    for f, annotation in _fields(cls):
        if not f.metadata.get("cli", True):
            continue
        if dataclasses.is_dataclass(annotation):
            nested: dict[str, Any] = {}
            if dataclasses.is_dataclass(f.default) and not isinstance(f.default, type):
                nested = {g.name: getattr(f.default, g.name) for g in dataclasses.fields(f.default)}
            names = {g.name for g in dataclasses.fields(annotation)}
            nested.update({k: v for k, v in defaults.items() if k in names})
            title_text = f"{f.name.replace('_', ' ')} settings"
            add_options(parser, annotation, nested, title=title_text)  # type: ignore[arg-type]
            continue
        kind, optional = _base_type(annotation)
        meta = f.metadata
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        help_text = meta.get("help", "") or f.name.replace("_", " ")
        kwargs: dict[str, Any] = {"help": help_text}
        metavar = meta.get("metavar") or _METAVARS.get(kind)
        if metavar and not (kind == "str" and meta.get("choices")) and kind != "bool":
            kwargs["metavar"] = metavar
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in ("int", "float"):
            kwargs["type"] = _parse_number(kind, meta, option_flag(f.name))
        elif kind == "path":
            kwargs["type"] = Path
        elif kind == "list":
            kwargs["type"] = _parse_list
        choices = meta.get("choices")
        if choices is not None and kind != "list":
            kwargs["choices"] = choices
        if meta.get("positional"):
            if kind == "list":
                kwargs["type"] = Path if "Path" in str(annotation) else str
                kwargs["nargs"] = "+" if default is _MISSING else "*"
            elif default is not _MISSING:
                kwargs["nargs"] = "?"
            if default is not _MISSING:
                kwargs["default"] = default
                kwargs["help"] = _with_default(help_text, default)
            group.add_argument(f.name, **kwargs)
            continue
        if default is _MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            kwargs["help"] = _with_default(help_text, default)
        del optional
        group.add_argument(option_flag(f.name), dest=f.name, **kwargs)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build the dataclass ``cls`` from parsed arguments (nested dataclasses included)."""
    values: dict[str, Any] = {}
    for f, annotation in _fields(cls):
        if dataclasses.is_dataclass(annotation):
            values[f.name] = config_from_args(annotation, args)  # type: ignore[arg-type]
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            kind, _ = _base_type(annotation)
            if kind == "list" and isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
    return cls(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready fields of a config (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def config_from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """The inverse of :func:`config_to_dict` (for a run directory's ``run.json``)."""
    kwargs: dict[str, Any] = {}
    for f, annotation in _fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if dataclasses.is_dataclass(annotation):
            value = config_from_dict(annotation, value)  # type: ignore[arg-type]
        else:
            kind, _ = _base_type(annotation)
            if kind == "path" and value is not None:
                value = Path(value)
            elif kind == "list" and value is not None:
                value = tuple(Path(v) if "Path" in str(annotation) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)
