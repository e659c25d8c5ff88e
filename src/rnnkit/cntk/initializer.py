"""``cntk.initializer``: CNTK's initialisers as functions that fill a torch weight in place.

Weights here are stored as torch stores them (``[out, in]``, the transpose of CNTK's
``[in, out]``); fan-in and fan-out are the same either way, so each distribution is CNTK's.
A number as ``init`` fills the weight with that constant.

>>> import torch
>>> w = torch.empty(300, 200)
>>> glorot_uniform()(w)
>>> bound = (6 / (200 + 300)) ** 0.5
>>> bool(w.abs().max() <= bound), round(float(w.std()) / (bound / 3**0.5), 1)
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "apply_init",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "normal",
    "uniform",
]

Initializer = Callable[[Tensor], None]


def _check_seed(seed: Any) -> None:
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"seed: expected None or an int, found {seed!r}")


def glorot_uniform(scale: float = 1.0, seed: int | None = None) -> Initializer:
    """``U(-s, s)``, ``s = scale * sqrt(6 / (fan_in + fan_out))``; ``seed`` draws from
    ``torch.Generator().manual_seed(seed)`` instead of the global generator."""
    _check_seed(seed)
    return lambda w: _fill(w, lambda t, g: nn.init.xavier_uniform_(t, scale, generator=g), seed)


def glorot_normal(scale: float = 1.0, seed: int | None = None) -> Initializer:
    """``N(0, scale^2 * 2 / (fan_in + fan_out))``."""
    _check_seed(seed)
    return lambda w: _fill(w, lambda t, g: nn.init.xavier_normal_(t, scale, generator=g), seed)


def he_uniform(scale: float = 1.0, seed: int | None = None) -> Initializer:
    """``U(-s, s)``, ``s = scale * sqrt(6 / fan_in)``."""
    _check_seed(seed)

    def fill(t: Tensor, g: torch.Generator | None) -> None:
        nn.init.kaiming_uniform_(t, a=0.0, nonlinearity="relu", generator=g)
        t.mul_(scale)

    return lambda w: _fill(w, fill, seed)


def he_normal(scale: float = 1.0, seed: int | None = None) -> Initializer:
    """``N(0, scale^2 * 2 / fan_in)``."""
    _check_seed(seed)

    def fill(t: Tensor, g: torch.Generator | None) -> None:
        nn.init.kaiming_normal_(t, a=0.0, nonlinearity="relu", generator=g)
        t.mul_(scale)

    return lambda w: _fill(w, fill, seed)


def uniform(scale: float, seed: int | None = None) -> Initializer:
    """``U(-scale, scale)``."""
    _check_seed(seed)
    return lambda w: _fill(w, lambda t, g: nn.init.uniform_(t, -scale, scale, generator=g), seed)


def normal(scale: float, seed: int | None = None) -> Initializer:
    """``N(0, scale^2)``."""
    _check_seed(seed)
    return lambda w: _fill(w, lambda t, g: nn.init.normal_(t, 0.0, scale, generator=g), seed)


def _fill(
    w: Tensor, fill: Callable[[Tensor, torch.Generator | None], Any], seed: int | None
) -> None:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fill(w, generator)


def apply_init(weight: Tensor, init: Any, argument: str = "init") -> None:
    """Fill ``weight`` from ``init``: an initialiser above, a number (a constant), or an
    array of the weight's shape (CNTK's ``[in, out]`` layout for a 2-D weight)."""
    with torch.no_grad():
        if callable(init):
            init(weight)
        elif isinstance(init, (int, float)) and not isinstance(init, bool):
            weight.fill_(float(init))
        else:
            value = torch.as_tensor(init, dtype=weight.dtype)
            if value.dim() == 2:
                value = value.T
            if value.shape != weight.shape:
                raise ValueError(
                    f"{argument}: expected an initialiser, a number or an array of shape "
                    f"{tuple(weight.shape[::-1])}, found shape {tuple(value.shape)}"
                )
            weight.copy_(value)
