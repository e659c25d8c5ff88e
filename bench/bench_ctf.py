"""Time `rnnkit.data.ctf.read_ctf` against `pandas.read_csv` (C parser) on the same numbers.

Generates about `--mb` MB of dense CTF sequences (ids, an 8-value stream on every line and a
2-value stream on each sequence's first line, numbers written with 6 significant digits) and a
CSV of the same numbers in a temporary folder, reads each `--repeat` times and reports the
median throughput in MB/s (1 MB = 10**6 bytes of the file read). With `--write`, the table goes
into the "CTF parsing" section of bench/README.md.

    .venv/bin/python bench/bench_ctf.py [--mb 50] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rnnkit.data import ctf
from rnnkit.data.ctf import Stream, read_ctf

STREAMS = {"x": Stream("x", 8), "y": Stream("y", 2)}
README = Path(__file__).resolve().parent / "README.md"
HEADING = "## CTF parsing"
NOTES = (
    "How: blocks of about 1 MiB are scanned by a small C extension (`rnnkit.data._ctfscan`, "
    "built by `pip install`), which converts numbers with Clinger's exact fast path (strtod "
    "otherwise) and hands any block it cannot vouch for (comments excepted) to the Python "
    "paths, which read it exactly and locate errors. The remaining time is Python's: one "
    "tensor view per stream and sequence (`torch.split`) and one dict per sequence, made with "
    "the cyclic garbage collector paused (it rescanned the growing list of tensors and cost "
    "about a third of the time). Without the extension (no C compiler at install time) the "
    "reader falls back to the Python fast path of the second row, about 190 ns a number to "
    "convert strings through `numpy.array(list_of_str, dtype=float64)`."
)


def generate(folder: Path, megabytes: float, seed: int = 0) -> tuple[Path, Path, int]:
    """Write the CTF and CSV files; returns their paths and the number of sequences."""
    rng = np.random.default_rng(seed)
    ctf_lines: list[str] = []
    csv_lines = ["id," + ",".join(f"x{i}" for i in range(8)) + ",y0,y1"]
    size = 0
    sequence = 0
    while size < megabytes * 1e6:
        steps = int(rng.integers(2, 21))
        x = [[f"{v:.6g}" for v in row] for row in rng.standard_normal((steps, 8))]
        y = [f"{v:.6g}" for v in rng.standard_normal(2)]
        for t in range(steps):
            label = f" |y {' '.join(y)}" if t == 0 else ""
            line = f"{sequence} |x {' '.join(x[t])}{label}"
            ctf_lines.append(line)
            csv_lines.append(f"{sequence},{','.join(x[t])},{','.join(y) if t == 0 else ','}")
            size += len(line) + 1
        sequence += 1
    ctf_path, csv_path = folder / "bench.ctf", folder / "bench.csv"
    ctf_path.write_text("\n".join(ctf_lines) + "\n")
    csv_path.write_text("\n".join(csv_lines) + "\n")
    return ctf_path, csv_path, sequence


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="size of the CTF file in MB")
    parser.add_argument("--repeat", type=int, default=3, help="timed reads of each file")
    parser.add_argument("--write", action="store_true", help="write the table to bench/README.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ctf_path, csv_path, sequences = generate(Path(tmp), args.mb)
        ctf_mb, csv_mb = ctf_path.stat().st_size / 1e6, csv_path.stat().st_size / 1e6
        examples = read_ctf(ctf_path, STREAMS)
        frame = pd.read_csv(csv_path)
        if len(examples) != sequences or len(frame) != sum(len(e["x"]) for e in examples):
            raise RuntimeError("the CTF and CSV files do not hold the same data")
        ctf_s = median_seconds(lambda: read_ctf(ctf_path, STREAMS), args.repeat)
        csv_s = median_seconds(lambda: pd.read_csv(csv_path), args.repeat)
        native, ctf._ctfscan = ctf._ctfscan, None  # what runs where the C scanner is not built
        try:
            python_s = median_seconds(lambda: read_ctf(ctf_path, STREAMS), 1)
        finally:
            ctf._ctfscan = native

    ctf_rate, csv_rate = ctf_mb / ctf_s, csv_mb / csv_s
    machine = (
        f"{cpu_model()}, {torch.get_num_threads()} torch threads, Python "
        f"{platform.python_version()}, torch {torch.__version__}, NumPy {np.__version__}, "
        f"pandas {pd.__version__}"
    )
    table = "\n".join(
        [
            "| reader | file | MB | median s | MB/s |",
            "|---|---|---:|---:|---:|",
            f"| `read_ctf` (C scanner) | CTF, {sequences:,} sequences, {len(frame):,} lines "
            f"| {ctf_mb:.1f} | {ctf_s:.2f} | {ctf_rate:.1f} |",
            f"| `read_ctf` without the C scanner (Python fast path, one read) | the same "
            f"| {ctf_mb:.1f} | {python_s:.2f} | {ctf_mb / python_s:.1f} |",
            f"| `pandas.read_csv` (C parser) | CSV, the same numbers "
            f"| {csv_mb:.1f} | {csv_s:.2f} | {csv_rate:.1f} |",
        ]
    )
    ratio = f"CTF / pandas throughput: {ctf_rate / csv_rate:.2f}"
    print(machine)
    print(table)
    print(ratio)
    if args.write:
        write_section(machine, table, ratio, args)


def write_section(machine: str, table: str, ratio: str, args: argparse.Namespace) -> None:
    """Replace (or append) the "CTF parsing" section of bench/README.md, leaving the rest."""
    section = "\n".join(
        [
            HEADING,
            "",
            f"`.venv/bin/python bench/bench_ctf.py --mb {args.mb:g} --repeat {args.repeat} "
            "--write` (median of the repeats; 8 dense values per line plus 2 on each "
            "sequence's first line, 6 significant digits).",
            "",
            f"Machine: {machine}.",
            "",
            table,
            "",
            ratio + ".",
            "",
            NOTES,
            "",
        ]
    )
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    start = text.find(HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    README.write_text(text)


if __name__ == "__main__":
    main()
