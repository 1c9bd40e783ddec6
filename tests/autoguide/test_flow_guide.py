"""AutoFlowGuide: closed-form posteriors, the entropy identity, ELBO variants, Pyro plumbing
and every error case."""

import copy
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceGraph_ELBO,
)
from pyro.infer.autoguide.initialization import init_to_value
from pyro.optim import Adam, ClippedAdam

from pyro_flowvi import AutoFlowGuide
from pyro_flowvi.autoguide import NonFiniteLossError, fit_svi
from pyro_flowvi.diagnostics import elbo_estimate, entropy_decomposition, importance_log_weights
from pyro_flowvi.testing import randomize_parameters


# ---------------------------------------------------------------------------------------------
# Conjugate Bayesian linear regression: exact posterior and evidence
# ---------------------------------------------------------------------------------------------
def regression_problem(uncentred=False, n=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen)
    if uncentred:
        x = 1000.0 + 10.0 * x  # posterior correlation ~ -1, scales 10^3 apart
    design = torch.stack([torch.ones(n), x], -1)
    prior_sd = torch.tensor([10.0, 1.0]) if uncentred else torch.tensor([1.0, 1.0])
    w_true = torch.tensor([0.5, 0.01 if uncentred else -1.0])
    noise = 0.5
    y = design @ w_true + noise * torch.randn(n, generator=gen)

    def model(design, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(2), prior_sd).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal((design * w).sum(-1), noise), obs=y)

    precision = design.T @ design / noise**2 + torch.diag(prior_sd**-2)
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y / noise**2
    marginal = dist.MultivariateNormal(
        torch.zeros(n), design @ torch.diag(prior_sd**2) @ design.T + noise**2 * torch.eye(n))
    return model, (design, y), mean, cov, marginal.log_prob(y)


def fit(model, guide, args, steps, lr=1e-2, particles=16):
    """Adam with the learning rate decayed tenfold over the run (less end-of-run noise)."""
    svi = SVI(model, guide, ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)}),
              Trace_ELBO(num_particles=particles, vectorize_particles=True))
    return fit_svi(svi, *args, num_steps=steps, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["iaf", "realnvp"])
def test_conjugate_posterior_and_evidence(arch, float64):
    """Sticking-the-landing makes the exact posterior a zero-variance fixed point: measured KL
    after 1500 steps 2e-4 (iaf) / 6e-5 (realnvp) against 0.017 / 0.054 without it."""
    model, args, mean, cov, log_z = regression_problem()
    guide = AutoFlowGuide(model, arch=arch, num_layers=2, hidden_dims=[16, 16], stl=True)
    fit(model, guide, args, steps=1500)
    log_w, samples = importance_log_weights(model, guide, *args, num_samples=8000)
    elbo, se = elbo_estimate(log_w)
    assert log_z.item() - 0.005 < elbo < log_z.item() + 3 * se  # ELBO -> log evidence
    w = samples["w"]
    sd = cov.diagonal().sqrt()
    assert ((w.mean(0) - mean).abs() / sd).max() < 0.05
    assert ((w.std(0) / sd) - 1).abs().max() < 0.05


@pytest.mark.slow
def test_laplace_warm_start_reaches_badly_scaled_posterior(float64):
    model, args, mean, cov, log_z = regression_problem(uncentred=True)
    sd = cov.diagonal().sqrt()
    corr = cov[0, 1] / (sd[0] * sd[1])
    assert corr < -0.99 and sd[0] / sd[1] > 500  # the problem is as hard as advertised
    guide = AutoFlowGuide(model, arch="iaf", num_layers=2, hidden_dims=[16, 16], base="full",
                          warm_start="laplace")
    guide(*args)
    # the warm start alone recovers the (Gaussian) posterior; a short fit must keep it there
    assert torch.allclose(guide.loc, torch.cat([mean]), rtol=0, atol=1e-3 * sd.min().item())
    fit(model, guide, args, steps=300, lr=1e-3)
    log_w, samples = importance_log_weights(model, guide, *args, num_samples=4000)
    elbo, _ = elbo_estimate(log_w)
    assert elbo > log_z.item() - 0.05
    assert ((samples["w"].mean(0) - mean).abs() / sd).max() < 0.1


