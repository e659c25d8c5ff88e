"""Save and load models without pickle (ONNX export: :mod:`rnnkit.onnx_export`).

:func:`save` writes a directory holding two files:

``model.safetensors``
    The ``state_dict`` (safetensors: raw tensors and a JSON header, nothing executable).
    Tied tensors are written once; tensors that a description needs as data (a fixed initial
    state) are stored under keys starting with ``__config__:``.
``model.json``
    What to build before loading the weights: the format version, the rnnkit and torch
    versions, and the module tree, each module as its registered type name and the arguments
    of its constructor (``{"$module": "rnnkit.LSTMCell", "config": {"input_size": 1, ...}}``).

:func:`load` rebuilds the tree from the JSON with the registered constructors (it never imports
a module or calls a function named in the file), then loads the weights strictly. It never
unpickles anything: pickle files (``.pt``, ``.pth``, ``.pkl``, ``.bin``, ...) are refused,
because unpickling runs whatever code the file contains.

Every rnnkit module type is registered, and ``torch.nn`` Linear, Embedding, Identity, Tanh,
ReLU, Sigmoid, Dropout and LayerNorm. :func:`register_module` adds a type of your own.

>>> import tempfile
>>> from pathlib import Path
>>> from rnnkit import Dense, Fold, GRUCell, SequenceBatch
>>> model = Fold(GRUCell(2, 3)) >> Dense(3, 1)
>>> with tempfile.TemporaryDirectory() as directory:
...     save(model, directory)
...     print(sorted(p.name for p in Path(directory).iterdir()))
...     loaded = load(directory)
['model.json', 'model.safetensors']
>>> x = SequenceBatch.from_list([torch.ones(4, 2), torch.zeros(2, 2)])
>>> torch.equal(model(x), loaded(x))
True
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from rnnkit.cells import GRUCell, GRUDCell, LSTMCell, MinGRUCell, MinLSTMCell, RNNCell
from rnnkit.layers import (
    Activation,
    Average,
    Dense,
    Dropout,
    Embedding,
    Lambda,
    Sequential,
    saved_modules,
)
from rnnkit.lazy import check_initialized
from rnnkit.modern import saved_modules as modern_modules
from rnnkit.recurrence import Bidirectional, Fold, Recurrence, RecurrenceFrom, Unfold
from rnnkit.recursive import (
    ChildSumTreeLSTMCell,
    NaryTreeLSTMCell,
    Recursive,
    RecursiveCell,
    RNTNCell,
)
from rnnkit.serialization import (
    CorruptFileError,
    file_sha256,
    read_json,
    read_safetensors,
    remove_stale_temporaries,
    write_json,
    write_safetensors,
)

__all__ = [
    "DESCRIPTION_FILE",
    "FORMAT_VERSION",
    "NAMED_FUNCTIONS",
    "PICKLE_SUFFIXES",
    "WEIGHTS_FILE",
    "PickleFileWarning",
    "function_to_config",
    "load",
    "qualified_name",
    "register_module",
    "save",
]

FORMAT = "rnnkit.model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"


DESCRIPTION_FILE = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
_CONFIG_PREFIX = "__config__:"
_WEIGHTS_KEYS = ("file", "sha256", "tied")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PickleFileWarning(UserWarning):
    """:func:`load` found pickle files beside a saved model; they are not loaded."""


M = TypeVar("M", bound=nn.Module)


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Handler:
    cls: type[nn.Module]
    name: str
    to_config: Callable[[Any], Mapping[str, Any]]
    from_config: Callable[[dict[str, Any]], nn.Module]


_BY_TYPE: dict[type[nn.Module], _Handler] = {}
_BY_NAME: dict[str, _Handler] = {}


def register_module(
    cls: type[M],
    to_config: Callable[[M], Mapping[str, Any]],
    from_config: Callable[[dict[str, Any]], M] | None = None,
    *,
    name: str | None = None,
) -> None:
    """Teach :func:`save` and :func:`load` a module type.

    Args:
        cls: the module class (matched exactly: a subclass needs its own registration).
        to_config: ``module -> {argument: value}``, the constructor arguments. A value is
            None, a bool, an int, a finite float, a str, a list or tuple of values, a dict with
            str keys of values, a module (described in turn, so it needs a registration too)
            or a tensor (stored in ``model.safetensors``). Tuples come back as lists.
        from_config: ``{argument: value} -> module``; by default ``cls(**config)``.
        name: the type name written in ``model.json``; by default ``module.QualName`` of
            ``cls``. :func:`load` finds the constructor by this name, so the code that calls
            ``register_module`` must run before ``load``.

    Registering a class again replaces its handler; a name already taken by another class is
    refused.

    >>> class Scale(nn.Module):
    ...     def __init__(self, factor: float) -> None:
    ...         super().__init__()
    ...         self.factor = factor
    ...     def forward(self, x):
    ...         return self.factor * x
    >>> register_module(Scale, lambda m: {"factor": m.factor}, name="example.Scale")
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     save(Scale(2.5), directory)
    ...     load(directory).factor
    2.5
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls: expected a subclass of torch.nn.Module, found {cls!r}")
    if not callable(to_config):
        raise TypeError(f"to_config: expected a callable, found {type(to_config).__name__}")
    if from_config is not None and not callable(from_config):
        raise TypeError(f"from_config: expected a callable, found {type(from_config).__name__}")
    type_name = name if name is not None else qualified_name(cls)
    if not isinstance(type_name, str) or not type_name:
        raise ValueError(f"name: expected a non-empty str, found {type_name!r}")
    taken = _BY_NAME.get(type_name)
    if taken is not None and taken.cls is not cls:
        raise ValueError(
            f"name: {type_name!r} is already registered for {qualified_name(taken.cls)}; pass "
            "another name="
        )
    previous = _BY_TYPE.get(cls)
    if previous is not None:
        del _BY_NAME[previous.name]

    def build(config: dict[str, Any]) -> nn.Module:
        return cls(**config)

    handler = _Handler(cls, type_name, to_config, from_config or build)
    _BY_TYPE[cls] = handler
    _BY_NAME[type_name] = handler


