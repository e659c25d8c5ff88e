"""Shape inference (rnnkit.lazy): layers and cells built without their input size.

Each lazy module is compared with an eagerly built one holding the same weights (copied after
the first call): outputs and gradients equal, on every engine path. Then the life of a model
after its first call (save/load, ONNX through onnxruntime, the fused plan, optimizers) and the
errors before it (save, export, count_parameters name the layer).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_sequences
from torch import nn

from rnnkit import (
    ChildSumTreeLSTMCell,
    Dense,
    Embedding,
    Fold,
    GRUCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    NaryTreeLSTMCell,
    Recurrence,
    Recursive,
    RecursiveCell,
    RNNCell,
    SequenceBatch,
    Sequential,
    export_onnx,
    export_step_onnx,
    load,
    save,
)
from rnnkit.layers import Activation, Lambda
from rnnkit.lazy import UninitializedModelError, count_parameters, is_initialized
from rnnkit.recurrence import _fused_plan, select_backend
from rnnkit.trees import Tree, TreeBatch

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [5, 2, 4]

CELLS: dict[str, Callable[[int | None], nn.Module]] = {
    "rnn": lambda i: RNNCell(i, 4),
    "rnn-proj": lambda i: RNNCell(i, 4, proj_size=3, self_stabilization=True),
    "lstm": lambda i: LSTMCell(i, 4),
    "lstm-peep-proj": lambda i: LSTMCell(i, 4, proj_size=6, peepholes=True, activation="relu"),
    "gru": lambda i: GRUCell(i, 4),
    "gru-cntk": lambda i: GRUCell(i, 4, reset="before", proj_size=4, self_stabilization=True),
    "mingru": lambda i: MinGRUCell(i, 4),
    "minlstm": lambda i: MinLSTMCell(i, 4),
}


def _batch(features: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    return SequenceBatch.from_list(random_sequences(LENGTHS, features, seed=seed, dtype=dtype))


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_lazy_cell_equals_eager_cell(kind, backend):
    lazy = CELLS[kind](None)
    assert lazy.input_size is None and not is_initialized(lazy)
    x = _batch(dtype=torch.float64)
    layer = Recurrence(lazy.double(), backend=backend, initial_state=0.1)
    out = layer(x)  # materialises weight_ih from the input's 3 features
    assert lazy.input_size == 3 and is_initialized(lazy)
    assert lazy.weight_ih.dtype == torch.float64 and tuple(lazy.weight_ih.shape)[1] == 3
    eager = CELLS[kind](3).double()
    eager.load_state_dict(lazy.state_dict())
    reference = Recurrence(eager, backend="reference", initial_state=0.1)
    want = reference(x)
    torch.testing.assert_close(out.data, want.data, rtol=1e-12, atol=1e-12)
    out.data.sum().backward()
    want.data.sum().backward()
    for (name, p), q in zip(lazy.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_direct_call_materialises_and_checks_later_inputs():
    cell = LSTMCell(hidden_size=5)
    h, _ = cell(torch.randn(2, 7))
    assert (cell.input_size, tuple(cell.weight_ih.shape), tuple(h.shape)) == (7, (20, 7), (2, 5))
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 7\], found \(2, 3\)"):
        cell(torch.randn(2, 3))
    with pytest.raises(ValueError, match="input_size: LSTMCell has input size 7, found 3"):
        cell.materialize(3)


def test_fused_plan_uses_the_materialised_weights():
    """The plan cache keys on parameter identity; materialising keeps the objects, so the plan
    built after the first call holds the cell's own (materialised) weights."""
    cell = LSTMCell(hidden_size=4)
    layer = Fold(cell)
    assert select_backend(cell, "auto") == "fused"
    x = _batch()
    out = layer(x)
    plan = _fused_plan(cell)
    assert plan.weights[0] is cell.weight_ih and tuple(plan.weights[0].shape) == (16, 3)
    loop = Fold(cell, backend="loop")(x)
    torch.testing.assert_close(out, loop, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        cell.weight_ih.mul_(2.0)  # in place: the plan sees it
    torch.testing.assert_close(layer(x), Fold(cell, backend="loop")(x), rtol=1e-6, atol=1e-6)


def test_cast_before_first_call_keeps_the_dtype():
    cell = GRUCell(hidden_size=3).double()
    Fold(cell)(_batch(dtype=torch.float64))
    assert all(p.dtype == torch.float64 for p in cell.parameters())


def test_dense_and_embedding_infer_their_input():
    dense = Dense(out_features=2, activation=torch.tanh)
    x = _batch(features=5)
    y = dense(x)
    assert dense.in_features == 5 and tuple(dense.weight.shape) == (2, 5)
    eager = Dense(5, 2, activation=torch.tanh)
    eager.load_state_dict(dense.state_dict())
    torch.testing.assert_close(y.data, eager(x).data)
    emb = Embedding(embedding_dim=3, padding_idx=1)
    ids = torch.tensor([2, 0, 1, 3])
    vectors = emb(nn.functional.one_hot(ids, 4).double().float())
    assert emb.num_embeddings == 4 and torch.all(emb.weight[1] == 0)  # padding row zeroed
    torch.testing.assert_close(vectors, emb(ids))
    torch.testing.assert_close(vectors, emb.weight[ids])


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="out_features: expected a positive integer"):
        Dense(5)  # one argument is in_features, as before: out_features is required
    with pytest.raises(ValueError, match="hidden_size: expected a positive integer, found None"):
        LSTMCell(3)
    with pytest.raises(ValueError, match="input_size: expected a positive integer"):
        GRUCell(0, 4)
    with pytest.raises(ValueError, match="infers it from one-hot input"):
        Embedding(embedding_dim=3)(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"expected one-hot vectors \[\.\.\., 4\]"):
        Embedding(4, 3)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="padding_idx: expected an index below"):
        Embedding(embedding_dim=3, padding_idx=7)(torch.eye(4))
    with pytest.raises(ValueError, match="proj_size: a GRU's update .* found 3"):
        GRUCell(2, 4, proj_size=3)


