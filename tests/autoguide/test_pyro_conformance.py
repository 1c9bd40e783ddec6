"""Our port of Pyro's autoguide conformance tests to AutoFlowGuide, for every recommended arch."""

# What Pyro's tests/infer/test_autoguide.py, tests/infer/autoguide/test_inference.py and
# tests/infer/reparam/test_neutra.py check, re-written for AutoFlowGuide (no code copied).  Each
# test names its Pyro counterpart; docs/conformance.rst tabulates the status of every one.
# Where Pyro only checks that something runs, these tests also check a known answer.

import io
import math
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import (
    MCMC,
    NUTS,
    SVI,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiscreteParallel,
    AutoGuideList,
    AutoNormal,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)
from pyro.infer.mcmc.util import initialize_model
from pyro.infer.reparam import NeuTraReparam, ProjectedNormalReparam
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.optim import Adam, ClippedAdam
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch import nn
from torch.distributions import constraints

from pyro_flowvi import AutoFlowGuide
from pyro_flowvi.testing import randomize_parameters

pytestmark = pytest.mark.filterwarnings(  # Pyro's tests use torch.jit, which torch deprecates
    "ignore:`torch.jit.* is deprecated:DeprecationWarning")

ARCHS = ["iaf", "maf", "realnvp", "nsf", "sylvester", "flowified", "gaussian"]
INIT_FNS = [init_to_feasible, init_to_mean, init_to_median, init_to_sample]
ELBOS = [Trace_ELBO, TraceGraph_ELBO, TraceEnum_ELBO]
MECHANICS = {"warm_start": None}  # plumbing tests skip the (default) Laplace warm start


def first_fast(values, fast=1):
    """Parameters after the first ``fast`` marked slow: every variant still runs in CI, and a
    ``-m "not slow"`` run keeps the file under 90 s on one thread."""
    return [v if k < fast else pytest.param(v, marks=pytest.mark.slow)
            for k, v in enumerate(values)]


def slow_for(slow_archs):
    """ARCHS with the given ones marked slow."""
    return [pytest.param(a, marks=pytest.mark.slow) if a in slow_archs else a for a in ARCHS]


def flow_guide(model, arch, **options):
    """A small flow (the gaussian arch has no layers, so takes no depth or width)."""
    size = {} if arch == "gaussian" else {"num_layers": 2, "hidden_dims": [8]}
    return AutoFlowGuide(model, arch, **size, **options)


def make_elbo(elbo_class, **options):
    if elbo_class in (TraceEnum_ELBO, JitTraceEnum_ELBO):
        options["strict_enumeration_warning"] = False
    if elbo_class.__name__.startswith("Jit"):
        options["ignore_jit_warnings"] = True
    return elbo_class(**options)


def guide_draws(guide, *args, num_samples=4000, names=None):
    """``{site: (num_samples, ...) draws}`` from one vectorised guide trace."""
    with torch.no_grad(), pyro.plate("particles", num_samples, dim=-3):
        trace = poutine.trace(guide).get_trace(*args)
    names = names or [n for n, s in trace.nodes.items()
                      if s["type"] == "sample" and not n.startswith("_")]
    return {n: trace.nodes[n]["value"].reshape(num_samples, -1) for n in names}


# =============================================================================================
# tests/infer/test_autoguide.py
# =============================================================================================
@pytest.mark.parametrize("arch", ARCHS)
def test_scores(arch):
    """Pyro: test_scores.  Also: the latent's log q is the change of variables through the
    public ``get_transform()``, recomputed from the same base draw."""
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([10]).to_event(1))

    guide = flow_guide(model, arch, **MECHANICS)
    guide()
    randomize_parameters(guide, scale=0.2)  # move the flow off the identity
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace()
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()

    latent = "_AutoFlowGuide_latent"
    assert latent not in model_trace.nodes
    assert guide_trace.nodes["z"]["log_prob_sum"].item() == 0.0  # real support: no Jacobian
    z = guide_trace.nodes["z"]["value"]
    assert torch.allclose(model_trace.nodes["z"]["log_prob_sum"],
                          dist.Normal(0.0, 1.0).log_prob(z).sum())
    pyro.set_rng_seed(3)
    eps = guide.get_base_dist().rsample()
    transform = guide.get_transform()
    u = transform(eps)
    assert torch.allclose(u, guide_trace.nodes[latent]["value"], atol=1e-5)  # the same draw
    log_q = guide.get_base_dist().log_prob(eps) - transform.log_abs_det_jacobian(eps, u)
    assert log_q.item() != 0.0
    assert torch.allclose(guide_trace.nodes[latent]["log_prob_sum"], log_q, atol=1e-4)


def factor_model(log_factor):
    pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.factor("f1", log_factor)
    pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pyro.plate("plate", 3):
        pyro.factor("f2", log_factor)
        pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))


@pytest.mark.parametrize("elbo_class", ELBOS)
@pytest.mark.parametrize("arch", ARCHS)
def test_factor(arch, elbo_class):
    """Pyro: test_factor.  A factor enters the loss once per plate member: 1 + 3."""
    guide = flow_guide(factor_model, arch, **MECHANICS)
    elbo = make_elbo(elbo_class)
    elbo.loss(factor_model, guide, torch.tensor(0.0))
    pyro.set_rng_seed(123)
    loss_5 = elbo.loss(factor_model, guide, torch.tensor(5.0))
    pyro.set_rng_seed(123)
    loss_4 = elbo.loss(factor_model, guide, torch.tensor(4.0))
    assert loss_5 - loss_4 == pytest.approx(-1 - 3, abs=1e-4)


