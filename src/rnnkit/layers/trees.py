"""Classifiers of trees: a Tree-LSTM over the tree and an LSTM over the flat tokens (its
leaves), the two models ``rnnkit tree`` compares (on ListOps, Nangia & Bowman 2018, or on
trees read from files).

Both embed ``vocab_size`` tokens (by default the 15 ListOps tokens,
:data:`~rnnkit.data.listops.LISTOPS_VOCAB`) and end in a linear layer to ``num_classes``
classes (by default the 10 ListOps values). The Tree-LSTM is N-ary (ordered children, at most
``max_children`` of them, 2 by default) or, with ``max_children=None``, Child-Sum (any
number). :class:`TreeClassifier` reads a
:class:`~rnnkit.trees.TreeBatch` of token ids (what
:class:`~rnnkit.data.listops.ListOpsExpression` collates into), :class:`SequenceClassifier` a
:class:`~rnnkit.SequenceBatch` of token ids.

>>> import torch
>>> from rnnkit.data.listops import ListOpsExpression, listops_token_ids
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> batch = ListOpsExpression.collate([ListOpsExpression("[SM 1 2 ]"), ListOpsExpression("7")])
>>> TreeClassifier(8, 8)(batch).shape
torch.Size([2, 10])
>>> from rnnkit import SequenceBatch
>>> tokens = SequenceBatch.from_list([listops_token_ids("[SM 1 2 ]"), listops_token_ids("7")])
>>> SequenceClassifier(8, 8)(tokens).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from rnnkit.cells import LSTMCell
from rnnkit.data.listops import LISTOPS_VOCAB, NUM_CLASSES
from rnnkit.recurrence import Fold
from rnnkit.recursive import ChildSumTreeLSTMCell, NaryTreeLSTMCell, Recursive
from rnnkit.sequences import SequenceBatch
from rnnkit.trees import TreeBatch

__all__ = ["SAVED_MODULES", "SequenceClassifier", "TreeClassifier"]


class TreeClassifier(nn.Module):
    """Embedding, a Tree-LSTM over the tree (``NaryTreeLSTMCell`` with n = ``max_children``,
    or ``ChildSumTreeLSTMCell`` when ``max_children`` is None), a linear layer on the root's
    ``h``.

    ``forward(batch)`` maps a :class:`TreeBatch` of token ids (internal nodes have none, so
    their input is zero) to logits ``[num_trees, num_classes]``. ``dropout`` (in training mode only)
    drops units of the root's ``h`` before the linear layer. A batch on another device than
    the model is moved to the model's.
    """

    def __init__(
        self,
        embedding_size: int,
        hidden_size: int,
        dropout: float = 0.0,
        *,
        vocab_size: int = len(LISTOPS_VOCAB),
        num_classes: int = NUM_CLASSES,
        max_children: int | None = 2,
    ) -> None:
        super().__init__()
        self.embedding_size, self.hidden_size = embedding_size, hidden_size
        self.max_children = max_children
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        cell: nn.Module = (
            ChildSumTreeLSTMCell(embedding_size, hidden_size)
            if max_children is None
            else NaryTreeLSTMCell(embedding_size, hidden_size, n=max_children)
        )
        self.encoder = Recursive(cell)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, num_classes)

    def forward(self, batch: TreeBatch) -> Tensor:
        device = self.output.weight.device
        if batch.roots.device != device:
            batch = batch.to(device)
        h, _ = self.encoder.root_states(batch, batch.embed(self.embedding))
        return self.output(self.dropout(h))


class SequenceClassifier(nn.Module):
    """Embedding, an LSTM folded over the tokens (``Fold(LSTMCell)``), a linear layer on the
    last ``h``.

    ``forward(x)`` maps a :class:`SequenceBatch` of token ids (``data [N]``) to
    ``[B, num_classes]``.
    ``dropout`` (in training mode only) drops units of the last ``h`` before the linear layer.
    """

    def __init__(
        self,
        embedding_size: int,
        hidden_size: int,
        dropout: float = 0.0,
        *,
        vocab_size: int = len(LISTOPS_VOCAB),
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        self.embedding_size, self.hidden_size = embedding_size, hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.encoder = Fold(LSTMCell(embedding_size, hidden_size))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, num_classes)

    def forward(self, x: SequenceBatch) -> Tensor:
        return self.output(self.dropout(self.encoder(x.with_data(self.embedding(x.data)))))


def _classifier_config(model: Any) -> dict[str, Any]:
    return {
        "embedding_size": model.embedding_size,
        "hidden_size": model.hidden_size,
        "dropout": float(model.dropout.p),
        "vocab_size": int(model.embedding.num_embeddings),
        "num_classes": int(model.output.out_features),
    }


def _tree_config(model: Any) -> dict[str, Any]:
    return {**_classifier_config(model), "max_children": model.max_children}


SAVED_MODULES = [
    (TreeClassifier, _tree_config, "rnnkit.TreeClassifier"),
    (SequenceClassifier, _classifier_config, "rnnkit.SequenceClassifier"),
]
