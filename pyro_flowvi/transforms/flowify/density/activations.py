"""Flowified activations (density direction): LeakyReLU, a monotone spline, any invertible transform.

An invertible activation :math:`\\sigma` onto :math:`\\mathbb R` is an exact flowified layer with

.. math:: C = \\sum_i \\log|\\sigma'(x_i)|.

``ReLU`` (an atom at 0: no density) cannot be flowified; :func:`flowify_activation` refuses it.

Forward is the *density* direction (data -> code) with the contribution ``C`` above; the
spline's maths is in :mod:`pyro_flowvi.transforms.flowify.elementwise`.

References:
    Mate, Klein, Golling, Fleuret, "Flowification", NeurIPS 2022, arXiv:2205.15209.
"""

from __future__ import annotations

from torch import Tensor, nn

from pyro_flowvi.transforms.base import FlowTransform
from pyro_flowvi.transforms.flowify.density.layer import FlowifiedLayer
from pyro_flowvi.transforms.flowify.elementwise import (
    SplineParameters,
    leaky_relu_and_log_grad,
    rational_quadratic_spline,
)

__all__ = ["FlowifiedBijective", "FlowifiedLeakyReLU", "FlowifiedSpline", "flowify_activation"]


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
