"""The ``"flowified"`` architecture: non-increasing flowified nets as exact bijections (guides).

A non-increasing flowified net ``F: R^D -> R^k`` (every layer exact) with Gaussian conditionals for
the dropped coordinates defines :math:`q(z) = p(u)\\,\\prod_l e^{C_l}` exactly.  Reparameterising each
dropped block, :math:`r_{drop} = \\mu_\\phi(y) + \\sigma_\\phi(y)\\,\\varepsilon`, makes the sampling
path a bijection between the base vector :math:`e = (u, \\varepsilon) \\in \\mathbb R^D` and
:math:`z`: :class:`FlowifiedBijection` is that bijection as an ordinary pyro_flowvi
:class:`~pyro_flowvi.transforms.base.FlowTransform` (forward = sampling direction), with

.. math::

    \\log|\\det J_{e \\mapsto z}| = \\log\\mathcal N(\\varepsilon; 0, I) - \\sum_l C_l
    \\quad\\Longleftrightarrow\\quad
    \\log q(z) = \\log\\mathcal N(e) - \\log|\\det J| = \\log\\mathcal N(u) + \\sum_l C_l .

So the flowified guide plugs into ``TransformedDistribution``/``AutoFlowGuide`` unchanged, scores its
own samples from the cache (no inversion) and arbitrary points exactly through the net's forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.actnorm import ActNorm
from pyro_flowvi.transforms.base import FlowStack, FlowTransform
from pyro_flowvi.transforms.flowify.conditioners import GaussianConditioner
from pyro_flowvi.transforms.flowify.density.activations import FlowifiedLeakyReLU, FlowifiedSpline
from pyro_flowvi.transforms.flowify.density.layer import FlowifiedLayer, FlowifiedSequential
from pyro_flowvi.transforms.flowify.density.layer import standard_normal_log_prob as _log_normal
from pyro_flowvi.transforms.flowify.density.linear import FlowifiedLinear

__all__ = ["NONLINEARITIES", "FlowifiedBijection", "flowified_block", "flowified_flow"]

NONLINEARITIES = ("spline", "leaky_relu", "none")


class FlowifiedBijection(FlowTransform):
    """A non-increasing flowified net ``R^D -> R^k`` as a bijection ``R^D -> R^D`` (forward =
    sampling: base ``e = (u, eps)`` -> ``z``; inverse = the net's density pass).

    Args:
        net: an exact net with 1-D shapes, ``in_features = out_features + noise_features``.
        noise_first: order the base vector as ``(eps, u)`` instead of ``(u, eps)`` (use with nets
            whose decreasing layers keep the *last* coordinates, so that the bijection starts at
            the identity).

    Example:
        >>> from pyro_flowvi.transforms.flowify import FlowifiedLinear, FlowifiedSequential
        >>> t = FlowifiedBijection(FlowifiedSequential(FlowifiedLinear(3, 3), FlowifiedLinear(3, 1)))
        >>> e = torch.randn(4, 3)
        >>> torch.allclose(t(e), e)                      # identity at initialisation
        True
    """

    def __init__(self, net: FlowifiedLayer, noise_first: bool = False) -> None:
        if not net.is_exact:
            raise ValueError(
                f"FlowifiedBijection: {type(net).__name__} has a dimension-increasing layer, so its "
                "sampling path is not a bijection; use FlowifiedDistribution (cached log q_hat, an "
                "auxiliary-variable bound) for such guides")
        if net.in_shape is None or net.out_shape is None or len(net.in_shape) != 1 \
                or len(net.out_shape) != 1:
            raise ValueError(f"FlowifiedBijection: needs vector in/out shapes, got {net.in_shape} "
                             f"-> {net.out_shape}; add a FlowifiedReshape")
        dim, k = net.in_shape[0], net.out_shape[0]
        if dim != k + net.noise_features:
            raise ValueError(f"FlowifiedBijection: {dim} inputs but {k} outputs + "
                             f"{net.noise_features} noise coordinates")
        super().__init__(dim, net.context_dim)
        self.net = net
        self.latent_features = k
        self.noise_first = noise_first

    def _split(self, e: Tensor) -> tuple[Tensor, Tensor]:
        k, d = self.latent_features, self.dim
        if self.noise_first:
            return e[..., d - k:], e[..., : d - k]
        return e[..., :k], e[..., k:]

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, eps = self._split(x)
        z, c = self.net._inverse(u, context, "sample", eps)
        return z, _log_normal(eps) - c

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, c, eps = self.net._forward_with_noise(y, context)
        batch = torch.broadcast_shapes(u.shape[:-1], eps.shape[:-1])
        u, eps = u.expand(batch + u.shape[-1:]), eps.expand(batch + eps.shape[-1:])
        e = torch.cat([eps, u] if self.noise_first else [u, eps], dim=-1)
        return e, _log_normal(eps) - c


def _nonlinearity(name: str, dim: int, shared_spline: bool, count_bins: int, bound: float,
                  negative_slope: float) -> list[FlowifiedLayer]:
    if name == "spline":
        return [FlowifiedSpline(count_bins, bound, shared=shared_spline, features=dim)]
    if name == "leaky_relu":
        return [FlowifiedLeakyReLU(negative_slope, shape=(dim,))]
    if name == "none":
        return []
    raise ValueError(f"flowified: unknown nonlinearity {name!r}; choose one of {NONLINEARITIES}")


def flowified_block(
    dim: int,
    latent_dim: int,
    *,
    context_dim: int | None = None,
    hidden_dims: Sequence[int] = (),
    keep: str = "first",
    nonlinearity: str = "spline",
    shared_spline: bool = False,
    count_bins: int = 10,
    bound: float = 3.0,
    negative_slope: float = 0.5,
    rotation: str = "exp",
    max_log_scale: float = 8.0,
    activation: Callable[[], nn.Module] = nn.ReLU,
    log_std_bound: float = 2.0,
) -> FlowifiedSequential:
    """The net ``D -> D -> k``: ``FlowifiedLinear(D, D)``, activation, ``FlowifiedLinear(D, k)``
    with an MLP Gaussian conditioner for the ``D - k`` dropped coordinates (a "funnel").

    Example:
        >>> flowified_block(4, 2, hidden_dims=[8]).out_shape
        (2,)
    """
    if not 1 <= latent_dim <= dim:
        raise ValueError(f"flowified: latent_dim must be in [1, {dim}], got {latent_dim}")
    layers: list[FlowifiedLayer] = [
        FlowifiedLinear(dim, dim, context_dim=context_dim, rotation=rotation,
                        max_log_scale=max_log_scale),
        *_nonlinearity(nonlinearity, dim, shared_spline, count_bins, bound, negative_slope),
    ]
    if latent_dim < dim:
        cond = GaussianConditioner(latent_dim, dim - latent_dim, hidden_dims, context_dim,
                                   activation, (-log_std_bound, log_std_bound))
        layers.append(FlowifiedLinear(dim, latent_dim, conditioner=cond, context_dim=context_dim,
                                      rotation=rotation, max_log_scale=max_log_scale, keep=keep))
    return FlowifiedSequential(*layers, context_dim=context_dim)


def flowified_flow(
    dim: int,
    *,
    context_dim: int | None,
    num_layers: int,
    hidden_dims: Sequence[int],
    latent_dim: int | None = None,
    actnorm: bool = False,
    **block_options: Any,
) -> FlowStack:
    """Flowified guide / density arch: ``num_layers`` exact blocks :func:`flowified_block`
    (``D -> D -> k``, ``k = latent_dim``, default ``max(1, D // 2)``), each a
    :class:`FlowifiedBijection`; successive blocks keep the first / last ``k`` rotated coordinates
    in turn.  ``log q`` is exact.  ``block_options`` go to :func:`flowified_block`:
    ``nonlinearity`` (``"spline"``, per unit unless ``shared_spline``; ``"leaky_relu"``;
    ``"none"``), spline ``count_bins`` / ``bound``, ``rotation`` (``"exp"`` / ``"householder"``),
    ``activation`` (conditioner hidden non-linearity), ``log_std_bound`` (soft bound ``b`` of the
    conditioners' log-std, ``[-b, b]``; the default 2 is tighter than a lone layer's ``[-7, 5]``
    because blocks compose); ``actnorm`` puts ActNorm before each block.  Starts at the
    identity."""
    k = max(1, dim // 2) if latent_dim is None else int(latent_dim)
    layers: list[FlowTransform] = []
    for index in range(num_layers):
        keep = "first" if index % 2 == 0 else "last"
        net = flowified_block(dim, k, context_dim=context_dim, hidden_dims=hidden_dims,
                              keep=keep, **block_options)
        if actnorm:
            layers.append(ActNorm(dim))
        layers.append(FlowifiedBijection(net, noise_first=keep == "last"))
    return FlowStack(layers, context_dim)
