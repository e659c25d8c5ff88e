"""Drop-ins for ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``, built on rnnkit's cells
and :class:`rnnkit.recurrence.RecurrenceFrom`.

Same constructor arguments, parameter names (``weight_ih_l0``, ``weight_hh_l1_reverse``,
``weight_hr_l0``), initialisation and outputs as torch.nn, so ``load_state_dict`` works in both
directions. The input is a padded tensor (``[T, B, I]``, ``[B, T, I]`` with ``batch_first``, or
``[T, I]`` unbatched), a ``PackedSequence`` (the output is then one), or a
:class:`~rnnkit.sequences.SequenceBatch` (ragged without packing or padding; the output is one).

What torch.nn lacks, as constructor options: ``layer_norm`` (LSTM only: Ba et al. 2016, see
:class:`rnnkit.cells.LSTMCell`) and ``learned_initial_state`` (one trainable ``h_0`` (and
``c_0``) per layer and direction, used when no initial state is passed), ``recurrent_dropout``
(variational: one mask per sequence on the state entering the recurrent product, Gal &
Ghahramani 2016) and ``zoneout`` (Krueger et al. 2017); with either, the layers run on the
step loop instead of the fused kernel.

>>> import torch
>>> from rnnkit.nn import LSTM
>>> _ = torch.manual_seed(0)
>>> ours, theirs = LSTM(3, 4, num_layers=2), torch.nn.LSTM(3, 4, num_layers=2)
>>> _ = theirs.load_state_dict(ours.state_dict())
>>> x = torch.randn(5, 2, 3)
>>> (out, (h, c)), (ref, (h_ref, c_ref)) = ours(x), theirs(x)
>>> out.shape, bool(torch.allclose(out, ref, atol=1e-6)), bool(torch.allclose(c, c_ref, atol=1e-6))
(torch.Size([5, 2, 4]), True, True)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells import GRUCell, LSTMCell, RNNCell, as_tuple
from rnnkit.recurrence import RecurrenceFrom
from rnnkit.sequences import SequenceBatch

Input = Tensor | PackedSequence | SequenceBatch


class _Regularized(nn.Module):
    r"""A cell with variational recurrent dropout and zoneout around its step.

    .. code-block:: text

        recurrent dropout (Gal & Ghahramani 2016), rate q:  h_in = m ⊙ h / (1 - q), one mask
            m ~ Bernoulli(1 - q) per sequence and unit, the same at every step (training only)
        zoneout (Krueger et al. 2017), rate p:  s' = z ⊙ s + (1 - z) ⊙ cell(x, s), z ~
            Bernoulli(p) per step and unit for every state tensor; in evaluation
            s' = p s + (1 - p) cell(x, s)

    The mask of recurrent dropout is drawn at the first step after :meth:`new_mask` (the engine
    gives the active rows of a step as a prefix of the sorted batch, so rows keep their mask).
    """

    def __init__(self, cell: nn.Module, recurrent_dropout: float, zoneout: float) -> None:
        super().__init__()
        self.inner: list[Any] = [cell]  # its parameters are registered by the owner
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.recurrent_dropout, self.zoneout = recurrent_dropout, zoneout
        self._mask: Tensor | None = None

    def new_mask(self) -> None:
        self._mask = None

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        return self.inner[0].initial_state(batch_size, device, dtype)

    def forward(self, x: Tensor, state: Any = None) -> Any:
        cell = self.inner[0]
        old = as_tuple(
            cell.initial_state(x.shape[0], x.device, x.dtype) if state is None else state
        )
        h = old[0]
        if self.training and self.recurrent_dropout > 0:
            if self._mask is None or self._mask.shape[0] < h.shape[0]:
                keep = 1.0 - self.recurrent_dropout
                self._mask = torch.bernoulli(torch.full_like(h, keep)) / keep
            h = h * self._mask[: h.shape[0]]
        new = as_tuple(cell(x, h if len(old) == 1 else (h, *old[1:])))
        p = self.zoneout
        if p > 0:
            if self.training:
                new = tuple(
                    torch.where(torch.rand_like(n) < p, o, n) for o, n in zip(old, new, strict=True)
                )
            else:
                new = tuple(p * o + (1 - p) * n for o, n in zip(old, new, strict=True))
        return new[0] if len(new) == 1 else new


class _RNNBase(nn.Module, ABC):
    """A stack of (bidirectional) recurrences over rnnkit cells with torch.nn's interface."""

    mode: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
        layer_norm: bool = False,
        learned_initial_state: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers: expected an integer >= 1, found {num_layers!r}")
        if not 0.0 <= float(dropout) <= 1.0 or isinstance(dropout, bool):
            raise ValueError(f"dropout: expected a number in [0, 1], found {dropout!r}")
        for name, rate in (("recurrent_dropout", recurrent_dropout), ("zoneout", zoneout)):
            if isinstance(rate, bool) or not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1), found {rate!r}")
        self.recurrent_dropout, self.zoneout = float(recurrent_dropout), float(zoneout)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', found {nonlinearity!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.nonlinearity, self.layer_norm = nonlinearity, layer_norm
        self.num_directions = 2 if bidirectional else 1
        out_size = proj_size or hidden_size
        # The recurrences are kept out of the module tree: their parameters are registered on
        # this module under torch.nn's names (the same Parameter objects), so state_dict and
        # load_state_dict speak torch.nn.
        self._layers: list[list[RecurrenceFrom]] = []
        self._regularized: list[_Regularized] = []
        for layer in range(num_layers):
            size = input_size if layer == 0 else out_size * self.num_directions
            row = []
            for direction in range(self.num_directions):
                cell = self._cell(size).to(device=device, dtype=dtype)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                    p = getattr(cell, name, None)
                    if p is not None:
                        self.register_parameter(name + suffix, p)
                if layer_norm:
                    for name in ("layer_norm_ih", "layer_norm_hh", "layer_norm_c"):
                        self.add_module(name + suffix, getattr(cell, name))
                if recurrent_dropout or zoneout:
                    cell = _Regularized(cell, self.recurrent_dropout, self.zoneout)
                    self._regularized.append(cell)
                row.append(RecurrenceFrom(cell, go_backwards=bool(direction)))
            self._layers.append(row)
        self.learned_initial_state = learned_initial_state
        if learned_initial_state:
            shape = (num_layers * self.num_directions,)
            self.h_0 = nn.Parameter(torch.zeros(*shape, out_size, device=device, dtype=dtype))
            if self.mode == "LSTM":
                self.c_0 = nn.Parameter(
                    torch.zeros(*shape, hidden_size, device=device, dtype=dtype)
                )
        self.reset_parameters()

    @abstractmethod
    def _cell(self, input_size: int) -> nn.Module:
        """A fresh cell of this layer's kind reading ``input_size`` features."""

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every weight and bias ``U(-1/√H, 1/√H)``; layer-norm
        gains 1 and biases 0; a learned initial state zero."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith(("weight_", "bias_")):
                nn.init.uniform_(p, -bound, bound)
            elif name.startswith(("h_0", "c_0")):
                nn.init.zeros_(p)
        for m in self.children():
            if isinstance(m, nn.LayerNorm):
                m.reset_parameters()

    def _sequences(self, x: Input) -> tuple[SequenceBatch, bool]:
        """``x`` as a SequenceBatch, and whether it came as an unbatched ``[T, I]`` tensor."""
        if isinstance(x, SequenceBatch):
            return x, False
        if isinstance(x, PackedSequence):
            b = int(x.batch_sizes[0])
            order = torch.arange(b, device=x.data.device)
            sorted_i = order if x.sorted_indices is None else x.sorted_indices
            unsorted_i = order if x.unsorted_indices is None else x.unsorted_indices
            return SequenceBatch(x.data, x.batch_sizes, sorted_i, unsorted_i), False
        if isinstance(x, Tensor) and x.dim() in (2, 3):
            unbatched = x.dim() == 2
            padded = x.unsqueeze(1) if unbatched else x
            batch_first = self.batch_first and not unbatched
            t, b = (padded.shape[1], padded.shape[0]) if batch_first else padded.shape[:2]
            return SequenceBatch.from_padded(padded, [t] * b, batch_first=batch_first), unbatched
        found = f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(
            f"input: {self.mode} expected a tensor [T, B, I] ([B, T, I] with batch_first, "
            f"[T, I] unbatched), a PackedSequence or a SequenceBatch, found {found}"
        )

    def _check_input(self, x: SequenceBatch) -> None:
        weight = self.weight_ih_l0
        if x.data.dtype != weight.dtype and not torch.is_autocast_enabled(x.data.device.type):
            raise TypeError(
                f"input: {self.mode} expected dtype {weight.dtype} (its parameters'), "
                f"found {x.data.dtype}"
            )
        if x.data.device != weight.device:
            raise ValueError(
                f"input: {self.mode} expected device {weight.device} (its parameters'), "
                f"found {x.data.device}"
            )
        if x.data.shape[1:] != (self.input_size,):
            raise ValueError(
                f"input: {self.mode} expected steps of size input_size={self.input_size}, "
                f"found steps of shape {tuple(x.data.shape[1:])}"
            )

    def _start(self, hx: Any, batch: int, unbatched: bool, x: SequenceBatch) -> tuple[Tensor, ...]:
        """The initial state as ``[L*D, B, ...]`` tensors (``(h_0,)`` or ``(h_0, c_0)``)."""
        ld = self.num_layers * self.num_directions
        sizes = [self.proj_size or self.hidden_size]
        names = ["h_0"]
        if self.mode == "LSTM":
            sizes.append(self.hidden_size)
            names.append("c_0")
        if hx is None:
            if self.learned_initial_state:
                learned = [self.h_0] + ([self.c_0] if self.mode == "LSTM" else [])
                return tuple(p.unsqueeze(1).expand(ld, batch, p.shape[-1]) for p in learned)
            return tuple(x.data.new_zeros(ld, batch, size) for size in sizes)
        given = as_tuple(hx)
        if len(given) != len(sizes):
            raise ValueError(
                f"hx: {self.mode} expected {' and '.join(names)} "
                f"({len(sizes)} tensor(s)), found {len(given)}"
            )
        out = []
        for name, size, s in zip(names, sizes, given, strict=True):
            s = s.unsqueeze(1) if unbatched and s.dim() == 2 else s
            if tuple(s.shape) != (ld, batch, size):
                raise ValueError(
                    f"hx: {self.mode} expected {name} of shape {(ld, batch, size)}, "
                    f"found {tuple(s.shape)}"
                )
            if s.dtype != x.data.dtype or s.device != x.data.device:
                raise TypeError(
                    f"hx: {self.mode} expected {name} of dtype {x.data.dtype} on "
                    f"{x.data.device} (the input's), found {s.dtype} on {s.device}"
                )
            out.append(s)
        return tuple(out)

    def forward(self, input: Input, hx: Any = None) -> tuple[Input, Any]:
        """``(output, h_n)`` (GRU, RNN) or ``(output, (h_n, c_n))`` (LSTM), as torch.nn.

        ``output`` has the input's form (padded tensor, PackedSequence or SequenceBatch) with
        ``D * (proj_size or hidden_size)`` features; ``h_n``/``c_n`` are ``[L*D, B, ...]``
        (``[L*D, ...]`` for an unbatched input), batch in the caller's order.
        """
        x, unbatched = self._sequences(input)
        self._check_input(x)
        for cell in self._regularized:
            cell.new_mask()
            cell.training = self.training
        start = self._start(hx, x.batch_size, unbatched, x)
        finals: list[tuple[Tensor, ...]] = []
        layer_input = x
        for layer, row in enumerate(self._layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = layer_input.with_data(
                    nn.functional.dropout(layer_input.data, self.dropout, training=True)
                )
            outs = []
            for direction, recurrence in enumerate(row):
                k = layer * self.num_directions + direction
                state = tuple(s[k] for s in start)
                out, final = recurrence.with_final_state(
                    state[0] if len(state) == 1 else state, layer_input
                )
                outs.append(out.data)
                finals.append(as_tuple(final))
            data = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
            layer_input = x.with_data(data)
        stacked = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        if unbatched:
            stacked = tuple(s.squeeze(1) for s in stacked)
        state_out: Any = stacked if self.mode == "LSTM" else stacked[0]
        return self._output(input, layer_input, unbatched), state_out

    def _output(self, input: Input, out: SequenceBatch, unbatched: bool) -> Input:
        if isinstance(input, SequenceBatch):
            return out
        if isinstance(input, PackedSequence):
            return PackedSequence(
                out.data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        padded, _ = out.to_padded()  # [B, T, F]
        if unbatched:
            return padded.squeeze(0)
        return padded if self.batch_first else padded.transpose(0, 1)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("proj_size", 0),
            ("layer_norm", False),
            ("learned_initial_state", False),
            ("recurrent_dropout", 0.0),
            ("zoneout", 0.0),
        ):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class LSTM(_RNNBase):
    """``torch.nn.LSTM`` over :class:`rnnkit.cells.LSTMCell` (plus ``layer_norm`` and
    ``learned_initial_state``); returns ``(output, (h_n, c_n))``."""

    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        layer_norm: bool = False,
        learned_initial_state: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            layer_norm=layer_norm,
            learned_initial_state=learned_initial_state,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )

    def _cell(self, input_size: int) -> nn.Module:
        return LSTMCell(
            input_size, self.hidden_size, self.bias, self.proj_size, layer_norm=self.layer_norm
        )


class GRU(_RNNBase):
    """``torch.nn.GRU`` over :class:`rnnkit.cells.GRUCell` (``reset='after'``); returns
    ``(output, h_n)``."""

    mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        learned_initial_state: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            learned_initial_state=learned_initial_state,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )

    def _cell(self, input_size: int) -> nn.Module:
        return GRUCell(input_size, self.hidden_size, self.bias)


class RNN(_RNNBase):
    """``torch.nn.RNN`` (Elman, ``'tanh'`` or ``'relu'``) over :class:`rnnkit.cells.RNNCell`;
    returns ``(output, h_n)``."""

    mode = "RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: Literal["tanh", "relu"] = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        learned_initial_state: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            nonlinearity=nonlinearity,
            learned_initial_state=learned_initial_state,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )

    def _cell(self, input_size: int) -> nn.Module:
        return RNNCell(input_size, self.hidden_size, self.bias, self.nonlinearity)
