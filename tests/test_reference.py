"""The NumPy references of `rnnkit.testing.reference` against torch autograd and central
differences.

Oracles: ``torch.nn.RNN``/``LSTM``/``GRU`` in float64 with the NumPy parameters copied in
(outputs and every gradient), plain torch autograd loops where torch has no module (sigmoid
Elman, the recursive network), ``torch.optim.SGD`` and ``torch.nn.utils.clip_grad_norm_``.
Tolerance: rtol 1e-6 (and atol 1e-12 for entries that are zero) in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import pytest
import torch

from rnnkit.testing.reference import (
    CellParams,
    GradientCheckError,
    RecursiveGradients,
    RecursiveParams,
    Tree,
    TreeTrace,
    clip_by_global_norm,
    gru_backward,
    gru_forward,
    half_squared_error,
    lstm_backward,
    lstm_forward,
    recursive_backward,
    recursive_forward,
    recursive_gradient_check,
    rnn_backward,
    rnn_forward,
    sgd_update,
)

RTOL = 1e-6
ATOL = 1e-12
INPUT, HIDDEN = 3, 4
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def close(actual: np.ndarray, expected: torch.Tensor | np.ndarray | None) -> None:
    assert expected is not None, "the torch gradient is missing"
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def grad_of(tensor: torch.Tensor) -> torch.Tensor:
    assert tensor.grad is not None, "the torch gradient is missing"
    return tensor.grad


def torch_module(kind: str, params: CellParams, nonlinearity: str = "tanh") -> torch.nn.RNNBase:
    """A float64 ``torch.nn.RNN``/``LSTM``/``GRU`` holding a copy of ``params``."""
    module: torch.nn.RNNBase
    if kind == "rnn":
        module = torch.nn.RNN(INPUT, HIDDEN, nonlinearity=nonlinearity, dtype=torch.float64)
    elif kind == "lstm":
        module = torch.nn.LSTM(INPUT, HIDDEN, dtype=torch.float64)
    else:
        module = torch.nn.GRU(INPUT, HIDDEN, dtype=torch.float64)
    with torch.no_grad():
        for name in PARAM_NAMES:
            getattr(module, f"{name}_l0").copy_(torch.from_numpy(getattr(params, name)))
    return module


CHUNKS = {"rnn": 1, "lstm": 4, "gru": 3}
CASES = [
    ("rnn", "tanh"),
    ("rnn", "relu"),
    ("lstm", "tanh"),
    ("gru", "tanh"),
]


@pytest.mark.parametrize("steps", [1, 7])
@pytest.mark.parametrize(("kind", "nonlinearity"), CASES)
def test_bptt_matches_torch_modules(kind: str, nonlinearity: str, steps: int) -> None:
    rng = np.random.default_rng(steps * 10 + len(kind))
    params = CellParams.uniform(INPUT, HIDDEN, CHUNKS[kind], rng)
    x = rng.normal(size=(steps, INPUT))
    h0 = rng.normal(scale=0.5, size=HIDDEN)
    c0 = rng.normal(scale=0.5, size=HIDDEN)
    # L = sum_t sum_j C[t, j] h_t[j] + Ch . h_T (+ Cc . c_T): every step weighted differently.
    coef = rng.normal(size=(steps, HIDDEN))
    coef_h, coef_c = rng.normal(size=HIDDEN), rng.normal(size=HIDDEN)

    module = torch_module(kind, params, nonlinearity)
    x_t = torch.tensor(x[:, None, :], requires_grad=True)
    h0_t = torch.tensor(h0[None, None, :], requires_grad=True)
    c0_t = torch.tensor(c0[None, None, :], requires_grad=True)
    if kind == "lstm":
        out, (hn, cn) = module(x_t, (h0_t, c0_t))
        loss = (torch.from_numpy(coef_c) * cn[0, 0]).sum()
    else:
        out, hn = module(x_t, h0_t)
        loss = torch.zeros((), dtype=torch.float64)
    loss = loss + (torch.from_numpy(coef) * out[:, 0]).sum()
    loss = loss + (torch.from_numpy(coef_h) * hn[0, 0]).sum()
    loss.backward()

    if kind == "rnn":
        trace = rnn_forward(params, x, h0, nonlinearity=nonlinearity)
        trace_h = trace.h
        grads = rnn_backward(params, trace, dh=coef, dh_final=coef_h)
    elif kind == "lstm":
        lstm_trace = lstm_forward(params, x, h0, c0)
        trace_h = lstm_trace.h
        grads = lstm_backward(params, lstm_trace, dh=coef, dh_final=coef_h, dc_final=coef_c)
        close(lstm_trace.c[-1], cn[0, 0])
        assert grads.c0 is not None
        close(grads.c0, grad_of(c0_t)[0, 0])
    else:
        gru_trace = gru_forward(params, x, h0)
        trace_h = gru_trace.h
        grads = gru_backward(params, gru_trace, dh=coef, dh_final=coef_h)
        assert grads.c0 is None

    close(trace_h[1:], out[:, 0])
    close(trace_h[-1], hn[0, 0])
    for name in PARAM_NAMES:
        close(getattr(grads.params, name), getattr(module, f"{name}_l0").grad)
    close(grads.x, grad_of(x_t)[:, 0])
    close(grads.h0, grad_of(h0_t)[0, 0])
    # The error terms are what the input weights' gradient is summed from.
    close(np.einsum("tg,ti->gi", grads.deltas, x), grads.params.weight_ih)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
def test_elman_error_terms_match_torch_loop(nonlinearity: str) -> None:
    """delta_t = dL/da_t, read from a plain torch autograd loop (covers sigmoid too)."""
    rng = np.random.default_rng(3)
    steps = 6
    params = CellParams.uniform(INPUT, HIDDEN, 1, rng)
    x, h0 = rng.normal(size=(steps, INPUT)), rng.normal(size=HIDDEN)
    coef = rng.normal(size=(steps, HIDDEN))

    weights = {
        name: torch.tensor(getattr(params, name), requires_grad=True) for name in PARAM_NAMES
    }
    x_t = torch.tensor(x, requires_grad=True)
    h = h0_t = torch.tensor(h0, requires_grad=True)
    f = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[nonlinearity]
    nets, outputs = [], []
    for t in range(steps):
        a = weights["weight_ih"] @ x_t[t] + weights["bias_ih"]
        a = a + weights["weight_hh"] @ h + weights["bias_hh"]
        a.retain_grad()
        h = f(a)
        nets.append(a)
        outputs.append(h)
    (torch.from_numpy(coef) * torch.stack(outputs)).sum().backward()

    trace = rnn_forward(params, x, h0, nonlinearity=nonlinearity)
    grads = rnn_backward(params, trace, dh=coef)
    close(trace.h[1:], torch.stack(outputs))
    close(grads.deltas, torch.stack([grad_of(a) for a in nets]))
    for name in PARAM_NAMES:
        close(getattr(grads.params, name), weights[name].grad)
    close(grads.x, x_t.grad)
    close(grads.h0, h0_t.grad)


def test_bptt_sgd_on_one_sequence_lowers_the_loss() -> None:
    rng = np.random.default_rng(4)
    params = CellParams.uniform(INPUT, HIDDEN, 4, rng)
    x, target = rng.normal(size=(5, INPUT)), rng.uniform(-0.5, 0.5, size=(5, HIDDEN))
    losses = []
    for _ in range(100):
        trace = lstm_forward(params, x)
        loss, dh = half_squared_error(trace.h[1:], target)
        losses.append(loss)
        params = sgd_update(params, lstm_backward(params, trace, dh).params, lr=0.5)
    assert losses[-1] < 0.1 * losses[0]


def test_cell_input_errors_name_the_argument() -> None:
    rng = np.random.default_rng(5)
    gru = CellParams.uniform(INPUT, HIDDEN, 3, rng)
    elman = CellParams.uniform(INPUT, HIDDEN, 1, rng)
    with pytest.raises(ValueError, match=r"params: expected LSTM parameters with 4"):
        lstm_forward(gru, np.zeros((2, INPUT)))
    with pytest.raises(ValueError, match=r"x: expected shape \[T, I\] = \[T, 3\], found \(2, 5\)"):
        gru_forward(gru, np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"x: expected at least one time step"):
        gru_forward(gru, np.zeros((0, INPUT)))
    with pytest.raises(ValueError, match=r"h0: expected shape \[H\] = \[4\], found \(3,\)"):
        gru_forward(gru, np.zeros((2, INPUT)), h0=np.zeros(3))
    with pytest.raises(ValueError, match=r"nonlinearity: expected one of tanh, relu, sigmoid"):
        rnn_forward(elman, np.zeros((2, INPUT)), nonlinearity="gelu")
    trace = rnn_forward(elman, np.zeros((2, INPUT)))
    with pytest.raises(ValueError, match=r"dh: expected shape \[T, H\] = \[2, 4\], found \(4,\)"):
        rnn_backward(elman, trace, dh=np.zeros(HIDDEN))
    with pytest.raises(ValueError, match=r"weight_ih: expected shape \[4, I\], found \(3, 2\)"):
        CellParams(np.zeros((3, 2)), np.zeros((4, 4)), np.zeros(4), np.zeros(4))


# ---------------------------------------------------------------------------- recursive network

SIZE = 3


def random_tree(rng: np.random.Generator, depth: int) -> Tree:
    """A random binary tree of exactly ``depth`` (a leaf has depth 0), leaves ``[SIZE]``."""
    if depth == 0:
        return rng.normal(size=SIZE)
    deep, shallow = random_tree(rng, depth - 1), random_tree(rng, int(rng.integers(0, depth)))
    return (deep, shallow) if rng.random() < 0.5 else (shallow, deep)


def torch_tree(
    weight: torch.Tensor, bias: torch.Tensor, tree: object, nets: list[torch.Tensor]
) -> torch.Tensor:
    """The recursive network as a plain recursive torch function; nets kept in post-order."""
    if not isinstance(tree, tuple):
        assert isinstance(tree, torch.Tensor)
        return tree
    left = torch_tree(weight, bias, tree[0], nets)
    right = torch_tree(weight, bias, tree[1], nets)
    net = weight @ torch.cat([left, right]) + bias
    net.retain_grad()
    nets.append(net)
    return torch.tanh(net)


def to_torch(tree: object) -> object:
    if isinstance(tree, tuple):
        return tuple(to_torch(child) for child in tree)
    return torch.tensor(tree, requires_grad=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpts_matches_torch_autograd(seed: int) -> None:
    rng = np.random.default_rng(seed)
    params = RecursiveParams.uniform(SIZE, rng)
    tree = random_tree(rng, depth=4)
    target = rng.uniform(-0.9, 0.9, size=SIZE)

    weight = torch.tensor(params.weight, requires_grad=True)
    bias = torch.tensor(params.bias, requires_grad=True)
    tree_t = to_torch(tree)
    nets: list[torch.Tensor] = []
    root_t = torch_tree(weight, bias, tree_t, nets)
    (0.5 * ((root_t - torch.from_numpy(target)) ** 2).sum()).backward()

    trace = recursive_forward(params, tree)
    loss, droot = half_squared_error(trace.root, target)
    grads = recursive_backward(params, trace, droot)
    close(trace.root, root_t)
    close(np.array(loss), 0.5 * ((root_t - torch.from_numpy(target)) ** 2).sum())
    close(grads.params.weight, weight.grad)
    close(grads.params.bias, bias.grad)
    leaf_tensors = leaves_of_torch(tree_t)
    assert len(leaf_tensors) == len(grads.leaves)
    close(grads.leaves, torch.stack([grad_of(leaf) for leaf in leaf_tensors]))
    internal = [k for k, pair in enumerate(trace.children) if pair is not None]
    close(grads.deltas[internal], torch.stack([grad_of(net) for net in nets]))


def leaves_of_torch(tree: object) -> list[torch.Tensor]:
    if isinstance(tree, tuple):
        return [leaf for child in tree for leaf in leaves_of_torch(child)]
    assert isinstance(tree, torch.Tensor)
    return [tree]


def test_gradient_check_passes_on_a_deep_random_tree() -> None:
    rng = np.random.default_rng(7)
    params = RecursiveParams.uniform(SIZE, rng)
    tree = random_tree(rng, depth=5)
    target = rng.uniform(-0.9, 0.9, size=SIZE)
    error = recursive_gradient_check(params, tree, lambda root: half_squared_error(root, target))
    assert error < 1e-8


def corrupted(field: str) -> Callable[[RecursiveParams, TreeTrace, np.ndarray], RecursiveGradients]:
    """recursive_backward with one entry of one gradient off by 0.1 % of that array's norm."""

    def backward(
        params: RecursiveParams, trace: TreeTrace, droot: np.ndarray
    ) -> RecursiveGradients:
        grads = recursive_backward(params, trace, droot)
        weight, bias, leaves = grads.params.weight.copy(), grads.params.bias.copy(), grads.leaves
        leaves = leaves.copy()
        array = {"weight": weight, "bias": bias, "leaves": leaves}[field]
        array.flat[0] += 1e-3 * np.linalg.norm(array)
        return RecursiveGradients(RecursiveParams(weight, bias), leaves, grads.deltas)

    return backward


