"""`MinibatchSource`: examples to minibatches, with CNTK's counting of samples.

An *example* is a dict ``stream name -> value``. A value is a tensor ``[T_i, *F]`` (a sequence of
``T_i`` samples; a value with one sample per example, a label say, is ``[1, *F]``), or an object
whose type has a classmethod ``collate(items) -> batch`` (a tree, for instance):
``type(value).collate(values)`` receives the values of one stream for the sequences of a
minibatch, in minibatch order, and returns whatever the model consumes (a ``TreeBatch``); an
optional integer attribute ``num_samples`` says how many samples such a value counts for (the
nodes of a tree), one without it. A *sample* is one item of a sequence, as in CNTK.

The source forms minibatches the way CNTK's readers do: sequences are added while the number of
samples stays within ``minibatch_size`` (at least one sequence per minibatch, so a sequence longer
than ``minibatch_size`` makes a minibatch of its own). The size of an example is the number of
samples of its longest stream, or of ``size_stream`` when one is named. With ``unit="sequences"``
the size counts sequences instead. Every *sweep* (one pass over the data) visits each example once,
in an order shuffled from ``(seed, sweep)``.

Per stream, a minibatch holds a :class:`~rnnkit.SequenceBatch`, or a plain ``[B, *F]`` tensor for
a stream that has exactly one sample in every example of the source, or the result of
``collate`` for object streams.

>>> import torch
>>> examples = [
...     {"x": torch.ones(n, 2), "y": torch.tensor([[float(n)]])} for n in (3, 1, 4, 2)
... ]
>>> source = MinibatchSource(examples, 5, randomize=False, max_sweeps=1)
>>> [(mb.indices, mb.num_samples, mb["x"].lengths.tolist(), mb["y"].tolist()) for mb in source]
[((0, 1), 4, [3, 1], [[3.0], [1.0]]), ((2,), 4, [4], [[4.0]]), ((3,), 2, [2], [[2.0]])]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.sequences import SequenceBatch

__all__ = ["Minibatch", "MinibatchSource"]

_UNITS = ("samples", "sequences")
_STATE_CONFIG = (
    "num_examples",
    "minibatch_size",
    "unit",
    "size_stream",
    "randomize",
    "seed",
    "bucket",
    "world_size",
)


@dataclass(frozen=True)
class Minibatch:
    """One minibatch of this rank's share.

    Attributes:
        streams: stream name -> a :class:`~rnnkit.SequenceBatch` (B sequences), a ``[B, *F]``
            tensor (a stream with one sample per example), or the ``collate`` result.
        indices: the B positions, in the source's example list, of the examples in this
            minibatch, in minibatch order (the order of ``SequenceBatch.lengths``).
        num_samples: samples in this minibatch, counted as the source counts them (the longest
            stream of each example, or its ``size_stream``).
        num_sequences: B.
        sweep: the sweep (0-based) this minibatch belongs to.
        end_of_sweep: True on the last minibatch of a sweep.
        repeated: True when this minibatch repeats one given earlier in the same sweep, to give
            every rank the same number of minibatches (only with ``partition``; see
            :class:`MinibatchSource`).
    """

    streams: dict[str, Any]
    indices: tuple[int, ...]
    num_samples: int
    num_sequences: int
    sweep: int
    end_of_sweep: bool
    repeated: bool = False

    def __getitem__(self, name: str) -> Any:
        if name not in self.streams:
            raise KeyError(
                f"no stream {name!r} in this minibatch; streams are {list(self.streams)}"
            )
        return self.streams[name]

    def __contains__(self, name: object) -> bool:
        return name in self.streams

    def to(self, *args: Any, **kwargs: Any) -> Minibatch:
        """The same minibatch with every stream that has a ``.to`` method moved (device, dtype)."""
        streams = {
            name: value.to(*args, **kwargs) if hasattr(value, "to") else value
            for name, value in self.streams.items()
        }
        return replace(self, streams=streams)


@dataclass(frozen=True)
class _Round:
    """One step of data-parallel training: one batch of example indices per rank."""

    batches: tuple[tuple[int, ...], ...]
    repeated: tuple[bool, ...]
    num_samples: int  # all ranks together


class MinibatchSource:
    """Minibatches over a list of examples, counted in samples or sequences, per sweep.

    Args:
        examples: the examples (dicts ``stream name -> value``; see the module docstring). Any
            iterable is read once, at construction, and the examples are held in memory; the
            source never modifies them.
        minibatch_size: samples (or sequences, see ``unit``) per minibatch of *this rank*.
            Sequences are added while the count stays ``<= minibatch_size``; a minibatch holds at
            least one sequence.
        unit: ``"samples"`` (CNTK's count: time steps) or ``"sequences"``.
        size_stream: the stream whose samples count; ``None`` counts each example as its
            longest stream, which is CNTK's rule ("tensors are added until one of the inputs
            exceeds the minibatch size").
        randomize: shuffle every sweep; sweep ``k`` uses a generator seeded from ``(seed, k)``,
            so the order of any sweep is known without replaying the ones before it.
        seed: a non-negative integer.
        max_sweeps: stop after this many sweeps; ``None`` for no limit.
        max_samples: stop once this many samples have been delivered (all ranks together;
            minibatches are whole, so the total can pass it by less than one minibatch per
            rank); ``None`` for no limit. With neither limit the source is infinite.
        partition: ``(rank, world_size)`` for data-parallel training; see below.
        bucket: group sequences of similar length: each run of ``bucket * minibatch_size``
            units of the sweep's (shuffled) order is sorted by decreasing size and cut into
            minibatches, and then the minibatches of the whole sweep are shuffled. ``None``
            keeps the plain order. Deterministic from ``seed`` like the order.
        stack_single: deliver a stream with exactly one sample in *every* example of the
            source as a plain ``[B, *F]`` tensor (decided once, for the whole source, so a
            stream's type never changes from one minibatch to the next). ``False`` gives a
            :class:`~rnnkit.SequenceBatch` for every tensor stream.
        pin_memory: put every tensor of a minibatch (a SequenceBatch's data, a stacked
            stream) in page-locked memory, so that ``mb.to("cuda", non_blocking=True)`` copies
            while the GPU computes. Needs an accelerator: ``True`` without one is a ValueError.
            Object streams (``collate`` results) are left as they are.

    Partition. Every rank builds the same list of minibatches for a sweep (each of
    ``minibatch_size``, from the same seed: the list one process would make) and takes every
    ``world_size``-th one, starting at its rank: minibatch ``j`` of the sweep goes to rank
    ``j % world_size``. Shares are disjoint and together cover the sweep. When the number of
    minibatches is not a multiple of ``world_size``, the ranks left short in the sweep's last
    round receive the sweep's first minibatches again, marked ``repeated=True`` (and counted in
    ``samples_seen``). So every rank yields the same number of minibatches per sweep (what
    ``DistributedDataParallel`` needs) and no example is dropped, at the cost of a few examples
    being seen twice in that sweep. CNTK counts its minibatch size over all workers together;
    to match it, pass ``minibatch_size // world_size``.

    Iteration (``for mb in source`` or :meth:`next_minibatch`) continues from where it stopped:
    the source is its own iterator, and :meth:`state_dict` records where it is.

    >>> import torch
    >>> examples = [{"x": torch.full((n, 1), float(i))} for i, n in enumerate((2, 3, 2, 1, 4))]
    >>> a = MinibatchSource(examples, 4, seed=7, max_sweeps=2)
    >>> [(mb.sweep, mb.indices) for mb in a]  # every example once per sweep, new order each sweep
    [(0, (2, 0)), (0, (4,)), (0, (1, 3)), (1, (3, 0)), (1, (2,)), (1, (1,)), (1, (4,))]
    >>> b = MinibatchSource(examples, 4, seed=7, max_sweeps=2)
    >>> [b.next_minibatch().indices for _ in range(2)]
    [(2, 0), (4,)]
    >>> c = MinibatchSource(examples, 4, seed=7, max_sweeps=2)
    >>> c.load_state_dict(b.state_dict())  # c continues where b stopped
    >>> [mb.indices for mb in c]
    [(1, 3), (3, 0), (2,), (1,), (4,)]
    """

    def __init__(
        self,
        examples: Iterable[Mapping[str, Any]],
        minibatch_size: int,
        *,
        unit: str = "samples",
        size_stream: str | None = None,
        randomize: bool = True,
        seed: int = 0,
        max_sweeps: int | None = None,
        max_samples: int | None = None,
        partition: tuple[int, int] = (0, 1),
        bucket: int | None = None,
        stack_single: bool = True,
        pin_memory: bool = False,
    ) -> None:
        _check_positive("minibatch_size", minibatch_size)
        if pin_memory and not torch.accelerator.is_available():
            raise ValueError(
                "pin_memory: expected a machine with an accelerator (CUDA) to pin memory for, "
                "found none; pass pin_memory=False"
            )
        if unit not in _UNITS:
            raise ValueError(f"unit: expected one of {_UNITS}, found {unit!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, found {seed!r}")
        if max_sweeps is not None:
            _check_positive("max_sweeps", max_sweeps)
        if max_samples is not None:
            _check_positive("max_samples", max_samples)
        if bucket is not None:
            _check_positive("bucket", bucket)
        self.rank, self.world_size = _check_partition(partition)

        self.examples: list[Mapping[str, Any]] = list(examples)
        self.stream_names, self.single_sample, sizes = _inspect(self.examples, size_stream)
        self.minibatch_size = minibatch_size
        self.unit = unit
        self.size_stream = size_stream
        self.randomize = randomize
        self.seed = seed
        self.max_sweeps = max_sweeps
        self.max_samples = max_samples
        self.bucket = bucket
        self.stack_single = stack_single
        self.pin_memory = pin_memory
        self._sizes = sizes
        self._units = sizes if unit == "samples" else np.ones_like(sizes)

        self._sweep = 0
        self._round = 0
        self._samples_seen = 0
        self._plan_cache: tuple[int, list[_Round]] | None = None

    @classmethod
    def for_fit(
        cls, examples: Any, minibatch_size: int, *, training: bool, **options: Any
    ) -> MinibatchSource:
        """A training source (reshuffled every sweep, endless) or an evaluation source (in
        order, one sweep), the two a recipe passes to ``Trainer.fit`` and ``evaluate``;
        ``options`` are the other constructor arguments (``unit``, ``seed``, ...)."""
        return cls(
            examples,
            minibatch_size,
            randomize=training,
            max_sweeps=None if training else 1,
            **options,
        )

    # ------------------------------------------------------------------ facts
    @property
    def num_examples(self) -> int:
        """The number of examples (sequences) in one sweep."""
        return len(self.examples)

    @property
    def samples_per_sweep(self) -> int:
        """Samples in one sweep, counted like ``num_samples`` (the natural epoch size)."""
        return int(self._sizes.sum())

    @property
    def minibatches_per_sweep(self) -> int:
        """Minibatches (steps) in one sweep of this rank's share (the current sweep's plan)."""
        return len(self._plan(self._sweep))

    @property
    def sweep(self) -> int:
        """The sweep the next minibatch comes from (0-based)."""
        return self._sweep

    @property
    def samples_seen(self) -> int:
        """Samples delivered so far, all ranks together (repeated minibatches included)."""
        return self._samples_seen

    @property
    def exhausted(self) -> bool:
        """True once ``max_sweeps`` or ``max_samples`` is reached."""
        return (self.max_sweeps is not None and self._sweep >= self.max_sweeps) or (
            self.max_samples is not None and self._samples_seen >= self.max_samples
        )

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Minibatch]:
        return self

    def __next__(self) -> Minibatch:
        mb = self.next_minibatch()
        if mb is None:
            raise StopIteration
        return mb

    def next_minibatch(self) -> Minibatch | None:
        """This rank's next minibatch, or ``None`` once the source is exhausted."""
        if self.exhausted:
            return None
        sweep = self._sweep
        rounds = self._plan(sweep)
        current = rounds[self._round]
        self._samples_seen += current.num_samples
        self._round += 1
        end_of_sweep = self._round == len(rounds)
        if end_of_sweep:
            self._sweep += 1
            self._round = 0
        indices = current.batches[self.rank]
        return Minibatch(
            self._collate(indices),
            indices,
            int(self._sizes[list(indices)].sum()),
            len(indices),
            sweep,
            end_of_sweep,
            current.repeated[self.rank],
        )

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, Any]:
        """Where the source stands, as plain ints, strings and bools (JSON-safe).

        The state is the same on every rank, so one rank's checkpoint resumes them all.
        """
        state: dict[str, Any] = {
            "sweep": self._sweep,
            "round": self._round,
            "samples_seen": self._samples_seen,
        }
        state.update({key: getattr(self, key) for key in _STATE_CONFIG})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a source built the same way)."""
        for key in (*_STATE_CONFIG, "sweep", "round", "samples_seen"):
            if key not in state:
                raise KeyError(f"state: missing key {key!r}; expected the output of state_dict()")
        for key in _STATE_CONFIG:
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"state[{key!r}]: the state was saved from a source with {key}="
                    f"{state[key]!r}, this source has {key}={getattr(self, key)!r}; the "
                    "minibatches would differ"
                )
        sweep, round_ = int(state["sweep"]), int(state["round"])
        if sweep < 0:
            raise ValueError(f"state['sweep']: expected a non-negative integer, found {sweep}")
        rounds = len(self._plan(sweep))
        if not 0 <= round_ < rounds:
            raise ValueError(
                f"state['round']: expected 0 <= round < {rounds} (the rounds of sweep {sweep}), "
                f"found {round_}"
            )
        self._sweep, self._round = sweep, round_
        self._samples_seen = int(state["samples_seen"])

    # ------------------------------------------------------------------ planning
    def _plan(self, sweep: int) -> list[_Round]:
        """The rounds of ``sweep``: every rank's minibatches, the same on every rank."""
        key = sweep if self.randomize else 0  # without shuffling every sweep is the same
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        n = len(self.examples)
        rng = np.random.default_rng((self.seed, sweep)) if self.randomize else None
        order = rng.permutation(n) if rng is not None else np.arange(n)
        if self.bucket is None:
            batches = _pack(order, self._units, self.minibatch_size)
        else:
            batches = []
            for chunk in _pack(order, self._units, self.bucket * self.minibatch_size):
                ids = np.asarray(chunk)
                ids = ids[np.argsort(-self._sizes[ids], kind="stable")]
                batches.extend(_pack(ids, self._units, self.minibatch_size))
            if rng is not None:
                batches = [batches[i] for i in rng.permutation(len(batches))]
        rounds = []
        for start in range(0, len(batches), self.world_size):
            given = batches[start : start + self.world_size]
            short = self.world_size - len(given)
            filler = [batches[i % len(batches)] for i in range(short)]
            members = (*given, *filler)
            rounds.append(
                _Round(
                    members,
                    (False,) * len(given) + (True,) * short,
                    int(sum(self._sizes[list(b)].sum() for b in members)),
                )
            )
        self._plan_cache = (key, rounds)
        return rounds

    def _collate(self, indices: tuple[int, ...]) -> dict[str, Any]:
        streams: dict[str, Any] = {}
        for name in self.stream_names:
            values = [self.examples[i][name] for i in indices]
            if not isinstance(values[0], Tensor):
                streams[name] = type(values[0]).collate(values)
            elif self.stack_single and self.single_sample[name]:
                streams[name] = torch.cat(values)
            else:
                streams[name] = SequenceBatch.from_list(values)
            if self.pin_memory and isinstance(streams[name], Tensor):
                streams[name] = streams[name].pin_memory()
            elif self.pin_memory and isinstance(streams[name], SequenceBatch):
                streams[name] = streams[name].map(Tensor.pin_memory)
        return streams

    def __repr__(self) -> str:
        return (
            f"MinibatchSource({self.num_examples} examples, streams={self.stream_names}, "
            f"minibatch_size={self.minibatch_size} {self.unit}, sweep={self._sweep}, "
            f"samples_seen={self._samples_seen}, partition=({self.rank}, {self.world_size}))"
        )


