"""`Recursive`: a tree cell applied bottom-up over a `TreeBatch`, and the tree cells.

Shape legend: N nodes of the batch, n nodes of one height, K children slots, I input, H hidden.

A **tree cell** computes a node's state from its input and its children's states:
``cell(x, children, mask) -> state`` with ``x [n, I]``, ``children`` the children's states
stacked as ``[n, K, H]`` (a tuple of them for the LSTM cells, ``(h, c)``), missing children
given as zero states, and ``mask [n, K]`` True where a child exists; ``cell.leaf(x) -> state``
computes a leaf's state. ``max_children`` is the fixed number of ordered child slots (binary
cells: 2) or None for a cell that takes any number (child-sum).

:class:`Recursive` runs a cell on a whole forest one height at a time: first every leaf at once,
then, for each height h = 1, 2, ..., it gathers the children's states of every node of height h
from the states computed so far (one ``index_select``), runs the cell once on all those nodes,
and keeps the result. Its sequential depth is the height of the tallest tree, not the number of
nodes, and every operation is out of place, so autograd gives backpropagation through structure.

>>> import torch
>>> from rnnkit.trees import Tree, TreeBatch
>>> torch.manual_seed(0) and None
>>> trees = [Tree.from_listops("[SM 1 2 ]"), Tree.from_listops("[MAX 3 4 5 ]")]
>>> vocab = {t: i for i, t in enumerate("[SM [MAX ] 1 2 3 4 5".split())}
>>> batch = TreeBatch.from_trees(trees, vocab=vocab)
>>> tree_lstm = Recursive(ChildSumTreeLSTMCell(4, 3))
>>> x = batch.embed(torch.nn.Embedding(8, 4))
>>> h, c = tree_lstm(batch, x)
>>> h.shape, tree_lstm.root_states(batch, x)[0].shape, batch.height
(torch.Size([16, 3]), torch.Size([2, 3]), 4)
"""

from __future__ import annotations

import math
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import State, as_tuple
from rnnkit.lazy import input_weight, materialize_input, take_input_size
from rnnkit.trees import TreeBatch

__all__ = [
    "ChildSumTreeLSTMCell",
    "NaryTreeLSTMCell",
    "RNTNCell",
    "Recursive",
    "RecursiveCell",
    "TreeCell",
]


class TreeCell(Protocol):
    """What :class:`Recursive` needs of a cell (see the module docstring)."""

    input_size: int | None
    hidden_size: int
    max_children: int | None

    def leaf(self, x: Tensor) -> State:
        """``[n, I]`` leaf inputs to leaf states ``[n, H]`` (or a tuple of them)."""
        ...

    def __call__(self, x: Tensor, children: State, mask: Tensor) -> State:
        """Node inputs ``[n, I]``, children states ``[n, K, H]``, ``mask [n, K]`` to states."""
        ...


def _uniform_(module: nn.Module, hidden_size: int) -> None:
    """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter that has a shape yet."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        if not nn.parameter.is_lazy(p):
            nn.init.uniform_(p, -bound, bound)


def _size(name: str, value: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return value


class _TreeLSTMInput(nn.Module):
    """The Tree-LSTMs' ``weight_ih [4H, I]``: with ``input_size=None``, materialised (and
    drawn) at the first call from the inputs' size."""

    input_size: int | None
    hidden_size: int
    weight_ih: nn.Parameter

    def _init_input(self, input_size: int | None, hidden_size: int | None) -> None:
        if input_size is not None:
            _size("input_size", input_size)
        self.input_size, self.hidden_size = input_size, _size("hidden_size", hidden_size)
        self.weight_ih = input_weight((4 * self.hidden_size,), input_size)
        self.register_load_state_dict_pre_hook(_tree_input_from_state)

    def materialize(self, input_size: int) -> None:
        """Give a cell built without its input size its ``weight_ih [4H, input_size]``."""
        if take_input_size(self, self.weight_ih, 4 * self.hidden_size, input_size):
            bound = 1.0 / math.sqrt(self.hidden_size)
            with torch.no_grad():
                nn.init.uniform_(self.weight_ih, -bound, bound)


def _tree_input_from_state(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object
) -> None:
    stored = state_dict.get(f"{prefix}weight_ih")
    if isinstance(module, _TreeLSTMInput) and module.input_size is None and stored is not None:
        module.materialize(int(stored.shape[-1]))


