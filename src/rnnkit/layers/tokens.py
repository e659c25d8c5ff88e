"""Token features for taggers: one embedding per categorical column, concatenated.

A token described by several categorical values (the word, its suffixes, its shape, a part of
speech, ...; see :mod:`rnnkit.data.tagging`) arrives as int64 ids ``[K]`` per step; each column
has its own table and the vectors are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.layers import Embedding, Layer
from rnnkit.sequences import SequenceBatch

__all__ = ["SAVED_MODULES", "TokenFeatures"]


class TokenFeatures(Layer):
    """One embedding per categorical column, concatenated.

    Input: a SequenceBatch (or a tensor ``[N, K]``) of int64 ids ``[K]`` per step, column
    ``k`` indexing ``sizes[k]`` values. Output: ``[sum(dims)]`` per step.

    >>> layer = TokenFeatures([5, 3], [2, 1])
    >>> x = SequenceBatch.from_list([torch.tensor([[4, 2], [0, 1]])])
    >>> tuple(layer(x).data.shape)
    (2, 3)
    """

    def __init__(self, sizes: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) != len(dims) or not sizes:
            raise ValueError(
                f"sizes and dims: expected one dim per column, found {len(sizes)} sizes and "
                f"{len(dims)} dims"
            )
        self.sizes, self.dims = [int(s) for s in sizes], [int(d) for d in dims]
        self.embeddings = nn.ModuleList(Embedding(s, d) for s, d in zip(sizes, dims, strict=True))

    def _embed(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2 or ids.shape[1] != len(self.sizes):
            raise ValueError(
                f"TokenFeatures input: expected ids [N, {len(self.sizes)}], found "
                f"{tuple(ids.shape)}"
            )
        return torch.cat([e(ids[:, k]) for k, e in enumerate(self.embeddings)], dim=-1)

    def forward(self, x: SequenceBatch | Tensor) -> SequenceBatch | Tensor:
        if isinstance(x, SequenceBatch):
            return x.map(self._embed)
        return self._embed(x)


def _token_features_config(module: TokenFeatures) -> dict[str, Any]:
    return {"sizes": module.sizes, "dims": module.dims}


SAVED_MODULES = [(TokenFeatures, _token_features_config, "rnnkit.TokenFeatures")]
