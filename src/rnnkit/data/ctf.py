"""The CNTK Text Format (CTF): read sequences of dense and sparse samples, and write them back.

A CTF file holds one sample per stream per line; lines are grouped into sequences by an
optional leading sequence id (CNTK's ``CNTKTextFormatReader``)::

    0 |x 0.1 0.2 |y 1        <- sequence 0: x has 2 samples, y has 1
    0 |x 0.3 0.4
    7 |x 1 2 |w 3:0.5        <- sequence 7: a sparse sample, index 3 holds 0.5

The grammar, as this module reads it:

- A line is ``[id] (|name values... | |# comment)*`` ending in ``\\n`` or ``\\r\\n`` (the last line
  may lack it). Spaces and tabs separate; nothing else does (a lone ``\\r`` is an error).
- ``id`` is an unsigned integer below 2**64 in decimal digits; leading zeros are allowed, any
  number of them (``007`` is 7). If the first line that carries a
  sample has an id, consecutive lines with the same id form one sequence, a line without an id
  continues the current sequence, and an id may appear again only on consecutive lines. If that
  first line has no id, every line is its own sequence and later ids are checked, then ignored
  (both rules are CNTK's).
- Dense values are decimal numbers ``[+-](digits[.digits] | .digits)[(e|E)[+-]digits]``, exactly
  ``dim`` per sample. Sparse values are ``index:value`` pairs with ``0 <= index < dim``, the
  index in decimal digits (leading zeros allowed, as in ids: ``03:1`` is index 3), each index at
  most once per sample; ``|name`` with no pairs is an all-zero sample. Numbers are read as
  float64 and rounded to float32 (beyond float32's range they become ±inf).
- A stream appears at most once per line (one sample per stream per line, as in CNTK).
- A comment starts with ``|#`` and runs to the end of the line or to the next ``|`` that is not
  followed by ``#``: inside a comment ``|#`` is an escaped pipe.
- A line without samples (blank, or only comments, with or without an id) belongs to no sequence;
  only its syntax is checked (``blank_line_errors=True``: it is an error, as in CNTK).

Each example is a dict ``name -> float32 tensor [T_k, dim]`` over all the requested streams, where
``T_k`` counts the lines of the sequence carrying stream ``k`` (CNTK requires 1 ≤ T_k; here a
stream without samples in a sequence gives a ``[0, dim]`` tensor). Sparse streams are stored
dense in the tensor, so memory is ``T_k * dim * 4`` bytes. A stream of the file that is not
requested is an error (``skip_unknown=True``: skipped with a :class:`CTFWarning`, as in CNTK), and
so is a dense sample of fewer than ``dim`` values (``pad_dense=True``: zeros fill it, as in CNTK).

Malformed input raises :class:`~rnnkit.data.errors.ReaderError` with ``path:line:column``
(1-based, columns count characters; invalid UTF-8 bytes count one each), the stream and what was
found. With ``skip_bad=True`` the sequences holding a malformed line are skipped and their errors
collected (``CTFReader.errors``, or the ``errors`` list given to :func:`read_ctf`); with
``skip_bad="sample"`` only the malformed sample (or line) is dropped, as CNTK drops it.
``cntk_compatible=True`` turns all of CNTK's rules on; docs/data.md ("CNTK compatibility") sets
each beside rnnkit's default.

Speed: each block of about 1 MiB of lines (``block_bytes``) is first read by the C scanner
(``rnnkit.data._ctfscan``, built at install; numbers rounded exactly as ``float()`` rounds them),
or, where it could not be built, by a Python fast path (``str.split`` per line, one NumPy
conversion per stream and block). A block these cannot vouch for (blank lines, a malformed line,
a repeated id; the Python fast path also gives up on non-ASCII text and on ASCII control
characters) is read again by the plain path, a careful scanner that locates errors. The fast
paths only ever accept what the plain path accepts, with the same values, so every path and
every block size gives the same examples, bit for bit, and the same errors.
``CTFReader(..., scanner="c" | "python" | "plain")`` chooses the path (``fast=False`` is
``"plain"``), for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError

try:
    import rnnkit.data._ctfscan as _ctfscan
except ImportError:  # built without a C compiler: the Python paths read alone
    _ctfscan = None  # type: ignore[assignment]

__all__ = ["CTFReader", "CTFWarning", "Stream", "iter_ctf", "read_ctf", "write_ctf"]

_BLOCK_BYTES = 1 << 20
_SCANNERS = ("auto", "c", "python", "plain")
_SKIP_MODES = ("sequence", "sample")
_MAX_ID = 2**64
_MAX_DIM = 2**61
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PAIR = re.compile(r"([0-9]+):(.*)", re.DOTALL)
_SPACES = re.compile(r"[ \t]*")
_TOKEN = re.compile(r"[^ \t|]+")
# ASCII characters that ``str.split()`` treats as whitespace but CTF does not.
_ODD_SPACES = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")

PathArg = str | PathLike[str]


class CTFWarning(UserWarning):
    """A CTF stream the reader was not asked for, skipped (``skip_unknown=True``): warned once
    per stream name and pass, at its first occurrence (``path:line:column``)."""


@dataclass(frozen=True)
class Stream:
    """One stream of a CTF file: its name in the file, its dimension and its encoding.

    >>> Stream("features", 4)
    Stream(field='features', dim=4, sparse=False)
    >>> Stream("word", 10000, sparse=True).sparse
    True
    """

    field: str
    dim: int
    sparse: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.field, str)
            or not self.field
            or self.field.startswith("#")
            or any(c in self.field for c in " \t|\r\n")
            or not _encodable(self.field)
        ):
            raise ValueError(
                "field: expected a non-empty name without spaces, tabs, newlines or '|' that "
                f"does not start with '#', found {self.field!r}"
            )
        if (
            isinstance(self.dim, bool)
            or not isinstance(self.dim, int)
            or not 1 <= self.dim < _MAX_DIM
        ):
            raise ValueError(
                "dim: expected a positive integer below 2**61 (a row of dim float32 values must "
                f"fit in memory's address range), found {self.dim!r}"
            )
        if not isinstance(self.sparse, bool):
            raise ValueError(f"sparse: expected a bool, found {self.sparse!r}")


def _encodable(text: str) -> bool:
    """Whether ``text`` has bytes in a file (UTF-8, undecodable bytes as lone surrogates)."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _check_streams(streams: Mapping[str, Stream]) -> dict[str, Stream]:
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError(f"streams: expected a non-empty mapping name -> Stream, found {streams!r}")
    fields: dict[str, str] = {}
    for name, stream in streams.items():
        if not isinstance(stream, Stream):
            raise ValueError(f"streams[{name!r}]: expected a Stream, found {stream!r}")
        if stream.field in fields:
            raise ValueError(
                f"streams: {fields[stream.field]!r} and {name!r} both read field {stream.field!r}"
            )
        fields[stream.field] = name
    return dict(streams)