def shapes_model():
    pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pyro.plate("plate", 3):
        pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))
    pyro.sample("z4", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    pyro.sample("z5", dist.Dirichlet(torch.ones(3)))
    pyro.sample("z6", dist.Normal(0, 1).expand((2,)).mask(torch.arange(2) > 0).to_event(1))
    pyro.sample("z7", dist.LKJCholesky(2, torch.tensor(1.0)))


def check_shapes_sample(guide):
    draw = guide()
    shapes = {name: tuple(value.shape) for name, value in draw.items()}
    assert shapes == {"z1": (), "z2": (2,), "z3": (3,), "z4": (2,), "z5": (3,), "z6": (2,),
                      "z7": (2, 2)}
    assert guide.latent_dim == 1 + 2 + 3 + 2 + 2 + 2 + 1  # simplex 3 -> 2, LKJ(2) -> 1
    assert (draw["z5"] > 0).all() and torch.allclose(draw["z5"].sum(), torch.tensor(1.0))
    chol = draw["z7"]  # the Cholesky factor of a correlation matrix: unit rows, upper zero
    assert chol[0, 1] == 0 and torch.allclose(chol.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("num_particles", [1, 10])
@pytest.mark.parametrize("elbo_class", ELBOS)
@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes(arch, init_loc_fn, elbo_class, num_particles):
    """Pyro: test_shapes (Dirichlet, LKJ, masked, MVN and plated sites)."""
    guide = flow_guide(shapes_model, arch, init_loc_fn=init_loc_fn, **MECHANICS)
    elbo = make_elbo(elbo_class, num_particles=num_particles, vectorize_particles=True)
    assert math.isfinite(elbo.loss(shapes_model, guide))
    check_shapes_sample(guide)


def check_jit_matches_trace(model, guide, args, num_particles):
    """The compiled ``loss_and_grads`` gives Trace_ELBO's loss and gradients on the same draws
    (Pyro only checks that the JIT ELBOs run; their ``loss`` is not even compiled)."""
    options = {"num_particles": num_particles, "vectorize_particles": True,
               "max_plate_nesting": 1}  # a guess would draw from the seeded stream
    jit = make_elbo(JitTrace_ELBO, **options)
    jit.loss_and_grads(model, guide, *args)  # compiles
    params = list(guide.parameters())
    results = []
    for elbo in (jit, Trace_ELBO(**options)):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(11)
        loss = elbo.loss_and_grads(model, guide, *args)
        results.append((loss, [p.grad.clone() for p in params if p.grad is not None]))
    (jit_loss, jit_grads), (loss, grads) = results
    assert math.isfinite(jit_loss) and jit_loss == pytest.approx(loss, rel=1e-4, abs=1e-4)
    assert len(jit_grads) == len(grads) > 0
    for a, b in zip(jit_grads, grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("num_particles", first_fast([10, 1]))
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_jit(arch, num_particles):
    """Pyro: test_shapes under JitTrace_ELBO.  Adapted: Pyro's ``loss`` is not compiled, so
    this runs the compiled ``loss_and_grads`` and checks its loss and gradients (STL included
    for iaf/maf) against Trace_ELBO's on the same draws."""
    guide = flow_guide(shapes_model, arch, **MECHANICS)
    check_jit_matches_trace(shapes_model, guide, (), num_particles)
    check_shapes_sample(guide)


@pytest.mark.parametrize("arch", ARCHS)
def test_jit_single_latent(arch):
    """Pyro: test_exact's JitTrace_ELBO on one scalar latent.  Regression: a D = 1 realnvp
    coupling has a 0-wide side, and F.linear's JIT backward cannot reshape it (the step
    raised)."""
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    data = torch.tensor([0.5, -0.3, 1.2])
    guide = flow_guide(model, arch, **MECHANICS)
    guide(data)
    randomize_parameters(guide, scale=0.2)
    check_jit_matches_trace(model, guide, (data,), 10)


def median_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0))


@pytest.mark.parametrize("elbo_class",
                         first_fast([JitTrace_ELBO, JitTraceGraph_ELBO, JitTraceEnum_ELBO]))
@pytest.mark.parametrize("arch", ARCHS)
def test_median(arch, elbo_class):
    """Pyro: test_median (trained under the JIT ELBOs), with the guide's defaults: the Laplace
    start is exact for x and y and has z's median, so a short run at a tenth of Pyro's learning
    rate (Pyro trains from a cold start) must keep them.  median() is a Monte Carlo median
    (4000 draws) here; Pyro's tolerance 0.1 is > 4 of its s.e."""
    guide = flow_guide(median_model, arch)
    elbo = make_elbo(elbo_class, num_particles=100, vectorize_particles=True)
    svi = SVI(median_model, guide, Adam({"lr": 0.002, "betas": (0.8, 0.99)}), elbo)
    for _ in range(30):
        svi.step()
    assert guide.warm_start_record["warm_start"] == "laplace"
    median = guide.median()
    assert not any(v.requires_grad for v in median.values())
    assert median["x"].item() == pytest.approx(0.0, abs=0.1)
    assert median["y"].item() == pytest.approx(1.0, abs=0.1)
    assert median["z"].item() == pytest.approx(0.5, abs=0.1)


def serialization_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("plate", 2):
        pyro.sample("y", dist.LogNormal(0.0, 1.0))
        pyro.sample("z", dist.Beta(2.0, 2.0))


@pytest.mark.parametrize("jit", [False, True], ids=["torch.save", "jit.trace"])
@pytest.mark.parametrize("arch", ARCHS)
def test_serialization(arch, jit):
    """Pyro: test_serialization.  Regression (jit): torch.jit.trace_module probes every
    attribute of every submodule, and the flow layers' inherited ``sign`` raised
    NotImplementedError, so no flow guide could be traced."""
    guide = flow_guide(serialization_model, arch, **MECHANICS)
    guide()
    randomize_parameters(guide, scale=0.2)  # the copy must carry trained, not initial, values
    pyro.set_rng_seed(0)
    expected = guide.call()
    names = sorted(guide())
    expected_params = {k: v.detach().clone() for k, v in guide.named_parameters()}
    buffer = io.BytesIO()
    if jit:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
        torch.jit.save(traced, buffer)
        del traced
        pyro.clear_param_store()  # the traced guide must not read the store
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    else:
        torch.save(guide, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    pyro.set_rng_seed(0)
    actual = loaded.call()
    assert len(actual) == len(expected) == len(names) == 3
    for name, a, e in zip(names, actual, expected, strict=True):
        assert torch.allclose(a, e), name
    actual_params = {k: v.detach() for k, v in loaded.named_parameters()}
    assert set(actual_params) == set(expected_params)
    for name, value in expected_params.items():
        assert torch.equal(actual_params[name], value), name


def quantiles_model():
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0).expand([2]).to_event(1))
    pyro.sample("x", dist.Normal(0.0, 1.0))


Z10 = 1.2815516  # the standard normal's 90% quantile
BETA22_Q10 = 0.195800  # Beta(2, 2): solves 3 q^2 - 2 q^3 = 0.1 (and 1 - it is the 90% point)


