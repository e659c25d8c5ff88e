"""torch.compile on every path: compiled layers give the eager outputs and gradients.

The oracle is the eager layer on the same weights and the same ragged batch (eager runs the
CPU fused kernel on padded segments; compiled, the kernel runs on packed input through the
custom operator ``rnnkit::fused_rnn``, so the two share no path but the kernel's arithmetic).
float32 tolerances: ``atol=rtol=1e-5`` on outputs and gradients. The custom operator itself is
checked against numerical gradients in float64 (``torch.autograd.gradcheck``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import rnnkit.nn
from rnnkit import Bidirectional, Fold, GRUCell, LSTMCell, Recurrence, RNNCell, SequenceBatch
from rnnkit.compiled_ops import fused_rnn
from rnnkit.data.listops import LISTOPS_VOCAB
from rnnkit.recursive import ChildSumTreeLSTMCell, Recursive
from rnnkit.trees import Tree, TreeBatch

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # inductor's first import touches torch.jit, which warns of its own deprecation
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

TOL = {"atol": 1e-5, "rtol": 1e-5}
LENGTHS = (7, 3, 5, 1, 6)


def _batch(size: int = 5, seed: int = 0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    return SequenceBatch.from_list([torch.randn(n, size, generator=g) for n in LENGTHS])


def _outputs(out: Any) -> Tensor:
    if isinstance(out, SequenceBatch):
        return out.data
    return _outputs(out[0]) if isinstance(out, tuple) else out


def _run(model: nn.Module, fn: Callable[..., Any], *inputs: Any) -> tuple[Tensor, list[Tensor]]:
    """Outputs and the parameter gradients of a loss that weighs every output differently."""
    model.zero_grad()
    out = _outputs(fn(*inputs))
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    (out * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return out.detach(), grads


def _assert_same(got: tuple[Tensor, list[Tensor]], want: tuple[Tensor, list[Tensor]]) -> None:
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert len(got[1]) == len(want[1]) > 0
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "recurrence-lstm": lambda: Recurrence(LSTMCell(5, 6)),
    "recurrence-gru-backwards": lambda: Recurrence(GRUCell(5, 6), go_backwards=True),
    "fold-rnn": lambda: Fold(RNNCell(5, 6)),
    "bidirectional": lambda: Bidirectional(LSTMCell(5, 6), GRUCell(5, 6)),
    "stack-2-layers": lambda: Recurrence(LSTMCell(5, 6)) >> Fold(GRUCell(6, 6)),
    "nn-lstm-2-layers-bidirectional": lambda: rnnkit.nn.LSTM(5, 6, 2, bidirectional=True),
}
FULLGRAPH = tuple(LAYERS)  # every layer, backward ones too (see sequences.cached_property)


@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_layer_equals_eager(name: str) -> None:
    torch.manual_seed(0)
    model, x = LAYERS[name](), _batch()
    want = _run(model, model, x)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model), x), want)


@pytest.mark.parametrize("name", FULLGRAPH)
def test_fullgraph_equals_eager(name: str) -> None:
    torch.manual_seed(1)
    model, x = LAYERS[name](), _batch(seed=1)
    want = _run(model, model, x)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model, fullgraph=True), x), want)


def test_drop_in_on_padded_input_compiles() -> None:
    """A padded tensor becomes a SequenceBatch from its lengths' values (a graph break, so
    the default mode); the compiled drop-in gives torch.nn's results."""
    torch.manual_seed(2)
    model = rnnkit.nn.GRU(5, 6, batch_first=True)
    x = torch.randn(3, 7, 5)
    want = _run(model, model, x)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model), x), want)


def test_fused_path_stays_fused_under_compile() -> None:
    """Dynamo's graph of a Bidirectional holds two ``rnnkit::fused_rnn`` calls (one per
    direction) and no per-step loop; run as captured, it gives the eager results."""
    torch.manual_seed(2)
    model, x = LAYERS["bidirectional"](), _batch(seed=2)
    want = _run(model, model, x)
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, example: list[Tensor]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model, backend=capture), x), want)
    targets = [node.target for gm in graphs for node in gm.graph.nodes]
    assert targets.count(torch.ops.rnnkit.fused_rnn.default) == 2
    assert not any("lstm_cell" in str(t) or "gru_cell" in str(t) for t in targets)


@pytest.mark.slow
def test_recursive_compiled_equals_eager() -> None:
    """One graph per tree height, each compiled: ~30 s."""
    torch.manual_seed(3)
    trees = [
        Tree.from_listops(s)
        for s in ("[MAX 2 [MIN 4 7 ] 0 ]", "[SM 1 2 [MED 3 4 5 ] ]", "[MIN 9 ]")
    ]
    batch = TreeBatch.from_trees(trees, LISTOPS_VOCAB)
    embedding = nn.Embedding(len(LISTOPS_VOCAB), 5)
    model = nn.ModuleDict({"embedding": embedding, "tree": Recursive(ChildSumTreeLSTMCell(5, 6))})

    def roots(batch: TreeBatch) -> Tensor:
        return model["tree"].root_states(batch, batch.embed(model["embedding"]))[0]

    want = _run(model, roots, batch)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(roots), batch), want)


@pytest.mark.slow
# Dynamo, tracing the loop, reads .grad of a non-leaf tensor itself and warns of it
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_loop_path_compiled_equals_eager() -> None:
    """The loop path (a layer-normalised LSTM) unrolls per step under compile: ~30 s."""
    torch.manual_seed(4)
    model, x = Recurrence(LSTMCell(5, 6, layer_norm=True)), _batch(seed=4)
    want = _run(model, model, x)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model), x), want)


@pytest.mark.parametrize("kernel", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_op_gradients_match_numerical(kernel: str, packed: bool) -> None:
    g = torch.Generator().manual_seed(5)
    gates = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[kernel]
    h, i = 3, 2

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    weights = [rand(gates * h, i), rand(gates * h, h), rand(gates * h), rand(gates * h)]
    hx = [rand(1, 3, h) for _ in range(2 if kernel == "lstm" else 1)]
    batch_sizes = torch.tensor([3, 2, 2, 1]) if packed else None
    x = rand(8, i) if packed else rand(4, 3, i)
    n = len(hx)

    def f(x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        return tuple(fused_rnn(kernel, x, batch_sizes, list(rest[:n]), list(rest[n:]), True))

    assert torch.autograd.gradcheck(f, (x, *hx, *weights), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_bidirectional_cuda_equals_eager() -> None:
    """On a GPU the compiled layer runs cuDNN on packed input through the custom operator."""
    torch.manual_seed(6)
    model, x = LAYERS["bidirectional"]().cuda(), _batch(seed=6).to("cuda")
    want = _run(model, model, x)
    torch._dynamo.reset()
    _assert_same(_run(model, torch.compile(model), x), want)
