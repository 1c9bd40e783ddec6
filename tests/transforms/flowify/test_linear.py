"""Flowified linear layers: rotations, the three cases, closed forms (spec section 6, items 1-5)."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms.flowify import (
    FlowifiedDistribution,
    FlowifiedLinear,
    LinearGaussianConditioner,
    Rotation,
)


def _base(dim, loc=None, scale=1.0):
    import pyro.distributions as dist

    loc = torch.zeros(dim) if loc is None else loc
    return dist.Normal(loc, scale).to_event(1)


# 1. rotations -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["exp", "householder"])
@pytest.mark.parametrize("dim", [1, 2, 3, 6])
def test_rotation_is_special_orthogonal(method, dim):
    rot = Rotation(dim, method, init="random", seed=3)
    r = rot()
    assert torch.allclose(r.T @ r, torch.eye(dim), atol=1e-12)
    assert abs(torch.linalg.det(r).item() - 1.0) < 1e-12
    assert torch.equal(Rotation(dim, method)(), torch.eye(dim)) or method == "householder"
    assert torch.allclose(Rotation(dim, method)(), torch.eye(dim), atol=1e-12)


def test_square_layer_is_identity_at_init():
    layer = FlowifiedLinear(4, 4)
    x = torch.randn(6, 4)
    y, c = layer(x)
    assert torch.equal(y, x) and torch.equal(c, torch.zeros(6))


# 2. square layer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", ["exp", "householder"])
def test_square_layer_log_det_weight_and_round_trips(rotation):
    layer = FlowifiedLinear(3, 3, rotation=rotation)
    randomize_parameters(layer, scale=0.5, seed=1)
    x = torch.randn(5, 3)
    y, c = layer(x)
    w = layer.weight
    assert torch.allclose(c, torch.linalg.slogdet(w)[1].expand(5), atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x[0])
    assert torch.allclose(c[0], torch.linalg.slogdet(jac)[1], atol=1e-12)
    assert torch.allclose(y, x @ w.T + layer.bias, atol=1e-12)
    assert (layer.inverse(y) - x).abs().max() < 1e-10
    y2 = torch.randn(5, 3)
    assert (layer(layer.inverse(y2))[0] - y2).abs().max() < 1e-10
    assert torch.allclose(layer.singular_values.sort().values,
                          torch.linalg.svdvals(w).sort().values, atol=1e-12)


def test_square_layer_as_transform_shares_parameters():
    layer = FlowifiedLinear(3, 3)
    randomize_parameters(layer, scale=0.5)
    t = layer.as_transform()
    x = torch.randn(4, 3)
    assert torch.equal(t(x), layer(x)[0])
    with pytest.raises(ValueError, match="only square"):
        FlowifiedLinear(3, 2).as_transform()


# 3. decreasing layer ------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioner", [None, "linear", [8]])
@pytest.mark.parametrize("keep", ["first", "last"])
def test_decreasing_layer_forward_of_inverse_is_identity(conditioner, keep):
    layer = FlowifiedLinear(5, 2, conditioner=conditioner, keep=keep)
    randomize_parameters(layer, scale=0.3, seed=2)
    y = torch.randn(7, 2)
    for _ in range(3):
        x = layer.inverse(y)
        assert (layer(x)[0] - y).abs().max() < 1e-10
    x_mean = layer.inverse(y, mode="mean")
    assert (layer(x_mean)[0] - y).abs().max() < 1e-10
    x, c = layer.inverse_with_contribution(y)
    assert (layer(x)[1] - c).abs().max() < 1e-9
    assert torch.allclose(y, x @ layer.weight.T + layer.bias, atol=1e-10)


# 4. closed forms ------------------------------------------------------------------------------------
def _layer_2_to_1(seed=0):
    layer = FlowifiedLinear(2, 1, conditioner="linear")
    randomize_parameters(layer, scale=0.6, seed=seed)
    return layer


def test_two_to_one_layer_is_the_analytic_gaussian():
    layer = _layer_2_to_1()
    cond = layer.conditioner
    s = layer.singular_values[0]
    b = layer.bias[0]
    a, c0, sigma = cond.weight[0, 0], cond.bias[0], cond.log_std[0].exp()
    # r_keep = (y - b) / s with y ~ N(0, 1); r_drop | y ~ N(a y + c0, sigma^2)
    mean_r = torch.stack([-b / s, c0])
    cov_r = torch.stack([torch.stack([1 / s**2, a / s]), torch.stack([a / s, a**2 + sigma**2])])
    v = layer.V
    truth = MultivariateNormal(v @ mean_r, v @ cov_r @ v.T)
    x = truth.sample((50,)) * 2
    lp = FlowifiedDistribution(_base(1), layer).log_prob(x)
    assert (lp - truth.log_prob(x)).abs().max() < 1e-12


def _grid(lim, n):
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), (g[1] - g[0]) ** 2


def test_exact_decreasing_layer_integrates_to_one():
    d = FlowifiedDistribution(_base(1), _layer_2_to_1(seed=4))
    pts, cell = _grid(12.0, 801)
    with torch.no_grad():
        total = d.log_prob(pts).exp().sum() * cell
    assert abs(total.item() - 1) < 1e-3


def test_true_conditional_reproduces_a_projected_gaussian():
    mu = torch.tensor([0.5, -1.0])
    sig = torch.tensor([[1.5, 0.6], [0.6, 0.8]])
    layer = FlowifiedLinear(2, 1, conditioner="linear")
    randomize_parameters(layer, scale=0.7, seed=5)
    cond = layer.conditioner
    with torch.no_grad():
        w, b = layer.weight, layer.bias
        v_drop = layer.V[:, 1]
        mean_y = w @ mu + b
        var_y = w @ sig @ w.T
        cov_dy = v_drop @ sig @ w.T
        k = cov_dy / var_y
        cond.weight.copy_(k.reshape(1, 1))
        cond.bias.copy_((v_drop @ mu - k * mean_y).reshape(1))
        cond.log_std.copy_(0.5 * torch.log(v_drop @ sig @ v_drop - cov_dy**2 / var_y).reshape(1))
    d = FlowifiedDistribution(_base(1, mean_y.detach(), var_y.detach().sqrt()), layer)
    truth = MultivariateNormal(mu, sig)
    x = truth.sample((100,))
    assert (d.log_prob(x) - truth.log_prob(x)).abs().max() < 1e-12


# 5. increasing layer ------------------------------------------------------------------------------
def _increasing(seed=0):
    layer = FlowifiedLinear(1, 2)
    randomize_parameters(layer, scale=0.6, seed=seed)
    return layer


def test_increasing_layer_inverse_of_forward_and_joint_log_det():
    layer = FlowifiedLinear(2, 4)
    randomize_parameters(layer, scale=0.5, seed=6)
    x = torch.randn(5, 2)
    for _ in range(3):
        assert (layer.inverse(layer(x)[0]) - x).abs().max() < 1e-10
    log_s = layer.factors.log_scales()
    eps0 = torch.randn(2)

    def joint(v):
        layer._draw_noise = lambda x, ctx, noise: v[2:]
        try:
            return layer(v[:2])[0]
        finally:
            del layer._draw_noise

    jac = torch.autograd.functional.jacobian(joint, torch.cat([x[0], eps0]))
    assert torch.allclose(torch.linalg.slogdet(jac)[1], log_s.sum(), atol=1e-12)
    layer._draw_noise = lambda x, ctx, noise: eps0.expand(x.shape[:-1] + (2,))
    _, c = layer(x)
    del layer._draw_noise
    expected = log_s.sum() - Normal(0.0, 1.0).log_prob(eps0).sum()
    assert torch.allclose(c, expected.expand(5), atol=1e-12)
    # inverse_with_contribution uses the discarded coordinates
    y, c_fwd = layer(x)
    _, c_inv = layer.inverse_with_contribution(y)
    assert torch.allclose(c_inv, c_fwd, atol=1e-10)


def _exact_and_kl(layer):
    """log p_in(x) and KL(r(eps) || p(eps | x)) for a 1 -> 2 layer on a N(0, I_2) base."""
    with torch.no_grad():
        u, s, b = layer.U, layer.factors.log_scales().exp(), layer.bias
    h_mean = -(u.T @ b)  # h = U^T (y - b) ~ N(-U^T b, I)
    exact = Normal(h_mean[0] / s[0], 1 / s[0])
    m, sd = h_mean[1] / s[1], 1 / s[1]
    kl = math.log(sd) + (1 + m.item() ** 2) / (2 * sd.item() ** 2) - 0.5
    return exact, kl


@pytest.mark.slow
def test_increasing_layer_bound_gap_is_the_analytic_kl():
    torch.manual_seed(11)
    layer = _increasing(seed=7)
    d = FlowifiedDistribution(_base(2), layer)
    exact, kl = _exact_and_kl(layer)
    x = torch.tensor([[0.3]]).expand(40000, 1)
    with torch.no_grad():
        gap = exact.log_prob(x[:, 0]) - d.log_prob_lower_bound(x)
    se = gap.std() / math.sqrt(len(gap))
    assert gap.mean() > 0
    assert abs(gap.mean().item() - kl) < 3 * se.item()


@pytest.mark.slow
def test_iwae_bound_tightens_with_particles():
    torch.manual_seed(12)
    layer = _increasing(seed=8)
    d = FlowifiedDistribution(_base(2), layer)
    exact, _ = _exact_and_kl(layer)
    x = torch.tensor([[-0.4]]).expand(2000, 1)
    with torch.no_grad():
        means = [d.log_prob_lower_bound(x, num_particles=k).mean().item() for k in (1, 10, 100)]
    truth = exact.log_prob(torch.tensor(-0.4)).item()
    assert means[0] < means[1] < means[2] < truth + 1e-3
    assert truth - means[2] < 0.5 * (truth - means[0])


def test_noise_options_and_bad_arguments():
    x = torch.randn(4, 2)
    for noise in ("gaussian", "conditional", "uniform"):
        layer = FlowifiedLinear(2, 3, noise=noise)
        y, c = layer(x)
        assert torch.isfinite(c).all() and (layer.inverse(y) - x).abs().max() < 1e-10
    with pytest.raises(ValueError, match="noise must be one of"):
        FlowifiedLinear(2, 3, noise="laplace")
    with pytest.raises(ValueError, match=r"event shape \(3,\).*got shape \(4, 2\)"):
        FlowifiedLinear(3, 2)(x)
    with pytest.raises(ValueError, match="unknown conditioner"):
        FlowifiedLinear(3, 2, conditioner=3.5)
    with pytest.raises(ValueError, match="conditional"):
        FlowifiedLinear(3, 2, context_dim=2)(torch.randn(4, 3))
    layer = FlowifiedLinear(3, 2, conditioner=LinearGaussianConditioner(2, 1, context_dim=2),
                            context_dim=2)
    y, c = layer(torch.randn(4, 3), torch.randn(4, 2))
    assert c.shape == (4,)
