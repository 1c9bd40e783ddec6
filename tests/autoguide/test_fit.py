"""fit(), its recipe and stopping rule, and the warm-start choice behind AutoFlowGuide's
defaults (fast checks; the posteriordb benchmark measures the recipe)."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from pyro_flowvi import AutoFlowGuide, FitResult, Recipe, fit
from pyro_flowvi.autoguide.fit import RecipeSchedule
from pyro_flowvi.autoguide.laplace import WarmStartError, laplace_approximation
from pyro_flowvi.autoguide.potential import UnconstrainedLogDensity


def funnel(y, sigma):
    """Centred hierarchical normal: no mode (the density grows without bound as tau -> 0)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("groups", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


FUNNEL_DATA = (torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
               torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]))


def regression_data(n=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 100.0 + 3.0 * torch.randn(n, generator=gen, dtype=torch.float64)
    y = -200.0 + 5.0 * x + 4.0 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


def exact_regression_moments(x, y):
    """Flat priors on (b, sigma) with the positive-support Jacobian in log sigma: b | y is a
    Student-t; its mean is the least-squares fit and its covariance s^2 (X^T X)^-1 (n-2)/(n-4)."""
    design = torch.stack([torch.ones_like(x), x], -1)
    b_hat = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    resid = y - design @ b_hat
    n = len(y)
    # p(b, sigma) d sigma flat -> marginal of b is t_{n-3} (flat in sigma, not log sigma)
    nu = n - 3
    s2 = float(resid @ resid) / nu
    cov = s2 * torch.linalg.inv(design.T @ design) * nu / (nu - 2)
    return b_hat, cov.diagonal().sqrt()


def test_laplace_start_is_chosen_on_a_badly_scaled_flat_prior_regression(float64):
    x, y = regression_data()

    def model(x, y):
        b = pyro.sample("b", dist.ImproperUniform(constraints.real, (), (2,)))
        sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(b[..., 0, None] + b[..., 1, None] * x,
                                         sigma[..., None]), obs=y)

    guide = AutoFlowGuide(model)
    guide(x, y)
    record = guide.warm_start_record
    assert record["warm_start"] == "laplace" and record["failure"] is None
    assert guide.base == "full"
    mean, sd = exact_regression_moments(x, y)
    # the starting Gaussian is the Laplace one: its location is the MAP, within 0.01 sd
    assert torch.allclose(guide.loc[:2], mean, atol=0.01 * float(sd.min()))
    draws = guide.median(x, y)["b"]
    assert ((draws - mean).abs() / sd).max() < 0.1


def test_warm_start_failure_on_a_funnel_falls_back_with_a_clear_warning():
    with pytest.warns(UserWarning, match=r"Laplace warm start failed \(.*\); starting from "
                      r"init_loc_fn's point"):
        guide = AutoFlowGuide(funnel, warm_start="laplace")
        guide(*FUNNEL_DATA)
    assert guide.warm_start_record["warm_start"] == "init"
    assert guide.warm_start_record["failure"]


