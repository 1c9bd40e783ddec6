"""Heavy tails for flows: an elementwise Tukey-h layer with a learned tail index per side.

Triangular flows of Lipschitz maps keep the base's Gaussian tails (Jaini et al. 2020), and spline
layers are the identity outside their interval.  A final elementwise layer that grows faster than
linearly gives the flow power-law tails, with the tail weight learned per coordinate and side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_flowvi.transforms.base import FlowTransform

__all__ = ["TukeyTails", "lambert_w"]


def lambert_w(x: Tensor, iterations: int = 6) -> Tensor:
    """The principal branch :math:`W(x)` for ``x >= 0`` (``w e^w = x``), by Newton's method on
    :math:`w + \\log w = \\log x`, started at :math:`\\log(1 + x)` (within a factor 2 of the root).
    ``iterations`` of 6 reach float64 round-off over ``[0, 1e300]``.

    Example:
        >>> w = lambert_w(torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64))
        >>> torch.allclose(w * w.exp(), torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64))
        True
    """
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))
    log_x = safe.log()
    w = torch.log1p(safe)
    for _ in range(iterations):
        w = w - (w + w.log() - log_x) * w / (w + 1)
    return torch.where(positive, w, torch.zeros_like(x))


class TukeyTails(FlowTransform):
    """Elementwise Tukey-h transform with separate tail weights for each side of each coordinate.

    .. math::

        y = z \\exp\\left(\\tfrac{h}{2} z^2\\right), \\qquad
        \\log\\left|\\frac{dy}{dz}\\right| = \\tfrac{h}{2} z^2 + \\log(1 + h z^2), \\qquad
        z = \\operatorname{sign}(y) \\sqrt{W(h y^2) / h},

    with :math:`h = h_+` for :math:`z > 0` and :math:`h_-` otherwise, :math:`h_\\pm =
    \\mathrm{softplus}(\\cdot) \\geq 0` learned per coordinate, and :math:`W` the Lambert
    function.  For a Gaussian :math:`z` the tail :math:`P(y > t)` decays like :math:`t^{-1/h}`
    up to logarithms: tail index :math:`1/h` (a Student-t with :math:`\\nu` degrees of freedom
    has tail index :math:`\\nu`).  ``h = 0`` is the identity; layers start at
    ``init_tail_weight`` (default ``1e-3``: Gaussian tails for all practical purposes).  Put it
    last in a flow (the sampling direction's final layer), where it shapes the tails of what the
    other layers built; the inverse is analytic (Lambert W by Newton's method, with the exact
    implicit-function gradient).

    References:
        Tukey, "Modern techniques in data analysis", 1977 (the g-and-h family).
        Jaini, Kobyzev, Yu, Brubaker, "Tails of Lipschitz Triangular Flows", ICML 2020,
        arXiv:1907.04481.
        Hickling, Prangle, "Flexible Tails for Normalizing Flows", ICML 2025, arXiv:2406.16971.

    Args:
        dim: event size ``D``.
        init_tail_weight: the starting :math:`h_\\pm` (positive).

    Example:
        >>> t = TukeyTails(2)
        >>> with torch.no_grad():
        ...     _ = t.raw_tail_weight.fill_(math.log(math.expm1(0.5)))  # h = 0.5: tail index 2
        >>> y = t(torch.tensor([0.0, 3.0])).detach()
        >>> y
        tensor([ 0.0000, 28.4632])
        >>> t.inv(y).detach()
        tensor([0.0000, 3.0000])
    """

    def __init__(self, dim: int, init_tail_weight: float = 1e-3) -> None:
        super().__init__(dim)
        if not init_tail_weight > 0:
            raise ValueError(f"TukeyTails: init_tail_weight must be positive, got "
                             f"{init_tail_weight!r}")
        raw = math.log(math.expm1(init_tail_weight))
        self.raw_tail_weight = nn.Parameter(torch.full((2, dim), raw))  # rows: h_+, h_-

    def tail_weight(self) -> Tensor:
        """``(2, D)``: :math:`h_+` (row 0) and :math:`h_-` (row 1)."""
        return F.softplus(self.raw_tail_weight)

    def tail_index(self) -> Tensor:
        """``(2, D)``: :math:`1 / h_\\pm`, the implied tail index of a Gaussian input."""
        return 1.0 / self.tail_weight()

    def _h(self, v: Tensor) -> Tensor:
        h_pos, h_neg = self.tail_weight().unbind(0)
        return torch.where(v > 0, h_pos, h_neg)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self._h(x)
        hz2 = h * x.square()
        return x * torch.exp(0.5 * hz2), (0.5 * hz2 + torch.log1p(hz2)).sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self._h(y)  # sign(z) = sign(y)
        with torch.no_grad():  # the root; the gradient comes from one Newton step below
            hz2 = lambert_w(h * y.square())
            z = torch.sign(y) * torch.sqrt(torch.where(h > 0, hz2 / h, y.square()))
        # z - (f(z) - y) / f'(z): the same value, with the implicit-function gradient in y and h
        hz2 = h * z.square()
        grow = torch.exp(0.5 * hz2)
        z = z - (z * grow - y) / (grow * (1 + hz2))
        hz2 = h * z.square()
        return z, (0.5 * hz2 + torch.log1p(hz2)).sum(-1)