# ---------------------------------------------------------------------------------------------
# Entropy bookkeeping
# ---------------------------------------------------------------------------------------------
def gaussian_model():
    pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))


def test_step_zero_is_the_gaussian_base(float64):
    guide = AutoFlowGuide(gaussian_model, base="full", init_scale=0.3)
    guide()
    target = torch.tensor([[0.3, 0, 0], [0.1, 0.5, 0], [-0.2, 0.05, 0.7]])
    guide.set_affine(scale=target)  # scale_tril = (0.3 I) @ factor
    assert torch.allclose(guide.scale, target)
    q = guide.get_posterior()
    exact = dist.MultivariateNormal(guide.loc, scale_tril=guide.scale)
    z = q.rsample((100,))
    assert torch.allclose(q.log_prob(z), exact.log_prob(z), atol=1e-10)
    ent = entropy_decomposition(q, num_samples=2000)
    # entropy identity for an affine map of a Gaussian, exactly: H = H[N] + log|det L|
    assert math.isclose(ent["entropy_identity"], exact.entropy().item(), abs_tol=1e-10)


@pytest.mark.parametrize("arch", ["iaf", "realnvp", "sylvester", "maf"])
def test_entropy_sign_flip_per_draw(arch, float64):
    guide = AutoFlowGuide(gaussian_model, arch=arch, num_layers=2, hidden_dims=[8])
    guide()
    randomize_parameters(guide, scale=0.3)
    ent = entropy_decomposition(guide.get_posterior(), num_samples=3000)
    assert ent["identity_max_abs_error"] < 1e-10  # log q = log N(eps) - sum log|det J|
    assert abs(ent["residual"]) < 4 * ent["residual_se"] + 1e-12