def test_auto_warm_start_on_a_funnel_never_picks_a_worse_start():
    guide = AutoFlowGuide(funnel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guide(*FUNNEL_DATA)
    record = guide.warm_start_record
    chosen = record["warm_start"]
    elbos = record["elbo_by_start"]
    best = max(elbos.values())
    assert any(k.startswith(chosen) and v == best for k, v in elbos.items())


def test_map_search_divergence_is_a_warm_start_error():
    def no_mode():
        x = pyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
        pyro.factor("up", 3.0 * x)  # log density increases without bound

    guide = AutoFlowGuide(no_mode, warm_start=None)
    guide()
    with pytest.raises(WarmStartError):
        laplace_approximation(guide, torch.zeros(1))


def test_vectorised_log_density_equals_one_draw_at_a_time(float64):
    guide = AutoFlowGuide(funnel, warm_start=None)
    guide(*FUNNEL_DATA)
    log_p = UnconstrainedLogDensity(guide, FUNNEL_DATA)
    u = torch.randn(5, guide.latent_dim)
    one_by_one = torch.stack([log_p(row) for row in u])
    assert torch.allclose(log_p(u), one_by_one, atol=1e-10)
    # and against a hand-written density: theta, mu, log tau (with its Jacobian)
    mu, log_tau, theta = u[:, 0], u[:, 1], u[:, 2:]
    y, sigma = FUNNEL_DATA
    expected = (dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfCauchy(5.0).log_prob(log_tau.exp())
                + log_tau + dist.Normal(mu[:, None], log_tau.exp()[:, None]).log_prob(theta).sum(-1)
                + dist.Normal(theta, sigma).log_prob(y).sum(-1))
    assert torch.allclose(log_p(u), expected, atol=1e-10)


# --- the recipe's schedule -----------------------------------------------------------------------
def test_schedule_keeps_the_rate_while_the_loss_improves_then_decays_and_stops():
    recipe = Recipe(window=50, min_steps=100, min_decay_steps=40, decay_fraction=0.25,
                    max_steps=10_000)
    schedule = RecipeSchedule(recipe)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(5000):
        losses.append(100.0 * math.exp(-step / 300) + 0.1 * float(torch.randn(1, generator=gen)))
        if schedule(losses):
            break
    assert schedule.converged
    start = schedule.decay_start
    assert 500 < start < 3000  # the loss was still falling 1 nat per window before ~1200 steps
    assert len(losses) == start + max(40, int(0.25 * start))
    assert schedule.factor(start - 1) == 1.0
    assert math.isclose(schedule.factor(len(losses)), recipe.decay_factor)


def test_schedule_decays_before_the_step_cap_when_the_loss_never_plateaus():
    recipe = Recipe(window=20, min_steps=40, max_steps=400, min_decay_steps=50)
    schedule = RecipeSchedule(recipe)
    losses = []
    while not schedule([*losses, -float(len(losses))]):
        losses.append(-float(len(losses)))
    assert not schedule.converged
    assert schedule.decay_start == 400 - 120 and len(losses) + 1 == 400


def test_recipe_rejects_bad_settings():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        Recipe(lr=0)
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        Recipe(num_particles=2.5)
    with pytest.raises(ValueError, match="objective must be"):
        Recipe(objective="kl")


# --- fit ------------------------------------------------------------------------------------------
def conjugate(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_fit_returns_a_usable_guide_and_report(float64):
    y = torch.tensor([0.9, 1.1, 1.3, 0.4])
    result = fit(conjugate, y, seed=0, progress=False,
                 recipe=Recipe(max_steps=600, window=100, min_steps=200, min_decay_steps=100))
    assert isinstance(result, FitResult)
    assert result.num_steps == len(result.losses) <= 600
    post_var = 1.0 / (1.0 / 100.0 + len(y))
    post_mean = post_var * float(y.sum())
    assert abs(float(result.guide.median()["mu"]) - post_mean) < 0.05
    assert result.report.kl_estimate < 0.01
    assert result.warm_start["warm_start"] == "laplace"
    draws = result.resample(2000)
    assert abs(float(draws["mu"].mean()) - post_mean) < 4 * math.sqrt(post_var / 500)
    idata = result.to_inference_data(num_samples=100)
    assert idata.posterior["mu"].shape == (1, 100)


def test_each_fit_has_its_own_guide_in_the_param_store(float64):
    y = torch.tensor([0.5, 1.5])
    small = Recipe(max_steps=200, window=50, min_steps=100, min_decay_steps=50)
    first = fit(conjugate, y, progress=False, recipe=small)
    second = fit(conjugate, 10 * y, progress=False, recipe=small)
    assert first.guide._pyro_name != second.guide._pyro_name
    assert abs(float(first.guide.median(y)["mu"]) - 1.0) < 0.2
    assert abs(float(second.guide.median(10 * y)["mu"]) - 10.0) < 0.3


def test_fit_warns_naming_what_to_try_when_khat_is_high():
    def heavy_tailed():  # a 1-d affine flow has Gaussian tails: unbounded weights
        pyro.sample("x", dist.Cauchy(0.0, 1.0))

    with pytest.warns(UserWarning, match=r"k-hat .* > 0.7.*mass_covering.*resample"):
        fit(heavy_tailed, seed=0, progress=False,
            recipe=Recipe(max_steps=150, window=50, min_steps=100, min_decay_steps=50))


def _scalar_only(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(mu.reshape(()), 1.0), obs=y)  # one draw at a time


def test_eager_fit_falls_back_to_one_particle_for_a_model_that_does_not_vectorise():
    with pytest.warns(UserWarning, match="does not run with vectorised particles"):
        result = fit(_scalar_only, torch.tensor(0.5), progress=False, num_diagnostic_samples=50,
                     recipe=Recipe(max_steps=100, window=20, min_steps=40, min_decay_steps=20,
                                   compile="off"))
    assert result.num_steps <= 100 and math.isfinite(result.report.elbo)


def test_the_captured_step_vectorises_a_model_that_does_not_broadcast():
    # vmap runs the model once per draw inside the captured graph: all 8 particles, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = fit(_scalar_only, torch.tensor(0.5), progress=False, num_diagnostic_samples=50,
                     seed=0, recipe=Recipe(max_steps=600, window=50, min_steps=100,
                                           min_decay_steps=100))
    with torch.no_grad():
        draws = result.guide.get_posterior().sample((20000,))
    assert abs(float(draws.mean()) - 0.25) < 0.03  # exact posterior N(0.25, 1/2)
    assert abs(float(draws.std()) - 0.5**0.5) < 0.03


# --- interruption and resume ----------------------------------------------------------------------
def _regression(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(w[..., 0] + w[..., 1] * x, s), obs=y)


@pytest.mark.parametrize("compile_mode", ["auto", "off"])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_parameters(tmp_path, monkeypatch, float64,
                                                                    compile_mode):
    from pyro_flowvi.autoguide import training

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, generator=gen)
    y = 1.0 + 2.0 * x + 0.5 * torch.randn(30, generator=gen)
    recipe = Recipe(max_steps=300, window=50, min_steps=100, min_decay_steps=60,
                    compile=compile_mode)
    opts = {"num_layers": 1, "hidden_dims": [8]}

    def final_params(result):
        return {k: v.detach().clone() for k, v in result.guide.named_parameters()}

    pyro.clear_param_store()
    full = fit(_regression, x, y, guide_options={**opts, "name": "g"}, recipe=recipe, seed=3,
               progress=False, num_diagnostic_samples=400)
    expected = final_params(full)

    pyro.clear_param_store()
    calls = {"n": 0}
    real_step = training.guarded_step

    def dying_step(svi, *args, **kwargs):  # the process "dies" during step 137
        calls["n"] += 1
        if calls["n"] == 137:
            raise KeyboardInterrupt
        return real_step(svi, *args, **kwargs)

    monkeypatch.setattr(training, "guarded_step", dying_step)
    path = tmp_path / "fit.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(_regression, x, y, guide_options={**opts, "name": "g"}, recipe=recipe, seed=3,
            progress=False, checkpoint=path, checkpoint_every=40)
    saved = torch.load(path, weights_only=False)
    assert len(saved["losses"]) == 120  # the last multiple of 40 before the kill
    assert not (tmp_path / "fit.pt.tmp").exists()
    monkeypatch.setattr(training, "guarded_step", real_step)

    pyro.clear_param_store()  # a new process: nothing in memory
    resumed = fit(_regression, x, y, guide_options={**opts, "name": "g"}, recipe=recipe, seed=3,
                  progress=False, num_diagnostic_samples=400, checkpoint=path, checkpoint_every=40)
    assert resumed.losses == full.losses
    for name, value in final_params(resumed).items():
        assert torch.equal(value, expected[name]), name

    with pytest.raises(ValueError, match=r"another configuration; settings that differ .*arch: "
                       r"'iaf' vs 'realnvp'"):
        fit(_regression, x, y, arch="realnvp", guide_options={**opts, "name": "h"},
            recipe=recipe, seed=3, progress=False, checkpoint=path)


