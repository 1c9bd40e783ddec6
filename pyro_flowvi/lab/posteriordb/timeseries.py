"""The ``arma-arma11`` port: ARMA(1, 1) with one-step-ahead errors from a sequential recursion."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["arma11", "arma11_data", "arma11_errors", "linear_recursion"]


def _recursion_numpy(c: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``e_0 = c_0``, ``e_t = c_t - theta * e_{t-1}`` along the last axis of ``(n, T)`` arrays."""
    e = np.empty_like(c)
    e[:, 0] = c[:, 0]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, c.shape[1]):
            e[:, t] = c[:, t] - theta * e[:, t - 1]
    return e


def _recursion_torch(c: Tensor, theta: Tensor) -> Tensor:
    errs = [c[..., 0]]
    for c_t in c.unbind(-1)[1:]:
        errs.append(c_t - theta * errs[-1])
    return torch.stack(errs, -1)


class _LinearRecursion(torch.autograd.Function):
    """The recursion on ``(n, T)`` / ``(n,)`` CPU tensors: a numpy loop forward; backward is the
    same recursion run backwards in time (itself differentiable, so Hessians work too)."""

    @staticmethod
    def forward(ctx: Any, c: Tensor, theta: Tensor) -> Tensor:
        e = _recursion_numpy(c.detach().numpy(), theta.detach().numpy())
        out = torch.from_numpy(e)
        ctx.save_for_backward(out, theta)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        e, theta = ctx.saved_tensors
        # e = L^{-1} c with L = I + theta * (sub-diagonal):  dc = L^{-T} grad (reversed recursion),
        # dtheta = -sum_t dc_t e_{t-1}
        grad_c = _LinearRecursion.apply(grad.flip(-1).contiguous(), theta).flip(-1)
        grad_theta = -(grad_c[:, 1:] * e[:, :-1]).sum(-1)
        return grad_c, grad_theta


def _traced(*tensors: Tensor) -> bool:
    """Whether a graph is being traced (``make_fx``, as in the captured training step) or the
    call is under ``torch.vmap``: the numpy loop would be invisible to either."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None or any(
        torch._C._functorch.is_batchedtensor(t) for t in tensors)


def linear_recursion(c: Tensor, theta: Tensor) -> Tensor:
    """``e_1 = c_1``, ``e_t = c_t - theta * e_{t-1}`` along the last dim; batch dims broadcast.

    Sequential by nature, so the loop runs in numpy (CPU tensors; about 1 us per step instead
    of an autograd node per step) with the exact adjoint recursion as backward (differentiable
    again, so Hessians work); ``torch.jit.trace`` records it as one Python op.  On other devices,
    under ``torch.vmap`` and while ``make_fx`` traces, it runs as a torch loop.  Same
    floating-point operations as the Stan loop; an explosive ``|theta| > 1`` grows to
    ``+-inf``, never ``nan``.

    Example:
        >>> c = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
        >>> linear_recursion(c, torch.tensor(0.5, dtype=torch.float64))
        tensor([1.0000, 0.5000, 0.7500], dtype=torch.float64)
    """
    batch = torch.broadcast_shapes(c.shape[:-1], theta.shape)
    c, theta = c.expand(batch + c.shape[-1:]), theta.expand(batch)
    if c.device.type != "cpu" or c.shape[-1] < 2 or _traced(c, theta):
        return _recursion_torch(c, theta)
    flat = c.reshape(-1, c.shape[-1]).contiguous()
    out = _LinearRecursion.apply(flat, theta.reshape(-1).contiguous().to(c.dtype))
    return out.reshape(c.shape)


def arma11_errors(y: Tensor, mu: Tensor, phi: Tensor, theta: Tensor) -> Tensor:
    """One-step-ahead errors of ARMA(1, 1), as Stan computes them; shape ``batch + (T,)``.

    .. math::

        \\nu_1 = \\mu + \\phi\\mu, \\quad \\nu_t = \\mu + \\phi y_{t-1} + \\theta e_{t-1}, \\quad
        e_t = y_t - \\nu_t

    (``e_0 = 0``), written as ``e_t = c_t - theta * e_{t-1}`` with
    ``c_t = y_t - (mu + phi * y_{t-1})`` (``y_0 := mu``) computed at once and only the recursion
    (:func:`linear_recursion`) sequential.  ``mu``, ``phi``, ``theta`` may carry any
    (broadcastable) batch shape.

    Example:
        >>> y = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
        >>> arma11_errors(y, *torch.tensor([0.5, 0.5, -1.0], dtype=torch.float64))
        tensor([0.2500, 1.2500, 0.2500], dtype=torch.float64)
    """
    mu, phi = mu.unsqueeze(-1), phi.unsqueeze(-1)
    batch = torch.broadcast_shapes(mu.shape, phi.shape)[:-1]
    y_prev = torch.cat([mu.expand(batch + (1,)), y[:-1].expand(batch + (y.shape[0] - 1,))], -1)
    return linear_recursion(y - (mu + phi * y_prev), theta)


def arma11(y: Tensor) -> None:
    """ARMA(1, 1): ``mu ~ N(0, 10)``, ``phi, theta ~ N(0, 2)``, ``sigma ~ Cauchy+(0, 2.5)``.

    The likelihood ``err ~ normal(0, sigma)`` is written as the conditional density of the
    observed series, ``y_t | y_{<t} ~ N(nu_t, sigma)`` (one site ``"y"`` with event shape
    ``(T,)``; no plate, the terms are not exchangeable), which is the same density.
    """
    one = y.new_ones(())
    mu = pyro.sample("mu", dist.Normal(0 * one, 10 * one))
    phi = pyro.sample("phi", dist.Normal(0 * one, 2 * one))
    theta = pyro.sample("theta", dist.Normal(0 * one, 2 * one))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5 * one))
    nu = y - arma11_errors(y, mu, phi, theta)
    pyro.sample("y", dist.Normal(nu, sigma.unsqueeze(-1)).to_event(1), obs=y)


def arma11_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor]:
    """``(y,)`` from ``arma``'s ``data.json``."""
    return (torch.as_tensor(np.asarray(data["y"], dtype=np.float64), dtype=dtype),)
