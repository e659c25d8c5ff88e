"""bench/bench_step.py: its hand-written window forecaster is the recipe's model, so that the
bench times the same computation on both sides."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_data

from rnnkit.data.panel import PanelWarning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import bench_step as bs
finally:
    sys.path.remove(str(ROOT / "bench"))


@pytest.mark.parametrize("data", ["elec", "m1"])
def test_plain_forecaster_equals_the_recipe_model_and_trains_alike(data: str) -> None:
    """The plain RevIN, segments, LSTM and inverse give the recipe model's forecasts for real
    windows (float32 rounding; M1's padded short series included, whose windows hold a single
    observed value), and the two training loops' first losses agree."""
    shared_data("timeseries", bs.SETTINGS[data]["csv"].name)
    config = bs.window_config(data, threads=1)
    with short_series_reported(data):
        loaded = bs.RECIPE.load_data(config)
    torch.manual_seed(0)
    model = bs.RECIPE.build_model(config, loaded)
    with torch.no_grad():  # weights away from RevIN's identity, so the affine part counts
        model.revin.weight.fill_(1.3)
        model.revin.bias.fill_(-0.2)
    examples = loaded.train[:64]
    plain = bs.plain_model(model, examples[0]["features"].shape[-1])
    assert plain.patch == (8 if data == "elec" else 1)
    mb = bs.RECIPE.source(config, examples, training=False).next_minibatch()
    assert mb is not None
    with torch.no_grad():
        want = model(mb["features"])
        got = plain(torch.stack([examples[i]["features"] for i in mb.indices]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with short_series_reported(data):
        result = bs.main(["--data", data, "--updates", "25", "--repeats", "1"])
    assert result["largest_loss_difference_first_updates"] < 1e-5


def short_series_reported(data: str) -> contextlib.AbstractContextManager[object]:
    """M1's series too short for a training window are left out, with a warning."""
    if data == "m1":
        return pytest.warns(PanelWarning, match="left out of the train windows")
    return contextlib.nullcontext()
