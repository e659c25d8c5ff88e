"""Damaged, tampered and half-written model files and checkpoints (issue #17's reproducers).

Oracles: the tensors and outputs of the files as written (a load either gives exactly those or
refuses, naming the file), the directory listing after a write that fails, and the recorded
sha256 recomputed independently with hashlib over the bytes on disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import Tensor

import rnnkit
from rnnkit import Dense, Fold, LSTMCell, SequenceBatch, Sequential
from rnnkit.data.minibatch import MinibatchSource
from rnnkit.saving import PickleFileWarning
from rnnkit.serialization import CorruptFileError, FileWriteError, read_json
from rnnkit.training import Checkpoint, Criterion, Trainer, load_state, save_state, squared_error
from rnnkit.training.checkpoint import _payload_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(seed: int = 0) -> Sequential:
    torch.manual_seed(seed)
    return Sequential([Fold(LSTMCell(3, 4)), Dense(4, 2)])


def batch() -> SequenceBatch:
    g = torch.Generator().manual_seed(5)
    return SequenceBatch.from_list([torch.randn(n, 3, generator=g) for n in (4, 1, 3)])


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    rnnkit.save(small_model(), tmp_path / "model")
    return tmp_path / "model"


def header_length(data: bytes) -> int:
    """Bytes before a safetensors file's tensor data: 8 (the header size) plus the header."""
    return 8 + struct.unpack("<Q", data[:8])[0]


def edit_json(path: Path, change: Any) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


# ---------------------------------------------------------------------------- model files


def test_model_json_records_the_sha256_of_the_weights(saved: Path) -> None:
    recorded = json.loads((saved / "model.json").read_text())["weights"]["sha256"]
    assert recorded == hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()


def test_a_bit_flip_in_the_weights_is_refused_naming_the_file(saved: Path) -> None:
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[header_length(data) + 5] ^= 0x10  # in a float of the tensor data: still readable
    path.write_bytes(bytes(data))
    assert len(safetensors.torch.load_file(path)) == 6  # safetensors itself reads it
    with pytest.raises(CorruptFileError, match=r"model\.safetensors: the file has changed"):
        rnnkit.load(saved)


def test_a_model_saved_without_a_recorded_sha256_still_loads(saved: Path) -> None:
    edit_json(saved / "model.json", lambda h: h["weights"].pop("sha256"))
    model = small_model()
    assert torch.equal(rnnkit.load(saved)(batch()), model.eval()(batch()))


@pytest.mark.parametrize(
    "reference",
    ["../../evil.pt", "../model.safetensors", "/etc/passwd", "sub/../../x.safetensors"],
)
def test_a_weights_reference_outside_the_directory_is_refused(saved: Path, reference: str) -> None:
    edit_json(saved / "model.json", lambda h: h["weights"].update(file=reference))
    with pytest.raises(CorruptFileError, match="model.json: refusing the file reference") as error:
        rnnkit.load(saved)
    assert repr(reference) in str(error.value)


def test_a_weights_reference_too_long_for_the_file_system_is_refused(saved: Path) -> None:
    """The long fuzz run's finding: a name of thousands of characters raised OSError."""
    edit_json(saved / "model.json", lambda h: h["weights"].update(file="w" * 5000))
    with pytest.raises(CorruptFileError, match=r"model\.json: the file reference 'w+'\.\.\. "):
        rnnkit.load(saved)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_a_cell_size_that_cannot_be_built_is_refused_naming_model_json(
    saved: Path, size: Any
) -> None:
    """The long fuzz run's finding: a hidden size of 0 raised ZeroDivisionError."""
    edit_json(
        saved / "model.json",
        lambda h: h["model"]["config"]["layers"][0]["config"]["cell"]["config"].update(
            hidden_size=size
        ),
    )
    with pytest.raises(CorruptFileError, match=r"model\.json: .*hidden_size: expected a positive"):
        rnnkit.load(saved)


