"""bench/gpu.sh stays runnable: its --dry-run runs every step on the CPU at tiny sizes, and
MinibatchSource's pin_memory option is checked on the CPU with the pinning observed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import Tensor

from rnnkit import MinibatchSource, SequenceBatch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_dry_run(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = json.loads((tmp_path / "gpu-checks.json").read_text())["checks"]
    names = {row["check"] for row in checks}
    assert {"bf16/lstm (fused)", "bf16/gru-d (loop)", "pinned/MinibatchSource"} <= names
    for row in checks:  # each check compares against its float32 or per-node oracle
        assert row["ok"], row
        if "output_max_abs_err" in row:
            assert row["output_max_abs_err"] <= 0.05 and row["grad_max_rel_err"] <= 0.05, row
    bench = json.loads((tmp_path / "gpu-run.json").read_text())
    assert [r["name"] for r in bench["results"]] == ["lstm/tiny/forward", "gru/tiny/forward"]
    section = (tmp_path / "README-gpu.md").read_text()
    assert section.startswith("## GPU checks") and "bf16/lstm (fused)" in section
    tests = (tmp_path / "gpu-tests.txt").read_text()  # skipped on a CPU, run on a GPU
    assert re.search(r"\d+ (passed|skipped)", tests) and "failed" not in tests, tests


def _examples() -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"x": torch.randn(n, 3, generator=g), "y": torch.tensor([[float(n)]])} for n in (3, 1, 4)
    ]


def test_pin_memory_needs_an_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    with pytest.raises(ValueError, match="pin_memory: expected a machine with an accelerator"):
        MinibatchSource(_examples(), 4, pin_memory=True)


def test_pin_memory_pins_every_tensor_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned: list[Tensor] = []

    def fake_pin(self: Tensor) -> Tensor:  # what Tensor.pin_memory does, observed
        copy = self.clone()
        pinned.append(copy)
        return copy

    plain = list(MinibatchSource(_examples(), 4, randomize=False, max_sweeps=1))
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    got = list(MinibatchSource(_examples(), 4, randomize=False, max_sweeps=1, pin_memory=True))
    assert len(got) == len(plain) == 2
    for a, b in zip(got, plain, strict=True):
        assert isinstance(a["x"], SequenceBatch)
        assert any(a["x"].data is p for p in pinned) and any(a["y"] is p for p in pinned)
        for x, y in zip(a["x"].to_list(), b["x"].to_list(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        torch.testing.assert_close(a["y"], b["y"], rtol=0, atol=0)


def test_every_cuda_case_of_gpu_sh_names_a_bench_case() -> None:
    """The CUDA run's --cases (a list in gpu.sh that no CPU run exercises) each select at
    least one case of bench/run.py, the modern recurrences' cases included, so a renamed case
    cannot silently drop out of the GPU run."""
    import importlib.util
    import sys

    script = (ROOT / "bench" / "gpu.sh").read_text()
    block = re.search(r"DEVICE=cuda\n.*?CASES=\((.*?)\)", script, re.S)
    assert block is not None
    wanted = block.group(1).split()
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = run
    try:
        spec.loader.exec_module(run)
        names = [c.name for c in run.all_cases() + run.modern_recurrence_cases()]
    finally:
        del sys.modules["bench_run"]
    assert any(w.startswith("modern/") for w in wanted)
    for w in wanted:
        assert any(w in n for n in names), f"gpu.sh's case {w!r} selects nothing"
