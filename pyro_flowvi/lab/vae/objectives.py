"""The ELBO from Pyro traces without host synchronisation, KL warm-up, and importance weights.

For a model ``p(x, z)`` and an amortized guide ``q(z | x)`` with reparameterised samples, one
draw ``z ~ q(. | x)`` gives the single-sample ELBO and its warm-up (annealed) form

.. math::

    \\mathcal L_\\beta = \\log p(x \\mid z) + \\beta\\,\\big(\\log p(z) - \\log q(z \\mid x)\\big),
    \\qquad \\mathcal L_1 = \\mathrm{ELBO},

(Bowman et al. 2016; Sønderby et al. 2016), with every term scaled by its plate's ``N / B``
exactly as Pyro's ``Trace_ELBO`` does.  Unlike ``Trace_ELBO.differentiable_loss`` nothing here
calls ``.item()``, so a training step never waits for the device.  The importance-sampled
log-likelihood (Burda et al. 2016) uses ``K`` draws per data point,

.. math::

    \\log \\hat p_K(x) = \\log \\frac1K \\sum_{k=1}^K \\frac{p(x, z_k)}{q(z_k \\mid x)},
    \\qquad \\mathbb E[\\log \\hat p_1] = \\mathrm{ELBO} \\le \\mathbb E[\\log \\hat p_K]
    \\le \\mathbb E[\\log \\hat p_{K+1}] \\le \\log p(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = [
    "ELBOTerms",
    "elbo_terms",
    "importance_weighted_bound",
    "log_importance_weights",
    "log_mean_exp",
]


class ELBOTerms(NamedTuple):
    """Scaled sums over one mini-batch: ``log p(x | z)``, ``log p(z)`` and ``log q(z | x)``."""

    log_likelihood: Tensor
    log_prior: Tensor
    log_q: Tensor

    def elbo(self, beta: float | Tensor = 1.0) -> Tensor:
        """``log p(x|z) + beta (log p(z) - log q(z|x))`` (the ELBO at ``beta = 1``)."""
        return self.log_likelihood + beta * (self.log_prior - self.log_q)


def _sample_sites(trace: poutine.Trace) -> list[tuple[str, dict]]:
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


def elbo_terms(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> ELBOTerms:
    """Run the guide, replay the model against it, and sum the scaled log-densities.

    Model sites that are observed make up the likelihood, the others the prior; every guide site
    contributes to ``log q``.  Only reparameterised guides are supported (no score-function
    terms are added).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     pyro.sample("z", dist.Normal(0.5, 1.0))
        >>> terms = elbo_terms(model, guide, torch.tensor(1.0))
        >>> [t.shape for t in terms]
        [torch.Size([]), torch.Size([]), torch.Size([])]
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs)
    log_lik: Tensor | float = 0.0
    log_prior: Tensor | float = 0.0
    log_q: Tensor | float = 0.0
    for _, site in _sample_sites(model_trace):
        lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
        if site["is_observed"]:
            log_lik = log_lik + lp
        else:
            log_prior = log_prior + lp
    for _, site in _sample_sites(guide_trace):
        log_q = log_q + scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"],
                                       site["mask"]).sum()
    return ELBOTerms(*(torch.as_tensor(t) for t in (log_lik, log_prior, log_q)))


def _per_point(trace: poutine.Trace) -> Tensor | float:
    """Sum of the unscaled (masked) log-densities of every sample site (broadcast together)."""
    total: Tensor | float = 0.0
    for _, site in _sample_sites(trace):
        lp = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            lp = lp * site["mask"]
        total = total + lp
    return total


def _log_weights(model: Callable, guide: Callable, x: Tensor, num_samples: int, *args: Any,
                 particle_dim: int = -2, **kwargs: Any) -> Tensor:
    with pyro.plate("_importance_samples", int(num_samples), dim=particle_dim):
        guide_trace = poutine.trace(guide).get_trace(x, *args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            x, *args, **kwargs)
    batch = x.shape[0]
    lw = _per_point(model_trace) - _per_point(guide_trace)
    return torch.as_tensor(lw).expand(int(num_samples), batch)


def importance_weighted_bound(model: Callable, guide: Callable, x: Tensor, num_samples: int,
                              *args: Any, **kwargs: Any) -> Tensor:
    r"""The differentiable importance-weighted bound per data point (Burda et al. 2016):

    .. math::

        \mathcal L_K(x_b) = \log \frac1K \sum_{k=1}^K \frac{p(x_b, z_{k,b})}{q(z_{k,b} \mid x_b)},
        \qquad z_{k,b} \sim q(\cdot \mid x_b),

    shape ``(B,)``; ``K = 1`` is the single-sample ELBO.  Training on it (an IWAE) fits the
    decoder to a tighter bound than the ELBO; the guide becomes an importance proposal.  Same
    vectorised pass and requirements as :func:`log_importance_weights`.

    Example:
        >>> import pyro.distributions as dist
        >>> loc = torch.tensor(0.3, requires_grad=True)
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(loc.expand(len(x)), 1.0))
        >>> bound = importance_weighted_bound(model, guide, torch.tensor([0.0, 1.0]), 8)
        >>> bound.shape, bound.requires_grad
        (torch.Size([2]), True)
    """
    return log_mean_exp(_log_weights(model, guide, x, num_samples, *args, **kwargs), 0)


@torch.no_grad()
def log_importance_weights(
    model: Callable,
    guide: Callable,
    x: Tensor,
    num_samples: int,
    *args: Any,
    particle_dim: int = -2,
    **kwargs: Any,
) -> Tensor:
    """``log p(x_b, z_{k,b}) - log q(z_{k,b} | x_b)``, shape ``(num_samples, B)``.

    All ``num_samples`` draws run in one vectorised pass: guide and model are wrapped in a plate
    of that size at ``particle_dim`` (left of the data plate, which must be at ``dim=-1``), so
    the encoder runs once per data point and the flow and decoder see ``(K, B, D)`` latents.
    The log-densities are *unscaled* (a plate's ``N / B`` factor does not apply to per-point
    weights).  Global latents are not supported (every site must be local to the data plate).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):   # the exact posterior N(x / 2, 1 / 2): every weight is p(x)
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5 ** 0.5))
        >>> x = torch.tensor([0.0, 2.0])
        >>> lw = log_importance_weights(model, guide, x, 5)
        >>> lw.shape, torch.allclose(lw, dist.Normal(0.0, 2 ** 0.5).log_prob(x).expand(5, 2))
        (torch.Size([5, 2]), True)
    """
    return _log_weights(model, guide, x, num_samples, *args, particle_dim=particle_dim, **kwargs)


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """``log mean exp`` along ``dim``, stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])
