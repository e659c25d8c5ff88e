"""The residual blocks and sequence models of rnnkit.modern.blocks: the block against the same
computation written here with torch operations (RMSNorm and the gated MLP by hand, the mixer
stepped by hand), the model on the parallel path against its step form streamed one step at a
time, saving and loading, and the errors.

Tolerances: float64 within 1e-10; float32 round trips through saving bitwise equal.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rnnkit import Recurrence, SequenceBatch, load, save
from rnnkit.cells import as_tuple
from rnnkit.modern.blocks import (
    BUILDERS,
    GatedMLP,
    ResidualBlock,
    RMSNorm,
    SequenceModel,
    stack,
)
from rnnkit.modern.diagonal import HawkCell, RGLRUCell

F64 = torch.float64


def _batch(lengths: tuple[int, ...], size: int, dtype: torch.dtype = F64) -> SequenceBatch:
    g = torch.Generator().manual_seed(sum(lengths))
    return SequenceBatch.from_list(
        [torch.randn(n, size, generator=g, dtype=dtype) for n in lengths]
    )


def rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def gated_mlp(mlp: GatedMLP, x: Tensor) -> Tensor:
    gate = x @ mlp.gate.weight.t() + mlp.gate.bias
    up = x @ mlp.up.weight.t() + mlp.up.bias
    act = 0.5 * gate * (1 + torch.erf(gate / 2**0.5))  # GeLU, exact form
    return (act * up) @ mlp.down.weight.t() + mlp.down.bias


def by_hand(block: ResidualBlock, seq: Tensor) -> Tensor:
    """One sequence ``[T, d]`` through the block, the mixer stepped one input at a time."""
    mixer = block.mixer
    state = as_tuple(mixer.initial_state(1, dtype=F64))
    outs = []
    for x_t in seq:
        n = rms(x_t.unsqueeze(0), block.norm.weight, block.norm.eps)
        state = as_tuple(mixer(n, state if len(state) > 1 else state[0]))
        h = x_t.unsqueeze(0) + state[0]
        if block.mlp is not None:
            h = h + gated_mlp(block.mlp, rms(h, block.mlp_norm.weight, block.mlp_norm.eps))
        outs.append(h.squeeze(0))
    return torch.stack(outs)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_block_equals_the_computation_by_hand(kind: str) -> None:
    torch.manual_seed(0)
    block = BUILDERS[kind](8).double()  # 8: a multiple of the matrix kinds' 4 heads
    x = _batch((9, 4, 1), 8)
    for backend in ("scan", "loop"):
        block.recurrence.backend = backend
        got = block(x)
        for out, seq in zip(got.to_list(), x.to_list(), strict=True):
            torch.testing.assert_close(out, by_hand(block, seq), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_model_equals_its_step_form_streamed(kind: str) -> None:
    torch.manual_seed(1)
    model = stack(kind, d_model=8, layers=2, input_size=3, output_size=4).double()
    x = _batch((12, 5), 3)
    got = model(x)
    step = model.step_cell()
    for out, seq in zip(got.to_list(), x.to_list(), strict=True):
        state = None
        outs = []
        for x_t in seq:
            state = step(x_t.unsqueeze(0), state)
            outs.append(state[0].squeeze(0))
        torch.testing.assert_close(out, torch.stack(outs), atol=1e-10, rtol=1e-10)
    # The step form is a cell: the engine's loop over it gives the same outputs.
    looped = Recurrence(step, backend="loop")(x)
    torch.testing.assert_close(looped.data, got.data, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_model_saves_and_loads(kind: str, tmp_path: object) -> None:
    torch.manual_seed(2)
    model = stack(kind, d_model=8, layers=2, input_size=3, output_size=5)
    x = _batch((7, 3), 3, torch.float32)
    save(model, tmp_path)
    loaded = load(tmp_path)
    assert isinstance(loaded, SequenceModel)
    assert torch.equal(loaded(x).data, model(x).data)


def test_a_custom_mixer_plugs_in_and_saves(tmp_path: object) -> None:
    torch.manual_seed(3)
    block = ResidualBlock(RGLRUCell(5), 5, mlp_expansion=2)
    model = SequenceModel([block, ResidualBlock(HawkCell(5, 3), 5, mlp_expansion=0)], 5)
    x = _batch((6, 2), 5, torch.float32)
    save(model, tmp_path)
    assert torch.equal(load(tmp_path)(x).data, model(x).data)


def test_rmsnorm_and_gated_mlp_against_torch() -> None:
    torch.manual_seed(4)
    x = torch.randn(5, 7, dtype=F64)
    norm = RMSNorm(7).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    torch.testing.assert_close(
        norm(x), nn.functional.rms_norm(x, (7,), norm.weight, eps=norm.eps), atol=1e-12, rtol=0
    )
    mlp = GatedMLP(7, 2).double()
    torch.testing.assert_close(mlp(x), gated_mlp(mlp, x), atol=1e-12, rtol=1e-12)


def test_bad_input_is_refused() -> None:
    kinds = "['deltanet', 'gla', 'hawk', 'lru', 'mamba', 'mamba2', 'mlstm']"
    with pytest.raises(ValueError, match=re.escape(f"kind: expected one of {kinds}")):
        stack("transformer", 8, 2)
    with pytest.raises(ValueError, match="mixer: expected a cell with input_size == d_model = 8"):
        ResidualBlock(RGLRUCell(4), 8)
    with pytest.raises(ValueError, match=r"blocks\[0\]: expected a ResidualBlock of d_model 8"):
        SequenceModel([BUILDERS["hawk"](4)], 8)
    with pytest.raises(ValueError, match="layers: expected a positive integer, found 0"):
        stack("lru", 8, 0)
    step = stack("mamba", 4, 1).step_cell()
    with pytest.raises(ValueError, match="state: SequenceStep expected 4 tensors"):
        step(torch.zeros(1, 4), (torch.zeros(1, 4),))


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_step_form_exports_to_onnx_and_streams_in_onnxruntime(kind: str, tmp_path) -> None:
    """The step form of a 2-layer model of every kind, exported with export_step_onnx and
    streamed through onnxruntime (OnnxStepper), against the model's own step form: 6 steps of
    a batch of 3, within 1e-5 (float32)."""
    pytest.importorskip("onnxruntime")
    from rnnkit.onnx_export import export_step_onnx
    from rnnkit.serving import OnnxStepper

    torch.manual_seed(5)
    cell = stack(kind, d_model=8, layers=2, input_size=3, output_size=2).step_cell().eval()
    export_step_onnx(cell, tmp_path / "step.onnx")
    stepper = OnnxStepper(tmp_path / "step.onnx")
    x = torch.randn(6, 3, 3)
    ours, theirs = cell.initial_state(3), stepper.initial_state(3)
    with torch.no_grad():
        for x_t in x:
            ours = cell(x_t, ours)
            theirs = stepper.step(x_t.numpy(), theirs)
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(b, a.numpy(), atol=1e-5, rtol=1e-5)
