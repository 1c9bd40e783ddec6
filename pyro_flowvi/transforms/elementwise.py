"""Elementwise transformers: the univariate bijections that coupling and autoregressive layers drive.

A transformer maps each coordinate with its own parameters produced by a conditioner.  It declares
``num_params`` so the conditioner's output size is derived, never hand-written, and provides

* ``forward(x, params) -> (y, log|dy/dx|)`` and
* ``inverse(y, params) -> (x, log|dy/dx|)`` (the forward map's log-derivative at ``x``),

elementwise, with ``params`` of shape ``(..., num_params, D)``, all zeros meaning the identity
(or, for the gated affine scale, a fixed contraction).  :class:`AffineTransformer` is here;
:class:`~pyro_flowvi.transforms.spline.SplineTransformer` (rational-quadratic splines) in
:mod:`pyro_flowvi.transforms.spline`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SCALES", "AffineTransformer", "ComposedTransformer", "Transformer"]

SCALES = ("exp", "softplus", "sigmoid")


class Transformer(Protocol):
    """What coupling and autoregressive structures need of an elementwise transformer."""

    num_params: int

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]: ...

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]: ...


class AffineTransformer:
    """Affine map ``y = s * x + t`` per coordinate, with a choice of scale parametrisation.

    Given raw conditioner outputs ``params = (t, a)`` stacked on dimension ``-2``:

    * ``"exp"``: :math:`\\log s = B \\tanh(a / B)` (a soft clamp to ``(-B, B)``; ``B =
      max_log_scale``, ``None`` for no clamp), :math:`y = e^{\\log s} x + t`.  With ``B = 1`` this is
      the ``tanh``-bounded RealNVP scale.
    * ``"softplus"``: :math:`s = \\mathrm{softplus}(a + a_0) + s_{min}` with :math:`a_0` chosen
      so that ``a = 0`` gives ``s = 1``; :math:`y = s x + t`.
    * ``"sigmoid"`` (the gated "stable" IAF update of Kingma et al. 2016):
      :math:`\\sigma = \\mathrm{sigmoid}(a + b)`, :math:`y = \\sigma x + (1 - \\sigma) t`, with
      forget bias ``b = sigmoid_bias``.

    In every case :math:`\\log|dy/dx| = \\log s` (or :math:`\\log\\sigma`).  Raw outputs of zero give
    the identity for ``"exp"`` and ``"softplus"`` and the contraction ``y = sigmoid(b) x`` for
    ``"sigmoid"``.

    Example:
        >>> f = AffineTransformer("exp")
        >>> y, log_s = f.forward(torch.tensor([1.0]), torch.tensor([[2.0], [0.0]]))
        >>> y, log_s
        (tensor([3.]), tensor([0.]))
    """

    num_params = 2

    def __init__(
        self,
        scale: str = "exp",
        max_log_scale: float | None = 3.0,
        min_scale: float = 1e-3,
        sigmoid_bias: float = 2.0,
    ) -> None:
        if scale not in SCALES:
            raise ValueError(f"AffineTransformer: unknown scale {scale!r}; choose one of {SCALES}")
        if max_log_scale is not None and max_log_scale <= 0:
            raise ValueError("AffineTransformer: max_log_scale must be positive or None")
        self.scale = scale
        self.max_log_scale = max_log_scale
        self.min_scale = min_scale
        self.sigmoid_bias = sigmoid_bias
        # softplus(a0) + min_scale = 1  <=>  a0 = log(expm1(1 - min_scale))
        self._softplus_offset = math.log(math.expm1(1.0 - min_scale))

    def __repr__(self) -> str:
        return f"AffineTransformer(scale={self.scale!r}, max_log_scale={self.max_log_scale})"

    def _log_scale(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(s, log s)`` for the ``exp`` and ``softplus`` parametrisations."""
        if self.scale == "exp":
            b = self.max_log_scale
            log_s = raw if b is None else b * torch.tanh(raw / b)
            return torch.exp(log_s), log_s
        s = F.softplus(raw + self._softplus_offset) + self.min_scale
        return s, torch.log(s)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log|dy/dx|)`` elementwise; ``params`` of shape ``(..., 2, D)``."""
        shift, raw = params.unbind(-2)
        if self.scale == "sigmoid":
            gate = raw + self.sigmoid_bias
            sigma = torch.sigmoid(gate)
            # sigma x + (1 - sigma) t = t + sigma (x - t): two fused kernels
            return torch.addcmul(shift, sigma, x - shift), F.logsigmoid(gate)
        s, log_s = self._log_scale(raw)
        return torch.addcmul(shift, s, x), log_s

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, log|dy/dx|)`` elementwise, the log-det being the forward map's."""
        shift, raw = params.unbind(-2)
        if self.scale == "sigmoid":
            gate = raw + self.sigmoid_bias
            sigma = torch.sigmoid(gate)
            return (y - (1 - sigma) * shift) / sigma, F.logsigmoid(gate)
        s, log_s = self._log_scale(raw)
        return (y - shift) / s, log_s


class ComposedTransformer:
    """Elementwise composition ``tau_n o ... o tau_1`` of transformers, each with its own share
    of the conditioner's outputs (``num_params`` is the sum).

    .. math:: \\log|\\tau'(x)| = \\sum_k \\log|\\tau_k'(x_{k-1})|,\\qquad x_0 = x.

    E.g. a spline followed by an affine map moves and scales what the spline shapes, and its
    tails are linear with the affine slope instead of the identity.

    Example:
        >>> from pyro_flowvi.transforms.spline import SplineTransformer
        >>> f = ComposedTransformer(SplineTransformer(count_bins=4), AffineTransformer())
        >>> f.num_params
        13
        >>> params = torch.randn(13, 3)
        >>> x = torch.randn(3)
        >>> y, log_grad = f.forward(x, params)
        >>> torch.allclose(f.inverse(y, params)[0], x, atol=1e-5)
        True
    """

    def __init__(self, *transformers: Transformer) -> None:
        if not transformers:
            raise ValueError("ComposedTransformer: give at least one transformer")
        self.transformers = transformers
        self.splits = [t.num_params for t in transformers]
        self.num_params = sum(self.splits)

    def __repr__(self) -> str:
        return f"ComposedTransformer({', '.join(map(repr, self.transformers))})"

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log|dy/dx|)`` elementwise, applying the parts in order."""
        total: Tensor | None = None
        for t, p in zip(self.transformers, params.split(self.splits, dim=-2), strict=True):
            x, log_grad = t.forward(x, p)
            total = log_grad if total is None else total + log_grad
        assert total is not None
        return x, total

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, log|dy/dx|)`` elementwise, undoing the parts in reverse order."""
        total: Tensor | None = None
        parts = list(zip(self.transformers, params.split(self.splits, dim=-2), strict=True))
        for t, p in reversed(parts):
            y, log_grad = t.inverse(y, p)
            total = log_grad if total is None else total + log_grad
        assert total is not None
        return y, total
