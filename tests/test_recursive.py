"""Recursive and the tree cells against per-node oracles, torch.nn.LSTMCell, NumPy BPTS, gradcheck.

Oracles: the equations of each cell written out per node over the Tree objects (no batching,
no gather), the plain path ``node_states_reference``, ``torch.nn.LSTMCell`` (a child-sum or
1-ary Tree-LSTM over a chain is an LSTM), and the NumPy backpropagation through structure of
``rnnkit.testing.reference``. Tolerances: float64, 1e-10 absolute unless said.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rnnkit.recursive import (
    ChildSumTreeLSTMCell,
    NaryTreeLSTMCell,
    Recursive,
    RecursiveCell,
    RNTNCell,
)
from rnnkit.trees import Tree, TreeBatch

TOL = 1e-10


def random_tree(rng: random.Random, size: int, max_children: int, depth: int = 0) -> Tree:
    """A random tree with a float64 value at every node, 1..max_children children."""
    value = torch.randn(size, dtype=torch.float64, generator=_gen(rng))
    if depth >= 5 or (depth > 0 and rng.random() < 0.35):
        return Tree(value=value)
    kids = rng.randint(1, max_children)
    return Tree(
        None, [random_tree(rng, size, max_children, depth + 1) for _ in range(kids)], value=value
    )


def _gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


def random_forest(seed: int, size: int, max_children: int, num: int = 7) -> list[Tree]:
    rng = random.Random(seed)
    trees = [random_tree(rng, size, max_children) for _ in range(num)]
    trees.append(Tree(value=torch.randn(size, dtype=torch.float64)))  # a lone leaf
    return trees


# ---------------------------------------------------------------- per-node oracles (equations)
def childsum_node(cell: ChildSumTreeLSTMCell, x: Tensor, kids: list[tuple[Tensor, Tensor]]):
    hid = cell.hidden_size
    w = {g: cell.weight_ih[k * hid : (k + 1) * hid] for k, g in enumerate("ifgo")}
    u = {g: cell.weight_hh[k * hid : (k + 1) * hid] for k, g in enumerate("ifgo")}
    b = {g: (cell.bias_ih + cell.bias_hh)[k * hid : (k + 1) * hid] for k, g in enumerate("ifgo")}
    h_sum = sum((h for h, _ in kids), torch.zeros(hid, dtype=x.dtype))
    i = torch.sigmoid(w["i"] @ x + u["i"] @ h_sum + b["i"])
    g = torch.tanh(w["g"] @ x + u["g"] @ h_sum + b["g"])
    o = torch.sigmoid(w["o"] @ x + u["o"] @ h_sum + b["o"])
    c = i * g
    for h_k, c_k in kids:
        c = c + torch.sigmoid(w["f"] @ x + u["f"] @ h_k + b["f"]) * c_k
    return o * torch.tanh(c), c


def nary_node(cell: NaryTreeLSTMCell, x: Tensor, kids: list[tuple[Tensor, Tensor]]):
    hid, n = cell.hidden_size, int(cell.max_children or 0)
    zero = torch.zeros(hid, dtype=x.dtype)
    kids = kids + [(zero, zero)] * (n - len(kids))
    w = {g: cell.weight_ih[k * hid : (k + 1) * hid] for k, g in enumerate("ifgo")}
    bx = {g: cell.bias_ih[k * hid : (k + 1) * hid] for k, g in enumerate("ifgo")}
    rows = ["i", *[f"f{k}" for k in range(n)], "g", "o"]

    def u(gate: str, slot: int) -> Tensor:  # U_gate^slot, [H, H]
        r = rows.index(gate)
        return cell.weight_hh[r * hid : (r + 1) * hid, slot * hid : (slot + 1) * hid]

    def bh(gate: str) -> Tensor:
        r = rows.index(gate)
        return cell.bias_hh[r * hid : (r + 1) * hid]

    def pre(gate: str, xgate: str) -> Tensor:
        total = w[xgate] @ x + bx[xgate] + bh(gate)
        for slot, (h_l, _) in enumerate(kids):
            total = total + u(gate, slot) @ h_l
        return total

    i, g, o = torch.sigmoid(pre("i", "i")), torch.tanh(pre("g", "g")), torch.sigmoid(pre("o", "o"))
    c = i * g
    for k, (_, c_k) in enumerate(kids):
        c = c + torch.sigmoid(pre(f"f{k}", "f")) * c_k
    return o * torch.tanh(c), c


def textbook_node(cell: RecursiveCell, x: Tensor, kids: list[Tensor]) -> Tensor:
    if not kids:
        return x
    both = torch.cat(kids + [torch.zeros_like(kids[0])] * (2 - len(kids)))
    return torch.tanh(cell.weight @ both + cell.bias)


def rntn_node(cell: RNTNCell, x: Tensor, kids: list[Tensor]) -> Tensor:
    if not kids:
        return x
    both = torch.cat(kids + [torch.zeros_like(kids[0])] * (2 - len(kids)))
    bilinear = torch.stack([both @ cell.weight_tensor[k] @ both for k in range(cell.hidden_size)])
    return torch.tanh(bilinear + cell.weight @ both + cell.bias)


ORACLES = {
    ChildSumTreeLSTMCell: childsum_node,
    NaryTreeLSTMCell: nary_node,
    RecursiveCell: textbook_node,
    RNTNCell: rntn_node,
}


def per_node_states(cell: nn.Module, tree: Tree) -> list:
    """The oracle over one tree, recursively; the states in the preorder of tree.nodes()."""
    oracle = ORACLES[type(cell)]
    states: dict[int, object] = {}
    for node in tree.postorder():
        assert node.value is not None
        states[id(node)] = oracle(cell, node.value, [states[id(c)] for c in node.children])
    return [states[id(node)] for node in tree.nodes()]


def make_cell(kind: type, size: int) -> nn.Module:
    torch.manual_seed(3)
    cell = kind(size, size) if kind is not NaryTreeLSTMCell else kind(size, size, n=3)
    cell = cell.double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0.0, 0.4)  # larger than the default init, so states differ clearly
    return cell


CELLS = [
    (ChildSumTreeLSTMCell, 4),
    (NaryTreeLSTMCell, 3),
    (RecursiveCell, 2),
    (RNTNCell, 2),
]


def _flat(state) -> list[Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize(("kind", "max_children"), CELLS)
def test_batched_equals_per_node_equations_and_plain_path(kind: type, max_children: int) -> None:
    size = 3
    cell = make_cell(kind, size)
    trees = random_forest(seed=11, size=size, max_children=max_children)
    batch = TreeBatch.from_trees(trees)
    assert batch.inputs is not None
    assert batch.height >= 4 and max(batch.level_max_children) == max_children
    inputs = batch.inputs.clone().requires_grad_()
    recursive = Recursive(cell)

    def loss_of(states: list[Tensor]) -> Tensor:
        weights = torch.linspace(-1.0, 1.5, states[0].numel(), dtype=torch.float64)
        return sum(((s.reshape(-1) * weights) ** 2).sum() * (k + 1) for k, s in enumerate(states))

    batched = _flat(recursive(batch, inputs))
    grads_batched = torch.autograd.grad(loss_of(batched), [inputs, *cell.parameters()])

    plain = _flat(recursive.node_states_reference(batch, inputs))
    grads_plain = torch.autograd.grad(loss_of(plain), [inputs, *cell.parameters()])

    # The oracle runs on the trees' own value tensors; give it grad-tracking copies.
    oracle_states = [list(s) for s in batched]  # placeholders, overwritten below
    leaves = []
    for t, tree in enumerate(trees):
        idx = batch.tree_nodes(t)
        for node, j in zip(tree.nodes(), idx.tolist(), strict=True):
            node.value = inputs[j]
        per_tree = per_node_states(cell, tree)
        for node_state, j in zip(per_tree, idx.tolist(), strict=True):
            for c, s in enumerate(_flat(node_state)):
                oracle_states[c][j] = s
        leaves.append(per_tree)
    oracle = [torch.stack(rows) for rows in oracle_states]
    grads_oracle = torch.autograd.grad(loss_of(oracle), [inputs, *cell.parameters()])

    for a, p, o in zip(batched, plain, oracle, strict=True):
        torch.testing.assert_close(a, p, atol=TOL, rtol=0)
        torch.testing.assert_close(a, o, atol=TOL, rtol=0)
        assert a.abs().max() > 0.1  # states are not trivially zero
    for a, p, o in zip(grads_batched, grads_plain, grads_oracle, strict=True):
        torch.testing.assert_close(a, p, atol=TOL, rtol=0)
        torch.testing.assert_close(a, o, atol=TOL, rtol=0)
        assert a.abs().max() > 1e-3
    roots = _flat(recursive.root_states(batch, inputs))
    for r, a in zip(roots, batched, strict=True):
        torch.testing.assert_close(r, a[batch.roots], atol=0, rtol=0)


@pytest.mark.parametrize("kind", [ChildSumTreeLSTMCell, NaryTreeLSTMCell])
def test_tree_lstm_on_a_chain_is_an_lstm(kind: type) -> None:
    """One child per node: the child-sum and the 1-ary Tree-LSTM reduce to torch's LSTMCell."""
    torch.manual_seed(0)
    size_in, hidden, length = 3, 4, 6
    cell = kind(size_in, hidden) if kind is ChildSumTreeLSTMCell else kind(size_in, hidden, n=1)
    cell = cell.double()
    lstm = nn.LSTMCell(size_in, hidden).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, name).copy_(getattr(cell, name))
    xs = torch.randn(length, size_in, dtype=torch.float64)
    chain = Tree(value=xs[0])
    for t in range(1, length):
        chain = Tree(None, [chain], value=xs[t])
    batch = TreeBatch.from_trees([chain])
    assert batch.inputs is not None
    h, c = Recursive(cell)(batch, batch.inputs)
    state = None
    for t in range(length):
        state = lstm(xs[t : t + 1], state)
        torch.testing.assert_close(h[t], state[0][0], atol=TOL, rtol=0)
        torch.testing.assert_close(c[t], state[1][0], atol=TOL, rtol=0)


