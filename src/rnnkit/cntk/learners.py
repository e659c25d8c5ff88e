"""CNTK's learners and schedules: ``sgd``, ``momentum_sgd``, ``adam``, ``fsadagrad`` as
``torch.optim`` optimizers that follow CNTK's update equations and its units.

**Per minibatch or per sample.** A schedule made without ``minibatch_size``
(``learning_parameter_schedule(0.005)``, CNTK's default since 2.2, its "compatible mode")
applies its rate to the *mean* gradient of the minibatch, whatever the minibatch's size: the
rate is "per minibatch". A schedule with ``minibatch_size=m`` is designed for minibatches of
``m`` samples: the rate applies to the *summed* gradient divided by ``m``, so a minibatch of
``n`` samples moves ``n/m`` times as far (``learning_parameter_schedule_per_sample(r)`` is
``m = 1``: the rate per sample of CNTK 1). The learner's mode follows its learning-rate
schedule, as CNTK's does: compatible mode clips the mean gradient at the per-sample
threshold, the other mode the summed gradient at ``threshold * n``.

Momentum likewise: ``momentum_schedule(0.9)`` is 0.9 for every minibatch; with
``minibatch_size=m`` (or ``momentum_schedule_per_sample``, ``m = 1``) a minibatch of ``n``
samples uses ``0.9 ** (n / m)``; ``momentum_as_time_constant_schedule(t)`` is
``exp(-1 / t)`` per sample. Adam's default ``variance_momentum`` is CNTK's
``momentum_schedule_per_sample(0.9999986111120757)``: 0.99980557 for 140 samples.

Schedules of several values, ``[0.01] * 4 + [0.005]`` or ``[(4, 0.01), (1, 0.005)]``,
change value every ``epoch_size`` samples (the last value then holds).

The update equations (``g`` the mean gradient in compatible mode, else the summed one;
``lr`` the rate (divided by ``m`` outside compatible mode); ``mu`` the momentum and ``nu``
the variance momentum for this minibatch; ``u = 1 - mu`` with unit gain, else 1; ``t`` the
number of updates), from CNTK's ``Learner.cpp`` and ``CPUMatrix``:

* ``sgd``: ``w -= lr g``.
* ``momentum_sgd``: ``v = mu v + u lr g``; ``w -= v``.
* ``adam``: ``s = nu s + (1 - nu) g^2``; ``v = mu v + u g``;
  ``w -= lr sqrt(1 - nu^t) / (1 - mu^t) v / (sqrt(s) + epsilon)``.
* ``fsadagrad``: ``c = nu c + (1 - nu) n``; ``s = nu s + (1 - nu) g^2``; where ``s > 0``
  ``g = g min(10, sqrt(c) / sqrt(s))``; ``v = mu v + u g``; ``w -= lr v``.

The learner needs the number of samples of each minibatch before its step:
:class:`rnnkit.cntk.train.Trainer` and :meth:`rnnkit.cntk.Function.train` give it
(:attr:`Learner.minibatch_samples`).

>>> import torch
>>> w = torch.nn.Parameter(torch.tensor([1.0]))
>>> learner = sgd([w], lr=learning_parameter_schedule(0.5))
>>> w.grad = torch.tensor([2.0])  # the mean gradient over 4 samples
>>> learner.minibatch_samples = 4
>>> learner.step()
>>> w.item()  # per minibatch: 1 - 0.5 * 2
0.0
>>> per_sample = sgd([w], lr=learning_parameter_schedule_per_sample(0.5))
>>> w.grad = torch.tensor([2.0])
>>> per_sample.minibatch_samples = 4
>>> per_sample.step()
>>> w.item()  # per sample: the summed gradient, 4 * 2
-4.0
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "IGNORE",
    "Learner",
    "TrainingParameterSchedule",
    "UnitType",
    "adam",
    "default_unit_gain_value",
    "fsadagrad",
    "learning_parameter_schedule",
    "learning_parameter_schedule_per_sample",
    "learning_rate_schedule",
    "momentum_as_time_constant_schedule",
    "momentum_schedule",
    "momentum_schedule_per_sample",
    "momentum_sgd",
    "sgd",
]

IGNORE = 0  # CNTK's "no reference minibatch size"


class UnitType(enum.Enum):
    """CNTK 1's units of ``learning_rate_schedule``."""

    sample = "sample"
    minibatch = "minibatch"