def test_a_symbolic_link_leaving_the_directory_is_refused(saved: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(saved / "model.safetensors", outside)
    (saved / "model.safetensors").symlink_to(outside)
    with pytest.raises(CorruptFileError, match="leads outside .* through a symbolic link"):
        rnnkit.load(saved)
    # A link that stays inside the directory is fine.
    (saved / "model.safetensors").unlink()
    shutil.move(outside, saved / "weights.bytes")
    (saved / "model.safetensors").symlink_to("weights.bytes")
    assert torch.equal(rnnkit.load(saved)(batch()), small_model().eval()(batch()))


def test_a_stray_pickle_beside_a_model_is_named_in_a_warning(saved: Path) -> None:
    (saved / "model.pt").write_bytes(pickle.dumps({"weight": [1.0]}))
    (saved / "extra.PKL").write_bytes(b"not read")
    with pytest.warns(PickleFileWarning, match=r"\['extra\.PKL', 'model\.pt'\]"):
        loaded = rnnkit.load(saved)
    assert torch.equal(loaded(batch()), small_model().eval()(batch()))


def test_unknown_keys_in_the_weights_object_are_refused(saved: Path) -> None:
    edit_json(saved / "model.json", lambda h: h["weights"].update(sha265="0" * 64))
    with pytest.raises(CorruptFileError, match=r"model\.json: 'weights' has the unknown keys"):
        rnnkit.load(saved)


def test_a_pickled_json_sidecar_names_the_file_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.json"
    path.write_bytes(pickle.dumps({"tokens": ["a", "b"]}))
    with pytest.raises(CorruptFileError, match="vocabulary.json: not UTF-8 text") as error:
        read_json(path)
    assert "byte 0x80 at line 1, column 1, byte offset 0" in str(error.value)
    path.write_bytes(b'{"tokens":\n ["a", "\xff"]}')
    with pytest.raises(CorruptFileError, match="line 2, column 9, byte offset 19"):
        read_json(path)
    path.write_text('{"tokens": [NaN]}')
    with pytest.raises(CorruptFileError, match=r"vocabulary\.json: not valid JSON \(NaN"):
        read_json(path)
    path.write_text("[" * 100_000)
    with pytest.raises(CorruptFileError, match=r"vocabulary\.json: .*"):
        read_json(path)


# ---------------------------------------------------------------------------- checkpoints


def write_checkpoint(path: Path, structure: Any, tensors: dict[str, Tensor]) -> Path:
    """A checkpoint file with any structure, its sha256 recorded right (a crafted file)."""
    text = structure if isinstance(structure, str) else json.dumps(structure)
    metadata = {
        "format": "rnnkit.checkpoint",
        "version": "2",
        "rnnkit.state": text,
        "rnnkit.sha256": _payload_sha256(text, tensors),
    }
    safetensors.torch.save_file(tensors, str(path), metadata)
    return path


def test_the_checkpoint_sha256_covers_the_structure_and_every_tensor(tmp_path: Path) -> None:
    state = {"step": 3, "w": torch.arange(4.0)}
    path = save_state(tmp_path / "c.safetensors", state)
    data = bytearray(path.read_bytes())
    data[header_length(data) + 6] ^= 0x01  # a tensor byte
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"c\.safetensors: the checkpoint's data has"):
        load_state(path)
    save_state(path, state)
    data = bytearray(path.read_bytes())
    at = data.index(b'\\"step\\": 3')  # the JSON structure, escaped inside the header
    data[at + 10] = ord("7")  # step 3 -> step 7, the header still valid JSON
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="the checkpoint's data has changed"):
        load_state(path)


