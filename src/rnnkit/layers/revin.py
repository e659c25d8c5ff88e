"""Reversible instance normalisation: RevIN (Kim et al., ICLR 2022, "Reversible Instance
Normalization for Accurate Time-Series Forecasting against Distribution Shift").

Each input window is normalised by its own mean and standard deviation, per variable, and the
model's forecast is mapped back with the same statistics, so a network that learned the shape
of a series on one range of values forecasts it on another (a trend that carries the test part
above the training range). For variable ``k`` of one window, with ``E`` and ``Var`` (the
population variance, divided by the count) over the window's *observed* steps:

.. code-block:: text

    x_hat = gamma_k * (x - E[x]) / sqrt(Var[x] + eps) + beta_k            normalize
    y     = sqrt(Var[x] + eps) * (y_hat - beta_k) / (gamma_k + eps^2) + E[x]   denormalize

``gamma`` (``weight``, ones) and ``beta`` (``bias``, zeros) are learned with ``affine=True``;
``eps = 1e-5`` as in the paper's code, which also adds ``eps^2`` to ``gamma`` before dividing
(kept here: the inverse is exact up to that 1e-10). The statistics are not detached: for data
inputs this changes nothing, and a model whose inputs carry gradients gets the exact ones.

Masks: a step counts where its mask is nonzero (by default where the value is not NaN), so
missing values, and the values rnnkit fills in for them, never move the statistics. A window
with fewer than 2 observed values of a variable has no spread to divide by: its statistics are
mean 0 and standard deviation 1, so that variable passes through unchanged (apart from the
affine map) and its forecast comes back unchanged too.

Two levels: :class:`RevIN` is the layer (``normalize(x, mask) -> (x_hat, stats)`` and
``denormalize(y, stats)``), for any model; :class:`RevINForecaster` wraps a forecaster of
rnnkit's window examples (:func:`rnnkit.forecasting.forecast_windows`) so that nothing else
changes: the same examples, criterion, :class:`~rnnkit.training.Trainer` and
:func:`~rnnkit.forecasting.forecasts`. Both are listed in :data:`SAVED_MODULES` (``rnnkit.save``
and ``rnnkit.load`` know them).

>>> revin = RevIN(1)
>>> x = torch.tensor([[[1.0], [2.0], [3.0], [float("nan")]]])  # [B=1, T=4, V=1]
>>> x_hat, stats = revin.normalize(x)
>>> [round(v, 4) for v in x_hat[0, :3, 0].tolist()], stats.mean.tolist()
([-1.2247, 0.0, 1.2247], [[2.0]])
>>> y = revin.denormalize(torch.tensor([[[0.0], [1.0]]]), stats)  # [B, H=2, V]: 2 + sqrt(2/3) y
>>> [round(v, 4) for v in y[0, :, 0].tolist()]
[2.0, 2.8165]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.layers import Layer, SavedModule
from rnnkit.sequences import SequenceBatch

__all__ = ["SAVED_MODULES", "InstanceStats", "RevIN", "RevINForecaster"]


class InstanceStats(NamedTuple):
    """Each window's statistics, caller order: ``mean`` ``[B, V]`` and ``std`` ``[B, V]``
    (``sqrt(Var + eps)``; mean 0 and std 1 where fewer than 2 values were observed)."""

    mean: Tensor
    std: Tensor


def _rows(x: Tensor | SequenceBatch, name: str) -> tuple[Tensor, Tensor, int]:
    """``x`` as rows ``[N, V]``, the caller index of each row's window ``[N]``, and B."""
    if isinstance(x, SequenceBatch):
        if x.data.dim() != 2:
            raise ValueError(
                f"{name}: expected a SequenceBatch of [V] steps, found steps of shape "
                f"{tuple(x.feature_shape)}"
            )
        b = x.batch_size
        return x.data, x.sorted_indices[x.padded_index % b], b
    if isinstance(x, Tensor):
        if x.dim() != 3:
            raise ValueError(f"{name}: expected a [B, T, V] tensor, found shape {tuple(x.shape)}")
        b, t, v = x.shape
        window = torch.arange(b, device=x.device).repeat_interleave(t)
        return x.reshape(b * t, v), window, b
    raise TypeError(
        f"{name}: expected a [B, T, V] tensor or a SequenceBatch of [V] steps, found "
        f"{type(x).__name__}"
    )


