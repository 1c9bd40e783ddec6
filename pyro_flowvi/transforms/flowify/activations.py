"""Invertible elementwise activations as flows: LeakyReLU and a monotone rational-quadratic spline.

An invertible activation :math:`\\sigma` onto :math:`\\mathbb R` is an exact flowified layer with

.. math:: C = \\sum_i \\log|\\sigma'(x_i)|.

``ReLU`` (an atom at 0: no density) cannot be flowified; :func:`flowify_activation` refuses it.

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

from pyro_flowvi.transforms.base import FlowTransform
from pyro_flowvi.transforms.flowify.layer import FlowifiedLayer

__all__ = [
    "FlowifiedBijective",
    "FlowifiedLeakyReLU",
    "FlowifiedSpline",
    "InvertibleLeakyReLU",
    "SharedSpline",
    "SplineParameters",
    "flowify_activation",
    "leaky_relu_and_log_grad",
    "rational_quadratic_spline",
]

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


class _Elementwise(FlowifiedLayer):
    """An exact, shape-preserving layer; its shape is fixed by the container (default event dim 1)."""

    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.in_shape = self.out_shape = None if shape is None else tuple(shape)

    def resolve_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.in_shape is None:
            self.in_shape = self.out_shape = tuple(shape)
        return super().resolve_shape(shape)

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        y, lg = self._map(x, inverse=False)
        return y, lg.sum(tuple(range(-self._event_dims(x), 0)))

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        x, lg = self._map(y, inverse=True)
        return x, lg.sum(tuple(range(-self._event_dims(y), 0)))

    def _map(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class FlowifiedLeakyReLU(_Elementwise):
    """Flowified ``nn.LeakyReLU(negative_slope)`` (``0.5`` as in the paper's code):
    ``C = (#negative inputs) log alpha``; the inverse divides negatives by ``alpha``.

    Example:
        >>> y, c = FlowifiedLeakyReLU()(torch.tensor([[-2.0, 1.0]]))
        >>> y, c
        (tensor([[-1.,  1.]]), tensor([-0.6931]))
    """

    def __init__(self, negative_slope: float = 0.5, shape: tuple[int, ...] | None = None) -> None:
        super().__init__(shape)
        if not negative_slope > 0:
            raise ValueError(f"FlowifiedLeakyReLU: negative_slope must be > 0 (got "
                             f"{negative_slope}); a ReLU has no density and cannot be flowified")
        self.negative_slope = float(negative_slope)

    def _map(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return leaky_relu_and_log_grad(x, self.negative_slope, inverse)


class FlowifiedSpline(_Elementwise):
    """Flowified monotone spline activation (one spline shared by all units, or one per unit).

    Args:
        count_bins: number of bins ``K`` (10 in the paper).
        bound: the spline acts on ``[-bound, bound]`` (2 in the paper), identity outside.
        shared: one spline for all units (paper) or one per unit (needs ``features``).
        features: the event shape, required when ``shared=False``.

    Example:
        >>> layer = FlowifiedSpline()
        >>> y, c = layer(torch.randn(3, 5))
        >>> c.abs().max() < 1e-6
        tensor(True)
    """

    def __init__(self, count_bins: int = 10, bound: float = 2.0, shared: bool = True,
                 features: int | tuple[int, ...] | None = None) -> None:
        shape = (features,) if isinstance(features, int) else features
        if not shared and shape is None:
            raise ValueError("FlowifiedSpline: shared=False needs features=... (one spline per unit)")
        super().__init__(shape)
        self.spline = SplineParameters(count_bins, bound, () if shared else tuple(shape or ()))

    def _map(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(x, self.spline.knots(), self.spline.bound, inverse)


class FlowifiedBijective(FlowifiedLayer):
    """Any pyro_flowvi :class:`~pyro_flowvi.transforms.base.FlowTransform` as an exact flowified
    layer whose density direction is the transform's forward map: ``C = log|det J|``.

    Example:
        >>> from pyro_flowvi.transforms import ActNorm
        >>> layer = FlowifiedBijective(ActNorm(3, data_init=False))
        >>> layer(torch.zeros(2, 3))[1].tolist()
        [0.0, 0.0]
    """

    def __init__(self, transform: FlowTransform) -> None:
        super().__init__()
        if not transform.has_inverse:
            raise ValueError(f"FlowifiedBijective: {type(transform).__name__} has no inverse, so "
                             "it cannot sample in the flowified (inverse) direction")
        self.transform = transform
        self.in_shape = self.out_shape = (transform.dim,)
        self.context_dim = transform.context_dim

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        return self.transform.call_and_ladj(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse_and_ladj(y, context)


def flowify_activation(module: nn.Module) -> FlowifiedLayer:
    """The flowified counterpart of an ``nn`` activation; raises for non-invertible ones.

    Example:
        >>> flowify_activation(nn.LeakyReLU(0.2)).negative_slope
        0.2
    """
    if isinstance(module, nn.LeakyReLU):
        return FlowifiedLeakyReLU(module.negative_slope)
    if isinstance(module, nn.ReLU | nn.ReLU6 | nn.Hardtanh | nn.Hardsigmoid | nn.Threshold):
        raise ValueError(
            f"flowify: {type(module).__name__} is not invertible onto R (it puts an atom of mass "
            "on a point, which has no density); replace it by nn.LeakyReLU(0.5) or a "
            "FlowifiedSpline")
    raise ValueError(
        f"flowify: no flowified counterpart for {type(module).__name__}; use FlowifiedLeakyReLU, "
        "FlowifiedSpline or wrap an invertible FlowTransform with FlowifiedBijective")
