"""``funnel-centered_hierarchical``: a centred hierarchical normal model and its EXACT posterior.

Model (J groups, known ``sigma_j``), written like Stan's eight schools:

.. math::

    \\mu \\sim N(0, 5^2), \\quad \\tau \\sim \\mathrm{Cauchy}^+(0, 5), \\quad
    \\theta_j \\sim N(\\mu, \\tau^2), \\quad y_j \\sim N(\\theta_j, \\sigma_j^2).

Integrating ``theta`` and ``mu`` out is Gaussian algebra (``w_j = 1 / (sigma_j^2 + tau^2)``,
``P = 1/25 + sum_j w_j``, ``m = sum_j w_j y_j / P``):

.. math::

    \\log p(y \\mid \\tau) = -\\tfrac12 \\sum_j \\log(2\\pi / w_j) - \\tfrac12 \\log(25 P)
        - \\tfrac12 \\Big(\\sum_j w_j y_j^2 - P m^2\\Big),

    \\mu \\mid \\tau, y \\sim N(m, 1/P), \\qquad
    \\theta_j \\mid \\mu, \\tau, y \\sim N\\big(\\mu + b_j (y_j - \\mu),\\ \\sigma_j^2 b_j\\big),
    \\quad b_j = \\tau^2 / (\\sigma_j^2 + \\tau^2).

So ``p(tau | y)`` is 1-d: it is tabulated on a fine grid in ``log tau`` (``1e-10`` to ``1e4``; the
density in ``log tau`` vanishes like ``tau`` at 0 and like ``tau^-(J+1)`` at infinity), exact
draws come from its CDF (linear interpolation) followed by ``mu`` and ``theta``, and the
moments and quantiles by quadrature over the same grid.  The ``sigma_j`` (8 to 18) are large
next to the spread of ``y``, so ``tau``'s posterior has its mode at 0: a real funnel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy.optimize import brentq
from scipy.special import ndtr
from torch import Tensor

__all__ = [
    "NAME",
    "FunnelExact",
    "MU_SCALE",
    "TAU_SCALE",
    "funnel_centered",
    "log_marginal_tau",
    "simulate_funnel_data",
]

NAME = "funnel-centered_hierarchical"
MU_SCALE = 5.0
TAU_SCALE = 5.0


def funnel_centered(y: Tensor, sigma: Tensor) -> None:
    """The centred model (one vector site ``theta``; ``y`` is one site with event shape ``(J,)``).

    Example:
        >>> y, s = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        >>> tr = pyro.poutine.trace(funnel_centered).get_trace(y, s)
        >>> [tr.nodes[k]["value"].shape for k in ("mu", "tau", "theta")]
        [torch.Size([]), torch.Size([]), torch.Size([3])]
    """
    one = y.new_ones(())
    mu = pyro.sample("mu", dist.Normal(0 * one, MU_SCALE * one))
    tau = pyro.sample("tau", dist.HalfCauchy(TAU_SCALE * one))
    batch = torch.broadcast_shapes(mu.shape, tau.shape)
    prior = dist.Normal(mu.unsqueeze(-1), tau.unsqueeze(-1)).expand(batch + y.shape)
    theta = pyro.sample("theta", prior.to_event(1))
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def simulate_funnel_data(seed: int = 20251, num_groups: int = 12) -> dict[str, Any]:
    """The simulated data set (``mu = 4``, ``tau = 3``; ``sigma_j`` uniform on [8, 18]).

    Written once into the reference JSON; the model reads it from there, so the posterior does
    not depend on numpy's random streams staying the same across versions.
    """
    rng = np.random.default_rng(seed)
    sigma = np.round(rng.uniform(8.0, 18.0, num_groups), 1)
    theta = 4.0 + 3.0 * rng.standard_normal(num_groups)
    y = np.round(theta + sigma * rng.standard_normal(num_groups), 2)
    return {"J": num_groups, "y": y.tolist(), "sigma": sigma.tolist(), "seed": seed,
            "simulation": "sigma_j ~ U(8, 18) (1 decimal), theta_j ~ N(4, 3^2), "
                          "y_j ~ N(theta_j, sigma_j^2) (2 decimals), numpy default_rng(seed)"}


def log_marginal_tau(tau: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``log p(tau) + log p(y | tau)`` (``mu`` and ``theta`` integrated out), vectorised over ``tau``."""
    tau = np.asarray(tau, dtype=np.float64)[..., None]
    w = 1.0 / (sigma**2 + tau**2)
    prec = 1.0 / MU_SCALE**2 + w.sum(-1)
    m = (w * y).sum(-1) / prec
    loglik = (0.5 * np.log(w / (2 * np.pi)).sum(-1) - 0.5 * np.log(MU_SCALE**2 * prec)
              - 0.5 * ((w * y**2).sum(-1) - prec * m**2))
    t = tau[..., 0] / TAU_SCALE
    return loglik + math.log(2 / (math.pi * TAU_SCALE)) - np.log1p(t**2)


