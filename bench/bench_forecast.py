"""rnnkit against darts and NeuralForecast on the same forecasting windows (issue 19, item 6).

For each data set (co2, elec, m1), loss (point, quantile) and seed (0, 1, 2) this runs
``rnnkit forecast`` through its command line (``--seed S --threads 1``, reading the run
directory's ``run.json``) and each peer through ``.venv-bench/bin/python
bench/forecast_peers.py`` (made by ``bash bench/forecast_env.sh``), caches every run's figures
as JSON under ``bench/results/forecast/`` (a rerun skips the cached ones unless ``--force``), and
prints a markdown table with the targets' checks::

    .venv/bin/python bench/bench_forecast.py                 # all runs, cached
    .venv/bin/python bench/bench_forecast.py --write /tmp/forecast.md
    .venv/bin/python bench/bench_forecast.py --quick         # co2, one seed, 2 epochs

The targets: rnnkit's mean test MAE at most the best peer's (point runs), rnnkit's mean
training time at most half the faster peer's (point runs), and rnnkit's 80 % interval covering
75-85 % of the test targets (quantile runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = "../shared/data/timeseries"
RESULTS = ROOT / "bench" / "results" / "forecast"
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PEER_SCRIPT = ROOT / "bench" / "forecast_peers.py"

# rnnkit's command per data set (after ``rnnkit``); every run adds RNNKIT_RUN, and the
# quantile runs add RNNKIT_LOSS["quantile"].
RNNKIT_COMMANDS: dict[str, list[str]] = {
    "co2": ["forecast", "--preset", "co2"],
    "elec": [
        "forecast",
        f"{DATA}/elecdemand-2014.csv",
        "--target",
        "Demand",
        "--known",
        "WorkDay,Temperature",
        "--input-length",
        "96",
        "--horizon",
        "48",
        "--season",
        "48",
    ],
    "m1": [
        "forecast",
        f"{DATA}/m1-yearly.csv",
        "--series-id",
        "series_id",
        "--time-column",
        "time",
        "--target",
        "value",
        "--horizon",
        "6",
        "--input-length",
        "6",
        "--season",
        "1",
    ],
}
RNNKIT_RUN = ["--threads", "1", "--quiet"]  # then --seed S --run-dir DIR
RNNKIT_LOSS = {"point": [], "quantile": ["--loss", "quantile"]}
PEERS = ("darts", "neuralforecast")
LIBRARIES = ("rnnkit", *PEERS)
DATASETS = tuple(RNNKIT_COMMANDS)
LOSSES = ("point", "quantile")
SEEDS = (0, 1, 2)
COVERAGE = (0.75, 0.85)


@dataclass(frozen=True)
class Row:
    """One line of the table: a data set, loss and library over its seeds."""

    data: str
    loss: str
    library: str
    mae: dict[int, float]  # per seed
    mase: float | None  # the mean over seeds
    coverage: float | None
    width: float | None
    train_seconds: float | None
    data_seconds: float | None = None  # rnnkit: reading, and --model/--revin auto's short runs

    @property
    def mean_mae(self) -> float | None:
        return _mean(list(self.mae.values()))


def _mean(values: Sequence[float | None]) -> float | None:
    seen = [v for v in values if v is not None]
    return sum(seen) / len(seen) if seen else None


def cache_path(results: Path, data: str, library: str, loss: str, seed: int) -> Path:
    """Where one run's figures are cached.

    >>> cache_path(Path("r"), "co2", "darts", "point", 1).as_posix()
    'r/co2-darts-point-seed1.json'
    """
    return results / f"{data}-{library}-{loss}-seed{seed}.json"


def summarise(records: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The table's rows from the cached runs (each: ``data``, ``library``, ``loss``, ``seed``,
    ``result`` with ``mae``, ``mase`` and maybe ``coverage``, ``width``, and
    ``train_seconds``), in the order data set, loss, library.

    >>> runs = [{"data": "co2", "library": "darts", "loss": "point", "seed": s,
    ...          "result": {"mae": m, "mase": m / 2}, "train_seconds": 10.0 + s}
    ...         for s, m in ((0, 0.4), (1, 0.6))]
    >>> row, = summarise(runs)
    >>> row.mae, round(row.mean_mae, 3), round(row.mase, 3), row.train_seconds, row.coverage
    ({0: 0.4, 1: 0.6}, 0.5, 0.25, 10.5, None)
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        key = (record["data"], record["loss"], record["library"])
        groups.setdefault(key, []).append(record)

    def order(key: tuple[str, str, str]) -> tuple[int, int, int]:
        data, loss, library = key
        return (
            DATASETS.index(data) if data in DATASETS else len(DATASETS),
            LOSSES.index(loss),
            LIBRARIES.index(library),
        )

    rows = []
    for key in sorted(groups, key=order):
        runs = sorted(groups[key], key=lambda r: int(r["seed"]))
        results = [r["result"] for r in runs]
        rows.append(
            Row(
                data=key[0],
                loss=key[1],
                library=key[2],
                mae={int(r["seed"]): float(r["result"]["mae"]) for r in runs},
                mase=_mean([x.get("mase") for x in results]),
                coverage=_mean([x.get("coverage") for x in results]),
                width=_mean([x.get("width") for x in results]),
                train_seconds=_mean([r.get("train_seconds") for r in runs]),
                data_seconds=_mean([r.get("data_seconds") for r in runs]),
            )
        )
    return rows


@dataclass(frozen=True)
class Check:
    """One target on one data set: ``passed`` None when a run it needs is missing."""

    data: str
    target: str
    passed: bool | None
    detail: str


def checks(rows: Sequence[Row]) -> list[Check]:
    """The issue's targets on each data set with runs: rnnkit's mean MAE at most the best
    peer's, its mean training time at most half the faster peer's (both on the point runs),
    and its 80 % interval coverage within 75-85 % (quantile runs).

    >>> rows = [Row("co2", "point", "rnnkit", {0: 0.38}, 0.3, None, None, 2.0),
    ...         Row("co2", "point", "darts", {0: 0.41}, 0.33, None, None, 8.0),
    ...         Row("co2", "point", "neuralforecast", {0: 0.39}, 0.31, None, None, 3.0),
    ...         Row("co2", "quantile", "rnnkit", {0: 0.4}, 0.32, 0.9, 1.5, 2.5)]
    >>> [(c.target, c.passed) for c in checks(rows)]
    [('MAE', True), ('train time', False), ('coverage', False)]
    >>> checks(rows)[1].detail
    'rnnkit 2 s, half the faster peer (neuralforecast) 1.5 s'
    """
    found = {(r.data, r.loss, r.library): r for r in rows}
    out = []
    for data in dict.fromkeys(r.data for r in rows):
        own = found.get((data, "point", "rnnkit"))
        peers = [found[(data, "point", p)] for p in PEERS if (data, "point", p) in found]
        maes = [(p.mean_mae, p.library) for p in peers if p.mean_mae is not None]
        if own is None or own.mean_mae is None or not maes:
            out.append(Check(data, "MAE", None, "needs rnnkit's and a peer's point runs"))
        else:
            best, name = min(maes)
            out.append(
                Check(
                    data,
                    "MAE",
                    own.mean_mae <= best,
                    f"rnnkit {own.mean_mae:.4g}, best peer ({name}) {best:.4g}",
                )
            )
        times = [(p.train_seconds, p.library) for p in peers if p.train_seconds is not None]
        if own is None or own.train_seconds is None or not times:
            out.append(Check(data, "train time", None, "needs rnnkit's and a peer's point runs"))
        else:
            fastest, name = min(times)
            out.append(
                Check(
                    data,
                    "train time",
                    own.train_seconds <= fastest / 2,
                    f"rnnkit {own.train_seconds:.3g} s, half the faster peer ({name}) "
                    f"{fastest / 2:.3g} s",
                )
            )
        quantile = found.get((data, "quantile", "rnnkit"))
        if quantile is None or quantile.coverage is None:
            out.append(Check(data, "coverage", None, "needs rnnkit's quantile runs"))
        else:
            low, high = COVERAGE
            out.append(
                Check(
                    data,
                    "coverage",
                    low <= quantile.coverage <= high,
                    f"rnnkit {100 * quantile.coverage:.1f} % (target {100 * low:.0f}-"
                    f"{100 * high:.0f} %)",
                )
            )
    return out


def _number(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, whole numbers from 10,000 on.

    >>> _number(0.412345), _number(158569.8), _number(None)
    ('0.4123', '158,570', '-')
    """
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{digits}g}"


