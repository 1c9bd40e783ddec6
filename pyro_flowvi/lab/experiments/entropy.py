"""The entropy sign-flip check of a flow posterior: ``log q = log N(eps) - sum log|det J|``.

Asserted by the banana benchmark for every flow guide (:mod:`pyro_flowvi.lab.experiments.banana`):
the change-of-variables bookkeeping of ``docs/conventions.rst``, per draw and in expectation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import TransformedDistribution

__all__ = ["EntropyIdentityError", "entropy_sign_check"]


class EntropyIdentityError(AssertionError):
    """A flow guide violates ``log q = log N(eps) - sum log|det J|`` or its entropy form."""


@torch.no_grad()
def entropy_sign_check(
    posterior: TransformedDistribution,
    num_samples: int = 20_000,
    *,
    tolerance_se: float = 4.0,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Assert the change-of-variables bookkeeping of a flow posterior (raise if it fails).

    With :math:`\\varepsilon \\sim \\mathcal N(0, I_D)` (``posterior.base_dist``) pushed through
    *all* of ``posterior.transforms`` (for :class:`~pyro_flowvi.AutoFlowGuide`: the affine base,
    then the flow stack), and :math:`L = \\sum_k \\log|\\det J_k|` accumulated along the way,

    1. per draw, ``posterior.log_prob(z) == base.log_prob(eps) - L`` to ``atol`` (the log-det
       enters ``log q`` with a minus sign; the same draws with ``+ L`` are reported as
       ``wrong_sign_max_abs_error`` to show that the check can tell the two apart);
    2. in expectation, the Monte Carlo entropy :math:`-\\mathbb E[\\log q]` equals
       :math:`H[\\mathcal N(0, I_D)] + \\mathbb E[L]`, :math:`H[\\mathcal N(0, I_D)] = \\frac D2
       (1 + \\log 2\\pi)` in closed form, within ``tolerance_se`` standard errors of the per-draw
       residual :math:`-\\log q - L - H[\\mathcal N]`.

    Raises:
        EntropyIdentityError: if either check fails.
    """
    base = posterior.base_dist
    eps = base.sample((num_samples,))
    log_base = base.log_prob(eps)
    x, ladj = eps, torch.zeros_like(log_base)
    per_transform = []
    for t in posterior.transforms:
        y = t(x)
        term = t.log_abs_det_jacobian(x, y)
        if term.dim() > log_base.dim():  # an elementwise transform with event_dim 0
            term = term.reshape(*log_base.shape, -1).sum(-1)
        per_transform.append(float(term.double().mean()))
        ladj = ladj + term
        x = y
    log_q = posterior.log_prob(x)
    dim = eps.shape[-1]
    h_base = 0.5 * dim * (1.0 + math.log(2.0 * math.pi))
    err = (log_base - ladj - log_q).abs().max().item()
    wrong = (log_base + ladj - log_q).abs().max().item()
    residual = (-log_q - ladj).double() - h_base
    res_mean = float(residual.mean())
    res_se = float(residual.std() / math.sqrt(num_samples))
    entropy_mc = float(-log_q.double().mean())
    out = {
        "entropy_mc": entropy_mc,
        "entropy_mc_se": float(log_q.double().std() / math.sqrt(num_samples)),
        "entropy_base": h_base,
        "logdet_mean": float(ladj.double().mean()),
        "logdet_per_transform": per_transform,
        "entropy_identity": h_base + float(ladj.double().mean()),
        "residual": res_mean,
        "residual_se": res_se,
        "identity_max_abs_error": err,
        "wrong_sign_max_abs_error": wrong,
        "num_samples": num_samples,
    }
    if not err <= atol:
        raise EntropyIdentityError(
            f"log q(z) != log N(eps) - sum log|det J| on the same draws: max error {err:.3g} > "
            f"{atol:g} (with the opposite sign the error would be {wrong:.3g})"
        )
    if not abs(res_mean) <= tolerance_se * res_se:
        raise EntropyIdentityError(
            f"MC entropy {entropy_mc:.4f} != H[N(0,I)] {h_base:.4f} + E[log|det J|] "
            f"{out['logdet_mean']:.4f}: residual {res_mean:.4g} exceeds {tolerance_se:g} s.e. "
            f"({res_se:.3g})"
        )
    return out