@dataclass
class FunnelExact:
    """Exact posterior of :func:`funnel_centered` given ``y`` and ``sigma`` (numpy, float64).

    Coordinates are ``["mu", "tau", "theta[1]", ..., "theta[J]"]``.

    Example:
        >>> ex = FunnelExact(np.array([1.0, -2.0, 3.0]), np.array([10.0, 12.0, 9.0]))
        >>> d = ex.sample(np.random.default_rng(0), 20000)
        >>> bool(np.abs(d.mean(0) - ex.moments()[0]).max() < 0.2)
        True
    """

    y: np.ndarray
    sigma: np.ndarray
    log_tau_min: float = math.log(1e-10)
    log_tau_max: float = math.log(1e4)
    grid_size: int = 200_001

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        self.u = np.linspace(self.log_tau_min, self.log_tau_max, self.grid_size)
        self.tau = np.exp(self.u)
        logf = log_marginal_tau(self.tau, self.y, self.sigma) + self.u  # density of log tau
        f = np.exp(logf - logf.max())
        h = self.u[1] - self.u[0]
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * h * (f[1:] + f[:-1]))])
        self.cdf = cdf / cdf[-1]
        wts = f * h
        wts[[0, -1]] *= 0.5  # trapezoid weights
        self.weights = wts / wts.sum()
        self.edge_mass = (self.cdf[1], 1 - self.cdf[-2])  # mass of the first / last cell
        w = 1.0 / (self.sigma**2 + self.tau[:, None] ** 2)
        self.prec = 1.0 / MU_SCALE**2 + w.sum(1)
        self.m = (w * self.y).sum(1) / self.prec
        self.b = self.tau[:, None] ** 2 * w  # (G, J)

    @property
    def names(self) -> list[str]:
        return ["mu", "tau"] + [f"theta[{j + 1}]" for j in range(len(self.y))]

    def conditional_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of every coordinate given ``tau`` on the grid: two ``(G, K)`` arrays."""
        mean_theta = (1 - self.b) * self.m[:, None] + self.b * self.y
        var_theta = (1 - self.b) ** 2 / self.prec[:, None] + self.sigma**2 * self.b
        mean = np.column_stack([self.m, self.tau, mean_theta])
        var = np.column_stack([1 / self.prec, np.zeros_like(self.tau), var_theta])
        return mean, var

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact (quadrature) posterior mean and sd of every coordinate."""
        mean, var = self.conditional_moments()
        first = self.weights @ mean
        second = self.weights @ (var + mean**2)
        return first, np.sqrt(second - first**2)

    def quantiles(self, probs: tuple[float, ...] = (0.05, 0.5, 0.95)) -> np.ndarray:
        """``(len(probs), K)`` quantiles: ``tau`` from its CDF, the others from the mixture
        ``sum_g w_g Phi((x - m_g) / s_g)`` by root finding."""
        mean, var = self.conditional_moments()
        keep = self.weights > 1e-16 * self.weights.max()
        w, mean, sd = self.weights[keep], mean[keep], np.sqrt(var[keep])
        out = np.empty((len(probs), mean.shape[1]))
        for i, q in enumerate(probs):
            out[i, 1] = math.exp(np.interp(q, self.cdf, self.u))
            for k in [0] + list(range(2, mean.shape[1])):
                lo, hi = (mean[:, k] - 40 * sd[:, k]).min(), (mean[:, k] + 40 * sd[:, k]).max()
                out[i, k] = brentq(lambda x, k=k, q=q: w @ ndtr((x - mean[:, k]) / sd[:, k]) - q,
                                   lo, hi, xtol=1e-12, rtol=1e-13)
        return out

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        """``(num, K)`` exact joint draws: ``tau`` by inverse CDF, then ``mu | tau``,
        then ``theta | mu, tau``."""
        u = np.interp(rng.uniform(size=num), self.cdf, self.u)
        tau = np.exp(u)[:, None]
        w = 1.0 / (self.sigma**2 + tau**2)
        prec = 1.0 / MU_SCALE**2 + w.sum(1, keepdims=True)
        mu = (w * self.y).sum(1, keepdims=True) / prec + rng.standard_normal((num, 1)) / np.sqrt(prec)
        b = tau**2 * w
        theta = mu + b * (self.y - mu) + np.sqrt(self.sigma**2 * b) * rng.standard_normal(
            (num, len(self.y)))
        return np.column_stack([mu, tau, theta])
