"""Elementwise maths shared by both directions: LeakyReLU and the monotone rational-quadratic spline.

Each function returns the value and the log-derivative of the *forward* map, so the density
layers (:mod:`~pyro_flowvi.transforms.flowify.density`) and the sampling-direction transforms
(:mod:`~pyro_flowvi.transforms.flowify.sampling`) use them alike.

The spline is the monotone rational-quadratic spline of Durkan et al. (2019) on ``[-B, B]`` with
``K`` bins and identity (linear, slope 1) tails, as nflows' ``PiecewiseRationalQuadraticCDF``
used by the flowification experiments: **one spline shared by all units** of the layer
(``shared=True``) or one per unit.  In bin ``k`` with :math:`\\xi = (x - x_k)/w_k`,
:math:`s_k = h_k / w_k` and knot derivatives :math:`\\delta_k`,

.. math::

    y = y_k + \\frac{h_k\\,[s_k \\xi^2 + \\delta_k \\xi(1-\\xi)]}
                    {s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\,\\xi(1-\\xi)},\\qquad
    \\frac{dy}{dx} = \\frac{s_k^2\\,[\\delta_{k+1}\\xi^2 + 2 s_k \\xi(1-\\xi) + \\delta_k (1-\\xi)^2]}
                          {[s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\,\\xi(1-\\xi)]^2},

and the inverse solves a quadratic in :math:`\\xi`.  Zero raw parameters give the identity.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019, arXiv:1906.04032.
    Mate, Klein, Golling, Fleuret, "Flowification", NeurIPS 2022, arXiv:2205.15209.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MIN_BIN", "MIN_DERIVATIVE", "SplineParameters", "leaky_relu_and_log_grad",
           "rational_quadratic_spline"]

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3


def leaky_relu_and_log_grad(x: Tensor, negative_slope: float,
                            inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Elementwise LeakyReLU (or its inverse) and ``log|sigma'|`` of the *forward* map."""
    neg = x < 0
    scale = 1.0 / negative_slope if inverse else negative_slope
    y = torch.where(neg, x * scale, x)
    log_grad = torch.where(neg, math.log(negative_slope), 0.0).to(x.dtype)
    return y, log_grad


class SplineParameters(nn.Module):
    """Raw parameters of ``count_bins``-bin monotone splines of ``shape`` (``()``: one shared)."""

    def __init__(self, count_bins: int = 10, bound: float = 2.0, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        if count_bins < 1 or not bound > 0:
            raise ValueError(f"spline: need count_bins >= 1 and bound > 0, got {count_bins}, {bound}")
        self.count_bins, self.bound = int(count_bins), float(bound)
        self.widths = nn.Parameter(torch.zeros(*shape, count_bins))
        self.heights = nn.Parameter(torch.zeros(*shape, count_bins))
        self.derivatives = nn.Parameter(torch.zeros(*shape, count_bins - 1))

    def knots(self) -> tuple[Tensor, Tensor, Tensor]:
        """Knot abscissae, ordinates (``(..., K+1)``, from ``-B`` to ``B``) and derivatives."""
        k, b = self.count_bins, self.bound

        def positions(raw: Tensor) -> Tensor:
            w = torch.softmax(raw, -1) * (1 - k * MIN_BIN) + MIN_BIN
            cum = F.pad(torch.cumsum(w, -1), (1, 0))
            cum = torch.cat([cum[..., :-1], torch.ones_like(cum[..., -1:])], -1)
            return 2 * b * cum - b

        offset = math.log(math.expm1(1 - MIN_DERIVATIVE))
        inner = F.softplus(self.derivatives + offset) + MIN_DERIVATIVE
        ones = torch.ones_like(inner[..., :1])
        return positions(self.widths), positions(self.heights), torch.cat([ones, inner, ones], -1)


def _gather(p: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(p.expand(idx.shape[:-1] + p.shape[-1:]), -1, idx).squeeze(-1)


def rational_quadratic_spline(x: Tensor, knots: tuple[Tensor, Tensor, Tensor], bound: float,
                              inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; returns ``(value, log dy/dx)`` where the
    log-derivative is always the *forward* map's, at the input (forward) or output (inverse).

    ``knots`` from :meth:`SplineParameters.knots`, broadcastable to ``x.shape + (K+1,)``.
    """
    kx, ky, kd = knots
    k = kx.shape[-1] - 1
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    grid = ky if inverse else kx
    seq = grid.expand(x.shape + grid.shape[-1:]).contiguous() if grid.dim() > 1 else grid
    if grid.dim() > 1:
        idx = torch.searchsorted(seq, xc[..., None].contiguous(), right=True) - 1
    else:
        idx = (torch.searchsorted(seq, xc.contiguous(), right=True) - 1)[..., None]
    idx = idx.clamp(0, k - 1)
    x0, x1 = _gather(kx, idx), _gather(kx, idx + 1)
    y0, y1 = _gather(ky, idx), _gather(ky, idx + 1)
    d0, d1 = _gather(kd, idx), _gather(kd, idx + 1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    curv = d1 + d0 - 2 * s
    if inverse:
        dy = xc - y0
        a = h * (s - d0) + dy * curv
        b = h * d0 - dy * curv
        c = -s * dy
        disc = (b.square() - 4 * a * c).clamp_min(0.0)
        xi = (2 * c) / (-b - disc.sqrt())
        out = x0 + xi * w
    else:
        xi = (xc - x0) / w
        out = y0 + h * (s * xi.square() + d0 * xi * (1 - xi)) / (s + curv * xi * (1 - xi))
    xi1 = xi * (1 - xi)
    den = s + curv * xi1
    log_grad = (2 * torch.log(s) + torch.log(d1 * xi.square() + 2 * s * xi1 + d0 * (1 - xi).square())
                - 2 * torch.log(den))
    return torch.where(inside, out, x), torch.where(inside, log_grad, 0.0)
