"""Checkpoints without pickle: tensors in safetensors, everything else JSON, written atomically.

A checkpoint is one ``.safetensors`` file. Its tensors are the tensors of a nested state (model
weights, optimizer moments, random generator states, ...), each named by its path in the state
(``model/layers.0.cell.weight_ih``); the rest of the structure (numbers, strings, lists, dicts
with string or integer keys, tuples) is JSON in the file's metadata under ``rnnkit.state``, with
``{"__tensor__": name}`` where a tensor was. Loading never unpickles anything.

A file is written to a temporary name in the same directory, flushed to disk (``fsync``), and
renamed over its final name (``os.replace``, atomic on POSIX and Windows; see
:mod:`rnnkit.serialization`), so a crash at any moment leaves either the previous set of
checkpoints or the new one, never a torn file.

>>> import tempfile, torch
>>> folder = tempfile.mkdtemp()
>>> state = {"weights": {"w": torch.ones(2)}, "step": 3, "betas": (0.9, 0.999),
...          "optimizer_state": {0: {"exp_avg": torch.zeros(2)}}}
>>> path = save_state(f"{folder}/a.safetensors", state)
>>> back = load_state(path)
>>> back["step"], back["betas"], list(back["optimizer_state"]), back["weights"]["w"].tolist()
(3, (0.9, 0.999), [0], [1.0, 1.0])
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from rnnkit.serialization import read_safetensors, to_json, write_safetensors

__all__ = ["Checkpoint", "load_state", "save_state"]

_FORMAT = "rnnkit.checkpoint"
_VERSION = "1"
_NAME = re.compile(r"^checkpoint-(\d+)\.safetensors$")


def _join(path: str, key: object) -> str:
    return f"{path}/{key}" if path else str(key)


def _encode(value: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """``value`` as JSON-able data; its tensors go into ``tensors`` under their path."""
    if isinstance(value, Tensor):
        if path in tensors:
            raise ValueError(f"state: two tensors would be stored under the name {path!r}")
        tensors[path] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return _encode(value.item(), path, tensors)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, _join(path, i), tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, _join(path, i), tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, _join(path, k), tensors) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise TypeError(
                    f"state at {path!r}: dictionary keys must be strings, numbers or None, "
                    f"found {type(k).__name__}"
                )
            items.append([k, _encode(v, _join(path, k), tensors)])
        return {"__items__": items}
    raise TypeError(
        f"state at {path!r}: cannot store a {type(value).__name__} without pickle; expected "
        "tensors, numbers, strings, None, lists, tuples or dicts"
    )


def _decode(value: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__float__" in value:
        return float(value["__float__"])
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a nested ``state`` (see the module docstring) atomically to ``path``."""
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    structure = _encode(dict(state), "", tensors)
    metadata = {"format": _FORMAT, "version": _VERSION, "rnnkit.state": to_json(structure)}
    write_safetensors(path, tensors, metadata)
    return path


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on the CPU)."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != _FORMAT or "rnnkit.state" not in metadata:
        raise ValueError(
            f"{path}: expected an rnnkit checkpoint (metadata format={_FORMAT!r}), found "
            f"metadata keys {sorted(metadata)}"
        )
    if metadata.get("version") != _VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {metadata.get('version')!r}; this rnnkit reads "
            f"version {_VERSION!r}"
        )
    decoded = _decode(json.loads(metadata["rnnkit.state"]), tensors)
    if not isinstance(decoded, dict):
        raise ValueError(f"{path}: the stored state is not a dictionary")
    return decoded


class Checkpoint:
    """Where and when the trainer writes checkpoints, and which ones it keeps.

    Args:
        directory: created if needed; files are named ``checkpoint-<step>.safetensors``.
        every_steps: also write every this many steps (``None``: at epoch ends only). A
            checkpoint is always written at the end of each epoch.
        keep: how many of the newest checkpoints to keep (``None`` keeps all).

    >>> import tempfile, torch
    >>> ckpt = Checkpoint(tempfile.mkdtemp(), every_steps=2, keep=2)
    >>> for step in (2, 4, 6):
    ...     _ = ckpt.save({"step": step}, step)
    >>> [p.name for p in ckpt.paths()], load_state(ckpt.latest())["step"]
    (['checkpoint-000000004.safetensors', 'checkpoint-000000006.safetensors'], 6)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        every_steps: int | None = None,
        keep: int | None = 3,
    ) -> None:
        if every_steps is not None and (not isinstance(every_steps, int) or every_steps < 1):
            raise ValueError(
                f"every_steps: expected a positive integer or None, found {every_steps!r}"
            )
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep: expected a positive integer or None, found {keep!r}")
        self.directory = Path(directory)
        self.every_steps, self.keep = every_steps, keep

    def path_for(self, step: int) -> Path:
        """The file of the checkpoint taken after ``step`` updates."""
        return self.directory / f"checkpoint-{step:09d}.safetensors"

    def paths(self) -> list[Path]:
        """The complete checkpoints in the directory, oldest first (temporary files ignored)."""
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The newest checkpoint, or ``None`` when there is none."""
        paths = self.paths()
        return paths[-1] if paths else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write ``state`` as the checkpoint of ``step``, then drop the oldest beyond ``keep``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = save_state(self.path_for(step), state)
        if self.keep is not None:
            for old in self.paths()[: -self.keep]:
                old.unlink()
        return path

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self.directory)!r}, every_steps={self.every_steps}, keep={self.keep})"
        )
