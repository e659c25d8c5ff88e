"""CNTK's sequence layers and normalisers: :class:`Delay`, :class:`PastValueWindow`,
:class:`UnfoldFrom`, :class:`Stabilizer` and :class:`LayerNormalization`; and
:class:`Segments`, which groups each sequence's steps ``P`` at a time.

``Delay`` and ``PastValueWindow`` wrap :mod:`rnnkit.sequence_ops` so that they compose with
``>>``; ``UnfoldFrom`` generates one sequence per input sequence, as long as the input times
``length_increase``; ``Stabilizer`` and ``LayerNormalization`` apply to each step of a
SequenceBatch (or to each row of a tensor ``[B, *F]``). The examples are CNTK's docstring
examples and tests, with their numbers.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> x = SequenceBatch.from_list([torch.arange(6.0).reshape(3, 2)])
>>> trigram = torch.cat([Delay(t)(x).data for t in (-1, 0, 1)], dim=-1)  # t-1 | t | t+1
>>> trigram.tolist()
[[2.0, 3.0, 0.0, 1.0, 0.0, 0.0], [4.0, 5.0, 2.0, 3.0, 0.0, 1.0], [0.0, 0.0, 4.0, 5.0, 2.0, 3.0]]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from rnnkit import sequence_ops
from rnnkit.layers import Layer, SavedModule
from rnnkit.sequences import SequenceBatch

__all__ = [
    "SAVED_MODULES",
    "Delay",
    "LayerNormalization",
    "PastValueWindow",
    "Segments",
    "Stabilizer",
    "UnfoldFrom",
]

State = Tensor | tuple[Tensor, ...]


def _rows(x: Tensor | SequenceBatch, owner: str) -> Tensor:
    if isinstance(x, SequenceBatch):
        return x.data
    if isinstance(x, Tensor):
        if x.dim() == 0:
            raise ValueError(f"{owner} input: expected a tensor [B, *F], found a scalar")
        return x
    raise TypeError(
        f"{owner} input: expected a Tensor or a SequenceBatch, found {type(x).__name__}"
    )


def _same_kind(x: Tensor | SequenceBatch, rows: Tensor) -> Any:
    return x.with_data(rows) if isinstance(x, SequenceBatch) else rows


# ---------------------------------------------------------------------------- sequence layers


class Delay(Layer):
    """Each sequence shifted by ``T`` steps: ``T > 0`` looks into the past, ``T < 0`` into the
    future, 0 is the identity (CNTK's ``Delay``, :func:`rnnkit.sequence_ops.delay`).

    ``initial_state`` fills the steps that have no source: a number or a tensor broadcastable
    to a step's shape (a buffer, saved with the layer; an ``nn.Parameter`` is learned).
    Input and output: a SequenceBatch of ``[*F]`` steps (see the module example, CNTK's
    trigram expansion).
    """

    def __init__(self, T: int = 1, initial_state: float | Tensor = 0.0) -> None:
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int):
            raise ValueError(f"T: expected an integer, found {T!r}")
        self.T = T
        self.initial_state: float | Tensor
        if isinstance(initial_state, nn.Parameter):
            self.initial_state = initial_state
        elif isinstance(initial_state, Tensor):
            self.register_buffer("initial_state", initial_state.detach().clone())
        elif isinstance(initial_state, (int, float)) and not isinstance(initial_state, bool):
            self.initial_state = float(initial_state)
        else:
            raise TypeError(
                "initial_state: expected a number or a tensor, found "
                f"{type(initial_state).__name__}"
            )

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        return sequence_ops.delay(x, self.initial_state, self.T)


class PastValueWindow(Layer):
    """The last ``window_size`` steps of each sequence as a fixed-size tensor, newest first,
    and a mask of which of them exist (CNTK's ``PastValueWindow``, for attention over a
    sequence).

    Input: a SequenceBatch of ``[*F]`` steps. Output: ``(value, valid)``, ``value`` with a new
    axis of ``window_size`` at ``axis`` of the per-sequence result (``axis=-2`` for ``[F]``
    steps gives ``[B, window_size, F]``) holding step ``L_i - 1 - k`` at position ``k``
    (zeros where ``k >= L_i``), ``valid`` the same with ``[1]`` steps of 1 or 0. Longer
    sequences are truncated. ``go_backwards`` takes the first steps instead (step ``k`` at
    position ``k``).

    CNTK's example, one sequence of three steps:

    >>> x = SequenceBatch.from_list([torch.arange(6.0).reshape(3, 2)])
    >>> value, valid = PastValueWindow(4, axis=-2)(x)
    >>> value.tolist(), valid.tolist()
    ([[[4.0, 5.0], [2.0, 3.0], [0.0, 1.0], [0.0, 0.0]]], [[[1.0], [1.0], [1.0], [0.0]]])
    """

    def __init__(self, window_size: int, axis: int, go_backwards: bool = False) -> None:
        super().__init__()
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size: expected an integer >= 1, found {window_size!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis: expected an integer, found {axis!r}")
        self.window_size, self.axis, self.go_backwards = window_size, axis, go_backwards

    def _stack_dim(self, rank: int) -> int:
        """The dim of ``torch.stack`` on ``[B, *F]`` items for ``axis`` of a ``[*F]`` step's
        result (rank ``len(F) + 1``)."""
        if not -rank <= self.axis < rank:
            raise ValueError(
                f"axis: expected an axis of the {rank}-dimensional window of each sequence "
                f"(in [{-rank}, {rank - 1}]), found {self.axis}"
            )
        return self.axis if self.axis < 0 else self.axis + 1

    def forward(self, x: SequenceBatch) -> tuple[Tensor, Tensor]:
        x = sequence_ops.check_batch(x, "x")
        lengths = x.sorted_lengths
        k = torch.arange(self.window_size)
        step = k.unsqueeze(0) if self.go_backwards else lengths.unsqueeze(1) - 1 - k  # [B, W]
        exists = (step >= 0) & (step < lengths.unsqueeze(1))
        seq = torch.arange(x.batch_size).unsqueeze(1)
        rows = x.step_offsets[step.clamp(0, x.max_length - 1)] + seq
        rows = torch.where(exists, rows, x.data.shape[0])  # the zero row appended below
        data = torch.cat([x.data, x.data.new_zeros((1, *x.feature_shape))])
        device = data.device
        value = data.index_select(0, rows.reshape(-1).to(device))
        value = value.view(x.batch_size, self.window_size, *x.feature_shape)
        ones = [1] * max(len(x.feature_shape), 1)  # valid: a [1] item where a step has [*F]
        valid = exists.to(device=device, dtype=data.dtype).view(x.batch_size, -1, *ones)
        dim = self._stack_dim(len(x.feature_shape) + 1)
        value, valid = torch.movedim(value, 1, dim), torch.movedim(valid, 1, dim)
        order = x.unsorted_indices
        return value.index_select(0, order), valid.index_select(0, order)


class Segments(Layer):
    """Each sequence read ``length`` steps at a time: step ``s`` of the output is steps
    ``s P - f`` to ``s P - f + P - 1`` of the input side by side (``[P * F]``), where ``f``
    is the zero steps put in front of a sequence whose length ``L`` is not a multiple of
    ``P``: the output has ``ceil(L / P)`` steps, the last one ending with the input's last.

    A recurrent layer after it runs ``P`` times fewer steps over the same window, as SegRNN
    does (Lin et al. 2023, "SegRNN: Segment Recurrent Neural Network for Long-Term Time
    Series Forecasting"); ``rnnkit forecast --patch`` puts it in front of the window model.
    The steps in front are zeros, so an input that carries observation masks (as the
    forecast windows do) marks them as not observed.

    Input: a SequenceBatch of ``[F]`` steps, or a tensor ``[B, T, F]`` (every sequence of
    length ``T``); output of the same kind, ``[ceil(L / P), P * F]`` per sequence.

    >>> x = SequenceBatch.from_list([torch.arange(5.0).unsqueeze(1), torch.tensor([[7.0]])])
    >>> [s.tolist() for s in Segments(2)(x).to_list()]
    [[[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]], [[0.0, 7.0]]]
    """

    def __init__(self, length: int) -> None:
        super().__init__()
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length: expected an integer >= 1, found {length!r}")
        self.length = length

    def extra_repr(self) -> str:
        return str(self.length)

    def forward(self, x: Tensor | SequenceBatch) -> Tensor | SequenceBatch:
        p = self.length
        if isinstance(x, Tensor):
            if x.dim() != 3:
                raise ValueError(
                    f"Segments input: expected a [B, T, F] tensor or a SequenceBatch, found "
                    f"shape {tuple(x.shape)}"
                )
            x = _pad_front(x, p, dim=1)
            return x.reshape(x.shape[0], x.shape[1] // p, p * x.shape[2])
        x = sequence_ops.check_batch(x, "x")
        if x.data.dim() != 2:
            raise ValueError(
                f"Segments input: expected a SequenceBatch of [F] steps, found steps of shape "
                f"{tuple(x.feature_shape)}"
            )
        if p == 1:
            return x
        t, b, f = x.max_length, x.batch_size, x.data.shape[1]
        if x.data.shape[0] == t * b:  # one length: the segments of a [T, B, F] view
            steps = _pad_front(x.data.view(t, b, f), p, dim=0)
            n = steps.shape[0] // p
            data = steps.view(n, p, b, f).permute(0, 2, 1, 3).reshape(n, b, p * f)
            if x.in_caller_order:  # the segments are a grid of one length in the same order
                return SequenceBatch._pack_equal(data)
            data, sizes = data.view(n * b, p * f), torch.full((n,), b, dtype=torch.int64)
        else:
            rows, counts = _segment_rows(x._sorted_lengths, x._step_offsets, p, x.data.shape[0])
            padded = torch.cat([x.data, x.data.new_zeros(1, f)])
            data = padded.index_select(0, torch.from_numpy(rows).to(padded.device))
            data, sizes = data.reshape(-1, p * f), torch.from_numpy(counts)
        return SequenceBatch(data, sizes, x.sorted_indices, x.unsorted_indices)


def _pad_front(x: Tensor, p: int, dim: int) -> Tensor:
    """``x`` with zero steps put in front along ``dim`` up to a multiple of ``p`` steps."""
    front = -x.shape[dim] % p
    if not front:
        return x
    shape = list(x.shape)
    shape[dim] = front
    return torch.cat([x.new_zeros(shape), x], dim)


def _segment_rows(
    lengths: np.ndarray, offsets: np.ndarray, p: int, zero: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of packed data that :class:`Segments` gathers, output row by output row and
    ``P`` per row (``zero``, the appended zero row, for the steps in front), and the output's
    ``batch_sizes``; ``lengths`` sorted (decreasing), ``offsets`` the input's first row per
    step."""
    segments = -(-lengths // p)  # ceil(L / P), still decreasing
    front = segments * p - lengths
    sizes = (segments[None, :] > np.arange(int(segments[0]))[:, None]).sum(1)
    # output step s holds sequences 0 .. sizes[s] - 1 (sorted), time-major like the input
    step = np.repeat(np.arange(len(sizes)), sizes)
    seq = np.arange(len(step)) - (np.cumsum(sizes) - sizes)[step]
    t = step[:, None] * p + np.arange(p)[None, :] - front[seq][:, None]  # input steps [N', P]
    inside = t >= 0
    rows = np.where(inside, offsets[np.clip(t, 0, None)] + seq[:, None], zero)
    return rows.reshape(-1), sizes.astype(np.int64)


class UnfoldFrom(Layer):
    """A generator run from a seed state, one output sequence per input sequence (CNTK's
    ``UnfoldFrom``).

    ``forward(initial_state, x)``: from ``s_0 = initial_state`` it emits
    ``o_t, s_{t+1} = generator_function(s_t)`` (a generator returning one tensor emits its
    new state: ``f(s), f(f(s)), ...``). Sequence ``i`` gets ``ceil(L_i * length_increase)``
    items, ``L_i`` the length of ``x``'s sequence ``i`` (only ``x``'s lengths are read), and
    ends early after the first item ``o`` for which ``until_predicate(o)`` (one value per
    row) is nonzero; that item is kept. Sequences run together while they last; a finished
    one leaves the batch, so the generator must treat rows independently.

    ``initial_state``: a number (a scalar state per sequence), a tensor ``[B, *S]`` (caller
    order), a SequenceBatch (its last step per sequence, as CNTK uses a sequence as initial
    state) or a tuple of tensors. Output: a SequenceBatch of the items, caller order.

    CNTK's test: doubling from 1 over inputs of 3 and 5 steps, then with the length
    increased by 1.6 and a stop after 64.

    >>> x = SequenceBatch.from_list([torch.zeros(3, 1), torch.zeros(5, 1)])
    >>> double_up = lambda s: s * 2
    >>> [s.tolist() for s in UnfoldFrom(double_up)(1.0, x).to_list()]
    [[2.0, 4.0, 8.0], [2.0, 4.0, 8.0, 16.0, 32.0]]
    >>> unfold = UnfoldFrom(double_up, until_predicate=lambda o: o > 63, length_increase=1.6)
    >>> [s.tolist() for s in unfold(1.0, x).to_list()]
    [[2.0, 4.0, 8.0, 16.0, 32.0], [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]]
    """

    def __init__(
        self,
        generator_function: Callable[..., Any],
        until_predicate: Callable[[Tensor], Tensor] | None = None,
        length_increase: float = 1.0,
    ) -> None:
        super().__init__()
        if not callable(generator_function):
            raise TypeError(
                "generator_function: expected a module or function state -> output or "
                f"(output, new state), found {type(generator_function).__name__}"
            )
        if until_predicate is not None and not callable(until_predicate):
            raise TypeError(
                "until_predicate: expected None or a function output -> [B] flags, found "
                f"{type(until_predicate).__name__}"
            )
        if (
            isinstance(length_increase, bool)
            or not isinstance(length_increase, (int, float))
            or not math.isfinite(length_increase)
            or length_increase <= 0
        ):
            raise ValueError(
                f"length_increase: expected a positive number, found {length_increase!r}"
            )
        self.generator_function = generator_function
        self.until_predicate = until_predicate
        self.length_increase = float(length_increase)

    @staticmethod
    def _seed(initial_state: Any, x: SequenceBatch) -> tuple[Tensor, ...]:
        b, data = x.batch_size, x.data
        parts = initial_state if isinstance(initial_state, tuple) else (initial_state,)
        out = []
        for k, part in enumerate(parts):
            where = "initial_state" if len(parts) == 1 else f"initial_state[{k}]"
            if isinstance(part, SequenceBatch):
                part = part.last()
            if isinstance(part, (int, float)) and not isinstance(part, bool):
                part = data.new_full((b,), float(part))
            if not isinstance(part, Tensor) or part.dim() == 0 or part.shape[0] != b:
                found = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(
                    f"{where}: expected a number, a [B={b}, ...] tensor or a SequenceBatch of "
                    f"B={b} sequences, found {found}"
                )
            out.append(part)
        return tuple(out)

    def _stops(self, item: Tensor) -> Tensor:
        if self.until_predicate is None:
            return torch.zeros(item.shape[0], dtype=torch.bool)
        flags = torch.as_tensor(self.until_predicate(item))
        if flags.numel() != item.shape[0]:
            raise ValueError(
                f"until_predicate: expected one value per sequence ({item.shape[0]}), found "
                f"shape {tuple(flags.shape)}"
            )
        return flags.detach().reshape(-1).cpu() != 0

    def forward(self, initial_state: Any, x: SequenceBatch) -> SequenceBatch:
        x = sequence_ops.check_batch(x, "x")
        state = self._seed(initial_state, x)
        limits = torch.tensor(
            [sequence_ops.repeat_length(n, self.length_increase) for n in x.lengths.tolist()]
        )
        alive = torch.arange(x.batch_size)  # caller indices of the sequences still running
        items, owners, steps = [], [], []
        t = 0
        while alive.numel():
            result = self.generator_function(state[0] if len(state) == 1 else state)
            if isinstance(result, tuple) and len(result) == 2:
                item, new_state = result
            else:
                item, new_state = result, result
            if not isinstance(item, Tensor) or item.dim() == 0 or item.shape[0] != alive.numel():
                raise ValueError(
                    f"generator_function: expected an output of {alive.numel()} rows (one per "
                    "running sequence), found "
                    + (
                        f"shape {tuple(item.shape)}"
                        if isinstance(item, Tensor)
                        else type(item).__name__
                    )
                )
            items.append(item)
            owners.append(alive)
            steps.append(torch.full_like(alive, t))
            t += 1
            going = ~(self._stops(item) | (limits[alive] <= t))
            alive = alive[going]
            keep = going.nonzero().squeeze(1)
            new = new_state if isinstance(new_state, tuple) else (new_state,)
            state = tuple(s.index_select(0, keep.to(s.device)) for s in new)
        owner, step = torch.cat(owners), torch.cat(steps)
        order = torch.argsort(owner * t + step)  # each caller sequence's items in turn
        flat = torch.cat(items).index_select(0, order.to(items[0].device))
        lengths = torch.bincount(owner, minlength=x.batch_size).tolist()
        return SequenceBatch.from_list(list(flat.split(lengths)))


# ---------------------------------------------------------------------------- normalisers


class Stabilizer(Layer):
    """Droppo's self-stabiliser (CNTK's ``Stabilizer``): ``y = beta * x`` with one learned
    scalar, ``beta = softplus(steepness * param) / steepness`` (positive, and linear in
    ``param`` around 1), ``param`` starting at ``log(exp(steepness) - 1) / steepness`` so that
    ``beta = 1`` at first: a new stabiliser changes nothing. With
    ``enable_self_stabilization=False`` it is the identity and has no parameter.

    Input: a tensor or a SequenceBatch (any step shape); output: the same.

    CNTK's test: a stabiliser starts with no effect.

    >>> Stabilizer()(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
    [[1.0, 2.0, 3.0, 4.0]]
    >>> round(Stabilizer().param.item(), 7)  # CNTK's 0.99537863 for steepness 4, in float32
    0.9953786
    """

    def __init__(self, steepness: float = 4.0, enable_self_stabilization: bool = True) -> None:
        super().__init__()
        if not (isinstance(steepness, (int, float)) and steepness > 0):
            raise ValueError(f"steepness: expected a positive number, found {steepness!r}")
        self.steepness = float(steepness)
        self.enable_self_stabilization = enable_self_stabilization
        init = math.log(math.expm1(self.steepness)) / self.steepness
        self.param = nn.Parameter(torch.tensor(init)) if enable_self_stabilization else None

    @property
    def beta(self) -> Tensor | None:
        """The factor, ``softplus(steepness * param) / steepness`` (None when disabled)."""
        if self.param is None:
            return None
        return nn.functional.softplus(self.param, beta=self.steepness)

    def forward(self, x: Tensor | SequenceBatch) -> Any:
        rows = _rows(x, "Stabilizer")
        beta = self.beta
        return x if beta is None else _same_kind(x, rows * beta.to(rows.dtype))


class LayerNormalization(Layer):
    """CNTK's layer normalisation of each step over its whole shape ``F``:
    ``y = (x - mean(x)) / (std(x) + epsilon) * scale + bias``, ``std`` the population
    standard deviation; ``scale`` and ``bias`` are learned, of shape ``F``.

    Unlike ``torch.nn.functional.layer_norm``, which divides by ``sqrt(var + epsilon)``,
    CNTK adds ``epsilon`` to the standard deviation; with ``epsilon=0`` they agree.
    ``normalized_shape`` is ``F``; left None, it is read from the first input (the parameters
    are materialised then, as torch's Lazy modules do).

    Input: a SequenceBatch of ``[*F]`` steps, or a tensor ``[B, *F]`` (each row normalised
    over all its other axes); output: the same.

    CNTK's docstring example (the result has mean 1 and standard deviation 2):

    >>> ln = LayerNormalization(initial_scale=2, initial_bias=1)
    >>> [round(v, 5) for v in ln(torch.tensor([[4.0, 0.0, 0.0, 4.0]]))[0].tolist()]
    [2.99999, -0.99999, -0.99999, 2.99999]
    >>> tuple(ln.scale.shape), tuple(ln.bias.shape)
    ((4,), (4,))
    """

    def __init__(
        self,
        initial_scale: float = 1.0,
        initial_bias: float = 0.0,
        epsilon: float = 1e-5,
        normalized_shape: int | tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
            raise ValueError(f"epsilon: expected a number >= 0, found {epsilon!r}")
        self.initial_scale, self.initial_bias = float(initial_scale), float(initial_bias)
        self.epsilon = float(epsilon)
        self.normalized_shape: tuple[int, ...] | None = None
        self.scale = cast(nn.Parameter, UninitializedParameter())
        self.bias = cast(nn.Parameter, UninitializedParameter())
        if normalized_shape is not None:
            shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
            self._materialize(tuple(shape), torch.device("cpu"), torch.get_default_dtype())

    def _materialize(
        self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
    ) -> None:
        self.normalized_shape = shape
        for p, value in ((self.scale, self.initial_scale), (self.bias, self.initial_bias)):
            if is_lazy(p):
                p.materialize(shape, device=device, dtype=dtype)
            with torch.no_grad():
                p.fill_(value)

    def forward(self, x: Tensor | SequenceBatch) -> Any:
        rows = _rows(x, "LayerNormalization")
        features = tuple(rows.shape[1:])
        if self.normalized_shape is None:
            self._materialize(features, rows.device, rows.dtype)
        elif features != self.normalized_shape:
            raise ValueError(
                f"LayerNormalization input: expected steps of shape {self.normalized_shape}, "
                f"found {features}"
            )
        dims = tuple(range(1, rows.dim()))
        centred = rows - rows.mean(dim=dims, keepdim=True)
        std = centred.square().mean(dim=dims, keepdim=True).sqrt()
        return _same_kind(x, centred / (std + self.epsilon) * self.scale + self.bias)


def _delay_config(module: Delay) -> dict[str, Any]:
    initial = module.initial_state
    return {
        "T": module.T,
        "initial_state": initial.detach() if isinstance(initial, Tensor) else initial,
    }


def _unfold_from_config(module: UnfoldFrom) -> dict[str, Any]:
    for name in ("generator_function", "until_predicate"):
        fn = getattr(module, name)
        if fn is not None and not isinstance(fn, nn.Module):
            raise TypeError(
                f"UnfoldFrom.{name}: a plain function cannot be saved; pass a module "
                "(registered with rnnkit.register_module) to save the layer"
            )
    return {
        "generator_function": module.generator_function,
        "until_predicate": module.until_predicate,
        "length_increase": module.length_increase,
    }


SAVED_MODULES: list[SavedModule] = [
    (Delay, _delay_config, "rnnkit.Delay"),
    (Segments, lambda m: {"length": m.length}, "rnnkit.Segments"),
    (
        PastValueWindow,
        lambda m: {"window_size": m.window_size, "axis": m.axis, "go_backwards": m.go_backwards},
        "rnnkit.PastValueWindow",
    ),
    (
        Stabilizer,
        lambda m: {
            "steepness": m.steepness,
            "enable_self_stabilization": m.enable_self_stabilization,
        },
        "rnnkit.Stabilizer",
    ),
    (
        LayerNormalization,
        lambda m: {
            "initial_scale": m.initial_scale,
            "initial_bias": m.initial_bias,
            "epsilon": m.epsilon,
            "normalized_shape": m.normalized_shape,
        },
        "rnnkit.LayerNormalization",
    ),
    (UnfoldFrom, _unfold_from_config, "rnnkit.UnfoldFrom"),
]
