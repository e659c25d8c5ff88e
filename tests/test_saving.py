"""rnnkit.save / load (safetensors + JSON, no pickle) and export_onnx.

Oracles: the original model (a loaded model must give bit-identical outputs, ``torch.equal``,
since it runs the same parameters through the same code), and, for ONNX, the rnnkit model run
by PyTorch on the same batch, compared with onnxruntime's outputs to 1e-5 (absolute and
relative) on batches whose size and length differ from the export example.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import random_sequences
from torch import Tensor, nn

from rnnkit import (
    Activation,
    Bidirectional,
    Dense,
    Dropout,
    Embedding,
    Fold,
    GRUCell,
    GRUDCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    Recurrence,
    RecurrenceFrom,
    RNNCell,
    SequenceBatch,
    Unfold,
)
from rnnkit.onnx_export import export_onnx
from rnnkit.recursive import (
    ChildSumTreeLSTMCell,
    NaryTreeLSTMCell,
    Recursive,
    RecursiveCell,
    RNTNCell,
)
from rnnkit.saving import load, register_module, save
from rnnkit.trees import Tree, TreeBatch

LENGTHS = [3, 1, 6, 2, 6]  # unsorted, with a tie and a length-1 sequence


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn at random, so that a default value never passes for a loaded one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _batch(size: int, lengths=LENGTHS, seed: int = 1, dtype=torch.float32) -> SequenceBatch:
    return SequenceBatch.from_list(random_sequences(lengths, size, seed=seed, dtype=dtype))


def _ids(vocab: int, lengths=LENGTHS, seed: int = 2) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    return SequenceBatch.from_list([torch.randint(0, vocab, (n,), generator=g) for n in lengths])


def _outputs(y) -> Tensor:
    return y.to_padded()[0] if isinstance(y, SequenceBatch) else y


def _round_trip(model: nn.Module, tmp_path: Path) -> nn.Module:
    save(model, tmp_path / "saved")
    return load(tmp_path / "saved")


def _assert_same(model: nn.Module, loaded: nn.Module, *inputs) -> None:
    model.eval()
    with torch.no_grad():
        expected, found = _outputs(model(*inputs)), _outputs(loaded(*inputs))
    assert torch.equal(expected, found)
    assert type(loaded) is type(model) and not loaded.training
    want, got = model.state_dict(), loaded.state_dict()
    assert list(want) == list(got)
    assert all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)


# ---------------------------------------------------------------------------- round trips


def test_stacked_model_round_trip(tmp_path):
    model = _randomize(
        Recurrence(LSTMCell(3, 6)) >> Fold(GRUCell(6, 5, reset="before")) >> Dense(5, 2)
    )
    random_state = torch.random.get_rng_state()
    loaded = _round_trip(model, tmp_path)
    assert torch.equal(torch.random.get_rng_state(), random_state)  # no draw from the caller's
    _assert_same(model, loaded, _batch(3))
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]
    header = json.loads((tmp_path / "saved" / "model.json").read_text())
    assert header["format_version"] == 1
    assert header["model"]["config"]["layers"][1]["config"]["cell"] == {
        "$module": "rnnkit.GRUCell",
        "config": {"input_size": 6, "hidden_size": 5, "bias": True, "reset": "before"},
    }


CELLS = {
    "rnn-tanh": lambda: RNNCell(3, 4),
    "rnn-relu-nobias": lambda: RNNCell(3, 4, bias=False, nonlinearity="relu"),
    "rnn-sigmoid": lambda: RNNCell(3, 4, nonlinearity="sigmoid"),
    "lstm": lambda: LSTMCell(3, 4),
    "lstm-proj": lambda: LSTMCell(3, 4, proj_size=2),
    "lstm-peepholes-nobias": lambda: LSTMCell(3, 4, bias=False, peepholes=True),
    "lstm-layer-norm": lambda: LSTMCell(3, 4, layer_norm=True),
    "lstm-all": lambda: LSTMCell(3, 5, proj_size=3, peepholes=True, layer_norm=True),
    "gru-after": lambda: GRUCell(3, 4),
    "gru-before-nobias": lambda: GRUCell(3, 4, bias=False, reset="before"),
    "min-gru": lambda: MinGRUCell(3, 4),
    "min-lstm-nobias": lambda: MinLSTMCell(3, 4, bias=False),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_cell_option_round_trips(tmp_path, name):
    model = _randomize(Recurrence(CELLS[name](), go_backwards=True, backend="loop"))
    loaded = _round_trip(model, tmp_path)
    _assert_same(model, loaded, _batch(3))
    for attribute in ("input_size", "hidden_size", "nonlinearity", "proj_size", "peepholes"):
        assert getattr(loaded.cell, attribute, None) == getattr(model.cell, attribute, None)
    assert loaded.go_backwards and loaded.backend == "loop"


INITIAL = {
    "constant": lambda: 0.25,
    "learned": lambda: "learned",
    "fixed-h": lambda: torch.linspace(-1.0, 1.0, 4),
    "fixed-h-c": lambda: (torch.linspace(-1.0, 1.0, 4), torch.linspace(2.0, 0.5, 4)),
}


@pytest.mark.parametrize("layer", [Recurrence, Fold])
@pytest.mark.parametrize("initial", sorted(INITIAL))
def test_initial_states_round_trip(tmp_path, layer, initial):
    cell = LSTMCell(3, 4) if initial == "fixed-h-c" else GRUCell(3, 4)
    model = _randomize(layer(cell, initial_state=INITIAL[initial]()))  # learned: random too
    loaded = _round_trip(model, tmp_path)
    _assert_same(model, loaded, _batch(3))
    assert loaded.initial.constant == model.initial.constant
    if model.initial.fixed is not None:
        assert loaded.initial.fixed is not None
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.initial.fixed, loaded.initial.fixed, strict=True)
        )


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_tagger_with_per_step_layers_round_trips(tmp_path, merge):
    width = 8 if merge == "concat" else 4
    model = _randomize(
        Embedding(11, 3, padding_idx=0)
        >> Bidirectional(LSTMCell(3, 4), Recurrence(GRUCell(3, 4), go_backwards=True), merge)
        >> Dropout(0.3)
        >> Activation(torch.relu)
        >> Activation(nn.LayerNorm(width))  # a torch module applied per step
        >> Dense(width, 5, activation=nn.Tanh())
        >> Dense(5, 2, activation=torch.nn.functional.relu)
    )
    loaded = _round_trip(model, tmp_path)
    _assert_same(model, loaded, _ids(11))
    assert loaded[0].embedding.padding_idx == 0 and loaded[1].merge == merge


def test_grud_cell_keeps_its_training_means(tmp_path):
    means = torch.tensor([0.5, -1.0])
    model = _randomize(Fold(GRUDCell(2, 4, x_mean=means)))
    loaded = _round_trip(model, tmp_path)
    _assert_same(model, loaded, _batch(6))
    assert torch.equal(loaded.cell.x_mean, means)


def test_float64_model_keeps_its_dtype(tmp_path):
    model = _randomize(Fold(LSTMCell(3, 4)) >> Dense(4, 1)).double()
    loaded = _round_trip(model, tmp_path)
    assert loaded[1].weight.dtype == torch.float64
    _assert_same(model, loaded, _batch(3, dtype=torch.float64))


def test_decoder_modules_round_trip(tmp_path):
    encoder = _randomize(Fold(GRUCell(3, 4)), seed=3)
    decoder = _randomize(RecurrenceFrom(GRUCell(2, 4), backend="reference"), seed=4)
    generator = _randomize(
        Unfold(GRUCell(3, 4), Dense(4, 3), nn.Embedding(3, 3), max_length=6, stop=2), seed=5
    )
    state = encoder(_batch(3))
    for module, inputs in [
        (encoder, (_batch(3),)),
        (decoder, (state, _batch(2, seed=6))),
        (generator, (state, torch.zeros(len(LENGTHS), 3))),
    ]:
        loaded = _round_trip(module, tmp_path)
        _assert_same(module, loaded, *inputs)


@pytest.mark.parametrize(
    "cell",
    [
        lambda: ChildSumTreeLSTMCell(4, 3),
        lambda: NaryTreeLSTMCell(4, 3, n=3),
        lambda: RecursiveCell(4, 4),
        lambda: RNTNCell(4, 4),
    ],
)
def test_tree_modules_round_trip(tmp_path, cell):
    trees = [Tree.from_listops("[SM 1 2 ]"), Tree.from_listops("[MAX 3 [MIN 4 5 ] 1 ]")]
    vocab = {t: i for i, t in enumerate(["[SM", "[MAX", "[MIN", "]", "1", "2", "3", "4", "5"])}
    batch = TreeBatch.from_trees(trees, vocab=vocab)
    model = _randomize(Recursive(cell()))
    x = batch.embed(_randomize(nn.Embedding(len(vocab), 4), seed=7))
    loaded = _round_trip(model, tmp_path)
    model.eval()
    expected = torch.cat(list(_tuple(model.root_states(batch, x))))
    assert torch.equal(expected, torch.cat(list(_tuple(loaded.root_states(batch, x)))))
    assert loaded.cell.max_children == model.cell.max_children


def _tuple(state) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


# ---------------------------------------------------------------------------- user types


class TiedLanguageModel(nn.Module):
    """A user model: embedding and output weights tied, nested rnnkit modules."""

    def __init__(self, vocab: int, size: int, encoder: nn.Module) -> None:
        super().__init__()
        self.vocab, self.size = vocab, size
        self.embed = nn.Embedding(vocab, size)
        self.encoder = encoder
        self.out = nn.Linear(size, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids: SequenceBatch) -> Tensor:
        return self.out(self.encoder(ids.map(self.embed)).data)


register_module(
    TiedLanguageModel,
    lambda m: {"vocab": m.vocab, "size": m.size, "encoder": m.encoder},
    name="tests.TiedLanguageModel",
)


def test_registered_user_module_with_tied_weights_round_trips(tmp_path):
    model = _randomize(TiedLanguageModel(7, 4, Recurrence(LSTMCell(4, 4), initial_state=0.5)))
    loaded = _round_trip(model, tmp_path)
    _assert_same(model, loaded, _ids(7))
    assert loaded.out.weight is loaded.embed.weight  # still one parameter
    stored = safetensors.torch.load_file(tmp_path / "saved" / "model.safetensors")
    header = json.loads((tmp_path / "saved" / "model.json").read_text())
    assert "out.weight" not in stored and header["weights"]["tied"] == {
        "out.weight": "embed.weight"
    }


class Unregistered(nn.Module):
    def forward(self, x):
        return x


def test_unknown_module_type_is_refused_with_its_path(tmp_path):
    model = Recurrence(GRUCell(3, 4)) >> Unregistered()
    with pytest.raises(TypeError, match=r"model\.layers\.1: .*test_saving\.Unregistered.*"):
        save(model, tmp_path / "saved")
    with pytest.raises(TypeError, match="register_module"):
        save(model, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_unknown_function_is_refused_at_save_time(tmp_path):
    model = Fold(GRUCell(3, 4)) >> Dense(4, 2, activation=lambda x: 2 * x)
    with pytest.raises(
        TypeError, match=r"model\.layers\.1: Dense\.activation: cannot save the function .*tanh"
    ):
        save(model, tmp_path / "saved")


class Head(nn.Module):
    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.size = size
        self.linear = nn.Linear(3, size)


def test_incomplete_to_config_fails_at_save_time(tmp_path):
    register_module(Head, lambda m: {}, name="tests.Head")  # forgets `size`
    with pytest.raises(
        ValueError, match=r"does not rebuild .*linear\.weight: \(5, 3\) vs \(2, 3\)"
    ):
        save(Head(5), tmp_path / "saved")
    register_module(Head, lambda m: {"size": m.size}, name="tests.Head")
    loaded = _round_trip(_randomize(Head(5)), tmp_path)
    assert loaded.size == 5


# ---------------------------------------------------------------------------- refusals, errors


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".bin"])
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"weight": [1.0]}))
    with pytest.raises(ValueError, match="pickle") as error:
        load(path)
    message = str(error.value)
    assert "arbitrary code" in message and "weights_only=True" in message
    assert "rnnkit.save(model, directory)" in message
    only_pickles = tmp_path / "checkpoint"
    only_pickles.mkdir()
    (only_pickles / f"pytorch_model{suffix}").write_bytes(b"not read")
    with pytest.raises(ValueError, match=f"pytorch_model\\{suffix}: refusing to load a pickle"):
        load(only_pickles)


def test_load_never_unpickles(tmp_path, monkeypatch):
    model = _randomize(Fold(LSTMCell(3, 4), initial_state=(torch.ones(4), torch.zeros(4))))
    save(model, tmp_path / "saved")

    def forbidden(*args, **kwargs):
        raise AssertionError("rnnkit.load called an unpickler")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    _assert_same(model, load(tmp_path / "saved"), _batch(3))


@pytest.fixture
def saved(tmp_path) -> Path:
    save(_randomize(Recurrence(GRUCell(3, 4)) >> Dense(4, 2)), tmp_path / "saved")
    return tmp_path / "saved"


def test_missing_files_are_named(tmp_path, saved):
    (saved / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing model\.json"):
        load(saved)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_corrupted_json_names_file_and_position(saved):
    (saved / "model.json").write_text('{"format": "rnnkit.model",\n  "model": [}')
    with pytest.raises(ValueError, match=r"model\.json:2:13: not valid JSON"):
        load(saved)


def test_unregistered_type_in_json_is_named(saved):
    header = json.loads((saved / "model.json").read_text())
    header["model"]["config"]["layers"][1]["$module"] = "os.system"
    (saved / "model.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=r"model\.layers\.1 is a module of type 'os\.system'"):
        load(saved)


def test_newer_format_version_is_refused(saved):
    header = json.loads((saved / "model.json").read_text())
    header["format_version"] = 99
    (saved / "model.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="format_version 99"):
        load(saved)


def test_missing_and_unexpected_weights_are_named(saved):
    weights = safetensors.torch.load_file(saved / "model.safetensors")
    weights["extra.bias"] = weights.pop("layers.1.linear.bias")
    safetensors.torch.save_file(weights, saved / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"model\.safetensors: .*missing keys \['layers\.1\.linear\.bias'\], "
        r"unexpected keys \['extra\.bias'\]",
    ):
        load(saved)


def test_mismatched_shape_is_named(saved):
    weights = safetensors.torch.load_file(saved / "model.safetensors")
    weights["layers.0.cell.weight_hh"] = torch.zeros(12, 5)
    safetensors.torch.save_file(weights, saved / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"'layers\.0\.cell\.weight_hh' has shape \[12, 5\] .* expects \[12, 4\]"
    ):
        load(saved)


def test_corrupted_weights_file_is_named(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        load(saved)


# ---------------------------------------------------------------------------- ONNX


def _onnx_outputs(path: Path, name: str, batch: SequenceBatch) -> np.ndarray:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    padded, lengths = batch.to_padded()
    return session.run(None, {name: padded.numpy(), "lengths": lengths.numpy()})[0]


EXAMPLE_LENGTHS = [2, 4, 3]  # B=3, T=4; the checked batch has B=6, T=9
CHECK_LENGTHS = [5, 1, 9, 3, 9, 2]


@pytest.mark.parametrize("fold", [False, True], ids=["recurrence", "fold"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnx_matches_model_on_other_batch_and_length(tmp_path, cell, go_backwards, fold):
    make = {
        "lstm": lambda: LSTMCell(3, 5),
        "gru": lambda: GRUCell(3, 5),
        "rnn": lambda: RNNCell(3, 5, bias=False, nonlinearity="relu"),
    }[cell]
    initial = {"lstm": 0.3, "gru": "learned", "rnn": torch.linspace(-0.5, 0.5, 5)}[cell]
    layer = (Fold if fold else Recurrence)(make(), go_backwards=go_backwards, initial_state=initial)
    model = _randomize(layer >> Dense(5, 2)).eval()
    export_onnx(model, tmp_path / "model.onnx", _batch(3, EXAMPLE_LENGTHS))
    check = _batch(3, CHECK_LENGTHS, seed=8)
    with torch.no_grad():
        expected = _outputs(model(check)).numpy()
    found = _onnx_outputs(tmp_path / "model.onnx", "x", check)
    assert found.shape == ((6, 2) if fold else (6, 9, 2))
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_onnx_token_ids_bidirectional_then_fold(tmp_path):
    model = _randomize(
        Embedding(13, 4)
        >> Bidirectional(LSTMCell(4, 3), GRUCell(4, 3))
        >> Dropout(0.5)
        >> Activation(torch.tanh)
        >> Fold(LSTMCell(6, 3), go_backwards=True, initial_state=(torch.ones(3), -torch.ones(3)))
        >> Dense(3, 2, activation=torch.sigmoid)
    )
    model.eval()
    export_onnx(model, tmp_path / "model.onnx", _ids(13, EXAMPLE_LENGTHS))
    assert not any(m.training for m in model.modules())  # export leaves the modes as found
    check = _ids(13, CHECK_LENGTHS, seed=9)
    with torch.no_grad():
        expected = model(check).numpy()
    found = _onnx_outputs(tmp_path / "model.onnx", "ids", check)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            Fold(LSTMCell(3, 4)) >> Recurrence(GRUCell(4, 4)),
            r"model\.layers\.1: a Recurrence after",
        ),
        (RecurrenceFrom(GRUCell(3, 4)), r"does not support .*RecurrenceFrom"),
        (Recurrence(GRUCell(3, 4), initial_state=torch.ones(5, 4)), r"initial_state\[0\]"),
    ],
)
def test_onnx_refuses_unsupported_models(tmp_path, model, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / "model.onnx", _batch(3, EXAMPLE_LENGTHS))
