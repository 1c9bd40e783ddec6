"""MAP and Laplace warm starts for the base of a packed-latent guide."""

from __future__ import annotations

import warnings
from typing import Any

import pyro.poutine as poutine
import torch
from torch.distributions import biject_to
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

__all__ = ["laplace_approximation", "unconstrained_log_joint"]


def unconstrained_log_joint(guide: AutoContinuous, latent: Tensor, *args: Any,
                            **kwargs: Any) -> Tensor:
    """``log p(x, T(u)) + log|det dT/du|`` for the packed unconstrained latent ``u``.

    ``T`` applies ``biject_to(site.support)`` per site; this is the density the guide approximates
    in the unconstrained space (minus the potential energy of HMC).
    """
    values, log_det = {}, latent.new_zeros(())
    for site, u in guide._unpack_latent(latent):
        transform = biject_to(site["fn"].support)
        value = transform(u)
        values[site["name"]] = value
        log_det = log_det + transform.log_abs_det_jacobian(u, value).sum()
    with poutine.block():
        trace = poutine.trace(poutine.condition(guide.model, data=values)).get_trace(
            *args, **kwargs)
    return trace.log_prob_sum() + log_det


def laplace_approximation(
    guide: AutoContinuous, init: Tensor, *args: Any, steps: int = 200, hessian: bool = True,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """MAP of the unconstrained latent by L-BFGS from ``init``; optionally ``H^{-1}`` there.

    .. math:: \\hat u = \\arg\\max_u \\log \\tilde p(u), \\qquad
              \\Sigma = \\left(-\\nabla^2 \\log \\tilde p(\\hat u)\\right)^{-1}.

    Returns ``(u_hat, Sigma)`` (``Sigma`` is ``None`` when ``hessian`` is false).  If the negative
    Hessian is not positive definite, its diagonal (absolute values) is used, with a warning.
    """
    u = init.detach().clone().requires_grad_(True)
    optim = torch.optim.LBFGS([u], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optim.zero_grad()
        loss = -unconstrained_log_joint(guide, u, *args, **kwargs)
        loss.backward()
        return loss

    optim.step(closure)
    u_hat = u.detach()
    if not torch.isfinite(u_hat).all():
        raise ValueError("AutoFlowGuide warm start: the MAP search diverged to non-finite values")
    if not hessian:
        return u_hat, None
    neg_hess = -torch.autograd.functional.hessian(
        lambda v: unconstrained_log_joint(guide, v, *args, **kwargs), u_hat)
    neg_hess = 0.5 * (neg_hess + neg_hess.T)
    chol, info = torch.linalg.cholesky_ex(neg_hess)
    if int(info) == 0:
        return u_hat, torch.cholesky_inverse(chol)
    warnings.warn("Laplace warm start: the Hessian at the MAP is not positive definite; "
                  "using the inverse of its absolute diagonal.", stacklevel=2)
    return u_hat, torch.diag(1.0 / neg_hess.diagonal().abs().clamp_min(1e-8))
