"""Whole networks, the sampling-direction bound and Pyro integration (spec section 6, items 6, 9, 10)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import Normal

from pyro_flowvi import AutoFlowGuide, build_flow
from pyro_flowvi.testing import randomize_parameters
from pyro_flowvi.transforms.flowify import (
    FlowifiedBijection,
    FlowifiedConv2d,
    FlowifiedDistribution,
    FlowifiedLeakyReLU,
    FlowifiedLinear,
    FlowifiedReshape,
    FlowifiedSequential,
    flowified_block,
)


def _base(dim):
    return dist.Normal(torch.zeros(dim), 1.0).to_event(1)


def _grid(lim, n):
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), (g[1] - g[0]) ** 2


# 9. whole networks ------------------------------------------------------------------------------------
def test_exact_two_d_network_integrates_to_one():
    # a small MLP conditioner: randomised deep ones make densities too sharp for a 1001^2 grid
    net = FlowifiedSequential(FlowifiedLinear(2, 2), FlowifiedLeakyReLU(),
                              FlowifiedLinear(2, 1, conditioner=[16]))
    randomize_parameters(net, scale=0.3, seed=3)
    d = FlowifiedDistribution(_base(1), net)
    pts, cell = _grid(14.0, 1001)
    with torch.no_grad():
        total = d.log_prob(pts).exp().sum() * cell
    assert abs(total.item() - 1) < 1e-3


@pytest.mark.slow
def test_network_with_increasing_layer_integrates_below_one_and_to_one_with_many_particles():
    torch.manual_seed(5)
    net = FlowifiedSequential(FlowifiedLinear(1, 2), FlowifiedLeakyReLU(),
                              FlowifiedLinear(2, 1, conditioner=[16]))
    randomize_parameters(net, scale=0.4, seed=4)
    d = FlowifiedDistribution(_base(1), net)
    x = torch.linspace(-12, 12, 401)[:, None]
    dx = (x[1] - x[0]).item()
    with torch.no_grad():
        k1 = torch.stack([d.log_prob_lower_bound(x) for _ in range(200)]).mean(0)  # E log w
        kbig = d.log_prob_lower_bound(x, num_particles=2000)
    assert k1.exp().sum().item() * dx < 0.99
    assert abs(kbig.exp().sum().item() * dx - 1) < 0.02
    with pytest.raises(ValueError, match="log_prob_lower_bound"):
        d.log_prob(x)


# 6. the sampling-direction bound ------------------------------------------------------------------
@pytest.mark.slow
def test_sampling_direction_bound_is_an_upper_bound_on_log_q_by_the_kl():
    torch.manual_seed(6)
    layer = FlowifiedLinear(1, 2)  # guide net z (1) -> u (2): increasing
    randomize_parameters(layer, scale=0.6, seed=9)
    d = FlowifiedDistribution(_base(2), layer)
    with torch.no_grad():
        u_mat, s, b = layer.U, layer.factors.log_scales().exp(), layer.bias
        h_mean = -(u_mat.T @ b)
        z, log_q_hat = d.rsample_with_log_prob((40000,))
        log_q = Normal(h_mean[0] / s[0], 1 / s[0]).log_prob(z[:, 0])
    gap = log_q_hat - log_q
    m, sd = (h_mean[1] / s[1]).item(), (1 / s[1]).item()
    kl = -math.log(sd) + (sd**2 + m**2) / 2 - 0.5  # KL(q(eps|z) || r(eps)), r = N(0, 1)
    se = gap.std().item() / math.sqrt(len(gap))
    assert gap.mean().item() >= 0 and abs(gap.mean().item() - kl) < 3 * se


def test_exact_net_cached_value_equals_recomputed_density():
    net = flowified_block(3, 1, hidden_dims=[8])
    randomize_parameters(net, scale=0.4)
    d = FlowifiedDistribution(_base(1), net)
    z = d.rsample((6,))
    assert (d.log_prob(z) - d.log_prob(z.clone())).abs().max() < 1e-10


# 10. Pyro ---------------------------------------------------------------------------------------
def test_cache_and_refusal():
    d = FlowifiedDistribution(_base(3), FlowifiedLinear(2, 3))
    z, lq = d.rsample_with_log_prob((4,))
    assert d.log_prob(z) is lq
    with pytest.raises(ValueError, match=r"shape \(4, 2\).*is_exact=False.*log_prob_lower_bound"):
        d.log_prob(z.clone())
    with pytest.raises(ValueError, match=r"event shape \(2,\) but the net outputs \(3,\)"):
        FlowifiedDistribution(_base(2), FlowifiedLinear(2, 3))


SIGMA = 0.5
X_OBS = torch.tensor([1.0, -0.5])


def _conjugate_model():
    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z, SIGMA).to_event(1), obs=X_OBS)


def _log_z():
    return Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(X_OBS).sum().item()


def _fit(net, base_dim, steps=1000):
    def guide():
        pyro.module("net", net)
        pyro.sample("z", FlowifiedDistribution(_base(base_dim), net))

    svi = SVI(_conjugate_model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.995}),
              Trace_ELBO())
    for _ in range(steps):
        svi.step()
    with torch.no_grad():
        elbos = torch.tensor([-Trace_ELBO().loss(_conjugate_model, guide) for _ in range(2000)])
    return elbos.mean().item(), elbos.std().item() / math.sqrt(len(elbos))


@pytest.mark.slow
def test_svi_exact_linear_guide_reaches_log_z_and_aux_elbo_stays_below():
    torch.manual_seed(0)
    elbo, se = _fit(FlowifiedSequential(FlowifiedLinear(2, 2)), 2)
    assert abs(elbo - _log_z()) < 0.02 + 3 * se  # the posterior is in the family
    torch.manual_seed(1)
    elbo_aux, se_aux = _fit(FlowifiedSequential(FlowifiedLinear(2, 3)), 3)
    assert elbo_aux < _log_z() + 3 * se_aux


def test_gradients_reach_every_parameter():
    net = FlowifiedSequential(
        FlowifiedConv2d(1, 2, kernel_size=2, stride=1, input_size=(3, 3)),  # pad-free, tiled
        FlowifiedReshape((2, 2, 2), (8,)),
        FlowifiedLinear(8, 10, noise="conditional"),
        FlowifiedLeakyReLU(),
        FlowifiedLinear(10, 3),
    )
    randomize_parameters(net, scale=0.3)
    d = FlowifiedDistribution(_base(3), net)
    d.log_prob_lower_bound(torch.randn(16, 1, 3, 3)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    conv = FlowifiedConv2d(1, 2, kernel_size=3, stride=2, input_size=(6, 6))
    randomize_parameters(conv, scale=0.3)  # at init U gets no gradient (N(0, I) is isotropic)
    d = FlowifiedDistribution(dist.Normal(torch.zeros(2, 3, 3), 1.0).to_event(3), conv)
    d.log_prob_lower_bound(torch.randn(4, 1, 6, 6)).sum().backward()
    for name, p in conv.named_parameters():  # pad and tile noise scales included
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device(dtype, device):
    net = FlowifiedSequential(FlowifiedLinear(4, 4), FlowifiedLeakyReLU(), FlowifiedLinear(4, 2))
    net = net.to(device=device, dtype=dtype)
    base = dist.Normal(torch.zeros(2, dtype=dtype, device=device), 1.0).to_event(1)
    d = FlowifiedDistribution(base, net)
    z = d.rsample((5,))
    assert z.dtype == dtype and z.device.type == device.type
    assert d.log_prob(z.clone()).dtype == dtype


# the registry arch and AutoFlowGuide ----------------------------------------------------------------
def test_flowified_arch_is_exact_identity_at_init_and_works_in_auto_flow_guide():
    flow = build_flow("flowified", 4, num_layers=2, hidden_dims=[8])
    e = torch.randn(3, 4)
    assert torch.allclose(flow(e), e, atol=1e-12)
    assert all(isinstance(layer, FlowifiedBijection) for layer in flow.layers)

    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    guide = AutoFlowGuide(model, arch="flowified")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    for _ in range(3):
        assert math.isfinite(svi.step())
    posterior = guide.get_posterior()
    z = posterior.rsample((5,))
    assert torch.allclose(posterior.log_prob(z), posterior.log_prob(z.clone()), atol=1e-5)


def test_bijection_refuses_increasing_nets():
    with pytest.raises(ValueError, match="dimension-increasing"):
        FlowifiedBijection(FlowifiedSequential(FlowifiedLinear(2, 3)))
