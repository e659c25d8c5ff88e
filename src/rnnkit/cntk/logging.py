"""``cntk.logging``: CNTK's ``ProgressPrinter`` (rnnkit's, which prints CNTK's lines byte for
byte) with CNTK's signature, and ``log_number_of_parameters``.

>>> import io
>>> out = io.StringIO()
>>> printer = ProgressPrinter(0, file=out)
>>> printer.write_header()
>>> printer.update(10, 6.6, 6.6)
>>> print(out.getvalue().splitlines()[-1])
     0.66       0.66       0.66       0.66            10
"""

from __future__ import annotations

from typing import Any, TextIO

from rnnkit.training.progress import ProgressPrinter as _RnnkitProgressPrinter

__all__ = ["ProgressPrinter", "log_number_of_parameters"]


class ProgressPrinter(_RnnkitProgressPrinter):
    """CNTK's ``ProgressPrinter(freq=None, first=0, tag='', log_to_file=None, rank=None,
    gen_heartbeat=False, num_epochs=None, test_freq=None, test_first=0, metric_is_pct=True,
    distributed_freq=None, distributed_first=0)``: see
    :class:`rnnkit.training.ProgressPrinter` for what each line holds. ``log_to_file``
    appends the lines to that file instead of printing them; ``file`` (rnnkit's) writes to
    an open stream. One process only: ``rank``, ``distributed_*`` and ``gen_heartbeat``
    are accepted at their defaults."""

    def __init__(
        self,
        freq: int | None = None,
        first: int = 0,
        tag: str = "",
        log_to_file: str | None = None,
        rank: int | None = None,
        gen_heartbeat: bool = False,
        num_epochs: int | None = None,
        test_freq: int | None = None,
        test_first: int = 0,
        metric_is_pct: bool = True,
        distributed_freq: int | None = None,
        distributed_first: int = 0,
        file: TextIO | None = None,
    ) -> None:
        if gen_heartbeat or rank not in (None, 0) or distributed_freq is not None:
            raise ValueError("rank, gen_heartbeat, distributed_freq: one process only here")
        if log_to_file is not None and file is not None:
            raise ValueError("log_to_file, file: expected at most one of them")
        stream = open(log_to_file, "a", encoding="utf-8") if log_to_file is not None else file  # noqa: SIM115
        super().__init__(
            freq=freq,
            first=first,
            tag=tag,
            num_epochs=num_epochs,
            metric_is_pct=metric_is_pct,
            file=stream,
        )
        self.test_freq, self.test_first = test_freq, test_first


def log_number_of_parameters(model: Any, trace_level: int = 0) -> None:
    """Print ``Training N parameters in K parameter tensors.`` (CNTK's line) for a
    function or layer with ``.parameters``."""
    parameters = list(model.parameters)
    total = sum(int(p.numel()) for p in parameters)
    print(f"Training {total} parameters in {len(parameters)} parameter tensors.")
