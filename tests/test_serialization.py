"""rnnkit.serialization: the JSON and safetensors files under rnnkit.save and the checkpoints.

Oracles: the directory listing and the bytes on disk after a write that fails at each stage (the
old file must be intact and no temporary file left), ``json`` and ``safetensors.torch`` reading
back what was written, and the documented error messages for damaged files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch

from rnnkit import Dense, load, save
from rnnkit.serialization import (
    read_json,
    read_safetensors,
    replacing,
    to_json,
    write_json,
    write_safetensors,
)
from rnnkit.training import Checkpoint, load_state


def _crash(src: object, dst: object) -> None:
    raise OSError("simulated crash before the rename")


def test_replacing_renames_over_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")
    with replacing(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".f.txt.") and tmp.suffix == ".tmp"
        tmp.write_text("new")
        assert path.read_text() == "old"  # not replaced before the block ends
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_replacing_leaves_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="half written"), replacing(path) as tmp:
        tmp.write_text("ne")
        raise RuntimeError("half written")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_replacing_leaves_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.json"
    write_json(path, {"a": 1})
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_json(path, {"a": 2})
    monkeypatch.undo()
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_json_is_strict_utf8_with_one_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_json(path, {"name": "Zürich", "x": [1, 2.5]}, indent=None)
    assert path.read_bytes() == b'{"name": "Z\\u00fcrich", "x": [1, 2.5]}\n'
    assert read_json(path) == {"name": "Zürich", "x": [1, 2.5]}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
    with pytest.raises(ValueError):
        to_json(float("inf"))


def test_read_json_locates_syntax_errors_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(ValueError, match=r"bad\.json:3:3: not valid JSON"):
        read_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=r"bad\.json: not UTF-8 text"):
        read_json(path)


def test_safetensors_round_trip_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False])}
    write_safetensors(path, tensors, {"format": "pt", "note": "x"})
    back, metadata = read_safetensors(path)
    assert metadata == {"format": "pt", "note": "x"}
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert all(torch.equal(v, back[k]) for k, v in safetensors.torch.load_file(path).items())
    write_safetensors(path, {"c": torch.zeros(1)})
    assert read_safetensors(path)[1] == {}


def test_read_safetensors_refuses_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_safetensors(tmp_path / "absent.safetensors")
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"a": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"t\.safetensors: not a readable safetensors file"):
        read_safetensors(path)


def test_a_failed_save_leaves_the_previous_model_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    first = Dense(3, 2)
    save(first, tmp_path / "model")
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "model").iterdir())
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError, match="simulated crash"):
        save(Dense(3, 2), tmp_path / "model")
    monkeypatch.undo()
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "model").iterdir()) == before
    again = load(tmp_path / "model")
    assert torch.equal(again.weight, first.weight)


def test_checkpoints_and_models_share_the_writer(tmp_path: Path) -> None:
    """Both formats are safetensors files that the shared reader opens."""
    save(Dense(2, 1), tmp_path / "model")
    _, model_metadata = read_safetensors(tmp_path / "model" / "model.safetensors")
    assert model_metadata == {"format": "pt"}
    path = Checkpoint(tmp_path / "ckpt").save({"step": 1, "w": torch.ones(2)}, 1)
    tensors, metadata = read_safetensors(path)
    assert metadata["format"] == "rnnkit.checkpoint" and torch.equal(tensors["w"], torch.ones(2))
    assert load_state(path)["step"] == 1
