"""Tests of the posteriordb ports (pyro_flowvi.lab.posteriordb): loading, flattening, densities.

The densities are checked against independent numpy/scipy transcriptions of the Stan code
(plain loops, Stan's ``_lpdf`` functions), up to a constant that must be the same at every point.
Tests that need the posteriordb folder skip when it cannot be found.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from pyro_flowvi.lab.posteriordb import (
    Posterior,
    Reference,
    available_posteriors,
    load_posterior,
    resolve_data_dir,
)
from pyro_flowvi.lab.posteriordb import data as data_module
from pyro_flowvi.lab.posteriordb.data import ENV_VAR, read_json
from pyro_flowvi.lab.posteriordb.funnel import FunnelExact, log_marginal_tau, simulate_funnel_data
from pyro_flowvi.lab.posteriordb.glm import simulate_glm_data
from pyro_flowvi.lab.posteriordb.own import reference_path
from pyro_flowvi.lab.posteriordb.posterior import unconstrained_dim
from pyro_flowvi.lab.posteriordb.registry import OWN_POSTERIORS, PORTS
from pyro_flowvi.lab.posteriordb.timeseries import _recursion_torch, linear_recursion

try:
    DATA_DIR = resolve_data_dir()
except FileNotFoundError:
    DATA_DIR = None
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="posteriordb folder not found")

POSTERIORDB = sorted(n for n, p in PORTS.items() if not p.extra)
ALL = [pytest.param(n, marks=needs_data) for n in POSTERIORDB] + list(OWN_POSTERIORS)


@functools.cache
def _load(name: str) -> Posterior:
    return load_posterior(name)


def _values(post: Posterior, rows: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in post.unflatten(rows).items()}


def _single(post: Posterior, row: np.ndarray) -> dict[str, torch.Tensor]:
    """Unbatched values ``{site: site shape}`` from one flattened row."""
    return {k: v[0] for k, v in _values(post, row[None]).items()}


def _plain_log_joint(post: Posterior, single: dict[str, torch.Tensor]) -> float:
    """Unbatched log joint (constrained scale): one plain trace of the conditioned model."""
    tr = poutine.trace(poutine.condition(post.model, data=single)).get_trace(*post.args, **post.kwargs)
    return float(tr.log_prob_sum())


# ---------------------------------------------------------------- loading, names, flattening


@needs_data
def test_available_lists_twelve_plus_own() -> None:
    names = available_posteriors()
    assert names == sorted(POSTERIORDB + list(OWN_POSTERIORS)) and len(names) == 14
    assert "mcycle_gp-accel_gp" not in names
    assert "mcycle_gp-accel_gp" in available_posteriors(include_extra=True)


@pytest.mark.parametrize("name", ALL)
def test_loads_with_matching_dimension(name: str) -> None:
    post = _load(name)
    assert post.name == name and post.description and post.why_hard
    if name in POSTERIORDB:
        assert post.dim == read_json(DATA_DIR / name / "reference.json")["dimension"]
    ref = post.reference
    assert ref.draws is not None and ref.draws.shape == (1000, len(ref.names))
    for q in (ref.q05, ref.q50, ref.q95):
        assert q is not None and q.shape == ref.mean.shape
    single = {k: v[0] for k, v in _values(post, ref.draws[:1]).items()}
    assert unconstrained_dim(post, single) == post.dim
    assert post.args[0].dtype == torch.float64
    assert load_posterior(name, dtype=torch.float32).args[0].dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
def test_flatten_round_trips_reference_columns(name: str) -> None:
    post = _load(name)
    draws = post.reference.draws
    # build {site: (S,) + shape} independently of Posterior, from the Stan names
    columns: dict[str, list[tuple[int, int]]] = {}
    for k, n in enumerate(post.reference.names):
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", n)
        columns.setdefault(m.group(1), []).append((int(m.group(2) or 0), k))
    samples = {}
    for site, cols in columns.items():
        if cols[0][0] == 0:
            samples[site] = torch.as_tensor(draws[:, cols[0][1]])
        else:
            samples[site] = torch.as_tensor(draws[:, [k for _, k in sorted(cols)]])
    np.testing.assert_array_equal(post.flatten(samples), draws)
    # numpy input and a (S, 1, K) vectorised-Predictive layout give the same
    padded = {k: v.numpy().reshape((v.shape[0], 1) + v.shape[1:]) for k, v in samples.items()}
    np.testing.assert_array_equal(post.flatten(padded), draws)
    np.testing.assert_array_equal(post.flatten(post.unflatten(draws)), draws)
    assert post.flatten(samples).dtype == np.float64


@pytest.mark.parametrize("name", ALL)
def test_log_joint_finite_at_reference_draws(name: str) -> None:
    post = _load(name)
    vals = _values(post, post.reference.draws[::50])  # 20 draws
    lp = post.log_joint(vals, jacobian=True)
    assert lp.shape == (20,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", ALL)
def test_vectorised_equals_looped(name: str) -> None:
    post = _load(name)
    vals = _values(post, post.reference.draws[[3, 500, 997]])
    looped = torch.tensor([_plain_log_joint(post, {k: v[i] for k, v in vals.items()}) for i in range(3)],
                          dtype=torch.float64)
    for mpn in {post.max_plate_nesting, 1, 2}:
        batched = post.log_joint(vals, max_plate_nesting=mpn)
        torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-9)
    # what Trace_ELBO(vectorize_particles=True) and importance samplers do: an outer plate
    with_jac = post.log_joint(vals, jacobian=True)
    assert torch.isfinite(with_jac).all() and with_jac.shape == (3,)
    assert post.max_plate_nesting <= 1


def test_log_joint_gradients_flow() -> None:
    post = _load("funnel-centered_hierarchical")
    vals = {k: v.requires_grad_() for k, v in _values(post, post.reference.draws[:8]).items()}
    post.log_joint(vals, jacobian=True).sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in vals.values())


# ---------------------------------------------------------------- independent recomputations


def _differences(a: list[float], b: list[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    return a - a[0], b - b[0]


@needs_data
def test_arma11_matches_numpy_transcription() -> None:
    post = _load("arma-arma11")
    y = np.asarray(read_json(DATA_DIR / "arma-arma11" / "data.json")["y"])
    rows = post.reference.draws[[0, 111, 222, 333, 444, 999]]
    ours, stan = [], []
    for row in rows:
        mu, phi, theta, sigma = row  # Stan order: mu, phi, theta, sigma
        nu, err = np.empty(len(y)), np.empty(len(y))
        nu[0] = mu + phi * mu
        err[0] = y[0] - nu[0]
        for t in range(1, len(y)):
            nu[t] = mu + phi * y[t - 1] + theta * err[t - 1]
            err[t] = y[t] - nu[t]
        lp = (stats.norm.logpdf(mu, 0, 10) + stats.norm.logpdf(phi, 0, 2)
              + stats.norm.logpdf(theta, 0, 2) + stats.cauchy.logpdf(sigma, 0, 2.5)
              + stats.norm.logpdf(err, 0, sigma).sum())
        stan.append(lp)
        ours.append(_plain_log_joint(post, _single(post, row)))
    d_ours, d_stan = _differences(ours, stan)
    np.testing.assert_allclose(d_ours, d_stan, atol=1e-8)
    assert np.ptp(d_stan) > 1.0  # the points differ, so the check has teeth
    # and the constant is exactly the half-Cauchy's normalisation, log 2
    np.testing.assert_allclose(np.asarray(ours) - np.asarray(stan), math.log(2), atol=1e-8)


def test_linear_recursion_numpy_path_is_exact_and_differentiable() -> None:
    c = torch.randn(3, 2, 40, dtype=torch.float64, requires_grad=True)
    theta = (0.7 * torch.randn(3, 1, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(linear_recursion, (c, theta))
    assert torch.autograd.gradgradcheck(linear_recursion, (c, theta))
    cc, tt = c.detach(), theta.detach().expand(3, 2)
    assert torch.equal(linear_recursion(cc, tt), _recursion_torch(cc, tt))  # same arithmetic
    e = linear_recursion(torch.randn(4, 200, dtype=torch.float64),
                         torch.tensor([60.0, -1e300, 1.0, 0.0], dtype=torch.float64))
    assert not torch.isnan(e).any() and torch.isinf(e[:2, -1]).all()


def _stan_forward(log_theta: np.ndarray, emission: np.ndarray) -> float:
    """Stan's forward algorithm, loops as written (gamma[1, k] = emission only)."""
    n, k_states = emission.shape
    gamma = np.empty((n, k_states))
    gamma[0] = emission[0]
    for t in range(1, n):
        for k in range(k_states):
            acc = [gamma[t - 1, j] + log_theta[j, k] + emission[t, k] for j in range(k_states)]
            gamma[t, k] = np.logaddexp.reduce(acc)
    return float(np.logaddexp.reduce(gamma[-1]))


