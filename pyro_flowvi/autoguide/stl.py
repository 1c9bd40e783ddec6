"""The sticking-the-landing posterior: sample from the live flow, score under a detached copy."""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

__all__ = ["PathDerivativePosterior"]


class PathDerivativePosterior(dist.TorchDistribution):
    """``rsample`` from the live posterior, ``log_prob`` under a parameter-detached copy.

    The sticking-the-landing estimator (Roeder et al. 2017): the ELBO's gradient keeps only the
    path derivative :math:`\\nabla_z [\\log p(x, z) - \\log q_{\\bar\\phi}(z)]\\, \\partial z /
    \\partial \\phi` and drops the score term :math:`\\mathbb E_q[\\nabla_\\phi \\log
    q_\\phi(z)] = 0`, whose sample noise dominates near convergence.
    """

    arg_constraints: dict = {}
    has_rsample = True
    support = constraints.real_vector

    def __init__(
        self, live: dist.TransformedDistribution, frozen_log_prob: Callable[[Tensor], Tensor]
    ) -> None:
        # ``frozen_log_prob`` runs after ``rsample``: a flow with data-dependent initialisation
        # (ActNorm) has then initialised the live parameters the frozen twin shares.
        self.live, self.frozen_log_prob = live, frozen_log_prob
        super().__init__(live.batch_shape, live.event_shape, validate_args=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self.live.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.frozen_log_prob(value)
