"""Checkpoints without pickle: tensors in safetensors, everything else JSON, written atomically.

A checkpoint is one ``.safetensors`` file. Its tensors are the tensors of a nested state (model
weights, optimizer moments, random generator states, ...), each named by its path in the state
(``model/layers.0.cell.weight_ih``); the rest of the structure (numbers, strings, lists, dicts
with string or integer keys, tuples) is JSON in the file's metadata under ``rnnkit.state``, with
``{"__tensor__": name}`` where a tensor was. Loading never unpickles anything.

A file is written to a temporary name in the same directory, flushed to disk (``fsync``), and
renamed over its final name (``os.replace``, atomic on POSIX and Windows; see
:mod:`rnnkit.serialization`), so a crash at any moment leaves either the previous set of
checkpoints or the new one, never a torn file. The temporary files of writes that a kill cut
short are removed by the next successful write (and when a :class:`~rnnkit.training.Trainer`
starts to fit).

Integrity: the metadata also records ``rnnkit.sha256``, the sha256 of the JSON structure and of
every tensor (name, dtype, shape and raw bytes, in name order), since safetensors itself has no
checksum; :func:`load_state` refuses a file whose data no longer matches it. Files written
before this record existed (format version ``"1"``) load without the check. Every load error is
a :class:`~rnnkit.serialization.CorruptFileError` (a ``ValueError``) naming the file and what
is wrong; a write error is a :class:`~rnnkit.serialization.FileWriteError` (an ``OSError``)
naming the file and saying that the previous checkpoint is intact.

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

import hashlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.serialization import (
    CorruptFileError,
    FileWriteError,
    parse_json,
    read_safetensors,
    remove_stale_temporaries,
    to_json,
    write_safetensors,
)

__all__ = ["Checkpoint", "load_state", "save_state"]

_FORMAT = "rnnkit.checkpoint"
_VERSION = "2"  # "2" records rnnkit.sha256; "1" (no record) is still read
_VERSIONS = ("1", "2")
_NAME = re.compile(r"^checkpoint-(\d+)\.safetensors$")
_NON_FINITE = ("nan", "inf", "-inf")


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


def _payload_sha256(structure: str, tensors: Mapping[str, Tensor]) -> str:
    """sha256 of the JSON structure, then of each tensor's name, dtype, shape and raw bytes
    (C order), in name order: everything :func:`load_state` returns."""
    digest = hashlib.sha256(structure.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(b"\n" + to_json([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


class _Decoder:
    """Rebuilds the state from its JSON structure; every surprise is named with its place."""

    def __init__(self, path: Path, tensors: Mapping[str, Tensor]) -> None:
        self.path, self.tensors = path, tensors

    def fail(self, where: str, message: str) -> CorruptFileError:
        at = f"the state at {where!r}" if where else "the state"
        return CorruptFileError(f"{at}: {message}", path=self.path)

    def decode(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            return [self.decode(v, _join(where, i)) for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            key = value["__tensor__"]
            if not isinstance(key, str) or key not in self.tensors:
                raise self.fail(
                    where, f"refers to the tensor {key!r}, which the file does not hold"
                )
            return self.tensors[key]
        if "__float__" in value:
            text = value["__float__"]
            if text not in _NON_FINITE:
                expected = f"one of {list(_NON_FINITE)} (a non-finite float)"
                raise self.fail(where, f"expected {expected}, found {text!r}")
            return float(text)
        if "__ndarray__" in value:
            return self.array(value, where)
        if "__tuple__" in value:
            items = value["__tuple__"]
            if not isinstance(items, list):
                raise self.fail(where, f"expected a list of tuple items, found {items!r}")
            return tuple(self.decode(v, _join(where, i)) for i, v in enumerate(items))
        if "__items__" in value:
            return self.items(value["__items__"], where)
        return {k: self.decode(v, _join(where, k)) for k, v in value.items()}

    def array(self, value: dict[str, Any], where: str) -> np.ndarray:
        dtype = value.get("dtype")
        try:
            kind = np.dtype(dtype).kind if isinstance(dtype, str) else ""
        except (TypeError, ValueError):
            kind = ""
        if kind not in ("b", "i", "u", "f"):  # bool, integers, floats: what numpy states hold
            raise self.fail(where, f"expected a numeric NumPy dtype, found {dtype!r}")
        try:
            return np.array(value["__ndarray__"], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as error:
            message = f"cannot make a {dtype} array of the values ({error})"
            raise self.fail(where, message) from error

    def items(self, items: Any, where: str) -> dict[Any, Any]:
        if not isinstance(items, list):
            raise self.fail(where, f"expected a list of [key, value] pairs, found {items!r}")
        out = {}
        for pair in items:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self.fail(where, f"expected a [key, value] pair, found {pair!r}")
            key, value = pair
            if not (key is None or isinstance(key, (bool, int, float, str))):
                raise self.fail(where, f"expected a string, number or None as key, found {key!r}")
            out[key] = self.decode(value, _join(where, key))
        return out


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a nested ``state`` (see the module docstring) atomically to ``path``.

    Raises:
        FileWriteError: ``path`` could not be written (disk full, ...); a file already at
            ``path`` is left as it was.
    """
    path = Path(path)
    tensors: dict[str, Tensor] = {}
    structure = to_json(_encode(dict(state), "", tensors))
    metadata = {
        "format": _FORMAT,
        "version": _VERSION,
        "rnnkit.state": structure,
        "rnnkit.sha256": _payload_sha256(structure, tensors),
    }
    write_safetensors(path, tensors, metadata)
    return path


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on the CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: the file is not an rnnkit checkpoint, is damaged (its data no longer
            matches the sha256 recorded when it was written), or its structure is not one
            :func:`save_state` writes; the message names the file and what is wrong.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != _FORMAT or "rnnkit.state" not in metadata:
        raise CorruptFileError(
            f"expected an rnnkit checkpoint (metadata format={_FORMAT!r} and 'rnnkit.state'), "
            f"found metadata keys {sorted(metadata)}",
            path=path,
        )
    version = metadata.get("version")
    if version not in _VERSIONS:
        raise CorruptFileError(
            f"checkpoint format version {version!r}; this rnnkit reads versions {list(_VERSIONS)}",
            path=path,
        )
    structure = metadata["rnnkit.state"]
    if version != "1":
        recorded = metadata.get("rnnkit.sha256")
        if recorded is None:
            raise CorruptFileError(
                f"a version {version} checkpoint must record 'rnnkit.sha256' in its metadata, "
                f"found metadata keys {sorted(metadata)}",
                path=path,
            )
        actual = _payload_sha256(structure, tensors)
        if actual != recorded:
            raise CorruptFileError(
                f"the checkpoint's data has changed since it was written: its sha256 is "
                f"{actual}, the file records {recorded} (a damaged disk or copy?); refusing it",
                path=path,
            )
    value = parse_json(structure, path, "metadata 'rnnkit.state'")
    try:
        decoded = _Decoder(path, tensors).decode(value, "")
    except RecursionError as error:
        raise CorruptFileError("the stored state is nested too deeply", path=path) from error
    if not isinstance(decoded, dict):
        raise CorruptFileError(
            f"the stored state is not a dictionary but a {type(decoded).__name__}", path=path
        )
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

    def remove_temporaries(self) -> list[Path]:
        """Remove the temporary files of checkpoint writes that were cut short (a killed
        process leaves ``.checkpoint-<step>.safetensors.XXXXXXXX.tmp``); returns them. Only
        while no other process writes checkpoints into this directory."""
        return remove_stale_temporaries(self.directory, _NAME)

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write ``state`` as the checkpoint of ``step``, then drop the oldest beyond ``keep``
        and the temporary files that earlier, killed writes left.

        Raises:
            FileWriteError: the file could not be written (disk full, ...); it names the file
                and the previous checkpoint, which is intact.
        """
        path = self.path_for(step)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            save_state(path, state)
        except OSError as error:
            previous = self.latest()
            note = (
                f"the previous checkpoint, {previous}, is intact"
                if previous is not None
                else "there is no earlier checkpoint in the directory"
            )
            raise FileWriteError(path, error, note) from error
        self.remove_temporaries()
        if self.keep is not None:
            for old in self.paths()[: -self.keep]:
                old.unlink()
        return path

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self.directory)!r}, every_steps={self.every_steps}, keep={self.keep})"
        )
