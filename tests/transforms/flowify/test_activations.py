"""Invertible activations (spec section 6, item 7)."""

import pytest
import torch
from torch import nn

from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms.flowify import (
    FlowifiedLeakyReLU,
    FlowifiedSequential,
    FlowifiedSpline,
    flowify_activation,
)

ACTIVATIONS = {
    "leaky_relu": lambda: FlowifiedLeakyReLU(0.5),
    "spline-shared": lambda: FlowifiedSpline(),
    "spline-per-unit": lambda: FlowifiedSpline(shared=False, features=4),
}


def _built(name):
    layer = ACTIVATIONS[name]()
    randomize_parameters(layer, scale=1.0, seed=3)
    return layer


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_round_trip_and_contribution_against_autograd(name):
    layer = _built(name)
    x = 1.5 * torch.randn(6, 4)
    y, c = layer(x)
    x_back, c_back = layer.inverse_with_contribution(y)
    assert (x_back - x).abs().max() < 1e-10
    assert (c_back - c).abs().max() < 1e-10
    for k in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[k])
        assert torch.allclose(jac, torch.diag(jac.diagonal()), atol=1e-14)  # elementwise
        assert torch.allclose(c[k], jac.diagonal().abs().log().sum(), atol=1e-10)


@pytest.mark.parametrize("shared", [True, False])
def test_spline_is_monotone_with_identity_tails(shared):
    layer = FlowifiedSpline(count_bins=10, bound=2.0, shared=shared, features=None if shared else 1)
    randomize_parameters(layer, scale=2.0, seed=4)
    x = torch.linspace(-4, 4, 4001)[:, None]
    y, _ = layer(x)
    assert (y[1:] > y[:-1]).all()
    outside = x.abs() > 2.0
    assert torch.equal(y[outside], x[outside])
    assert torch.allclose(layer(torch.tensor([[-2.0], [2.0]]))[0], torch.tensor([[-2.0], [2.0]]))


def test_spline_starts_at_identity_and_takes_the_previous_shape():
    net = FlowifiedSequential(FlowifiedSpline(), FlowifiedLeakyReLU(0.3, shape=(3,)))
    x = torch.randn(5, 3)
    y, c = net(x)
    assert net.in_shape == (3,) and net[0].in_shape == (3,)
    assert torch.allclose(net[0](x)[0], x, atol=1e-12)


def test_relu_is_refused_and_leaky_relu_converted():
    with pytest.raises(ValueError, match="not invertible"):
        flowify_activation(nn.ReLU())
    with pytest.raises(ValueError, match="no flowified counterpart"):
        flowify_activation(nn.Tanh())
    with pytest.raises(ValueError, match="ReLU has no density"):
        FlowifiedLeakyReLU(0.0)
    assert flowify_activation(nn.LeakyReLU(0.1)).negative_slope == 0.1
    with pytest.raises(ValueError, match="features"):
        FlowifiedSpline(shared=False)