def test_a_checkpoint_written_before_the_sha256_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.safetensors"
    structure = json.dumps({"step": 3, "w": {"__tensor__": "w"}})
    metadata = {"format": "rnnkit.checkpoint", "version": "1", "rnnkit.state": structure}
    safetensors.torch.save_file({"w": torch.ones(2)}, str(path), metadata)
    state = load_state(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ('{"step": 3,', r"metadata 'rnnkit.state', line 1, column 12: not valid JSON"),
        ({"w": {"__tensor__": "nowhere"}}, r"'w': refers to the tensor 'nowhere'"),
        ({"w": {"__tensor__": ["a"]}}, r"'w': refers to the tensor \['a'\]"),
        ({"x": {"__float__": "1e999999"}}, r"'x': expected one of \['nan', 'inf', '-inf'\]"),
        ({"x": {"__float__": 10**400}}, r"'x': expected one of"),
        ({"a": {"__ndarray__": [1000], "dtype": "int8"}}, r"'a': cannot make a int8 array"),
        ({"a": {"__ndarray__": [1], "dtype": "object"}}, r"'a': expected a numeric NumPy"),
        ({"a": {"__ndarray__": [1], "dtype": "no such"}}, r"'a': expected a numeric NumPy"),
        ({"a": {"__ndarray__": [[1], [1, 2]], "dtype": "int64"}}, r"cannot make a int64"),
        ({"t": {"__tuple__": 5}}, r"'t': expected a list of tuple items"),
        ({"d": {"__items__": [[["list"], 1]]}}, r"'d': expected a string, number or None"),
        ({"d": {"__items__": [[1, 2, 3]]}}, r"'d': expected a \[key, value\] pair"),
        ([1, 2], r"the stored state is not a dictionary but a list"),
    ],
)
def test_a_bad_checkpoint_structure_is_named(tmp_path: Path, structure: Any, message: str) -> None:
    path = write_checkpoint(tmp_path / "bad.safetensors", structure, {"w": torch.ones(1)})
    with pytest.raises(CorruptFileError, match=r"bad\.safetensors: .*" + message):
        load_state(path)


def trainer(model: torch.nn.Module | None = None, **options: Any) -> Trainer:
    model = model if model is not None else small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return Trainer(model, Criterion(squared_error), optimizer, **options)


