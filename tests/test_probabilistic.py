"""Probabilistic forecasts (rnnkit.probabilistic): losses, heads and scores.

Oracles: a NumPy loop over the pinball loss; torch.distributions' Normal and StudentT
``log_prob`` for the likelihoods; closed-form Student-t CDFs and quantiles (1, 2 and 4 degrees
of freedom) and the trapezoid integral of the density for other degrees; the CRPS as the
integral of ``(F(x) - 1{x >= y})^2`` on a fine NumPy grid (F from ``math.erf`` or the integral
of the density); the energy-form sample estimator over many draws; binomial tolerances for
coverage; float64 gradcheck; save and load.
"""

from __future__ import annotations

import itertools
import math
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import Fold, GRUCell, SequenceBatch
from rnnkit.probabilistic import (
    GaussianHead,
    QuantileHead,
    StudentTHead,
    check_level,
    check_quantiles,
    crps_from_quantiles,
    crps_from_samples,
    crps_gaussian,
    crps_student_t,
    gaussian_nll,
    interval_coverage,
    interval_scale,
    interval_width,
    mean_pinball_loss,
    quantile_loss,
    scale_interval,
    student_t_nll,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def _with_nans(target: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    hole = torch.rand(target.shape, generator=g) < fraction
    return target.masked_fill(hole, float("nan"))


def _t_pdf(x: np.ndarray, df: float) -> np.ndarray:
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


def _t_cdf_integral(x: float, df: float) -> float:
    """0.5 plus the trapezoid integral of the density from 0 to x (200,001 points)."""
    grid = np.linspace(0.0, x, 200_001)
    return 0.5 + float(np.trapezoid(_t_pdf(grid, df), grid))


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("quantiles", "error", "words"),
    [
        ((0.0, 0.5), ValueError, "strictly inside (0, 1), found 0.0 (position 0)"),
        ((0.5, 1.0), ValueError, "strictly inside (0, 1), found 1.0 (position 1)"),
        ((0.1, 1.5), ValueError, "found 1.5"),
        ((0.9, 0.1), ValueError, "increasing levels, found 0.1 after 0.9"),
        ((0.1, 0.5, 0.5), ValueError, "each level once, found 0.5 twice"),
        ((), ValueError, "at least one level"),
        ((float("nan"),), ValueError, "found nan"),
        ("0.5", TypeError, "a sequence of levels"),
        ((True, 0.5), TypeError, "quantiles[0]: expected a real number, found bool"),
    ],
)
def test_bad_quantiles_are_refused_by_name(quantiles, error, words):
    for build in (
        lambda: check_quantiles(quantiles),
        lambda: QuantileHead(3, 2, quantiles),
        lambda: quantile_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1), quantiles),
        lambda: mean_pinball_loss(np.zeros(1), np.zeros((1, 2)), quantiles),
    ):
        with pytest.raises(error) as info:
            build()
        assert "quantiles" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_levels_outside_the_open_unit_interval_are_refused(level):
    with pytest.raises(ValueError, match=r"level: expected .* strictly inside \(0, 1\)"):
        check_level(level)
    head = GaussianHead(2, 1)
    with pytest.raises(ValueError, match="level: expected"):
        head.interval(head(torch.zeros(1, 2)), level)
    with pytest.raises(TypeError, match="level: expected a real number, found str"):
        check_level("0.8")  # type: ignore[arg-type]


def test_head_arguments_are_checked():
    with pytest.raises(ValueError, match="horizon: expected a positive integer, found 0"):
        GaussianHead(3, 0)
    with pytest.raises(ValueError, match="targets: expected a positive integer, found -1"):
        QuantileHead(3, 2, LEVELS, targets=-1)
    with pytest.raises(ValueError, match="min_scale: expected a positive number, found 0"):
        GaussianHead(3, 2, min_scale=0)
    with pytest.raises(ValueError, match=r"min_df: expected a number >= 1 .*found 0.5"):
        StudentTHead(3, 2, min_df=0.5)


# ---------------------------------------------------------------------------- losses


