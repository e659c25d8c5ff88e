"""Diagnosis prediction over visits, in the style of Doctor AI (Choi et al. 2016, arXiv:1511.05942).

Each patient is a sequence of visits (:mod:`rnnkit.data.visits`). At visit t the network reads
the visit's codes as a multi-hot vector ``[V]`` and ``log(1 + days since the previous visit)``
(0 at the first visit), embeds them (``Dense(V + 1, E)``; no embedding with ``E = 0``), runs a
GRU over the visits and predicts, for visit t + 1, every code's probability (sigmoid, the
binary cross-entropy summed over codes: a multi-label loss; the paper uses a softmax over the
codes) and ``log(1 + days to the next visit)`` (squared error, weighted by ``time_weight``).

The recipe (:func:`train_visits`) splits the patients at random (seeded) into train,
validation and test, builds the code list from the training patients, trains with early
stopping on the validation recall@20, and reports on the test patients:

* recall@k (k = 10, 20, 30): per predicted visit, the share of its true codes among the k
  highest scores, averaged over visits (Doctor AI's measure). A test code never seen in
  training cannot be predicted and counts as a miss;
* the coefficient of determination R² of ``log(1 + days to the next visit)``;

next to two baselines: the codes most frequent in training (the same k for everyone), and the
patient's own past codes ranked by how often they occurred (then the last visit's, then the
overall frequency).

>>> from rnnkit.data.visits import Patient, Visit
>>> p = Patient("p", (Visit(0.0, ("A",)), Visit(9.0, ("A", "B")), Visit(10.0, ("C",))))
>>> ex = visit_examples([p], ["A", "B", "C"])[0]
>>> ex["features"].tolist()  # [A, B, C, log(1 + gap)] at visits 1 and 2
[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.3025851249694824]]
>>> ex["labels"].tolist()  # the next visit's codes and log(1 + days to it)
[[1.0, 1.0, 0.0, 2.3025851249694824], [0.0, 0.0, 1.0, 0.6931471824645996]]
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.visits import Patient
from rnnkit.sequences import SequenceBatch

__all__ = [
    "VisitsConfig",
    "VisitsResult",
    "doctor_ai_model",
    "frequency_scores",
    "history_scores",
    "recall_at_k",
    "split_patients",
    "train_visits",
    "visit_examples",
    "visit_loss",
]

KS = (10, 20, 30)


@dataclass(frozen=True)
class VisitsConfig:
    """Settings of :func:`train_visits`; every field goes to the run's ``config.json``."""

    embedding_size: int = 64
    hidden_size: int = 128
    epochs: int = 20
    patience: int = 4
    minibatch_size: int = 32
    learning_rate: float = 0.005
    time_weight: float = 1.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "epochs", "patience", "minibatch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if not isinstance(self.embedding_size, int) or self.embedding_size < 0:
            raise ValueError(
                f"embedding_size: expected 0 (no embedding) or a positive integer, found "
                f"{self.embedding_size!r}"
            )
        if len(self.split) != 3 or any(f <= 0 for f in self.split):
            raise ValueError(f"split: expected three positive shares, found {self.split}")
        if abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(f"split: expected shares summing to 1, found {self.split}")


@dataclass
class VisitsResult:
    """Test figures: recall@k of the model and of both baselines (keys ``"10"``, ``"20"``,
    ``"30"``), R² of the log time to the next visit, and the counts."""

    recall: dict[str, float]
    frequent_recall: dict[str, float]
    history_recall: dict[str, float]
    time_r2: float
    patients: tuple[int, int, int]
    test_visits: int
    codes: int
    unseen_test_codes: int
    epochs: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_patients(
    patients: Sequence[Patient], split: Sequence[float], seed: int
) -> tuple[list[Patient], list[Patient], list[Patient]]:
    """Patients with at least two visits, shuffled (seeded) and cut into three parts.

    >>> from rnnkit.data.visits import synthetic_visits
    >>> [len(p) for p in split_patients(synthetic_visits(10, seed=1), (0.8, 0.1, 0.1), 0)]
    [8, 1, 1]
    """
    usable = [p for p in patients if len(p.visits) >= 2]
    order = np.random.default_rng(seed).permutation(len(usable))
    a = math.floor(split[0] * len(usable) + 1e-9)
    b = a + math.floor(split[1] * len(usable) + 1e-9)
    parts = [usable[i] for i in order[:a]], [usable[i] for i in order[a:b]]
    test = [usable[i] for i in order[b:]]
    for name, part in zip(("train", "validation", "test"), (*parts, test), strict=True):
        if not part:
            raise ValueError(
                f"split: the {name} part has no patient with two visits or more "
                f"({len(usable)} such patients in all); give more patients"
            )
    return parts[0], parts[1], test


