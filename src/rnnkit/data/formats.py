"""Readers for the formats users have: UEA/UCR ``.ts``, IDX (MNIST family), ``word/tag`` text,
CoNLL columns and plain text, with the vocabularies that turn tokens into ids.

Every reader returns examples that `MinibatchSource` batches: a list of dicts mapping a stream
name to a tensor, ``[T_i, *F]`` for a sequence, and ``[1]`` (a one-step sequence) for a
per-sequence label. Malformed input raises `rnnkit.data.errors.ReaderError` located as
``path:line:column`` (text formats) or ``path`` plus a byte offset (IDX), saying what was found.

Vocabularies are built from training data only and then applied unchanged to validation and test
data; a token never seen in training maps to ``<unk>`` when the vocabulary has one, and is an
error otherwise.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError

__all__ = [
    "TextVocabulary",
    "TsDataset",
    "Vocabulary",
    "encode_sentences",
    "mnist_sequences",
    "read_conll",
    "read_idx",
    "read_tagged",
    "read_text",
    "read_ts",
    "text_windows",
    "write_idx",
]

PathArg = Union[str, "os.PathLike[str]"]
Example = dict[str, Tensor]
Sentence = dict[str, list[str]]


# ---------------------------------------------------------------------------------------------
# Text files


def _decode(data: bytes, path: PathArg) -> str:
    """UTF-8 text of ``data`` (a leading byte-order mark is dropped); bad bytes are located."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ReaderError(
            f"expected UTF-8 text, found the byte 0x{data[e.start]:02x}",
            path=path,
            line=line,
            column=column,
        ) from None


