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
in an order shuffled from ``(seed, sweep)``. A minibatch ends at the end of its sweep.

CNTK's other rules are options (``cntk_compatible=True`` turns them all on): minibatches that run
on into the next sweep (``cross_sweeps``), a last minibatch cut at ``max_samples``
(``exact_limits``), sweep ``k`` shuffled from ``seed + k`` (``consecutive_seeds``), and each
stream's samples counted on their own (``count_per_stream``); ``next_minibatch(size)`` takes a
size per call. docs/data.md sets each beside rnnkit's default.

Per stream, a minibatch holds a :class:`~rnnkit.SequenceBatch`, or a plain ``[B, *F]`` tensor for
a stream that has exactly one sample in every example of the source, or the result of
``collate`` for object streams. A stream is collated when it is first read from the minibatch:
streams nobody reads (a forecast's dates, say, during training) cost nothing.

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
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.sequences import SequenceBatch

__all__ = ["LazyStreams", "Minibatch", "MinibatchSource"]

_UNITS = ("samples", "sequences")
_BLOCK_BYTES = 1 << 30
"""The largest stream a source stacks into one block (1 GiB); larger ones are collated from
the examples at every minibatch."""
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
# Options added with CNTK's semantics: a state saved before they existed has them off.
_STATE_OPTIONS = ("cross_sweeps", "exact_limits", "consecutive_seeds", "count_per_stream")


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
        stream_samples: stream name -> the samples of that stream in this minibatch (CNTK's
            per-stream ``num_samples``).
    """

    streams: Mapping[str, Any]
    indices: tuple[int, ...]
    num_samples: int
    num_sequences: int
    sweep: int
    end_of_sweep: bool
    repeated: bool = False
    stream_samples: dict[str, int] = dataclass_field(default_factory=dict)

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


class LazyStreams(Mapping[str, Any]):
    """A minibatch's streams, each collated by ``collate(name)`` when first read and kept."""

    __slots__ = ("_collate", "_names", "_values")

    def __init__(self, names: Iterable[str], collate: Any) -> None:
        self._names = tuple(names)
        self._collate = collate
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name not in self._names:
            raise KeyError(name)
        value = self._values[name] = self._collate(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"LazyStreams({list(self._names)}, collated={list(self._values)})"


@dataclass(frozen=True)
class _Round:
    """One step of data-parallel training: one batch of example indices per rank."""

    batches: tuple[tuple[int, ...], ...]
    repeated: tuple[bool, ...]
    num_samples: int  # all ranks together
    samples: tuple[int, ...]  # each rank's batch, counted as num_samples counts
    stream_samples: tuple[dict[str, int], ...]  # each rank's batch, per stream


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
        randomize: shuffle every sweep; sweep ``k`` uses a generator seeded from ``(seed, k)``
            (``seed + k`` with ``consecutive_seeds``), so the order of any sweep is known without
            replaying the ones before it.
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
        cross_sweeps: a minibatch that reaches the end of a sweep goes on into the next one
            (CNTK's reader), instead of ending there; it never goes past the last of
            ``max_sweeps``. Its ``sweep`` is the sweep of its first sequence and its
            ``end_of_sweep`` says whether it holds the end of one.
        exact_limits: cut the minibatch that reaches ``max_samples`` to the samples left, so
            the total stops there (less than one sequence over, since sequences are whole),
            as CNTK does. Needs ``unit="samples"``.
        consecutive_seeds: sweep ``k``'s order is
            ``numpy.random.default_rng(seed + k).permutation(num_examples)`` instead of
            ``default_rng((seed, k)).permutation(num_examples)``: CNTK's rule, sweep ``k + 1``
            of seed ``s`` is sweep ``k`` of seed ``s + 1``. The orders are numpy's, not CNTK's
            own (its generator differs); only the rule is CNTK's. (With ``bucket`` the same
            generator then shuffles the minibatches.)
        count_per_stream: count each stream's samples separately; a minibatch is full when
            adding the next sequence would take any one stream past ``minibatch_size`` (CNTK's
            count). Without it the count is each sequence's longest stream, summed. Ignored
            when ``size_stream`` is named (that stream alone counts, in both).
        cntk_compatible: turn on ``cross_sweeps``, ``exact_limits``, ``consecutive_seeds`` and
            ``count_per_stream`` together.

    The four CNTK options (and a per-call size in :meth:`next_minibatch`) read the sweep
    sequence by sequence from a cursor, so they need ``partition=(0, 1)`` and ``bucket=None``.
    docs/data.md ("CNTK compatibility") sets each beside rnnkit's default and says why the
    defaults differ.

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

    CNTK's semantics: four one-sample sequences, three sweeps, minibatches of 5 samples.

    >>> four = [{"x": torch.full((1, 1), float(i))} for i in range(4)]
    >>> d = MinibatchSource(four, 5, max_sweeps=3, cntk_compatible=True)
    >>> [(mb.num_samples, mb.end_of_sweep) for mb in d]  # rnnkit's default: 4, 4, 4
    [(5, True), (5, True), (2, True)]
    >>> e = MinibatchSource(four, 5, randomize=False, cntk_compatible=True)
    >>> [e.next_minibatch(n).indices for n in (3, 2, 6)]  # a size per call
    [(0, 1, 2), (3, 0), (1, 2, 3, 0, 1, 2)]
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
        cross_sweeps: bool = False,
        exact_limits: bool = False,
        consecutive_seeds: bool = False,
        count_per_stream: bool = False,
        cntk_compatible: bool = False,
    ) -> None:
        _check_positive("minibatch_size", minibatch_size)
        for name, flag in (
            ("cross_sweeps", cross_sweeps),
            ("exact_limits", exact_limits),
            ("consecutive_seeds", consecutive_seeds),
            ("count_per_stream", count_per_stream),
            ("cntk_compatible", cntk_compatible),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}: expected a bool, found {flag!r}")
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
        self.cross_sweeps = cross_sweeps or cntk_compatible
        self.exact_limits = exact_limits or cntk_compatible
        self.consecutive_seeds = consecutive_seeds or cntk_compatible
        self.count_per_stream = count_per_stream or cntk_compatible
        if self.exact_limits and unit != "samples":
            raise ValueError(
                "exact_limits: cuts at max_samples, which counts samples; it needs "
                f"unit='samples', found unit={unit!r}"
            )
        cursor_options = [
            name
            for name in ("cross_sweeps", "exact_limits", "count_per_stream")
            if getattr(self, name)
        ]
        if cursor_options and (self.world_size > 1 or bucket is not None):
            raise ValueError(
                f"{cursor_options[0]}: reads the sweep from a cursor, which needs "
                f"partition=(0, 1) and bucket=None, found partition={partition!r}, "
                f"bucket={bucket!r}"
            )

        self.examples: list[Mapping[str, Any]] = list(examples)
        self.stream_names, self.single_sample, sizes, stream_sizes = _inspect(
            self.examples, size_stream
        )
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
        self._stream_sizes = stream_sizes  # [num_examples, streams]
        self._units = sizes if unit == "samples" else np.ones_like(sizes)
        # What the cursor counts per example: one number, or one per stream.
        counted = stream_sizes if self.count_per_stream and size_stream is None else sizes[:, None]
        if unit != "samples":
            counted = np.ones((len(sizes), 1), dtype=np.int64)
        self._counted: list[tuple[int, ...]] = [tuple(row) for row in counted.tolist()]

        self._sweep = 0
        self._round = 0
        self._samples_seen = 0
        # The cursor (the next example's place in the sweep's order) replaces the round once a
        # CNTK option or a per-call size is in use.
        self._position: int | None = 0 if cursor_options else None
        self._plan_cache: tuple[int, list[_Round]] | None = None
        # Streams whose examples share one shape, stacked once (see _blocks).
        self._block_cache: dict[str, Tensor] | None = None
        self._order_cache: tuple[int, np.ndarray] | None = None

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

    def next_minibatch(self, minibatch_size: int | None = None) -> Minibatch | None:
        """This rank's next minibatch, or ``None`` once the source is exhausted.

        ``minibatch_size`` sets the size of this minibatch alone (as CNTK's
        ``next_minibatch(minibatch_size_in_samples)``); ``None`` uses the source's. A size
        other than the source's reads from the current place in the sweep on (it needs
        ``partition=(0, 1)`` and ``bucket=None``), and so do the calls after it.
        """
        if minibatch_size is not None:
            _check_positive("minibatch_size", minibatch_size)
        if self.exhausted:
            return None
        size = self.minibatch_size if minibatch_size is None else minibatch_size
        if self._position is None and size != self.minibatch_size:
            self._enter_cursor()
        if self._position is not None:
            return self._next_from_cursor(size)
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
            current.samples[self.rank],
            len(indices),
            sweep,
            end_of_sweep,
            current.repeated[self.rank],
            dict(current.stream_samples[self.rank]),
        )

    def _enter_cursor(self) -> None:
        """Switch from the plan's rounds to a cursor at the same place in the sweep."""
        if self.world_size > 1 or self.bucket is not None:
            raise ValueError(
                "minibatch_size: a size per call reads the sweep from a cursor, which needs "
                f"partition=(0, 1) and bucket=None, found partition=({self.rank}, "
                f"{self.world_size}), bucket={self.bucket!r}"
            )
        rounds = self._plan(self._sweep)
        self._position = sum(len(r.batches[0]) for r in rounds[: self._round])
        self._round = 0

    def _next_from_cursor(self, size: int) -> Minibatch | None:
        """The next minibatch of at most ``size`` units, sequence by sequence from the cursor
        (across sweeps with ``cross_sweeps``, cut at ``max_samples`` with ``exact_limits``)."""
        assert self._position is not None
        limit = size
        if self.exact_limits and self.max_samples is not None:
            limit = min(limit, self.max_samples - self._samples_seen)
        first_sweep = self._sweep
        totals = [0] * len(self._counted[0])
        indices: list[int] = []
        end_of_sweep = False
        while self.max_sweeps is None or self._sweep < self.max_sweeps:
            order = self._order(self._sweep)
            item = int(order[self._position])
            units = self._counted[item]
            if indices and any(t + u > limit for t, u in zip(totals, units, strict=True)):
                break
            indices.append(item)
            totals = [t + u for t, u in zip(totals, units, strict=True)]
            self._position += 1
            if self._position == len(order):
                self._sweep += 1
                self._position = 0
                end_of_sweep = True
                if not self.cross_sweeps:
                    break
        chosen = tuple(indices)
        stream_samples = self._stream_samples(chosen)
        if self.count_per_stream and self.size_stream is None:
            num_samples = max(stream_samples.values())
        else:
            num_samples = int(self._sizes[list(chosen)].sum())
        self._samples_seen += num_samples
        return Minibatch(
            self._collate(chosen),
            chosen,
            num_samples,
            len(chosen),
            first_sweep,
            end_of_sweep,
            False,
            stream_samples,
        )

    def _stream_samples(self, indices: tuple[int, ...]) -> dict[str, int]:
        totals = self._stream_sizes[list(indices)].sum(axis=0).tolist()
        return dict(zip(self.stream_names, totals, strict=True))

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, Any]:
        """Where the source stands, as plain ints, strings and bools (JSON-safe).

        The state is the same on every rank, so one rank's checkpoint resumes them all.
        """
        state: dict[str, Any] = {
            "sweep": self._sweep,
            "round": None if self._position is not None else self._round,
            "position": self._position,
            "samples_seen": self._samples_seen,
        }
        state.update({key: getattr(self, key) for key in (*_STATE_CONFIG, *_STATE_OPTIONS)})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a source built the same way)."""
        for key in (*_STATE_CONFIG, "sweep", "round", "samples_seen"):
            if key not in state:
                raise KeyError(f"state: missing key {key!r}; expected the output of state_dict()")
        saved = {key: state[key] for key in _STATE_CONFIG}
        saved.update({key: state.get(key, False) for key in _STATE_OPTIONS})
        for key, value in saved.items():
            if value != getattr(self, key):
                raise ValueError(
                    f"state[{key!r}]: the state was saved from a source with {key}="
                    f"{value!r}, this source has {key}={getattr(self, key)!r}; the "
                    "minibatches would differ"
                )
        sweep = int(state["sweep"])
        if sweep < 0:
            raise ValueError(f"state['sweep']: expected a non-negative integer, found {sweep}")
        position = state.get("position")
        if position is not None:
            position = int(position)
            if self.world_size > 1 or self.bucket is not None:
                raise ValueError(
                    "state['position']: the state was saved from a cursor, which needs "
                    "partition=(0, 1) and bucket=None"
                )
            if not 0 <= position < self.num_examples:
                raise ValueError(
                    f"state['position']: expected 0 <= position < {self.num_examples} (the "
                    f"examples of a sweep), found {position}"
                )
            self._sweep, self._round, self._position = sweep, 0, position
        else:
            if any(saved[key] for key in ("cross_sweeps", "exact_limits", "count_per_stream")):
                raise ValueError(
                    "state['position']: expected the cursor of a source with CNTK options, "
                    "found None"
                )
            round_ = int(state["round"])
            rounds = len(self._plan(sweep))
            if not 0 <= round_ < rounds:
                raise ValueError(
                    f"state['round']: expected 0 <= round < {rounds} (the rounds of sweep "
                    f"{sweep}), found {round_}"
                )
            self._sweep, self._round, self._position = sweep, round_, None
        self._samples_seen = int(state["samples_seen"])

    # ------------------------------------------------------------------ planning
    def _plan(self, sweep: int) -> list[_Round]:
        """The rounds of ``sweep``: every rank's minibatches, the same on every rank."""
        key = sweep if self.randomize else 0  # without shuffling every sweep is the same
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        rng = self._generator(sweep)
        order = self._shuffle(rng)
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
            samples = tuple(int(self._sizes[list(b)].sum()) for b in members)
            rounds.append(
                _Round(
                    members,
                    (False,) * len(given) + (True,) * short,
                    sum(samples),
                    samples,
                    tuple(self._stream_samples(b) for b in members),
                )
            )
        self._plan_cache = (key, rounds)
        return rounds

    def _generator(self, sweep: int) -> np.random.Generator | None:
        """The generator that shuffles ``sweep`` (None without shuffling)."""
        if not self.randomize:
            return None
        if self.consecutive_seeds:
            return np.random.default_rng(self.seed + sweep)
        return np.random.default_rng((self.seed, sweep))

    def _shuffle(self, rng: np.random.Generator | None) -> np.ndarray:
        n = len(self.examples)
        return rng.permutation(n) if rng is not None else np.arange(n)

    def _order(self, sweep: int) -> np.ndarray:
        """The order of ``sweep``'s examples (the plan's order before it is cut)."""
        key = sweep if self.randomize else 0
        if self._order_cache is None or self._order_cache[0] != key:
            self._order_cache = (key, self._shuffle(self._generator(sweep)))
        return self._order_cache[1]

    def _blocks(self) -> dict[str, Tensor]:
        """The tensor streams whose examples all have one shape, each stacked once into one
        block (``[N, *F]`` for a stream of one sample an example, ``[N, T, *F]`` for one of
        sequences) so that a minibatch is one ``index_select``, not a gather of scattered
        tensors. A stream is left out (and collated example by example) when its block would
        pass ``_BLOCK_BYTES``, when its examples differ in length or device, or when they
        carry gradients."""
        if self._block_cache is not None:
            return self._block_cache
        blocks: dict[str, Tensor] = {}
        for j, name in enumerate(self.stream_names):
            first = self.examples[0][name]
            if not isinstance(first, Tensor) or (self._stream_sizes[:, j] != first.shape[0]).any():
                continue
            values = [example[name] for example in self.examples]
            if first.numel() * first.element_size() * len(values) > _BLOCK_BYTES or any(
                v.device != first.device or v.requires_grad for v in values
            ):
                continue
            single = self.stack_single and self.single_sample[name]
            blocks[name] = torch.cat(values) if single else torch.stack(values)
        self._block_cache = blocks
        return blocks

    def _collate(self, indices: tuple[int, ...]) -> LazyStreams:
        """The streams of the examples at ``indices``, each collated when first read."""
        rows: list[Tensor] = []  # the indices as a tensor, made once, for the first block read

        def collate(name: str) -> Any:
            block = self._blocks().get(name)
            value: Any
            if block is not None:
                if not rows:
                    rows.append(torch.tensor(indices, dtype=torch.int64))
                index = rows[0] if block.device == rows[0].device else rows[0].to(block.device)
                if self.stack_single and self.single_sample[name]:
                    value = block.index_select(0, index)
                else:  # B sequences of T steps, packed: their [T, B, *F] grid
                    value = SequenceBatch.from_padded(block.index_select(0, index), None)
                return self._pinned(value)
            values = [self.examples[i][name] for i in indices]
            if not isinstance(values[0], Tensor):
                value = type(values[0]).collate(values)
            elif self.stack_single and self.single_sample[name]:
                value = torch.cat(values)
            else:
                value = SequenceBatch.from_list(values)
            return self._pinned(value)

        return LazyStreams(self.stream_names, collate)

    def _pinned(self, value: Any) -> Any:
        if self.pin_memory and isinstance(value, Tensor):
            return value.pin_memory()
        if self.pin_memory and isinstance(value, SequenceBatch):
            return value.map(Tensor.pin_memory)
        return value

    def __repr__(self) -> str:
        return (
            f"MinibatchSource({self.num_examples} examples, streams={self.stream_names}, "
            f"minibatch_size={self.minibatch_size} {self.unit}, sweep={self._sweep}, "
            f"samples_seen={self._samples_seen}, partition=({self.rank}, {self.world_size})"
            + (", cross_sweeps" if self.cross_sweeps else "")
            + (", exact_limits" if self.exact_limits else "")
            + (", consecutive_seeds" if self.consecutive_seeds else "")
            + (", count_per_stream" if self.count_per_stream else "")
            + ")"
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
) -> tuple[list[str], dict[str, bool], np.ndarray, np.ndarray]:
    """Check every example; return the stream names, which streams have one sample per
    example, every example's size in samples, and the samples of each of its streams
    (``[num_examples, streams]``)."""
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
    stream_sizes = np.empty((len(examples), len(names)), dtype=np.int64)
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
        stream_sizes[i] = example_sizes
    return names, single, sizes, stream_sizes


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
