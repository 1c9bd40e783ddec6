"""Autoregressive flows: a MADE conditioner drives any elementwise transformer (affine: IAF, and
MAF as its inverse; rational-quadratic spline: autoregressive NSF)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyro_flowvi.nn.made import MADE
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowTransform, Inverted
from pyro_flowvi.transforms.elementwise import AffineTransformer, Transformer
from pyro_flowvi.transforms.spline import SplineTransformer

__all__ = [
    "AffineAutoregressive",
    "Autoregressive",
    "ConditionalAffineAutoregressive",
    "ConditionalAutoregressive",
    "conditional_iaf",
    "iaf",
    "maf",
    "spline_autoregressive",
]


class Autoregressive(FlowTransform):
    """Autoregressive layer: a MADE conditioner drives an elementwise ``transformer``.

    .. math::

        y_i = \\tau(x_i;\\, \\theta_i(x_{<i}; c)), \\qquad
        \\log|\\det J| = \\sum_i \\log \\tau'(x_i;\\, \\theta_i(x_{<i}; c)),

    where ``<i`` is "earlier in ``order``", ``c`` the optional context and :math:`\\tau` the
    transformer (:class:`~pyro_flowvi.transforms.elementwise.AffineTransformer`,
    :class:`~pyro_flowvi.transforms.spline.SplineTransformer` or any object with ``num_params``,
    ``forward`` and ``inverse``); the MADE's output size is ``transformer.num_params`` per
    coordinate.  Forward (sampling) is one MADE pass; the inverse (density of arbitrary points)
    needs ``D`` sequential passes; ``Inverted(layer)`` swaps the two costs.

    References:
        Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
        Estimation", ICML 2015, arXiv:1502.03509.
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Args:
        dim: event size ``D``.
        transformer: the elementwise bijection.
        hidden_dims: MADE hidden sizes.
        context_dim: context size (use :class:`ConditionalAutoregressive`), or ``None``.
        order: autoregressive order (a permutation of ``range(D)``), default natural.
        activation: MADE hidden non-linearity (a module class).

    Example:
        >>> layer = Autoregressive(3, SplineTransformer(count_bins=4), hidden_dims=[16])
        >>> x = torch.randn(5, 3)
        >>> y, ladj = layer.call_and_ladj(x)
        >>> torch.allclose(y, x, atol=1e-6), ladj.shape   # identity at initialisation
        (True, torch.Size([5]))
    """

    autoregressive = True

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        order: Tensor | None = None,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(dim, context_dim)
        self.transformer = transformer
        self.conditioner = MADE(
            dim, hidden_dims, transformer.num_params, context_dim, order, activation
        )

    @property
    def order(self) -> Tensor:
        return self.conditioner.order

    def extra_repr(self) -> str:
        return f"dim={self.dim}, transformer={self.transformer!r}"

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, log_grad = self.transformer.forward(x, self.conditioner.forward(x, context))
        return y, log_grad.sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        # After pass k the first k coordinates (in ``order``) are exact: D passes invert fully.
        x = torch.zeros_like(y)
        for _ in range(self.dim - 1):
            x, _ = self.transformer.inverse(y, self.conditioner.forward(x, context))
        x, log_grad = self.transformer.inverse(y, self.conditioner.forward(x, context))
        return x, log_grad.sum(-1)


class ConditionalAutoregressive(ConditionalFlowTransform):
    """Conditional autoregressive layer: the context ``h`` enters every MADE; arguments as
    :class:`Autoregressive`.

    Example:
        >>> t = ConditionalAutoregressive(3, SplineTransformer(), context_dim=2, hidden_dims=[16])
        >>> t.condition(torch.randn(7, 2))(torch.randn(7, 3)).shape
        torch.Size([7, 3])
    """

    def __init__(self, dim: int, transformer: Transformer, context_dim: int,
                 **kwargs: object) -> None:
        super().__init__(Autoregressive(dim, transformer, context_dim=context_dim, **kwargs))


class AffineAutoregressive(Autoregressive):
    """Inverse autoregressive flow layer: :class:`Autoregressive` with the affine transformer.

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
        super().__init__(dim, AffineTransformer(scale, max_log_scale), hidden_dims, context_dim,
                         order, activation)


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


def spline_autoregressive(dim: int, hidden_dims: Sequence[int] = (64, 64), count_bins: int = 8,
                          bound: float = 3.0, **kwargs: object) -> Autoregressive:
    """One autoregressive neural-spline layer (sampling = one pass).  See :class:`Autoregressive`
    and :class:`~pyro_flowvi.transforms.spline.SplineTransformer`."""
    return Autoregressive(dim, SplineTransformer(count_bins, bound), hidden_dims, **kwargs)