def qualified_name(cls: type) -> str:
    """``module.QualName`` of ``cls``: the default type name in ``model.json`` and in errors."""
    return f"{cls.__module__}.{cls.__qualname__}"


# Functions a Dense or an Activation may carry, saved by name (export_onnx maps the same names).
NAMED_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
}
_FUNCTION_NAMES: list[tuple[Callable[..., Any], str]] = [
    (torch.tanh, "tanh"),
    (F.tanh, "tanh"),
    (torch.relu, "relu"),
    (F.relu, "relu"),
    (torch.sigmoid, "sigmoid"),
    (F.sigmoid, "sigmoid"),
]


def function_to_config(fn: Any, owner: str) -> str | nn.Module | None:
    """A Dense's or Activation's function: None, a name, or a module (described in turn)."""
    if fn is None or isinstance(fn, nn.Module):
        return fn
    for known, fn_name in _FUNCTION_NAMES:
        if fn is known:
            return fn_name
    raise TypeError(
        f"{owner}: cannot save the function {getattr(fn, '__qualname__', repr(fn))}; a function "
        f"is saved by name and only {sorted(NAMED_FUNCTIONS)} (torch.* or "
        "torch.nn.functional.*) are known. Use a module instead (torch.nn.Tanh(), or your own "
        "registered with rnnkit.register_module)"
    )


def _function_from_config(value: Any) -> Callable[[Tensor], Tensor] | None:
    if value is None or isinstance(value, nn.Module):
        return value
    if value not in NAMED_FUNCTIONS:
        raise ValueError(f"expected a module or one of {sorted(NAMED_FUNCTIONS)}, found {value!r}")
    return NAMED_FUNCTIONS[value]


