"""Affine autoregressive flows: IAF in the forward (sampling) direction, MAF as its inverse."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyro_flowvi.nn.made import MADE
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowTransform, Inverted
from pyro_flowvi.transforms.elementwise import AffineTransformer

__all__ = [
    "AffineAutoregressive",
    "ConditionalAffineAutoregressive",
    "conditional_iaf",
    "iaf",
    "maf",
]


class AffineAutoregressive(FlowTransform):
    """Inverse autoregressive flow layer: a MADE drives an elementwise affine transformer.

    .. math::

        y_i = s_i(x_{<i}; c)\\, x_i + t_i(x_{<i}; c), \\qquad
        \\log|\\det J| = \\sum_i \\log s_i(x_{<i}; c),

    where ``<i`` is "earlier in ``order``" and ``c`` the optional context.  Forward (sampling, IAF)
    is one MADE pass; the inverse (density of arbitrary points) needs ``D`` sequential passes.
    ``Inverted(layer)`` (or :func:`maf`) swaps the two costs: that is MAF.

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improving Variational Inference
        with Inverse Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934.
        Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
        NeurIPS 2017, arXiv:1705.07057.

    Args:
        dim: event size ``D``.
        hidden_dims: MADE hidden sizes.
        context_dim: context size (use :class:`ConditionalAffineAutoregressive`), or ``None``.
        order: autoregressive order (a permutation of ``range(D)``), default natural.
        scale: ``"exp"`` (soft-clamped), ``"softplus"`` or ``"sigmoid"`` (gated, stable).
        max_log_scale: soft clamp bound for ``"exp"``.

    Example:
        >>> layer = AffineAutoregressive(3, hidden_dims=[16])
        >>> x = torch.randn(5, 3)
        >>> y, ladj = layer.call_and_ladj(x)
        >>> torch.allclose(y, x), ladj.shape   # identity at initialisation
        (True, torch.Size([5]))
    """

    autoregressive = True

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        order: Tensor | None = None,
        scale: str = "exp",
        max_log_scale: float | None = 3.0,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(dim, context_dim)
        self.transformer = AffineTransformer(scale, max_log_scale)
        self.conditioner = MADE(
            dim, hidden_dims, self.transformer.num_params, context_dim, order, activation
        )

    @property
    def order(self) -> Tensor:
        return self.conditioner.order

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        shift, raw = self.conditioner.forward(x, context).unbind(-2)
        y, log_s = self.transformer.forward(x, (shift, raw))
        return y, log_s.sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # After pass k the first k coordinates (in ``order``) are exact: D passes invert fully.
        x = torch.zeros_like(y)
        log_s = y
        for _ in range(self.dim):
            shift, raw = self.conditioner.forward(x, context).unbind(-2)
            x, log_s = self.transformer.inverse(y, (shift, raw))
        return x, log_s.sum(-1)


class ConditionalAffineAutoregressive(ConditionalFlowTransform):
    """Conditional IAF layer: the context ``h`` enters every MADE (Kingma et al. 2016).

    ``condition(h)`` returns the layer with the context bound; arguments as
    :class:`AffineAutoregressive`.

    Example:
        >>> t = ConditionalAffineAutoregressive(3, context_dim=2, hidden_dims=[16])
        >>> t.condition(torch.randn(7, 2))(torch.randn(7, 3)).shape
        torch.Size([7, 3])
    """

    def __init__(self, dim: int, context_dim: int, **kwargs: object) -> None:
        super().__init__(AffineAutoregressive(dim, context_dim=context_dim, **kwargs))


def iaf(dim: int, hidden_dims: Sequence[int] = (64, 64), **kwargs: object) -> AffineAutoregressive:
    """One IAF layer (sampling = one pass).  See :class:`AffineAutoregressive`."""
    return AffineAutoregressive(dim, hidden_dims, **kwargs)


def maf(dim: int, hidden_dims: Sequence[int] = (64, 64), **kwargs: object) -> Inverted:
    """One MAF layer: the inverse of an IAF layer (density = one pass, sampling = D passes)."""
    return Inverted(AffineAutoregressive(dim, hidden_dims, **kwargs))


def conditional_iaf(
    dim: int, context_dim: int, hidden_dims: Sequence[int] = (64, 64), **kwargs: object
) -> ConditionalAffineAutoregressive:
    """One conditional IAF layer.  See :class:`ConditionalAffineAutoregressive`."""
    return ConditionalAffineAutoregressive(dim, context_dim, hidden_dims=hidden_dims, **kwargs)
