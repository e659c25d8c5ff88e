"""ROCKET: random convolutional kernels as features, a ridge classifier on top.

Dempster, Petitjean and Webb (2020), "ROCKET: exceptionally fast and accurate time series
classification using random convolutional kernels". :class:`Rocket` draws ``num_kernels``
kernels once (seeded) and maps each series to two features per kernel: the proportion of
positive values (PPV) and the maximum of the kernel's output. Drawn as in the paper:

* length ``k`` uniform over ``(7, 9, 11)``; weights ``N(0, 1)``, centred per channel; bias
  ``U(-1, 1)``;
* dilation ``floor(2 ** U(0, log2((length - 1) / (k - 1))))`` for the series ``length`` the
  layer is built for (the recipe: the longest training series);
* with probability 1/2 zero padding of ``(k - 1) * dilation // 2`` at each end (an output per
  input step), else none;
* multivariate input: each kernel reads ``floor(2 ** U(0, log2(min(channels, k) + 1)))``
  channels drawn without replacement (as sktime's multivariate ROCKET).

Ragged batches never leak padding into the features: a sequence sees zeros beyond its ends
exactly as it would alone, and PPV and max are taken over its own output steps only. A kernel
without padding whose receptive field ``(k - 1) * dilation + 1`` exceeds a sequence's length
reads that sequence with padding instead (so a short series still gets its features).

:func:`fit_ridge` is the classifier: ridge regression on ``+-1`` targets with the penalty
chosen by exact leave-one-out error over ``alphas`` (as scikit-learn's ``RidgeClassifierCV``),
on features standardised over the training series, the standardisation folded into its
weights, so that ``Rocket >> Dense`` with them is the classifier (``rnnkit classify --model
rocket`` builds it so).

>>> import torch
>>> from rnnkit import SequenceBatch
>>> rocket = Rocket(1, length=20, num_kernels=8, seed=0)
>>> a = torch.randn(12, 1)
>>> alone = rocket(SequenceBatch.from_list([a]))
>>> batched = rocket(SequenceBatch.from_list([torch.randn(20, 1), a]))
>>> alone.shape, bool(torch.allclose(alone[0], batched[1], atol=1e-6))
(torch.Size([1, 16]), True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.layers import Layer, SavedModule
from rnnkit.layers.timeconv import padded_with_mask
from rnnkit.sequences import SequenceBatch

__all__ = [
    "SAVED_MODULES",
    "Ridge",
    "Rocket",
    "fit_ridge",
    "rocket_features",
]

KERNEL_LENGTHS = (7, 9, 11)


class Rocket(Layer):
    """``num_kernels`` random dilated convolutions; output ``[B, 2 * num_kernels]`` (PPV and max
    of kernel 0, then of kernel 1, ...). Input: a SequenceBatch of ``[in_channels]`` steps.

    Buffers (saved with the model): ``weight [K, in_channels, 11]`` (zero beyond each kernel's
    length and on the channels it does not read), ``bias [K]``, ``kernel_length [K]``,
    ``dilation [K]``, ``padding [K]`` (0 or 1).
    """

    weight: Tensor
    bias: Tensor
    kernel_length: Tensor
    dilation: Tensor
    padding: Tensor

    def __init__(self, in_channels: int, length: int, num_kernels: int = 10_000, seed: int = 0):
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("length", length, 1),
            ("num_kernels", num_kernels, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
        self.in_channels, self.length = in_channels, length
        self.num_kernels, self.seed = num_kernels, seed
        g = torch.Generator().manual_seed(seed)
        weight = torch.zeros(num_kernels, in_channels, max(KERNEL_LENGTHS))
        kernel_length = torch.tensor(KERNEL_LENGTHS)[
            torch.randint(len(KERNEL_LENGTHS), (num_kernels,), generator=g)
        ]
        dilation = torch.empty(num_kernels, dtype=torch.long)
        for i, k in enumerate(kernel_length.tolist()):
            reads = int(2 ** (torch.rand((), generator=g) * math.log2(min(in_channels, k) + 1)))
            channels = torch.randperm(in_channels, generator=g)[:reads]
            w = torch.randn(reads, k, generator=g)
            weight[i, channels, :k] = w - w.mean(1, keepdim=True)
            span = math.log2(max(1.0, (length - 1) / (k - 1)))
            dilation[i] = int(2 ** (torch.rand((), generator=g) * span))
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.rand(num_kernels, generator=g) * 2 - 1)
        self.register_buffer("kernel_length", kernel_length)
        self.register_buffer("dilation", dilation)
        self.register_buffer("padding", torch.randint(2, (num_kernels,), generator=g))

    @property
    def out_features(self) -> int:
        return 2 * self.num_kernels

    def _groups(self) -> Iterable[tuple[int, int, bool, Tensor]]:
        """``(length, dilation, padded, kernel indices)`` for each distinct kind of kernel."""
        keys = torch.stack([self.kernel_length, self.dilation, self.padding], 1).cpu()
        kinds, which = torch.unique(keys, dim=0, return_inverse=True)
        for j, (k, d, p) in enumerate(kinds.tolist()):
            yield k, d, bool(p), (which == j).nonzero().flatten().to(self.weight.device)

    def forward(self, x: SequenceBatch) -> Tensor:
        padded, mask = padded_with_mask(x)
        if padded.shape[1] != self.in_channels:
            raise ValueError(
                f"Rocket input: expected steps of {self.in_channels} channels, "
                f"found {padded.shape[1]}"
            )
        padded = padded.to(self.weight.dtype)
        lengths = mask.sum(-1).flatten().long()  # [B]
        out = padded.new_empty(padded.shape[0], self.num_kernels, 2)
        for k, d, pad, index in self._groups():
            w, b = self.weight[index, :, :k], self.bias[index]
            field = (k - 1) * d
            valid = lengths if pad else lengths - field
            if pad or padded.shape[-1] > field:
                h = F.conv1d(padded, w, b, dilation=d, padding=field // 2 if pad else 0)
                out[:, index] = _ppv_max(h, valid)
            short = (valid <= 0).nonzero().flatten()
            if len(short):
                h = F.conv1d(padded[short], w, b, dilation=d, padding=field // 2)
                out[short[:, None], index] = _ppv_max(h, lengths[short])
        return out.flatten(1)


def _ppv_max(h: Tensor, valid: Tensor) -> Tensor:
    """``[B, G, 2]``: PPV and max of ``h [B, G, T]`` over the first ``valid [B]`` steps."""
    steps = torch.arange(h.shape[-1], device=h.device)
    mask = (steps[None, :] < valid[:, None])[:, None, :]
    count = valid.clamp(min=1).to(h.dtype)[:, None]
    ppv = ((h > 0) & mask).sum(-1).to(h.dtype) / count
    peak = h.masked_fill(~mask, -math.inf).amax(-1)
    return torch.stack([ppv, peak], -1)


@dataclass(frozen=True)
class Ridge:
    """A fitted ridge classifier: ``scores = features @ weight.T + bias``."""

    weight: Tensor  # [C, F]
    bias: Tensor  # [C]
    alpha: float
    loo_error: float  # mean squared leave-one-out error on the +-1 targets at alpha


ALPHAS = tuple(10.0 ** (-3 + 6 * i / 9) for i in range(10))


def fit_ridge(
    features: Tensor, labels: Tensor, classes: int, alphas: Sequence[float] = ALPHAS
) -> Ridge:
    """Ridge regression of ``+-1`` class targets on ``features [N, F]`` (``labels [N]``, values
    ``0 .. classes - 1``), standardised over the rows (a constant column stays zero), with an
    intercept and the penalty of ``alphas`` whose exact leave-one-out squared error is least.
    Computed in float64 from the eigendecomposition of the smaller Gram matrix; the returned
    ``weight`` and ``bias`` apply to the raw features (the standardisation folded in).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features, labels: expected [N, F] and [N], found {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not alphas or any(not a > 0 for a in alphas):
        raise ValueError(f"alphas: expected positive numbers, found {list(alphas)!r}")
    x = features.double()
    n = x.shape[0]
    mean, scale = x.mean(0), x.std(0, correction=0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    x = (x - mean) / scale
    y = -torch.ones(n, classes, dtype=torch.float64)
    y[torch.arange(n), labels.long()] = 1.0
    y_mean = y.mean(0)
    y = y - y_mean
    # x = U diag(s) V^T; with G the smaller Gram matrix, s**2 are its eigenvalues.
    if n <= x.shape[1]:
        s2, u = torch.linalg.eigh(x @ x.T)
    else:
        s2, v = torch.linalg.eigh(x.T @ x)
        s2 = s2.clamp(min=0)
        keep = s2 > 1e-10 * max(float(s2.max()), 1e-300)
        s2, v = s2[keep], v[:, keep]
        u = x @ v / s2.sqrt()
    s2 = s2.clamp(min=0)
    uty = u.T @ y
    best: tuple[float, float] | None = None
    for alpha in alphas:
        shrink = s2 / (s2 + alpha)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u.pow(2) * shrink).sum(1) + 1.0 / n
        residual = (y - fitted) / (1.0 - leverage).clamp(min=1e-12)[:, None]
        error = float(residual.pow(2).mean())
        if best is None or error < best[1]:
            best = (alpha, error)
    assert best is not None
    alpha, error = best
    coefficients = x.T @ (u @ (uty / (s2 + alpha)[:, None]))  # [F, C]
    weight = (coefficients / scale[:, None]).T
    bias = y_mean - weight @ mean
    return Ridge(weight.float(), bias.float(), alpha, error)


@torch.no_grad()
def rocket_features(rocket: Rocket, batches: Iterable[SequenceBatch]) -> Tensor:
    """``[N, 2K]`` the features of every sequence of ``batches``, in order."""
    return torch.cat([rocket(b) for b in batches])


SAVED_MODULES: list[SavedModule] = [
    (
        Rocket,
        lambda m: {
            "in_channels": m.in_channels,
            "length": m.length,
            "num_kernels": m.num_kernels,
            "seed": m.seed,
        },
        "rnnkit.Rocket",
    ),
]
