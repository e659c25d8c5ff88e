"""Convolutional series classifiers over ragged batches: FCN, ResNet and InceptionTime.

FCN and ResNet follow Wang, Yan and Oates (2017), "Time series classification from scratch
with deep neural networks: a strong baseline"; InceptionTime follows Ismail Fawaz et al.
(2020), "InceptionTime: finding AlexNet for time series classification". Each takes a
:class:`~rnnkit.sequences.SequenceBatch` of ``[I]`` steps and returns ``[B, C]`` features
(the global average over each sequence's own steps of the last block's channels), to be
followed by a ``Dense(C, classes)``.

Ragged batches never leak padding into the result. Inside, a batch is a padded ``[B, C, T]``
tensor with a ``[B, 1, T]`` mask of its real steps:

* before every convolution the padded steps are set to zero, so a sequence sees zeros beyond
  its ends exactly as it would alone (``"same"`` padding);
* before a max pooling they are set to ``-inf``, as torch's own padding is;
* :class:`MaskedBatchNorm1d` takes its statistics over the real steps only;
* global average pooling divides by each sequence's own length.

So in eval mode a sequence's output is the same alone and batched with longer ones.
:class:`Downsample` averages windows of ``factor`` steps first (long series; the recipe picks
the factor from the training lengths). Series shorter than a kernel are fine: the kernel sees
zeros beyond their ends.

>>> import torch
>>> from rnnkit import SequenceBatch
>>> net = FCN(1, channels=(4, 4), kernels=(3, 3)).eval()
>>> a = torch.randn(5, 1, dtype=torch.float64)
>>> net = net.double()
>>> alone = net(SequenceBatch.from_list([a]))
>>> batched = net(SequenceBatch.from_list([torch.randn(9, 1, dtype=torch.float64), a]))
>>> bool(torch.allclose(alone[0], batched[1], atol=1e-12))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnkit.layers import Layer, SavedModule
from rnnkit.sequences import SequenceBatch

__all__ = [
    "FCN",
    "SAVED_MODULES",
    "Downsample",
    "InceptionTime",
    "MaskedBatchNorm1d",
    "ResNet",
    "masked_mean",
    "padded_with_mask",
]


def padded_with_mask(x: SequenceBatch) -> tuple[Tensor, Tensor]:
    """``([B, I, T] zeros after each end, [B, 1, T] 1.0 on the real steps)``, caller order."""
    if not isinstance(x, SequenceBatch):
        raise TypeError(f"input: expected a SequenceBatch, found {type(x).__name__}")
    if x.data.dim() != 2:
        raise ValueError(f"input: expected steps of shape [I], found {tuple(x.feature_shape)}")
    padded, lengths = x.to_padded()  # [B, T, I]
    steps = torch.arange(padded.shape[1], device=padded.device)
    mask = (steps[None, :] < lengths.to(padded.device)[:, None]).to(padded.dtype)
    return padded.transpose(1, 2), mask[:, None, :]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``[B, C]`` the mean of ``x [B, C, T]`` over the steps where ``mask [B, 1, T]`` is 1."""
    return (x * mask).sum(-1) / mask.sum(-1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch normalisation of ``[B, C, T]`` whose statistics count the real steps only.

    Training: mean and (biased) variance of every channel over the steps where ``mask`` is 1,
    across the batch; the running estimates move by ``momentum`` towards them (the variance
    unbiased, as torch's). Eval: the running estimates. The output is zero on padded steps.
    Parameters and buffers are those of ``torch.nn.BatchNorm1d(num_features)``.
    """

    def _running(self) -> tuple[Tensor, Tensor]:
        if self.running_mean is None or self.running_var is None:
            raise ValueError("MaskedBatchNorm1d: expected track_running_stats=True")
        return self.running_mean, self.running_var

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        if self.training:
            count = mask.sum()
            mean = (x * mask).sum((0, 2)) / count
            var = (((x - mean[None, :, None]) * mask) ** 2).sum((0, 2)) / count
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp(min=1)
                running_mean, running_var = self._running()
                running_mean.mul_(1 - m).add_(m * mean)
                running_var.mul_(1 - m).add_(m * unbiased)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        else:
            mean, var = self._running()
        y = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y * mask


class _Conv(nn.Conv1d):
    """``Conv1d`` with ``"same"`` zero padding ((k - 1) // 2 before, the rest after) that first
    zeroes the padded steps of its input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        k = self.kernel_size[0] - 1
        x = torch.where(mask > 0, x, 0.0)
        return super().forward(nn.functional.pad(x, (k // 2, k - k // 2)))


class _ConvNorm(nn.Module):
    """Conv, masked batch norm, and ReLU when ``relu``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = True):
        super().__init__()
        self.conv = _Conv(in_channels, out_channels, kernel_size)
        self.norm = MaskedBatchNorm1d(out_channels)
        self.relu = relu

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.norm(self.conv(x, mask), mask)
        return torch.relu(y) if self.relu else y


class Downsample(Layer):
    """Each sequence's steps averaged in windows of ``factor`` (the last window over the steps
    it has): a sequence of ``L`` steps becomes ``ceil(L / factor)``; ``factor=1`` keeps it.

    Input and output: a SequenceBatch of ``[I]`` steps.

    >>> from rnnkit import SequenceBatch
    >>> x = SequenceBatch.from_list([torch.tensor([[1.0], [3.0], [5.0]])])
    >>> Downsample(2)(x).to_list()[0].flatten().tolist()
    [2.0, 5.0]
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor: expected an integer >= 1, found {factor!r}")
        self.factor = factor

    def forward(self, x: SequenceBatch) -> SequenceBatch:
        if self.factor == 1:
            return x
        padded, mask = padded_with_mask(x)
        r = self.factor
        t = padded.shape[-1]
        extra = (-t) % r
        sums = nn.functional.pad(padded * mask, (0, extra)).unflatten(-1, (-1, r)).sum(-1)
        counts = nn.functional.pad(mask, (0, extra)).unflatten(-1, (-1, r)).sum(-1)
        lengths = (x.lengths + r - 1) // r
        mean = (sums / counts.clamp(min=1)).transpose(1, 2)  # [B, T', I]
        return SequenceBatch.from_padded(mean, lengths)


class _Family(Layer):
    """Shared input handling: optional downsampling, then the padded layout with its mask."""

    out_features: int
    blocks: nn.ModuleList

    def __init__(self, in_channels: int, downsample: int) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected an integer >= 1, found {in_channels!r}")
        self.in_channels = in_channels
        self.downsample = Downsample(downsample)

    def _inputs(self, x: SequenceBatch) -> tuple[Tensor, Tensor]:
        padded, mask = padded_with_mask(self.downsample(x))
        if padded.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} input: expected steps of {self.in_channels} channels, "
                f"found {padded.shape[1]}"
            )
        return padded, mask

    def forward(self, x: SequenceBatch) -> Tensor:
        """Each of ``blocks`` in turn over the padded steps, then the mean over real steps."""
        h, mask = self._inputs(x)
        for block in self.blocks:
            h = block(h, mask)
        return masked_mean(h, mask)


def _sizes(name: str, values: Sequence[int], count: int | None = None) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if not out or any(v < 1 for v in out) or (count is not None and len(out) != count):
        what = f"{count} integers" if count is not None else "integers"
        raise ValueError(f"{name}: expected {what} >= 1, found {list(values)!r}")
    return out


class FCN(_Family):
    """Fully convolutional network (Wang et al. 2017): blocks of conv, batch norm and ReLU, then
    global average pooling.

    Default: ``channels=(128, 256, 128)``, ``kernels=(8, 5, 3)``. Input: a SequenceBatch of
    ``[in_channels]`` steps; output ``[B, channels[-1]]``, caller order.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (128, 256, 128),
        kernels: Sequence[int] = (8, 5, 3),
        downsample: int = 1,
    ) -> None:
        super().__init__(in_channels, downsample)
        self.channels = _sizes("channels", channels)
        self.kernels = _sizes("kernels", kernels, len(self.channels))
        sizes = (in_channels, *self.channels)
        self.blocks = nn.ModuleList(
            _ConvNorm(a, b, k) for a, b, k in zip(sizes, sizes[1:], self.kernels, strict=False)
        )
        self.out_features = self.channels[-1]


class _Residual(nn.Module):
    """ResNet block: conv-BN-ReLU, conv-BN-ReLU, conv-BN, plus a shortcut (1x1 conv and BN
    when the channels change, BN alone otherwise), then ReLU."""

    def __init__(self, in_channels: int, channels: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        sizes = (in_channels,) + (channels,) * len(kernels)
        last = len(kernels) - 1
        self.convs = nn.ModuleList(
            _ConvNorm(a, b, k, relu=i < last)
            for i, (a, b, k) in enumerate(zip(sizes, sizes[1:], kernels, strict=False))
        )
        self.shortcut = _Conv(in_channels, channels, 1) if in_channels != channels else None
        self.shortcut_norm = MaskedBatchNorm1d(channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = x
        for conv in self.convs:
            h = conv(h, mask)
        s = self.shortcut(x, mask) if self.shortcut is not None else x
        return torch.relu(h + self.shortcut_norm(s, mask))


class ResNet(_Family):
    """Residual network (Wang et al. 2017): residual blocks of three conv-BN layers, then
    global average pooling.

    Default: ``channels=(64, 128, 128)`` (one block each), ``kernels=(8, 5, 3)`` (inside every
    block). Input: a SequenceBatch of ``[in_channels]`` steps; output ``[B, channels[-1]]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128, 128),
        kernels: Sequence[int] = (8, 5, 3),
        downsample: int = 1,
    ) -> None:
        super().__init__(in_channels, downsample)
        self.channels = _sizes("channels", channels)
        self.kernels = _sizes("kernels", kernels)
        sizes = (in_channels, *self.channels)
        self.blocks = nn.ModuleList(
            _Residual(a, b, self.kernels) for a, b in itertools.pairwise(sizes)
        )
        self.out_features = self.channels[-1]


class _Inception(nn.Module):
    """Inception module: a 1x1 bottleneck (when more than one input channel), convolutions of
    each kernel size over it, and a max pooling (3, stride 1) followed by a 1x1 convolution
    over the input; concatenated, batch norm, ReLU. Output ``filters * (len(kernels) + 1)``."""

    def __init__(self, in_channels: int, filters: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        inner = filters if in_channels > 1 else in_channels
        self.bottleneck = _Conv(in_channels, filters, 1, bias=False) if in_channels > 1 else None
        self.convs = nn.ModuleList(_Conv(inner, filters, k, bias=False) for k in kernels)
        self.pool_conv = _Conv(in_channels, filters, 1, bias=False)
        self.norm = MaskedBatchNorm1d(filters * (len(kernels) + 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        z = self.bottleneck(x, mask) if self.bottleneck is not None else x
        branches = [conv(z, mask) for conv in self.convs]
        pooled = nn.functional.max_pool1d(
            x.masked_fill(mask == 0, -torch.inf), 3, stride=1, padding=1
        )
        branches.append(self.pool_conv(pooled, mask))
        return torch.relu(self.norm(torch.cat(branches, 1), mask))


class InceptionTime(_Family):
    """One InceptionTime network (Ismail Fawaz et al. 2020): ``depth`` inception modules with a
    residual connection (1x1 conv and BN) around every 3, then global average pooling.

    Default: ``filters=32``, ``kernels=(40, 20, 10)``, ``depth=6`` (output ``[B, 128]``).
    Input: a SequenceBatch of ``[in_channels]`` steps; output ``[B, filters * 4]``.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int = 32,
        kernels: Sequence[int] = (40, 20, 10),
        depth: int = 6,
        downsample: int = 1,
    ) -> None:
        super().__init__(in_channels, downsample)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters: expected an integer >= 1, found {filters!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth: expected an integer >= 1, found {depth!r}")
        self.filters, self.depth = filters, depth
        self.kernels = _sizes("kernels", kernels)
        width = filters * (len(self.kernels) + 1)
        self.modules_ = nn.ModuleList(
            _Inception(in_channels if i == 0 else width, filters, self.kernels)
            for i in range(depth)
        )
        starts = [i for i in range(depth) if i % 3 == 0 and i + 3 <= depth]
        self.shortcuts = nn.ModuleList(
            _ConvNorm(in_channels if i == 0 else width, width, 1, relu=False) for i in starts
        )
        self.out_features = width

    def forward(self, x: SequenceBatch) -> Tensor:
        h, mask = self._inputs(x)
        residual = h
        for i, module in enumerate(self.modules_):
            h = module(h, mask)
            if i % 3 == 2 and i // 3 < len(self.shortcuts):
                h = torch.relu(h + self.shortcuts[i // 3](residual, mask))
                residual = h
        return masked_mean(h, mask)


SAVED_MODULES: list[SavedModule] = [
    (Downsample, lambda m: {"factor": m.factor}, "rnnkit.Downsample"),
    (
        FCN,
        lambda m: {
            "in_channels": m.in_channels,
            "channels": list(m.channels),
            "kernels": list(m.kernels),
            "downsample": m.downsample.factor,
        },
        "rnnkit.FCN",
    ),
    (
        ResNet,
        lambda m: {
            "in_channels": m.in_channels,
            "channels": list(m.channels),
            "kernels": list(m.kernels),
            "downsample": m.downsample.factor,
        },
        "rnnkit.ResNet",
    ),
    (
        InceptionTime,
        lambda m: {
            "in_channels": m.in_channels,
            "filters": m.filters,
            "kernels": list(m.kernels),
            "depth": m.depth,
            "downsample": m.downsample.factor,
        },
        "rnnkit.InceptionTime",
    ),
]
