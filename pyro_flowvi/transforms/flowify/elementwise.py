"""Elementwise maths shared by both directions: LeakyReLU and the flowified layers' splines.

Each function returns the value and the log-derivative of the *forward* map, so the density
layers (:mod:`~pyro_flowvi.transforms.flowify.density`) and the sampling-direction transforms
(:mod:`~pyro_flowvi.transforms.flowify.sampling`) use them alike.

The spline is the monotone rational-quadratic spline of :mod:`pyro_flowvi.transforms.spline`
(its maths and its formula live there), here with *free* parameters rather than a conditioner's:
**one spline shared by all units** of the layer (``shared=True``, as nflows'
``PiecewiseRationalQuadraticCDF`` in the flowification experiments) or one per unit.

References:
    Mate, Klein, Golling, Fleuret, "Flowification", NeurIPS 2022, arXiv:2205.15209.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.spline import (
    MIN_BIN,
    MIN_DERIVATIVE,
    rational_quadratic_spline,
    spline_knots,
)

__all__ = ["MIN_BIN", "MIN_DERIVATIVE", "SplineParameters", "leaky_relu_and_log_grad",
           "rational_quadratic_spline"]


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
        return spline_knots(self.widths, self.heights, self.derivatives, self.bound)
