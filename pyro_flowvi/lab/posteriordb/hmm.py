"""The three HMM ports (``hmm_example``, ``hmm_drive_0``, ``hmm_drive_1``) and their forward algorithm.

All three are 2-state HMMs with transition rows ``theta1``, ``theta2`` (simplexes; Stan's
``theta[j, k]`` is the probability of moving from state ``j`` to ``k``) and ordered emission
parameters, the hidden states summed out by the forward algorithm exactly as the Stan code does.
Stan's first step has **no initial distribution**: ``gamma[1, k]`` is the emission log-density
alone, i.e. the initial weights are all 1 (not 1/K).  :func:`hmm_log_likelihood` keeps that
convention, so it equals Stan's ``log_sum_exp(gamma[N])`` including constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

__all__ = [
    "hmm_drive_0",
    "hmm_drive_1",
    "hmm_drive_data",
    "hmm_example",
    "hmm_example_data",
    "hmm_log_likelihood",
]


def _log_matmul_exp(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) @ exp(b))`` over the last two dims (broadcast batch), exact in log space.

    The sum over the inner index is a chain of ``torch.logaddexp`` (K - 1 of them; faster than
    ``logsumexp`` for the small K of these HMMs, and no max-shift/underflow approximation).
    """
    terms = a.unsqueeze(-1) + b.unsqueeze(-3)  # [..., i, j, k]
    out = terms[..., 0, :]
    for j in range(1, terms.shape[-2]):
        out = torch.logaddexp(out, terms[..., j, :])
    return out