@dataclass(frozen=True)
class TrainingParameterSchedule:
    """Values over training: ``runs`` of ``(units, value)`` (the last holds for ever), one
    unit being ``epoch_size`` samples; ``minibatch_size`` the reference minibatch size
    (``None``: the value is per minibatch, whatever its size).

    >>> s = learning_parameter_schedule([0.1, 0.1, 0.05], epoch_size=100)
    >>> [s.value_at(n) for n in (0, 199, 200, 10_000)]
    [0.1, 0.1, 0.05, 0.05]
    """

    runs: tuple[tuple[int, float], ...]
    minibatch_size: int | None
    epoch_size: int | None

    def value_at(self, samples: int) -> float:
        """The value after ``samples`` samples of training."""
        if len(self.runs) == 1 or self.epoch_size is None:
            return self.runs[0][1]
        unit = samples // self.epoch_size
        for count, value in self.runs:
            if unit < count:
                return value
            unit -= count
        return self.runs[-1][1]

    def per_minibatch(self, samples: int, minibatch: int) -> float:
        """A momentum for a minibatch of ``minibatch`` samples: the value itself, or
        ``value ** (minibatch / minibatch_size)`` for a schedule with a reference size."""
        value = self.value_at(samples)
        if self.minibatch_size is None:
            return value
        return float(value ** (minibatch / self.minibatch_size))


def _runs(schedule: Any, argument: str) -> tuple[tuple[int, float], ...]:
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return ((1, float(schedule)),)
    if isinstance(schedule, Sequence) and schedule and not isinstance(schedule, str):
        runs: list[tuple[int, float]] = []
        for item in schedule:
            if isinstance(item, tuple) and len(item) == 2:
                count, value = item
                if not isinstance(count, int) or count < 1:
                    raise ValueError(
                        f"{argument}: expected (count, value) pairs with a positive count, "
                        f"found {item!r}"
                    )
                runs.append((count, float(value)))
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                runs.append((1, float(item)))
            else:
                raise ValueError(
                    f"{argument}: expected numbers or (count, value) pairs, found {item!r}"
                )
        return tuple(runs)
    raise ValueError(
        f"{argument}: expected a number, a list of numbers or of (count, value) pairs, "
        f"found {schedule!r}"
    )


def _schedule(
    schedule: Any, minibatch_size: int | None, epoch_size: int | None, argument: str
) -> TrainingParameterSchedule:
    runs = _runs(schedule, argument)
    if minibatch_size == IGNORE:
        minibatch_size = None
    if minibatch_size is not None and (not isinstance(minibatch_size, int) or minibatch_size < 1):
        raise ValueError(
            f"minibatch_size: expected a positive int or None, found {minibatch_size!r}"
        )
    if epoch_size is not None and (not isinstance(epoch_size, int) or epoch_size < 1):
        raise ValueError(f"epoch_size: expected a positive int or None, found {epoch_size!r}")
    if len(runs) > 1 and epoch_size is None:
        raise ValueError(
            f"epoch_size: a {argument} of several values needs epoch_size (samples per value); "
            "CNTK's sweep-based units (no epoch_size) are not supported here"
        )
    return TrainingParameterSchedule(runs, minibatch_size, epoch_size)


def learning_parameter_schedule(
    schedule: Any, minibatch_size: int | None = None, epoch_size: int | None = None
) -> TrainingParameterSchedule:
    """A learning rate for the mean gradient (``minibatch_size=None``) or for minibatches of
    ``minibatch_size`` samples (see the module doc)."""
    return _schedule(schedule, minibatch_size, epoch_size, "schedule")


def learning_parameter_schedule_per_sample(
    schedule: Any, epoch_size: int | None = None
) -> TrainingParameterSchedule:
    """A learning rate per sample: ``learning_parameter_schedule(..., minibatch_size=1)``."""
    return _schedule(schedule, 1, epoch_size, "schedule")


def learning_rate_schedule(
    lr: Any, unit: UnitType, epoch_size: int | None = None
) -> TrainingParameterSchedule:
    """CNTK 1's form: ``UnitType.sample`` is per sample, ``UnitType.minibatch`` per
    minibatch (the mean gradient)."""
    if not isinstance(unit, UnitType):
        raise ValueError(f"unit: expected UnitType.sample or UnitType.minibatch, found {unit!r}")
    return _schedule(lr, 1 if unit is UnitType.sample else None, epoch_size, "lr")


def momentum_schedule(
    momentum: Any, epoch_size: int | None = None, minibatch_size: int | None = None
) -> TrainingParameterSchedule:
    """A momentum per minibatch, or per ``minibatch_size`` samples (see the module doc)."""
    return _schedule(momentum, minibatch_size, epoch_size, "momentum")


def momentum_schedule_per_sample(
    momentum: Any, epoch_size: int | None = None
) -> TrainingParameterSchedule:
    """A momentum per sample (``minibatch_size=1``)."""
    return _schedule(momentum, 1, epoch_size, "momentum")


