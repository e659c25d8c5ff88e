"""Files of JSON and safetensors: written atomically, read without pickle.

The one place where rnnkit writes and reads its files of tensors and descriptions:
:mod:`rnnkit.saving` (``model.json`` beside ``model.safetensors``) and
:mod:`rnnkit.training.checkpoint` (one ``.safetensors`` file whose metadata holds the JSON) use
it. What each format means stays in those modules; here are the bytes on disk.

Every write goes to a temporary file in the same directory, is flushed to disk (``fsync``), and
is renamed over its final name (``os.replace``, atomic on POSIX and Windows), so a crash at any
moment leaves the old file or the new one, never a torn one; a failed write removes its
temporary file and raises :class:`FileWriteError` (an ``OSError``) naming the file. A process
killed mid-write leaves its temporary file (``.NAME.XXXXXXXX.tmp``) behind;
:func:`remove_stale_temporaries` removes them. JSON is strict (no ``NaN`` or ``Infinity``),
UTF-8. Tensors are read with safetensors only: nothing is unpickled. A file that cannot be read
back as written raises :class:`CorruptFileError` (a ``ValueError``) naming the file.

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
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.data.errors import ReaderError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CorruptFileError",
    "FileWriteError",
    "file_sha256",
    "parse_json",
    "read_json",
    "read_safetensors",
    "remove_stale_temporaries",
    "replacing",
    "safetensors_torch",
    "to_json",
    "write_json",
    "write_safetensors",
]


class CorruptFileError(ReaderError):
    """A file rnnkit reads back (a model, a checkpoint, a JSON file) is damaged, was changed
    since it was written, or does not hold what its reader expects.

    The message starts with the file's path (and ``line:column`` where there is one), then says
    what is wrong. A :class:`~rnnkit.data.errors.ReaderError`, so a ``ValueError``.

    >>> str(CorruptFileError("the tensor data's sha256 differs from the one recorded",
    ...                      path="run/checkpoint-000000004.safetensors"))
    "run/checkpoint-000000004.safetensors: the tensor data's sha256 differs from the one recorded"
    """


class FileWriteError(OSError):
    """A file could not be written (disk full, file too large, an I/O error, no permission).

    The message names the file and the system's reason; the file it was to replace is left as
    it was and the temporary file is removed. ``errno`` is the original error's (``ENOSPC``,
    ``EFBIG``, ``EIO``, ...), ``filename`` the file that was to be written.
    """

    def __init__(self, path: str | os.PathLike[str], error: OSError, note: str = "") -> None:
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.reason: str
        if isinstance(error, FileWriteError):
            self.reason = error.reason
        elif error.errno is None:
            self.reason = str(error)
        else:
            self.reason = f"[Errno {error.errno}] {error.strerror}"
        self.message = (
            f"{path}: could not be written ({self.reason}); "
            + (note or "the file of that name, if any, is left as it was")
            + ", and the partial temporary file is removed"
        )

    def __str__(self) -> str:
        return self.message


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


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block ends.

    The temporary file is named ``.NAME.XXXXXXXX.tmp`` (``NAME`` being ``path``'s name). On
    leaving the block it is flushed to disk and renamed over ``path``, so ``path`` is always
    absent, old or complete. If the block (or the rename) raises, the temporary file is removed
    and ``path`` is left as it was; an ``OSError`` (a full disk, say) becomes a
    :class:`FileWriteError` naming ``path``.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise FileWriteError(path, error) from error
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, FileWriteError):
            raise FileWriteError(path, error) from error
        raise
    _fsync_directory(path.parent)


def remove_stale_temporaries(
    directory: str | os.PathLike[str], name: re.Pattern[str]
) -> list[Path]:
    """Remove the temporary files that :func:`replacing` left in ``directory`` for the final
    names that ``name`` matches (whole names), as a killed process leaves them; returns them.

    Call it only when no other process is writing those files (a temporary file is only ever
    read by the process writing it, so removing one of a process that died loses nothing).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and name.fullmatch(match.group("name")) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return sorted(removed)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value``: a non-finite float raises ``ValueError``."""
    return json.dumps(value, indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON (UTF-8, one final newline) to ``path``, atomically."""
    text = to_json(value, indent=indent) + "\n"
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (rnnkit writes strict JSON)")


def parse_json(text: str, path: str | os.PathLike[str], what: str = "") -> Any:
    """The JSON value of ``text``, read from ``path`` (``what``: where in the file, if not all).

    Raises:
        CorruptFileError: ``path:line:column`` of a syntax error (``path: what, line L, column
            C`` for a text inside the file), a ``NaN``/``Infinity``, or a nesting too deep.
    """
    where = f"{what}: " if what else ""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        if what:  # a position in a text inside the file, not in the file
            at = f"{what}, line {error.lineno}, column {error.colno}"
            raise CorruptFileError(f"{at}: not valid JSON ({error.msg})", path=path) from error
        raise CorruptFileError(
            f"not valid JSON ({error.msg})", path=path, line=error.lineno, column=error.colno
        ) from error
    except ValueError as error:  # a NaN or Infinity constant
        raise CorruptFileError(f"{where}not valid JSON ({error})", path=path) from error
    except RecursionError as error:
        raise CorruptFileError(f"{where}JSON nested too deeply to read", path=path) from error


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: ``path:line:column`` of a syntax error; for text that is not UTF-8
            (a pickle, say), the line, column and byte offset of the first bad byte.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        raise CorruptFileError(
            f"not UTF-8 text ({error.reason}: byte 0x{data[error.start]:02x} at line {line}, "
            f"column {column}, byte offset {error.start}); expected JSON",
            path=path,
        ) from error
    return parse_json(text, path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the bytes of ``path``, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (contiguous, no two sharing memory) and ``metadata``, atomically.

    Raises:
        FileWriteError: the file could not be written (a full disk, a file size limit, an I/O
            error); a file already at ``path`` is left as it was.
    """
    save_file = safetensors_torch().save_file
    with replacing(path) as tmp:
        try:
            save_file(dict(tensors), tmp, dict(metadata) if metadata is not None else None)
        except OSError:
            raise
        except Exception as error:
            # safetensors reports a failed write as SafetensorError("... (os error 28)")
            code = re.search(r"\(os error (\d+)\)", str(error))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from error


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the metadata of the safetensors file ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: ``path`` is not a readable safetensors file (torn, truncated, another
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
        raise CorruptFileError(f"not a readable safetensors file ({error})", path=path) from error
    return tensors, dict(metadata)