def markdown(rows: Sequence[Row], seeds: Sequence[int] = SEEDS) -> str:
    """The table and the checks as markdown.

    >>> rows = [Row("co2", "point", "darts", {0: 0.41, 1: 0.39}, 0.32, None, None, 8.04)]
    >>> table = markdown(rows, seeds=(0, 1)).splitlines()
    >>> table[0].split(" | ")[3:6]
    ['MAE seed 0', 'MAE seed 1', 'MAE mean']
    >>> print(*table[2:], sep=chr(10))
    | co2 | point | darts | 0.41 | 0.39 | 0.4 | 0.32 | - | - | 8.04 |
    <BLANKLINE>
    | data | target | met | figures |
    |---|---|---|---|
    | co2 | MAE | - | needs rnnkit's and a peer's point runs |
    | co2 | train time | - | needs rnnkit's and a peer's point runs |
    | co2 | coverage | - | needs rnnkit's quantile runs |
    """
    head = ["data", "loss", "library", *(f"MAE seed {s}" for s in seeds)]
    head += ["MAE mean", "MASE mean", "80 % coverage", "80 % width", "train s mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        coverage = None if r.coverage is None else 100 * r.coverage
        cells = [r.data, r.loss, r.library, *(_number(r.mae.get(s)) for s in seeds)]
        cells += [_number(r.mean_mae), _number(r.mase), _number(coverage, 3), _number(r.width)]
        cells.append(_number(r.train_seconds, 3))
        lines.append("| " + " | ".join(cells) + " |")
    setup = [(r.data, r.loss, r.data_seconds) for r in rows if r.data_seconds is not None]
    if setup:
        each = ", ".join(f"{d} {loss} {_number(x, 3)} s" for d, loss, x in setup)
        lines += [
            "",
            "rnnkit's train s is run.json's `timings.train_seconds`; reading the data and the "
            f"short runs of `--model auto` / `--revin auto` (`timings.data_seconds`): {each}.",
        ]
    lines += ["", "| data | target | met | figures |", "|---|---|---|---|"]
    words = {True: "yes", False: "no", None: "-"}
    for c in checks(rows):
        lines.append(f"| {c.data} | {c.target} | {words[c.passed]} | {c.detail} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def rnnkit_command(data: str, loss: str, seed: int, run_dir: Path, epochs: int | None) -> list[str]:
    """The ``rnnkit`` command line of one run (the executable beside this Python's).

    >>> rnnkit_command("co2", "quantile", 2, Path("d"), None)[1:]
    ['forecast', '--preset', 'co2', '--loss', 'quantile', '--threads', '1', '--quiet', \
'--seed', '2', '--run-dir', 'd']
    """
    executable = str(Path(sys.executable).with_name("rnnkit"))
    command = [executable, *RNNKIT_COMMANDS[data], *RNNKIT_LOSS[loss], *RNNKIT_RUN]
    command += ["--seed", str(seed), "--run-dir", str(run_dir)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    return command


def rnnkit_record(run: Mapping[str, Any]) -> dict[str, Any]:
    """The cached figures of one rnnkit run from its ``run.json``.

    >>> r = rnnkit_record({"result": {"mae": 0.4, "mase": 0.3, "model": "window"},
    ...                    "timings": {"train_seconds": 2.5, "data_seconds": 1.0}})
    >>> r["result"], r["train_seconds"], r["model"]
    ({'mae': 0.4, 'mase': 0.3}, 2.5, 'window')
    """
    result = run["result"]
    figures = {k: float(result[k]) for k in ("mae", "mase", "coverage", "width") if k in result}
    timings = run.get("timings", {})
    return {
        "result": figures,
        "train_seconds": timings.get("train_seconds"),
        "data_seconds": timings.get("data_seconds"),
        "total_seconds": timings.get("total_seconds"),
        "model": result.get("model"),
        "epochs": result.get("epochs"),
    }


def run_rnnkit(data: str, loss: str, seed: int, epochs: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        command = rnnkit_command(data, loss, seed, Path(tmp) / "run", epochs)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        run = json.loads((Path(tmp) / "run" / "run.json").read_text())
    return {**rnnkit_record(run), "wall_seconds": wall, "command": ["rnnkit", *command[1:-2]]}


def run_peer(
    data: str, library: str, loss: str, seed: int, epochs: int | None, out: Path
) -> dict[str, Any]:
    if not PEER_PYTHON.exists():
        raise SystemExit(
            f"{out.name}: not cached, and {PEER_PYTHON} is not there to run it: "
            "run bash bench/forecast_env.sh first"
        )
    command = [str(PEER_PYTHON), str(PEER_SCRIPT), "--data", data, "--library", library]
    command += ["--seed", str(seed), "--loss", loss, "--out", str(out)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "wall_seconds": wall}


def collect(
    datasets: Sequence[str],
    libraries: Sequence[str],
    losses: Sequence[str],
    seeds: Sequence[int],
    results: Path,
    *,
    force: bool = False,
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """Every run's record, from the cache or run now (one at a time) and cached. The
    libraries of one seed run back to back, so that a slow spell of a shared machine falls on
    each library's runs alike rather than on all the runs of one."""
    results.mkdir(parents=True, exist_ok=True)
    records = []
    for data in datasets:
        for loss in losses:
            for seed in seeds:
                for library in libraries:
                    path = cache_path(results, data, library, loss, seed)
                    if path.exists() and not force:
                        records.append(json.loads(path.read_text()))
                        continue
                    print(f"running {path.name}", file=sys.stderr, flush=True)
                    if library == "rnnkit":
                        record = run_rnnkit(data, loss, seed, epochs)
                    else:
                        record = run_peer(data, library, loss, seed, epochs, path)
                    record.update(data=data, library=library, loss=loss, seed=seed)
                    path.write_text(json.dumps(record, indent=2) + "\n")
                    records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=",".join(DATASETS), help="comma-separated data sets")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the cache folder")
    parser.add_argument("--force", action="store_true", help="rerun cached runs")
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epochs")
    parser.add_argument("--write", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="co2, point, seed 0, 2 epochs, cached in a temporary folder; peers skipped "
        "when .venv-bench is absent",
    )
    args = parser.parse_args(argv)
    datasets = _choices("--data", args.data, DATASETS)
    libraries = _choices("--libraries", args.libraries, LIBRARIES)
    losses = _choices("--losses", args.losses, LOSSES)
    seeds = [_seed(s) for s in args.seeds.split(",")]
    if args.quick:
        datasets, losses, seeds = ["co2"], ["point"], [0]
        if not PEER_PYTHON.exists():
            print(f"--quick: {PEER_PYTHON} not found, peers skipped", file=sys.stderr)
            libraries = ["rnnkit"]
        with tempfile.TemporaryDirectory() as tmp:
            records = collect(
                datasets, libraries, losses, seeds, Path(tmp), force=True, epochs=args.epochs or 2
            )
    else:
        records = collect(
            datasets, libraries, losses, seeds, args.results, force=args.force, epochs=args.epochs
        )
    table = markdown(summarise(records), seeds)
    print(table, end="")
    if args.write is not None:
        args.write.write_text(table)
    return table


def _choices(flag: str, text: str, allowed: Sequence[str]) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [n for n in names if n not in allowed]
    if wrong or not names:
        raise SystemExit(f"{flag}: expected some of {', '.join(allowed)}, found {text!r}")
    return names


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"--seeds: expected integers, found {text!r}") from None


if __name__ == "__main__":
    main()
