"""Patient visits: a CSV reader and writer, a seeded synthetic generator, and the examples,
baselines and measures of next-visit prediction.

The format is one visit per row with a header ``patient_id,visit_time,codes``: the patient's
identifier, the time of the visit (an ISO 8601 date or timestamp, or a number of days; one
kind per file) and the visit's codes (diagnoses, medications, procedures) separated by spaces.
A patient's rows need not be adjacent, but their times must not go backwards; a code repeated
within a visit counts once.

No real clinical data ships with rnnkit or can be had on its build machines:
:func:`synthetic_visits` makes visits that follow stated rules, to check that a model learns
them; real records must be brought by the user in the format above.

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "v.csv"
...     _ = path.write_text("patient_id,visit_time,codes\\np1,2020-01-01,A B\\np1,2020-01-11,B\\n")
...     patients = read_visits(path)
>>> [(v.time - patients[0].visits[0].time, v.codes) for v in patients[0].visits]
[(0.0, ('A', 'B')), (10.0, ('B',))]
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from rnnkit.data.errors import ReaderError
from rnnkit.data.files import csv_row, end_of, read_lines

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "HEADER",
    "KS",
    "Patient",
    "PatientExample",
    "SyntheticVisitsConfig",
    "Visit",
    "frequency_scores",
    "history_scores",
    "read_visits",
    "recall_at_k",
    "split_patients",
    "synthetic_visits",
    "visit_examples",
    "visit_features",
    "write_visits",
]

PathArg = Union[str, "os.PathLike[str]"]
HEADER = ("patient_id", "visit_time", "codes")
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Visit:
    """One visit: its time in days (since 1970-01-01 for dates) and its distinct codes."""

    time: float
    codes: tuple[str, ...]


@dataclass(frozen=True)
class Patient:
    """A patient's visits in time order."""

    patient_id: str
    visits: tuple[Visit, ...]


def _parse_time(text: str) -> tuple[float, str]:
    """Days and kind (``"days"`` or ``"date"``) of a visit time; ValueError (OverflowError for
    a date that a time zone moves out of range) when neither."""
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return (moment - _EPOCH).total_seconds() / 86400.0, "date"
    if not math.isfinite(value):
        raise ValueError(text)
    return value, "days"


def read_visits(path: PathArg) -> list[Patient]:
    """Read a visits CSV (see the module docstring); patients in order of first appearance.

    Raises:
        ReaderError: ``path:line:column``: a wrong header, a row without three fields, an empty
            patient id, a time that is neither a date nor a number (or not of the file's kind),
            a visit without codes, a time before the patient's previous visit.
    """
    lines = read_lines(path)
    visits: dict[str, list[Visit]] = {}
    last: dict[str, tuple[float, str, int]] = {}
    kind: str | None = None
    header_seen = False
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields, cols = csv_row(line, ",", path, line_no)
        if not header_seen:
            if tuple(f.strip() for f in fields) != HEADER:
                raise ReaderError(
                    f"expected the header {','.join(HEADER)!r}, found {line!r}",
                    path=path,
                    line=line_no,
                    column=1,
                )
            header_seen = True
            continue
        if len(fields) != 3:
            raise ReaderError(
                f"expected 3 fields (patient_id, visit_time, codes), found {len(fields)}",
                path=path,
                line=line_no,
                column=cols[min(len(fields), 3) - 1] if fields else 1,
            )
        patient, stamp, codes_text = (f.strip() for f in fields)
        if not patient:
            raise ReaderError("expected a patient id, found ''", path=path, line=line_no, column=1)
        try:
            time, this_kind = _parse_time(stamp)
        except (ValueError, OverflowError):
            raise ReaderError(
                f"patient {patient!r}: expected a visit time (an ISO 8601 date such as "
                f"2020-01-31, or a number of days), found {stamp!r}",
                path=path,
                line=line_no,
                column=cols[1],
            ) from None
        if kind is not None and this_kind != kind:
            raise ReaderError(
                f"patient {patient!r}: expected a visit time as {kind} like the rows before, "
                f"found {stamp!r}",
                path=path,
                line=line_no,
                column=cols[1],
            )
        kind = this_kind
        codes = tuple(dict.fromkeys(codes_text.split()))
        if not codes:
            raise ReaderError(
                f"patient {patient!r}: expected the visit's codes separated by spaces, found none",
                path=path,
                line=line_no,
                column=cols[2],
            )
        if patient in last and time < last[patient][0]:
            _, before_text, before_line = last[patient]
            raise ReaderError(
                f"patient {patient!r}: expected visit times in increasing order, found "
                f"{stamp!r} after {before_text!r} (line {before_line})",
                path=path,
                line=line_no,
                column=cols[1],
            )
        last[patient] = (time, stamp, line_no)
        visits.setdefault(patient, []).append(Visit(time, codes))
    if not header_seen:
        line_no, column = end_of(lines)
        raise ReaderError(
            "expected a header row, found an empty file", path=path, line=line_no, column=column
        )
    return [Patient(p, tuple(v)) for p, v in visits.items()]


