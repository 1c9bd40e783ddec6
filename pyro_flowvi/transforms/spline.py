"""Monotone rational-quadratic splines: the maths, and the elementwise spline transformer.

The spline is that of Durkan et al. (2019) on ``[-B, B]`` with ``K`` bins and identity (slope 1)
tails outside.  Knots :math:`(x_k, y_k)`, :math:`k = 0..K`, run from ``(-B, -B)`` to ``(B, B)``;
the knot derivatives :math:`\\delta_k` are 1 at both ends (so the derivative is continuous into
the tails) and positive inside.  In bin ``k`` with :math:`\\xi = (x - x_k)/w_k`,
:math:`s_k = h_k / w_k`,

.. math::

    y = y_k + \\frac{h_k\\,[s_k \\xi^2 + \\delta_k \\xi(1-\\xi)]}
                    {s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\,\\xi(1-\\xi)},\\qquad
    \\frac{dy}{dx} = \\frac{s_k^2\\,[\\delta_{k+1}\\xi^2 + 2 s_k \\xi(1-\\xi) + \\delta_k (1-\\xi)^2]}
                          {[s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\,\\xi(1-\\xi)]^2},

and the inverse is the root in ``[0, 1]`` of a quadratic in :math:`\\xi`.  Raw parameters map to
knots by a softmax for widths and heights (each bin at least ``MIN_BIN`` of the interval) and a
softplus for the inner derivatives (at least ``MIN_DERIVATIVE``), offset so that zero raw
parameters give the identity.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019, arXiv:1906.04032.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MIN_BIN", "MIN_DERIVATIVE", "SplineTransformer", "rational_quadratic_spline",
           "spline_knots"]

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
_DERIVATIVE_OFFSET = math.log(math.expm1(1 - MIN_DERIVATIVE))  # softplus(offset) + min = 1


def spline_knots(widths: Tensor, heights: Tensor, derivatives: Tensor,
                 bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Knot abscissae, ordinates (``(..., K+1)``, from ``-B`` to ``B``) and derivatives from raw
    parameters ``widths (..., K)``, ``heights (..., K)``, ``derivatives (..., K-1)``.

    Example:
        >>> kx, ky, kd = spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(3), 2.0)
        >>> kx, kd
        (tensor([-2., -1.,  0.,  1.,  2.]), tensor([1., 1., 1., 1., 1.]))
    """
    k = widths.shape[-1]
    raw = torch.stack(torch.broadcast_tensors(widths, heights), -2)  # widths and heights at once
    w = torch.softmax(raw, -1) * (1 - k * MIN_BIN) + MIN_BIN
    cum = torch.cumsum(w[..., :-1], -1)  # inner knots; the ends are exactly 0 and 1
    cum = F.pad(cum, (1, 0), value=0.0)
    cum = F.pad(cum, (0, 1), value=1.0)
    kx, ky = (2 * bound * cum - bound).unbind(-2)
    inner = F.softplus(derivatives + _DERIVATIVE_OFFSET) + MIN_DERIVATIVE
    return kx, ky, F.pad(inner, (1, 1), value=1.0)


