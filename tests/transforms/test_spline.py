"""Facts specific to the rational-quadratic spline transformer and the NSF structures (the
invariant suite covers round trips and log-dets of the layers and archs generally)."""

import pytest
import torch
from pyro.distributions.transforms.spline import _monotonic_rational_spline

import pyro_flowvi.transforms as T
from pyro_flowvi import build_flow
from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms import (
    Autoregressive,
    Coupling,
    SplineTransformer,
    spline_autoregressive,
    spline_coupling,
)
from pyro_flowvi.transforms.spline import rational_quadratic_spline, spline_knots

K, B, D = 6, 2.5, 4


def _params(seed=0, scale=1.5):
    return scale * torch.randn(3 * K - 1, D, generator=torch.Generator().manual_seed(seed))


def _points(params):
    """Random points inside, outside, at +-B, and exactly on every knot of each coordinate."""
    raw = params.T
    kx, _, _ = spline_knots(*raw.split([K, K, K - 1], -1), B)
    gen = torch.Generator().manual_seed(3)
    inside = (2 * torch.rand(64, D, generator=gen) - 1) * B
    outside = torch.tensor([[-7.0], [-B - 1e-9], [B + 1e-9], [9.0]]).expand(4, D)
    return torch.cat([inside, outside, kx.T], 0)  # kx.T: (K+1, D), knots incl. +-B


def test_round_trip_and_log_det_against_autograd_everywhere():
    f = SplineTransformer(K, B)
    params = _params()
    x = _points(params)
    y, log_grad = f.forward(x, params)
    x_back, log_grad_back = f.inverse(y, params)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(log_grad_back, log_grad, atol=1e-10)
    # elementwise maps: the gradient of the sum is the diagonal of the Jacobian
    slope = torch.func.grad(lambda v: f.forward(v, params)[0].sum())(x)
    assert torch.allclose(log_grad, slope.log(), atol=1e-9)
    inv_slope = torch.func.grad(lambda v: f.inverse(v, params)[0].sum())(y)
    assert torch.allclose(-log_grad, inv_slope.log(), atol=1e-9)


def test_monotone_continuous_and_identity_tails():
    f = SplineTransformer(K, B)
    params = _params(seed=1, scale=3.0)
    grid = torch.linspace(-2 * B, 2 * B, 4001)[:, None].expand(-1, D)
    y, log_grad = f.forward(grid, params)
    assert (y.diff(dim=0) > 0).all()  # strictly increasing
    outside = grid.abs() > B
    assert torch.equal(y[outside], grid[outside]) and (log_grad[outside] == 0).all()
    # value and slope continuous at +-B (boundary derivatives are 1)
    edge = torch.tensor([[-B], [B]]).expand(2, D)
    for eps in (1e-7, -1e-7):
        assert torch.allclose(f.forward(edge + eps, params)[0], edge + eps, atol=1e-6)
    # at +-B, inside the spline: the knots run corner to corner, with slope exactly 1
    y_edge, lg_edge = f.forward(edge, params)
    assert torch.allclose(y_edge, edge, atol=1e-12) and lg_edge.abs().max() < 1e-12


def test_zero_parameters_give_the_identity():
    f = SplineTransformer(K, B)
    x = 3 * torch.randn(100, D)
    y, log_grad = f.forward(x, torch.zeros(3 * K - 1, D))
    assert torch.allclose(y, x, atol=1e-12) and log_grad.abs().max() < 1e-12


@pytest.mark.parametrize("inverse", [False, True])
def test_matches_pyro_spline_given_the_same_knots(inverse):
    """Pyro's quadratic spline with ``min_derivative=0`` has boundary derivatives 1, as ours:
    the parametrisations coincide once ours's inner derivatives are handed over."""
    params = _params(seed=2)
    w, h, d = params.T.split([K, K, K - 1], -1)
    _, _, kd = spline_knots(w, h, d, B)
    x = _points(params)
    ours, ours_lg = rational_quadratic_spline(x, spline_knots(w, h, d, B), B, inverse)
    theirs, theirs_lg = _monotonic_rational_spline(
        x, torch.softmax(w, -1), torch.softmax(h, -1), kd[..., 1:-1], inverse=inverse, bound=B,
        min_derivative=0.0)
    assert torch.allclose(ours, theirs, atol=1e-9)
    # Pyro reports the inverse map's log-det for inverse=True; ours is always the forward's
    assert torch.allclose(-ours_lg if inverse else ours_lg, theirs_lg, atol=1e-9)


def test_structures_take_the_spline_and_size_the_conditioner_from_it():
    ar = spline_autoregressive(3, hidden_dims=[8], count_bins=5)
    assert ar.conditioner.out_shape == (14, 3) and isinstance(ar, Autoregressive)
    cp = spline_coupling(5, count_bins=4, hidden_dims=[8])
    assert cp.conditioner.out_shape == (11, 2) and isinstance(cp, Coupling)
    assert "SplineTransformer(count_bins=5" in repr(ar)


@pytest.mark.parametrize("arch", ["nsf", "nsf-coupling"])
def test_archs_density_integrates_to_one_on_a_grid(arch):
    import pyro.distributions as dist

    flow = build_flow(arch, 2, num_layers=2, hidden_dims=[16], bound=2.0, count_bins=4)
    randomize_parameters(flow, scale=0.2)  # non-trivial, yet smooth enough for the grid
    q = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), flow)
    g = torch.linspace(-9, 9, 901)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_q = q.log_prob(xy)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1).log_prob(xy)
    assert (log_q - base).abs().max() > 0.1  # a non-trivial flow
    mass = log_q.exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1) < 2e-3


def test_bad_options_are_refused_early():
    with pytest.raises(ValueError, match="count_bins must be an integer >= 2"):
        SplineTransformer(count_bins=1)
    with pytest.raises(ValueError, match="bound must be a positive number"):
        SplineTransformer(bound=-1.0)
    with pytest.raises(ValueError, match="count_bins must be an integer >= 2"):
        build_flow("nsf", 3, count_bins=2.5)
    with pytest.raises(ValueError, match="unknown option 'bins'.*count_bins"):
        build_flow("nsf-coupling", 3, bins=4)


def test_composed_transformer_chains_values_and_log_dets():
    spline, affine = SplineTransformer(K, B), T.AffineTransformer("exp", 3.0)
    both = T.ComposedTransformer(spline, affine)
    assert both.num_params == spline.num_params + 2
    params = torch.cat([_params(seed=4), torch.randn(2, D)], 0)
    x = _points(_params(seed=4))
    y_s, lg_s = spline.forward(x, params[: spline.num_params])
    y, lg = both.forward(x, params)
    y_a, lg_a = affine.forward(y_s, params[spline.num_params:])
    assert torch.allclose(y, y_a, atol=1e-12) and torch.allclose(lg, lg_s + lg_a, atol=1e-12)
    x_back, lg_back = both.inverse(y, params)
    assert torch.allclose(x_back, x, atol=1e-10) and torch.allclose(lg_back, lg, atol=1e-10)
    slope = torch.func.grad(lambda v: both.forward(v, params)[0].sum())(x)
    assert torch.allclose(lg, slope.log(), atol=1e-9)
    with pytest.raises(ValueError, match="at least one"):
        T.ComposedTransformer()