def _caller_order(stats: InstanceStats, x: SequenceBatch) -> InstanceStats:
    """``stats`` of ``x``'s windows in sorted order, in the caller's order."""
    if not torch.compiler.is_compiling() and x.in_caller_order:
        return stats
    order = x.unsorted_indices
    return InstanceStats(stats.mean.index_select(0, order), stats.std.index_select(0, order))


def _mask_rows(
    mask: Tensor | SequenceBatch | None, x: Tensor | SequenceBatch, rows: Tensor
) -> Tensor:
    """``[N, V]`` bool: where ``mask`` (``x``'s layout) is nonzero; default where ``x`` is not
    NaN."""
    if mask is None:
        return ~torch.isnan(rows)
    if isinstance(x, SequenceBatch) and isinstance(mask, SequenceBatch):
        if mask.data.shape != rows.shape or not torch.equal(mask.batch_sizes, x.batch_sizes):
            raise ValueError(
                f"mask: expected x's layout (lengths {x.lengths.tolist()}, steps of "
                f"{rows.shape[1]}), found lengths {mask.lengths.tolist()}, steps of shape "
                f"{tuple(mask.feature_shape)}"
            )
        return mask.data != 0
    if isinstance(x, Tensor) and isinstance(mask, Tensor):
        if mask.shape != x.shape:
            raise ValueError(
                f"mask: expected x's shape {tuple(x.shape)}, found {tuple(mask.shape)}"
            )
        return mask.reshape(rows.shape) != 0
    raise TypeError(
        f"mask: expected the same kind as x ({type(x).__name__}), found {type(mask).__name__}"
    )