def momentum_as_time_constant_schedule(
    momentum: Any, epoch_size: int | None = None
) -> TrainingParameterSchedule:
    """A momentum given as a time constant ``t`` in samples: ``exp(-1 / t)`` per sample.

    >>> round(momentum_as_time_constant_schedule(700).per_minibatch(0, 70), 6)
    0.904837
    """
    runs = _runs(momentum, "momentum")
    per_sample = [(k, math.exp(-1.0 / t) if t > 0 else 0.0) for k, t in runs]
    return _schedule(per_sample, 1, epoch_size, "momentum")


def default_unit_gain_value() -> bool:
    """CNTK's default for ``unit_gain``: True (momentum ``v = mu v + (1 - mu) g``)."""
    return True


def _as_schedule(value: Any, argument: str) -> TrainingParameterSchedule:
    if isinstance(value, TrainingParameterSchedule):
        return value
    return _schedule(value, None, None, argument)


class Learner(torch.optim.Optimizer):
    """The common part of CNTK's learners: units, clipping, regularisation (module doc).

    Set :attr:`minibatch_samples` to the minibatch's number of samples before each
    :meth:`step`; the gradients are expected as means over those samples (what rnnkit's
    trainer computes).
    """

    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        lr: Any,
        *,
        l1_regularization_weight: float = 0.0,
        l2_regularization_weight: float = 0.0,
        gaussian_noise_injection_std_dev: float = 0.0,
        gradient_clipping_threshold_per_sample: float = math.inf,
        gradient_clipping_with_truncation: bool = True,
        use_mean_gradient: bool | None = None,
        minibatch_size: int | None = None,
        epoch_size: int | None = None,
    ) -> None:
        params = list(parameters)
        if not params:
            raise ValueError("parameters: expected at least one parameter, found none")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("parameters: the list holds a parameter twice")
        if gaussian_noise_injection_std_dev != 0:
            raise ValueError(
                "gaussian_noise_injection_std_dev: expected 0 (noise injection is not "
                f"supported here), found {gaussian_noise_injection_std_dev!r}"
            )
        if minibatch_size not in (None, IGNORE) or epoch_size is not None:
            raise ValueError(
                "minibatch_size, epoch_size: give them to the schedules "
                "(learning_parameter_schedule(lr, minibatch_size=...)), not to the learner"
            )
        for name, weight in (("l1", l1_regularization_weight), ("l2", l2_regularization_weight)):
            if weight < 0:
                raise ValueError(f"{name}_regularization_weight: expected >= 0, found {weight}")
        self.lr_schedule = _as_schedule(lr, "lr")
        self.compatible = self.lr_schedule.minibatch_size is None or bool(use_mean_gradient)
        self.l1, self.l2 = float(l1_regularization_weight), float(l2_regularization_weight)
        self.clip = float(gradient_clipping_threshold_per_sample)
        self.truncate = gradient_clipping_with_truncation
        self.minibatch_samples: int | None = None
        self.sample_count = 0
        self.update_count = 0
        super().__init__(params, {"lr": self.lr_schedule.value_at(0)})

    def _rate(self) -> float:
        value = self.lr_schedule.value_at(self.sample_count)
        reference = self.lr_schedule.minibatch_size
        return value if self.compatible or reference is None else value / reference

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        n = self.minibatch_samples
        if n is None or n < 1:
            raise ValueError(
                "minibatch_samples: set it to the minibatch's number of samples before "
                f"step() (rnnkit.cntk's Trainer and Function.train do), found {n!r}"
            )
        lr = self._rate()
        scale = 1.0 if self.compatible else float(n)
        self.update_count += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * scale
                if math.isfinite(self.clip):
                    limit = self.clip * scale
                    if self.truncate:
                        g = g.clamp(-limit, limit)
                    else:
                        norm = float(torch.linalg.vector_norm(g))
                        if norm > limit:
                            g = g * (limit / norm)
                if self.l2 > 0:
                    g = g + self.l2 * scale * p
                self._update(p, g, lr, n)
                if self.l1 > 0:
                    shrink = lr * self.l1 * scale
                    p.copy_(torch.sign(p) * (p.abs() - shrink).clamp(min=0.0))
        self.sample_count += n
        self.minibatch_samples = None
        for group in self.param_groups:
            group["lr"] = self.lr_schedule.value_at(self.sample_count)

    def _update(self, p: Tensor, g: Tensor, lr: float, n: int) -> None:
        p.sub_(lr * g)


class _MomentumLearner(Learner):
    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        lr: Any,
        momentum: Any,
        unit_gain: bool,
        variance_momentum: Any = None,
        **options: Any,
    ) -> None:
        super().__init__(parameters, lr, **options)
        self.momentum = _as_schedule(momentum, "momentum")
        self.variance_momentum = (
            None if variance_momentum is None else _as_schedule(variance_momentum, "momentum")
        )
        self.unit_gain = unit_gain

    def _mu(self, n: int) -> float:
        return self.momentum.per_minibatch(self.sample_count, n)

    def _nu(self, n: int) -> float:
        assert self.variance_momentum is not None
        return self.variance_momentum.per_minibatch(self.sample_count, n)