def examples() -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        {"features": torch.randn(n, 3, generator=g), "labels": torch.randn(1, 2, generator=g)}
        for n in (2, 3, 4, 5, 2, 3)
    ]


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A trainer checkpoint after one epoch (3 steps)."""
    ckpt = Checkpoint(tmp_path / "ckpt")
    trainer(checkpoint=ckpt).fit(MinibatchSource(examples(), 2, unit="sequences"), epochs=1)
    path = ckpt.latest()
    assert path is not None
    return path


def rewrite(path: Path, change: Any) -> None:
    """Change the decoded structure of a trainer checkpoint and write it back, hash and all."""
    tensors, metadata = safetensors.torch.load_file(str(path)), None
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    structure = json.loads(metadata["rnnkit.state"])
    change(structure, tensors)
    write_checkpoint(path, structure, tensors)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s, t: s["trainer"].update(epoch_medric=s["trainer"].pop("epoch_metric")),
            r"unknown keys \['epoch_medric'\], missing keys \['epoch_metric'\]",
        ),
        (lambda s, t: s["trainer"].update(step=-2), r"counter 'step': expected int, found -2"),
        (lambda s, t: s["trainer"].update(step=2.5), r"counter 'step': expected int"),
        (lambda s, t: s.pop("optimizer"), r"missing the parts \['optimizer'\]"),
        (
            lambda s, t: t.update({"model/layers.1.linear.bias": torch.zeros(7)}),
            r"shapes differing \['layers\.1\.linear\.bias: \[7\] in the file, \[2\]",
        ),
        (
            lambda s, t: s["model"].update(extra={"__tensor__": "model/layers.1.linear.bias"}),
            r"unexpected keys \['extra'\]",
        ),
        (
            lambda s, t: s["model"].pop("layers.1.linear.weight"),
            r"missing keys \['layers\.1\.linear\.weight'\]",
        ),
        (lambda s, t: s["rng"].update(python=[1, 2]), r"'rng/python' does not fit a python"),
        (
            lambda s, t: t.update({"rng/torch": torch.zeros(3, dtype=torch.uint8)}),
            r"'rng/torch' does not fit a torch random generator: RuntimeError",
        ),
        (
            lambda s, t: s["optimizer"]["param_groups"].append({"params": [99]}),
            r"'optimizer' does not fit this trainer's optimizer: ValueError",
        ),
    ],
)
def test_a_bad_trainer_checkpoint_is_named(trained: Path, change: Any, message: str) -> None:
    rewrite(trained, change)
    fresh = trainer()
    with pytest.raises(CorruptFileError, match=str(trained.name) + ".*" + message):
        fresh.restore(trained)


def test_a_source_position_that_does_not_fit_names_the_checkpoint(trained: Path) -> None:
    fresh = trainer()
    fresh.restore(trained)
    other = MinibatchSource(examples(), 3, unit="sequences")  # another minibatch size
    with pytest.raises(CorruptFileError, match=f"{trained.name}: the state 'source'"):
        fresh.fit(other, epochs=2)


def failing_save_file(error: int, rust: bool = False) -> Any:
    """safetensors' writer that writes half the file, then fails as a full disk does: with an
    OSError, or (``rust``) with the SafetensorError that safetensors raises for one."""
    real = safetensors.torch.save_file

    def save_file(tensors: Any, filename: Any, metadata: Any = None) -> None:
        real(tensors, filename, metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        if rust:
            raise safetensors.SafetensorError(
                f"Error while serializing: I/O error: {os.strerror(error)} (os error {error})"
            )
        raise OSError(error, os.strerror(error))

    return save_file


@pytest.mark.parametrize(
    ("code", "rust"),
    [(errno.ENOSPC, False), (errno.ENOSPC, True), (errno.EFBIG, False), (errno.EIO, True)],
)
def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, rust: bool
) -> None:
    ckpt = Checkpoint(tmp_path, keep=None)
    first = ckpt.save({"step": 4, "w": torch.ones(3)}, 4)
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file(code, rust))
    with pytest.raises(FileWriteError) as raised:
        ckpt.save({"step": 8, "w": torch.zeros(3)}, 8)
    monkeypatch.undo()
    error = raised.value
    assert isinstance(error, OSError) and error.errno == code
    assert error.filename == str(ckpt.path_for(8))
    assert str(error) == (
        f"{ckpt.path_for(8)}: could not be written ([Errno {code}] {os.strerror(code)}); the "
        f"previous checkpoint, {first}, is intact, and the partial temporary file is removed"
    )
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    state = load_state(first)
    assert state["step"] == 4 and torch.equal(state["w"], torch.ones(3))


def test_a_full_disk_during_a_model_save_keeps_the_saved_model(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted((p.name, p.read_bytes()) for p in saved.iterdir())
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file(errno.ENOSPC))
    with pytest.raises(FileWriteError, match=r"model\.safetensors: could not be written"):
        rnnkit.save(small_model(seed=1), saved)
    monkeypatch.undo()
    assert sorted((p.name, p.read_bytes()) for p in saved.iterdir()) == before


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """A real RLIMIT_FSIZE: writes beyond ``size`` bytes fail with EFBIG (SIGXFSZ ignored)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_real_file_size_limit_names_the_checkpoint(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep=None)
    first = ckpt.save({"step": 1, "w": torch.ones(3)}, 1)
    with pytest.raises(FileWriteError) as raised, file_size_limit(4096):
        ckpt.save({"step": 2, "w": torch.zeros(100_000)}, 2)
    assert raised.value.errno == errno.EFBIG
    assert f"previous checkpoint, {first}, is intact" in str(raised.value)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_stale_temporary_files_go_at_the_next_write_and_the_next_fit(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "ckpt", keep=None)
    ckpt.save({"step": 1}, 1)
    stale = [
        tmp_path / "ckpt" / ".checkpoint-000000004.safetensors.k3j_9xq1.tmp",
        tmp_path / "ckpt" / ".checkpoint-000000008.safetensors.abcdefgh.tmp",
    ]
    others = [tmp_path / "ckpt" / ".notes.txt.abcdefgh.tmp", tmp_path / "ckpt" / "notes.txt"]
    for path in stale + others:
        path.write_bytes(b"torn")
    ckpt.save({"step": 2}, 2)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == sorted(
        [p.name for p in others]
        + ["checkpoint-000000001.safetensors"]
        + ["checkpoint-000000002.safetensors"]
    )
    stale[0].write_bytes(b"torn")
    fit_run = trainer(checkpoint=Checkpoint(tmp_path / "ckpt", keep=None))
    with pytest.raises(ValueError, match="fit: expected epochs"):  # fails after the clean-up
        fit_run.fit(MinibatchSource(examples(), 2, unit="sequences"))
    assert stale[0].exists()  # the argument check comes first: nothing was started
    fit_run.fit(MinibatchSource(examples(), 2, unit="sequences"), max_samples=2)
    assert not stale[0].exists() and all(p.exists() for p in others)