class RevIN(nn.Module):
    """Reversible instance normalisation over ``V`` variables (the module docstring has the
    equations, the masks and the rule for windows with fewer than 2 observed values).

    Args:
        num_variables: V.
        affine: learn ``weight`` ``[V]`` (gamma, ones) and ``bias`` ``[V]`` (beta, zeros).
        eps: added to the variance (and, squared, to gamma before dividing by it).

    Calling the layer normalises: ``revin(x, mask)`` is ``revin.normalize(x, mask)``.

    >>> revin = RevIN(2, affine=False)
    >>> x = torch.tensor([[[1.0, 10.0], [3.0, 30.0]]])
    >>> x_hat, stats = revin(x)
    >>> stats.mean.tolist(), [round(s, 3) for s in stats.std[0].tolist()]
    ([[2.0, 20.0]], [1.0, 10.0])
    >>> torch.allclose(revin.denormalize(x_hat, stats), x)
    True
    """

    def __init__(self, num_variables: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if isinstance(num_variables, bool) or not isinstance(num_variables, int):
            raise TypeError(f"num_variables: expected an int, found {num_variables!r}")
        if num_variables < 1:
            raise ValueError(f"num_variables: expected at least 1, found {num_variables}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"eps: expected a positive number, found {eps!r}")
        self.num_variables, self.affine, self.eps = num_variables, bool(affine), float(eps)
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_variables))
            self.bias = nn.Parameter(torch.zeros(num_variables))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        return f"{self.num_variables}, affine={self.affine}, eps={self.eps}"

    def forward(
        self, x: Tensor | SequenceBatch, mask: Tensor | SequenceBatch | None = None
    ) -> tuple[Any, InstanceStats]:
        return self.normalize(x, mask)

    def statistics(
        self, x: Tensor | SequenceBatch, mask: Tensor | SequenceBatch | None = None
    ) -> InstanceStats:
        """Each window's mean and standard deviation over its observed values.

        ``x``: ``[B, T, V]``, or a SequenceBatch of ``[V]`` steps (windows of any lengths);
        ``mask``: the same layout, nonzero where observed (default: where ``x`` is not NaN).
        """
        if isinstance(x, SequenceBatch) and (grid := self._grid_statistics(x, mask)) is not None:
            return _caller_order(grid, x)
        rows, window, b = _rows(x, "x")
        if rows.shape[1] != self.num_variables:
            raise ValueError(
                f"x: expected {self.num_variables} variables per step, found {rows.shape[1]}"
            )
        seen = _mask_rows(mask, x, rows)
        zeros = rows.new_zeros(b, self.num_variables)
        return self._moments(
            rows, seen, lambda t: zeros.index_add(0, window, t), lambda m: m[window]
        )

    def _moments(
        self,
        values: Tensor,
        seen: Tensor,
        total: Callable[[Tensor], Tensor],
        per_row: Callable[[Tensor], Tensor],
    ) -> InstanceStats:
        """The statistics of the module docstring from ``values`` and ``seen`` (one layout):
        ``total(t)`` sums ``t`` over each window (``[B, V]``), ``per_row(s)`` gives each value
        its window's ``s``."""
        zero = values.new_zeros(())
        count = total(seen.to(values.dtype))
        enough = count >= 2
        per = count.clamp(min=1)
        mean = torch.where(enough, total(torch.where(seen, values, zero)) / per, zero)
        centred = torch.where(seen, values - per_row(mean), zero)
        var = total(centred.square()) / per
        std = torch.where(enough, torch.sqrt(var + self.eps), torch.ones_like(var))
        return InstanceStats(mean, std)

    def _grid_statistics(
        self, x: SequenceBatch, mask: Tensor | SequenceBatch | None
    ) -> InstanceStats | None:
        """For a batch whose sequences share one length (a minibatch of forecast windows):
        each window's statistics ``[B, V]`` in the batch's *sorted* order, computed over the
        ``[T, B, V]`` view of its packed data (no index arithmetic); None for a ragged batch
        or steps of another shape (:meth:`statistics` then indexes the rows, and says what
        is wrong)."""
        t, b = x.max_length, x.batch_size
        if x.data.dim() != 2 or x.data.shape != (t * b, self.num_variables):
            return None
        seen = _mask_rows(mask, x, x.data).view(t, b, -1)
        return self._moments(x.data.view(t, b, -1), seen, lambda v: v.sum(0), lambda m: m)

    def _scaled(self, values: Tensor, stats: InstanceStats) -> Tensor:
        """``values`` ``[..., B, V]`` normalised with ``stats`` (``[B, V]``), then the affine
        map."""
        out = (values - stats.mean) / stats.std
        if self.weight is not None and self.bias is not None:
            out = torch.addcmul(self.bias, out, self.weight)
        return out

    def normalize(
        self, x: Tensor | SequenceBatch, mask: Tensor | SequenceBatch | None = None
    ) -> tuple[Any, InstanceStats]:
        """``(x_hat, stats)``: every value of each window normalised with the window's
        statistics (:meth:`statistics`; unobserved values too, a NaN stays NaN), ``x_hat`` in
        ``x``'s layout."""
        if isinstance(x, SequenceBatch) and (grid := self._grid_statistics(x, mask)) is not None:
            # one length: the same figures, over a [T, B, V] view
            out = self._scaled(x.data.view(x.max_length, x.batch_size, -1), grid)
            return x.with_data(out.reshape(x.data.shape)), _caller_order(grid, x)
        stats = self.statistics(x, mask)
        rows, window, _ = _rows(x, "x")
        out = self._scaled(rows, InstanceStats(stats.mean[window], stats.std[window]))
        if isinstance(x, SequenceBatch):
            return x.with_data(out), stats
        return out.reshape(x.shape), stats

    def denormalize(
        self, y: Tensor, stats: InstanceStats, variables: Sequence[int] | None = None
    ) -> Tensor:
        """``y`` ``[B, ..., V']`` (a forecast of ``variables``, V' of the V; default all) in the
        units of each window's input: the inverse of :meth:`normalize` per variable."""
        index = list(range(self.num_variables)) if variables is None else list(variables)
        bad = [v for v in index if not isinstance(v, int) or not 0 <= v < self.num_variables]
        if bad or not index:
            raise ValueError(
                f"variables: expected indices in 0..{self.num_variables - 1}, found {index}"
            )
        if not isinstance(y, Tensor) or y.dim() < 2 or y.shape[-1] != len(index):
            found = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y: expected a [B, ..., {len(index)}] tensor, found {found}")
        if y.shape[0] != stats.mean.shape[0]:
            raise ValueError(
                f"y: expected {stats.mean.shape[0]} windows (the statistics'), found {y.shape[0]}"
            )
        view = (y.shape[0],) + (1,) * (y.dim() - 2) + (len(index),)
        mean, std = stats.mean, stats.std
        weight: Tensor | None = self.weight
        bias: Tensor | None = self.bias
        if index != list(range(self.num_variables)):  # some variables: pick theirs
            mean, std = mean[:, index], std[:, index]
            weight = weight[index] if weight is not None else None
            bias = bias[index] if bias is not None else None
        if weight is not None and bias is not None:
            y = (y - bias) / (weight + self.eps * self.eps)
        return y * std.reshape(view) + mean.reshape(view)