# ---------------------------------------------------------------------------------------------
# ELBO variants, JIT, plates and subsampling
# ---------------------------------------------------------------------------------------------
def plate_model(x, subsample_size=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
        pyro.sample("x", dist.Normal(mu, sigma), obs=x[idx])


DATA = 2.0 + 0.5 * torch.randn(100, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("elbo", [
    Trace_ELBO(num_particles=4, vectorize_particles=True),
    Trace_ELBO(num_particles=3),
    TraceGraph_ELBO(),
    RenyiELBO(alpha=0.0, num_particles=4),
    JitTrace_ELBO(num_particles=4, vectorize_particles=True, ignore_jit_warnings=True),
], ids=["trace-vectorized", "trace-loop", "tracegraph", "renyi-iwae", "jit"])
@pytest.mark.parametrize("subsample_size", [None, 20])
def test_elbo_variants_train(elbo, subsample_size):
    # a cold start (the warm start would begin at the optimum, leaving nothing to learn)
    guide = AutoFlowGuide(plate_model, num_layers=2, hidden_dims=[8], warm_start=None)
    svi = SVI(plate_model, guide, Adam({"lr": 3e-2}), elbo)
    losses = fit_svi(svi, DATA, subsample_size=subsample_size, num_steps=60, progress=False)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < sum(losses[:10])  # it learns


def test_subsampled_plate_scales_the_likelihood():
    guide = AutoFlowGuide(plate_model, num_layers=1, hidden_dims=[4])
    guide(DATA)
    tr = pyro.poutine.trace(pyro.poutine.replay(plate_model, pyro.poutine.trace(guide).get_trace(
        DATA, 20))).get_trace(DATA, 20)
    assert tr.nodes["x"]["scale"] == 5.0  # 100 / 20


# ---------------------------------------------------------------------------------------------
# Pyro plumbing: Predictive, median/quantiles, constrained sites, save/load, STL, device
# ---------------------------------------------------------------------------------------------
def constrained_model():
    pyro.sample("p", dist.Dirichlet(torch.ones(3)))
    pyro.sample("s", dist.LogNormal(0.0, 1.0))
    pyro.sample("b", dist.Beta(2.0, 2.0))
    pyro.sample("m", dist.Normal(torch.zeros(2, 2), 1.0).to_event(2))


def test_constrained_sites_land_in_their_supports():
    guide = AutoFlowGuide(constrained_model, arch="realnvp", num_layers=2, hidden_dims=[8])
    draws = Predictive(constrained_model, guide=guide, num_samples=200)()
    assert guide.latent_dim == 2 + 1 + 1 + 4
    assert torch.allclose(draws["p"].sum(-1), torch.ones(200))
    assert (draws["s"] > 0).all() and ((draws["b"] > 0) & (draws["b"] < 1)).all()
    assert draws["m"].shape == (200, 2, 2)


def test_median_and_quantiles():
    guide = AutoFlowGuide(constrained_model, init_loc_fn=init_to_value(
        values={"s": torch.tensor(2.0), "m": torch.ones(2, 2)}), init_scale=0.05, warm_start=None)
    med = guide.median()
    assert abs(med["s"].item() - 2.0) < 0.05 and torch.allclose(med["m"], torch.ones(2, 2),
                                                                 atol=0.05)
    q = guide.quantiles([0.1, 0.5, 0.9])
    assert q["s"].shape == (3,) and (q["s"].diff() > 0).all()


def plated_means_model():
    with pyro.plate("members", 4):
        pyro.sample("x", dist.Normal(torch.tensor([0.0, 10.0, 20.0, 30.0]), 1.0))
    pyro.sample("s", dist.LogNormal(0.0, 1.0))


@pytest.mark.parametrize("arch", ["iaf", "realnvp"])
def test_median_and_quantiles_of_a_plated_site(arch):
    # Regression: a leading quantile dim was unpacked as a batch dim and broadcast against the
    # plate, so median() returned the first member only and quantiles() raised.
    values = {"x": torch.tensor([0.0, 10.0, 20.0, 30.0]), "s": torch.tensor(1.0)}
    guide = AutoFlowGuide(plated_means_model, arch=arch, init_loc_fn=init_to_value(values=values),
                          init_scale=0.01, warm_start=None)
    med = guide.median()
    assert med["x"].shape == (4,) and med["s"].shape == ()
    assert torch.allclose(med["x"], values["x"], atol=0.01)
    q = guide.quantiles([0.05, 0.5, 0.95])
    assert q["x"].shape == (3, 4) and q["s"].shape == (3,)
    # a N(m, 0.01^2) marginal: the 5% and 95% quantiles sit 1.645 sd either side of the mean
    assert torch.allclose(q["x"][0], values["x"] - 0.01645, atol=0.003)
    assert torch.allclose(q["x"][2], values["x"] + 0.01645, atol=0.003)
    assert torch.allclose(q["x"][1], med["x"], atol=0.003)


def test_save_and_load_through_param_store_and_state_dict(tmp_path, float64):
    guide = AutoFlowGuide(plate_model, num_layers=2, hidden_dims=[8])
    guide(DATA)
    randomize_parameters(guide, scale=0.3)
    z = guide.get_posterior().sample((5,))
    expected = guide.get_posterior().log_prob(z)
    pyro.get_param_store().save(tmp_path / "params.pt")
    torch.save(guide.state_dict(), tmp_path / "guide.pt")

    pyro.clear_param_store()
    fresh = AutoFlowGuide(plate_model, num_layers=2, hidden_dims=[8])
    fresh(DATA)
    fresh.load_state_dict(torch.load(tmp_path / "guide.pt", weights_only=True))
    assert torch.allclose(fresh.get_posterior().log_prob(z), expected)

    pyro.clear_param_store()
    other = AutoFlowGuide(plate_model, num_layers=2, hidden_dims=[8])
    other(DATA)
    pyro.get_param_store().load(tmp_path / "params.pt")
    other(DATA)  # parameters are read from the store on the next call
    assert torch.allclose(other.get_posterior().log_prob(z), expected)


def test_stl_gradient_vanishes_at_the_exact_posterior(float64):
    """With q = p exactly, the path-derivative estimator has zero gradient for every draw,
    while the standard estimator's single-draw gradient does not."""
    def model():
        pyro.sample("z", dist.Normal(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]))
                    .to_event(1))

    grads = {}
    for stl in (True, False):
        pyro.clear_param_store()
        guide = AutoFlowGuide(model, arch="realnvp", num_layers=2, hidden_dims=[8], stl=stl)
        guide()
        guide.set_affine(loc=torch.tensor([1.0, -2.0]), scale=torch.tensor([0.5, 2.0]))
        loss = Trace_ELBO().differentiable_loss(model, guide)
        params = [guide.affine_white_unconstrained, guide.flow_packed_unconstrained]
        grads[stl] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params,
                                                                          allow_unused=False)])
    assert grads[True].abs().max() < 1e-10
    assert grads[False].abs().max() > 1e-3



