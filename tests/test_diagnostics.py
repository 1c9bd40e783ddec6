"""Closed-form checks of pyro_flowvi.diagnostics: conjugate evidence, quadrature, subsampling
scales, the entropy identity (the log-det's sign) and the InferenceData export."""

import dataclasses
import math

import arviz
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import affine_autoregressive
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal
from scipy import integrate, stats
from torch.distributions.transforms import AffineTransform

from pyro_flowvi import build_flow
from pyro_flowvi.diagnostics import (
    DiagnosticReport,
    diagnose,
    elbo_estimate,
    entropy_decomposition,
    importance_ess,
    importance_log_weights,
    log_evidence_estimate,
    psis_khat,
    to_inference_data,
)
from pyro_flowvi.testing import randomize_parameters

S0, S = 2.0, 1.5  # prior sd of mu, observation sd


@pytest.fixture(autouse=True)
def _float64(float64):
    yield


def data(n=10):
    return 1.0 + S * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def conjugate_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, S0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(mu, S), obs=x)


def exact_posterior(x):
    v = 1.0 / (1.0 / S0**2 + len(x) / S**2)
    return v * x.sum() / S**2, v  # mean, variance


def exact_log_evidence(x):
    n = len(x)
    cov = S**2 * torch.eye(n) + S0**2 * torch.ones(n, n)
    return float(dist.MultivariateNormal(torch.zeros(n), cov).log_prob(x))


def normal_guide(loc, sd):
    def guide(x):
        pyro.sample("mu", dist.Normal(loc, sd))

    return guide


def exact_guides(x):
    m, v = exact_posterior(x)
    normal = AutoNormal(conjugate_model)
    normal(x)
    normal.locs.mu = m.clone()
    normal.scales.mu = torch.tensor(math.sqrt(v))
    mvn = AutoMultivariateNormal(conjugate_model)
    mvn(x)
    with torch.no_grad():
        mvn.loc.copy_(m.reshape(1))
    mvn.scale = torch.tensor([math.sqrt(v)])
    mvn.scale_tril = torch.eye(1)
    return {"hand": normal_guide(m, math.sqrt(v)), "AutoNormal": normal, "AutoMVN": mvn}


@pytest.mark.parametrize("kind", ["hand", "AutoNormal", "AutoMVN"])
def test_exact_guide_gives_constant_weights_equal_to_log_evidence(kind):
    x = data()
    guide = exact_guides(x)[kind]
    log_w, samples = importance_log_weights(conjugate_model, guide, x, num_samples=1000)
    log_z = exact_log_evidence(x)
    assert log_w.shape == (1000,) and samples["mu"].shape == (1000,)
    assert torch.allclose(log_w, torch.full_like(log_w, log_z), atol=1e-5, rtol=0)
    m, v = exact_posterior(x)
    assert abs(float(samples["mu"].mean()) - float(m)) < 4 * math.sqrt(v / 1000)
    assert abs(log_evidence_estimate(log_w)[0] - log_z) < 1e-5
    assert abs(elbo_estimate(log_w)[0] - log_z) < 1e-5
    ess, frac = importance_ess(log_w)
    assert ess == pytest.approx(1000) and frac == pytest.approx(1.0)
    assert psis_khat(log_w) < 0.1


def test_mis_scaled_guide_bounds_and_khat():
    x = data()
    m, v = exact_posterior(x)
    log_z, a = exact_log_evidence(x), 0.7  # guide sd = a * posterior sd: too narrow
    log_w, _ = importance_log_weights(
        conjugate_model, normal_guide(m, a * math.sqrt(v)), x, num_samples=4000
    )
    elbo, elbo_se = elbo_estimate(log_w)
    kl = 0.5 * (a**2 - 1 - math.log(a**2))  # KL(N(m, a^2 v) || N(m, v))
    assert elbo < log_z
    assert abs(elbo - (log_z - kl)) < 4 * elbo_se
    log_z_is, log_z_se = log_evidence_estimate(log_w)
    assert abs(log_z_is - log_z) < max(4 * log_z_se, 0.02)
    assert log_z_is > elbo
    khat = psis_khat(log_w)
    assert 0.3 < khat < 0.8  # theory: k = (1 - a^2) / 2 / (1 / 2) = 0.51
    assert importance_ess(log_w)[1] < 0.99


def scale_model(x):
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(0.0, sigma), obs=x)