class RevINForecaster(Layer):
    """A window forecaster with RevIN around it, for rnnkit's window examples.

    The features of :func:`~rnnkit.forecasting.forecast_windows` hold, per step, the ``n``
    targets' values (relative to the window's last value), then their ``n`` masks (then any
    known covariates and the horizon flag, passed on unchanged); the model returns ``[B, H n]``,
    the change of each target from the window's last value, step-major. This module normalises
    the ``n`` value columns with :class:`RevIN` (the mask columns say which values count), runs
    ``model`` and denormalises its output per target: examples, labels, loss and
    :func:`~rnnkit.forecasting.forecasts` stay as they are. Residual labels (the change from
    seasonal naive) are no window's units: they are not for this wrapper.

    Args:
        model: reads a SequenceBatch (or a ``[B, T, F]`` tensor) of window features and
            returns ``[B, H n]``.
        targets: n.
        affine, eps: :class:`RevIN`'s.

    >>> from rnnkit import Dense, Fold, LSTMCell
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = RevINForecaster(Fold(LSTMCell(2, 4)) >> Dense(4, 3), targets=1)
    >>> window = torch.tensor([[-2.0, 1.0], [-1.0, 1.0], [0.0, 1.0]])  # values, mask
    >>> x = SequenceBatch.from_list([window, window * torch.tensor([10.0, 1.0])])
    >>> y = model(x)  # the second window is the first one 10 times larger: so is its forecast
    >>> torch.allclose(y[1], 10 * y[0], atol=1e-4)
    True
    """

    def __init__(
        self, model: nn.Module, targets: int, affine: bool = True, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
        self.model = model
        self.revin = RevIN(targets, affine, eps)
        self.targets = targets

    def forward(self, features: Tensor | SequenceBatch) -> Tensor:
        n = self.targets
        data = features.data if isinstance(features, SequenceBatch) else features
        if not isinstance(data, Tensor) or data.shape[-1] < 2 * n:
            found = tuple(data.shape[-1:]) if isinstance(data, Tensor) else type(data).__name__
            raise ValueError(
                f"features: expected steps of at least {2 * n} columns ({n} values, {n} masks), "
                f"found {found}"
            )
        after = data[..., n:]  # the masks, then any known columns and the flag
        inputs: Tensor | SequenceBatch
        if isinstance(features, SequenceBatch):
            values = features.with_data(data[:, :n])
            normed, stats = self.revin.normalize(values, features.with_data(data[:, n : 2 * n]))
            inputs = features.with_data(torch.cat([normed.data, after], dim=-1))
        else:
            normed, stats = self.revin.normalize(data[..., :n], data[..., n : 2 * n])
            inputs = torch.cat([normed, after], dim=-1)
        out = self.model(inputs)
        if isinstance(out, Tensor) and out.dim() == 4 and out.shape[2] == n:
            return self._denormalize_head(out, stats)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] % n:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model: expected an output [B, H * {n}] (a window forecaster) or [B, H, {n}, P] "
                f"(a head of rnnkit.probabilistic), found {shape}"
            )
        b = out.shape[0]
        return self.revin.denormalize(out.reshape(b, -1, n), stats).reshape(b, -1)

    def _denormalize_head(self, out: Tensor, stats: InstanceStats) -> Tensor:
        """A probabilistic head's ``[B, H, n, P]`` forecast of the normalised values as the
        forecast of the window's units: the head's own ``affine`` (quantiles, or location and
        scale, mapped by ``y = shift + scale * y_hat``)."""
        heads = [m for m in self.model.modules() if callable(getattr(m, "affine", None))]
        if not heads:
            raise ValueError(
                f"model: an output of shape {tuple(out.shape)} needs a head of "
                "rnnkit.probabilistic (with an affine method) in the model, found none"
            )
        shift, scale = stats.mean, stats.std
        if self.revin.weight is not None and self.revin.bias is not None:
            gain = self.revin.weight + self.revin.eps * self.revin.eps
            shift, scale = shift - self.revin.bias * scale / gain, scale / gain
        return heads[-1].affine(out, shift.unsqueeze(1), scale.unsqueeze(1))  # type: ignore[operator]


SAVED_MODULES: list[SavedModule] = [
    (
        RevIN,
        lambda m: {"num_variables": m.num_variables, "affine": m.affine, "eps": m.eps},
        "rnnkit.RevIN",
    ),
    (
        RevINForecaster,
        lambda m: {
            "model": m.model,
            "targets": m.targets,
            "affine": m.revin.affine,
            "eps": m.revin.eps,
        },
        "rnnkit.RevINForecaster",
    ),
]
