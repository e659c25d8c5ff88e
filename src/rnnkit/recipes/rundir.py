"""The run directory every recipe writes, one contract for all of them.

========================  ==================================================================
``run.json``              recipe, rnnkit version, config, input files (size, sha256), the
                          data facts prediction needs, result, timings, seed, threads, machine
``model.safetensors``     the trained model (:func:`rnnkit.save`; ``model.json`` beside it)
``metrics.csv``           one row per epoch (``metrics-K.csv`` for ensemble member K > 1)
``predictions.csv``       one row per test example: ``id``, ``target``, ``prediction``, ...
``report.md``             the result beside its baselines, in words a reader can check
``curves.png``            training and validation loss per epoch (never empty)
========================  ==================================================================

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     run = RunDirectory(f"{tmp}/run")
...     path = run.write_predictions(["a", "b"], [{"target": 1, "prediction": 1},
...                                               {"target": 0, "prediction": 1}])
...     print(path.read_text(), end="")
id,target,prediction
a,1,1
b,0,1
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CONTRACT", "RunDirectory", "csv_text", "describe_inputs", "machine"]

# The files every run directory holds after a successful run.
CONTRACT = (
    "run.json",
    "model.safetensors",
    "model.json",
    "metrics.csv",
    "predictions.csv",
    "report.md",
    "curves.png",
)

# Columns of metrics.csv that are bookkeeping, never drawn as a curve.
_BOOKKEEPING = {"epoch", "step", "steps", "samples", "seconds", "lr", "skipped", ""}


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_inputs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Each input file's resolved path, size in bytes and SHA-256."""
    out = []
    for path in paths:
        path = Path(path)
        out.append(
            {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256(path)}
        )
    return out


def machine() -> dict[str, Any]:
    """Where the run ran: Python, torch, the platform and the CPU count."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value)


def csv_text(ids: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """``id`` then the rows' columns (in first-seen order); lists become space-separated."""
    if len(ids) != len(rows):
        raise ValueError(f"rows: expected one per id ({len(ids)}), found {len(rows)}")
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key != "id":
                columns.append(key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", *columns])
    for ident, row in zip(ids, rows, strict=True):
        writer.writerow([ident, *(_cell(row.get(c, "")) for c in columns)])
    return out.getvalue()


class RunDirectory:
    """A folder for one run, created on first use (files are replaced, never appended)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Remove the contract's files and member metrics left by an earlier run here."""
        for name in CONTRACT:
            (self.path / name).unlink(missing_ok=True)
        for stale in self.path.glob("metrics-*.csv"):
            stale.unlink()

    @property
    def metrics_csv(self) -> Path:
        """Where the per-epoch metrics go."""
        return self.path / "metrics.csv"

    def write_run_json(self, facts: Mapping[str, Any]) -> None:
        """``run.json``, written atomically (:func:`rnnkit.serialization.replacing`)."""
        from rnnkit.serialization import replacing

        text = json.dumps(dict(facts), indent=2, default=str) + "\n"
        with replacing(self.path / "run.json") as tmp:
            tmp.write_text(text, encoding="utf-8")

    def save_model(self, model: nn.Module) -> None:
        """``model.safetensors`` + ``model.json`` via :func:`rnnkit.save`."""
        from rnnkit.saving import save

        save(model, self.path)

    def write_predictions(self, ids: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
        """``predictions.csv``: one row per test example."""
        out = self.path / "predictions.csv"
        out.write_text(csv_text(ids, rows), encoding="utf-8")
        return out

    def plot_curves(self, name: str = "curves.png", title: str = "") -> Path | None:
        """Loss (and metric) per epoch from ``metrics.csv``: training and validation on one
        axis each; a single epoch is drawn as points, so the plot is never empty."""
        if not self.metrics_csv.is_file():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with self.metrics_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return None
        x = [float(r.get("epoch") or i + 1) for i, r in enumerate(rows)]
        groups = [("loss", ("loss", "val_loss")), ("metric", ("metric", "val_metric"))]
        present = [(label, [c for c in cols if c in rows[0]]) for label, cols in groups]
        present = [(label, cols) for label, cols in present if cols]
        fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.5), squeeze=False)
        for ax, (label, columns) in zip(axes[0], present, strict=True):
            for column in columns:
                if column in _BOOKKEEPING:
                    continue
                ys = [_float(r.get(column)) for r in rows]
                ax.plot(x, ys, marker="o" if len(rows) < 3 else None, label=column)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        out = self.path / name
        fig.savefig(out, dpi=80)
        plt.close(fig)
        return out

    def write_report(
        self,
        title: str,
        figures: Mapping[str, Any],
        baselines: Mapping[str, Mapping[str, Any]],
        *,
        notes: Sequence[str] = (),
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """``report.md``: the model's test figures beside each baseline's, facts, notes."""
        names = [k for k, v in figures.items() if isinstance(v, (int, float))]
        for values in baselines.values():
            names += [k for k in values if k not in names]
        lines = [f"# {title}", "", "Test part:", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        rows = [("model", figures), *baselines.items()]
        for label, values in rows:
            cells = [_cell(values[n]) if n in values else "" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if facts:
            lines += [""] + [f"- {k}: {_cell(v)}" for k, v in facts.items()]
        lines += ["", *notes, ""]
        (self.path / "report.md").write_text("\n".join(lines), encoding="utf-8")


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")