def test_quantile_loss_equals_a_numpy_loop_and_skips_nan_targets():
    g = torch.Generator().manual_seed(0)
    b, h, n = 5, 4, 2
    out = torch.randn(b, h, n, len(LEVELS), generator=g, dtype=torch.float64)
    target = _with_nans(torch.randn(b, h, n, generator=g, dtype=torch.float64), 0.3, 1)
    target[2] = float("nan")  # a row with no observed target adds 0
    expected = 0.0
    o, t = out.numpy(), target.numpy()
    for i in range(b):
        values = []
        for s in range(h):
            for j in range(n):
                if math.isnan(t[i, s, j]):
                    continue
                per_level = []
                for k, tau in enumerate(LEVELS):
                    d = t[i, s, j] - o[i, s, j, k]
                    per_level.append(tau * d if d >= 0 else (tau - 1) * d)
                values.append(sum(per_level) / len(per_level))
        expected += sum(values) / len(values) if values else 0.0
    loss = quantile_loss(out, target, LEVELS)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # forecasting's labels: [B, H n], step-major
    assert quantile_loss(out, target.reshape(b, h * n), LEVELS).item() == loss.item()


def test_nan_targets_count_as_if_they_were_not_there():
    """A horizon step missing in every row: the loss equals the loss without that step; a row
    with nothing observed: the loss equals the loss without that row. No gradient is NaN."""
    g = torch.Generator().manual_seed(1)
    b, h = 6, 5
    cases = [
        (quantile_loss, torch.randn(b, h, 1, 3, generator=g).sort(-1).values, (0.2, 0.5, 0.8)),
        (gaussian_nll, torch.stack([torch.randn(b, h, 1), torch.rand(b, h, 1) + 0.5], -1), None),
        (
            student_t_nll,
            torch.stack(
                [torch.randn(b, h, 1), torch.rand(b, h, 1) + 0.5, torch.rand(b, h, 1) + 2], -1
            ),
            None,
        ),
    ]
    target = torch.randn(b, h, 1, generator=g)
    for measure, out, levels in cases:
        out = out.clone().requires_grad_(True)

        def loss(o, t, measure=measure, levels=levels):
            return measure(o, t, levels) if levels else measure(o, t)

        holes = target.clone()
        holes[:, 3] = float("nan")
        keep = [0, 1, 2, 4]
        value = loss(out, holes)
        assert value.item() == pytest.approx(loss(out[:, keep], target[:, keep]).item(), rel=1e-6)
        value.backward()
        assert torch.isfinite(out.grad).all() and (out.grad[:, 3] == 0).all()
        empty = target.clone()
        empty[4] = float("nan")
        rows = [0, 1, 2, 3, 5]
        assert loss(out, empty).item() == pytest.approx(
            loss(out[rows], target[rows]).item(), rel=1e-6
        )


def test_likelihoods_equal_torch_distributions():
    g = torch.Generator().manual_seed(2)
    b, h, n = 4, 3, 2
    loc = torch.randn(b, h, n, generator=g, dtype=torch.float64)
    scale = torch.rand(b, h, n, generator=g, dtype=torch.float64) + 0.2
    df = torch.rand(b, h, n, generator=g, dtype=torch.float64) * 10 + 1.1
    target = _with_nans(torch.randn(b, h, n, generator=g, dtype=torch.float64) * 2, 0.25, 3)
    seen = ~torch.isnan(target)
    y = torch.nan_to_num(target)

    def expected(log_prob: torch.Tensor) -> float:
        rows = [(-log_prob[i][seen[i]]).mean() for i in range(b) if seen[i].any()]
        return float(sum(rows))

    normal = torch.distributions.Normal(loc, scale).log_prob(y)
    student = torch.distributions.StudentT(df, loc, scale).log_prob(y)
    gaussian = gaussian_nll(torch.stack([loc, scale], -1), target).item()
    t = student_t_nll(torch.stack([loc, scale, df], -1), target).item()
    assert gaussian == pytest.approx(expected(normal), rel=1e-12)
    assert t == pytest.approx(expected(student), rel=1e-12)


