"""Adapters that let Pyro's own planar and radial flows sit inside a :class:`FlowStack`."""

from __future__ import annotations

from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor

from pyro_flowvi.transforms.base import FlowTransform

__all__ = ["PyroLayer"]


class PyroLayer(FlowTransform):
    """Wrap a Pyro ``TransformModule`` (or conditional one) with no analytic inverse.

    Planar (:math:`y = x + u\\,h(w^\\top x + b)`) and radial flows are invertible but have no
    closed-form inverse, so ``has_inverse`` is ``False``: they can sample and score their own
    samples (through the one-slot cache) but cannot evaluate the density of arbitrary points.

    Example:
        >>> from pyro.distributions.transforms import Planar
        >>> layer = PyroLayer(Planar(3), dim=3)
        >>> layer.call_and_ladj(torch.zeros(2, 3))[1].shape
        torch.Size([2])
    """

    has_inverse = False

    def __init__(
        self,
        transform: TransformModule | ConditionalTransformModule,
        dim: int,
        context_dim: int | None = None,
    ) -> None:
        super().__init__(dim, context_dim)
        self.transform = transform

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        t = self.transform if context is None else self.transform.condition(context)
        if context is not None:
            x = x.expand(context.shape[:-1] + x.shape[-1:]) if x.dim() < context.dim() else x
        y = t(x)
        return y, t.log_abs_det_jacobian(x, y).expand(y.shape[:-1])