@pytest.mark.parametrize("in_guide_list", [False, True], ids=["alone", "AutoGuideList"])
@pytest.mark.parametrize("arch", ARCHS)
def test_quantiles(arch, in_guide_list):
    """Pyro: test_quantiles, with the guide's defaults (Pyro's ``AutoGuideList_x`` case: x
    guided by AutoNormal, the rest by ours).  Adapted: a flow guide has no
    ``get_posterior().variance``; the Monte Carlo s.d. of x's draws stands in for it, against
    the half-width of the central 68% interval and the known s.d. 1.  The quantiles are checked
    against the known ones, not just ordered as in Pyro."""
    if in_guide_list:
        guide = AutoGuideList(quantiles_model)
        guide.append(AutoNormal(poutine.block(quantiles_model, expose=["x"]), init_scale=1.0))
        guide.append(flow_guide(poutine.block(quantiles_model, hide=["x"]), arch))
    else:
        guide = flow_guide(quantiles_model, arch)
    elbo = Trace_ELBO(num_particles=100, vectorize_particles=True)
    svi = SVI(quantiles_model, guide, Adam({"lr": 0.001}), elbo)  # the start is Laplace's
    for _ in range(20):
        svi.step()

    draws = 20000  # Monte Carlo quantiles: 5x the default draws, s.e. ~0.01 at these levels
    sd = guide_draws(guide, num_samples=draws, names=["x"])["x"].std()
    band = guide.quantiles([0.158655, 0.8413447], num_samples=draws)
    assert float(sd) == pytest.approx(1.0, abs=0.05)
    assert float(0.5 * (band["x"][1] - band["x"][0])) == pytest.approx(float(sd), abs=0.05)

    pyro.set_rng_seed(1)
    quantiles = guide.quantiles([0.1, 0.5, 0.9], num_samples=draws)
    pyro.set_rng_seed(1)
    median = guide.median(num_samples=draws)
    for name in ["x", "y", "z"]:
        assert not median[name].requires_grad and not quantiles[name].requires_grad
        assert quantiles[name].shape == ((3, 2) if name == "z" else (3,))
        assert torch.equal(median[name], quantiles[name][1])  # ours: same draws, same value
    expected = {"x": torch.tensor([-Z10, 0.0, Z10]),
                "y": torch.tensor([-Z10, 0.0, Z10]).exp(),
                "z": torch.tensor([BETA22_Q10, 0.5, 1 - BETA22_Q10])[:, None].expand(3, 2)}
    assert torch.allclose(quantiles["x"], expected["x"], atol=0.1)
    assert torch.allclose(quantiles["y"].log(), expected["y"].log(), atol=0.1)
    assert torch.allclose(quantiles["z"], expected["z"], atol=0.04)


def mixture_model(data):
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0, 10).expand_by([2]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0, 1))
    with pyro.plate("data", len(data)):
        weights = weights.expand(torch.Size((len(data),)) + weights.shape)
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


@pytest.mark.parametrize("arch", ARCHS)
def test_discrete_parallel(arch):
    """Pyro: test_discrete_parallel.  Also: TraceEnum_ELBO's loss equals the hand-summed
    expectation over the AutoDiscreteParallel assignment probabilities, for the same draw of
    the continuous sites.  (No warm start: the model with the assignment hidden from our guide
    still draws it at random, so its density has no fixed mode.)"""
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    guide = AutoGuideList(mixture_model)
    guide.append(flow_guide(poutine.block(mixture_model, hide=["assignment"]), arch,
                            **MECHANICS))
    guide.append(AutoDiscreteParallel(poutine.block(mixture_model, expose=["assignment"])))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    assert math.isfinite(elbo.loss_and_grads(mixture_model, guide, data))
    randomize_parameters(guide[0], scale=0.2)
    pyro.set_rng_seed(5)
    loss = elbo.loss(mixture_model, guide, data)

    pyro.set_rng_seed(5)
    continuous = poutine.trace(guide[0]).get_trace(data)
    discrete = poutine.trace(guide[1]).get_trace(data)
    w, locs, scale = (continuous.nodes[n]["value"] for n in ("weights", "locs", "scale"))
    log_q_theta = continuous.log_prob_sum()  # log q of the constrained values (Jacobians in)
    probs = discrete.nodes["assignment"]["fn"].probs  # (5, 2)
    log_prior = (dist.Dirichlet(0.5 * torch.ones(2)).log_prob(w)
                 + dist.Normal(0, 10).log_prob(locs).sum() + dist.LogNormal(0, 1).log_prob(scale))
    log_joint = w.log() + dist.Normal(locs, scale).log_prob(data[:, None])  # (5, 2)
    expected = log_prior - log_q_theta + (probs * (log_joint - probs.log())).sum()
    assert loss == pytest.approx(-expected.item(), rel=1e-4)


def two_site_model():
    pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))


@pytest.mark.parametrize("arch", ARCHS)
def test_guide_list(arch):
    """Pyro: test_guide_list, with the defaults.  The prior is the posterior (no data) and the
    Laplace start is exact, so every draw has log p - log q = log Z = 0: the list composes each
    part's density and Jacobians exactly."""
    guide = AutoGuideList(two_site_model)
    guide.append(flow_guide(poutine.block(two_site_model, expose=["x"]), arch))
    guide.append(flow_guide(poutine.block(two_site_model, expose=["y"]), arch))
    values = guide()
    assert {k: v.shape for k, v in values.items()} == {"x": (2,), "y": (5,)}
    # Regression: the start's ELBO was E[log p~] by Monte Carlo plus the exact entropy, noisy
    # enough that the exact Laplace start (ELBO log Z = 0) lost to x's init point (y's init
    # point, the MVN's mean, is exact too and may win the tie).
    for part in guide:
        elbos = part.warm_start_record["elbo_by_start"]
        assert elbos["laplace"] == pytest.approx(0, abs=1e-5) == max(elbos.values())
    assert guide[0].warm_start_record["warm_start"] == "laplace"
    for elbo in (Trace_ELBO(num_particles=10, vectorize_particles=True), TraceGraph_ELBO()):
        assert elbo.loss(two_site_model, guide) == pytest.approx(0.0, abs=1e-4)
    assert {n.rsplit(".", 1)[0] for n in pyro.get_param_store()} == {
        "AutoGuideList.0", "AutoGuideList.1"}


@pytest.mark.parametrize("returns_dict", [False, True], ids=["callable", "callable_return_dict"])
@pytest.mark.parametrize("arch", ARCHS)
def test_callable(arch, returns_dict):
    """Pyro: test_callable and test_callable_return_dict, with the defaults.  With x at the
    Delta guide's 0 and y's guide exact, the loss is -log N(0; 0, 1) = log(2 pi) / 2."""
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))

    def guide_x():
        x_loc = pyro.param("x_loc", torch.tensor(0.0))
        x = pyro.sample("x", dist.Delta(x_loc))
        return {"x": x} if returns_dict else None

    guide = AutoGuideList(model)
    guide.append(guide_x)
    guide.append(flow_guide(poutine.block(model, expose=["y"]), arch))
    assert set(guide()) == ({"x", "y"} if returns_dict else {"y"})
    loss = Trace_ELBO(num_particles=10, vectorize_particles=True).loss(model, guide)
    assert loss == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_model_error(arch):
    """Pyro: test_empty_model_error.  Adapted: ours raises a ValueError that says why (Pyro's
    AutoContinuous raises a RuntimeError)."""
    guide = flow_guide(lambda: None, arch)
    with pytest.raises(ValueError, match="no latent"):
        guide()