def _hmm_stan_log_density(name: str, row: np.ndarray, data: dict) -> float:
    theta = np.array([row[0:2], row[2:4]])
    log_theta = np.log(theta)
    if name == "hmm_example-hmm_example":
        mu = row[4:6]
        y = np.asarray(data["y"])
        lp = stats.norm.logpdf(mu[0], 3, 1) + stats.norm.logpdf(mu[1], 10, 1)
        emission = stats.norm.logpdf(y[:, None], mu[None, :], 1)
        return lp + _stan_forward(log_theta, emission)
    phi, lam = row[4:6], row[6:8]
    u, v, alpha = np.asarray(data["u"]), np.asarray(data["v"]), np.asarray(data["alpha"], float)
    lp = sum(stats.dirichlet.logpdf(theta[k], alpha[k]) for k in range(2))
    lp += stats.norm.logpdf(phi[0], 0, 1) + stats.norm.logpdf(phi[1], 3, 1)
    lp += stats.norm.logpdf(lam[0], 0, 1) + stats.norm.logpdf(lam[1], 3, 1)
    if name == "bball_drive_event_0-hmm_drive_0":  # exponential_lpdf(x | rate)
        emission = (np.log(phi) - phi * u[:, None]) + (np.log(lam) - lam * v[:, None])
    else:
        emission = (stats.norm.logpdf(u[:, None], phi, data["tau"])
                    + stats.norm.logpdf(v[:, None], lam, data["rho"]))
    return lp + _stan_forward(log_theta, emission)