def write_visits(path: PathArg, patients: Sequence[Patient], *, dates: bool = True) -> None:
    """Write ``patients`` in the CSV format of :func:`read_visits`; times as ISO dates
    (``dates``; days since 1970-01-01, rounded to whole days) or as numbers of days."""
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for patient in patients:
            for visit in patient.visits:
                stamp = (
                    str(np.datetime64("1970-01-01") + np.timedelta64(round(visit.time), "D"))
                    if dates
                    else f"{visit.time:g}"
                )
                writer.writerow([patient.patient_id, stamp, " ".join(visit.codes)])


# ---------------------------------------------------------------------------------------------
# Synthetic visits


@dataclass(frozen=True)
class SyntheticVisitsConfig:
    """The sizes and rates of :func:`synthetic_visits` (its docstring states the rules)."""

    chronic: int = 20
    acute: int = 150
    severe: int = 30
    mean_visits: float = 8.0
    max_visits: int = 40
    new_acute_rate: float = 0.8
    continue_acute: float = 0.5
    code_chronic: float = 0.8
    code_medication: float = 0.9
    follow_up: float = 0.9
    onset_hazard: float = 0.01

    def __post_init__(self) -> None:
        for name in ("chronic", "acute", "severe", "max_visits"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, found {value!r}")
        if self.severe > self.acute:
            raise ValueError(
                f"severe: expected at most acute={self.acute} codes, found {self.severe}"
            )
        if self.mean_visits < 2:
            raise ValueError(f"mean_visits: expected at least 2, found {self.mean_visits}")

    def code_names(self) -> list[str]:
        """Every code the generator can emit: ``CHRxx``, ``MEDxx``, ``ACUxxx``, ``FUPxxx``."""
        return (
            [f"CHR{i:02d}" for i in range(self.chronic)]
            + [f"MED{i:02d}" for i in range(self.chronic)]
            + [f"ACU{i:03d}" for i in range(self.acute)]
            + [f"FUP{i:03d}" for i in range(self.severe)]
        )


def synthetic_visits(
    num_patients: int, seed: int, config: SyntheticVisitsConfig | None = None
) -> list[Patient]:
    """Seeded synthetic patients whose visits follow these rules:

    1. **Chronic conditions recur.** Chronic condition ``c`` (``CHRcc``) has prevalence
       ``0.3 / (1 + c / 4)``; a patient has it from the first visit with that probability, or
       gets it later with hazard ``onset_hazard`` per visit. Once present it is coded at each
       visit with probability ``code_chronic``, and its medication ``MEDcc`` with probability
       ``code_medication``.
    2. **Acute conditions resolve.** At each visit ``Poisson(new_acute_rate)`` new acute
       episodes start (at least one when the visit would otherwise be empty). An episode's code
       is, with probability 0.4 per chronic condition held (at most 0.8), one of the three acute
       codes linked to that condition (``ACU`` ``3c``, ``3c+1``, ``3c+2`` modulo ``acute``),
       else drawn by popularity ``1 / (1 + a / 10)``. An episode is coded again at the next
       visit with probability ``continue_acute``; otherwise it has resolved.
    3. **Codes imply follow-ups.** The ``severe`` acute codes ``ACU`` ``acute - severe .. acute
       - 1`` imply the follow-up ``FUPxxx`` (same index among the severe codes) at the next
       visit with probability ``follow_up``.
    4. **Gaps depend on severity.** The days to the next visit are ``1 +`` an exponential with
       mean 7 after a visit with a severe code, 30 after one with an acute code, 90 after one
       with chronic codes only, and 180 otherwise (rounded to days).
    5. Each patient has ``2 + Geometric`` visits (mean ``mean_visits``, at most
       ``max_visits``), the first one on a day uniform in 2015-2019.

    Patients are ``P00000``, ``P00001``, ...; their visits' codes are sorted.

    >>> patients = synthetic_visits(3, seed=0)
    >>> [p.patient_id for p in patients], all(len(p.visits) >= 2 for p in patients)
    (['P00000', 'P00001', 'P00002'], True)
    >>> synthetic_visits(3, seed=0) == patients
    True
    """
    cfg = config if config is not None else SyntheticVisitsConfig()
    if not isinstance(num_patients, int) or num_patients < 1:
        raise ValueError(f"num_patients: expected a positive integer, found {num_patients!r}")
    rng = np.random.default_rng(seed)
    prevalence = 0.3 / (1 + np.arange(cfg.chronic) / 4)
    popularity = 1 / (1 + np.arange(cfg.acute) / 10)
    popularity /= popularity.sum()
    first_severe = cfg.acute - cfg.severe
    start = (np.datetime64("2015-01-01") - np.datetime64("1970-01-01")).astype(int)
    patients = []
    for p in range(num_patients):
        count = min(cfg.max_visits, 2 + int(rng.geometric(1 / (cfg.mean_visits - 1))) - 1)
        chronic = set(np.flatnonzero(rng.random(cfg.chronic) < prevalence).tolist())
        day = float(start + rng.integers(0, 5 * 365))
        episodes: set[int] = set()
        follow_ups: set[int] = set()
        visits = []
        for _ in range(count):
            for c in range(cfg.chronic):
                if c not in chronic and rng.random() < cfg.onset_hazard:
                    chronic.add(c)
            codes = {f"FUP{i:03d}" for i in follow_ups if rng.random() < cfg.follow_up}
            for c in sorted(chronic):
                if rng.random() < cfg.code_chronic:
                    codes.add(f"CHR{c:02d}")
                if rng.random() < cfg.code_medication:
                    codes.add(f"MED{c:02d}")
            episodes = {a for a in episodes if rng.random() < cfg.continue_acute}
            new = int(rng.poisson(cfg.new_acute_rate))
            if new == 0 and not codes and not episodes:
                new = 1
            linked = min(0.8, 0.4 * len(chronic))
            for _ in range(new):
                if chronic and rng.random() < linked:
                    c = int(rng.choice(sorted(chronic)))
                    episodes.add((3 * c + int(rng.integers(3))) % cfg.acute)
                else:
                    episodes.add(int(rng.choice(cfg.acute, p=popularity)))
            codes |= {f"ACU{a:03d}" for a in episodes}
            follow_ups = {a - first_severe for a in episodes if a >= first_severe}
            visits.append(Visit(day, tuple(sorted(codes))))
            mean = 7 if follow_ups else 30 if episodes else 90 if chronic else 180
            day += float(1 + round(rng.exponential(mean)))
        patients.append(Patient(f"P{p:05d}", tuple(visits)))
    return patients


# ---------------------------------------------------------------------------------------------
# Examples for next-visit prediction, baselines and measures

KS = (10, 20, 30)
"""The k of the recall@k figures (Doctor AI's)."""


class PatientExample(dict):
    """An example (``stream name -> tensor``) that also keeps its patient (``.patient``), for
    the rows of a predictions file. A minibatch source sees only the streams."""

    patient: Patient

    def __init__(self, streams: Mapping[str, Any], patient: Patient) -> None:
        super().__init__(streams)
        self.patient = patient


def split_patients(
    patients: Sequence[Patient], split: Sequence[float], seed: int
) -> tuple[list[Patient], list[Patient], list[Patient]]:
    """Patients with at least two visits, shuffled (seeded) and cut into three parts.

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


def visit_features(patient: Patient, codes: Sequence[str]) -> Tensor:
    """``[n, V+1]``: each of the patient's n visits as the multi-hot vector of its codes among
    ``codes`` (``V = len(codes)``; other codes are left out) and ``log(1 + days since the
    previous visit)`` (0 at the first visit).

    >>> p = Patient("p", (Visit(0.0, ("A",)), Visit(9.0, ("A", "B")), Visit(10.0, ("C",))))
    >>> visit_features(p, ["A", "B"]).tolist()
    [[1.0, 0.0, 0.0], [1.0, 1.0, 2.3025851249694824], [0.0, 0.0, 0.6931471824645996]]
    """
    import torch

    index = {c: i for i, c in enumerate(codes)}
    v = len(codes)
    features = torch.zeros(len(patient.visits), v + 1)
    for t, visit in enumerate(patient.visits):
        features[t, [index[c] for c in visit.codes if c in index]] = 1.0
    times = torch.tensor([visit.time for visit in patient.visits], dtype=torch.float64)
    features[1:, v] = torch.log1p(torch.diff(times)).float()
    return features


def visit_examples(patients: Sequence[Patient], codes: Sequence[str]) -> list[PatientExample]:
    """One example per patient with n >= 2 visits (patients with fewer are left out):

    ``"features"`` ``[n-1, V+1]``: visits 1..n-1 (:func:`visit_features`); ``"labels"``
    ``[n-1, V+1]``: visits 2..n, multi-hot and ``log(1 + days to it)``; ``"sizes"``
    ``[n-1, 1]``: the number of distinct codes of each target visit, known or not.

    >>> p = Patient("p", (Visit(0.0, ("A",)), Visit(9.0, ("A", "B")), Visit(10.0, ("C",))))
    >>> ex = visit_examples([p], ["A", "B", "C"])[0]
    >>> ex["features"].tolist()  # [A, B, C, log(1 + gap)] at visits 1 and 2
    [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.3025851249694824]]
    >>> ex["labels"].tolist()  # the next visit's codes and log(1 + days to it)
    [[1.0, 1.0, 0.0, 2.3025851249694824], [0.0, 0.0, 1.0, 0.6931471824645996]]
    """
    import torch

    examples = []
    for patient in patients:
        if len(patient.visits) < 2:
            continue
        every = visit_features(patient, codes)
        sizes = torch.tensor([[float(len(visit.codes))] for visit in patient.visits[1:]])
        streams = {"features": every[:-1], "labels": every[1:].clone(), "sizes": sizes}
        examples.append(PatientExample(streams, patient))
    return examples


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

    >>> import torch
    >>> recall_at_k(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[1.0, 1.0, 0.0]]), 2).tolist()
    [0.5]
    """
    k = min(k, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices
    hits = targets.gather(-1, top).sum(-1)
    total = targets.sum(-1) if sizes is None else sizes.reshape(-1).to(hits.dtype)
    return hits / total.clamp(min=1)


def frequency_scores(patients: Sequence[Patient], codes: Sequence[str]) -> Tensor:
    """``[V]``: how often each code occurs in ``patients``' visits (the training patients)."""
    import torch

    counts = Counter(c for p in patients for v in p.visits for c in v.codes)
    return torch.tensor([float(counts[c]) for c in codes])


def history_scores(features: Tensor, frequency: Tensor) -> Tensor:
    """``[n-1, V]``: at each visit, the patient's count of each code so far, plus 0.5 for the
    codes of the current visit, plus the overall frequency scaled below 0.01 (to rank codes
    the patient never had).

    >>> import torch
    >>> f = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 2.3]])
    >>> history_scores(f, torch.tensor([0.0, 0.0, 5.0])).tolist()
    [[1.5, 0.0, 0.009999999776482582], [1.0, 1.5, 0.009999999776482582]]
    """
    hot = features[:, :-1]
    return hot.cumsum(0) + 0.5 * hot + 0.01 * frequency / frequency.max().clamp(min=1)
