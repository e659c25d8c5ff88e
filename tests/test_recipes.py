"""The recipe harness: options from typed settings, the one training path, the run directory,
predict / load / diagnose on a saved run, progress on a terminal and on a pipe, cost control.

The recipe used is solar on the CNTK book's files, with epochs of a few hundred samples."""

import csv
import dataclasses
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from rnnkit import load
from rnnkit.cli import main
from rnnkit.data.solar import book_examples
from rnnkit.recipes import RECIPES, get_recipe
from rnnkit.recipes.options import TrainSettings, config_from_dict, config_to_dict
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.recipes.solar import SolarConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cntk-book"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")
TINY = ["--epochs", "1", "--epoch-size", "300", "--threads", "1", "--quiet"]


def _subprocess(code: str, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def solar_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "solar"
    assert main(["solar", *TINY, "--run-dir", str(run)]) == 0
    return run


# ----------------------------------------------------------------------------- options


def test_settings_check_their_ranges():
    with pytest.raises(ValueError, match=r"^epochs: expected an integer >= 1, found 0$"):
        TrainSettings(epochs=0)
    with pytest.raises(ValueError, match=r"learning_rate: expected a number > 0, found -1"):
        TrainSettings(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"schedule: expected one of 'constant', 'cosine'"):
        TrainSettings(schedule="linear")
    assert TrainSettings(epochs=10, ensemble=3).member_epochs == 3
    assert TrainSettings(epochs=2, ensemble=5).member_epochs == 1


def test_config_round_trips_through_json():
    config = SolarConfig(data="days", model="better", train=TrainSettings(epochs=3, seed=7))
    text = json.dumps(config_to_dict(config))
    assert config_from_dict(SolarConfig, json.loads(text)) == config


@pytest.mark.parametrize(
    "argv,message",
    [
        (["solar", "--epochs", "-1"], "argument --epochs: expected an integer >= 1, found -1"),
        (["solar", "--epochs", "two"], "argument --epochs: expected an integer >= 1, found 'two'"),
        (["solar", "--learning-rate", "0"], "argument --learning-rate: expected a number > 0"),
        (["solar", "--data", "x"], "argument --data: invalid choice: 'x'"),
        (["solar", "--preset", "nope"], "argument --preset: expected one of 'book', 'honest'"),
        (["solar", "--model", "better"], "model: the book's CTF files hold only the total"),
        (["solar", "--time-budget", "-5"], "argument --time-budget: expected a number > 0"),
        (["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, found 0"),
        (["demo", "--cell", "rnn"], "argument --cell: invalid choice: 'rnn' (choose from"),
        (["nope"], "argument command: invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_help_shows_every_default_and_presets_change_them(capsys):
    with pytest.raises(SystemExit):
        main(["solar", "--help"])
    text = capsys.readouterr().out
    assert "--epochs N" in text and "(default: 10)" in text
    assert "--learning-rate X" in text and "(default: 0.005)" in text
    with pytest.raises(SystemExit):
        main(["solar", "--preset", "better", "--help"])
    text = capsys.readouterr().out
    assert "(default: better)" in text  # --model's default under the preset
    assert "(default: 4)" in text  # --patience


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from rnnkit.cli import main\n"
        "for argv in (['--help'], ['solar', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))\n"
    )
    result = _subprocess(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_recipe_module_imports_without_torch():
    names = sorted({entry.module for entry in RECIPES.values()})
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('torch' in sys.modules)\n"
    )
    result = _subprocess(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == "rnnkit 0.1.0"


# ----------------------------------------------------------------------------- the run


@needs_data
def test_run_directory_holds_the_contract(solar_run):
    names = {p.name for p in solar_run.iterdir()}
    assert names == set(CONTRACT)
    info = json.loads((solar_run / "run.json").read_text())
    assert info["recipe"] == "solar" and info["rnnkit_version"] == "0.1.0"
    assert info["config"]["train"]["epochs"] == 1 and info["threads"] == 1
    assert info["seed"] == 0 and info["machine"]["torch"] == torch.__version__
    files = {Path(f["path"]).name: f for f in info["inputs"]}
    assert set(files) == {"solar_train.ctf", "solar_val.ctf"}
    assert files["solar_val.ctf"]["bytes"] == (DATA / "solar_val.ctf").stat().st_size
    assert len(files["solar_val.ctf"]["sha256"]) == 64
    assert set(info["timings"]) >= {"data_seconds", "train_seconds", "total_seconds"}
    with (solar_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["val_loss"]) == pytest.approx(
        info["result"]["val_loss"], rel=1e-6
    )
    assert (solar_run / "curves.png").stat().st_size > 1000
    report = (solar_run / "report.md").read_text()
    assert "| model |" in report and "| last reading |" in report


@needs_data
def test_predictions_are_the_saved_models_outputs(solar_run):
    """predictions.csv against the reloaded model applied to each test sequence alone."""
    with (solar_run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    examples = book_examples(DATA / "solar_val.ctf")
    assert len(rows) == len(examples)
    model = load(solar_run).eval()
    from rnnkit import SequenceBatch

    for i in (0, 1, 777, len(examples) - 1):
        x = SequenceBatch.from_list([examples[i]["features"]])
        with torch.no_grad():
            expected = model(x).item()
        assert rows[i]["id"] == str(i)
        assert float(rows[i]["prediction"]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert float(rows[i]["target"]) == pytest.approx(examples[i]["target"].item(), rel=1e-5)
    info = json.loads((solar_run / "run.json").read_text())
    mse = sum((float(r["prediction"]) - float(r["target"])) ** 2 for r in rows) / len(rows)
    assert info["result"]["test_mse"] == pytest.approx(mse, rel=1e-4)
    assert info["result"]["test_mse"] == pytest.approx(info["result"]["test_loss"], rel=1e-4)


@needs_data
def test_predict_on_a_new_file(solar_run, tmp_path):
    lines = (DATA / "solar_val.ctf").read_text().splitlines()
    first_ids = []
    for line in lines:
        key = line.split()[0]
        if key not in first_ids:
            first_ids.append(key)
        if len(first_ids) > 3:
            break
    subset = [line for line in lines if line.split()[0] in first_ids[:3]]
    new = tmp_path / "new.ctf"
    new.write_text("\n".join(subset) + "\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(solar_run), str(new), "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    with (solar_run / "predictions.csv").open() as f:
        test_rows = list(csv.DictReader(f))[:3]
    assert [r["id"] for r in rows] == ["new.ctf:0", "new.ctf:1", "new.ctf:2"]
    for row, saved in zip(rows, test_rows, strict=True):
        assert float(row["prediction"]) == pytest.approx(float(saved["prediction"]), rel=1e-5)


@needs_data
def test_predict_refuses_a_missing_file_and_a_folder_without_run(solar_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(solar_run), str(tmp_path / "none.ctf")])
    assert exit_info.value.code == 2
    (tmp_path / "x.ctf").write_text("0 |features 1\n")
    assert main(["predict", str(tmp_path), str(tmp_path / "x.ctf")]) == 1
    assert "run.json" in capsys.readouterr().err


@needs_data
def test_load_in_a_fresh_interpreter_without_the_recipe(solar_run):
    code = (
        "import sys, torch, rnnkit\n"
        f"model = rnnkit.load({str(solar_run)!r}).eval()\n"
        "x = rnnkit.SequenceBatch.from_list([torch.tensor([[0.1], [0.2], [0.3]])])\n"
        "with torch.no_grad():\n"
        "    print(model(x).item())\n"
        "print(any(m.startswith(('rnnkit.recipes', 'rnnkit.tasks')) for m in sys.modules))\n"
    )
    result = _subprocess(code)
    assert result.returncode == 0, result.stderr
    value, imported = result.stdout.split()
    assert imported == "False"
    model = load(solar_run).eval()
    from rnnkit import SequenceBatch

    with torch.no_grad():
        expected = model(SequenceBatch.from_list([torch.tensor([[0.1], [0.2], [0.3]])])).item()
    assert float(value) == pytest.approx(expected, rel=1e-6)


@needs_data
def test_diagnose_a_saved_run(solar_run, capsys):
    assert main(["diagnose", str(solar_run)]) == 0
    assert "layers.0: |dL/dh_t| from" in capsys.readouterr().out
    assert (solar_run / "gradients.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- cost control


@needs_data
def test_time_budget_stops_at_a_step_and_says_so(tmp_path):
    run = tmp_path / "budget"
    argv = ["solar", "--epochs", "50", "--epoch-size", "2000", "--threads", "1", "--quiet"]
    assert main([*argv, "--time-budget", "0.5", "--run-dir", str(run)]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["result"]["time_budget_reached"] is True
    assert info["result"]["epochs"][0] < 50
    assert info["training"][0]["stop"].startswith("time budget: 0.5 s reached at step")
    assert "The time budget of 0.5 s stopped training" in (run / "report.md").read_text()


@needs_data
def test_epochs_bound_the_whole_ensemble(tmp_path):
    run = tmp_path / "ensemble"
    argv = ["solar", "--epochs", "4", "--ensemble", "2", "--epoch-size", "200", "--threads", "1"]
    assert main([*argv, "--quiet", "--run-dir", str(run)]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["result"]["epochs"] == [2, 2]
    assert [t["seed"] for t in info["training"]] == [0, 1]
    assert (run / "metrics-2.csv").is_file()
    # the saved model is the mean of the two members
    model = load(run).eval()
    from rnnkit import SequenceBatch

    x = SequenceBatch.from_list([torch.tensor([[0.1], [0.3]])])
    with torch.no_grad():
        members = [m(x) for m in model.members]
        torch.testing.assert_close(model(x), (members[0] + members[1]) / 2)
        assert not torch.equal(members[0], members[1])


@needs_data
def test_config_dataclass_is_the_api(tmp_path):
    from rnnkit.recipes.harness import run_recipe

    recipe = get_recipe("solar")
    config = dataclasses.replace(
        SolarConfig(epoch_size=200), train=TrainSettings(epochs=1, minibatch_size=140, threads=1)
    )
    result = run_recipe(recipe, config, tmp_path / "api", progress=False, log=lambda _: None)
    assert result.figures["epochs"] == [1]
    assert len(result.predictions) == len(result.data.test)


# ----------------------------------------------------------------------------- progress


def _solar_command(run: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from rnnkit.cli import main; sys.exit(main(sys.argv[1:]))",
        "solar",
        "--epochs",
        "2",
        "--epoch-size",
        "300",
        "--threads",
        "1",
        "--run-dir",
        str(run),
    ]


@needs_data
def test_progress_on_a_pipe_is_cntks_table(tmp_path):
    result = subprocess.run(
        _solar_command(tmp_path / "pipe"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "Finished Epoch[1 of 2]: loss = " in result.stdout
    assert "Finished Epoch[2 of 2]: loss = " in result.stdout
    assert ", mse = " in result.stdout and "%" not in result.stdout.split("mse = ")[1][:12]
    assert "\r" not in result.stderr and "samples/s]" not in result.stderr


@needs_data
def test_progress_on_a_terminal_is_one_bar_and_no_table(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        _solar_command(tmp_path / "tty"),
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        # an epoch here takes milliseconds: redraw on every update so the bar's rate and
        # loss are on screen however fast the machine is (tqdm reads TQDM_* overrides)
        env={**os.environ, "TQDM_MININTERVAL": "0"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    stdout, _ = process.communicate(timeout=300)
    os.close(leader)
    assert process.returncode == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "epoch 1/2" in screen and "samples/s" in screen and "loss=" in screen
    assert "epoch 2/2: loss " in screen  # the line each finished epoch leaves above the bar
    assert "Finished Epoch" not in stdout and "Finished Epoch" not in screen


def test_cosine_schedule_spans_an_epoch_size_counted_in_label_samples(tmp_path):
    """The solar files have one target per sequence: ``--epoch-size`` counts those label
    samples (as the trainer does), not time steps, so the cosine rate falls once over the
    whole run, to about zero at its last update, instead of cycling every few updates."""
    run = tmp_path / "cosine"
    argv = ["solar", "--epochs", "3", "--epoch-size", "3000", "--schedule", "cosine"]
    assert main([*argv, "--threads", "1", "--quiet", "--run-dir", str(run)]) == 0
    with open(run / "metrics.csv", newline="") as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    start = SolarConfig().train.learning_rate
    assert len(rates) == 3 and rates[0] > rates[1] > rates[2]
    assert rates[2] < 1e-3 * start


@pytest.mark.parametrize(("weight_decay", "decoupled"), [(0.0, False), (0.01, False), (0.1, True)])
def test_recipe_adam_is_torch_adam_in_fused_form(weight_decay: float, decoupled: bool) -> None:
    """The recipes' optimizer is torch's Adam (AdamW when decoupled) in its fused form; over
    a few updates its weights must follow torch's plain per-tensor implementation of the
    same rule to float32 rounding."""
    from rnnkit import Dense, Fold, LSTMCell, SequenceBatch
    from rnnkit.recipes.harness import adam

    torch.manual_seed(4)
    models = [Fold(LSTMCell(3, 5)) >> Dense(5, 2) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = [p.detach().clone() for p in models[0].parameters()]
    fused = adam(models[0], 0.01, weight_decay, decoupled=decoupled)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    plain = kind(models[1].parameters(), lr=0.01, weight_decay=weight_decay, foreach=False)
    assert type(fused) is kind and fused.defaults["fused"] is True
    x = SequenceBatch.from_list([torch.randn(n, 3) for n in (4, 2, 5)])
    for _ in range(6):
        for model, optimizer in ((models[0], fused), (models[1], plain)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    moved = [(a - b).abs().max().item() for a, b in zip(models[0].parameters(), start, strict=True)]
    assert min(moved) > 1e-3  # every tensor was updated


def test_recipe_adam_of_a_lazy_model_is_not_fused() -> None:
    """Parameters whose shapes are still unknown cannot be fused: such a model gets torch's
    default form of Adam."""
    from rnnkit import Dense, Fold, LSTMCell
    from rnnkit.recipes.harness import adam

    lazy = Fold(LSTMCell(None, 4)) >> Dense(4, 1)
    assert any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in lazy.parameters())
    assert not adam(lazy, 0.01).defaults["fused"]