def test_a_save_removes_the_temporaries_of_a_killed_save(saved: Path) -> None:
    (saved / ".model.safetensors.xyz12345.tmp").write_bytes(b"torn")
    (saved / ".model.json.xyz12345.tmp").write_bytes(b"torn")
    rnnkit.save(small_model(), saved)
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "model.safetensors"]


# ---------------------------------------------------------------------------- mutation loops


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random byte changes: a flipped bit, a random byte, or a dropped byte."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out))
        kind = rng.random()
        if kind < 0.5:
            out[at] ^= 1 << rng.randrange(8)
        elif kind < 0.9:
            out[at] = rng.randrange(256)
        else:
            del out[at]
    return bytes(out)


def refused_naming(error: BaseException, name: str) -> bool:
    return isinstance(error, (CorruptFileError, FileNotFoundError)) and name in str(error)


@pytest.mark.parametrize("name", ["model.safetensors", "model.json"])
def test_random_mutations_of_a_model_load_the_same_or_are_refused(
    saved: Path, tmp_path: Path, name: str
) -> None:
    reference = rnnkit.load(saved)
    want, x = reference.state_dict(), batch()
    y = reference(x)
    original = (saved / name).read_bytes()
    rng = random.Random(f"model {name}")
    loaded = refused = 0
    for _ in range(300):
        (saved / name).write_bytes(mutate(original, rng))
        try:
            model = rnnkit.load(saved)
        except Exception as error:
            assert refused_naming(error, name), f"{type(error).__name__}: {error}"
            refused += 1
            continue
        got = model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert torch.equal(model(x), y)
        loaded += 1
    assert refused > 200  # nearly every mutation is caught, not quietly read
    if name == "model.safetensors":
        assert loaded == 0  # each byte of the file is checked


def checkpoint_state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(2)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(4)},
        "step": 12,
        "lr": 0.25,
        "betas": (0.9, 0.999),
        "optimizer_state": {0: {"exp_avg": torch.randn(3, generator=g)}},
        "array": np.arange(4, dtype=np.uint32),
        "nan": float("nan"),
    }


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def test_random_mutations_of_a_checkpoint_load_the_same_or_are_refused(tmp_path: Path) -> None:
    path = save_state(tmp_path / "checkpoint-000000012.safetensors", checkpoint_state())
    assert same(load_state(path), checkpoint_state())
    original = path.read_bytes()
    rng = random.Random("checkpoint")
    for _ in range(300):
        path.write_bytes(mutate(original, rng))
        try:
            state = load_state(path)
        except Exception as error:
            assert refused_naming(error, path.name), f"{type(error).__name__}: {error}"
            continue
        assert same(state, checkpoint_state())
