"""Step functions of every cell kind through ONNX (``rnnkit.export_step_onnx``), checked
against the eager cell with onnxruntime, and ``rnnkit.serving.OnnxStepper.run`` on ragged
batches against ``Recurrence.with_final_state``. Tolerance: float32, atol 1e-5."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rnnkit import (
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    RNNCell,
    SequenceBatch,
    export_step_onnx,
)
from rnnkit.cells import as_tuple
from rnnkit.serving import OnnxStepper
from rnnkit.testing import CoupledLSTMCell

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-5


class Decaying(nn.Module):
    """A one-tensor user cell without ``input_size``: ``h' = 0.5 h + tanh(x W^T)``."""

    hidden_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3))

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        return torch.zeros(batch_size, 4, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        h = self.initial_state(x.shape[0], x.device, x.dtype) if state is None else state
        return 0.5 * h + torch.tanh(nn.functional.linear(x, self.weight))


SIZE, H = 5, 6
CELLS: dict[str, Callable[[], nn.Module]] = {
    "rnn-tanh": lambda: RNNCell(SIZE, H),
    "rnn-relu": lambda: RNNCell(SIZE, H, nonlinearity="relu"),
    "rnn-sigmoid": lambda: RNNCell(SIZE, H, nonlinearity="sigmoid"),
    "lstm": lambda: LSTMCell(SIZE, H),
    "lstm-peepholes": lambda: LSTMCell(SIZE, H, peepholes=True),
    "lstm-proj": lambda: LSTMCell(SIZE, H, proj_size=3),
    "lstm-layer-norm": lambda: LSTMCell(SIZE, H, layer_norm=True),
    "gru-after": lambda: GRUCell(SIZE, H),
    "gru-before-cntk": lambda: GRUCell(SIZE, H, reset="before"),
    "mingru": lambda: MinGRUCell(SIZE, H),
    "minlstm": lambda: MinLSTMCell(SIZE, H),
    "grud": lambda: GRUDCell(SIZE, H, x_mean=torch.linspace(-1.0, 1.0, SIZE)),
    "user-coupled-lstm": lambda: CoupledLSTMCell(SIZE, H),
}


def _input(name: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Random steps; GRU-D's are ``[x, m, δ]`` with a 0/1 mask and positive gaps."""
    if name != "grud":
        return torch.randn(*shape, SIZE, generator=gen)
    values = torch.randn(*shape, SIZE, generator=gen)
    mask = (torch.rand(*shape, SIZE, generator=gen) < 0.6).float()
    return torch.cat([values * mask, mask, torch.rand(*shape, SIZE, generator=gen) * 3], dim=-1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path]]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("steps")
    found = {}
    for name, build in CELLS.items():
        cell = build().eval()
        export_step_onnx(cell, folder / f"{name}.onnx")
        found[name] = (cell, folder / f"{name}.onnx")
    return found


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("name", list(CELLS))
def test_step_equals_eager(
    exported: dict[str, tuple[nn.Module, Path]], name: str, batch: int
) -> None:
    cell, path = exported[name]
    gen = torch.Generator().manual_seed(batch)
    x = _input(name, (batch,), gen)
    zeros = as_tuple(cell.initial_state(batch))  # type: ignore[operator]
    # Every state tensor differs from the others (and from zeros).
    state = tuple(torch.randn(z.shape, generator=gen) + k for k, z in enumerate(zeros))
    with torch.no_grad():
        expected = as_tuple(cell(x, state if len(state) > 1 else state[0]))
    found = OnnxStepper(path).step(x.numpy(), tuple(s.numpy() for s in state))
    assert len(found) == len(expected)
    for f, e in zip(found, expected, strict=True):
        np.testing.assert_allclose(f, e.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", list(CELLS))
def test_ragged_run_equals_recurrence(
    exported: dict[str, tuple[nn.Module, Path]], name: str
) -> None:
    cell, path = exported[name]
    gen = torch.Generator().manual_seed(7)
    lengths = [4, 7, 1, 5]
    batch = SequenceBatch.from_list([_input(name, (n,), gen) for n in lengths])
    with torch.no_grad():
        outputs, final = Recurrence(cell).with_final_state(batch)
    padded, _ = batch.to_padded()
    found, found_final = OnnxStepper(path).run(padded.numpy(), np.array(lengths))
    np.testing.assert_allclose(found, outputs.to_padded()[0].numpy(), rtol=0, atol=ATOL)
    for f, e in zip(found_final, as_tuple(final), strict=True):
        np.testing.assert_allclose(f, e.numpy(), rtol=0, atol=ATOL)


def test_initial_state_from_metadata(exported: dict[str, tuple[nn.Module, Path]]) -> None:
    """GRU-D starts from the training means: the stepper's default state is the cell's."""
    cell, path = exported["grud"]
    expected = cell.initial_state(3)  # type: ignore[operator]
    for f, e in zip(OnnxStepper(path).initial_state(3), expected, strict=True):
        np.testing.assert_array_equal(f, e.numpy())


def test_user_cell_without_input_size(tmp_path: Path) -> None:
    cell = Decaying()
    with pytest.raises(ValueError, match="input_size: expected a positive integer"):
        export_step_onnx(cell, tmp_path / "a.onnx")
    export_step_onnx(cell, tmp_path / "a.onnx", input_size=3)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    (found,) = OnnxStepper(tmp_path / "a.onnx").step(x.numpy(), (h.numpy(),))
    with torch.no_grad():
        np.testing.assert_allclose(found, cell(x, h).numpy(), rtol=0, atol=ATOL)


class ValueBranch(Decaying):
    """Branches in Python on a value: a trace freezes one branch."""

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        h = super().forward(x, state)
        return h if bool(h.sum() > 0) else -h


class Unsupported(Decaying):
    """Uses an operator the TorchScript exporter has no ONNX form for."""

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        return torch.special.i1(super().forward(x, state))


def test_refused_cells_name_cell_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cell: .*ValueBranch cannot be exported .*frozen"):
        export_step_onnx(ValueBranch(), tmp_path / "b.onnx", input_size=3)
    with pytest.raises(ValueError, match=r"cell: .*Unsupported cannot be exported .*i1"):
        export_step_onnx(Unsupported(), tmp_path / "c.onnx", input_size=3)


def test_run_checks_lengths(exported: dict[str, tuple[nn.Module, Path]]) -> None:
    _, path = exported["lstm"]
    with pytest.raises(ValueError, match=r"lengths: expected 2 lengths in 1\.\.3"):
        OnnxStepper(path).run(np.zeros((2, 3, SIZE), np.float32), np.array([3, 4]))
