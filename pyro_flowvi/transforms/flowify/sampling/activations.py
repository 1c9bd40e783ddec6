"""Invertible activations as sampling-direction transforms: LeakyReLU and a shared spline.

Forward is the *sampling* direction (base -> latent), as for every
:class:`~pyro_flowvi.transforms.base.FlowTransform`; ``log|det J|`` is that of the forward map.
The maths is in :mod:`pyro_flowvi.transforms.flowify.elementwise`.
"""

from __future__ import annotations

from torch import Tensor

from pyro_flowvi.transforms.base import FlowTransform
from pyro_flowvi.transforms.flowify.elementwise import (
    SplineParameters,
    leaky_relu_and_log_grad,
    rational_quadratic_spline,
)

__all__ = ["InvertibleLeakyReLU", "SharedSpline"]


class InvertibleLeakyReLU(FlowTransform):
    """LeakyReLU with slope ``alpha`` on negatives as a ``TransformModule`` on ``R^dim``.

    .. math:: \\log|\\det J| = \\#\\{i : x_i < 0\\} \\cdot \\log\\alpha.

    Not the identity at initialisation (it has no parameters).

    Example:
        >>> InvertibleLeakyReLU(2)(torch.tensor([-1.0, 3.0]))
        tensor([-0.5000,  3.0000])
    """

    def __init__(self, dim: int, negative_slope: float = 0.5) -> None:
        super().__init__(dim)
        if not negative_slope > 0:
            raise ValueError(f"InvertibleLeakyReLU: negative_slope must be > 0 (got "
                             f"{negative_slope}); a ReLU (slope 0) has no density")
        self.negative_slope = float(negative_slope)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, lg = leaky_relu_and_log_grad(x, self.negative_slope)
        return y, lg.sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, lg = leaky_relu_and_log_grad(y, self.negative_slope, inverse=True)
        return x, lg.sum(-1)


class SharedSpline(FlowTransform):
    """Monotone rational-quadratic spline activation as a ``TransformModule`` on ``R^dim``.

    One spline for every coordinate (``shared=True``, the flowification paper's activation) or one
    per coordinate; identity tails outside ``[-bound, bound]``; starts at the identity.

    Example:
        >>> t = SharedSpline(3)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t(x), x, atol=1e-6)
        True
    """

    def __init__(self, dim: int, count_bins: int = 10, bound: float = 2.0,
                 shared: bool = True) -> None:
        super().__init__(dim)
        self.spline = SplineParameters(count_bins, bound, () if shared else (dim,))

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, lg = rational_quadratic_spline(x, self.spline.knots(), self.spline.bound)
        return y, lg.sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, lg = rational_quadratic_spline(y, self.spline.knots(), self.spline.bound, inverse=True)
        return x, lg.sum(-1)
