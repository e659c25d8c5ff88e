"""``rnnkit visits``: the codes of a patient's next visit, and the time to it, from the visits so
far, in the style of Doctor AI (Choi et al. 2016).

Each visit is the multi-hot vector of its codes plus ``log(1 + days since the previous
visit)``; ``Dense(V+1, E, tanh) >> Recurrence(GRU) >> Dense(H, V+1)`` gives, for the next
visit, a sigmoid score per code (binary cross-entropy summed over the codes) and
``log(1 + days to it)`` (squared error, weighted by --time-weight). The patients with two
visits or more are split at random (--seed) into train, validation and test; the code list is
the training patients' codes (a test code never seen in training counts as a miss); training
stops early on the validation recall@20 and keeps the best epoch. The test recall@10/20/30
(per predicted visit, the share of its codes among the k highest scores) is reported beside
two baselines: the most frequent training codes, and the patient's own past codes by count.

The CSV is ``patient_id,visit_time,codes`` (codes space-separated); no real clinical data
ships with rnnkit: ``rnnkit visits generate OUT.csv`` writes synthetic patients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData
from rnnkit.recipes.options import (
    TrainSettings,
    add_options,
    check_config,
    config_from_args,
    option,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

__all__ = ["RECIPE", "GenerateSettings", "VisitsConfig", "VisitsRecipe"]


@dataclass(frozen=True)
class VisitsConfig:
    """One visits run (see the module docstring)."""

    csv: Path = option(
        help="patient_id,visit_time,codes (codes space-separated)", positional=True, metavar="CSV"
    )
    embedding_size: int = option(64, "visit embedding size (0: no embedding layer)", low=0)
    hidden_size: int = option(128, "GRU units", low=1)
    time_weight: float = option(1.0, "weight of the squared error of the log time", low=0.0)
    validation_share: float = option(
        0.1, "share of the patients for validation", low=0.0, high=1.0, low_open=True
    )
    test_share: float = option(
        0.1, "share of the patients for testing", low=0.0, high=1.0, low_open=True
    )
    top_k: int = option(20, "codes listed per predicted visit in predictions.csv", low=1)
    train: TrainSettings = option(
        TrainSettings(
            epochs=20,
            patience=4,
            minibatch_size=32,
            learning_rate=0.005,
            clip_norm=5.0,
            threads=1,  # a small GRU runs fastest on one thread
        ),
        "training settings (minibatches count patients)",
    )

    def __post_init__(self) -> None:
        check_config(self)
        object.__setattr__(self, "csv", Path(self.csv))
        if self.validation_share + self.test_share >= 1:
            raise ValueError(
                f"validation_share + test_share: expected less than 1, found "
                f"{self.validation_share + self.test_share:g}"
            )

    @property
    def split(self) -> tuple[float, float, float]:
        """The train, validation and test shares."""
        return (1 - self.validation_share - self.test_share, self.validation_share, self.test_share)


@dataclass(frozen=True)
class GenerateSettings:
    """``rnnkit visits generate``: a synthetic visits CSV."""

    out: Path = option(help="the CSV file to write", positional=True, metavar="OUT")
    patients: int = option(2000, "synthetic patients", low=1)
    seed: int = option(0, "random seed", low=0)


class VisitsRecipe(Recipe[VisitsConfig]):
    name = "visits"
    summary = "next-visit diagnosis codes from visit histories"
    description = __doc__ or ""
    config = VisitsConfig
    metric = Metric("recall@20")
    stop_on = ("val_metric", "max")
    stack_single = False  # patients with two visits still give sequences
    actions = {"generate": "write a synthetic visits CSV (rules: rnnkit.data.visits)"}

    def add_action_arguments(self, action: str, parser: Any) -> None:
        add_options(parser, GenerateSettings)

    def run_action(self, action: str, args: Any) -> int:
        from rnnkit.data.visits import synthetic_visits, write_visits

        settings = config_from_args(GenerateSettings, args)
        patients = synthetic_visits(settings.patients, seed=settings.seed)
        write_visits(settings.out, patients)
        count = sum(len(p.visits) for p in patients)
        print(f"wrote {settings.out}: {len(patients)} synthetic patients, {count} visits")
        return 0

    def load_data(self, config: VisitsConfig) -> RecipeData:
        from rnnkit.data.visits import read_visits, split_patients, visit_examples

        patients = read_visits(config.csv)
        parts = split_patients(patients, config.split, config.train.seed)
        codes = sorted({c for p in parts[0] for v in p.visits for c in v.codes})
        train, val, test = (visit_examples(part, codes) for part in parts)
        seen = set(codes)
        unseen = {c for p in parts[2] for v in p.visits[1:] for c in v.codes} - seen
        return RecipeData(
            train,
            val,
            test,
            inputs=[config.csv],
            ids=[p.patient_id for p in parts[2]],
            info={"codes": codes, "top_k": config.top_k},
            description=f"{config.csv.name}: {len(patients)} patients, "
            f"{'/'.join(str(len(p)) for p in parts)} with two visits or more (train/validation/"
            f"test, at random); {len(codes)} codes in training, {len(unseen)} codes of test "
            "visits never seen in training (each a miss)",
            extra={"train_patients": parts[0], "unseen_codes": len(unseen)},
        )

    def build_model(self, config: VisitsConfig, data: RecipeData) -> nn.Module:
        import torch

        from rnnkit.layers.visits import doctor_ai_model, output_bias

        bias = output_bias(torch.cat([e["labels"] for e in data.train]))
        codes = len(data.info["codes"])
        return doctor_ai_model(codes, config.embedding_size, config.hidden_size, bias)

    def criterion(self, config: VisitsConfig, data: RecipeData) -> Any:
        from rnnkit.layers.visits import recall_measure, visit_loss
        from rnnkit.training import Criterion

        return Criterion(visit_loss(config.time_weight), recall_measure(20))

    def _recalls(self, data: RecipeData, scores: Any) -> dict[str, float]:
        import torch

        from rnnkit.data.visits import KS, recall_at_k

        target = torch.cat([e["labels"] for e in data.test])[:, :-1]
        sizes = torch.cat([e["sizes"] for e in data.test])[:, 0]
        return {f"recall@{k}": float(recall_at_k(scores, target, k, sizes).mean()) for k in KS}

    def score(
        self, config: VisitsConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, Any]:
        import torch

        output = torch.cat(predictions)
        truth = torch.cat([e["labels"] for e in data.test])[:, -1]
        residual = (output[:, -1] - truth).pow(2).sum() / (truth - truth.mean()).pow(2).sum()
        return {
            **self._recalls(data, output[:, :-1]),
            "time_r2": 1 - float(residual),
            "test_visits": int(output.shape[0]),
            "codes": len(data.info["codes"]),
            "unseen_test_codes": data.extra["unseen_codes"],
        }

    def baselines(self, config: VisitsConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        import torch

        from rnnkit.data.visits import frequency_scores, history_scores

        frequency = frequency_scores(data.extra["train_patients"], data.info["codes"])
        history = torch.cat([history_scores(e["features"], frequency) for e in data.test])
        return {
            "patient's past codes": self._recalls(data, history),
            "most frequent codes": self._recalls(data, frequency.expand_as(history)),
        }

    def prediction_table(
        self,
        info: Mapping[str, Any],
        ids: Sequence[str],
        examples: Sequence[Any],
        predictions: Sequence[Any],
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """One row per predicted visit, ``PATIENT/K`` for the K-th visit (1-based): its codes
        and days since the previous visit (empty for the visit after the last one known), the
        ``top_k`` codes by score and the predicted days."""
        import math

        codes = info["codes"]
        top_k = min(int(info["top_k"]), len(codes))
        row_ids: list[str] = []
        rows: list[dict[str, Any]] = []
        for example, output in zip(examples, predictions, strict=True):
            visits = example.patient.visits
            for t in range(output.shape[0]):
                top = output[t, :-1].topk(top_k).indices.tolist()
                known = t + 1 < len(visits)
                row_ids.append(f"{example.patient.patient_id}/{t + 2}")
                days = visits[t + 1].time - visits[t].time if known else ""
                rows.append(
                    {
                        "target": list(visits[t + 1].codes) if known else "",
                        "prediction": [codes[i] for i in top],
                        "target_days": days,
                        "predicted_days": math.expm1(float(output[t, -1])),
                    }
                )
        return row_ids, rows

    def notes(
        self, config: VisitsConfig, data: RecipeData, figures: Mapping[str, Any]
    ) -> list[str]:
        return [
            f"{data.description}.",
            "recall@k: per predicted visit, the share of its codes among the k highest scores, "
            "averaged over the test visits. The patient's past codes: ranked by their count so "
            "far, then the last visit's, then the training frequency.",
            f"Time to the next visit: R² of log(1 + days) = {figures['time_r2']:.3f} (0 for the "
            "test mean).",
        ]

    def read_inputs(
        self, info: Mapping[str, Any], config: VisitsConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        """Visits CSVs: every visit of each patient is read, so the rows predict visits 2 .. n
        (known) and the visit after the last one."""
        from rnnkit.data.visits import PatientExample, read_visits, visit_features

        examples = []
        for path in paths:
            for patient in read_visits(path):
                features = visit_features(patient, info["codes"])
                examples.append(PatientExample({"features": features}, patient))
        return [e.patient.patient_id for e in examples], examples


RECIPE = VisitsRecipe()
