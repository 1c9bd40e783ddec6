"""MassCoveringELBO: the ELBO part equals Trace_ELBO, the forward-KL gradient matches its closed
form for a Gaussian guide, and its error cases (the banana fit is in tests/lab/experiments)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from pyro_flowvi import AutoFlowGuide, MassCoveringELBO

MEAN = [1.0, -2.0]
SD = [0.5, 2.0]


def gaussian_model():
    pyro.sample("z", dist.Normal(torch.tensor(MEAN), torch.tensor(SD)).to_event(1))


def _grads(guide, loss):
    params = [guide.affine_white_unconstrained, guide.flow_packed_unconstrained]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


@pytest.mark.parametrize("arch", ["iaf", "realnvp"])
def test_without_forward_draws_it_is_trace_elbo(arch, float64):
    """forward_particles=0: the same draws, the same loss and gradient as Trace_ELBO."""
    pyro.clear_param_store()
    guide = AutoFlowGuide(gaussian_model, arch=arch)
    guide()
    with torch.no_grad():
        guide.flow_packed_unconstrained.add_(0.1 * torch.randn_like(guide.flow_packed))
    out = {}
    for name, elbo in (("trace", Trace_ELBO(num_particles=8, vectorize_particles=True)),
                       ("covering", MassCoveringELBO(num_particles=8, forward_particles=0))):
        torch.manual_seed(3)
        loss = elbo.differentiable_loss(gaussian_model, guide)
        out[name] = (loss.detach(), _grads(guide, loss))
    assert torch.allclose(out["trace"][0], out["covering"][0], atol=1e-12)
    assert torch.allclose(out["trace"][1], out["covering"][1], atol=1e-10)


def test_forward_gradient_matches_the_gaussian_closed_form(float64):
    r"""With an identity flow q = N(mu, s^2): d KL(p || q) / d mu = (mu - m) / s^2 and
    d / d log s = 1 - (sd_p^2 + (mu - m)^2) / s^2, per coordinate.  The self-normalised
    estimate over 200,000 forward draws matches it to within Monte Carlo error."""
    pyro.clear_param_store()
    guide = AutoFlowGuide(gaussian_model, arch="realnvp", num_layers=2, hidden_dims=[8],
                          base="diagonal", warm_start=None, init_scale=1.0)  # s0 = 1, P = I
    guide()
    with torch.no_grad():
        guide.flow_packed_unconstrained.zero_()  # coupling nets output 0: the identity
    mu, s = torch.tensor([1.2, -1.5]), torch.tensor([0.6, 2.5])
    guide.set_affine(loc=mu, scale=s)
    # the forward term alone: (weight 1) - (weight 0), on the same draws
    grads = []
    for weight in (1.0, 0.0):
        torch.manual_seed(0)
        elbo = MassCoveringELBO(num_particles=1, forward_particles=200_000, forward_weight=weight)
        loss = elbo.differentiable_loss(gaussian_model, guide)
        loc_white, raw = torch.autograd.grad(loss, [guide.affine_white_unconstrained])[0]
        grads.append((loc_white, raw))
    d_loc = grads[0][0] - grads[1][0]
    d_raw = grads[0][1] - grads[1][1]
    m, sd = torch.tensor(MEAN), torch.tensor(SD)
    exact_loc = (mu - m) / s**2
    # scale = softplus(raw) (the factor starts at 1 with scale0 = 1): d/draw = d/ds * sigmoid
    factor = torch.sigmoid(torch.log(torch.expm1(s)))
    exact_raw = (1.0 / s - (sd**2 + (mu - m) ** 2) / s**3) * factor
    assert torch.allclose(d_loc, exact_loc, rtol=0.05, atol=0.01), (d_loc, exact_loc)
    assert torch.allclose(d_raw, exact_raw, rtol=0.05, atol=0.01), (d_raw, exact_raw)


def test_forward_ess_is_recorded_and_loss_is_the_negative_elbo(float64):
    pyro.clear_param_store()
    # a deliberately imperfect start (no warm start): N(median, 1) against N(MEAN, SD)
    guide = AutoFlowGuide(gaussian_model, arch="iaf", base="diagonal", warm_start=None,
                          init_scale=1.0)
    elbo = MassCoveringELBO(num_particles=4, forward_particles=500)
    svi = SVI(gaussian_model, guide, Adam({"lr": 1e-2}), elbo)
    loss = svi.step()
    assert 1.0 <= float(elbo.last_forward_ess) < 500.0 - 1.0  # unequal weights
    # the loss is -ELBO on all 504 draws: the exact KL of the initial guide is close to it
    q = dist.Normal(guide.loc.detach(), guide.scale.detach())
    p = dist.Normal(torch.tensor(MEAN), torch.tensor(SD))
    exact_kl = float(torch.distributions.kl_divergence(q, p).sum())  # 1.3 nats
    # 4 standard errors of a 504-draw mean of log q - log p (its sd from 200k exact draws)
    draws = q.sample((200_000,))
    sd = float((q.log_prob(draws) - p.log_prob(draws)).sum(-1).std())
    assert abs(loss - exact_kl) < 4 * sd / 504**0.5, (loss, exact_kl, sd)


def test_errors():
    with pytest.raises(ValueError, match="forward_particles"):
        MassCoveringELBO(forward_particles=-1)
    with pytest.raises(ValueError, match="forward_weight"):
        MassCoveringELBO(forward_weight=-1.0)
    with pytest.raises(ValueError, match="num_particles"):
        MassCoveringELBO(num_particles=0)
    pyro.clear_param_store()
    with pytest.raises(TypeError, match="AutoFlowGuide"):
        MassCoveringELBO().differentiable_loss(gaussian_model, AutoNormal(gaussian_model))
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="inverse"):
        MassCoveringELBO().differentiable_loss(gaussian_model,
                                               AutoFlowGuide(gaussian_model, arch="sylvester"))
