"""A run killed with SIGKILL four times, twice in the middle of a checkpoint write, and resumed
from its newest checkpoint each time, ends with the uninterrupted run's weights, bit for bit.

Oracle: an uninterrupted run of the same script (``tests/kill_resume_script.py``, which trains
``tests/training_script.py``'s model: dropout, Adam, StepLR, clipping, a shuffled source) in
another process; its final weights (``torch.equal``) and its per-step log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import REPO
from safetensors.torch import load_file

from rnnkit.training import Checkpoint

SCRIPT = REPO / "tests" / "kill_resume_script.py"


def start(out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), "--every", "2", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen[bytes]) -> None:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output.decode()


def kill_when_paused(out: Path, *args: str) -> None:
    """Run until the script writes ``OUT/paused``, then SIGKILL it."""
    marker = out / "paused"
    marker.unlink(missing_ok=True)
    proc = start(out, *args)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, f"the run {args} never paused"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def listing(out: Path) -> tuple[list[str], list[str]]:
    """The step numbers of the checkpoints, and the temporary files, in ``out/checkpoints``."""
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    steps = [n[11:20] for n in names if not n.startswith(".")]
    return steps, [n for n in names if n.startswith(".")]


def test_a_run_killed_four_times_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start(whole)
    # 48 sequences in minibatches of 8: 6 steps an epoch, 3 epochs, checkpoints every 2 steps
    # and at epoch ends (6, 12, 18), the newest two kept.
    kill_when_paused(killed, "--pause-after", "5")  # mid-epoch, between two checkpoints
    assert listing(killed) == (["000000002", "000000004"], [])
    kill_when_paused(killed, "--resume", "--pause-in-write", "8")  # written, not yet renamed
    steps, temporary = listing(killed)
    assert steps == ["000000004", "000000006"]
    assert len(temporary) == 1 and temporary[0].startswith(".checkpoint-000000008.safetensors.")
    # An epoch-end checkpoint; the start removed the previous run's temporary file.
    kill_when_paused(killed, "--resume", "--pause-in-write", "12")
    steps, temporary = listing(killed)
    assert steps == ["000000008", "000000010"]
    assert len(temporary) == 1 and temporary[0].startswith(".checkpoint-000000012.safetensors.")
    kill_when_paused(killed, "--resume", "--pause-after", "15")
    assert listing(killed) == (["000000012", "000000014"], [])
    assert not (killed / "final.safetensors").exists()
    finish(start(killed, "--resume"))
    finish(uninterrupted)
    assert listing(killed) == (["000000016", "000000018"], [])
    a, b = load_file(whole / "final.safetensors"), load_file(killed / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Each resumed run cut the step log back to its checkpoint: the same 18 rows in the end.
    assert (whole / "steps.csv").read_text() == (killed / "steps.csv").read_text()
    latest = Checkpoint(killed / "checkpoints").latest()
    assert latest is not None and latest.name == "checkpoint-000000018.safetensors"