@pytest.mark.parametrize(("kind", "max_children"), CELLS)
def test_gradcheck_every_cell_and_recursive(kind: type, max_children: int) -> None:
    cell = make_cell(kind, 2)
    batch = TreeBatch.from_trees(random_forest(seed=5, size=2, max_children=max_children, num=1))
    assert batch.inputs is not None
    recursive = Recursive(cell)
    names = [name for name, _ in recursive.named_parameters()]
    weights = [p.detach().clone().requires_grad_() for p in recursive.parameters()]
    inputs = batch.inputs.clone().requires_grad_()

    def whole(x: Tensor, *w: Tensor) -> tuple[Tensor, ...]:
        params = dict(zip(names, w, strict=True))
        return tuple(_flat(torch.func.functional_call(recursive, params, (batch, x))))

    assert torch.autograd.gradcheck(whole, (inputs, *weights), eps=1e-6, atol=1e-7)

    k = cell.max_children or 3
    kids = torch.randn(4, k, 2, dtype=torch.float64, requires_grad=True)
    other = torch.randn(4, k, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(4, k, dtype=torch.bool)
    lstm = isinstance(cell, (ChildSumTreeLSTMCell, NaryTreeLSTMCell))
    cell_names = [name for name, _ in cell.named_parameters()]

    def step(x: Tensor, h: Tensor, c: Tensor, *w: Tensor) -> tuple[Tensor, ...]:
        params = dict(zip(cell_names, w, strict=True))
        state = torch.func.functional_call(cell, params, (x, (h, c) if lstm else h, mask))
        return tuple(_flat(state))

    assert torch.autograd.gradcheck(step, (x, kids, other, *weights), eps=1e-6, atol=1e-7)


def full_binary_tree(rng: np.random.Generator, size: int, depth: int = 0) -> Tree:
    if depth >= 4 or (depth > 0 and rng.random() < 0.3):
        return Tree(value=torch.from_numpy(rng.normal(size=size)))
    return Tree(None, [full_binary_tree(rng, size, depth + 1) for _ in range(2)])


def as_nested_tuple(tree: Tree):
    """The tree in rnnkit.testing.reference's form: a leaf is its vector, a node is a pair."""
    if tree.is_leaf():
        assert tree.value is not None
        return tree.value.numpy()
    left, right = tree.children
    return (as_nested_tuple(left), as_nested_tuple(right))


def test_batched_torch_gradients_equal_numpy_bpts() -> None:
    """Recursive(RecursiveCell) + autograd against rnnkit.testing.reference's textbook BPTS."""
    reference = pytest.importorskip("rnnkit.testing.reference")
    size = 3
    rng = np.random.default_rng(7)
    params = reference.RecursiveParams.uniform(size=size, rng=rng)
    trees = [full_binary_tree(rng, size) for _ in range(5)]
    targets = rng.uniform(-0.5, 0.5, size=(len(trees), size))

    d_weight = np.zeros_like(params.weight)
    d_bias = np.zeros_like(params.bias)
    leaf_grads, roots = [], []
    for tree, target in zip(trees, targets, strict=True):
        trace = reference.recursive_forward(params, as_nested_tuple(tree))
        _, droot = reference.half_squared_error(trace.root, target)
        grads = reference.recursive_backward(params, trace, droot)
        d_weight += grads.params.weight
        d_bias += grads.params.bias
        leaf_grads.append(grads.leaves)
        roots.append(trace.root)

    cell = RecursiveCell(size, size).double()
    with torch.no_grad():
        cell.weight.copy_(torch.from_numpy(params.weight))
        cell.bias.copy_(torch.from_numpy(params.bias))
    batch = TreeBatch.from_trees(trees)
    assert batch.inputs is not None
    inputs = batch.inputs.clone().requires_grad_()
    root = Recursive(cell).root_states(batch, inputs)
    loss = 0.5 * ((root - torch.from_numpy(targets)) ** 2).sum()
    loss.backward()

    np.testing.assert_allclose(root.detach().numpy(), np.stack(roots), atol=TOL, rtol=0)
    np.testing.assert_allclose(cell.weight.grad.numpy(), d_weight, atol=TOL, rtol=0)
    np.testing.assert_allclose(cell.bias.grad.numpy(), d_bias, atol=TOL, rtol=0)
    assert inputs.grad is not None
    for t, tree in enumerate(trees):
        leaf_rows = [
            j
            for node, j in zip(tree.nodes(), batch.tree_nodes(t).tolist(), strict=True)
            if node.is_leaf()
        ]  # preorder leaves are left to right, as the reference's
        np.testing.assert_allclose(inputs.grad[leaf_rows].numpy(), leaf_grads[t], atol=TOL, rtol=0)
    assert np.abs(d_weight).max() > 1e-3


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="input_size"):
        RecursiveCell(3, 4)
    with pytest.raises(ValueError, match="input_size"):
        RNTNCell(2, 3)
    with pytest.raises(ValueError, match="n: expected at least 1"):
        NaryTreeLSTMCell(2, 2, n=0)
    with pytest.raises(TypeError, match="cell: expected a tree cell"):
        Recursive(nn.Linear(2, 2))
    three = Tree(None, [Tree(value=torch.zeros(2)) for _ in range(3)])
    batch = TreeBatch.from_trees([three])
    with pytest.raises(ValueError, match="at most 2 children"):
        Recursive(RecursiveCell(2, 2))(batch, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"inputs: expected \[N, I\] = \[4, 2\]"):
        Recursive(ChildSumTreeLSTMCell(2, 2))(batch, torch.zeros(3, 2))