def _initial_to_config(module: Recurrence) -> Any:
    initial = module.initial
    if initial.constant is not None:
        return initial.constant
    if len(initial.learned):
        return "learned"
    if initial.fixed is not None:
        return tuple(initial.fixed)
    return None


def _initial_from_config(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _recurrence_config(module: Recurrence) -> dict[str, Any]:
    return {
        "cell": module.cell,
        "go_backwards": module.go_backwards,
        "initial_state": _initial_to_config(module),
        "backend": module.backend,
    }


R = TypeVar("R", bound=Recurrence)


def _build_recurrence(cls: type[R]) -> Callable[[dict[str, Any]], R]:
    def build(config: dict[str, Any]) -> R:
        config = dict(config)
        config["initial_state"] = _initial_from_config(config.get("initial_state"))
        return cls(**config)

    return build


def _unfold_config(module: Unfold) -> dict[str, Any]:
    if callable(module.stop):
        raise TypeError(
            "Unfold.stop: a stop function cannot be saved (only a token id or None); "
            "register your own module type with rnnkit.register_module"
        )
    return {
        "cell": module.cell,
        "readout": module.readout,
        "feedback": module.feedback,
        "max_length": module.max_length,
        "stop": module.stop,
        "mode": module.mode,
        "temperature": module.temperature,
    }


def _dense_from_config(config: dict[str, Any]) -> Dense:
    config = dict(config)
    config["activation"] = _function_from_config(config.get("activation"))
    return Dense(**config)


def _activation_from_config(config: dict[str, Any]) -> Activation:
    fn = _function_from_config(config["fn"])
    if fn is None:
        raise ValueError("fn: expected a module or a function name, found None")
    return Activation(fn)


def _lambda_config(module: Lambda) -> dict[str, Any]:
    fn = module.fn
    raise TypeError(
        f"cannot save the plain function {getattr(fn, '__qualname__', repr(fn))} that a "
        "Sequential holds (a Lambda): a function is not rebuilt from a file. Replace it by a "
        "module (rnnkit.Activation for tanh/relu/sigmoid, or your own registered with "
        "rnnkit.register_module)"
    )


def _attributes(*names: str, **computed: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    """A ``to_config`` reading constructor arguments kept as attributes of the same names, and
    ``computed`` ones (``bias=_present("bias_ih")``)."""

    def to_config(module: Any) -> dict[str, Any]:
        config = {name: getattr(module, name) for name in names}
        return {**config, **{name: fn(module) for name, fn in computed.items()}}

    return to_config


def _with_options(
    to_config: Callable[[Any], dict[str, Any]], **defaults: Any
) -> Callable[[Any], dict[str, Any]]:
    """``to_config`` plus the options (attributes of the same names) that differ from their
    ``defaults``: a model without them is described as before they existed."""

    def with_options(module: Any) -> dict[str, Any]:
        config = to_config(module)
        for name, default in defaults.items():
            if getattr(module, name) != default:
                config[name] = getattr(module, name)
        return config

    return with_options


def _present(attribute: str) -> Callable[[Any], bool]:
    return lambda module: getattr(module, attribute) is not None


def _register_builtins() -> None:
    sizes = ("input_size", "hidden_size")
    with_bias = _present("bias_ih")
    stabilized = {"proj_size": 0, "self_stabilization": False}
    register_module(
        RNNCell,
        _with_options(
            _attributes(
                "input_size",
                "nonlinearity",
                hidden_size=lambda m: m.cell_size,  # the output size is proj_size or this
                bias=with_bias,
            ),
            **stabilized,
        ),
        name="rnnkit.RNNCell",
    )
    register_module(
        LSTMCell,
        _with_options(
            _attributes(
                "input_size",
                "proj_size",
                "peepholes",
                "layer_norm",
                hidden_size=lambda m: m.cell_size,  # hidden_size is the output size (proj or cell)
                bias=with_bias,
            ),
            activation="tanh",
            self_stabilization=False,
        ),
        name="rnnkit.LSTMCell",
    )
    register_module(
        GRUCell,
        _with_options(
            _attributes(*sizes, "reset", bias=with_bias), activation="tanh", **stabilized
        ),
        name="rnnkit.GRUCell",
    )
    for min_cell in (MinGRUCell, MinLSTMCell):
        register_module(
            min_cell, _attributes(*sizes, bias=with_bias), name=f"rnnkit.{min_cell.__name__}"
        )
    # x_mean is a buffer, so it comes back with the weights.
    register_module(GRUDCell, _attributes("num_variables", "hidden_size"), name="rnnkit.GRUDCell")
    register_module(
        Recurrence, _recurrence_config, _build_recurrence(Recurrence), name="rnnkit.Recurrence"
    )
    register_module(Fold, _recurrence_config, _build_recurrence(Fold), name="rnnkit.Fold")
    register_module(
        RecurrenceFrom,
        _attributes("cell", "go_backwards", "backend"),
        name="rnnkit.RecurrenceFrom",
    )
    register_module(
        Bidirectional,
        _attributes(
            "merge", forward=lambda m: m.forward_layer, backward=lambda m: m.backward_layer
        ),
        name="rnnkit.Bidirectional",
    )
    register_module(Unfold, _unfold_config, name="rnnkit.Unfold")
    register_module(
        Dense,
        _attributes(
            "in_features",
            "out_features",
            bias=_present("bias"),
            activation=lambda m: function_to_config(m.activation, "Dense.activation"),
        ),
        _dense_from_config,
        name="rnnkit.Dense",
    )
    register_module(
        Embedding,
        _attributes(
            "num_embeddings", "embedding_dim", padding_idx=lambda m: m.embedding.padding_idx
        ),
        name="rnnkit.Embedding",
    )
    register_module(Dropout, _attributes(p=lambda m: m.dropout.p), name="rnnkit.Dropout")
    register_module(
        Activation,
        _attributes(fn=lambda m: function_to_config(m.fn, "Activation.fn")),
        _activation_from_config,
        name="rnnkit.Activation",
    )
    register_module(Average, _attributes(members=lambda m: list(m.members)), name="rnnkit.Average")
    register_module(Lambda, _lambda_config, name="rnnkit.Lambda")
    for cls, to_config, name in saved_modules():
        register_module(cls, to_config, name=name)
    for cls, to_config, name in modern_modules():
        register_module(cls, to_config, name=name)
    register_module(
        Sequential, _attributes(layers=lambda m: list(m.layers)), name="rnnkit.Sequential"
    )

    register_module(Recursive, _attributes("cell"), name="rnnkit.Recursive")
    for tree_cell in (RecursiveCell, RNTNCell, ChildSumTreeLSTMCell):
        register_module(tree_cell, _attributes(*sizes), name=f"rnnkit.{tree_cell.__name__}")
    register_module(
        NaryTreeLSTMCell,
        _attributes(*sizes, n=lambda m: m.max_children),
        name="rnnkit.NaryTreeLSTMCell",
    )

    register_module(
        nn.Linear,
        _attributes("in_features", "out_features", bias=_present("bias")),
        name="torch.nn.Linear",
    )
    embedding_options = ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")
    register_module(
        nn.Embedding,
        _attributes("num_embeddings", "embedding_dim", *embedding_options),
        name="torch.nn.Embedding",
    )
    for function in (nn.Identity, nn.Tanh, nn.Sigmoid):
        register_module(function, _attributes(), name=f"torch.nn.{function.__name__}")
    register_module(nn.ReLU, _attributes("inplace"), name="torch.nn.ReLU")
    register_module(nn.Dropout, _attributes("p", "inplace"), name="torch.nn.Dropout")
    register_module(
        nn.LayerNorm,
        _attributes(
            "eps",
            "elementwise_affine",
            normalized_shape=lambda m: list(m.normalized_shape),
            bias=_present("bias"),
        ),
        lambda c: nn.LayerNorm(**{**c, "normalized_shape": tuple(c["normalized_shape"])}),
        name="torch.nn.LayerNorm",
    )


_register_builtins()


# ---------------------------------------------------------------------------- describe


def _describe(module: nn.Module, where: str, tensors: dict[str, Tensor]) -> dict[str, Any]:
    handler = _BY_TYPE.get(type(module))
    if handler is None:
        raise TypeError(
            f"{where}: cannot save a module of type {qualified_name(type(module))}: rnnkit.save "
            "knows how to rebuild only registered types. Register it first with "
            "rnnkit.register_module(cls, to_config, from_config), where to_config(module) "
            "returns its constructor arguments"
        )
    try:
        config = handler.to_config(module)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{where}: to_config of {handler.name} must return a mapping of constructor "
            f"arguments, returned {type(config).__name__}"
        )
    encoded = {str(k): _encode(v, f"{where}.{k}", tensors) for k, v in config.items()}
    return {"$module": handler.name, "config": encoded}


def _encode(value: Any, where: str, tensors: dict[str, Tensor]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: cannot save the non-finite float {value} in JSON")
        return value
    if isinstance(value, nn.Module):
        return _describe(value, where, tensors)
    if isinstance(value, Tensor):
        key = f"{_CONFIG_PREFIX}{where}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"$tensor": key}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise ValueError(
                    f"{where}: expected str keys not starting with '$' (reserved), found {k!r}"
                )
            out[k] = _encode(v, f"{where}.{k}", tensors)
        return out
    raise TypeError(
        f"{where}: cannot save a value of type {type(value).__name__} in model.json; expected "
        "None, bool, int, float, str, list, tuple, dict, a module or a tensor"
    )


def _build(node: Any, where: str, tensors: Mapping[str, Tensor], source: Path) -> nn.Module:
    if not isinstance(node, dict) or not isinstance(node.get("$module"), str):
        message = f"{where}: expected a module description with '$module'"
        raise CorruptFileError(message, path=source)
    type_name = node["$module"]
    handler = _BY_NAME.get(type_name)
    if handler is None:
        raise CorruptFileError(
            f"{where} is a module of type {type_name!r}, which is not registered. "
            "Run the code that calls rnnkit.register_module for it before rnnkit.load "
            "(loading never imports the code a file names)",
            path=source,
        )
    config = node.get("config")
    if not isinstance(config, dict):
        raise CorruptFileError(f"{where} ({type_name}): expected a 'config' object", path=source)
    arguments = {k: _decode(v, f"{where}.{k}", tensors, source) for k, v in config.items()}
    try:
        module = handler.from_config(arguments)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError) as error:
        raise CorruptFileError(
            f"{where}: cannot rebuild {type_name} from its config {config}: {error}", path=source
        ) from error
    if type(module) is not handler.cls:
        raise TypeError(
            f"{where}: from_config of {type_name} returned {qualified_name(type(module))}, "
            f"expected {qualified_name(handler.cls)}"
        )
    return module


