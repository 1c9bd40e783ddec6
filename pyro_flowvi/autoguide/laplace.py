"""Warm starts for a packed-latent guide: MAP, Laplace, and the choice between starting points."""

from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

from pyro_flowvi.autoguide.potential import UnconstrainedLogDensity, unconstrained_log_joint

__all__ = [
    "AUTO_INIT_SCALES",
    "AUTO_LAPLACE_MAX_DIM",
    "GaussianStart",
    "WarmStartError",
    "choose_start",
    "gaussian_elbo",
    "laplace_approximation",
    "unconstrained_log_joint",
]


class WarmStartError(RuntimeError):
    """The MAP search or the Hessian at the MAP failed; the message says how."""


class GaussianStart(NamedTuple):
    """A Gaussian starting point ``N(loc, scale_tril scale_tril^T)`` in the unconstrained space,
    its ELBO estimate and where it came from (``"init"``, ``"map"`` or ``"laplace"``)."""

    name: str
    loc: Tensor
    scale_tril: Tensor
    elbo: float


class _NonFinite(Exception):
    """A trial point of the line search scored non-finitely."""


def _map_search(log_p: UnconstrainedLogDensity, init: Tensor, steps: int,
                restarts: int = 4) -> Tensor:
    """L-BFGS (strong Wolfe) on ``-log p~`` from ``init``.  A trial point that scores
    non-finitely (the line search probing the far tails of a constrained site) ends that run;
    the search restarts from the best point seen, with a fresh curvature history."""
    best = [init.detach().clone(), -math.inf]

    def value_at(u: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            value = log_p(u)
        if not torch.isfinite(value):
            raise _NonFinite
        if float(value.detach()) > best[1]:
            best[0], best[1] = u.detach().clone(), float(value.detach())
        return value

    try:
        with torch.no_grad():
            value_at(best[0])
    except _NonFinite:
        raise WarmStartError("the density is not finite at the initial point") from None
    except (RuntimeError, ValueError) as err:
        raise WarmStartError(f"the model failed at the initial point: {_first_line(err)}") from err
    for _ in range(restarts + 1):
        u = best[0].clone().requires_grad_(True)
        optim = torch.optim.LBFGS([u], max_iter=steps, line_search_fn="strong_wolfe")

        def closure(optim: torch.optim.LBFGS = optim, u: Tensor = u) -> Tensor:
            optim.zero_grad()
            loss = -value_at(u)
            loss.backward()
            return loss

        try:
            optim.step(closure)
        except _NonFinite:
            continue
        except (RuntimeError, ValueError) as err:  # the model refused a trial point
            if isinstance(err, ValueError) and "Expected parameter" not in str(err):
                raise WarmStartError(f"the MAP search failed: {_first_line(err)}") from err
            continue
        break
    return best[0]


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _newton_refine(log_p: UnconstrainedLogDensity, u: Tensor, steps: int
                   ) -> tuple[Tensor, Tensor]:
    """Damped Newton iterations on ``-log p~``; returns the point and the negative Hessian."""

    def neg_log_joint(v: Tensor) -> Tensor:
        return -log_p(v)

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

    Returns ``(u_hat, Sigma)`` (``Sigma`` is ``None`` when ``hessian`` is false).  Raises
    :class:`WarmStartError` when the search diverges (a density without a mode, such as a
    centred funnel's neck) or the negative Hessian at the MAP is not positive definite.
    """
    with torch.enable_grad():  # the guide may be set up under no_grad (e.g. by Predictive)
        return _laplace(guide, init, args, kwargs, steps, hessian, newton_steps)


def _laplace(guide: AutoContinuous, init: Tensor, args: tuple, kwargs: dict, steps: int,
             hessian: bool, newton_steps: int) -> tuple[Tensor, Tensor | None]:
    log_p = UnconstrainedLogDensity(guide, args, kwargs)
    u_hat = _map_search(log_p, init, steps)
    if not hessian:
        return u_hat, None
    try:
        with pyro.validation_enabled(False):
            u_hat, neg_hess = _newton_refine(log_p, u_hat, newton_steps)
    except (RuntimeError, ValueError) as err:
        raise WarmStartError(f"the Hessian at the MAP failed: {_first_line(err)}") from err
    chol, info = torch.linalg.cholesky_ex(neg_hess)
    if int(info) != 0 or not torch.isfinite(neg_hess).all():
        raise WarmStartError("the Hessian at the MAP is not negative definite (no isolated "
                             "mode there)")
    cov = torch.cholesky_inverse(chol)
    cov = 0.5 * (cov + cov.T)
    if not torch.isfinite(cov).all() or int(torch.linalg.cholesky_ex(cov)[1]) != 0:
        raise WarmStartError("the covariance at the MAP is not numerically positive definite "
                             f"in {u_hat.dtype} (condition number too large)")
    return u_hat, cov


@torch.no_grad()
def gaussian_elbo(log_p: UnconstrainedLogDensity, loc: Tensor, scale_tril: Tensor,
                  num_draws: int = 128, generator: torch.Generator | None = None) -> float:
    r"""Monte Carlo ELBO of ``N(loc, L L^T)`` against the unconstrained density,

    .. math:: \mathbb E_q[\log \tilde p(u) - \log q(u)], \qquad
              \log q(u) = -\tfrac D2 \log(2\pi) - \sum_i \log L_{ii}
              - \tfrac12 \lVert\varepsilon\rVert^2,

    from ``num_draws`` draws scored in one vectorised pass; ``-inf`` when any draw scores
    non-finitely or the model refuses one (a start whose draws leave the support is no start).
    ``log q`` is scored on the same draws rather than replaced by the exact entropy: the
    difference has no variance when ``q`` is the posterior (a Gaussian model's Laplace start),
    so the best start is not lost to the noise of ``E[log p~]`` alone.
    """
    dim = loc.shape[-1]
    eps = torch.randn((num_draws, dim), generator=generator, dtype=loc.dtype).to(loc.device)
    u = loc + eps @ scale_tril.T
    try:
        values = log_p(u)
    except (RuntimeError, ValueError):
        return -math.inf
    if not torch.isfinite(values).all():
        return -math.inf
    log_q = -0.5 * (eps**2).sum(-1) - 0.5 * dim * math.log(2 * math.pi) \
        - scale_tril.diagonal().abs().log().sum()
    return float((values - log_q).mean())


AUTO_LAPLACE_MAX_DIM = 256
"""``warm_start="auto"`` tries the Laplace start up to this latent size (its Newton polish costs
``D`` backward passes per Hessian)."""
AUTO_INIT_SCALES = (1.0, 0.1, 0.01)
"""Initial scales ``init_scale=None`` chooses among, by ELBO."""


def choose_start(
    guide: AutoContinuous, init_loc: Tensor, args: tuple, kwargs: dict, *, warm_start: str | None,
    init_scale: float | None, steps: int, num_draws: int = 128, warn: str | None = None,
) -> tuple[GaussianStart, dict[str, Any]]:
    """The guide's starting Gaussian: the best, by ELBO, of ``N(init_loc, s^2 I)`` for each
    initial scale ``s`` and, when asked, the MAP (``"map"``, same scales) or Laplace
    (``"laplace"``) Gaussian.

    ``warm_start="auto"`` tries the Laplace start when ``D <= AUTO_LAPLACE_MAX_DIM`` and keeps
    it only if its ELBO is the best (a centred funnel has no mode to expand around; its MAP
    search diverges or ends in the neck, whose Gaussian scores worse than the prior-median
    start).  An explicit ``"map"``/``"laplace"`` is kept whenever it succeeds.  The ELBOs use
    ``num_draws`` draws from a private generator, so the global random stream is untouched.
    Returns the chosen start and a record: ``warm_start`` (the chosen start's name),
    ``elbo_by_start``, ``failure`` (why the MAP/Laplace failed, or ``None``).  With ``warn``
    (the caller's name) a failed MAP/Laplace search is a warning that says why.
    """
    dim = init_loc.shape[-1]
    log_p = UnconstrainedLogDensity(guide, args, kwargs)
    gen = torch.Generator().manual_seed(0)
    eye = torch.eye(dim, dtype=init_loc.dtype, device=init_loc.device)
    scales = AUTO_INIT_SCALES if init_scale is None else (init_scale,)

    def start(name: str, loc: Tensor, tril: Tensor) -> GaussianStart:
        return GaussianStart(name, loc, tril, gaussian_elbo(log_p, loc, tril, num_draws, gen))

    candidates = [start("init", init_loc, s * eye) for s in scales]
    failure = None
    tried = warm_start in ("map", "laplace") or (warm_start == "auto"
                                                 and dim <= AUTO_LAPLACE_MAX_DIM)
    warm: list[GaussianStart] = []
    if tried:
        try:
            u_hat, cov = laplace_approximation(guide, init_loc, *args, steps=steps,
                                               hessian=warm_start != "map", **kwargs)
        except WarmStartError as err:
            failure = str(err)
        else:
            if cov is None:
                warm = [start("map", u_hat, s * eye) for s in scales]
            else:
                warm = [start("laplace", u_hat, torch.linalg.cholesky(cov))]
    pool = warm if warm_start in ("map", "laplace") and warm else candidates + warm
    best = max(pool, key=lambda c: c.elbo)
    if not math.isfinite(best.elbo):
        best = pool[-1] if warm else candidates[0]
    record = {"warm_start": best.name, "failure": failure,
              "elbo_by_start": {f"{c.name}(scale={float(c.scale_tril[0, 0]):.3g})"
                                if c.name != "laplace" else c.name: c.elbo
                                for c in candidates + warm}}
    if failure and warn:
        warnings.warn(
            f"{warn}: the {'MAP' if warm_start == 'map' else 'Laplace'} warm start failed "
            f"({failure}); starting from init_loc_fn's point with scale "
            f"{float(best.scale_tril[0, 0]):.3g} instead. If the posterior is badly scaled, pass "
            "init_scale or a better init_loc_fn.", stacklevel=_caller_stacklevel())
    return best, record


def _caller_stacklevel() -> int:
    """``warnings.warn``'s stacklevel of the first frame outside torch, Pyro and this package
    (the user's call that set the guide up)."""
    skip = tuple(os.path.dirname(m.__file__) for m in (torch, pyro)) + (
        os.path.dirname(os.path.dirname(__file__)),)
    for level, frame in enumerate(inspect.stack(0)[1:], start=1):
        if not frame.filename.startswith(skip):
            return level
    return 2
