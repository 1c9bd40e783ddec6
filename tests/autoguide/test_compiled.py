"""The captured training step: the same estimator and update as Trace_ELBO + Adam, STL without
the inverse, the fallbacks, and fits that agree with the eager ones."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide.initialization import init_to_value

from pyro_flowvi import AutoFlowGuide, Recipe, fit
from pyro_flowvi.autoguide.compiled import CaptureError, CompiledSVI
from pyro_flowvi.autoguide.score_direction import flow_and_jacobian, score_by_inverse, score_by_jacobian

Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def regression(x, y):
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(w[..., 0] + w[..., 1] * x, s), obs=y)


def simplex(counts):
    p = pyro.sample("p", dist.Dirichlet(torch.ones(3)))
    r = pyro.sample("r", dist.Beta(2.0, 2.0))
    pyro.sample("counts", dist.Multinomial(int(counts.sum()), p), obs=counts)
    pyro.factor("r_term", 3.0 * torch.log(r))


def _data(name):
    gen = torch.Generator().manual_seed(0)
    if name == "eight_schools":
        return eight_schools, (Y8, S8), 1
    if name == "regression":
        x = torch.randn(20, generator=gen)
        return regression, (x, 1.0 + 2.0 * x + 0.3 * torch.randn(20, generator=gen)), 1
    return simplex, (torch.tensor([3.0, 5.0, 2.0]),), 0


def _perturbed_guide(model, args, arch, stl, base_df=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(model, arch, warm_start=None, stl=stl, base_df=base_df, init_scale=0.5)
    with torch.no_grad():
        guide(*args)
        guide.flow_packed.add_(0.1 * torch.randn_like(guide.flow_packed))  # off the identity
    return guide


CASES = [("iaf", False, None), ("iaf", True, None), ("maf", True, 15.0), ("realnvp", True, None)]


@pytest.mark.parametrize("name", ["eight_schools", "regression", "simplex"])
@pytest.mark.parametrize(("arch", "stl", "base_df"), CASES)
def test_loss_and_gradients_equal_trace_elbo_on_the_same_draws(float64, name, arch, stl, base_df):
    model, args, nesting = _data(name)
    guide = _perturbed_guide(model, args, arch, stl, base_df)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=nesting)
    pyro.set_rng_seed(1)
    expected = elbo.loss_and_grads(model, guide, *args)
    svi = CompiledSVI(guide, num_particles=8)
    names = svi.names
    expected_grads = [pyro.get_param_store().get_param(n).unconstrained().grad for n in names]
    pyro.set_rng_seed(1)
    eps = guide.get_base_dist().sample((8,))  # the draws Trace_ELBO's guide made
    loss, grads = svi.loss_and_grads(eps, *args)
    assert abs(float(loss) - expected) < 1e-10 * (1 + abs(expected))
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)
    assert float(grads[1].abs().max()) > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize(("arch", "stl"), [("iaf", True), ("realnvp", False)])
def test_the_traced_step_is_adam_on_those_gradients(float64, arch, stl):
    model, args, _ = _data("regression")
    guide = _perturbed_guide(model, args, arch, stl)
    before = [p.detach().clone() for p in CompiledSVI(guide).params]
    svi = CompiledSVI(guide, num_particles=8, lr=0.01, clip_norm=10.0)
    svi.capture(*args)
    pyro.set_rng_seed(5)
    eps = guide.get_base_dist().sample((8,))
    loss, grads = svi.loss_and_grads(eps, *args)
    # Pyro's ClippedAdam-free recipe: per-tensor norm clipping, then torch.optim.Adam
    params = [p.clone().requires_grad_() for p in before]
    optim = torch.optim.Adam(params, lr=0.01)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(p, 10.0)
    optim.step()
    pyro.set_rng_seed(5)
    step_loss = svi.step(*args)
    assert abs(step_loss - float(loss)) < 1e-10 * (1 + abs(float(loss)))
    for got, want in zip(svi.params, params, strict=True):
        assert torch.allclose(got, want.detach(), rtol=0, atol=1e-12)
        assert not torch.equal(got, before[0] if got.shape == before[0].shape else before[1])


def _score_direction(svi, eps):
    flow = svi.guide._live_flow()
    _, scale = svi.guide._loc_scale()
    _, _, jac = flow_and_jacobian(flow, eps)
    return score_by_jacobian(svi.guide.get_base_dist(), scale.detach(), eps, jac)


@pytest.mark.parametrize("base", ["diagonal", "full"])
def test_coupling_flows_score_through_the_inverse_as_through_the_jacobian(float64, base):
    model, args, _ = _data("eight_schools")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoFlowGuide(model, "realnvp", warm_start=None, stl=True, base=base)
    with torch.no_grad():
        guide(*args)
        guide.flow_packed.add_(0.1 * torch.randn_like(guide.flow_packed))
        guide.affine_white.add_(0.1 * torch.randn_like(guide.affine_white))
    svi = CompiledSVI(guide)
    assert svi.score_by_inverse and not CompiledSVI(_perturbed_guide(model, args, "iaf", True)
                                                     ).score_by_inverse
    eps = guide.get_base_dist().sample((6,))
    loc, scale = guide._loc_scale()
    u, _ = guide._live_flow().call_and_ladj(eps)
    z = loc + (u * scale if base == "diagonal" else u @ scale.T)
    by_inverse = score_by_inverse(guide._frozen_flow(), guide.get_base_dist(), loc.detach(),
                                  scale.detach(), z.detach())
    assert torch.allclose(by_inverse, _score_direction(svi, eps), rtol=1e-8, atol=1e-10)


def test_the_score_direction_is_the_closed_form_for_a_gaussian_guide(float64):
    # arch "gaussian": q = N(mu, L L^T), so grad_z log q = -(L L^T)^-1 (z - mu), with no inverse
    # of any flow involved; and a Sylvester flow (no analytic inverse) gets STL too.
    model, args, _ = _data("eight_schools")
    guide = _perturbed_guide(model, args, "gaussian", True)
    svi = CompiledSVI(guide)
    eps = torch.randn(5, guide.latent_dim)
    loc, scale = guide._loc_scale()
    v = _score_direction(svi, eps)
    z = loc + eps @ scale.T
    expected = -torch.cholesky_solve((z - loc).T, scale).T
    assert torch.allclose(v, expected.detach(), atol=1e-10)
    assert svi.score_by_inverse  # what the step uses for this arch: the same direction
    v = score_by_inverse(guide._frozen_flow(), guide.get_base_dist(), loc.detach(),
                         scale.detach(), z.detach())
    assert torch.allclose(v, expected.detach(), atol=1e-10)
    syl = _perturbed_guide(model, args, "sylvester", False)
    svi = CompiledSVI(syl, stl=True)
    pyro.set_rng_seed(3)
    eps = syl.get_base_dist().sample((4,))
    v = _score_direction(svi, eps)
    # against a central difference of log q along a direction d at z = T(eps): moving eps by
    # J^-1 (h d) moves z by h d to first order (the second-order terms cancel centrally)
    flow = syl._live_flow()
    u, ladj = flow.call_and_ladj(eps)
    loc, scale = syl._loc_scale()
    z = loc + u @ scale.T
    direction = torch.randn_like(z)
    h = 1e-6
    jac = torch.vmap(torch.func.jacrev(lambda e: loc + flow.call_and_ladj(e[None])[0][0] @ scale.T))(
        eps)
    deps = torch.linalg.solve(jac, h * direction)

    def log_q(e):
        _, la = flow.call_and_ladj(e)
        return syl.get_base_dist().log_prob(e) - la

    numeric = (log_q(eps + deps) - log_q(eps - deps)) / (2 * h)
    assert torch.allclose((v * direction).sum(-1), numeric.detach(), rtol=1e-5, atol=1e-6)


def _subsampled(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y), subsample_size=5) as idx:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])


def _branching(y):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if x > 0:  # control flow on a latent's value
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)
    else:
        pyro.sample("y", dist.Normal(-x, 2.0), obs=y)


def _random_inside(y):
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    jitter = torch.randn(())  # Python-side randomness: a different density every call
    pyro.sample("y", dist.Normal(x + jitter, 1.0), obs=y)


@pytest.mark.parametrize(("model", "data", "why"), [
    (_subsampled, torch.randn(20), "subsamples the plate 'data'"),
    (_branching, torch.tensor(0.5), "data-dependent control flow"),
    (_random_inside, torch.tensor(0.5), "disagrees with the model's"),
])
def test_a_model_that_cannot_be_captured_is_refused_and_fit_falls_back(model, data, why):
    pyro.clear_param_store()
    guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[4], warm_start=None)
    guide(data)
    with pytest.raises(CaptureError, match=why):
        CompiledSVI(guide).capture(data)
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match=f"cannot be captured.*{why}.*Trace_ELBO"):
        result = fit(model, data, progress=False, seed=0, num_diagnostic_samples=100,
                     guide_options={"warm_start": None, "num_layers": 1, "hidden_dims": [4]},
                     recipe=Recipe(max_steps=60, window=10, min_steps=20, min_decay_steps=10))
    assert result.num_steps > 0 and all(math.isfinite(v) for v in result.losses)


def test_a_failing_torch_compile_warns_and_runs_the_traced_graph(monkeypatch):
    model, args, _ = _data("regression")
    guide = _perturbed_guide(model, args, "iaf", True)

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    svi = CompiledSVI(guide, backend="inductor")
    with pytest.warns(UserWarning, match="torch.compile failed.*no C\\+\\+ compiler.*graph from"):
        svi.capture(*args)
    assert svi.backend == "graph"
    assert math.isfinite(svi.step(*args))


def test_failing_torchscript_warns_and_runs_the_traced_graph(monkeypatch):
    model, args, _ = _data("regression")
    guide = _perturbed_guide(model, args, "iaf", True)

    def broken(*a, **k):
        raise RuntimeError("TorchScript was removed")

    monkeypatch.setattr(torch.jit, "trace", broken)
    svi = CompiledSVI(guide, backend="script")
    with pytest.warns(UserWarning, match="TorchScript failed.*removed.*from Python"):
        svi.capture(*args)
    assert svi.backend == "graph"
    assert math.isfinite(svi.step(*args))


def _three_steps(model, args, backend):
    guide = _perturbed_guide(model, args, "iaf", True)
    svi = CompiledSVI(guide, backend=backend)
    pyro.set_rng_seed(4)
    losses = [svi.step(*args) for _ in range(3)]
    return svi.backend, losses, [p.clone() for p in svi.params]


@pytest.mark.parametrize("name", ["eight_schools", "regression"])
def test_the_script_backend_takes_the_same_steps_as_the_graph(float64, name):
    model, args, _ = _data(name)
    backend, losses, params = _three_steps(model, args, "script")
    assert backend == "script"  # TorchScript ran (no fallback on this torch)
    _, expected_losses, expected_params = _three_steps(model, args, "graph")
    assert losses == pytest.approx(expected_losses, rel=1e-10)
    assert losses[0] != losses[2]  # the parameters moved between steps
    for a, b in zip(params, expected_params, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_nonfinite_step_changes_nothing():
    def walled(y):  # finite only within 0.001 of x = -3, where the guide starts
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("wall", torch.where((x + 3.0).abs() > 1e-3, torch.tensor(float("nan")),
                                        torch.tensor(0.0)))
        pyro.sample("y", dist.Normal(x, 1.0), obs=y)

    pyro.clear_param_store()
    guide = AutoFlowGuide(walled, num_layers=1, hidden_dims=[4], warm_start=None, init_scale=1.0,
                          init_loc_fn=init_to_value(values={"x": torch.tensor(-3.0)}))
    guide(torch.tensor(-1.0))
    svi = CompiledSVI(guide, num_particles=8)
    before = [p.clone() for p in svi.params]
    state = svi.get_state()
    losses = [svi.step(torch.tensor(-1.0)) for _ in range(5)]  # every step has a NaN draw
    assert all(math.isnan(v) for v in losses)
    assert all(torch.equal(a, b) for a, b in zip(svi.params, before, strict=True))
    assert torch.equal(svi.get_state()["count"], state["count"]) and svi.num_steps == 0


def test_new_data_are_captured_again():
    model, args, _ = _data("regression")
    guide = _perturbed_guide(model, args, "iaf", False)
    svi = CompiledSVI(guide)
    svi.step(*args)
    x, y = args
    y2 = y + 100.0  # far from the fitted line: a much larger loss
    pyro.set_rng_seed(2)
    eps = guide.get_base_dist().sample((8,))
    expected, _ = svi.loss_and_grads(eps, x, y2)
    pyro.set_rng_seed(2)
    assert abs(svi.step(x, y2) - float(expected)) < 1e-3 * abs(float(expected))


@pytest.mark.slow
def test_compiled_and_eager_fits_reach_the_same_elbo_on_a_conjugate_model():
    # y_i ~ N(mu, 1), mu ~ N(0, 10^2): log Z is known, so the ELBO's gap is the fit's KL
    y = torch.tensor([0.3, -0.5, 1.2, 0.8, 0.1])

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    n, prior_var = len(y), 100.0
    cov = torch.eye(n) + prior_var
    log_z = float(dist.MultivariateNormal(torch.zeros(n), cov).log_prob(y))
    elbos = {}
    for mode in ("off", "graph"):
        pyro.clear_param_store()
        result = fit(model, y, seed=0, progress=False, num_diagnostic_samples=4000,
                     guide_options={"warm_start": None, "init_scale": 1.0},
                     recipe=Recipe(compile=mode, max_steps=1500))
        elbos[mode] = result.report
    for report in elbos.values():
        assert abs(report.elbo - log_z) < 4 * report.elbo_se + 0.01
    assert abs(elbos["off"].elbo - elbos["graph"].elbo) < 4 * math.hypot(
        elbos["off"].elbo_se, elbos["graph"].elbo_se) + 0.01


@pytest.mark.slow
def test_the_inductor_backend_takes_the_same_step_as_the_graph(float64):
    model, args, _ = _data("regression")
    steps = {}
    for backend in ("graph", "inductor"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            used, losses, params = _three_steps(model, args, backend)
        if backend == "inductor" and used == "graph":  # no compiler on this machine
            assert any("torch.compile failed" in str(w.message) for w in caught)
        steps[backend] = (losses, params)
    assert steps["graph"][0] == pytest.approx(steps["inductor"][0], rel=1e-9)
    for a, b in zip(steps["graph"][1], steps["inductor"][1], strict=True):
        assert torch.allclose(a, b, atol=1e-9)


def test_bad_arguments_are_refused():
    model, args, _ = _data("regression")
    guide = _perturbed_guide(model, args, "iaf", False)
    with pytest.raises(ValueError, match="backend must be one of"):
        CompiledSVI(guide, backend="xla")
    with pytest.raises(ValueError, match="num_particles"):
        CompiledSVI(guide, num_particles=0)
    with pytest.raises(TypeError, match="AutoFlowGuide"):
        CompiledSVI(object())
    with pytest.raises(ValueError, match="compile must be one of"):
        Recipe(compile="fast")
    fresh = AutoFlowGuide(model, name="fresh")
    with pytest.raises(ValueError, match="call the guide once"):
        CompiledSVI(fresh)
