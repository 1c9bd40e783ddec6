"""The ``mcycle_gp-accel_gp`` port (extra, moments-only reference): brms's approximate
(Hilbert-space basis-function) GP for the mean and the log noise sd of motorcycle acceleration.

.. math::

    f(x) = \\mathrm{Intercept} + \\Phi(x)\\,(\\sqrt{s(\\lambda)} \\odot z), \\quad
    s_m = \\mathrm{sdgp}^2 \\sqrt{2\\pi}\\, \\ell\\, \\exp(-\\tfrac12 \\ell^2 \\lambda_m^2),

for ``mu`` (40 basis functions) and ``log sigma`` (20), ``Y ~ N(mu, sigma)``; priors as in the brms
code: Student-t(3, -13, 36) / (3, 0, 10) intercepts, half Student-t(3, 0, 36) GP sds,
InvGamma(1.124909, 0.0177) length-scales, N(0, 1) basis weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = ["accel_gp", "accel_gp_data"]


def _approx_gp(prefix: str, basis: Tensor, slambda: Tensor) -> Tensor:
    """Sample ``sdgp``, ``lscale``, ``zgp`` of one approximate GP; return its values ``batch + (N,)``."""
    one = basis.new_ones(())
    half_t = dist.FoldedDistribution(dist.StudentT(3 * one, 0 * one, 36 * one))
    sdgp = pyro.sample(f"sdgp_{prefix}1", half_t)
    lscale = pyro.sample(f"lscale_{prefix}1", dist.InverseGamma(1.124909 * one, 0.0177 * one))
    zgp = pyro.sample(f"zgp_{prefix}1", dist.Normal(0 * one, one).expand(slambda.shape).to_event(1))
    sd, ls = sdgp.unsqueeze(-1), lscale.unsqueeze(-1)
    spd = sd**2 * (np.sqrt(2 * np.pi) * ls) * torch.exp(-0.5 * ls**2 * slambda**2)
    return (basis * (spd.sqrt() * zgp)).sum(-1)  # parameter batch dims broadcast with the data plate


def accel_gp(Y: Tensor, Xgp: Tensor, slambda: Tensor, Xgp_sigma: Tensor, slambda_sigma: Tensor) -> None:
    """The brms model; sites in Stan order: ``Intercept, sdgp_1, lscale_1, zgp_1, Intercept_sigma,
    sdgp_sigma_1, lscale_sigma_1, zgp_sigma_1``.  The half Student-t is the folded one (the
    ``- student_t_lccdf(0 | ...)`` term of the Stan code is its normalisation, log 2)."""
    one = Y.new_ones(())
    intercept = pyro.sample("Intercept", dist.StudentT(3 * one, -13 * one, 36 * one))
    f_mu = _approx_gp("", Xgp, slambda)
    intercept_sigma = pyro.sample("Intercept_sigma", dist.StudentT(3 * one, 0 * one, 10 * one))
    f_sigma = _approx_gp("sigma_", Xgp_sigma, slambda_sigma)
    with pyro.plate("data", Y.shape[0]):
        pyro.sample("Y", dist.Normal(intercept + f_mu, (intercept_sigma + f_sigma).exp()), obs=Y)


def accel_gp_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """``(Y, Xgp_1, slambda_1, Xgp_sigma_1, slambda_sigma_1)``; 1-d GPs only (as in the data)."""
    assert data["Dgp_1"] == 1 and data["Dgp_sigma_1"] == 1 and not data["prior_only"]
    keys = ("Y", "Xgp_1", "slambda_1", "Xgp_sigma_1", "slambda_sigma_1")
    out = [torch.as_tensor(np.asarray(data[k], dtype=np.float64), dtype=dtype) for k in keys]
    out[2], out[4] = out[2][:, 0], out[4][:, 0]  # (NB, 1) -> (NB,)
    return tuple(out)
