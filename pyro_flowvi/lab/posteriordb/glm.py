"""``glm-hierarchical_poisson``: a Poisson GLM with centred group-level intercepts (simulated data).

.. math::

    \\mu \\sim N(0, 2^2), \\quad \\tau \\sim N^+(0, 1), \\quad
    \\alpha_j \\sim N(\\mu, \\tau^2) \\ (j = 1..J), \\quad \\beta_k \\sim N(0, 1) \\ (k = 1..K),

    y_i \\sim \\mathrm{Poisson}\\big(\\exp(\\alpha_{g_i} + x_i^\\top \\beta + \\log E_i)\\big),

with exposures ``E_i``.  As Stan code (``group`` 1-based, as stored)::

    parameters { real mu; real<lower=0> tau; vector[J] alpha; vector[K] beta; }
    model {
      mu ~ normal(0, 2); tau ~ normal(0, 1); alpha ~ normal(mu, tau); beta ~ normal(0, 1);
      y ~ poisson_log(alpha[group] + x * beta + log(exposure));
    }

J = 12 groups of 8 to 40 observations, K = 3 standard-normal covariates; dimension 17.  The
centred ``alpha`` given ``tau`` is a mild funnel for the small groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["NAME", "glm_data", "glm_hierarchical_poisson", "simulate_glm_data"]

NAME = "glm-hierarchical_poisson"


def glm_hierarchical_poisson(x: Tensor, groups: Tensor, log_exposure: Tensor, y: Tensor) -> None:
    """The model; ``groups`` is the ``(N, J)`` one-hot group matrix (so that
    ``(groups * alpha).sum(-1)`` broadcasts a ``(S, 1, J)`` batch of ``alpha`` to ``(S, N)``).

    Example:
        >>> x = torch.zeros(4, 3, dtype=torch.float64)
        >>> g = torch.eye(2, dtype=torch.float64)[[0, 0, 1, 1]]
        >>> tr = pyro.poutine.trace(glm_hierarchical_poisson).get_trace(
        ...     x, g, torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
        >>> tr.nodes["alpha"]["value"].shape, tr.nodes["beta"]["value"].shape
        (torch.Size([2]), torch.Size([3]))
    """
    one = x.new_ones(())
    mu = pyro.sample("mu", dist.Normal(0 * one, 2 * one))
    tau = pyro.sample("tau", dist.HalfNormal(one))
    batch = torch.broadcast_shapes(mu.shape, tau.shape)
    alpha_prior = dist.Normal(mu.unsqueeze(-1), tau.unsqueeze(-1)).expand(batch + groups.shape[-1:])
    alpha = pyro.sample("alpha", alpha_prior.to_event(1))
    beta = pyro.sample("beta", dist.Normal(0 * one, one).expand(x.shape[-1:]).to_event(1))
    eta = (groups * alpha).sum(-1) + (x * beta).sum(-1) + log_exposure
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Poisson(eta.exp()), obs=y)


def simulate_glm_data(seed: int = 20252, num_groups: int = 12) -> dict[str, Any]:
    """The simulated data (``mu = 0.8``, ``tau = 0.5``, ``beta = (0.4, -0.25, 0.15)``).

    Written once into the reference JSON, from which the model reads it.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(8, 41, num_groups)
    group = np.repeat(np.arange(num_groups), sizes)
    n = len(group)
    x = np.round(rng.standard_normal((n, 3)), 3)
    exposure = np.round(rng.uniform(0.5, 2.0, n), 3)
    alpha = 0.8 + 0.5 * rng.standard_normal(num_groups)
    eta = alpha[group] + x @ np.array([0.4, -0.25, 0.15]) + np.log(exposure)
    y = rng.poisson(np.exp(eta))
    return {"N": int(n), "J": num_groups, "K": 3, "group": (group + 1).tolist(), "x": x.tolist(),
            "exposure": exposure.tolist(), "y": y.tolist(), "seed": seed,
            "simulation": "sizes ~ U{8..40}; x ~ N(0, 1) (3 decimals); exposure ~ U(0.5, 2) "
                          "(3 decimals); alpha_j ~ N(0.8, 0.5^2); beta = (0.4, -0.25, 0.15); "
                          "y ~ Poisson(exposure * exp(alpha[group] + x beta)); numpy default_rng(seed)"}


def glm_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, one-hot groups, log exposure, y)`` from the stored data dict."""
    group = np.asarray(data["group"], dtype=np.int64) - 1
    onehot = np.eye(int(data["J"]))[group]
    return tuple(torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype) for a in
                 (data["x"], onehot, np.log(np.asarray(data["exposure"], float)), data["y"]))