@pytest.mark.parametrize("field", ["weight", "bias", "leaves"])
def test_gradient_check_detects_a_corrupted_gradient(field: str) -> None:
    rng = np.random.default_rng(8)
    params = RecursiveParams.uniform(SIZE, rng)
    tree = random_tree(rng, depth=3)
    target = rng.uniform(-0.9, 0.9, size=SIZE)
    with pytest.raises(GradientCheckError, match=rf"gradient of {field}: relative error"):
        recursive_gradient_check(
            params,
            tree,
            lambda root: half_squared_error(root, target),
            backward=corrupted(field),
        )


def test_gradient_check_detects_a_missing_derivative() -> None:
    """The classic BPTS bug: passing W^T delta to an internal child without tanh'(net)."""

    def no_derivative(
        params: RecursiveParams, trace: TreeTrace, droot: np.ndarray
    ) -> RecursiveGradients:
        deltas = np.zeros_like(trace.vectors)
        deltas[-1] = droot * (1.0 - trace.root**2)
        d_weight, d_bias = np.zeros_like(params.weight), np.zeros_like(params.bias)
        for k in range(len(trace.children) - 1, -1, -1):
            pair = trace.children[k]
            if pair is None:
                continue
            left, right = pair
            d_weight += np.outer(
                deltas[k], np.concatenate([trace.vectors[left], trace.vectors[right]])
            )
            d_bias += deltas[k]
            deltas[left], deltas[right] = np.split(params.weight.T @ deltas[k], 2)  # the bug
        leaves = deltas[list(trace.leaf_nodes)]
        return RecursiveGradients(RecursiveParams(d_weight, d_bias), leaves, deltas)

    rng = np.random.default_rng(9)
    params = RecursiveParams.uniform(SIZE, rng)
    tree = random_tree(rng, depth=3)
    target = rng.uniform(-0.9, 0.9, size=SIZE)
    with pytest.raises(GradientCheckError):
        recursive_gradient_check(
            params, tree, lambda root: half_squared_error(root, target), backward=no_derivative
        )