def test_losses_pass_gradcheck_in_float64():
    g = torch.Generator().manual_seed(3)
    b, h, n = 3, 2, 2
    target = _with_nans(torch.randn(b, h, n, generator=g, dtype=torch.float64), 0.3, 4)
    quantiles = torch.randn(b, h, n, 3, generator=g, dtype=torch.float64)
    gauss = torch.stack(
        [torch.randn(b, h, n, dtype=torch.float64), torch.rand(b, h, n, dtype=torch.float64) + 0.5],
        -1,
    )
    t = torch.cat([gauss, torch.rand(b, h, n, 1, dtype=torch.float64) * 5 + 2], -1)
    for fn, x in (
        (lambda o: quantile_loss(o, target, (0.1, 0.5, 0.9)), quantiles),
        (lambda o: gaussian_nll(o, target), gauss),
        (lambda o: student_t_nll(o, target), t),
    ):
        assert torch.autograd.gradcheck(fn, (x.requires_grad_(True),))
    # through each head, to its input and weights
    x = torch.randn(b, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for head in (
        QuantileHead(4, h, (0.1, 0.5, 0.9), targets=n),
        GaussianHead(4, h, n),
        StudentTHead(4, h, n),
    ):
        head = head.double()
        weight = head.dense.weight
        assert torch.autograd.gradcheck(
            lambda x, w, head=head: head.loss(head(x), target), (x, weight)
        )


def test_losses_refuse_mismatched_shapes_by_name():
    out = torch.zeros(2, 3, 1, 2)
    with pytest.raises(
        ValueError,
        match=r"gaussian_nll: expected target \(2, 3, 1\) \(or \(2, 3\), step-major\) .*\(2, 4\)",
    ):
        gaussian_nll(out, torch.zeros(2, 4))
    with pytest.raises(
        ValueError, match=r"student_t_nll: expected output \[S, \.\.\., 3\] .*found \(2, 3, 1, 2\)"
    ):
        student_t_nll(out, torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"quantile_loss: expected output \[S, \.\.\., 3\]"):
        quantile_loss(out, torch.zeros(2, 3, 1), (0.1, 0.5, 0.9))
    with pytest.raises(
        ValueError, match=r"gaussian_nll: expected output scales \[\.\.\., 1\] > 0, found min -1"
    ):
        gaussian_nll(torch.tensor([[[0.0, -1.0]]]), torch.zeros(1, 1))
    with pytest.raises(TypeError, match="both tensors or both SequenceBatches"):
        gaussian_nll(SequenceBatch.from_list([torch.zeros(2, 1, 2)]), torch.zeros(2, 1))


def test_losses_on_sequence_batches_equal_the_loss_on_their_rows():
    """The stream model: one sample per step."""
    head = GaussianHead(3, 2)
    x = SequenceBatch.from_list([torch.randn(4, 3), torch.randn(2, 3)])
    y = SequenceBatch.from_list([torch.randn(4, 2), _with_nans(torch.randn(2, 2), 0.5, 5)])
    out = head(x)
    assert tuple(out.data.shape) == (6, 2, 1, 2)
    assert head.loss(out, y).item() == pytest.approx(
        gaussian_nll(out.data, y.data).item(), rel=1e-7
    )
    lower, _ = head.interval(out, 0.5)
    assert isinstance(lower, SequenceBatch) and torch.equal(
        lower.data, head.interval(out.data, 0.5)[0]
    )


# ---------------------------------------------------------------------------- heads


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    magnitude=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    levels=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=9, unique=True),
)
def test_quantile_head_quantiles_never_cross(seed, magnitude, levels):
    levels = sorted(levels)
    if any(b - a < 1e-6 for a, b in itertools.pairwise(levels)):
        return
    g = torch.Generator().manual_seed(seed)
    head = QuantileHead(4, 3, levels, targets=2)
    with torch.no_grad():
        head.dense.weight.copy_(torch.randn(head.dense.weight.shape, generator=g) * magnitude)
        head.dense.bias.copy_(torch.randn(head.dense.bias.shape, generator=g) * magnitude)
    out = head(torch.randn(16, 4, generator=g) * magnitude)
    assert tuple(out.shape) == (16, 3, 2, len(levels))
    assert (out.diff(dim=-1) >= 0).all()
    # and so every interval holds the median
    if levels[0] < 0.5 < levels[-1]:
        lo, hi = levels[0], levels[-1]
        level = min(1 - 2 * lo, 2 * hi - 1)
        lower, upper = head.interval(out, level)
        median = head.point(out)
        assert (lower <= median).all() and (median <= upper).all()


def test_distribution_heads_keep_their_floors_on_extreme_inputs():
    x = torch.tensor([[-1e4, 1e4], [0.0, 0.0], [1e4, -1e4]])
    gauss, t = GaussianHead(2, 2, min_scale=0.01), StudentTHead(2, 2, min_scale=0.01, min_df=2.5)
    with torch.no_grad():
        for head in (gauss, t):
            head.dense.weight.fill_(1.0)
    assert (gauss(x)[..., 1] >= 0.01).all()
    assert (t(x)[..., 1] >= 0.01).all() and (t(x)[..., 2] >= 2.5).all()


def test_gaussian_head_quantiles_equal_torch_normal_icdf():
    head = GaussianHead(3, 4, targets=2)
    out = head(torch.randn(5, 3))
    normal = torch.distributions.Normal(out[..., 0], out[..., 1])
    for level in (0.5, 0.8, 0.95):
        lower, upper = head.interval(out, level)
        torch.testing.assert_close(lower, normal.icdf(torch.tensor((1 - level) / 2)))
        torch.testing.assert_close(upper, normal.icdf(torch.tensor((1 + level) / 2)))
    assert torch.equal(head.point(out), out[..., 0])


