"""Training criteria: a loss to minimise and a metric to report, both as sums over samples.

The convention, used by :class:`~rnnkit.training.Trainer` and every printed figure:

* A *measure* (``squared_error``, ``cross_entropy_with_softmax``, ``classification_error``)
  returns the **sum over the samples** of the minibatch, as a scalar tensor. A sample is one row
  of the target: one step of a :class:`~rnnkit.SequenceBatch` target (``N`` samples), or one row
  of a ``[B, ...]`` tensor target (``B`` samples). This is CNTK's count: a label stream with
  one label per sequence counts one sample per sequence, a per-step label one per step.
* A *criterion* maps ``(output, target)`` to ``(loss_sum, metric_sum)``; :class:`Criterion`
  builds one from two measures. The trainer divides the loss sum by the number of samples (of
  all processes) before the gradient step, so the learning rate applies to the mean gradient
  per sample ("learning rate per minibatch" in CNTK's words), and reports ``sum / samples``
  as the average loss and metric, as CNTK's ``ProgressPrinter`` does.

Outputs and targets are plain tensors ``[B, ...]`` or SequenceBatches with the same lengths
(the measure then applies to the packed ``data``, every real step and no padding).

>>> import torch
>>> out = torch.tensor([[0.5], [2.0]])
>>> tgt = torch.tensor([[1.0], [1.0]])
>>> squared_error(out, tgt).item()  # (0.5 - 1)^2 + (2 - 1)^2
1.25
>>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
>>> classification_error(logits, torch.tensor([0, 0, 0])).item()  # the second is wrong
1.0
>>> loss, metric = Criterion(cross_entropy_with_softmax, classification_error)(
...     logits, torch.tensor([0, 0, 0]))
>>> round(loss.item(), 4), metric.item()
(1.4888, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor, nn

from rnnkit.sequences import SequenceBatch

__all__ = [
    "Criterion",
    "Measure",
    "classification_error",
    "count_samples",
    "cross_entropy_with_softmax",
    "smoothed_cross_entropy",
    "squared_error",
]

Data: TypeAlias = Tensor | SequenceBatch
Measure: TypeAlias = Callable[[Data, Data], Tensor]


def count_samples(target: Data) -> int:
    """The samples in ``target``: ``N`` steps of a SequenceBatch, ``B`` rows of a tensor."""
    if isinstance(target, SequenceBatch):
        return int(target.data.shape[0])
    if isinstance(target, Tensor):
        if target.dim() == 0:
            raise ValueError(
                "target: expected a tensor [B, ...] or a SequenceBatch, found a scalar"
            )
        return int(target.shape[0])
    raise TypeError(f"target: expected a Tensor or a SequenceBatch, found {type(target).__name__}")


def _rows(output: Data, target: Data, measure: str) -> tuple[Tensor, Tensor]:
    """The per-sample rows of ``output`` and ``target``: ``[S, ...]`` each, aligned."""
    if isinstance(output, SequenceBatch) and isinstance(target, SequenceBatch):
        if not torch.equal(output.lengths, target.lengths):
            raise ValueError(
                f"{measure}: output and target sequences differ in length: output lengths "
                f"{output.lengths.tolist()}, target lengths {target.lengths.tolist()}"
            )
        return output.data, target.data
    if isinstance(output, Tensor) and isinstance(target, Tensor):
        return output, target
    kinds = [
        "a SequenceBatch (one row per step)"
        if isinstance(v, SequenceBatch)
        else f"a tensor {tuple(v.shape)} (one row per sequence)"
        if isinstance(v, Tensor)
        else type(v).__name__
        for v in (output, target)
    ]
    raise TypeError(
        f"{measure}: output is {kinds[0]} but target is {kinds[1]}; both must be per step or "
        "both per sequence (Fold, or .last() of a Recurrence, gives one output per sequence)"
    )


def squared_error(output: Data, target: Data) -> Tensor:
    """``sum over samples and features of (output - target)^2`` (CNTK's ``squared_error``).

    Shapes: ``output`` and ``target`` both ``[S, *F]`` (or SequenceBatches with the same
    lengths and ``[*F]`` steps); no broadcasting, so ``[B, 1]`` against ``[B]`` is an error.
    """
    out, tgt = _rows(output, target, "squared_error")
    if out.shape != tgt.shape:
        raise ValueError(
            f"squared_error: expected output and target of the same shape, found output "
            f"{tuple(out.shape)} and target {tuple(tgt.shape)}"
        )
    return nn.functional.mse_loss(out, tgt, reduction="sum")  # one op, one backward node


def _class_targets(logits: Tensor, target: Tensor, measure: str) -> Tensor:
    """Class indices ``[S]`` from ``target``: indices ``[S]``/``[S, 1]`` or one-hot ``[S, C]``."""
    if logits.dim() != 2:
        raise ValueError(
            f"{measure}: expected output scores of shape [S, C], found {tuple(logits.shape)}"
        )
    s, c = logits.shape
    if not target.is_floating_point():
        ids = target.reshape(-1) if target.dim() == 2 and target.shape[1] == 1 else target
        if ids.shape != (s,):
            raise ValueError(
                f"{measure}: expected class indices of shape [{s}] or [{s}, 1] for output "
                f"{tuple(logits.shape)}, found {tuple(target.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c):
            raise ValueError(
                f"{measure}: class indices must lie in [0, {c}), found min {int(ids.min())} "
                f"and max {int(ids.max())}"
            )
        return ids.long()
    if target.shape != logits.shape:
        raise ValueError(
            f"{measure}: expected one-hot targets of shape {tuple(logits.shape)} (or integer "
            f"class indices [{s}]), found {tuple(target.shape)}"
        )
    return target.argmax(dim=1)


def cross_entropy_with_softmax(output: Data, target: Data) -> Tensor:
    """``sum over samples of -sum_c target_c log softmax(output)_c`` (CNTK's name).

    Shapes: ``output`` ``[S, C]`` unnormalised scores; ``target`` class indices ``[S]`` or
    ``[S, 1]`` (integers), or a distribution over classes ``[S, C]`` (one-hot, as CTF files
    hold labels). SequenceBatches of ``[C]`` steps and ``[1]``/``[C]`` targets work the same.
    """
    out, tgt = _rows(output, target, "cross_entropy_with_softmax")
    log_p = torch.log_softmax(out, dim=-1)
    if tgt.is_floating_point():
        if tgt.shape != out.shape:
            _class_targets(out, tgt, "cross_entropy_with_softmax")  # raises with the shapes
        return -(tgt * log_p).sum()
    ids = _class_targets(out, tgt, "cross_entropy_with_softmax")
    return -log_p.gather(1, ids.unsqueeze(1)).sum()


def smoothed_cross_entropy(epsilon: float) -> Measure:
    """The cross entropy (a sum over samples) against targets with label smoothing
    ``epsilon``: the true class has ``1 - epsilon + epsilon / C``, every other ``epsilon / C``.

    >>> loss = smoothed_cross_entropy(0.2)(torch.tensor([[0.0, 0.0]]), torch.tensor([[1]]))
    >>> round(loss.item(), 4)  # log 2 whatever the target
    0.6931
    """

    def measure(output: Data, target: Data) -> Tensor:
        out, tgt = _rows(output, target, "smoothed_cross_entropy")
        ids = _class_targets(out, tgt, "smoothed_cross_entropy")
        return nn.functional.cross_entropy(out, ids, reduction="sum", label_smoothing=epsilon)

    return measure


def classification_error(output: Data, target: Data) -> Tensor:
    """The number of samples whose highest score is not the target class (a float count).

    Shapes as :func:`cross_entropy_with_softmax`; not differentiable (a metric).
    """
    out, tgt = _rows(output, target, "classification_error")
    ids = _class_targets(out, tgt, "classification_error")
    return (out.detach().argmax(dim=1) != ids).sum().to(out.dtype)


@dataclass(frozen=True)
class Criterion:
    """``(output, target) -> (loss_sum, metric_sum)`` from a loss and an optional metric.

    Args:
        loss: a measure to minimise (a sum over samples, differentiable).
        metric: a measure to report (a sum over samples), computed without gradient; ``None``
            (or the loss's own function) reports the loss itself, as CNTK's solar example does
            with squared error, without computing it twice.

    >>> import torch
    >>> loss, metric = Criterion(squared_error)(torch.ones(3, 1), torch.zeros(3, 1))
    >>> loss.item(), metric.item()
    (3.0, 3.0)
    """

    loss: Measure
    metric: Measure | None = None

    def __call__(self, output: Data, target: Data) -> tuple[Tensor, Tensor]:
        loss = self.loss(output, target)
        if self.metric is None or self.metric is self.loss:
            return loss, loss.detach()
        with torch.no_grad():
            metric = self.metric(output, target)
        return loss, metric