def _pack(order: Iterable[int], units: np.ndarray, limit: int) -> list[tuple[int, ...]]:
    """Cut ``order`` into runs whose ``units`` sum to at most ``limit`` (at least one each)."""
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    total = 0
    for item in order:
        size = int(units[item])
        if current and total + size > limit:
            batches.append(tuple(current))
            current, total = [], 0
        current.append(int(item))
        total += size
    if current:
        batches.append(tuple(current))
    return batches


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")


def _check_partition(partition: object) -> tuple[int, int]:
    if (
        not isinstance(partition, tuple)
        or len(partition) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in partition)
    ):
        raise ValueError(f"partition: expected a tuple (rank, world_size), found {partition!r}")
    rank, world_size = partition
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"partition: expected 0 <= rank < world_size and world_size >= 1, found "
            f"rank={rank}, world_size={world_size}"
        )
    return rank, world_size


def _value_size(value: Any) -> int:
    if isinstance(value, Tensor):
        return int(value.shape[0])
    return int(getattr(value, "num_samples", 1))


def _inspect(
    examples: list[Mapping[str, Any]], size_stream: str | None
) -> tuple[list[str], dict[str, bool], np.ndarray]:
    """Check every example; return the stream names, which streams have one sample per
    example, and every example's size in samples."""
    if not examples:
        raise ValueError("examples: expected at least one example, found none")
    if not isinstance(examples[0], Mapping) or not examples[0]:
        raise TypeError(
            "examples[0]: expected a non-empty dict of stream name -> value, found "
            + (
                repr(examples[0])
                if isinstance(examples[0], Mapping)
                else type(examples[0]).__name__
            )
        )
    names = list(examples[0])
    if size_stream is not None and size_stream not in names:
        raise ValueError(f"size_stream: expected one of the streams {names}, found {size_stream!r}")
    first = examples[0]
    sizes = np.empty(len(examples), dtype=np.int64)
    single = dict.fromkeys(names, True)
    for i, example in enumerate(examples):
        if not isinstance(example, Mapping):
            raise TypeError(
                f"examples[{i}]: expected a dict of stream name -> value, found "
                f"{type(example).__name__}"
            )
        if set(example) != set(names):
            missing = [n for n in names if n not in example]
            extra = [n for n in example if n not in names]
            raise ValueError(
                f"examples[{i}]: expected the streams of examples[0] {names}, "
                f"missing {missing}, extra {extra}"
            )
        example_sizes = []
        for name in names:
            value, ref = example[name], first[name]
            _check_value(i, name, value, ref)
            size = _value_size(value)
            if size < 1:
                raise ValueError(
                    f"examples[{i}][{name!r}]: expected at least one sample, found {size}"
                )
            single[name] = single[name] and size == 1
            example_sizes.append(size)
        sizes[i] = (
            max(example_sizes) if size_stream is None else example_sizes[names.index(size_stream)]
        )
    return names, single, sizes


def _check_value(i: int, name: str, value: Any, ref: Any) -> None:
    where = f"examples[{i}][{name!r}]"
    if isinstance(value, Tensor):
        if value.dim() == 0:
            raise ValueError(
                f"{where}: expected a tensor [T, *F], found a scalar; write one value as [1]"
            )
        if not isinstance(ref, Tensor) or (
            value.shape[1:] != ref.shape[1:] or value.dtype != ref.dtype
        ):
            found = f"tensor {tuple(value.shape)} {value.dtype}"
            expected = (
                f"tensor [T, *{tuple(ref.shape[1:])}] {ref.dtype}"
                if isinstance(ref, Tensor)
                else type(ref).__name__
            )
            raise ValueError(f"{where}: expected {expected} like examples[0], found {found}")
        return
    if not callable(getattr(type(value), "collate", None)):
        raise TypeError(
            f"{where}: expected a tensor [T, *F] or an object whose type has a classmethod "
            f"collate(items), found {type(value).__name__}"
        )
    if type(value) is not type(ref):
        raise TypeError(
            f"{where}: expected {type(ref).__name__} like examples[0], found {type(value).__name__}"
        )
