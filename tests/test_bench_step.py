"""bench/bench_step.py: its hand-written demand forecaster is the recipe's model, so that the
bench times the same computation on both sides."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import bench_step as bs
finally:
    sys.path.remove(str(ROOT / "bench"))


def test_plain_forecaster_equals_the_recipe_model_and_trains_alike() -> None:
    """The plain RevIN, segments, LSTM and inverse give the recipe model's forecasts for real
    demand windows (float32 rounding), and the two training loops' first losses agree."""
    shared_data("timeseries/elecdemand-2014.csv")
    config = bs.demand_config(threads=1)
    data = bs.RECIPE.load_data(config)
    torch.manual_seed(0)
    model = bs.RECIPE.build_model(config, data)
    plain = bs.PlainForecaster(8, config.hidden_size, config.horizon)
    with torch.no_grad():  # weights away from RevIN's identity, so the affine part counts
        model.revin.weight.fill_(1.3)
        model.revin.bias.fill_(-0.2)
    bs.plain_weights(model, plain)
    examples = data.train[:64]
    source = bs.RECIPE.source(config, examples, training=False)
    mb = source.next_minibatch()
    assert mb is not None
    with torch.no_grad():
        want = model(mb["features"])
        got = plain(torch.stack([examples[i]["features"] for i in mb.indices]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    result = bs.main(["--updates", "25", "--repeats", "1"])
    assert result["largest_loss_difference_first_updates"] < 1e-5
