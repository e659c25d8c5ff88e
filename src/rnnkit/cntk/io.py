"""``cntk.io``: CNTK's reader names over rnnkit's CTF reader and MinibatchSource.

``MinibatchSource(CTFDeserializer(path, StreamDefs(x=StreamDef(field='x', shape=1))))``
reads the file with :class:`rnnkit.data.ctf.CTFReader` and forms minibatches with
:class:`rnnkit.data.minibatch.MinibatchSource` under CNTK's rules (``cntk_compatible=True``:
minibatches run on across sweeps, ``max_samples`` cuts exactly, sweep ``k`` is shuffled
from ``seed + k``, each stream's samples count on their own, a size per call). Sparse
streams are held dense (the same values).

>>> import os, tempfile
>>> from pathlib import Path
>>> path = os.path.join(tempfile.mkdtemp(), "a.ctf")
>>> _ = Path(path).write_text("0 |x 1 |y 0\\n0 |x 2\\n1 |x 3 |y 1\\n2 |x 4 |y 0\\n")
>>> source = MinibatchSource(CTFDeserializer(path, StreamDefs(
...     x=StreamDef(field="x", shape=1), y=StreamDef(field="y", shape=1))),
...     randomize=False, max_sweeps=1)
>>> mb = source.next_minibatch(3)
>>> [(mb[s].num_sequences, mb[s].num_samples) for s in (source.streams.x, source.streams.y)]
[(2, 3), (2, 2)]
>>> mb[source.streams.x].asarray()
[array([[1.],
       [2.]], dtype=float32), array([[3.]], dtype=float32)]
>>> [source.next_minibatch(3)[source.streams.y].num_samples, source.next_minibatch(3)]
[1, {}]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from torch import Tensor

from rnnkit.data import ctf
from rnnkit.data import minibatch as rnnkit_minibatch
from rnnkit.sequences import SequenceBatch

__all__ = [
    "FULL_DATA_SWEEP",
    "INFINITELY_REPEAT",
    "CTFDeserializer",
    "MinibatchData",
    "MinibatchSource",
    "StreamDef",
    "StreamDefs",
    "StreamInformation",
]

INFINITELY_REPEAT = sys.maxsize  # CNTK's "no limit" for max_samples and max_sweeps
FULL_DATA_SWEEP = sys.maxsize - 2  # CNTK's "one whole sweep" epoch size


@dataclass(frozen=True)
class StreamDef:
    """One stream of a deserializer: its ``field`` in the file, ``shape`` and encoding.

    CNTK's image and speech options (``transforms``, ``context``, ``scp``, ``mlf``,
    ``broadcast``) do not apply to CTF files and must stay None.
    """

    field: str | None = None
    shape: int | None = None
    is_sparse: bool = False
    transforms: Any = None
    context: Any = None
    scp: Any = None
    mlf: Any = None
    broadcast: Any = None
    defines_mb_size: bool = False
    max_sequence_length: int = 65535

    def __post_init__(self) -> None:
        for name in ("transforms", "context", "scp", "mlf", "broadcast"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name}: expected None for a CTF stream, found {getattr(self, name)!r}"
                )
        if not isinstance(self.shape, int) or isinstance(self.shape, bool) or self.shape < 1:
            raise ValueError(
                f"shape: expected the stream's dimension (a positive int), found {self.shape!r}"
            )


class StreamDefs(dict[str, StreamDef]):
    """``StreamDefs(name=StreamDef(...), ...)``: the streams of a deserializer by name."""

    def __init__(self, **streams: StreamDef) -> None:
        for name, stream in streams.items():
            if not isinstance(stream, StreamDef):
                raise TypeError(f"{name}: expected a StreamDef, found {type(stream).__name__}")
        super().__init__(streams)


class CTFDeserializer:
    """A CTF file and the streams to read from it (read with rnnkit's :class:`CTFReader`).

    Args:
        filename: the CTF file.
        streams: a :class:`StreamDefs`; a stream's ``field`` defaults to its name.
    """

    def __init__(self, filename: str | PathLike[str], streams: Mapping[str, StreamDef]) -> None:
        if not isinstance(streams, Mapping) or not streams:
            raise ValueError(
                f"streams: expected StreamDefs(name=StreamDef(...), ...), found {streams!r}"
            )
        self.filename = filename
        self.streams = dict(streams)
        self.specs = {
            name: ctf.Stream(s.field or name, int(s.shape or 0), sparse=s.is_sparse)
            for name, s in self.streams.items()
        }

    def read(self) -> list[dict[str, Tensor]]:
        """Every sequence of the file, in file order (CNTK's rules where the reader has them)."""
        return list(ctf.CTFReader(self.filename, self.specs, cntk_compatible=True))


@dataclass(frozen=True)
class StreamInformation:
    """A stream of a :class:`MinibatchSource`: its name, shape and encoding (a key of a
    minibatch)."""

    name: str
    shape: tuple[int, ...]
    is_sparse: bool
    defines_mb_size: bool = False


class _Streams:
    """``source.streams.name``: the sources' StreamInformation by attribute or key."""

    def __init__(self, infos: Mapping[str, StreamInformation]) -> None:
        self._infos = dict(infos)

    def __getattr__(self, name: str) -> StreamInformation:
        infos = self.__dict__.get("_infos", {})
        if name not in infos:
            raise AttributeError(f"no stream {name!r}; the streams are {sorted(infos)}")
        return infos[name]

    def __getitem__(self, name: str) -> StreamInformation:
        return self.__getattr__(name)

    def keys(self) -> list[str]:
        return list(self._infos)

    def values(self) -> list[StreamInformation]:
        return list(self._infos.values())

    def __iter__(self) -> Any:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)


@dataclass(frozen=True)
class MinibatchData:
    """One stream of a minibatch: ``value`` (a SequenceBatch, or a tensor ``[B, *shape]``
    for a stream with one sample per sequence), its samples and sequences."""

    value: SequenceBatch | Tensor
    num_samples: int
    num_sequences: int
    end_of_sweep: bool
    is_sparse: bool

    @property
    def data(self) -> SequenceBatch | Tensor:
        return self.value

    @property
    def shape(self) -> tuple[int, ...]:
        v = self.value
        return tuple(v.feature_shape) if isinstance(v, SequenceBatch) else tuple(v.shape[1:])

    def asarray(self) -> Any:
        """NumPy: a list of ``[T_i, *shape]`` arrays, or ``[B, *shape]``."""
        from rnnkit.cntk.graph import to_numpy

        return to_numpy(self.value)


class MinibatchSource:
    """CNTK's ``MinibatchSource(deserializers, max_samples=INFINITELY_REPEAT,
    max_sweeps=INFINITELY_REPEAT, randomization_seed=0, randomize=True)`` over rnnkit's
    :class:`~rnnkit.data.minibatch.MinibatchSource` (``cntk_compatible=True``).

    One deserializer only (CNTK merges several by sequence id). The randomisation window is
    the whole data (CNTK shuffles chunks within a window): ``randomization_window_*`` are
    accepted and do not change the order, which is rnnkit's shuffle of each sweep.
    """

    def __init__(
        self,
        deserializers: CTFDeserializer | Sequence[CTFDeserializer],
        max_samples: int = INFINITELY_REPEAT,
        max_sweeps: int = INFINITELY_REPEAT,
        randomization_window_in_chunks: int | None = None,
        randomization_window_in_samples: int = 0,
        randomization_seed: int = 0,
        trace_level: int = 0,
        multithreaded_deserializer: bool | None = None,
        frame_mode: bool = False,
        truncation_length: int = 0,
        randomize: bool = True,
        max_errors: int = 0,
    ) -> None:
        parts = (
            [deserializers] if isinstance(deserializers, CTFDeserializer) else list(deserializers)
        )
        if len(parts) != 1 or not isinstance(parts[0], CTFDeserializer):
            raise ValueError(
                f"deserializers: expected one CTFDeserializer, found {deserializers!r}"
            )
        if frame_mode or truncation_length:
            raise ValueError(
                "frame_mode, truncation_length: expected False and 0 (sequences are whole here)"
            )
        self.deserializer = parts[0]
        self.examples = self.deserializer.read()
        if not self.examples:
            raise ValueError(f"{self.deserializer.filename}: the file holds no sequence")
        self.randomize = randomize
        self.seed = randomization_seed
        self.max_samples = None if max_samples == INFINITELY_REPEAT else max_samples
        self.max_sweeps = None if max_sweeps == INFINITELY_REPEAT else max_sweeps
        infos = {
            name: StreamInformation(name, (int(s.shape or 0),), s.is_sparse, s.defines_mb_size)
            for name, s in self.deserializer.streams.items()
        }
        self.streams = _Streams(infos)
        size_streams = [n for n, s in self.deserializer.streams.items() if s.defines_mb_size]
        self.size_stream = size_streams[0] if size_streams else None
        self._reader: rnnkit_minibatch.MinibatchSource | None = None

    def stream_infos(self) -> list[StreamInformation]:
        return self.streams.values()

    def stream_info(self, name: str) -> StreamInformation:
        return self.streams[name]

    def rnnkit_source(
        self, minibatch_size: int, **changes: Any
    ) -> rnnkit_minibatch.MinibatchSource:
        """A fresh rnnkit source over the same sequences, from the start, CNTK's rules on."""
        settings: dict[str, Any] = {
            "randomize": self.randomize,
            "seed": self.seed,
            "max_sweeps": self.max_sweeps,
            "max_samples": self.max_samples,
            "size_stream": self.size_stream,
            "cntk_compatible": True,
        }
        settings.update(changes)
        return rnnkit_minibatch.MinibatchSource(self.examples, minibatch_size, **settings)

    def next_minibatch(
        self,
        minibatch_size_in_samples: int,
        input_map: Mapping[Any, StreamInformation] | None = None,
        device: Any = None,
        num_data_partitions: int | None = None,
        partition_index: int | None = None,
    ) -> dict[Any, MinibatchData]:
        """The next minibatch: ``{StreamInformation: MinibatchData}``, or keyed by the
        variables of ``input_map`` (``{variable: stream}``); ``{}`` once the source is
        exhausted (CNTK's empty minibatch)."""
        if num_data_partitions not in (None, 1) or partition_index not in (None, 0):
            raise ValueError("num_data_partitions: one partition only here")
        if self._reader is None:
            self._reader = self.rnnkit_source(minibatch_size_in_samples)
        mb = self._reader.next_minibatch(minibatch_size_in_samples)
        if mb is None:
            return {}
        by_stream = {
            info: MinibatchData(
                mb[info.name],
                mb.stream_samples.get(info.name, mb.num_samples),
                mb.num_sequences,
                mb.end_of_sweep,
                info.is_sparse,
            )
            for info in self.streams.values()
        }
        if input_map is None:
            return dict(by_stream)
        out: dict[Any, MinibatchData] = {}
        for key, info in input_map.items():
            if info not in by_stream:
                raise KeyError(
                    f"input_map: {info!r} is not a stream of this source; its streams are "
                    f"{self.streams.keys()}"
                )
            out[key] = by_stream[info]
        return out
