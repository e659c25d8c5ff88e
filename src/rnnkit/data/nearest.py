"""Distance baselines for series classification: dynamic time warping and 1-nearest neighbour.

:func:`dtw_distances` is the full-window DTW (no warping constraint) of Sakoe and Chiba (1978)
with the squared Euclidean distance between steps as the local cost, between every pair of
two lists of series of any lengths (``[T_i, D]`` each), computed for many pairs at once: the
cumulative-cost table is filled one anti-diagonal at a time (every cell of an anti-diagonal
depends only on the two before it), over a block of pairs as one tensor. The distance is the
cost of the cheapest warping path from ``(0, 0)`` to ``(T_a - 1, T_b - 1)``, the sum of the
local costs along it (the square root is not taken; the neighbour is the same).

:func:`nearest_neighbour_dtw_accuracy` is the 1-NN DTW baseline of the UCR archive (full
window). The 1-NN Euclidean baseline is
:func:`rnnkit.data.classify.nearest_neighbour_accuracy`.

>>> import torch
>>> a = [torch.tensor([[0.0], [1.0], [2.0]])]
>>> b = [torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [1.0], [1.0], [2.0]])]
>>> dtw_distances(a, b).tolist()  # the second is the first with a step repeated
[[1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["dtw_distances", "nearest_neighbour_dtw_accuracy"]


def _padded(series: Sequence[Tensor], name: str) -> tuple[Tensor, Tensor]:
    if not series:
        raise ValueError(f"{name}: expected at least one series, found none")
    dims = {int(s.shape[1]) if s.dim() == 2 else -1 for s in series}
    if len(dims) != 1 or -1 in dims:
        raise ValueError(
            f"{name}: expected series of shape [T_i, D] with one D, found shapes "
            f"{sorted({tuple(s.shape) for s in series})[:3]}"
        )
    lengths = torch.tensor([int(s.shape[0]) for s in series])
    if int(lengths.min()) < 1:
        raise ValueError(f"{name}: series {int(lengths.argmin())} has no steps")
    out = torch.zeros(len(series), int(lengths.max()), dims.pop(), dtype=torch.float64)
    for i, s in enumerate(series):
        out[i, : s.shape[0]] = s.to(torch.float64)
    return out, lengths


def dtw_distances(a: Sequence[Tensor], b: Sequence[Tensor], *, block: int = 4096) -> Tensor:
    """``[len(a), len(b)]`` float64 full-window DTW distances (module docstring) between every
    series of ``a`` and every series of ``b`` (``[T_i, D]`` tensors, any lengths, one ``D``).

    ``block`` pairs are computed together (memory about ``block x (T_a + T_b) x 3`` numbers
    beside each pair's ``T_a x T_b`` local costs, computed one anti-diagonal at a time).
    """
    xa, la = _padded(a, "a")
    xb, lb = _padded(b, "b")
    if xa.shape[2] != xb.shape[2]:
        raise ValueError(
            f"b: expected series of {xa.shape[2]} channels as in a, found {xb.shape[2]}"
        )
    pairs = torch.cartesian_prod(torch.arange(len(a)), torch.arange(len(b)))
    # pairs in order of their longer series, so that a block pads to little more than it needs
    longer = torch.maximum(la[pairs[:, 0]], lb[pairs[:, 1]])
    pairs = pairs[torch.sort(longer, stable=True).indices]
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    for start in range(0, len(pairs), block):
        p = pairs[start : start + block]
        lx, ly = la[p[:, 0]], lb[p[:, 1]]
        x, y = xa[p[:, 0], : int(lx.max())], xb[p[:, 1], : int(ly.max())]
        out[p[:, 0], p[:, 1]] = _dtw_block(x, lx, y, ly)
    return out


def _dtw_block(x: Tensor, lx: Tensor, y: Tensor, ly: Tensor) -> Tensor:
    """DTW of pair k: ``x[k, :lx[k]]`` against ``y[k, :ly[k]]`` (``[P, T, D]`` padded).

    Anti-diagonal ``d`` holds the cells ``(i, d - i)``; with ``y`` reversed, the steps of
    ``y`` that meet ``x[i0:i1]`` there are a contiguous slice too, so every diagonal is a few
    slices of ``[P, n]``. Rows are stored shifted by one (``row[0]`` is the boundary ``i =
    -1``, always infinite); cells outside a pair's lengths cost infinity.
    """
    p, tx, ty = x.shape[0], x.shape[1], y.shape[1]
    xs = x.permute(0, 2, 1)  # [P, D, Tx]
    yr = y.flip(1).permute(0, 2, 1)  # [P, D, Ty]; yr[..., ty - 1 - j] = y[..., j]
    steps_x, steps_y = torch.arange(tx), torch.arange(ty)
    zero = torch.zeros((), dtype=x.dtype)
    x_out = torch.where(steps_x[None, :] < lx[:, None], zero, torch.inf)  # [P, Tx]
    y_out = torch.where(steps_y.flip(0)[None, :] < ly[:, None], zero, torch.inf)  # reversed
    prev2 = torch.full((p, tx + 1), torch.inf, dtype=x.dtype)
    prev1 = prev2.clone()
    result = torch.full((p,), torch.inf, dtype=x.dtype)
    ends: dict[int, list[int]] = {}
    for k, d in enumerate((lx + ly - 2).tolist()):
        ends.setdefault(d, []).append(k)
    for d in range(tx + ty - 1):
        i0, i1 = max(0, d - ty + 1), min(d, tx - 1) + 1  # rows on this diagonal
        j0 = ty - 1 - (d - i0)  # yr index of y[d - i0]; it rises with i
        sl = slice(j0, j0 + (i1 - i0))
        cost = (xs[:, :, i0:i1] - yr[:, :, sl]).pow(2).sum(1) + x_out[:, i0:i1] + y_out[:, sl]
        if d == 0:
            best = torch.zeros_like(cost)
        else:
            up = prev1[:, i0:i1]  # (i - 1, j): row i - 1 + 1
            left = prev1[:, i0 + 1 : i1 + 1]  # (i, j - 1)
            diag = prev2[:, i0:i1]  # (i - 1, j - 1)
            best = torch.minimum(torch.minimum(up, left), diag)
        current = torch.full((p, tx + 1), torch.inf, dtype=x.dtype)
        current[:, i0 + 1 : i1 + 1] = cost + best
        if d in ends:
            done = torch.tensor(ends[d])
            result[done] = current[done, lx[done]]
        prev2, prev1 = prev1, current
    return result


def nearest_neighbour_dtw_accuracy(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]], *, block: int = 4096
) -> float:
    """The accuracy on ``test`` of the 1-nearest-neighbour rule in full-window DTW with
    ``train`` as references (examples ``{"features": [T_i, D], "label": [1]}``); ties go to
    the earlier training series.

    >>> tr = [{"features": torch.tensor([[0.0], [0.0]]), "label": torch.tensor([0])},
    ...       {"features": torch.tensor([[0.0], [5.0]]), "label": torch.tensor([1])}]
    >>> te = [{"features": torch.tensor([[0.0], [0.0], [4.0], [5.0]]), "label": torch.tensor([1])}]
    >>> nearest_neighbour_dtw_accuracy(tr, te)
    1.0
    """
    distances = dtw_distances(
        [e["features"] for e in test], [e["features"] for e in train], block=block
    )
    labels = torch.tensor([int(e["label"]) for e in train])
    truth = torch.tensor([int(e["label"]) for e in test])
    return float((labels[distances.argmin(1)] == truth).double().mean())