def test_constrained_latent_log_evidence_matches_quadrature():
    x = 0.8 * torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xn = x.numpy()

    def log_joint_u(u):  # density of u = log sigma, including the Jacobian e^u
        sigma = np.exp(u)
        return (stats.lognorm.logpdf(sigma, 0.5) + u + stats.norm.logpdf(xn[:, None], 0.0, sigma)
                .sum(0))

    grid = np.linspace(-4.0, 3.0, 20001)
    lj = log_joint_u(grid)
    c = lj.max()
    w = np.exp(lj - c)
    u_mean = np.sum(w * grid) / np.sum(w)
    u_sd = math.sqrt(np.sum(w * (grid - u_mean) ** 2) / np.sum(w))
    z, _ = integrate.quad(lambda u: math.exp(log_joint_u(np.array([u]))[0] - c), -8, 6,
                          points=[u_mean], limit=200)
    log_z = c + math.log(z)

    guide = AutoMultivariateNormal(scale_model)
    guide(x)
    with torch.no_grad():
        guide.loc.copy_(torch.tensor([u_mean]))
    guide.scale = torch.tensor([1.2 * u_sd])  # a bit wide: bounded weights
    log_w, samples = importance_log_weights(scale_model, guide, x, num_samples=4000)
    assert (samples["sigma"] > 0).all() and samples["sigma"].shape == (4000,)
    log_z_is, se = log_evidence_estimate(log_w)
    assert 0 < se < 0.05
    assert abs(log_z_is - log_z) < 4 * se
    assert psis_khat(log_w) < 0.5


def test_subsample_scale_applied_exactly():
    x = data(20)
    idx = torch.tensor([0, 3, 7, 11, 19])
    m, v = exact_posterior(x)

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", len(x), subsample=idx) as i:
            pyro.sample("obs", dist.Normal(mu, S), obs=x[i])

    guide = normal_guide(m, 1.3 * math.sqrt(v))
    log_w, samples = importance_log_weights(model, guide, x, num_samples=4000, batch_size=1500,
                                            full_data=False)
    mu = samples["mu"]
    expected = (
        dist.Normal(0.0, S0).log_prob(mu)
        + (20 / 5) * dist.Normal(mu[:, None], S).log_prob(x[idx]).sum(-1)
        - dist.Normal(m, 1.3 * math.sqrt(v)).log_prob(mu)
    )
    assert torch.allclose(log_w, expected, atol=1e-10)
    elbo, elbo_se = elbo_estimate(log_w)
    loss = Trace_ELBO(num_particles=4000, vectorize_particles=True).loss(model, guide, x)
    assert abs(elbo + loss) < 4 * math.sqrt(2) * elbo_se


def test_random_subsample_elbo_is_unbiased_for_the_full_data_elbo():
    x, gm, gs = data(20), 0.9, 0.4

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", len(x), subsample_size=5) as i:
            pyro.sample("obs", dist.Normal(mu, S), obs=x[i])

    log_w, _ = importance_log_weights(model, normal_guide(gm, gs), x, num_samples=4000,
                                      batch_size=40, full_data=False)  # one index set a batch
    ev = lambda t: -0.5 * math.log(2 * math.pi * t**2)
    exact = (ev(S0) - (gm**2 + gs**2) / (2 * S0**2) + 0.5 * math.log(2 * math.pi * math.e * gs**2)
             + float(sum(ev(S) - ((xi - gm) ** 2 + gs**2) / (2 * S**2) for xi in x)))
    batch_means = log_w.reshape(100, 40).mean(-1)  # particles in a batch share a subsample
    assert abs(float(batch_means.mean()) - exact) < 4 * float(batch_means.std()) / 10


