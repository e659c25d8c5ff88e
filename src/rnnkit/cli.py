"""The ``rnnkit`` command: ready recipes over the user's files, each writing a run directory.

The command line is generated from the recipes' settings (:mod:`rnnkit.recipes.command`).
Every subcommand has ``--help``; a bad argument gives one line naming the argument and what
it accepts, and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``rnnkit ...``; returns the exit status."""
    from rnnkit.recipes.command import run_command

    return run_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