def visit_examples(patients: Sequence[Patient], codes: Sequence[str]) -> list[dict[str, Tensor]]:
    """One example per patient with n >= 2 visits (``V = len(codes)``; other codes are left
    out of the multi-hot vectors but counted in ``"sizes"``):

    ``"features"`` ``[n-1, V+1]``: visits 1..n-1, multi-hot and ``log(1 + days since the
    previous visit)``; ``"labels"`` ``[n-1, V+1]``: visits 2..n, multi-hot and
    ``log(1 + days to it)``; ``"sizes"`` ``[n-1, 1]``: the number of distinct codes of each
    target visit, known or not.
    """
    index = {c: i for i, c in enumerate(codes)}
    v = len(codes)
    examples = []
    for patient in patients:
        visits = patient.visits
        if len(visits) < 2:
            continue
        hot = torch.zeros(len(visits), v + 1)
        for t, visit in enumerate(visits):
            known = [index[c] for c in visit.codes if c in index]
            hot[t, known] = 1.0
        times = torch.tensor([visit.time for visit in visits], dtype=torch.float64)
        gaps = torch.log1p(torch.diff(times)).float()
        features, labels = hot[:-1].clone(), hot[1:].clone()
        features[1:, v] = gaps[:-1]
        labels[:, v] = gaps
        sizes = torch.tensor([[float(len(visit.codes))] for visit in visits[1:]])
        examples.append({"features": features, "labels": labels, "sizes": sizes})
    return examples


def doctor_ai_model(
    num_codes: int, embedding_size: int, hidden_size: int, output_bias: Tensor | None = None
) -> nn.Module:
    """``[Dense(V+1, E, tanh) >>] Recurrence(GRUCell) >> Dense(H, V+1)``: per visit, V code
    scores (logits) and the log time to the next visit.

    ``output_bias`` ``[V+1]`` starts the last layer's bias there (:func:`train_visits` gives
    the log-odds of each code per visit and the mean log time in training), so training does
    not spend its first epochs learning the codes' base rates.
    """
    from rnnkit.cells import GRUCell
    from rnnkit.layers import Dense
    from rnnkit.recurrence import Recurrence

    width = num_codes + 1
    head = Dense(hidden_size, width)
    if output_bias is not None:
        if output_bias.shape != (width,):
            raise ValueError(
                f"output_bias: expected shape [{width}], found {list(output_bias.shape)}"
            )
        with torch.no_grad():
            head.linear.bias.copy_(output_bias)
    if embedding_size == 0:
        return Recurrence(GRUCell(width, hidden_size)) >> head
    return (
        Dense(width, embedding_size, activation=torch.tanh)
        >> Recurrence(GRUCell(embedding_size, hidden_size))
        >> head
    )


