"""UEA/UCR ``.ts`` files: univariate, multivariate, variable length, ``?`` for missing values,
class labels from the header."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import Example, PathArg, end_of, read_lines, split_columns

__all__ = ["TsDataset", "read_ts"]


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
        lines: the 1-based line of each series in the file, and ``data_line``, the line of
            ``@data``, for the errors of readers that check the data further.
    """

    examples: list[Example]
    class_names: tuple[str, ...]
    num_dimensions: int
    problem_name: str | None
    lines: tuple[int, ...] = ()
    data_line: int = 1


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
        return [_ts_value(t, offset, path, line) for t, offset in split_columns(text, ",", start)]


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
    >>> from pathlib import Path
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
    series_lines: list[int] = []
    data_line = 1
    in_data = False
    num_dims: int | None = None
    lengths: set[int] = set()
    lines = read_lines(path)
    for line_no, raw in enumerate(lines, start=1):
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
                in_data, data_line = True, line_no
                if header.univariate and header.dimensions not in (None, 1):
                    raise ReaderError(
                        f"@univariate true contradicts @dimensions {header.dimensions}",
                        path=path,
                        line=line_no,
                        column=1,
                    )
                num_dims = 1 if header.univariate else header.dimensions
            continue
        fields = split_columns(text, ":", 0)
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
        series_lines.append(line_no)
    if not in_data:
        line_no, column = end_of(lines)
        raise ReaderError(
            "expected an @data line, found the end of the file",
            path=path,
            line=line_no,
            column=column,
        )
    return TsDataset(
        examples=examples,
        class_names=header.class_names or (),
        num_dimensions=num_dims or 0,
        problem_name=header.problem_name,
        lines=tuple(series_lines),
        data_line=data_line,
    )
