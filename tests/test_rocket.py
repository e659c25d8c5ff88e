"""ROCKET: the features against a plain NumPy loop over kernels and steps, ragged batches
against each series alone, the kernels' distributions against the paper's, and the ridge
classifier's leave-one-out choice against refitting without each row."""

import math

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import SequenceBatch
from rnnkit.layers import Dense
from rnnkit.layers.rocket import ALPHAS, Rocket, fit_ridge, rocket_features

pytestmark = pytest.mark.usefixtures("one_thread")


def features_numpy(rocket: Rocket, x: np.ndarray) -> np.ndarray:
    """PPV and max of every kernel over one series ``x [T, C]``: one output step at a time."""
    t_len = x.shape[0]
    out = []
    for i in range(rocket.num_kernels):
        k = int(rocket.kernel_length[i])
        d = int(rocket.dilation[i])
        w = rocket.weight[i, :, :k].double().numpy()  # [C, k]
        b = float(rocket.bias[i])
        field = (k - 1) * d
        pad = bool(rocket.padding[i]) or field >= t_len  # too short: read with padding
        p = field // 2 if pad else 0
        z = np.concatenate([np.zeros((p, x.shape[1])), x, np.zeros((p, x.shape[1]))])
        values = []
        for start in range(z.shape[0] - field):
            window = z[start : start + field + 1 : d]  # [k, C]
            values.append(b + float((window.T * w).sum()))
        values = np.array(values)
        out += [(values > 0).mean(), values.max()]
    return np.array(out)


@pytest.mark.parametrize("channels", [1, 3])
def test_features_match_a_numpy_loop_and_ragged_batches_leak_nothing(channels):
    rocket = Rocket(channels, length=40, num_kernels=60, seed=3).double()
    rng = np.random.default_rng(0)
    # 40 steps: every kind; 9 steps: shorter than many unpadded kernels' fields
    series = [rng.normal(size=(t, channels)) for t in (40, 9, 23)]
    batch = SequenceBatch.from_list([torch.from_numpy(s) for s in series])
    got = rocket(batch).numpy()
    for row, s in zip(got, series, strict=True):
        np.testing.assert_allclose(row, features_numpy(rocket, s), rtol=0, atol=1e-10)
        alone = rocket(SequenceBatch.from_list([torch.from_numpy(s)]))
        np.testing.assert_allclose(alone[0].numpy(), row, rtol=0, atol=1e-12)
    # the batch of short series alone (every unpadded kernel longer than the batch)
    short = rocket(SequenceBatch.from_list([torch.from_numpy(series[1])] * 2)).numpy()
    np.testing.assert_allclose(short[0], got[1], rtol=0, atol=1e-12)


def test_kernels_are_drawn_as_in_the_paper():
    length, channels = 300, 4
    rocket = Rocket(channels, length=length, num_kernels=4000, seed=1)
    k = rocket.kernel_length
    assert set(k.tolist()) == {7, 9, 11}
    for value in (7, 9, 11):  # uniform over the three lengths
        assert abs(float((k == value).float().mean()) - 1 / 3) < 0.04
    limit = torch.floor(2 ** torch.log2((length - 1) / (k - 1).double()))
    assert (rocket.dilation >= 1).all() and (rocket.dilation <= limit).all()
    # dilation = floor(2 ** u), u uniform on [0, A): P(dilation <= m) = log2(m + 1) / A
    nine = rocket.dilation[k == 9].double()
    span = math.log2((length - 1) / 8)
    for m in (1, 3, 7, 20):
        assert abs(float((nine <= m).double().mean()) - math.log2(m + 1) / span) < 0.05
    assert abs(float(rocket.padding.double().mean()) - 0.5) < 0.04
    assert abs(float(rocket.bias.mean())) < 0.05 and rocket.bias.abs().max() <= 1
    for i in range(50):
        w = rocket.weight[i]
        used = w.abs().sum(1) > 0
        assert 1 <= int(used.sum()) <= min(channels, int(k[i]))
        torch.testing.assert_close(w[used, : k[i]].sum(1), torch.zeros(int(used.sum())))
        assert (w[:, k[i] :] == 0).all()
    # the same seed draws the same kernels
    again = Rocket(channels, length=length, num_kernels=4000, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(rocket.buffers(), again.buffers(), strict=True))


