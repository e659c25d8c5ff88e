"""Two processes under torchrun (gloo, CPU) take the same steps as one process."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import REPO, TRAINING_SCRIPT
from safetensors.torch import load_file
from training_script import run

from rnnkit.training import load_state

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def steps(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_two_processes_follow_the_loss_curve_of_one(tmp_path: Path) -> None:
    """Each rank trains on 4 sequences per step; one process on the same 8 at once."""
    two, one = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    args = ["--dropout", "0", "--float64", "--epochs", "2", "--every", "5"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(TRAINING_SCRIPT),
        str(two),
        "--minibatch",
        "4",
        *args,
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-4000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one.mkdir()
        single = run(one, every=5, minibatch=8, dropout=0.0, dtype=torch.float64, epochs=2)
    finally:
        torch.set_num_threads(threads)

    rows_two, rows_one = steps(two / "steps.csv"), steps(one / "steps.csv")
    assert len(rows_two) == len(rows_one) == 12  # rank 0 alone wrote the log: one header
    for a, b in zip(rows_two, rows_one, strict=True):
        assert (a["step"], a["epoch"], a["samples"]) == (b["step"], b["epoch"], b["samples"])
        assert a["samples"] == "8"  # counted over both processes
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-6)
        assert float(a["grad_norm"]) == pytest.approx(float(b["grad_norm"]), abs=1e-6)
    final = load_file(two / "final.safetensors")
    assert final.keys() == single.model.state_dict().keys()  # no DDP "module." prefix
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=1e-9, msg=name)
    # Rank 0's checkpoints record the partitioned source (world size 2) at the end.
    saved = load_state(two / "checkpoints" / "checkpoint-000000012.safetensors")
    assert (saved["source"]["world_size"], saved["trainer"]["step"]) == (2, 12)