def test_sgd_on_one_tree_lowers_the_loss() -> None:
    rng = np.random.default_rng(10)
    params = RecursiveParams.uniform(SIZE, rng)
    tree = random_tree(rng, depth=3)
    target = np.array([0.6, -0.4, 0.2])
    losses = []
    for _ in range(30):
        trace = recursive_forward(params, tree)
        loss, droot = half_squared_error(trace.root, target)
        losses.append(loss)
        params = sgd_update(params, recursive_backward(params, trace, droot).params, lr=0.1)
    assert losses[-1] < 0.01 * losses[0]
    assert all(b <= a for a, b in pairwise(losses))


def test_deep_left_branching_tree_equals_a_loop() -> None:
    """A left-branching tree is an Elman-like loop; 3000 leaves also exceed recursion limits."""
    rng = np.random.default_rng(11)
    params = RecursiveParams.uniform(SIZE, rng)
    leaves = rng.normal(size=(3000, SIZE))
    tree: Tree = leaves[0]
    p = leaves[0]
    for leaf in leaves[1:]:
        tree = (tree, leaf)
        p = np.tanh(params.weight @ np.concatenate([p, leaf]) + params.bias)
    trace = recursive_forward(params, tree)
    close(trace.root, p)
    grads = recursive_backward(params, trace, np.ones(SIZE))
    assert grads.leaves.shape == (3000, SIZE)
    close(trace.vectors[list(trace.leaf_nodes)], leaves)