def rational_quadratic_spline(x: Tensor, knots: tuple[Tensor, Tensor, Tensor], bound: float,
                              inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; returns ``(value, log dy/dx)`` where the
    log-derivative is always the *forward* map's, at the input (forward) or output (inverse).

    ``knots`` from :func:`spline_knots`, either one spline ``(K+1,)`` for every element or one per
    element, broadcastable to ``x.shape + (K+1,)``.

    Example:
        >>> knots = spline_knots(torch.zeros(4), torch.zeros(4), torch.zeros(3), 2.0)
        >>> rational_quadratic_spline(torch.tensor([-3.0, 0.5]), knots, 2.0)
        (tensor([-3.0000,  0.5000]), tensor([0., 0.]))
    """
    kx, ky, kd = knots
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    grid = ky if inverse else kx
    # bin index = number of inner knots at or left of the point (K small: a compare beats a
    # batched searchsorted, which needs contiguous per-element copies of the grid)
    idx = (xc.unsqueeze(-1) >= grid[..., 1:-1]).sum(-1, keepdim=True)
    table = torch.stack([kx, ky, kd], -2)  # (..., 3, K+1): one gather for all six numbers
    index = torch.cat([idx, idx + 1], -1).unsqueeze(-2)
    batch = torch.broadcast_shapes(index.shape[:-2], table.shape[:-2])
    lo, hi = torch.gather(table.expand(batch + table.shape[-2:]), -1,
                          index.expand(batch + (3, 2))).unbind(-1)
    (x0, y0, d0), (x1, y1, d1) = lo.unbind(-1), hi.unbind(-1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    curv = d1 + d0 - 2 * s
    if inverse:
        dy = xc - y0
        a = h * (s - d0) + dy * curv
        b = h * d0 - dy * curv
        c = -s * dy
        disc = (b.square() - 4 * a * c).clamp_min(0.0)
        xi = (2 * c) / (-b - disc.sqrt())  # the stable root of a xi^2 + b xi + c = 0
        out = x0 + xi * w
    else:
        xi = (xc - x0) / w
        out = y0 + h * (s * xi.square() + d0 * xi * (1 - xi)) / (s + curv * xi * (1 - xi))
    xi1 = xi * (1 - xi)
    den = s + curv * xi1
    log_grad = (2 * torch.log(s) + torch.log(d1 * xi.square() + 2 * s * xi1 + d0 * (1 - xi).square())
                - 2 * torch.log(den))
    return torch.where(inside, out, x), torch.where(inside, log_grad, 0.0)


class SplineTransformer:
    """Elementwise rational-quadratic spline transformer for coupling and autoregressive layers.

    A conditioner gives ``num_params = 3 K - 1`` raw numbers per coordinate (``K`` widths, ``K``
    heights, ``K - 1`` inner derivatives), shaped ``(..., num_params, D)``; zeros give the
    identity.  Outside ``[-bound, bound]`` the map is the identity, so the layer keeps the tails
    of whatever feeds it: pair it with a heavy-tailed base where tails matter.  Both directions
    are analytic and cost the same.

    Args:
        count_bins: ``K``, the number of bins (at least 2).
        bound: ``B``; the spline acts on ``[-B, B]``.

    Example:
        >>> f = SplineTransformer(count_bins=4, bound=3.0)
        >>> params = torch.randn(f.num_params, 2)
        >>> y, log_grad = f.forward(torch.tensor([0.3, -5.0]), params)
        >>> x, _ = f.inverse(y, params)
        >>> torch.allclose(x, torch.tensor([0.3, -5.0]), atol=1e-5), log_grad[1]
        (True, tensor(0.))
    """

    def __init__(self, count_bins: int = 8, bound: float = 3.0) -> None:
        if isinstance(count_bins, bool) or not isinstance(count_bins, int) or count_bins < 2:
            raise ValueError(f"SplineTransformer: count_bins must be an integer >= 2, got "
                             f"{count_bins!r}")
        if not isinstance(bound, int | float) or not bound > 0:
            raise ValueError(f"SplineTransformer: bound must be a positive number, got {bound!r}")
        self.count_bins = count_bins
        self.bound = float(bound)
        self.num_params = 3 * count_bins - 1

    def __repr__(self) -> str:
        return f"SplineTransformer(count_bins={self.count_bins}, bound={self.bound})"

    def _apply(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw = params.movedim(-2, -1).contiguous()  # (..., D, 3K - 1)
        k = self.count_bins
        widths, heights, derivatives = raw.split([k, k, k - 1], dim=-1)
        knots = spline_knots(widths, heights, derivatives, self.bound)
        v = v.expand(torch.broadcast_shapes(v.shape, raw.shape[:-1]))
        return rational_quadratic_spline(v, knots, self.bound, inverse)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log|dy/dx|)`` elementwise; ``params`` of shape ``(..., num_params, D)``."""
        return self._apply(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, log|dy/dx|)`` elementwise, the log-det being the forward map's at ``x``."""
        return self._apply(y, params, inverse=True)
