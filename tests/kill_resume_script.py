"""``tests/training_script.py``'s run, with a way to stop inside a checkpoint write.

    python tests/kill_resume_script.py OUT [--every N] [--resume] [--pause-after K]
                                           [--pause-in-write K]

``--pause-in-write K``: when the checkpoint of step K has been written to its temporary file
and flushed, but not yet renamed over its final name, write ``OUT/paused`` and sleep, so a test
can kill the process in the middle of the write. ``--pause-after K`` pauses after step K, as in
``training_script.py``. The final weights go to ``OUT/final.safetensors``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from training_script import run

from rnnkit.training import Checkpoint


def pause_before_renaming(name: str, marker: Path) -> None:
    """Make ``os.replace`` onto a file called ``name`` leave ``marker`` and sleep until killed."""
    real = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == name:
            marker.write_text(str(src))
            time.sleep(600)
        real(src, dst, **kwargs)

    os.replace = replace


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-after", type=int, default=None)
    parser.add_argument("--pause-in-write", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.pause_in_write is not None:
        name = Checkpoint(args.out / "checkpoints").path_for(args.pause_in_write).name
        pause_before_renaming(name, args.out / "paused")
    trainer = run(args.out, every=args.every, pause_after=args.pause_after, resume=args.resume)
    from safetensors.torch import save_file

    save_file(trainer.model.state_dict(), str(args.out / "final.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