class _LineError(Exception):
    """A malformed line, with the sequence id read before the fault (-1: the id itself)."""

    def __init__(self, error: ReaderError, sid: int | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.sid = sid


@dataclass
class _Block:
    """The samples of a block of lines, cut into sequence pieces.

    ``values[k]`` is stream k's float32 [n_k, dim] array; ``starts[i, k]`` is the first row of
    piece i in it; piece 0 continues the open sequence when ``continues``; ``errors[i]`` marks a
    piece of a bad sequence. Reading stops after the pieces when ``fatal`` is set. ``notes``
    are errors that drop no sequence: dropped samples and rows, blank lines.
    """

    values: list[np.ndarray]
    starts: np.ndarray
    continues: bool
    errors: list[ReaderError | None]
    fatal: ReaderError | None
    notes: list[ReaderError] = dataclass_field(default_factory=list)  # drop no sequence


@dataclass
class _State:
    """Sequence grouping carried from block to block."""

    ids: bool | None = None  # None until the first line with a sample
    cur_text: str | None = None
    cur_id: int | None = None  # the open sequence's id (None: none, or its id was bad)
    seen: set[int] = dataclass_field(default_factory=set)
    warned: set[str] = dataclass_field(default_factory=set)  # unknown streams warned about


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (if it runs) for the block."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _to_float32(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


class CTFReader:
    """Iterate over the sequences of a CTF file, one example dict per sequence, in file order.

    Args:
        path: the CTF file (UTF-8).
        streams: name -> :class:`Stream`; the examples use these names as keys.
        skip_bad: ``False`` raises at the first malformed line. ``True`` or ``"sequence"``
            skips each sequence holding a malformed line; it leaves its first error in
            :attr:`errors`. ``"sample"`` drops only what is bad, as CNTK does: a malformed
            sample (one stream's values on one line; the rest of the line is kept), or the
            whole line when the fault is outside a sample (a bad or reused sequence id); a
            line left without samples is then a line without samples. Each dropped sample or
            line leaves its error in :attr:`errors`. With ``cntk_compatible``, ``True`` means
            ``"sample"``.
        skip_unknown: skip a stream of the file that is not in ``streams`` (CNTK's reader),
            with a :class:`CTFWarning` at its first occurrence, instead of raising.
        pad_dense: fill a dense sample with fewer than ``dim`` values with zeros (CNTK's
            "sparse suffix"), instead of raising; more than ``dim`` is still an error.
        blank_line_errors: a line without samples (blank, only comments, only an id, or only
            skipped streams) is an error, as in CNTK, instead of belonging to no sequence.
            With ``skip_bad`` it is recorded in :attr:`errors` and drops nothing.
        cntk_compatible: turn on ``skip_unknown``, ``pad_dense`` and ``blank_line_errors``,
            and make ``skip_bad=True`` drop samples (``"sample"``).
        fast: use a fast path where it applies; ``False`` is ``scanner="plain"``.
        scanner: which path reads each block first. ``"auto"``: the C scanner where the
            extension is built, else the Python fast path. ``"c"``: the C scanner (a
            ValueError if the extension is not built). ``"python"``: the Python fast path.
            ``"plain"``: only the plain path. A fast path gives a block it cannot vouch for
            to the plain path; every choice gives the same examples, values and errors.
        block_bytes: the size of each read, in bytes (``None``: 1 MiB); blocks hold whole
            lines, so a block may be longer. Results do not depend on it.

    Each pass reads the file again, block by block, and resets :attr:`errors`. The fast paths
    read only lines that none of the CNTK options concerns (they give every other block to the
    plain path), so every option gives the same results on every path.

    >>> import tempfile, os
    >>> from pathlib import Path
    >>> path = os.path.join(tempfile.mkdtemp(), "a.ctf")
    >>> _ = Path(path).write_text("0 |x 1 2 |y 1\\n0 |x 3 4\\n5 |x 5 6 |y 0\\n6 |x oops |y 1\\n")
    >>> reader = CTFReader(path, {"x": Stream("x", 2), "y": Stream("y", 1)}, skip_bad=True)
    >>> [ex["x"].tolist() for ex in reader]
    [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]]
    >>> reader.skipped, str(reader.errors[0]).split(path)[1]
    (1, ":4:6: stream 'x': expected a number, found 'oops'")

    CNTK's reading: the short dense sample ``|x 7`` is padded, the bad sample dropped alone.

    >>> _ = Path(path).write_text("0 |x 7 |y 1\\n0 |x 1 2 |y oops\\n")
    >>> reader = CTFReader(path, reader.streams, skip_bad=True, cntk_compatible=True)
    >>> [{k: v.tolist() for k, v in ex.items()} for ex in reader]
    [{'x': [[7.0, 0.0], [1.0, 2.0]], 'y': [[1.0]]}]
    >>> str(reader.errors[0]).split(path)[1]
    ":2:13: stream 'y': expected a number, found 'oops'"
    """

    def __init__(
        self,
        path: PathArg,
        streams: Mapping[str, Stream],
        *,
        skip_bad: bool | str = False,
        fast: bool = True,
        scanner: str = "auto",
        block_bytes: int | None = None,
        skip_unknown: bool = False,
        pad_dense: bool = False,
        blank_line_errors: bool = False,
        cntk_compatible: bool = False,
    ) -> None:
        self.path = Path(path)
        self.streams = _check_streams(streams)
        for name, flag in (
            ("skip_unknown", skip_unknown),
            ("pad_dense", pad_dense),
            ("blank_line_errors", blank_line_errors),
            ("cntk_compatible", cntk_compatible),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: expected a bool, found {flag!r}")
        self.skip_bad = skip_bad
        self.skip_mode = _check_skip_bad(skip_bad, cntk_compatible)
        self.skip_unknown = skip_unknown or cntk_compatible
        self.pad_dense = pad_dense or cntk_compatible
        self.blank_line_errors = blank_line_errors or cntk_compatible
        self.fast = fast
        self.scanner = _check_scanner(fast, scanner)
        self.block_bytes = _check_block_bytes(block_bytes)
        self.errors: list[ReaderError] = []
        self._names = list(self.streams)
        self._specs = [self.streams[n] for n in self._names]
        self._index = {s.field: k for k, s in enumerate(self._specs)}
        self._native_specs = tuple(
            (s.field.encode("utf-8", "surrogateescape"), s.dim, s.sparse) for s in self._specs
        )

    @property
    def skipped(self) -> int:
        """The number of errors of the current (or last) pass: sequences skipped, or, with
        ``skip_bad="sample"``, samples and lines dropped; and blank lines with
        ``blank_line_errors``."""
        return len(self.errors)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        self.errors = []
        return self._examples(self.errors)

    # -- reading blocks ------------------------------------------------------------------

    def _examples(self, errors: list[ReaderError]) -> Iterator[dict[str, Tensor]]:
        """The examples in file order; skipped sequences' errors go to ``errors``."""
        return itertools.chain.from_iterable(self._batches(errors))

    def _batches(self, errors: list[ReaderError]) -> Iterator[list[dict[str, Tensor]]]:
        """The examples finished in each block, block by block."""
        state = _State()
        opened: list[tuple[Tensor, ...]] | None = None  # the pieces of the open sequence
        open_error: ReaderError | None = None
        names = self._names
        lineno = 0
        for data in self._blocks():
            block, lines = self._read_block(data, lineno, state)
            lineno += lines
            errors += block.notes
            # Many small tensors and dicts are made here; none can form a reference cycle, so
            # the cyclic collector, which would otherwise rescan them again and again, waits.
            with _collector_paused():
                counts = np.diff(block.starts, axis=0, append=[[len(v) for v in block.values]])
                pieces = list(
                    zip(
                        *(
                            torch.from_numpy(v).split(counts[:, k].tolist())
                            for k, v in enumerate(block.values)
                        ),
                        strict=True,
                    )
                )
                done: list[dict[str, Tensor]] = []
                first = 0
                if block.continues:
                    if opened is not None:
                        opened.append(pieces[0])
                        open_error = open_error or block.errors[0]
                    first = 1
                if first < len(pieces):
                    if opened is not None:
                        self._close(opened, open_error, done, errors)
                    last = len(pieces) - 1
                    if not any(block.errors[first:last]):
                        done += [
                            dict(zip(names, piece, strict=True)) for piece in pieces[first:last]
                        ]
                    else:
                        for i in range(first, last):
                            self._close([pieces[i]], block.errors[i], done, errors)
                    opened, open_error = [pieces[last]], block.errors[last]
            yield done
            if block.fatal is not None:
                raise block.fatal
        if opened is not None:
            done = []
            self._close(opened, open_error, done, errors)
            yield done

    def _read_block(self, data: bytes, lineno: int, state: _State) -> tuple[_Block, int]:
        """A block's samples, by the chosen path if it can vouch for them, and its lines."""
        if self.scanner == "c":
            native = self._native_block(data, state)
            if native is not None:
                return native
        text = data.decode("utf-8", "surrogateescape")
        block = None
        if self.scanner == "python":
            block = self._fast_block(text, lineno, state)
        if block is None:
            block = self._plain_block(text, lineno, state)
        return block, text.count("\n")

    def _close(
        self,
        pieces: list[tuple[Tensor, ...]],
        error: ReaderError | None,
        done: list[dict[str, Tensor]],
        errors: list[ReaderError],
    ) -> None:
        """Finish a sequence: its example goes to ``done``, or its error to ``errors``."""
        if error is not None:
            errors.append(error)
        elif len(pieces) == 1:
            done.append(dict(zip(self._names, pieces[0], strict=True)))
        else:
            done.append(
                {name: torch.cat([p[k] for p in pieces]) for k, name in enumerate(self._names)}
            )

    def _blocks(self) -> Iterator[bytes]:
        """Blocks of whole lines (the last line may lack its newline; one is added)."""
        parts: list[bytes] = []  # the start of a line that no read has finished yet
        with open(self.path, "rb") as f:
            while data := f.read(self.block_bytes):
                cut = data.rfind(b"\n") + 1
                if not cut:
                    parts.append(data)
                    continue
                parts.append(data[:cut])
                yield b"".join(parts)
                parts = [data[cut:]] if cut < len(data) else []
        if parts:
            yield b"".join(parts) + b"\n"

    # -- the native fast path ------------------------------------------------------------

    def _native_block(self, data: bytes, state: _State) -> tuple[_Block, int] | None:
        """Read a block with the C scanner (the samples and the number of lines), or return
        None when the plain path must read it."""
        assert _ctfscan is not None
        ids = -1 if state.ids is None else int(state.ids)
        scanned = _ctfscan.scan(data, self._native_specs, ids, state.cur_id)
        if scanned is None:
            return None
        raw, starts, continues, new_state, cur_id, raw_ids, lines = scanned
        new_ids = np.frombuffer(raw_ids, dtype=np.uint64)
        if len(new_ids) and (
            len(np.unique(new_ids)) < len(new_ids) or not state.seen.isdisjoint(new_ids.tolist())
        ):
            return None  # an id seen before: the plain path raises or skips
        values: list[np.ndarray] = []
        for item, spec in zip(raw, self._specs, strict=True):
            if isinstance(item, tuple):
                rows = _sparse_rows(
                    item[0],
                    spec.dim,
                    np.frombuffer(item[1], dtype=np.int64),
                    np.frombuffer(item[2], dtype=np.int64),
                    np.frombuffer(item[3], dtype=np.float32),
                )
                if rows is None:
                    return None
                values.append(rows)
            else:
                values.append(np.frombuffer(item, dtype=np.float32).reshape(-1, spec.dim))
        state.ids, state.cur_id, state.cur_text = bool(new_state), cur_id, None
        state.seen.update(new_ids.tolist())
        table = np.frombuffer(starts, dtype=np.int64).reshape(-1, len(self._specs))
        return _Block(values, table, continues, [None] * len(table), None), lines

    # -- the fast path -------------------------------------------------------------------

    def _fast_block(self, text: str, lineno: int, state: _State) -> _Block | None:
        """Read a block of lines, or return None when the plain path must read it."""
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        if not text.isascii() or any(c in text for c in _ODD_SPACES):
            return None
        lines = text.split("\n")
        lines.pop()  # the text ends with a newline
        specs = self._specs
        index = self._index
        nstreams = len(specs)
        widths = [0 if s.sparse else s.dim + 1 for s in specs]
        dest: list[list] = [[] for _ in specs]
        starts: list[list[int]] = [[0] * nstreams]
        continues = True
        ids, cur_text, cur_id = state.ids, state.cur_text, state.cur_id
        seen = state.seen
        new_ids: set[int] = set()
        first = True
        for line in lines:
            fields = line.split("|")
            if len(fields) == 1:
                return None
            head = fields[0].strip()
            if ids is None:
                ids = bool(head)
            new = False
            if ids:
                if head and head != cur_text:
                    value = _id_value(head)
                    if value is None:
                        return None
                    if value != cur_id:
                        if value in seen or value in new_ids:
                            return None
                        new_ids.add(value)
                        cur_id = value
                        new = True
                    cur_text = head
            else:
                if head and _id_value(head) is None:
                    return None
                new = True
            if new:
                if first:
                    continues = False
                else:
                    starts.append([len(d) for d in dest])
            first = False
            mask = 0
            for field in fields[1:]:
                if not field or field[0] in " \t":
                    return None
                if field[0] == "#":
                    continue
                tokens = field.split()
                k = index.get(tokens[0])
                if k is None or mask >> k & 1:
                    return None
                mask |= 1 << k
                del tokens[0]
                if widths[k]:
                    if len(tokens) + 1 != widths[k]:
                        return None
                    dest[k] += tokens
                else:
                    dest[k].append(tokens)
            if not mask:
                return None
        values: list[np.ndarray] = []
        underscores = "_" in text
        for k, spec in enumerate(specs):
            if spec.sparse:
                array = self._fast_sparse(dest[k], spec, underscores)
            else:
                array = _fast_dense(dest[k], spec, underscores)
            if array is None:
                return None
            values.append(array)
        state.ids, state.cur_text, state.cur_id = ids, cur_text, cur_id
        seen |= new_ids
        table = np.array(starts, dtype=np.int64).reshape(-1, nstreams)
        for k, spec in enumerate(specs):
            if not spec.sparse:
                table[:, k] //= spec.dim
        return _Block(values, table, continues, [None] * len(table), None)

    @staticmethod
    def _fast_sparse(
        samples: list[list[str]], spec: Stream, underscores: bool
    ) -> np.ndarray | None:
        rows = np.zeros((len(samples), spec.dim), dtype=np.float32)
        tokens = [t for s in samples for t in s]
        if not tokens:
            return rows
        indices: list[str] = []
        numbers: list[str] = []
        for token in tokens:
            i, colon, v = token.partition(":")
            i = i.lstrip("0") or i[:1]  # leading zeros, as in ids: 007 is 7
            if not colon or not i.isdigit() or len(i) > 18:
                return None
            indices.append(i)
            numbers.append(v)
        parsed = _fast_numbers(numbers, underscores)
        if parsed is None:
            return None
        cols = np.array(indices, dtype=np.int64)
        if cols.max() >= spec.dim:
            return None
        owner = np.repeat(np.arange(len(samples)), [len(s) for s in samples])
        return _sparse_rows(len(samples), spec.dim, owner, cols, _to_float32(parsed))

    # -- the plain path ------------------------------------------------------------------

    def _plain_block(self, text: str, lineno: int, state: _State) -> _Block:
        lines = text.split("\n")
        lines.pop()
        nstreams = len(self._specs)
        rows: list[list[np.ndarray]] = [[] for _ in self._specs]
        starts: list[list[int]] = [[0] * nstreams]
        errors: list[ReaderError | None] = [None]
        continues = True
        first = True
        seen = state.seen
        fatal: ReaderError | None = None
        notes: list[ReaderError] = []
        by_sample = self.skip_mode == "sample"
        for number, line in enumerate(lines, lineno + 1):
            if line.endswith("\r"):
                line = line[:-1]
            error: ReaderError | None = None
            samples: list[tuple[int, np.ndarray]] = []
            dropped: list[ReaderError] | None = [] if by_sample else None
            unknown: list[tuple[str, int]] = []
            try:
                sid, samples = self._parse_line(line, number, dropped, unknown)
            except _LineError as bad:
                sid, error = bad.sid, bad.error
            self._warn_unknown(unknown, number, state)
            if dropped:
                notes += dropped
            if error is not None and by_sample:  # a fault outside a sample: drop the line
                notes.append(error)
                continue
            if not samples and error is None:
                if self.blank_line_errors and not dropped:
                    blank = self._blank_error(line, number)
                    if self.skip_mode is None:
                        fatal = blank
                        break
                    notes.append(blank)
                continue
            if state.ids is None:
                state.ids = sid is not None
            new = True
            if state.ids:
                if sid is None or sid == state.cur_id:
                    new = False
                elif sid != -1 and sid in seen:
                    error = ReaderError(
                        f"sequence id {sid} was used by an earlier sequence; an id may repeat "
                        "only on consecutive lines",
                        path=self.path,
                        line=number,
                        column=len(line) - len(line.lstrip(" \t")) + 1,
                    )
                    if by_sample:  # the line is dropped; the open sequence stays open
                        notes.append(error)
                        continue
                elif sid != -1:
                    seen.add(sid)
                if new:  # after a bad id (-1) no id continues the sequence
                    state.cur_id = None if sid == -1 else sid
                state.cur_text = None
            if new:
                if first:
                    continues = False
                else:
                    starts.append([len(r) for r in rows])
                    errors.append(None)
            first = False
            if error is not None:
                errors[-1] = errors[-1] or error
                if self.skip_mode is None:
                    fatal = error
                    break
            for k, row in samples:
                rows[k].append(row)
        values = [
            np.stack(r) if r else np.empty((0, s.dim), dtype=np.float32)
            for r, s in zip(rows, self._specs, strict=True)
        ]
        table = np.array(starts, dtype=np.int64).reshape(-1, nstreams)
        return _Block(values, table, continues, errors, fatal, notes)

    def _warn_unknown(self, unknown: list[tuple[str, int]], number: int, state: _State) -> None:
        """Warn once per pass about each stream skipped by ``skip_unknown``."""
        for field, column in unknown:
            if field not in state.warned:
                state.warned.add(field)
                known = ", ".join(repr(s.field) for s in self._specs)
                warnings.warn(
                    f"{self.path}:{number}:{column}: skipped the stream {field!r}, which is not "
                    f"one of the streams read ({known}; skip_unknown=True); its other "
                    "occurrences are skipped without a warning",
                    CTFWarning,
                    stacklevel=2,
                )

    def _blank_error(self, line: str, number: int) -> ReaderError:
        text = line.strip(" \t")
        found = f"none in {text!r}" if text else "a blank line"
        return ReaderError(
            f"expected at least one sample on every line (blank_line_errors=True), found {found}",
            path=self.path,
            line=number,
            column=1,
        )

    def _error(self, message: str, line: int, column: int, stream: str | None) -> ReaderError:
        return ReaderError(message, path=self.path, line=line, column=column, stream=stream)

    def _parse_line(
        self,
        line: str,
        number: int,
        dropped: list[ReaderError] | None = None,
        unknown: list[tuple[str, int]] | None = None,
    ) -> tuple[int | None, list[tuple[int, np.ndarray]]]:
        """One line's sequence id (None when absent) and samples; raises _LineError.

        With a ``dropped`` list, a malformed sample (or stray text) is dropped instead: its
        error goes to ``dropped`` and reading goes on at the next ``|``. Streams skipped by
        ``skip_unknown`` go to ``unknown`` as (name, column).
        """
        end = len(line)
        pos = _skip_spaces(line, 0)
        sid: int | None = None
        if pos < end and line[pos] != "|":
            token = _TOKEN.match(line, pos)
            assert token is not None  # a non-space, non-'|' character starts a token
            text = token.group()
            sid = _id_value(text)
            if sid is None:
                message = "expected a sequence id (an unsigned integer below 2**64) or '|'"
                error = self._error(f"{message}, found {text!r}", number, pos + 1, None)
                raise _LineError(error, -1)
            pos = token.end()
        samples: list[tuple[int, np.ndarray]] = []
        first_at: dict[int, int] = {}
        while True:
            pos = _skip_spaces(line, pos)
            if pos >= end:
                return sid, samples
            start = pos
            try:
                pos, sample = self._parse_sample(line, pos, number, first_at, unknown)
            except ReaderError as error:
                if dropped is None:
                    raise _LineError(error, sid) from None
                dropped.append(error)
                bar = line.find("|", start + 1)
                pos = end if bar == -1 else bar
                continue
            if sample is not None:
                samples.append(sample)

    def _parse_sample(
        self,
        line: str,
        pos: int,
        number: int,
        first_at: dict[int, int],
        unknown: list[tuple[str, int]] | None,
    ) -> tuple[int, tuple[int, np.ndarray] | None]:
        """The item of ``line`` at ``pos`` (a sample, a comment or a skipped stream): where the
        next one starts, and the sample (None for the others); raises ReaderError."""
        end = len(line)
        if line[pos] != "|":
            token = _TOKEN.match(line, pos)
            assert token is not None
            raise self._error(
                f"expected '|' before a stream name, found {token.group()!r}",
                number,
                pos + 1,
                None,
            )
        bar = pos
        pos += 1
        if line.startswith("#", pos):
            return _comment_end(line, pos + 1), None
        token = _TOKEN.match(line, pos)
        if token is None:
            found = "end of line" if pos >= end else repr(line[pos])
            raise self._error(
                f"expected a stream name after '|', found {found}", number, pos + 1, None
            )
        field = token.group()
        k = self._index.get(field)
        if k is None:
            if self.skip_unknown:
                if unknown is not None:
                    unknown.append((field, pos + 1))
                following = line.find("|", token.end())
                return (end if following == -1 else following), None
            known = ", ".join(repr(s.field) for s in self._specs)
            raise self._error(
                f"unknown stream {field!r} (expected one of {known})",
                number,
                pos + 1,
                field,
            )
        if k in first_at:
            raise self._error(
                f"stream appears twice on one line (first at column {first_at[k]})",
                number,
                bar + 1,
                field,
            )
        first_at[k] = bar + 1
        pos = token.end()
        values: list[tuple[int, str]] = []
        while True:
            pos = _skip_spaces(line, pos)
            if pos >= end or line[pos] == "|":
                break
            token = _TOKEN.match(line, pos)
            assert token is not None
            values.append((pos + 1, token.group()))
            pos = token.end()
        spec = self._specs[k]
        if spec.sparse:
            row = self._plain_sparse(values, spec, number)
        else:
            row = self._plain_dense(values, spec, number, bar + 1)
        return pos, (k, row)

    def _plain_dense(
        self, values: list[tuple[int, str]], spec: Stream, number: int, column: int
    ) -> np.ndarray:
        for col, text in values:
            if not _NUMBER.fullmatch(text):
                raise self._error(f"expected a number, found {text!r}", number, col, spec.field)
        if len(values) > spec.dim or (len(values) < spec.dim and not self.pad_dense):
            raise self._error(
                f"expected {spec.dim} values, found {len(values)}", number, column, spec.field
            )
        row = np.zeros(spec.dim, dtype=np.float64)
        row[: len(values)] = [float(t) for _, t in values]  # pad_dense: zeros after them
        return _to_float32(row)

    def _plain_sparse(self, values: list[tuple[int, str]], spec: Stream, number: int) -> np.ndarray:
        row = np.zeros(spec.dim, dtype=np.float64)
        used: set[int] = set()
        for col, text in values:
            pair = _PAIR.fullmatch(text)
            if pair is None or not _NUMBER.fullmatch(pair.group(2)):
                raise self._error(f"expected index:value, found {text!r}", number, col, spec.field)
            digits = pair.group(1).lstrip("0") or "0"  # leading zeros, as in ids: 007 is 7
            if len(digits) > len(str(spec.dim)) or int(digits) >= spec.dim:
                raise self._error(
                    f"sparse index must be below dim {spec.dim}, found {text!r}",
                    number,
                    col,
                    spec.field,
                )
            i = int(digits)
            if i in used:
                raise self._error(
                    f"sparse index {i} appears twice in one sample, found {text!r}",
                    number,
                    col,
                    spec.field,
                )
            used.add(i)
            row[i] = float(pair.group(2))
        return _to_float32(row)


def _id_value(text: str) -> int | None:
    """The sequence id that ``text`` spells (decimal digits, leading zeros allowed, below
    2**64), or None."""
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit() and len(digits) <= 20):
        return None
    value = int(digits)
    return value if value < _MAX_ID else None


def _sparse_rows(
    count: int, dim: int, owner: np.ndarray, cols: np.ndarray, values: np.ndarray
) -> np.ndarray | None:
    """Dense float32 [count, dim] rows from sparse pairs, or None when a row repeats an index."""
    rows = np.zeros((count, dim), dtype=np.float32)
    order = np.lexsort((cols, owner))
    if np.any((np.diff(owner[order]) == 0) & (np.diff(cols[order]) == 0)):
        return None
    rows[owner, cols] = values
    return rows


def _fast_numbers(tokens: list[str], underscores: bool) -> np.ndarray | None:
    """float64 values of number tokens, or None when one is not a CTF number.

    ``underscores`` says whether the block holds a ``_`` anywhere (else no token can).
    """
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError:
        return None
    # float() also reads "1_0", "nan" and "inf"; the grammar has none of them.
    if underscores and "_" in "".join(tokens):
        return None
    odd = np.flatnonzero(~np.isfinite(values))
    if any(not _NUMBER.fullmatch(tokens[i]) for i in odd.tolist()):
        return None
    return values


def _fast_dense(tokens: list[str], spec: Stream, underscores: bool) -> np.ndarray | None:
    values = _fast_numbers(tokens, underscores)
    if values is None:
        return None
    return _to_float32(values).reshape(-1, spec.dim)


def _skip_spaces(line: str, pos: int) -> int:
    spaces = _SPACES.match(line, pos)
    assert spaces is not None  # the pattern matches the empty string
    return spaces.end()


def _comment_end(line: str, pos: int) -> int:
    """Where a comment whose body starts at ``pos`` ends: the next ``|`` not followed by ``#``."""
    bar = line.find("|", pos)
    while bar != -1 and line.startswith("#", bar + 1):
        bar = line.find("|", bar + 2)
    return len(line) if bar == -1 else bar


def _check_scanner(fast: bool, scanner: str) -> str:
    """The path that reads blocks first: "c", "python" or "plain"."""
    if not isinstance(fast, bool):
        raise ValueError(f"fast: expected a bool, found {fast!r}")
    if scanner not in _SCANNERS:
        raise ValueError(f"scanner: expected one of {', '.join(_SCANNERS)}, found {scanner!r}")
    if not fast and scanner in ("c", "python"):
        raise ValueError(
            f"scanner: fast=False reads with the plain path only, found scanner={scanner!r}"
        )
    if scanner == "c" and _ctfscan is None:
        raise ValueError(
            "scanner: 'c' needs the extension rnnkit.data._ctfscan, which is not built "
            "(reinstall with a C compiler, or pass scanner='auto', 'python' or 'plain')"
        )
    if not fast or scanner == "plain":
        return "plain"
    if scanner == "auto":
        return "python" if _ctfscan is None else "c"
    return scanner


def _check_block_bytes(block_bytes: int | None) -> int:
    if block_bytes is None:
        return _BLOCK_BYTES
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
        raise ValueError(f"block_bytes: expected an integer >= 1 or None, found {block_bytes!r}")
    return block_bytes


def _check_skip_bad(skip_bad: object, cntk_compatible: bool) -> str | None:
    """What ``skip_bad`` skips: None (nothing: raise), "sequence" or "sample"."""
    if isinstance(skip_bad, bool):
        if not skip_bad:
            return None
        return "sample" if cntk_compatible else "sequence"
    if skip_bad not in _SKIP_MODES:
        raise ValueError(f"skip_bad: expected a bool, 'sequence' or 'sample', found {skip_bad!r}")
    return str(skip_bad)


def _check_report(skip_bad: bool | str, errors: list[ReaderError] | None, who: str) -> None:
    if skip_bad and errors is None:
        raise ValueError(
            f"{who}: skip_bad={skip_bad!r} needs an errors list to receive the errors of what "
            "it skips, found errors=None (nothing is dropped silently)"
        )


def iter_ctf(
    path: PathArg,
    streams: Mapping[str, Stream],
    *,
    skip_bad: bool | str = False,
    errors: list[ReaderError] | None = None,
    fast: bool = True,
    scanner: str = "auto",
    block_bytes: int | None = None,
    skip_unknown: bool = False,
    pad_dense: bool = False,
    blank_line_errors: bool = False,
    cntk_compatible: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Stream the sequences of a CTF file one example at a time (the file may exceed memory).

    ``skip_bad=True`` skips sequences holding a malformed line and appends their first errors to
    ``errors`` (required then); ``skip_bad="sample"`` drops only the malformed samples or lines.
    Without it the first malformed line raises ``ReaderError``. ``skip_unknown``, ``pad_dense``,
    ``blank_line_errors`` and ``cntk_compatible`` are CNTK's reading (see :class:`CTFReader`).
    ``fast``, ``scanner`` and ``block_bytes`` choose how blocks are read (see :class:`CTFReader`;
    the results are the same). Examples are dicts ``name -> float32 [T_k, dim]``; see the module
    docstring for the grammar.

    >>> import tempfile, os
    >>> from pathlib import Path
    >>> path = os.path.join(tempfile.mkdtemp(), "a.ctf")
    >>> _ = Path(path).write_text("|x 1 |w 2:5\\n|x 2 |# a comment, '|#' is an escaped pipe\\n")
    >>> streams = {"x": Stream("x", 1), "w": Stream("w", 3, sparse=True)}
    >>> [{k: v.tolist() for k, v in ex.items()} for ex in iter_ctf(path, streams)]
    [{'x': [[1.0]], 'w': [[0.0, 0.0, 5.0]]}, {'x': [[2.0]], 'w': []}]
    """
    _check_report(skip_bad, errors, "iter_ctf")
    reader = CTFReader(
        path,
        streams,
        skip_bad=skip_bad,
        fast=fast,
        scanner=scanner,
        block_bytes=block_bytes,
        skip_unknown=skip_unknown,
        pad_dense=pad_dense,
        blank_line_errors=blank_line_errors,
        cntk_compatible=cntk_compatible,
    )
    return reader._examples(errors if errors is not None else [])


def read_ctf(
    path: PathArg,
    streams: Mapping[str, Stream],
    *,
    skip_bad: bool | str = False,
    errors: list[ReaderError] | None = None,
    fast: bool = True,
    scanner: str = "auto",
    block_bytes: int | None = None,
    skip_unknown: bool = False,
    pad_dense: bool = False,
    blank_line_errors: bool = False,
    cntk_compatible: bool = False,
) -> list[dict[str, Tensor]]:
    """All sequences of a CTF file as a list of examples ``name -> float32 [T_k, dim]``.

    Arguments as for :func:`iter_ctf`.

    >>> import tempfile, os
    >>> from pathlib import Path
    >>> path = os.path.join(tempfile.mkdtemp(), "a.ctf")
    >>> _ = Path(path).write_text("3 |y 1 |x 0.5\\n3 |x 1.5\\n9 |x 2e1 |y 0\\n")
    >>> data = read_ctf(path, {"x": Stream("x", 1), "y": Stream("y", 1)})
    >>> [(ex["x"].squeeze(1).tolist(), ex["y"].squeeze(1).tolist()) for ex in data]
    [([0.5, 1.5], [1.0]), ([20.0], [0.0])]
    """
    _check_report(skip_bad, errors, "read_ctf")
    with _collector_paused():  # the list only grows: nothing for the cyclic collector to find
        examples = iter_ctf(
            path,
            streams,
            skip_bad=skip_bad,
            errors=errors,
            fast=fast,
            scanner=scanner,
            block_bytes=block_bytes,
            skip_unknown=skip_unknown,
            pad_dense=pad_dense,
            blank_line_errors=blank_line_errors,
            cntk_compatible=cntk_compatible,
        )
        return list(examples)


def _format_row(row: np.ndarray) -> str:
    return " ".join(map(str, row))


def write_ctf(
    path: PathArg,
    examples: Iterable[Mapping[str, Tensor]],
    streams: Mapping[str, Stream],
    *,
    ids: bool = True,
) -> int:
    """Write examples ``name -> [T_k, dim]`` as CTF that :func:`read_ctf` reads back equal.

    Sequence i is written on ``max_k T_k`` lines with id i (``ids=True``); line t carries the
    t-th sample of each stream that has one. Without ids every line is its own sequence, so each
    example must fit on one line. Values are written as float32 in their shortest exact decimal
    form; sparse streams as ``index:value`` for the nonzero entries. Returns the number of
    sequences written.

    >>> import tempfile, os, torch
    >>> from pathlib import Path
    >>> path = os.path.join(tempfile.mkdtemp(), "a.ctf")
    >>> streams = {"x": Stream("x", 2), "w": Stream("w", 4, sparse=True)}
    >>> ex = {"x": torch.tensor([[0.1, 2.0], [3.0, -4.5]]), "w": torch.tensor([[0, 0, 1.0, 0]])}
    >>> write_ctf(path, [ex], streams)
    1
    >>> print(Path(path).read_text(), end="")
    0 |x 0.1 2.0 |w 2:1.0
    0 |x 3.0 -4.5
    """
    specs = _check_streams(streams)
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for count, example in enumerate(examples, 1):
            if set(example) != set(specs):
                raise ValueError(
                    f"examples[{count - 1}]: expected the streams {sorted(specs)}, "
                    f"found {sorted(example)}"
                )
            arrays: list[np.ndarray] = []
            for name, spec in specs.items():
                value = example[name]
                array = np.asarray(
                    value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float32
                )
                if array.ndim != 2 or array.shape[1] != spec.dim:
                    raise ValueError(
                        f"examples[{count - 1}][{name!r}]: expected shape [T, {spec.dim}], "
                        f"found {list(array.shape)}"
                    )
                if not np.isfinite(array).all():
                    raise ValueError(
                        f"examples[{count - 1}][{name!r}]: CTF holds finite numbers only, "
                        "found nan or inf"
                    )
                arrays.append(array)
            steps = max(len(a) for a in arrays)
            if steps == 0:
                raise ValueError(
                    f"examples[{count - 1}]: has no sample in any stream; CTF cannot hold it"
                )
            if not ids and steps > 1:
                raise ValueError(
                    f"examples[{count - 1}]: ids=False writes one line per sequence, "
                    f"found {steps} steps"
                )
            prefix = f"{count - 1} " if ids else ""
            for t in range(steps):
                parts = []
                for array, spec in zip(arrays, specs.values(), strict=True):
                    if t >= len(array):
                        continue
                    row = array[t]
                    if spec.sparse:
                        nz = np.flatnonzero(row)
                        pairs = "".join(f" {i}:{row[i]!s}" for i in nz.tolist())
                        parts.append(f"|{spec.field}{pairs}")
                    else:
                        parts.append(f"|{spec.field} {_format_row(row)}")
                f.write(prefix + " ".join(parts) + "\n")
    return count