def test_stl_twin_tracks_the_live_flow_across_steps(float64):
    """The STL scoring copy computes with detached views of the one packed flow parameter:
    after optimiser steps (and an ActNorm data-dependent init) its log q equals the live
    posterior's, no gradient reaches the parameters through it, and a param-store load that
    replaces the packed tensor takes effect in both."""
    def model():
        pyro.sample("z", dist.Normal(torch.tensor([1.0, -2.0, 0.0]), 1.0).to_event(1))

    guide = AutoFlowGuide(model, arch="realnvp", num_layers=2, hidden_dims=[8], stl=True,
                          actnorm=True)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO(num_particles=4))
    for _ in range(5):
        svi.step()
    z = torch.randn(7, 3)

    def live_and_frozen():
        live = guide.get_posterior().log_prob(z)
        twin = guide._frozen_flow()
        affine = guide._affine(guide.loc.detach(), guide.scale.detach())
        frozen = dist.TransformedDistribution(guide.get_base_dist(), [twin, affine])
        return live, frozen.log_prob(z)

    live, frozen = live_and_frozen()
    torch.testing.assert_close(frozen, live)
    assert live.requires_grad and not frozen.requires_grad
    state = copy.deepcopy(pyro.get_param_store().get_state())
    names = [name for name in state["params"] if name.endswith("flow_packed")]
    assert len(names) == 1
    state["params"][names[0]].data.add_(0.1)
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state)
    guide()  # the loaded (new) packed tensor is read from the store
    live_after, frozen_after = live_and_frozen()
    torch.testing.assert_close(frozen_after, live_after)
    assert (live_after - live).abs().max() > 1e-3


def test_flow_parameters_are_one_packed_tensor(float64):
    """The flow's parameters are views of ``flow_packed``: one param-store entry for the flow,
    writes through ``flow_parameters()`` change the posterior, and every view gets a gradient."""
    guide = AutoFlowGuide(plate_model, arch="iaf", num_layers=2, hidden_dims=[8])
    guide(DATA)
    store_names = [n for n in pyro.get_param_store().keys() if "flow" in n]
    assert store_names == ["AutoFlowGuide.flow_packed"]
    views = guide.flow_parameters()
    assert sum(v.numel() for v in views.values()) == guide.flow_packed.numel()
    z = guide.get_posterior().sample((5,))
    before = guide.get_posterior().log_prob(z)
    randomize_parameters(guide, scale=0.3)
    after = guide.get_posterior().log_prob(z)
    assert (after - before).abs().max() > 1e-3
    loss = Trace_ELBO().differentiable_loss(plate_model, guide, DATA)
    grad, = torch.autograd.grad(loss, [guide.flow_packed_unconstrained])
    for start, n in zip(guide._flow_layout.offsets, guide._flow_layout.numels, strict=True):
        assert grad[start:start + n].abs().max() > 0


@pytest.mark.cuda
def test_guide_on_cuda():
    data = DATA.cuda()
    guide = AutoFlowGuide(plate_model, num_layers=2, hidden_dims=[8])
    guide(data)
    guide.to("cuda")
    svi = SVI(plate_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step(data))
    assert guide.get_posterior().sample().device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def test_discrete_latent_names_the_site_and_enumeration():
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"discrete sample site 'k'.*enumerat"):
        AutoFlowGuide(model)()


