"""Flowified convolutions (spec section 6, item 8)."""

import math

import pytest
import torch
import torch.nn.functional as F

from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms.flowify import FlowifiedConv2d, FlowifiedPad, FlowifiedTile
from pyro_flowvi.transforms.flowify.density.conv import conv_padding
from pyro_flowvi.transforms.flowify.density.layer import standard_normal_log_prob


@pytest.mark.parametrize("c_out", [3, 8])  # decreasing kernel (8 -> 3) and square (8 -> 8)
def test_conv_equals_f_conv2d_with_stride_equal_to_kernel(c_out):
    conv = FlowifiedConv2d(2, c_out, kernel_size=2, input_size=(6, 4))
    randomize_parameters(conv, scale=0.4, seed=1)
    x = torch.randn(5, 2, 6, 4)
    y, c = conv(x)
    assert conv.is_exact
    assert (y - F.conv2d(x, conv.weight, conv.bias, stride=2)).abs().max() < 1e-12
    # C = #locations * sum log s + the per-location conditional terms
    log_s = conv.kernel.factors.log_scales()
    expected = 6 * log_s.sum()
    if c_out < 8:
        tiles = F.unfold(x, 2, stride=2).transpose(-1, -2)  # (B, L, 8)
        r = tiles @ conv.kernel.V
        y_loc = y.flatten(-2).transpose(-1, -2)
        mean, log_std = conv.kernel.conditioner(y_loc)
        eps = (r[..., c_out:] - mean) * torch.exp(-log_std)
        expected = expected + (standard_normal_log_prob(eps) - log_std.sum(-1)).sum(-1)
    assert torch.allclose(c, expected.expand(5), atol=1e-10)
    # exact: forward(inverse(y)) == y
    assert (conv(conv.inverse(y))[0] - y).abs().max() < 1e-10


@pytest.mark.parametrize("n", [2, 3, 4])
def test_duplication_log_det_matches_brute_force(n):
    ones = torch.ones(n, 1) / math.sqrt(n)
    q, _ = torch.linalg.qr(torch.cat([ones, torch.randn(n, n - 1)], 1))
    q_perp = q[:, 1:]
    m = torch.cat([torch.ones(n, 1), math.sqrt(n) * q_perp], 1)  # (p, u) -> p 1 + sqrt(N) Q u
    assert abs(torch.linalg.slogdet(m)[1].item() - n / 2 * math.log(n)) < 1e-12


def test_tile_contribution_constants_and_round_trip():
    tile = FlowifiedTile((2, 5, 5), kernel_size=3, stride=2)  # counts 1, 2 and 4 per pixel
    counts = tile.counts
    assert set(counts.unique().tolist()) == {1.0, 2.0, 4.0}
    expected = 2 * sum(n / 2 * math.log(n) for n in counts.flatten().tolist())
    assert abs(tile.log_det - expected) < 1e-12
    randomize_parameters(tile, scale=0.5, seed=2)
    x = torch.randn(4, 2, 5, 5)
    y, c = tile(x)
    x_back, c_back = tile.inverse_with_contribution(y)
    assert (x_back - x).abs().max() < 1e-12 and (c_back - c).abs().max() < 1e-9
    # the added noise lies in the complement of 1_N: folding with the mean removes it
    assert not tile.is_exact and (tile(x, noise=False)[0] - F.unfold(x, 3, stride=2).reshape(
        y.shape)).abs().max() < 1e-12


def test_pad_round_trip_and_contribution():
    assert conv_padding(5, 3, 2) == 0 and conv_padding(6, 3, 2) == 1 and conv_padding(4, 2, 2) == 0
    pad = FlowifiedPad((1, 3, 4), (1, 2))
    randomize_parameters(pad, scale=0.5)
    x = torch.randn(3, 1, 3, 4)
    y, c = pad(x)
    assert y.shape == (3, 1, 4, 6) and torch.equal(y[..., :3, :4], x)
    x_back, c_back = pad.inverse_with_contribution(y)
    assert torch.equal(x_back, x) and torch.allclose(c_back, c)
    a = pad.log_scale.exp()
    vals = torch.cat([y[..., 3, :].flatten(1), y[..., :3, 4:].flatten(1)], 1)
    assert torch.allclose(c, -torch.distributions.Normal(0.0, a).log_prob(vals).sum(1))


def test_overlapping_conv_with_padding_is_a_bound_and_shapes_hold():
    conv = FlowifiedConv2d(1, 4, kernel_size=3, stride=2, input_size=(6, 6))
    assert conv.padding == (1, 1) and not conv.is_exact
    y, c = conv(torch.randn(2, 1, 6, 6))
    assert y.shape == (2, 4, 3, 3) and c.shape == (2,)  # padded to 7x7: 3 windows a side
    assert conv.inverse(y).shape == (2, 1, 6, 6)


def test_stride_larger_than_kernel_raises():
    with pytest.raises(ValueError, match=r"stride \(3, 3\) > kernel \(2, 2\)"):
        FlowifiedConv2d(1, 2, kernel_size=2, stride=3, input_size=(8, 8))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        FlowifiedConv2d(1, 2, kernel_size=5, input_size=(4, 4))