class Recursive(nn.Module):
    """Evaluate a tree cell bottom-up over a :class:`~rnnkit.trees.TreeBatch`.

    ``forward(batch, inputs)`` returns the state of every node, in the batch's node order,
    ``[N, H]`` (a tuple ``(h [N, H], c [N, H])`` for the LSTM cells); :meth:`root_states`
    returns those of the roots, ``[num_trees, H]``. ``inputs`` is ``[N, I]``, one row per node
    (zeros where a node has no input: :meth:`TreeBatch.embed` makes it).
    :meth:`node_states_reference` computes the same one node at a time, for tests and reading.

    >>> from rnnkit.trees import Tree, TreeBatch
    >>> cell = RecursiveCell(2, 2)
    >>> with torch.no_grad():
    ...     _ = cell.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
    ...     _ = cell.bias.zero_()
    >>> batch = TreeBatch.from_trees([Tree(None, [Tree(token="a"), Tree(token="b")])])
    >>> x = torch.tensor([[0.5, 0.25], [0.25, 0.5], [0.0, 0.0]])  # a, b, (no input at the root)
    >>> Recursive(cell).root_states(batch, x)  # tanh([0.5 + 0.25, 0.25 - 0.5])
    tensor([[ 0.6351, -0.2449]], grad_fn=<IndexSelectBackward0>)
    """

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        missing = [
            name
            for name in ("input_size", "hidden_size", "max_children", "leaf")
            if not hasattr(cell, name)
        ]
        if missing or not callable(cell):
            raise TypeError(
                f"cell: expected a tree cell (input_size, hidden_size, max_children, leaf(x), "
                f"cell(x, children, mask)); {type(cell).__name__} lacks {missing or '__call__'}"
            )
        self.cell = cell

    @property
    def _cell(self) -> TreeCell:
        return cast(TreeCell, self.cell)

    def _check(self, batch: TreeBatch, inputs: Tensor) -> None:
        if not isinstance(batch, TreeBatch):
            raise TypeError(f"batch: expected a TreeBatch, found {type(batch).__name__}")
        if isinstance(inputs, Tensor) and inputs.dim() == 2:
            materialize_input(self.cell, inputs)  # a cell built without its input size
        expected = (batch.num_nodes, self._cell.input_size)
        if inputs.dim() != 2 or tuple(inputs.shape) != expected:
            raise ValueError(
                f"inputs: expected [N, I] = {list(expected)} (one row per node), "
                f"found {list(inputs.shape)}"
            )
        limit = self._cell.max_children
        widest = max(batch.level_max_children)
        if limit is not None and widest > limit:
            raise ValueError(
                f"batch: {type(self.cell).__name__} takes at most {limit} children per node, "
                f"but a node of the batch has {widest}"
            )

    def forward(self, batch: TreeBatch, inputs: Tensor) -> State:
        """States of every node (see the class docstring), computed one height at a time."""
        self._check(batch, inputs)
        starts, schedule = batch.level_starts, batch.schedule
        height = len(batch.levels) - 1
        # received[p][c]: blocks of state component c sent to height p by the heights below.
        received: list[list[list[Tensor]]] = [[] for _ in range(height + 1)]
        done: list[tuple[Tensor, ...]] = []
        for h in range(height + 1):
            a, b = starts[h], starts[h + 1]
            if h == 0:
                out = as_tuple(self._cell.leaf(inputs[a:b]))
            else:
                k = self._cell.max_children or batch.level_max_children[h]
                slots = schedule.slots[h]
                pad = schedule.num_received[h]  # the zero row
                if slots.shape[1] < k:
                    slots = F.pad(slots, (0, k - slots.shape[1]), value=pad)
                flat = slots.reshape(-1)
                gathered = tuple(
                    torch.cat([*blocks, blocks[0].new_zeros(1, blocks[0].shape[1])])
                    .index_select(0, flat)
                    .view(b - a, k, -1)
                    for blocks in received[h]
                )
                children = gathered if len(gathered) > 1 else gathered[0]
                out = as_tuple(self._cell(inputs[a:b], children, slots < pad))
            done.append(out)
            if h < height:
                sent = [s.index_select(0, schedule.order[h]).split(schedule.splits[h]) for s in out]
                for p in range(h + 1, height + 1):
                    if schedule.splits[h][p - h - 1]:
                        if not received[p]:
                            received[p] = [[] for _ in out]
                        for c, blocks in enumerate(received[p]):
                            blocks.append(sent[c][p - h - 1])
        states = tuple(torch.cat([out[c] for out in done]) for c in range(len(done[0])))
        return states if len(states) > 1 else states[0]

    def root_states(self, batch: TreeBatch, inputs: Tensor) -> State:
        """The state of each tree's root, ``[num_trees, H]`` (a tuple for the LSTM cells)."""
        states = as_tuple(self(batch, inputs))
        roots = tuple(s.index_select(0, batch.roots) for s in states)
        return roots if len(roots) > 1 else roots[0]

    def node_states_reference(self, batch: TreeBatch, inputs: Tensor) -> State:
        """The plain path: the cell on one node at a time, children before parents.

        Same result as :meth:`forward`; kept to test it and to measure what batching gains.
        """
        self._check(batch, inputs)
        children = batch.children.tolist()
        counts = batch.num_children.tolist()
        states: list[tuple[Tensor, ...]] = []
        for j in range(batch.num_nodes):  # nodes are sorted by height: children come first
            x = inputs[j : j + 1]
            kids = children[j][: counts[j]]
            if not kids:
                states.append(as_tuple(self._cell.leaf(x)))
                continue
            k = self._cell.max_children or len(kids)
            stacked = []
            for c in range(len(states[0])):
                rows = [states[i][c] for i in kids]
                rows += [torch.zeros_like(rows[0])] * (k - len(kids))
                stacked.append(torch.stack(rows, dim=1))
            mask = torch.arange(k, device=x.device).unsqueeze(0) < len(kids)
            out = tuple(stacked) if len(stacked) > 1 else stacked[0]
            states.append(as_tuple(self._cell(x, out, mask)))
        result = tuple(torch.cat([s[c] for s in states]) for c in range(len(states[0])))
        return result if len(result) > 1 else result[0]