def _read_lines(path: PathArg) -> list[str]:
    """The lines of a UTF-8 text file, without their ``\\n`` or ``\\r\\n`` endings."""
    lines = _decode(Path(path).read_bytes(), path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _paths(paths: PathArg | Iterable[PathArg]) -> list[PathArg]:
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    return list(paths)


def read_text(path: PathArg) -> str:
    """The exact text of a UTF-8 file (line endings kept as they are), for `TextVocabulary`.

    Raises:
        ReaderError: at the line and column of the first byte that is not UTF-8.
    """
    return _decode(Path(path).read_bytes(), path)


# ---------------------------------------------------------------------------------------------
# UEA/UCR .ts


@dataclass(frozen=True, eq=False)
class TsDataset:
    """What `read_ts` returns.

    Attributes:
        examples: one dict per series: ``"features"`` float32 ``[T, D]`` (``NaN`` where the file
            has ``?``), ``"label"`` int64 ``[1]`` (index into `class_names`) when the file has
            ``@classLabel true``, ``"target"`` float32 ``[1]`` when it has ``@targetLabel true``,
            and ``"mask"`` float32 ``[T, D]`` (1 observed, 0 missing) when asked for.
        class_names: the labels of the ``@classLabel`` header, in header order (label ``i`` of
            an example is ``class_names[i]``); empty without class labels.
        num_dimensions: D, the number of channels.
        problem_name: the ``@problemName`` header, or None.
    """

    examples: list[Example]
    class_names: tuple[str, ...]
    num_dimensions: int
    problem_name: str | None


_TS_TAGS = (
    "@problemname",
    "@timestamps",
    "@missing",
    "@univariate",
    "@dimensions",
    "@equallength",
    "@serieslength",
    "@classlabel",
    "@targetlabel",
    "@data",
)


@dataclass
class _TsHeader:
    problem_name: str | None = None
    univariate: bool | None = None
    dimensions: int | None = None
    equal_length: bool | None = None
    series_length: int | None = None
    class_names: tuple[str, ...] | None = None
    target: bool = False


def _split_columns(text: str, sep: str, start: int) -> list[tuple[str, int]]:
    """Pieces of ``text`` split on ``sep``, each with its 0-based offset in the line."""
    pieces = []
    for piece in text.split(sep):
        pieces.append((piece, start))
        start += len(piece) + len(sep)
    return pieces


def _ts_bool(value: str, path: PathArg, line: int, column: int, tag: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ReaderError(
        f"{tag}: expected true or false, found {value!r}", path=path, line=line, column=column
    )


def _ts_positive_int(value: str, path: PathArg, line: int, column: int, tag: str) -> int:
    if value.isascii() and value.isdigit() and len(value) <= 18 and int(value) > 0:
        return int(value)
    raise ReaderError(
        f"{tag}: expected a positive integer, found {value!r}", path=path, line=line, column=column
    )


def _ts_header_line(header: _TsHeader, text: str, path: PathArg, line: int) -> None:
    """Apply one ``@tag value ...`` header line to ``header``."""
    lead = len(text) - len(text.lstrip())
    words = [(m.group(), m.start()) for m in re.finditer(r"\S+", text)]
    tag = words[0][0].lower()
    values = words[1:]
    if tag not in _TS_TAGS:
        raise ReaderError(
            f"expected a header tag ({', '.join(_TS_TAGS)}), found {words[0][0]!r}",
            path=path,
            line=line,
            column=lead + 1,
        )
    if tag == "@data":
        return
    if tag == "@problemname":
        header.problem_name = text.strip()[len(tag) :].strip() or None
        return
    if not values:
        raise ReaderError(
            f"{tag}: expected a value after the tag, found the end of the line",
            path=path,
            line=line,
            column=len(text.rstrip()) + 1,
        )
    value, column = values[0][0], values[0][1] + 1
    if tag == "@timestamps":
        if _ts_bool(value, path, line, column, tag):
            raise ReaderError(
                "@timeStamps true: series of (time,value) tuples are not supported; "
                "convert the file to plain values (one comma-separated list per dimension)",
                path=path,
                line=line,
                column=column,
            )
    elif tag == "@missing":
        _ts_bool(value, path, line, column, tag)
    elif tag == "@univariate":
        header.univariate = _ts_bool(value, path, line, column, tag)
    elif tag == "@dimensions":
        header.dimensions = _ts_positive_int(value, path, line, column, tag)
    elif tag == "@equallength":
        header.equal_length = _ts_bool(value, path, line, column, tag)
    elif tag == "@serieslength":
        header.series_length = _ts_positive_int(value, path, line, column, tag)
    elif tag == "@classlabel":
        if _ts_bool(value, path, line, column, tag):
            names = tuple(v for v, _ in values[1:])
            if not names:
                raise ReaderError(
                    "@classLabel true: expected the list of class labels after 'true', "
                    "found the end of the line",
                    path=path,
                    line=line,
                    column=len(text.rstrip()) + 1,
                )
            if len(set(names)) != len(names):
                raise ReaderError(
                    f"@classLabel: expected distinct labels, found {list(names)}",
                    path=path,
                    line=line,
                    column=values[1][1] + 1,
                )
            header.class_names = names
    elif tag == "@targetlabel":
        header.target = _ts_bool(value, path, line, column, tag)


def _ts_value(token: str, offset: int, path: PathArg, line: int) -> float:
    if token.strip() == "?":
        return math.nan
    try:
        return float(token)
    except ValueError:
        raise ReaderError(
            f"expected a number or '?', found {token!r}", path=path, line=line, column=offset + 1
        ) from None


def _ts_dimension(text: str, start: int, path: PathArg, line: int) -> list[float]:
    """The values of one dimension: comma-separated numbers, ``?`` for a missing one."""
    try:
        return [math.nan if t.strip() == "?" else float(t) for t in text.split(",")]
    except ValueError:
        return [_ts_value(t, offset, path, line) for t, offset in _split_columns(text, ",", start)]


def read_ts(path: PathArg, *, with_mask: bool = False) -> TsDataset:
    """Read a UEA/UCR time-series classification file (the sktime ``.ts`` format).

    Header tags (case-insensitive, before ``@data``): ``@problemName``, ``@timeStamps`` (only
    ``false`` is supported), ``@missing``, ``@univariate``, ``@dimensions``, ``@equalLength``,
    ``@seriesLength``, ``@classLabel true <labels>`` / ``false``, ``@targetLabel true|false``.
    ``#`` lines are comments. After ``@data``, one series per line: the dimensions separated by
    ``:``, the values of a dimension by ``,``, ``?`` for a missing value, then ``:`` and the class
    label (or the regression target). All dimensions of one series must have the same length;
    series may differ in length unless ``@equalLength true``.

    Args:
        path: the ``.ts`` file.
        with_mask: also return ``"mask"`` float32 ``[T, D]``, 1 where a value was observed.

    Returns:
        a `TsDataset`; ``examples[i]["features"]`` is float32 ``[T_i, D]``.

    Raises:
        ReaderError: malformed header or data, a label not in the header's list, a series whose
            length or number of dimensions differs from the header's.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "toy.ts"
    ...     _ = path.write_text(
    ...         "@problemName toy\\n@univariate false\\n@dimensions 2\\n@equalLength false\\n"
    ...         "@classLabel true up down\\n@data\\n1,2,3:4,5,6:down\\n7,?:8,9:up\\n"
    ...     )
    ...     data = read_ts(path, with_mask=True)
    >>> data.class_names, data.num_dimensions
    (('up', 'down'), 2)
    >>> data.examples[0]["features"].tolist(), data.examples[0]["label"].tolist()
    ([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]], [1])
    >>> data.examples[1]["features"].tolist(), data.examples[1]["mask"].tolist()
    ([[7.0, 8.0], [nan, 9.0]], [[1.0, 1.0], [0.0, 1.0]])
    """
    header = _TsHeader()
    examples: list[Example] = []
    in_data = False
    num_dims: int | None = None
    lengths: set[int] = set()
    for line_no, raw in enumerate(_read_lines(path), start=1):
        text = raw.rstrip()
        stripped = text.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if not in_data:
            if not stripped.startswith("@"):
                raise ReaderError(
                    f"expected a header tag or @data before the series, found {stripped[:20]!r}",
                    path=path,
                    line=line_no,
                    column=len(text) - len(stripped) + 1,
                )
            _ts_header_line(header, text, path, line_no)
            if stripped.split()[0].lower() == "@data":
                in_data = True
                if header.univariate and header.dimensions not in (None, 1):
                    raise ReaderError(
                        f"@univariate true contradicts @dimensions {header.dimensions}",
                        path=path,
                        line=line_no,
                        column=1,
                    )
                num_dims = 1 if header.univariate else header.dimensions
            continue
        fields = _split_columns(text, ":", 0)
        labelled = header.class_names is not None or header.target
        if labelled:
            if len(fields) < 2:
                raise ReaderError(
                    "expected the values followed by ':' and a label, found no ':'",
                    path=path,
                    line=line_no,
                    column=len(text) + 1,
                )
            (label_text, label_offset), fields = fields[-1], fields[:-1]
        if num_dims is None:
            num_dims = len(fields)
        if len(fields) != num_dims:
            raise ReaderError(
                f"expected {num_dims} dimension(s) separated by ':', found {len(fields)}",
                path=path,
                line=line_no,
                column=1,
            )
        channels = [_ts_dimension(t, offset, path, line_no) for t, offset in fields]
        length = len(channels[0])
        for (_, offset), channel in zip(fields, channels, strict=True):
            if len(channel) != length:
                raise ReaderError(
                    f"expected every dimension of a series to have {length} values (as the "
                    f"first), found {len(channel)}",
                    path=path,
                    line=line_no,
                    column=offset + 1,
                )
        if header.equal_length and header.series_length not in (None, length):
            raise ReaderError(
                f"@seriesLength {header.series_length}: expected {header.series_length} values "
                f"per dimension, found {length}",
                path=path,
                line=line_no,
                column=1,
            )
        lengths.add(length)
        if header.equal_length and len(lengths) > 1:
            raise ReaderError(
                f"@equalLength true: expected {min(lengths - {length})} values per dimension "
                f"as in the series before, found {length}",
                path=path,
                line=line_no,
                column=1,
            )
        features = torch.tensor(channels, dtype=torch.float32).T.contiguous()
        example: Example = {"features": features}
        if with_mask:
            example["mask"] = (~torch.isnan(features)).to(torch.float32)
        if labelled:
            label = label_text.strip()
            if header.class_names is not None:
                if label not in header.class_names:
                    raise ReaderError(
                        f"expected a class label from @classLabel {list(header.class_names)}, "
                        f"found {label!r}",
                        path=path,
                        line=line_no,
                        column=label_offset + 1,
                    )
                example["label"] = torch.tensor([header.class_names.index(label)])
            else:
                try:
                    example["target"] = torch.tensor([float(label)], dtype=torch.float32)
                except ValueError:
                    raise ReaderError(
                        f"@targetLabel true: expected a numeric target, found {label!r}",
                        path=path,
                        line=line_no,
                        column=label_offset + 1,
                    ) from None
        examples.append(example)
    if not in_data:
        raise ReaderError("expected an @data line, found the end of the file", path=path)
    return TsDataset(
        examples=examples,
        class_names=header.class_names or (),
        num_dimensions=num_dims or 0,
        problem_name=header.problem_name,
    )


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


# ---------------------------------------------------------------------------------------------
# Tagged text and CoNLL columns


def read_tagged(paths: PathArg | Iterable[PathArg], *, separator: str = "/") -> list[Sentence]:
    """Read ``word/tag`` text: one sentence per line, tokens separated by whitespace.

    The LAST ``separator`` of a token splits it, so ``1/2/cd`` is the word ``1/2`` with the tag
    ``cd``; word and tag must both be non-empty. Blank lines are skipped.

    Args:
        paths: one file or several (read in the order given), e.g. the Brown corpus files.
        separator: the string between word and tag.

    Returns:
        one dict per sentence: ``{"words": [...], "tags": [...]}`` of equal lengths.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     text = "\\tThe/at 1/2/cd cup/nn ./.\\n\\nIt/pps is/bez\\n"
    ...     _ = (Path(tmp) / "a.txt").write_text(text)
    ...     sentences = read_tagged(Path(tmp) / "a.txt")
    >>> sentences[0]
    {'words': ['The', '1/2', 'cup', '.'], 'tags': ['at', 'cd', 'nn', '.']}
    >>> len(sentences)
    2
    """
    if not separator:
        raise ValueError("separator: expected a non-empty string, found ''")
    sentences: list[Sentence] = []
    for path in _paths(paths):
        for line_no, line in enumerate(_read_lines(path), start=1):
            tokens = line.split()
            if not tokens:
                continue
            words, tags = [], []
            for token in tokens:
                cut = token.rfind(separator)
                if cut <= 0 or cut + len(separator) == len(token):
                    column = _token_column(line, token)
                    raise ReaderError(
                        f"expected word{separator}tag with a non-empty word and tag, "
                        f"found {token!r}",
                        path=path,
                        line=line_no,
                        column=column,
                    )
                words.append(token[:cut])
                tags.append(token[cut + len(separator) :])
            sentences.append({"words": words, "tags": tags})
    return sentences


def _token_column(line: str, token: str) -> int:
    """1-based column of the first whitespace-separated ``token`` of ``line``."""
    for match in re.finditer(r"\S+", line):
        if match.group() == token:
            return match.start() + 1
    return 1


def read_conll(
    paths: PathArg | Iterable[PathArg],
    columns: Sequence[str | None],
    *,
    delimiter: str | None = None,
    comment: str | None = None,
) -> list[Sentence]:
    """Read CoNLL-style columns: one token per line, blank lines between sentences.

    A line ``-DOCSTART- ...`` (the CoNLL-2003 document marker) ends the current sentence and is
    not a token. Multi-word-token ranges of CoNLL-U are not interpreted (they are ordinary lines).

    Args:
        paths: one file or several, read in order.
        columns: a name for each column of a line, in order; ``None`` reads a column and drops it.
            Every token line must have exactly ``len(columns)`` fields.
        delimiter: the field separator; None splits on any run of whitespace, ``"\\t"`` on tabs
            only (fields may then contain spaces).
        comment: lines starting with this string are comments (``"#"`` for CoNLL-U); None (the
            default) has no comments, since ``#`` is a real token in many CoNLL files.

    Returns:
        one dict per sentence mapping each named column to its list of tokens.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "a.conll"
    ...     text = "-DOCSTART- -X- O\\n\\nEU NNP B-ORG\\nrejects VBZ O\\n\\nPeter NNP B-PER\\n"
    ...     _ = path.write_text(text)
    ...     sentences = read_conll(path, columns=["words", None, "ner"])
    >>> sentences
    [{'words': ['EU', 'rejects'], 'ner': ['B-ORG', 'O']}, {'words': ['Peter'], 'ner': ['B-PER']}]
    """
    names = [c for c in columns if c is not None]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"columns: expected distinct names (None to drop one), found {columns}")
    sentences: list[Sentence] = []

    def close(current: Sentence) -> Sentence:
        if current[names[0]]:
            sentences.append(current)
        return {name: [] for name in names}

    for path in _paths(paths):
        sentence: Sentence = {name: [] for name in names}
        for line_no, line in enumerate(_read_lines(path), start=1):
            if comment is not None and line.startswith(comment):
                continue
            if not line.strip():
                sentence = close(sentence)
                continue
            fields = line.split(delimiter) if delimiter is not None else line.split()
            if fields[0].strip() == "-DOCSTART-":
                sentence = close(sentence)
                continue
            if len(fields) != len(columns):
                where = _field_offset(line, delimiter, min(len(fields), len(columns)))
                raise ReaderError(
                    f"expected {len(columns)} columns ({list(columns)}), found {len(fields)}",
                    path=path,
                    line=line_no,
                    column=where + 1,
                )
            for name, field in zip(columns, fields, strict=True):
                if name is not None:
                    sentence[name].append(field)
        close(sentence)
    return sentences


def _field_offset(line: str, delimiter: str | None, index: int) -> int:
    """0-based offset of field ``index`` of ``line`` (the end of the line if it has fewer)."""
    if delimiter is None:
        starts = [m.start() for m in re.finditer(r"\S+", line)]
    else:
        starts = [offset for _, offset in _split_columns(line, delimiter, 0)]
    return starts[index] if index < len(starts) else len(line)


# ---------------------------------------------------------------------------------------------
# Vocabularies


class Vocabulary:
    """A bijection between tokens and ids ``0 .. len-1``.

    The reserved tokens come first: ``pad`` (id 0) when given, then ``unk``, then ``tokens`` in
    the order given. ``pad`` is only a filler for code that pads sequences (rnnkit's own batches
    are packed and never need it); ``unk`` is what a token outside the vocabulary maps to. With
    ``unk=None``, encoding an unknown token raises ValueError instead, which is what a closed set
    such as tags usually wants.

    >>> tags = Vocabulary(["nn", "vb"], pad=None, unk=None)
    >>> words = Vocabulary.build([["the", "cat"], ["the", "dog"]], min_freq=2)
    >>> words.tokens, words.pad_id, words.unk_id
    (('<pad>', '<unk>', 'the'), 0, 1)
    >>> words.encode(["the", "cat"]).tolist(), tags.encode(["vb", "nn"]).tolist()
    ([2, 1], [1, 0])
    >>> words.decode([2, 1])
    ['the', '<unk>']
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
    ) -> None:
        reserved = [t for t in (pad, unk) if t is not None]
        if pad is not None and pad == unk:
            raise ValueError(f"pad and unk: expected two different tokens, found {pad!r} twice")
        self._tokens: list[str] = [*reserved]
        self._ids: dict[str, int] = {t: i for i, t in enumerate(reserved)}
        for token in tokens:
            if token in self._ids:
                kind = "a reserved token" if token in reserved else "a duplicate"
                raise ValueError(
                    f"tokens: expected distinct ordinary tokens, found {kind} {token!r}"
                )
            self._ids[token] = len(self._tokens)
            self._tokens.append(token)
        self.pad = pad
        self.unk = unk

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
    ) -> Vocabulary:
        """The vocabulary of the tokens seen at least ``min_freq`` times in ``sequences``.

        Build it from the training data only. Tokens are ordered by decreasing count, ties by
        first appearance; ``max_size`` caps the number of ordinary tokens (reserved ones are not
        counted). Occurrences of the reserved tokens themselves in the data (a corpus that already
        contains ``<unk>``) are not counted: they encode to the reserved ids.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq: expected an integer >= 1, found {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size: expected None or an integer >= 0, found {max_size}")
        counts: Counter[str] = Counter()
        for sequence in sequences:
            counts.update(sequence)
        for reserved in (pad, unk):
            if reserved is not None:
                counts.pop(reserved, None)
        kept = [t for t, n in counts.most_common() if n >= min_freq]
        return cls(kept[:max_size] if max_size is not None else kept, pad=pad, unk=unk)

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, reserved ones included, in id order."""
        return tuple(self._tokens)

    @property
    def pad_id(self) -> int | None:
        """The id of ``pad``, or None without one."""
        return None if self.pad is None else self._ids[self.pad]

    @property
    def unk_id(self) -> int | None:
        """The id of ``unk``, or None without one."""
        return None if self.unk is None else self._ids[self.unk]

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens, pad={self.pad!r}, unk={self.unk!r})"

    def id(self, token: str) -> int:
        """The id of ``token``: ``unk_id`` for an unknown token, a ValueError without ``unk``."""
        found = self._ids.get(token)
        if found is not None:
            return found
        if self.unk is not None:
            return self._ids[self.unk]
        raise ValueError(
            f"token {token!r} is not in the vocabulary, which has no unk token; "
            "build it with unk='<unk>' to map unknown tokens"
        )

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """int64 ``[T]`` ids of ``tokens`` (see `id` for unknown tokens)."""
        tokens = list(tokens)
        get = self._ids.get
        ids = [get(t, -1) for t in tokens]
        if -1 in ids:
            ids = [i if i >= 0 else self.id(t) for i, t in zip(ids, tokens, strict=True)]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> list[str]:
        """The tokens of the ids ``[T]``.

        Raises:
            ValueError: an id outside ``0 .. len-1``.
        """
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        for position, i in enumerate(values):
            if not (isinstance(i, int) and 0 <= i < len(self._tokens)):
                raise ValueError(
                    f"ids[{position}]: expected an integer in [0, {len(self._tokens)}), found {i!r}"
                )
        return [self._tokens[i] for i in values]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description; `from_dict` rebuilds the same vocabulary."""
        reserved = sum(t is not None for t in (self.pad, self.unk))
        return {"tokens": self._tokens[reserved:], "pad": self.pad, "unk": self.unk}

    @classmethod
    def from_dict(cls, state: Mapping[str, object]) -> Vocabulary:
        """The vocabulary `to_dict` described.

        >>> v = Vocabulary(["a", "b"], pad=None)
        >>> Vocabulary.from_dict(v.to_dict()).tokens
        ('<unk>', 'a', 'b')
        """
        tokens, pad, unk = state.get("tokens"), state.get("pad"), state.get("unk")
        if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            raise ValueError(f"state['tokens']: expected a list of strings, found {tokens!r}")
        if not (pad is None or isinstance(pad, str)):
            raise ValueError(f"state['pad']: expected a string or None, found {pad!r}")
        if not (unk is None or isinstance(unk, str)):
            raise ValueError(f"state['unk']: expected a string or None, found {unk!r}")
        return cls(tokens, pad=pad, unk=unk)


def encode_sentences(
    sentences: Iterable[Mapping[str, Sequence[str]]], vocabularies: Mapping[str, Vocabulary]
) -> list[Example]:
    """Examples ``{name: int64 [T]}`` for each sentence, one stream per vocabulary.

    >>> sentences = [{"words": ["the", "cat"], "tags": ["at", "nn"]}]
    >>> words = Vocabulary.build(s["words"] for s in sentences)
    >>> tags = Vocabulary.build((s["tags"] for s in sentences), pad=None, unk=None)
    >>> example = encode_sentences(sentences, {"words": words, "tags": tags})[0]
    >>> example["words"].tolist(), example["tags"].tolist()
    ([2, 3], [0, 1])
    """
    examples = []
    for index, sentence in enumerate(sentences):
        example = {}
        for name, vocabulary in vocabularies.items():
            if name not in sentence:
                raise ValueError(
                    f"sentences[{index}]: expected a column {name!r}, found {sorted(sentence)}"
                )
            if not sentence[name]:
                raise ValueError(f"sentences[{index}][{name!r}]: expected tokens, found none")
            example[name] = vocabulary.encode(sentence[name])
        examples.append(example)
    return examples


_WORD_PIECES = re.compile(r"\w+|\s+|[^\w\s]")


class TextVocabulary:
    """Plain text to ids and back, exactly, at the level of characters or words.

    At the word level the text is cut into runs of word characters, runs of whitespace and single
    other characters (punctuation), so the pieces concatenate back to the text and
    ``decode(encode(text)) == text`` whenever every piece is in the vocabulary. An unknown piece
    raises ValueError by default (``unk=None``); with ``unk="<unk>"`` it maps to that token,
    which then decodes as the string ``"<unk>"``. There is no padding token.

    >>> chars = TextVocabulary.characters("abba cab")
    >>> chars.vocabulary.tokens
    ('a', 'b', ' ', 'c')
    >>> chars.encode("cab").tolist(), chars.decode(chars.encode("a cab"))
    ([3, 0, 1], 'a cab')
    >>> words = TextVocabulary.words("the cat, the hat.")
    >>> words.tokenize("the hat.")
    ['the', ' ', 'hat', '.']
    """

    def __init__(self, vocabulary: Vocabulary, level: Literal["characters", "words"]) -> None:
        if level not in ("characters", "words"):
            raise ValueError(f"level: expected 'characters' or 'words', found {level!r}")
        if vocabulary.pad is not None:
            raise ValueError(f"vocabulary: expected no pad token, found {vocabulary.pad!r}")
        self.vocabulary = vocabulary
        self.level = level

    @classmethod
    def characters(cls, text: str, *, min_freq: int = 1, unk: str | None = None) -> TextVocabulary:
        """The characters of ``text`` (the training text), most frequent first."""
        return cls(Vocabulary.build([text], min_freq=min_freq, pad=None, unk=unk), "characters")

    @classmethod
    def words(
        cls,
        text: str,
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        unk: str | None = None,
    ) -> TextVocabulary:
        """The word, whitespace and punctuation pieces of ``text``, most frequent first."""
        pieces = _WORD_PIECES.findall(text)
        vocabulary = Vocabulary.build(
            [pieces], min_freq=min_freq, max_size=max_size, pad=None, unk=unk
        )
        return cls(vocabulary, "words")

    def __len__(self) -> int:
        return len(self.vocabulary)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` this vocabulary encodes; they concatenate back to ``text``."""
        return list(text) if self.level == "characters" else _WORD_PIECES.findall(text)

    def encode(self, text: str) -> Tensor:
        """int64 ``[N]`` ids of the pieces of ``text``.

        Raises:
            ValueError: a piece outside the vocabulary when it has no ``unk``, with its position.
        """
        pieces = self.tokenize(text)
        get = self.vocabulary._ids.get
        ids = [get(p, -1) for p in pieces]
        if -1 in ids:
            unk_id = self.vocabulary.unk_id
            if unk_id is None:
                index = ids.index(-1)
                position = sum(len(p) for p in pieces[:index])
                raise ValueError(
                    f"text[{position}]: {pieces[index]!r} is not in the vocabulary, which has no "
                    f"unk token; build it with unk='<unk>' to map unknown {self.level}"
                )
            ids = [unk_id if i < 0 else i for i in ids]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of the ids ``[N]``."""
        return "".join(self.vocabulary.decode(ids))


def text_windows(ids: Tensor, length: int, *, stride: int | None = None) -> list[Example]:
    """Language-model examples: ``"input"`` ``ids[s : s+length]`` and ``"target"`` shifted by one.

    Windows start at ``0, stride, 2*stride, ...`` (``stride`` defaults to ``length``: windows
    that do not overlap) as long as the target fits: the last ``< stride`` ids may go unused.

    Args:
        ids: ``[N]`` encoded text.
        length: steps per window.

    Returns:
        dicts of ``"input"`` and ``"target"``, each ``[length]`` with ids' dtype.

    >>> w = text_windows(torch.arange(7), 3)
    >>> [(x["input"].tolist(), x["target"].tolist()) for x in w]
    [([0, 1, 2], [1, 2, 3]), ([3, 4, 5], [4, 5, 6])]
    """
    if ids.dim() != 1:
        raise ValueError(f"ids: expected a 1-D tensor [N], found shape {tuple(ids.shape)}")
    if length < 1:
        raise ValueError(f"length: expected an integer >= 1, found {length}")
    step = length if stride is None else stride
    if step < 1:
        raise ValueError(f"stride: expected None or an integer >= 1, found {stride}")
    return [
        {"input": ids[s : s + length], "target": ids[s + 1 : s + length + 1]}
        for s in range(0, ids.numel() - length, step)
    ]