@needs_data
@pytest.mark.parametrize("name", ["hmm_example-hmm_example", "bball_drive_event_0-hmm_drive_0",
                                  "bball_drive_event_1-hmm_drive_1"])
def test_hmm_matches_numpy_forward_loop(name: str) -> None:
    post = _load(name)
    data = read_json(DATA_DIR / name / "data.json")
    rows = post.reference.draws[[0, 250, 500, 750, 999]]
    stan = [_hmm_stan_log_density(name, row, data) for row in rows]
    ours = [_plain_log_joint(post, _single(post, row)) for row in rows]
    # Dirichlet(1, 1) (uniform simplex) and Stan's lpdfs carry every constant: equal, not up to one
    np.testing.assert_allclose(ours, stan, rtol=0, atol=1e-8)
    # away from the posterior too (rows far in the tails)
    row = rows[0].copy()
    row[:2] = [0.5, 0.5]
    assert math.isclose(_plain_log_joint(post, _single(post, row)),
                        _hmm_stan_log_density(name, row, data), abs_tol=1e-8)


@needs_data
@pytest.mark.parametrize("name", [n for n in POSTERIORDB if "blr" in n or "earn" in n
                                  or "kid" in n or "mesquite" in n])
def test_regressions_match_numpy_transcription(name: str) -> None:
    post = _load(name)
    d = {k: np.asarray(v, dtype=float) if isinstance(v, list) else v
         for k, v in read_json(DATA_DIR / name / "data.json").items()}
    model = name.split("-", 1)[1]
    rows = post.reference.draws[[0, 300, 600, 900]]
    stan = []
    for row in rows:
        b, sigma = row[:-1], row[-1]
        if model == "blr":
            lp = stats.norm.logpdf(b, 0, 10).sum() + stats.norm.logpdf(sigma, 0, 10)
            lp += stats.norm.logpdf(d["y"], d["X"] @ b, sigma).sum()
        elif model == "earn_height":
            lp = stats.norm.logpdf(d["earn"], b[0] + b[1] * d["height"], sigma).sum()
        elif model.startswith("logearn_interaction"):
            h = d["height"]
            if model.endswith("_z"):
                h = (h - h.mean()) / np.std(h, ddof=1)
            mean = b[0] + b[1] * h + b[2] * d["male"] + b[3] * h * d["male"]
            lp = stats.norm.logpdf(np.log(d["earn"]), mean, sigma).sum()
        elif model == "kidscore_interaction":
            mean = b[0] + b[1] * d["mom_hs"] + b[2] * d["mom_iq"] + b[3] * d["mom_hs"] * d["mom_iq"]
            lp = stats.cauchy.logpdf(sigma, 0, 2.5)
            lp += stats.norm.logpdf(d["kid_score"], mean, sigma).sum()
        elif model == "mesquite":
            mean = (b[0] + b[1] * d["diam1"] + b[2] * d["diam2"] + b[3] * d["canopy_height"]
                    + b[4] * d["total_height"] + b[5] * d["density"] + b[6] * d["group"])
            lp = stats.norm.logpdf(d["weight"], mean, sigma).sum()
        else:
            mean = (b[0] + b[1] * np.log(d["diam1"] * d["diam2"] * d["canopy_height"])
                    + b[2] * np.log(d["diam1"] * d["diam2"]) + b[3] * np.log(d["diam1"] / d["diam2"])
                    + b[4] * np.log(d["total_height"]) + b[5] * np.log(d["density"]) + b[6] * d["group"])
            lp = stats.norm.logpdf(np.log(d["weight"]), mean, sigma).sum()
        stan.append(lp)
    ours = [_plain_log_joint(post, _single(post, row)) for row in rows]
    d_ours, d_stan = _differences(ours, stan)
    np.testing.assert_allclose(d_ours, d_stan, atol=1e-7 * max(1.0, np.abs(stan).max() * 1e-3))


