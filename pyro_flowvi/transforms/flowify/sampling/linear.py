"""The square SVD-parametrised linear layer as a sampling-direction ``TransformModule``.

Forward is the *sampling* direction (base -> latent), as for every
:class:`~pyro_flowvi.transforms.base.FlowTransform`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_flowvi.transforms.base import FlowTransform
from pyro_flowvi.transforms.flowify.svd import SVDFactors

__all__ = ["SVDLinear"]


class SVDLinear(FlowTransform):
    """Square flowified linear layer as a Pyro ``TransformModule``: ``y = U diag(s) V^T x + b``.

    .. math:: \\log|\\det J| = \\sum_i \\log s_i, \\qquad x = V\\,\\big(U^\\top (y - b) / s\\big).

    Covers the invertible matrices with ``det W > 0``; starts at the identity.  The family is
    closed under inversion, so it serves both as a density-direction layer (flowified nets) and as
    a sampling-direction flow layer (guides).  With ``context_dim`` the bias is shifted by a
    zero-initialised linear function of the context.  Cost: one ``matrix_exp`` per rotation per
    call (O(d^3)); use ``rotation="householder"`` for ``d`` in the hundreds.

    Args:
        dim: feature size.
        context_dim: context size (bias shift), or ``None``.
        bias: learn ``b``.
        init: ``"identity"`` or ``"random"`` (random rotations, as the paper's code).
        max_log_scale: soft bound ``B`` of the log singular values.
        rotation: ``"exp"`` or ``"householder"``.
        factors: share an existing :class:`SVDFactors` (used by :class:`FlowifiedLinear`).

    Example:
        >>> t = SVDLinear(3)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t(x), x)
        True
    """

    def __init__(self, dim: int, context_dim: int | None = None, bias: bool = True,
                 init: str = "identity", max_log_scale: float = 8.0, rotation: str = "exp",
                 factors: SVDFactors | None = None) -> None:
        super().__init__(dim, context_dim)
        self.factors = factors or SVDFactors(dim, dim, bias, context_dim, init, max_log_scale,
                                             rotation)

    @property
    def weight(self) -> Tensor:
        return self.factors.weight

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factors
        log_s = f.log_scales()
        y = (x @ f.v() * log_s.exp()) @ f.u().T
        shift = f.shift(context)
        if shift is not None:
            y = y + shift
        return y, log_s.sum().expand(y.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factors
        log_s = f.log_scales()
        shift = f.shift(context)
        if shift is not None:
            y = y - shift
        x = (y @ f.u() * torch.exp(-log_s)) @ f.v().T
        return x, log_s.sum().expand(x.shape[:-1])