class MomentumSGD(_MomentumLearner):
    """``v = mu v + u lr g``; ``w -= v`` (see the module doc)."""

    def _update(self, p: Tensor, g: Tensor, lr: float, n: int) -> None:
        mu = self._mu(n)
        v = self.state[p].setdefault("v", torch.zeros_like(p))
        v.mul_(mu).add_(g, alpha=(1.0 - mu if self.unit_gain else 1.0) * lr)
        p.sub_(v)


class Adam(_MomentumLearner):
    """CNTK's Adam (see the module doc); ``t`` counts this learner's updates."""

    def __init__(self, *args: Any, epsilon: float = 1e-8, **options: Any) -> None:
        super().__init__(*args, **options)
        self.epsilon = epsilon

    def _update(self, p: Tensor, g: Tensor, lr: float, n: int) -> None:
        mu, nu, t = self._mu(n), self._nu(n), self.update_count
        state = self.state[p]
        s = state.setdefault("s", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        s.mul_(nu).addcmul_(g, g, value=1.0 - nu)
        v.mul_(mu).add_(g, alpha=1.0 - mu if self.unit_gain else 1.0)
        correction = math.sqrt(1.0 - nu**t) / (1.0 - mu**t) if mu < 1.0 else 1.0
        p.sub_(lr * correction * v / (s.sqrt() + self.epsilon))


class FSAdaGrad(_MomentumLearner):
    """CNTK's FSAdaGrad (see the module doc)."""

    def _update(self, p: Tensor, g: Tensor, lr: float, n: int) -> None:
        mu, nu = self._mu(n), self._nu(n)
        state = self.state[p]
        count = state.get("count", 0.0) * nu + (1.0 - nu) * n
        state["count"] = count
        s = state.setdefault("s", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        s.mul_(nu).addcmul_(g, g, value=1.0 - nu)
        weight = torch.where(
            s > 0, (math.sqrt(count) / s.sqrt()).clamp(max=10.0), torch.ones_like(s)
        )
        g = g * weight
        if mu > 0:
            v.mul_(mu).add_(g, alpha=1.0 - mu if self.unit_gain else 1.0)
            g = v
        p.sub_(lr * g)


_VARIANCE = momentum_schedule_per_sample(0.9999986111120757)


def sgd(parameters: Iterable[nn.Parameter], lr: Any, **options: Any) -> Learner:
    """CNTK's ``sgd(parameters, lr, l1_regularization_weight=0, l2_regularization_weight=0,
    gradient_clipping_threshold_per_sample=inf, gradient_clipping_with_truncation=True)``."""
    return Learner(parameters, lr, **options)


def momentum_sgd(
    parameters: Iterable[nn.Parameter],
    lr: Any,
    momentum: Any,
    unit_gain: bool | None = None,
    **options: Any,
) -> Learner:
    """CNTK's ``momentum_sgd(parameters, lr, momentum, unit_gain=True, ...)``."""
    gain = default_unit_gain_value() if unit_gain is None else unit_gain
    return MomentumSGD(parameters, lr, momentum, gain, **options)


def adam(
    parameters: Iterable[nn.Parameter],
    lr: Any,
    momentum: Any,
    unit_gain: bool | None = None,
    variance_momentum: Any = _VARIANCE,
    epsilon: float = 1e-8,
    adamax: bool = False,
    **options: Any,
) -> Learner:
    """CNTK's ``adam(parameters, lr, momentum, unit_gain=True,
    variance_momentum=momentum_schedule_per_sample(0.9999986111120757), epsilon=1e-8, ...)``.

    ``adamax=True`` is not supported (a ValueError)."""
    if adamax:
        raise ValueError("adamax: expected False (Adamax is not supported here), found True")
    gain = default_unit_gain_value() if unit_gain is None else unit_gain
    return Adam(parameters, lr, momentum, gain, variance_momentum, epsilon=epsilon, **options)


def fsadagrad(
    parameters: Iterable[nn.Parameter],
    lr: Any,
    momentum: Any,
    unit_gain: bool | None = None,
    variance_momentum: Any = _VARIANCE,
    **options: Any,
) -> Learner:
    """CNTK's ``fsadagrad(parameters, lr, momentum, unit_gain=True,
    variance_momentum=momentum_schedule_per_sample(0.9999986111120757), ...)``."""
    gain = default_unit_gain_value() if unit_gain is None else unit_gain
    return FSAdaGrad(parameters, lr, momentum, gain, variance_momentum, **options)
