"""The convolutional classifiers of rnnkit.layers.timeconv: padding never leaks (a sequence alone
equals it batched with longer ones), masked batch norm against NumPy, gradients by gradcheck,
averaging against NumPy, and save/load round trips."""

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit import SequenceBatch
from rnnkit.layers import Dense
from rnnkit.layers.timeconv import (
    FCN,
    Downsample,
    InceptionTime,
    MaskedBatchNorm1d,
    ResNet,
    _ConvNorm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def families(in_channels: int, downsample: int = 1) -> dict[str, torch.nn.Module]:
    return {
        "fcn": FCN(in_channels, channels=(5, 6, 4), kernels=(8, 5, 3), downsample=downsample),
        "resnet": ResNet(in_channels, channels=(4, 6), kernels=(8, 5, 3), downsample=downsample),
        "inception": InceptionTime(
            in_channels, filters=3, kernels=(9, 5, 2), depth=6, downsample=downsample
        ),
    }


def trained_statistics(net: torch.nn.Module, in_channels: int, seed: int) -> torch.nn.Module:
    """``net`` in float64 after a few training batches (running statistics away from 0 and 1),
    then in eval mode."""
    g = torch.Generator().manual_seed(seed)
    net = net.double().train()
    with torch.no_grad():
        for _ in range(3):
            seqs = [
                torch.randn(int(t), in_channels, generator=g, dtype=torch.float64) * 2 + 1
                for t in torch.randint(3, 30, (5,), generator=g)
            ]
            net(SequenceBatch.from_list(seqs))
    return net.eval()


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception"])
@pytest.mark.parametrize("downsample", [1, 3])
def test_a_sequence_alone_equals_it_batched_with_longer_ones(name, downsample):
    net = trained_statistics(families(2, downsample)[name], 2, seed=1)
    g = torch.Generator().manual_seed(2)
    short = [torch.randn(t, 2, generator=g, dtype=torch.float64) for t in (1, 4, 7)]
    long = [torch.randn(t, 2, generator=g, dtype=torch.float64) * 5 for t in (40, 23)]
    with torch.no_grad():
        batched = net(SequenceBatch.from_list([long[0], *short, long[1]]))
        for k, s in enumerate(short):
            alone = net(SequenceBatch.from_list([s]))
            torch.testing.assert_close(batched[k + 1], alone[0], rtol=1e-12, atol=1e-12)
        # and the padding values themselves do not matter: the same batch padded with NaN
        padded = torch.full((2, 40, 2), torch.nan, dtype=torch.float64)
        padded[0, :4], padded[1, :40] = short[1], long[0]
        again = net(SequenceBatch.from_padded(padded, [4, 40]))
    torch.testing.assert_close(again[0], batched[2], rtol=1e-12, atol=1e-12)
    # the output depends on the input (not constant): a changed step changes it
    changed = short[1].clone()
    changed[2] += 1.0
    with torch.no_grad():
        other = net(SequenceBatch.from_list([changed]))
    assert (other[0] - batched[2]).abs().max() > 1e-6


def test_masked_batch_norm_statistics_are_those_of_the_valid_steps():
    rng = np.random.default_rng(3)
    lengths = [7, 2, 5]
    x = rng.normal(size=(3, 4, 7)) * 3 + 2
    mask = (np.arange(7)[None, :] < np.array(lengths)[:, None]).astype(np.float64)[:, None]
    x_padded = np.where(mask > 0, x, 1e6)  # huge values on the padding: must be ignored
    norm = MaskedBatchNorm1d(4).double().train()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, 3.0, -2.0]))
    out = norm(torch.from_numpy(x_padded), torch.from_numpy(mask)).detach().numpy()
    valid = np.concatenate([x[b, :, :n] for b, n in enumerate(lengths)], axis=1)  # [C, 14]
    mean, var = valid.mean(1), valid.var(1)
    expected = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
    expected = (
        expected * norm.weight.detach().numpy()[None, :, None]
        + norm.bias.detach().numpy()[None, :, None]
    ) * mask
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(norm.running_mean.numpy(), 0.1 * mean, rtol=1e-10)
    unbiased = valid.var(1, ddof=1)
    np.testing.assert_allclose(norm.running_var.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-10)
    # eval mode uses the running estimates
    norm.eval()
    out = norm(torch.from_numpy(x), torch.from_numpy(mask)).detach().numpy()
    rm, rv = norm.running_mean.numpy(), norm.running_var.numpy()
    w, b = norm.weight.detach().numpy(), norm.bias.detach().numpy()
    expected = (
        (x - rm[None, :, None]) / np.sqrt(rv[None, :, None] + 1e-5) * w[None, :, None]
        + b[None, :, None]
    ) * mask
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_gradcheck_of_a_masked_block_and_no_gradient_into_padding():
    torch.manual_seed(4)
    block = _ConvNorm(2, 3, 4).double().train()
    mask = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3]).double()[:, None]
    x = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 6, dtype=torch.float64)

    def f(inputs, conv_weight):
        block.conv.weight.data = conv_weight  # the same tensor values; checked through x too
        return (block(inputs, mask) * weight).sum()

    w = block.conv.weight.detach().clone().requires_grad_(True)

    def g(inputs, conv_weight):
        k = conv_weight.shape[-1] - 1
        z = torch.nn.functional.pad(torch.where(mask > 0, inputs, 0.0), (k // 2, k - k // 2))
        z = torch.nn.functional.conv1d(z, conv_weight, block.conv.bias)
        return (torch.relu(block.norm(z, mask)) * weight).sum()

    assert torch.autograd.gradcheck(g, (x, w))
    g(x, w).backward()
    assert x.grad is not None
    assert torch.all(x.grad[1, :, 3:] == 0)  # the padded steps get no gradient
    assert torch.any(x.grad[1, :, :3] != 0)
    # the block's own forward computes the same as the functional one
    torch.testing.assert_close(f(x, w.detach()), g(x, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception"])
def test_gradcheck_of_each_family_on_a_ragged_batch(name):
    torch.manual_seed(5)
    net = families(1)[name].double().train()
    seqs = [torch.randn(t, 1, dtype=torch.float64, requires_grad=True) for t in (6, 3)]

    def f(a, b):
        return net(SequenceBatch.from_list([a, b]))

    assert torch.autograd.gradcheck(f, tuple(seqs))


def test_downsample_averages_windows_of_each_sequence_alone():
    rng = np.random.default_rng(6)
    seqs = [rng.normal(size=(t, 2)) for t in (10, 3, 7)]
    out = Downsample(4)(SequenceBatch.from_list([torch.from_numpy(s) for s in seqs])).to_list()
    for s, got in zip(seqs, out, strict=True):
        expected = np.stack([s[i : i + 4].mean(0) for i in range(0, len(s), 4)])
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="factor: expected an integer >= 1, found 0"):
        Downsample(0)


@pytest.mark.parametrize("name", ["fcn", "resnet", "inception"])
def test_each_family_saves_and_loads(name, tmp_path):
    body = trained_statistics(families(3, downsample=2)[name], 3, seed=7).float()
    model = body >> Dense(body.out_features, 4)
    model.eval()
    rnnkit.save(model, tmp_path / name)
    loaded = rnnkit.load(tmp_path / name)
    assert type(loaded[0]) is type(body)
    x = SequenceBatch.from_list([torch.randn(t, 3) for t in (9, 4, 30)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded[0].downsample.factor == 2


def test_wrong_input_is_named():
    net = FCN(2, channels=(3,), kernels=(3,))
    with pytest.raises(ValueError, match="FCN input: expected steps of 2 channels, found 3"):
        net(SequenceBatch.from_list([torch.randn(4, 3)]))
    with pytest.raises(TypeError, match="expected a SequenceBatch, found Tensor"):
        net(torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="kernels: expected 2 integers >= 1"):
        FCN(2, channels=(3, 4), kernels=(3,))
