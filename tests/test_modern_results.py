"""bench/modern_results.py: a ``--quick`` run of 2 tasks x 2 models in a temporary cache,
its JSON figures recomputed from the saved predictions and the saved labels recomputed from
the tasks' own definitions, the cache reused, bad names refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import SequenceBatch
from rnnkit.data.listops import evaluate_listops, listops_token_ids, read_listops_tsv
from rnnkit.data.synthetic import selective_copy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import modern_results as mr
finally:
    sys.path.remove(str(ROOT / "bench"))

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = ["--quick", "--tasks", "selective_copy,listops", "--models", "lstm,hawk"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    cache = tmp_path_factory.mktemp("modern")
    return cache, mr.main([*ARGS, "--cache-dir", str(cache)])


def accuracy(predicted: list, labels: list) -> float:
    """Percent of equal entries, in plain Python over nested lists."""
    flat_p = [v for row in predicted for v in (row if isinstance(row, list) else [row])]
    flat_l = [v for row in labels for v in (row if isinstance(row, list) else [row])]
    assert len(flat_p) == len(flat_l) > 0
    return 100.0 * sum(p == t for p, t in zip(flat_p, flat_l, strict=True)) / len(flat_l)


def test_one_cached_json_per_task_and_model(run):
    cache, results = run
    assert [(r["task"], r["model"]) for r in results] == [
        ("selective_copy", "lstm"),
        ("selective_copy", "hawk"),
        ("listops", "lstm"),
        ("listops", "hawk"),
    ]
    for r in results:
        saved = json.loads((cache / f"{r['task']}-quick-{r['model']}.json").read_text())
        assert saved == json.loads(json.dumps(r))
        assert saved["updates"] == 3 and saved["settings"]["quick"]
        assert 0 < saved["parameters"] < 5_000


def test_accuracy_is_what_the_saved_predictions_score(run):
    _, results = run
    for r in results:
        expected = accuracy(r["predictions"]["predicted"], r["predictions"]["labels"])
        assert r["test"]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_saved_labels_are_the_tasks_own(run):
    cache, results = run
    # selective copy: the test set is seed 2; its targets rebuilt in plain Python from x
    x, _ = selective_copy(64, 12, 4, 6, seed=2)
    rebuilt = [[t for t in row[:12] if t != 0] for row in x.tolist()]
    # ListOps: the cached test expressions, evaluated again
    examples = read_listops_tsv(cache / "data" / "listops-quick-test.tsv")
    values = [evaluate_listops(e.sequence) for e in examples]
    for r in results:
        labels = r["predictions"]["labels"]
        assert labels == (rebuilt if r["task"] == "selective_copy" else values)


def test_rerun_reads_the_cache_and_prints_the_table(run, capsys):
    cache, results = run
    stamps = {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    again = mr.main([*ARGS, "--cache-dir", str(cache)])
    assert again == results
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.json")} == stamps
    out = capsys.readouterr().out
    for r in results:
        shown = f"{r['test']['accuracy']:.1f} %"
        assert f"| {r['task']} | {r['model']} | {shown} | {r['parameters']:,} | 3 |" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "lstm,transformer"], "--models: expected names from lstm"),
        (["--tasks", "imdb"], "--tasks: expected names from selective_copy"),
        (["--budget-seconds", "0"], "--budget-seconds, --updates: expected > 0"),
        (["--listops-train", "0"], "--listops-train, --validations: expected >= 1, found 0"),
        (["--validations", "0"], "--listops-train, --validations: expected >= 1, found 1200, 0"),
    ],
)
def test_bad_arguments_are_refused(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        mr.main([*argv, "--cache-dir", str(tmp_path)])


def test_a_cache_written_before_a_setting_existed_is_read_with_its_default(run, capsys):
    cache, results = run
    first = next(iter(sorted(cache.glob("*.json"))))
    saved = json.loads(first.read_text())
    del saved["settings"]["validations"], saved["settings"]["listops_train"]
    first.write_text(json.dumps(saved))
    stamp = first.stat().st_mtime_ns
    assert mr.main([*ARGS, "--cache-dir", str(cache)]) == [
        saved if r["task"] == saved["task"] and r["model"] == saved["model"] else r for r in results
    ]
    assert first.stat().st_mtime_ns == stamp  # read, not rerun


def test_a_variant_names_what_it_changes() -> None:
    assert mr.Settings().suffix("listops") == ""
    longer = mr.Settings(listops_train=12_000, budget_seconds=1_500, validations=10)
    assert longer.suffix("listops") == "-train12000-b1500s-v10"
    assert longer.suffix("lm") == "-b1500s-v10"
    assert mr.Settings(params=120_000).suffix("fashion_mnist") == "-p120000"
    assert mr.Settings(listops_min_length=100, listops_max_length=400).suffix("listops") == (
        "-100-400"
    )


def test_more_listops_training_keeps_the_held_out_parts_and_never_repeats_them(tmp_path) -> None:
    short = {"listops_min_length": 20, "listops_max_length": 60}
    base = mr.listops_data(mr.Settings(**short), tmp_path)
    more = mr.listops_data(mr.Settings(**short, listops_train=1_300), tmp_path)
    assert [len(more[k]) for k in ("train", "validation", "test")] == [1_300, 100, 400]
    assert more["validation"] == base["validation"] and more["test"] == base["test"]
    assert more["train"][:1_200] == base["train"]
    train = [e.sequence for e in more["train"]]
    held = {e.sequence for e in more["validation"] + more["test"]}
    assert len(set(train)) == len(train) and not set(train) & held
    assert mr.listops_data(mr.Settings(**short, listops_train=1_300), tmp_path) == more  # cached


def test_a_curriculum_trains_on_each_stage_in_turn_then_on_the_training_part(tmp_path) -> None:
    settings = mr.Settings(quick=True, listops_curriculum="5-12:40,13-30:30")
    task = mr.listops_task(settings, tmp_path)
    data = mr.listops_data(settings, tmp_path)
    held = {e.sequence for e in data["validation"] + data["test"]}
    stages = mr.curriculum_data(settings, tmp_path, data["validation"] + data["test"])
    assert [len(s) for s in stages] == [40, 30]
    for (low, high), stage in zip([(5, 12), (13, 30)], stages, strict=True):
        assert all(low <= len(e.sequence.split()) <= high for e in stage)
        assert all(e.label == evaluate_listops(e.sequence) for e in stage)
        assert not {e.sequence for e in stage} & held
    pools = [
        {tuple(listops_token_ids(e.sequence).tolist()): e.label for e in part}
        for part in (*stages, data["train"])
    ]
    for progress, pool in [(0.0, 0), (0.32, 0), (0.34, 1), (0.67, 2), (1.0, 2)]:
        x, y = task.train_batch(0, progress)
        rows = [tuple(r.tolist()) for r in x.to_list()]
        assert [pools[pool].get(r) for r in rows] == y.tolist()
        assert len(rows) == 4
    # the stages are cached: a second call reads the same expressions back
    assert mr.curriculum_data(settings, tmp_path, data["validation"] + data["test"]) == stages
    assert settings.suffix("listops") == "-quick"
    longer = mr.Settings(listops_curriculum="20-100:30000,100-500:20000", readout="last")
    assert longer.suffix("listops") == "-c20-100x30000-c100-500x20000-last"
    assert longer.suffix("lm") == ""


def test_the_last_step_readout_is_each_sequences_own_last_logits() -> None:
    torch.manual_seed(0)
    net = mr.build("lstm", 8, 1, 15, 0, 10)
    seqs = [torch.randint(0, 15, (n,)) for n in (5, 9, 2)]
    with torch.no_grad():
        got = mr.pooled_logits(net, SequenceBatch.from_list(seqs), "last")
        mean = mr.pooled_logits(net, SequenceBatch.from_list(seqs), "mean")
        for i, s in enumerate(seqs):
            alone, _ = net(SequenceBatch.from_list([s])).to_padded()
            torch.testing.assert_close(got[i], alone[0, -1], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(mean[i], alone[0].mean(dim=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20-100", "expected stages MIN-MAX:COUNT separated by commas, found '20-100'"),
        ("20:100", "expected stages MIN-MAX:COUNT separated by commas, found '20:100'"),
        ("100-20:5", "expected 1 <= MIN <= MAX and COUNT >= 1, found '100-20:5'"),
        ("20-100:0", "expected 1 <= MIN <= MAX and COUNT >= 1, found '20-100:0'"),
    ],
)
def test_a_bad_curriculum_is_refused(text, message, tmp_path) -> None:
    with pytest.raises(SystemExit, match=message):
        mr.main(["--listops-curriculum", text, "--cache-dir", str(tmp_path)])


def test_zero_layers_are_refused(tmp_path) -> None:
    with pytest.raises(SystemExit, match="--layers: expected >= 1, found 0"):
        mr.main(["--layers", "0", "--cache-dir", str(tmp_path)])


def test_the_cosine_schedule_falls_from_the_rate_to_zero_over_the_budget() -> None:
    cosine = mr.Settings(schedule="cosine", rate=0.002)
    got = [mr.learning_rate(cosine, p) for p in (0.0, 0.25, 0.5, 0.75, 1.0, 1.2)]
    # 0.001 * (1 + cos(pi p)) at each p, worked by hand: cos(pi/4) = 0.7071068
    assert got == pytest.approx([0.002, 0.0017071068, 0.001, 0.0002928932, 0.0, 0.0])
    assert mr.learning_rate(mr.Settings(rate=0.002), 0.75) == 0.002
    assert cosine.suffix("listops") == cosine.suffix("lm") == "-cosine"