class _BinaryLeafInputCell(nn.Module):
    """Base of the binary cells whose leaf state is the leaf's input, so
    ``input_size == hidden_size``."""

    max_children: int | None = 2

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None) -> None:
        super().__init__()
        hidden_size = _size("hidden_size", hidden_size)
        input_size = hidden_size if input_size is None else input_size
        if input_size != hidden_size:
            raise ValueError(
                f"input_size: a leaf's state is its input, so expected input_size == "
                f"hidden_size ({hidden_size}), found {input_size}; map the inputs to "
                f"hidden_size first (e.g. nn.Embedding(vocab, {hidden_size}))"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size


class RecursiveCell(_BinaryLeafInputCell):
    """The recursive network of the textbook: ``p = tanh(W [c1; c2] + b)``.

    Binary (``max_children = 2``; a node with one child reads a zero state as ``c2``).
    A leaf's state is its input, as in the textbook where leaves are word vectors, so
    ``input_size`` must equal ``hidden_size`` (embed to ``hidden_size`` first); internal nodes
    take no input (``x`` is ignored there).

    Parameters: ``weight`` ``[H, 2H]`` (W), ``bias`` ``[H]`` (b).

    >>> cell = RecursiveCell(2, 2)
    >>> with torch.no_grad():
    ...     _ = cell.weight.fill_(0.5)
    ...     _ = cell.bias.zero_()
    >>> children = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # c1 = [1, 0], c2 = [0, 1]
    >>> cell(torch.zeros(1, 2), children, torch.ones(1, 2, dtype=torch.bool))
    tensor([[0.7616, 0.7616]], grad_fn=<TanhBackward0>)
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None) -> None:
        super().__init__(input_size, hidden_size)
        hidden_size = self.hidden_size
        self.weight = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        _uniform_(self, hidden_size)

    def leaf(self, x: Tensor) -> Tensor:
        """A leaf's state is its input ``x [n, H]``."""
        return x

    def forward(self, x: Tensor, children: Tensor, mask: Tensor) -> Tensor:
        """``children [n, 2, H]`` to ``p [n, H]``; ``x`` and ``mask`` are not used."""
        both = children.reshape(children.shape[0], -1)  # [c1; c2]
        return torch.tanh(F.linear(both, self.weight, self.bias))


class RNTNCell(_BinaryLeafInputCell):
    """Recursive neural tensor network (Socher et al. 2013).

    ``p = tanh([c1; c2]ᵀ V^{[1:H]} [c1; c2] + W [c1; c2] + b)``: slice k of the tensor V gives
    the bilinear term of output k. Binary; leaves and internal inputs as in
    :class:`RecursiveCell` (``input_size == hidden_size``).

    Parameters: ``weight_tensor`` ``[H, 2H, 2H]`` (V), ``weight`` ``[H, 2H]`` (W), ``bias`` ``[H]``.

    >>> cell = RNTNCell(1, 1)
    >>> with torch.no_grad():
    ...     _ = cell.weight_tensor.fill_(1.0)  # V = [[1, 1], [1, 1]]: (c1 + c2)^2
    ...     _ = cell.weight.zero_()
    ...     _ = cell.bias.zero_()
    >>> cell(torch.zeros(1, 1), torch.tensor([[[0.5], [0.25]]]), torch.ones(1, 2, dtype=torch.bool))
    tensor([[0.5098]], grad_fn=<TanhBackward0>)
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None) -> None:
        super().__init__(input_size, hidden_size)
        hidden_size = self.hidden_size
        self.weight_tensor = nn.Parameter(
            torch.empty(hidden_size, 2 * hidden_size, 2 * hidden_size)
        )
        self.weight = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        _uniform_(self, hidden_size)
        with torch.no_grad():
            self.weight_tensor.mul_(1.0 / math.sqrt(2 * hidden_size))

    def leaf(self, x: Tensor) -> Tensor:
        """A leaf's state is its input ``x [n, H]``."""
        return x

    def forward(self, x: Tensor, children: Tensor, mask: Tensor) -> Tensor:
        """``children [n, 2, H]`` to ``p [n, H]``; ``x`` and ``mask`` are not used."""
        both = children.reshape(children.shape[0], -1)  # [c1; c2], [n, 2H]
        bilinear = torch.einsum("ni,kij,nj->nk", both, self.weight_tensor, both)
        return torch.tanh(bilinear + F.linear(both, self.weight, self.bias))


class ChildSumTreeLSTMCell(_TreeLSTMInput):
    """Child-sum Tree-LSTM (Tai, Socher & Manning 2015, eqs. 2-8), any number of children.

    With ``h̃ = Σ_k h_k`` over the children k::

        i   = σ(W_i x + b_ii + U_i h̃ + b_hi)
        f_k = σ(W_f x + b_if + U_f h_k + b_hf)      one forget gate per child
        g   = tanh(W_g x + b_ig + U_g h̃ + b_hg)     (u in the paper)
        o   = σ(W_o x + b_io + U_o h̃ + b_ho)
        c   = i ⊙ g + Σ_k f_k ⊙ c_k
        h   = o ⊙ tanh(c)

    Parameters (PyTorch's names and gate order i, f, g, o): ``weight_ih [4H, I]``,
    ``weight_hh [4H, H]``, ``bias_ih [4H]``, ``bias_hh [4H]``. State ``(h, c)``. A leaf is a node
    with no children (``h̃ = 0``, no forget terms). ``input_size=None``: inferred at the first
    call.

    >>> cell = ChildSumTreeLSTMCell(3, 2)
    >>> h, c = cell.leaf(torch.randn(5, 3))
    >>> kids = (torch.randn(5, 4, 2), torch.randn(5, 4, 2))
    >>> h2, c2 = cell(torch.randn(5, 3), kids, torch.ones(5, 4, dtype=torch.bool))
    >>> h.shape, h2.shape
    (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    max_children: int | None = None

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None) -> None:
        super().__init__()
        self._init_input(input_size, hidden_size)
        hidden_size = self.hidden_size
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        _uniform_(self, hidden_size)

    def leaf(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A node without children: ``[n, I]`` to ``(h, c)``, each ``[n, H]``."""
        materialize_input(self, x)
        none = x.new_zeros(x.shape[0], 0, self.hidden_size)
        return self(x, (none, none), torch.ones(x.shape[0], 0, dtype=torch.bool, device=x.device))

    def forward(
        self, x: Tensor, children: tuple[Tensor, Tensor], mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``x [n, I]``, children ``(h_k, c_k)`` each ``[n, K, H]`` (zeros where absent)."""
        materialize_input(self, x)
        h_k, c_k = children
        h_sum = h_k.sum(dim=1)
        x_i, x_f, x_g, x_o = F.linear(x, self.weight_ih, self.bias_ih).chunk(4, dim=1)
        u_i, u_f, u_g, u_o = self.weight_hh.chunk(4)
        b_i, b_f, b_g, b_o = self.bias_hh.chunk(4)
        i = torch.sigmoid(x_i + F.linear(h_sum, u_i, b_i))
        f_k = torch.sigmoid(x_f.unsqueeze(1) + F.linear(h_k, u_f, b_f))
        g = torch.tanh(x_g + F.linear(h_sum, u_g, b_g))
        o = torch.sigmoid(x_o + F.linear(h_sum, u_o, b_o))
        c = i * g + (f_k * c_k).sum(dim=1)
        return o * torch.tanh(c), c


class NaryTreeLSTMCell(_TreeLSTMInput):
    """N-ary Tree-LSTM (Tai, Socher & Manning 2015, eqs. 9-14): N ordered children.

    With the children's states ``h_1..h_N`` (zero states where a node has fewer)::

        i   = σ(W_i x + b_ii + Σ_l U_i^l h_l + b_hi)
        f_k = σ(W_f x + b_if + Σ_l U_fk^l h_l + b_hfk)    k = 1..N, every child's h in each
        g   = tanh(W_g x + b_ig + Σ_l U_g^l h_l + b_hg)
        o   = σ(W_o x + b_io + Σ_l U_o^l h_l + b_ho)
        c   = i ⊙ g + Σ_k f_k ⊙ c_k
        h   = o ⊙ tanh(c)

    Parameters: ``weight_ih [4H, I]`` (i, f, g, o; the f block is shared by the N forget
    gates, as W^(f) in the paper), ``bias_ih [4H]``, ``weight_hh [(N + 3)H, NH]`` with row
    blocks i, f_1..f_N, g, o acting on ``[h_1; ...; h_N]``, ``bias_hh [(N + 3)H]``.
    ``input_size=None``: inferred at the first call.

    >>> cell = NaryTreeLSTMCell(3, 2, n=2)
    >>> kids = (torch.randn(5, 2, 2), torch.randn(5, 2, 2))
    >>> h, c = cell(torch.randn(5, 3), kids, torch.ones(5, 2, dtype=torch.bool))
    >>> cell.weight_hh.shape, h.shape
    (torch.Size([10, 4]), torch.Size([5, 2]))
    """

    def __init__(
        self, input_size: int | None = None, hidden_size: int | None = None, n: int = 2
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n: expected at least 1 child slot, found {n}")
        self._init_input(input_size, hidden_size)
        hidden_size = self.hidden_size
        self.max_children: int | None = n
        self.weight_hh = nn.Parameter(torch.empty((n + 3) * hidden_size, n * hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty((n + 3) * hidden_size))
        _uniform_(self, hidden_size)

    def leaf(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A node whose N children are all absent (zero states): ``[n, I]`` to ``(h, c)``."""
        materialize_input(self, x)
        n = int(self.max_children or 0)
        none = x.new_zeros(x.shape[0], n, self.hidden_size)
        return self(x, (none, none), torch.zeros(x.shape[0], n, dtype=torch.bool, device=x.device))

    def forward(
        self, x: Tensor, children: tuple[Tensor, Tensor], mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``x [n, I]``, children ``(h_k, c_k)`` each ``[n, N, H]`` (zeros where absent)."""
        materialize_input(self, x)
        h_k, c_k = children
        m, n, hidden = h_k.shape
        x_i, x_f, x_g, x_o = F.linear(x, self.weight_ih, self.bias_ih).chunk(4, dim=1)
        u = F.linear(h_k.reshape(m, n * hidden), self.weight_hh, self.bias_hh)
        u_i, u_f, u_g, u_o = u.split([hidden, n * hidden, hidden, hidden], dim=1)
        i = torch.sigmoid(x_i + u_i)
        f_k = torch.sigmoid(x_f.unsqueeze(1) + u_f.view(m, n, hidden))
        g = torch.tanh(x_g + u_g)
        o = torch.sigmoid(x_o + u_o)
        c = i * g + (f_k * c_k).sum(dim=1)
        return o * torch.tanh(c), c