def _t_outputs(dfs: list[float], loc: float, scale: float) -> torch.Tensor:
    """A StudentTHead output ``[1, 1, len(dfs), 3]``: one target per df."""
    rows = [[loc, scale, df] for df in dfs]
    return torch.tensor(rows, dtype=torch.float64).reshape(1, 1, len(dfs), 3)


@pytest.mark.parametrize("p", [0.001, 0.1, 0.5, 0.8, 0.9999])
def test_student_t_quantiles_equal_the_closed_forms(p):
    """df 1 (Cauchy, with min_df=1): tan(pi (p - 1/2)); df 2: (2p - 1) / sqrt(2 p (1 - p));
    df 4: 2 sign(p - 1/2) sqrt(cos(theta / 3) / sqrt(alpha) - 1), alpha = 4 p (1 - p),
    theta = arccos(sqrt(alpha)). Location 0.3, scale 1.7."""
    alpha = 4 * p * (1 - p)
    root = math.sqrt(alpha)
    closed = [
        math.tan(math.pi * (p - 0.5)),
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)),
        math.copysign(2 * math.sqrt(math.cos(math.acos(root) / 3) / root - 1), p - 0.5),
    ]
    head = StudentTHead(1, 1, targets=3, min_df=1.0)
    q = head.quantile(_t_outputs([1.0, 2.0, 4.0], 0.3, 1.7), p).flatten().tolist()
    assert q == pytest.approx([0.3 + 1.7 * z for z in closed], rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("p", [0.02, 0.2, 0.65, 0.9])
def test_student_t_quantiles_invert_the_integrated_density(p):
    dfs = [2.3, 3.7, 12.0, 250.0]
    head = StudentTHead(1, 1, targets=len(dfs))
    z = head.quantile(_t_outputs(dfs, 0.0, 1.0), p).flatten().tolist()
    for q, df in zip(z, dfs, strict=True):
        assert _t_cdf_integral(q, df) == pytest.approx(p, abs=1e-9), df


def test_a_nan_forecast_gives_nan_quantiles_at_once():
    out = torch.tensor([[[[0.0, 1.0, float("nan")]]]])
    assert torch.isnan(StudentTHead(1, 1).quantile(out, 0.9)).all()


def test_interval_of_a_quantile_head_interpolates_between_its_levels():
    head = QuantileHead(1, 1, (0.1, 0.5, 0.9))
    out = torch.tensor([[[[-2.0, 1.0, 5.0]]]])
    assert head.quantile(out, 0.3).item() == pytest.approx(-0.5)
    assert [v.item() for v in head.interval(out, 0.8)] == [-2.0, 5.0]  # (1 - 0.8) / 2 snaps
    assert [v.item() for v in head.interval(out, 0.4)] == pytest.approx([-0.5, 3.0])
    with pytest.raises(
        ValueError,
        match=r"expected a level within the head's quantiles \[0.1, 0.5, 0.9\] .*found 0.05",
    ):
        head.interval(out, 0.9)
    with pytest.raises(ValueError, match=r"within the head's quantiles \[0.6, 0.9\] .*found 0.5"):
        QuantileHead(1, 1, (0.6, 0.9)).point(torch.zeros(1, 1, 1, 2))


def test_head_methods_refuse_outputs_of_another_shape():
    head = StudentTHead(3, 4, targets=2)
    with pytest.raises(
        ValueError,
        match=r"StudentTHead.quantile: expected output \[\.\.\., 4, 2, 3\] .*found \(5, 4, 2, 2\)",
    ):
        head.quantile(torch.zeros(5, 4, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"StudentTHead.sample: expected output"):
        head.sample(torch.zeros(4, 2), 10)
    with pytest.raises(ValueError, match="n: expected a positive integer, found 0"):
        head.sample(head(torch.zeros(1, 3)), 0)
    with pytest.raises(
        ValueError, match=r"p: expected a quantile level strictly inside \(0, 1\), found 1"
    ):
        head.quantile(head(torch.zeros(1, 3)), 1)
    with pytest.raises(
        ValueError,
        match=r"GaussianHead.affine: expected scale broadcastable to \(1, 4, 2\), found \(3,\)",
    ):
        GaussianHead(3, 4, 2).affine(torch.ones(1, 4, 2, 2), 0.0, torch.ones(3))
    with pytest.raises(ValueError, match=r"QuantileHead.affine: expected scale > 0, found min -1"):
        QuantileHead(3, 4, LEVELS).affine(torch.zeros(1, 4, 1, 5), 0.0, -1.0)


def test_affine_maps_the_quantiles_and_scales_the_crps():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, 3, generator=g)
    shift, scale = torch.randn(7, 2, 1, generator=g), torch.rand(7, 2, 1, generator=g) + 0.5
    truth = torch.randn(7, 2, 1, generator=g)
    for head in (QuantileHead(3, 2, LEVELS), GaussianHead(3, 2), StudentTHead(3, 2)):
        out = head(x).detach()
        moved = head.affine(out, shift, scale)
        for p in (0.1, 0.5, 0.75):
            torch.testing.assert_close(
                head.quantile(moved, p), shift + scale * head.quantile(out, p)
            )
    head = GaussianHead(3, 2)
    out = head(x).detach()
    moved = head.affine(out, 0.0, 3.0)
    y = truth.numpy()
    assert crps_gaussian(3 * y, moved[..., 0].numpy(), moved[..., 1].numpy()) == pytest.approx(
        3 * crps_gaussian(y, out[..., 0].numpy(), out[..., 1].numpy()), rel=1e-6
    )


def test_save_and_load_restore_each_head():
    x = SequenceBatch.from_list([torch.randn(5, 2), torch.randn(3, 2)])
    heads = [
        QuantileHead(4, 3, (0.05, 0.5, 0.95), targets=2),
        GaussianHead(4, 3, targets=2, min_scale=0.02),
        StudentTHead(None, 3, targets=2, min_scale=0.03, min_df=2.5),
    ]
    for head in heads:
        model = Fold(GRUCell(2, 4)) >> head
        expected = model(x)
        with tempfile.TemporaryDirectory() as directory:
            rnnkit.save(model, directory)
            loaded = rnnkit.load(directory)
        back = loaded[1]
        assert type(back) is type(head)
        assert torch.equal(loaded(x), expected)
        for name in ("horizon", "targets", "min_scale", "min_df", "quantiles", "in_features"):
            assert getattr(back, name, None) == getattr(head, name, None), name


# ---------------------------------------------------------------------------- samples


def test_samples_follow_the_forecast():
    """Empirical quantiles of 40,000 draws against the head's quantiles: within 4 binomial
    standard deviations of the level (a quantile's draws below it are Binomial(n, p))."""
    n = 40_000
    g = torch.Generator().manual_seed(7)
    cases = [
        (QuantileHead(1, 1, (0.1, 0.5, 0.9)), torch.tensor([[[[-1.0, 0.5, 2.0]]]])),
        (GaussianHead(1, 1), torch.tensor([[[[0.5, 2.0]]]])),
        (StudentTHead(1, 1), torch.tensor([[[[0.5, 2.0, 2.5]]]])),
    ]
    for head, out in cases:
        draws = head.sample(out, n, generator=g)
        assert tuple(draws.shape) == (n, 1, 1, 1)
        for p in (0.1, 0.3, 0.5, 0.9):
            q = head.quantile(out, p).item()
            # the quantile head's lowest (highest) quantile holds every draw below (above) it
            below = draws <= q if p < 0.5 else draws < q
            fraction = below.double().mean().item()
            assert abs(fraction - p) <= 4 * math.sqrt(p * (1 - p) / n), (type(head).__name__, p)
    again = cases[2][0].sample(cases[2][1], 5, generator=torch.Generator().manual_seed(1))
    same = cases[2][0].sample(cases[2][1], 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, same)


# ---------------------------------------------------------------------------- scores


def test_coverage_of_a_correct_forecast_is_its_level():
    """20,000 truths drawn from the forecast: coverage within 4 binomial standard deviations
    (4 sqrt(0.8 0.2 / 20000) = 0.0113) of 0.8; a forecast half as wide covers about 0.52,
    and fails that test."""
    n, level = 20_000, 0.8
    tolerance = 4 * math.sqrt(level * (1 - level) / n)
    g = torch.Generator().manual_seed(8)
    loc = torch.randn(n, 1, 1, generator=g, dtype=torch.float64)
    scale = torch.rand(n, 1, 1, generator=g, dtype=torch.float64) + 0.5
    df = torch.full_like(loc, 3.0)
    gauss, t = GaussianHead(1, 1), StudentTHead(1, 1)
    gauss_out = torch.stack([loc, scale], -1)
    t_out = torch.stack([loc, scale, df], -1)
    gauss_truth = gauss.sample(gauss_out, 1, generator=g)[0]
    t_truth = t.sample(t_out, 1, generator=g)[0]
    gauss_truth[:100] = float("nan")  # skipped
    for head, out, truth in ((gauss, gauss_out, gauss_truth), (t, t_out, t_truth)):
        lower, upper = head.interval(out, level)
        coverage = interval_coverage(truth.numpy(), lower.numpy(), upper.numpy())
        assert abs(coverage - level) <= tolerance, type(head).__name__
    lower, upper = gauss.interval(gauss_out, level)
    width = interval_width(gauss_truth.numpy(), lower.numpy(), upper.numpy())
    z = torch.special.ndtri(torch.tensor(0.9, dtype=torch.float64)).item()
    assert width == pytest.approx(2 * z * scale[100:].mean().item(), rel=1e-12)
    narrow = gauss.interval(torch.stack([loc, scale / 2], -1), level)
    coverage = interval_coverage(gauss_truth.numpy(), narrow[0].numpy(), narrow[1].numpy())
    assert abs(coverage - level) > 10 * tolerance
    # the quantile head with N(0, 1)'s own 0.1, 0.5, 0.9 quantiles
    q = QuantileHead(1, 1, (0.1, 0.5, 0.9))
    q_out = (loc + scale * torch.tensor([-z, 0.0, z], dtype=torch.float64)).unsqueeze(-2)
    lower, upper = q.interval(q_out, level)
    coverage = interval_coverage(gauss_truth.numpy(), lower.numpy(), upper.numpy())
    assert abs(coverage - level) <= tolerance


def test_coverage_and_width_by_hand_and_their_errors():
    truth = np.array([0.0, 1.0, 2.0, np.nan])
    assert interval_coverage(truth, np.array([-1, 1.5, 2, 9]), np.array([1, 2, 2, 9])) == 2 / 3
    assert (
        interval_width(truth, np.array([-1, 1.5, 2, np.nan]), np.array([1, 2, 2, np.nan]))
        == 2.5 / 3
    )
    with pytest.raises(
        ValueError, match=r"lower: expected shape \(4,\) \(truth's\) .*found \(3,\)"
    ):
        interval_coverage(truth, np.zeros(3), np.ones(4))
    with pytest.raises(ValueError, match="upper: expected upper >= lower"):
        interval_coverage(truth, np.ones(4), np.zeros(4))
    with pytest.raises(
        ValueError, match=r"truth: expected at least one observed \(non-NaN\) value"
    ):
        interval_width(np.full(3, np.nan), 0.0, 1.0)
    with pytest.raises(ValueError, match="upper: expected finite values where truth is observed"):
        interval_width(truth, 0.0, np.array([1.0, np.nan, 1.0, 1.0]))


def test_mean_pinball_loss_equals_a_numpy_loop():
    rng = np.random.default_rng(9)
    truth = rng.normal(size=(6, 4))
    truth[1, 2] = truth[5, 0] = np.nan
    forecasts = np.sort(rng.normal(size=(6, 4, len(LEVELS))), axis=-1)
    total, count = 0.0, 0
    for i in range(6):
        for j in range(4):
            if np.isnan(truth[i, j]):
                continue
            for k, tau in enumerate(LEVELS):
                d = truth[i, j] - forecasts[i, j, k]
                total += max(tau * d, (tau - 1) * d)
                count += 1
    assert mean_pinball_loss(truth, forecasts, LEVELS) == pytest.approx(total / count, rel=1e-12)
    assert crps_from_quantiles(truth, forecasts, LEVELS) == pytest.approx(
        2 * total / count, rel=1e-12
    )
    with pytest.raises(
        ValueError, match=r"forecasts: expected shape \(6, 4, 5\) .*found \(6, 4, 3\)"
    ):
        mean_pinball_loss(truth, forecasts[..., :3], LEVELS)


def _crps_integral(cdf, y: float, half_width: float, step: float) -> float:
    """The integral of F(x)^2 below y and (1 - F(x))^2 above it, trapezoids on a grid with y
    a node, over [y - half_width, y + half_width]."""
    k = int(half_width / step)
    below = y + step * np.arange(-k, 1)
    above = y + step * np.arange(0, k + 1)
    return float(np.trapezoid(cdf(below) ** 2, below) + np.trapezoid((1 - cdf(above)) ** 2, above))


@pytest.mark.parametrize(
    ("y", "loc", "scale"), [(0.0, 0.0, 1.0), (1.3, -0.4, 0.7), (-5.0, 2.0, 3.0)]
)
def test_crps_gaussian_equals_the_integral_of_the_squared_cdf_difference(y, loc, scale):
    erf = np.vectorize(math.erf)

    def cdf(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1 + erf((x - loc) / (scale * math.sqrt(2))))

    expected = _crps_integral(cdf, y, 20 * scale + abs(y - loc), 1e-3 * scale)
    assert crps_gaussian(np.array([y]), loc, scale) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("y", "loc", "scale", "df"),
    [(0.7, 0.0, 1.0, 3.5), (-2.0, 1.0, 0.5, 2.2), (4.0, 0.5, 2.0, 30.0), (0.0, 0.0, 1.0, 1.5)],
)
def test_crps_student_t_equals_the_integral_of_the_squared_cdf_difference(y, loc, scale, df):
    """F from the trapezoid integral of the density from the median (F(loc) = 1/2) on a grid
    of step 0.002 scales holding loc and y as nodes; it spans 2,000 scales around loc, beyond
    which F's tails add less than the tolerance."""
    step, k = 2e-3, 1_000_000
    z = np.arange(-k, k + 1) * step
    node = k + round((y - loc) / scale / step)
    assert z[node] == pytest.approx((y - loc) / scale, abs=1e-9)
    density = _t_pdf(z, df)
    cum = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * step)])
    cdf = 0.5 + cum - cum[k]
    expected = scale * float(
        np.trapezoid(cdf[: node + 1] ** 2, z[: node + 1])
        + np.trapezoid((1 - cdf[node:]) ** 2, z[node:])
    )
    tolerance = 1e-6 if df > 2 else 1e-5  # df 1.5: (1 - F)^2 ~ x^-3 leaves ~1e-7 outside
    assert crps_student_t(np.array([y]), loc, scale, df) == pytest.approx(expected, rel=tolerance)