@pytest.mark.parametrize("size, subsample_size", [(20, 5), (23, 5), (7, 7)])
def test_subsampling_model_is_scored_on_the_full_data(size, subsample_size):
    # Regression: diagnose() on a subsampled model scored one random minibatch scaled up, so
    # k-hat and the ELBO changed from call to call.  Every member must count exactly once,
    # including when the minibatch size does not divide the data (23 = 4 x 5 + 3).
    x = data(size)
    gm, gs = 0.9, 0.4

    def subsampled(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", len(x), subsample_size=subsample_size) as i:
            pyro.sample("obs", dist.Normal(mu, S), obs=x[i])

    log_w, samples = importance_log_weights(subsampled, normal_guide(gm, gs), x,
                                            num_samples=300, batch_size=128)
    mu = samples["mu"]
    expected = (dist.Normal(0.0, S0).log_prob(mu) + dist.Normal(mu[:, None], S).log_prob(x).sum(-1)
                - dist.Normal(gm, gs).log_prob(mu))
    assert mu.shape == (300,)
    assert torch.allclose(log_w, expected, atol=1e-9)


def test_diagnose_on_a_subsampling_model_is_reproducible_and_says_so():
    x = data(40)

    def subsampled(x):
        mu = pyro.sample("mu", dist.Normal(0.0, S0))
        with pyro.plate("data", len(x), subsample_size=4) as i:
            pyro.sample("obs", dist.Normal(mu, S), obs=x[i])

    m, v = exact_posterior(x)
    guide = normal_guide(m, 1.1 * math.sqrt(v))
    reports = [diagnose(subsampled, guide, x, num_samples=2000) for _ in range(3)]
    assert all("all 40 members in 10 minibatches of 4" in r.data for r in reports)
    se = max(r.elbo_se for r in reports)
    assert max(r.elbo for r in reports) - min(r.elbo for r in reports) < 6 * se
    assert all(r.psis_khat < 0.5 for r in reports)  # a slightly wide exact-shape guide


def test_full_data_weights_refuse_a_guide_inside_the_subsampled_plate():
    x = data(12)

    def model(x):
        with pyro.plate("data", len(x), subsample_size=4) as i:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, S), obs=x[i])

    guide = AutoNormal(model)
    with pytest.raises(ValueError, match="'z_unconstrained' lies inside the subsampled plate 'data'"):
        importance_log_weights(model, guide, x, num_samples=10)
    log_w, _ = importance_log_weights(model, guide, x, num_samples=10, full_data=False)
    assert log_w.shape == (10,)


def hier_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("groups", len(x)):
        z = pyro.sample("z", dist.Normal(mu + w.sum(-1), 1.0))
        pyro.sample("obs", dist.Normal(z, 0.5), obs=x)


@pytest.mark.parametrize("max_plate_nesting", [None, 3])
def test_sample_shapes_and_batching(max_plate_nesting):
    x = torch.tensor([0.3, -1.0, 2.0, 0.5])
    guide = AutoNormal(hier_model)
    log_w, samples = importance_log_weights(hier_model, guide, x, num_samples=10, batch_size=3,
                                            max_plate_nesting=max_plate_nesting)
    assert log_w.shape == (10,) and torch.isfinite(log_w).all()
    assert {k: tuple(v.shape) for k, v in samples.items()} == {
        "mu": (10,), "w": (10, 2), "z": (10, 4)}
    pyro.set_rng_seed(3)  # the same draws with a deeper particle dim: identical weights
    log_w1, s1 = importance_log_weights(hier_model, guide, x, num_samples=5, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    log_w2, s2 = importance_log_weights(hier_model, guide, x, num_samples=5, max_plate_nesting=3)
    assert torch.allclose(log_w1, log_w2) and torch.equal(s1["z"], s2["z"])


def test_diagnose_flow_guide_fills_the_entropy_fields():
    x = torch.tensor([0.3, -1.0, 2.0, 0.5])
    guide = AutoIAFNormal(hier_model, hidden_dim=[8], num_transforms=2)
    report = diagnose(hier_model, guide, x, num_samples=500)
    assert isinstance(report, DiagnosticReport) and report.num_samples == 500
    assert report.entropy is not None
    assert abs(report.entropy_residual) < 4 * report.entropy_residual_se
    assert report.log_evidence >= report.elbo and 0 < report.ess_fraction <= 1
    d = report.to_dict()
    assert d["psis_khat"] == report.psis_khat and "entropy_base" in d
    assert "k-hat" in str(report) and "E[log|det J|]" in str(report)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.elbo = 0.0
    plain = diagnose(conjugate_model, AutoNormal(conjugate_model), data(), num_samples=200)
    assert plain.entropy is None and "entropy" not in str(plain)


def std_normal(d, batch=()):
    return dist.Normal(torch.zeros(batch + (d,)), 1.0).to_event(1)


H3 = 1.5 * (1 + math.log(2 * math.pi))  # H[N(0, I_3)]


def test_entropy_of_affine_flow_is_closed_form():
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 3.0])
    q = dist.TransformedDistribution(std_normal(3), [AffineTransform(loc, scale, event_dim=1)])
    out = entropy_decomposition(q, num_samples=2000)
    closed = float(dist.Normal(loc, scale).entropy().sum())
    assert out["base_entropy_closed_form"] and out["entropy_base"] == pytest.approx(H3, abs=1e-12)
    assert out["entropy_identity"] == pytest.approx(closed, abs=1e-10)
    assert out["logdet_mean"] == pytest.approx(float(scale.log().sum()), abs=1e-10)
    assert out["logdet_se"] < 1e-10 and len(out["logdet_per_transform"]) == 1
    assert out["identity_max_abs_error"] < 1e-10
    assert abs(out["residual"]) < 4 * out["residual_se"]
    assert abs(out["entropy_mc"] - closed) < 4 * out["entropy_mc_se"]


