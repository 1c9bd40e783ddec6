"""The SVD parametrisation ``W = U diag(s) V^T`` shared by the square and the flowified linear layers.

``U in SO(d_out)`` and ``V in SO(d_in)`` are :class:`~pyro_flowvi.transforms.flowify.rotation.Rotation`
modules and ``s = exp(log_s)`` has ``d_out`` entries with the soft bound
:math:`\\log s = B \\tanh(\\tilde\\ell / B)` (``B = max_log_scale``); ``W`` is never decomposed.
Direction-neutral: :class:`~pyro_flowvi.transforms.flowify.SVDLinear` (sampling direction) and
:class:`~pyro_flowvi.transforms.flowify.FlowifiedLinear` (density direction) both hold one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.flowify.rotation import Rotation

__all__ = ["SVDFactors"]


class SVDFactors(nn.Module):
    """The parameters of ``W = U diag(s) V^T`` and ``b`` (plus a context-dependent bias shift).

    Example:
        >>> f = SVDFactors(3, 2)
        >>> f.weight.shape, f.singular_values.tolist()
        (torch.Size([2, 3]), [1.0, 1.0])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 context_dim: int | None = None, init: str = "identity",
                 max_log_scale: float = 8.0, rotation: str = "exp", seed: int = 0,
                 keep: str = "first") -> None:
        super().__init__()
        if keep not in ("first", "last"):
            raise ValueError(f"flowified linear: keep must be 'first' or 'last', got {keep!r}")
        self.keep = keep
        if min(in_features, out_features) < 1:
            raise ValueError(f"flowified linear: sizes must be positive, got "
                             f"({in_features}, {out_features})")
        if not max_log_scale > 0:
            raise ValueError(f"flowified linear: max_log_scale must be positive, got {max_log_scale}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.max_log_scale = float(max_log_scale)
        self.u = Rotation(out_features, rotation, init, seed=seed)
        self.v = Rotation(in_features, rotation, init, seed=seed + 1)
        raw = torch.zeros(out_features)
        if init == "random" and in_features != out_features:
            raw = torch.randn(out_features, generator=torch.Generator().manual_seed(seed + 2))
            raw = raw / math.sqrt(out_features)
        self.raw_log_scale = nn.Parameter(raw)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.context_bias = (None if context_dim is None
                             else nn.Linear(context_dim, out_features, bias=False))
        if self.context_bias is not None:
            nn.init.zeros_(self.context_bias.weight)

    def log_scales(self) -> Tensor:
        """``log s`` (``d_out`` entries), soft-bounded to ``[-B, B]``."""
        b = self.max_log_scale
        return b * torch.tanh(self.raw_log_scale / b)

    def shift(self, context: Tensor | None) -> Tensor | None:
        """The bias ``b`` (plus ``B_c c`` for a context ``c``), or ``None``."""
        out = self.bias
        if self.context_bias is not None and context is not None:
            cb = self.context_bias(context)
            out = cb if out is None else out + cb
        return out

    @property
    def singular_values(self) -> Tensor:
        """The ``min(d_in, d_out)`` singular values of ``W``."""
        return self.log_scales()[: min(self.in_features, self.out_features)].exp()

    @property
    def weight(self) -> Tensor:
        """The assembled ``W = U[:, :m] diag(s[:m]) V[:, :m]^T``, ``m = min(d_in, d_out)``."""
        m = min(self.in_features, self.out_features)
        v = self.v()
        v = v[:, v.shape[1] - m:] if self.keep == "last" else v[:, :m]
        u = self.u()[:, :m]
        return (u * self.log_scales()[:m].exp()) @ v.T