def test_crps_closed_forms_agree_with_the_sample_estimator():
    """200,000 draws per forecast: the energy-form estimate within 1 % of the closed form
    (its standard error here is about 0.2 %)."""
    g = torch.Generator().manual_seed(10)
    truth = np.array([[0.2], [-1.5], [3.0]])
    gauss = torch.tensor([[[0.0, 1.0]], [[0.5, 2.0]], [[1.0, 0.5]]], dtype=torch.float64).unsqueeze(
        -2
    )
    t = torch.tensor(
        [[[0.0, 1.0, 2.5]], [[0.5, 2.0, 5.0]], [[1.0, 0.5, 40.0]]], dtype=torch.float64
    ).unsqueeze(-2)
    for i in range(3):
        y = truth[i : i + 1, :, None]
        draws = GaussianHead(1, 1).sample(gauss[i : i + 1], 200_000, generator=g).numpy()
        closed = crps_gaussian(
            y, gauss[i : i + 1, ..., 0].numpy(), gauss[i : i + 1, ..., 1].numpy()
        )
        assert crps_from_samples(y, draws) == pytest.approx(closed, rel=0.01)
        draws = StudentTHead(1, 1).sample(t[i : i + 1], 200_000, generator=g).numpy()
        out = t[i : i + 1].numpy()
        closed = crps_student_t(y, out[..., 0], out[..., 1], out[..., 2])
        assert crps_from_samples(y, draws) == pytest.approx(closed, rel=0.01)