@pytest.mark.parametrize("arch", ARCHS)
def test_unpack_latent(arch):
    """Pyro: test_unpack_latent (an LKJ Cholesky factor has one unconstrained coordinate)."""
    def model():
        return pyro.sample("x", dist.LKJCholesky(2, torch.tensor(1.0)))

    guide = flow_guide(model, arch, **MECHANICS)
    chol = guide()["x"]
    assert chol.shape == model().shape == (2, 2)
    assert chol[0, 1] == 0 and torch.allclose(chol.norm(dim=-1), torch.ones(2))
    latent = guide.sample_latent()
    assert [value.shape for _, value in guide._unpack_latent(latent)] == [(1,)]


def init_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))


@pytest.mark.parametrize("arch", ARCHS)
def test_init_loc_fn(arch):
    """Pyro: test_init_loc_fn, as Pyro states it: without a warm start the guide starts at
    init_loc_fn's point (median of 4000 draws, s.e. 0.02 at the chosen scale 1)."""
    inits = {"x": torch.randn(()), "y": torch.randn(5)}
    guide = flow_guide(init_model, arch, init_loc_fn=lambda site: inits[site["name"]],
                       **MECHANICS)
    guide()
    median = guide.median()
    assert torch.allclose(median["x"], inits["x"], atol=0.1)
    assert torch.allclose(median["y"], inits["y"], atol=0.1)


def bimodal_model():
    x = pyro.sample("x", dist.Normal(0.0, 100.0))  # ~flat: the factor makes two modes
    pyro.factor("modes", dist.Normal(torch.tensor([-3.0, 3.0]), 0.5).log_prob(x[..., None])
                .logsumexp(-1))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))


@pytest.mark.parametrize("side", [-1.0, 1.0], ids=["left", "right"])
@pytest.mark.parametrize("arch", ARCHS)
def test_init_loc_fn_with_the_default_warm_start(arch, side):
    """Pyro: test_init_loc_fn, adapted to our default: the warm start searches for the MAP from
    init_loc_fn's point and keeps the Laplace Gaussian there, so init_loc_fn picks the mode of a
    bimodal x (modes -3, +3, s.d. 0.5 each) and the median lands on it, not on the init."""
    inits = {"x": torch.tensor(2.5 * side), "y": torch.randn(5)}
    guide = flow_guide(bimodal_model, arch, init_loc_fn=lambda site: inits[site["name"]])
    guide()
    assert guide.warm_start_record["warm_start"] == "laplace"
    median = guide.median()
    assert median["x"].item() == pytest.approx(3.0 * side, abs=0.05)
    assert torch.allclose(median["y"], torch.zeros(5), atol=0.1)


@pytest.mark.parametrize("base", ["auto", "full"])
@pytest.mark.parametrize("init_scale", [1e-1, 1e-4, 1e-8])
@pytest.mark.parametrize("arch", ARCHS)
def test_init_scale(arch, init_scale, base, float64):
    """Pyro: test_init_scale (D = 106: ``base="auto"`` is diagonal there).  init_scale sets the
    scale of a start that is not the Laplace one, so no warm start here; at step 0 the flow is
    the identity, so the draws' spread is init_scale in every coordinate."""
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5)))
        with pyro.plate("plate", 100):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = flow_guide(model, arch, init_scale=init_scale, base=base, **MECHANICS)
    guide()
    loc, scale = guide._loc_scale()
    assert guide.base == ("diagonal" if base == "auto" else "full")
    marginal_sd = scale if scale.dim() == 1 else (scale @ scale.T).diagonal().sqrt()
    assert torch.allclose(marginal_sd, torch.full((106,), init_scale), rtol=1e-6)
    with torch.no_grad():
        spread = (guide.get_posterior().sample((400,)) - loc).std(0) / init_scale
    assert ((spread - 1).abs() < 0.25).all()  # 400 draws: s.e. of an s.d. ratio is 0.035


class MedianModule(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale = PyroParam(torch.tensor(0.1), constraints.positive)

    def forward(self) -> None:
        x = pyro.sample("x", dist.Normal(self.x_loc, self.x_scale))
        pyro.sample("y", dist.Normal(2.0, 0.1))
        pyro.sample("z", dist.Normal(1.0, 0.1), obs=x)


@pytest.mark.parametrize("elbo_class", first_fast(ELBOS))
@pytest.mark.parametrize("arch", ARCHS)
def test_median_module(arch, elbo_class):
    """Pyro: test_median_module (a PyroModule model whose own parameters train too), with the
    defaults: posterior x ~ N(~1, 0.07), y ~ N(2, 0.1)."""
    model = MedianModule()
    guide = flow_guide(model, arch)
    svi = SVI(model, guide, Adam({"lr": 0.005}), make_elbo(elbo_class))
    for _ in range(20):
        svi.step()
    median = guide.median()
    assert median["x"].item() == pytest.approx(1.0, abs=0.1)
    assert median["y"].item() == pytest.approx(2.0, abs=0.1)


class NestedModule(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale = PyroParam(torch.tensor(0.1), constraints.positive)

    def forward(self) -> None:
        pyro.sample("x", dist.Normal(self.x_loc, self.x_scale))
        with pyro.plate("plate", 2):
            pyro.sample("y", dist.Normal(2.0, 0.1))


@pytest.mark.parametrize("elbo_class", first_fast(ELBOS))
@pytest.mark.parametrize("arch", ARCHS)
def test_nested_autoguide(arch, elbo_class):
    """Pyro: test_nested_autoguide (ours nested two lists deep, under a list-level name)."""
    model = NestedModule()
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["x"])))
    inner = AutoGuideList(poutine.block(model, expose=["y"]))
    inner.z = flow_guide(poutine.block(model, expose=["y"]), arch)
    guide.append(inner)
    for _, module in guide.named_modules():
        if module is not guide:
            assert module.master is not None and module.master() is guide
    svi = SVI(model, guide, Adam({"lr": 0.005}), make_elbo(elbo_class))
    for _ in range(20):
        svi.step()
    guide_trace = poutine.trace(guide).get_trace()
    check_model_guide_match(poutine.trace(model).get_trace(), guide_trace)
    assert all(p.startswith(("AutoGuideList.0", "AutoGuideList.1.z"))
               for p in guide_trace.param_nodes)
    assert {"x", "y", "_AutoGuideList.1.z_latent"} <= set(guide_trace.stochastic_nodes)
    # y's posterior is its prior N(2, 0.1): the list's median reaches the nested flow guide
    assert torch.allclose(guide.median()["y"], torch.full((2,), 2.0), atol=0.05)


