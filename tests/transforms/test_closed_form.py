"""Closed-form checks: linear maps of Gaussians (seed §2.4), ActNorm's data init, transformer
parametrisations, normalisation on a grid, and the IAF/MAF duality."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_flowvi import build_flow
from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms import ActNorm, AffineAutoregressive, AffineTransformer, Inverted, LULinear


def std_normal(dim):
    return dist.Normal(torch.zeros(dim), 1.0).to_event(1)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_linear_map_of_gaussian_matches_closed_form(dim):
    """y = W x + b with x ~ N(0, I) has density N(y; b, W W^T) (seed §2.4)."""
    flow = LULinear(dim, permutation=torch.randperm(dim, generator=torch.Generator().manual_seed(0)))
    randomize_parameters(flow, scale=0.7)
    q = dist.TransformedDistribution(std_normal(dim), flow)
    w, b = flow.weight, flow.bias
    exact = dist.MultivariateNormal(b, covariance_matrix=w @ w.T)
    y = 2 * torch.randn(20, dim)  # arbitrary points, scored through the inverse
    assert torch.allclose(q.log_prob(y), exact.log_prob(y), atol=1e-10)
    x = torch.randn(4, dim)
    assert torch.allclose(flow(x), x @ w.T + b, atol=1e-12)
    # entropy identity, exact for an affine flow: H[q] = H[N] + log|det W|
    h_base = 0.5 * dim * (1 + math.log(2 * math.pi))
    assert torch.allclose(exact.entropy(), h_base + flow.log_diag.sum(), atol=1e-10)


@pytest.mark.parametrize("first", ["forward", "inverse"])
def test_actnorm_data_init_standardises_the_first_output(first):
    t = ActNorm(3)
    data = torch.tensor([1.0, -2.0, 5.0]) + torch.tensor([0.5, 3.0, 10.0]) * torch.randn(500, 3)
    out = t(data) if first == "forward" else t.inv(data)
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-8)
    assert torch.allclose(out.std(0), torch.ones(3), atol=1e-5)
    state = t.state_dict()
    assert bool(state["initialized"])
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    other = torch.randn(50, 3)
    assert torch.allclose(fresh(other), t(other))  # no re-initialisation after loading


def test_actnorm_single_point_keeps_identity():
    t = ActNorm(2)
    x = torch.randn(2)
    assert torch.equal(t(x), x)


@pytest.mark.parametrize("scale", ["exp", "softplus", "sigmoid"])
def test_transformer_log_det_and_inverse(scale):
    f = AffineTransformer(scale, max_log_scale=2.0)
    x, shift, raw = torch.randn(3, 50).unbind(0)
    raw = 4 * raw
    y, log_s = f.forward(x, torch.stack([shift, raw], -2))
    # elementwise: the gradient of the sum is the diagonal of the Jacobian
    slope = torch.func.grad(lambda v: f.forward(v, torch.stack([shift, raw], -2))[0].sum())(x)
    assert torch.allclose(log_s, slope.abs().log(), atol=1e-12)
    x_back, log_s_back = f.inverse(y, torch.stack([shift, raw], -2))
    assert torch.allclose(x_back, x, atol=1e-12) and torch.allclose(log_s_back, log_s)
    if scale == "exp":
        assert log_s.abs().max() < 2.0  # the soft clamp bounds log s to (-B, B)
    if scale == "softplus":
        assert torch.allclose(f.forward(x, torch.zeros(2, 50))[0], x, atol=1e-12)
    with pytest.raises(ValueError, match="unknown scale"):
        AffineTransformer("tanh")


@pytest.mark.parametrize("arch", ["realnvp", "maf", "iaf"])
def test_density_integrates_to_one_on_a_grid(arch):
    flow = build_flow(arch, 2, num_layers=3, hidden_dims=[16, 16])
    randomize_parameters(flow, scale=0.15)  # non-trivial, yet light-tailed enough for the grid
    q = dist.TransformedDistribution(std_normal(2), flow)
    g = torch.linspace(-15, 15, 601)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    mass = q.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1.0) < 2e-3


def test_maf_is_the_inverse_of_iaf():
    iaf = AffineAutoregressive(4, [16])
    randomize_parameters(iaf)
    maf = Inverted(iaf)
    y = torch.randn(6, 4)
    u, ladj = maf.call_and_ladj(y)  # sequential in the MAF sampling direction
    assert torch.allclose(iaf(u), y, atol=1e-10)
    assert torch.allclose(ladj, -iaf.log_abs_det_jacobian(u, iaf(u)), atol=1e-10)