def test_crps_from_many_quantiles_approaches_the_closed_form():
    """999 evenly spaced levels of N(0.5, 2^2): within 0.5 % of the closed form; 3 levels give
    a much coarser figure."""
    levels = np.arange(1, 1000) / 1000
    z = torch.special.ndtri(torch.from_numpy(levels)).numpy()
    truth = np.array([-1.0, 0.5, 4.0])
    forecasts = 0.5 + 2.0 * np.broadcast_to(z, (3, 999))
    closed = crps_gaussian(truth, 0.5, 2.0)
    assert crps_from_quantiles(truth, forecasts, list(levels)) == pytest.approx(closed, rel=5e-3)
    coarse = crps_from_quantiles(truth, forecasts[:, [249, 499, 749]], [0.25, 0.5, 0.75])
    assert abs(coarse - closed) > 0.05 * closed


def test_crps_from_samples_equals_the_pairwise_definition():
    rng = np.random.default_rng(11)
    truth = np.array([0.3, np.nan, -1.0])
    samples = rng.normal(size=(7, 3))
    per = []
    for j in (0, 2):
        x = samples[:, j]
        first = np.abs(x - truth[j]).mean()
        pairs = [abs(a - b) for i, a in enumerate(x) for k, b in enumerate(x) if i != k]
        per.append(first - np.mean(pairs) / 2)
    assert crps_from_samples(truth, samples) == pytest.approx(np.mean(per), rel=1e-12)
    with pytest.raises(
        ValueError,
        match=r"samples: expected shape \[S, \*truth.shape\] = \[S, 3\] with S >= 2, found \(1,",
    ):
        crps_from_samples(truth, samples[:1])


