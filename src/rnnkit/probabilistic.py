"""Probabilistic forecasts: quantile and distribution heads, their losses, interval and CRPS
scores.

A head replaces the point forecaster's last ``Dense(hidden, H n)``: it maps features ``[B, I]``
(or a SequenceBatch of ``[I]`` steps, the stream model) to ``[B, H, n, P]``, ``P`` numbers per
forecast entry (horizon step and target):

* :class:`QuantileHead`: ``Q`` quantiles, which never cross (the lowest plus cumulative
  softplus increments), trained with :func:`quantile_loss` (pinball);
* :class:`GaussianHead`: location and scale (softplus plus a floor), trained with
  :func:`gaussian_nll`;
* :class:`StudentTHead`: location, scale and degrees of freedom (a floor, 2 by default, plus
  softplus), trained with :func:`student_t_nll`.

Each head has ``loss(output, target)`` (its measure, for :class:`~rnnkit.training.Criterion`),
``point`` (the median, or the mean), ``quantile(output, p)``, ``interval(output, level)``,
``sample(output, n, generator)`` and ``affine(output, shift, scale)`` (the forecast of
``shift + scale * y``, to go back to the series' units).

The losses follow :func:`rnnkit.forecasting.masked_squared_error`: targets are ``[B, H, n]``
(or ``[B, H n]``, step-major, the layout of :mod:`rnnkit.forecasting`'s labels) with NaN where
unobserved; each sample (row) contributes the mean of its observed entries' losses (0 when it
has none) and the loss is the **sum over samples**, the convention of
:mod:`rnnkit.training.criteria`. A missing target is never counted, and no gradient flows
through it.

The scores take NumPy arrays and return floats, means over the entries whose truth is
observed (NaN truths are skipped): :func:`interval_coverage`, :func:`interval_width`,
:func:`mean_pinball_loss`, and the continuous ranked probability score (CRPS,
``integral (F(x) - 1{x >= y})^2 dx``, in the units of the series) in closed form for a
Gaussian (:func:`crps_gaussian`) and a Student-t (:func:`crps_student_t`), from quantiles
(:func:`crps_from_quantiles`) and from samples (:func:`crps_from_samples`).

>>> import torch
>>> head = QuantileHead(3, horizon=2, quantiles=(0.1, 0.5, 0.9))
>>> out = head(torch.randn(4, 3))
>>> tuple(out.shape), bool((out.diff(dim=-1) >= 0).all())
((4, 2, 1, 3), True)
>>> lower, upper = head.interval(out, 0.8)
>>> torch.equal(lower, out[..., 0]), torch.equal(upper, out[..., 2])
(True, True)

References: T. Gneiting and A. E. Raftery, Strictly proper scoring rules, prediction, and
estimation, JASA 102 (2007); A. Jordan, F. Krueger and S. Lerch, Evaluating probabilistic
forecasts with scoringRules, Journal of Statistical Software 90 (2019), section on the
Student-t CRPS; R. Koenker and G. Bassett, Regression quantiles, Econometrica 46 (1978).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.layers import Dense, Layer
from rnnkit.sequences import SequenceBatch

__all__ = [
    "SAVED_MODULES",
    "GaussianHead",
    "QuantileHead",
    "StudentTHead",
    "check_level",
    "check_quantiles",
    "crps_from_quantiles",
    "crps_from_samples",
    "crps_gaussian",
    "crps_student_t",
    "gaussian_nll",
    "interval_coverage",
    "interval_width",
    "mean_pinball_loss",
    "quantile_loss",
    "student_t_nll",
]

Data = TypeVar("Data", Tensor, SequenceBatch)
AnyData: TypeAlias = Tensor | SequenceBatch

# A quantile level this close to one of a QuantileHead's levels is that level: (1 - 0.8) / 2
# is 0.09999999999999998 in floating point, and asks for the 0.1 quantile.
_LEVEL_SNAP = 1e-9


# ---------------------------------------------------------------------------- validation


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, found {type(value).__name__}")
    return float(value)


def check_quantiles(quantiles: Sequence[float], name: str = "quantiles") -> tuple[float, ...]:
    """``quantiles`` as a tuple of floats, refused unless non-empty, each strictly inside
    (0, 1), in increasing order and without repeats (``name`` is the argument in the error).

    >>> check_quantiles([0.1, 0.5, 0.9])
    (0.1, 0.5, 0.9)
    >>> check_quantiles([0.5, 0.1])
    Traceback (most recent call last):
    ...
    ValueError: quantiles: expected increasing levels, found 0.1 after 0.5 (position 1)
    """
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence):
        raise TypeError(
            f"{name}: expected a sequence of levels in (0, 1), found {type(quantiles).__name__}"
        )
    if len(quantiles) == 0:
        raise ValueError(f"{name}: expected at least one level in (0, 1), found none")
    levels = tuple(_real(f"{name}[{i}]", q) for i, q in enumerate(quantiles))
    for i, q in enumerate(levels):
        if not 0.0 < q < 1.0:
            raise ValueError(
                f"{name}: expected levels strictly inside (0, 1), found {q} (position {i})"
            )
        if i and q == levels[i - 1]:
            raise ValueError(f"{name}: expected each level once, found {q} twice (position {i})")
        if i and q < levels[i - 1]:
            raise ValueError(
                f"{name}: expected increasing levels, found {q} after {levels[i - 1]} "
                f"(position {i})"
            )
    return levels


def check_level(level: float) -> float:
    """The coverage of a central interval, refused unless a number strictly inside (0, 1).

    >>> check_level(0.8)
    0.8
    """
    value = _real("level", level)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"level: expected the interval's coverage strictly inside (0, 1) (0.8 for an "
            f"80 % interval), found {level}"
        )
    return value


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return value


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


# ---------------------------------------------------------------------------- losses


def _loss_rows(
    output: AnyData, target: AnyData, params: int, measure: str
) -> tuple[Tensor, Tensor]:
    """``output`` as ``[S, E, P]`` and ``target`` as ``[S, E]`` (S samples, E forecast entries,
    P numbers per entry), shapes checked."""
    if isinstance(output, SequenceBatch) and isinstance(target, SequenceBatch):
        if not torch.equal(output.lengths, target.lengths):
            raise ValueError(
                f"{measure}: output and target sequences differ in length: output lengths "
                f"{output.lengths.tolist()}, target lengths {target.lengths.tolist()}"
            )
        output, target = output.data, target.data
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"{measure}: expected output and target both tensors or both SequenceBatches, "
            f"found {type(output).__name__} and {type(target).__name__}"
        )
    if output.dim() < 2 or output.shape[-1] != params:
        raise ValueError(
            f"{measure}: expected output [S, ..., {params}] ({params} numbers per forecast "
            f"entry), found {_shape(output.shape)}"
        )
    entries = output.shape[:-1]
    flat_ok = (
        target.dim() == 2 and target.shape[0] == entries[0] and target.numel() == math.prod(entries)
    )
    if target.shape != entries and not flat_ok:
        flat = (entries[0], math.prod(entries[1:]))
        raise ValueError(
            f"{measure}: expected target {_shape(entries)} (or {_shape(flat)}, step-major) "
            f"for output {_shape(output.shape)}, found {_shape(target.shape)}"
        )
    samples = int(entries[0])
    return output.reshape(samples, -1, params), target.reshape(samples, -1)


def _masked_sum(per_entry: Callable[[Tensor, Tensor], Tensor], out: Tensor, tgt: Tensor) -> Tensor:
    """Sum over samples of the mean over each sample's observed entries of ``per_entry``."""
    observed = ~torch.isnan(tgt)
    values = per_entry(out, torch.nan_to_num(tgt))
    values = torch.where(observed, values, torch.zeros_like(values))
    return (values.sum(-1) / observed.sum(-1).clamp(min=1)).sum()


