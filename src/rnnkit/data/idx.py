"""IDX files of the MNIST family (gzipped or not), and images read as sequences of rows."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import Example, PathArg

__all__ = ["mnist_sequences", "read_idx", "write_idx"]


# ---------------------------------------------------------------------------------------------
# IDX (MNIST family)

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: PathArg) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzip-compressed or not.

    The file is a magic number ``00 00 TT DD`` (TT the element type: 0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; DD the number of dimensions), DD
    big-endian uint32 sizes, then the elements, big-endian, in row-major order. Compression is
    recognised from the content, not from the file name.

    Returns:
        an array of the stored shape, in native byte order.

    Raises:
        ReaderError: a bad magic number, an unknown type code, or a data size that differs from
            the one the header announces (the message gives both).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_idx(Path(tmp) / "x.idx.gz", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    ...     x = read_idx(Path(tmp) / "x.idx.gz")
    >>> x.dtype, x.tolist()
    (dtype('uint8'), [[1, 2, 3], [4, 5, 6]])
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ReaderError(
                f"expected a gzip stream, found a damaged one ({e})", path=path
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ReaderError(
            "expected the magic number 00 00 TT DD at byte 0, "
            f"found {raw[:4].hex(' ') or 'nothing'}",
            path=path,
        )
    if raw[2] not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02x}" for code in _IDX_TYPES)
        raise ReaderError(
            f"expected an element type code ({known}) at byte 2, found 0x{raw[2]:02x}", path=path
        )
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    if ndim == 0:
        raise ReaderError("expected at least 1 dimension at byte 3, found 0", path=path)
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ReaderError(
            f"expected {ndim} dimension sizes (bytes 4-{offset - 1}), found the file ends at "
            f"byte {len(raw)}",
            path=path,
        )
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    if math.prod(n for n in shape if n) * dtype.itemsize > np.iinfo(np.intp).max:
        raise ReaderError(
            f"expected a shape NumPy can hold at bytes 4-{offset - 1}, found {shape}", path=path
        )
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ReaderError(
            f"expected {expected} data bytes for shape {shape} of {dtype.name} after the "
            f"{offset}-byte header, found {len(raw) - offset}",
            path=path,
        )
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: PathArg, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Raises:
        ValueError: a dtype IDX cannot store (see `read_idx`) or a 0-d array.
    """
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes or array.ndim == 0:
        raise ValueError(
            f"array: expected 1 to 255 dimensions of uint8, int8, int16, int32, float32 or "
            f"float64, found {array.ndim} dimension(s) of {array.dtype}"
        )
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=_IDX_TYPES[codes[dtype]]).tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def mnist_sequences(images_path: PathArg, labels_path: PathArg) -> list[Example]:
    """Images of the MNIST family as sequences: each row of pixels is one time step.

    Returns:
        one dict per image: ``"features"`` float32 ``[rows, cols]`` (28 steps of 28 pixels for
        MNIST), pixels scaled to [0, 1]; ``"label"`` int64 ``[1]``.

    Raises:
        ReaderError: files that are not uint8 images ``[n, rows, cols]`` and uint8 labels ``[n]``
            with the same ``n``.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ReaderError(
            f"expected uint8 images [n, rows, cols], found {images.dtype} {list(images.shape)}",
            path=images_path,
        )
    if labels.shape != (images.shape[0],) or labels.dtype != np.uint8:
        raise ReaderError(
            f"expected uint8 labels [{images.shape[0]}] (one per image), found "
            f"{labels.dtype} {list(labels.shape)}",
            path=labels_path,
        )
    scaled = images.astype(np.float32)
    scaled /= 255.0
    pixels = torch.from_numpy(scaled)
    targets = torch.from_numpy(labels.astype(np.int64)).unsqueeze(1)
    return [
        {"features": x, "label": y}
        for x, y in zip(pixels.unbind(0), targets.unbind(0), strict=True)
    ]