@needs_data
@pytest.mark.parametrize("name", ["earnings-earn_height", "earnings-logearn_interaction",
                                  "earnings-logearn_interaction_z", "kidiq-kidscore_interaction",
                                  "mesquite-mesquite", "mesquite-logmesquite_logvas"])
def test_flat_prior_regressions_exact_posterior_moments(name: str) -> None:
    """Flat prior on beta: beta | sigma, y ~ N(OLS, sigma^2 (X'X)^-1), so E[beta | y] = OLS of the
    port's design matrix whatever sigma's prior; with a flat prior on sigma too,
    sigma^2 | y ~ InvGamma((N - D - 1) / 2, RSS / 2).  Exact, against the reference (MC error
    ~0.01-0.02 sd): checks the transformed data (logs, interactions, ddof=1) end to end."""
    post = _load(name)
    X, y = (a.numpy() for a in post.args)
    n, d = X.shape
    ols, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    ref = post.reference
    assert np.all(np.abs(ref.mean[:d] - ols) / ref.sd[:d] < 0.06)
    if name != "kidiq-kidscore_interaction":
        a = (n - d - 1) / 2
        sigma_mean = math.sqrt(rss[0] / 2) * math.exp(math.lgamma(a - 0.5) - math.lgamma(a))
        assert abs(ref.mean[d] - sigma_mean) / ref.sd[d] < 0.06


# ---------------------------------------------------------------- our own posteriors


def test_funnel_summary_agrees_with_exact_draws() -> None:
    """Quadrature summary (stored JSON) against 200k exact draws: a second, independent route."""
    post = _load("funnel-centered_hierarchical")
    ref = post.reference
    data = read_json(reference_path(post.name))["data"]
    ex = FunnelExact(np.asarray(data["y"]), np.asarray(data["sigma"]))
    mean, sd = ex.moments()
    np.testing.assert_allclose(ref.mean, mean, rtol=1e-10)  # the JSON is reproducible
    np.testing.assert_allclose(ref.sd, sd, rtol=1e-10)
    draws = ex.sample(np.random.default_rng(123), 200_000)
    se = 1 / math.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - ref.mean) / ref.sd < 4.5 * se)
    assert np.all(np.abs(draws.std(0) / ref.sd - 1) < 0.012)  # tau's heavy tail: se ~0.004
    q = np.quantile(draws, [0.05, 0.5, 0.95], axis=0)
    for got, want in zip(q, (ref.q05, ref.q50, ref.q95), strict=True):
        assert np.all(np.abs(got - want) / ref.sd < 0.02)
    # the 1000 stored joint draws are consistent too (loose: 1000 draws)
    assert np.all(np.abs(ref.draws.mean(0) - ref.mean) / ref.sd < 4.5 / math.sqrt(1000))
    assert ref.q05[1] < 0.5 and ref.mean[1] > 2  # tau reaches near 0 with a long right tail: a funnel


