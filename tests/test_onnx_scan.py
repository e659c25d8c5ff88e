"""export_onnx of Recurrence, Fold and Bidirectional over any cell: an ONNX Scan over the
cell's step graph, against the eager model in onnxruntime on another batch size and length.

Every case exports on a ragged batch of 3 (lengths 2, 4, 3) and checks a ragged batch of 6
(lengths 5, 1, 9, 3, 9, 2), with every parameter drawn at random so that no default value
passes for a computed one; tolerance 1e-5 (float32) or 1e-10 (float64).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import random_sequences
from torch import Tensor, nn

from rnnkit import (
    Bidirectional,
    Dense,
    Embedding,
    Fold,
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    SequenceBatch,
    export_onnx,
)
from rnnkit.modern import LRUCell, MambaCell, MLSTMCell

EXAMPLE_LENGTHS = [2, 4, 3]
CHECK_LENGTHS = [5, 1, 9, 3, 9, 2]


class LeakyCell(nn.Module):
    """A user's cell with only the step protocol: ``h' = (1 - a) h + a tanh(W [x, h])``; no
    input projection, so the Scan body reads the raw input."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)
        self.rate = nn.Parameter(torch.tensor(0.3))

    def initial_state(self, batch_size, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        h = self.initial_state(x.shape[0], x.device, x.dtype) if state is None else state
        a = torch.sigmoid(self.rate)
        return (1 - a) * h + a * torch.tanh(self.linear(torch.cat([x, h], dim=1)))


class PythonBranchCell(LeakyCell):
    """A step whose result depends on a value read through Python: the tracer freezes it."""

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        h = super().forward(x, state)
        return h if float(x.sum()) > 0 else -h


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _batch(size: int, lengths, seed: int, dtype=torch.float32) -> SequenceBatch:
    return SequenceBatch.from_list(random_sequences(lengths, size, seed=seed, dtype=dtype))


def _grud_batch(variables: int, lengths, seed: int) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    steps = []
    for n in lengths:
        values = torch.randn(n, variables, generator=g)
        mask = torch.rand(n, variables, generator=g) < 0.6
        delta = torch.rand(n, variables, generator=g) * 3
        steps.append(GRUDCell.pack_inputs(values, mask, delta))
    return SequenceBatch.from_list(steps)


def _run(path, name: str, batch: SequenceBatch) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    padded, lengths = batch.to_padded()
    return session.run(None, {name: padded.numpy(), "lengths": lengths.numpy()})[0]


def _expected(model: nn.Module, batch: SequenceBatch) -> np.ndarray:
    with torch.no_grad():
        out = model(batch)
    return (out.to_padded()[0] if isinstance(out, SequenceBatch) else out).numpy()


def _operators(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


CELLS = {
    "layer-norm LSTM": lambda: LSTMCell(3, 5, layer_norm=True),
    "peephole LSTM": lambda: LSTMCell(3, 5, peepholes=True),
    "projected LSTM": lambda: LSTMCell(3, 6, proj_size=4),
    "CNTK GRU": lambda: GRUCell(3, 5, reset="before"),
    "minGRU": lambda: MinGRUCell(3, 5),
    "minLSTM": lambda: MinLSTMCell(3, 5),
    "user cell": lambda: LeakyCell(3, 5),
    "LRU": lambda: LRUCell(3, 4),
    "Mamba mixer": lambda: MambaCell(3, state_size=4),
    "mLSTM": lambda: MLSTMCell(3, 4, heads=2),
}


@pytest.mark.parametrize("fold", [False, True], ids=["recurrence", "fold"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_any_cell_exports_as_a_scan_equal_to_the_model(tmp_path, cell, go_backwards, fold):
    layer = (Fold if fold else Recurrence)(CELLS[cell](), go_backwards=go_backwards)
    model = _randomize(layer >> Dense(layer.cell.hidden_size, 2)).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, _batch(3, EXAMPLE_LENGTHS, seed=1))
    assert "Scan" in _operators(path)
    assert not {"LSTM", "GRU", "RNN"} & _operators(path)
    check = _batch(3, CHECK_LENGTHS, seed=8)
    expected = _expected(model, check)
    assert expected.std() > 1e-2  # the comparison below is not between near-zero outputs
    found = _run(path, "x", check)
    assert found.shape == ((6, 2) if fold else (6, 9, 2))
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_grud_exports_with_its_training_means_as_initial_state(tmp_path):
    cell = _randomize(GRUDCell(3, 5, x_mean=torch.tensor([0.5, -1.0, 2.0])))
    model = Recurrence(cell).eval()
    path = tmp_path / "grud.onnx"
    export_onnx(model, path, _grud_batch(3, EXAMPLE_LENGTHS, seed=1))
    check = _grud_batch(3, CHECK_LENGTHS, seed=8)
    np.testing.assert_allclose(_run(path, "x", check), _expected(model, check), atol=1e-5)


def test_standard_and_scanned_layers_mix_with_token_ids_and_every_initial_state(tmp_path):
    model = _randomize(
        Embedding(11, 4)
        >> Bidirectional(
            Recurrence(LSTMCell(4, 3, layer_norm=True), initial_state="learned"),
            Recurrence(GRUCell(4, 3, reset="before"), go_backwards=True, initial_state=0.25),
            merge="sum",
        )
        >> Recurrence(GRUCell(3, 4))  # a standard cell: ONNX's GRU operator
        >> Fold(LeakyCell(4, 3), initial_state=torch.linspace(-1, 1, 3))
        >> Dense(3, 2)
    ).eval()
    path = tmp_path / "mixed.onnx"
    g = torch.Generator().manual_seed(3)
    ids = SequenceBatch.from_list([torch.randint(0, 11, (n,), generator=g) for n in [2, 4, 3]])
    export_onnx(model, path, ids)
    assert {"Scan", "GRU"} <= _operators(path)
    check = SequenceBatch.from_list(
        [torch.randint(0, 11, (n,), generator=g) for n in CHECK_LENGTHS]
    )
    np.testing.assert_allclose(_run(path, "ids", check), _expected(model, check), atol=1e-5)


def test_float64_scan_matches_to_1e10(tmp_path):
    model = _randomize(Recurrence(LSTMCell(3, 5, layer_norm=True)).double()).eval()
    path = tmp_path / "double.onnx"
    export_onnx(model, path, _batch(3, EXAMPLE_LENGTHS, seed=1, dtype=torch.float64))
    check = _batch(3, CHECK_LENGTHS, seed=8, dtype=torch.float64)
    found = _run(path, "x", check)
    assert found.dtype == np.float64
    np.testing.assert_allclose(found, _expected(model, check), rtol=1e-10, atol=1e-10)


def test_a_step_frozen_by_the_tracer_is_refused_and_not_left_behind(tmp_path):
    model = _randomize(Recurrence(PythonBranchCell(3, 5))).eval()
    path = tmp_path / "frozen.onnx"
    with pytest.raises(ValueError, match=r"differs from the model on other inputs.*\.item\(\)"):
        export_onnx(model, path, _batch(3, EXAMPLE_LENGTHS, seed=1))
    assert not path.exists()