def test_crps_student_t_refuses_df_at_or_below_one():
    with pytest.raises(ValueError, match=r"df: expected values > 1 \(the CRPS .*found min 1"):
        crps_student_t(np.zeros(2), 0.0, 1.0, np.array([3.0, 1.0]))
    with pytest.raises(ValueError, match="scale: expected values > 0"):
        crps_gaussian(np.zeros(2), 0.0, np.array([1.0, 0.0]))


# ---------------------------------------------------------------------------- training


def test_heads_learn_the_spread_of_the_data():
    """y = 2 x + noise, noise N(0, 0.5^2): after training, the Gaussian head's scale is near
    0.5 and the quantile head's 0.1 and 0.9 quantiles near 2x -+ 0.64."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2000, 1, generator=g)
    y = (2 * x + 0.5 * torch.randn(2000, 1, generator=g)).unsqueeze(-1)  # [B, H=1, n=1]
    torch.manual_seed(0)
    gauss, quant = GaussianHead(1, 1), QuantileHead(1, 1, (0.1, 0.5, 0.9))
    for head in (gauss, quant):
        optimizer = torch.optim.Adam(head.parameters(), lr=0.1)
        for _ in range(300):
            optimizer.zero_grad()
            (head.loss(head(x), y) / len(x)).backward()
            optimizer.step()
    with torch.no_grad():
        probe = torch.tensor([[1.0]])
        scale = gauss(probe)[..., 1].item()
        lower, upper = quant.interval(quant(probe), 0.8)
    assert scale == pytest.approx(0.5, abs=0.05)
    assert lower.item() == pytest.approx(2 - 0.64, abs=0.1)
    assert upper.item() == pytest.approx(2 + 0.64, abs=0.1)


# ---------------------------------------------------------------------------- calibration


def test_interval_scale_is_the_conformal_rank_of_the_stretch_each_truth_needs():
    """Per horizon step (axis 1), the ceil((n + 1) level)-th smallest of
    max((c - y) / (c - l), (y - c) / (u - c)), computed here by a plain loop; NaN truths
    skipped, a step with none observed given the pooled factor."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3))
    y[:, 2] = np.nan
    y[5, 0] = np.nan
    c, lo, hi = rng.normal(scale=0.1, size=(40, 3)), -0.5, 0.8
    got = interval_scale(y, c, c + lo, c + hi, 0.8)
    pooled = []
    for h in range(2):
        r = sorted(
            max((c[i, h] - y[i, h]) / -lo, (y[i, h] - c[i, h]) / hi)
            for i in range(40)
            if not np.isnan(y[i, h])
        )
        pooled += r
        assert got[h] == pytest.approx(r[math.ceil((len(r) + 1) * 0.8) - 1], rel=1e-12)
    pooled.sort()
    assert got[2] == pytest.approx(pooled[math.ceil((len(pooled) + 1) * 0.8) - 1], rel=1e-12)