def _rows(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> tuple[Tensor, Tensor]:
    out = output.data if isinstance(output, SequenceBatch) else output
    tgt = target.data if isinstance(target, SequenceBatch) else target
    if out.shape != tgt.shape:
        raise ValueError(
            f"visit_loss: expected output and target of the same shape [N, V+1], found "
            f"{tuple(out.shape)} and {tuple(tgt.shape)}"
        )
    return out, tgt


def visit_loss(time_weight: float = 1.0) -> Any:
    """The measure ``(output, target) -> sum over visits of (binary cross-entropy summed over
    the codes + time_weight * squared error of the log time)``; output and target
    ``[N, V+1]`` (last column: the log time).

    >>> out, tgt = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0]])
    >>> round(visit_loss()(out, tgt).item(), 4)  # 2 * log 2 + (1 - 2)^2
    2.3863
    """

    def measure(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
        out, tgt = _rows(output, target)
        bce = nn.functional.binary_cross_entropy_with_logits(
            out[:, :-1], tgt[:, :-1], reduction="sum"
        )
        return bce + time_weight * (out[:, -1] - tgt[:, -1]).pow(2).sum()

    return measure


def recall_at_k(scores: Tensor, targets: Tensor, k: int, sizes: Tensor | None = None) -> Tensor:
    """Per row, the share of the true codes among the ``k`` highest scores.

    Args:
        scores: ``[N, V]``.
        targets: ``[N, V]`` multi-hot (1 = the code is in the visit).
        k: how many codes are predicted.
        sizes: ``[N]`` true codes per row when some lie outside the V (misses); default the
            row sums of ``targets``.

    Returns:
        ``[N]``.

    >>> recall_at_k(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[1.0, 1.0, 0.0]]), 2).tolist()
    [0.5]
    """
    k = min(k, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    hits = targets.gather(-1, top).sum(-1)
    total = targets.sum(-1) if sizes is None else sizes.reshape(-1).to(hits.dtype)
    return hits / total.clamp(min=1)


def _recall_measure(k: int) -> Any:
    def measure(output: Tensor | SequenceBatch, target: Tensor | SequenceBatch) -> Tensor:
        out, tgt = _rows(output, target)
        return recall_at_k(out[:, :-1], tgt[:, :-1], k).sum()

    return measure


def frequency_scores(patients: Sequence[Patient], codes: Sequence[str]) -> Tensor:
    """``[V]``: how often each code occurs in ``patients``' visits (the training patients)."""
    counts = Counter(c for p in patients for v in p.visits for c in v.codes)
    return torch.tensor([float(counts[c]) for c in codes])


def history_scores(features: Tensor, frequency: Tensor) -> Tensor:
    """``[n-1, V]``: at each visit, the patient's count of each code so far, plus 0.5 for the
    codes of the current visit, plus the overall frequency scaled below 0.01 (to rank codes
    the patient never had).

    >>> f = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 2.3]])
    >>> history_scores(f, torch.tensor([0.0, 0.0, 5.0])).tolist()
    [[1.5, 0.0, 0.009999999776482582], [1.0, 1.5, 0.009999999776482582]]
    """
    hot = features[:, :-1]
    return hot.cumsum(0) + 0.5 * hot + 0.01 * frequency / frequency.max().clamp(min=1)


def train_visits(
    patients: Sequence[Patient],
    config: VisitsConfig,
    run_dir: str | Path | None = None,
    *,
    progress: bool = False,
) -> VisitsResult:
    """Train and test the model and the baselines (see the module docstring).

    Writes, when ``run_dir`` is given: ``config.json``, ``model.safetensors`` + ``model.json``,
    ``codes.txt`` (the code of each output, in order), ``metrics.csv``, ``curves.png``,
    ``report.md`` and ``result.json``.
    """
    from rnnkit.data.minibatch import MinibatchSource
    from rnnkit.training import Criterion, CSVLogger, EarlyStopping, ProgressPrinter, Trainer

    train, val, test = split_patients(patients, config.split, config.seed)
    codes = sorted({c for p in train for v in p.visits for c in v.codes})
    sets = [visit_examples(part, codes) for part in (train, val, test)]
    torch.manual_seed(config.seed)
    targets = torch.cat([e["labels"] for e in sets[0]])
    rate = targets[:, :-1].mean(0).clamp(1e-4, 1 - 1e-4)
    bias = torch.cat([torch.log(rate / (1 - rate)), targets[:, -1:].mean(0)])
    model = doctor_ai_model(len(codes), config.embedding_size, config.hidden_size, bias)
    callbacks: list[Any] = [
        EarlyStopping(monitor="val_metric", mode="max", patience=config.patience)
    ]
    if progress:
        callbacks.insert(0, ProgressPrinter(freq=0, num_epochs=config.epochs, metric_is_pct=False))
    run = None
    if run_dir is not None:
        from rnnkit.tasks.rundir import RunDirectory

        run = RunDirectory(run_dir)
        callbacks.append(CSVLogger(run.metrics_csv))
    trainer = Trainer(
        model,
        Criterion(visit_loss(config.time_weight), _recall_measure(20)),
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        callbacks=callbacks,
        clip_norm=5.0,
    )

    def source(examples: list[dict[str, Tensor]], training: bool) -> MinibatchSource:
        return MinibatchSource(
            examples,
            config.minibatch_size,
            unit="sequences",
            randomize=training,
            seed=config.seed,
            max_sweeps=None if training else 1,
        )

    started = time.perf_counter()
    summary = trainer.fit(
        source(sets[0], True), epochs=config.epochs, validation=source(sets[1], False)
    )
    seconds = time.perf_counter() - started

    examples = sets[2]
    outputs = []
    for i in range(0, len(examples), 256):
        x = SequenceBatch.from_list([e["features"] for e in examples[i : i + 256]])
        outputs.extend(trainer.predict(x).to_list())
    output = torch.cat(outputs)
    labels = torch.cat([e["labels"] for e in examples])
    sizes = torch.cat([e["sizes"] for e in examples])[:, 0]
    frequency = frequency_scores(train, codes)
    history = torch.cat([history_scores(e["features"], frequency) for e in examples])
    target = labels[:, :-1]

    def recalls(scores: Tensor) -> dict[str, float]:
        return {str(k): float(recall_at_k(scores, target, k, sizes).mean()) for k in KS}

    truth_time, pred_time = labels[:, -1], output[:, -1]
    r2 = 1 - float(
        (pred_time - truth_time).pow(2).sum() / (truth_time - truth_time.mean()).pow(2).sum()
    )
    seen = set(codes)
    unseen = len({c for p in test for v in p.visits[1:] for c in v.codes} - seen)
    result = VisitsResult(
        recalls(output[:, :-1]),
        recalls(frequency.expand_as(target)),
        recalls(history),
        r2,
        (len(train), len(val), len(test)),
        int(labels.shape[0]),
        len(codes),
        unseen,
        len(summary.history),
        round(seconds, 1),
    )
    if run is not None:
        _write_run(run, model, config, codes, result)
    return result


def _write_run(
    run: Any, model: nn.Module, config: VisitsConfig, codes: list[str], result: VisitsResult
) -> None:
    run.write_config(asdict(config))
    run.save_model(model)
    (run.path / "codes.txt").write_text("\n".join(codes) + "\n")
    (run.path / "result.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    run.plot_curves(title="Diagnosis prediction (val_metric: recall@20)")
    rows = [
        ("rnnkit (GRU over visits)", *(result.recall[str(k)] for k in KS)),
        ("patient's past codes", *(result.history_recall[str(k)] for k in KS)),
        ("most frequent codes", *(result.frequent_recall[str(k)] for k in KS)),
    ]
    train, val, test = result.patients
    run.write_report(
        "Diagnosis prediction (next visit's codes)",
        rows,
        header=("predictor", "recall@10", "recall@20", "recall@30"),
        notes=[
            f"Patients {train} / {val} / {test} (train / validation / test, at random); "
            f"{result.test_visits} predicted test visits; {result.codes} codes seen in "
            f"training; {result.unseen_test_codes} codes of test visits never seen in training "
            "(each counts as a miss).",
            f"Time to the next visit: R² of log(1 + days) = {result.time_r2:.3f} "
            "(0 for the training mean).",
        ],
    )


def add_commands(sub: Any) -> dict[str, Any]:
    """``rnnkit visits generate`` (a synthetic CSV) and ``rnnkit visits train`` (a model)."""
    p = sub.add_parser(
        "visits",
        help="diagnosis prediction over patient visits (Doctor AI style)",
        description="Predict the codes of a patient's next visit and the time to it. Real "
        "clinical data must be brought by the user as a CSV 'patient_id,visit_time,codes'; "
        "'generate' writes a synthetic file that follows stated rules.",
    )
    inner = p.add_subparsers(dest="visits_command", required=True, parser_class=type(p))
    gen = inner.add_parser("generate", help="write a synthetic visits CSV")
    gen.add_argument("out", type=Path, help="the CSV file to write")
    gen.add_argument("--patients", type=int, default=2000)
    gen.add_argument("--seed", type=int, default=0)
    tr = inner.add_parser("train", help="train and test on a visits CSV")
    tr.add_argument("csv", type=Path, help="patient_id,visit_time,codes (codes space-separated)")
    tr.add_argument("--embedding-size", type=int, default=64, help="0: no embedding layer")
    tr.add_argument("--hidden-size", type=int, default=128)
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--run-dir", type=Path, default=Path("runs") / "visits")

    def run(args: Any) -> int:
        from rnnkit.data.visits import read_visits, synthetic_visits, write_visits

        if args.visits_command == "generate":
            patients = synthetic_visits(args.patients, seed=args.seed)
            write_visits(args.out, patients)
            count = sum(len(p.visits) for p in patients)
            print(f"wrote {args.out}: {len(patients)} synthetic patients, {count} visits")
            return 0
        patients = read_visits(args.csv)
        config = VisitsConfig(
            embedding_size=args.embedding_size,
            hidden_size=args.hidden_size,
            epochs=args.epochs,
            seed=args.seed,
        )
        result = train_visits(patients, config, args.run_dir, progress=True)
        for name, recall in (
            ("rnnkit", result.recall),
            ("patient's past codes", result.history_recall),
            ("most frequent codes", result.frequent_recall),
        ):
            shown = "  ".join(f"recall@{k} {recall[str(k)]:.3f}" for k in KS)
            print(f"{name:>20}: {shown}")
        print(f"time to next visit: R² of log(1 + days) {result.time_r2:.3f} (mean: 0)")
        print(f"run directory: {args.run_dir}")
        print(json.dumps({"data": args.csv.name, **result.as_dict(), "seed": args.seed}))
        return 0

    return {"visits": run}
