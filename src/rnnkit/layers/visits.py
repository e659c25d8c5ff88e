"""The Doctor AI-style model of next-visit prediction (Choi et al. 2016, arXiv:1511.05942) and
its measures.

At visit t the network reads the visit's codes as a multi-hot vector ``[V]`` and
``log(1 + days since the previous visit)`` (see :func:`rnnkit.data.visits.visit_features`),
embeds them (``Dense(V + 1, E, tanh)``; none with ``E = 0``), runs a GRU over the visits and
gives, for visit t + 1, a score (logit) per code and ``log(1 + days to the next visit)``.

The model is made of rnnkit's own layers (Dense, Recurrence, GRUCell), which
:mod:`rnnkit.saving` registers itself, so ``SAVED_MODULES`` is empty: a saved model loads
without this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rnnkit.data.visits import recall_at_k
from rnnkit.sequences import SequenceBatch

if TYPE_CHECKING:
    from rnnkit.layers import SavedModule

__all__ = ["SAVED_MODULES", "doctor_ai_model", "output_bias", "recall_measure", "visit_loss"]

SAVED_MODULES: list[SavedModule] = []


def doctor_ai_model(
    num_codes: int, embedding_size: int, hidden_size: int, bias: Tensor | None = None
) -> nn.Module:
    """``[Dense(V+1, E, tanh) >>] Recurrence(GRUCell) >> Dense(H, V+1)``: per visit, V code
    scores (logits) and the log time to the next visit.

    ``bias`` ``[V+1]`` starts the last layer's bias there (:func:`output_bias`), so training
    does not spend its first epochs learning the codes' base rates.
    """
    from rnnkit.cells import GRUCell
    from rnnkit.layers import Dense
    from rnnkit.recurrence import Recurrence

    width = num_codes + 1
    head = Dense(hidden_size, width)
    if bias is not None:
        if bias.shape != (width,):
            raise ValueError(f"bias: expected shape [{width}], found {list(bias.shape)}")
        with torch.no_grad():
            head.linear.bias.copy_(bias)
    if embedding_size == 0:
        return Recurrence(GRUCell(width, hidden_size)) >> head
    return (
        Dense(width, embedding_size, activation=torch.tanh)
        >> Recurrence(GRUCell(embedding_size, hidden_size))
        >> head
    )


def output_bias(labels: Tensor) -> Tensor:
    """``[V+1]``: the log-odds of each code per visit (rates clamped to [1e-4, 1 - 1e-4]) and
    the mean log time, from the training labels ``[N, V+1]``.

    >>> output_bias(torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 4.0]])).tolist()[1:]
    [0.0, 3.0]
    """
    rate = labels[:, :-1].mean(0).clamp(1e-4, 1 - 1e-4)
    return torch.cat([torch.log(rate / (1 - rate)), labels[:, -1:].mean(0)])


def _rows(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> tuple[Tensor, Tensor]:
    out = output.data if isinstance(output, SequenceBatch) else output
    tgt = target.data if isinstance(target, SequenceBatch) else target
    if out.shape != tgt.shape:
        raise ValueError(
            f"visit_loss: expected output and target of the same shape [N, V+1], found "
            f"{tuple(out.shape)} and {tuple(tgt.shape)}"
        )
    return out, tgt


def visit_loss(time_weight: float = 1.0) -> Any:
    """The measure ``(output, target) -> sum over visits of (binary cross-entropy summed over
    the codes + time_weight * squared error of the log time)``; output and target
    ``[N, V+1]`` (last column: the log time).

    >>> out, tgt = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0]])
    >>> round(visit_loss()(out, tgt).item(), 4)  # 2 * log 2 + (1 - 2)^2
    2.3863
    """

    def measure(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
        out, tgt = _rows(output, target)
        bce = nn.functional.binary_cross_entropy_with_logits(
            out[:, :-1], tgt[:, :-1], reduction="sum"
        )
        return bce + time_weight * (out[:, -1] - tgt[:, -1]).pow(2).sum()

    return measure


def recall_measure(k: int) -> Any:
    """The measure ``(output, target) -> sum over visits of recall@k`` (codes outside the list
    are not counted here; the test figures count them as misses)."""

    def measure(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
        out, tgt = _rows(output, target)
        return recall_at_k(out[:, :-1], tgt[:, :-1], k).sum()

    return measure