def test_single_leaf_tree() -> None:
    params = RecursiveParams.uniform(SIZE, np.random.default_rng(12))
    leaf = np.array([0.1, 0.2, 0.3])
    trace = recursive_forward(params, leaf)
    grads = recursive_backward(params, trace, np.array([1.0, -2.0, 3.0]))
    close(trace.root, leaf)
    close(grads.leaves, np.array([[1.0, -2.0, 3.0]]))
    close(grads.params.weight, np.zeros((SIZE, 2 * SIZE)))


def test_tree_errors_name_the_argument() -> None:
    params = RecursiveParams.uniform(SIZE, np.random.default_rng(13))
    leaf = np.zeros(SIZE)
    with pytest.raises(ValueError, match=r"tree: expected an internal node to be a pair"):
        recursive_forward(params, (leaf, leaf, leaf))
    with pytest.raises(
        ValueError, match=r"tree leaf 1: expected shape \[d\] = \[3\], found \(2,\)"
    ):
        recursive_forward(params, (leaf, np.zeros(2)))
    with pytest.raises(ValueError, match=r"weight: expected shape \[d, 2d\], found \(3, 3\)"):
        RecursiveParams(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"droot: expected shape \[d\] = \[3\]"):
        recursive_backward(params, recursive_forward(params, (leaf, leaf)), np.zeros(2))


