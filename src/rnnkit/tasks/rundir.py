"""The run directory every recipe writes: what was run, the model, the curve, the figures.

``config.json`` (the settings), ``model.safetensors`` + ``model.json`` (:func:`rnnkit.save`),
``metrics.csv`` (per-epoch figures, from :class:`~rnnkit.training.CSVLogger`), a plot PNG and
``report.md`` (the result next to its baseline, in words a reader can check).

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     run = RunDirectory(f"{tmp}/run")
...     run.write_config({"lr": 0.01})
...     run.write_report("Result", [("model", 0.9), ("baseline", 0.5)], header=("", "accuracy"))
...     sorted(p.name for p in run.path.iterdir())
['config.json', 'report.md']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["RunDirectory"]


class RunDirectory:
    """A folder for one run, created on first use (files are replaced, never appended)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def metrics_csv(self) -> Path:
        """Where the per-epoch metrics go (give it to ``CSVLogger``)."""
        return self.path / "metrics.csv"

    def write_config(self, config: Mapping[str, Any]) -> None:
        """``config.json``: the settings of the run (JSON types; paths become strings)."""
        text = json.dumps(dict(config), indent=2, default=str, sort_keys=True)
        (self.path / "config.json").write_text(text + "\n")

    def save_model(self, model: nn.Module) -> None:
        """``model.safetensors`` + ``model.json`` via :func:`rnnkit.save`."""
        from rnnkit.saving import save

        save(model, self.path)

    def plot_curves(self, name: str = "curves.png", title: str = "") -> Path | None:
        """Draw the columns of ``metrics.csv`` against the epoch (None when it is absent)."""
        if not self.metrics_csv.is_file():
            return None
        import csv

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with self.metrics_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return None
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = [float(r.get("epoch", i + 1) or i + 1) for i, r in enumerate(rows)]
        for column in rows[0]:
            if column in ("epoch", "step", "samples", "seconds", "lr") or not column:
                continue
            try:
                ys = [float(r[column]) for r in rows]
            except (TypeError, ValueError):
                continue
            ax.plot(x, ys, label=column)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        out = self.path / name
        fig.savefig(out, dpi=80)
        plt.close(fig)
        return out

    def write_report(
        self,
        title: str,
        rows: Iterable[Sequence[Any]],
        header: Sequence[str],
        notes: Sequence[str] = (),
    ) -> None:
        """``report.md``: a title, a table (``header`` then ``rows``) and notes."""
        lines = [f"# {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for row in rows:
            cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *notes, ""]
        (self.path / "report.md").write_text("\n".join(lines))