def _decode(value: Any, where: str, tensors: Mapping[str, Tensor], source: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}.{i}", tensors, source) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "$module" in value:
        return _build(value, where, tensors, source)
    if "$tensor" in value:
        key = value["$tensor"]
        if not isinstance(key, str) or key not in tensors:
            raise CorruptFileError(
                f"missing the tensor {key!r} that {where} in {source.name} refers to",
                path=source.parent / WEIGHTS_FILE,
            )
        return tensors[key]
    return {k: _decode(v, f"{where}.{k}", tensors, source) for k, v in value.items()}


# ---------------------------------------------------------------------------- save / load


def _split_tied(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors to write (each storage once) and ``{alias: name written}`` for tied ones."""
    written: dict[str, Tensor] = {}
    tied: dict[str, str] = {}
    views: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        if tensor.numel() == 0:
            written[name] = tensor.cpu().contiguous()
            continue
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        view = (*storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if view in views:
            tied[name] = views[view]
            continue
        views[view] = name
        shared = storage in storages  # another view of the same storage: write a copy
        storages.add(storage)
        tensor = tensor.cpu().contiguous()
        written[name] = tensor.clone() if shared else tensor
    return written, tied


def _check_rebuilds(
    model: nn.Module, description: dict[str, Any], tensors: dict[str, Tensor]
) -> None:
    """Build the description (on the CPU) and compare its state_dict with the model's.

    Not on the meta device: constructors may read values (GRUDCell checks its means). The
    random initialisation of the rebuilt module leaves the caller's random stream as it was.
    """
    with torch.random.fork_rng(devices=[]):
        rebuilt = _build(description, "model", tensors, Path(DESCRIPTION_FILE))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        shapes = sorted(
            f"{k}: {want[k]} vs {got[k]}" for k in set(want) & set(got) if want[k] != got[k]
        )
        raise ValueError(
            "model: its description does not rebuild the same module (a to_config misses a "
            f"constructor argument?): keys the rebuilt module lacks {missing}, keys it has in "
            f"excess {extra}, shapes differing (saved vs rebuilt) {shapes}"
        )


def _refuse_pickle(path: Path) -> ValueError:
    return ValueError(
        f"{path}: refusing to load a pickle file ({path.suffix}): unpickling runs arbitrary "
        "code stored in the file, so rnnkit.load never calls torch.load or pickle. If you "
        "trust where it comes from, convert it once: build the model in Python, call "
        f"model.load_state_dict(torch.load('{path}', weights_only=True)), then "
        "rnnkit.save(model, directory) to write model.safetensors + model.json"
    )


def save(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed).

    Raises :class:`~rnnkit.lazy.UninitializedModelError` (a ``ValueError``) naming the layer
    when a layer built without its input size has not run yet (:mod:`rnnkit.lazy`), and
    ``TypeError`` naming the module path and type for a module type that is not
    registered (see :func:`register_module`), and ``ValueError`` when the description would not
    rebuild a module with the same ``state_dict`` keys and shapes (checked by building it once,
    so a saved model always loads). Existing files of the same names are replaced, each
    atomically (a crash leaves the old file or the new one, see :mod:`rnnkit.serialization`);
    ``model.json`` records the sha256 of ``model.safetensors``. A write that fails (a full
    disk) raises :class:`~rnnkit.serialization.FileWriteError` naming the file.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
    check_initialized(model, "save")
    target = Path(directory)
    if target.suffix.lower() in PICKLE_SUFFIXES and not target.is_dir():
        raise ValueError(
            f"directory: expected a directory to hold {WEIGHTS_FILE} and {DESCRIPTION_FILE}, "
            f"found {str(target)!r}, a name with the pickle suffix {target.suffix}"
        )
    config_tensors: dict[str, Tensor] = {}
    description = _describe(model, "model", config_tensors)
    _check_rebuilds(model, description, config_tensors)
    weights, tied = _split_tied(model.state_dict())
    clashes = sorted(set(weights) & set(config_tensors))
    if clashes:
        raise ValueError(f"model: state_dict keys {clashes} clash with reserved config keys")
    from rnnkit import __version__

    target.mkdir(parents=True, exist_ok=True)
    write_safetensors(target / WEIGHTS_FILE, {**weights, **config_tensors}, {"format": "pt"})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rnnkit_version": __version__,
        "torch_version": torch.__version__,
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": file_sha256(target / WEIGHTS_FILE),
            "tied": tied,
        },
        "model": description,
    }
    write_json(target / DESCRIPTION_FILE, header, indent=2)
    remove_stale_temporaries(target, _SAVED_NAMES)  # left by a save that was killed


_SAVED_NAMES = re.compile(f"{re.escape(WEIGHTS_FILE)}|{re.escape(DESCRIPTION_FILE)}")


def _find_description(directory: Path) -> Path:
    description = directory / DESCRIPTION_FILE
    if directory.is_dir() and description.is_file():
        _check_inside(directory, DESCRIPTION_FILE, description)
        return description
    if directory.suffix.lower() in PICKLE_SUFFIXES and not directory.is_dir():
        raise _refuse_pickle(directory)
    if not directory.exists():
        raise FileNotFoundError(f"directory: {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(
            f"directory: expected a directory written by rnnkit.save, found the file {directory}"
        )
    pickles = _pickle_files(directory)
    if pickles:
        raise _refuse_pickle(pickles[0])
    missing = [n for n in (DESCRIPTION_FILE, WEIGHTS_FILE) if not (directory / n).is_file()]
    raise FileNotFoundError(
        f"{directory}: missing {' and '.join(missing)} (write them with rnnkit.save)"
    )


def _pickle_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)


def _check_inside(directory: Path, name: str, description: Path) -> Path:
    """``directory / name``, refused unless it stays inside ``directory`` (symlinks resolved)."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or name in ("", ".") or "\0" in name:
        raise CorruptFileError(
            f"refusing the file reference {name!r}: expected a file name inside {directory}, "
            "found an absolute path or one with '..'",
            path=description,
        )
    path = directory / relative
    root = directory.resolve()
    try:
        resolved = path.resolve()
        resolved.is_file()
    except OSError as error:  # a name too long for the file system, say
        shown = repr(name) if len(name) <= 80 else f"{name[:80]!r}... ({len(name):,} characters)"
        raise CorruptFileError(
            f"the file reference {shown} cannot be a file here ({error.strerror})",
            path=description,
        ) from None
    if not resolved.is_relative_to(root):
        raise CorruptFileError(
            f"refusing the file reference {name!r}: it leads outside {directory} (to "
            f"{resolved}, through a symbolic link)",
            path=description,
        )
    return path


def _read_description(path: Path) -> dict[str, Any]:
    header = read_json(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CorruptFileError(f"expected 'format': {FORMAT!r}, found {found!r}", path=path)
    version = header.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CorruptFileError(
            f"format_version {version!r} is not one this rnnkit reads (1 to "
            f"{FORMAT_VERSION}); it was written by rnnkit {header.get('rnnkit_version')}",
            path=path,
        )
    for key in ("model", "weights"):
        if not isinstance(header.get(key), dict):
            raise CorruptFileError(f"missing the {key!r} object", path=path)
    weights = header["weights"]
    unknown = sorted(set(weights) - set(_WEIGHTS_KEYS))
    if unknown:
        raise CorruptFileError(
            f"'weights' has the unknown keys {unknown}; expected only {list(_WEIGHTS_KEYS)}",
            path=path,
        )
    if not isinstance(weights.get("file", WEIGHTS_FILE), str):
        raise CorruptFileError(
            f"'weights.file': expected a file name, found {weights['file']!r}", path=path
        )
    digest = weights.get("sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.match(digest)):
        raise CorruptFileError(
            f"'weights.sha256': expected 64 lowercase hex digits, found {digest!r}", path=path
        )
    return header


def _weights_path(directory: Path, header: dict[str, Any], description: Path) -> Path:
    name = header["weights"].get("file", WEIGHTS_FILE)
    path = _check_inside(directory, name, description)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _refuse_pickle(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory}: missing {name}, the weights that {DESCRIPTION_FILE} names (write "
            "them with rnnkit.save)"
        )
    return path


def _verify(path: Path, recorded: str | None, description: Path) -> None:
    if recorded is None:  # written before model.json recorded it
        return
    actual = file_sha256(path)
    if actual != recorded:
        raise CorruptFileError(
            f"the file has changed since it was saved: its sha256 is {actual}, "
            f"{description.name} records {recorded} (a damaged disk or copy, or an edit?); "
            "refusing it",
            path=path,
        )


def _load_weights(
    model: nn.Module, stored: dict[str, Tensor], tied: Any, path: Path, sha256: str | None
) -> None:
    if not isinstance(tied, dict) or not all(isinstance(v, str) for v in tied.values()):
        description = path.parent / DESCRIPTION_FILE
        message = f"'weights.tied': expected an object of names, found {tied!r}"
        raise CorruptFileError(message, path=description)
    expected = model.state_dict()
    values: dict[str, Tensor] = {}
    missing = []
    for name in expected:
        source = tied.get(name, name)
        if source in stored:
            values[name] = stored[source]
        else:
            missing.append(name)
    unexpected = sorted(set(stored) - set(values) - set(tied.values()))
    if missing or unexpected:
        raise CorruptFileError(
            f"the weights do not match the model described in {DESCRIPTION_FILE}: "
            f"missing keys {missing}, unexpected keys {unexpected}",
            path=path,
        )
    for name, value in values.items():
        # A layer described without its input size (lazy) takes it from the stored tensor,
        # as load_state_dict does for a model that has not run yet.
        if is_lazy(expected[name]):
            continue
        if value.shape != expected[name].shape:
            raise CorruptFileError(
                f"{name!r} has shape {list(value.shape)} but the model described in "
                f"{DESCRIPTION_FILE} expects {list(expected[name].shape)}",
                path=path,
            )
    # Keys and shapes first (their message says more), then the bytes, before loading any.
    _verify(path, sha256, path.parent / DESCRIPTION_FILE)
    # Keep the saved dtypes (a float64 model loads as float64); .data keeps tied objects tied.
    for name, tensor in [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]:
        if name in values and tensor.dtype != values[name].dtype:
            tensor.data = tensor.data.to(values[name].dtype)
    model.load_state_dict(values, strict=True)
    unset = [name for name, p in model.named_parameters() if is_lazy(p)]
    if unset:
        raise CorruptFileError(
            f"{DESCRIPTION_FILE} describes layers whose parameters the weights do not size: "
            f"{unset}",
            path=path,
        )


def load(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``directory`` by :func:`save` and load its weights.

    Reads only JSON and safetensors: no ``torch.load``, no pickle. The model is returned on
    ``device``, in eval mode (call ``.train()`` to go on training). Pickle files are refused
    with a message saying how to convert them, and pickle files beside a saved model are
    named in a :class:`PickleFileWarning` (and not loaded). The weights file must match the
    sha256 that ``model.json`` records (files saved before it was recorded load unchecked);
    a file reference leading outside ``directory`` (absolute, ``..``, a symbolic link) is
    refused. A damaged, changed or mismatched file raises
    :class:`~rnnkit.serialization.CorruptFileError` (a ``ValueError``) naming the file and
    what is wrong.
    """
    folder = Path(directory)
    description_path = _find_description(folder)
    header = _read_description(description_path)
    weights_path = _weights_path(folder, header, description_path)
    pickles = _pickle_files(folder)
    if pickles:
        warnings.warn(
            f"{folder}: not loading the pickle files {[p.name for p in pickles]} beside "
            f"{DESCRIPTION_FILE}: rnnkit.load reads only {DESCRIPTION_FILE} and "
            f"{weights_path.name}, and never unpickles (remove them, or convert them as the "
            "rnnkit.saving docs say, if the model in them is the one you meant)",
            PickleFileWarning,
            stacklevel=2,
        )
    stored, _ = read_safetensors(weights_path)
    config_tensors = {k: v for k, v in stored.items() if k.startswith(_CONFIG_PREFIX)}
    weights = {k: v for k, v in stored.items() if not k.startswith(_CONFIG_PREFIX)}
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten: draw nothing
        model = _build(header["model"], "model", config_tensors, description_path)
    tied = header["weights"].get("tied", {})
    _load_weights(model, weights, tied, weights_path, header["weights"].get("sha256"))
    return model.to(device).eval()