def test_model_without_latents():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.3))

    with pytest.raises(ValueError, match="no latent"):
        AutoFlowGuide(model)()


def test_unknown_arch_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown architecture 'realnp'.*Did you mean 'realnvp'"):
        AutoFlowGuide(gaussian_model, arch="realnp")


def test_bad_options():
    with pytest.raises(ValueError, match="base must be"):
        AutoFlowGuide(gaussian_model, base="dense")
    with pytest.raises(ValueError, match="warm_start"):
        AutoFlowGuide(gaussian_model, warm_start="vi")
    with pytest.raises(ValueError, match="stl=True.*analytic inverse"):
        AutoFlowGuide(gaussian_model, arch="sylvester", stl=True)()


def test_nonfinite_loss_names_the_parameter():
    pyro.enable_validation(False)  # with validation on, Pyro itself refuses the NaN first

    def model():
        loc = pyro.param("model_loc", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(loc, 1.0))

    guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4])
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step()
    with torch.no_grad():
        pyro.param("model_loc").fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="parameter 'model_loc'"):
        fit_svi(svi, num_steps=3, progress=False)


def _diverging_regression(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    s = pyro.sample("s", dist.HalfNormal(5.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, s), obs=y)


@pytest.mark.parametrize("validation", [True, False])
def test_divergence_names_the_sites_and_keeps_finite_parameters(validation):
    # Regression: under Pyro's default validation the user saw Pyro's raw "Expected parameter
    # scale ..." error; without it, NaN parameters.  Now a non-finite step changes nothing, and
    # persistent ones name the sites that overflow.
    pyro.enable_validation(validation)
    y = torch.randn(50) + 3.0
    guide = AutoFlowGuide(_diverging_regression)
    svi = SVI(_diverging_regression, guide, Adam({"lr": 10.0}), Trace_ELBO())
    with pytest.raises(NonFiniteLossError, match="20 steps in a row.*site 's' has non-finite"):
        fit_svi(svi, y, num_steps=50, progress=False)
    for name, value in pyro.get_param_store().items():
        assert torch.isfinite(value).all(), name


def test_a_nan_flow_parameter_is_named_by_its_layer():
    pyro.enable_validation(False)
    y = torch.randn(20)
    guide = AutoFlowGuide(_diverging_regression)
    svi = SVI(_diverging_regression, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(y)
    with torch.no_grad():
        guide.flow_packed[:3] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"flow_packed' \(flow layers: layers\.0\."):
        fit_svi(svi, y, num_steps=5, progress=False, max_skips=5)


def test_isolated_nonfinite_steps_are_skipped_and_counted():
    # A draw beyond x = 3 has a NaN density; the target N(0, 1) makes such draws rare, so
    # the fit skips them and goes on, with the parameters unchanged by them.
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("wall", torch.where(x > 3.0, torch.tensor(float("nan")), torch.tensor(0.0)))

    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4], warm_start=None, init_scale=1.0)
    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    counts: dict[str, int] = {}
    losses = fit_svi(svi, num_steps=3000, progress=False, counts=counts)
    assert counts["skipped"] > 0  # P(x > 3) = 0.0013: a few of 3000 draws
    assert len(losses) == 3000 - counts["skipped"]
    assert all(math.isfinite(v) for v in losses)
    with torch.no_grad():
        draws = guide.get_posterior().sample((20000,))
    assert abs(float(draws.mean())) < 0.15 and abs(float(draws.std()) - 1.0) < 0.15