def _log_matrix_product(logits: Tensor) -> Tensor:
    """``log(prod_t exp(logits[..., t, :, :]))`` by a parallel (pairwise) scan over ``t``."""
    while logits.shape[-3] > 1:
        time = logits.shape[-3]
        even = time // 2 * 2
        pairs = logits[..., :even, :, :].reshape(logits.shape[:-3] + (even // 2, 2) + logits.shape[-2:])
        reduced = _log_matmul_exp(pairs[..., 0, :, :], pairs[..., 1, :, :])
        logits = torch.cat([reduced, logits[..., even:, :, :]], -3) if time > even else reduced
    return logits.squeeze(-3)


def hmm_log_likelihood(log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """Stan's forward algorithm, vectorised: ``log sum_z prod_t ...`` with unit initial weights.

    .. math::

        \\gamma_{1k} = \\log p(y_1 \\mid k), \\quad
        \\gamma_{tk} = \\log\\sum_j \\exp(\\gamma_{t-1,j} + \\log\\theta_{jk}) + \\log p(y_t \\mid k),
        \\quad \\log L = \\log\\sum_k \\exp \\gamma_{Nk}

    computed as ``gamma_1`` times the (log-space) product of the ``N - 1`` matrices
    ``log theta[j, k] + log p(y_t | k)``, reduced pairwise in ``log2(N)`` rounds (no Python loop
    over time or states).

    Args:
        log_trans: ``batch + (K, K)`` log transition matrix, rows = from-state.
        log_emit: ``batch + (N, K)`` emission log-densities.

    Returns:
        ``batch`` log-likelihood (batch shapes broadcast).

    Example:
        >>> log_trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).log()
        >>> log_emit = torch.tensor([[0.5, 0.1], [0.2, 0.7], [0.3, 0.3]]).log()
        >>> g = log_emit[0]  # plain loop, for comparison
        >>> for t in (1, 2):
        ...     g = (g.unsqueeze(-1) + log_trans).logsumexp(-2) + log_emit[t]
        >>> torch.allclose(hmm_log_likelihood(log_trans, log_emit), g.logsumexp(-1))
        True
    """
    gamma1 = log_emit[..., 0, :]
    if log_emit.shape[-2] == 1:
        return gamma1.logsumexp(-1)
    logits = log_trans.unsqueeze(-3) + log_emit[..., 1:, :].unsqueeze(-2)  # [t, j, k]
    product = _log_matrix_product(logits)
    return (gamma1.unsqueeze(-1) + product).logsumexp((-2, -1))


def _transition_rows(alpha: Tensor | None, one: Tensor) -> Tensor:
    """Sample ``theta1``, ``theta2`` (rows of the transition matrix); return ``log theta``."""
    rows = []
    for k in range(2):
        prior = dist.Dirichlet(one.expand(2) if alpha is None else alpha[k])
        rows.append(pyro.sample(f"theta{k + 1}", prior))
    return torch.stack(torch.broadcast_tensors(*rows), -2).log()


def _normal_priors(name: str, x: Tensor, locs: tuple[float, float]) -> None:
    """``target += normal_lpdf(x[1] | locs[0], 1) + normal_lpdf(x[2] | locs[1], 1)``."""
    loc = x.new_tensor(locs)
    pyro.factor(f"{name}_prior", dist.Normal(loc, x.new_ones(())).log_prob(x).sum(-1))


def hmm_example(y: Tensor) -> None:
    """``hmm_example``: flat simplex rows, ``positive_ordered mu``, unit-sd Gaussian emissions.

    The rows have no prior statement in Stan, i.e. uniform on the simplex; ``Dirichlet(1, 1)`` is
    that uniform density exactly (``log`` density 0 for K = 2, like an improper flat prior, but
    it can be sampled, so any Pyro init strategy works).  ``mu`` gets
    ``normal_lpdf(mu[1] | 3, 1) + normal_lpdf(mu[2] | 10, 1)`` as a factor.
    """
    one = y.new_ones(())
    log_trans = _transition_rows(None, one)
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    _normal_priors("mu", mu, (3.0, 10.0))
    log_emit = dist.Normal(mu.unsqueeze(-2), one).log_prob(y.unsqueeze(-1))
    pyro.factor("loglik", hmm_log_likelihood(log_trans, log_emit))


def hmm_drive_0(u: Tensor, v: Tensor, alpha: Tensor) -> None:
    """``bball_drive_event_0-hmm_drive_0``: Dirichlet rows, exponential emissions of rates
    ``phi`` (for 1/speed ``u``) and ``lambda`` (for hoop distance ``v``), both ``positive_ordered``
    with ``N(0, 1)`` / ``N(3, 1)`` factors on their components.
    """
    log_trans = _transition_rows(alpha, u.new_ones(()))
    phi = pyro.sample("phi", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    lam = pyro.sample("lambda", dist.ImproperUniform(constraints.positive_ordered_vector, (), (2,)))
    _normal_priors("phi", phi, (0.0, 3.0))
    _normal_priors("lambda", lam, (0.0, 3.0))
    log_emit = (dist.Exponential(phi.unsqueeze(-2)).log_prob(u.unsqueeze(-1))
                + dist.Exponential(lam.unsqueeze(-2)).log_prob(v.unsqueeze(-1)))
    pyro.factor("loglik", hmm_log_likelihood(log_trans, log_emit))


def hmm_drive_1(u: Tensor, v: Tensor, alpha: Tensor, tau: Tensor, rho: Tensor) -> None:
    """``bball_drive_event_1-hmm_drive_1``: Dirichlet rows, Gaussian emissions of known sds
    ``tau``, ``rho`` and ``ordered`` means ``phi``, ``lambda`` (``N(0, 1)`` / ``N(3, 1)`` factors).
    """
    log_trans = _transition_rows(alpha, u.new_ones(()))
    phi = pyro.sample("phi", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    lam = pyro.sample("lambda", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    _normal_priors("phi", phi, (0.0, 3.0))
    _normal_priors("lambda", lam, (0.0, 3.0))
    log_emit = (dist.Normal(phi.unsqueeze(-2), tau).log_prob(u.unsqueeze(-1))
                + dist.Normal(lam.unsqueeze(-2), rho).log_prob(v.unsqueeze(-1)))
    pyro.factor("loglik", hmm_log_likelihood(log_trans, log_emit))


def _t(x: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def hmm_example_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor]:
    """``(y,)``; checks ``K == 2`` (the Stan code hard-codes two transition rows)."""
    assert data["K"] == 2, "hmm_example is written for K = 2"
    return (_t(data["y"], dtype),)


def hmm_drive_data(data: dict[str, Any], model: str, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``(u, v, alpha)`` for ``hmm_drive_0``; ``(u, v, alpha, tau, rho)`` for ``hmm_drive_1``."""
    assert data["K"] == 2, f"{model} is written for K = 2"
    args = (_t(data["u"], dtype), _t(data["v"], dtype), _t(data["alpha"], dtype))
    if model == "hmm_drive_1":
        args += (_t(data["tau"], dtype), _t(data["rho"], dtype))
    return args