def ridge_numpy(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an intercept on standardised columns, solved directly; (weight, bias) for the
    raw columns."""
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    y_mean = y.mean(0)
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y_mean))
    weight = (coef / scale[:, None]).T
    return weight, y_mean - weight @ mean


@pytest.mark.parametrize("shape", [(30, 80), (60, 12)])  # fewer rows than columns, and more
def test_ridge_matches_direct_solutions_and_leave_one_out_refits(shape):
    rng = np.random.default_rng(5)
    n, f = shape
    x = rng.normal(size=(n, f)) * rng.uniform(0.5, 3, f) + rng.normal(size=f)
    labels = rng.integers(0, 3, n)
    x[:, 0] += labels  # something to learn
    y = -np.ones((n, 3))
    y[np.arange(n), labels] = 1
    alphas = (0.1, 3.0, 100.0)
    ridge = fit_ridge(torch.from_numpy(x), torch.from_numpy(labels), 3, alphas)
    errors = []
    for alpha in alphas:
        # leave-one-out by refitting on the other rows (their own standardisation and mean
        # differ from the full fit's by O(1/n): the closed form centres once, so compare the
        # chosen penalty and the error to a tolerance)
        squared = []
        for i in range(n):
            keep = np.arange(n) != i
            w, b = ridge_numpy(x[keep], y[keep], alpha)
            squared.append(((x[i] @ w.T + b - y[i]) ** 2).mean())
        errors.append(np.mean(squared))
    assert ridge.alpha == alphas[int(np.argmin(errors))]
    assert ridge.loo_error == pytest.approx(min(errors), rel=0.15)
    weight, bias = ridge_numpy(x, y, ridge.alpha)
    np.testing.assert_allclose(ridge.weight.numpy(), weight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ridge.bias.numpy(), bias, rtol=1e-4, atol=1e-5)


def test_ridge_leave_one_out_is_exact_for_fixed_centring():
    # with columns already centred and scaled and +-1 targets centred, leave-one-out of ridge
    # without refitting the centring is exactly the shortcut's (plus the 1/n of the intercept,
    # which a fit through the origin on centred data would not have): check the shortcut's
    # residuals against refits through the origin on a fixed design.
    rng = np.random.default_rng(6)
    n, f, alpha = 25, 40, 2.0
    z = rng.normal(size=(n, f))
    z = (z - z.mean(0)) / z.std(0)
    labels = rng.integers(0, 2, n)
    y = np.where(labels[:, None] == np.arange(2), 1.0, -1.0)
    yc = y - y.mean(0)
    hat = z @ np.linalg.solve(z.T @ z + alpha * np.eye(f), z.T)
    shortcut = (yc - hat @ yc) / (1 - np.diag(hat))[:, None]
    for i in range(n):
        keep = np.arange(n) != i
        coef = np.linalg.solve(z[keep].T @ z[keep] + alpha * np.eye(f), z[keep].T @ yc[keep])
        np.testing.assert_allclose(yc[i] - z[i] @ coef, shortcut[i], rtol=1e-8, atol=1e-10)
    ridge = fit_ridge(torch.from_numpy(z), torch.from_numpy(labels), 2, (alpha,))
    leverage = np.diag(hat) + 1 / n
    expected = (((yc - hat @ yc) / (1 - leverage)[:, None]) ** 2).mean()
    assert ridge.loo_error == pytest.approx(expected, rel=1e-9)


def test_ridge_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"expected \[N, F\] and \[N\], found \(3, 2\) and \(4,\)"):
        fit_ridge(torch.zeros(3, 2), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="alphas: expected positive numbers, found \\[0.0\\]"):
        fit_ridge(torch.zeros(3, 2), torch.zeros(3), 2, (0.0,))
    with pytest.raises(ValueError, match="num_kernels: expected an integer >= 1, found 0"):
        Rocket(1, 10, num_kernels=0)
    with pytest.raises(ValueError, match="Rocket input: expected steps of 2 channels, found 1"):
        Rocket(2, 10, num_kernels=4)(SequenceBatch.from_list([torch.zeros(5, 1)]))


def test_the_default_alphas_are_scikit_learns_logspace():
    np.testing.assert_allclose(ALPHAS, np.logspace(-3, 3, 10), rtol=1e-12)


def test_rocket_with_ridge_learns_saves_and_loads(tmp_path):
    rng = np.random.default_rng(7)

    def make(n):  # class 1 holds a burst of a fast sine, class 0 a slow one; lengths vary
        xs, ys = [], []
        for i in range(n):
            t = int(rng.integers(30, 60))
            freq = 0.9 if i % 2 else 0.15
            x = np.sin(freq * np.arange(t) + rng.uniform(0, 6)) + rng.normal(0, 0.3, t)
            xs.append(torch.tensor(x[:, None], dtype=torch.float32))
            ys.append(i % 2)
        return xs, torch.tensor(ys)

    (train_x, train_y), (test_x, test_y) = make(40), make(40)
    rocket = Rocket(1, length=60, num_kernels=200, seed=0)
    batches = [SequenceBatch.from_list(train_x[i : i + 16]) for i in range(0, 40, 16)]
    ridge = fit_ridge(rocket_features(rocket, batches), train_y, 2)
    model = rocket >> Dense(rocket.out_features, 2)
    with torch.no_grad():
        model[1].weight.copy_(ridge.weight)
        model[1].bias.copy_(ridge.bias)
        scores = model(SequenceBatch.from_list(test_x))
    assert float((scores.argmax(1) == test_y).float().mean()) >= 0.95
    rnnkit.save(model, tmp_path / "rocket")
    loaded = rnnkit.load(tmp_path / "rocket")
    with torch.no_grad():
        torch.testing.assert_close(loaded(SequenceBatch.from_list(test_x)), scores)
    assert math.isclose(loaded[0].length, 60) and loaded[0].num_kernels == 200
