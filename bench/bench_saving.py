"""What verifying ``model.safetensors`` against its recorded sha256 costs ``rnnkit.load``.

Saves ``Fold(LSTMCell(1024, 2048)) >> Dense(2048, 16)`` (25.2 M float32 parameters, a
100.7 MB ``model.safetensors``) to a temporary directory, then times ``rnnkit.load``:

- **verified**: as saved, ``model.json`` recording the sha256 (what every load now does);
- **unverified**: the same files with ``weights.sha256`` removed from ``model.json`` (a model
  saved before the hash was recorded, which loads without the check).

Each is the median of ``--repeat`` loads, alternated, the files in the page cache (a first
load warms it); the sha256 of the file alone is timed too.

    python bench/bench_saving.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import rnnkit
from rnnkit import Dense, Fold, LSTMCell
from rnnkit.serialization import file_sha256


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Fold(LSTMCell(1024, 2048)) >> Dense(2048, 16)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:
        verified, unverified = Path(folder) / "verified", Path(folder) / "unverified"
        rnnkit.save(model, verified)
        rnnkit.save(model, unverified)
        header = json.loads((unverified / "model.json").read_text())
        del header["weights"]["sha256"]
        (unverified / "model.json").write_text(json.dumps(header))
        weights = verified / "model.safetensors"
        megabytes = weights.stat().st_size / 1e6
        rnnkit.load(verified), rnnkit.load(unverified)  # warm the page cache
        times: dict[str, list[float]] = {"verified": [], "unverified": [], "sha256": []}
        for _ in range(args.repeat):
            times["verified"].append(seconds(lambda: rnnkit.load(verified)))
            times["unverified"].append(seconds(lambda: rnnkit.load(unverified)))
            times["sha256"].append(seconds(lambda: file_sha256(weights)))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{parameters / 1e6:.1f} M parameters, model.safetensors {megabytes:.1f} MB; "
        f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.repeat}"
    )
    print("| load | median s |")
    print("|---|---:|")
    print(f"| verified (sha256 checked) | {median['verified']:.3f} |")
    print(f"| unverified (no sha256 recorded) | {median['unverified']:.3f} |")
    rate = megabytes / median["sha256"]
    print(f"| the sha256 alone | {median['sha256']:.3f} ({rate:.0f} MB/s) |")
    extra = median["verified"] - median["unverified"]
    print(f"cost of verifying: {extra:.3f} s ({100 * extra / median['unverified']:.0f}%)")


if __name__ == "__main__":
    main()
