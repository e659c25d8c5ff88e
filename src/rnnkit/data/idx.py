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


def _gunzip(raw: bytes, path: PathArg) -> bytes:
    """The data of the gzip members in ``raw``; a damaged stream is located by its byte."""
    out: list[bytes] = []
    pos, chunk = 0, 1 << 16
    while True:
        start = pos
        inflate = zlib.decompressobj(wbits=31)
        while not inflate.eof:
            if pos >= len(raw):
                raise ReaderError(
                    f"expected the rest of the gzip member that starts at byte {start}, found "
                    "the end of the file (a truncated or damaged gzip stream)",
                    path=path,
                    byte=len(raw),
                )
            before = inflate.copy()
            piece = raw[pos : pos + chunk]
            try:
                out.append(inflate.decompress(piece))
            except zlib.error as e:
                raise ReaderError(
                    f"expected a gzip stream, found a damaged one ({e})",
                    path=path,
                    byte=_zlib_error_byte(before, piece, pos),
                ) from None
            pos += len(piece)
        pos -= len(inflate.unused_data)
        if not raw[pos:].strip(b"\0"):  # the end, or zero padding (as gzip allows)
            return b"".join(out)
        if raw[pos : pos + 2] != b"\x1f\x8b":
            raise ReaderError(
                f"expected another gzip member (1f 8b) or the end of the file after the member "
                f"that starts at byte {start}, found {raw[pos : pos + 2].hex(' ')}",
                path=path,
                byte=pos,
            )


def _zlib_error_byte(inflate: zlib._Decompress, piece: bytes, pos: int) -> int:
    """The offset of the first byte of ``piece`` (at ``pos``) that ``inflate`` refuses."""
    for i in range(len(piece)):
        try:
            inflate.decompress(piece[i : i + 1])
        except zlib.error:
            return pos + i
    return pos + len(piece)


def read_idx(path: PathArg) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzip-compressed or not.

    The file is a magic number ``00 00 TT DD`` (TT the element type: 0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; DD the number of dimensions), DD
    big-endian uint32 sizes, then the elements, big-endian, in row-major order. Compression is
    recognised from the content, not from the file name.

    Returns:
        an array of the stored shape, in native byte order.

    Raises:
        ReaderError: located as ``path: byte N`` (N 0-based; in a gzip file, N counts the bytes
            of the file for a damaged gzip stream and of the decompressed data otherwise): a
            damaged gzip stream, a bad magic number, an unknown type code, or a data size that
            differs from the one the header announces (the message gives both).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_idx(Path(tmp) / "x.idx.gz", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    ...     x = read_idx(Path(tmp) / "x.idx.gz")
    >>> x.dtype, x.tolist()
    (dtype('uint8'), [[1, 2, 3], [4, 5, 6]])
    """
    raw = Path(path).read_bytes()
    of = ""
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, path)
        of = " of the decompressed data"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ReaderError(
            f"expected the magic number 00 00 TT DD{of}, found {raw[:4].hex(' ') or 'nothing'}",
            path=path,
            byte=0,
        )
    if raw[2] not in _IDX_TYPES:
        known = ", ".join(f"0x{code:02x}" for code in _IDX_TYPES)
        raise ReaderError(
            f"expected an element type code ({known}){of}, found 0x{raw[2]:02x}",
            path=path,
            byte=2,
        )
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    if ndim == 0:
        raise ReaderError(f"expected at least 1 dimension{of}, found 0", path=path, byte=3)
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ReaderError(
            f"expected {ndim} dimension sizes (bytes 4-{offset - 1}){of}, found the data ends "
            f"at byte {len(raw)}",
            path=path,
            byte=len(raw),
        )
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    if math.prod(n for n in shape if n) * dtype.itemsize > np.iinfo(np.intp).max:
        raise ReaderError(
            f"expected a shape NumPy can hold (bytes 4-{offset - 1}){of}, found {shape}",
            path=path,
            byte=4,
        )
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - offset != expected:
        ends = "ends" if len(raw) - offset < expected else "goes on"
        raise ReaderError(
            f"expected {expected} data bytes for shape {shape} of {dtype.name} after the "
            f"{offset}-byte header{of}, found {len(raw) - offset} (the data {ends} at byte "
            f"{min(len(raw), offset + expected)})",
            path=path,
            byte=min(len(raw), offset + expected),
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
            byte=2,
        )
    if labels.shape != (images.shape[0],) or labels.dtype != np.uint8:
        raise ReaderError(
            f"expected uint8 labels [{images.shape[0]}] (one per image), found "
            f"{labels.dtype} {list(labels.shape)}",
            path=labels_path,
            byte=2,
        )
    scaled = images.astype(np.float32)
    scaled /= 255.0
    pixels = torch.from_numpy(scaled)
    targets = torch.from_numpy(labels.astype(np.int64)).unsqueeze(1)
    return [
        {"features": x, "label": y}
        for x, y in zip(pixels.unbind(0), targets.unbind(0), strict=True)
    ]