def test_student_t_base_is_the_scaled_t_density_with_unit_variance(float64):
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    guide = AutoFlowGuide(model, arch="gaussian", base_df=5, warm_start=None, init_scale=2.0,
                          init_loc_fn=lambda site: torch.tensor([1.0, -1.0, 0.5]))
    guide()
    q = guide.get_posterior()
    z = q.sample((20000,))
    scale = 2.0 * math.sqrt(3.0 / 5.0)
    expected = dist.StudentT(5.0, torch.tensor([1.0, -1.0, 0.5]), scale).log_prob(z).sum(-1)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-10)
    assert torch.allclose(z.var(0), torch.full((3,), 4.0), rtol=0.15)  # variance init_scale^2
    with pytest.raises(ValueError, match="base_df must be a number > 2"):
        AutoFlowGuide(model, base_df=2)


@pytest.mark.parametrize("arch", ["iaf", "maf", "realnvp", "gaussian"])
def test_a_warm_started_guide_stays_exact_under_a_high_learning_rate(arch):
    """The trivial plated model of the real-posteriors issue: four independent N(m_i, 1),
    m = 0/10/20/30, 300 Adam steps at lr 0.1, one particle.  The Laplace start is exact and the
    sticking-the-landing gradient vanishes there, so the guide stays exact, where
    AutoMultivariateNormal ends 0.3-0.8 nats below log Z = 0 and realnvp without STL ended
    30-58 nats below."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal
    from pyro.optim import Adam

    from pyro_flowvi.diagnostics import elbo_estimate, importance_log_weights

    def model():
        with pyro.plate("members", 4):
            pyro.sample("x", dist.Normal(torch.tensor([0.0, 10.0, 20.0, 30.0]), 1.0))

    elbos = {}
    for name, guide in [("mvn", AutoMultivariateNormal(model)), (arch, AutoFlowGuide(model, arch))]:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
        for _ in range(300):
            svi.step()
        log_w, _ = importance_log_weights(model, guide, num_samples=4000)
        elbos[name] = elbo_estimate(log_w)[0]
    assert elbos[arch] >= elbos["mvn"]
    assert elbos[arch] > -0.02  # log Z = 0


def _funnel_not_broadcasting():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    # torch.zeros(4) does not broadcast against a batch of v: one draw at a time only
    pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2)).to_event(1))


def test_the_log_density_runs_a_model_that_does_not_broadcast(float64):
    from pyro_flowvi.autoguide.potential import UnconstrainedLogDensity

    guide = AutoFlowGuide(_funnel_not_broadcasting, warm_start=None, init_scale=1.0)
    guide()
    log_p = UnconstrainedLogDensity(guide)
    u = torch.randn(6, 5)
    expected = dist.Normal(0.0, 3.0).log_prob(u[:, 0]) + dist.Normal(
        0.0, torch.exp(u[:, :1] / 2)).log_prob(u[:, 1:]).sum(-1)
    assert torch.allclose(log_p(u), expected, atol=1e-12)  # batched: under vmap, not a plate
    assert log_p._batching == "vmap"
    assert torch.allclose(torch.stack([log_p(row) for row in u]), expected, atol=1e-12)


def test_the_warm_start_scores_a_model_that_does_not_broadcast():
    # Regression: every start of such a model scored -inf (its batched evaluation failed), so
    # the guide kept a Laplace start deep in the funnel's neck and the fit collapsed (KL 38).
    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(_funnel_not_broadcasting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guide()
    scores = guide.warm_start_record["elbo_by_start"]
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert guide.warm_start_record["warm_start"] == max(scores, key=scores.get).split("(")[0]