def _check_scale(values: Tensor, what: str, measure: str, above: float = 0.0) -> None:
    if values.numel() and not bool((values > above).all()):
        raise ValueError(
            f"{measure}: expected output {what} > {above:g}, found min {float(values.min()):g}"
        )


def _pinball(quantiles: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    def per_entry(out: Tensor, y: Tensor) -> Tensor:
        diff = y.unsqueeze(-1) - out  # [S, E, Q]
        return torch.maximum(quantiles * diff, (quantiles - 1) * diff).mean(-1)

    return per_entry


def quantile_loss(output: AnyData, target: AnyData, quantiles: Sequence[float]) -> Tensor:
    """The pinball loss: sum over samples of the mean, over the sample's observed entries and
    the ``Q`` levels ``tau``, of ``max(tau (y - q), (tau - 1)(y - q))``.

    Shapes: ``output`` ``[S, ..., Q]`` (the forecast quantiles, e.g. ``[B, H, n, Q]``),
    ``target`` ``[S, ...]`` or ``[S, H n]`` (NaN where unobserved); or SequenceBatches of the
    same lengths with those steps.

    >>> out = torch.tensor([[[[0.0, 1.0]]]])  # one sample, quantiles 0.2 and 0.8
    >>> quantile_loss(out, torch.tensor([[[2.0]]]), [0.2, 0.8])  # (0.2 * 2 + 0.8 * 1) / 2
    tensor(0.6000)
    """
    levels = check_quantiles(quantiles)
    out, tgt = _loss_rows(output, target, len(levels), "quantile_loss")
    tau = torch.tensor(levels, dtype=out.dtype, device=out.device)
    return _masked_sum(_pinball(tau), out, tgt)


def _gaussian_per_entry(out: Tensor, y: Tensor) -> Tensor:
    loc, scale = out[..., 0], out[..., 1]
    z = (y - loc) / scale
    return 0.5 * math.log(2 * math.pi) + scale.log() + 0.5 * z * z


def gaussian_nll(output: AnyData, target: AnyData) -> Tensor:
    """The Gaussian negative log-likelihood ``log(sigma) + (y - mu)^2 / (2 sigma^2) +
    log(2 pi) / 2``: sum over samples of the mean over each sample's observed entries.

    Shapes: ``output`` ``[S, ..., 2]`` (location, scale > 0), ``target`` ``[S, ...]`` or
    ``[S, H n]``, NaN where unobserved.

    >>> round(gaussian_nll(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[1.0]])).item(), 4)
    1.4189
    """
    out, tgt = _loss_rows(output, target, 2, "gaussian_nll")
    _check_scale(out[..., 1], "scales [..., 1]", "gaussian_nll")
    return _masked_sum(_gaussian_per_entry, out, tgt)


def _student_t_per_entry(out: Tensor, y: Tensor) -> Tensor:
    loc, scale, df = out[..., 0], out[..., 1], out[..., 2]
    z = (y - loc) / scale
    return (
        torch.lgamma(df / 2)
        - torch.lgamma((df + 1) / 2)
        + 0.5 * torch.log(df * math.pi)
        + scale.log()
        + (df + 1) / 2 * torch.log1p(z * z / df)
    )


def student_t_nll(output: AnyData, target: AnyData) -> Tensor:
    """The Student-t negative log-likelihood (location ``mu``, scale ``sigma``, degrees of
    freedom ``nu``): ``-log Gamma((nu+1)/2) + log Gamma(nu/2) + log(nu pi)/2 + log sigma +
    (nu+1)/2 log(1 + z^2/nu)``, ``z = (y - mu)/sigma``; sum over samples of the mean over each
    sample's observed entries.

    Shapes: ``output`` ``[S, ..., 3]`` (location, scale > 0, df > 0), ``target`` ``[S, ...]``
    or ``[S, H n]``, NaN where unobserved.

    >>> out = torch.tensor([[[0.0, 1.0, 1.0]]])  # df 1: the Cauchy distribution
    >>> round(student_t_nll(out, torch.tensor([[1.0]])).item(), 4)  # log(2 pi)
    1.8379
    """
    out, tgt = _loss_rows(output, target, 3, "student_t_nll")
    _check_scale(out[..., 1], "scales [..., 1]", "student_t_nll")
    _check_scale(out[..., 2], "degrees of freedom [..., 2]", "student_t_nll")
    return _masked_sum(_student_t_per_entry, out, tgt)


# ---------------------------------------------------------------------------- Student-t


def _betainc(a: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """The regularised incomplete beta function ``I_x(a, b)`` (``y = 1 - x``, given apart so
    that neither loses digits), by its continued fraction (DLMF 8.17.22) evaluated with
    Lentz's method, on the side of the symmetry ``I_x(a, b) = 1 - I_y(b, a)`` where it
    converges fast (``x < (a + 1) / (a + b + 2)``). Float64 tensors of one shape."""
    swap = x > (a + 1) / (a + b + 2)
    a, b, x, y = (
        torch.where(swap, b, a),
        torch.where(swap, a, b),
        torch.where(swap, y, x),
        torch.where(swap, x, y),
    )
    log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    front = torch.exp(a * torch.log(x) + b * torch.log(y) - log_beta) / a
    tiny = 1e-300
    fraction = torch.ones_like(x)  # 1 + d1 / (1 + d2 / (1 + ...))
    c, d = torch.ones_like(x), torch.zeros_like(x)
    for j in range(1, 20_001):
        m = j // 2
        if j % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1 + term * d
        d = 1 / torch.where(d.abs() < tiny, torch.full_like(d, tiny), d)
        c = 1 + term / c
        c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
        delta = c * d
        fraction = fraction * delta
        if not bool(((delta - 1).abs() > 1e-15).any()):  # NaN (a NaN input) counts as done
            break
    value = front / fraction
    return torch.where(swap, 1 - value, value)


def _student_t_tail(z: Tensor, df: Tensor) -> Tensor:
    """``P(T > |z|)`` of the standard Student-t with ``df`` degrees of freedom, float64:
    ``I_{df / (df + z^2)}(df / 2, 1 / 2) / 2``."""
    z2 = z * z
    half = torch.full_like(z, 0.5)
    return 0.5 * _betainc(df / 2, half, df / (df + z2), z2 / (df + z2))


def _student_t_cdf(z: Tensor, df: Tensor) -> Tensor:
    tail = _student_t_tail(z, df)
    return torch.where(z > 0, 1 - tail, tail)


def _student_t_icdf(p: Tensor, df: Tensor) -> Tensor:
    """The standard Student-t's quantile at ``p`` (float64), by bisection of the CDF over
    ``atan(z)`` in ``(-pi/2, pi/2)`` until the bracket stops shrinking."""
    lo = torch.full_like(p, -math.pi / 2)
    hi = torch.full_like(p, math.pi / 2)
    for _ in range(64):
        mid = (lo + hi) / 2
        if not bool(((mid > lo) & (mid < hi)).any()):
            break
        below = _student_t_cdf(torch.tan(mid), df) < p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    z = torch.tan((lo + hi) / 2)
    return torch.where(torch.isnan(df) | torch.isnan(p), torch.full_like(z, math.nan), z)


def _student_t_log_pdf(z: Tensor, df: Tensor) -> Tensor:
    return (
        torch.lgamma((df + 1) / 2)
        - torch.lgamma(df / 2)
        - 0.5 * torch.log(df * math.pi)
        - (df + 1) / 2 * torch.log1p(z * z / df)
    )


# ---------------------------------------------------------------------------- heads


def _per_step(fn: Callable[[Tensor], Tensor], x: Data) -> Data:
    if isinstance(x, SequenceBatch):
        return x.map(fn)
    if isinstance(x, Tensor):
        return fn(x)
    raise TypeError(f"output: expected a Tensor or a SequenceBatch, found {type(x).__name__}")


class _Head(Layer, ABC):
    """``Dense(in_features, H n P)`` reshaped to ``[..., H, n, P]`` and mapped by ``_link``
    (each head's parameterisation); ``P`` is ``params``."""

    params: int

    def __init__(self, in_features: int | None, horizon: int, targets: int) -> None:
        super().__init__()
        self.horizon = _positive_int("horizon", horizon)
        self.targets = _positive_int("targets", targets)
        self.dense = Dense(in_features, self.horizon * self.targets * self.params)

    @property
    def in_features(self) -> int | None:
        """The input size; None until the first call of a head built without it."""
        return self.dense.in_features

    @abstractmethod
    def _link(self, raw: Tensor) -> Tensor:
        """``[..., H, n, P]`` unconstrained outputs to the forecast's numbers."""

    def _forward(self, x: Tensor) -> Tensor:
        raw = self.dense(x).unflatten(-1, (self.horizon, self.targets, self.params))
        return self._link(raw)

    def forward(self, x: Data) -> Data:
        return _per_step(self._forward, x)

    def _checked(self, output: Tensor, method: str) -> Tensor:
        expected = (self.horizon, self.targets, self.params)
        if not isinstance(output, Tensor) or tuple(output.shape[-3:]) != expected:
            found = _shape(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"{type(self).__name__}.{method}: expected output [..., {expected[0]}, "
                f"{expected[1]}, {expected[2]}] (this head's forward), found {found}"
            )
        return output

    @abstractmethod
    def _quantile(self, output: Tensor, p: float) -> Tensor:
        """The quantile ``[..., H, n]`` at ``p`` of a checked output tensor."""

    def quantile(self, output: Data, p: float) -> Data:
        """The forecast's quantile at level ``p`` in (0, 1): ``[..., H, n]`` from ``output``
        ``[..., H, n, P]`` (or a SequenceBatch of such steps)."""
        value = _real("p", p)
        if not 0.0 < value < 1.0:
            raise ValueError(f"p: expected a quantile level strictly inside (0, 1), found {p}")
        return _per_step(lambda out: self._quantile(self._checked(out, "quantile"), value), output)

    def interval(self, output: Data, level: float) -> tuple[Data, Data]:
        """The central interval holding ``level`` of the forecast's probability (``level=0.8``:
        the 0.1 and 0.9 quantiles): ``(lower, upper)``, each ``[..., H, n]``."""
        coverage = check_level(level)
        return self.quantile(output, (1 - coverage) / 2), self.quantile(output, (1 + coverage) / 2)

    @abstractmethod
    def _sample(self, output: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """``[n, ..., H, n_targets]`` draws from a checked output tensor."""

    def sample(self, output: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws from the forecast: ``[n, ..., H, targets]`` from ``output``
        ``[..., H, targets, P]`` (for a SequenceBatch pass its ``data``), drawn with
        ``generator`` (torch's default one when None)."""
        draws = _positive_int("n", n)
        return self._sample(self._checked(output, "sample"), draws, generator)

    def _shift_scale(self, output: Tensor, shift: Any, scale: Any) -> tuple[Tensor, Tensor]:
        entries = output.shape[:-1]
        values = []
        for name, v in (("shift", shift), ("scale", scale)):
            t = torch.as_tensor(v, dtype=output.dtype, device=output.device)
            try:
                t = torch.broadcast_to(t, entries)
            except RuntimeError:
                raise ValueError(
                    f"{type(self).__name__}.affine: expected {name} broadcastable to "
                    f"{_shape(entries)}, found {_shape(t.shape)}"
                ) from None
            values.append(t)
        if values[1].numel() and not bool((values[1] > 0).all()):
            raise ValueError(
                f"{type(self).__name__}.affine: expected scale > 0, found min "
                f"{float(values[1].min()):g}"
            )
        return values[0], values[1]


class QuantileHead(_Head):
    """``Q`` quantiles of each of the next ``horizon`` steps of ``targets`` series, which never
    cross: the lowest is a linear output, each next one adds ``softplus`` of another, so
    ``q_1 <= q_2 <= ... <= q_Q`` whatever the weights and the input.

    Shapes: input ``[B, I]`` (or a SequenceBatch of ``[I]`` steps), output ``[B, H, n, Q]``;
    ``dense.weight [H n Q, I]``. Trained with :meth:`loss` (:func:`quantile_loss` at the
    head's levels). :meth:`quantile` interpolates linearly between the levels and refuses a
    level outside ``[q_1's, q_Q's]``; :meth:`sample` draws by inverse transform from that
    piecewise-linear quantile function, a draw below the lowest level (above the highest)
    taking the lowest (highest) quantile.

    >>> head = QuantileHead(2, horizon=1, quantiles=[0.25, 0.5, 0.75])
    >>> with torch.no_grad():
    ...     _ = head.dense.weight.zero_(), head.dense.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    >>> out = head(torch.zeros(1, 2))           # 1, then softplus(0) = log 2 twice
    >>> [round(v, 4) for v in out.flatten().tolist()]
    [1.0, 1.6931, 2.3863]
    >>> round(head.point(out).item(), 4), round(head.quantile(out, 0.625).item(), 4)
    (1.6931, 2.0397)
    """

    def __init__(
        self,
        in_features: int | None,
        horizon: int,
        quantiles: Sequence[float],
        targets: int = 1,
    ) -> None:
        self.quantiles = check_quantiles(quantiles)
        self.params = len(self.quantiles)
        super().__init__(in_features, horizon, targets)

    def _link(self, raw: Tensor) -> Tensor:
        steps = F.softplus(raw[..., 1:]).cumsum(-1)
        return torch.cat([raw[..., :1], raw[..., :1] + steps], dim=-1)

    def loss(self, output: AnyData, target: AnyData) -> Tensor:
        """:func:`quantile_loss` at this head's levels (a sum over samples)."""
        return quantile_loss(output, target, self.quantiles)

    def _quantile(self, output: Tensor, p: float) -> Tensor:
        levels = self.quantiles
        if not levels[0] - _LEVEL_SNAP <= p <= levels[-1] + _LEVEL_SNAP:
            raise ValueError(
                f"QuantileHead.quantile: expected a level within the head's quantiles "
                f"{list(levels)} (interval(level) needs (1 - level) / 2 >= {levels[0]}), "
                f"found {p:g}"
            )
        for k, q in enumerate(levels):
            if abs(p - q) <= _LEVEL_SNAP:
                return output[..., k]
        k = int(np.searchsorted(levels, p))
        w = (p - levels[k - 1]) / (levels[k] - levels[k - 1])
        return torch.lerp(output[..., k - 1], output[..., k], w)

    def point(self, output: Data) -> Data:
        """The median ``[..., H, n]`` (interpolated between the levels around 0.5)."""
        return self.quantile(output, 0.5)

    def _sample(self, output: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        entries = output.shape[:-1]
        u = torch.rand((n, *entries), generator=generator, dtype=output.dtype, device=output.device)
        q = output.expand(n, *output.shape)
        if len(self.quantiles) == 1:
            return q[..., 0].clone()
        tau = torch.tensor(self.quantiles, dtype=output.dtype, device=output.device)
        upper = torch.searchsorted(tau, u.contiguous()).clamp(1, len(tau) - 1)
        lower = upper - 1
        weight = ((u - tau[lower]) / (tau[upper] - tau[lower])).clamp(0, 1)
        low = q.gather(-1, lower.unsqueeze(-1)).squeeze(-1)
        high = q.gather(-1, upper.unsqueeze(-1)).squeeze(-1)
        return low + weight * (high - low)

    def affine(self, output: Data, shift: Any, scale: Any) -> Data:
        """The quantiles of ``shift + scale * y`` (``scale > 0``, both broadcastable to
        ``[..., H, n]``)."""

        def apply(out: Tensor) -> Tensor:
            a, s = self._shift_scale(self._checked(out, "affine"), shift, scale)
            return a.unsqueeze(-1) + s.unsqueeze(-1) * out

        return _per_step(apply, output)


class GaussianHead(_Head):
    """A Gaussian forecast of each of the next ``horizon`` steps of ``targets`` series:
    location ``mu`` (linear) and scale ``sigma = softplus(.) + min_scale``.

    Shapes: input ``[B, I]`` (or a SequenceBatch of ``[I]`` steps), output ``[B, H, n, 2]``
    (``[..., 0]`` the location, ``[..., 1]`` the scale); ``dense.weight [2 H n, I]``. Trained
    with :meth:`loss` (:func:`gaussian_nll`); :meth:`point` is the mean.

    >>> head = GaussianHead(2, horizon=1)
    >>> with torch.no_grad():
    ...     _ = head.dense.weight.zero_(), head.dense.bias.copy_(torch.tensor([3.0, 0.0]))
    >>> out = head(torch.zeros(1, 2))
    >>> [round(v, 4) for v in out.flatten().tolist()]   # scale softplus(0) + 0.001
    [3.0, 0.6941]
    >>> [round(b.item(), 4) for b in head.interval(out, 0.8)]
    [2.1104, 3.8896]
    """

    params = 2

    def __init__(
        self, in_features: int | None, horizon: int, targets: int = 1, min_scale: float = 1e-3
    ) -> None:
        self.min_scale = _real("min_scale", min_scale)
        if not 0.0 < self.min_scale < math.inf:
            raise ValueError(f"min_scale: expected a positive number, found {min_scale}")
        super().__init__(in_features, horizon, targets)

    def _link(self, raw: Tensor) -> Tensor:
        scale = F.softplus(raw[..., 1]) + self.min_scale
        return torch.stack([raw[..., 0], scale], dim=-1)

    def loss(self, output: AnyData, target: AnyData) -> Tensor:
        """:func:`gaussian_nll` (a sum over samples)."""
        return gaussian_nll(output, target)

    def point(self, output: Data) -> Data:
        """The mean (and median) ``[..., H, n]``."""
        return _per_step(lambda out: self._checked(out, "point")[..., 0], output)

    def _quantile(self, output: Tensor, p: float) -> Tensor:
        z = torch.special.ndtri(torch.tensor(p, dtype=torch.float64)).item()
        return output[..., 0] + output[..., 1] * z

    def _sample(self, output: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        entries = output.shape[:-1]
        z = torch.randn(
            (n, *entries), generator=generator, dtype=output.dtype, device=output.device
        )
        return output[..., 0] + output[..., 1] * z

    def affine(self, output: Data, shift: Any, scale: Any) -> Data:
        """The forecast of ``shift + scale * y`` (``scale > 0``, both broadcastable to
        ``[..., H, n]``): location ``shift + scale mu``, scale ``scale sigma``."""

        def apply(out: Tensor) -> Tensor:
            a, s = self._shift_scale(self._checked(out, "affine"), shift, scale)
            return torch.stack([a + s * out[..., 0], s * out[..., 1]], dim=-1)

        return _per_step(apply, output)


class StudentTHead(_Head):
    """A Student-t forecast of each of the next ``horizon`` steps of ``targets`` series:
    location ``mu`` (linear), scale ``sigma = softplus(.) + min_scale`` and degrees of freedom
    ``nu = min_df + softplus(.)``, learned per entry. ``nu`` never falls below ``min_df``
    (2 by default: a finite variance; at least 1, which the mean and the CRPS need).

    Shapes: input ``[B, I]`` (or a SequenceBatch of ``[I]`` steps), output ``[B, H, n, 3]``
    (location, scale, degrees of freedom); ``dense.weight [3 H n, I]``. Trained with
    :meth:`loss` (:func:`student_t_nll`); :meth:`point` is the mean (and median).
    :meth:`quantile` inverts the CDF (the regularised incomplete beta function) by bisection
    in float64 (differentiable in the location and the scale, not in the degrees of freedom).

    >>> head = StudentTHead(2, horizon=1)
    >>> with torch.no_grad():
    ...     _ = head.dense.weight.zero_(), head.dense.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    >>> out = head(torch.zeros(1, 2))
    >>> [round(v, 4) for v in out.flatten().tolist()]   # df 2 + softplus(0)
    [0.0, 5.0077, 2.6931]
    >>> [round(b.item(), 4) for b in head.interval(out, 0.9)]
    [-12.3531, 12.3531]
    """

    params = 3

    def __init__(
        self,
        in_features: int | None,
        horizon: int,
        targets: int = 1,
        min_scale: float = 1e-3,
        min_df: float = 2.0,
    ) -> None:
        self.min_scale = _real("min_scale", min_scale)
        if not 0.0 < self.min_scale < math.inf:
            raise ValueError(f"min_scale: expected a positive number, found {min_scale}")
        self.min_df = _real("min_df", min_df)
        if not 1.0 <= self.min_df < math.inf:
            raise ValueError(
                f"min_df: expected a number >= 1 (the Student-t's mean and CRPS need more than "
                f"1 degree of freedom; 2 gives a finite variance), found {min_df}"
            )
        super().__init__(in_features, horizon, targets)

    def _link(self, raw: Tensor) -> Tensor:
        scale = F.softplus(raw[..., 1]) + self.min_scale
        df = F.softplus(raw[..., 2]) + self.min_df
        return torch.stack([raw[..., 0], scale, df], dim=-1)

    def loss(self, output: AnyData, target: AnyData) -> Tensor:
        """:func:`student_t_nll` (a sum over samples)."""
        return student_t_nll(output, target)

    def point(self, output: Data) -> Data:
        """The mean (and median) ``[..., H, n]``."""
        return _per_step(lambda out: self._checked(out, "point")[..., 0], output)

    def _quantile(self, output: Tensor, p: float) -> Tensor:
        df = output[..., 2].detach().to(torch.float64)
        z = _student_t_icdf(torch.full_like(df, p), df).to(output.dtype)
        return output[..., 0] + output[..., 1] * z

    def _sample(self, output: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        entries = output.shape[:-1]
        shape = (n, *entries)
        z = torch.randn(shape, generator=generator, dtype=output.dtype, device=output.device)
        df = output[..., 2].expand(shape)
        chi2 = 2 * torch._standard_gamma(df / 2, generator=generator)  # chi-square with df
        return output[..., 0] + output[..., 1] * z * torch.rsqrt(chi2 / df)

    def affine(self, output: Data, shift: Any, scale: Any) -> Data:
        """The forecast of ``shift + scale * y`` (``scale > 0``, both broadcastable to
        ``[..., H, n]``): location ``shift + scale mu``, scale ``scale sigma``, the same
        degrees of freedom."""

        def apply(out: Tensor) -> Tensor:
            a, s = self._shift_scale(self._checked(out, "affine"), shift, scale)
            return torch.stack([a + s * out[..., 0], s * out[..., 1], out[..., 2]], dim=-1)

        return _per_step(apply, output)


SAVED_MODULES: list[tuple[type, Callable[[Any], dict[str, Any]], str]] = [
    (
        QuantileHead,
        lambda m: {
            "in_features": m.in_features,
            "horizon": m.horizon,
            "quantiles": list(m.quantiles),
            "targets": m.targets,
        },
        "rnnkit.QuantileHead",
    ),
    (
        GaussianHead,
        lambda m: {
            "in_features": m.in_features,
            "horizon": m.horizon,
            "targets": m.targets,
            "min_scale": m.min_scale,
        },
        "rnnkit.GaussianHead",
    ),
    (
        StudentTHead,
        lambda m: {
            "in_features": m.in_features,
            "horizon": m.horizon,
            "targets": m.targets,
            "min_scale": m.min_scale,
            "min_df": m.min_df,
        },
        "rnnkit.StudentTHead",
    ),
]


# ---------------------------------------------------------------------------- scores


def _truth(truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """``truth`` as float64 and its observed mask; refused when nothing is observed."""
    y = np.asarray(truth, dtype=np.float64)
    observed = ~np.isnan(y)
    if not observed.any():
        raise ValueError(
            f"truth: expected at least one observed (non-NaN) value, found none in shape "
            f"{_shape(y.shape)}"
        )
    return y, observed


def _like(name: str, values: Any, shape: tuple[int, ...], observed: np.ndarray) -> np.ndarray:
    """``values`` broadcast to ``shape`` (float64), finite wherever ``observed``."""
    v = np.asarray(values, dtype=np.float64)
    try:
        v = np.broadcast_to(v, shape)
    except ValueError:
        raise ValueError(
            f"{name}: expected shape {_shape(shape)} (truth's) or one that broadcasts to it, "
            f"found {_shape(v.shape)}"
        ) from None
    if not np.isfinite(v[observed]).all():
        raise ValueError(
            f"{name}: expected finite values where truth is observed, found NaN or inf"
        )
    return v


def _above(name: str, values: np.ndarray, bound: float, why: str = "") -> None:
    if values.size and not (values > bound).all():
        raise ValueError(f"{name}: expected values > {bound:g}{why}, found min {values.min():g}")


def _observed_interval(truth: Any, lower: Any, upper: Any) -> tuple[Any, Any, Any]:
    """The observed truths and their interval bounds (NaN truths left out), with upper below
    lower refused."""
    y, observed = _truth(truth)
    lo = _like("lower", lower, y.shape, observed)[observed]
    hi = _like("upper", upper, y.shape, observed)[observed]
    if (hi < lo).any():
        raise ValueError(
            f"upper: expected upper >= lower, found upper below lower at {int((hi < lo).sum())} "
            "observed entries"
        )
    return y[observed], lo, hi


def interval_coverage(truth: Any, lower: Any, upper: Any) -> float:
    """The fraction of observed truths inside ``[lower, upper]`` (a central interval's
    coverage; an 80 % interval should cover about 0.8). ``lower`` and ``upper`` have
    ``truth``'s shape (or broadcast to it); NaN truths are skipped.

    >>> interval_coverage(np.array([0.5, 3.0, np.nan, -1.0]), 0.0, np.array([1.0, 2.0, 1.0, 1.0]))
    0.3333333333333333
    """
    y, lo, hi = _observed_interval(truth, lower, upper)
    return float(((lo <= y) & (y <= hi)).mean())


def interval_width(truth: Any, lower: Any, upper: Any) -> float:
    """The mean of ``upper - lower`` over the entries whose truth is observed.

    >>> interval_width(np.array([0.5, np.nan]), np.array([0.0, 0.0]), np.array([2.0, 9.0]))
    2.0
    """
    _, lo, hi = _observed_interval(truth, lower, upper)
    return float((hi - lo).mean())


def interval_scale(
    truth: Any, center: Any, lower: Any, upper: Any, level: float, axis: int | None = 1
) -> np.ndarray:
    """Split-conformal factors (Vovk et al. 2005; normalised scores as in Papadopoulos et al.
    2008) that make ``center - s (center - lower)`` to ``center + s (upper - center)`` cover
    ``level`` of held-out truths: computed on a calibration part (the validation
    forecasts), applied to new ones with :func:`scale_interval`.

    .. code-block:: text

        r_i = max((c_i - y_i) / (c_i - l_i), (y_i - c_i) / (u_i - c_i))    the stretch y_i needs
        s   = the ceil((n + 1) level)-th smallest r_i                      (the largest r_i when
                                                                           that exceeds n)

    so that, for exchangeable truths, the stretched interval covers a new one with probability
    at least ``level``. One factor per index of ``axis`` (the horizon step of ``[O, H, ...]``
    forecasts: coverage falls with the lead time), pooled over the other axes; ``axis=None``
    one factor for all. NaN truths are skipped; an index with no observed truth gets the
    pooled factor. A zero half-width counts as ``1e-12`` of the series' units.

    >>> y = np.array([[0.0], [1.0], [3.0], [-2.0]])  # scores 0, 1, 3, 2; ceil(5 * 0.5) = 3rd
    >>> interval_scale(y, 0.0, -1.0, 1.0, 0.5, axis=None)
    array(2.)
    """
    level = check_level(level)
    y, observed = _truth(truth)
    c = _like("center", center, y.shape, observed)
    lo = _like("lower", lower, y.shape, observed)
    hi = _like("upper", upper, y.shape, observed)
    if ((lo > c) | (hi < c))[observed].any():
        raise ValueError("center: expected lower <= center <= upper wherever truth is observed")
    with np.errstate(invalid="ignore"):
        below = (c - y) / np.maximum(c - lo, 1e-12)
        above = (y - c) / np.maximum(hi - c, 1e-12)
    scores = np.where(observed, np.maximum(below, above), np.nan)

    def factor(r: np.ndarray) -> float:
        r = np.sort(r[~np.isnan(r)])
        rank = min(len(r), int(np.ceil((len(r) + 1) * level)))
        return float(r[rank - 1])

    pooled = factor(scores)
    if axis is None:
        return np.array(pooled)
    moved = np.moveaxis(scores, axis, 0)
    return np.array([factor(r) if (~np.isnan(r)).any() else pooled for r in moved])


def scale_interval(
    center: Any, lower: Any, upper: Any, scale: Any, axis: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``lower`` and ``upper`` stretched about ``center`` by :func:`interval_scale`'s factors
    (``scale``, one per index of ``axis``, or one for all when ``axis`` is None).

    >>> scale_interval(np.zeros((1, 2)), -np.ones((1, 2)), np.ones((1, 2)), [2.0, 0.5])
    (array([[-2. , -0.5]]), array([[2. , 0.5]]))
    """
    c, lo, hi = (np.asarray(v, dtype=np.float64) for v in (center, lower, upper))
    s = np.asarray(scale, dtype=np.float64)
    if axis is not None:
        shape = [1] * c.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    if (s < 0).any():
        raise ValueError(f"scale: expected factors >= 0, found min {float(s.min()):g}")
    return c - s * (c - lo), c + s * (hi - c)


def _quantile_forecasts(
    truth: Any, forecasts: Any, quantiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    levels = np.array(check_quantiles(quantiles))
    y, observed = _truth(truth)
    q = np.asarray(forecasts, dtype=np.float64)
    if q.shape != (*y.shape, len(levels)):
        raise ValueError(
            f"forecasts: expected shape {_shape((*y.shape, len(levels)))} (truth's, then one "
            f"value per quantile), found {_shape(q.shape)}"
        )
    q = q[observed]
    if not np.isfinite(q).all():
        raise ValueError(
            "forecasts: expected finite values where truth is observed, found NaN or inf"
        )
    return y[observed], q, levels


def mean_pinball_loss(truth: Any, forecasts: Any, quantiles: Sequence[float]) -> float:
    """The pinball loss ``max(tau (y - q), (tau - 1)(y - q))`` averaged over the observed
    truths and the levels. ``forecasts`` is ``[*truth.shape, Q]``.

    >>> truth, forecasts = np.array([2.0, np.nan]), np.array([[0.0, 1.0], [5.0, 5.0]])
    >>> round(mean_pinball_loss(truth, forecasts, [0.2, 0.8]), 12)  # (0.4 + 0.8) / 2
    0.6
    """
    y, q, tau = _quantile_forecasts(truth, forecasts, quantiles)
    diff = y[:, None] - q
    return float(np.maximum(tau * diff, (tau - 1) * diff).mean())


def crps_from_quantiles(truth: Any, forecasts: Any, quantiles: Sequence[float]) -> float:
    """CRPS approximated from quantiles: twice :func:`mean_pinball_loss`. The CRPS is
    ``2 * integral over tau in (0, 1) of the pinball loss`` (Gneiting and Raftery 2007, eq. 21
    and after); the mean over the levels is a Riemann sum of that integral, close when the
    levels are many and evenly spaced (``k / (Q + 1)``), a coarser figure for a few.

    >>> round(crps_from_quantiles(np.array([2.0]), np.array([[0.0, 1.0]]), [0.2, 0.8]), 12)
    1.2
    """
    return 2 * mean_pinball_loss(truth, forecasts, quantiles)


def crps_gaussian(truth: Any, loc: Any, scale: Any) -> float:
    """The mean CRPS of Gaussian forecasts over the observed truths, in closed form
    (Gneiting and Raftery 2007, eq. 5): ``sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``,
    ``z = (y - mu) / sigma``. ``loc`` and ``scale`` (> 0) broadcast to ``truth``'s shape.

    >>> round(crps_gaussian(np.array([0.0]), 0.0, 1.0), 6)  # (sqrt 2 - 1) / sqrt pi
    0.233695
    """
    y, observed = _truth(truth)
    mu = _like("loc", loc, y.shape, observed)[observed]
    sigma = _like("scale", scale, y.shape, observed)[observed]
    _above("scale", sigma, 0.0)
    z = torch.from_numpy((y[observed] - mu) / sigma)
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    per = z * (2 * torch.special.ndtr(z) - 1) + 2 * phi - 1 / math.sqrt(math.pi)
    return float((torch.from_numpy(sigma) * per).mean())


def crps_student_t(truth: Any, loc: Any, scale: Any, df: Any) -> float:
    """The mean CRPS of Student-t forecasts over the observed truths, in closed form
    (Jordan, Krueger and Lerch 2019, the ``crps_t`` of scoringRules):
    ``sigma (z (2 F(z) - 1) + 2 f(z) (nu + z^2) / (nu - 1)
    - 2 sqrt(nu) B(1/2, nu - 1/2) / ((nu - 1) B(1/2, nu/2)^2))``, with ``F``, ``f`` the
    standard t's CDF and density with ``nu`` degrees of freedom, ``z = (y - mu) / sigma``.
    ``loc``, ``scale`` (> 0) and ``df`` (> 1: below, the CRPS is infinite) broadcast to
    ``truth``'s shape.

    >>> round(crps_student_t(np.array([0.0]), 0.0, 1.0, 1e6), 5)  # almost the Gaussian's
    0.2337
    """
    y, observed = _truth(truth)
    mu = _like("loc", loc, y.shape, observed)[observed]
    sigma = _like("scale", scale, y.shape, observed)[observed]
    nu_np = _like("df", df, y.shape, observed)[observed]
    _above("scale", sigma, 0.0)
    _above("df", nu_np, 1.0, " (the CRPS of a Student-t needs more than 1 degree of freedom)")
    z = torch.from_numpy((y[observed] - mu) / sigma)
    nu = torch.from_numpy(nu_np.copy())
    tail = _student_t_tail(z, nu)
    two_f_minus_one = torch.where(z > 0, 1 - 2 * tail, 2 * tail - 1)
    density = torch.exp(_student_t_log_pdf(z, nu))
    half = torch.full_like(nu, 0.5)

    def log_beta(a: Tensor, b: Tensor) -> Tensor:
        return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)

    ratio = torch.exp(log_beta(half, nu - 0.5) - 2 * log_beta(half, nu / 2))
    per = (
        z * two_f_minus_one
        + 2 * density * (nu + z * z) / (nu - 1)
        - 2 * torch.sqrt(nu) * ratio / (nu - 1)
    )
    return float((torch.from_numpy(sigma) * per).mean())


def crps_from_samples(truth: Any, samples: Any) -> float:
    """The mean CRPS over the observed truths estimated from ``S >= 2`` draws of each
    forecast (``samples`` ``[S, *truth.shape]``, e.g. a head's :meth:`sample`), in the energy
    form ``E|X - y| - E|X - X'| / 2`` (Gneiting and Raftery 2007, eq. 20), with the mean over
    distinct pairs for ``E|X - X'|`` (an unbiased estimate of the forecast distribution's CRPS).

    >>> round(crps_from_samples(np.array([0.0]), np.array([[-1.0], [1.0]])), 6)  # 1 - 2 / 2
    0.0
    """
    y, observed = _truth(truth)
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != y.ndim + 1 or x.shape[1:] != y.shape or x.shape[0] < 2:
        raise ValueError(
            f"samples: expected shape [S, *truth.shape] = [S, {', '.join(map(str, y.shape))}] "
            f"with S >= 2, found {_shape(x.shape)}"
        )
    x = x[:, observed]
    if not np.isfinite(x).all():
        raise ValueError(
            "samples: expected finite values where truth is observed, found NaN or inf"
        )
    s = x.shape[0]
    spread = np.abs(x - y[observed]).mean(axis=0)
    ordered = np.sort(x, axis=0)
    weights = (2 * np.arange(1, s + 1) - s - 1)[:, None]
    pairs = 2 * (weights * ordered).sum(axis=0) / (s * (s - 1))  # mean |X_i - X_j|, i != j
    return float((spread - pairs / 2).mean())