def _model() -> nn.Module:
    return Sequential(
        [Recurrence(LSTMCell(hidden_size=4)), Fold(GRUCell(hidden_size=3)), Dense(out_features=2)]
    )


def test_save_export_count_before_the_first_call_name_the_layer(tmp_path: Path):
    model = _model()
    message = r"cannot save model before its first call: model\.layers\.0\.cell \(LSTMCell\)"
    with pytest.raises(UninitializedModelError, match=message):
        save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(UninitializedModelError, match=r"export model .*layers\.0\.cell"):
        export_onnx(model, tmp_path / "m.onnx", _batch())
    with pytest.raises(UninitializedModelError, match=r"count the parameters of model"):
        count_parameters(model)
    with pytest.raises(UninitializedModelError, match=r"export cell .*: cell \(GRUCell\)"):
        export_step_onnx(GRUCell(hidden_size=3), tmp_path / "s.onnx")


def test_save_load_and_count_after_the_first_call(tmp_path: Path):
    torch.manual_seed(0)
    model = _model()
    x = _batch()
    y = model(x)
    save(model, tmp_path / "m")
    loaded = load(tmp_path / "m")
    torch.testing.assert_close(loaded(x), y.detach(), rtol=0, atol=0)
    eager = Sequential([Recurrence(LSTMCell(3, 4)), Fold(GRUCell(4, 3)), Dense(3, 2)])
    assert (
        count_parameters(model)
        == count_parameters(eager)
        == (16 * 3 + 16 * 4 + 2 * 16) + (9 * 4 + 9 * 3 + 2 * 9) + 8
    )
    assert count_parameters(model, trainable=True) == count_parameters(model)


def test_load_state_dict_into_a_lazy_model_materialises_it():
    """A checkpoint resumed into a freshly built lazy model: the stored shapes decide."""
    trained = _model()
    x = _batch()
    y = trained(x)
    fresh = _model()
    fresh.load_state_dict(trained.state_dict())
    assert is_initialized(fresh)
    torch.testing.assert_close(fresh(x), y)