N_DATA, N_FEATURES = 10, 3


class RandomLinear(nn.Linear, PyroModule):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.weight = PyroSample(dist.Normal(0.0, 1.0).expand([out_features, in_features])
                                 .to_event(2))
        self.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))


class LinearRegression(PyroModule):
    def __init__(self, num_data: int, num_features: int) -> None:
        super().__init__()
        self.num_data = num_data
        self.linear = RandomLinear(num_features, 1)

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("plate", self.num_data):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


@pytest.mark.parametrize("elbo_class", first_fast(ELBOS))
@pytest.mark.parametrize("arch", ARCHS)
def test_linear_regression_smoke(arch, elbo_class):
    """Pyro: test_linear_regression_smoke (PyroSample latents), with the defaults."""
    x, y = torch.randn(N_DATA, N_FEATURES), torch.randn(N_DATA)
    model = LinearRegression(N_DATA, N_FEATURES)
    guide = flow_guide(model, arch)
    svi = SVI(model, guide, Adam({"lr": 0.005}), make_elbo(elbo_class))
    assert math.isfinite(svi.step(x, y))
    assert guide.latent_dim == N_FEATURES + 1 + 1
    assert set(guide(x, y)) == {"linear.weight", "linear.bias", "sigma"}


@pytest.mark.parametrize("arch", slow_for({"flowified"}))  # flowified: ~6 s to trace
def test_predictive(arch):
    """Pyro: test_predictive (Predictive, then jit-traced, saved and loaded), with the
    defaults.  Also: the traced copy returns the same sites with the same shapes."""
    x, y = torch.randn(3, 2), torch.randn(3)
    model = LinearRegression(3, 2)
    guide = flow_guide(model, arch)
    guide(x, y=y)
    model_trace = poutine.trace(model).get_trace(x, y=None)
    predictive = Predictive(model, guide=guide, num_samples=10)
    samples = predictive(x)
    assert set(prune_subsample_sites(model_trace).stochastic_nodes) <= set(samples)
    assert (samples["sigma"] > 0).all() and samples["obs"].shape == (10, 3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace_module(predictive, {"call": (x,)}, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    values = loaded.call(x)
    expected = [samples[k].shape for k in sorted(samples)]  # call() returns sorted site values
    assert [v.shape for v in values] == expected
    assert all(torch.isfinite(v).all() for v in values)


def replay_model():
    a = pyro.sample("a", dist.Normal(0, 1))
    b = pyro.sample("b", dist.Normal(a[..., None], torch.ones(3)).to_event(1))
    c = pyro.sample("c", dist.MultivariateNormal(torch.zeros(3) + a[..., None], torch.eye(3)))
    with pyro.plate("i", 2):
        d = pyro.sample("d", dist.Dirichlet((b + c).exp()))
        pyro.sample("e", dist.Categorical(logits=d), obs=torch.tensor([0, 0]))
    return a, b, c, d


@pytest.mark.parametrize("sample_shape", [(), (6,), (5, 4)], ids=str)
@pytest.mark.parametrize("arch", ARCHS)
def test_replay_plates(arch, sample_shape):
    """Pyro: test_replay_plates (the guide vectorised by outer particle plates)."""
    guide = flow_guide(replay_model, arch, **MECHANICS)
    with pyro.plate_stack("particles", sample_shape, rightmost_dim=-2):
        guide_trace = poutine.trace(guide).get_trace()
        a, b, c, d = poutine.replay(replay_model, guide_trace)()
    lead = sample_shape + (1,) if sample_shape else ()
    assert a.shape == lead and b.shape == lead + (3,) and c.shape == lead + (3,)
    assert d.shape == sample_shape + (2, 3)
    assert torch.allclose(d.sum(-1), torch.ones(d.shape[:-1])) and (d > 0).all()


def subsample_model(x, y=None, batch_size=None, local=False):
    loc = pyro.param("loc", lambda: torch.tensor(0.0))
    scale = pyro.param("scale", lambda: torch.tensor(1.0), constraint=constraints.positive)
    if not local:
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("batch", len(x), subsample_size=batch_size):
        batch_x = pyro.subsample(x, event_dim=0)
        batch_y = pyro.subsample(y, event_dim=0) if y is not None else None
        if local:
            sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        return pyro.sample("obs", dist.Normal(loc + scale * batch_x, sigma), obs=batch_y)


@pytest.mark.parametrize("arch", ARCHS)
def test_subsample_model(arch):
    """Pyro: test_subsample_model (run there for AutoDelta/AutoNormal only).  Adapted: a latent
    inside the subsampled plate is refused with advice (regression: one packed vector was tied
    to whichever members each minibatch drew), and with sigma global the model trains, its
    likelihood scaled by 50 / 20."""
    x = torch.randn(50)
    with torch.no_grad():
        y = subsample_model(x)
    guide = flow_guide(subsample_model, arch)
    with pytest.raises(ValueError, match="'sigma' lies inside the subsampled plate 'batch'.*"
                                         "AmortizedFlowGuide"):
        guide(x, y, batch_size=20, local=True)
    pyro.clear_param_store()
    guide = flow_guide(subsample_model, arch)
    svi = SVI(subsample_model, guide, Adam({"lr": 0.02}), Trace_ELBO())
    assert all(math.isfinite(svi.step(x, y, batch_size=20)) for _ in range(5))
    model_trace = poutine.trace(poutine.replay(subsample_model, poutine.trace(guide).get_trace(
        x, y, batch_size=20))).get_trace(x, y, batch_size=20)
    assert model_trace.nodes["obs"]["scale"] == pytest.approx(50 / 20)


@pytest.mark.parametrize("init_fn", first_fast([None, init_to_mean, init_to_median]))
@pytest.mark.parametrize("arch", ARCHS)
def test_subsample_guide(arch, init_fn):
    """Pyro: test_subsample_guide (its AutoGuideList case with create_plates).  Adapted: ours
    guides the global drift (Pyro's AutoDelta part), AutoNormal the subsampled local states."""
    def model(batch, subsample, full_size):
        drift = pyro.sample("drift", dist.LogNormal(-1, 0.5))
        with pyro.plate("data", full_size, subsample=subsample):
            z, result = 0.0, []
            for t in range(len(batch)):
                z = pyro.sample(f"state_{t}", dist.Normal(z, drift))
                result.append(pyro.sample(f"obs_{t}", dist.Bernoulli(logits=z), obs=batch[t]))
        return torch.stack(result)

    def create_plates(batch, subsample, full_size):
        return pyro.plate("data", full_size, subsample=subsample)

    options = {} if init_fn is None else {"init_loc_fn": init_fn}
    guide = AutoGuideList(model, create_plates=create_plates)
    guide.append(flow_guide(poutine.block(model, expose=["drift"]), arch, **options))
    guide.append(AutoNormal(poutine.block(model, hide=["drift"]), **options))
    full_size, batch_size, steps = 50, 20, 4
    data = model([None] * steps, torch.arange(full_size), full_size)
    assert data.shape == (steps, full_size)
    pyro.clear_param_store()
    svi = SVI(model, guide, Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(2):
        for begin in range(0, full_size, batch_size):
            subsample = torch.arange(begin, min(full_size, begin + batch_size))
            assert math.isfinite(svi.step(data[:, subsample], subsample, full_size=full_size))
    assert guide[0].latent_dim == 1 and guide[0].median()["drift"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_subsample_guide_2(arch):
    """Pyro: test_subsample_guide_2 (AutoDelta/AutoNormal on a model with no latent sites)."""
    pytest.skip("the model has no latent sites: AutoFlowGuide refuses it with advice, as "
                "test_empty_model_error checks")


@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_discrete_helpful_error(arch, init_loc_fn):
    """Pyro: test_discrete_helpful_error."""
    def model():
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        x = pyro.sample("x", dist.Bernoulli(p))
        pyro.sample("obs", dist.Bernoulli(p * x + (1 - p) * (1 - x)),
                    obs=torch.tensor([1.0, 0.0]))

    guide = flow_guide(model, arch, init_loc_fn=init_loc_fn)
    with pytest.raises(ValueError, match=".*enumeration.html.*"):
        guide()


def sphere_model(dim):
    x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([dim]).to_event(1))
    y = pyro.sample("y", dist.ProjectedNormal(x))
    pyro.sample("obs", dist.Normal(y, 1).to_event(1), obs=torch.eye(dim)[0])


@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_sphere_helpful_error(arch, init_loc_fn):
    """Pyro: test_sphere_helpful_error."""
    guide = flow_guide(sphere_model, arch, init_loc_fn=init_loc_fn)
    with pytest.raises(ValueError, match=".*ProjectedNormalReparam.*"):
        guide(2)


@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_sphere_reparam_ok(arch, init_loc_fn):
    """Pyro: test_sphere_reparam_ok, with the defaults.  Also: the model's y is x plus the
    guide's draw of the noise y_normal, projected onto the sphere, and the loss is finite."""
    model = poutine.reparam(sphere_model, {"y": ProjectedNormalReparam()})
    guide = flow_guide(model, arch, init_loc_fn=init_loc_fn)
    guide_trace = poutine.trace(guide).get_trace(3)
    guide_trace.compute_log_prob()
    assert set(guide()) == {"x", "y_normal"}
    y = poutine.replay(lambda: poutine.trace(model).get_trace(3), guide_trace)().nodes["y"]
    z = guide_trace.nodes["x"]["value"] + guide_trace.nodes["y_normal"]["value"]
    assert torch.allclose(y["value"], z / z.norm())
    assert math.isfinite(Trace_ELBO().loss(model, guide, 3))


def test_sphere_raw_ok():
    """Pyro: test_sphere_raw_ok (AutoDelta only)."""
    pytest.skip("AutoDelta-only in Pyro: a point mass may sit on the sphere, but a flow guide "
                "needs a bijection to R^D, which the sphere has not (see the reparam test)")


# -- exact posteriors: Pyro's test_exact, test_exact_batch, test_exact_tree and
#    autoguide/test_inference.py's AutoGaussianChain, as one linear-Gaussian family -----------
def gaussian_posterior(prior_mean, prior_cov, obs_matrix, noise_var, data):
    """Posterior of z ~ N(m, P) given data ~ N(H z, r I), and the log evidence."""
    marginal_cov = obs_matrix @ prior_cov @ obs_matrix.T + noise_var * torch.eye(len(data))
    gain = prior_cov @ obs_matrix.T @ torch.linalg.inv(marginal_cov)
    mean = prior_mean + gain @ (data - obs_matrix @ prior_mean)
    cov = prior_cov - gain @ obs_matrix @ prior_cov
    log_z = dist.MultivariateNormal(obs_matrix @ prior_mean, marginal_cov).log_prob(data)
    return mean, cov, float(log_z)


def exact_model(data):
    loc = pyro.sample("loc", dist.Normal(0, 1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1), obs=data)


def exact_batch_model(data):
    with pyro.plate("data", len(data)):
        loc = pyro.sample("loc", dist.Normal(0, 1))
        pyro.sample("obs", dist.Normal(loc, 1), obs=data)


def exact_tree_model(data):
    x = pyro.sample("x", dist.Normal(0, 1))
    with pyro.plate("data", len(data)):
        y = pyro.sample("y", dist.Normal(x, 1))
        pyro.sample("obs", dist.Normal(y, 1), obs=data)


CHAIN = ((0.5, 1.0), (0.8, 0.7), (1.2, 0.6))  # x1 ~ N(0.5, 1), x_k ~ N(a_k x_{k-1}, s_k)
CHAIN_NOISE = 0.5


def chain_model(data):
    x = None
    for k, (a, s) in enumerate(CHAIN):
        x = pyro.sample(f"x{k + 1}", dist.Normal(a if x is None else a * x, s))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(x, CHAIN_NOISE), obs=data)


def exact_problem(name):
    """(model, data, latent site names, posterior mean, posterior cov, log evidence)."""
    data = torch.randn(3 if name in ("exact", "batch") else 2,
                       generator=torch.Generator().manual_seed(1))
    n = len(data)
    if name == "exact":
        prior = torch.zeros(1), torch.eye(1), torch.ones(n, 1), 1.0
        return (exact_model, data, ["loc"], *gaussian_posterior(*prior, data))
    if name == "batch":
        return (exact_batch_model, data, ["loc"],
                *gaussian_posterior(torch.zeros(n), torch.eye(n), torch.eye(n), 1.0, data))
    if name == "tree":
        cov = torch.ones(3, 3) + torch.diag(torch.tensor([0.0, 1.0, 1.0]))
        return (exact_tree_model, data, ["x", "y"],
                *gaussian_posterior(torch.zeros(3), cov, torch.eye(3)[1:], 1.0, data))
    # chain: x = b + A eps with A lower triangular, so the prior covariance is A A^T
    b, a_mat = torch.zeros(3), torch.zeros(3, 3)
    for k, (a, s) in enumerate(CHAIN):
        b[k] = a if k == 0 else a * b[k - 1]
        if k:
            a_mat[k] = a * a_mat[k - 1]
        a_mat[k, k] = s
    obs = torch.zeros(n, 3)
    obs[:, 2] = 1.0
    return (chain_model, data, ["x1", "x2", "x3"],
            *gaussian_posterior(b, a_mat @ a_mat.T, obs, CHAIN_NOISE**2, data))


@pytest.mark.parametrize("problem", first_fast(["tree", "chain", "exact", "batch"]))
@pytest.mark.parametrize("arch", ARCHS)
def test_exact(arch, problem):
    """Pyro: test_exact, test_exact_batch, test_exact_tree (JitTrace_ELBO, 100 vectorised
    particles, ClippedAdam with decay) and test_inference.py's AutoGaussianChain, with the
    defaults: moments of 10000 draws and the loss against the exact posterior and evidence.
    Adapted: Pyro trains 500 steps at lr 0.05 from a cold start; our default start (Laplace)
    is already exact, and a short JIT run at lr 2e-4 must keep it there.  (At the optimum the
    gradient is pure noise, yet Adam's first steps move every parameter by ~lr: a flow with N
    parameters and no STL shifts its mean by ~sqrt(N) lr, 0.035 for flowified at lr 1e-3,
    while the KL stays < 0.01.  JIT gradients are checked exactly in test_shapes_jit.)"""
    model, data, names, mean, cov, log_z = exact_problem(problem)
    guide = flow_guide(model, arch)
    elbo = make_elbo(JitTrace_ELBO, num_particles=100, vectorize_particles=True)
    steps = 20
    svi = SVI(model, guide, ClippedAdam({"lr": 2e-4, "lrd": 0.1 ** (1 / steps)}), elbo)
    for _ in range(steps):
        svi.step(data)
    assert guide.warm_start_record["warm_start"] == "laplace"
    draws = guide_draws(guide, data, num_samples=10000, names=names)
    z = torch.cat([draws[n] for n in names], -1)
    sd = cov.diagonal().sqrt()
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(z.std(0), sd, rtol=0.05)
    if z.shape[-1] > 1:  # and the correlations, which Pyro does not check
        assert torch.allclose(torch.corrcoef(z.T), cov / torch.outer(sd, sd), atol=0.05)
    assert elbo.loss(model, guide, data) == pytest.approx(-log_z, abs=0.01)


@pytest.mark.parametrize("arch", ARCHS)
def test_autonormal_dynamic_model(arch):
    """Pyro: test_autonormal_dynamic_model (AutoNormal's per-site parameters)."""
    pytest.skip("AutoNormal-specific: its per-site locs carry over to a model with more sites; "
                "AutoFlowGuide packs all sites into one vector whose layout is the model's")


@pytest.mark.parametrize("arch", ARCHS)
def test_iplate_smoke(arch):
    """Pyro: test_iplate_smoke (xfail for every Pyro autoguide: sequential plates are not
    supported).  Adapted: ours refuses them with AutoGuide's clear error."""
    def model():
        pyro.sample("x", dist.Normal(0, 1))
        for i in pyro.plate("plate", 3):
            pyro.sample(f"y_{i}", dist.Normal(0, 1).expand_by([2, 1 + i, 2]).to_event(3))

    guide = flow_guide(model, arch, **MECHANICS)
    with pytest.raises(NotImplementedError, match="sequential"):
        guide()


def test_subsample_model_amortized():
    """Pyro: test_subsample_model_amortized (AutoNormalMessenger's ``amortized_plates``)."""
    pytest.skip("messenger guides only; our amortized guide for local latents is "
                "AmortizedFlowGuide, tested in tests/autoguide/test_amortized.py")


# =============================================================================================
# tests/infer/autoguide/test_inference.py
# =============================================================================================
def moments(guide, name, num_samples=20000):
    """Monte Carlo mean and s.d. of a site's unconstrained draws (a flow guide has no closed-form
    loc/scale; for the gaussian arch they are also read off ``_loc_scale``)."""
    pyro.set_rng_seed(2)
    draws = guide_draws(guide, num_samples=num_samples, names=[name])[name]
    return draws.mean(0), draws.std(0)


@pytest.mark.parametrize("elbo_class", first_fast([Trace_ELBO, TraceMeanField_ELBO]))
@pytest.mark.parametrize("arch", ARCHS)
def test_auto_diagonal_gaussians(arch, elbo_class):
    """Pyro: test_auto_diagonal_gaussians, with the defaults.  Adapted: 50 of Pyro's 3001
    steps, at 1/50 of its learning rate (the Laplace start is exact; see test_exact), and MC
    moments of the guide, besides loc/scale (gaussian arch)."""
    def model():
        pyro.sample("x", dist.Normal(-0.2, 1.2))
        pyro.sample("y", dist.Normal(0.2, 0.7))

    guide = flow_guide(model, arch)
    steps = 50
    adam = ClippedAdam({"lr": 2e-4, "betas": (0.95, 0.999), "lrd": 0.1 ** (1 / steps)})
    elbo = elbo_class(num_particles=16, vectorize_particles=True)  # Pyro: 1 (see test_exact)
    svi = SVI(model, guide, adam, elbo)
    assert all(math.isfinite(svi.step()) for _ in range(steps))
    for name, loc, scale in [("x", -0.2, 1.2), ("y", 0.2, 0.7)]:
        mean, sd = moments(guide, name)
        assert mean.item() == pytest.approx(loc, abs=0.05)
        assert sd.item() == pytest.approx(scale, abs=0.08)
    if arch == "gaussian":
        loc, scale_tril = guide._loc_scale()
        assert torch.allclose(loc, torch.tensor([-0.2, 0.2]), atol=0.05)
        marginal_sd = (scale_tril @ scale_tril.T).diagonal().sqrt()
        assert torch.allclose(marginal_sd, torch.tensor([1.2, 0.7]), atol=0.08)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_transform(arch):
    """Pyro: test_auto_transform (a LogNormal site: loc 0.2, scale 0.7 unconstrained), with the
    defaults and 50 of Pyro's 3500 steps at a fifth of its lr (see test_exact).  Adapted: MC
    moments of log x."""
    def model():
        pyro.sample("x", dist.LogNormal(0.2, 0.7))

    guide = flow_guide(model, arch)
    svi = SVI(model, guide, Adam({"lr": 2e-4, "betas": (0.90, 0.999)}), Trace_ELBO())
    assert all(math.isfinite(svi.step()) for _ in range(50))
    pyro.set_rng_seed(2)
    log_x = guide_draws(guide, num_samples=20000, names=["x"])["x"].log()
    assert log_x.mean().item() == pytest.approx(0.2, abs=0.04)
    assert log_x.std().item() == pytest.approx(0.7, abs=0.04)


@pytest.mark.parametrize("elbo_class", first_fast([Trace_ELBO, TraceMeanField_ELBO]))
@pytest.mark.parametrize("arch", ARCHS)
def test_auto_dirichlet(arch, elbo_class):
    """Pyro: test_auto_dirichlet, with the defaults.  Adapted: Pyro maps the guide's loc through
    the stick-breaking bijection (prec 0.2); ours checks the MC mean of p against the exact
    Dirichlet(4.5, 3, 6.5, 3) posterior mean (0.03: the Laplace start is 0.025 off, 50 steps
    take the flows to 0.001-0.015).  Pyro trains 2000 steps at lr 0.003 with one particle; ours
    50 with 16 vectorised ones (the same likelihood in a sized plate, so it vectorises)."""
    prior = torch.tensor([0.5, 1.0, 1.5, 3.0])
    data = torch.tensor([0] * 4 + [1] * 2 + [2] * 5).long()
    posterior = torch.tensor([4.5, 3.0, 6.5, 3.0])

    def model(data):
        p = pyro.sample("p", dist.Dirichlet(prior))
        with pyro.plate("data_plate", len(data)):
            pyro.sample("data", dist.Categorical(p), obs=data)

    guide = flow_guide(model, arch)
    if elbo_class is TraceMeanField_ELBO:
        # Pyro 1.9's kl_divergence(Delta, q) = -q.log_prob(v) ignores the Delta's log_density,
        # so TraceMeanField_ELBO drops the stick-breaking Jacobian that every AutoContinuous
        # guide puts there: it optimises a different objective.  Check the gap is exactly that.
        guide(data)
        losses = []
        for elbo in (TraceMeanField_ELBO(), Trace_ELBO()):
            pyro.set_rng_seed(4)
            losses.append(elbo.loss(model, guide, data))
        pyro.set_rng_seed(4)
        log_density = poutine.trace(guide).get_trace(data).nodes["p"]["fn"].log_density
        assert losses[0] - losses[1] == pytest.approx(-log_density.item(), abs=1e-4)
        pytest.skip("Pyro bug: TraceMeanField_ELBO drops the Jacobian of constrained sites of "
                    "any AutoContinuous guide (kl_divergence(Delta, q) ignores log_density; "
                    "fixed in NumPyro, pyro-ppl/numpyro#1625); the gap is checked above")
    steps = 50
    svi = SVI(model, guide, ClippedAdam({"lr": 0.005, "lrd": 0.1 ** (1 / steps)}),
              loss=elbo_class(num_particles=16, vectorize_particles=True))
    assert all(math.isfinite(svi.step(data)) for _ in range(steps))
    pyro.set_rng_seed(2)
    p = guide_draws(guide, data, num_samples=20000, names=["p"])["p"]
    assert torch.allclose(p.mean(0), posterior / posterior.sum(), atol=0.03)


# =============================================================================================
# tests/infer/reparam/test_neutra.py
# =============================================================================================
def neals_funnel(dim):
    y = pyro.sample("y", dist.Normal(0, 3))
    with pyro.plate("D", dim):
        pyro.sample("x", dist.Normal(0, torch.exp(y / 2)))


def dirichlet_categorical(data):
    p_latent = pyro.sample("p", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("N", data.shape[0]):
        pyro.sample("obs", dist.Categorical(p_latent), obs=data)
    return p_latent


@pytest.mark.parametrize("jit", first_fast([False, True]), ids=["nojit", "jit"])
@pytest.mark.parametrize("arch", ARCHS)
def test_neals_funnel_smoke(arch, jit):
    """Pyro: test_neals_funnel_smoke (jit is xfail in Pyro, pyro-ppl/pyro#2292; it runs for
    ours).  Fewer NUTS draws, and the (lr 1e-10) training dropped: a smoke test."""
    guide = flow_guide(neals_funnel, arch, **MECHANICS)
    guide(10)
    randomize_parameters(guide, scale=0.05)
    neutra = NeuTraReparam(guide.requires_grad_(False))
    nuts = NUTS(neutra.reparam(neals_funnel), jit_compile=jit, ignore_jit_warnings=True,
                max_tree_depth=4)  # a smoke test: bound the cost of a draw
    mcmc = MCMC(nuts, num_samples=6, warmup_steps=6, disable_progbar=True)
    mcmc.run(10)
    latent = mcmc.get_samples()["y_shared_latent"]
    assert latent.shape == (6, 11) and latent.unique(dim=0).shape[0] > 1  # the chain moved
    samples = neutra.transform_sample(latent.unsqueeze(-2))
    assert samples["x"].shape == (6, 10) and samples["y"].shape == (6, 1)
    expected = guide.get_transform()(latent)  # x and y are the guide's transform of the draw
    assert torch.allclose(torch.cat([samples["y"], samples["x"]], -1), expected)


@pytest.mark.parametrize("model, kwargs", [
    (neals_funnel, {"dim": 10}), (dirichlet_categorical, {"data": torch.ones(10)})],
    ids=["funnel", "dirichlet"])
@pytest.mark.parametrize("arch", ARCHS)
def test_reparam_log_joint(arch, model, kwargs):
    """Pyro: test_reparam_log_joint: the NeuTra model's potential energy is the original's at
    the transformed point minus the log-Jacobian of the guide's transform."""
    guide = flow_guide(model, arch, **MECHANICS)
    guide(**kwargs)
    randomize_parameters(guide, scale=0.2)  # a non-trivial transform
    neutra = NeuTraReparam(guide)
    reparam_model = neutra.reparam(model)
    _, potential_fn, transforms, _ = initialize_model(model, model_kwargs=kwargs)
    init_params, potential_fn_neutra, _, _ = initialize_model(reparam_model, model_kwargs=kwargs)
    latent_x = list(init_params.values())[0]
    transformed = neutra.transform_sample(latent_x)
    pe_transformed = potential_fn_neutra(init_params)
    transform = torch.distributions.ComposeTransform(guide.get_posterior(**kwargs).transforms)
    latent_y = transform(latent_x)
    log_det = transform.log_abs_det_jacobian(latent_x, latent_y)
    pe = potential_fn({k: transforms[k](v) for k, v in transformed.items()})
    assert torch.allclose(pe_transformed, pe - log_det, atol=1e-4)
