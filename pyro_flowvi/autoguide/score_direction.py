r"""The sticking-the-landing direction :math:`v = \nabla_z \log q(z)` at the guide's own draw
:math:`z = \mu + L f(\varepsilon)`, every parameter held fixed, without a sequential inverse.

Two ways, for :class:`~pyro_flowvi.autoguide.compiled.CompiledSVI`:

* :func:`score_by_jacobian`: :math:`v = L^{-\top} J_f^{-\top} \nabla_\varepsilon[\log
  p_0(\varepsilon) - \log|\det J_f(\varepsilon)|]` from the flow's Jacobian at
  :math:`\varepsilon` (:func:`flow_and_jacobian`, ``D`` vector-Jacobian products in one batch)
  and a solve; any flow, an inverse or not;
* :func:`score_by_inverse`: autograd through the flow's inverse, where that is one pass
  (coupling and elementwise flows).

Example:
    >>> from pyro_flowvi import build_flow
    >>> flow = build_flow("realnvp", 3, num_layers=2)
    >>> base = torch.distributions.Independent(
    ...     torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    >>> eps, scale = torch.randn(4, 3), torch.ones(3)
    >>> u, ladj, jac = flow_and_jacobian(flow, eps)
    >>> v1 = score_by_jacobian(base, scale, eps, jac)
    >>> v2 = score_by_inverse(flow, base, torch.zeros(3), scale, u.detach())
    >>> bool(torch.allclose(v1, v2, atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["flow_and_jacobian", "score_by_inverse", "score_by_jacobian"]


def flow_and_jacobian(flow: Callable, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``u = f(eps)``, ``log|det J_f(eps)|`` (both differentiable in the flow's parameters)
    and the detached ``(M, D + 1, D)`` Jacobian of ``(u, log|det J_f|)`` in ``eps``, from one
    reverse-mode pass per output row (the draws are ``jacrev``'s auxiliary outputs)."""

    def single(e: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        u, ladj = flow.call_and_ladj(e[None])
        return torch.cat([u[0], ladj]), (u[0], ladj[0])

    jac, (u, ladj) = torch.vmap(torch.func.jacrev(single, has_aux=True))(eps)
    return u, ladj, jac.detach()


def score_by_jacobian(base: torch.distributions.Distribution, scale: Tensor, eps: Tensor,
                      jac: Tensor) -> Tensor:
    """``v = L^-T J_f^-T grad_eps[log p0 - log|det J_f|]`` from the Jacobian of
    :func:`flow_and_jacobian`; ``scale`` is ``L`` (a vector: diagonal; else lower
    triangular)."""
    with torch.enable_grad():
        e = eps.detach().requires_grad_()
        (grad_base,) = torch.autograd.grad(base.log_prob(e).sum(), [e])
    dim = eps.shape[-1]
    grad = grad_base - jac[:, dim]  # grad_eps log q, up to the constant log|det L|
    w = torch.linalg.solve(jac[:, :dim].transpose(-1, -2), grad)  # J_f^T w = g
    if scale.dim() == 1:
        return (w / scale).detach()  # z = mu + L u: v = L^-T w
    return torch.linalg.solve_triangular(scale.transpose(-1, -2), w[..., None],
                                         upper=True)[..., 0].detach()


def score_by_inverse(frozen: Callable, base: torch.distributions.Distribution, loc: Tensor,
                     scale: Tensor, z: Tensor) -> Tensor:
    """``v = grad_z log q(z)`` by autograd through ``frozen.inverse_and_ladj`` (a flow whose
    parameters are detached), as eager STL scores its draws."""
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        if scale.dim() == 1:
            u = (z - loc) / scale
        else:
            u = torch.linalg.solve_triangular(scale, (z - loc)[..., None], upper=False)[..., 0]
        eps, flow_ladj = frozen.inverse_and_ladj(u)
        log_q = base.log_prob(eps) - flow_ladj
        (v,) = torch.autograd.grad(log_q.sum(), [z])
    return v.detach()