def test_onnx_after_the_first_call_matches_onnxruntime(tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    model = Sequential([Recurrence(LSTMCell(hidden_size=4)), Dense(out_features=2)]).eval()
    example = _batch()
    model(example)
    export_onnx(model, tmp_path / "m.onnx", example)
    check = SequenceBatch.from_list(random_sequences([3, 7, 1], 3, seed=5))
    session = onnxruntime.InferenceSession(
        str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]
    )
    padded, lengths = check.to_padded()
    found = session.run(None, {"x": padded.numpy(), "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        want, _ = model(check).to_padded()
    np.testing.assert_allclose(found, want.numpy(), rtol=1e-5, atol=1e-5)


def test_optimizer_built_after_a_dummy_forward_trains():
    torch.manual_seed(2)
    model = _model()
    x = _batch()
    target = torch.zeros(len(LENGTHS), 2)
    model(x)  # the dummy forward: shapes known, then the optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = ((model(x) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_deepcopy_before_the_first_call_gives_independent_cells():
    cell = LSTMCell(hidden_size=4)
    twin = copy.deepcopy(cell)
    cell(torch.zeros(1, 3))
    twin(torch.zeros(1, 6))
    assert (cell.input_size, twin.input_size) == (3, 6)


def test_tree_cells_infer_their_input():
    batch = TreeBatch.from_trees(
        [Tree(None, [Tree(token="a"), Tree(None, [Tree(token="b"), Tree(token="c")])])]
    )
    x = torch.randn(batch.num_nodes, 5, dtype=torch.float64)
    for make in (lambda i: ChildSumTreeLSTMCell(i, 3), lambda i: NaryTreeLSTMCell(i, 3, n=2)):
        lazy = make(None).double()
        h, _ = Recursive(lazy)(batch, x)
        assert lazy.input_size == 5
        eager = make(5).double()
        eager.load_state_dict(lazy.state_dict())
        torch.testing.assert_close(h, Recursive(eager).node_states_reference(batch, x)[0])
    assert RecursiveCell(hidden_size=4).input_size == 4  # a leaf's state is its input


def test_sequential_accepts_plain_functions_and_refuses_to_save_them(tmp_path: Path):
    x = _batch()
    model = Sequential([Dense(3, 3), torch.tanh, lambda s: s.with_data(2 * s.data)])
    assert [type(m) for m in model] == [Dense, Activation, Lambda]
    dense = model[0]
    torch.testing.assert_close(model(x).data, 2 * torch.tanh(dense(x).data))
    with pytest.raises(TypeError, match=r"model\.layers\.2: cannot save the plain function"):
        save(model, tmp_path / "m")
    saved = Sequential([Dense(3, 3), torch.tanh])  # a known function saves by name
    save(saved, tmp_path / "ok")
    torch.testing.assert_close(load(tmp_path / "ok")(x).data, saved(x).data)
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a torch\.nn\.Module or a func"):
        Sequential([Dense(3, 3), 5])


def test_conv_infers_its_channels(tmp_path: Path):
    from rnnkit.layers.conv import Conv

    torch.manual_seed(3)
    lazy = Conv(None, 4, 3)
    x = _batch(features=2)
    y = lazy(x)
    assert lazy.in_channels == 2
    eager = Conv(2, 4, 3)
    eager.load_state_dict(lazy.state_dict())
    torch.testing.assert_close(y.data, eager(x).data)
    save(lazy, tmp_path / "conv")
    torch.testing.assert_close(load(tmp_path / "conv")(x).data, lazy.eval()(x).data)


def test_step_export_after_the_first_call(tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    cell = GRUCell(hidden_size=3, reset="before", self_stabilization=True)
    x = torch.randn(2, 5)
    h = torch.randn(2, 3)
    want = cell(x, h).detach().numpy()
    export_step_onnx(cell, tmp_path / "step.onnx")
    session = onnxruntime.InferenceSession(
        str(tmp_path / "step.onnx"), providers=["CPUExecutionProvider"]
    )
    found = session.run(None, {"x": x.numpy(), "state_0": h.numpy()})[0]
    np.testing.assert_allclose(found, want, rtol=1e-5, atol=1e-5)
