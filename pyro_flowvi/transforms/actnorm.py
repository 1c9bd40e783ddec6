"""ActNorm: per-feature affine map with data-dependent initialisation (Kingma & Dhariwal 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.base import FlowTransform

__all__ = ["ActNorm"]


class ActNorm(FlowTransform):
    """``y = x * exp(ell) + b`` per feature; ``log|det J| = sum(ell)``.

    On its first call (either direction) the parameters are set from that batch so that the call's
    *output* has zero mean and unit variance per feature:

    * forward first (e.g. base samples in VI): :math:`\\ell = -\\log\\sigma_x`, :math:`b = -\\mu_x
      e^{\\ell}`;
    * inverse first (data in maximum likelihood): :math:`\\ell = \\log\\sigma_y`, :math:`b = \\mu_y`.

    The ``initialized`` buffer is saved in the ``state_dict``; pass ``data_init=False`` to start
    at the identity instead.  A batch of fewer than two points leaves the identity in place.

    References:
        Kingma, Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018, arXiv:1807.03039.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> t = ActNorm(2)
        >>> y = t(3.0 + 5.0 * torch.randn(1000, 2))
        >>> y.mean(0).abs().max() < 1e-5, (y.std(0) - 1).abs().max() < 1e-4
        (tensor(True), tensor(True))
    """

    initialized: Tensor

    def __init__(self, dim: int, data_init: bool = True, eps: float = 1e-6) -> None:
        super().__init__(dim)
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(not data_init))
        self._initialized_host: bool | None = None  # mirrors the buffer; read once (one sync)

    def _maybe_init(self, v: Tensor, forward: bool) -> None:
        if self._initialized_host is None:
            self._initialized_host = bool(self.initialized)
        if self._initialized_host:
            return
        flat = v.detach().reshape(-1, self.dim)
        if flat.shape[0] >= 2:
            mean = flat.mean(0)
            std = flat.std(0) + self.eps
            with torch.no_grad():
                if forward:
                    self.log_scale.copy_(-torch.log(std))
                    self.shift.copy_(-mean / std)
                else:
                    self.log_scale.copy_(torch.log(std))
                    self.shift.copy_(mean)
        self.initialized.fill_(True)
        self._initialized_host = True

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._initialized_host = None
        super()._load_from_state_dict(*args, **kwargs)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._maybe_init(x, forward=True)
        return x * torch.exp(self.log_scale) + self.shift, self.log_scale.sum().expand(x.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._maybe_init(y, forward=False)
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, self.log_scale.sum().expand(y.shape[:-1])
