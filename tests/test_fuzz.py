"""The fuzz harness's short run: every reader, the model files and the checkpoints, mutated
real files in worker processes with time and memory limits (bench/fuzz.py; the long run and
its counts are in bench/README.md), plus a property test of the three CTF scanners."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data import CTFReader, ReaderError, Stream

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def test_short_fuzz_run_finds_nothing(tmp_path):
    out = tmp_path / "fuzz.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fuzz.py"),
            "--inputs",
            "150",
            "--seed",
            "7",
            "--budget",
            "45",
            "--time-limit",
            "10",
            "--json",
            str(out),
            "--failures",
            str(tmp_path / "failures"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.is_file(), result.stderr[-3000:]
    summary = json.loads(out.read_text())["targets"]
    failures = {
        name: {k: v for k, v in counts.items() if k in _FAILURES and v}
        for name, counts in summary.items()
    }
    assert not any(failures.values()), (failures, result.stderr[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    # every target ran; each reader both read and refused mutated inputs (a mutated model
    # file is nearly always refused, its checksum or its JSON broken)
    for name, counts in summary.items():
        assert counts["inputs"] >= 20, (name, counts)
        assert counts.get("ok", 0) + counts.get("refused", 0) == counts["inputs"], (name, counts)
        assert counts.get("refused", 0) >= 1, (name, counts)
        assert name == "model" or counts.get("ok", 0) >= 1, (name, counts)


_FAILURES = ("unexpected", "silent", "unnamed", "disagree", "hang", "crash", "memory")

_SOLAR_LINES = (DATA / "cntk-book" / "solar_train.ctf").read_bytes().splitlines(keepends=True)[:40]
_PIECES = [
    b" ",
    b"\t",
    b"|",
    b"\n",
    b"\r\n",
    b"0",
    b"1",
    b"-",
    b".",
    b"e",
    b"x",
    b":",
    b"#",
    b"\xff",
]


def _outcome(path: Path, scanner: str, block: int | None, skip_bad: bool) -> str:
    streams = {"features": Stream("features", 1), "target": Stream("target", 1)}
    reader = CTFReader(path, streams, skip_bad=skip_bad, scanner=scanner, block_bytes=block)
    try:
        examples = list(reader)
    except ReaderError as e:
        return f"error {e}"
    shown = [{k: v.tolist() for k, v in ex.items()} for ex in examples]
    dtypes = {str(v.dtype) for ex in examples for v in ex.values()}
    assert dtypes <= {str(torch.float32)}
    return f"ok {shown!r} {[str(e) for e in reader.errors]}"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.sampled_from(_SOLAR_LINES), min_size=1, max_size=12),
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(_PIECES), st.booleans()), max_size=4
    ),
    block=st.sampled_from([None, 1, 5, 64]),
    skip_bad=st.booleans(),
)
def test_ctf_scanners_agree_on_edited_real_lines(tmp_path, lines, edits, block, skip_bad):
    """The C scanner, the Python fast path and the plain path read every input alike
    (examples bit for bit, or the same error at the same place), at any block size."""
    data = b"".join(lines)
    for at, piece, replace in edits:
        i = at % (len(data) + 1)
        data = data[:i] + piece + data[i + 1 if replace else i :]
    path = tmp_path / "edited.ctf"
    path.write_bytes(data)
    outcomes = {s: _outcome(path, s, block, skip_bad) for s in ("c", "python", "plain")}
    assert len(set(outcomes.values())) == 1, outcomes


def test_fuzz_harness_reproduces_one_input():
    """``--only TARGET:N`` replays input N of a run: the harness is a pure function of its seed."""
    command = [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--only", "text:3", "--seed", "7"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout
    assert json.loads(first.stdout) in ({"ok": 1}, {"refused": 1})


@pytest.mark.parametrize("mutator", ["flip", "truncate", "nesting", "not_utf8", "number"])
def test_mutators_change_their_input_deterministically(mutator):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fuzz
    finally:
        sys.path.remove(str(ROOT / "bench"))
    import random

    data = (DATA / "cntk-book" / "iris_train.ctf").read_bytes()[:2000]
    a = fuzz.MUTATORS[mutator](random.Random(5), data, data)
    b = fuzz.MUTATORS[mutator](random.Random(5), data, data)
    assert a == b
    assert a != data or mutator == "truncate"