def test_funnel_marginal_matches_brute_force_quadrature() -> None:
    """The closed form of log p(tau, y) against Gauss-Hermite integration of the joint over
    mu and theta (written from the model, not from the Gaussian algebra)."""
    data = simulate_funnel_data()
    y, sigma = np.asarray(data["y"]), np.asarray(data["sigma"])
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    mu = 5.0 * z  # mu ~ N(0, 5): E over the prior
    taus = np.array([0.05, 1.0, 4.0, 15.0])
    brute = []
    for tau in taus:
        # p(y_j | mu, tau) = E_{theta ~ N(mu, tau)} N(y_j | theta, sigma_j)
        theta = mu[:, None, None] + tau * z[None, None, :]  # (mu, j, node)
        lik_j = (stats.norm.pdf(y[None, :, None], theta, sigma[None, :, None]) * w).sum(-1)
        brute.append(math.log((w * np.prod(lik_j, axis=1)).sum()) + stats.halfcauchy.logpdf(tau, 0, 5))
    np.testing.assert_allclose(log_marginal_tau(taus, y, sigma), brute, rtol=0, atol=1e-6)


def test_own_data_and_glm_reference_record() -> None:
    funnel = read_json(reference_path("funnel-centered_hierarchical"))["data"]
    glm_doc = read_json(reference_path("glm-hierarchical_poisson"))
    # the stored data are what the seeded simulators give (informative if numpy's streams change)
    sim = simulate_funnel_data()
    np.testing.assert_allclose(funnel["y"], sim["y"])
    np.testing.assert_allclose(funnel["sigma"], sim["sigma"])
    sim = simulate_glm_data()
    assert glm_doc["data"]["y"] == sim["y"] and glm_doc["data"]["group"] == sim["group"]
    method = glm_doc["reference_method"]
    assert method["max_r_hat"] < 1.01 and method["divergent_transitions_total"] == 0
    assert method["min_ess_bulk"] > 1000 and all(method["checks_made"].values())
    assert 12 <= glm_doc["dimension"] <= 20


# ---------------------------------------------------------------- errors, extra


def test_missing_data_dir_error_says_where_and_how(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="--data-dir") as err:
        resolve_data_dir(missing)
    assert str(missing) in str(err.value) and ENV_VAR in str(err.value)
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        resolve_data_dir()
    monkeypatch.delenv(ENV_VAR)
    candidates = [tmp_path / "a" / "posteriordb", tmp_path / "b" / "posteriordb"]
    monkeypatch.setattr(data_module, "default_candidates", lambda: candidates)
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_dir()
    assert all(str(c) in str(err.value) for c in candidates)
    with pytest.raises(FileNotFoundError):
        load_posterior("sblri-blr")
    assert available_posteriors() == sorted(OWN_POSTERIORS)  # own ones need no data dir
    assert load_posterior("funnel-centered_hierarchical").dim == 14
    candidates[1].mkdir(parents=True)
    assert resolve_data_dir() == candidates[1].resolve()


def test_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match="Did you mean 'sblri-blr'") as err:
        load_posterior("sblri-blrr")
    assert "kidiq-kidscore_interaction" in str(err.value)
    with pytest.raises(ValueError, match="Known:"):
        load_posterior("zzzzzz")


def test_reference_from_json_moments_only() -> None:
    ref = Reference.from_json({"summary": [{"name": "a", "mean": 1.0, "sd": 2.0}], "draws": None})
    assert ref.q05 is None and ref.draws is None and ref.mean.tolist() == [1.0]


@needs_data
def test_mcycle_gp_extra_loads_and_is_finite() -> None:
    post = load_posterior("mcycle_gp-accel_gp")
    assert post.dim == 66 and post.reference.draws is None and post.reference.q05 is None
    vals = _values(post, post.reference.mean[None])
    single = {k: v[0] for k, v in vals.items()}
    assert unconstrained_dim(post, single) == 66
    lp = post.log_joint(vals, jacobian=True)
    assert torch.isfinite(lp).all()
    two = {k: torch.cat([v, v]) for k, v in vals.items()}
    torch.testing.assert_close(post.log_joint(two), torch.full((2,), _plain_log_joint(post, single),
                                                                  dtype=torch.float64))


def test_model_runs_under_pyro_sampling() -> None:
    """Models with proper priors run unconditioned (e.g. for Predictive / init_to_sample)."""
    post = _load("glm-hierarchical_poisson")
    with pyro.plate("particles", 4, dim=-2):
        tr = poutine.trace(post).get_trace()
    assert tr.nodes["alpha"]["value"].shape == (4, 1, 12)
    assert tr.nodes["y"]["fn"].batch_shape == (4, post.args[0].shape[0])