def test_logdet_enters_the_entropy_with_a_plus_sign():
    q = dist.TransformedDistribution(std_normal(3), [AffineTransform(0.0, 2.0, event_dim=1)])
    out = entropy_decomposition(q, num_samples=1000)
    assert out["logdet_mean"] == pytest.approx(3 * math.log(2), abs=1e-12)
    assert out["entropy_identity"] - out["entropy_base"] == pytest.approx(3 * math.log(2))
    # the MC entropy -E[log q] sees the same +3 log 2 on the same draws
    assert out["entropy_mc"] - out["entropy_base_mc"] == pytest.approx(3 * math.log(2), abs=1e-10)


def test_batched_posterior_sums_entropies():
    q = dist.TransformedDistribution(std_normal(3, (2,)), [AffineTransform(0.0, 2.0, event_dim=1)])
    out = entropy_decomposition(q, num_samples=500)
    assert out["entropy_identity"] == pytest.approx(2 * (H3 + 3 * math.log(2)), abs=1e-10)
    assert out["identity_max_abs_error"] < 1e-10


def test_entropy_identity_pyro_affine_autoregressive():
    flow = affine_autoregressive(3)
    randomize_parameters(flow, scale=0.5)
    q = dist.TransformedDistribution(std_normal(3), [flow])
    out = entropy_decomposition(q, num_samples=2000)
    assert abs(out["logdet_mean"]) > 0.05  # not trivially the identity
    assert out["identity_max_abs_error"] < 1e-10  # log q = log N - ladj, per sample
    assert abs(out["residual"]) < 3 * out["residual_se"]


@pytest.mark.parametrize("arch", ["iaf", "sylvester"])
def test_entropy_identity_our_flows_with_an_affine_prefix(arch):
    flow = build_flow(arch, 3, num_layers=2, hidden_dims=[8])
    randomize_parameters(flow, scale=0.3)
    q = dist.TransformedDistribution(std_normal(3), [AffineTransform(0.0, 2.0, event_dim=1), flow])
    out = entropy_decomposition(q, num_samples=1000)  # sylvester: scored via the cache only
    per = out["logdet_per_transform"]
    assert len(per) == 2 and per[0] == pytest.approx(3 * math.log(2))
    assert sum(per) == pytest.approx(out["logdet_mean"])
    assert out["identity_max_abs_error"] < 1e-10
    assert abs(out["residual"]) < 3 * out["residual_se"]


def test_entropy_decomposition_rejects_other_distributions():
    with pytest.raises(TypeError, match="TransformedDistribution"):
        entropy_decomposition(dist.Normal(0.0, 1.0))


def test_to_inference_data():
    x = torch.tensor([0.3, -1.0, 2.0, 0.5])
    idata = to_inference_data(hier_model, AutoNormal(hier_model), x, num_samples=50)
    assert isinstance(idata, arviz.InferenceData)
    post = idata.posterior
    assert set(post.data_vars) == {"mu", "w", "z"}
    assert post["mu"].shape == (1, 50) and post["w"].shape == (1, 50, 2)
    assert post["z"].shape == (1, 50, 4)
    log_w = idata.sample_stats["log_weight"]
    assert log_w.shape == (1, 50) and np.isfinite(log_w.values).all()


def test_scalar_helpers():
    log_w = torch.tensor([0.0, math.log(3.0)])
    assert elbo_estimate(log_w)[0] == pytest.approx(math.log(3) / 2)
    assert log_evidence_estimate(log_w)[0] == pytest.approx(math.log(2.0))
    assert importance_ess(log_w)[0] == pytest.approx(16 / 10)  # (1+3)^2 / (1+9)
    assert psis_khat(torch.zeros(100)) == -math.inf