def test_conformal_factors_give_the_level_on_new_exchangeable_data():
    """Intervals far too narrow (and lopsided) for Student-t noise, calibrated on 2,000 draws,
    cover 0.8 of 50,000 new draws (the guarantee; 3 standard errors of tolerance)."""
    rng = np.random.default_rng(1)

    def draw(n):
        return rng.standard_t(4, size=(n, 1))

    raw = interval_coverage(draw(50_000), -0.3, 0.1)
    s = interval_scale(draw(2_000), 0.0, -0.3, 0.1, 0.8)
    low, high = scale_interval(np.zeros((1, 1)), np.full((1, 1), -0.3), np.full((1, 1), 0.1), s)
    covered = interval_coverage(draw(50_000), low, high)
    assert raw < 0.3
    assert covered == pytest.approx(0.8, abs=3 * math.sqrt(0.8 * 0.2 / 2_000) + 0.005)


def test_interval_scale_refuses_a_center_outside_its_interval():
    with pytest.raises(ValueError, match="lower <= center <= upper"):
        interval_scale(np.zeros((2, 1)), 2.0, 0.0, 1.0, 0.8)
    with pytest.raises(ValueError, match="factors >= 0"):
        scale_interval(np.zeros((1, 2)), -np.ones((1, 2)), np.ones((1, 2)), [1.0, -1.0])