# ---------------------------------------------------------------------------- training helpers


def test_sgd_update_matches_torch_sgd() -> None:
    rng = np.random.default_rng(14)
    params = CellParams.uniform(INPUT, HIDDEN, 3, rng)
    grads = CellParams.uniform(INPUT, HIDDEN, 3, rng)
    tensors = [torch.tensor(getattr(params, name), requires_grad=True) for name in PARAM_NAMES]
    for tensor, name in zip(tensors, PARAM_NAMES, strict=True):
        tensor.grad = torch.tensor(getattr(grads, name))
    torch.optim.SGD(tensors, lr=0.3).step()
    before = {name: getattr(params, name).copy() for name in PARAM_NAMES}
    new = sgd_update(params, grads, lr=0.3)
    for tensor, name in zip(tensors, PARAM_NAMES, strict=True):
        close(getattr(new, name), tensor)
        np.testing.assert_array_equal(getattr(params, name), before[name])  # not modified
    with pytest.raises(TypeError, match=r"grads: expected CellParams"):
        sgd_update(params, RecursiveParams.uniform(2, rng), lr=0.1)  # type: ignore[type-var]


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_matches_torch(max_norm: float) -> None:
    rng = np.random.default_rng(15)
    grads = CellParams.uniform(INPUT, HIDDEN, 4, rng)
    tensors = [
        torch.zeros(getattr(grads, n).shape, dtype=torch.float64, requires_grad=True)
        for n in PARAM_NAMES
    ]
    for tensor, name in zip(tensors, PARAM_NAMES, strict=True):
        tensor.grad = torch.tensor(getattr(grads, name))
    norm_before = np.sqrt(sum(np.sum(getattr(grads, name) ** 2) for name in PARAM_NAMES))
    torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    clipped = clip_by_global_norm(grads, max_norm)
    for tensor, name in zip(tensors, PARAM_NAMES, strict=True):
        assert tensor.grad is not None
        # torch divides by (norm + 1e-6): a relative difference of about 1e-6 / norm.
        np.testing.assert_allclose(getattr(clipped, name), tensor.grad.numpy(), rtol=1e-6)
    norm = np.sqrt(sum(np.sum(getattr(clipped, name) ** 2) for name in PARAM_NAMES))
    assert norm == pytest.approx(min(max_norm, norm_before), rel=1e-12)
