"""Linear-regression ports: ``blr``, ``earn_height``, ``logearn_interaction(_z)``,
``kidscore_interaction``, ``mesquite`` and ``logmesquite_logvas``.

Every Stan model here is ``y ~ normal(X * beta, sigma)`` with a design matrix ``X`` (intercept
column first, columns in the order of ``beta``) built from ``data.json`` as the Stan
``transformed data`` block does; they differ only in the priors:

============================  ===========================  ===============================
model                         beta                         sigma
============================  ===========================  ===============================
``blr``                       ``normal(0, 10)``            ``normal(0, 10)`` on sigma > 0
``kidscore_interaction``      flat                         ``cauchy(0, 2.5)`` on sigma > 0
all others                    flat                         flat on sigma > 0
============================  ===========================  ===============================

Flat priors are ``ImproperUniform`` on the declared support (improper, as in Stan).  The mean is
``(X * beta).sum(-1)``: parameter batch dimensions broadcast against the ``"data"`` plate at
``dim=-1``, so a batch ``(S, 1)`` of parameters gives ``(S, N)`` means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

__all__ = [
    "blr",
    "blr_data",
    "earnings_data",
    "flat_regression",
    "kidiq_data",
    "kidscore_interaction",
    "mesquite_data",
]


def _tensor(x: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def _likelihood(X: Tensor, y: Tensor, beta: Tensor, sigma: Tensor) -> None:
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def blr(X: Tensor, y: Tensor) -> None:
    """``sblri-blr``, ``sblrc-blr``: ``beta ~ N(0, 10)``, ``sigma ~ N+(0, 10)``, ``y ~ N(X beta, sd)``.

    Example:
        >>> X, y = torch.randn(7, 2, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
        >>> tr = pyro.poutine.trace(blr).get_trace(X, y)
        >>> tr.nodes["beta"]["value"].shape, tr.nodes["y"]["fn"].batch_shape
        (torch.Size([2]), torch.Size([7]))
    """
    one = X.new_ones(())
    beta = pyro.sample("beta", dist.Normal(0 * one, 10 * one).expand([X.shape[-1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(10 * one))
    _likelihood(X, y, beta, sigma)


def flat_regression(X: Tensor, y: Tensor) -> None:
    """Flat priors on ``beta`` (real vector) and ``sigma`` (positive): ``y ~ N(X beta, sigma)``.

    Used by ``earn_height``, ``logearn_interaction``, ``logearn_interaction_z``, ``mesquite`` and
    ``logmesquite_logvas``.  The posterior is proper when ``X`` has full column rank and
    ``N > D + 1``.
    """
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (X.shape[-1],)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    _likelihood(X, y, beta, sigma)


def kidscore_interaction(X: Tensor, y: Tensor) -> None:
    """``kidiq-kidscore_interaction``: flat ``beta``, ``sigma ~ Cauchy+(0, 2.5)``, normal likelihood."""
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (X.shape[-1],)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5 * X.new_ones(())))
    _likelihood(X, y, beta, sigma)


def blr_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(X, y)`` for ``blr``: ``X`` is given (N x D, no intercept column)."""
    return _tensor(data["X"], dtype), _tensor(data["y"], dtype)


def earnings_data(data: dict[str, Any], model: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(X, y)`` for the three earnings models, as their ``transformed data`` blocks compute them.

    * ``earn_height``: ``y = earn``, ``X = [1, height]``;
    * ``logearn_interaction``: ``y = log(earn)``, ``X = [1, height, male, height * male]``;
    * ``logearn_interaction_z``: as above with ``z = (height - mean) / sd`` (Stan ``sd``: ddof=1).
    """
    earn, height = np.asarray(data["earn"], float), np.asarray(data["height"], float)
    ones = np.ones_like(earn)
    if model == "earn_height":
        X, y = np.column_stack([ones, height]), earn
    else:
        male = np.asarray(data["male"], float)
        if model == "logearn_interaction_z":
            height = (height - height.mean()) / height.std(ddof=1)
        elif model != "logearn_interaction":
            raise ValueError(f"unknown earnings model {model!r}")
        X, y = np.column_stack([ones, height, male, height * male]), np.log(earn)
    return _tensor(X, dtype), _tensor(y, dtype)


def kidiq_data(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(X, y)`` for ``kidscore_interaction``: ``X = [1, mom_hs, mom_iq, mom_hs * mom_iq]``."""
    hs, iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    X = np.column_stack([np.ones_like(hs), hs, iq, hs * iq])
    return _tensor(X, dtype), _tensor(data["kid_score"], dtype)


def mesquite_data(data: dict[str, Any], model: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(X, y)`` for ``mesquite`` (raw scale) and ``logmesquite_logvas`` (logs, as in Stan)."""
    d = {k: np.asarray(data[k], float) for k in
         ("weight", "diam1", "diam2", "canopy_height", "total_height", "density", "group")}
    ones = np.ones_like(d["weight"])
    if model == "mesquite":
        cols = [d[k] for k in ("diam1", "diam2", "canopy_height", "total_height", "density")]
        y = d["weight"]
    elif model == "logmesquite_logvas":
        area = d["diam1"] * d["diam2"]
        cols = [np.log(area * d["canopy_height"]), np.log(area), np.log(d["diam1"] / d["diam2"]),
                np.log(d["total_height"]), np.log(d["density"])]
        y = np.log(d["weight"])
    else:
        raise ValueError(f"unknown mesquite model {model!r}")
    X = np.column_stack([ones, *cols, d["group"]])
    return _tensor(X, dtype), _tensor(y, dtype)
