"""Full-window DTW and its 1-NN baseline against a plain double loop over the cost table."""

import numpy as np
import pytest
import torch

from rnnkit.data.nearest import dtw_distances, nearest_neighbour_dtw_accuracy


def dtw_loop(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook recurrence, one cell at a time."""
    table = np.full((len(a) + 1, len(b) + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(len(a)):
        for j in range(len(b)):
            cost = float(((a[i] - b[j]) ** 2).sum())
            table[i + 1, j + 1] = cost + min(table[i, j + 1], table[i + 1, j], table[i, j])
    return float(table[-1, -1])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("block", [1, 5, 4096])
def test_dtw_matches_the_double_loop_on_variable_lengths(channels, block):
    rng = np.random.default_rng(channels)
    a = [rng.normal(size=(t, channels)) for t in (1, 4, 9, 6)]
    b = [rng.normal(size=(t, channels)) * 2 for t in (5, 1, 12)]
    got = dtw_distances(
        [torch.from_numpy(x) for x in a], [torch.from_numpy(x) for x in b], block=block
    )
    expected = np.array([[dtw_loop(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_dtw_is_zero_for_a_warped_copy_and_not_the_euclidean_distance():
    x = torch.tensor([[0.0], [1.0], [3.0], [2.0]])
    warped = torch.tensor([[0.0], [0.0], [1.0], [3.0], [3.0], [3.0], [2.0]])
    shifted = torch.tensor([[1.0], [3.0], [2.0], [0.0]])
    d = dtw_distances([x], [warped, shifted])
    assert d[0, 0].item() == 0.0
    assert d[0, 1].item() == pytest.approx(dtw_loop(x.numpy(), shifted.numpy()), rel=1e-12)
    assert d[0, 1].item() < ((x - shifted) ** 2).sum().item()  # warping helps


def test_nearest_neighbour_dtw_matches_brute_force():
    rng = np.random.default_rng(9)

    def example(label: int) -> dict:
        t = int(rng.integers(5, 15))
        wave = np.sin(np.linspace(0, (label + 1) * np.pi, t)) + rng.normal(0, 0.3, t)
        return {"features": torch.from_numpy(wave[:, None]), "label": torch.tensor([label])}

    train = [example(i % 3) for i in range(12)]
    test = [example(i % 3) for i in range(9)]
    right = 0
    for e in test:
        d = [dtw_loop(e["features"].numpy(), r["features"].numpy()) for r in train]
        right += int(train[int(np.argmin(d))]["label"]) == int(e["label"])
    assert nearest_neighbour_dtw_accuracy(train, test) == pytest.approx(right / len(test))


def test_bad_series_are_named():
    with pytest.raises(ValueError, match="a: expected at least one series"):
        dtw_distances([], [torch.zeros(2, 1)])
    with pytest.raises(ValueError, match="b: expected series of 1 channels as in a, found 2"):
        dtw_distances([torch.zeros(2, 1)], [torch.zeros(2, 2)])
