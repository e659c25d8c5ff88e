"""Files of JSON and safetensors: written atomically, read without pickle.

The one place where rnnkit writes and reads its files of tensors and descriptions:
:mod:`rnnkit.saving` (``model.json`` beside ``model.safetensors``) and
:mod:`rnnkit.training.checkpoint` (one ``.safetensors`` file whose metadata holds the JSON) use
it. What each format means stays in those modules; here are the bytes on disk.

Every write goes to a temporary file in the same directory, is flushed to disk (``fsync``), and
is renamed over its final name (``os.replace``, atomic on POSIX and Windows), so a crash at any
moment leaves the old file or the new one, never a torn one; a failed write removes its
temporary file. JSON is strict (no ``NaN`` or ``Infinity``), UTF-8. Tensors are read with
safetensors only: nothing is unpickled.

>>> import tempfile, torch
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> write_json(folder / "a.json", {"step": 3})
>>> read_json(folder / "a.json")
{'step': 3}
>>> write_safetensors(folder / "a.safetensors", {"w": torch.ones(2)}, {"format": "pt"})
>>> tensors, metadata = read_safetensors(folder / "a.safetensors")
>>> tensors["w"].tolist(), metadata
([1.0, 1.0], {'format': 'pt'})
>>> sorted(p.name for p in folder.iterdir())  # no temporary file is left behind
['a.json', 'a.safetensors']
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "read_json",
    "read_safetensors",
    "replacing",
    "safetensors_torch",
    "to_json",
    "write_json",
    "write_safetensors",
]


def safetensors_torch() -> Any:
    """``safetensors.torch``, imported on first use (it comes with the ``train`` extra).

    Raises:
        ImportError: saying how to install the package.
    """
    try:
        import safetensors.torch
    except ImportError as error:  # pragma: no cover - the test extra installs it
        raise ImportError(
            "rnnkit.save, rnnkit.load and checkpoints need the 'safetensors' package: "
            "pip install safetensors "
            "(or pip install 'rnnkit[train]')"
        ) from error
    return safetensors.torch


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; elsewhere the rename is enough)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block ends.

    On leaving the block the temporary file is flushed to disk and renamed over ``path``, so
    ``path`` is always absent, old or complete. If the block (or the rename) raises, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value``: a non-finite float raises ``ValueError``."""
    return json.dumps(value, indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON (UTF-8, one final newline) to ``path``, atomically."""
    text = to_json(value, indent=indent) + "\n"
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path``.

    Raises:
        ValueError: ``path:line:column`` of a syntax error, or text that is not UTF-8.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})"
        ) from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from error


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (contiguous, no two sharing memory) and ``metadata``, atomically."""
    save_file = safetensors_torch().save_file
    with replacing(path) as tmp:
        save_file(dict(tensors), tmp, dict(metadata) if metadata is not None else None)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the metadata of the safetensors file ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a readable safetensors file (torn, truncated, another
            format), naming the file and the reader's reason.
    """
    safetensors_torch()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
    return tensors, dict(metadata)
