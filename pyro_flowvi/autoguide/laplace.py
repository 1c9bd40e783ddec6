"""MAP and Laplace warm starts for the base of a packed-latent guide."""

from __future__ import annotations

import warnings
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor
from torch.distributions import biject_to

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


def _newton_refine(guide: AutoContinuous, u: Tensor, args: tuple, kwargs: dict,
                   steps: int) -> tuple[Tensor, Tensor]:
    """Damped Newton iterations on ``-log p~``; returns the point and the negative Hessian."""

    def neg_log_joint(v: Tensor) -> Tensor:
        return -unconstrained_log_joint(guide, v, *args, **kwargs)

    def grad_and_hessian(v: Tensor) -> tuple[Tensor, Tensor]:
        v = v.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(neg_log_joint(v), v)
        hess = torch.autograd.functional.hessian(neg_log_joint, v.detach())
        return grad, 0.5 * (hess + hess.T)

    grad, hess = grad_and_hessian(u)
    for _ in range(steps):
        chol, info = torch.linalg.cholesky_ex(hess)
        if int(info) != 0:
            break
        step = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        with torch.no_grad():
            current = neg_log_joint(u)
            size = 1.0
            while size > 1e-6 and not neg_log_joint(u - size * step) <= current:
                size /= 2
        if size <= 1e-6:
            break
        u = (u - size * step).detach()
        grad, hess = grad_and_hessian(u)
        if float(torch.linalg.vector_norm(size * step)) < 1e-10 * (1 + float(
                torch.linalg.vector_norm(u))):
            break
    return u, hess


def laplace_approximation(
    guide: AutoContinuous, init: Tensor, *args: Any, steps: int = 200, hessian: bool = True,
    newton_steps: int = 20, **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """MAP of the unconstrained latent by L-BFGS from ``init``; optionally ``H^{-1}`` there.

    With ``hessian`` the MAP is polished by damped Newton steps (L-BFGS alone stalls on badly
    scaled posteriors); each step costs one Hessian, ``D`` backward passes.

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
    u_hat, neg_hess = _newton_refine(guide, u_hat, args, kwargs, newton_steps)
    chol, info = torch.linalg.cholesky_ex(neg_hess)
    if int(info) == 0:
        return u_hat, torch.cholesky_inverse(chol)
    warnings.warn("Laplace warm start: the Hessian at the MAP is not positive definite; "
                  "using the inverse of its absolute diagonal.", stacklevel=2)
    return u_hat, torch.diag(1.0 / neg_hess.diagonal().abs().clamp_min(1e-8))