def test_divergence_restores_the_last_finite_parameters():
    # The target pulls x towards 10, but the log density is NaN beyond x = 2: the fit runs
    # finitely for a while, then a draw crosses the wall.
    def model():
        x = pyro.sample("x", dist.Normal(10.0, 1.0))
        pyro.factor("wall", torch.where(x > 2.0, torch.tensor(float("nan")), torch.tensor(0.0)))

    guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4], init_scale=0.01,
                          init_loc_fn=init_to_value(values={"x": torch.tensor(0.0)}))
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    seen = []
    with pytest.raises(NonFiniteLossError, match="holds the parameters after step") as info:
        fit_svi(svi, num_steps=2000, progress=False,
                stop=lambda losses: seen.append(len(losses)) and False, check_every=1)
    assert info.value.restored and info.value.step > 5
    assert len(seen) == info.value.step  # every finite step was completed and checked
    for name, value in pyro.get_param_store().items():
        assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("validation", [True, False])
def test_observations_outside_the_support_are_refused_before_training(validation):
    # Regression: with validation off, torch scores y < 0 under a LogNormal finitely and the
    # fit ran on a wrong density.
    pyro.enable_validation(validation)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.LogNormal(mu, 1.0), obs=y)

    y = torch.tensor([0.5, 2.0, -0.3, 1.0, float("nan")])
    guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4])
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    with pytest.raises(ValueError, match=r"observed site 'y': 2 of 5 values lie outside the "
                       r"support GreaterThan\(lower_bound=0.0\).*first at index \[2\]: -0.3"):
        fit_svi(svi, y, num_steps=5, progress=False)
    assert len(pyro.get_param_store()) == 0  # refused before any step
    losses = fit_svi(svi, y.abs().nan_to_num(1.0), num_steps=5, progress=False)
    assert len(losses) == 5


def test_a_different_guide_of_the_same_name_in_a_filled_store_is_a_clear_error():
    guide = AutoFlowGuide(plate_model, arch="iaf", num_layers=2, hidden_dims=[8])
    guide(DATA)
    other = AutoFlowGuide(plate_model, arch="realnvp", num_layers=2, hidden_dims=[8])
    with pytest.raises(ValueError, match=r"already holds 'AutoFlowGuide.flow_packed' of shape.*"
                                         r"pyro.clear_param_store\(\)"):
        other(DATA)


def test_a_trained_guide_deep_copies_and_pickles(tmp_path, float64):
    """The packed flow's views carry autograd history; copying and pickling must still work
    and give the same posterior (the STL scoring copy is a cache and is rebuilt)."""
    guide = AutoFlowGuide(plate_model, arch="iaf", num_layers=2, hidden_dims=[8])
    svi = SVI(plate_model, guide, Adam({"lr": 0.05}), Trace_ELBO(num_particles=2))
    for _ in range(3):
        svi.step(DATA)
    z = guide.get_posterior().sample((5,))
    expected = guide.get_posterior().log_prob(z)
    torch.save(guide, tmp_path / "guide.pt")
    for other in (copy.deepcopy(guide), torch.load(tmp_path / "guide.pt", weights_only=False)):
        torch.testing.assert_close(other.get_posterior().log_prob(z), expected)
    assert math.isfinite(svi.step(DATA))  # the original keeps training


def test_tail_layer_option_reaches_the_flow_and_scores_consistently(float64):
    """``tails="tukey"`` goes through the registry into the guide's flow (last layer), STL
    still scores draws through the inverse, and log q of a draw is base minus log-det."""
    from pyro_flowvi.transforms import TukeyTails

    def heavy():
        pyro.sample("x", dist.StudentT(3.0, torch.zeros(3), 1.0).to_event(1))

    guide = AutoFlowGuide(heavy, "iaf", tails="tukey", warm_start=None, hidden_dims=[8])
    guide()
    assert isinstance(guide.flow.layers[-1], TukeyTails) and guide.stl
    with torch.no_grad():
        guide.flow.layers[-1].raw_tail_weight.fill_(-0.5)
    q = guide.get_posterior()
    z = q.rsample((50,))
    assert torch.allclose(q.log_prob(z), q.log_prob(z.clone()), atol=1e-8)
    with pytest.raises(ValueError, match="tails must be None or 'tukey'"):
        AutoFlowGuide(heavy, "iaf", tails="t")
